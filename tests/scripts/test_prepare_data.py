"""scripts/prepare_data.py against a local HTTP server (127.0.0.1) serving small VOC / COCO archives."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from datamodules.voc import VOCDataset
from scripts.prepare_data import DATASETS, main

VOC07_TRAINVAL = "voc2007/VOCtrainval_06-Nov-2007.tar"
COCO_VAL = "zips/val2017.zip"
COCO_ANN = "annotations/annotations_trainval2017.zip"

XML = (
    "<annotation><size><width>8</width><height>6</height><depth>3</depth></size><object><name>dog</name>"
    "<difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>4</ymax></bndbox></object>"
    "</annotation>"
)


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def voc_tar(ids: list[str], split: str = "trainval") -> bytes:
    """A VOC2007 tar with the devkit layout (``VOCdevkit/VOC2007/...``) and ``len(ids)`` images."""
    files = {f"VOCdevkit/VOC2007/ImageSets/Main/{split}.txt": "\n".join(ids).encode() + b"\n"}
    for i in ids:
        files[f"VOCdevkit/VOC2007/JPEGImages/{i}.jpg"] = _jpeg()
        files[f"VOCdevkit/VOC2007/Annotations/{i}.xml"] = XML.encode()
    files["VOCdevkit/VOC2007/padding.bin"] = bytes(range(256)) * 600  # enough bytes to cut a transfer in two
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


class Server:
    """Files by URL path, with Range support; paths in ``drop_once`` are cut off halfway on their first GET."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.drop_once: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.lstrip("/")
                outer.requests.append((path, self.headers.get("Range")))
                if path not in outer.files:
                    self.send_error(404)
                    return
                data = outer.files[path]
                start, status = 0, 200
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    status = 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(data) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                body = data[start:]
                if path in outer.drop_once:
                    outer.drop_once.discard(path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def voc_files() -> dict[str, bytes]:
    return {VOC07_TRAINVAL: voc_tar(["000001", "000002", "000003"])}


@pytest.fixture
def server(voc_files: dict[str, bytes]) -> Iterator[Server]:
    with Server(voc_files) as s:
        yield s


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def write_checksums(tmp_path: Path, **by_name: str) -> Path:
    path = tmp_path / "md5.txt"
    path.write_text("".join(f"{v}  {k}\n" for k, v in by_name.items()))
    return path


def write_expected(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "expected.json"
    path.write_text(json.dumps(doc))
    return path


def run_voc(server: Server, root: Path, tmp_path: Path, data: bytes, expected_ids: int | None = 3, *extra: str) -> int:
    """The VOC2007 trainval set from ``server``; ``expected_ids=None`` keeps the official counts."""
    checksums = write_checksums(tmp_path, **{"VOCtrainval_06-Nov-2007.tar": md5(data)})
    if expected_ids is not None:
        expected = write_expected(tmp_path, {"2007-trainval": {"trainval_ids": expected_ids}})
        extra = ("--expected", str(expected), *extra)
    return main(
        [
            "voc",
            "--root",
            str(root),
            "--sets",
            "2007-trainval",
            "--mirror",
            server.url,
            "--checksums",
            str(checksums),
            "--retry-wait",
            "0",
            "--no-progress",
            *extra,
        ]
    )


def test_voc_download_extracts_the_datamodule_layout_and_checks_counts(server, voc_files, tmp_path):
    root = tmp_path / "data"
    assert run_voc(server, root, tmp_path, voc_files[VOC07_TRAINVAL]) == 0
    marker = json.loads((root / ".prepared" / "2007-trainval.json").read_text())
    assert marker["counts"]["trainval_ids"] == 3 and marker["counts"]["trainval_missing_images"] == 0
    dataset = VOCDataset(root / "VOCdevkit" / "VOC2007", "trainval")  # the DataModule's reader finds everything
    assert len(dataset) == 3 and dataset[0][1]["boxes"].tolist() == [[0.0, 0.0, 5.0, 4.0]]
    assert not list(root.glob(".staging-*")) and not list((root / "downloads").glob("*.part"))
    # a second run trusts the marker and downloads nothing
    n = len(server.requests)
    assert run_voc(server, root, tmp_path, voc_files[VOC07_TRAINVAL]) == 0
    assert len(server.requests) == n


def test_wrong_counts_are_an_error_and_leave_no_marker(server, voc_files, tmp_path, capsys):
    root = tmp_path / "data"
    assert run_voc(server, root, tmp_path, voc_files[VOC07_TRAINVAL], None) == 2  # the official counts
    err = capsys.readouterr().err
    assert "2007-trainval" in err and "trainval_ids: expected 5011, got 3" in err
    assert not (root / ".prepared" / "2007-trainval.json").exists()


def test_dropped_connection_resumes_with_a_range_request(server, voc_files, tmp_path):
    data = voc_files[VOC07_TRAINVAL]
    server.drop_once.add(VOC07_TRAINVAL)
    root = tmp_path / "data"
    assert run_voc(server, root, tmp_path, data) == 0
    gets = [r for p, r in server.requests if p == VOC07_TRAINVAL]
    assert gets[0] is None and gets[1] == f"bytes={len(data) // 2}-"  # the second request resumed, not restarted
    assert (root / "downloads" / "VOCtrainval_06-Nov-2007.tar").read_bytes() == data
    assert (root / ".prepared" / "2007-trainval.json").is_file()


def test_interrupted_run_leaves_a_part_file_that_the_next_run_resumes(server, voc_files, tmp_path, capsys):
    data = voc_files[VOC07_TRAINVAL]
    server.drop_once.add(VOC07_TRAINVAL)
    root = tmp_path / "data"
    assert run_voc(server, root, tmp_path, data, 3, "--retries", "0") == 2
    assert "run again to resume" in capsys.readouterr().err
    part = root / "downloads" / "VOCtrainval_06-Nov-2007.tar.part"
    assert part.stat().st_size == len(data) // 2
    assert not (root / "downloads" / "VOCtrainval_06-Nov-2007.tar").exists()
    assert not (root / ".prepared" / "2007-trainval.json").exists()
    assert run_voc(server, root, tmp_path, data) == 0
    assert server.requests[-1] == (VOC07_TRAINVAL, f"bytes={len(data) // 2}-")
    assert (root / "downloads" / "VOCtrainval_06-Nov-2007.tar").read_bytes() == data


def test_wrong_checksum_names_the_file_and_deletes_the_download(server, tmp_path, capsys):
    root = tmp_path / "data"
    checksums = write_checksums(tmp_path, **{"VOCtrainval_06-Nov-2007.tar": "0" * 32})
    code = main(
        [
            "voc",
            "--root",
            str(root),
            "--sets",
            "2007-trainval",
            "--base-url",
            server.url,
            "--checksums",
            str(checksums),
            "--retry-wait",
            "0",
            "--no-progress",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "VOCtrainval_06-Nov-2007.tar" in err
    assert f"expected MD5 {'0' * 32}, got {md5(server.files[VOC07_TRAINVAL])}" in err
    assert not list((root / "downloads").iterdir())  # neither the final name nor a .part that looks resumable
    assert not (root / ".prepared").exists()


def test_published_checksum_is_used_without_override(server, tmp_path, capsys):
    code = main(
        [
            "voc",
            "--root",
            str(tmp_path / "d"),
            "--sets",
            "2007-trainval",
            "--base-url",
            server.url,
            "--retry-wait",
            "0",
            "--no-progress",
        ]
    )
    assert code == 2
    assert f"expected MD5 {DATASETS['voc']['2007-trainval'].archives[0].md5}" in capsys.readouterr().err


def test_corrupt_archive_is_named_and_nothing_is_claimed_complete(tmp_path, capsys):
    good = voc_tar(["000001", "000002"])
    corrupt = good[:2000] + b"\x00garbage" * 50  # a tar cut short
    with Server({VOC07_TRAINVAL: corrupt}) as s:
        root = tmp_path / "data"
        assert run_voc(s, root, tmp_path, corrupt, 2) == 2
    err = capsys.readouterr().err
    assert "VOCtrainval_06-Nov-2007.tar: corrupt or truncated archive" in err
    assert not (root / ".prepared").exists() and not list(root.glob(".staging-*"))


def test_corrupt_zip_member_is_an_archive_error(tmp_path, capsys):
    data = bytearray(zip_bytes({"val2017/000000000001.jpg": _jpeg() * 4}))
    at = data.index(b"val2017/000000000001.jpg") + 40  # inside the compressed member: the CRC no longer matches
    data[at : at + 8] = b"\xff" * 8
    with Server({COCO_VAL: bytes(data)}) as s:
        checksums = write_checksums(tmp_path, **{"val2017.zip": md5(bytes(data))})
        code = main(
            [
                "coco",
                "--root",
                str(tmp_path / "coco"),
                "--sets",
                "val2017",
                "--mirror",
                s.url,
                "--checksums",
                str(checksums),
                "--no-progress",
            ]
        )
    assert code == 2
    assert "val2017.zip: corrupt or truncated archive" in capsys.readouterr().err
    assert not (tmp_path / "coco" / ".prepared").exists()


def test_coco_images_and_annotations_land_where_the_coco_datamodule_looks(tmp_path):
    from datamodules.coco import COCODataset

    images = {f"val2017/{i:012d}.jpg": _jpeg() for i in (1, 2)}
    instances = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 8, "height": 6} for i in (1, 2)],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 18, "bbox": [1, 1, 3, 2], "area": 6, "iscrowd": 0}],
        "categories": [{"id": 18, "name": "dog"}],
    }
    ann = {f"annotations/instances_{s}.json": json.dumps(instances).encode() for s in ("train2017", "val2017")}
    files = {COCO_VAL: zip_bytes(images), COCO_ANN: zip_bytes(ann)}
    root = tmp_path / "coco"
    with Server(files) as s:
        checksums = write_checksums(
            tmp_path, **{"val2017.zip": md5(files[COCO_VAL]), "annotations_trainval2017.zip": "-"}
        )  # "-": no checksum
        expected = write_expected(
            tmp_path,
            {
                "val2017": {"images": 2},
                "annotations": {
                    "instances_train2017_images": 2,
                    "instances_train2017_annotations": 1,
                    "instances_val2017_images": 2,
                    "instances_val2017_annotations": 1,
                },
            },
        )
        code = main(
            [
                "coco",
                "--root",
                str(root),
                "--sets",
                "val2017",
                "annotations",
                "--mirror",
                s.url,
                "--checksums",
                str(checksums),
                "--expected",
                str(expected),
                "--no-progress",
            ]
        )
    assert code == 0
    dataset = COCODataset(root / "annotations" / "instances_val2017.json", root / "val2017")
    assert len(dataset) == 2 and dataset[0][1]["labels"].tolist() == [1]
    marker = json.loads((root / ".prepared" / "annotations.json").read_text())
    assert marker["md5"]["annotations_trainval2017.zip"] == md5(files[COCO_ANN])  # computed when none is known


def test_list_shows_official_urls_and_checksums(capsys):
    assert main(["coco", "--list"]) == 0
    out = capsys.readouterr().out
    assert "http://images.cocodataset.org/zips/train2017.zip  md5 cced6f7f71b7629ddf16f17bbcfab6b2" in out

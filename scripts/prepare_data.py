#!/usr/bin/env python
"""Download, check and extract Pascal VOC or COCO 2017 into the layout the DataModules read.

    python scripts/prepare_data.py voc  --root data                # -> data/VOCdevkit/VOC2007, VOC2012
    python scripts/prepare_data.py coco --root data/coco --sets val2017 annotations
    python scripts/prepare_data.py voc  --root data --mirror http://my-mirror/pascal/VOC --list

Each archive is fetched into ``<root>/downloads/<name>.part`` (an interrupted download resumes there
with an HTTP Range request, on retry or on the next run), its MD5 checked, then renamed to its final
name. A set is extracted into a staging folder, moved into place and its counts of images and
annotations compared with the official numbers; only then is ``<root>/.prepared/<set>.json`` written.
That marker is what "complete" means: a set without it is downloaded / extracted again.

Checksums: VOC's MD5s are those torchvision ships for the same files. COCO publishes none; the MD5s
used for COCO are the ones many projects (PaddleDetection, among others) record for the official
zips, and ``--checksums FILE`` (``md5sum`` format: ``<md5>  <file name>``) replaces any of them.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

CHUNK = 1 << 20


class PrepareError(Exception):
    """A download, checksum, archive or layout problem; the message names the file."""


class ChecksumError(PrepareError):
    """A downloaded file whose MD5 is not the expected one."""


class ArchiveError(PrepareError):
    """A corrupt or truncated archive."""


class CountError(PrepareError):
    """An extracted layout whose counts differ from the official ones."""


@dataclass(frozen=True)
class Archive:
    """One file to download: ``<base url>/<path>``, saved as ``name``."""

    path: str
    md5: str | None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DataSet:
    """A downloadable part of a dataset, the counts it must have once extracted, and how to count them."""

    key: str
    archives: tuple[Archive, ...]
    expected: dict[str, int]
    count: Callable[[Path], dict[str, int]]
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- counts
def _ids(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [ln.split()[0] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _voc_split_counts(year: str, split: str) -> Callable[[Path], dict[str, int]]:
    def count(root: Path) -> dict[str, int]:
        year_dir = root / "VOCdevkit" / f"VOC{year}"
        ids = _ids(year_dir / "ImageSets" / "Main" / f"{split}.txt")
        found = {
            f"{split}_ids": len(ids),
            f"{split}_missing_images": sum(not (year_dir / "JPEGImages" / f"{i}.jpg").is_file() for i in ids),
            f"{split}_missing_annotations": sum(not (year_dir / "Annotations" / f"{i}.xml").is_file() for i in ids),
        }
        if year == "2012":
            found["jpeg_images"] = sum(1 for _ in (year_dir / "JPEGImages").glob("*.jpg"))
        return found

    return count


def _folder_count(folder: str) -> Callable[[Path], dict[str, int]]:
    def count(root: Path) -> dict[str, int]:
        return {"images": sum(1 for _ in (root / folder).glob("*.jpg"))}

    return count


def _coco_annotation_counts(root: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for split in ("train2017", "val2017"):
        path = root / "annotations" / f"instances_{split}.json"
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise CountError(f"{path}: missing or unreadable after extraction ({exc})") from None
        found[f"instances_{split}_images"] = len(data.get("images", []))
        found[f"instances_{split}_annotations"] = len(data.get("annotations", []))
        del data
    return found


VOC_BASE_URL = "https://thor.robots.ox.ac.uk/pascal/VOC"  # the host torchvision uses; same tree as host.robots.ox.ac.uk
COCO_BASE_URL = "http://images.cocodataset.org"

DATASETS: dict[str, dict[str, DataSet]] = {
    "voc": {
        "2007-trainval": DataSet(
            "2007-trainval",
            (Archive("voc2007/VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64"),),
            {"trainval_ids": 5011, "trainval_missing_images": 0, "trainval_missing_annotations": 0},
            _voc_split_counts("2007", "trainval"),
            "VOC2007 train + val (detection and segmentation)",
        ),
        "2007-test": DataSet(
            "2007-test",
            (Archive("voc2007/VOCtest_06-Nov-2007.tar", "b6e924de25625d8de591ea690078ad9f"),),
            {"test_ids": 4952, "test_missing_images": 0, "test_missing_annotations": 0},
            _voc_split_counts("2007", "test"),
            "VOC2007 test, with annotations",
        ),
        "2012-trainval": DataSet(
            "2012-trainval",
            (Archive("voc2012/VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd"),),
            {
                "trainval_ids": 11540,
                "trainval_missing_images": 0,
                "trainval_missing_annotations": 0,
                "jpeg_images": 17125,
            },
            _voc_split_counts("2012", "trainval"),
            "VOC2012 train + val (its test set is on the evaluation server only)",
        ),
    },
    "coco": {
        "train2017": DataSet(
            "train2017",
            (Archive("zips/train2017.zip", "cced6f7f71b7629ddf16f17bbcfab6b2"),),
            {"images": 118287},
            _folder_count("train2017"),
            "COCO 2017 training images (18 GiB)",
        ),
        "val2017": DataSet(
            "val2017",
            (Archive("zips/val2017.zip", "442b8da7639aecaf257c1dceb8ba8c80"),),
            {"images": 5000},
            _folder_count("val2017"),
            "COCO 2017 validation images",
        ),
        "annotations": DataSet(
            "annotations",
            (Archive("annotations/annotations_trainval2017.zip", "f4bbac642086de4f52a3fdda2de5fa2c"),),
            {
                "instances_train2017_images": 118287,
                "instances_train2017_annotations": 860001,
                "instances_val2017_images": 5000,
                "instances_val2017_annotations": 36781,
            },
            _coco_annotation_counts,
            "COCO 2017 train / val annotations (instances, keypoints, captions)",
        ),
    },
}
BASE_URLS = {"voc": VOC_BASE_URL, "coco": COCO_BASE_URL}


# -------------------------------------------------------------------------------------------- download
def file_md5(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _progress(total: int | None, initial: int, desc: str, enabled: bool):  # noqa: ANN202
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled,
        leave=False,
    )


def _fetch_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    """One request: (re)start or resume ``part``; raises ``OSError`` / ``IncompleteRead`` when cut short."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "cv-course-prepare-data"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the part file is already whole
            return
        raise
    with resp:
        if offset and resp.status != 206:  # the server ignored the Range header: start over
            offset = 0
        elif offset:
            content_range = resp.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                raise PrepareError(f"{url}: server answered range {content_range!r} to a resume from byte {offset}")
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        written = offset
        with open(part, "ab" if offset else "wb") as out, _progress(total, offset, part.name[:-5], progress) as bar:
            for block in iter(lambda: resp.read(CHUNK), b""):
                out.write(block)
                written += len(block)
                bar.update(len(block))
        if total is not None and written < total:
            raise http.client.IncompleteRead(b"", total - written)


def download(
    url: str,
    dest: Path,
    md5: str | None,
    retries: int = 3,
    retry_wait: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> str:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed where it stopped), check its MD5 and
    rename it; returns the file's MD5. A wrong checksum deletes the part file and raises
    :class:`ChecksumError`; ``dest`` only ever exists complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout, progress)
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == retries:
                raise PrepareError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:  # URLError, reset connections and time-outs are OSErrors
            if attempt == retries:
                have = part.stat().st_size if part.exists() else 0
                raise PrepareError(
                    f"{url}: download failed after {retries + 1} attempt(s) ({exc!r}); {have} bytes are "
                    f"kept in {part}: run again to resume"
                ) from None
        print(
            f"prepare_data: {dest.name}: connection lost, resuming (attempt {attempt + 2} of {retries + 1})",
            file=sys.stderr,
        )
        if retry_wait > 0:
            time.sleep(retry_wait * (attempt + 1))
    got = file_md5(part)
    if md5 is not None and got != md5.lower():
        part.unlink()
        raise ChecksumError(
            f"{dest}: checksum mismatch: expected MD5 {md5.lower()}, got {got} "
            f"(the download was deleted; run again, or pass --checksums if the file changed upstream)"
        )
    os.replace(part, dest)
    return got


# --------------------------------------------------------------------------------------------- extract
def _extract(archive: Path, staging: Path) -> None:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():  # names are sanitised by zipfile; CRCs are checked on read
                    zf.extract(info, staging)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(staging, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
        raise ArchiveError(
            f"{archive}: corrupt or truncated archive ({type(exc).__name__}: {exc}); delete it and run again"
        ) from None


def _merge(staging: Path, root: Path) -> None:
    """Move every file of ``staging`` to the same relative place under ``root`` (folders are merged)."""
    for dirpath, _, files in os.walk(staging):
        target = root / Path(dirpath).relative_to(staging)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.replace(Path(dirpath) / name, target / name)


def verify_counts(dataset: DataSet, root: Path, expected: dict[str, int]) -> dict[str, int]:
    """Counts of the extracted ``dataset``; :class:`CountError` naming every count that differs."""
    found = dataset.count(root)
    wrong = [f"{k}: expected {v}, got {found.get(k)}" for k, v in expected.items() if found.get(k) != v]
    if wrong:
        raise CountError(
            f"{root}: {dataset.key}: the extracted files do not match the official set ({'; '.join(wrong)})"
        )
    return found


def marker_path(root: Path, key: str) -> Path:
    return root / ".prepared" / f"{key}.json"


def prepare_set(
    dataset: DataSet,
    root: Path,
    base_url: str,
    checksums: dict[str, str | None],
    expected: dict[str, int],
    retries: int = 3,
    retry_wait: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
    keep_archives: bool = True,
) -> dict[str, int]:
    """Download, check, extract and count one set into ``root``; returns its counts."""
    marker = marker_path(root, dataset.key)
    if marker.is_file():
        print(f"prepare_data: {dataset.key}: already prepared ({marker})")
        return json.loads(marker.read_text())["counts"]
    downloads = root / "downloads"
    md5s: dict[str, str] = {}
    for archive in dataset.archives:
        dest = downloads / archive.name
        expected_md5 = checksums.get(archive.name, archive.md5)
        have = file_md5(dest) if dest.is_file() else None
        if have is not None and (expected_md5 is None or have == expected_md5.lower()):
            md5s[archive.name] = have
            continue
        if have is not None:
            print(f"prepare_data: {dest}: checksum differs from {expected_md5}; downloading it again", file=sys.stderr)
            dest.unlink()
        url = f"{base_url.rstrip('/')}/{archive.path}"
        print(f"prepare_data: {dataset.key}: {url}")
        md5s[archive.name] = download(url, dest, expected_md5, retries, retry_wait, timeout, progress)
        if expected_md5 is None:
            print(f"prepare_data: {archive.name}: no published checksum; MD5 {md5s[archive.name]}")
    staging = root / f".staging-{dataset.key}"
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run left
    try:
        for archive in dataset.archives:
            print(f"prepare_data: {dataset.key}: extracting {archive.name}")
            _extract(downloads / archive.name, staging)
        _merge(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    counts = verify_counts(dataset, root, expected)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"set": dataset.key, "counts": counts, "md5": md5s, "base_url": base_url}, indent=2))
    os.replace(tmp, marker)
    if not keep_archives:
        for archive in dataset.archives:
            (downloads / archive.name).unlink(missing_ok=True)
    print(f"prepare_data: {dataset.key}: ok ({', '.join(f'{k}={v}' for k, v in counts.items())})")
    return counts


# ------------------------------------------------------------------------------------------------- CLI
def read_checksums(path: Path) -> dict[str, str | None]:
    """``md5sum``-format lines ``<md5>  <file name>``; ``-`` as the checksum means "none, do not check"."""
    out: dict[str, str | None] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise PrepareError(f"{path}: line {i}: expected '<md5>  <file name>', got {line!r}")
        digest, name = parts[0].lower(), parts[1].lstrip("*").rsplit("/", 1)[-1]
        if digest != "-" and (len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest)):
            raise PrepareError(f"{path}: line {i}: {parts[0]!r} is not an MD5")
        out[name] = None if digest == "-" else digest
    return out


def read_expected(path: Path) -> dict[str, dict[str, int]]:
    """JSON ``{"<set>": {"<count name>": n, ...}}`` overriding the official counts."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PrepareError(f"{path}: cannot read expected counts ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise PrepareError(f"{path}: expected a JSON object of set -> {{count name: number}}")
    return {k: {n: int(c) for n, c in v.items()} for k, v in data.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--root", type=Path, default=None, help="where to extract (default: data for voc, data/coco)")
    parser.add_argument("--sets", nargs="+", default=None, help="which parts (default: all); see --list")
    parser.add_argument(
        "--base-url",
        "--mirror",
        dest="base_url",
        default=None,
        help="server holding the archives under their official paths (default: the official one)",
    )
    parser.add_argument("--checksums", type=Path, default=None, help="md5sum-format file overriding the MD5s")
    parser.add_argument("--expected", type=Path, default=None, help="JSON overriding the expected counts")
    parser.add_argument("--retries", type=int, default=3, help="resumed attempts after a dropped connection")
    parser.add_argument("--retry-wait", type=float, default=2.0, help="seconds before the first retry (then longer)")
    parser.add_argument("--timeout", type=float, default=60.0, help="socket time-out in seconds")
    parser.add_argument("--delete-archives", action="store_true", help="remove each archive once its set is complete")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--list", action="store_true", help="print the sets, URLs and checksums and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sets = DATASETS[args.dataset]
    base_url = args.base_url or BASE_URLS[args.dataset]
    root = args.root or Path("data" if args.dataset == "voc" else "data/coco")
    try:
        checksums = read_checksums(args.checksums) if args.checksums else {}
        expected = read_expected(args.expected) if args.expected else {}
        chosen = args.sets or list(sets)
        unknown = [s for s in chosen if s not in sets]
        if unknown:
            raise PrepareError(f"--sets: unknown {unknown}; {args.dataset} has {', '.join(sets)}")
        if args.list:
            for key in chosen:
                for a in sets[key].archives:
                    print(f"{key:14s} {base_url.rstrip('/')}/{a.path}  md5 {checksums.get(a.name, a.md5) or '-'}")
                print(f"{'':14s} {sets[key].description}; expects {sets[key].expected}")
            return 0
        for key in chosen:
            prepare_set(
                sets[key],
                root,
                base_url,
                checksums,
                {**sets[key].expected, **expected.get(key, {})},
                args.retries,
                args.retry_wait,
                args.timeout,
                not args.no_progress,
                not args.delete_archives,
            )
    except PrepareError as exc:
        print(f"prepare_data.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

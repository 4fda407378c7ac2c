"""Result files: rows of two comparisons that share an output folder are merged under a lock, previews
and truncated rows are marked in every table."""

import json
import multiprocessing as mp
from pathlib import Path

from comparison.report import render, write_results

SPEC = {"tables": ["rcnn_family", "detectors", "segmentation", "ablations"]}


def _row(run, **extra):
    row = {
        "run": run,
        "model": run,
        "family": "anchor_free",
        "group": "",
        "status": "ok",
        "error": "",
        "latency_ms_median": 10.0,
        "voc07/mAP": 0.5,
        "train_steps": 4,
        "train_epochs": 0.5,
        "train_s": 1.0,
        "trained": "trained",
    }
    row.update(extra)
    return row


def test_a_second_comparison_keeps_the_rows_of_the_first(tmp_path):
    write_results([_row("fcos")], tmp_path, SPEC, {}, "## first")
    rows, md = write_results([_row("ssd", family="one_stage_anchor")], tmp_path, SPEC, {}, "## second")
    assert [r["run"] for r in rows] == ["fcos", "ssd"]
    assert [r["run"] for r in json.loads((tmp_path / "results.json").read_text())] == ["fcos", "ssd"]
    assert "| fcos |" in md and "| ssd |" in md
    rows, _ = write_results([_row("fcos", **{"voc07/mAP": 0.7})], tmp_path, SPEC, {}, "## third")
    assert [(r["run"], r["voc07/mAP"]) for r in rows] == [("fcos", 0.7), ("ssd", 0.5)]  # replaced in place


def _writer(out: str, name: str, n: int) -> None:
    for i in range(n):
        write_results([_row(f"{name}{i}")], Path(out), SPEC, {}, f"## {name}")


def test_concurrent_comparisons_on_one_folder_lose_no_row(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), name, 15)) for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    runs = {r["run"] for r in json.loads((tmp_path / "results.json").read_text())}
    assert runs == {f"{n}{i}" for n in "ab" for i in range(15)}


def test_a_preview_heads_every_table_as_not_converged():
    md = render(
        [_row("fcos"), _row("fcn", family="semantic_segmentation", mean_iou=0.3)], SPEC, {}, "## h", preview=True
    )
    headings = [line for line in md.splitlines() if line.startswith("### ")]
    assert len(headings) == 4 and all("(preview, not converged)" in h for h in headings)
    assert "not converged" in md.split("### ")[0]
    assert "preview" not in render([_row("fcos")], SPEC, {}, "## h").lower()


def test_a_truncated_row_is_marked_in_its_table_and_named_above_them():
    rows = [_row("fcos"), _row("ssd", family="one_stage_anchor", status="truncated", train_steps=3, planned_steps=9)]
    md = render(rows, SPEC, {}, "## h")
    assert "| ssd **(truncated)** |" in md and "| fcos |" in md
    assert "**Truncated**" in md and "ssd (3 of 9 steps)" in md
    assert "| steps | epochs | train s | trained |" in md

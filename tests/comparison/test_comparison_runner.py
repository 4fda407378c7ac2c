"""The comparison's main loop: a failing model is a row, a stopped comparison stops."""

from __future__ import annotations

import pytest
from pytorch_lightning.utilities.exceptions import SIGTERMException

from comparison import runner

SPEC = "eval_images: 4\nlatency_images: 1\nmodels:\n  - {run: fcos}\n  - {run: ssd}\n"


def _spec(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


def test_a_failing_model_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    calls = []

    def fail(entry, *args, **kwargs):
        calls.append(entry.run)
        raise RuntimeError(f"{entry.run} broke")

    monkeypatch.setattr(runner, "run_entry", fail)
    monkeypatch.setattr(runner, "draw_pictures", lambda *a, **k: None)
    rows = runner.main(["--spec", str(_spec(tmp_path)), "--out", str(tmp_path / "out")])
    assert calls == ["fcos", "ssd"]
    assert [(r["run"], r["status"]) for r in rows] == [("fcos", "failed"), ("ssd", "failed")]
    assert "fcos broke" in rows[0]["error"]


@pytest.mark.parametrize("stop", [SIGTERMException, KeyboardInterrupt])
def test_sigterm_or_ctrl_c_stops_the_comparison_instead_of_failing_one_model(tmp_path, monkeypatch, stop):
    calls = []

    def killed(entry, *args, **kwargs):
        calls.append(entry.run)
        raise stop()

    monkeypatch.setattr(runner, "run_entry", killed)
    with pytest.raises(stop):
        runner.main(["--spec", str(_spec(tmp_path)), "--out", str(tmp_path / "out")])
    assert calls == ["fcos"]  # the second model never started
    results = tmp_path / "out" / "results.json"
    assert not results.exists() or "failed" not in results.read_text()

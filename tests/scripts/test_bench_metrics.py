import copy
import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_metrics.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_metrics_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_method_times_only_its_own_work(monkeypatch):
    """issue 13.11: the raw COCO APIs used to deep-copy the case inside their timed call."""
    bench = load_bench()
    gt, dt = bench.make_case(12, 3, 8, seed=1)
    preds, targets = bench.to_torch(gt, dt)
    gt0, dt0 = copy.deepcopy(gt), copy.deepcopy(dt)
    copied = []
    real_deepcopy = copy.deepcopy

    def spy(obj, *a, **k):
        copied.append(id(obj))
        return real_deepcopy(obj, *a, **k)

    results = {}
    for name, fn, setup in bench.detection_methods(gt, dt, preds, targets):
        if "torchmetrics" in name or "all 4" in name:
            continue
        arg = setup() if setup is not None else None
        monkeypatch.setattr(copy, "deepcopy", spy)
        copied.clear()
        results[name] = fn(arg) if setup is not None else fn()
        monkeypatch.setattr(copy, "deepcopy", real_deepcopy)
        assert id(gt) not in copied and id(dt) not in copied, name  # no copy of the case in the timed part
        if setup is not None:
            assert arg[1] != dt0  # loadRes wrote into its private copy ...
    assert gt == gt0 and dt == dt0  # ... and never into the shared case
    ref = results["pycocotools COCOeval (raw)"]
    for name, res in results.items():
        np.testing.assert_allclose(res, ref, rtol=0, atol=1e-12, err_msg=name)

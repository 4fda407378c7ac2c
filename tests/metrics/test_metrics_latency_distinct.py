"""metrics.latency over distinct inputs with a stage timer: each input timed once, stages per call."""

import torch

from metrics.latency import measure_latency
from models.parts.timing import StageTimer


def test_distinct_inputs_are_each_timed_once_after_a_cycling_warmup():
    seen = []
    inputs = [torch.full((1, 2), float(i)) for i in range(4)]
    out = measure_latency(lambda x: seen.append(int(x[0, 0])), inputs, warmup=6, distinct=True)
    assert seen == [0, 1, 2, 3, 0, 1] + [0, 1, 2, 3]
    assert {"median_ms", "p90_ms", "fps"} == set(out)


def test_the_stage_timer_is_on_for_the_timed_calls_only_and_its_stages_are_reported_per_call():
    timer = StageTimer()
    enabled_during = []

    def fn(x):
        enabled_during.append(timer.enabled)
        with timer.stage("head"):
            x.sum()
        with timer.stage("nms"):
            pass

    out = measure_latency(fn, [torch.ones(3)] * 5, warmup=2, distinct=True, stage_timer=timer)
    assert enabled_during == [False, False] + [True] * 5
    assert not timer.enabled and timer.times_ms == {}  # reset once reported
    assert {"stage_ms/head", "stage_ms/nms"} <= set(out)
    assert 0 <= out["stage_ms/nms"] and out["stage_ms/head"] <= out["p90_ms"] * 5

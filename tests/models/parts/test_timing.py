import time

from torch import nn
import torch

from models.parts.timing import StageTimer, time_method


class Slow(nn.Module):
    def forward(self, x):
        time.sleep(0.01)
        return x


def test_timer_is_off_by_default_and_records_when_enabled():
    timer = StageTimer()
    module = Slow()
    timer.instrument(module, "slow")
    module(torch.zeros(1))
    assert timer.times_ms == {}
    timer.enabled = True
    module(torch.zeros(1))
    module(torch.zeros(1))
    assert 15.0 <= timer.times_ms["slow"] < 1000.0
    timer.reset()
    assert timer.times_ms == {}


def test_time_method_wraps_plain_methods():
    class Box:
        def work(self, x):
            time.sleep(0.005)
            return x + 1

    timer = StageTimer()
    timer.enabled = True
    box = Box()
    time_method(timer, box, "work", "nms")
    assert box.work(1) == 2
    assert timer.times_ms["nms"] >= 4.0


def test_the_sync_is_decided_once_when_timing_is_switched_on_not_at_every_stage(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: calls.append(1) or False)
    timer = StageTimer()
    timer.enabled = True
    for _ in range(50):
        with timer.stage("a"):
            with timer.stage("b"):
                pass
    assert len(calls) == 1 and set(timer.times_ms) == {"a", "b"}
    timer.enabled = False
    timer.enable("cpu")  # a known device: nothing to ask
    for _ in range(10):
        timer.start("c")
        timer.stop("c")
    assert len(calls) == 1 and "c" in timer.times_ms


def test_a_cuda_device_synchronises_at_each_boundary(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: (_ for _ in ()).throw(AssertionError("asked")))
    timer = StageTimer(device="cuda:0")
    timer.enabled = True
    with timer.stage("x"):
        pass
    assert synced == [torch.device("cuda:0")] * 2

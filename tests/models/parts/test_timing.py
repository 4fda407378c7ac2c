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

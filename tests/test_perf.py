"""Honest timing, FLOP counting and MFU (dmlib.perf, Chapter 10)."""

import pytest
import torch

from dmlib import perf
from dmlib.train import TrainConfig, train


class _Linear(torch.nn.Module):
    prediction = "eps"

    def __init__(self, d_in, d_out):
        super().__init__()
        self.layer = torch.nn.Linear(d_in, d_out)

    def forward(self, x, t=None, y=None):
        return self.layer(x)


def _mse(model, x0, y, g):
    return (model(x0) ** 2).mean()


def test_flops_of_a_linear_training_step_are_counted_exactly():
    # forward x W^T: 2 B d_in d_out; backward: the weight's gradient, another 2 B d_in d_out
    # (the input needs no gradient, so its product is not formed)
    b, d_in, d_out = 16, 10, 7
    flops = perf.train_step_flops(_Linear(d_in, d_out), _mse, torch.randn(b, d_in))
    assert flops == 4 * b * d_in * d_out


def test_flops_of_two_layers_count_the_hidden_gradient():
    b, d = 8, 6
    model = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.Linear(d, d))
    flops = perf.train_step_flops(model, lambda m, x, y, g: (m(x) ** 2).mean(), torch.randn(b, d))
    # five (b x d) @ (d x d) products of 2 b d^2 each: layer 1's forward and weight
    # gradient, layer 2's forward, weight gradient and input gradient
    assert flops == 5 * 2 * b * d * d


def test_time_steps_warms_up_and_syncs_around_the_timed_block(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    seconds = perf.time_steps(lambda: events.append("step"), device="cuda", warmup=2, iters=3)
    assert events == ["step", "step", "sync", "step", "step", "step", "sync"]
    assert seconds >= 0


def test_time_steps_refuses_bad_counts():
    with pytest.raises(ValueError, match="iters"):
        perf.time_steps(lambda: None, device="cpu", iters=0)
    with pytest.raises(ValueError, match="warmup"):
        perf.time_steps(lambda: None, device="cpu", warmup=-1)


@pytest.mark.parametrize("name,expected", [
    ("NVIDIA H200", (989.0, "bf16")),
    ("NVIDIA H100 80GB HBM3", (989.0, "bf16")),
    ("NVIDIA H100 PCIe", (756.0, "bf16")),
    ("NVIDIA A100-SXM4-80GB", (312.0, "bf16")),
    ("Tesla T4", (65.0, "fp16")),
    ("NVIDIA H100 NVL", (835.0, "bf16")),
    ("NVIDIA L40", (181.0, "bf16")),
    ("NVIDIA L4", (121.0, "bf16")),
    ("Tesla V100-SXM2-16GB", (125.0, "fp16")),
    ("Tesla V100-PCIE-32GB", (112.0, "fp16")),
    ("Tesla V100S-PCIE-32GB", (130.0, "fp16")),
    ("NVIDIA GeForce GTX 1080", None),
])
def test_peak_of_a_gpu_by_name(monkeypatch, name, expected):
    monkeypatch.delenv(perf.PEAK_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert perf.peak_tflops("cuda") == expected


def test_peak_of_a_cpu_is_unknown_unless_given(monkeypatch):
    monkeypatch.delenv(perf.PEAK_ENV, raising=False)
    assert perf.peak_tflops("cpu") is None
    monkeypatch.setenv(perf.PEAK_ENV, "2.5")
    assert perf.peak_tflops("cpu") == (2.5, "$DMLIB_PEAK_TFLOPS")
    monkeypatch.setenv(perf.PEAK_ENV, "fast")
    with pytest.raises(ValueError, match="number of TFLOP/s"):
        perf.peak_tflops("cpu")


def test_mfu_is_the_fraction_of_the_peak():
    assert perf.mfu(2e12, 0.5, 8.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="positive"):
        perf.mfu(1e9, 0.0, 100.0)


def test_the_trainer_reports_images_per_second_per_log_interval():
    x = torch.randn(64, 4)
    res = train(_Linear(4, 4), _mse, x, TrainConfig(steps=6, batch_size=8, log_every=3,
                                                    progress=False, device="cpu"))
    assert [s for s, _ in res.rates] == [3, 6]
    assert all(r > 0 for _, r in res.rates)

"""ode_bits_per_dim converges in its number of steps on a stiff case with an exact answer
(Section 9.6): data concentrated near a few 8-bit points, where the probability-flow ODE is
stiff close to t = 0, like that of a model trained on 8-bit images."""

import math

import pytest
import torch

from dmlib import likelihood, schedules, toy

# four narrow components (std 2e-3, half a pixel bin) centred on 8-bit points in d = 3
LEVELS = torch.tensor([[100.0, 30, 200], [101, 31, 200], [60, 250, 3], [128, 128, 127]])
MEANS = LEVELS / 127.5 - 1
MIX = toy.GaussianMixture(MEANS.tolist(), stds=torch.full((4,), 2e-3), weights=[0.25] * 4)
T_MIN = 1e-5


def _errors(name, grid, steps):
    sched = schedules.get_schedule(name)
    model = MIX.denoiser(sched, "eps" if name == "cosine" else "velocity")
    x = MEANS.double()
    exact = -MIX.log_prob(x, T_MIN, sched) / (3 * math.log(2)) + math.log2(127.5)
    return [
        (likelihood.ode_bits_per_dim(model, x, sched, n_steps=n, t_min=T_MIN, grid=grid,
                                     hutchinson=False, dequantize=False) - exact).abs().max().item()
        for n in steps
    ]


@pytest.mark.parametrize("name", ["cosine", "flow"])
def test_log_snr_grid_converges_at_second_order(name):
    # measured (max over the 4 points, bits/dim) at 20 / 40 / 80 steps:
    # cosine 0.77 / 0.19 / 0.047, flow 0.55 / 0.14 / 0.034
    e20, e40, e80 = _errors(name, "log_snr", [20, 40, 80])
    assert e80 < 0.06 and abs(e40 - e80) < 0.2, (e20, e40, e80)
    assert 3.0 < e20 / e40 < 5.5 and 3.0 < e40 / e80 < 5.5, (e20, e40, e80)  # Heun: 4


def test_even_sqrt_t_grid_fails_the_same_check_on_the_cosine_schedule():
    # the former default grid (uniform in sqrt(t - t_min)): 6.6 / 1.3 / 0.31 bits/dim
    e20, e40, e80 = _errors("cosine", "sqrt_t", [20, 40, 80])
    assert not (e80 < 0.06 and abs(e40 - e80) < 0.2), (e20, e40, e80)


def test_log_snr_grid_is_increasing_and_spans_the_interval():
    for name in ["linear", "cosine", "sigmoid", "flow", "ve"]:
        sched = schedules.get_schedule(name)
        times = likelihood._log_snr_grid(sched, 1e-4, 30)
        assert len(times) == 31 and times[0] == 1e-4 and times[-1] == 1.0, name
        assert all(b > a for a, b in zip(times[:-1], times[1:])), name
    with pytest.raises(ValueError, match="grid"):
        likelihood.ode_bits_per_dim(MIX.denoiser(schedules.CosineSchedule()), MEANS.double(),
                                    schedules.CosineSchedule(), grid="uniform")

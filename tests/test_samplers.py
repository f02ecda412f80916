"""Samplers driven by the exact score of a Gaussian mixture: no training, so every error is
the sampler's own (Chapter 4's method). Also DDIM(eta=1) = DDPM, and agreement with diffusers.
"""

import pytest
import torch

from dmlib import diffusion, metrics, samplers, schedules, toy
from dmlib.diffusion import q_sample

MIX = toy.GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], stds=torch.tensor([0.5, 0.4]), weights=[0.3, 0.7])
EIGHT = toy.GaussianMixture.eight_gaussians()


def _reference_and_errors(schedule, kind, method, ns, t_min=0.02, n=400):
    """Distance to a fine-grid reference solution of the same ODE from the same x_T."""
    model = MIX.denoiser(schedule, kind)
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = samplers.sample(model, x_T, schedule, method="heun", times=torch.linspace(1, t_min, 3001, dtype=torch.float64))
    errs = []
    for k in ns:
        x = samplers.sample(model, x_T, schedule, method=method, times=torch.linspace(1, t_min, k + 1, dtype=torch.float64))
        errs.append((x - ref).norm(dim=1).mean().item())
    return errs


# Halving the step of a p-th order solver shrinks the global error about 2^p times. Measured
# ratios at 20 -> 40 -> 80 steps: Euler 2.0, Heun 3.8-3.9, DPM-Solver++(2M) 3.7-4.4; the bounds
# leave room for that spread and fail for a solver of the wrong order.
ORDER_CASES = [
    ("linear", "eps", "euler", 1.7, 2.4),
    ("flow", "velocity", "euler", 1.7, 2.4),
    ("linear", "eps", "ddim", 1.7, 2.4),
    ("linear", "eps", "heun", 3.3, 4.8),
    ("flow", "velocity", "heun", 3.3, 4.8),
    ("linear", "eps", "dpmpp_2m", 3.3, 4.8),
    ("cosine", "eps", "dpmpp_2m", 3.3, 4.8),
]


@pytest.mark.parametrize("sched,kind,method,lo,hi", ORDER_CASES, ids=[f"{c[2]}-{c[0]}" for c in ORDER_CASES])
def test_order_of_convergence(sched, kind, method, lo, hi):
    errs = _reference_and_errors(schedules.get_schedule(sched), kind, method, [20, 40, 80])
    ratios = [errs[i] / errs[i + 1] for i in range(2)]
    assert all(lo <= r <= hi for r in ratios), f"{method} error ratios {ratios} (errors {errs})"


def _w2_ratio(x, mixture, seed=0, n_repeats=3):
    return metrics.floor_ratio("w2", x, lambda n, g: mixture.sample(n, generator=g), n_repeats=n_repeats, seed=seed)["ratio"]


@pytest.mark.parametrize("method,n_steps", [("ddpm", 200), ("ddim", 50), ("euler", 100), ("heun", 50),
                                            ("euler_maruyama", 200), ("dpmpp_2m", 25)])
def test_sampler_with_exact_score_recovers_the_mixture(method, n_steps):
    schedule = schedules.CosineSchedule()
    g = torch.Generator().manual_seed(1)
    x = samplers.sample(EIGHT.denoiser(schedule), torch.randn(1000, 2, generator=g), schedule, method=method,
                        n_steps=n_steps, generator=g)
    r = _w2_ratio(x, EIGHT)
    assert r <= 1.2, f"{method}: W2 ratio {r:.3f}"


def test_w2_ratio_check_detects_a_wrong_distribution():
    # A test of the test: the same check rejects samples of a shifted mixture.
    x = EIGHT.sample(1000, generator=torch.Generator().manual_seed(2)) * 1.15
    assert _w2_ratio(x, EIGHT) > 1.2


def test_ddim_eta_one_is_the_ddpm_step():
    schedule = schedules.LinearSchedule()
    x0 = torch.randn(64, 2, dtype=torch.float64)
    x_t = q_sample(x0, 0.6, schedule)
    x0_hat = MIX.posterior_mean(x_t, 0.6, schedule)
    a = samplers.ddim_step(x_t, x0_hat, 0.6, 0.55, schedule, eta=1.0, generator=torch.Generator().manual_seed(3))
    b = samplers.ddpm_step(x_t, x0_hat, 0.6, 0.55, schedule, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_ddim_eta_one_matches_ddpm_in_distribution():
    schedule = schedules.LinearSchedule()
    model = EIGHT.denoiser(schedule)
    g = torch.Generator().manual_seed(4)
    x_T = torch.randn(2000, 2, generator=g)
    a = samplers.sample(model, x_T, schedule, method="ddim", eta=1.0, n_steps=100, generator=torch.Generator().manual_seed(5))
    b = samplers.sample(model, x_T, schedule, method="ddpm", n_steps=100, generator=torch.Generator().manual_seed(6))
    floor = metrics.sliced_wasserstein(EIGHT.sample(2000, generator=torch.Generator().manual_seed(7)),
                                       EIGHT.sample(2000, generator=torch.Generator().manual_seed(8)))
    assert metrics.sliced_wasserstein(a, b) < 1.5 * floor


def test_trajectory_shape_and_determinism():
    schedule = schedules.CosineSchedule()
    model = MIX.denoiser(schedule)
    x_T = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    x, traj = samplers.sample(model, x_T, schedule, method="ddpm", n_steps=7, generator=torch.Generator().manual_seed(1),
                              return_trajectory=True)
    assert traj.shape == (8, 10, 2) and torch.equal(traj[-1], x) and torch.equal(traj[0], x_T)
    y = samplers.sample(model, x_T, schedule, method="ddpm", n_steps=7, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, y)


def test_langevin_samples_a_gaussian():
    # Langevin with the exact score of N(m, s^2) has stationary law N(m, s^2 (1 + O(delta))).
    m, s, delta = 1.0, 0.5, 1e-3
    x = torch.zeros(4000, 1, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    for _ in range(2000):
        x = samplers.langevin_step(x, -(x - m) / s**2, delta, generator=g)
    assert abs(x.mean().item() - m) < 0.03 and abs(x.std().item() - s) < 0.02


@pytest.mark.parametrize("bad", [{"method": "rk4"}, {"n_steps": 0}, {"times": torch.tensor([0.0, 1.0])}])
def test_sample_rejects_bad_arguments(bad):
    schedule = schedules.LinearSchedule()
    with pytest.raises((ValueError, TypeError), match="method|n_steps|times"):
        samplers.sample(MIX.denoiser(schedule), torch.randn(4, 2), schedule, **bad)


def test_ddim_rejects_bad_eta():
    schedule = schedules.LinearSchedule()
    with pytest.raises(ValueError, match="eta"):
        samplers.ddim_step(torch.zeros(2, 2), torch.zeros(2, 2), 0.5, 0.4, schedule, eta=2.0)


# -- time grids ---------------------------------------------------------------------------------------
def test_time_grid_log_snr_is_evenly_spaced_in_log_snr():
    lin = schedules.LinearSchedule()
    t = samplers.time_grid(12, spacing="log_snr", schedule=lin, t_min=1e-3)
    assert t.dtype == torch.float32 and t.shape == (13,)
    assert t[0].item() == 1.0 and t[-1].item() == pytest.approx(1e-3, rel=1e-6)
    lam = lin.log_snr(t.double())
    steps = lam[1:] - lam[:-1]
    torch.testing.assert_close(steps, steps.mean().expand(12), rtol=2e-4, atol=0)  # float32 times


def test_time_grid_edm_matches_karras_sigmas():
    cos = schedules.CosineSchedule()
    t = samplers.time_grid(8, spacing="edm", schedule=cos, t_min=0.01, rho=7.0).double()
    sig = torch.exp(-cos.log_snr(t) / 2)  # sigma_t / alpha_t, the noise level of Karras et al.
    s_max, s_min = sig[0].item(), sig[-1].item()
    i = torch.arange(9, dtype=torch.float64)
    ref = (s_max ** (1 / 7) + i / 8 * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7
    torch.testing.assert_close(sig, ref, rtol=1e-4, atol=0)


def test_time_grid_uniform_and_bad_arguments():
    torch.testing.assert_close(samplers.time_grid(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    with pytest.raises(ValueError, match="needs the schedule"):
        samplers.time_grid(4, spacing="log_snr")
    with pytest.raises(ValueError, match="t_min > 0"):
        samplers.time_grid(4, spacing="edm", schedule=schedules.LinearSchedule())
    with pytest.raises(ValueError, match="spacing must be one of"):
        samplers.time_grid(4, spacing="karras")


def test_log_snr_grid_beats_uniform_at_ten_steps():
    # the reason for the grid (Section 4.5): with the exact denoiser, DDIM on 10 log-SNR-spaced
    # steps lands closer to the converged ODE solution than on 10 uniform steps
    lin = schedules.LinearSchedule()
    den = EIGHT.denoiser(lin)
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(3))
    ref = samplers.sample(den, x, lin, method="ddim", times=samplers.time_grid(400, spacing="log_snr", schedule=lin,
                                                                              t_min=1e-3))
    err = {}
    for spacing in ("uniform", "log_snr"):
        kw = dict(spacing=spacing, schedule=lin) if spacing != "uniform" else {}
        grid = samplers.time_grid(10, t_min=1e-3, **kw)
        err[spacing] = (samplers.sample(den, x, lin, method="ddim", times=grid) - ref).norm(dim=1).mean().item()
    assert err["log_snr"] < 0.7 * err["uniform"], err  # measured: 0.072 against 0.144


def test_annealed_langevin_is_langevin_at_each_level():
    ve = schedules.VESchedule(0.1, 2.0)
    score = lambda z, t: -z / (1 + ve.sigma(t).item() ** 2)  # noqa: E731
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(4))
    out = samplers.annealed_langevin(score, x0, ve, 3, 4, 0.01, generator=torch.Generator().manual_seed(5))
    g, x = torch.Generator().manual_seed(5), x0
    for t in (1.0, 0.5, 0.0):  # the levels, unrolled
        step = 0.01 * (ve.sigma(t).item() / ve.sigma(0.0).item()) ** 2
        for _ in range(4):
            x = samplers.langevin_step(x, score(x, t), step, generator=g)
    torch.testing.assert_close(out, x, rtol=0, atol=0)


def test_nfe_table():
    assert samplers.nfe("heun", 10) == 19 and samplers.nfe("heun", 10, t_min=1e-3) == 20
    assert all(samplers.nfe(m, 7) == 7 for m in samplers.METHODS if m != "heun")


@pytest.mark.parametrize("sched", ["flow", "ve", "linear"])
def test_ddpm_and_posterior_stay_finite_at_the_ends(sched):
    # at t = 1 the flow path has alpha_1 = 0: the posterior's x_t coefficient is 0, not 0 * inf
    schedule = schedules.get_schedule(sched)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(8))
    mean, var = diffusion.posterior(x, x, 0.9, 1.0, schedule)
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()
    den = EIGHT.denoiser(schedule, "velocity" if sched == "flow" else "eps")
    out = samplers.sample(den, x * (schedule.sigma(1.0).item()), schedule, method="ddpm", n_steps=20,
                          generator=torch.Generator().manual_seed(9))
    assert torch.isfinite(out).all()

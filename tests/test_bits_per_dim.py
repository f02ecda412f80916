"""Bits per dimension of 8-bit images (Section 9.5): DDPM's variational bound and the
probability-flow ODE with Hutchinson's divergence, checked where the answer is known."""

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy.stats import norm

from dmlib import likelihood, schedules, toy

SCHED = schedules.LinearSchedule()
S = 0.3  # per-pixel std of the Gaussian test data: edge bins are rare (0.09 %)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


class _Image:
    """A denoiser on flat vectors (B, D) seen as one on images (B, 1, 2, D / 2)."""

    def __init__(self, model):
        self.model, self.prediction = model, model.prediction

    def __call__(self, x, t, y=None):
        return self.model(x.reshape(x.shape[0], -1), t, y).reshape(x.shape)


def _pixels(z):
    """Continuous draws (B, D) -> 8-bit pixel values x = u / 127.5 - 1, (B, 1, 2, D/2)."""
    u = ((z + 1) * 127.5).round().clamp(0, 255)
    return (u / 127.5 - 1).reshape(z.shape[0], 1, 2, -1)


def _discrete_gaussian_bpd(x, std):
    """Exact -log2 P(u) / D for pixels of N(0, std^2) data rounded to the grid (edge
    bins open), by the normal CDF."""
    xf = x.reshape(x.shape[0], -1).double().numpy()
    lo = np.where(xf <= -1, -np.inf, (xf - 1 / 255) / std)
    hi = np.where(xf >= 1, np.inf, (xf + 1 / 255) / std)
    p = norm.cdf(hi) - norm.cdf(lo)
    return torch.tensor(-np.log2(p).sum(1) / xf.shape[1])


GAUSS = toy.GaussianMixture(torch.zeros(1, 4), stds=torch.tensor([S]))


@pytest.fixture(scope="module")
def gaussian_pixels():
    return _pixels(GAUSS.sample(400, generator=_gen(0)).double())


# -- the probability-flow ODE -------------------------------------------------------------


def test_ode_bpd_equals_the_exact_discrete_likelihood(gaussian_pixels):
    x = gaussian_pixels
    model = _Image(GAUSS.denoiser(SCHED))
    exact = _discrete_gaussian_bpd(x, S)
    # density at the pixel value times the bin volume: deterministic, per image
    # a smooth density: the sqrt(t) grid is the accurate one here (the log-SNR default is
    # checked below and in test_likelihood_grid.py)
    dens = likelihood.ode_bits_per_dim(model, x, SCHED, n_steps=50, hutchinson=False,
                                       dequantize=False, grid="sqrt_t")
    # (an edge pixel's bin is open, so there P(u) exceeds density times volume)
    inner = (x.reshape(len(x), -1).abs() < 1).all(1)
    assert inner.sum() > 390
    assert (dens - exact)[inner].abs().max() < 3e-3  # measured 1.3e-3 (Heun, 50 steps)
    # dequantised: an upper bound on -log2 P(u) / D, unbiased over w, tight here
    # (Jensen's gap ~ (1/127.5)^2 / (24 S^2) nats per value)
    deq = likelihood.ode_bits_per_dim(model, x, SCHED, n_steps=50, hutchinson=False,
                                      generator=_gen(1), grid="sqrt_t")
    gap = (deq - exact)[inner]
    assert abs(gap.mean()) < 4 * gap.std() / math.sqrt(len(gap)) + 1e-3  # measured -5e-4
    assert 7.0 < exact.mean() < 7.6  # log2(255) - a bit: a concentrated law
    # the default log-SNR grid converges to the same value, at Heun's second order
    lsnr = {n: likelihood.ode_bits_per_dim(model, x[:100], SCHED, n_steps=n,
                                           hutchinson=False, dequantize=False)
            for n in (50, 100)}
    err = {n: (v - exact[:100])[inner[:100]].abs().max() for n, v in lsnr.items()}
    assert err[100] < 3e-3 and err[100] < err[50] / 2.5, err  # measured 8.5e-3 at 50


def test_ode_bpd_check_fails_without_the_bin_volume(monkeypatch, gaussian_pixels):
    # A test of the test: dropping the change of variables to [0, 256) (a wrong sign
    # of D log 127.5 shifts bits/dim by 2 log2 127.5 = 14) is caught.
    real = likelihood.ode_bits_per_dim

    def wrong_sign(*args, **kwargs):
        return real(*args, **kwargs) - 2 * math.log2(127.5)

    monkeypatch.setattr(likelihood, "ode_bits_per_dim", wrong_sign)
    with pytest.raises(AssertionError):
        test_ode_bpd_equals_the_exact_discrete_likelihood(gaussian_pixels)


MIX = toy.GaussianMixture(
    [[-0.5, 0.2, 0.0], [0.4, -0.3, 0.3]],
    covs=torch.tensor([[[0.2, 0.1, 0.0], [0.1, 0.3, 0.05], [0.0, 0.05, 0.1]],
                       [[0.1, -0.05, 0.0], [-0.05, 0.2, 0.0], [0.0, 0.0, 0.3]]]),
    weights=[0.4, 0.6],
)


def test_hutchinson_is_an_unbiased_estimate_of_the_divergence():
    model = MIX.denoiser(SCHED)
    x = MIX.sample(4, generator=_gen(2)).double()
    t = torch.full((4,), 0.3, dtype=torch.float64)
    u, exact = likelihood._velocity_and_divergence(model, x, t, SCHED, None)
    probes = likelihood._rademacher(4000, x, _gen(3))
    assert set(probes.unique().tolist()) == {-1.0, 1.0}
    u_h, est = likelihood._velocity_and_hutchinson(model, x, t, SCHED, None, probes)
    torch.testing.assert_close(u_h, u)
    # one probe's variance is 2 sum_{i != j} J_ij^2; the mean of 4000 is within 0.05
    torch.testing.assert_close(est, exact, rtol=0, atol=0.05)
    single = likelihood._velocity_and_hutchinson(model, x, t, SCHED, None, probes[:1])[1]
    assert (single - exact).abs().max() > 1e-3  # a non-diagonal Jacobian: not exact


def test_ode_log_likelihood_with_hutchinson_matches_the_exact_density():
    x = MIX.sample(300, generator=_gen(4)).double()
    model = MIX.denoiser(SCHED)
    exact = MIX.log_prob(x, 1e-3, SCHED)
    est = likelihood.ode_log_likelihood(model, x, SCHED, n_steps=60, hutchinson=True,
                                        generator=_gen(5))
    diff = est - exact
    se = diff.std() / math.sqrt(len(diff))
    assert diff.std() > 1e-3  # the probes do add noise
    assert abs(diff.mean()) < 4 * se + 5e-3  # unbiased; measured mean -1e-3, se 8e-3


# -- DDPM's variational bound ---------------------------------------------------------------


class _ZeroX0:
    """A model whose x0 guess is always 0: every term of the bound is deterministic."""

    prediction = "x0"

    def __call__(self, x, t, y=None):
        return torch.zeros_like(x)


def _zero_model_vlb_nats(x, T):
    """The bound for the zero x0-model, written with Ho et al.'s discrete tables."""
    ab = SCHED.alpha_bars(T, torch.float64)
    beta = SCHED.betas(T, torch.float64)
    x = x.reshape(x.shape[0], -1).double()
    d = x.shape[1]
    # prior: KL(N(sqrt(ab_T) x, (1 - ab_T) I) || N(0, I))
    prior = 0.5 * (ab[T] * x**2 + (1 - ab[T]) - 1 - torch.log(1 - ab[T])).sum(1)
    # L_{k-1} = |coef_x0 x|^2 / (2 beta~_k), coef_x0 = sqrt(ab_{k-1}) beta_k / (1 - ab_k)
    k = torch.arange(2, T + 1)
    coef = ab[k - 1].sqrt() * beta[k] / (1 - ab[k])
    var = (1 - ab[k - 1]) / (1 - ab[k]) * beta[k]
    terms = 0.5 * (coef**2 / var).sum() * (x**2).sum(1)
    # decoder: the bin of each pixel under N(0, beta_1), in 50-digit arithmetic (far
    # bins have probabilities like 1e-2000)
    mpmath.mp.dps = 50
    sd = mpmath.sqrt(mpmath.mpf(float(beta[1])))
    dec = torch.zeros(x.shape[0], dtype=torch.float64)
    for i, row in enumerate(x.tolist()):
        for v in row:
            lo = -mpmath.inf if v <= -1 else (mpmath.mpf(v) - mpmath.mpf(1) / 255) / sd
            hi = mpmath.inf if v >= 1 else (mpmath.mpf(v) + mpmath.mpf(1) / 255) / sd
            dec[i] -= float(mpmath.log(mpmath.ncdf(hi) - mpmath.ncdf(lo)))
    return prior, terms, dec, d


def test_vlb_of_the_zero_model_matches_ho_et_al_tables():
    T = 50
    u = torch.tensor([[0, 255, 127, 128], [1, 254, 64, 200], [127, 127, 128, 128]])
    x = (u / 127.5 - 1).reshape(3, 1, 2, 2)
    prior, terms, dec, d = _zero_model_vlb_nats(x, T)
    got = likelihood.vlb_bits_per_dim(_ZeroX0(), x, SCHED, T=T, generator=_gen(6))
    scale = d * math.log(2)
    torch.testing.assert_close(got["prior"], prior / scale, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got["diffusion"], terms / scale, rtol=1e-9, atol=0)
    torch.testing.assert_close(got["decoder"], dec / scale, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(got["bpd"], (prior + terms + dec) / scale, rtol=1e-7, atol=0)


@pytest.mark.parametrize("sampling", ["uniform", "importance"])
def test_vlb_monte_carlo_estimate_is_unbiased(sampling):
    # the zero model's full sum is deterministic: the mean of many few-term estimates
    # must reproduce it
    T = 50
    x = _pixels(GAUSS.sample(1, generator=_gen(7)).double()).repeat(4000, 1, 1, 1)
    full = likelihood.vlb_bits_per_dim(_ZeroX0(), x[:1], SCHED, T=T)["diffusion"]
    est = likelihood.vlb_bits_per_dim(_ZeroX0(), x, SCHED, T=T, n_terms=3,
                                      sampling=sampling, generator=_gen(8))["diffusion"]
    se = est.std() / math.sqrt(len(est))
    assert est.std() > 0
    assert abs(est.mean() - full[0]) < 4 * se


@pytest.mark.parametrize("sampling", ["uniform", "importance"])
def test_step_weights_make_the_sum_unbiased(sampling):
    # E sum_j w_j f(k_j) = sum_k f(k), for f the zero model's per-step terms (Ho et
    # al.'s coef^2 / beta~_k, steeply rising towards k = 2), with many rows
    T, n, rows = 50, 3, 200_000
    ab, beta = SCHED.alpha_bars(T, torch.float64), SCHED.betas(T, torch.float64)
    k = torch.arange(2, T + 1)
    f = (ab[k - 1].sqrt() * beta[k] / (1 - ab[k])) ** 2 / ((1 - ab[k - 1]) / (1 - ab[k]) * beta[k])
    ks, w = likelihood._steps(SCHED, T, n, rows, sampling, _gen(13))
    assert ks.shape == w.shape == (rows, n) and ks.min() >= 2 and ks.max() <= T
    est = (w * f[ks - 2]).sum(1)
    se = est.std() / math.sqrt(rows)
    assert abs(est.mean() - f.sum()) < 4 * se  # se: 0.2 % (uniform), 0.4 % (importance)
    assert se < 0.01 * f.sum()


def test_vlb_check_fails_with_a_biased_step_weight(monkeypatch):
    # A test of the test: weights that forget the (T - 1) / n scaling are caught.
    real = likelihood._steps

    def unscaled(schedule, T, n, b, sampling, generator):
        ks, w = real(schedule, T, n, b, sampling, generator)
        return ks, torch.ones_like(w)

    monkeypatch.setattr(likelihood, "_steps", unscaled)
    with pytest.raises(AssertionError):
        test_vlb_monte_carlo_estimate_is_unbiased("uniform")

    def ten_percent_low(schedule, T, n, b, sampling, generator):
        ks, w = real(schedule, T, n, b, sampling, generator)
        return ks, w / 1.1

    monkeypatch.setattr(likelihood, "_steps", ten_percent_low)
    with pytest.raises(AssertionError):
        test_step_weights_make_the_sum_unbiased("importance")


def test_vlb_of_the_exact_denoiser_bounds_the_true_likelihood(gaussian_pixels):
    x = gaussian_pixels[:200]
    exact = _discrete_gaussian_bpd(x, S)
    model = _Image(GAUSS.denoiser(SCHED))
    out = likelihood.vlb_bits_per_dim(model, x, SCHED, T=1000, n_terms=50, generator=_gen(9))
    gap = out["bpd"] - exact
    se = gap.std() / math.sqrt(len(gap))
    # a bound: at least the true -log2 P(u) / D; for T = 1000 it is 0.5 bits above
    # (measured 0.54 +- 0.13, the same as the sum over all 999 steps)
    assert gap.mean() > -3 * se
    assert gap.mean() < 1.2
    torch.testing.assert_close(out["bpd"], out["prior"] + out["diffusion"] + out["decoder"])


def test_bits_per_dim_on_mnist_shaped_images():
    # a smoke test of shapes: a small convolutional eps-model on (B, 1, 28, 28)
    class Conv(torch.nn.Module):
        prediction = "eps"

        def __init__(self):
            super().__init__()
            self.net = torch.nn.Conv2d(2, 1, 3, padding=1)

        def forward(self, x, t, y=None):
            tt = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1, 1, 1).expand_as(x)
            return self.net(torch.cat([x, tt], 1))

    torch.manual_seed(0)
    model = Conv()
    u = torch.randint(0, 256, (3, 1, 28, 28), generator=_gen(10))
    x = u / 127.5 - 1
    vlb = likelihood.vlb_bits_per_dim(model, x, SCHED, T=100, n_terms=2, generator=_gen(11))
    ode = likelihood.ode_bits_per_dim(model, x, SCHED, n_steps=3, generator=_gen(12))
    assert vlb["bpd"].shape == ode.shape == (3,)
    assert torch.isfinite(vlb["bpd"]).all() and torch.isfinite(ode).all()


# -- bad input ---------------------------------------------------------------------------------


def test_bad_arguments():
    model = _ZeroX0()
    x = torch.full((2, 1, 2, 2), 128 / 127.5 - 1)
    with pytest.raises(ValueError, match="8-bit pixels"):
        likelihood.vlb_bits_per_dim(model, x + 0.001, SCHED, T=10)
    with pytest.raises(ValueError, match="8-bit pixels"):
        likelihood.ode_bits_per_dim(model, x + 2.0, SCHED)
    with pytest.raises(ValueError, match="variance-preserving"):
        likelihood.vlb_bits_per_dim(model, x, schedules.VESchedule(), T=10)
    with pytest.raises(ValueError, match="n_terms must be at most T - 1 = 9"):
        likelihood.vlb_bits_per_dim(model, x, SCHED, T=10, n_terms=10, sampling="uniform")
    with pytest.raises(ValueError, match="T must be at least 2"):
        likelihood.vlb_bits_per_dim(model, x, SCHED, T=1)
    with pytest.raises(ValueError, match="sampling"):
        likelihood.vlb_bits_per_dim(model, x, SCHED, T=10, sampling="stratified")
    with pytest.raises(ValueError, match="t_min"):
        likelihood.ode_bits_per_dim(model, x, SCHED, t_min=0.0)

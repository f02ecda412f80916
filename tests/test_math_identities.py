"""The book's identities, checked numerically against dmlib.

Each identity is a plain ``check_*`` function that raises AssertionError when it does not
hold. The checks look dmlib's functions up at call time (``D.q_sample``,
``GaussianMixture.score``, ...), so ``test_planted_bugs.py`` can monkeypatch a wrong formula
into dmlib and show that the very same check then fails.

Monte-Carlo checks use fixed seeds and tolerances of Z standard errors, with the standard
error computed from the sample size (or from the sample itself). With Z = 5 a correct
implementation fails a single comparison with probability ~6e-7, and the seeds are fixed, so
the tests are deterministic; the planted-bug tests show the tolerances are tight enough to
catch real mistakes.
"""

import math

import pytest
import torch

from dmlib import diffusion as D
from dmlib import schedules as S
from dmlib import spectrum, toy

Z = 5.0  # tolerance in standard errors for every Monte-Carlo comparison (see module docstring)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def make_mixture() -> toy.GaussianMixture:
    """A 3-component 2D mixture with full, non-isotropic covariances and unequal weights."""
    means = [[-1.5, 0.5], [1.0, 1.0], [0.5, -1.2]]
    covs = [[[0.30, 0.12], [0.12, 0.20]],
            [[0.10, -0.05], [-0.05, 0.25]],
            [[0.40, 0.00], [0.00, 0.05]]]
    return toy.GaussianMixture(means, covs, weights=[0.5, 0.3, 0.2], labels=[0, 1, 1])


def _noised_points(mixture, schedule, t, n=200, seed=0):
    """Points where p_t has mass (q_sample'd mixture samples) plus two far-out ones, float64."""
    g = _gen(seed)
    x0 = mixture.sample(n, generator=g).double()
    xt = (schedule.alpha(t).item() * x0
          + schedule.sigma(t).item() * torch.randn(x0.shape, generator=g, dtype=torch.float64))
    far = torch.tensor([[4.0, -4.0], [-3.0, 5.0]], dtype=torch.float64)
    return torch.cat([xt, far])


def _assert_within(est, target, se, what):
    """Assert |est - target| <= Z * se elementwise (tensors or floats, broadcast)."""
    est, target, se = (torch.as_tensor(v, dtype=torch.float64) for v in (est, target, se))
    err = (est - target).abs()
    bad = err > Z * se
    if bad.any():
        ratio = (err / se).max().item()
        raise AssertionError(f"{what}: estimate {est.tolist()} vs target {target.tolist()}: "
                             f"off by {ratio:.1f} standard errors (allowed {Z})")


# ================================================================================================
# 1. the closed-form marginal q(x_t | x_0) vs the iterated Markov chain
# ================================================================================================
def _assert_matches_conditional_gaussian(x, x0, mean, var, what):
    """x_i ~ N(mean_i, var I) independently, where mean_i = alpha x0_i.

    Checks the residual r = x - mean: E[r] = 0 (SE sqrt(var / n)), E[r (x0 - mean x0)] = 0
    (catches a wrong alpha even for centred data; SE sqrt(var E[(x0 - mean x0)^2] / n)),
    E[r_j^2] = var (SE var sqrt(2 / n) for a Gaussian) and E[r_1 r_2] = 0 (SE var / sqrt(n)).
    """
    n = x.shape[0]
    r = x - mean
    v = var.flatten()[0].item()
    xc = x0 - x0.mean(0)
    _assert_within(r.mean(0), 0.0, math.sqrt(v / n), f"{what}: mean of x - alpha x0")
    _assert_within((r * xc).mean(0), 0.0, torch.sqrt(v * (xc**2).mean(0) / n),
                   f"{what}: covariance of x - alpha x0 with x0")
    _assert_within((r**2).mean(0), v, v * math.sqrt(2 / n), f"{what}: variance")
    _assert_within((r[:, 0] * r[:, 1]).mean(), 0.0, v / math.sqrt(n), f"{what}: cross-covariance")


def check_marginal(schedule=None, *, n=20_000, T=200, seed=0):
    """Iterating the forward chain from x_0 gives the closed-form marginal N(alpha_t x_0, sigma_t^2 I).

    Data: 2D moons (non-Gaussian), float64. Three samplers of x_t are compared with
    ``D.marginal``: the chain of ``D.q_step`` on the grid t_k = k / T; a reference chain
    written here (VP: DDPM's x_k = sqrt(1 - beta_k) x_{k-1} + sqrt(beta_k) eps from the
    ``betas(T)`` table, which comes from alpha_bar(t) alone; VE / flow: alpha_{t|s} = alpha_t /
    alpha_s, sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2 from ``alpha_sigma``); and
    ``D.q_sample`` in one shot. Checked at an intermediate step (k = T / 4) and at k = T.
    """
    sch = schedule if schedule is not None else S.LinearSchedule()
    x0 = toy.sample_2d("moons", n, seed=seed).double()
    g = _gen(seed + 1)
    check_at = {T // 4, T}
    if sch.variance_preserving:
        betas = sch.betas(T, torch.float64)
        a_step, var_step = (1 - betas).sqrt(), betas
    else:
        a, s = sch.alpha_sigma(sch.times(T))
        a_step = torch.cat([torch.ones(1, dtype=torch.float64), a[1:] / a[:-1]])
        var_step = torch.cat([torch.zeros(1, dtype=torch.float64), s[1:] ** 2 - a_step[1:] ** 2 * s[:-1] ** 2])
    x_step, x_ref = x0.clone(), x0.clone()
    for k in range(1, T + 1):
        x_step = D.q_step(x_step, (k - 1) / T, k / T, sch, generator=g)
        x_ref = a_step[k] * x_ref + var_step[k].sqrt() * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        if k in check_at:
            t = k / T
            mean, var = D.marginal(x0, t, sch)
            _assert_matches_conditional_gaussian(x_step, x0, mean, var, f"q_step chain at k={k}")
            _assert_matches_conditional_gaussian(x_ref, x0, mean, var, f"reference chain at k={k}")
            x_cf = D.q_sample(x0, t, sch, generator=g)
            _assert_matches_conditional_gaussian(x_cf, x0, mean, var, f"q_sample at t={t}")


def check_vp_coefficients(schedule):
    """A VP schedule's alpha_t = sqrt(alpha_bar_t), sigma_t^2 = 1 - alpha_bar_t, from the tables."""
    T = 100
    t = schedule.times(T)
    ab = torch.cumprod(1 - schedule.betas(T, torch.float64), 0)  # the chain's alpha_bar
    a, s = schedule.alpha_sigma(t)
    torch.testing.assert_close(a, ab.sqrt(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s**2, 1 - ab, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid", "ve", "flow"])
def test_marginal_matches_iterated_chain(name):
    check_marginal(S.get_schedule(name))


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_vp_coefficients_match_beta_chain(name):
    check_vp_coefficients(S.get_schedule(name))


# ================================================================================================
# 2. the posterior q(x_s | x_t, x_0)
# ================================================================================================
def check_posterior_bayes(schedule, s, t, x0=0.7, xt=-0.3):
    """In 1-D, q(x_s | x_t, x_0) ∝ q(x_s | x_0) q(x_t | x_s) computed on a fine grid.

    The transition coefficients are recomputed here from alpha / sigma (not from
    ``D.transition``). A Riemann sum of a Gaussian on a grid 1e-4 apart spanning many standard
    deviations is accurate far beyond the 1e-8 relative tolerance used.
    """
    a_s, sig_s = (c.item() for c in schedule.alpha_sigma(s))
    a_t, sig_t = (c.item() for c in schedule.alpha_sigma(t))
    a_ts = a_t / a_s
    var_ts = sig_t**2 - a_ts**2 * sig_s**2
    grid = torch.linspace(-12, 12, 240_001, dtype=torch.float64)
    logp = -(grid - a_s * x0) ** 2 / (2 * sig_s**2) - (xt - a_ts * grid) ** 2 / (2 * var_ts)
    w = torch.exp(logp - logp.max())
    w = w / w.sum()
    num_mean = (w * grid).sum()
    num_var = (w * (grid - num_mean) ** 2).sum()
    mean, var = D.posterior(torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[xt]], dtype=torch.float64),
                            s, t, schedule)
    torch.testing.assert_close(mean.flatten()[0], num_mean, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(var.flatten()[0], num_var, rtol=1e-8, atol=1e-12)


def check_posterior_ddpm(schedule, T=1000, ks=(1, 2, 10, 250, 500, 999, 1000)):
    """On the grid s = (k-1)/T, t = k/T: Ho et al.'s mu~_k and beta~_k, written from the tables."""
    k = torch.tensor(ks)
    ab = schedule.alpha_bars(T, torch.float64)
    beta = schedule.betas(T, torch.float64)
    g = _gen(3)
    x0 = torch.randn(len(ks), 3, generator=g, dtype=torch.float64)
    xk = torch.randn(len(ks), 3, generator=g, dtype=torch.float64)
    ab_k, ab_prev, b_k = ab[k][:, None], ab[k - 1][:, None], beta[k][:, None]
    mu = ab_prev.sqrt() * b_k / (1 - ab_k) * x0 + (1 - b_k).sqrt() * (1 - ab_prev) / (1 - ab_k) * xk
    beta_tilde = (1 - ab_prev) / (1 - ab_k) * b_k
    mean, var = D.posterior(x0, xk, (k - 1).double() / T, k.double() / T, schedule)
    torch.testing.assert_close(mean, mu, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(var, beta_tilde, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("name", ["linear", "cosine", "ve", "flow"])
@pytest.mark.parametrize("s, t", [(0.3, 0.5), (0.05, 0.9), (0.6, 0.61)])
def test_posterior_matches_bayes_rule(name, s, t):
    check_posterior_bayes(S.get_schedule(name), s, t)


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_posterior_matches_ddpm_formulas(name):
    check_posterior_ddpm(S.get_schedule(name))


# ================================================================================================
# 3. the exact mixture score, Tweedie's formula and the mixture denoiser
# ================================================================================================
def _reference_noised_mixture(mixture, schedule, t):
    """p_t of the mixture as a torch.distributions object: an independent implementation."""
    a, s = (c.item() for c in schedule.alpha_sigma(t))
    comps = torch.distributions.MultivariateNormal(
        a * mixture.means, covariance_matrix=a**2 * mixture.covs + s**2 * torch.eye(mixture.dim, dtype=torch.float64))
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(probs=mixture.weights), comps)


def check_mixture_score(mixture, schedule, t):
    """score(x_t) = grad_x log p_t(x_t), the gradient taken by autograd of an independent density."""
    x = _noised_points(mixture, schedule, t)
    ref = _reference_noised_mixture(mixture, schedule, t)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(ref.log_prob(xg).sum(), xg)
    score = mixture.score(x, t, schedule)
    assert score.shape == x.shape and score.dtype == torch.float64
    # two float64 evaluations of the same closed form: agree to ~1e-13 relative
    torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(mixture.log_prob(x, t, schedule), ref.log_prob(x), rtol=1e-10, atol=1e-10)


def check_tweedie(mixture, schedule, t):
    """Tweedie: E[x_0 | x_t] = (x_t + sigma_t^2 score(x_t)) / alpha_t.

    Both sides are exact and computed independently (``posterior_mean`` goes component by
    component with no score), so they agree to 1e-8 in float64. The formula is evaluated as
    written in the book and through ``D.convert(score, src="score", dst="x0")``.
    """
    x = _noised_points(mixture, schedule, t)
    a, s = (c.item() for c in schedule.alpha_sigma(t))
    score = mixture.score(x, t, schedule)
    pm = mixture.posterior_mean(x, t, schedule)
    torch.testing.assert_close((x + s**2 * score) / a, pm, rtol=0, atol=1e-8)
    torch.testing.assert_close(D.convert(score, x, t, schedule, src="score", dst="x0"), pm, rtol=0, atol=1e-8)


def check_posterior_mean_monte_carlo(mixture, schedule, t, n=200_000, seed=0):
    """E[x_0 | x_t] by self-normalised importance sampling: x_0^i ~ p_0, w_i ∝ q(x_t | x_0^i).

    Standard error (delta method): sqrt(sum_i w_i^2 (x_0^i - estimate)^2) per coordinate, with
    normalised weights w; an effective sample size above 1000 keeps it a good approximation.
    """
    g = _gen(seed)
    a, s = (c.item() for c in schedule.alpha_sigma(t))
    x0 = mixture.sample(n, generator=g).double()  # (n, D)
    xt = torch.tensor([[0.0, 0.0], [-0.8, 0.3], [0.6, 0.5], [0.3, -0.7], [1.5, -1.0]], dtype=torch.float64)
    logw = -((xt[:, None, :] - a * x0[None]) ** 2).sum(-1) / (2 * s**2)  # (P, n)
    w = torch.softmax(logw, 1)
    est = w @ x0  # (P, D)
    se = torch.sqrt(torch.einsum("pn,pnd->pd", w**2, (x0[None] - est[:, None]) ** 2))
    ess = 1 / (w**2).sum(1)
    assert (ess > 1000).all(), f"importance sampling degenerate (ESS {ess.min().item():.0f}); pick another t"
    _assert_within(est, mixture.posterior_mean(xt, t, schedule), se, "Monte-Carlo E[x0 | x_t]")


def check_mixture_denoiser(mixture, schedule, t):
    """The oracle denoiser predicts E[eps | x_t] = (x_t - alpha_t E[x_0 | x_t]) / sigma_t, and
    converting it to a score gives the exact score; every other kind is its conversion."""
    x = _noised_points(mixture, schedule, t)
    a, s = (c.item() for c in schedule.alpha_sigma(t))
    model = mixture.denoiser(schedule, "eps")
    assert model.prediction == "eps"
    eps_hat = model(x, t)
    torch.testing.assert_close(eps_hat, (x - a * mixture.posterior_mean(x, t, schedule)) / s, rtol=1e-10, atol=1e-10)
    score = D.convert(eps_hat, x, t, schedule, src="eps", dst="score")
    torch.testing.assert_close(score, mixture.score(x, t, schedule), rtol=1e-8, atol=1e-8)
    for kind in ("x0", "v", "score"):
        out = mixture.denoiser(schedule, kind)(x, t)
        torch.testing.assert_close(out, D.convert(eps_hat, x, t, schedule, src="eps", dst=kind), rtol=1e-8, atol=1e-8)


def check_prediction_equivalence(schedule, t):
    """eps, x0, v = alpha eps - sigma x0, score = -eps / sigma and velocity = alpha' x0 + sigma' eps
    all describe the same (x0, eps) pair: ``D.convert`` maps each one to each other one.

    The five kinds are built here from their definitions (derivatives by central differences,
    error ~1e-10), so a formula that is wrong in both directions of a round trip still fails."""
    g = _gen(5)
    tt = torch.full((4,), t, dtype=torch.float64)
    x0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 3, generator=g, dtype=torch.float64)
    a, s = (c[:, None] for c in schedule.alpha_sigma(tt))
    h = 1e-6
    da = (schedule.alpha(tt + h) - schedule.alpha(tt - h))[:, None] / (2 * h)
    ds = (schedule.sigma(tt + h) - schedule.sigma(tt - h))[:, None] / (2 * h)
    xt = a * x0 + s * eps
    kinds = {"eps": eps, "x0": x0, "v": a * eps - s * x0, "score": -eps / s, "velocity": da * x0 + ds * eps}
    for src, pred in kinds.items():
        for dst, ref in kinds.items():
            out = D.convert(pred, xt, tt, schedule, src=src, dst=dst)
            # finite-difference derivatives limit the velocity to ~1e-8 relative
            torch.testing.assert_close(out, ref, rtol=1e-7, atol=1e-7 * max(1.0, ref.abs().max().item()),
                                       msg=lambda m, src=src, dst=dst: f"convert {src} -> {dst}: {m}")


@pytest.mark.parametrize("name, t", [("linear", 0.05), ("cosine", 0.5), ("sigmoid", 0.9), ("ve", 0.5), ("flow", 0.3)])
def test_prediction_equivalence(name, t):
    check_prediction_equivalence(S.get_schedule(name), t)


SCORE_CASES = [(name, t) for name in ("linear", "cosine", "ve", "flow") for t in (0.05, 0.5, 0.95)]


@pytest.mark.parametrize("name, t", SCORE_CASES)
def test_mixture_score_is_gradient_of_log_density(name, t):
    check_mixture_score(make_mixture(), S.get_schedule(name), t)


@pytest.mark.parametrize("name, t", SCORE_CASES)
def test_tweedie(name, t):
    check_tweedie(make_mixture(), S.get_schedule(name), t)


@pytest.mark.parametrize("name, t", [("linear", 0.3), ("cosine", 0.5), ("flow", 0.4)])
def test_posterior_mean_monte_carlo(name, t):
    check_posterior_mean_monte_carlo(make_mixture(), S.get_schedule(name), t)


@pytest.mark.parametrize("name, t", [("linear", 0.1), ("cosine", 0.5), ("ve", 0.3), ("flow", 0.9)])
def test_mixture_denoiser(name, t):
    check_mixture_denoiser(make_mixture(), S.get_schedule(name), t)


def test_mixture_score_by_autograd_of_log_prob():
    # The book differentiates the mixture's own noised log density; log_prob must keep the graph.
    mixture, sch, t = make_mixture(), S.CosineSchedule(), 0.4
    x = _noised_points(mixture, sch, t).requires_grad_(True)
    (grad,) = torch.autograd.grad(mixture.log_prob(x, t, sch).sum(), x)
    torch.testing.assert_close(grad, mixture.score(x.detach(), t, sch), rtol=1e-9, atol=1e-9)


# ================================================================================================
# 4. the noised mixture density vs samples of the forward process
# ================================================================================================
def check_noised_moments(mixture, schedule, t, n=200_000, seed=0):
    """q_sample'd mixture samples have mean alpha m and covariance alpha^2 C + sigma^2 I, where
    m = sum pi_k mu_k and C = sum pi_k (Sigma_k + mu_k mu_k^T) - m m^T. Standard errors are
    estimated from the sample (the mixture is not Gaussian)."""
    g = _gen(seed)
    a, s = (c.item() for c in schedule.alpha_sigma(t))
    pi, mu, cov = mixture.weights, mixture.means, mixture.covs
    m = pi @ mu
    C = torch.einsum("k,kij->ij", pi, cov + mu[:, :, None] * mu[:, None, :]) - torch.outer(m, m)
    mean_t, cov_t = a * m, a**2 * C + s**2 * torch.eye(2, dtype=torch.float64)
    xt = D.q_sample(mixture.sample(n, generator=g).double(), t, schedule, generator=g)
    _assert_within(xt.mean(0), mean_t, xt.std(0) / math.sqrt(n), "mean of x_t")
    d = xt - mean_t
    prods = d[:, :, None] * d[:, None, :]  # (n, 2, 2), E = cov_t exactly
    _assert_within(prods.mean(0), cov_t, prods.std(0) / math.sqrt(n), "covariance of x_t")


def check_noised_density_histogram(mixture, schedule, t, n=100_000, seed=0, bins=12, lim=3.0, sub=8):
    """A 2D histogram of q_sample'd mixture samples vs n times the integral of exp(log_prob)
    over each bin (midpoint rule, sub x sub points a bin: relative error ~1e-3, far below the
    Poisson noise). Pearson's chi-square over bins expecting at least 20 points must stay below
    df + Z sqrt(2 df) (its mean plus Z standard deviations)."""
    g = _gen(seed)
    xt = D.q_sample(mixture.sample(n, generator=g).double(), t, schedule, generator=g)
    edges = torch.linspace(-lim, lim, bins + 1, dtype=torch.float64)
    counts = torch.histogramdd(xt, bins=[edges, edges]).hist  # (bins, bins)
    h = 2 * lim / (bins * sub)
    c = torch.linspace(-lim + h / 2, lim - h / 2, bins * sub, dtype=torch.float64)
    gx, gy = torch.meshgrid(c, c, indexing="ij")
    dens = mixture.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1), t, schedule).exp()
    mass = dens.reshape(bins, sub, bins, sub).sum((1, 3)) * h * h
    expected = n * mass
    keep = expected >= 20
    chi2 = (((counts - expected) ** 2 / expected)[keep]).sum().item()
    df = int(keep.sum())
    assert df >= 40, "too few populated bins for a meaningful test"
    assert chi2 < df + Z * math.sqrt(2 * df), f"histogram vs exact density: chi2 = {chi2:.1f} with {df} bins"


@pytest.mark.parametrize("name, t", [("linear", 0.2), ("cosine", 0.6), ("ve", 0.1), ("flow", 0.5)])
def test_noised_mixture_moments(name, t):
    check_noised_moments(make_mixture(), S.get_schedule(name), t)


@pytest.mark.parametrize("name, t", [("linear", 0.0), ("linear", 0.15), ("cosine", 0.4), ("flow", 0.3)])
def test_noised_mixture_density_matches_histogram(name, t):
    sch = S.get_schedule(name)
    mixture = make_mixture()
    if t == 0.0:  # t = 0 is the clean density: check log_prob(x) with t=None as well
        assert torch.allclose(mixture.log_prob(torch.zeros(1, 2, dtype=torch.float64)),
                              mixture.log_prob(torch.zeros(1, 2, dtype=torch.float64), 0.0, sch))
    check_noised_density_histogram(mixture, sch, t)


# ================================================================================================
# 5. the spectral view
# ================================================================================================
def check_white_noise_spectrum(std=0.7, groups=16, per_group=32, size=32, seed=0):
    """White noise of variance std^2 has P(f) = std^2 at every f.

    The standard error of each bin is estimated from the spread of ``groups`` independent
    batches (so it does not depend on how many frequencies a bin holds)."""
    g = _gen(seed)
    powers = []
    for _ in range(groups):
        x = std * torch.randn(per_group, 1, size, size, generator=g, dtype=torch.float64)
        freqs, p = spectrum.radial_power_spectrum(x)
        powers.append(p.double())
    powers = torch.stack(powers)  # (groups, n_bins)
    est = powers.mean(0)
    se = powers.std(0) / math.sqrt(groups)
    assert (se < 0.1 * est).all(), "too little data for a meaningful check"  # 10% relative error at most
    _assert_within(est, torch.full_like(est, std**2), se, "white-noise power spectrum")
    assert freqs.shape == est.shape and (freqs > 0).all() and (freqs <= 0.5).all()


def check_sinusoid_spectrum(size=32, k=3, n_bins=8, axis=-1):
    """A sinusoid of frequency f0 = k / size cycles per pixel puts all its power in the bin
    containing f0 (chosen away from bin edges: bins of width 0.5 / n_bins)."""
    f0 = k / size
    n = torch.arange(size, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * f0 * n)
    img = (wave[None, :] if axis == -1 else wave[:, None]).expand(size, size)[None, None]
    freqs, p = spectrum.radial_power_spectrum(2.0 * img, n_bins=n_bins)
    width = 0.5 / n_bins
    peak = int(p.argmax())
    assert freqs[peak] - width / 2 < f0 < freqs[peak] + width / 2, \
        f"peak at bin {peak} (centre {freqs[peak]:.4f}) but f0 = {f0:.4f}"
    others = torch.cat([p[:peak], p[peak + 1:]])
    assert others.abs().max() < 1e-6 * p[peak], "power leaked out of the sinusoid's bin"


def test_white_noise_spectrum_is_flat():
    check_white_noise_spectrum()


@pytest.mark.parametrize("size, k, n_bins, axis", [(32, 3, 8, -1), (32, 5, 8, 0), (64, 11, 16, -1), (32, 13, 8, 0)])
def test_sinusoid_power_in_its_bin(size, k, n_bins, axis):
    check_sinusoid_spectrum(size, k, n_bins, axis)


def test_sinusoid_peak_with_default_bins():
    # Default bins are integer radii k / N, so a sinusoid of k = 5 cycles across 28 pixels
    # lands exactly in the bin centred on 5 / 28 and nowhere else.
    size, k = 28, 5
    n = torch.arange(size, dtype=torch.float64)
    img = torch.cos(2 * math.pi * k / size * n)[None, :].expand(size, size)[None]
    freqs, p = spectrum.radial_power_spectrum(img)
    peak = int(p.argmax())
    assert abs(freqs[peak].item() - k / size) < 1e-6
    assert torch.cat([p[:peak], p[peak + 1:]]).abs().max() < 1e-6 * p[peak]

# ================================================================================================
# Chapter 4's unifying view (Sections 4.9 and 4.10): preconditioning, weightings over log-SNR,
# the family of reverse SDEs with the probability-flow ODE's marginals
# ================================================================================================
from dmlib import losses as L  # noqa: E402
from dmlib import samplers as SM  # noqa: E402


def _mix1d():
    return toy.GaussianMixture(means=[[-1.2], [0.3], [1.5]], stds=[0.15, 0.2, 0.1], weights=[0.3, 0.5, 0.2])


def check_preconditioned_target_is_minus_v(schedule, t):
    """VP, sigma_d = 1: (E[x0 | x_t] - c_skip x_t) / c_out of the exact denoiser is -E[v | x_t]."""
    mix = make_mixture()
    x = _noised_points(mix, schedule, t)
    c_skip, c_out, c_in, _ = D.preconditioning(t, schedule)
    torch.testing.assert_close(c_in, torch.ones_like(c_in), rtol=1e-12, atol=1e-12)
    target = (mix.posterior_mean(x, t, schedule) - c_skip * x) / c_out
    v_hat = mix.denoiser(schedule, prediction="v")(x, t)
    torch.testing.assert_close(target, -v_hat, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
@pytest.mark.parametrize("t", [0.05, 0.5, 0.95])
def test_preconditioned_target_is_minus_v(name, t):
    check_preconditioned_target_is_minus_v(S.get_schedule(name), t)


def _em_drift_and_variance(x, t, dt, schedule, eta, score):
    """Read the drift b and the variance per unit time eta^2 g^2 off dmlib's Euler-Maruyama step:
    x_s = x - dt b + c z, solved from two calls with known draws z, z'."""
    s = t - dt
    outs, zs = [], []
    for seed in (5, 6):
        zs.append(torch.randn(x.shape, dtype=torch.float64, generator=_gen(seed)))
        outs.append(SM.euler_maruyama_step(x, score, t, s, schedule, eta=eta, generator=_gen(seed)))
    c = ((outs[0] - outs[1]) / (zs[0] - zs[1])).median().item()  # the noise scale, one number
    mean = outs[0] - c * zs[0]
    return (x - mean) / dt, c**2 / dt


def check_sde_family_fokker_planck(eta, t, *, schedule=None):
    """The family's density equation, d p_t / dt = -div(b p_t) - (eta^2 g^2 / 2) lap p_t, with b and
    eta^2 g^2 read off dmlib's step (eq-em-reverse-eta), for the exact 1D mixture density."""
    schedule = schedule or S.LinearSchedule()
    mix = _mix1d()
    x = torch.linspace(-4, 4, 4001, dtype=torch.float64)[:, None]
    h = (x[1] - x[0]).item()
    b, var_rate = _em_drift_and_variance(x, t, 1e-4, schedule, eta, mix.score(x, t, schedule))
    p = lambda u: mix.log_prob(x, u, schedule).exp()  # noqa: E731
    dt = 1e-4
    lhs = (p(t + dt) - p(t - dt)) / (2 * dt)
    grad = lambda v: torch.gradient(v, spacing=h)[0]  # noqa: E731
    rhs = -grad(b[:, 0] * p(t)) - var_rate / 2 * grad(grad(p(t)))
    inner = x[:, 0].abs() < 3
    rel = ((lhs - rhs)[inner].abs().max() / lhs.abs().max()).item()
    assert rel < 1e-3, f"eta = {eta}, t = {t}: Fokker-Planck mismatch {rel:.2e} of max |dp/dt|"


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("t", [0.05, 0.3])
def test_sde_family_fokker_planck(eta, t):
    check_sde_family_fokker_planck(eta, t)


def check_ddim_eta_is_the_family_eta(eta=0.8, t=0.3, dts=(0.04, 0.02, 0.01, 0.005)):
    """DDIM-eta's step has the mean and variance of the family's Euler-Maruyama step with the same
    eta, up to O(dt^2): the relative gaps shrink in proportion to dt (log-log slope 1)."""
    sch, mix = S.LinearSchedule(), toy.GaussianMixture.eight_gaussians()
    x = D.q_sample(mix.sample(256, generator=_gen(0)).double(), t, sch, generator=_gen(1))
    score, x0 = mix.score(x, t, sch), mix.posterior_mean(x, t, sch)
    g2 = S.sde_coefficients(sch, t)[1].item()
    z = torch.randn(x.shape, dtype=torch.float64, generator=_gen(11))
    gaps = []
    for dt in dts:
        s = t - dt
        var_em = eta**2 * g2 * dt
        mean_em = SM.euler_maruyama_step(x, score, t, s, sch, eta=eta, generator=_gen(11)) - math.sqrt(var_em) * z
        var_ddim = eta**2 * D.posterior(x0, x, s, t, sch)[1][0, 0].item()
        out = SM.ddim_step(x, x0, t, s, sch, eta=eta, generator=_gen(11))
        mean_ddim = out - math.sqrt(var_ddim) * z
        move = (mean_em - x).norm(dim=1).mean()
        gaps.append([((mean_ddim - mean_em).norm(dim=1).mean() / move).item(), abs(var_ddim / var_em - 1)])
    gaps = torch.tensor(gaps, dtype=torch.float64)
    ldt = torch.log(torch.tensor(dts, dtype=torch.float64))
    for j, what in enumerate(["mean", "variance"]):
        ly = torch.log(gaps[:, j])
        slope = (((ldt - ldt.mean()) * (ly - ly.mean())).sum() / ((ldt - ldt.mean()) ** 2).sum()).item()
        assert 0.8 < slope < 1.2, f"DDIM-eta vs family step, {what}: gap ~ dt^{slope:.2f}, expected dt^1"
    assert gaps[-1].max() < 0.05, f"gaps at dt = {dts[-1]}: {gaps[-1].tolist()}"


def test_ddim_eta_is_the_family_eta():
    check_ddim_eta_is_the_family_eta()


def check_elbo_is_schedule_invariant(n_batches=12, b_size=1000, lam_hi=8.0, lam_lo=-8.0):
    """Section 4.9: the ELBO's weighting is flat in log-SNR, so the continuous-time loss of the exact
    denoiser, (t_b - t_a) E[loss], is the same under two schedules with the same lambda end points;
    the unweighted loss is not. And for the same draws of (lambda, x0, eps) the exact denoiser's noise
    error is the same under both schedules."""
    mix = toy.GaussianMixture.eight_gaussians()
    scheds = [S.LinearSchedule(), S.CosineSchedule()]
    est = {}
    for i, sch in enumerate(scheds):
        t_a, t_b = sch.t_from_log_snr(torch.tensor([lam_hi, lam_lo], dtype=torch.float64)).tolist()
        den = mix.denoiser(sch)
        for weighting, scale in [("elbo_eps", t_b - t_a), ("none", 1.0)]:
            loss = L.diffusion_loss(sch, weighting=weighting, t_min=t_a, t_max=t_b)
            g = _gen(5)
            vals = torch.stack([scale * loss(den, mix.sample(b_size, generator=g), generator=g)
                                for _ in range(n_batches)]).double()
            est[i, weighting] = (vals.mean().item(), vals.std().item() / math.sqrt(n_batches))
    (m0, s0), (m1, s1) = est[0, "elbo_eps"], est[1, "elbo_eps"]
    _assert_within(m0, m1, math.hypot(s0, s1), "ELBO under linear vs cosine schedule")
    (u0, v0), (u1, v1) = est[0, "none"], est[1, "none"]
    assert abs(u0 - u1) > Z * math.hypot(v0, v1), "the unweighted loss should depend on the schedule"
    g = _gen(6)
    n = n_batches * b_size
    lam = lam_lo + (lam_hi - lam_lo) * torch.rand(n, dtype=torch.float64, generator=g)
    x0 = mix.sample(n, generator=g).double()
    eps = torch.randn(x0.shape, dtype=torch.float64, generator=g)
    errs = []
    for sch in scheds:
        t = sch.t_from_log_snr(lam)
        errs.append((mix.denoiser(sch)(D.q_sample(x0, t, sch, eps), t) - eps).pow(2).mean(1))
    torch.testing.assert_close(errs[0], errs[1], rtol=1e-6, atol=1e-8)
    vals = (lam_hi - lam_lo) / 2 * errs[0]
    _assert_within(vals.mean(), m0, math.hypot(vals.std().item() / math.sqrt(n), s0),
                   "ELBO: uniform-in-lambda estimate vs uniform-in-t")


def test_elbo_is_schedule_invariant():
    check_elbo_is_schedule_invariant()


def check_family_marginals(method="euler_maruyama", eta=2.0, churn=0.0, n=1500, n_steps=60):
    """Section 4.10: a member of the family, run by sample() with the exact score of the 1D mixture,
    puts the right mass in each of the three modes (binomial standard errors)."""
    sch, mix = S.LinearSchedule(), _mix1d()
    times = SM.time_grid(n_steps, spacing="log_snr", schedule=sch, t_min=1e-3)
    x1 = torch.randn(n, 1, generator=_gen(21))
    x = SM.sample(mix.denoiser(sch), x1, sch, method=method, eta=eta, churn=churn, times=times,
                  generator=_gen(22))
    a, s = (c.item() for c in sch.alpha_sigma(torch.tensor([1e-3], dtype=torch.float64)))
    sd = torch.sqrt(a**2 * mix.covs[:, 0, 0] + s**2)
    cuts = torch.tensor([-0.45, 0.9], dtype=torch.float64)
    cdf = (mix.weights * 0.5 * (1 + torch.erf((cuts[:, None] - a * mix.means[None, :, 0]) / sd / math.sqrt(2)))).sum(1)
    mass = torch.diff(cdf, prepend=torch.zeros(1, dtype=torch.float64), append=torch.ones(1, dtype=torch.float64))
    counts = torch.bucketize(x[:, 0].double(), cuts).bincount(minlength=3).double()
    _assert_within(counts / n, mass, torch.sqrt(mass * (1 - mass) / n),
                   f"mode masses, {method} eta={eta} churn={churn}")
    var_exact = ((mix.weights * (a**2 * mix.covs[:, 0, 0] + s**2 + (a * mix.means[:, 0]) ** 2)).sum()
                 - (mix.weights * a * mix.means[:, 0]).sum() ** 2).item()
    dev2 = (x[:, 0].double() - x[:, 0].double().mean()) ** 2
    _assert_within(dev2.mean(), var_exact, dev2.std() / math.sqrt(n), f"variance, {method} eta={eta} churn={churn}")


@pytest.mark.parametrize("method,eta,churn", [("euler_maruyama", 0.5, 0.0), ("euler_maruyama", 2.0, 0.0),
                                              ("ddim", 1.0, 0.0), ("ddim", 0.0, 0.05)])
def test_family_marginals(method, eta, churn):
    check_family_marginals(method, eta, churn)


# -- tests of the tests above: a planted wrong formula must make each check fail -------------------
def _em_with_wrong_family_coefficient(x_t, score, t, s, schedule, eta=1.0, generator=None):
    # (1 + eta) / 2 in place of (1 + eta^2) / 2: right at eta = 0 and 1, wrong elsewhere
    f, g2 = (S.expand_to(c, x_t) for c in schedule._sde(t))
    h = S.expand_to(t - s, x_t)
    z = torch.randn(x_t.shape, dtype=x_t.dtype, generator=generator)
    return x_t - h * (f * x_t - (1 + eta) / 2 * g2 * score) + eta * (g2 * h).sqrt() * z


def test_family_checks_catch_a_wrong_coefficient(monkeypatch):
    monkeypatch.setattr(SM, "_euler_maruyama", _em_with_wrong_family_coefficient)
    with pytest.raises(AssertionError):
        check_sde_family_fokker_planck(2.0, 0.3)
    with pytest.raises(AssertionError):
        check_ddim_eta_is_the_family_eta()
    with pytest.raises(AssertionError):
        check_family_marginals("euler_maruyama", 2.0, 0.0)


def test_elbo_check_catches_a_wrong_weight(monkeypatch):
    real = L._weight

    def wrong(t, schedule, weighting, prediction, gamma):  # times 2 sigma_t: no longer flat in lambda
        w = real(t, schedule, weighting, prediction, gamma)
        return w * 2 * schedule._alpha_sigma(t)[1] if weighting == "elbo_eps" else w
    monkeypatch.setattr(L, "_weight", wrong)
    with pytest.raises(AssertionError):
        check_elbo_is_schedule_invariant()


def test_preconditioning_check_catches_a_wrong_skip(monkeypatch):
    real = D._preconditioning

    def wrong(t, schedule, sigma_data):
        c_skip, c_out, c_in, c_noise = real(t, schedule, sigma_data)
        return c_skip * 1.01, c_out, c_in, c_noise
    monkeypatch.setattr(D, "_preconditioning", wrong)
    with pytest.raises(AssertionError):
        check_preconditioned_target_is_minus_v(S.CosineSchedule(), 0.5)


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_v_error_is_the_eps_error_over_alpha(name):
    # Section 7.7: at a fixed x_t, v_hat - v = (eps_hat - eps) / alpha_t, so the v-loss is
    # the eps-loss weighted by 1 / alpha_t^2 (VP schedules)
    schedule = S.get_schedule(name)
    g = torch.Generator().manual_seed(3)
    t = torch.tensor([0.05, 0.5, 0.9, 0.99], dtype=torch.float64)
    xt = torch.randn(4, 6, generator=g, dtype=torch.float64)
    eps, eps_hat = (torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(2))
    v, v_hat = (D.convert(e, xt, t, schedule, src="eps", dst="v") for e in (eps, eps_hat))
    alpha = schedule.alpha(t)[:, None]
    torch.testing.assert_close(v_hat - v, (eps_hat - eps) / alpha, rtol=1e-10, atol=1e-12)


def test_kid_v_statistic_bias_for_the_cubic_kernel():
    """Exercise 9.2(ii): with G(x, x') = (x . x' / d + 1)^3 and one law N(0, I_d) for both
    sets, the V-statistic (dividing by N^2, N'^2, N N') has the bias
    (E G(X, X) - E G(X, X~)) (1/N + 1/N') = (7 + 9/d + 8/d^2) (1/N + 1/N'),
    while the unbiased estimate of Section 9.3 (dmlib's) averages to 0."""
    from dmlib import metrics

    gen = torch.Generator().manual_seed(92)
    d, n, n2, reps = 4, 20, 30, 4000
    x = torch.randn(reps, n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(reps, n2, d, generator=gen, dtype=torch.float64)
    kern = lambda a, b: (a @ b.transpose(1, 2) / d + 1) ** 3  # noqa: E731
    v_stat = (kern(x, x).mean((1, 2)) + kern(y, y).mean((1, 2))
              - 2 * kern(x, y).mean((1, 2)))
    want = (7 + 9 / d + 8 / d**2) * (1 / n + 1 / n2)
    se = v_stat.std().item() / reps**0.5
    assert abs(v_stat.mean().item() - want) < 4 * se, (v_stat.mean().item(), want, se)
    unbiased = torch.stack([metrics._mmd2_poly(x[r], y[r]) for r in range(400)])
    assert abs(unbiased.mean().item()) < 4 * unbiased.std().item() / 400**0.5
    # a planted error in the bias (E G(X, X) without the 8/d^2) is far outside the noise
    assert abs(v_stat.mean().item() - (7 + 9 / d) * (1 / n + 1 / n2)) > 4 * se

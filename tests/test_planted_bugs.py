"""Tests of the tests: plant a wrong formula into dmlib and show the identity checks catch it.

Every case runs one ``check_*`` function from ``test_math_identities`` (or ``test_mutation_checks``,
whose bugs are one-line mutants of dmlib's own source, see ``_mutant``) twice with the same
arguments: on the real dmlib (it must pass) and with a planted bug monkeypatched into dmlib
(it must raise AssertionError -- not some other error, which would prove nothing). The bugs
are the classic slips of the book's derivations.
"""

import inspect
import math
import sys
import textwrap

import numpy as np
import pytest
import torch

import test_math_identities as ids
import test_mutation_checks as mc
import test_toy
from dmlib import _check, guidance, losses, metrics, samplers, spectrum, toy
from dmlib import diffusion as D
from dmlib import schedules as S
from dmlib import train as T
from dmlib.schedules import expand_to

REAL_Q_SAMPLE, REAL_MARGINAL, REAL_CONVERT = D.q_sample, D.marginal, D.convert
REAL_SCORE, REAL_POSTERIOR_MEAN, REAL_LOG_PROB = (toy.GaussianMixture.score, toy.GaussianMixture.posterior_mean,
                                                  toy.GaussianMixture.log_prob)
REAL_SPECTRUM = spectrum.radial_power_spectrum
REAL_SAMPLE_2D = toy.sample_2d
REAL_EM, REAL_DDIM, REAL_CG_CALL = samplers._euler_maruyama, samplers._ddim, guidance.ClassifierGuidance.__call__
REAL_FM_LOSS, REAL_TRAIN = losses.flow_matching_loss, T.train
REAL_SW, REAL_MMD = metrics.sliced_wasserstein, metrics.mmd


# -- planted bugs: each takes pytest's monkeypatch and installs one wrong formula ----------------------
def _forward_with(coeffs):
    """q_sample and marginal computed with coefficients coeffs(schedule, t) -> (alpha, sigma)."""
    def q_sample(x0, t, schedule, eps=None, *, generator=None):
        t = _check.batch_time(_check.as_time(t), x0)
        a, s = coeffs(schedule, t)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype) if eps is None else eps
        return expand_to(a, x0) * x0 + expand_to(s, x0) * eps

    def marginal(x0, t, schedule):
        t = _check.batch_time(_check.as_time(t), x0)
        a, s = coeffs(schedule, t)
        return expand_to(a, x0) * x0, expand_to(s**2, x0)

    return q_sample, marginal


def marginal_alpha_bar_for_alpha(mp, both=True):
    """x_t = alpha_bar x_0 + sqrt(1 - alpha_bar) eps: the square root of alpha_bar forgotten."""
    def coeffs(sch, t):
        a, s = sch.alpha_sigma(t)
        return a**2, s
    q, m = _forward_with(coeffs)
    mp.setattr(D, "q_sample", q)
    if both:
        mp.setattr(D, "marginal", m)


def marginal_variance_squared(mp, both=True):
    """x_t = sqrt(alpha_bar) x_0 + (1 - alpha_bar) eps: variance (1 - alpha_bar)^2."""
    def coeffs(sch, t):
        a, s = sch.alpha_sigma(t)
        return a, s**2
    q, m = _forward_with(coeffs)
    mp.setattr(D, "q_sample", q)
    if both:
        mp.setattr(D, "marginal", m)


def vp_schedule_alpha_is_alpha_bar(mp):
    """The same slip one level down, in the schedule: alpha_t = alpha_bar_t."""
    def _alpha_sigma(self, t):
        ab, omab, _ = self._floored(t)
        return ab, omab.sqrt()
    mp.setattr(S.VPSchedule, "_alpha_sigma", _alpha_sigma)


def q_step_variance_as_std(mp):
    """x_t = alpha_{t|s} x_s + sigma_{t|s}^2 eps: the variance used as the noise's scale."""
    def q_step(x_s, s, t, schedule, eps=None, *, generator=None):
        a_ts, var_ts = D.transition(s, t, schedule)
        eps = torch.randn(x_s.shape, generator=generator, dtype=x_s.dtype) if eps is None else eps
        return a_ts.to(x_s.dtype) * x_s + var_ts.to(x_s.dtype) * eps
    mp.setattr(D, "q_step", q_step)


def posterior_wrong_coefficient(mp):
    """mu = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s^2 sigma_{t|s}^2 / sigma_t^2 x_0 (alpha_s squared)."""
    def posterior(x0, x_t, s, t, schedule):
        s = _check.batch_time(_check.as_time(s, "s"), x_t, "s")
        t = _check.batch_time(_check.as_time(t, "t"), x_t, "t")
        a_ts, var_ts = D.transition(s, t, schedule)
        a_s, sig_s = schedule.alpha_sigma(s)
        sig_t = schedule.sigma(t)
        mean = expand_to(a_ts * sig_s**2 / sig_t**2, x_t) * x_t + expand_to(a_s**2 * var_ts / sig_t**2, x0) * x0
        return mean, expand_to(var_ts * sig_s**2 / sig_t**2, x_t)
    mp.setattr(D, "posterior", posterior)


def posterior_variance_is_transition_variance(mp):
    """var(x_s | x_t, x_0) = sigma_{t|s}^2: the forward step's variance, not the posterior's."""
    def posterior(x0, x_t, s, t, schedule):
        mean, _ = REAL_POSTERIOR(x0, x_t, s, t, schedule)
        _, var_ts = D.transition(s, t, schedule)
        return mean, expand_to(var_ts.expand(x_t.shape[0]), x_t)
    mp.setattr(D, "posterior", posterior)


REAL_POSTERIOR = D.posterior


def tweedie_sigma_not_sigma2(mp):
    """x0 = (x_t + sigma score) / alpha: score -> eps as eps = -score, losing one factor sigma."""
    def convert(pred, x_t, t, schedule, *, src, dst):
        if src == "score" and dst != "score":
            return REAL_CONVERT(-pred, x_t, t, schedule, src="eps", dst=dst)
        return REAL_CONVERT(pred, x_t, t, schedule, src=src, dst=dst)
    mp.setattr(D, "convert", convert)


def convert_v_sign_error(mp):
    """v = alpha eps + sigma x0 (sign error), with its inverse derived consistently from it."""
    def convert(pred, x_t, t, schedule, *, src, dst):
        if src == dst:
            return pred
        tt = _check.batch_time(_check.as_time(t), x_t)
        a, s = (expand_to(c, x_t) for c in schedule.alpha_sigma(tt))
        if src == "v":  # invert v = a eps + s x0 together with x_t = a x0 + s eps
            det = a**2 - s**2
            eps = (a * pred - s * x_t) / det
            pred, src = eps, "eps"
        if dst == "v":
            x0 = REAL_CONVERT(pred, x_t, t, schedule, src=src, dst="x0")
            eps = REAL_CONVERT(pred, x_t, t, schedule, src=src, dst="eps")
            return a * eps + s * x0
        return REAL_CONVERT(pred, x_t, t, schedule, src=src, dst=dst)
    mp.setattr(D, "convert", convert)


def score_sign_flip(mp):
    """score = + sum_k r_k C_k^{-1} (x - alpha mu_k): the sign of the Gaussian score flipped."""
    mp.setattr(toy.GaussianMixture, "score", lambda self, *a, **k: -REAL_SCORE(self, *a, **k))


def posterior_mean_missing_alpha(mp):
    """E[x0 | x_t, k] = mu_k + Sigma_k C_k^{-1} (x_t - alpha mu_k): the factor alpha_t dropped."""
    def posterior_mean(self, x_t, t, schedule, *, y=None):
        a, _, resp, sol = self._posterior_terms(x_t, t, schedule, y)
        comp = self.means[None] + torch.einsum("kij,bkj->bki", self.covs, sol)
        return (resp[..., None] * comp).sum(1).to(x_t.dtype)
    mp.setattr(toy.GaussianMixture, "posterior_mean", posterior_mean)


def noised_density_without_noise(mp):
    """log p_t uses the clean covariances Sigma_k (alpha^2 Sigma_k + sigma^2 I forgotten)."""
    def log_prob(self, x, t=None, schedule=None, *, y=None):
        if t is None:
            return REAL_LOG_PROB(self, x, y=y)
        a = schedule.alpha(t).item()
        return REAL_LOG_PROB(self, x / a, y=y) - self.dim * math.log(a)
    mp.setattr(toy.GaussianMixture, "log_prob", log_prob)


def denoiser_forgets_alpha(mp):
    """E[eps | x_t] = (x_t - E[x0 | x_t]) / sigma: alpha_t dropped in the oracle's eps."""
    def denoiser(self, schedule, prediction="eps"):
        mixture = self

        class Buggy:
            def __init__(self):
                self.prediction, self.schedule = prediction, schedule

            def __call__(self, x_t, t, y=None):
                eps = (x_t - mixture.posterior_mean(x_t, t, schedule, y=y)) / schedule.sigma(t).item()
                return REAL_CONVERT(eps, x_t, t, schedule, src="eps", dst=prediction)
        return Buggy()
    mp.setattr(toy.GaussianMixture, "denoiser", denoiser)


def spectrum_normalised_by_h_only(mp):
    """P(f) = |FFT2 x|^2 / H instead of / (H W)."""
    def radial_power_spectrum(images, n_bins=None):
        f, p = REAL_SPECTRUM(images, n_bins)
        return f, p * images.shape[-1]
    mp.setattr(spectrum, "radial_power_spectrum", radial_power_spectrum)


def spectrum_frequency_in_radians(mp):
    """Frequencies reported in radians per pixel (2 pi f) instead of cycles per pixel."""
    def radial_power_spectrum(images, n_bins=None):
        f, p = REAL_SPECTRUM(images, n_bins)
        return 2 * math.pi * f, p
    mp.setattr(spectrum, "radial_power_spectrum", radial_power_spectrum)


def moons_evenly_spaced(mp):
    """Moons drawn as scikit-learn's make_moons draws them: half on each moon, angles on a grid."""
    def sample_2d(name, n, *, seed=None, generator=None):
        if name != "moons":
            return REAL_SAMPLE_2D(name, n, seed=seed, generator=generator)
        rng = np.random.default_rng(seed)
        theta_out, theta_in = np.linspace(0, np.pi, n // 2), np.linspace(0, np.pi, n - n // 2)
        x = np.concatenate([np.stack([np.cos(theta_out), np.sin(theta_out)], 1),
                            np.stack([1 - np.cos(theta_in), 0.5 - np.sin(theta_in)], 1)])
        x = x + 0.05 * rng.standard_normal((n, 2)) - np.array([0.5, 0.25])
        return torch.as_tensor(1.5 * x, dtype=torch.float32)
    mp.setattr(toy, "sample_2d", sample_2d)


# -- one-line mutants of dmlib's own source ------------------------------------------------------------
def _mutant(mp, owner, name, old, new):
    """Install a copy of owner.name (a module's function or a class's method) whose source has the
    one line fragment ``old`` replaced by ``new``: exactly the single-line bug of a mutation run,
    and nothing else changed. The copy runs in a copy of its module's namespace."""
    fn = owner.__dict__[name]
    src = textwrap.dedent(inspect.getsource(fn))
    assert src.count(old) == 1, f"{fn.__qualname__}: expected one {old!r} in its source (dmlib changed?)"
    namespace = dict(sys.modules[fn.__module__].__dict__)
    exec(compile(src.replace(old, new), f"<mutant of {fn.__qualname__}>", "exec"), namespace)
    mp.setattr(owner, name, namespace[name])


def euler_maruyama_drift_g_not_g2(mp):
    """x_s = x_t - h (f x_t - g score) + g sqrt(h) z: the reverse drift with g, not g^2."""
    _mutant(mp, samplers, "_euler_maruyama", "- g2 * score)", "- g2.sqrt() * score)")


def ddim_eta_squared(mp):
    """c = eta^2 sqrt(var): DDIM's fresh-noise scale with eta squared (same at eta = 0 and 1)."""
    _mutant(mp, samplers, "_ddim", "c = eta * var.sqrt()", "c = eta**2 * var.sqrt()")


def classifier_guidance_ignores_w(mp):
    """score + grad log p(y | x): classifier guidance without its scale w (right only at w = 1)."""
    _mutant(mp, guidance.ClassifierGuidance, "__call__", "return score + self.w * self.classifier_grad(",
            "return score + self.classifier_grad(")


def flow_matching_ignores_ot(mp):
    """flow_matching_loss(coupling="ot") builds the loss with independent pairs."""
    _mutant(mp, losses, "flow_matching_loss", 'coupling=ot_pairing if coupling == "ot" else None,', "coupling=None,")


def ema_decay_swapped(mp):
    """ema <- (1 - decay) ema + decay theta: decay and 1 - decay swapped in the training loop."""
    _mutant(mp, T, "train", "torch._foreach_lerp_(ema_params, params, 1 - decay)",
            "torch._foreach_lerp_(ema_params, params, decay)")


def sliced_wasserstein_missing_sqrt(mp):
    """The sliced distance reported as the mean of the squared 1D distances (SW^2, no root)."""
    _mutant(mp, metrics, "sliced_wasserstein", "return float(((px - py) ** 2).mean().sqrt())",
            "return float(((px - py) ** 2).mean())")


def mmd_distance_not_squared(mp):
    """k(a, b) = sum_h exp(-|a - b| / (2 h^2)): the kernel on the distance, not its square."""
    _mutant(mp, metrics, "mmd", "d2 = torch.cdist(a, b) ** 2", "d2 = torch.cdist(a, b)")


# -- the cases: (planted bug, the check that must catch it, what the failure message says) --------------
LIN, COS = S.LinearSchedule(), S.CosineSchedule()
MIX = ids.make_mixture()

CASES = [
    (marginal_alpha_bar_for_alpha, lambda: ids.check_marginal(LIN), "alpha x0"),
    (lambda mp: marginal_alpha_bar_for_alpha(mp, both=False), lambda: ids.check_marginal(LIN), "q_sample"),
    (marginal_variance_squared, lambda: ids.check_marginal(COS), "variance"),
    (lambda mp: marginal_variance_squared(mp, both=False), lambda: ids.check_marginal(COS), "q_sample"),
    (vp_schedule_alpha_is_alpha_bar, lambda: ids.check_marginal(LIN), "chain at k="),
    (vp_schedule_alpha_is_alpha_bar, lambda: ids.check_vp_coefficients(COS), None),
    (q_step_variance_as_std, lambda: ids.check_marginal(LIN), "q_step chain"),
    (posterior_wrong_coefficient, lambda: ids.check_posterior_bayes(LIN, 0.3, 0.5), None),
    (posterior_wrong_coefficient, lambda: ids.check_posterior_ddpm(COS), None),
    (posterior_variance_is_transition_variance, lambda: ids.check_posterior_bayes(COS, 0.3, 0.5), None),
    (tweedie_sigma_not_sigma2, lambda: ids.check_tweedie(MIX, LIN, 0.5), None),
    (tweedie_sigma_not_sigma2, lambda: ids.check_prediction_equivalence(COS, 0.5), "score ->"),
    (convert_v_sign_error, lambda: ids.check_prediction_equivalence(COS, 0.5), "-> v|v ->"),
    (score_sign_flip, lambda: ids.check_mixture_score(MIX, COS, 0.5), None),
    (score_sign_flip, lambda: ids.check_tweedie(MIX, COS, 0.5), None),
    (score_sign_flip, lambda: ids.check_mixture_denoiser(MIX, LIN, 0.3), None),
    (posterior_mean_missing_alpha, lambda: ids.check_tweedie(MIX, LIN, 0.5), None),
    (posterior_mean_missing_alpha, lambda: ids.check_posterior_mean_monte_carlo(MIX, LIN, 0.3), "Monte-Carlo"),
    (noised_density_without_noise, lambda: ids.check_noised_density_histogram(MIX, LIN, 0.15), "chi2"),
    (noised_density_without_noise, lambda: ids.check_mixture_score(MIX, COS, 0.5), None),
    (denoiser_forgets_alpha, lambda: ids.check_mixture_denoiser(MIX, COS, 0.5), None),
    (spectrum_normalised_by_h_only, ids.check_white_noise_spectrum, "white-noise"),
    (spectrum_frequency_in_radians, ids.check_sinusoid_spectrum, "peak"),
    (moons_evenly_spaced, lambda: test_toy.check_iid_counts("moons"), "binomial"),
    (euler_maruyama_drift_g_not_g2, lambda: mc.check_reverse_sde_marginals(LIN), "reverse SDE"),
    (euler_maruyama_drift_g_not_g2, lambda: mc.check_reverse_sde_marginals(COS), "reverse SDE"),
    (ddim_eta_squared, lambda: mc.check_ddim_step_noise(COS, 0.5), r"DDIM\(eta=0.5\) step"),
    (ddim_eta_squared, lambda: mc.check_ddim_step_noise(S.VESchedule(), 0.25), r"DDIM\(eta=0.25\) step"),
    (classifier_guidance_ignores_w, lambda: mc.check_classifier_guidance_scale(COS, 0.5), "guidance at w=0.5"),
    (classifier_guidance_ignores_w, lambda: mc.check_classifier_guidance_scale(LIN, 3.0), "guidance at w=3.0"),
    (flow_matching_ignores_ot, mc.check_flow_matching_ot_coupling, "coupling='ot'"),
    (ema_decay_swapped, lambda: mc.check_ema_is_the_exponential_average(0.7), r"EMA\(decay=0.7\)"),
    (ema_decay_swapped, lambda: mc.check_ema_is_the_exponential_average(0.95), r"EMA\(decay=0.95\)"),
    (sliced_wasserstein_missing_sqrt, mc.check_sliced_wasserstein_gaussians, "sliced W2"),
    (mmd_distance_not_squared, mc.check_mmd_gaussians, "MMD"),
]
IDS = [f"{i:02d}-{bug.__name__ if bug.__name__ != '<lambda>' else 'variant'}" for i, (bug, _, _) in enumerate(CASES)]


@pytest.mark.parametrize("bug, check, message", CASES, ids=IDS)
def test_check_passes_on_real_dmlib(bug, check, message):
    check()


@pytest.mark.parametrize("bug, check, message", CASES, ids=IDS)
def test_check_catches_planted_bug(monkeypatch, bug, check, message):
    bug(monkeypatch)
    with pytest.raises(AssertionError, match=message):
        check()


def test_round_trip_alone_misses_a_consistent_sign_error(monkeypatch):
    # Why check_prediction_equivalence compares with the definitions: with v's sign error made
    # consistently in both directions, every round trip still closes.
    convert_v_sign_error(monkeypatch)
    t = torch.full((3,), 0.4, dtype=torch.float64)
    xt, eps = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    v = D.convert(eps, xt, t, COS, src="eps", dst="v")
    torch.testing.assert_close(D.convert(v, xt, t, COS, src="v", dst="eps"), eps, rtol=1e-10, atol=1e-10)
    with pytest.raises(AssertionError):
        ids.check_prediction_equivalence(COS, 0.4)


def test_planted_bugs_leave_dmlib_intact():
    # monkeypatch undoes every plant; the real functions are back after the tests above
    assert D.q_sample is REAL_Q_SAMPLE and D.marginal is REAL_MARGINAL and D.convert is REAL_CONVERT
    assert toy.GaussianMixture.score is REAL_SCORE and spectrum.radial_power_spectrum is REAL_SPECTRUM
    assert toy.sample_2d is REAL_SAMPLE_2D
    assert samplers._euler_maruyama is REAL_EM and samplers._ddim is REAL_DDIM
    assert guidance.ClassifierGuidance.__call__ is REAL_CG_CALL and losses.flow_matching_loss is REAL_FM_LOSS
    assert T.train is REAL_TRAIN and metrics.sliced_wasserstein is REAL_SW and metrics.mmd is REAL_MMD

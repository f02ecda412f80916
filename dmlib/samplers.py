"""Samplers: step functions from time t down to an earlier time s, and one loop that
uses them.

Every step has the shape ``step(x_t, pred, t, s, schedule, ...) -> x_s`` where ``pred``
is the model's output already converted to the kind the step needs (``x0`` for DDPM /
DDIM / DPM-Solver++, ``score`` for the reverse SDE, ``velocity`` for the
probability-flow ODE), so each step is a few lines of the book's equations.
:func:`sample` runs any of them from t = 1 to t = 0 with any model that follows the
denoiser protocol ``model(x_t, t, y=None)``. Derivations: Chapter 2 (DDPM), Chapter 3
(Langevin), Chapter 4 (SDE, ODE, DDIM, DPM-Solver++, predictor-corrector, churn).

The public steps check their arguments; :func:`sample` checks its arguments once, reads
the time grid to the host once, and then calls the unchecked steps (``_ddim`` ...),
which never read a tensor back to the host: on a GPU the whole loop is queued without
waiting.
"""

from __future__ import annotations

import math

import torch

from . import _check, noise
from .diffusion import PREDICTIONS, _convert, _posterior
from .run import progress as progress_bar
from .schedules import Schedule, _work, expand_to

METHODS = (
    "ddpm", "ddim", "euler", "heun", "euler_maruyama", "dpmpp_2m", "dpmpp_3m",
    "unipc_2m", "unipc_3m", "dpmpp_2m_sde",
)
# the multistep solvers of the data prediction, and the order of their predictor
MULTISTEP_ORDER = {"dpmpp_2m": 2, "dpmpp_3m": 3, "unipc_2m": 2, "unipc_3m": 3}

# Model evaluations per step of sample(). Heun's last step, when it ends at t = 0, is a
# plain Euler step (the velocity at t = 0 is not needed), so Heun with n steps to t = 0
# costs 2n - 1.
NFE_PER_STEP = {
    "ddpm": 1,
    "ddim": 1,
    "euler": 1,
    "heun": 2,
    "euler_maruyama": 1,
    "dpmpp_2m": 1,
    "dpmpp_3m": 1,
    "unipc_2m": 1,  # the corrector reuses the next step's evaluation
    "unipc_3m": 1,
    "dpmpp_2m_sde": 1,
}


def nfe(
    method: str, n_steps: int, *, t_min: float = 0.0, corrector_steps: int = 0
) -> int:
    """Number of network evaluations :func:`sample` makes with ``n_steps`` steps ending
    at t_min (Section 4.7), ``corrector_steps`` Langevin corrector steps (one evaluation
    each) after every step but the last (predictor-corrector, Section 4.10). Churn costs
    no evaluation."""
    _check.choice(method, "method", METHODS)
    n_steps = _check.positive_int(n_steps, "n_steps")
    corrector_steps = _check_corrector_steps(corrector_steps)
    total = NFE_PER_STEP[method] * n_steps + corrector_steps * (n_steps - 1)
    return total - 1 if method == "heun" and t_min == 0.0 else total


def _check_corrector_steps(n):
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"corrector_steps must be an integer >= 0, got {n!r}")
    return n


def _times(t, x, name="t"):
    # a user's time argument at a public step: validated once, shape (B,), next to x
    return _check.time_for(t, x, name)


def _coeffs(t, schedule, x):
    a, s = schedule._alpha_sigma(_work(t))
    return expand_to(a, x), expand_to(s, x)  # (B, 1, ..., 1) each


def _predict(model, x_t, t, schedule, kind, y=None):
    out = model(x_t, t, y)
    if not isinstance(out, torch.Tensor) or out.shape != x_t.shape:
        raise ValueError(
            f"model returned {getattr(out, 'shape', type(out))}; "
            f"expected a tensor of shape {tuple(x_t.shape)}"
        )
    return _convert(out, x_t, t, schedule, model.prediction, kind)


def _model_kind(model) -> str:
    src = getattr(model, "prediction", None)
    if src is None:
        raise AttributeError(
            f"model {type(model).__name__} "
            "must declare what it predicts in model.prediction"
        )
    return _check.choice(src, "model.prediction", PREDICTIONS)


def predict(
    model, x_t: torch.Tensor, t, schedule: Schedule, kind: str, y=None
) -> torch.Tensor:
    """The model's output at (x_t, t), converted to ``kind`` (Section 2.5).

    ``model`` follows the denoiser protocol and declares ``model.prediction``.
    """
    _model_kind(model)
    _check.choice(kind, "kind", PREDICTIONS)
    _check.tensor(x_t, "x_t")
    _check.schedule(schedule)
    return _predict(model, x_t, _times(t, x_t), schedule, kind, y)


# -- the steps: unchecked versions (t, s are (B,) tensors on x's device) ---------------
def _ddim(x_t, x0_hat, t, s, schedule, eta=0.0, generator=None):
    a_t, sig_t = _coeffs(t, schedule, x_t)
    a_s, sig_s = _coeffs(s, schedule, x_t)
    eps_hat = (x_t - a_t * x0_hat) / sig_t  # 1. implied noise (eq-ddim)
    x_s = a_s * x0_hat
    # deterministic: no noise is drawn and the generator does not advance
    if eta == 0.0:
        return x_s + sig_s * eps_hat  # 3. step (eq-ddim)
    _, var = _posterior(x0_hat, x_t, s, t, schedule)
    c = eta * var.sqrt()  # 2. fresh-noise std sigma_eta (eq-ddim-eta), (B, 1, ..., 1)
    z = noise.randn_like(x_t, generator=generator)
    # 3. step (eq-ddim-eta)
    return x_s + (sig_s**2 - c**2).clamp_min(0).sqrt() * eps_hat + c * z


def _ddpm(x_t, x0_hat, t, s, schedule, generator=None):
    # 1. q(x_s | x_t, x0_hat) (eq-ancestral-step)
    mean, var = _posterior(x0_hat, x_t, s, t, schedule)
    # 2. draw from it
    return mean + var.sqrt() * noise.randn_like(x_t, generator=generator)


def _euler_maruyama(x_t, score, t, s, schedule, eta=1.0, generator=None):
    # 1. drift and diffusion at t (eq-sde-coefficients), (B, 1, ..., 1) each
    f, g2 = (expand_to(c, x_t) for c in schedule._sde(_work(t)))
    h = expand_to(t - s, x_t)  # step length > 0
    # 2. one Euler-Maruyama step of the eta-family of reverse SDEs (eq-em-reverse-eta);
    # eta = 0 is deterministic (the probability-flow ODE): no noise is drawn
    score = (1 + eta**2) / 2 * score  # the score's weight in the drift, 1 at eta = 1
    x_s = x_t - h * (f * x_t - g2 * score)
    if eta == 0.0:
        return x_s
    z = noise.randn_like(x_t, generator=generator)
    return x_s + eta * (g2 * h).sqrt() * z


def _corrector(x_t, score, t, schedule, snr, generator=None):
    _, sig_t = _coeffs(t, schedule, x_t)  # (B, 1, ..., 1)
    delta = 2 * snr**2 * sig_t**2  # 1. step size (eq-corrector-step)
    z = noise.randn_like(x_t, generator=generator)
    # 2. one Langevin step on p_t (eq-corrector)
    return x_t + delta * score + (2 * delta).sqrt() * z


def _renoise(x_t, t, t_hat, schedule, generator=None):
    a_t, _ = _coeffs(t, schedule, x_t)
    a_hat, sig_hat = _coeffs(t_hat, schedule, x_t)  # (B, 1, ..., 1) each
    lam_t, lam_hat = (expand_to(schedule._log_snr(_work(u)), x_t) for u in (t, t_hat))
    same = expand_to((t_hat == t).to(a_t.dtype), x_t) > 0  # no change (even at alpha=0)
    # 1. scale and added variance of q(x_that | x_t) (eq-churn):
    # sigma_that^2 - (alpha_that / alpha_t)^2 sigma_t^2
    #   = sigma_that^2 (1 - e^{lam_hat - lam_t}), with no cancellation
    ratio = torch.where(same, torch.ones_like(a_t), a_hat / a_t)
    added = -(sig_hat**2) * torch.expm1(lam_hat - lam_t)
    var = torch.where(same, torch.zeros_like(a_t), added)
    # 2. draw x_that
    return ratio * x_t + var.sqrt() * noise.randn_like(x_t, generator=generator)


def _dpmpp_2m(x_t, x0_hat, t, s, schedule, x0_prev=None, t_prev=None):
    a_s, sig_s = _coeffs(s, schedule, x_t)  # (B, 1, ..., 1) each
    _, sig_t = _coeffs(t, schedule, x_t)
    lam_t, lam_s = (expand_to(schedule._log_snr(_work(u)), x_t) for u in (t, s))
    h = (lam_s - lam_t) / 2  # the step in log(alpha / sigma) = lambda / 2
    d = x0_hat
    if x0_prev is not None:
        lam_p = expand_to(schedule._log_snr(_work(t_prev)), x_t)
        r = (lam_t - lam_p) / (lam_s - lam_t)  # previous step over this one
        # 1. extrapolate x0 (eq-dpmpp-2m)
        d = (1 + 1 / (2 * r)) * x0_hat - 1 / (2 * r) * x0_prev
    # 2. exact linear part (eq-dpmpp-2m)
    return (sig_s / sig_t) * x_t - a_s * torch.expm1(-h) * d


def _dpmpp_2m_sde(
    x_t, x0_hat, t, s, schedule, x0_prev=None, t_prev=None, generator=None
):
    a_s, sig_s = _coeffs(s, schedule, x_t)  # (B, 1, ..., 1) each
    _, sig_t = _coeffs(t, schedule, x_t)
    lam_t, lam_s = (expand_to(schedule._log_snr(_work(u)), x_t) for u in (t, s))
    h = (lam_s - lam_t) / 2  # the step in log(alpha / sigma) = lambda / 2
    psi1 = -torch.expm1(-2 * h)  # 1 - e^{-2h}
    # 1. the exact solution with x0 held at x0_hat: the DDPM posterior mean (eq-sde-dpm)
    x_s = (sig_s / sig_t) * torch.exp(-h) * x_t + a_s * psi1 * x0_hat
    if x0_prev is not None:
        lam_p = expand_to(schedule._log_snr(_work(t_prev)), x_t)
        slope = (x0_hat - x0_prev) / ((lam_t - lam_p) / 2)  # d x0 / d(lambda / 2)
        # 2. the linear part of x0, integrated exactly (eq-sde-dpm-2m)
        x_s = x_s + a_s * (h - psi1 / 2) * slope
    # 3. the exact noise of the linear SDE: the posterior variance
    return x_s + sig_s * psi1.sqrt() * noise.randn_like(x_t, generator=generator)


def _dpmpp_3m(x_t, x0_hat, t, s, schedule, x0_prev, t_prev, x0_prev2, t_prev2):
    a_s, sig_s = _coeffs(s, schedule, x_t)  # (B, 1, ..., 1) each
    _, sig_t = _coeffs(t, schedule, x_t)
    # half log-SNR l = lambda / 2 = log(alpha / sigma) at s, t and the two earlier times
    l_s, l_t, l_p, l_pp = (
        expand_to(schedule._log_snr(_work(u)), x_t) / 2 for u in (s, t, t_prev, t_prev2)
    )
    h, h0, h1 = l_s - l_t, l_t - l_p, l_p - l_pp  # this step and the two before
    # 1. the quadratic x0(u) = x0_hat + c1 u + c2 u^2 in u = l - l_t through the three
    # x0 predictions, from divided differences (eq-dpmpp-3m-fit)
    d01, d12 = (x0_hat - x0_prev) / h0, (x0_prev - x0_prev2) / h1
    c2 = (d01 - d12) / (h0 + h1)
    c1 = d01 + h0 * c2
    # 2. its exact integral against e^{u - h} over [0, h] (eq-dpmpp-3m)
    phi1 = -torch.expm1(-h)  # int e^{u-h} du
    phi2 = h - phi1  # int u e^{u-h} du
    phi3 = h**2 - 2 * phi2  # int u^2 e^{u-h} du
    return (sig_s / sig_t) * x_t + a_s * (phi1 * x0_hat + phi2 * c1 + phi3 * c2)


def _unic(x_t, x0_hat, t, s, schedule, x0_s, history):
    # history: [(x0_prev, t_prev), (x0_prev2, t_prev2)], newest first, 0 to 2 entries
    a_s, sig_s = _coeffs(s, schedule, x_t)  # (B, 1, ..., 1) each
    _, sig_t = _coeffs(t, schedule, x_t)
    l_s, l_t = (expand_to(schedule._log_snr(_work(u)), x_t) / 2 for u in (s, t))
    h = l_s - l_t
    phi1 = -torch.expm1(-h)  # int e^{u-h} du over [0, h]
    if not history:  # 1. first order: the mean of the two predictions (eq-unic-1)
        return (sig_s / sig_t) * x_t + a_s * phi1 * (x0_hat + x0_s) / 2
    # 2. the polynomial x0_hat + c1 u + c2 u^2 (+ c3 u^3) in u = l - l_t through the
    # predictions at s (u = h), t (u = 0) and the earlier times, in Newton's form from
    # divided differences (eq-unic-fit)
    (x0_p, t_p), *older = history
    l_p = expand_to(schedule._log_snr(_work(t_p)), x_t) / 2
    h0 = l_t - l_p
    e1, e2 = (x0_s - x0_hat) / h, (x0_hat - x0_p) / h0
    q1 = (e1 - e2) / (h + h0)
    c1, c2 = e1 - h * q1, q1
    phi2 = h - phi1  # int u e^{u-h} du
    phi3 = h**2 - 2 * phi2  # int u^2 e^{u-h} du
    out = (sig_s / sig_t) * x_t + a_s * (phi1 * x0_hat + phi2 * c1 + phi3 * c2)
    if older:  # the cubic term through the fourth prediction
        ((x0_pp, t_pp),) = older
        l_pp = expand_to(schedule._log_snr(_work(t_pp)), x_t) / 2
        h1 = l_p - l_pp
        q2 = (e2 - (x0_p - x0_pp) / h1) / (h0 + h1)
        c3 = (q1 - q2) / (h + h0 + h1)
        phi4 = h**3 - 3 * phi3  # int u^3 e^{u-h} du
        out = out + a_s * (phi2 * (-h * h0 * c3) + phi3 * (h0 - h) * c3 + phi4 * c3)
    # 3. integrated exactly against e^{u-h} over [0, h] (eq-unic)
    return out


def _multistep(x_t, x0_hat, t, s, schedule, history, order):
    # the predictor of dpmpp_2m / dpmpp_3m with what the history holds (DDIM at first)
    if order == 3 and len(history) >= 2:
        (x0_p, t_p), (x0_pp, t_pp) = history[:2]
        return _dpmpp_3m(x_t, x0_hat, t, s, schedule, x0_p, t_p, x0_pp, t_pp)
    x0_p, t_p = history[0] if history else (None, None)
    return _dpmpp_2m(x_t, x0_hat, t, s, schedule, x0_p, t_p)


# -- the steps: public versions --------------------------------------------------------
def _step_args(x_t, pred, t, s, schedule, pred_name):
    _check.tensor(x_t, "x_t")
    _check.tensor(pred, pred_name)
    _check.same_shape(pred, x_t, pred_name, "x_t")
    _check.schedule(schedule)
    _check.time_order(
        s, t, strict=True, what="a sampler step goes from t down to an earlier time s"
    )


def ddpm_step(x_t, x0_hat, t, s, schedule, *, generator=None):
    """Ancestral step of DDPM (Ho et al., 2020), Section 2.5:
    draw x_s ~ q(x_s | x_t, x0 = x0_hat).

        x_s = mu(x_t, x0_hat) + sqrt(var) z,  mu, var from the posterior of Section 1.6.
    """
    _step_args(x_t, x0_hat, t, s, schedule, "x0_hat")
    return _ddpm(x_t, x0_hat, _times(t, x_t), _times(s, x_t), schedule, generator)


def ddim_step(x_t, x0_hat, t, s, schedule, *, eta: float = 0.0, generator=None):
    """DDIM step (Song, Meng & Ermon, 2021), Section 4.5, with stochasticity
    eta in [0, 1]:

        eps_hat = (x_t - alpha_t x0_hat) / sigma_t                # 1. implied noise
        c       = eta * sqrt(var of q(x_s | x_t, x_0))            # 2. fresh-noise scale
        x_s     = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z        # 3. step

    eta = 0 is the deterministic DDIM (the probability-flow ODE's exponential-integrator
    step), which draws no noise; eta = 1 is exactly the DDPM ancestral step.
    """
    if (
        isinstance(eta, bool)
        or not isinstance(eta, (int, float))
        or not (0.0 <= eta <= 1.0)
    ):
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    _step_args(x_t, x0_hat, t, s, schedule, "x0_hat")
    return _ddim(
        x_t, x0_hat, _times(t, x_t), _times(s, x_t), schedule, float(eta), generator
    )


def euler_step(x_t, velocity, t, s, schedule=None):
    """Euler step of the probability-flow ODE dx/dt = u(x, t) from t to s (Section 4.4):

        x_s = x_t + (s - t) u(x_t, t),
        u   = alpha_t' E[x_0 | x_t] + sigma_t' E[eps | x_t].
    """
    _check.tensor(x_t, "x_t")
    _check.tensor(velocity, "velocity")
    _check.same_shape(velocity, x_t, "velocity", "x_t")
    # either direction in time
    return x_t + expand_to(_times(s, x_t, "s") - _times(t, x_t), x_t) * velocity


def _check_eta_sde(eta):
    if (
        isinstance(eta, bool)
        or not isinstance(eta, (int, float))
        or not (math.isfinite(eta) and eta >= 0.0)
    ):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    return float(eta)


def euler_maruyama_step(x_t, score, t, s, schedule, *, eta=1.0, generator=None):
    """Euler-Maruyama step of the reverse-time SDE (Anderson, 1982; Song et al., 2021),
    Section 4.3, and of its family with the same marginals (Zhang & Chen, 2023),
    Section 4.10.

    Forward SDE dx = f(t) x dt + g(t) dW with f = alpha'/alpha and
    g^2 = (sigma^2)' - 2 f sigma^2 (:func:`dmlib.schedules.sde_coefficients`). For
    every eta >= 0 the reverse-time SDE

        dx = [f(t) x - (1 + eta^2)/2 g(t)^2 score] dt + eta g(t) dW_bar

    has the marginals p_t of the forward process: eta = 0 is the probability-flow ODE,
    eta = 1 the reverse SDE of Anderson. With Delta t = t - s > 0 the step is

        x_s = x_t - Delta t (f(t) x_t - (1 + eta^2)/2 g(t)^2 score)
              + eta g(t) sqrt(Delta t) z.

    eta = 0 draws no noise (the generator does not advance).
    """
    eta = _check_eta_sde(eta)
    _step_args(x_t, score, t, s, schedule, "score")
    return _euler_maruyama(
        x_t, score, _times(t, x_t), _times(s, x_t), schedule, eta, generator
    )


def corrector_step(x_t, score, t, schedule, *, snr: float = 0.16, generator=None):
    """One Langevin corrector step at the noise level t (Song et al., 2021),
    Section 4.10: a step of unadjusted Langevin dynamics (Section 3.2) whose target is
    p_t itself,

        delta = 2 snr^2 sigma_t^2,
        x'    = x_t + delta score(x_t, t) + sqrt(2 delta) z.

    The step size is Song et al.'s signal-to-noise rule, delta = 2 (snr ||z|| /
    ||score||)^2, with both norms replaced by their typical values at noise level t,
    ||z||^2 = d and ||score||^2 = d / sigma_t^2 (the score of the noise alone): so
    ``snr`` (snr_PC in Section 4.10) is the ratio of the step's drift to its noise, the
    same at every t, and the step depends on neither x nor the batch. (In the VP case
    Song et al. also multiply delta by alpha_t; this rule does not.) ``score`` is the
    score of p_t at x_t (the exact one leaves p_t invariant up to the O(delta) bias of
    an unadjusted step).
    """
    _check.tensor(x_t, "x_t")
    _check.tensor(score, "score")
    _check.same_shape(score, x_t, "score", "x_t")
    _check.schedule(schedule)
    snr = _check.finite_positive(snr, "snr")
    return _corrector(x_t, score, _times(t, x_t), schedule, snr, generator)


def renoise(x_t, t, t_hat, schedule, *, generator=None):
    """Raise the noise level of x_t from t to a later time t_hat >= t exactly under the
    forward process (the "churn" of Karras et al., 2022), Section 4.10:

        x_that = (alpha_that / alpha_t) x_t
                 + sqrt(sigma_that^2 - (alpha_that / alpha_t)^2 sigma_t^2) z,

    so that x_t ~ q(x_t | x_0) gives x_that ~ q(x_that | x_0) for every x_0. The added
    variance is computed as sigma_that^2 (1 - exp(lambda_that - lambda_t)), without
    cancellation. t_hat = t returns x_t unchanged (and still draws z). Karras et al.'s
    cap on the churn, its window of noise levels and S_noise are not implemented: the
    caller chooses t_hat.
    """
    _check.tensor(x_t, "x_t")
    _check.schedule(schedule)
    _check.time_order(
        t, t_hat, strict=False, what="renoising raises the noise level: t <= t_hat"
    )
    t, t_hat = _times(t, x_t), _times(t_hat, x_t, "t_hat")
    return _renoise(x_t, t, t_hat, schedule, generator)


def _dpm_args(x_t, x0_hat, t, s, schedule, history):
    # checks of a DPM-Solver++ step; history: [(x0, t_, "x0 name", "t name")], newest
    # first. Returns the times of the history as (B,) tensors (None where not given).
    _step_args(x_t, x0_hat, t, s, schedule, "x0_hat")
    if (_check.as_time(s, "s") == 0).any():
        raise ValueError(
            "a DPM-Solver++ step needs s > 0 (the log-SNR is infinite at s = 0); "
            "the last step to s = 0 is the prediction x0_hat itself, as sample() does"
        )
    times, later, later_name = [], t, "t"
    for x0, t_, x0_name, t_name in history:
        if (x0 is None) != (t_ is None):
            raise ValueError(
                f"{x0_name} and {t_name} go together: "
                "give both (a multistep) or neither (the first step)"
            )
        if x0 is not None and None in times:
            raise ValueError(f"{x0_name} needs the later prediction before it as well")
        if x0 is None:
            times.append(None)
            continue
        _check.tensor(x0, x0_name)
        _check.same_shape(x0, x_t, x0_name, "x_t")
        _check.time_order(
            later, t_, strict=True,
            what=f"{t_name} is the earlier step's time, above {later_name}",
        )
        times.append(_times(t_, x_t, t_name))
        later, later_name = t_, t_name
    return times


def dpmpp_2m_step(x_t, x0_hat, t, s, schedule, *, x0_prev=None, t_prev=None):
    """Second-order multistep step of DPM-Solver++(2M) (Lu et al., 2022), Section 4.6.

    With lambda the log-SNR, the step h = (lambda_s - lambda_t) / 2 in
    log(alpha / sigma), and r the previous step's length in lambda over this one's:

        D   = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev,               # 1.
        r   = (lambda_t - lambda_prev) / (lambda_s - lambda_t)
        x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) D    # 2.

    Without a previous prediction (the first step) D = x0_hat, which is exactly DDIM.
    """
    (t_prev,) = _dpm_args(
        x_t, x0_hat, t, s, schedule, [(x0_prev, t_prev, "x0_prev", "t_prev")]
    )
    return _dpmpp_2m(
        x_t, x0_hat, _times(t, x_t), _times(s, x_t), schedule, x0_prev, t_prev
    )


def dpmpp_2m_sde_step(
    x_t, x0_hat, t, s, schedule, *, x0_prev=None, t_prev=None, generator=None
):
    """Second-order multistep step of DPM-Solver++(2M) on the reverse SDE (Lu et al.,
    2022), Section 4.10.

    In the half log-SNR l = lambda / 2 = log(alpha / sigma) the reverse SDE with the
    data prediction x0(l) has the exact solution

        x_s = (sigma_s / sigma_t) e^{-h} x_t
              + alpha_s int_0^h 2 e^{2(u - h)} x0(l_t + u) du
              + sigma_s sqrt(1 - e^{-2h}) z,

    h = l_s - l_t, z ~ N(0, I). The step replaces x0 by the line through the
    predictions at t and t_prev (h0 = l_t - l_prev back) and integrates it exactly:

        x_s = (sigma_s / sigma_t) e^{-h} x_t + alpha_s psi1 x0_hat          # 1.
              + alpha_s (h - psi1 / 2) (x0_hat - x0_prev) / h0               # 2.
              + sigma_s sqrt(psi1) z,   psi1 = 1 - e^{-2h}.                  # 3.

    Without a previous prediction (the first step) it is exactly the DDPM step
    :func:`ddpm_step` (the posterior q(x_s | x_t, x0_hat)), drawing the same noise from
    ``generator``. Needs s > 0; :func:`sample` returns x0_hat on a last step to s = 0.
    """
    (t_prev,) = _dpm_args(
        x_t, x0_hat, t, s, schedule, [(x0_prev, t_prev, "x0_prev", "t_prev")]
    )
    t, s = _times(t, x_t), _times(s, x_t)
    return _dpmpp_2m_sde(x_t, x0_hat, t, s, schedule, x0_prev, t_prev, generator)


def dpmpp_3m_step(
    x_t, x0_hat, t, s, schedule, *, x0_prev=None, t_prev=None, x0_prev2=None,
    t_prev2=None
):
    """Third-order multistep step of DPM-Solver++(3M) (Lu et al., 2022), Section 4.6.

    In the half log-SNR l = lambda / 2 = log(alpha / sigma) the probability-flow ODE
    with the data prediction x0(l) has the exact solution

        x_s = (sigma_s / sigma_t) x_t + alpha_s int_0^h e^{u - h} x0(l_t + u) du,

    h = l_s - l_t = (lambda_s - lambda_t) / 2. The step replaces x0 by the quadratic
    x0_hat + c1 u + c2 u^2 through the predictions at t, t_prev, t_prev2 (steps
    h0 = l_t - l_prev, h1 = l_prev - l_prev2 back) and integrates it exactly:

        d01 = (x0_hat - x0_prev) / h0,   d12 = (x0_prev - x0_prev2) / h1,     # 1.
        c2  = (d01 - d12) / (h0 + h1),   c1  = d01 + h0 c2,
        x_s = (sigma_s / sigma_t) x_t + alpha_s (phi1 x0_hat + phi2 c1 + phi3 c2),  # 2.
        phi1 = 1 - e^{-h},  phi2 = h - phi1,  phi3 = h^2 - 2 phi2.

    With one earlier prediction it is the (2M) step of :func:`dpmpp_2m_step`, with none
    the DDIM step. (The common implementations of 3M, Lu et al.'s reference code and
    diffusers' alike, weight the c2 term by phi3 / 2 instead, which integrates a
    quadratic x0 only half-way: their step is exact for x0 linear in l, this one for
    x0 quadratic.)
    """
    t_prev, t_prev2 = _dpm_args(
        x_t, x0_hat, t, s, schedule,
        [
            (x0_prev, t_prev, "x0_prev", "t_prev"),
            (x0_prev2, t_prev2, "x0_prev2", "t_prev2"),
        ],
    )
    t, s = _times(t, x_t), _times(s, x_t)
    if x0_prev2 is None:
        return _dpmpp_2m(x_t, x0_hat, t, s, schedule, x0_prev, t_prev)
    return _dpmpp_3m(x_t, x0_hat, t, s, schedule, x0_prev, t_prev, x0_prev2, t_prev2)


def unic_step(
    x_t, x0_hat, t, s, schedule, *, x0_s, x0_prev=None, t_prev=None, x0_prev2=None,
    t_prev2=None
):
    """The corrector UniC of UniPC (Zhao et al., 2023), Section 4.6: a better x_s after
    a multistep predictor step from x_t, at no extra evaluation.

    The predictor went from x_t at t to a point x~_s; the model's prediction there,
    ``x0_s``, is needed for the next step anyway. With it the x0 predictions are known
    at s, t and the earlier times of the predictor's history, and the corrector
    integrates the polynomial through all of them exactly (h = l_s - l_t and
    h0 = l_t - l_prev, h1 = l_prev - l_prev2 in the half log-SNR l = lambda / 2):

        e1 = (x0_s - x0_hat) / h,  e2 = (x0_hat - x0_prev) / h0,            # 2.
        q1 = (e1 - e2) / (h + h0),  c1 = e1 - h q1,  c2 = q1
        x_s = (sigma_s / sigma_t) x_t                                       # 3.
              + alpha_s (phi1 x0_hat + phi2 c1 + phi3 c2 [+ cubic term])

    with phi_k as in :func:`dpmpp_3m_step`. With ``x0_prev2`` as well the cubic through
    four predictions is integrated (phi4 = h^3 - 3 phi3). With no history (after the
    first, DDIM, step) it is the trapezoidal rule with 2M's weight (1 - e^{-h}) / 2:

        x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^{-h}) (x0_hat + x0_s) / 2.  # 1.

    The corrector raises the predictor's order by one: after a (2M) step it is third
    order, after a (3M) step fourth. ``x0_s`` was evaluated at the predictor's point,
    not at the corrected one; :func:`sample` does the same with ``"unipc_2m"`` and
    ``"unipc_3m"``. This is diffusers' ``UniPCMultistepScheduler`` with
    ``predict_x0=True, solver_type="bh2"``.
    """
    times = _dpm_args(
        x_t, x0_hat, t, s, schedule,
        [
            (x0_prev, t_prev, "x0_prev", "t_prev"),
            (x0_prev2, t_prev2, "x0_prev2", "t_prev2"),
        ],
    )
    _check.tensor(x0_s, "x0_s")
    _check.same_shape(x0_s, x_t, "x0_s", "x_t")
    history = [(x0, t_) for x0, t_ in zip((x0_prev, x0_prev2), times) if x0 is not None]
    return _unic(x_t, x0_hat, _times(t, x_t), _times(s, x_t), schedule, x0_s, history)


def langevin_step(x, score, step_size: float, *, generator=None):
    """Unadjusted Langevin step x <- x + delta score(x) + sqrt(2 delta) z (Section 3.2).
    """
    if (
        isinstance(step_size, bool)
        or not isinstance(step_size, (int, float))
        or not step_size > 0
    ):
        raise ValueError(f"step_size must be a number > 0, got {step_size!r}")
    z = noise.randn_like(x, generator=generator)
    return x + step_size * score + (2 * step_size) ** 0.5 * z


def annealed_langevin(
    score,
    x: torch.Tensor,
    schedule: Schedule,
    n_levels: int,
    n_steps: int,
    delta: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon, 2019), Section 3.6: ``n_steps``
    Langevin steps at each of ``n_levels`` noise levels sigma(t_1) > ... > sigma(t_L),
    t_i evenly spaced from 1 to 0, with step size

        delta_i = delta * (sigma(t_i) / sigma(t_L))^2,

    so the ratio of drift to noise is the same at every level. ``score(x, t)`` is the
    score of p_t, called with t a Python float.
    """
    _check.tensor(x, "x")
    _check.schedule(schedule)
    n_levels, n_steps = (
        _check.positive_int(n_levels, "n_levels"),
        _check.positive_int(n_steps, "n_steps"),
    )
    delta = _check.finite_positive(delta, "delta")
    times = torch.linspace(1.0, 0.0, n_levels, dtype=torch.float64)
    sigmas = schedule._alpha_sigma(times)[1].tolist()  # sync: the CPU ladder, once
    if not sigmas[-1] > 0:
        raise ValueError(
            "annealed Langevin needs sigma(t) > 0 at every level, "
            "the last (t = 0) included: a VE schedule; "
            f"{type(schedule).__name__} has sigma(0) = {sigmas[-1]}"
        )
    for t, sigma in zip(times.tolist(), sigmas):  # sync: CPU times, once
        step = delta * (sigma / sigmas[-1]) ** 2
        for _ in range(n_steps):
            x = langevin_step(x, score(x, t), step, generator=generator)
    return x


# -- time grids ------------------------------------------------------------------------
SPACINGS = ("uniform", "log_snr", "edm")


def time_grid(
    n_steps: int,
    *,
    spacing: str = "uniform",
    schedule: Schedule | None = None,
    t_max: float = 1.0,
    t_min: float = 0.0,
    rho: float = 7.0,
    device=None,
) -> torch.Tensor:
    """n_steps + 1 decreasing times from t_max to t_min (Section 2.5; the spacings in
    Section 4.5).

    * ``"uniform"``: equally spaced in t;
    * ``"log_snr"``: equally spaced in the schedule's log-SNR lambda (then mapped back
      to t with :meth:`~dmlib.schedules.Schedule.t_from_log_snr`), which puts the steps
      where the sample changes fastest;
    * ``"edm"``: the rho-grid of Karras et al. (2022) in the noise level
      sigma_t / alpha_t = exp(-lambda / 2):
      (s_max^(1/rho) + i/n (s_min^(1/rho) - s_max^(1/rho)))^rho, i = 0..n.

    The last two need the ``schedule`` and t_min > 0 (lambda is infinite at t = 0). The
    end points are exactly t_max and t_min. Float32, on ``device``.
    """
    n_steps = _check.positive_int(n_steps, "n_steps")
    _check.choice(spacing, "spacing", SPACINGS)
    if not (0.0 <= t_min < t_max <= 1.0):
        raise ValueError(
            f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}"
        )
    if spacing == "uniform":
        t = torch.linspace(t_max, t_min, n_steps + 1, dtype=torch.float64)
    else:
        if schedule is None:
            raise ValueError(
                f"spacing={spacing!r} needs the schedule whose log-SNR it spaces"
            )
        _check.schedule(schedule)
        if t_min <= 0.0:
            raise ValueError(
                f"spacing={spacing!r} needs t_min > 0 "
                "(the log-SNR is infinite at t = 0), "
                f"e.g. t_min=1e-3; got t_min={t_min}"
            )
        ends = torch.tensor([t_min, t_max], dtype=torch.float64)
        lam_hi, lam_lo = schedule._log_snr(ends).tolist()  # sync: 2 CPU numbers
        if not (math.isfinite(lam_hi) and math.isfinite(lam_lo)):
            raise ValueError(
                f"spacing={spacing!r} needs a finite log-SNR at t_min and t_max; "
                f"{type(schedule).__name__} has lambda = {lam_lo} at t_max = {t_max} "
                f"and {lam_hi} at t_min = {t_min}"
                + (" (pass t_max < 1)" if not math.isfinite(lam_lo) else "")
            )
        if spacing == "log_snr":
            lam = torch.linspace(lam_lo, lam_hi, n_steps + 1, dtype=torch.float64)
        else:
            rho = _check.finite_positive(rho, "rho")
            s_max, s_min = (
                math.exp(-lam_lo / 2) ** (1 / rho),
                math.exp(-lam_hi / 2) ** (1 / rho),
            )
            i = torch.arange(n_steps + 1, dtype=torch.float64)
            sig = (s_max + i / n_steps * (s_min - s_max)) ** rho
            lam = -2 * torch.log(sig)
        t = schedule._t_from_log_snr(lam).clamp(t_min, t_max)
        t[0], t[-1] = t_max, t_min  # exact end points
    return t.to(device=device, dtype=torch.float32)


# -- the loop --------------------------------------------------------------------------
def _grid(times, n_steps) -> list[float]:
    if times is None:
        return time_grid(n_steps).tolist()  # sync: a CPU grid, once before the loop
    if not isinstance(times, torch.Tensor) or times.dim() != 1 or len(times) < 2:
        raise ValueError("times must be a 1-D tensor of at least two decreasing times")
    # the grid is read to the host once, before the loop
    grid = times.detach().to("cpu", torch.float64).tolist()  # sync: once per sample()
    if any(b >= a for a, b in zip(grid, grid[1:])) or not (
        0.0 <= grid[-1] and grid[0] <= 1.0
    ):
        raise ValueError(
            "times must decrease strictly and lie in [0, 1], "
            f"got {[round(v, 4) for v in grid[:6]]}"
            + (" ..." if len(grid) > 6 else "")
        )
    return grid


def _check_start(prediction, method, t_max, schedule):
    # eps and score fix x_0 only through x_0 = (x - sigma eps) / alpha: undefined where
    # alpha = 0 (the flow path at t = 1); only the reverse SDE never needs x_0 there
    if prediction not in ("eps", "score") or method == "euler_maruyama":
        return
    alpha = schedule._alpha_sigma(torch.tensor([t_max], dtype=torch.float64))[0]
    if alpha.tolist()[0] == 0.0:  # sync: one CPU number, once per sample()
        raise ValueError(
            f"a model predicting {prediction!r} cannot start at t = {t_max} on "
            f"{type(schedule).__name__}: alpha_t = 0 there, so "
            f"x_0 = (x_t - sigma_t eps) / alpha_t is undefined; start below it "
            f"(times=time_grid(n, t_max=0.999)) "
            f"or use a model predicting 'velocity', 'v' or 'x0'"
        )


# methods whose step draws no noise, where churn adds some in a controlled way
CHURN_METHODS = ("ddim", "euler", "heun")


def _check_sampling(method, eta, churn, corrector_steps, corrector_snr):
    # the stochasticity arguments of sample(), checked once; returns eta for the method
    if method == "ddim":
        eta = 0.0 if eta is None else eta
        if (
            isinstance(eta, bool)
            or not isinstance(eta, (int, float))
            or not (0.0 <= eta <= 1.0)
        ):
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    elif method == "euler_maruyama":
        eta = _check_eta_sde(1.0 if eta is None else eta)
    elif eta not in (None, 0, 0.0):
        raise ValueError(
            f"eta sets the noise of 'ddim' and 'euler_maruyama'; "
            f"method={method!r} takes none, got eta={eta!r}"
        )
    if (
        isinstance(churn, bool)
        or not isinstance(churn, (int, float))
        or not (math.isfinite(churn) and churn >= 0.0)
    ):
        raise ValueError(f"churn must be a finite number >= 0, got {churn!r}")
    if churn > 0 and (method not in CHURN_METHODS or eta):
        raise ValueError(
            "churn adds noise to a deterministic sampler (ddim with eta=0, euler, "
            f"heun); method={method!r}" + (f" with eta={eta}" if eta else "")
            + " draws its own noise or keeps a history that renoising would break"
        )
    _check_corrector_steps(corrector_steps)
    _check.finite_positive(corrector_snr, "corrector_snr")
    if corrector_steps and method.startswith("unipc"):
        raise ValueError(
            f"method={method!r} corrects every step with its own corrector (UniC); "
            "Langevin corrector_steps would move the point its history belongs to"
        )
    return float(eta or 0.0)


def _churn_times(grid, churn, schedule) -> list[float]:
    # t_hat of each step: the noise level sigma / alpha = exp(-lambda / 2) raised by the
    # factor 1 + churn, i.e. lambda lowered by 2 log(1 + churn); capped at grid[0]
    t = torch.tensor(grid[:-1], dtype=torch.float64)
    lam_hat = schedule._log_snr(t) - 2 * math.log1p(churn)
    t_hat = torch.maximum(schedule._t_from_log_snr(lam_hat), t).clamp(max=grid[0])
    return t_hat.tolist()  # sync: CPU times, once per sample()


@torch.no_grad()
def sample(
    model,
    x_T: torch.Tensor,
    schedule: Schedule,
    *,
    method: str = "ddim",
    n_steps: int = 100,
    times: torch.Tensor | None = None,
    y=None,
    eta: float | None = None,
    churn: float = 0.0,
    corrector_steps: int = 0,
    corrector_snr: float = 0.16,
    generator=None,
    return_trajectory: bool = False,
    progress: bool = False,
):
    """Run a sampler from x_T at t = 1 down to t = 0 (Section 2.5; the methods in
    Chapter 4).

    ``method`` is one of "ddpm", "ddim", "euler", "heun" (probability-flow ODE),
    "euler_maruyama" (reverse SDEs), "dpmpp_2m" or "dpmpp_3m" (multistep, from the
    data prediction; 3M takes first- and second-order steps while its history fills),
    "unipc_2m" or "unipc_3m" (the same predictors, each step but the last corrected
    with :func:`unic_step` from the next step's evaluation: one order higher at the
    same cost, Section 4.6), "dpmpp_2m_sde" (the (2M) step on the reverse SDE,
    stochastic, Section 4.10).
    ``times`` overrides the uniform grid
    of ``n_steps`` steps (see :func:`time_grid`). Stochasticity (Section 4.10):

    * ``eta``: DDIM's eta in [0, 1] (default 0), or the eta >= 0 of the reverse SDE
      family of ``euler_maruyama`` (default 1, Anderson's reverse SDE; 0 is the
      probability-flow ODE), see :func:`euler_maruyama_step`;
    * ``churn`` = gamma >= 0 (ddim with eta = 0, euler, heun): before each step from t,
      raise the noise level sigma_t / alpha_t by the factor 1 + gamma (capped at the
      grid's first time) with :func:`renoise`, then step from there;
    * ``corrector_steps`` Langevin corrector steps (:func:`corrector_step`, signal-to-
      noise ratio ``corrector_snr``) at the new time after every step but the last
      (predictor-corrector sampling).

    Returns x_0, or ``(x_0, trajectory)`` with the trajectory of shape
    (n_steps + 1, B, ...). The last step of the stochastic samplers adds no noise. The
    model is called :func:`nfe` times.
    """
    _check.choice(method, "method", METHODS)
    _check.tensor(x_T, "x_T")
    _check.schedule(schedule)
    _model_kind(model)
    eta = _check_sampling(method, eta, churn, corrector_steps, corrector_snr)
    _check.labels(y, x_T.shape[0], getattr(model, "n_classes", None))
    # one label: placed on the device once, not per call
    if y is not None and not isinstance(y, torch.Tensor):
        y = torch.full((x_T.shape[0],), int(y), dtype=torch.long, device=x_T.device)
    grid = _grid(times, _check.positive_int(n_steps, "n_steps"))
    _check_start(model.prediction, method, grid[0], schedule)
    starts = _churn_times(grid, churn, schedule) if churn > 0 else grid[:-1]
    # the times of each step, filled in on x's device (no copy, no sync): float64 on the
    # CPU, exactly as the public steps take a Python float, so sample() and a
    # hand-written loop agree
    dtype = _check.grid_dtype(x_T)
    at = lambda v: torch.full(  # noqa: E731  (B,)
        (x_T.shape[0],), v, dtype=dtype, device=x_T.device
    )

    x = x_T
    traj = [x]
    history = []  # the multistep solvers' earlier (x0, t), newest first
    x_start = None  # UniPC: where the last step started
    for i in progress_bar(range(len(grid) - 1), desc=method, disable=not progress):
        if starts[i] > grid[i]:  # churn: raise the noise level first (eq-churn)
            x = _renoise(x, at(grid[i]), at(starts[i]), schedule, generator)
        t, s = at(starts[i]), at(grid[i + 1])
        last, to_zero = i == len(grid) - 2, grid[i + 1] == 0.0
        if method in ("ddpm", "ddim"):
            x0 = _predict(model, x, t, schedule, "x0", y)
            if method == "ddpm" and not last:
                x = _ddpm(x, x0, t, s, schedule, generator)
            else:
                x = _ddim(x, x0, t, s, schedule, 0.0 if last else eta, generator)
        elif method in MULTISTEP_ORDER:
            order = MULTISTEP_ORDER[method]
            # at the predictor's point x (UniPC: x0 at it also corrects that point)
            x0 = _predict(model, x, t, schedule, "x0", y)
            if x_start is not None:  # UniC: redo the last step with x0 (eq-unic)
                (x0_p, t_p), older = history[0], history[1:order]
                x = _unic(x_start, x0_p, t_p, t, schedule, x0, older)
                if return_trajectory:
                    traj[-1] = x
            if to_zero:  # lambda = inf at t = 0: the solution is the prediction itself
                x = x0
            else:  # (DDIM on the first step, then 2M until the history fills)
                x_start = x if method.startswith("unipc") else None
                x = _multistep(x, x0, t, s, schedule, history, order)
            history = [(x0, t)] + history[: order - 1]
        elif method == "dpmpp_2m_sde":
            x0 = _predict(model, x, t, schedule, "x0", y)
            x0_p, t_p = history[0] if history else (None, None)
            if to_zero:  # the prediction itself, as for the ODE solvers
                x = x0
            elif last:  # the last step adds no noise: the ODE's (2M) step
                x = _dpmpp_2m(x, x0, t, s, schedule, x0_p, t_p)
            else:
                x = _dpmpp_2m_sde(x, x0, t, s, schedule, x0_p, t_p, generator)
            history = [(x0, t)]
        elif method == "euler_maruyama":
            if last:  # the last step is the denoised mean
                x = _ddim(x, _predict(model, x, t, schedule, "x0", y), t, s, schedule)
            else:
                score = _predict(model, x, t, schedule, "score", y)
                x = _euler_maruyama(x, score, t, s, schedule, eta, generator)
        else:  # euler, heun
            u = _predict(model, x, t, schedule, "velocity", y)
            dt = grid[i + 1] - starts[i]
            x_next = x + dt * u
            if method == "heun" and not to_zero:
                u2 = _predict(model, x_next, s, schedule, "velocity", y)
                x_next = x + dt * 0.5 * (u + u2)
            x = x_next
        for _ in range(0 if last else corrector_steps):  # Langevin at s (eq-corrector)
            score = _predict(model, x, s, schedule, "score", y)
            x = _corrector(x, score, s, schedule, corrector_snr, generator)
        if return_trajectory:
            traj.append(x)
    return (x, torch.stack(traj)) if return_trajectory else x

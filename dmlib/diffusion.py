"""The forward process and the exact identities that follow from it.

Notation (book's appendix): x_t = alpha_t x_0 + sigma_t eps with eps ~ N(0, I),
continuous time t in [0, 1], coefficients from a :class:`dmlib.schedules.Schedule`.
For s < t,

    alpha_{t|s}   = alpha_t / alpha_s,
    sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2

are the coefficients of the transition
q(x_t | x_s) = N(alpha_{t|s} x_s, sigma_{t|s}^2 I).
"""

from __future__ import annotations

import torch

from . import _check, noise
from .schedules import Schedule, _work, expand_to

PREDICTIONS = ("eps", "x0", "v", "score", "velocity")


def _noise_like(x: torch.Tensor, eps, generator, x_name="x0") -> torch.Tensor:
    if eps is None:
        return noise.randn_like(x, generator=generator)
    _check.tensor(eps, "eps", min_dim=0)
    _check.same_shape(eps, x, "eps", x_name)
    return eps


def _time(t, x: torch.Tensor, name: str = "t") -> torch.Tensor:
    """A user's time argument, validated once, as a (B,) tensor next to x
    (see _check.time_for)."""
    return _check.time_for(t, x, name)


def _alpha_sigma(t: torch.Tensor, schedule: Schedule, x: torch.Tensor):
    """(alpha_t, sigma_t) shaped (B, 1, ..., 1) to broadcast against x
    (internal: t is valid)."""
    a, s = schedule._alpha_sigma(_work(t))
    return expand_to(a, x), expand_to(s, x)


def q_sample(
    x0: torch.Tensor,
    t,
    schedule: Schedule,
    eps: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) at once: x_t = alpha_t x_0 + sigma_t eps (Section 1.2).

    ``x0`` has shape (B, ...); ``t`` is a float or a (B,) tensor of times in [0, 1];
    ``eps`` is the noise to use (drawn from ``generator`` when omitted).
    """
    _check.tensor(x0, "x0")
    _check.schedule(schedule)
    t = _time(t, x0)
    eps = _noise_like(x0, eps, generator)
    a, s = _alpha_sigma(t, schedule, x0)
    return a * x0 + s * eps  # (B, ...)


def marginal(
    x0: torch.Tensor, t, schedule: Schedule
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) (Section 1.2).

    Returns ``(mean, var)``: mean of x0's shape, var of shape (B, 1, ..., 1).
    """
    _check.tensor(x0, "x0")
    _check.schedule(schedule)
    a, s = _alpha_sigma(_time(t, x0), schedule, x0)
    return a * x0, s**2


def _transition(s: torch.Tensor, t: torch.Tensor, schedule: Schedule):
    # alpha_{t|s} = alpha_t / alpha_s and
    # sigma_{t|s}^2 = sigma_t^2 (1 - e^{lambda_t - lambda_s}):
    # the second form never subtracts two nearly equal variances (t close to s)
    a_s, _ = schedule._alpha_sigma(s)
    a_t, sig_t = schedule._alpha_sigma(t)
    # 1 - e^{lambda_t - lambda_s}, in [0, 1]
    d = -torch.expm1(schedule._log_snr(t) - schedule._log_snr(s))
    return a_t / a_s, sig_t**2 * d


def transition(s, t, schedule: Schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients of q(x_t | x_s) = N(alpha_{t|s} x_s, sigma_{t|s}^2 I) for s <= t
    (Section 1.2).

    Returns ``(alpha_ts, sigma2_ts)`` with alpha_{t|s} = alpha_t / alpha_s and
    sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2
                  = sigma_t^2 (1 - exp(lambda_t - lambda_s)).
    For a VP schedule on the grid s = (k-1)/T, t = k/T this is the DDPM step:
    alpha_{t|s}^2 = 1 - beta_k, sigma_{t|s}^2 = beta_k.
    """
    _check.schedule(schedule)
    s, t = _check.as_time(s, "s"), _check.as_time(t, "t")
    if s.shape != t.shape and 1 not in (s.shape[0], t.shape[0]):
        raise ValueError(
            "s and t must have the same shape or be scalars, "
            f"got {tuple(s.shape)} and {tuple(t.shape)}"
        )
    if (s > t).any():
        raise ValueError(
            "s must not exceed t: "
            "the forward transition q(x_t | x_s) runs from s up to t"
        )
    dtype = torch.promote_types(s.dtype, t.dtype)
    a_ts, var_ts = _transition(_work(s.to(dtype)), _work(t.to(dtype)), schedule)
    return a_ts.to(dtype), var_ts.clamp_min(0.0).to(dtype)


def q_step(
    x_s: torch.Tensor,
    s,
    t,
    schedule: Schedule,
    eps: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One step of the forward Markov chain (Section 1.1):
    x_t = alpha_{t|s} x_s + sigma_{t|s} eps.

    With s = (k - 1)/T and t = k/T on a VP schedule this is DDPM's
    x_k = sqrt(1 - beta_k) x_{k-1} + sqrt(beta_k) eps. Iterating it from 0 to t gives
    the same distribution as :func:`q_sample` at t -- the closed form of Section 1.2.
    """
    _check.tensor(x_s, "x_s")
    _check.schedule(schedule)
    _check.time_order(
        s,
        t,
        strict=False,
        what="the forward transition q(x_t | x_s) runs from s up to t",
    )
    s, t = _time(s, x_s, "s"), _time(t, x_s, "t")
    a_ts, var_ts = _transition(_work(s), _work(t), schedule)
    eps = _noise_like(x_s, eps, generator, "x_s")
    return (
        expand_to(a_ts, x_s) * x_s
        + expand_to(var_ts.clamp_min(0.0).sqrt(), x_s) * eps
    )


def _posterior(
    x0: torch.Tensor,
    x_t: torch.Tensor,
    s: torch.Tensor,
    t: torch.Tensor,
    schedule: Schedule,
):
    # the coefficients of posterior(), through log-SNR (see its docstring);
    # s, t valid, s < t
    s, t = _work(s), _work(t)
    a_s, sig_s = schedule._alpha_sigma(s)
    a_t, sig_t = schedule._alpha_sigma(t)
    # 1 - e^{lambda_t - lambda_s}, in [0, 1]
    d = -torch.expm1(schedule._log_snr(t) - schedule._log_snr(s))
    c_xt = (a_t / a_s) * (sig_s / sig_t) ** 2  # coefficient of x_t (0 if alpha_t = 0)
    c_x0 = a_s * d  # coefficient of x_0
    var = sig_s**2 * d
    return (
        expand_to(c_xt, x_t) * x_t + expand_to(c_x0, x0) * x0,  # (B, ...)
        expand_to(var.clamp_min(0.0), x_t),  # (B, 1, ...)
    )


def posterior(
    x0: torch.Tensor, x_t: torch.Tensor, s, t, schedule: Schedule
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(x_s | x_t, x_0) for s < t, by completing the square
    (Section 1.6).

        mu    = alpha_{t|s} sigma_s^2 / sigma_t^2 * x_t
                + alpha_s sigma_{t|s}^2 / sigma_t^2 * x_0
        var   = sigma_{t|s}^2 sigma_s^2 / sigma_t^2

    On the DDPM grid (s = (k-1)/T, t = k/T, VP) these are Ho et al.'s
    mu~ = sqrt(alpha_bar_{k-1}) beta_k / (1 - alpha_bar_k) x_0
          + sqrt(1 - beta_k)(1 - alpha_bar_{k-1}) / (1 - alpha_bar_k) x_k
    and beta~_k = (1 - alpha_bar_{k-1}) / (1 - alpha_bar_k) beta_k.
    The code evaluates the x_0 coefficient and the variance through the log-SNR lambda,
    with d = 1 - exp(lambda_t - lambda_s) = sigma_{t|s}^2 / sigma_t^2: alpha_s d and
    sigma_s^2 d, which stay accurate in float32 when s is close to t.
    Returns ``(mean, var)``: mean of x_t's shape, var of shape (B, 1, ..., 1).
    """
    _check.tensor(x0, "x0")
    _check.tensor(x_t, "x_t")
    _check.same_shape(x0, x_t, "x0", "x_t")
    _check.schedule(schedule)
    _check.time_order(
        s, t, strict=True, what="the posterior looks back from x_t to an earlier time s"
    )
    return _posterior(x0, x_t, _time(s, x_t, "s"), _time(t, x_t, "t"), schedule)


def _convert(
    pred: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    schedule: Schedule,
    src: str,
    dst: str,
):
    # convert() without checks; t is a valid (B,) tensor
    if src == dst:
        return pred
    t = _work(t)
    a, s = _alpha_sigma(t, schedule, x_t)

    # 1. recover the pair (x0, eps) from the source kind
    if src == "eps":
        eps = pred
        x0 = (x_t - s * eps) / a
    elif src == "x0":
        x0 = pred
        eps = (x_t - a * x0) / s
    elif src == "score":
        eps = -s * pred
        x0 = (x_t - s * eps) / a
    elif src == "v":
        norm = a**2 + s**2
        x0 = (a * x_t - s * pred) / norm
        eps = (s * x_t + a * pred) / norm
    else:  # velocity
        da, ds = (expand_to(c, x_t) for c in schedule._derivatives(t))
        det = a * ds - s * da
        x0 = (ds * x_t - s * pred) / det
        eps = (a * pred - da * x_t) / det

    # 2. express the destination kind through (x0, eps)
    return _target(x0, eps, t, schedule, dst)


def convert(
    pred: torch.Tensor,
    x_t: torch.Tensor,
    t,
    schedule: Schedule,
    *,
    src: str,
    dst: str,
) -> torch.Tensor:
    """Convert a prediction of one kind into any other, exactly (Section 1.7).

    Kinds: ``"eps"`` (the noise), ``"x0"`` (the clean data),
    ``"v"`` = alpha_t eps - sigma_t x_0 (Salimans & Ho, 2022),
    ``"score"`` = -eps / sigma_t (the score of q(x_t | x_0); for a model's expected eps,
    the score of the marginal p_t -- Tweedie's formula, Chapter 3) and
    ``"velocity"`` = alpha_t' x_0 + sigma_t' eps (the path's time derivative,
    Chapter 5).

    Every kind determines the pair (x_0, eps) given x_t = alpha_t x_0 + sigma_t eps:

        from eps:       x_0 = (x_t - sigma_t eps) / alpha_t
        from x0:        eps = (x_t - alpha_t x_0) / sigma_t
        from score:     eps = -sigma_t score
        from v:         x_0 = (alpha_t x_t - sigma_t v) / (alpha_t^2 + sigma_t^2),
                        eps = (sigma_t x_t + alpha_t v) / (alpha_t^2 + sigma_t^2)
        from velocity:  x_0 = (sigma_t' x_t - sigma_t u) / det,
                        eps = (alpha_t u - alpha_t' x_t) / det,
                        det = alpha_t sigma_t' - sigma_t alpha_t'

    Dividing by alpha_t (from eps) or sigma_t (from x0) is ill-conditioned where that
    coefficient is near 0 (t near 1, resp. 0); that is a property of the identity, not a
    bug.
    """
    _check.choice(src, "src", PREDICTIONS)
    _check.choice(dst, "dst", PREDICTIONS)
    _check.tensor(pred, "pred")
    _check.tensor(x_t, "x_t")
    _check.same_shape(pred, x_t, "pred", "x_t")
    _check.schedule(schedule)
    return _convert(pred, x_t, _time(t, x_t), schedule, src, dst)


def _target(
    x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, schedule: Schedule, kind: str
):
    # target() without checks; t is a valid (B,) tensor
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    t = _work(t)
    a, s = _alpha_sigma(t, schedule, x0)
    if kind == "score":
        return -eps / s
    if kind == "v":
        return a * eps - s * x0
    da, ds = (expand_to(c, x0) for c in schedule._derivatives(t))
    return da * x0 + ds * eps


def target(
    x0: torch.Tensor, eps: torch.Tensor, t, schedule: Schedule, kind: str
) -> torch.Tensor:
    """The value of a prediction kind for a known pair (x_0, eps) (Section 1.7).

        eps -> eps,   x0 -> x_0,   v -> alpha_t eps - sigma_t x_0,
        score -> -eps / sigma_t,   velocity -> alpha_t' x_0 + sigma_t' eps

    These are the regression targets of training (Chapter 2). Computed from the pair
    directly, never through x_t, so no coefficient is divided by that could be near 0
    (except sigma_t for the score).
    """
    _check.choice(kind, "kind", PREDICTIONS)
    _check.tensor(x0, "x0")
    _check.tensor(eps, "eps")
    _check.same_shape(x0, eps, "x0", "eps")
    _check.schedule(schedule)
    return _target(x0, eps, _time(t, x0), schedule, kind)


def _preconditioning(t: torch.Tensor, schedule: Schedule, sigma_data: float):
    # preconditioning() without checks; t is a valid (B,) tensor in its working dtype
    a, s = schedule._alpha_sigma(t)
    var_x = a**2 * sigma_data**2 + s**2  # V = Var(x_t) per coordinate
    c_in = torch.rsqrt(var_x)  # 1. unit-variance input
    c_skip = a * sigma_data**2 / var_x  # 2. the skip that minimises c_out
    c_out = s * sigma_data * c_in  # 3. unit-variance target (x0 - c_skip x_t) / c_out
    c_noise = -schedule._log_snr(t) / 8  # 4. (1/4) log(sigma_t / alpha_t)
    return c_skip, c_out, c_in, c_noise


def preconditioning(
    t, schedule: Schedule, sigma_data: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The preconditioning of Karras et al. (2022) at time t, for the state x_t itself
    (Section 4.9).

    A raw network F is wrapped into the denoiser

        x0_hat = c_skip x_t + c_out F(c_in x_t; c_noise),

    and, for data of zero mean and per-coordinate variance sigma_d^2 (``sigma_data``),
    with V = alpha_t^2 sigma_d^2 + sigma_t^2 = Var(x_t),

        c_in    = 1 / sqrt(V)                  (unit-variance input)
        c_skip  = alpha_t sigma_d^2 / V        (the skip that makes c_out smallest)
        c_out   = sigma_t sigma_d / sqrt(V)    (unit-variance target for F)
        c_noise = -lambda_t / 8 = (1/4) log(sigma_t / alpha_t)

    F's regression target is (x_0 - c_skip x_t) / c_out, and c_out is the factor by
    which F's error enters x0_hat. As functions of x_bar = x_t / alpha_t (Section 4.5)
    the coefficients are Karras et al.'s,
    alpha_t c_skip = sigma_d^2 / (vs^2 + sigma_d^2), alpha_t c_in = 1 / sqrt(vs^2 +
    sigma_d^2) and c_out, functions of the noise level vs = sigma_t / alpha_t alone;
    the x_t-forms here stay finite where alpha_t = 0. For a VP schedule with
    sigma_d = 1: c_in = 1, c_skip = alpha_t, c_out = sigma_t, and F's target is -v.
    Returns four tensors of shape (B,) in t's dtype; c_noise is -inf where sigma_t = 0.
    """
    _check.schedule(schedule)
    sigma_data = _check.finite_positive(sigma_data, "sigma_data")
    t = _check.as_time(t)
    out = _preconditioning(_work(t), schedule, sigma_data)
    return tuple(c.to(t.dtype) for c in out)


class ClipX0:
    """A denoiser whose data prediction is clipped to the data's range (Section 7.5):

        x0_hat_clip(x_t, t) = clamp(x0_hat(x_t, t), -bound, bound),

    returned as an "x0" prediction, so every sampler can use it. Near t = 1, where
    alpha_t is small, x0_hat = (x_t - sigma_t eps_hat) / alpha_t magnifies any error of
    eps_hat by 1 / alpha_t; pixels are known to lie in [-1, 1], and clipping removes the
    overshoot that would otherwise survive as speckle (the ``clip_sample`` option of
    DDPM's and DDIM's reference code). It changes the model, not the sampler: the
    clipped field is no longer the model's probability-flow ODE.
    """

    prediction = "x0"

    def __init__(self, model, schedule: Schedule, bound: float = 1.0):
        _check.schedule(schedule)
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not bound > 0:
            raise ValueError(f"bound must be a positive number, got {bound!r}")
        kind = getattr(model, "prediction", None)
        _check.choice(kind, "model.prediction", PREDICTIONS)
        self.model, self.schedule, self.bound = model, schedule, float(bound)
        self.n_classes = getattr(model, "n_classes", None)

    def __call__(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        t = _check.time_like(t, x_t)
        out = self.model(x_t, t, y)
        x0 = _convert(out, x_t, t, self.schedule, self.model.prediction, "x0")
        return x0.clamp(-self.bound, self.bound)

"""Samplers: step functions from time t down to an earlier time s, and one loop that
uses them.

Every step has the shape ``step(x_t, pred, t, s, schedule, ...) -> x_s`` where ``pred``
is the model's output already converted to the kind the step needs (``x0`` for DDPM /
DDIM / DPM-Solver++, ``score`` for the reverse SDE, ``velocity`` for the
probability-flow ODE), so each step is a few lines of the book's equations.
:func:`sample` runs any of them from t = 1 to t = 0 with any model that follows the
denoiser protocol ``model(x_t, t, y=None)``. Derivations: Chapter 2 (DDPM), Chapter 3
(Langevin), Chapter 4 (SDE, ODE, DDIM, 2M).

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

METHODS = ("ddpm", "ddim", "euler", "heun", "euler_maruyama", "dpmpp_2m")

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
}


def nfe(method: str, n_steps: int, *, t_min: float = 0.0) -> int:
    """Number of network evaluations :func:`sample` makes with ``n_steps`` steps ending
    at t_min (Section 4.7)."""
    _check.choice(method, "method", METHODS)
    n_steps = _check.positive_int(n_steps, "n_steps")
    total = NFE_PER_STEP[method] * n_steps
    return total - 1 if method == "heun" and t_min == 0.0 else total


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
    c = eta * var.sqrt()  # 2. fresh-noise scale (eq-ddim-eta), (B, 1, ..., 1)
    z = noise.randn_like(x_t, generator=generator)
    # 3. step (eq-ddim-eta)
    return x_s + (sig_s**2 - c**2).clamp_min(0).sqrt() * eps_hat + c * z


def _ddpm(x_t, x0_hat, t, s, schedule, generator=None):
    # 1. q(x_s | x_t, x0_hat) (eq-ancestral-step)
    mean, var = _posterior(x0_hat, x_t, s, t, schedule)
    # 2. draw from it
    return mean + var.sqrt() * noise.randn_like(x_t, generator=generator)


def _euler_maruyama(x_t, score, t, s, schedule, generator=None):
    # 1. drift and diffusion at t (eq-sde-coefficients), (B, 1, ..., 1) each
    f, g2 = (expand_to(c, x_t) for c in schedule._sde(_work(t)))
    h = expand_to(t - s, x_t)  # step length > 0
    z = noise.randn_like(x_t, generator=generator)
    # 2. one Euler-Maruyama step of the reverse SDE (eq-em-reverse)
    return x_t - h * (f * x_t - g2 * score) + (g2 * h).sqrt() * z


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


def euler_maruyama_step(x_t, score, t, s, schedule, *, generator=None):
    """Euler-Maruyama step of the reverse-time SDE (Anderson, 1982; Song et al., 2021),
    Section 4.3.

    Forward SDE dx = f(t) x dt + g(t) dW with f = alpha'/alpha and
    g^2 = (sigma^2)' - 2 f sigma^2 (:func:`dmlib.schedules.sde_coefficients`); its
    reverse runs dx = [f x - g^2 score] dt + g dW_bar backwards in time, so with
    h = t - s > 0:

        x_s = x_t - h (f(t) x_t - g(t)^2 score) + g(t) sqrt(h) z.
    """
    _step_args(x_t, score, t, s, schedule, "score")
    return _euler_maruyama(
        x_t, score, _times(t, x_t), _times(s, x_t), schedule, generator
    )


def dpmpp_2m_step(x_t, x0_hat, t, s, schedule, *, x0_prev=None, t_prev=None):
    """Second-order multistep step of DPM-Solver++(2M) (Lu et al., 2022), Section 4.6.

    With lambda the log-SNR, the step h = (lambda_s - lambda_t) / 2 in
    log(alpha / sigma), and r the previous step's length in lambda over this one's:

        D   = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev,               # 1.
        r   = (lambda_t - lambda_prev) / (lambda_s - lambda_t)
        x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) D    # 2.

    Without a previous prediction (the first step) D = x0_hat, which is exactly DDIM.
    """
    _step_args(x_t, x0_hat, t, s, schedule, "x0_hat")
    if (_check.as_time(s, "s") == 0).any():
        raise ValueError(
            "a DPM-Solver++ step needs s > 0 (the log-SNR is infinite at s = 0); "
            "the last step to s = 0 is the prediction x0_hat itself, as sample() does"
        )
    if (x0_prev is None) != (t_prev is None):
        raise ValueError(
            "x0_prev and t_prev go together: "
            "give both (a multistep) or neither (the first step)"
        )
    if x0_prev is not None:
        _check.tensor(x0_prev, "x0_prev")
        _check.same_shape(x0_prev, x_t, "x0_prev", "x_t")
        _check.time_order(
            t, t_prev, strict=True, what="t_prev is the earlier step's time, above t"
        )
        t_prev = _times(t_prev, x_t, "t_prev")
    return _dpmpp_2m(
        x_t, x0_hat, _times(t, x_t), _times(s, x_t), schedule, x0_prev, t_prev
    )


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
    eta: float = 0.0,
    generator=None,
    return_trajectory: bool = False,
    progress: bool = False,
):
    """Run a sampler from x_T at t = 1 down to t = 0 (Section 2.5; the methods in
    Chapter 4).

    ``method`` is one of "ddpm", "ddim" (with ``eta``), "euler", "heun"
    (probability-flow ODE), "euler_maruyama" (reverse SDE) or "dpmpp_2m". ``times``
    overrides the uniform grid of ``n_steps`` steps (see :func:`time_grid`). Returns
    x_0, or ``(x_0, trajectory)`` with the trajectory of shape (n_steps + 1, B, ...).
    The last step of the stochastic samplers adds no noise. The model is called
    :func:`nfe` times.
    """
    _check.choice(method, "method", METHODS)
    _check.tensor(x_T, "x_T")
    _check.schedule(schedule)
    _model_kind(model)
    if (
        isinstance(eta, bool)
        or not isinstance(eta, (int, float))
        or not (0.0 <= eta <= 1.0)
    ):
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    _check.labels(y, x_T.shape[0], getattr(model, "n_classes", None))
    # one label: placed on the device once, not per call
    if y is not None and not isinstance(y, torch.Tensor):
        y = torch.full((x_T.shape[0],), int(y), dtype=torch.long, device=x_T.device)
    grid = _grid(times, _check.positive_int(n_steps, "n_steps"))
    _check_start(model.prediction, method, grid[0], schedule)
    # the times of each step, filled in on x's device (no copy, no sync): float64 on the
    # CPU, exactly as the public steps take a Python float, so sample() and a
    # hand-written loop agree
    dtype = _check.grid_dtype(x_T)
    at = lambda v: torch.full(  # noqa: E731  (B,)
        (x_T.shape[0],), v, dtype=dtype, device=x_T.device
    )

    x = x_T
    traj = [x]
    x0_prev = t_prev = None
    for i in progress_bar(range(len(grid) - 1), desc=method, disable=not progress):
        t, s = at(grid[i]), at(grid[i + 1])
        last, to_zero = i == len(grid) - 2, grid[i + 1] == 0.0
        if method in ("ddpm", "ddim"):
            x0 = _predict(model, x, t, schedule, "x0", y)
            if method == "ddpm" and not last:
                x = _ddpm(x, x0, t, s, schedule, generator)
            else:
                x = _ddim(x, x0, t, s, schedule, 0.0 if last else float(eta), generator)
        elif method == "dpmpp_2m":
            x0 = _predict(model, x, t, schedule, "x0", y)
            x = x0 if to_zero else _dpmpp_2m(x, x0, t, s, schedule, x0_prev, t_prev)
            x0_prev, t_prev = x0, t
        elif method == "euler_maruyama":
            if last:  # the last step is the denoised mean
                x = _ddim(x, _predict(model, x, t, schedule, "x0", y), t, s, schedule)
            else:
                score = _predict(model, x, t, schedule, "score", y)
                x = _euler_maruyama(x, score, t, s, schedule, generator)
        else:  # euler, heun
            u = _predict(model, x, t, schedule, "velocity", y)
            dt = grid[i + 1] - grid[i]
            x_next = x + dt * u
            if method == "heun" and not to_zero:
                u2 = _predict(model, x_next, s, schedule, "velocity", y)
                x_next = x + dt * 0.5 * (u + u2)
            x = x_next
        if return_trajectory:
            traj.append(x)
    return (x, torch.stack(traj)) if return_trajectory else x

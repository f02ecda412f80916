"""Samplers: step functions from time t down to an earlier time s, and one loop that uses them.

Every step has the shape ``step(x_t, pred, t, s, schedule, ...) -> x_s`` where ``pred`` is the
model's output already converted to the kind the step needs (``x0`` for DDPM / DDIM /
DPM-Solver++, ``score`` for the reverse SDE, ``velocity`` for the probability-flow ODE), so
each step is a few lines of the book's equations. :func:`sample` runs any of them from
t = 1 to t = 0 with any model that follows the denoiser protocol ``model(x_t, t, y=None)``.
Derivations: Chapter 2 (DDPM), Chapter 3 (Langevin), Chapter 4 (SDE, ODE, DDIM, 2M).
"""

from __future__ import annotations

import torch
from . import _check
from .diffusion import convert, posterior
from .run import progress as progress_bar
from .schedules import Schedule, expand_to

METHODS = ("ddpm", "ddim", "euler", "heun", "euler_maruyama", "dpmpp_2m")


def _times(t, x):
    return _check.batch_time(_check.as_time(t), x).to(x.device)


def predict(model, x_t: torch.Tensor, t, schedule: Schedule, kind: str, y=None) -> torch.Tensor:
    """The model's output at (x_t, t), converted to ``kind`` (Section 2.5).

    ``model`` follows the denoiser protocol and declares ``model.prediction``.
    """
    src = getattr(model, "prediction", None)
    if src is None:
        raise AttributeError(f"model {type(model).__name__} must declare what it predicts in model.prediction")
    t = _times(t, x_t)
    out = model(x_t, t, y)
    if not isinstance(out, torch.Tensor) or out.shape != x_t.shape:
        raise ValueError(f"model returned {getattr(out, 'shape', type(out))}; expected a tensor of shape {tuple(x_t.shape)}")
    return convert(out, x_t, t, schedule, src=src, dst=kind)


def ddpm_step(x_t, x0_hat, t, s, schedule, *, generator=None):
    """Ancestral step of DDPM (Ho et al., 2020), Section 2.5: draw x_s ~ q(x_s | x_t, x0 = x0_hat).

        x_s = mu(x_t, x0_hat) + sqrt(var) z,    mu, var from the posterior of Section 1.6.
    """
    mean, var = posterior(x0_hat, x_t, _times(s, x_t), _times(t, x_t), schedule)
    z = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)
    return mean + var.sqrt() * z


def ddim_step(x_t, x0_hat, t, s, schedule, *, eta: float = 0.0, generator=None):
    """DDIM step (Song, Meng & Ermon, 2021), Section 4.5, with stochasticity eta in [0, 1]:

        eps_hat = (x_t - alpha_t x0_hat) / sigma_t                            # 1. implied noise
        c       = eta * sqrt(var of q(x_s | x_t, x_0))                        # 2. fresh-noise scale
        x_s     = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z        # 3. step

    eta = 0 is the deterministic DDIM (the probability-flow ODE's exponential-integrator
    step); eta = 1 is exactly the DDPM ancestral step.
    """
    if not (0.0 <= eta <= 1.0):
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    t_, s_ = _times(t, x_t), _times(s, x_t)
    a_t, sig_t = (expand_to(v, x_t) for v in schedule.alpha_sigma(t_))
    a_s, sig_s = (expand_to(v, x_t) for v in schedule.alpha_sigma(s_))
    eps_hat = (x_t - a_t * x0_hat) / sig_t  # 1.
    _, var = posterior(x0_hat, x_t, s_, t_, schedule)
    c = eta * var.sqrt()  # 2.
    z = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)
    return a_s * x0_hat + (sig_s**2 - c**2).clamp_min(0).sqrt() * eps_hat + c * z  # 3.


def euler_step(x_t, velocity, t, s, schedule=None):
    """Euler step of the probability-flow ODE dx/dt = u(x, t) from t to s (Section 4.4):

        x_s = x_t + (s - t) u(x_t, t),    u = alpha_t' E[x_0 | x_t] + sigma_t' E[eps | x_t].
    """
    dt = expand_to(_times(s, x_t) - _times(t, x_t), x_t)
    return x_t + dt * velocity


def euler_maruyama_step(x_t, score, t, s, schedule, *, generator=None):
    """Euler-Maruyama step of the reverse-time SDE (Anderson, 1982; Song et al., 2021), Section 4.3.

    Forward SDE dx = f(t) x dt + g(t) dW with f = alpha'/alpha and g^2 = (sigma^2)' - 2 f sigma^2;
    its reverse runs dx = [f x - g^2 score] dt + g dW_bar backwards in time, so with h = t - s > 0:

        x_s = x_t - h (f(t) x_t - g(t)^2 score) + g(t) sqrt(h) z.
    """
    t_, s_ = _times(t, x_t), _times(s, x_t)
    a, sig = (expand_to(v, x_t) for v in schedule.alpha_sigma(t_))
    da, dsig = (expand_to(v, x_t) for v in schedule.derivatives(t_))
    f = da / a
    g2 = (2 * sig * dsig - 2 * f * sig**2).clamp_min(0)
    h = expand_to(t_ - s_, x_t)
    z = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)
    return x_t - h * (f * x_t - g2 * score) + (g2 * h).sqrt() * z


def langevin_step(x, score, step_size: float, *, generator=None):
    """Unadjusted Langevin step x <- x + delta score(x) + sqrt(2 delta) z (Section 3.2)."""
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + step_size * score + (2 * step_size) ** 0.5 * z


def dpmpp_2m_step(x_t, x0_hat, t, s, schedule, *, x0_prev=None, t_prev=None):
    """Second-order multistep step of DPM-Solver++(2M) (Lu et al., 2022), Section 4.6.

    With lambda = log(alpha / sigma) and h = lambda_s - lambda_t:

        D   = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev,   r = (lambda_t - lambda_prev) / h   # 1. extrapolate x0
        x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) D                             # 2. exact linear part

    Without a previous prediction (the first step) D = x0_hat, which is exactly DDIM.
    """
    t_, s_ = _times(t, x_t), _times(s, x_t)
    a_t, sig_t = (expand_to(v, x_t) for v in schedule.alpha_sigma(t_))
    a_s, sig_s = (expand_to(v, x_t) for v in schedule.alpha_sigma(s_))
    lam = lambda a, sg: torch.log(a) - torch.log(sg)  # noqa: E731
    h = lam(a_s, sig_s) - lam(a_t, sig_t)
    d = x0_hat
    if x0_prev is not None:
        a_p, sig_p = (expand_to(v, x_t) for v in schedule.alpha_sigma(_times(t_prev, x_t)))
        r = (lam(a_t, sig_t) - lam(a_p, sig_p)) / h
        d = (1 + 1 / (2 * r)) * x0_hat - 1 / (2 * r) * x0_prev  # 1.
    return (sig_s / sig_t) * x_t - a_s * torch.expm1(-h) * d  # 2.


def time_grid(n_steps: int, *, t_max: float = 1.0, t_min: float = 0.0, device=None) -> torch.Tensor:
    """n_steps + 1 equally spaced times from t_max down to t_min (Section 2.5)."""
    n_steps = _check.positive_int(n_steps, "n_steps")
    if not (0.0 <= t_min < t_max <= 1.0):
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    return torch.linspace(t_max, t_min, n_steps + 1, dtype=torch.float32, device=device)


@torch.no_grad()
def sample(model, x_T: torch.Tensor, schedule: Schedule, *, method: str = "ddim", n_steps: int = 100,
           times: torch.Tensor | None = None, y=None, eta: float = 0.0, generator=None,
           return_trajectory: bool = False, progress: bool = False):
    """Run a sampler from x_T at t = 1 down to t = 0 (Section 2.5; the methods in Chapter 4).

    ``method`` is one of "ddpm", "ddim" (with ``eta``), "euler", "heun" (probability-flow ODE),
    "euler_maruyama" (reverse SDE) or "dpmpp_2m". ``times`` overrides the uniform grid of
    ``n_steps`` steps. Returns x_0, or ``(x_0, trajectory)`` with the trajectory of shape
    (n_steps + 1, B, ...). The last step of the stochastic samplers adds no noise.
    """
    _check.choice(method, "method", METHODS)
    _check.tensor(x_T, "x_T")
    if times is None:
        times = time_grid(n_steps, device=x_T.device)
    elif times.dim() != 1 or len(times) < 2 or (times[1:] >= times[:-1]).any():
        raise ValueError("times must be a 1-D decreasing sequence of at least two times")
    x = x_T
    traj = [x]
    x0_prev = t_prev = None
    steps = range(len(times) - 1)
    for i in progress_bar(steps, desc=method, disable=not progress):
        t, s = times[i].item(), times[i + 1].item()
        last = i == len(times) - 2
        if method in ("ddpm", "ddim"):
            x0 = predict(model, x, t, schedule, "x0", y)
            if method == "ddpm" and not last:
                x = ddpm_step(x, x0, t, s, schedule, generator=generator)
            else:
                x = ddim_step(x, x0, t, s, schedule, eta=0.0 if last else eta, generator=generator)
        elif method == "dpmpp_2m":
            x0 = predict(model, x, t, schedule, "x0", y)
            x = x0 if s == 0.0 else dpmpp_2m_step(x, x0, t, s, schedule, x0_prev=x0_prev, t_prev=t_prev)
            x0_prev, t_prev = x0, t
        elif method == "euler_maruyama":
            if last:  # the last step to t = 0 is the denoised mean
                x = ddim_step(x, predict(model, x, t, schedule, "x0", y), t, s, schedule)
            else:
                x = euler_maruyama_step(x, predict(model, x, t, schedule, "score", y), t, s, schedule,
                                        generator=generator)
        else:  # euler, heun
            u = predict(model, x, t, schedule, "velocity", y)
            x_next = euler_step(x, u, t, s)
            if method == "heun" and s > 0.0:
                u2 = predict(model, x_next, s, schedule, "velocity", y)
                x_next = euler_step(x, 0.5 * (u + u2), t, s)
            x = x_next
        if return_trajectory:
            traj.append(x)
    return (x, torch.stack(traj)) if return_trajectory else x

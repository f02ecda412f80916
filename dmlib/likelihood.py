"""Exact log-likelihood of a diffusion model through its probability-flow ODE.
Section 4.8.

For an ODE dx/dt = u(x, t), the instantaneous change-of-variables formula
(Chen et al., 2018) gives d log p_t(x_t) / dt = -div u(x_t, t). Integrating from the
data (t = t_min) to the noise (t = 1):

    log p_{t_min}(x) = log p_1(x_1) + int_{t_min}^{1} div u(x_t, t) dt,

with p_1 taken as the Gaussian N(0, sigma_1^2 I) (alpha_1 ~ 0 at t = 1). The divergence
is computed exactly with autograd, one coordinate at a time, which suits low-dimensional
data.
"""

from __future__ import annotations

import math

import torch

from . import _check
from .samplers import _predict
from .schedules import Schedule


def _velocity_and_divergence(model, x, t, schedule, y):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        u = _predict(model, x, t, schedule, "velocity", y)  # (B, D)
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in range(x.shape[1]):
            grad = torch.autograd.grad(
                u[:, i].sum(), x, retain_graph=i + 1 < x.shape[1]
            )[0]
            div = div + grad[:, i]
    return u.detach(), div.detach()


def ode_log_likelihood(
    model,
    x: torch.Tensor,
    schedule: Schedule,
    *,
    n_steps: int = 200,
    t_min: float = 1e-3,
    y=None,
) -> torch.Tensor:
    """log p(x) under the model's probability-flow ODE, by Heun's method in t
    (Section 4.8).

    ``x`` has shape (B, d) with small d (the divergence costs d backward passes).
    Returns the log-density of each point, shape (B,), for the model's distribution at
    time ``t_min``.
    """
    _check.tensor(x, "x", min_dim=2)
    if x.dim() != 2:
        raise ValueError(f"x must have shape (B, D), got {tuple(x.shape)}")
    n_steps = _check.positive_int(n_steps, "n_steps")
    if not (0.0 < t_min < 1.0):
        raise ValueError(f"t_min must lie in (0, 1), got {t_min}")
    _check.schedule(schedule)
    times = torch.linspace(t_min, 1.0, n_steps + 1, dtype=torch.float64).tolist()
    at = lambda v: torch.full(  # noqa: E731  (B,)
        (x.shape[0],), v, dtype=x.dtype, device=x.device
    )
    z, logdet = x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for t, s in zip(times[:-1], times[1:]):  # forward in time: data -> noise
        h = s - t
        u1, d1 = _velocity_and_divergence(model, z, at(t), schedule, y)
        z_euler = z + h * u1
        u2, d2 = _velocity_and_divergence(model, z_euler, at(s), schedule, y)
        z = z + 0.5 * h * (u1 + u2)
        logdet = logdet + 0.5 * h * (d1 + d2)
    sigma_1 = float(schedule.sigma(1.0))
    alpha_1 = float(schedule.alpha(1.0))
    # N(alpha_1 E x_0 ~ 0, ~ sigma_1^2 + alpha_1^2 Var x_0): unit-variance data
    var = sigma_1**2 + alpha_1**2
    D = x.shape[1]
    log_p1 = -0.5 * (z**2).sum(1) / var - 0.5 * D * math.log(2 * math.pi * var)
    return log_p1 + logdet

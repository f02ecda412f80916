"""Probability paths and flows between noise and data. Chapter 5.

A path x_t = alpha_t x_0 + sigma_t eps is any :class:`dmlib.schedules.Schedule`; its
conditional velocity is u_t(x | x_0, eps) = alpha_t' x_0 + sigma_t' eps
(:func:`dmlib.diffusion.target` with kind "velocity"). The linear path
(:class:`dmlib.schedules.FlowSchedule`) has u = eps - x_0. This module adds what is
specific to flows: integrating a velocity field, building reflow couplings, minibatch
optimal-transport pairings and measuring how straight trajectories are.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from . import _check, noise
from .samplers import sample
from .schedules import Schedule


def ot_pairing(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Reorder noise ``eps`` so that (x_0^(i), eps^(i)) is the optimal-transport pairing
    of the minibatch under squared distance (Tong et al., 2024; Pooladian et al., 2023),
    Section 5.5.

    Returns the permuted eps (same shape).
    """
    _check.tensor(x0, "x0", min_dim=2)
    _check.tensor(eps, "eps", min_dim=2)
    _check.same_shape(x0, eps, "x0", "eps")
    # sync: the assignment is solved on the host (scipy), once per training batch;
    # float64 on the CPU (Apple's MPS has no float64)
    a = x0.detach().flatten(1).to("cpu", torch.float64)
    b = eps.detach().flatten(1).to("cpu", torch.float64)
    # (B, B) squared distances
    rows, cols = linear_sum_assignment((torch.cdist(a, b) ** 2).numpy())
    perm = torch.as_tensor(cols[rows.argsort()], device=eps.device)
    return eps[perm]


@torch.no_grad()
def reflow_pairs(
    model,
    n: int,
    schedule: Schedule,
    *,
    shape=(2,),
    n_steps: int = 100,
    generator: torch.Generator | None = None,
    y=None,
    device=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Couplings for reflow (Liu et al., 2023), Section 5.4: draw eps, integrate the
    model's probability-flow ODE from t = 1 to 0 with Heun, and return the pairs
    (x0_hat, eps).

    Training a new flow on these deterministic pairs straightens its trajectories.
    """
    n = _check.positive_int(n, "n")
    eps = noise.randn((n, *shape), generator=generator, device=device or "cpu")
    x0 = sample(model, eps, schedule, method="heun", n_steps=n_steps, y=y)
    return x0, eps


def straightness(trajectory: torch.Tensor) -> float:
    """How far trajectories are from straight lines (Liu et al., 2023), Section 5.4:

        S = n sum_i |x_{t_{i+1}} - x_{t_i}|^2  -  |x_1 - x_0|^2,

    the excess of the discretised kinetic energy over that of the straight path between
    the endpoints (0 for perfectly straight, constant-speed paths), for n equal steps.
    ``trajectory`` has shape (n + 1, B, ...) as returned by
    :func:`dmlib.samplers.sample`.
    """
    _check.tensor(trajectory, "trajectory", min_dim=3)
    steps = trajectory.shape[0] - 1
    if steps < 1:
        raise ValueError("trajectory needs at least two time points")
    # (n+1, B, d); sync: a diagnostic, after sampling
    d = trajectory.detach().flatten(2).to("cpu", torch.float64)
    kinetic = ((d[1:] - d[:-1]) ** 2).sum(-1).sum(0) * steps  # (B,)
    chord = ((d[-1] - d[0]) ** 2).sum(-1)  # (B,)
    return float((kinetic - chord).mean())

"""Editing with a trained diffusion model: inversion, interpolation, SDEdit, inpainting.
Chapter 13.

Every function here takes a model of the denoiser protocol (a pixel U-Net, a
:class:`dmlib.latent.LatentModel`, a guided wrapper, or the exact Gaussian-mixture
oracle) and a schedule, and is built from the steps of :mod:`dmlib.samplers`:

* :func:`ddim_invert` runs the deterministic DDIM update forwards in time, from a data
  point to the noise that DDIM would map back to it (Song, Meng and Ermon, 2021);
* :func:`slerp` interpolates between two noise draws along the sphere where Gaussian
  noise concentrates;
* :func:`sdedit` noises an image part of the way and denoises it (Meng et al., 2022);
* :func:`inpaint_replace` fills the unknown pixels by sampling while the known pixels
  are replaced, at every step, by a fresh noising of their true values (Song et al.,
  2021; with resampling as in Lugmayr et al., 2022); :func:`inpaint_guided` instead
  steers the sampler with the gradient of the mismatch between the predicted clean image
  and the known pixels (reconstruction guidance, Chung et al., 2023).
"""

from __future__ import annotations

import torch

from . import _check, noise
from .samplers import _ddim, _ddpm, _model_kind, _predict, sample, time_grid
from .schedules import Schedule, expand_to

# inversion and reconstruction stop here: an eps-model's x0 is undefined at sigma = 0
T_MIN = 1e-3


def _check_common(model, x, schedule, n_steps, name="x"):
    _model_kind(model)
    _check.tensor(x, name, min_dim=2)
    _check.schedule(schedule)
    return _check.positive_int(n_steps, "n_steps")


def _labels(y, x, model):
    _check.labels(y, x.shape[0], getattr(model, "n_classes", None))
    if y is not None and not isinstance(y, torch.Tensor):
        y = torch.full((x.shape[0],), int(y), dtype=torch.long, device=x.device)
    return y


def _at(x):
    """t -> a (B,) tensor of the time t on x's device, in the grid's dtype."""
    dtype = _check.grid_dtype(x)
    return lambda v: torch.full((x.shape[0],), v, dtype=dtype, device=x.device)


@torch.no_grad()
def ddim_invert(model, x0: torch.Tensor, schedule: Schedule, *, n_steps: int = 50,
                t_max: float = 1.0, t_min: float = T_MIN, y=None,
                return_trajectory: bool = False):
    """DDIM inversion (Section 13.1): the x_T from which deterministic DDIM on the same
    grid returns (approximately) to ``x0``.

    On the grid t_min = t_0 < t_1 < ... < t_N = t_max (``n_steps`` = N uniform steps),
    starting from x = x0 at t_0, each step predicts x0_hat = x0_hat(x, t_i) and moves
    forwards with the DDIM update

        x_{t_{i+1}} = alpha_{t_{i+1}} x0_hat
                      + sigma_{t_{i+1}} (x - alpha_{t_i} x0_hat) / sigma_{t_i},

    the explicit first-order step of the probability-flow ODE run from t_i to t_{i+1}.
    It is exact as N grows (the ODE is invertible); at finite N the reconstruction
    ``sample(model, x_T, ..., method="ddim", times=grid reversed)`` differs from x0 by
    the solver's error in both directions. Returns x_T, or ``(x_T, trajectory)`` with
    the trajectory (N + 1, B, ...) from t_min to t_max.
    """
    n_steps = _check_common(model, x0, schedule, n_steps, "x0")
    # sync: a CPU grid, once
    grid = inversion_grid(n_steps, t_max=t_max, t_min=t_min).tolist()
    y = _labels(y, x0, model)
    at = _at(x0)  # (B,)
    x, traj = x0, [x0]
    for t, s in zip(grid[:-1], grid[1:]):  # s > t: forwards in time
        x0_hat = _predict(model, x, at(t), schedule, "x0", y)
        x = _ddim(x, x0_hat, at(t), at(s), schedule)
        traj.append(x)
    return (x, torch.stack(traj)) if return_trajectory else x


def inversion_grid(n_steps: int, *, t_max: float = 1.0,
                   t_min: float = T_MIN) -> torch.Tensor:
    """The increasing grid t_min, ..., t_max of :func:`ddim_invert` (``n_steps`` + 1
    times); reversed, it is the ``times`` of the reconstruction by
    :func:`dmlib.samplers.sample`. Section 13.1."""
    if not (0.0 < t_min < t_max <= 1.0):
        raise ValueError(
            f"need 0 < t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    return time_grid(n_steps, t_max=t_max, t_min=t_min).flip(0)


def slerp(a: torch.Tensor, b: torch.Tensor, alpha) -> torch.Tensor:
    """Spherical linear interpolation between noise draws a and b (Section 13.2), per
    sample over all its dimensions:

        slerp(a, b; alpha) = sin((1 - alpha) theta) / sin(theta) a
                             + sin(alpha theta) / sin(theta) b,

    with theta the angle between a and b. For independent high-dimensional Gaussian
    draws ||a|| and ||b|| are both close to sqrt(d) and theta close to 90 degrees, so
    the path keeps the norm a Gaussian draw has, where the straight line
    (1 - alpha) a + alpha b dips to sqrt(d / 2) at its middle: a point the model never
    saw as x_T. ``alpha`` is a number or a tensor (K,), giving (K, B, ...) for K
    interpolation points.
    """
    _check.tensor(a, "a")
    _check.same_shape(a, b, "a", "b")
    alpha = torch.as_tensor(alpha, dtype=torch.float64)
    if alpha.dim() > 1 or not bool(((alpha >= 0) & (alpha <= 1)).all()):
        raise ValueError("alpha must be a number or a 1-D tensor of numbers in [0, 1], "
                         f"got {alpha}")
    fa, fb = a.double().flatten(1), b.double().flatten(1)  # (B, d)
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1))
    theta = cos.clamp(-1.0, 1.0).acos()  # (B,)
    k = alpha.reshape(-1, 1)  # (K, 1)
    sin = theta.sin()
    small = sin < 1e-6  # (nearly) parallel: the straight line is the arc
    safe = sin.clamp_min(1e-12)
    wa = torch.where(small, 1 - k, torch.sin((1 - k) * theta) / safe)  # (K, B)
    wb = torch.where(small, k, torch.sin(k * theta) / safe)
    out = wa[..., None] * fa + wb[..., None] * fb  # (K, B, d)
    out = out.reshape(k.shape[0], *a.shape).to(a.dtype)
    return out[0] if alpha.dim() == 0 else out


@torch.no_grad()
def sdedit(model, x: torch.Tensor, strength: float, schedule: Schedule, *,
           n_steps: int = 50, method: str = "ddpm", y=None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """SDEdit (Meng et al., 2022), Section 13.3: noise x to the time t0 = ``strength``
    with q(x_t0 | x), then sample from t0 to 0 with ``method`` on ``n_steps`` uniform
    steps of [0, t0] (fewer evaluations than a full run: the start is already
    part-way).

    strength 0 returns x; strength 1 forgets it (a fresh sample). Between, the result
    keeps what survives the noise at t0 (the coarse shape, Chapter 7's spectral view)
    and takes the rest from the model, conditioned on ``y`` if given: class editing
    when y is another digit than x's.
    """
    n_steps = _check_common(model, x, schedule, n_steps)
    if (isinstance(strength, bool) or not isinstance(strength, (int, float))
            or not 0.0 <= strength <= 1.0):
        raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
    if strength == 0.0:
        return x.clone()
    # an eps-model's x0 is undefined where alpha = 0: such a model starts just below 1
    t_top = float(strength)
    if model.prediction in ("eps", "score"):
        t_top = min(t_top, 1.0 - T_MIN)
    t0 = _at(x)(t_top)  # (B,)
    a, s = schedule._alpha_sigma(t0)
    eps = noise.randn_like(x, generator=generator)
    x_t0 = expand_to(a, x) * x + expand_to(s, x) * eps
    times = time_grid(n_steps, t_max=t_top)
    return sample(model, x_t0, schedule, method=method, times=times, y=y,
                  generator=generator)


def _check_mask(mask, x_known):
    _check.tensor(mask, "mask")
    one_for_all = (mask.dim() == x_known.dim() and mask.shape[0] == 1
                   and mask.shape[1:] == x_known.shape[1:])
    if mask.shape != x_known.shape and not one_for_all:
        raise ValueError(f"mask must have the shape of x_known {tuple(x_known.shape)} "
                         f"(or a batch of 1), got {tuple(mask.shape)}")
    # sync-free on the CPU only
    if mask.device.type == "cpu" and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold 0 (unknown, to fill in) and 1 (known) only")
    return mask.to(x_known.dtype)


@torch.no_grad()
def inpaint_replace(model, x_known: torch.Tensor, mask: torch.Tensor,
                    schedule: Schedule, *, n_steps: int = 100, resample: int = 1,
                    y=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inpainting by replacement (Section 13.4): ancestral sampling in which, after
    every step to time s, the known pixels (``mask`` = 1) are overwritten by a fresh
    draw of q(x_s | x_known), so the unknown ones are generated next to a correctly
    noised context:

        x_s <- mask * (alpha_s x_known + sigma_s eps') + (1 - mask) * x_s.

    The unknown pixels see the known ones only through the model's next prediction, so
    they can disagree with the context; ``resample`` = r > 1 (Lugmayr et al., 2022)
    repeats each step r times, going back from s to t with q(x_t | x_s) in between,
    which lets the two parts harmonise at r times the cost. Returns the completed
    images, known pixels exact.
    """
    n_steps = _check_common(model, x_known, schedule, n_steps, "x_known")
    mask = _check_mask(mask, x_known)
    resample = _check.positive_int(resample, "resample")
    y = _labels(y, x_known, model)
    top = 1.0 - T_MIN if model.prediction in ("eps", "score") else 1.0
    grid = time_grid(n_steps, t_max=top).tolist()  # sync: a CPU grid, once
    at = _at(x_known)

    def noised(t):  # a draw of q(x_t | x_known)
        a, s = schedule._alpha_sigma(at(t))
        z = noise.randn_like(x_known, generator=generator)
        return expand_to(a, x_known) * x_known + expand_to(s, x_known) * z

    x = noise.randn_like(x_known, generator=generator)
    x = mask * noised(grid[0]) + (1 - mask) * x
    for i, (t, s) in enumerate(zip(grid[:-1], grid[1:])):
        last = i == len(grid) - 2
        for r in range(1 if last else resample):
            x0_hat = _predict(model, x, at(t), schedule, "x0", y)
            if last:
                x_s = _ddim(x, x0_hat, at(t), at(s), schedule)
            else:
                x_s = _ddpm(x, x0_hat, at(t), at(s), schedule, generator)
            x_s = mask * (x_known if last else noised(s)) + (1 - mask) * x_s
            if r < resample - 1:  # back to t: x_t ~ q(x_t | x_s) (the forward chain)
                a_t, sig_t = schedule._alpha_sigma(at(t))
                a_s, sig_s = schedule._alpha_sigma(at(s))
                ratio = expand_to(a_t / a_s, x)
                var = (sig_t**2 - (a_t / a_s) ** 2 * sig_s**2).clamp_min(0)
                z = noise.randn_like(x, generator=generator)
                x = ratio * x_s + expand_to(var.sqrt(), x) * z
            else:
                x = x_s
    return mask * x_known + (1 - mask) * x


def inpaint_guided(model, x_known: torch.Tensor, mask: torch.Tensor,
                   schedule: Schedule, *, n_steps: int = 100, scale: float = 1.0,
                   y=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inpainting by reconstruction guidance (Chung et al., 2023), Section 13.4:
    ancestral sampling whose every step is pushed down the gradient of the mismatch
    between the predicted clean image and the known pixels,

        r(x_t) = || mask * (x0_hat(x_t, t) - x_known) ||,
        x_s <- x_s - scale * grad_{x_t} r(x_t)^2 / r(x_t),

    (the step size normalised by r, as Chung et al. do, so ``scale`` does not depend on
    how far the prediction is from the known pixels). The gradient passes through the
    network: each step costs a backward pass. Unlike replacement, the known pixels
    shape the unknown ones through the network at every step, not one step late; they
    are matched approximately, and copied in at the end.
    """
    n_steps = _check_common(model, x_known, schedule, n_steps, "x_known")
    mask = _check_mask(mask, x_known)
    scale = float(_check.finite_positive(scale, "scale"))
    y = _labels(y, x_known, model)
    top = 1.0 - T_MIN if model.prediction in ("eps", "score") else 1.0
    grid = time_grid(n_steps, t_max=top).tolist()  # sync: a CPU grid, once
    at = _at(x_known)
    x = noise.randn_like(x_known, generator=generator)
    for i, (t, s) in enumerate(zip(grid[:-1], grid[1:])):
        last = i == len(grid) - 2
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0_hat = _predict(model, x_in, at(t), schedule, "x0", y)
            resid = (mask * (x0_hat - x_known)).flatten(1)  # (B, d)
            norm = resid.norm(dim=1)  # (B,)
            (grad,) = torch.autograd.grad((norm**2).sum(), x_in)
        x0_hat = x0_hat.detach()
        with torch.no_grad():
            if last:
                x = _ddim(x, x0_hat, at(t), at(s), schedule)
            else:
                x = _ddpm(x, x0_hat, at(t), at(s), schedule, generator)
            x = x - scale * grad / expand_to(norm.detach().clamp_min(1e-8), x)
    return (mask * x_known + (1 - mask) * x).detach()

"""Exact log-likelihood of a diffusion model through its probability-flow ODE.
Section 4.8.

For an ODE dx/dt = u(x, t), the instantaneous change-of-variables formula
(Chen et al., 2018) gives d log p_t(x_t) / dt = -div u(x_t, t). Integrating from the
data (t = t_min) to the noise (t = 1):

    log p_{t_min}(x) = log p_1(x_1) + int_{t_min}^{1} div u(x_t, t) dt,

with p_1 taken as the Gaussian N(0, sigma_1^2 I) (alpha_1 ~ 0 at t = 1). The divergence
is computed exactly with autograd, one coordinate at a time, which suits low-dimensional
data.

For images (Chapter 9) two estimates of bits per dimension of 8-bit pixels
x = u / 127.5 - 1: :func:`ode_bits_per_dim`, the same ODE with Hutchinson's unbiased
divergence estimate and uniform dequantisation, and :func:`vlb_bits_per_dim`, DDPM's
variational bound on the discrete chain with a discretised Gaussian decoder, estimated
from a random subset of its T terms.
"""

from __future__ import annotations

import math

import torch

from . import _check, noise
from .diffusion import _posterior, _transition
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
    hutchinson: bool = False,
    n_probes: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """log p(x) under the model's probability-flow ODE, by Heun's method in t
    (Section 4.8).

    ``x`` has shape (B, d) with small d (the exact divergence costs d backward
    passes). Returns the log-density of each point, shape (B,), for the model's
    distribution at time ``t_min``. With ``hutchinson=True`` the divergence is
    replaced by Hutchinson's unbiased estimate with ``n_probes`` Rademacher probes
    drawn from ``generator`` (Section 9.6; see :func:`ode_bits_per_dim`).
    """
    _check.tensor(x, "x", min_dim=2)
    if x.dim() != 2:
        raise ValueError(f"x must have shape (B, D), got {tuple(x.shape)}")
    n_steps = _check.positive_int(n_steps, "n_steps")
    if not (0.0 < t_min < 1.0):
        raise ValueError(f"t_min must lie in (0, 1), got {t_min}")
    _check.schedule(schedule)
    if hutchinson:
        probes = _rademacher(_check.positive_int(n_probes, "n_probes"), x, generator)
        div = lambda *a: _velocity_and_hutchinson(*a, probes)  # noqa: E731
    else:
        div = _velocity_and_divergence
    times = torch.linspace(t_min, 1.0, n_steps + 1, dtype=torch.float64).tolist()
    return _integrate(model, x, schedule, times, y, div)


def _integrate(model, x, schedule, times, y, divergence):
    # log p_{times[0]}(x) for flat x (B, D): Heun's method forward in time on the ODE
    # and on the log-determinant, then the Gaussian prior at t = times[-1] = 1
    at = lambda v: torch.full(  # noqa: E731  (B,)
        (x.shape[0],), v, dtype=x.dtype, device=x.device
    )
    z, logdet = x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for t, s in zip(times[:-1], times[1:]):  # forward in time: data -> noise
        h = s - t
        u1, d1 = divergence(model, z, at(t), schedule, y)
        z_euler = z + h * u1
        u2, d2 = divergence(model, z_euler, at(s), schedule, y)
        z = z + 0.5 * h * (u1 + u2)
        logdet = logdet + 0.5 * h * (d1 + d2)
    sigma_1 = float(schedule.sigma(1.0))
    alpha_1 = float(schedule.alpha(1.0))
    # N(alpha_1 E x_0 ~ 0, ~ sigma_1^2 + alpha_1^2 Var x_0): unit-variance data
    var = sigma_1**2 + alpha_1**2
    D = x.shape[1]
    log_p1 = -0.5 * (z**2).sum(1) / var - 0.5 * D * math.log(2 * math.pi * var)
    return log_p1 + logdet


# -- images: bits per dimension (Chapter 9) ------------------------------------------

# pixel u in {0, ..., 255} sits at x = u / 127.5 - 1: bins of width 2/255
_HALF_BIN = 1.0 / 255.0


def _rademacher(n_probes, x, generator):
    # (P, B, D) independent signs +-1, drawn through dmlib.noise, on x's device
    r = noise.randint(0, 2, (n_probes,) + tuple(x.shape), generator=generator)
    return (2 * r - 1).to(x.device, x.dtype)


def _velocity_and_hutchinson(model, x, t, schedule, y, probes):
    # Hutchinson: div u = E_r[r^T (du/dx) r] for E[r r^T] = I; each probe costs one
    # vector-Jacobian product; the probes stay fixed along the trajectory
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        u = _predict(model, x, t, schedule, "velocity", y)  # (B, D)
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for j in range(probes.shape[0]):
            vjp = torch.autograd.grad(
                u, x, grad_outputs=probes[j], retain_graph=j + 1 < probes.shape[0]
            )[0]
            div = div + (vjp * probes[j]).sum(1)
    return u.detach(), (div / probes.shape[0]).detach()


class _Flat:
    """A denoiser on images (B, ...) seen as one on flat vectors (B, D)."""

    def __init__(self, model, shape):
        self.model, self.shape = model, tuple(shape)
        self.prediction = model.prediction

    def __call__(self, z, t, y=None):
        x = z.reshape((z.shape[0],) + self.shape)
        out = self.model(x, t, y)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise ValueError(
                f"model returned {getattr(out, 'shape', type(out))}; "
                f"expected a tensor of shape {tuple(x.shape)}"
            )
        return out.reshape(z.shape)


def _pixels(x0, name="x0"):
    """Check that x0 holds 8-bit pixels x = u / 127.5 - 1, u in {0, ..., 255}."""
    _check.tensor(x0, name, min_dim=2)
    u = x0.detach() * 127.5 + 127.5
    # host sync: one check per call
    if not torch.isfinite(u).all() or (u - u.round()).abs().max() > 1e-3 or (
        u.min() < -1e-3 or u.max() > 255 + 1e-3
    ):
        raise ValueError(
            f"{name} must hold 8-bit pixels x = u / 127.5 - 1 with integer u in "
            "[0, 255] (values in [-1, 1] on that grid)"
        )
    return x0


def _acc_dtype(x):
    # accumulate log-likelihood terms in float64, except on MPS which lacks it
    return torch.float32 if x.device.type == "mps" else torch.float64


def ode_bits_per_dim(
    model,
    x0: torch.Tensor,
    schedule: Schedule,
    *,
    n_steps: int = 100,
    t_min: float = 1e-5,
    hutchinson: bool = True,
    n_probes: int = 1,
    dequantize: bool = True,
    generator: torch.Generator | None = None,
    y=None,
    grid: str = "log_snr",
) -> torch.Tensor:
    """Bits per dimension of 8-bit images under the probability-flow ODE (Song et al.,
    2021; Section 9.6).

    ``x0`` (B, ...) holds pixels x = u / 127.5 - 1 with u in {0, ..., 255}; D is the
    number of values per image. The ODE gives a density p on R^D (the model's law at
    ``t_min``, :func:`ode_log_likelihood`), with the divergence by Hutchinson's
    estimator r^T (du/dx) r (Hutchinson, 1989; Grathwohl et al., 2019), r Rademacher
    (``n_probes`` probes per image, fixed along the path, drawn from ``generator``),
    unbiased for log p; ``hutchinson=False`` uses the exact divergence (D backward
    passes, small D only).

    Uniform dequantisation (Theis et al., 2016) turns the density into a discrete law
    of u: the bin of u is the cube of side 1/127.5 centred on x, and for
    w ~ U[0, 1)^D,

        P(u) = int_bin p  >=  exp(E_w log p(x + (w - 1/2) / 127.5)) (1/127.5)^D

    by Jensen's inequality. Equivalently, v = u + w in [0, 256)^D and
    x~ = (v - 1/2) / 127.5 - 1 have densities related by p_v(v) = p(x~) / 127.5^D.
    The returned bits per dimension, one per image, shape (B,),

        bpd = -(log p(x~) - D log 127.5) / (D ln 2)
            = -log p(x~) / (D ln 2) + log2 127.5,

    are therefore an unbiased estimate of an upper bound on -log2 P(u) / D (one draw
    of w and of the probes per image). With ``dequantize=False`` the density is read
    at x itself: the same formula with x~ = x, an approximation of P(u) by density
    times bin volume, not a bound.

    Heun's method on ``n_steps`` steps of a time grid from t_min to 1:

    * ``grid="sqrt_t"``: uniform in sqrt(t - t_min). Accurate for
      densities that are smooth on the scale of sigma_{t_min} (measured: 1e-3 bits/dim
      at 50 steps for Gaussian pixels), but NOT for 8-bit images. A model of such data
      is stiff near t = 0: in the directions that leave the data its noise prediction
      behaves like (x - alpha_t x0_hat) / sigma_t, so the divergence of u grows like
      sigma_t' / sigma_t per direction (like 1 / (2t) on the cosine schedule) and its
      integral like log sigma_t. The first step of this grid then spans a range over
      which the divergence changes by orders of magnitude: on the cosine schedule the
      shipped MNIST eps-model gives -20, -2.5 and 1.1 bits/dim at 10, 20 and 40 steps.
    * ``grid="log_snr"`` (the default): evenly spaced in the log-SNR lambda_t, from lambda_{t_min}
      down to max(lambda_1, -10) (below -10, where alpha_t^2 < 5e-5 sigma_t^2 and the
      flow is smooth, one last step reaches t = 1; the flow path has lambda_1 = -inf).
      Near the data lambda_t ~ -2 log sigma_t, so the integrand (div u) dt / dlambda
      tends to a constant and every step carries a similar share of the integral;
      Heun's error falls like 1 / n_steps^2 from small n_steps on (the same model:
      0.11, 1.30 and 1.59 bits/dim; changes shrinking by a factor of 4). Use it for
      images (Section 9.6 measures both grids). On smooth data it spends steps where
      little happens (8e-3 bits/dim at 50 steps for the Gaussian pixels above, where
      ``grid="sqrt_t"`` is the better choice).
    """
    _pixels(x0)
    _check.schedule(schedule)
    n_steps = _check.positive_int(n_steps, "n_steps")
    n_probes = _check.positive_int(n_probes, "n_probes")
    if not (0.0 < t_min < 1.0):
        raise ValueError(f"t_min must lie in (0, 1), got {t_min}")
    _check.choice(grid, "grid", ("log_snr", "sqrt_t"))
    _check.labels(y, x0.shape[0], getattr(model, "n_classes", None))
    b = x0.shape[0]
    x = x0.detach().reshape(b, -1)  # (B, D)
    if dequantize:
        w = noise.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + (w - 0.5) / 127.5
    flat = _Flat(model, x0.shape[1:])
    if hutchinson:
        probes = _rademacher(n_probes, x, generator)
        div = lambda *a: _velocity_and_hutchinson(*a, probes)  # noqa: E731
    else:
        div = _velocity_and_divergence
    if grid == "log_snr":
        times = _log_snr_grid(schedule, t_min, n_steps)
    else:
        r = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64) ** 2
        times = (t_min + (1.0 - t_min) * r).tolist()
        times[-1] = 1.0
    log_p = _integrate(flat, x, schedule, times, y, div).to(_acc_dtype(x))
    d = x.shape[1]
    return -log_p / (d * math.log(2)) + math.log2(127.5)


def _log_snr_grid(schedule, t_min, n_steps):
    # n_steps + 1 increasing times from t_min to 1, evenly spaced in lambda_t (float64)
    lam_0 = float(schedule.log_snr(t_min))
    # below lambda = -10 (alpha^2 < 5e-5 sigma^2) the rest, up to t = 1, is one step
    lam_1 = max(float(schedule.log_snr(1.0)), min(-10.0, lam_0 - 1.0))
    lams = torch.linspace(lam_0, lam_1, n_steps + 1, dtype=torch.float64)
    times = schedule.t_from_log_snr(lams).tolist()
    times[0], times[-1] = t_min, 1.0
    if any(b <= a for a, b in zip(times[:-1], times[1:])):
        raise ValueError(
            f"the log-SNR grid of {type(schedule).__name__} from t_min = {t_min} is not "
            "strictly increasing in t; use fewer steps or grid='sqrt_t'"
        )
    return times


def _log_bin_prob(x0, mean, std):
    # log P(bin of x0) under N(mean, std^2), per value: the bin [x0 - 1/255,
    # x0 + 1/255], opened to -inf at x0 = -1 and to +inf at x0 = 1
    lo = torch.where(x0 < -1 + _HALF_BIN, -math.inf, (x0 - _HALF_BIN - mean) / std)
    hi = torch.where(x0 > 1 - _HALF_BIN, math.inf, (x0 + _HALF_BIN - mean) / std)
    # log(Phi(hi) - Phi(lo)) evaluated in the lower tail, where log Phi keeps its
    # precision: Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi) when the bin lies above 0
    flip = (lo + hi) > 0
    lo, hi = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log(-torch.expm1(log_lo - log_hi))


def _steps(schedule, T, n, b, sampling, generator):
    """Steps k in {2, ..., T} for each of b images, (b, n), and the weights that make
    the weighted sum of L_{k-1} an unbiased estimate of the full sum."""
    if sampling == "uniform":  # n distinct steps, each picked with probability n/(T-1)
        ks = noise.rand((b, T - 1), generator=generator).argsort(1)[:, :n] + 2
        return ks, torch.full((b, n), (T - 1) / n, dtype=torch.float64)
    # importance: n independent draws from q_k = (1/2) / (T - 1) + (1/2) dlam_k / sum,
    # dlam_k = lambda_{k-1} - lambda_k the log-SNR drop of step k; weight 1 / (n q_k)
    lam = schedule._log_snr(torch.arange(1, T + 1, dtype=torch.float64) / T)
    dlam = (lam[:-1] - lam[1:]).clamp_min(0.0)  # steps k = 2..T
    q = 0.5 / (T - 1) + 0.5 * dlam / dlam.sum()
    idx = noise.multinomial(
        q.expand(b, T - 1), n, generator=generator, replacement=True
    )
    return idx + 2, 1.0 / (n * q[idx])


def _vlb_terms(model, x0, schedule, T, n_terms, sampling, generator, y):
    """The VLB's three parts in nats per image, each (B,), in float64 (float32 on
    MPS): prior L_T, the sum of L_{k-1} over k = 2..T (estimated), decoder -log p."""
    b, acc = x0.shape[0], _acc_dtype(x0)
    tdt = _check.grid_dtype(x0)
    x0a = x0.to(acc).reshape(b, -1)

    def at(k):  # (B,) times k / T
        return (k.to(tdt) / T).to(x0.device)

    def noised(t):
        a, s = schedule._alpha_sigma(t.to(acc))
        e = noise.randn_like(x0, generator=generator)
        shape = (b,) + (1,) * (x0.dim() - 1)
        return a.view(shape).to(x0.dtype) * x0 + s.view(shape).to(x0.dtype) * e

    # L_T = KL(q(x_T | x_0) || N(0, I)) = (1/2) sum(a^2 x0^2 + s^2 - 1 - log s^2)
    a1, s1 = schedule._alpha_sigma(torch.ones(1, dtype=acc, device=x0.device))
    prior = 0.5 * (a1**2 * x0a**2 + s1**2 - 1 - torch.log(s1**2)).sum(1)

    # L_0 = -log p(x_0 | x_1): the discretised Gaussian around the model's x0 guess,
    # variance beta_1 = sigma_{t_1|0}^2 (Ho et al.'s choice at the first step)
    t1 = at(torch.ones(b, dtype=torch.int64))
    x0_hat = _predict(model, noised(t1), t1, schedule, "x0", y)
    _, beta_1 = _transition(
        torch.zeros(1, dtype=acc), torch.full((1,), 1.0 / T, dtype=acc), schedule
    )
    std = beta_1.sqrt().to(x0.device)
    decoder = -_log_bin_prob(x0a, x0_hat.to(acc).reshape(b, -1), std).sum(1)

    # sum over k = 2..T of L_{k-1} = KL(q(x_{k-1} | x_k, x_0) || p(x_{k-1} | x_k))
    # = |mu~(x_k, x_0) - mu~(x_k, x0_hat)|^2 / (2 beta~_k): both Gaussians have the
    # posterior's variance beta~_k, and the means differ by c_x0 (x_0 - x0_hat),
    # which _posterior returns for the pair (x_0 - x0_hat, 0)
    ks, weights = _steps(schedule, T, n_terms, b, sampling, generator)  # (B, n) each
    diffusion = torch.zeros(b, dtype=acc, device=x0.device)
    for j in range(n_terms):
        k = ks[:, j]
        t, s = at(k), at(k - 1)
        x0_hat = _predict(model, noised(t), t, schedule, "x0", y)
        gap = (x0 - x0_hat).to(acc)
        mean, var = _posterior(
            gap, torch.zeros_like(gap), s.to(acc), t.to(acc), schedule
        )
        term = 0.5 * (mean.reshape(b, -1) ** 2).sum(1) / var.reshape(b)
        diffusion = diffusion + weights[:, j].to(x0.device, acc) * term
    return prior, diffusion, decoder


def vlb_bits_per_dim(
    model,
    x0: torch.Tensor,
    schedule: Schedule,
    *,
    T: int = 1000,
    n_terms: int | None = None,
    sampling: str = "importance",
    generator: torch.Generator | None = None,
    y=None,
) -> dict:
    """Bits per dimension of 8-bit images from DDPM's variational bound (Ho et al.,
    2020; Section 9.6).

    ``x0`` (B, ...) holds pixels x = u / 127.5 - 1, u in {0, ..., 255}, D values per
    image. For the T-step chain on the grid t_k = k / T of the VP ``schedule``, with
    the model's reverse steps p(x_{k-1} | x_k) = N(mu~(x_k, x0_hat), beta~_k I) (the
    posterior of :func:`dmlib.diffusion.posterior` with x_0 replaced by the model's
    guess x0_hat), the bound on -log P(u) in nats is

        L = L_T + sum_{k=2}^{T} L_{k-1} + L_0,
        L_T     = KL(q(x_T | x_0) || N(0, I)),
        L_{k-1} = KL(q(x_{k-1} | x_k, x_0) || p(x_{k-1} | x_k))
                = |mu~(x_k, x_0) - mu~(x_k, x0_hat)|^2 / (2 beta~_k),
                  x_k ~ q(x_k | x_0),
        L_0     = -log prod_i int_{bin_i} N(z; x0_hat_i(x_1), beta_1) dz,

    the bins of width 2/255 around each pixel value (the outer ones open to -inf and
    +inf); bits per dimension are L / (D ln 2), with no change of variables: the
    decoder is already a law on the 256 levels.

    Estimator: each L_{k-1} uses one draw of x_k, and the sum over k is estimated from
    ``n_terms`` = n steps per image (default ``None``: n = T - 1, every step once,
    drawn with ``sampling="uniform"``). Both ways are unbiased:

    * ``sampling="uniform"``: n distinct steps drawn without replacement, each picked
      with probability n / (T - 1), so the sum is (T - 1) / n times theirs;
    * ``sampling="importance"``: n independent draws from
      q_k = 1 / (2 (T - 1)) + dlam_k / (2 sum_k' dlam_k'), dlam_k = lambda_{k-1} -
      lambda_k the drop of the log-SNR over step k, each term weighted 1 / (n q_k).
      For a good denoiser L_{k-1} is roughly proportional to dlam_k near the data,
      where the terms are largest, so this has a much smaller variance; the uniform
      half bounds every weight by 2 (T - 1) / n.

    L_T is exact and L_0 costs one model call, so the cost is n + 1 model calls on
    the batch. Returns a dict of (B,) tensors in bits per
    dimension: ``bpd`` (the total), ``prior``, ``diffusion`` and ``decoder``.
    """
    _pixels(x0)
    _check.schedule(schedule)
    if not schedule.variance_preserving:
        raise ValueError(
            "vlb_bits_per_dim needs a variance-preserving schedule (its prior is "
            f"N(0, I)), got {type(schedule).__name__}"
        )
    T = _check.positive_int(T, "T")
    if T < 2:
        raise ValueError(f"T must be at least 2, got {T}")
    _check.choice(sampling, "sampling", ("importance", "uniform"))
    if n_terms is None:
        n_terms, sampling = T - 1, "uniform"
    n_terms = _check.positive_int(n_terms, "n_terms")
    if sampling == "uniform" and n_terms > T - 1:
        raise ValueError(
            f"n_terms must be at most T - 1 = {T - 1} with uniform sampling, "
            f"got {n_terms}"
        )
    _check.labels(y, x0.shape[0], getattr(model, "n_classes", None))
    with torch.no_grad():
        prior, diffusion, decoder = _vlb_terms(
            model, x0, schedule, T, n_terms, sampling, generator, y
        )
    scale = 1.0 / (x0[0].numel() * math.log(2))
    parts = {
        "prior": prior * scale,
        "diffusion": diffusion * scale,
        "decoder": decoder * scale,
    }
    return {"bpd": parts["prior"] + parts["diffusion"] + parts["decoder"], **parts}

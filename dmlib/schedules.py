"""Noise schedules: how much signal and noise the forward process keeps at time t.

Every schedule describes the Gaussian marginal of the forward process (Section 1.2)

    x_t = alpha_t * x_0 + sigma_t * eps,        eps ~ N(0, I),        t in [0, 1],

through two functions ``alpha(t)`` and ``sigma(t)``. Derived quantities are shared:

    SNR(t)     = alpha_t^2 / sigma_t^2                     (Section 1.4)
    log_snr(t) = 2 log alpha_t - 2 log sigma_t

Variance-preserving (VP) schedules set ``sigma_t^2 = 1 - alpha_bar_t`` and
``alpha_t = sqrt(alpha_bar_t)``; they are defined by ``alpha_bar(t)`` alone (Section 1.3).
For discrete use, a T-step chain takes the times ``t_k = k / T`` (k = 0..T), so

    alpha_bar_k = alpha_bar(k / T),    beta_k = 1 - alpha_bar_k / alpha_bar_{k-1}.

All values are computed in float64 and returned in the dtype of ``t`` (tables: float32 unless
asked otherwise), so a schedule evaluated in float32 is as accurate as float32 allows.
"""

from __future__ import annotations

import math

import torch

from . import _check

# Smallest alpha_bar of the cosine and sigmoid schedules, whose alpha_bar reaches exactly 0 at
# t = 1. They use ALPHA_BAR_MIN + (1 - ALPHA_BAR_MIN) alpha_bar(t): smooth in t, alpha_bar(0)
# still 1, and log-SNR at t = 1 about -9.2, near where DDPM's linear schedule ends (-10.1).
# Without a floor alpha_1 = 0, and the first step of a sampler from t = 1 would divide a
# model's eps error by alpha_1 (x0 = (x - sigma eps) / alpha); even a floor of 1e-8 amplifies
# it ten-thousandfold.
ALPHA_BAR_MIN = 1e-4


class Schedule:
    """A forward process x_t = alpha(t) x_0 + sigma(t) eps (Section 1.2).

    Subclasses implement ``_alpha_sigma(t64)`` on a float64 tensor of times in [0, 1].
    """

    name = "schedule"
    variance_preserving = False

    # -- to implement -------------------------------------------------------------------
    def _alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    # -- public interface -----------------------------------------------------------------
    def _eval(self, t, name="t"):
        # float64 on the CPU (Apple's MPS has no float64); results go back to t's device and dtype
        t = _check.as_time(t, name)
        a, s = self._alpha_sigma(t.detach().to("cpu", torch.float64))
        back = lambda v: v.to(device=t.device, dtype=t.dtype)  # noqa: E731
        return back, a, s

    def alpha(self, t) -> torch.Tensor:
        """Signal coefficient alpha_t of x_t = alpha_t x_0 + sigma_t eps, Section 1.2."""
        back, a, _ = self._eval(t)
        return back(a)

    def sigma(self, t) -> torch.Tensor:
        """Noise standard deviation sigma_t of x_t = alpha_t x_0 + sigma_t eps, Section 1.2."""
        back, _, s = self._eval(t)
        return back(s)

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Both coefficients at once, ``(alpha_t, sigma_t)``, each of shape (B,). Section 1.2."""
        back, a, s = self._eval(t)
        return back(a), back(s)

    def snr(self, t) -> torch.Tensor:
        """Signal-to-noise ratio SNR(t) = alpha_t^2 / sigma_t^2 (Section 1.4)."""
        back, a, s = self._eval(t)
        return back(a**2 / s**2)

    def log_snr(self, t) -> torch.Tensor:
        """Log signal-to-noise ratio lambda_t = log(alpha_t^2 / sigma_t^2) (Section 1.4)."""
        back, a, s = self._eval(t)
        return back(2 * torch.log(a) - 2 * torch.log(s))

    def t_from_log_snr(self, lam, iters: int = 60) -> torch.Tensor:
        """Times t in [0, 1] with log_snr(t) = lam, by bisection (log-SNR falls with t). Section 1.4.

        Used to space sampling steps evenly in log-SNR (Chapter 4). Returns float64, shape (B,).
        """
        lam = torch.as_tensor(lam, dtype=torch.float64).reshape(-1)
        if torch.isnan(lam).any():
            raise ValueError("lam must not contain NaN")
        lo, hi = torch.zeros_like(lam), torch.ones_like(lam)
        for _ in range(iters):
            mid = (lo + hi) / 2
            a, s = self._alpha_sigma(mid)
            later = 2 * torch.log(a) - 2 * torch.log(s) > lam  # the target lies after mid
            lo, hi = torch.where(later, mid, lo), torch.where(later, hi, mid)
        return (lo + hi) / 2

    def derivatives(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Time derivatives ``(d alpha_t / dt, d sigma_t / dt)``, by autograd in float64.

        Used by the velocity of a probability path, u_t = alpha_t' x_0 + sigma_t' eps.
        """
        t = _check.as_time(t)
        t64 = t.detach().to("cpu", torch.float64).requires_grad_(True)
        with torch.enable_grad():
            a, s = self._alpha_sigma(t64)
            # a coefficient that does not depend on t (VE's alpha = 1) has derivative 0
            da = torch.autograd.grad(a.sum(), t64, retain_graph=True)[0] if a.requires_grad else torch.zeros_like(t64)
            ds = torch.autograd.grad(s.sum(), t64)[0] if s.requires_grad else torch.zeros_like(t64)
        return da.to(device=t.device, dtype=t.dtype), ds.to(device=t.device, dtype=t.dtype)

    def times(self, T: int) -> torch.Tensor:
        """The T + 1 grid times t_k = k / T of a T-step chain, in float64."""
        T = _check.positive_int(T, "T")
        return torch.arange(T + 1, dtype=torch.float64) / T

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class VPSchedule(Schedule):
    """A variance-preserving schedule: sigma_t^2 = 1 - alpha_bar_t (Section 1.3).

    Subclasses implement ``_alpha_bar(t64)``.
    """

    variance_preserving = True
    alpha_bar_min = ALPHA_BAR_MIN  # floor of alpha_bar at t = 1 (0 where the schedule needs none)

    def _alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _alpha_bar_floored(self, t):
        # an affine floor rather than a clamp: smooth in t, so ODE solvers keep their order
        floor = self.alpha_bar_min
        return floor + (1.0 - floor) * self._alpha_bar(t).clamp(0.0, 1.0)

    def _alpha_sigma(self, t):
        ab = self._alpha_bar_floored(t)
        return ab.sqrt(), (1 - ab).sqrt()

    def alpha_bar(self, t) -> torch.Tensor:
        """alpha_bar_t = alpha_t^2, the fraction of the signal's variance left at time t, Section 1.3."""
        t = _check.as_time(t)
        return self._alpha_bar_floored(t.detach().to("cpu", torch.float64)).to(device=t.device, dtype=t.dtype)

    def alpha_bars(self, T: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Table of alpha_bar_k = alpha_bar(k / T) for k = 0..T, shape (T + 1,).

        Entry k belongs to step k, so ``alpha_bars(T)[0]`` is the clean data's 1.
        """
        t = self.times(T)
        return self._alpha_bar_floored(t).to(dtype)

    def betas(self, T: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Table of per-step variances beta_k = 1 - alpha_bar_k / alpha_bar_{k-1}, shape (T + 1,).

        ``betas(T)[k]`` is beta_k of the Markov chain q(x_k | x_{k-1}) = N(sqrt(1 - beta_k) x_{k-1},
        beta_k I) (Section 1.1); entry 0 is 0 by convention. The product of the
        (1 - beta_k) recovers ``alpha_bars(T)``, Section 1.3.
        """
        ab = self.alpha_bars(T, dtype=torch.float64)
        b = torch.zeros_like(ab)
        b[1:] = 1 - ab[1:] / ab[:-1]
        return b.to(dtype)


class LinearSchedule(VPSchedule):
    """DDPM's linear schedule in continuous time (Ho et al., 2020; Song et al., 2021).

    beta(t) = beta_min + t (beta_max - beta_min) is the rate of the VP SDE, and

        alpha_bar(t) = exp(-(beta_min t + (beta_max - beta_min) t^2 / 2)).

    With T steps, beta_k is close to beta(k / T) / T; the defaults 0.1 and 20 reproduce
    DDPM's betas from 1e-4 to 0.02 for T = 1000. Section 1.3.
    """

    name = "linear"
    alpha_bar_min = 0.0  # alpha_bar(1) = exp(-10.05) > 0 already: no floor

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = _check.finite_positive(beta_min, "beta_min")
        self.beta_max = _check.finite_positive(beta_max, "beta_max")
        if self.beta_max <= self.beta_min:
            raise ValueError(f"beta_max must be greater than beta_min, got beta_min={beta_min}, beta_max={beta_max}")

    def _alpha_bar(self, t):
        return torch.exp(-(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2))


class CosineSchedule(VPSchedule):
    """The cosine schedule of Nichol & Dhariwal (2021). Section 1.3.

        alpha_bar(t) = f(t) / f(0),    f(t) = cos^2( (t + s) / (1 + s) * pi / 2 ),

    with a small offset s so that beta near t = 0 is not too small. alpha_bar reaches 0 at
    t = 1; it is floored at ``ALPHA_BAR_MIN`` = 1e-4 there (the paper clips beta at 0.999 instead).
    """

    name = "cosine"

    def __init__(self, s: float = 0.008):
        self.s = _check.finite_positive(s, "s")

    def _alpha_bar(self, t):
        f = lambda u: torch.cos((u + self.s) / (1 + self.s) * math.pi / 2) ** 2  # noqa: E731
        return f(t) / f(torch.zeros_like(t))


class SigmoidSchedule(VPSchedule):
    """A sigmoid schedule (Jabri et al., 2023; Chen, 2023). Section 1.3.

        alpha_bar(t) = (sigmoid(end / tau) - sigmoid((start + t (end - start)) / tau))
                       / (sigmoid(end / tau) - sigmoid(start / tau)).

    The temperature tau sets how long the schedule lingers at high and low noise.
    """

    name = "sigmoid"

    def __init__(self, start: float = -3.0, end: float = 3.0, tau: float = 1.0):
        for name, v in (("start", start), ("end", end)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if not end > start:
            raise ValueError(f"end must be greater than start, got start={start!r}, end={end!r}")
        self.start, self.end = float(start), float(end)
        self.tau = _check.finite_positive(tau, "tau")

    def _alpha_bar(self, t):
        sig = lambda u: torch.sigmoid(torch.as_tensor(u, dtype=torch.float64) / self.tau)  # noqa: E731
        v_start, v_end = sig(self.start), sig(self.end)
        return (v_end - sig(self.start + t * (self.end - self.start))) / (v_end - v_start)


class VESchedule(Schedule):
    """Variance-exploding schedule (Song & Ermon, 2019; Song et al., 2021). Section 1.5.

        x_t = x_0 + sigma(t) eps,    sigma(t) = sigma_min (sigma_max / sigma_min)^t,

    so alpha_t = 1: the signal is never shrunk, the noise grows geometrically instead.
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min = _check.finite_positive(sigma_min, "sigma_min")
        self.sigma_max = _check.finite_positive(sigma_max, "sigma_max")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"sigma_max must be greater than sigma_min, got sigma_min={sigma_min}, sigma_max={sigma_max}"
            )

    def _alpha_sigma(self, t):
        s = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        return torch.ones_like(t), s


class FlowSchedule(Schedule):
    """The linear (rectified-flow) path x_t = (1 - t) x_0 + t eps (Lipman et al., 2023; Liu et al., 2023).

    Neither variance preserving nor exploding: the variance (1 - t)^2 + t^2 dips at t = 1/2.
    Flow matching (Chapter 5) uses it; here it is one more schedule. Section 1.5.
    """

    name = "flow"

    # alpha_1 = 0 and sigma_0 = 0 exactly: converting eps to x0 at t = 1 (or x0 to eps at
    # t = 0) divides by zero, but the velocity, the path's natural target, converts to and
    # from x0 and eps everywhere (the determinant alpha sigma' - sigma alpha' is 1).

    def _alpha_sigma(self, t):
        return 1 - t, t.clone()


SCHEDULES = {
    "linear": LinearSchedule,
    "cosine": CosineSchedule,
    "sigmoid": SigmoidSchedule,
    "ve": VESchedule,
    "flow": FlowSchedule,
}


def get_schedule(name: str, **kwargs) -> Schedule:
    """Build a schedule by name: ``"linear"``, ``"cosine"``, ``"sigmoid"`` (Section 1.3), ``"ve"`` or ``"flow"`` (Section 1.5)."""
    _check.choice(name, "name", SCHEDULES)
    return SCHEDULES[name](**kwargs)


def expand_to(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample values of shape (B,) to (B, 1, ..., 1) so they broadcast against x (Section 1.2)."""
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1))).to(device=x.device, dtype=x.dtype)  # (B, 1, ..., 1)


def extract(table: torch.Tensor, k: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Index a per-step table at integer steps k (shape (B,)) and reshape to broadcast against x.

    ``extract(schedule.betas(T), k, x)`` is beta_k as a (B, 1, ..., 1) tensor on x's device.
    Section 1.1.
    """
    if not isinstance(k, torch.Tensor) or k.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"k must be an integer tensor of steps, got {type(k).__name__}"
                        + (f" of dtype {k.dtype}" if isinstance(k, torch.Tensor) else ""))
    if k.numel() and (k.min() < 0 or k.max() >= table.shape[0]):
        raise ValueError(f"k must lie in [0, {table.shape[0] - 1}], got values in [{k.min().item()}, {k.max().item()}]")
    return expand_to(table.to(x.device)[k.to(x.device)], x)  # (B, 1, ..., 1)

"""Noise schedules: how much signal and noise the forward process keeps at time t.

Every schedule describes the Gaussian marginal of the forward process (Section 1.2)

    x_t = alpha_t * x_0 + sigma_t * eps,        eps ~ N(0, I),        t in [0, 1],

through two functions ``alpha(t)`` and ``sigma(t)``. Derived quantities are shared:

    SNR(t)     = alpha_t^2 / sigma_t^2                     (Section 1.4)
    log_snr(t) = 2 log alpha_t - 2 log sigma_t

Variance-preserving (VP) schedules set ``sigma_t^2 = 1 - alpha_bar_t`` and
``alpha_t = sqrt(alpha_bar_t)``; they are defined by ``alpha_bar(t)`` alone
(Section 1.3). For discrete use, a T-step chain takes the times ``t_k = k / T``
(k = 0..T), so

    alpha_bar_k = alpha_bar(k / T),    beta_k = 1 - alpha_bar_k / alpha_bar_{k-1}.

Every quantity has a closed form evaluated on t's own device and in t's own dtype (half
precision is computed in float32), written so that float32 keeps its accuracy where a
naive formula would cancel (1 - alpha_bar near t = 0 uses expm1, differences of cosines
and sigmoids use product forms). Nothing is moved to the host and nothing needs float64,
which Apple's MPS lacks; a Python float is a double and is evaluated in float64 on the
CPU. The discrete tables (``betas``, ``alpha_bars``) are computed once in float64 and
cached.
"""

from __future__ import annotations

import math

import torch

from . import _check

# Smallest alpha_bar of the cosine and sigmoid schedules, whose alpha_bar reaches
# exactly 0 at t = 1. They use ALPHA_BAR_MIN + (1 - ALPHA_BAR_MIN) alpha_bar(t): smooth
# in t, alpha_bar(0) still 1, and log-SNR at t = 1 about -9.2, near where DDPM's linear
# schedule ends (-10.1). Without a floor alpha_1 = 0, and the first step of a sampler
# from t = 1 would divide a model's eps error by alpha_1 (x0 = (x - sigma eps) / alpha);
# even a floor of 1e-8 amplifies it ten-thousandfold.
ALPHA_BAR_MIN = 1e-4


_HALF = (torch.float16, torch.bfloat16)


def _work(t: torch.Tensor) -> torch.Tensor:
    """t in the dtype a schedule computes in: its own, or float32 for half precision."""
    return t.float() if t.dtype in _HALF else t


class Schedule:
    """A forward process x_t = alpha(t) x_0 + sigma(t) eps (Section 1.2).

    Subclasses implement closed forms on a floating tensor of times in [0, 1], on its
    device and in its dtype: ``_alpha_sigma(t)`` and ``_derivatives(t)``, and where they
    can a stable ``_log_snr(t)`` and the inverse ``_t_from_log_snr(lam)``. The public
    methods validate their argument once and call these; the rest of dmlib calls them
    directly.
    """

    name = "schedule"
    variance_preserving = False

    # -- closed forms (internal: t is a valid floating tensor) -------------------------
    def _alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _derivatives(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _log_snr(self, t: torch.Tensor) -> torch.Tensor:
        a, s = self._alpha_sigma(t)
        return 2 * torch.log(a) - 2 * torch.log(s)

    def _t_from_log_snr(self, lam: torch.Tensor, iters: int = 60) -> torch.Tensor:
        # bisection, for a schedule without a closed-form inverse (log-SNR falls with t)
        lo, hi = torch.zeros_like(lam), torch.ones_like(lam)
        for _ in range(iters):
            mid = (lo + hi) / 2
            later = self._log_snr(mid) > lam  # the target lies after mid
            lo, hi = torch.where(later, mid, lo), torch.where(later, hi, mid)
        return (lo + hi) / 2

    def _sde(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # f = alpha'/alpha and g^2 = (sigma^2)' - 2 f sigma^2 (Section 4.1)
        a, s = self._alpha_sigma(t)
        da, ds = self._derivatives(t)
        f = da / a
        return f, (2 * s * (ds - f * s)).clamp_min(0.0)

    # -- public interface --------------------------------------------------------------
    def _eval(self, fn, t, name="t"):
        t = _check.as_time(t, name)
        out = fn(_work(t))
        if isinstance(out, tuple):
            return tuple(v.to(t.dtype) for v in out)
        return out.to(t.dtype)

    def alpha(self, t) -> torch.Tensor:
        """Signal coefficient alpha_t of x_t = alpha_t x_0 + sigma_t eps, Section 1.2.
        """
        return self._eval(lambda u: self._alpha_sigma(u)[0], t)

    def sigma(self, t) -> torch.Tensor:
        """Noise standard deviation sigma_t of x_t = alpha_t x_0 + sigma_t eps,
        Section 1.2."""
        return self._eval(lambda u: self._alpha_sigma(u)[1], t)

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Both coefficients at once, ``(alpha_t, sigma_t)``, each of shape (B,).
        Section 1.2."""
        return self._eval(self._alpha_sigma, t)

    def snr(self, t) -> torch.Tensor:
        """Signal-to-noise ratio SNR(t) = alpha_t^2 / sigma_t^2 (Section 1.4)."""
        return self._eval(lambda u: torch.exp(self._log_snr(u)), t)

    def log_snr(self, t) -> torch.Tensor:
        """Log signal-to-noise ratio lambda_t = log(alpha_t^2 / sigma_t^2)
        (Section 1.4)."""
        return self._eval(self._log_snr, t)

    def t_from_log_snr(self, lam) -> torch.Tensor:
        """The time t in [0, 1] with log_snr(t) = lam, the inverse of :meth:`log_snr`
        (Section 1.4).

        In closed form where the schedule has one (all of the book's do), by bisection
        otherwise. Values of lam outside the schedule's range give t = 0 or 1. Used to
        space sampling steps evenly in log-SNR (Chapter 4). A Python number or list
        gives float64.
        """
        if not isinstance(lam, torch.Tensor):
            lam = torch.as_tensor(lam, dtype=torch.float64)
        if not lam.is_floating_point():
            raise TypeError(
                "lam must be a floating tensor of log-SNR values, "
                f"got dtype {lam.dtype}"
            )
        lam = lam.reshape(-1)
        if torch.isnan(lam).any():
            raise ValueError("lam must not contain NaN")
        return self._t_from_log_snr(_work(lam)).clamp(0.0, 1.0).to(lam.dtype)

    def derivatives(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Time derivatives ``(d alpha_t / dt, d sigma_t / dt)`` in closed form
        (Section 1.7).

        Used by the velocity of a probability path, u_t = alpha_t' x_0 + sigma_t' eps,
        and by the SDE of Chapter 4. (The tests check them against automatic
        differentiation.)
        """
        return self._eval(self._derivatives, t)

    def times(self, T: int) -> torch.Tensor:
        """The T + 1 grid times t_k = k / T of a T-step chain, in float64."""
        T = _check.positive_int(T, "T")
        return torch.arange(T + 1, dtype=torch.float64) / T

    def __repr__(self) -> str:
        params = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_")
        )
        return f"{type(self).__name__}({params})"


class VPSchedule(Schedule):
    """A variance-preserving schedule: sigma_t^2 = 1 - alpha_bar_t (Section 1.3).

    Subclasses implement ``_raw(t) -> (alpha_bar, 1 - alpha_bar, d alpha_bar / dt)``,
    the second in a form that keeps its accuracy near t = 0, and
    ``_t_from_raw(ab, one_minus_ab)``, its inverse. Every other quantity follows from
    these three in closed form.
    """

    variance_preserving = True
    # floor of alpha_bar at t = 1 (0 where the schedule needs none)
    alpha_bar_min = ALPHA_BAR_MIN

    def _raw(self, t):
        raise NotImplementedError

    def _t_from_raw(self, ab, one_minus_ab):
        raise NotImplementedError

    def _floored(self, t):
        # an affine floor rather than a clamp: smooth in t,
        # so ODE solvers keep their order
        m = self.alpha_bar_min
        ab, one_minus_ab, d_ab = self._raw(t)
        return (
            m + (1.0 - m) * ab.clamp(0.0, 1.0),
            (1.0 - m) * one_minus_ab.clamp(0.0, 1.0),
            (1.0 - m) * d_ab,
        )

    def _alpha_sigma(self, t):
        ab, one_minus_ab, _ = self._floored(t)
        return ab.sqrt(), one_minus_ab.sqrt()

    def _derivatives(self, t):
        ab, one_minus_ab, d_ab = self._floored(t)
        # alpha' and sigma' (inf at t = 0)
        return d_ab / (2 * ab.sqrt()), -d_ab / (2 * one_minus_ab.sqrt())

    def _log_snr(self, t):
        ab, one_minus_ab, _ = self._floored(t)
        return torch.log(ab) - torch.log(one_minus_ab)

    def _sde(self, t):
        ab, _, d_ab = self._floored(t)
        # f = alpha_bar'/(2 alpha_bar), g^2 = beta(t) = -alpha_bar'/alpha_bar
        return d_ab / (2 * ab), (-d_ab / ab).clamp_min(0.0)

    def _t_from_log_snr(self, lam):
        # alpha_bar = sigmoid(lam), then undo the floor: raw = (alpha_bar - m) / (1 - m)
        m = self.alpha_bar_min
        ab = ((torch.sigmoid(lam) - m) / (1.0 - m)).clamp(0.0, 1.0)
        one_minus_ab = (torch.sigmoid(-lam) / (1.0 - m)).clamp(0.0, 1.0)
        return self._t_from_raw(ab, one_minus_ab)

    def alpha_bar(self, t) -> torch.Tensor:
        """alpha_bar_t = alpha_t^2, the fraction of the signal's variance left at time
        t, Section 1.3."""
        return self._eval(lambda u: self._floored(u)[0], t)

    def _tables(self, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        # (alpha_bar_k, beta_k) for k = 0..T in float64 on the CPU, computed once per T
        cache = self.__dict__.setdefault("_table_cache", {})
        if T not in cache:
            ab = self._floored(self.times(T))[0]
            b = torch.zeros_like(ab)
            # 1 - ab_k / ab_{k-1}, no cancellation
            b[1:] = -torch.expm1(torch.log(ab[1:]) - torch.log(ab[:-1]))
            cache[T] = (ab, b)
        return cache[T]

    def alpha_bars(self, T: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Table of alpha_bar_k = alpha_bar(k / T) for k = 0..T, shape (T + 1,).

        Entry k belongs to step k, so ``alpha_bars(T)[0]`` is the clean data's 1.
        Computed once per T in float64 (each call returns a fresh copy).
        """
        return self._tables(_check.positive_int(T, "T"))[0].to(dtype, copy=True)

    def betas(self, T: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Table of per-step variances beta_k = 1 - alpha_bar_k / alpha_bar_{k-1},
        shape (T + 1,).

        ``betas(T)[k]`` is beta_k of the Markov chain
        q(x_k | x_{k-1}) = N(sqrt(1 - beta_k) x_{k-1}, beta_k I) (Section 1.1); entry 0
        is 0 by convention. The product of the (1 - beta_k) recovers ``alpha_bars(T)``,
        Section 1.3.
        """
        return self._tables(_check.positive_int(T, "T"))[1].to(dtype, copy=True)


class LinearSchedule(VPSchedule):
    """DDPM's linear schedule in continuous time (Ho et al., 2020; Song et al., 2021).

    beta(t) = beta_min + t (beta_max - beta_min) is the rate of the VP SDE, and

        alpha_bar(t) = exp(-int_0^t beta)
                     = exp(-beta_min t - (beta_max - beta_min) t^2 / 2).

    With T steps, beta_k is close to beta(k / T) / T; the defaults 0.1 and 20 reproduce
    DDPM's betas from 1e-4 to 0.02 for T = 1000. Section 1.3.
    """

    name = "linear"
    alpha_bar_min = 0.0  # alpha_bar(1) = exp(-10.05) > 0 already: no floor

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = _check.finite_positive(beta_min, "beta_min")
        self.beta_max = _check.finite_positive(beta_max, "beta_max")
        if self.beta_max <= self.beta_min:
            raise ValueError(
                "beta_max must be greater than beta_min, "
                f"got beta_min={beta_min}, beta_max={beta_max}"
            )

    def _raw(self, t):
        B_t = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
        beta = self.beta_min + (self.beta_max - self.beta_min) * t
        ab = torch.exp(-B_t)
        return ab, -torch.expm1(-B_t), -beta * ab

    def _t_from_raw(self, ab, one_minus_ab):
        # B = -log(alpha_bar) (from 1 - alpha_bar where alpha_bar is near 1), then the
        # root of (beta_max - beta_min) t^2 / 2 + beta_min t - B = 0 in a form without
        # cancellation
        B_t = torch.where(ab < 0.5, -torch.log(ab), -torch.log1p(-one_minus_ab))
        d = self.beta_max - self.beta_min
        return 2 * B_t / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * d * B_t))


class CosineSchedule(VPSchedule):
    """The cosine schedule of Nichol & Dhariwal (2021). Section 1.3.

        alpha_bar(t) = cos^2((t + s) / (1 + s) * pi / 2)
                       / cos^2(s / (1 + s) * pi / 2),

    where the argument ``s`` (Nichol & Dhariwal's name; the book writes its value,
    0.008) is a small offset in t so that beta near t = 0 is not too small. alpha_bar
    reaches 0 at t = 1; it is floored at ``ALPHA_BAR_MIN`` = 1e-4 there (the paper clips
    beta at 0.999 instead).
    """

    name = "cosine"

    def __init__(self, s: float = 0.008):
        self.s = _check.finite_positive(s, "s")

    def _phi(self, t):
        return (t + self.s) / (1 + self.s) * (math.pi / 2)

    def _raw(self, t):
        cos2_phi0 = math.cos(self._phi(0.0)) ** 2
        rate = math.pi / (2 * (1 + self.s))  # d phi_t / dt
        # through pi/2 - phi_t, exact near t = 1
        cos_phi, sin_phi = torch.sin((1 - t) * rate), torch.cos((1 - t) * rate)
        ab = cos_phi**2 / cos2_phi0
        # cos^2 phi_0 - cos^2 phi_t = sin(phi_t - phi_0) sin(phi_t + phi_0),
        # with phi_t - phi_0 = t * rate
        one_minus_ab = (
            torch.sin(t * rate) * torch.sin(t * rate + 2 * self._phi(0.0)) / cos2_phi0
        )
        d_ab = -2 * sin_phi * cos_phi * rate / cos2_phi0  # <= 0 on [0, 1]
        return ab, one_minus_ab, d_ab

    def _t_from_raw(self, ab, one_minus_ab):
        # cos phi = sqrt(ab) cos phi_0 and
        # sin^2 phi = sin^2 phi_0 + (1 - ab) cos^2 phi_0
        phi0 = self._phi(0.0)
        phi = torch.atan2(
            torch.sqrt(math.sin(phi0) ** 2 + one_minus_ab * math.cos(phi0) ** 2),
            ab.sqrt() * math.cos(phi0),
        )
        return phi * (2 / math.pi) * (1 + self.s) - self.s


class SigmoidSchedule(VPSchedule):
    """A sigmoid schedule (Jabri et al., 2023; Chen, 2023). Section 1.3.

        alpha_bar(t) = (sig(end / tau) - sig((start + t (end - start)) / tau))
                       / (sig(end / tau) - sig(start / tau)),

    with sig the logistic function. ``start`` and ``end`` are the book's a and b; the
    temperature ``tau`` (the book's zeta) sets how long the schedule lingers at high and
    low noise.
    """

    name = "sigmoid"

    def __init__(self, start: float = -3.0, end: float = 3.0, tau: float = 1.0):
        for name, v in (("start", start), ("end", end)):
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
            ):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if not end > start:
            raise ValueError(
                f"end must be greater than start, got start={start!r}, end={end!r}"
            )
        self.start, self.end = float(start), float(end)
        self.tau = _check.finite_positive(tau, "tau")

    def _raw(self, t):
        rate = (self.end - self.start) / self.tau  # d u_t / dt
        u0, u1 = self.start / self.tau, self.end / self.tau
        u = u0 + t * rate
        # sigmoid(a) - sigmoid(b) = sinh((a - b) / 2) / (2 cosh(a / 2) cosh(b / 2)), in
        # logs so that neither cancels (t near 0 or 1) nor overflows (a small tau):
        # u_end - u_t and u_t - u_start are formed from 1 - t and t, which float32 holds
        # exactly
        const = torch.full_like(t, rate / 2)
        ab = torch.exp(
            _log_sinh((1 - t) * rate / 2)
            - _log_sinh(const)
            + _log_cosh(torch.full_like(t, u0 / 2))
            - _log_cosh(u / 2)
        )
        one_minus_ab = torch.exp(
            _log_sinh(t * rate / 2)
            - _log_sinh(const)
            + _log_cosh(torch.full_like(t, u1 / 2))
            - _log_cosh(u / 2)
        )
        # sigmoid' = s (1 - s)
        d_ab = (
            -torch.sigmoid(u) * torch.sigmoid(-u) * rate / (_sigmoid(u1) - _sigmoid(u0))
        )
        return ab, one_minus_ab, d_ab

    def _t_from_raw(self, ab, one_minus_ab):
        s0, s1 = _sigmoid(self.start / self.tau), _sigmoid(self.end / self.tau)
        p = torch.where(  # sigmoid(u_t)
            one_minus_ab < 0.5, s0 + one_minus_ab * (s1 - s0), s1 - ab * (s1 - s0)
        )
        u = torch.log(p) - torch.log1p(-p)
        return (u * self.tau - self.start) / (self.end - self.start)


def _sigmoid(u: float) -> float:
    return 0.5 * (1 + math.tanh(u / 2))  # no overflow for large |u|


def _log_sinh(x: torch.Tensor) -> torch.Tensor:
    # log sinh(x) for x >= 0: x - log 2 + log(1 - e^{-2x}); -inf at x = 0
    return x - math.log(2) + torch.log(-torch.expm1(-2 * x))


def _log_cosh(x: torch.Tensor) -> torch.Tensor:
    # log cosh(x) = |x| - log 2 + log(1 + e^{-2|x|})
    return x.abs() - math.log(2) + torch.log1p(torch.exp(-2 * x.abs()))


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
                "sigma_max must be greater than sigma_min, "
                f"got sigma_min={sigma_min}, sigma_max={sigma_max}"
            )

    def _log_sigma(self, t):
        return math.log(self.sigma_min) + t * math.log(self.sigma_max / self.sigma_min)

    def _alpha_sigma(self, t):
        return torch.ones_like(t), torch.exp(self._log_sigma(t))

    def _derivatives(self, t):
        s = torch.exp(self._log_sigma(t))
        return torch.zeros_like(t), s * math.log(self.sigma_max / self.sigma_min)

    def _log_snr(self, t):
        return -2 * self._log_sigma(t)

    def _t_from_log_snr(self, lam):
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        return (-lam / 2 - math.log(self.sigma_min)) / log_ratio


class FlowSchedule(Schedule):
    """The linear (rectified-flow) path x_t = (1 - t) x_0 + t eps (Lipman et al., 2023;
    Liu et al., 2023).

    Neither variance preserving nor exploding: the variance (1 - t)^2 + t^2 dips at
    t = 1/2. Flow matching (Chapter 5) uses it; here it is one more schedule.
    Section 1.5.
    """

    name = "flow"

    # alpha_1 = 0 and sigma_0 = 0 exactly: converting eps to x0 at t = 1 (or x0 to eps
    # at t = 0) divides by zero, but the velocity, the path's natural target, converts
    # to and from x0 and eps everywhere (the determinant alpha sigma' - sigma alpha'
    # is 1).

    def _alpha_sigma(self, t):
        return 1 - t, t.clone()

    def _derivatives(self, t):
        return torch.full_like(t, -1.0), torch.ones_like(t)

    def _t_from_log_snr(self, lam):
        return torch.sigmoid(-lam / 2)  # (1 - t) / t = exp(lam / 2)


SCHEDULES = {
    "linear": LinearSchedule,
    "cosine": CosineSchedule,
    "sigmoid": SigmoidSchedule,
    "ve": VESchedule,
    "flow": FlowSchedule,
}


def get_schedule(name: str, **kwargs) -> Schedule:
    """Build a schedule by name: ``"linear"``, ``"cosine"``, ``"sigmoid"``
    (Section 1.3), ``"ve"`` or ``"flow"`` (Section 1.5)."""
    _check.choice(name, "name", SCHEDULES)
    return SCHEDULES[name](**kwargs)


def sde_coefficients(schedule: Schedule, t) -> tuple[torch.Tensor, torch.Tensor]:
    """Drift and squared diffusion of the forward SDE dx = f(t) x dt + g(t) dW
    (Section 4.1):

        f(t)   = alpha_t' / alpha_t,
        g(t)^2 = (sigma_t^2)' - 2 f(t) sigma_t^2 = -sigma_t^2 lambda_t'.

    Its marginals are those of x_t = alpha_t x_0 + sigma_t eps. For a VP schedule
    f = -beta(t)/2 and g^2 = beta(t) = -alpha_bar_t' / alpha_bar_t (finite at t = 0);
    for VE, f = 0 and g^2 = (sigma_t^2)'. Returns ``(f, g2)``, each of shape (B,) in
    t's dtype.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(
            "schedule must be a dmlib.schedules.Schedule, "
            f"got {type(schedule).__name__}"
        )
    return schedule._eval(schedule._sde, t)


def expand_to(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample values of shape (B,) to (B, 1, ..., 1) so they broadcast
    against x (Section 1.2)."""
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1))).to(  # (B, 1, ..., 1)
        device=x.device, dtype=x.dtype
    )


def extract(table: torch.Tensor, k: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Index a per-step table at integer steps k (shape (B,)) and reshape to broadcast
    against x.

    ``extract(schedule.betas(T), k, x)`` is beta_k as a (B, 1, ..., 1) tensor on x's
    device. Section 1.1.
    """
    if not isinstance(k, torch.Tensor) or k.dtype not in (torch.int32, torch.int64):
        raise TypeError(
            f"k must be an integer tensor of steps, got {type(k).__name__}"
            + (f" of dtype {k.dtype}" if isinstance(k, torch.Tensor) else "")
        )
    if k.dim() != 1 or k.shape[0] != x.shape[0]:
        raise ValueError(
            f"k must have shape ({x.shape[0]},), one step per sample of x, "
            f"got shape {tuple(k.shape)}"
        )
    if k.numel() and (k.min() < 0 or k.max() >= table.shape[0]):
        raise ValueError(
            f"k must lie in [0, {table.shape[0] - 1}], "
            f"got values in [{k.min().item()}, {k.max().item()}]"
        )
    return expand_to(table.to(x.device)[k.to(x.device)], x)  # (B, 1, ..., 1)

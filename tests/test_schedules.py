"""dmlib.schedules: VP (linear, cosine, sigmoid), VE and flow schedules, tables and helpers.

Float64 identities are checked to ~1e-12: a schedule evaluated in float64 leaves only a few
rounding errors between the two sides. Float32 evaluation (on t's own device, as on a GPU) is
checked against float64 with the accuracy float32 allows.
"""

import math

import numpy as np
import pytest
import torch

from dmlib import schedules as S

VP_NAMES = ("linear", "cosine", "sigmoid")
ALL_NAMES = VP_NAMES + ("ve", "flow")
GRID = torch.linspace(0, 1, 2001, dtype=torch.float64)
INTERIOR = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)  # avoids sigma=0 at t=0



def vp(name):
    return S.get_schedule(name)


def floored(ab, floor=S.ALPHA_BAR_MIN):
    """The documented floor of the cosine and sigmoid schedules: alpha_bar = F + (1 - F) alpha_bar_raw."""
    return floor + (1 - floor) * ab


# -- VP schedules -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", VP_NAMES)
def test_alpha_bar_starts_at_one(name):
    sch = vp(name)
    assert sch.alpha_bar(0.0).item() == 1.0
    assert sch.alpha(0.0).item() == 1.0 and sch.sigma(0.0).item() == 0.0
    assert sch.alpha_bars(10)[0].item() == 1.0


@pytest.mark.parametrize("name", VP_NAMES)
def test_alpha_bar_strictly_decreasing(name):
    ab = vp(name).alpha_bar(GRID)
    assert (ab[1:] < ab[:-1]).all()
    assert ((ab > 0) & (ab <= 1)).all()


@pytest.mark.parametrize("name", VP_NAMES)
def test_vp_identities(name):
    sch = vp(name)
    a, s = sch.alpha_sigma(GRID)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(a), rtol=0, atol=1e-12)
    torch.testing.assert_close(a**2, sch.alpha_bar(GRID), rtol=1e-12, atol=0)
    torch.testing.assert_close(sch.alpha(GRID), a, rtol=0, atol=0)
    torch.testing.assert_close(sch.sigma(GRID), s, rtol=0, atol=0)
    assert sch.variance_preserving


@pytest.mark.parametrize("name", ALL_NAMES)
def test_log_snr_strictly_decreasing(name):
    lam = S.get_schedule(name).log_snr(INTERIOR)
    assert torch.isfinite(lam).all()
    assert (lam[1:] < lam[:-1]).all()


@pytest.mark.parametrize("name", ALL_NAMES)
def test_snr_is_exp_log_snr(name):
    sch = S.get_schedule(name)
    a, s = sch.alpha_sigma(INTERIOR)
    torch.testing.assert_close(sch.snr(INTERIOR), torch.exp(sch.log_snr(INTERIOR)), rtol=1e-11, atol=0)
    torch.testing.assert_close(sch.snr(INTERIOR), a**2 / s**2, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ("cosine", "sigmoid"))
def test_alpha_bar_floored_at_one(name):
    # alpha_bar(1) is exactly 0 for these two; the floor keeps sigma / alpha finite.
    sch = vp(name)
    assert sch.alpha_bar(1.0).item() == pytest.approx(S.ALPHA_BAR_MIN, rel=1e-6)
    a, s = sch.alpha_sigma(1.0)
    assert torch.isfinite(s / a).all() and torch.isfinite(sch.log_snr(1.0)).all()
    floor = S.ALPHA_BAR_MIN
    assert sch.log_snr(1.0).item() == pytest.approx(math.log(floor / (1 - floor)), rel=1e-6)  # about -9.2


@pytest.mark.parametrize("name", ("cosine", "sigmoid"))
def test_alpha_bar_floor_is_smooth(name):
    # an affine floor, not a clamp: alpha_bar keeps decreasing right up to t = 1, and its
    # derivative has no jump (a clamp would make it 0 on the last stretch)
    sch = vp(name)
    t = torch.linspace(0.999, 1.0, 101, dtype=torch.float64)
    ab = sch.alpha_bar(t)
    assert (ab[1:] < ab[:-1]).all()
    da, _ = sch.derivatives(t[:-1])
    assert (da < 0).all()


# -- discrete tables ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", VP_NAMES)
@pytest.mark.parametrize("T", [10, 1000, 20000])  # 20000: the floor keeps the last betas > 0
def test_betas_table(name, T):
    sch = vp(name)
    b = sch.betas(T, dtype=torch.float64)
    ab = sch.alpha_bars(T, dtype=torch.float64)
    assert b.shape == ab.shape == (T + 1,)
    assert b[0].item() == 0.0
    assert ((b[1:] > 0) & (b[1:] < 1)).all()
    # cumprod(1 - beta) telescopes back to alpha_bar. Relative tolerance: alpha_bar_T is as
    # small as 1e-8 (cosine), and 1000 products accumulate ~1000 ulp = 2e-13 relative error.
    # atol: where beta_k is within 1e-7 of 1 (last step of cosine / sigmoid with T = 10),
    # 1 - beta_k keeps only an absolute accuracy of ~1e-16 (measured error 1.8e-18).
    torch.testing.assert_close(torch.cumprod(1 - b, 0)[1:], ab[1:], rtol=1e-10, atol=1e-16)
    torch.testing.assert_close(ab, sch.alpha_bar(sch.times(T)), rtol=0, atol=0)


def test_table_dtypes():
    sch = S.LinearSchedule()
    assert sch.betas(10).dtype == torch.float32 and sch.alpha_bars(10).dtype == torch.float32
    assert sch.betas(10, dtype=torch.float64).dtype == torch.float64
    # float32 tables are the float64 ones rounded once, not float32 computations
    torch.testing.assert_close(sch.betas(1000), sch.betas(1000, torch.float64).float(), rtol=0, atol=0)


def test_times_grid():
    t = S.LinearSchedule().times(4)
    assert t.dtype == torch.float64
    assert t.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_linear_betas_are_exact_integrals_of_beta_t():
    # alpha_bar(t) = exp(-int_0^t beta(u) du) with a linear beta(u), so
    # beta_k = 1 - exp(-int_{t_{k-1}}^{t_k} beta) = 1 - exp(-(beta(t_{k-1}) + beta(t_k)) / (2T)) exactly
    # (the trapezoid rule is exact for a linear integrand).
    # Here alpha_bar_k is accumulated from those exact per-step integrals (a different route
    # from the closed form), then floored as documented.
    T, bmin, bmax = 1000, 0.1, 20.0
    k = torch.arange(1, T + 1, dtype=torch.float64)
    beta_t = lambda u: bmin + u * (bmax - bmin)  # noqa: E731
    step_integrals = (beta_t((k - 1) / T) + beta_t(k / T)) / (2 * T)
    # linear: no floor
    ab = torch.exp(-torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(step_integrals, 0)]))
    ref = 1 - ab[1:] / ab[:-1]
    torch.testing.assert_close(S.LinearSchedule(bmin, bmax).betas(T, torch.float64)[1:], ref, rtol=1e-9, atol=0)


def test_linear_schedule_close_to_ddpm_betas():
    # DDPM (Ho et al., 2020) uses betas = linspace(1e-4, 0.02, 1000). The continuous-time linear
    # schedule gives beta_k ~ beta((k - 1/2) / T) / T - beta_k^2 / 2: measured max |difference|
    # is 2.084e-4, at k = T (0.019792 vs 0.02), and 1.0e-5 at k = 1 (1.0995e-4 vs 1e-4). The
    # tolerance sits just above the measured maximum, so a different schedule (e.g. another
    # beta_max, or an index shifted by one step, ~2e-5 per step) still fails.
    ours = S.LinearSchedule().betas(1000, torch.float64)[1:]
    ddpm = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    err = (ours - ddpm).abs()
    assert err.max().item() < 2.2e-4
    assert err[:100].max().item() < 1.2e-5  # small-noise end: the half-step offset only
    # and the end point of the chain is within 7% in alpha_bar (4.32e-5 vs 4.04e-5)
    ab_ddpm = torch.cumprod(1 - ddpm, 0)[-1]
    assert abs(S.LinearSchedule().alpha_bars(1000, torch.float64)[-1] / ab_ddpm - 1) < 0.08


def test_cosine_matches_nichol_dhariwal_numpy():
    # Nichol & Dhariwal (2021), eq. 17, written independently in NumPy.
    s = 0.008
    t = np.linspace(0, 0.999, 1000)  # below t = 1, where our clamp (their beta clip) acts
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    ref = S.ALPHA_BAR_MIN + (1 - S.ALPHA_BAR_MIN) * f(t) / f(0)  # with dmlib's documented floor
    ours = S.CosineSchedule(s).alpha_bar(torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)


def test_sigmoid_matches_numpy_formula():
    start, end, tau = -3.0, 3.0, 0.7
    t = np.linspace(0, 0.99, 100)
    sig = lambda u: 1 / (1 + np.exp(-u))  # noqa: E731
    ref = (sig(end / tau) - sig((start + t * (end - start)) / tau)) / (sig(end / tau) - sig(start / tau))
    ref = S.ALPHA_BAR_MIN + (1 - S.ALPHA_BAR_MIN) * ref  # dmlib's documented floor
    ours = S.SigmoidSchedule(start, end, tau).alpha_bar(torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-15)


def test_linear_alpha_bar_formula():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    ref = torch.exp(-(0.3 * t + 0.5 * (12.0 - 0.3) * t**2))  # linear: no floor
    torch.testing.assert_close(S.LinearSchedule(0.3, 12.0).alpha_bar(t), ref, rtol=1e-14, atol=0)


# -- dtypes ---------------------------------------------------------------------------------------
METHODS = ("alpha", "sigma", "snr", "log_snr")


@pytest.mark.parametrize("name", ALL_NAMES)
def test_output_dtype_follows_t(name):
    sch = S.get_schedule(name)
    t32 = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float32)
    for m in METHODS:
        out32 = getattr(sch, m)(t32)
        assert out32.dtype == torch.float32 and out32.shape == (3,)
        assert getattr(sch, m)(0.5).dtype == torch.float64  # a Python float is a double
        assert getattr(sch, m)(t32.double()).dtype == torch.float64
        assert getattr(sch, m)(t32.half()).dtype == torch.float16  # computed in float32, rounded once
    if sch.variance_preserving:
        assert sch.alpha_bar(t32).dtype == torch.float32 and sch.alpha_bar(0.5).dtype == torch.float64


FLOAT32_CASES = {name: (lambda n=name: S.get_schedule(n)) for name in ALL_NAMES}
FLOAT32_CASES["sigmoid, tau = 0.03"] = lambda: S.SigmoidSchedule(-3.0, 3.0, tau=0.03)  # rate 200: sinh overflows
FLOAT32_CASES["ve, wide"] = lambda: S.VESchedule(0.002, 80.0)


@pytest.mark.parametrize("name", FLOAT32_CASES)
def test_float32_agrees_with_float64(name):
    """Evaluated natively in float32 (no float64 on the device), every coefficient keeps the
    accuracy float32 allows: 1e-5 relative on alpha and sigma, 1e-4 absolute on log-SNR,
    for t in [0.001, 0.999] and on log-spaced times down to 1e-6 from either end (near t = 0,
    1 - alpha_bar needs expm1 or a product form; near t = 1, alpha_bar does)."""
    sch = FLOAT32_CASES[name]()
    ends = torch.logspace(-6, -3, 31)
    t32 = torch.cat([ends, torch.linspace(0.001, 0.999, 999), 1 - ends]).float()
    a64, s64 = sch.alpha_sigma(t32.double())  # the same times, so only the evaluation differs
    # where alpha^2 or sigma^2 falls below float32's smallest normal number (the sharp sigmoid
    # at its ends), no float32 formula can hold it: those times are left out
    keep = (a64**2 > 1e-37) & (s64**2 > 1e-37)
    t32, t64 = t32[keep], t32.double()[keep]
    assert keep.float().mean() > 0.9
    for m in ("alpha", "sigma"):
        torch.testing.assert_close(getattr(sch, m)(t32).double(), getattr(sch, m)(t64), rtol=1e-5, atol=0)
    torch.testing.assert_close(sch.log_snr(t32).double(), sch.log_snr(t64), rtol=0, atol=1e-4)
    da32, ds32 = sch.derivatives(t32)
    da64, ds64 = sch.derivatives(t64)
    torch.testing.assert_close(da32.double(), da64, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ds32.double(), ds64, rtol=1e-4, atol=1e-6)


def test_float32_check_sees_a_cancelling_formula(monkeypatch):
    """The float32 check above can fail: sigma from 1 - alpha_bar computed naively loses
    about half its digits near t = 0."""
    def naive(self, t):
        ab, _, dab = VP_RAW["linear"](self, t)
        return ab, 1 - ab, dab
    monkeypatch.setattr(S.LinearSchedule, "_raw", naive)
    with pytest.raises(AssertionError):
        test_float32_agrees_with_float64("linear")


def test_float32_check_sees_the_sigmoid_overflow(monkeypatch):
    """... and sees a sigmoid schedule whose sinh overflows for a small temperature."""
    def direct(self, t):
        rate, u0, u1 = (self.end - self.start) / self.tau, self.start / self.tau, self.end / self.tau
        u = u0 + t * rate
        span = torch.sinh(torch.full_like(t, rate / 2))
        ab = torch.sinh((1 - t) * rate / 2) / span * math.cosh(u0 / 2) / torch.cosh(u / 2)
        one_minus = torch.sinh(t * rate / 2) / span * math.cosh(u1 / 2) / torch.cosh(u / 2)
        return ab, one_minus, -torch.sigmoid(u) * (1 - torch.sigmoid(u)) * rate
    monkeypatch.setattr(S.SigmoidSchedule, "_raw", direct)
    test_float32_agrees_with_float64("sigmoid")  # fine at tau = 1
    with pytest.raises(AssertionError):
        test_float32_agrees_with_float64("sigmoid, tau = 0.03")


VP_RAW = {"linear": S.LinearSchedule._raw}


def _autograd_derivatives(sch, t64):
    """(alpha', sigma') by automatic differentiation of the closed-form alpha and sigma: the oracle."""
    t = t64.clone().requires_grad_(True)
    a, s = sch._alpha_sigma(t)
    zero = torch.zeros_like(t64)  # a coefficient that does not depend on t (VE's alpha = 1)
    da = torch.autograd.grad(a.sum(), t, retain_graph=True)[0] if a.requires_grad else zero
    ds = torch.autograd.grad(s.sum(), t)[0] if s.requires_grad else zero
    return da, ds


@pytest.mark.parametrize("name", ALL_NAMES)
def test_closed_form_derivatives_match_autograd(name):
    sch = S.get_schedule(name)
    da, ds = sch.derivatives(INTERIOR)
    ref_a, ref_s = _autograd_derivatives(sch, INTERIOR)
    torch.testing.assert_close(da, ref_a, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(ds, ref_s, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_closed_form_log_snr_and_sde_match_autograd(name):
    sch = S.get_schedule(name)
    a, s = sch.alpha_sigma(INTERIOR)
    torch.testing.assert_close(sch.log_snr(INTERIOR), 2 * torch.log(a) - 2 * torch.log(s), rtol=1e-6, atol=1e-10)
    ref_a, ref_s = _autograd_derivatives(sch, INTERIOR)
    f, g2 = S.sde_coefficients(sch, INTERIOR)
    torch.testing.assert_close(f, ref_a / a, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(g2, 2 * s * ref_s - 2 * (ref_a / a) * s**2, rtol=1e-6, atol=1e-10)


def test_closed_form_derivative_check_fails_on_a_planted_bug(monkeypatch):
    def wrong(self, t):  # d alpha_bar / dt with beta_min and beta_max swapped in beta(t)
        big_b = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
        ab = torch.exp(-big_b)
        return ab, -torch.expm1(-big_b), -(self.beta_max + (self.beta_min - self.beta_max) * t) * ab
    monkeypatch.setattr(S.LinearSchedule, "_raw", wrong)
    with pytest.raises(AssertionError):
        test_closed_form_derivatives_match_autograd("linear")


@pytest.mark.parametrize("name", VP_NAMES)
def test_vp_sde_is_finite_at_zero(name):
    f, g2 = S.sde_coefficients(S.get_schedule(name), 0.0)
    assert torch.isfinite(f).all() and torch.isfinite(g2).all() and g2.item() > 0


def test_tables_are_cached_and_copied():
    sch = S.CosineSchedule()
    b1 = sch.betas(50, dtype=torch.float64)
    b1[1] = 123.0  # a caller's edit must not reach the cache
    assert sch.betas(50, dtype=torch.float64)[1] != 123.0
    assert sch._tables(50) is sch._tables(50)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_derivatives_dtype_follows_t(name):
    sch = S.get_schedule(name)
    t32 = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float32)
    assert all(d.dtype == torch.float32 and d.shape == (3,) for d in sch.derivatives(t32))
    assert all(d.dtype == torch.float64 for d in sch.derivatives(0.5))


def test_scalar_tensor_time_becomes_shape_one():
    sch = S.CosineSchedule()
    assert sch.alpha(torch.tensor(0.5)).shape == (1,)
    assert sch.alpha(0.5).shape == (1,)


# -- VE and flow ------------------------------------------------------------------------------------
def test_ve_schedule():
    sch = S.VESchedule(0.02, 80.0)
    a, s = sch.alpha_sigma(GRID)
    assert (a == 1).all()
    torch.testing.assert_close(s[[0, -1]], torch.tensor([0.02, 80.0], dtype=torch.float64), rtol=1e-14, atol=0)
    # geometric: log sigma is linear in t
    torch.testing.assert_close(torch.log(s), math.log(0.02) + GRID * math.log(80.0 / 0.02), rtol=1e-13, atol=1e-13)
    assert not sch.variance_preserving


def test_flow_schedule():
    sch = S.FlowSchedule()
    a, s = sch.alpha_sigma(GRID)
    torch.testing.assert_close(a, 1 - GRID, rtol=0, atol=0)  # exact, including alpha_1 = 0
    torch.testing.assert_close(s, GRID, rtol=0, atol=0)
    assert sch.alpha(1.0).item() == 0.0 and sch.sigma(0.0).item() == 0.0


# -- derivatives -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_NAMES)
def test_derivatives_match_finite_differences(name):
    sch = S.get_schedule(name)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6  # central differences: truncation ~h^2 |f'''| < 1e-10, rounding ~1e-16 / h = 1e-10
    da, ds = sch.derivatives(t)
    fd_a = (sch.alpha(t + h) - sch.alpha(t - h)) / (2 * h)
    fd_s = (sch.sigma(t + h) - sch.sigma(t - h)) / (2 * h)
    scale = max(1.0, ds.abs().max().item())  # VE's sigma' reaches ~500
    torch.testing.assert_close(da, fd_a, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ds, fd_s, rtol=1e-6, atol=1e-7 * scale)


def test_derivatives_closed_forms():
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    lin = S.LinearSchedule()
    da, _ = lin.derivatives(t)
    # alpha = sqrt(ab) with ab' = -beta(t) ab: alpha' = -beta(t) ab / (2 alpha)
    ab = torch.exp(-(0.1 * t + 0.5 * 19.9 * t**2))
    ref = -(0.1 + t * 19.9) * ab / (2 * lin.alpha(t))  # the linear schedule has no floor (F = 0)
    torch.testing.assert_close(da, ref, rtol=1e-12, atol=0)
    da, ds = S.FlowSchedule().derivatives(t)
    assert da.tolist() == [-1.0, -1.0] and ds.tolist() == [1.0, 1.0]


def test_ve_derivatives_closed_form():
    # VE's alpha = 1 does not depend on t: its derivative is 0 (no autograd graph to follow)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    ve = S.VESchedule()
    da, ds = ve.derivatives(t)
    assert da.tolist() == [0.0, 0.0]
    torch.testing.assert_close(ds, ve.sigma(t) * math.log(50.0 / 0.01), rtol=1e-12, atol=0)


def test_derivatives_are_differentiable():
    # closed forms: a time that requires grad gives derivatives that do too (second derivatives)
    t = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    da, _ = S.CosineSchedule().derivatives(t)
    (dda,) = torch.autograd.grad(da.sum(), t)
    h = 1e-5
    fd = (S.CosineSchedule().derivatives(0.3 + h)[0] - S.CosineSchedule().derivatives(0.3 - h)[0]) / (2 * h)
    torch.testing.assert_close(dda, fd, rtol=1e-6, atol=0)


# -- t_from_log_snr ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_NAMES)
def test_t_from_log_snr_inverts_log_snr(name):
    sch = S.get_schedule(name)
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    t_back = sch.t_from_log_snr(sch.log_snr(t))
    assert t_back.dtype == torch.float64 and t_back.shape == t.shape
    # 60 bisection halvings leave 1e-18; float64 log-SNR (|d lambda / dt| >= 0.1 here) limits to ~1e-14
    torch.testing.assert_close(t_back, t, rtol=0, atol=1e-12)
    lam = torch.linspace(sch.log_snr(0.99).item(), sch.log_snr(0.01).item(), 7, dtype=torch.float64)
    torch.testing.assert_close(sch.log_snr(sch.t_from_log_snr(lam)), lam, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_closed_form_inverse_matches_bisection(name):
    sch = S.get_schedule(name)
    lam = sch.log_snr(torch.linspace(0.02, 0.98, 25, dtype=torch.float64))
    torch.testing.assert_close(sch.t_from_log_snr(lam), S.Schedule._t_from_log_snr(sch, lam), rtol=0, atol=1e-12)
    t32 = torch.linspace(0.01, 0.99, 50)  # float32 in, float32 out, on t's device
    back = sch.t_from_log_snr(sch.log_snr(t32))
    assert back.dtype == torch.float32
    torch.testing.assert_close(back, t32, rtol=0, atol=2e-5)


def test_t_from_log_snr_evenly_spaced_and_out_of_range():
    sch = S.CosineSchedule()
    t = sch.t_from_log_snr(torch.linspace(10.0, -10.0, 9))
    assert (t[1:] > t[:-1]).all()  # log-SNR falls with t
    # beyond the schedule's range the bisection ends at the interval's ends
    ends = sch.t_from_log_snr([100.0, -100.0])
    assert ends[0].item() < 1e-6 and ends[1].item() > 1 - 1e-12
    assert sch.t_from_log_snr(0.0).shape == (1,)  # a scalar becomes shape (1,)


def test_t_from_log_snr_rejects_nan():
    with pytest.raises(ValueError, match="lam must not contain NaN"):
        S.LinearSchedule().t_from_log_snr(torch.tensor([0.0, float("nan")]))


# -- get_schedule, extract, expand_to -------------------------------------------------------------------
@pytest.mark.parametrize("name, cls", [("linear", S.LinearSchedule), ("cosine", S.CosineSchedule),
                                       ("sigmoid", S.SigmoidSchedule), ("ve", S.VESchedule),
                                       ("flow", S.FlowSchedule)])
def test_get_schedule_by_name(name, cls):
    sch = S.get_schedule(name)
    assert type(sch) is cls and sch.name == name


def test_get_schedule_passes_kwargs():
    sch = S.get_schedule("linear", beta_min=0.2, beta_max=10.0)
    assert (sch.beta_min, sch.beta_max) == (0.2, 10.0)
    assert "beta_max=10.0" in repr(sch)


def test_expand_to_shapes_and_dtype():
    v = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    x = torch.zeros(3, 1, 4, 5)
    e = S.expand_to(v, x)
    assert e.shape == (3, 1, 1, 1) and e.dtype == torch.float32
    assert (e * x).shape == x.shape
    assert S.expand_to(v, torch.zeros(3, 2)).shape == (3, 1)
    assert S.expand_to(v, torch.zeros(3)).shape == (3,)


def test_extract_indexes_table():
    table = S.LinearSchedule().betas(10)
    k = torch.tensor([0, 3, 10])
    x = torch.zeros(3, 2, 8, 8)
    out = S.extract(table, k, x)
    assert out.shape == (3, 1, 1, 1)
    assert out.flatten().tolist() == table[k].tolist()
    assert S.extract(table, k.int(), torch.zeros(3, 2)).shape == (3, 1)

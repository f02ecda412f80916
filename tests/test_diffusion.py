"""dmlib.diffusion: q_sample, marginal, transition, q_step, posterior, convert.

Float64 identities use tolerances of ~1e-10: the formulas are exact, so only rounding (a few
ulp, amplified by at most 1 / alpha_t ~ 100 or sigma_t / alpha_t at t = 0.95) separates them.
"""

import math

import pytest
import torch

from dmlib import diffusion as D
from dmlib import schedules as S

KINDS = D.PREDICTIONS
SCHEDULES = {
    "linear": S.LinearSchedule(),
    "cosine": S.CosineSchedule(),
    "sigmoid": S.SigmoidSchedule(),
    "ve": S.VESchedule(),
    "flow": S.FlowSchedule(),
}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- q_sample and marginal ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5, 2), (4, 1, 8, 8), (3,)])
def test_q_sample_shape_and_dtype(dtype, shape):
    x0 = torch.randn(shape, generator=_gen(), dtype=dtype)
    for t in (0.3, torch.full((shape[0],), 0.3, dtype=torch.float32), torch.rand(shape[0], generator=_gen(1))):
        xt = D.q_sample(x0, t, S.CosineSchedule(), generator=_gen(2))
        assert xt.shape == x0.shape and xt.dtype == dtype
        assert torch.isfinite(xt).all()


def test_q_sample_deterministic_with_generator():
    x0 = torch.randn(64, 2, generator=_gen())
    sch = S.LinearSchedule()
    a = D.q_sample(x0, 0.5, sch, generator=_gen(7))
    b = D.q_sample(x0, 0.5, sch, generator=_gen(7))
    c = D.q_sample(x0, 0.5, sch, generator=_gen(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_q_sample_with_given_eps(name):
    sch = SCHEDULES[name]
    x0 = torch.randn(6, 3, 4, generator=_gen(), dtype=torch.float64)
    eps = torch.randn(6, 3, 4, generator=_gen(1), dtype=torch.float64)
    t = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.8, 1.0], dtype=torch.float64)  # one time per sample
    a, s = sch.alpha_sigma(t)
    ref = a[:, None, None] * x0 + s[:, None, None] * eps
    torch.testing.assert_close(D.q_sample(x0, t, sch, eps), ref, rtol=0, atol=0)


def test_q_sample_at_time_zero_is_data():
    x0 = torch.randn(8, 2, generator=_gen())
    for sch in (S.LinearSchedule(), S.CosineSchedule(), S.FlowSchedule()):
        assert torch.equal(D.q_sample(x0, 0.0, sch, generator=_gen(1)), x0)


def test_q_sample_scalar_time_broadcasts():
    x0 = torch.randn(5, 2, generator=_gen(), dtype=torch.float64)
    eps = torch.randn(5, 2, generator=_gen(1), dtype=torch.float64)
    sch = S.SigmoidSchedule()
    per_sample = D.q_sample(x0, torch.full((5,), 0.4, dtype=torch.float64), sch, eps)
    torch.testing.assert_close(D.q_sample(x0, 0.4, sch, eps), per_sample, rtol=0, atol=0)
    torch.testing.assert_close(D.q_sample(x0, torch.tensor(0.4, dtype=torch.float64), sch, eps),
                               per_sample, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_marginal(name):
    sch = SCHEDULES[name]
    x0 = torch.randn(4, 1, 3, 3, generator=_gen(), dtype=torch.float64)
    t = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=torch.float64)
    mean, var = D.marginal(x0, t, sch)
    a, s = sch.alpha_sigma(t)
    assert mean.shape == x0.shape and var.shape == (4, 1, 1, 1)
    torch.testing.assert_close(mean, a[:, None, None, None] * x0, rtol=0, atol=0)
    torch.testing.assert_close(var.flatten(), s**2, rtol=0, atol=0)
    assert mean.dtype == var.dtype == torch.float64
    assert D.marginal(x0.float(), 0.5, sch)[1].dtype == torch.float32


# -- transition and q_step -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_transition_on_grid_is_ddpm_step(name):
    sch = SCHEDULES[name]
    T = 1000
    k = torch.arange(1, T + 1, dtype=torch.float64)
    a_ts, var_ts = D.transition((k - 1) / T, k / T, sch)
    betas = sch.betas(T, torch.float64)[1:]
    # alpha_{t|s}^2 = 1 - beta_k, sigma_{t|s}^2 = beta_k (absolute tolerance: beta_k in (0, 1))
    torch.testing.assert_close(a_ts**2, 1 - betas, rtol=0, atol=1e-13)
    torch.testing.assert_close(var_ts, betas, rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_transition_composes(name):
    # q(x_t | x_r) = int q(x_t | x_s) q(x_s | x_r) dx_s:
    # alpha_{t|r} = alpha_{t|s} alpha_{s|r},  sigma_{t|r}^2 = alpha_{t|s}^2 sigma_{s|r}^2 + sigma_{t|s}^2
    sch = SCHEDULES[name]
    r, s, t = (torch.tensor(v, dtype=torch.float64) for v in ([0.0, 0.1, 0.3], [0.2, 0.5, 0.6], [0.7, 0.9, 0.95]))
    a_sr, v_sr = D.transition(r, s, sch)
    a_ts, v_ts = D.transition(s, t, sch)
    a_tr, v_tr = D.transition(r, t, sch)
    torch.testing.assert_close(a_tr, a_ts * a_sr, rtol=1e-12, atol=0)
    torch.testing.assert_close(v_tr, a_ts**2 * v_sr + v_ts, rtol=1e-10, atol=1e-12)


def test_transition_from_zero_is_marginal_and_identity_at_same_time():
    sch = S.CosineSchedule()
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    a_ts, var_ts = D.transition(0.0, t, sch)
    a, s = sch.alpha_sigma(t)
    torch.testing.assert_close(a_ts, a, rtol=1e-14, atol=0)
    torch.testing.assert_close(var_ts, s**2, rtol=1e-14, atol=0)
    a_tt, var_tt = D.transition(t, t, sch)
    assert (a_tt == 1).all() and (var_tt == 0).all()


def test_transition_dtype():
    sch = S.LinearSchedule()
    a_ts, var_ts = D.transition(torch.tensor([0.1], dtype=torch.float32), torch.tensor([0.2], dtype=torch.float32), sch)
    assert a_ts.dtype == var_ts.dtype == torch.float32
    assert D.transition(0.1, 0.2, sch)[0].dtype == torch.float64


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_q_step_with_given_eps(name):
    sch = SCHEDULES[name]
    x_s = torch.randn(3, 2, 5, generator=_gen(), dtype=torch.float64)
    eps = torch.randn(3, 2, 5, generator=_gen(1), dtype=torch.float64)
    s = torch.tensor([0.1, 0.4, 0.7], dtype=torch.float64)
    t = s + 0.05
    a_ts, var_ts = D.transition(s, t, sch)
    ref = a_ts[:, None, None] * x_s + var_ts.sqrt()[:, None, None] * eps
    out = D.q_step(x_s, s, t, sch, eps)
    assert out.shape == x_s.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-15)


def test_q_step_generator_and_dtype():
    x = torch.randn(16, 2, generator=_gen())
    sch = S.LinearSchedule()
    a = D.q_step(x, 0.1, 0.2, sch, generator=_gen(3))
    assert a.dtype == torch.float32 and a.shape == x.shape
    assert torch.equal(a, D.q_step(x, 0.1, 0.2, sch, generator=_gen(3)))
    assert not torch.allclose(a, D.q_step(x, 0.1, 0.2, sch, generator=_gen(4)))


# -- posterior -----------------------------------------------------------------------------------------
def test_posterior_shapes_and_dtype():
    sch = S.CosineSchedule()
    x0 = torch.randn(4, 1, 6, 6, generator=_gen())
    xt = torch.randn(4, 1, 6, 6, generator=_gen(1))
    mean, var = D.posterior(x0, xt, 0.3, 0.5, sch)
    assert mean.shape == xt.shape and var.shape == (4, 1, 1, 1)
    assert mean.dtype == var.dtype == torch.float32
    assert (var > 0).all()
    s = torch.tensor([0.1, 0.2, 0.3, 0.4])
    mean, var = D.posterior(x0, xt, s, s + 0.1, sch)  # per-sample times
    assert mean.shape == xt.shape and var.shape == (4, 1, 1, 1)


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid", "flow"])
def test_posterior_at_time_zero_is_x0(name):
    # sigma_0 = 0: looking back all the way to s = 0 recovers x_0 with no uncertainty
    sch = SCHEDULES[name]
    x0 = torch.randn(3, 2, generator=_gen(), dtype=torch.float64)
    xt = torch.randn(3, 2, generator=_gen(1), dtype=torch.float64)
    mean, var = D.posterior(x0, xt, 0.0, 0.6, sch)
    torch.testing.assert_close(mean, x0, rtol=1e-12, atol=1e-12)
    assert (var == 0).all()


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_posterior_variance_below_prior_variances(name):
    # var(x_s | x_t, x_0) = 1 / (1 / sigma_s^2 + alpha_{t|s}^2 / sigma_{t|s}^2) is below both
    sch = SCHEDULES[name]
    x = torch.zeros(1, 1, dtype=torch.float64)
    s, t = 0.3, 0.6
    _, var = D.posterior(x, x, s, t, sch)
    a_ts, v_ts = D.transition(s, t, sch)
    harmonic = 1 / (1 / sch.sigma(s) ** 2 + a_ts**2 / v_ts)
    torch.testing.assert_close(var.flatten(), harmonic, rtol=1e-12, atol=0)


# -- convert --------------------------------------------------------------------------------------------
def _truth(sch, t, gen_seed=0, shape=(6, 2, 3)):
    """A consistent set of all five kinds built from one (x0, eps) pair, in float64."""
    g = _gen(gen_seed)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    a, s = (c.reshape(-1, 1, 1) for c in sch.alpha_sigma(t))
    xt = a * x0 + s * eps
    if isinstance(sch, S.VESchedule):  # closed form, independent of autograd
        da, ds = torch.zeros_like(a), s * math.log(sch.sigma_max / sch.sigma_min)
    elif isinstance(sch, S.FlowSchedule):
        da, ds = -torch.ones_like(a), torch.ones_like(s)
    else:  # autograd, checked against finite differences in test_schedules
        da, ds = (c.reshape(-1, 1, 1) for c in sch.derivatives(t))
    out = {"eps": eps, "x0": x0, "v": a * eps - s * x0, "score": -eps / s, "velocity": da * x0 + ds * eps}
    return xt, out


T_MID = torch.linspace(0.05, 0.95, 6, dtype=torch.float64)  # one time per sample


def _params_for_pairs():
    return [pytest.param(name, src, dst, id=f"{name}-{src}-{dst}")
            for name in SCHEDULES for src in KINDS for dst in KINDS]


@pytest.mark.parametrize("name, src, dst", _params_for_pairs())
def test_convert_round_trip(name, src, dst):
    sch = SCHEDULES[name]
    xt, truth = _truth(sch, T_MID)
    pred = truth[src]
    there = D.convert(pred, xt, T_MID, sch, src=src, dst=dst)
    back = D.convert(there, xt, T_MID, sch, src=dst, dst=src)
    # conditioning: dividing by alpha_t ~ 0.01 (linear at t = 0.95) costs two decimal digits
    torch.testing.assert_close(back, pred, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name, src, dst", _params_for_pairs())
def test_convert_matches_definitions(name, src, dst):
    # stronger than a round trip: a consistent sign error in both directions would still fail
    sch = SCHEDULES[name]
    xt, truth = _truth(sch, T_MID)
    out = D.convert(truth[src], xt, T_MID, sch, src=src, dst=dst)
    ref = truth[dst]
    scale = ref.abs().max().item()  # VE's velocity reaches ~300
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10 * max(1.0, scale))


def test_v_definition():
    sch = S.CosineSchedule()
    t = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    x0 = torch.randn(3, 4, generator=_gen(), dtype=torch.float64)
    eps = torch.randn(3, 4, generator=_gen(1), dtype=torch.float64)
    a, s = (c[:, None] for c in sch.alpha_sigma(t))
    xt = a * x0 + s * eps
    v = D.convert(eps, xt, t, sch, src="eps", dst="v")
    torch.testing.assert_close(v, a * eps - s * x0, rtol=1e-12, atol=1e-12)
    # VP: v is the eps/x0 pair rotated by the angle phi_t with (alpha, sigma) = (cos phi, sin phi)
    torch.testing.assert_close(v**2 + xt**2, eps**2 + x0**2, rtol=1e-12, atol=1e-12)


def test_score_definition():
    sch = S.LinearSchedule()
    t = torch.tensor([0.1, 0.9], dtype=torch.float64)
    eps = torch.randn(2, 3, generator=_gen(), dtype=torch.float64)
    xt = torch.randn(2, 3, generator=_gen(1), dtype=torch.float64)
    score = D.convert(eps, xt, t, sch, src="eps", dst="score")
    torch.testing.assert_close(score, -eps / sch.sigma(t)[:, None], rtol=1e-14, atol=0)


def test_flow_velocity_is_eps_minus_x0():
    # on the linear path x_t = (1 - t) x0 + t eps the velocity is eps - x0 (Chapter 5)
    sch = S.FlowSchedule()
    t = torch.tensor([0.25, 0.5], dtype=torch.float64)
    x0 = torch.randn(2, 3, generator=_gen(), dtype=torch.float64)
    eps = torch.randn(2, 3, generator=_gen(1), dtype=torch.float64)
    xt = (1 - t[:, None]) * x0 + t[:, None] * eps
    u = D.convert(x0, xt, t, sch, src="x0", dst="velocity")
    torch.testing.assert_close(u, eps - x0, rtol=1e-12, atol=1e-12)


def test_convert_same_kind_returns_input():
    x = torch.randn(2, 2)
    assert D.convert(x, torch.zeros(2, 2), 0.5, S.LinearSchedule(), src="v", dst="v") is x


def test_convert_float32():
    sch = S.CosineSchedule()
    xt = torch.randn(4, 2, generator=_gen())
    eps = torch.randn(4, 2, generator=_gen(1))
    for dst in ("x0", "v", "score", "velocity"):
        out = D.convert(eps, xt, 0.5, sch, src="eps", dst=dst)
        assert out.dtype == torch.float32 and out.shape == xt.shape
        back = D.convert(out, xt, 0.5, sch, src=dst, dst="eps")
        torch.testing.assert_close(back, eps, rtol=1e-5, atol=1e-5)  # float32: ~10 ulp


# -- target --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_target_matches_definitions(name):
    sch = SCHEDULES[name]
    _, truth = _truth(sch, T_MID)
    for kind in KINDS:
        out = D.target(truth["x0"], truth["eps"], T_MID, sch, kind)
        torch.testing.assert_close(out, truth[kind], rtol=1e-12, atol=1e-12)


def test_target_where_convert_divides_by_zero():
    # flow at t = 1 has alpha = 0, at t = 0 sigma = 0: targets come from (x0, eps) directly
    sch = S.FlowSchedule()
    x0 = torch.randn(2, 3, generator=_gen(), dtype=torch.float64)
    eps = torch.randn(2, 3, generator=_gen(1), dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for kind in ("eps", "x0", "v", "velocity"):
        assert torch.isfinite(D.target(x0, eps, t, sch, kind)).all()
    torch.testing.assert_close(D.target(x0, eps, t, sch, "velocity"), eps - x0, rtol=0, atol=0)
    torch.testing.assert_close(D.target(x0, eps, t, sch, "v")[1], -x0[1], rtol=0, atol=0)  # alpha 0, sigma 1


def test_target_dtype_and_broadcast():
    x0, eps = torch.randn(4, 2, generator=_gen()), torch.randn(4, 2, generator=_gen(1))
    out = D.target(x0, eps, 0.3, S.CosineSchedule(), "v")
    assert out.dtype == torch.float32 and out.shape == (4, 2)


# -- preconditioning (Section 4.9) ---------------------------------------------------------------
VP_NAMES = ("linear", "cosine", "sigmoid")


@pytest.mark.parametrize("name", VP_NAMES)
def test_preconditioning_vp_unit_data_is_v_prediction(name):
    """VP schedule, sigma_data = 1: c_in = 1, c_skip = alpha, c_out = sigma, and F's target
    (x0 - c_skip x_t) / c_out is -v."""
    sch = SCHEDULES[name]
    t = torch.linspace(0.02, 0.98, 7, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = D.preconditioning(t, sch)
    a, s = sch.alpha_sigma(t)
    torch.testing.assert_close(c_in, torch.ones_like(t))
    torch.testing.assert_close(c_skip, a)
    torch.testing.assert_close(c_out, s)
    torch.testing.assert_close(c_noise, 0.25 * torch.log(s / a))
    x0 = torch.randn(7, 3, generator=_gen(), dtype=torch.float64)
    eps = torch.randn(7, 3, generator=_gen(1), dtype=torch.float64)
    xt = D.q_sample(x0, t, sch, eps)
    f_target = (x0 - c_skip[:, None] * xt) / c_out[:, None]
    torch.testing.assert_close(f_target, -D.target(x0, eps, t, sch, "v"), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_preconditioning_in_karras_variables(name):
    """alpha c_skip, alpha c_in and c_out are Karras et al.'s coefficients of varsigma = sigma / alpha."""
    sch, sd = SCHEDULES[name], 0.5
    t = torch.linspace(0.05, 0.95, 9, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = D.preconditioning(t, sch, sigma_data=sd)
    a, s = sch.alpha_sigma(t)
    vs = s / a
    torch.testing.assert_close(a * c_skip, sd**2 / (vs**2 + sd**2))
    torch.testing.assert_close(a * c_in, 1 / torch.sqrt(vs**2 + sd**2))
    torch.testing.assert_close(c_out, vs * sd / torch.sqrt(vs**2 + sd**2))
    torch.testing.assert_close(c_noise, 0.25 * torch.log(vs))


@pytest.mark.parametrize("name,t", [("cosine", 0.3), ("ve", 0.6), ("flow", 0.5), ("linear", 0.9)])
def test_preconditioning_unit_variance_and_optimal_skip(name, t):
    """Monte Carlo: c_in x_t and (x0 - c_skip x_t) / c_out have unit second moment, and among all
    skips c, the unit-variance scale sqrt(E (x0 - c x_t)^2) is smallest at c = c_skip."""
    sch, sd, n = SCHEDULES[name], 0.7, 200_000
    x0 = sd * torch.randn(n, generator=_gen(2), dtype=torch.float64)
    eps = torch.randn(n, generator=_gen(3), dtype=torch.float64)
    a, s = (v.item() for v in sch.alpha_sigma(t))
    xt = a * x0 + s * eps
    c_skip, c_out, c_in, _ = (v.item() for v in D.preconditioning(t, sch, sigma_data=sd))
    for z in (c_in * xt, (x0 - c_skip * xt) / c_out):
        m2 = (z**2).mean().item()
        se = (z**2).std().item() / math.sqrt(n)
        assert abs(m2 - 1) < 5 * se, (name, m2)
    scale = lambda c: ((x0 - c * xt) ** 2).mean().sqrt().item()  # noqa: E731
    assert abs(scale(c_skip) - c_out) < 0.01 * c_out
    for dc in (-0.05, 0.05):
        assert scale(c_skip + dc) > scale(c_skip)


def test_preconditioning_dtype_and_bad_input():
    c = D.preconditioning(torch.tensor([0.2, 0.4]), S.CosineSchedule())
    assert all(v.dtype == torch.float32 and v.shape == (2,) for v in c)
    with pytest.raises(ValueError, match="sigma_data must be a finite number > 0"):
        D.preconditioning(0.5, S.CosineSchedule(), sigma_data=0.0)
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
        D.preconditioning(1.5, S.CosineSchedule())
    with pytest.raises(TypeError, match="schedule must be a dmlib"):
        D.preconditioning(0.5, "cosine")


def test_clip_x0_clamps_the_data_prediction_and_keeps_it_inside():
    from dmlib import diffusion as d
    from dmlib.schedules import CosineSchedule

    sched = CosineSchedule()
    g = torch.Generator().manual_seed(0)

    class Eps(torch.nn.Module):
        prediction = "eps"

        def forward(self, x_t, t, y=None):
            return 0.5 * x_t  # a crude eps guess: x0_hat overshoots at large t

    x_t = torch.randn(8, 1, 4, 4, generator=g)
    t = torch.full((8,), 0.95)
    raw = d.convert(Eps()(x_t, t), x_t, t, sched, src="eps", dst="x0")
    clipped = d.ClipX0(Eps(), sched)(x_t, t)
    assert raw.abs().max() > 1.5  # the overshoot is real
    torch.testing.assert_close(clipped, raw.clamp(-1, 1))
    assert d.ClipX0(Eps(), sched).prediction == "x0"
    # where x0_hat is already inside the bound, nothing changes
    small_t = torch.full((8,), 0.05)
    inside = d.convert(Eps()(0.1 * x_t, small_t), 0.1 * x_t, small_t, sched, src="eps", dst="x0")
    assert inside.abs().max() < 1
    torch.testing.assert_close(d.ClipX0(Eps(), sched)(0.1 * x_t, small_t), inside)
    with pytest.raises(ValueError, match="bound must be a positive number"):
        d.ClipX0(Eps(), sched, bound=0)

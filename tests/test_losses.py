"""Training losses: targets, weightings, and that the loss is minimised by the exact denoiser."""

import pytest
import torch

from dmlib import diffusion, losses, nn, schedules, toy, train

MIX = toy.GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], stds=torch.tensor([0.3, 0.2]))


class Const(torch.nn.Module):
    """A 'model' that returns a fixed function of its inputs, for checking the loss by hand."""

    def __init__(self, fn, prediction):
        super().__init__()
        self.fn, self.prediction = fn, prediction

    def forward(self, x_t, t, y=None):
        return self.fn(x_t, t)


@pytest.mark.parametrize("kind", ["eps", "x0", "v", "velocity"])
def test_loss_is_the_mse_to_the_target_drawn_with_the_same_generator(kind):
    sched = schedules.CosineSchedule()
    x0 = MIX.sample(64, generator=torch.Generator().manual_seed(0))
    loss = losses.diffusion_loss(sched, t_min=0.1, t_max=0.9)
    zero = Const(lambda x_t, t: torch.zeros_like(x_t), kind)
    value = loss(zero, x0, generator=torch.Generator().manual_seed(1))
    # redraw what the loss drew: t then eps, from the same seed
    g = torch.Generator().manual_seed(1)
    t = 0.1 + 0.8 * torch.rand(64, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    expected = (diffusion.target(x0, eps, t, sched, kind) ** 2).mean()
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)


def test_exact_denoiser_beats_a_perturbed_one():
    # E[eps | x_t] minimises the eps-loss: the oracle's loss is below a slightly wrong oracle's.
    sched = schedules.LinearSchedule()
    oracle = MIX.denoiser(sched, "eps")
    x0 = MIX.sample(4000, generator=torch.Generator().manual_seed(2))
    loss = losses.diffusion_loss(sched, t_min=0.05)
    good = loss(oracle, x0, generator=torch.Generator().manual_seed(3))
    bad_model = Const(lambda x_t, t: 1.1 * oracle(x_t, t), "eps")
    bad = loss(bad_model, x0, generator=torch.Generator().manual_seed(3))
    assert good < bad


def test_weightings_are_consistent_reweightings():
    sched = schedules.CosineSchedule()
    t = torch.linspace(0.05, 0.95, 19)
    snr = sched.snr(t)
    torch.testing.assert_close(losses.weight(t, sched, "x0"), 1 / snr)
    # and it is what turns an eps error into an x0 error: |x0 - x0_hat|^2 = w |eps - eps_hat|^2
    x0, eps, d = (torch.randn(19, 2, dtype=torch.float64), torch.randn(19, 2, dtype=torch.float64),
                  torch.randn(19, 2, dtype=torch.float64))
    x_t = diffusion.q_sample(x0, t.double(), sched, eps)
    x0_err = ((x0 - diffusion.convert(eps + d, x_t, t.double(), sched, src="eps", dst="x0")) ** 2).sum(1)
    torch.testing.assert_close(x0_err, losses.weight(t.double(), sched, "x0") * (d**2).sum(1))
    # min-SNR weights of eps, x0 and v targets are the same objective in different units
    w_eps = losses.weight(t, sched, "min_snr", prediction="eps")
    w_x0 = losses.weight(t, sched, "min_snr", prediction="x0")
    w_v = losses.weight(t, sched, "min_snr", prediction="v")
    torch.testing.assert_close(w_eps * snr, w_x0)
    torch.testing.assert_close(w_v * (1 + snr), w_x0)
    # ELBO weight: -d(lambda)/dt / 2, checked by finite differences
    h = 1e-4
    fd = -(sched.log_snr(t.double() + h) - sched.log_snr(t.double() - h)) / (2 * h) / 2
    torch.testing.assert_close(losses.weight(t, sched, "elbo_eps").double(), fd, rtol=1e-4, atol=1e-6)


def test_flow_matching_target_is_eps_minus_x0():
    x0, eps, t = torch.randn(5, 2), torch.randn(5, 2), torch.rand(5)
    torch.testing.assert_close(diffusion.target(x0, eps, t, schedules.FlowSchedule(), "velocity"), eps - x0)


@pytest.mark.parametrize("bad,match", [({"weighting": "l1"}, "weighting"), ({"t_min": 0.5, "t_max": 0.4}, "t_min")])
def test_bad_loss_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        losses.diffusion_loss(schedules.LinearSchedule(), **bad)


def test_loss_needs_a_declared_prediction():
    loss = losses.diffusion_loss(schedules.LinearSchedule())
    with pytest.raises(ValueError, match="model.prediction"):
        loss(torch.nn.Identity(), torch.randn(4, 2))


def test_paired_flow_matching_uses_the_stored_noise():
    # coupling="pairs": a batch of (x0, eps) pairs gives exactly the independent loss when
    # the stored eps is the noise that loss would have drawn (t is drawn first, then eps)
    model = nn.MLP(dim=2, hidden=16, depth=1, prediction="velocity")
    torch.nn.init.normal_(model.out.weight, std=0.1)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(3)
    _ = torch.rand(64, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    paired = losses.flow_matching_loss(coupling="pairs")
    independent = losses.flow_matching_loss()
    value = paired(model, torch.stack([x0, eps], 1), None, torch.Generator().manual_seed(3))
    torch.testing.assert_close(value, independent(model, x0, None, torch.Generator().manual_seed(3)))
    # other noise gives another value: the stored eps is really used
    other = paired(model, torch.stack([x0, -eps], 1), None, torch.Generator().manual_seed(3))
    assert abs(other.item() - value.item()) > 1e-3
    # trains through the one loop, sampling rows of the pair tensor
    pairs = torch.stack([x0, eps], 1)
    result = train.train(model, paired, pairs, train.TrainConfig(steps=5, batch_size=16, progress=False))
    assert len(result.history) == 1
    with pytest.raises(ValueError, match=r"pairs, shape \(B, 2, \.\.\.\), got \(64, 2\)"):
        paired(model, x0)
    with pytest.raises(ValueError, match=r"got \(64, 3, 2\)"):
        paired(model, torch.randn(64, 3, 2))


@pytest.mark.parametrize("name", ["linear", "ve", "flow"])
def test_min_snr_weight_is_the_same_x0_weight_for_every_target(name):
    """Min-SNR-gamma weighs the x0-error by min(SNR, gamma) whatever the network predicts: the
    eps- and v-losses, times their weights, equal the x0-loss times min(SNR, gamma), for any
    schedule (the v factor sigma^2 / (alpha^2 + sigma^2)^2 is 1 / (1 + SNR) only for VP)."""
    sch = schedules.get_schedule(name)
    g = torch.Generator().manual_seed(0)
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.98 + 0.01
    x0, eps = torch.randn(64, 3, generator=g, dtype=torch.float64), torch.randn(64, 3, generator=g, dtype=torch.float64)
    x_t = diffusion.q_sample(x0, t, sch, eps)
    x0_hat = x0 + 0.1 * torch.randn(64, 3, generator=g, dtype=torch.float64)  # an imperfect prediction
    x0_err = ((x0_hat - x0) ** 2).sum(1)
    ref = sch.snr(t).clamp(max=5.0) * x0_err
    for kind in ("eps", "v", "x0"):
        pred = diffusion.convert(x0_hat, x_t, t, sch, src="x0", dst=kind)
        err = ((pred - diffusion.target(x0, eps, t, sch, kind)) ** 2).sum(1)
        torch.testing.assert_close(losses.weight(t, sch, "min_snr", prediction=kind) * err, ref, rtol=1e-8, atol=1e-12)


# -- weights over log-SNR (Section 4.9) ----------------------------------------------------------
SCHEDS = {"linear": schedules.LinearSchedule(), "cosine": schedules.CosineSchedule(),
          "ve": schedules.VESchedule(), "flow": schedules.FlowSchedule()}


@pytest.mark.parametrize("name", list(SCHEDS))
def test_elbo_weight_is_flat_in_log_snr(name):
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    omega = losses.log_snr_weighting(t, SCHEDS[name], "elbo_eps", t_min=0.01, t_max=0.99)
    torch.testing.assert_close(omega, torch.full_like(t, 0.5 / 0.98))
    # the unweighted eps-loss is flat only where lambda is linear in t (VE's geometric sigma)
    simple = losses.log_snr_weighting(t, SCHEDS[name], t_min=0.01, t_max=0.99)
    if name == "ve":
        torch.testing.assert_close(simple, torch.full_like(t, simple[0].item()))
    else:
        assert simple.max() > 2 * simple.min()


@pytest.mark.parametrize("name", list(SCHEDS))
@pytest.mark.parametrize("kind", ["eps", "x0", "v", "score", "velocity"])
def test_log_snr_weighting_converts_the_target_error_to_eps_units(name, kind):
    """omega * |lambda'| / p = w * (target error / eps error), with the errors computed through
    convert for a perturbed eps."""
    sch = SCHEDS[name]
    g = torch.Generator().manual_seed(0)
    t = 0.05 + 0.9 * torch.rand(32, generator=g, dtype=torch.float64)
    x0, eps, d = (torch.randn(32, 2, generator=g, dtype=torch.float64) for _ in range(3))
    x_t = diffusion.q_sample(x0, t, sch, eps)
    true = diffusion.target(x0, eps, t, sch, kind)
    pred = diffusion.convert(eps + d, x_t, t, sch, src="eps", dst=kind)
    ratio = ((true - pred) ** 2).sum(1) / (d**2).sum(1)
    weighting = "min_snr" if kind in ("eps", "x0", "v") else "none"
    w = losses.weight(t, sch, weighting, prediction=kind)
    f, g2 = schedules.sde_coefficients(sch, t)
    dlam = g2 / sch.sigma(t) ** 2                         # |lambda'(t)|
    omega = losses.log_snr_weighting(t, sch, weighting, prediction=kind, t_min=0.0, t_max=1.0)
    torch.testing.assert_close(omega * dlam, w * ratio, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", ["linear", "cosine", "ve"])
def test_log_snr_weighting_changes_variables(name):
    """int p(t) w(t) r(t) h(lambda_t) dt over [t_min, t_max] = int omega(lambda) h(lambda) d lambda,
    by quadrature on two different grids (uniform in t, uniform in lambda)."""
    sch, t_min, t_max = SCHEDS[name], 0.02, 0.9
    h = lambda lam: torch.exp(-((lam - 1.0) ** 2) / 8)  # noqa: E731  any smooth test function
    t = torch.linspace(t_min, t_max, 20001, dtype=torch.float64)
    w = losses.weight(t, sch, "x0")  # 1 / SNR on an eps-model's error (r = 1)
    lhs = torch.trapezoid(w / (t_max - t_min) * h(sch.log_snr(t)), t)
    lam = torch.linspace(sch.log_snr(t_max).item(), sch.log_snr(t_min).item(), 20001, dtype=torch.float64)
    t_lam = sch.t_from_log_snr(lam).clamp(t_min, t_max)  # rounding at the two ends
    omega = losses.log_snr_weighting(t_lam, sch, "x0", t_min=t_min, t_max=t_max)
    rhs = torch.trapezoid(omega * h(lam), lam)
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=0)
    # the ELBO: (t_max - t_min) * omega integrates to (lambda_max - lambda_min) / 2
    elbo = losses.log_snr_weighting(t_lam, sch, "elbo_eps", t_min=t_min, t_max=t_max)
    torch.testing.assert_close(torch.trapezoid(elbo, lam) * (t_max - t_min),
                               (lam[-1] - lam[0]) / 2, rtol=1e-6, atol=0)


def test_log_snr_weighting_is_zero_outside_and_checks_input():
    sch = schedules.LinearSchedule()
    t = torch.tensor([0.05, 0.2, 0.5])
    omega = losses.log_snr_weighting(t, sch, t_min=0.1, t_max=0.4)
    assert omega[0] == 0 and omega[2] == 0 and omega[1] > 0
    with pytest.raises(ValueError, match="need 0 <= t_min < t_max <= 1"):
        losses.log_snr_weighting(t, sch, t_min=0.5, t_max=0.4)
    with pytest.raises(ValueError, match="weighting must be one of"):
        losses.log_snr_weighting(t, sch, "elbo")
    with pytest.raises(ValueError, match="prediction must be one of"):
        losses.log_snr_weighting(t, sch, prediction="noise")

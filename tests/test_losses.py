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
    x0, eps, d = torch.randn(19, 2, dtype=torch.float64), torch.randn(19, 2, dtype=torch.float64), torch.randn(19, 2, dtype=torch.float64)
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

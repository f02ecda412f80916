"""Guidance wrappers: CFG limits, classifier guidance with an exact classifier, and the
exact tilted density that predictor-corrector sampling recovers (Section 6.6)."""

import numpy as np
import pytest
import torch

from dmlib import samplers, schedules, toy
from dmlib.diffusion import convert
from dmlib.guidance import ClassifierFreeGuidance, ClassifierGuidance, tilted_log_prob

SCHED = schedules.CosineSchedule()
MIX = toy.GaussianMixture([[-1.0, 0.0], [1.0, 0.5], [0.0, 1.5]], stds=torch.tensor([0.3, 0.3, 0.4]),
                          weights=[0.5, 0.3, 0.2], labels=[0, 1, 1])


def test_cfg_with_w_one_is_the_conditional_model_and_zero_the_unconditional():
    model = MIX.denoiser(SCHED, "eps")
    x, t = torch.randn(20, 2, dtype=torch.float64), torch.full((20,), 0.4, dtype=torch.float64)
    y = torch.ones(20, dtype=torch.long)
    torch.testing.assert_close(ClassifierFreeGuidance(model, 1.0)(x, t, y), model(x, t, y))
    torch.testing.assert_close(ClassifierFreeGuidance(model, 0.0)(x, t, y), model(x, t, None))


def test_cfg_is_the_score_of_the_tilted_density():
    # The eps-combination equals -sigma * ((1 - w) grad log p_t + w grad log p_t(. | y)).
    model, w = MIX.denoiser(SCHED, "eps"), 3.0
    x, t, y = torch.randn(20, 2, dtype=torch.float64), 0.3, torch.zeros(20, dtype=torch.long)
    guided = convert(ClassifierFreeGuidance(model, w)(x, t, y), x, t, SCHED, src="eps", dst="score")
    expected = (1 - w) * MIX.score(x, t, SCHED) + w * MIX.score(x, t, SCHED, y=y)
    torch.testing.assert_close(guided, expected)


def test_classifier_guidance_with_the_exact_classifier_gives_the_conditional_score():
    # With the Bayes classifier log p_t(y | x) = log p_t(x | y) + log p(y) - log p_t(x),
    # score + grad log p_t(y | x) = conditional score (w = 1).
    def classifier(x, t):
        return torch.stack([MIX.log_prob(x, t, SCHED, y=torch.full((x.shape[0],), c)) for c in range(2)], 1)

    model = MIX.denoiser(SCHED, "eps")
    x, t, y = torch.randn(15, 2, dtype=torch.float64), 0.5, torch.ones(15, dtype=torch.long)
    got = ClassifierGuidance(model, classifier, SCHED, w=1.0)(x, t, y)
    torch.testing.assert_close(got, MIX.score(x, t, SCHED, y=y), rtol=1e-6, atol=1e-8)


def test_guidance_errors():
    model = MIX.denoiser(SCHED)
    with pytest.raises(ValueError, match="w must"):
        ClassifierFreeGuidance(model, float("nan"))
    with pytest.raises(ValueError, match="needs class labels"):
        ClassifierFreeGuidance(model, 2.0)(torch.randn(3, 2), 0.5)


# -- the tilted density and predictor-corrector sampling (Section 6.6) -----------------
# A 1D labelled mixture in which class 1's left component overlaps class 0, so that the
# tilt changes the density a lot, and a fine grid on which its CDF is exact to ~1e-6.
MIX1 = toy.GaussianMixture([[-1.0], [0.3], [2.0]], stds=[0.5, 0.5, 0.4],
                           weights=[0.5, 0.25, 0.25], labels=[0, 1, 1])
U = torch.linspace(-5.0, 6.0, 4001, dtype=torch.float64)[:, None]  # (G, 1)
DU = (U[1, 0] - U[0, 0]).item()
N_KS = 2000
# Kolmogorov's distribution: P(sqrt(N) KS > 1.949) = 0.001 for N exact samples
KS_CRIT = 1.949 / N_KS**0.5


def _ks_to_tilted(x, y, w, t=None):
    """Kolmogorov-Smirnov distance between 1D samples and the tilted density on the grid."""
    cdf = torch.softmax(tilted_log_prob(MIX1, U, y, w, t, SCHED), 0).cumsum(0)
    xs = x[:, 0].double().sort().values
    F = torch.from_numpy(np.interp(xs.numpy(), U[:, 0].numpy(), cdf.numpy()))
    i = torch.arange(1, len(xs) + 1, dtype=torch.float64)
    return max((i / len(xs) - F).max().item(), (F - (i - 1) / len(xs)).max().item())


def _noised(n, t, g):
    """Exact samples of p_t for MIX1."""
    a, s = SCHED.alpha(t).item(), SCHED.sigma(t).item()
    return a * MIX1.sample(n, generator=g) + s * torch.randn(n, 1, generator=g)


@pytest.mark.parametrize("w", [0.5, 3.0, 8.0])
@pytest.mark.parametrize("t", [0.05, 0.3, 0.8])
def test_tilted_log_prob_gradient_is_the_cfg_score(t, w):
    # grad [(1 - w) log p_t + w log p_t(x, y)] = (1 - w) score + w score(y) = CFG's score
    x = 2 * torch.randn(30, 2, dtype=torch.float64).requires_grad_(True)
    y = torch.tensor([0, 1] * 15)
    grad = torch.autograd.grad(tilted_log_prob(MIX, x, y, w, t, SCHED).sum(), x)[0]
    cfg = ClassifierFreeGuidance(MIX.denoiser(SCHED, "eps"), w)
    x = x.detach()
    torch.testing.assert_close(grad, convert(cfg(x, t, y), x, t, SCHED, src="eps", dst="score"))


@pytest.mark.parametrize("t", [None, 0.3])
def test_tilted_normaliser_is_the_expected_posterior_power(t):
    # int p_t(x) p_t(y | x)^w dx = E_{p_t}[p_t(y | x)^w], in [p(y)^w, p(y)] for w >= 1;
    # w = 0 integrates to 1 and w = 1 to p(y)
    g = torch.Generator().manual_seed(1)
    x_t = (MIX1.sample(200_000, generator=g) if t is None else _noised(200_000, t, g)).double()
    post = MIX1.class_log_posterior(x_t, t, SCHED)[:, 1].exp()
    p_y = 0.5
    for w in [0.0, 1.0, 2.5, 6.0]:
        quad = tilted_log_prob(MIX1, U, 1, w, t, SCHED).exp().sum().item() * DU
        mc = post.pow(w)
        se = mc.std().item() / len(mc) ** 0.5
        assert abs(quad - mc.mean().item()) < 5 * se + 1e-6, (w, quad)
        if w >= 1:
            assert p_y**w - 1e-9 <= quad <= p_y + 1e-9, (w, quad)
    assert abs(tilted_log_prob(MIX1, U, 1, 0.0, t, SCHED).exp().sum().item() * DU - 1) < 1e-6
    assert abs(tilted_log_prob(MIX1, U, 1, 1.0, t, SCHED).exp().sum().item() * DU - p_y) < 1e-6


def test_langevin_with_the_guided_score_targets_the_tilted_marginal():
    # At a fixed level t the corrector with CFG's score leaves the tilted marginal
    # p_t(x) p_t(y | x)^w / Z invariant: from exact samples of the *untilted* p_t it
    # relaxes to it (up to the O(delta) bias of an unadjusted step, far below KS_CRIT here)
    g = torch.Generator().manual_seed(2)
    t, y, w = 0.3, 1, 4.0
    cfg = ClassifierFreeGuidance(MIX1.denoiser(SCHED, "eps"), w)
    x = _noised(N_KS, t, g)
    assert _ks_to_tilted(x, y, w, t) > 0.3  # the start is far from the target
    for _ in range(100):
        score = convert(cfg(x, t, y), x, t, SCHED, src="eps", dst="score")
        x = samplers.corrector_step(x, score, t, SCHED, snr=0.3, generator=g)
    assert _ks_to_tilted(x, y, w, t) < KS_CRIT


@pytest.mark.parametrize("w", [6.0])
def test_predictor_corrector_approaches_the_tilted_density_where_plain_cfg_does_not(w):
    # Plain CFG (DDIM) misses the tilted data density by a KS distance > 0.3; with 20
    # Langevin corrector steps per level it comes within the Kolmogorov 0.1% level plus a
    # discretisation allowance of 0.03 (20 levels; the corrector's step ~ sigma_t^2 barely
    # moves samples at the last, low-noise levels).
    g = torch.Generator().manual_seed(3)
    cfg = ClassifierFreeGuidance(MIX1.denoiser(SCHED, "eps"), w)
    x_T = torch.randn(N_KS, 1, generator=g)
    plain = samplers.sample(cfg, x_T, SCHED, method="ddim", n_steps=20, y=1)
    pc = samplers.sample(cfg, x_T, SCHED, method="ddim", n_steps=20, y=1, corrector_steps=20,
                         corrector_snr=0.5, generator=g)
    assert _ks_to_tilted(plain, 1, w) > 0.3
    assert _ks_to_tilted(pc, 1, w) < KS_CRIT + 0.03


def test_tilted_log_prob_errors():
    x = torch.randn(4, 2)
    with pytest.raises(TypeError, match="GaussianMixture"):
        tilted_log_prob(MIX.denoiser(SCHED), x, 0, 2.0)
    with pytest.raises(ValueError, match="finite real"):
        tilted_log_prob(MIX, x, 0, float("nan"))
    with pytest.raises(ValueError, match="class label"):
        tilted_log_prob(MIX, x, None, 2.0)
    with pytest.raises(ValueError, match="y must lie"):
        tilted_log_prob(MIX, x, 5, 2.0)


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_null_output_is_the_posterior_average_of_the_class_outputs(t):
    # eq-null-mixture (Section 8.2): eps(x, null) = sum_y p_t(y | x) eps(x, y) for the
    # exact minimisers, and the plain average of the class outputs is not it.
    model = MIX.denoiser(SCHED, "eps")
    x = 1.5 * torch.randn(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tt = torch.full((30,), t, dtype=torch.float64)
    post = MIX.class_log_posterior(x, tt, SCHED).exp()                       # (B, 2)
    each = torch.stack([model(x, tt, torch.full((30,), c)) for c in range(2)], 1)  # (B, 2, 2)
    torch.testing.assert_close((post[..., None] * each).sum(1), model(x, tt, None))
    assert (each.mean(1) - model(x, tt, None)).abs().max() > 1e-3


def test_cfg_costs_one_evaluation_at_w_zero_and_one_and_two_otherwise():
    calls = []

    def net(x, t, y=None):
        calls.append(y is None)
        return 0.5 * x

    net.prediction, net.n_classes = "eps", 3
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
    for w, expected in [(0.0, [True]), (1.0, [False]), (2.5, [True, False])]:
        calls.clear()
        ClassifierFreeGuidance(net, w)(x, 0.5, y)
        assert calls == expected, (w, calls)

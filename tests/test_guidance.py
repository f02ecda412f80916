"""Guidance wrappers: CFG limits, and classifier guidance with an exact classifier."""

import pytest
import torch

from dmlib import schedules, toy
from dmlib.diffusion import convert
from dmlib.guidance import ClassifierFreeGuidance, ClassifierGuidance

SCHED = schedules.CosineSchedule()
MIX = toy.GaussianMixture([[-1.0, 0.0], [1.0, 0.5], [0.0, 1.5]], stds=torch.tensor([0.3, 0.3, 0.4]),
                          weights=[0.5, 0.3, 0.2], labels=[0, 1, 1])


def test_cfg_with_w_one_is_the_conditional_model_and_zero_the_unconditional():
    model = MIX.denoiser(SCHED, "eps")
    x, t, y = torch.randn(20, 2, dtype=torch.float64), torch.full((20,), 0.4, dtype=torch.float64), torch.ones(20, dtype=torch.long)
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

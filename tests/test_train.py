"""The training loop: it learns, it repeats exactly for a seed, and it refuses bad settings."""

import pytest
import torch

from dmlib import losses, schedules, toy
from dmlib.nn import MLP
from dmlib.train import TrainConfig, train

SMALL = dict(steps=60, batch_size=128, lr=3e-3, warmup=5, log_every=10, progress=False, device="cpu")


def _run(seed=0, **kw):
    torch.manual_seed(123)  # weight initialisation
    model = MLP(hidden=32, depth=2)
    data = lambda n, g: toy.sample_2d("8gaussians", n, generator=g)  # noqa: E731
    return train(model, losses.diffusion_loss(schedules.CosineSchedule()), data, TrainConfig(seed=seed, **{**SMALL, **kw}))


def test_loss_decreases_and_history_is_logged():
    res = _run()
    assert [s for s, _ in res.history] == [10, 20, 30, 40, 50, 60]
    assert res.history[-1][1] < 0.8 * res.history[0][1]


def test_same_seed_repeats_exactly_on_cpu():
    a, b = _run(seed=7), _run(seed=7)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    c = _run(seed=8)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.model.parameters(), c.model.parameters()))


def test_ema_is_kept_and_used_for_sampling():
    res = _run()
    assert res.ema is not None and res.best is res.ema
    assert any(not torch.equal(p, q) for p, q in zip(res.model.parameters(), res.ema.parameters()))
    assert _run(ema_decay=None).best is not None


def test_tensor_data_with_labels_and_label_dropout():
    torch.manual_seed(0)
    gm = toy.GaussianMixture.eight_gaussians()
    x, y = gm.sample(512, generator=torch.Generator().manual_seed(1), return_labels=True)
    model = MLP(hidden=32, depth=2, n_classes=8)
    res = train(model, losses.diffusion_loss(schedules.CosineSchedule()), x,
                TrainConfig(**{**SMALL, "steps": 20}, label_dropout=0.2), labels=y)
    assert len(res.history) == 2


@pytest.mark.parametrize("cfg,match", [
    ({"steps": 0}, "config.steps"),
    ({"label_dropout": 0.5}, "n_classes"),
    ({"ema_decay": 1.5}, "ema_decay"),
    ({"device": "cuda:7"}, "CUDA|cuda"),
])
def test_bad_configs(cfg, match):
    with pytest.raises((ValueError, RuntimeError), match=match):
        _run(**cfg)

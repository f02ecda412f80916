"""The training loop: it learns, it repeats exactly for a seed, reads the loss only when it
logs, and refuses bad settings."""

import pytest
import torch
from _syncs import count_syncs

from dmlib import losses, noise, schedules, toy
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


def test_history_is_the_mean_loss_of_each_log_interval():
    # the loss values as a per-step .item() loop saw them, averaged the way it averaged them
    seen, base = [], losses.diffusion_loss(schedules.CosineSchedule())

    def recording_loss(model, x0, y, g):
        value = base(model, x0, y, g)
        seen.append(value.item())
        return value

    torch.manual_seed(123)
    data = lambda n, g: toy.sample_2d("8gaussians", n, generator=g)  # noqa: E731
    res = train(MLP(hidden=32, depth=2), recording_loss, data, TrainConfig(**{**SMALL, "steps": 25}))
    ends = [10, 20, 25]
    expected = [(end, sum(seen[start:end]) / len(seen[start:end])) for start, end in zip([0] + ends, ends)]
    assert res.history == expected  # exactly: same numbers, same order of summation


class _TinyDenoiser(torch.nn.Module):
    """A conditional denoiser with no argument checks, so that its forward reads nothing back."""

    n_classes = 3
    prediction = "eps"

    def __init__(self):
        super().__init__()
        self.label = torch.nn.Embedding(4, 2)
        self.net = torch.nn.Linear(3, 2)

    def forward(self, x_t, t, y=None):
        return self.net(torch.cat([x_t, t[:, None]], dim=1)) + self.label(y)  # (B, 3) -> (B, 2)


def _sync_free_loss(model, x0, y, generator):
    t = noise.rand((x0.shape[0],), generator=generator, device=x0.device)  # (B,)
    eps = noise.randn_like(x0, generator=generator)
    return ((model(x0 + t[:, None] * eps, t, y) - eps) ** 2).mean()


def _count_syncs(steps, log_every):
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    y = torch.arange(64) % 3
    config = TrainConfig(**{**SMALL, "steps": steps, "log_every": log_every}, label_dropout=0.2)
    with count_syncs() as log:
        res = train(_TinyDenoiser(), _sync_free_loss, x, config, labels=y)
    return log, res


def test_a_training_step_reads_nothing_back_to_the_host():
    # With a model and a loss that never sync, the loop's only host reads are its log lines:
    # one per history entry, however many steps run between them, plus the check of the
    # labels' values where they enter train() (two reads, once per call).
    for steps, log_every in [(20, 10), (40, 10), (20, 100), (40, 100)]:
        log, res = _count_syncs(steps, log_every)
        in_loop = [(name, where) for name, where in log.calls if not where.startswith("_check.py:")]
        assert len(in_loop) == len(res.history), f"steps={steps}, log_every={log_every}:\n{log.report()}"
        assert all(where.startswith("train.py:") for _, where in in_loop), log.report()
        assert log.count - len(in_loop) == 2, log.report()


@pytest.mark.parametrize("cfg,match", [
    ({"steps": 0}, "config.steps"),
    ({"log_every": 0}, "config.log_every"),
    ({"checkpoint_every": -1}, "config.checkpoint_every"),
    ({"checkpoint": ""}, "config.checkpoint"),
    ({"label_dropout": 0.5}, "n_classes"),
    ({"ema_decay": 1.5}, "ema_decay"),
    ({"device": "cuda:7"}, "CUDA|cuda"),
])
def test_bad_configs(cfg, match):
    with pytest.raises((ValueError, RuntimeError), match=match):
        _run(**cfg)

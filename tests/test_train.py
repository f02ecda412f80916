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
    return train(model, losses.diffusion_loss(schedules.CosineSchedule()), data,
                 TrainConfig(seed=seed, **{**SMALL, **kw}))


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
    ({"precision": "half"}, "config.precision"),
    ({"rng": "gpu"}, "config.rng"),
])
def test_bad_configs(cfg, match):
    with pytest.raises((ValueError, RuntimeError), match=match):
        _run(**cfg)


# -- Chapter 10: the nan guard, precision, compile, memory format -------------------------------

from dmlib import checkpoint  # noqa: E402
from dmlib.nn import UNet  # noqa: E402
from dmlib.train import NonFiniteLossError, amp_policy  # noqa: E402


def _poisoned(at_call, how="loss"):
    """The diffusion loss, except that call number ``at_call`` (1-based) returns inf, or, with
    how="grad", a finite loss whose gradient is nan."""
    base, calls = losses.diffusion_loss(schedules.CosineSchedule()), []

    def loss(model, x0, y, g):
        value = base(model, x0, y, g)
        calls.append(1)
        if len(calls) == at_call:
            if how == "loss":
                return value * float("inf")
            # d sqrt(u)/du is infinite at u = 0: the gradient is inf * 0 = nan
            return value + torch.sqrt(0.0 * next(model.parameters()).sum())
        return value

    return loss


@pytest.mark.parametrize("how", ["loss", "grad"])
@pytest.mark.parametrize("log_every,save_every,bad_step,interval,kept", [
    (5, 10, 13, "steps 11-15", 10),  # found at a log line
    (10, 4, 6, "steps 5-8", 4),  # found at a save between log lines
])
def test_nan_guard_names_the_interval_and_keeps_the_last_checkpoint(
        tmp_path, how, log_every, save_every, bad_step, interval, kept):
    stem = str(tmp_path / "run")
    config = TrainConfig(**{**SMALL, "steps": 30, "log_every": log_every}, checkpoint=stem,
                         checkpoint_every=save_every)
    data = lambda n, g: toy.sample_2d("8gaussians", n, generator=g)  # noqa: E731
    torch.manual_seed(123)
    with pytest.raises(NonFiniteLossError, match=rf"{interval} .*step {kept}\) .*intact"):
        train(MLP(hidden=32, depth=2), _poisoned(bad_step, how), data, config)
    assert checkpoint.read_record(stem)["step"] == kept
    # the kept state is finite and the run resumes from it (the same loss, now never poisoned)
    res = train(MLP(hidden=32, depth=2), _poisoned(10**9), data, config)
    assert res.history[-1][0] == 30 and all(torch.isfinite(p).all() for p in res.model.parameters())


def test_nan_guard_without_a_checkpoint_says_nothing_was_saved():
    data = lambda n, g: toy.sample_2d("8gaussians", n, generator=g)  # noqa: E731
    with pytest.raises(NonFiniteLossError, match="steps 1-10 .*no checkpoint"):
        train(MLP(hidden=32, depth=2), _poisoned(4), data, TrainConfig(**SMALL))


@pytest.mark.parametrize("device,capability,precision,expected", [
    ("cpu", None, "auto", (None, False)),
    ("cpu", None, "bf16", (torch.bfloat16, False)),
    ("cuda", (9, 0), "auto", (torch.bfloat16, False)),  # H100, H200
    ("cuda", (8, 0), "auto", (torch.bfloat16, False)),  # A100
    ("cuda", (7, 5), "auto", (torch.float16, True)),  # T4: fp16 and a gradient scaler
    ("cuda", (7, 5), "fp32", (None, False)),
])
def test_precision_policy(monkeypatch, device, capability, precision, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
    assert amp_policy(precision, device) == expected


@pytest.mark.parametrize("device,capability,precision,match", [
    ("cuda", (7, 5), "bf16", "T4.*7.5.*no native bfloat16"),
    ("cpu", None, "fp16", "needs a CUDA GPU"),
    ("cpu", None, "half", "config.precision"),
])
def test_precision_policy_refuses_what_the_device_cannot_do(monkeypatch, device, capability,
                                                            precision, match):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla T4")
    with pytest.raises(ValueError, match=match):
        amp_policy(precision, device)


def test_bf16_autocast_learns_and_reads_nothing_more_back():
    res = _run(precision="bf16")
    assert res.history[-1][1] < 0.8 * res.history[0][1]
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(**{**SMALL, "steps": 20, "log_every": 10}, precision="bf16")
    with count_syncs() as log:
        train(_TinyDenoiser(), _sync_free_loss, x, config, labels=torch.arange(64) % 3)
    in_loop = [c for c in log.calls if not c[1].startswith("_check.py:")]
    assert len(in_loop) == 2, log.report()


def _tiny_unet_run(**kw):
    torch.manual_seed(0)
    model = UNet(channels=8, mults=(1, 2), blocks=1, attention=(14,), heads=2, groups=4)
    x = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    config = TrainConfig(**{**SMALL, "steps": 3, "batch_size": 8, "log_every": 3, **kw})
    return train(model, losses.diffusion_loss(schedules.CosineSchedule()), x, config)


def test_channels_last_computes_the_same_training_steps():
    a, b = _tiny_unet_run(), _tiny_unet_run(channels_last=True)
    conv = next(p for p in b.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_compiled_training_matches_eager():
    a, b = _run(steps=5, log_every=5), _run(steps=5, log_every=5, compile=True)
    assert b.history[0][1] == pytest.approx(a.history[0][1], rel=1e-4)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    # the returned model is the plain module (its state dict has no compile prefix)
    assert all(not k.startswith("_orig_mod") for k in b.model.state_dict())

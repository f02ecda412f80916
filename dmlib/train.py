"""The one training loop of the book. Section 2.4.

``train(model, loss, data, config)`` takes any model of the denoiser protocol, a loss
built by :mod:`dmlib.losses` (which draws times and noise itself), and data given either
as a tensor (with optional labels) or as a sampler ``data(n, generator)`` of fresh
points, as 2D toys are. It keeps an exponential moving average (EMA) of the weights,
clips gradients, drops class labels for classifier-free guidance, shows a progress bar,
and repeats exactly on a CPU for a given seed.

A training step never reads a value back to the host: the losses stay on the device and
are read once per ``log_every`` steps. With ``config.checkpoint`` set, the whole
training state (model, EMA, optimiser, learning-rate schedule, generator, loss history)
is saved with :mod:`dmlib.checkpoint`, and a run that was interrupted continues from its
last save and ends exactly where an uninterrupted run would have (Chapter 10). It
continues only the same run: the same config, loss and data, which the checkpoint's
record describes.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
import warnings
from dataclasses import asdict, dataclass, field

import torch
from . import _check, checkpoint, noise
from .run import get_device, progress


@dataclass
class TrainConfig:
    """Settings of :func:`train`; every default is a small CPU-friendly run
    (Section 2.4)."""

    steps: int = 2000  # optimiser steps
    batch_size: int = 512  # samples per step
    # AdamW learning rate (after warm-up, then cosine decay to lr_min_ratio * lr)
    lr: float = 1e-3
    lr_min_ratio: float = 0.1  # final learning rate as a fraction of lr
    warmup: int = 100  # linear warm-up steps
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float | None = 1.0  # max gradient norm (None: no clipping)
    ema_decay: float | None = 0.999  # EMA of the weights (None: no EMA)
    # probability of replacing a label by "no class" (CFG training)
    label_dropout: float = 0.0
    seed: int = 0  # seeds the data order, times and noise
    device: str | None = None  # None: dmlib.run.get_device()
    log_every: int = 50  # steps between history entries
    progress: bool = True  # show a tqdm progress bar
    # path stem of the saved training state (None: nothing is saved)
    checkpoint: str | None = None
    # steps between saves (0: only at the end, when checkpoint is set)
    checkpoint_every: int = 0
    # when the checkpoint exists, continue from it (False: start over, overwrite it)
    resume: bool = True


# Settings that may change between an interrupted run and its resumption: they do not
# change what is computed. Every other field must match, or the resumed run would not be
# the same run.
RESUMABLE_CHANGES = ("device", "progress", "checkpoint", "checkpoint_every", "resume")


@dataclass
class TrainResult:
    """What :func:`train` returns: the model, its EMA copy and the loss history.
    Section 2.4."""

    model: torch.nn.Module
    ema: torch.nn.Module | None
    # (step, mean loss over the last log_every steps)
    history: list = field(default_factory=list)

    @property
    def best(self) -> torch.nn.Module:
        """The EMA model when there is one, else the model: the one to sample from."""
        return self.ema if self.ema is not None else self.model


def _batch(data, labels, n, generator, device):
    if callable(data):
        out = data(n, generator)
        x, y = out if isinstance(out, tuple) else (out, None)
    else:
        idx = noise.randint(
            0, data.shape[0], (n,), generator=generator, device=data.device
        )
        x, y = data[idx], (labels[idx] if labels is not None else None)
    return x.to(device), (y.to(device) if y is not None else None)


def _check_config(config, data, labels, model):
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    _check.positive_int(config.steps, "config.steps")
    _check.positive_int(config.batch_size, "config.batch_size")
    _check.positive_int(config.log_every, "config.log_every")
    if not (0.0 <= config.label_dropout < 1.0):
        raise ValueError(
            f"config.label_dropout must be in [0, 1), got {config.label_dropout}"
        )
    if config.ema_decay is not None and not (0.0 < config.ema_decay < 1.0):
        raise ValueError(
            f"config.ema_decay must be in (0, 1) or None, got {config.ema_decay}"
        )
    if config.checkpoint is not None and (
        not isinstance(config.checkpoint, str) or not config.checkpoint
    ):
        raise ValueError(
            "config.checkpoint must be a path (a non-empty str) or None, "
            f"got {config.checkpoint!r}"
        )
    if (
        isinstance(config.checkpoint_every, bool)
        or not isinstance(config.checkpoint_every, int)
        or config.checkpoint_every < 0
    ):
        raise ValueError(
            "config.checkpoint_every must be an integer >= 0 (0: only at the end), "
            f"got {config.checkpoint_every!r}"
        )
    if not callable(data):
        _check.tensor(data, "data", min_dim=2)
        if labels is not None and (
            not isinstance(labels, torch.Tensor) or labels.shape != (data.shape[0],)
        ):
            raise ValueError(f"labels must be a tensor of shape ({data.shape[0]},)")
        n_classes = getattr(model, "n_classes", None)
        _check.labels(labels, data.shape[0], n_classes, "labels")  # values, once
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            "model has no trainable parameters "
            "(an EMA copy? call model.requires_grad_(True) first)"
        )
    if config.label_dropout > 0 and getattr(model, "n_classes", None) is None:
        raise ValueError(
            "config.label_dropout > 0 needs a class-conditional model (model.n_classes)"
        )


def _describe(obj) -> str:
    """A short description of a loss or a data sampler that is the same in every
    session: its repr without memory addresses (a function's repr names it,
    ``toy.DataSampler``'s names its data), with the ``schedule`` and ``weighting`` a
    loss of :mod:`dmlib.losses` carries."""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))
    for attr in ("schedule", "weighting"):
        if hasattr(obj, attr):
            text += f", {attr}={getattr(obj, attr)!r}"
    return text


def _describe_tensor(tensor: torch.Tensor) -> str:
    """Shape, dtype and sha256 of a data tensor (one pass over its bytes, on the host).
    """
    # (N,); a copy only from another device
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    # the raw bytes, no copy
    digest = hashlib.sha256(flat.view(torch.uint8).numpy()).hexdigest()
    return (
        f"tensor {tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')} "
        f"sha256 {digest[:16]}"
    )


def _inputs(loss, data, labels) -> dict:
    """What a run reads besides its config, as the checkpoint records it for a
    resumption to compare."""
    return {
        "loss": _describe(loss),
        "data": _describe(data) if callable(data) else _describe_tensor(data),
        "labels": _describe_tensor(labels) if labels is not None else None,
    }


def _check_same_run(record: dict, config: TrainConfig, inputs: dict, path: str) -> None:
    """Refuse to resume a checkpoint written with other settings, loss or data (it would
    be another run)."""
    now, saved = asdict(config), record.get("config") or {}
    diffs = [
        f"{k}: saved {saved.get(k)!r}, now {now[k]!r}"
        for k in now
        if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]
    ]
    saved = record.get("inputs") or {}
    diffs += [
        f"{k}: saved {saved.get(k)!r}, now {inputs[k]!r}"
        for k in inputs
        if saved.get(k) != inputs[k]
    ]
    if diffs:
        raise checkpoint.CheckpointError(
            f"config.checkpoint {path!r} was saved by a run with other settings "
            f"({'; '.join(diffs)}); resuming would not continue the same run. "
            "Use the same config, loss and data, another config.checkpoint, "
            "or resume=False to start over"
        )


def train(
    model: torch.nn.Module,
    loss,
    data,
    config: TrainConfig | None = None,
    *,
    labels=None,
) -> TrainResult:
    """Fit ``model`` by minimising ``loss(model, x0, y, generator)`` over
    ``config.steps`` steps.

    ``data`` is a tensor (N, ...) of training examples, with ``labels`` (N,) for
    conditional models, or a callable ``data(n, generator)`` returning x0 or (x0, y).
    Section 2.4. With ``config.checkpoint`` the training state is saved every
    ``config.checkpoint_every`` steps and at the end, and a later call with the same
    config, loss and data resumes from it; with any of them changed it refuses, saying
    what differs (Chapter 10).
    """
    config = config or TrainConfig()
    _check_config(config, data, labels, model)
    null_label = getattr(model, "n_classes", None)

    device = get_device(config.device)
    model = model.to(device)
    ema = None
    if config.ema_decay is not None:
        ema = copy.deepcopy(model).requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    # foreach: one kernel per step for all parameters rather than one per tensor (small
    # models on a CPU spend much of a step in optimizer overhead)
    opt = torch.optim.AdamW(
        params, lr=config.lr, weight_decay=config.weight_decay, foreach=True
    )
    ema_params = []
    if ema is not None:
        ema_params = [
            p for p, q in zip(ema.parameters(), model.parameters()) if q.requires_grad
        ]

    def lr_at(step):  # linear warm-up, then cosine decay
        if step < config.warmup:
            return (step + 1) / config.warmup
        p = (step - config.warmup) / max(1, config.steps - config.warmup)
        cosine = 1 + math.cos(math.pi * p)  # from 2 down to 0
        return config.lr_min_ratio + (1 - config.lr_min_ratio) * 0.5 * cosine

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    g = torch.Generator().manual_seed(config.seed)
    # running: this log interval's losses, 0-d tensors on the device
    start, history, running = 0, [], []
    inputs = _inputs(loss, data, labels) if config.checkpoint is not None else None
    if (
        config.checkpoint is not None
        and config.resume
        and checkpoint.exists(config.checkpoint)
    ):
        if checkpoint.unfinished_first_save(config.checkpoint):
            weights, record = checkpoint.files(config.checkpoint)
            warnings.warn(
                f"{weights} has no record {record.name} and no backup beside it: "
                "the first save of this run was interrupted before its record was "
                "written. It is not a checkpoint; "
                "starting from step 0 and overwriting it",
                stacklevel=2,
            )
        else:
            saved = checkpoint.read_record(config.checkpoint)
            _check_same_run(saved, config, inputs, config.checkpoint)
            state = checkpoint.load_training_state(
                config.checkpoint,
                model=model,
                ema=ema,
                optimizer=opt,
                scheduler=sched,
                generator=g,
            )
            start, history = state["step"], state["history"]
            # (n,) -> n tensors of shape ()
            running = list(state["running"].to(device))

    model.train()
    bar = progress(
        range(start, config.steps),
        desc="training",
        disable=not config.progress,
        initial=start,
        total=config.steps,
    )
    for step in bar:
        x0, y = _batch(data, labels, config.batch_size, g, device)
        if y is not None and config.label_dropout > 0:
            u = noise.rand((y.shape[0],), generator=g, device=device)
            drop = u < config.label_dropout
            y = torch.where(drop, torch.full_like(y, null_label), y)
        value = loss(model, x0, y, g)
        opt.zero_grad(set_to_none=True)
        value.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip, foreach=True)
        opt.step()
        sched.step()
        if ema is not None:
            with torch.no_grad():
                # warm-up of the decay, so the random initial weights are
                # forgotten quickly
                decay = min(config.ema_decay, (1 + step) / (10 + step))
                for p_ema, p in zip(ema_params, params):
                    p_ema.lerp_(p, 1 - decay)
        running.append(value.detach())
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            # sync: the one host read per log interval, (n,) -> n floats
            values = torch.stack(running).tolist()
            history.append((step + 1, sum(values) / len(values)))
            bar.set_postfix(loss=f"{history[-1][1]:.4f}")
            running = []
        if config.checkpoint is not None and (
            step + 1 == config.steps
            or (config.checkpoint_every and (step + 1) % config.checkpoint_every == 0)
        ):
            # sync: copies the training state to the host,
            # once per checkpoint_every steps
            checkpoint.save_training_state(
                config.checkpoint,
                model=model,
                ema=ema,
                optimizer=opt,
                scheduler=sched,
                generator=g,
                step=step + 1,
                history=history,
                running=running,
                config=asdict(config),
                inputs=inputs,
            )
    model.eval()
    if ema is not None:
        ema.eval()
    return TrainResult(model, ema, history)

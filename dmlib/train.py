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

For GPUs (Chapter 10): mixed precision chosen by the device (:func:`amp_policy`),
``torch.compile``, channels_last, a nan/inf guard that costs no per-step sync, and
data-parallel training in every process of a ``torchrun`` launch (:func:`init_distributed`),
which computes what one process would on the same global batch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import _check, checkpoint, noise
from .run import get_device, progress


@dataclass
class TrainConfig:
    """Settings of :func:`train`; every default is a small CPU-friendly run
    (Section 2.4; the GPU settings in Chapter 10)."""

    steps: int = 2000  # optimiser steps
    # samples per step: the global batch, split evenly between the processes of a
    # data-parallel run (torchrun, Chapter 10)
    batch_size: int = 512
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
    # arithmetic of the forward pass: "auto" (bf16 on a CUDA GPU that has it natively,
    # compute capability >= 8.0; fp16 with a gradient scaler on older GPUs; fp32 on a
    # CPU and on MPS), or "fp32", "bf16", "fp16" (Chapter 10)
    precision: str = "auto"
    compile: bool = False  # torch.compile the model for training (Chapter 10)
    channels_last: bool = False  # NHWC memory format for image models (Chapter 10)
    # where the training draws happen: "cpu" (a seed gives the same run on every
    # machine) or "device" (a generator on the GPU: no host work per step)
    rng: str = "cpu"


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RNGS = ("cpu", "device")

# Settings that may change between an interrupted run and its resumption: they do not
# change what is computed (compile and the memory format change the order of floating-
# point operations at most). Every other field must match, or the resumed run would not
# be the same run.
RESUMABLE_CHANGES = (
    "device", "progress", "checkpoint", "checkpoint_every", "resume", "compile",
    "channels_last",
)


@dataclass
class TrainResult:
    """What :func:`train` returns: the model, its EMA copy and the loss history.
    Section 2.4."""

    model: torch.nn.Module
    ema: torch.nn.Module | None
    # (step, mean loss over the last log_every steps)
    history: list = field(default_factory=list)
    # (step, images per second over the last log interval), timed between the host
    # reads of two log lines, so it counts finished work on a GPU too (Chapter 10)
    rates: list = field(default_factory=list)

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
    _check.choice(config.precision, "config.precision", PRECISIONS)
    _check.choice(config.rng, "config.rng", RNGS)
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
    """Shape, dtype and sha256 of a data tensor (one pass over its bytes, on the host)."""
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
    # a field added to TrainConfig after the save had its default then
    default = asdict(TrainConfig())
    diffs = [
        f"{k}: saved {saved.get(k, default[k])!r}, now {now[k]!r}"
        for k in now
        if k not in RESUMABLE_CHANGES and saved.get(k, default[k]) != now[k]
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


def amp_policy(precision: str, device) -> tuple[torch.dtype | None, bool]:
    """What ``config.precision`` means on ``device``: the autocast dtype (None: plain
    fp32, no autocast) and whether a gradient scaler is needed (fp16). Chapter 10.

    ``"auto"`` picks bf16 on a CUDA GPU of compute capability >= 8.0 (A100, H100,
    RTX 30xx and later: bf16 tensor cores), fp16 with a gradient scaler on older CUDA
    GPUs (a T4 reports bf16 support, but emulates it slowly), and fp32 on a CPU or
    Apple's MPS.
    """
    _check.choice(precision, "config.precision", PRECISIONS)
    device = torch.device(device)
    native_bf16 = False
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        native_bf16 = major >= 8
    if precision == "auto":
        if device.type != "cuda":
            return None, False
        precision = "bf16" if native_bf16 else "fp16"
    if precision == "fp32":
        return None, False
    if precision == "bf16":
        if device.type == "cuda" and not native_bf16:
            raise ValueError(
                f"config.precision='bf16' on {torch.cuda.get_device_name(device)} "
                f"(compute capability {major}.{minor}): this GPU has no native "
                "bfloat16 (it emulates it, slowly); use 'fp16' (with a gradient "
                "scaler) or 'auto'"
            )
        return torch.bfloat16, False
    if device.type != "cuda":
        raise ValueError(
            "config.precision='fp16' needs a CUDA GPU (its gradient scaler is "
            f"CUDA's); on {device.type} use 'bf16' or 'fp32'"
        )
    return torch.float16, True


class _DataParallel(torch.nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that lets a loss read the model's attributes
    (``prediction``, ``n_classes``) as it would on the bare model."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":  # not set yet (inside __init__): no recursion
                raise
            return getattr(self.module, name)


def _world() -> tuple[int, int]:
    """(rank, number of processes) of the data-parallel run this process belongs to;
    (0, 1) outside one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_mean(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """The mean of ``tensor`` over the processes (itself in a single process)."""
    if world > 1:
        tensor = tensor.clone()
        torch.distributed.all_reduce(tensor)
        tensor /= world
    return tensor


class NonFiniteLossError(FloatingPointError):
    """Training produced a nan or inf loss (or gradient); raised by :func:`train` at the
    first log line or save after it, before anything is saved. Chapter 10."""


def _diverged(first: int, last: int, config: TrainConfig, saved: int | None):
    where = (
        f"the last checkpoint {config.checkpoint!r} (step {saved}) was saved before "
        "it and is intact; "
        if saved is not None
        else "no checkpoint was saved by this call; "
    )
    return NonFiniteLossError(
        f"training diverged: a nan or inf loss or gradient in steps {first}-{last} "
        f"(the interval checked at step {last}; log_every={config.log_every}). "
        + where
        + "lower config.lr, keep config.grad_clip on, or try config.precision='fp32'"
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

    Called in every process of a ``torchrun`` launch (after
    ``torch.distributed.init_process_group``), it trains data-parallel: every process
    draws the same global batch and keeps its share, ``batch_size / world`` rows, and
    the loss draws its times and noise through a :class:`dmlib.noise.Shard`, so the
    run computes what one process would on the same global batch. Rank 0 logs, shows the
    progress bar and saves. A nan or inf loss (or, without a gradient scaler, gradient
    norm) stops the run with :class:`NonFiniteLossError` at the next log line or save,
    whichever comes first, and nothing is saved after it (Chapter 10).
    """
    config = config or TrainConfig()
    _check_config(config, data, labels, model)
    null_label = getattr(model, "n_classes", None)
    rank, world = _world()
    if config.batch_size % world:
        raise ValueError(
            f"config.batch_size ({config.batch_size}) is the global batch and must "
            f"divide evenly between the {world} processes of this run"
        )
    local = config.batch_size // world

    device = get_device(config.device)
    autocast_dtype, scaled = amp_policy(config.precision, device)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = None
    if config.ema_decay is not None:
        ema = copy.deepcopy(model).requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    # foreach: one kernel per step for all parameters rather than one per tensor (small
    # models on a CPU spend much of a step in optimizer overhead)
    opt = torch.optim.AdamW(
        params, lr=config.lr, weight_decay=config.weight_decay, foreach=True
    )
    # fp16 only: scales the loss so small gradients survive in half precision; it skips
    # a step whose gradients overflowed and lowers the scale (a no-op when disabled)
    scaler = torch.amp.GradScaler(device.type, enabled=scaled)
    ema_params, ema_buffers = [], []
    if ema is not None:
        ema_params = [
            p for p, q in zip(ema.parameters(), model.parameters()) if q.requires_grad
        ]
        # buffers (batch-norm statistics) are copied, not averaged
        ema_buffers = list(zip(ema.buffers(), model.buffers()))

    def lr_at(step):  # linear warm-up, then cosine decay
        if step < config.warmup:
            return (step + 1) / config.warmup
        p = (step - config.warmup) / max(1, config.steps - config.warmup)
        cosine = 1 + math.cos(math.pi * p)  # from 2 down to 0
        return config.lr_min_ratio + (1 - config.lr_min_ratio) * 0.5 * cosine

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    g = torch.Generator(device if config.rng == "device" else "cpu")
    g.manual_seed(config.seed)
    # running: this log interval's losses, 0-d tensors on the device
    start, history, running, rates = 0, [], [], []
    saved_step = None
    inputs = _inputs(loss, data, labels) if config.checkpoint is not None else None
    if (
        config.checkpoint is not None
        and config.resume
        and checkpoint.exists(config.checkpoint)
    ):
        if checkpoint.unfinished_first_save(config.checkpoint):
            weights, record = checkpoint.files(config.checkpoint)
            if rank == 0:
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
                scaler=scaler,
            )
            start, history = state["step"], state["history"]
            saved_step = start
            # (n,) -> n tensors of shape ()
            running = list(state["running"].to(device))

    # what the loss calls: the model, wrapped for several processes and compiled
    net = model
    if world > 1:
        ids = [device] if device.type == "cuda" else None
        net = _DataParallel(model, device_ids=ids)
    if config.compile:
        net = torch.compile(net)
    draws = g if world == 1 else noise.Shard(g, rank, world)
    # a device-side flag: did any step since the last check see a nan or inf?
    bad = torch.zeros((), dtype=torch.bool, device=device)
    checked = start  # the last step the flag was read at

    def check(step):  # sync: one host read, at a log line or a save
        nonlocal checked
        flag = _all_mean(bad.float(), world)
        if flag.item() > 0:  # sync: reads the flag (a log line or a save only)
            raise _diverged(checked + 1, step, config, saved_step)
        checked = step

    model.train()
    bar = progress(
        range(start, config.steps),
        desc="training",
        disable=not config.progress or rank != 0,
        initial=start,
        total=config.steps,
    )
    clock = time.perf_counter()
    for step in bar:
        x0, y = _batch(data, labels, config.batch_size, g, device)
        if y is not None and config.label_dropout > 0:
            u = noise.rand((y.shape[0],), generator=g, device=device)
            drop = u < config.label_dropout
            y = torch.where(drop, torch.full_like(y, null_label), y)
        if world > 1:  # this process's share of the global batch
            x0 = x0[rank * local:(rank + 1) * local]
            y = y[rank * local:(rank + 1) * local] if y is not None else None
        if config.channels_last and x0.dim() == 4:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
        ):
            value = loss(net, x0, y, draws)
        opt.zero_grad(set_to_none=True)
        scaler.scale(value).backward()
        if config.grad_clip is not None:
            scaler.unscale_(opt)  # clip the true gradients (no-op without fp16)
            norm = torch.nn.utils.clip_grad_norm_(
                params, config.grad_clip, foreach=True
            )
            if not scaled:  # with fp16 an overflow is the scaler's business
                bad |= ~torch.isfinite(norm)
        bad |= ~torch.isfinite(value.detach())
        # sync (fp16 only): the scaler reads whether the gradients overflowed, once per
        # step, to skip that step (torch's GradScaler); a no-op in bf16 and fp32
        scaler.step(opt)
        scaler.update()
        sched.step()
        if ema is not None:
            with torch.no_grad():
                # warm-up of the decay, so the random initial weights are
                # forgotten quickly
                decay = min(config.ema_decay, (1 + step) / (10 + step))
                # one kernel for all tensors, not one launch per tensor
                torch._foreach_lerp_(ema_params, params, 1 - decay)
                for b_ema, b in ema_buffers:
                    b_ema.copy_(b)
        running.append(value.detach().float())
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            # sync: the one host read per log interval: the interval's losses
            # (averaged over the processes) and the nan flag, (n + 1,) -> floats
            both = torch.cat([torch.stack(running), bad.float()[None]])
            values = _all_mean(both, world).tolist()
            if values[-1] > 0:
                raise _diverged(checked + 1, step + 1, config, saved_step)
            checked = step + 1
            values = values[:-1]
            history.append((step + 1, sum(values) / len(values)))
            now = time.perf_counter()
            rate = len(values) * config.batch_size / max(now - clock, 1e-9)
            clock = now
            rates.append((step + 1, rate))
            bar.set_postfix(loss=f"{history[-1][1]:.4f}", img_s=f"{rate:.0f}")
            running = []
        if config.checkpoint is not None and (
            step + 1 == config.steps
            or (config.checkpoint_every and (step + 1) % config.checkpoint_every == 0)
        ):
            if checked != step + 1:
                check(step + 1)  # never save a diverged state
            if world > 1 and running:  # the interval so far, averaged over processes
                running = list(_all_mean(torch.stack(running), world))
            # sync: copies the training state to the host,
            # once per checkpoint_every steps; only rank 0 writes
            if rank == 0:
                checkpoint.save_training_state(
                    config.checkpoint,
                    model=model,
                    ema=ema,
                    optimizer=opt,
                    scheduler=sched,
                    generator=g,
                    scaler=scaler,
                    step=step + 1,
                    history=history,
                    running=running,
                    config=asdict(config),
                    inputs=inputs,
                )
            if world > 1:
                torch.distributed.barrier()  # no process runs ahead of the save
            saved_step = step + 1
    model.eval()
    if ema is not None:
        ema.eval()
    return TrainResult(model, ema, history, rates)


# -- the entry point: python -m dmlib.train CONFIG ---------------------------------------------
# A run is described by one JSON file (the shipped ones are in dmlib/configs/): the model and
# its size, the objective, the data, the TrainConfig, and how the weights are stored. The same
# description builds the model and trains it in a chapter (quick budgets) and on the command
# line (full budgets), so a shipped checkpoint and a learner's own run are the same recipe.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
MODEL_KINDS = ("unet", "digit_classifier", "noisy_classifier", "autoencoder", "dit")
OBJECTIVES = ("diffusion", "flow_matching", "classifier", "noisy_classifier", "autoencoder")


def load_config(name_or_path) -> dict:
    """A run's description: the JSON file at ``name_or_path``, or the shipped config of that
    name in ``dmlib/configs/`` (``"mnist_uncond"`` or ``"mnist_uncond.json"``). Chapter 7.
    """
    path = Path(name_or_path)
    if not path.is_file():
        stem = path.name.removesuffix(".json")
        path = CONFIG_DIR / f"{stem}.json"
        if not path.is_file():
            known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
            raise FileNotFoundError(
                f"no config file {name_or_path!r} and no shipped config of that name; "
                f"shipped: {', '.join(known)}"
            )
    try:
        cfg = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"config {path} is not valid JSON ({err})") from None
    missing = [
        k for k in ("name", "model", "objective", "data", "train") if k not in cfg
    ]
    if missing:
        raise ValueError(
            f"config {path} lacks the sections {missing} (needs name, model, objective, data, train)"
        )
    _check.choice(cfg["model"].get("kind"), "model.kind", MODEL_KINDS)
    _check.choice(cfg["objective"].get("kind"), "objective.kind", OBJECTIVES)
    TrainConfig(**cfg["train"])  # unknown fields fail here, with their names
    return cfg


def build_model(cfg: dict) -> torch.nn.Module:
    """A fresh, untrained model of the config's ``model`` section, its initial weights drawn
    with the seed of ``train.seed`` (the global generator is left as it was). Chapter 7.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["train"].get("seed", 0))
        return _build_model(cfg)


def _build_model(cfg: dict) -> torch.nn.Module:
    from .nn import autoencoder, classifier, dit, unet

    kind, params = cfg["model"]["kind"], dict(cfg["model"].get("config", {}))
    if kind == "unet":
        return unet.UNet(unet.UNetConfig.from_dict(params))
    if kind == "autoencoder":
        return autoencoder.Autoencoder(autoencoder.AutoencoderConfig.from_dict(params))
    if kind == "dit":
        return dit.DiT(dit.DiTConfig.from_dict(params))
    if kind == "digit_classifier":
        return classifier.DigitClassifier(classifier.DigitClassifierConfig(**params))
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    return classifier.NoisyDigitClassifier(
        classifier.NoisyDigitClassifierConfig(**params)
    )


def build_loss(cfg: dict):
    """The loss of the config's ``objective`` section. Chapter 7."""
    from . import losses
    from .schedules import get_schedule

    obj = dict(cfg["objective"])
    kind = obj.pop("kind")
    if kind == "classifier":

        def cross_entropy(model, x0, y=None, generator=None):
            return torch.nn.functional.cross_entropy(model(x0), y)

        return cross_entropy
    if kind == "flow_matching":
        return losses.flow_matching_loss(**obj)
    if kind == "autoencoder":
        return losses.autoencoder_loss(**obj)
    schedule = get_schedule(obj.pop("schedule", "cosine"))
    if kind == "noisy_classifier":
        return losses.classifier_loss(schedule, **obj)
    return losses.diffusion_loss(schedule, **obj)


def load_data(cfg: dict, split: str | None = None):
    """``(images, labels or None, description)`` of the config's ``data`` section; for a
    latent model (``"latent": "NAME"``, Chapter 12) the images are the scaled latents of
    :func:`dmlib.latent.latent_data`. Chapter 7."""
    from . import data as mnist

    d = cfg["data"]
    if d.get("latent"):
        from .latent import latent_data

        return latent_data(cfg, split)[:3]
    if d.get("dataset", "mnist") != "mnist":
        raise ValueError(f"data.dataset must be 'mnist', got {d.get('dataset')!r}")
    ds = mnist.load_mnist(
        split or d.get("split", "train"), source=d.get("source", "auto"), verbose=False
    )
    labels = ds.labels if d.get("labels", False) else None
    return ds.images, labels, ds.description


def train_config(cfg: dict, **changes) -> TrainConfig:
    """The config's ``train`` section as a :class:`TrainConfig`, with ``changes``. Chapter 7."""
    return TrainConfig(**{**cfg["train"], **changes})


@torch.no_grad()
def evaluate(
    cfg: dict, model: torch.nn.Module, *, n: int = 2000, seed: int = 0
) -> dict:
    """Held-out numbers for a trained model's record: test accuracy of a classifier (all
    10,000 test digits), accuracy at t = 0.25, 0.5, 0.75 of a noisy classifier, or the
    loss on ``n`` validation digits (fixed times and noise) of a denoiser. Chapter 7."""
    device = next(model.parameters()).device
    kind = cfg["objective"]["kind"]
    model.eval()
    if kind in ("classifier", "noisy_classifier"):
        images, labels, _ = load_data(
            {**cfg, "data": {**cfg["data"], "labels": True}}, "test"
        )
        if kind == "classifier":
            logits = torch.cat(
                [
                    model(images[i : i + 1000].to(device)).cpu()
                    for i in range(0, len(images), 1000)
                ]
            )
            return {
                "test_accuracy": float((logits.argmax(1) == labels).double().mean())
            }
        from .schedules import get_schedule

        schedule = get_schedule(cfg["objective"].get("schedule", "cosine"))
        out, g = {}, torch.Generator().manual_seed(seed)
        x0, y = images[:n].to(device), labels[:n]
        for t in (0.25, 0.5, 0.75):
            a, s = schedule.alpha(torch.tensor(t)), schedule.sigma(torch.tensor(t))
            x_t = a * x0 + s * noise.randn_like(x0, generator=g)
            out[f"test_accuracy_t{t}"] = float(
                (model(x_t, t).argmax(1).cpu() == y).double().mean()
            )
        return out
    images, labels, _ = load_data(cfg, "validation")
    if kind == "autoencoder":  # Chapter 11: reconstruction from the posterior mean, KL, latent spread
        from .latent import encode_means, latent_stats
        from .nn.autoencoder import kl_to_standard_normal

        x0 = images[: min(n, images.shape[0])]
        means = encode_means(model, x0)
        x_hat = torch.cat([model.decode(means[i : i + 500].to(device)).cpu() for i in range(0, len(means), 500)])
        _, logvar = model.encode(x0[:500].to(device))
        scale, shift = latent_stats(means)
        return {
            "validation_mse": float(((x_hat - x0) ** 2).mean()),
            "validation_kl_per_dim": float(kl_to_standard_normal(means[:500].to(device), logvar).mean()
                                           / means[0].numel()),
            "latent_scale": scale,
            "latent_shift": shift,
        }
    loss = build_loss(cfg)
    g = torch.Generator().manual_seed(seed)
    n = min(n, images.shape[0])  # the 5,000-digit subset has 500 validation digits
    x0 = images[:n].to(device)
    y = labels[:n].to(device) if labels is not None else None
    values = [
        float(loss(model, x0[i : i + 500], None if y is None else y[i : i + 500], g))
        for i in range(0, n, 500)
    ]
    out = {"validation_loss": sum(values) / len(values)}
    if cfg["data"].get("latent"):  # Chapter 12: the latents' scaling, kept with the denoiser
        from .latent import latent_info

        out.update(latent_info(cfg))
    return out


# The training time of a run, over all the sessions that trained it, in runs/NAME/time.json:
# {"seconds": time of the finished sessions, "session_start": when the current one began}.
# A session killed before it finished counts up to its last save of the training state.
def _clock_write(runs: Path, seconds: float, session_start: float | None) -> None:
    tmp = runs / "time.json.tmp"
    tmp.write_text(json.dumps({"seconds": seconds, "session_start": session_start}))
    os.replace(tmp, runs / "time.json")


def _clock_so_far(runs: Path) -> float | None:
    """Seconds trained up to the last save of the training state, or None (no clock)."""
    clock = runs / "time.json"
    if not clock.is_file():
        return None
    saved = json.loads(clock.read_text())
    seconds, started = saved.get("seconds") or 0.0, saved.get("session_start")
    record = checkpoint.files(runs / "state")[1]
    if started is not None and record.is_file():
        seconds += max(0.0, record.stat().st_mtime - started)
    return seconds


def _clock_start(runs: Path, fresh: bool) -> float:
    """Start a session's clock; returns the seconds of the sessions before it."""
    runs.mkdir(parents=True, exist_ok=True)
    before = 0.0 if fresh else (_clock_so_far(runs) or 0.0)
    _clock_write(runs, before, time.time())
    return before


def init_distributed(device: str | None = None) -> str | None:
    """Join the process group of a ``torchrun`` launch and return this process's device.

    Outside ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) it does nothing and
    returns ``device``. Inside, each process trains on the GPU of its ``LOCAL_RANK``
    (backend nccl) or on the CPU (backend gloo, for tests and for machines without a GPU).
    Chapter 10.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device
    dist = torch.distributed
    if not dist.is_available():
        raise RuntimeError(
            "this build of torch has no torch.distributed; it cannot run under torchrun"
        )
    want = device or os.environ.get("DMLIB_DEVICE") or None
    dev = get_device(want)
    if dev.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = get_device(f"cuda:{local}")  # a clear error when this node has too few GPUs
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(
            "data-parallel training runs on CUDA GPUs (nccl) or on CPUs (gloo), "
            f"not on {dev.type}; launch one process without torchrun instead"
        )
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return str(dev)


def run(
    cfg: dict,
    *,
    runs=None,
    out=None,
    steps: int | None = None,
    device: str | None = None,
    fresh: bool = False,
    progress: bool = True,
) -> dict:
    """Train the run ``cfg`` describes, resumably, and save its model checkpoint.

    The training state is saved under ``runs/NAME/`` every ``train.checkpoint_every`` steps,
    so a killed run continues where it stopped when started again (``fresh=True`` starts
    over). At the end the EMA weights (or the weights, without EMA) are saved as
    ``out/NAME`` in the dtype of ``store_dtype``, with a record holding the config, seed,
    data source, code commit, device, accumulated training time and :func:`evaluate`'s
    metrics, and ``out/MANIFEST.json`` is rewritten. ``steps`` overrides the step budget.
    Returns the record. What ``python -m dmlib.train`` runs. Chapter 7.
    """
    from . import shipped

    runs = Path(runs if runs is not None else "runs") / cfg["name"]
    out = Path(out) if out is not None else shipped.shipped_dir()
    changes = {
        "checkpoint": str(runs / "state"),
        "resume": not fresh,
        "progress": progress,
    }
    if steps is not None:
        changes["steps"] = steps
    if device is not None:
        changes["device"] = device
    tcfg = train_config(cfg, **changes)
    images, labels, source = load_data(cfg)
    dev = get_device(tcfg.device)
    if cfg["data"].get("on_device", True):
        images = images.to(dev)  # MNIST is 157 MB as float32: kept where the model is
        labels = labels.to(dev) if labels is not None else None
    model = build_model(cfg)
    rank, world = _world()
    if rank == 0:
        runs.mkdir(parents=True, exist_ok=True)
        spent = _clock_start(runs, fresh)
    start = time.perf_counter()
    result = train(model, build_loss(cfg), images, tcfg, labels=labels)
    if rank != 0:  # rank 0 evaluates and saves; the others are done
        return None
    spent += time.perf_counter() - start
    _clock_write(runs, spent, None)
    best = result.best
    metrics = evaluate(cfg, best)
    metrics.update(
        train_seconds=round(spent, 1),
        final_loss=result.history[-1][1] if result.history else None,
        parameters=sum(p.numel() for p in best.parameters()),
    )
    dtype = {"float16": torch.float16, "float32": None, None: None}[
        cfg.get("store_dtype")
    ]
    record = checkpoint.save_model(
        out / cfg["name"],
        best,
        config={**cfg, "train": asdict(tcfg)},
        data_source=source,
        seed=tcfg.seed,
        step=tcfg.steps,
        metrics=metrics,
        dtype=dtype,
    )
    shipped.write_manifest(out)
    return record


def export(cfg: dict, *, runs=None, out=None) -> dict:
    """Save the EMA weights of a run's latest training state as its model checkpoint, without
    training: the run so far, evaluated and recorded at the step it reached (``--export``).
    Chapter 7."""
    from . import shipped

    runs = Path(runs if runs is not None else "runs") / cfg["name"]
    out = Path(out) if out is not None else shipped.shipped_dir()
    state = runs / "state"
    saved = checkpoint.read_record(state)
    model = build_model(cfg)
    prefix = "ema." if cfg["train"].get("ema_decay", 0.999) is not None else "model."
    checkpoint.load_model(state, model, prefix=prefix)
    metrics = evaluate(cfg, model)
    seconds = _clock_so_far(runs)
    metrics.update(
        train_seconds=None if seconds is None else round(seconds, 1),
        parameters=sum(p.numel() for p in model.parameters()),
    )
    dtype = {"float16": torch.float16, "float32": None, None: None}[
        cfg.get("store_dtype")
    ]
    tcfg = saved.get("config") or cfg["train"]
    record = checkpoint.save_model(
        out / cfg["name"],
        model,
        config={**cfg, "train": tcfg},
        data_source=load_data(cfg)[2],
        seed=tcfg.get("seed"),
        step=saved.get("step"),
        metrics=metrics,
        dtype=dtype,
    )
    shipped.write_manifest(out)
    return record


def main(argv=None) -> int:
    """``python -m dmlib.train CONFIG [--steps N] [--device D] [--runs DIR] [--out DIR]
    [--fresh] [--threads K]``. Chapter 7."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m dmlib.train",
        description=(
            "Train a model described by a JSON config (a path, or a name in dmlib/configs), resumably; "
            "save its EMA weights as a checkpoint with its record and manifest entry."
        ),
    )
    parser.add_argument("config")
    parser.add_argument(
        "--steps", type=int, default=None, help="override the step budget"
    )
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:N or mps (default: the best one here)",
    )
    parser.add_argument(
        "--runs",
        default="runs",
        help="folder of resumable training states (default: runs)",
    )
    parser.add_argument(
        "--out", default=None, help="where the checkpoint goes (default: checkpoints/)"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="start over instead of resuming"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--export",
        action="store_true",
        help="do not train: save the EMA weights of the latest training state as the checkpoint",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if args.export:
        record = export(cfg, runs=args.runs, out=args.out)
        print(
            f"[dmlib.train] exported {cfg['name']} at step {record['step']}; metrics {record['metrics']}"
        )
        return 0
    device = init_distributed(args.device)
    try:
        record = run(
            cfg,
            runs=args.runs,
            out=args.out,
            steps=args.steps,
            device=device,
            fresh=args.fresh,
        )
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if record is not None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        procs = f" ({world} processes)" if world > 1 else ""
        print(
            f"[dmlib.train] {cfg['name']}: step {record['step']} on {record['device']}{procs}; "
            f"metrics {record['metrics']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def trained(name, *, quick_steps: int = 60, quick_batch: int = 32, device=None):
    """The trained model of the run ``name`` (a shipped config or a path), as a chapter
    needs it.

    Through :func:`dmlib.shipped.load_or_train`: in full mode on a CPU or MPS the
    shipped checkpoint is loaded; on a CUDA GPU the run is trained from scratch at its
    full budget (cached after the first time); in quick mode a model of the same
    architecture is trained for ``quick_steps`` steps of ``quick_batch`` images (a smoke
    test, not a model). Returns ``(model, record)``, the model in eval mode. Chapter 7.
    """
    from .run import budget
    from .shipped import load_or_train

    cfg = load_config(name)
    tcfg = train_config(
        cfg,
        steps=budget(full=cfg["train"]["steps"], quick=quick_steps),
        batch_size=budget(full=cfg["train"]["batch_size"], quick=quick_batch),
        warmup=budget(full=cfg["train"]["warmup"], quick=min(10, quick_steps)),
        checkpoint_every=0,
        device=None if device is None else str(device),
    )
    recipe = {**cfg, "train": asdict(tcfg)}

    def fit(model):
        images, labels, _ = load_data(cfg)
        dev = get_device(tcfg.device)
        labels = labels.to(dev) if labels is not None else None
        result = train(model, build_loss(cfg), images.to(dev), tcfg, labels=labels)
        return result.best, evaluate(cfg, result.best, n=budget(full=2000, quick=200))

    source = load_data(cfg)[2]
    return load_or_train(
        cfg["name"],
        lambda: build_model(cfg),
        fit,
        config=recipe,
        data_source=source,
        device=device,
    )

"""Measuring training speed honestly: warm-up, synchronisation, FLOPs and model FLOPs
utilisation (MFU). Chapter 10.

A GPU runs asynchronously: Python queues kernels and moves on, so a stopwatch around a step
measures how fast the host queues work, not how fast the device does it. An honest timing
warms up first (the first steps compile kernels, fill caches and, with ``torch.compile``,
trace the model), then synchronises the device before reading the clock, at both ends of a
block of many steps. :func:`time_steps` does that. :func:`train_step_flops` counts the
floating-point operations of one training step with :mod:`torch.utils.flop_counter`, and
:func:`mfu` divides the achieved rate by the device's dense peak (:func:`peak_tflops`).
"""

from __future__ import annotations

import os
import time

import torch

from . import _check

# Dense (no structured sparsity) tensor-core peaks in TFLOP/s, from the vendors' data
# sheets, for the 16-bit format each GPU computes natively: bf16 from compute capability
# 8.0 on, fp16 before (a T4 or V100 has no bf16 tensor cores). Matched against
# torch.cuda.get_device_name(), first match wins: put specific names before general ones.
PEAK_TFLOPS = (
    ("H200 NVL", 835.0, "bf16"),
    ("H200", 989.0, "bf16"),  # H200 SXM: the H100 SXM's tensor cores
    ("H100 NVL", 835.0, "bf16"),
    ("H100 PCIe", 756.0, "bf16"),
    ("H100", 989.0, "bf16"),  # H100 SXM
    ("A100", 312.0, "bf16"),
    ("L40S", 362.0, "bf16"),
    ("L40", 181.0, "bf16"),
    ("L4", 121.0, "bf16"),
    ("T4", 65.0, "fp16"),
    ("V100S", 130.0, "fp16"),
    ("V100-PCIE", 112.0, "fp16"),  # as the driver names it
    ("V100", 125.0, "fp16"),  # V100 SXM2
)
PEAK_ENV = "DMLIB_PEAK_TFLOPS"


def peak_tflops(device=None) -> tuple[float, str] | None:
    """``(TFLOP/s, format)``: the dense 16-bit tensor-core peak of a CUDA ``device``
    (default: the current one), or None for a CPU, MPS or a GPU missing from
    :data:`PEAK_TFLOPS`. ``$DMLIB_PEAK_TFLOPS`` overrides it (any device), for a GPU the
    table lacks or a CPU whose peak you know. Chapter 10."""
    if os.environ.get(PEAK_ENV):
        try:
            value = float(os.environ[PEAK_ENV])
        except ValueError:
            raise ValueError(f"${PEAK_ENV} must be a number of TFLOP/s, "
                             f"got {os.environ[PEAK_ENV]!r}") from None
        if not value > 0:
            raise ValueError(f"${PEAK_ENV} must be positive, got {value}")
        return value, f"${PEAK_ENV}"
    device = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value, fmt in PEAK_TFLOPS:
        if key in name:
            return value, fmt
    return None


def synchronize(device) -> None:
    """Wait until ``device`` has finished its queued work (nothing to wait for on a
    CPU). Chapter 10."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_steps(step, *, device, warmup: int = 5, iters: int = 20) -> float:
    """Seconds per call of ``step()``, measured honestly: ``warmup`` calls first (not
    timed), then ``iters`` calls between two synchronisations of ``device``.
    Chapter 10."""
    _check.positive_int(iters, "iters")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
    for _ in range(warmup):
        step()
    synchronize(device)  # sync: the timed block starts with an idle device
    start = time.perf_counter()
    for _ in range(iters):
        step()
    synchronize(device)  # sync: ... and ends when its last kernel has finished
    return (time.perf_counter() - start) / iters


def train_step_flops(model: torch.nn.Module, loss, x0: torch.Tensor, y=None,
                     generator: torch.Generator | None = None) -> int:
    """Floating-point operations of one training step on the batch ``x0``: the loss's
    forward pass and its backward pass, counted by :class:`torch.utils.flop_counter.
    FlopCounterMode` (matrix multiplications and convolutions, a multiply-add counting
    2, and fused attention where torch registers its kernel: the CUDA kernels, not the
    CPU one of torch 2.13, which counts 0; Chapter 10 measures the gap). The optimiser's
    element-wise update is not counted, as MFU conventionally leaves it out.
    Chapter 10."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        loss(model, x0, y, generator).backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return counter.get_total_flops()


def mfu(flops_per_step: float, seconds_per_step: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the peak ``peak`` (in TFLOP/s), a
    fraction in [0, 1] (a value above 1 means a wrong peak or a wrong timing).
    Chapter 10."""
    if not (flops_per_step > 0 and seconds_per_step > 0 and peak > 0):
        raise ValueError(
            "mfu needs positive flops_per_step, seconds_per_step and peak, got "
            f"{flops_per_step}, {seconds_per_step}, {peak}"
        )
    return flops_per_step / seconds_per_step / (peak * 1e12)

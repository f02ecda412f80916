"""Argument checks used at dmlib's public boundary.

Every public function validates what it is given here, so that a wrong shape or an
out-of-range value fails with the argument's name, what was given and what is allowed,
instead of a stack trace from deep inside torch. Internals then assume valid input.

Checks of a tensor's *values* (a time outside [0, 1], a NaN) read the tensor back to the
host, which on a GPU waits for all queued work. They run once, where a user's argument
enters dmlib; a sampler's loop, a model's forward pass and a training step call unchecked
internals or :func:`time_like`, which looks at shapes and dtypes only.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch


def as_time(t, name: str = "t", *, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """Return ``t`` as a 1-D floating tensor of times in ``[lo, hi]``.

    Accepts a Python number, a 0-d tensor or a tensor of shape (B,). Integer tensors are
    rejected because continuous time inside dmlib is a float in [0, 1]; a discrete step k
    of a T-step chain is the time k / T.
    """
    if isinstance(t, bool):
        raise TypeError(f"{name} must be a float or a tensor of floats in [{lo}, {hi}], got a bool")
    if isinstance(t, (int, float)):
        t = torch.tensor([float(t)], dtype=torch.float64)  # a Python float is a double
    elif isinstance(t, torch.Tensor):
        if not t.is_floating_point():
            raise TypeError(
                f"{name} must be a floating tensor of times in [{lo}, {hi}], got dtype {t.dtype}; "
                f"for a discrete step k of a T-step chain pass k / T"
            )
        if t.dim() == 0:
            t = t.reshape(1)
        elif t.dim() != 1:
            raise ValueError(f"{name} must have shape (B,) or be a scalar, got shape {tuple(t.shape)}")
    else:
        raise TypeError(f"{name} must be a float or a torch.Tensor, got {type(t).__name__}")
    if t.numel() and (torch.isnan(t).any() or (t < lo).any() or (t > hi).any()):
        raise ValueError(
            f"{name} must lie in [{lo}, {hi}], got values in "
            f"[{t.min().item():.4g}, {t.max().item():.4g}]"
            + (" (contains NaN)" if torch.isnan(t).any() else "")
        )
    return t


def _time_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    # float64 stays float64 where the device has it (not on Apple's MPS); half becomes float32
    if dtype in (torch.float16, torch.bfloat16) or (dtype == torch.float64 and device.type == "mps"):
        return torch.float32
    return dtype


def grid_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of the times a sampler's loop makes for x: float64 on the CPU (as a Python
    float gives), x's floating dtype on an accelerator (float32 for half precision)."""
    if x.device.type == "cpu":
        return torch.float64
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def time_for(t, x: torch.Tensor, name: str = "t") -> torch.Tensor:
    """A user's time argument, validated once (:func:`as_time`), as shape (B,) next to ``x``.

    On the CPU a Python number stays a float64 tensor (it is a double). On an accelerator it is
    filled in on the device in x's floating dtype, which needs no host-to-device copy; a tensor
    is moved there, float64 becoming float32 where the device lacks it (MPS).
    """
    checked = batch_time(as_time(t, name), x, name)
    if x.device.type == "cpu":
        return checked
    if isinstance(t, (int, float)):
        return torch.full((x.shape[0],), float(t), dtype=grid_dtype(x), device=x.device)
    return checked.to(dtype=_time_dtype(checked.dtype, x.device)).to(x.device)  # cast where it is, then move


def time_order(s, t, *, strict: bool, what: str) -> None:
    """Check s < t (strict) or s <= t for two user time arguments, on their host values.
    ``what`` says why the order matters, for the message."""
    s_, t_ = as_time(s, "s"), as_time(t, "t")
    bad = (s_ >= t_) if strict else (s_ > t_)
    if bad.any():
        raise ValueError(f"need s {'<' if strict else '<='} t: {what}; "
                         f"got s = {s_.tolist()[:4]}, t = {t_.tolist()[:4]}")


def time_like(t, x: torch.Tensor, name: str = "t") -> torch.Tensor:
    """``t`` as a (B,) floating tensor on x's device, checking type, dtype and shape only.

    For a network's forward pass and other code on the hot path: no value is read back to
    the host (times outside [0, 1] are the caller's to rule out, once, at the boundary).
    A Python number becomes a tensor of x's floating dtype (float32 for half precision).
    """
    if isinstance(t, bool):
        raise TypeError(f"{name} must be a float or a tensor of floats, got a bool")
    if isinstance(t, (int, float)):
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        return torch.full((x.shape[0],), float(t), dtype=dtype, device=x.device)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a float or a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor of times in [0, 1], got dtype {t.dtype}; "
                        f"for a discrete step k of a T-step chain pass k / T")
    if t.dim() > 1:
        raise ValueError(f"{name} must have shape (B,) or be a scalar, got shape {tuple(t.shape)}")
    t = batch_time(t.reshape(-1), x, name)
    return t.to(dtype=_time_dtype(t.dtype, x.device)).to(x.device)  # cast where it is, then move


def schedule(s, name: str = "schedule"):
    """Check that ``s`` is a :class:`dmlib.schedules.Schedule`."""
    from .schedules import Schedule

    if not isinstance(s, Schedule):
        raise TypeError(f"{name} must be a dmlib.schedules.Schedule, got {type(s).__name__}")
    return s


def labels(y, n: int, n_classes: int | None, name: str = "y"):
    """Check class labels once, at a public boundary: None, an int, or an integer tensor of
    shape (n,) with values in [0, n_classes] (n_classes itself is the "no class" label)."""
    if y is None or n_classes is None:
        return y
    if isinstance(y, bool) or not isinstance(y, (int, torch.Tensor)):
        raise TypeError(f"{name} must be an int or an integer tensor of class labels, got {type(y).__name__}")
    y_t = torch.as_tensor(y)
    if y_t.is_floating_point() or y_t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels, got dtype {y_t.dtype}")
    if y_t.dim() > 1 or (y_t.dim() == 1 and y_t.shape[0] != n):
        raise ValueError(f"{name} must be one label or have shape ({n},), got shape {tuple(y_t.shape)}")
    if y_t.numel() and (y_t.min() < 0 or y_t.max() > n_classes):
        raise ValueError(f"{name} must be labels in [0, {n_classes - 1}] (or {n_classes} for 'no class'), "
                         f"got values in [{int(y_t.min())}, {int(y_t.max())}]")
    return y


def tensor(x, name: str, *, min_dim: int = 1, floating: bool = True) -> torch.Tensor:
    """Check that ``x`` is a tensor with at least ``min_dim`` dims (and floating if asked)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    return x


def batch_time(t: torch.Tensor, x: torch.Tensor, name: str = "t") -> torch.Tensor:
    """Broadcast a time of shape (1,) to the batch of ``x``, or check that shapes agree."""
    b = x.shape[0]
    if t.shape[0] == 1 and b != 1:
        return t.expand(b)
    if t.shape[0] != b:
        raise ValueError(
            f"{name} has {t.shape[0]} entries but the batch has {b}: pass one time per sample "
            f"(shape ({b},)) or a single time"
        )
    return t


def same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def positive_int(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return n


def finite_positive(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


def choice(value, name: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value

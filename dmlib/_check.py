"""Argument checks used at dmlib's public boundary.

Every public function validates what it is given here, so that a wrong shape or an
out-of-range value fails with the argument's name, what was given and what is allowed,
instead of a stack trace from deep inside torch. Internals then assume valid input.
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

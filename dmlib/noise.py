"""Every random draw of dmlib, in one place. Introduced in Section 2.5 (sampling).

A ``torch.Generator`` lives on one device, and PyTorch refuses to draw with it on another
(a CPU generator cannot fill a CUDA tensor). The book's chapters pass CPU generators on every
machine, so that a seed gives the same noise on a laptop and on a GPU. The rule is therefore:

    draw on the generator's device (the CPU when there is no generator),
    then move the result to the device and dtype it is needed in.

A GPU user who wants the draw to stay on the GPU passes a CUDA generator; then nothing is
copied. A draw moved to a CUDA device goes through pinned memory without blocking, so the
host does not wait for the GPU to finish its queued work (a plain copy from ordinary host
memory would). Half-precision results are drawn in float32 and rounded, so a seed gives the
same numbers in float16 or bfloat16 as in float32, up to that rounding (float64 draws are
different numbers).
"""

from __future__ import annotations

import torch

_DRAW_DTYPES = (torch.float32, torch.float64)


class Shard:
    """One process's share of the draws of a global batch (data-parallel training,
    Chapter 10).

    ``world`` processes train on one global batch of ``world * b`` examples, ``b`` each.
    Every process holds the same ``generator`` (same seed, same state); a draw of shape
    ``(b, ...)`` through a ``Shard`` draws the global ``(world * b, ...)`` and keeps
    rows ``rank * b`` to ``(rank + 1) * b``. Together the processes see exactly the
    numbers one process would draw for the global batch, and their generators stay
    equal. Pass it where a loss takes a generator; the draws of :mod:`dmlib.noise`
    accept it (the leading dimension must be the batch).
    """

    def __init__(self, generator: torch.Generator, rank: int, world: int):
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"Shard needs a torch.Generator, got {type(generator).__name__}"
            )
        ok = isinstance(world, int) and isinstance(rank, int) and 0 <= rank < world
        if not ok:
            raise ValueError(
                f"Shard needs 0 <= rank < world, got rank={rank!r}, world={world!r}"
            )
        self.generator, self.rank, self.world = generator, rank, world

    @property
    def device(self) -> torch.device:
        return self.generator.device

    def __repr__(self) -> str:
        return f"Shard(rank={self.rank}, world={self.world}, device={self.device})"

    def draw(self, fn, shape, **kwargs) -> torch.Tensor:
        """``fn(global_shape, generator=...)`` restricted to this process's rows."""
        shape = tuple(shape)
        if not shape:
            raise ValueError("a sharded draw needs a leading batch dimension, got ()")
        n = shape[0]
        out = fn((n * self.world, *shape[1:]), generator=self.generator, **kwargs)
        return out[self.rank * n:(self.rank + 1) * n]


def _where(generator) -> torch.device:
    """The device a draw happens on: the generator's, or the CPU for torch's global generator."""
    return generator.device if generator is not None else torch.device("cpu")


def _torch_draw(fn, shape, generator, **kwargs) -> torch.Tensor:
    """``fn(shape, generator=generator, device=<the generator's>, ...)``, through a Shard when given one."""
    if isinstance(generator, Shard):
        return generator.draw(fn, shape, device=generator.device, **kwargs)
    return fn(tuple(shape), generator=generator, device=_where(generator), **kwargs)


def _move(out: torch.Tensor, device, dtype) -> torch.Tensor:
    """Move a fresh draw to ``device`` and ``dtype``. To CUDA: cast on the host, then copy from
    pinned memory asynchronously (no wait for the GPU's queue); elsewhere a plain ``.to``."""
    device = torch.device(device) if device is not None else out.device
    out = out.to(dtype=dtype or out.dtype)
    if device.type == "cuda" and out.device.type == "cpu":
        return out.pin_memory().to(device, non_blocking=True)
    return out.to(device)


def _draw_dtype(dtype: torch.dtype | None) -> torch.dtype:
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    return dtype if dtype in _DRAW_DTYPES else torch.float32


def randn(shape, *, generator: torch.Generator | None = None, device=None,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal noise of ``shape``, drawn with ``generator`` on its own device, then
    moved to ``device`` (default: the generator's) and ``dtype`` (default: float32).

    The z ~ N(0, I) of every sampler step (Section 2.5) and the eps of every loss come from here.
    """
    out = _torch_draw(torch.randn, shape, generator, dtype=_draw_dtype(dtype))
    return _move(out, device, dtype)


def randn_like(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise of x's shape, on x's device and in x's dtype (drawn as :func:`randn`). Section 2.5."""
    return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def rand(shape, *, generator: torch.Generator | None = None, device=None,
         dtype: torch.dtype | None = None) -> torch.Tensor:
    """Uniform numbers in [0, 1) of ``shape`` (the times t of a training batch, Section 2.4), drawn as :func:`randn`."""
    out = _torch_draw(torch.rand, shape, generator, dtype=_draw_dtype(dtype))
    return _move(out, device, dtype)


def randint(low: int, high: int, shape, *, generator: torch.Generator | None = None,
            device=None) -> torch.Tensor:
    """Integers uniform in [low, high) of ``shape`` (int64), e.g. the indices of a data batch (Section 2.4)."""
    out = _torch_draw(lambda size, **kw: torch.randint(low, high, size, **kw), shape, generator)
    return _move(out, device, None)


def multinomial(probs: torch.Tensor, n_samples: int = 1, *, generator: torch.Generator | None = None,
                replacement: bool = False) -> torch.Tensor:
    """Indices drawn from the rows of ``probs`` (shape (B, K)); result on probs' device, shape (B, n_samples).

    Picks the mixture component of each sample of a Gaussian mixture (Section 1.2).
    """
    if isinstance(generator, Shard):
        raise TypeError("multinomial draws rows of probs and cannot be sharded; pass the Shard's generator")
    here = probs.to(_where(generator))
    out = torch.multinomial(here, n_samples, replacement=replacement, generator=generator)
    return _move(out, probs.device, None)


def seed_from(generator: torch.Generator | None = None) -> int:
    """A fresh integer seed drawn from ``generator`` (or torch's global generator), for code that
    draws with another library (NumPy) but must still follow dmlib's seeding (the 2D toys of
    Section 1.2). One host read."""
    return int(randint(0, 2**31 - 1, (1,), generator=generator)[0])  # sync: a CPU scalar, by design

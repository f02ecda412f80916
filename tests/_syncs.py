"""Count host syncs: every way Python code can read a tensor's value back to the host.

On a GPU each of these blocks the host until the device has finished all queued work, so a
sampler step or a training step must not call any of them. CI has no GPU; counting the calls
on CPU tensors catches on a CPU what would stall on a GPU. Used by tests/test_syncs.py and
tests/test_train.py.
"""

from __future__ import annotations

import contextlib
import traceback

import torch

# Tensor methods that hand a tensor's value to Python (or copy it to the host).
SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__format__",
                "cpu", "numpy")


class SyncLog:
    """The host reads seen inside :func:`count_syncs`, with where each came from."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    @property
    def count(self) -> int:
        return len(self.calls)

    def report(self, limit: int = 8) -> str:
        lines = [f"{name} at {where}" for name, where in self.calls[:limit]]
        more = f"\n... and {self.count - limit} more" if self.count > limit else ""
        return "\n".join(lines) + more


# torch's optimisers keep their step counters as CPU scalars on purpose (with capturable=False,
# the default) and read them with .item(): a host read of host memory, never a device sync.
NOT_SYNCS = ("torch/optim/",)


def _caller() -> tuple[str, str]:
    # the innermost frame outside this file and torch's own tensor wrappers: (path, description)
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not frame.filename.endswith(("_syncs.py", "torch/_tensor.py")):
            return frame.filename, f"{frame.filename.split('/')[-1]}:{frame.lineno} ({frame.line})"
    return "?", "?"


@contextlib.contextmanager
def count_syncs():
    """Patch every host-read method of torch.Tensor to record its calls; yields a SyncLog."""
    log = SyncLog()
    saved = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}

    def wrap(name, fn):
        def wrapper(self, *args, **kwargs):
            path, where = _caller()
            if not any(part in path for part in NOT_SYNCS):
                log.calls.append((name, where))
            return fn(self, *args, **kwargs)
        return wrapper

    for name, fn in saved.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    try:
        yield log
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)

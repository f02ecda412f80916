"""Run mode, seeding and device choice: the one place a notebook asks how much to do.

The run mode is read from the environment variable ``DMLIB_MODE``:

* ``quick`` -- tests and CI: tiny budgets, every notebook finishes in seconds on a CPU;
* ``full`` (the default) -- a reader's run: the budgets the book's figures were made with.

Notebooks never branch on the mode themselves; they ask for a budget,
``steps = budget(full=5000, quick=50)``. Introduced in Section 1.1 (the set-up cell).
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

MODE_ENV = "DMLIB_MODE"
MODES = ("quick", "full")


def run_mode() -> str:
    """Return the run mode, ``"quick"`` or ``"full"``, read from ``$DMLIB_MODE``.

    An unset or empty variable means ``"full"``; any other value is an error, so a typo
    such as ``DMLIB_MODE=fast`` cannot silently start the long run. Set-up cell of Chapter 1.
    """
    mode = os.environ.get(MODE_ENV, "").strip().lower() or "full"
    if mode not in MODES:
        raise ValueError(
            f"environment variable {MODE_ENV} must be one of {', '.join(MODES)} (or unset for full); "
            f"got {os.environ[MODE_ENV]!r}"
        )
    return mode


def is_quick() -> bool:
    """True in quick mode (tests, CI). Set-up cell of Chapter 1."""
    return run_mode() == "quick"


def budget(*, full, quick):
    """Pick a budget by run mode: ``budget(full=5000, quick=50)``.

    Both values are required so that every notebook states its full-size budget next to the
    tiny one used by the tests. Set-up cell of Chapter 1.
    """
    return quick if is_quick() else full


def set_seed(seed: int = 0) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device).

    Returns a fresh CPU ``torch.Generator`` seeded with the same value, for code that wants
    its randomness explicit (samplers and data generators take one). After ``set_seed(s)`` a
    CPU run repeats exactly. Set-up cell of Chapter 1.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """Choose the compute device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` forces a choice (``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"cpu"``); the
    environment variable ``DMLIB_DEVICE`` does the same for a whole run. Asking for a device
    that is not there raises a clear error instead of failing later inside torch.
    Set-up cell of Chapter 1.
    """
    want = prefer if prefer is not None else (os.environ.get("DMLIB_DEVICE") or None)
    if want is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(want)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"prefer (or DMLIB_DEVICE) must be 'cpu', 'cuda', 'cuda:N' or 'mps'; got {want!r}") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {want!r} was requested but CUDA is not available "
                f"(torch {torch.__version__}, built with CUDA: {torch.version.cuda is not None}). "
                "Use get_device() to fall back to the CPU, or install a CUDA build of torch."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {want!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif dev.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise RuntimeError(f"device {want!r} was requested but Apple's MPS backend is not available")
    elif dev.type != "cpu":
        raise ValueError(f"prefer (or DMLIB_DEVICE) must be 'cpu', 'cuda', 'cuda:N' or 'mps'; got {want!r}")
    return dev


def progress(iterable, *, desc: str | None = None, disable: bool = False, **kwargs):
    """A ``tqdm.auto`` progress bar over ``iterable`` (Chapter 2's training loop uses it).

    In a notebook it is a widget, in a terminal a text bar. In the static book build
    (``DMLIB_STATIC`` set) it is silent: a page shows results, not a frozen progress bar,
    and widget output would make the page load JavaScript from the network.
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=disable or bool(os.environ.get("DMLIB_STATIC")), leave=False, **kwargs)


def describe(device: torch.device | None = None) -> str:
    """One line for a notebook's first cell: run mode, device and torch version (Chapter 1)."""
    device = device if device is not None else get_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    if device.type == "cpu":
        threads = torch.get_num_threads()
        name += f" ({threads} thread{'s' if threads != 1 else ''})"
    return f"run mode: {run_mode()} | device: {name} | torch {torch.__version__}"


def checkpoint_policy(device: torch.device | str | None = None) -> str:
    """How :func:`dmlib.shipped.load_or_train` gets a trained model: ``"train"`` or ``"load"``. Chapter 7.

    * quick mode: ``"train"``, since the tiny budget trains in seconds anywhere;
    * full mode on CUDA: ``"train"``, from scratch: the full budgets take minutes on one GPU;
    * full mode on a CPU or Apple's MPS: ``"load"`` the shipped checkpoint, since the full
      budget would take hours there.

    ``device`` defaults to :func:`get_device`.
    """
    if device is None:
        device = get_device()
    elif not isinstance(device, torch.device):
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device must be a torch.device or a name such as 'cpu', 'cuda', 'mps'; "
                             f"got {device!r}") from err
    if is_quick():
        return "train"
    return "train" if device.type == "cuda" else "load"


def cache_dir():
    """The folder where dmlib keeps models it trained: ``$DMLIB_CACHE``, else
    ``$XDG_CACHE_HOME/dmlib``, else ``~/.cache/dmlib``; never inside the repository. Chapter 7.

    Returns a ``pathlib.Path``; the folder is created when something is first saved there.
    """
    from pathlib import Path

    if os.environ.get("DMLIB_CACHE"):
        return Path(os.environ["DMLIB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # XDG: relative paths are ignored
    return base / "dmlib"


def benchmark_record(name: str):
    """The committed results of ``benchmarks/<name>.py``: ``(path, record)``, where ``record``
    is the JSON file ``benchmarks/results/<name>.json`` read as a dict, or None in a copy
    without it (dmlib installed on its own). Chapter 8 (Table 8.2) and Chapter 12 show them
    with :func:`machine_words`; a chapter states a benchmark's numbers only from this record."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / f"{name}.json"
    if not path.is_file():
        return path, None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable benchmark record: {err}") from None
    if not isinstance(record, dict) or "machine" not in record:
        raise ValueError(f"{path} is not a benchmark record (no 'machine' entry)")
    return path, record


def machine_words(record: dict) -> str:
    """Where a benchmark ran, in words (the captions of Chapter 8 and Chapter 12): the GPU,
    or the CPU and its torch threads; torch, commit and date."""
    m = record["machine"]
    threads = m.get("torch_threads")
    where = m.get("gpu") or (
        f"{m['cpu']} ({threads} thread{'s' if threads != 1 else ''})" if threads else m["cpu"])
    return f"{where}, torch {m['torch']}, commit {m['commit']}, {m['date'][:10]}"


def claims_when(condition: bool):
    """A filter for the ranges given to :func:`claim`: ``on_shipped = claims_when(shipped)``
    gives ``on_shipped(range) == range`` when ``condition`` holds and ``None`` (no claim)
    otherwise. The Part II and III chapters use it so that what the text says of the
    shipped weights is checked when they were loaded, and a run trained afresh on a GPU
    shows its own numbers unchecked. Section 8.1."""
    if not isinstance(condition, (bool, np.bool_)):
        raise TypeError(f"condition must be a bool, got {type(condition).__name__}")
    condition = bool(condition)

    def on_condition(claimed):
        return claimed if condition else None

    return on_condition


def claim(name: str, value, *, full=None, quick=None):
    """Glue a number that the prose states, and check it against what the prose says of it.

    ``value`` is stored under ``name`` for the book (myst-nb's ``glue``, shown in the text as
    ``{glue:text}`name:.2f```), so the page prints what this run computed. ``full`` and
    ``quick`` say what the text claims in each run mode: a ``(low, high)`` range, or
    ``True``/``False`` for a yes-or-no statement; ``None`` claims nothing in that mode (quick
    budgets are too small for most claims). A value outside its claim stops the notebook with a
    message naming the claim, so a later change or another machine cannot silently contradict
    the text. Returns ``value`` as a Python number. Introduced in Section 2.4.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"claim {name!r}: value must be one number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()  # host read: claims are made once, after a run
    if isinstance(value, (bool, np.bool_)):
        value = bool(value)
    elif isinstance(value, (int, float, np.integer, np.floating)):
        value = float(value) if not isinstance(value, (int, np.integer)) else int(value)
    else:
        raise TypeError(f"claim {name!r}: value must be a number or a bool, got {type(value).__name__}")
    expect = quick if is_quick() else full
    if expect is not None:
        if isinstance(expect, bool):
            if bool(value) is not expect:
                raise AssertionError(
                    f"claim {name!r}: the text says {expect} in {run_mode()} mode, but this run gives {value}")
        else:
            try:
                low, high = expect
            except (TypeError, ValueError) as err:
                raise ValueError(f"claim {name!r}: a claim is (low, high) or a bool, got {expect!r}") from err
            if isinstance(value, bool) or not (low <= value <= high):
                raise AssertionError(
                    f"claim {name!r}: the text states a value in [{low}, {high}] in {run_mode()} mode, "
                    f"but this run gives {value:.6g}")
    try:
        from myst_nb import glue
    except ImportError:  # outside the book's environment (e.g. Colab) there is nothing to glue into
        return value
    glue(name, value, display=False)
    return value

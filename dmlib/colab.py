"""Google Colab: the first cell of every chapter, and what it does there (nothing elsewhere).

Every chapter, from Chapter 1 to Chapter 13, opens with the same short cell
(:func:`first_cell` writes it; ``scripts/sync_notebooks.py`` keeps the chapters equal to it).
The cell checks whether it runs on Colab (``"google.colab" in sys.modules``); anywhere else
it does nothing and prints nothing. On Colab it

1. installs this library from the book's repository at this release's tag, with
   ``pip install --no-deps``: Colab's own torch (a CUDA build), NumPy, SciPy, scikit-learn,
   Matplotlib and tqdm stay as they are, and only what Colab may lack (:data:`COLAB_EXTRA`)
   is added; nothing needs a restart. The package index's ``dmlib`` is an unrelated project,
   so the install always names the repository;
2. calls :func:`setup`: optionally mounts Google Drive and points ``$DMLIB_CACHE`` (where
   dmlib keeps the models it trains, :func:`dmlib.run.cache_dir`) at a folder there, so a
   new session finds the models a dead one trained; fetches MNIST and the shipped
   checkpoints (:func:`dmlib.fetch.everything`); prints the device, with a loud note when a
   chapter that trains its networks (:data:`TRAINING_CHAPTERS`) has no GPU. Chapter 10
   explains what the GPU changes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import __version__

# What pyproject.toml's runtime dependencies are on a Colab runtime: provided by Colab itself,
# or installed by the first cell (without their dependencies, which Colab has). Unpinned on
# purpose: pip leaves a package Colab already has alone, so nothing is up- or downgraded under
# Colab's own packages. tests/test_colab.py checks that every runtime dependency is one or the other.
COLAB_PROVIDES = ("torch", "numpy", "scipy", "scikit-learn", "matplotlib", "tqdm")
COLAB_EXTRA = ("safetensors", "mlxtend")
# The chapters whose networks train with the full budgets on a GPU (dmlib.shipped.load_or_train,
# Chapter 10's measurements); on a CPU they load the shipped checkpoints instead, or run slowly.
TRAINING_CHAPTERS = frozenset(range(7, 14))
DRIVE_ROOT = "/content/drive"  # where Colab mounts Google Drive
TAG = "colab-setup"  # the first cell's tag (with remove-cell: the web book does not show it)


def in_colab() -> bool:
    """True inside a Google Colab runtime (its ``google.colab`` module is loaded). Chapter 1's first cell."""
    return "google.colab" in sys.modules


def pip_command(repo_url: str, ref: str | None = None) -> list[str]:
    """The pip command of the first cell: dmlib from ``repo_url`` at ``ref`` (default the
    release tag ``v`` + version) and :data:`COLAB_EXTRA`, all ``--no-deps``. Chapter 1's first cell."""
    if not isinstance(repo_url, str) or not repo_url.strip():
        raise ValueError(f"repo_url must be the book repository's URL, got {repo_url!r}")
    ref = ref or f"v{__version__}"
    return [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
            f"dmlib @ git+{repo_url.strip()}@{ref}", *COLAB_EXTRA]


# What the cell prints on Colab when the book names no repository yet (one line each)
NO_REPOSITORY = (
    "This copy of the book names no repository to install dmlib from.",
    "Clone the book's repository and install its library in a cell:",
    "  !git clone URL dmbook",
    "  !pip install -q --no-deps -e dmbook safetensors mlxtend",
    "then run the notebook again.",
)


def first_cell(chapter: int, repo_url: str, version: str = __version__) -> str:
    """The source of the first cell of Chapter ``chapter``'s notebook, for the repository
    ``repo_url`` ("" when the book names none yet) at the tag ``v`` + ``version``. Chapter 1.

    The pip install has to run before dmlib can be imported, so the cell spells it out in
    plain Python; everything after it is :func:`setup`.
    """
    if isinstance(chapter, bool) or not isinstance(chapter, int) or chapter < 1:
        raise ValueError(f"chapter must be a chapter number, got {chapter!r}")
    extra = ", ".join(f'"{name}"' for name in COLAB_EXTRA)
    lines = [json.dumps(line + ("\n" if i < len(NO_REPOSITORY) - 1 else "")) for i, line in enumerate(NO_REPOSITORY)]
    message = f"\n{' ' * 14}".join(lines)
    return f'''\
# On Google Colab this cell installs the book's library, dmlib, at this release and
# fetches MNIST and the trained weights; anywhere else it does nothing. Set USE_DRIVE
# to True to keep the models you train on Google Drive for your next session.
USE_DRIVE = False
import sys

if "google.colab" in sys.modules:
    import subprocess

    REPO, TAG = "{repo_url}", "v{version}"
    if not REPO:
        print({message})
    else:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
        wanted = [f"dmlib @ git+{{REPO}}@{{TAG}}", {extra}]
        subprocess.run(pip + wanted, check=True)
        from dmlib import colab

        colab.setup(chapter={chapter}, use_drive=USE_DRIVE)'''


def setup(chapter: int, *, use_drive: bool = False, drive_root=None, drive_folder: str = "dmbook",
          fetch: bool = True, verbose: bool = True) -> dict | None:
    """What the first cell of Chapter ``chapter`` does on Colab once dmlib is installed; outside
    Colab nothing (returns None, prints nothing). Chapter 1's first cell; devices in Chapter 10.

    * ``use_drive``: mount Google Drive at ``drive_root`` (default :data:`DRIVE_ROOT`) and set ``$DMLIB_CACHE`` to
      ``MyDrive/drive_folder/cache`` there, so the models this session trains outlive it;
    * ``fetch``: :func:`dmlib.fetch.everything` (MNIST and the shipped checkpoints, verified);
    * prints :func:`dmlib.run.describe`, and a loud note when Chapter ``chapter`` trains
      (:data:`TRAINING_CHAPTERS`) and the runtime has no GPU.

    Returns ``{"device", "cache", "fetched"}``.
    """
    if isinstance(chapter, bool) or not isinstance(chapter, int) or chapter < 1:
        raise ValueError(f"chapter must be a chapter number, got {chapter!r}")
    if not in_colab():
        return None
    from . import run

    say = print if verbose else (lambda *a, **k: None)
    if use_drive:
        from google.colab import drive  # only on Colab

        drive_root = Path(drive_root if drive_root is not None else DRIVE_ROOT)
        drive.mount(str(drive_root))
        cache = Path(drive_root) / "MyDrive" / drive_folder / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        os.environ["DMLIB_CACHE"] = str(cache)
        say(f"[dmbook] models you train are kept on Google Drive: {cache} (DMLIB_CACHE)")
    fetched = None
    if fetch:
        from . import fetch as fetching

        fetched = fetching.everything(verbose=verbose)
    device = run.get_device()
    say(f"[dmbook] dmlib {__version__} | {run.describe(device)}")
    if device.type != "cuda" and chapter in TRAINING_CHAPTERS:
        say("[dmbook] !!! NO GPU: this runtime has only a CPU. Chapter "
            f"{chapter} trains its networks on a GPU; on a CPU it loads the shipped trained "
            "weights instead (and Chapter 10's measurements run slowly). For a GPU choose "
            "Runtime > Change runtime type > T4 GPU, then run the notebook again. !!!")
    return {"device": device, "cache": run.cache_dir(), "fetched": fetched}

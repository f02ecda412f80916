"""Trained models for the chapters: shipped checkpoints, their manifest, and ``load_or_train``. Chapter 7.

A chapter that needs a trained network calls :func:`load_or_train`. What it does is decided
by :func:`dmlib.run.checkpoint_policy`:

* ``"load"`` (full mode on a CPU or MPS): the shipped checkpoint in :func:`shipped_dir`, whose
  sha256 must match ``checkpoints/MANIFEST.json`` (:func:`write_manifest` writes it before
  weights are shipped);
* ``"train"`` (quick mode, or a CUDA GPU): a checkpoint in :func:`dmlib.run.cache_dir` whose
  name (:func:`cache_path`) hashes the config, the data source and dmlib's version, so a
  quick budget and a full one, or two data sets, never share a file; trained once when it is
  missing.

The files themselves (safetensors weights, the JSON record, atomic saves, verified loads) are
:mod:`dmlib.checkpoint`'s.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import torch

from . import __version__
from .checkpoint import (
    CheckpointError,
    _config_dict,
    _sha256,
    _verified_bytes,
    _write_temp,
    config_hash,
    exists,
    files,
    load_model,
    read_record,
    save_model,
)
from .run import cache_dir, checkpoint_policy, get_device

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # checkpoint names of load_or_train (no folders)


# -- shipped checkpoints and their manifest ---------------------------------------------------
def shipped_dir() -> Path:
    """The folder of shipped checkpoints: ``$DMLIB_CHECKPOINTS``, else the repository's ``checkpoints/``
    when dmlib runs from a checkout, else :func:`download_dir` (dmlib installed without the
    repository, e.g. on Colab: ``python -m dmlib.fetch`` fills it). Chapter 7."""
    env = os.environ.get("DMLIB_CHECKPOINTS")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").is_file() and (repo / "dmlib").is_dir():
        return repo / "checkpoints"
    return download_dir()


def download_dir() -> Path:
    """Where :mod:`dmlib.fetch` puts the shipped checkpoints of this release when dmlib was
    installed without the repository: ``$XDG_CACHE_HOME/dmlib/shipped-VERSION``, else
    ``~/.cache/dmlib/shipped-VERSION`` (one folder per release, apart from ``$DMLIB_CACHE``'s
    trained models). Chapter 7."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "dmlib" / f"shipped-{__version__}"


def manifest(folder=None) -> dict:
    """The entries of ``folder/MANIFEST.json`` (default :func:`shipped_dir`), ``{file name: {"sha256",
    "bytes"}}``, or ``{}`` when there is no manifest. Chapter 7."""
    path = Path(folder if folder is not None else shipped_dir()) / "MANIFEST.json"
    if not path.exists():
        return {}
    try:
        out = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(out, dict) or not all(isinstance(v, dict) and "sha256" in v for v in out.values()):
        raise CheckpointError(f"{path} must map file names to {{'sha256': ..., 'bytes': ...}}")
    return out


def write_manifest(folder=None) -> Path:
    """Write ``folder/MANIFEST.json`` listing every checkpoint in ``folder`` with its sha256, after
    checking each file against its record (the step before shipping weights); each entry also
    carries the record's config, seed, data source, step, device, commit, date and metrics.
    Chapter 7."""
    folder = Path(folder if folder is not None else shipped_dir())
    entries = {}
    for weights in sorted(folder.glob("*.safetensors")):
        record = read_record(weights)
        data = _verified_bytes(weights, record)
        entries[weights.name] = {
            "sha256": _sha256(data), "bytes": len(data),
            # what the record says about how the file was made, for a reader of the manifest
            **{k: record.get(k) for k in ("step", "seed", "data_source", "device", "git_commit", "created",
                                          "stored_dtype", "metrics")},
            "config": record.get("config"),
        }
    path = folder / "MANIFEST.json"
    tmp = _write_temp(path, (json.dumps(entries, indent=2) + "\n").encode())
    try:
        os.replace(tmp, path)
    except OSError as err:
        raise CheckpointError(f"could not put {path} in place ({err})") from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_manifest(weights: Path) -> None:
    """When the shipped folder has a manifest, the file must be listed in it with the same sha256."""
    entries = manifest(weights.parent)
    if not entries:
        return
    entry = entries.get(weights.name)
    if entry is None:
        raise CheckpointError(f"{weights} is not listed in {weights.parent / 'MANIFEST.json'}; it was not shipped")
    digest = _sha256(weights.read_bytes())
    if digest != entry["sha256"]:
        raise CheckpointError(f"{weights} does not match {weights.parent / 'MANIFEST.json'} (sha256 {digest[:12]}... "
                              f"but the manifest says {entry['sha256'][:12]}...): it is not the shipped file")


# -- load or train ----------------------------------------------------------------------------
def _cache_key(config, data_source: str | None) -> dict:
    """What a cached checkpoint of :func:`load_or_train` must have been trained with."""
    return {"config": _config_dict(config), "data_source": data_source, "dmlib_version": __version__}


def cache_path(name: str, config, data_source: str | None = None) -> Path:
    """The stem of the checkpoint :func:`load_or_train` caches ``name`` in, under the train policy. Chapter 7.

    ``NAME-<hash>`` in :func:`dmlib.run.cache_dir`, the hash taken over the config, the data
    source and dmlib's version: change any of them and the model is trained afresh rather
    than a stale one loaded.
    """
    return cache_dir() / f"{name}-{config_hash(_cache_key(config, data_source))}"


def _trained(out):
    """train_fn's result as (model, metrics)."""
    model, metrics = out if isinstance(out, tuple) else (out, None)
    if not isinstance(model, torch.nn.Module) or not (metrics is None or isinstance(metrics, dict)):
        raise TypeError("train_fn must return the trained model, or (model, metrics dict); "
                        f"got {type(out).__name__}")
    return model, metrics


def load_or_train(name: str, build_model, train_fn, *, config, data_source: str | None = None,
                  device=None) -> tuple[torch.nn.Module, dict]:
    """A trained model for checkpoint ``name``: loaded when it exists, trained when it should be. Chapter 7.

    ``build_model()`` returns a fresh model of the architecture; ``train_fn(model)`` trains it
    and returns the model to keep (e.g. ``train(...).best``, the EMA weights), optionally with
    a dict of metrics. ``config`` is the configuration ``train_fn`` trains with (a dataclass or
    dict) and ``data_source`` names its data: both are recorded, and with dmlib's version
    they name the cached file (:func:`cache_path`). ``device`` (default
    :func:`dmlib.run.get_device`) is where the model is returned and what
    :func:`dmlib.run.checkpoint_policy` decides with:

    * ``"load"``: the shipped ``NAME.safetensors`` of :func:`shipped_dir`; missing, it is an
      error that says how to train instead (never an unannounced long training);
    * ``"train"``: the cached checkpoint :func:`cache_path` when present; otherwise train once
      and save it there. A damaged cached file, or one whose record was trained with other
      settings, is an error, not a silent retraining.

    Returns ``(model, record)``, the model in eval mode; prints one line saying what it did.
    """
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"name must be a checkpoint name of letters, digits, '_', '.', '-' (no folders), got {name!r}")
    if not callable(build_model) or not callable(train_fn):
        raise TypeError("build_model and train_fn must be callables: build_model() -> model, train_fn(model) -> model")
    if data_source is not None and not isinstance(data_source, str):
        raise TypeError(f"data_source must be a str (where the training data came from) or None, "
                        f"got {type(data_source).__name__}")
    _config_dict(config)  # a config that cannot be recorded fails now, not after training
    device = get_device(None if device is None else str(device))
    policy = checkpoint_policy(device)
    model = build_model()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"build_model() must return a torch.nn.Module, got {type(model).__name__}")
    if policy == "load":
        model, record = _load_shipped(name, model, device)
    else:
        model, record = _load_cached_or_train(name, model, train_fn, config, data_source, device)
    return model.to(device).eval(), record


def _load_shipped(name: str, model: torch.nn.Module, device) -> tuple[torch.nn.Module, dict]:
    weights, _ = files(shipped_dir() / name)
    if not weights.exists():
        raise FileNotFoundError(
            f"the shipped checkpoint {weights} is missing. On this machine ({device.type}, full mode) {name!r} is "
            "loaded rather than trained, because its full budget is meant for a GPU. To train it instead, run in "
            "quick mode (DMLIB_MODE=quick: a tiny budget, in seconds) or on a CUDA GPU; or put the file back "
            "(DMLIB_CHECKPOINTS may name the folder that holds it)"
        )
    _check_manifest(weights)
    record = load_model(weights, model)
    print(f"{name}: loaded the shipped checkpoint {weights} (step {record.get('step')}, "
          f"trained on {record.get('device')}, {record.get('created')})")
    return model, record


def _load_cached_or_train(name, model, train_fn, config, data_source, device) -> tuple[torch.nn.Module, dict]:
    path = cache_path(name, config, data_source)
    weights, record_file = files(path)
    if exists(path):
        again = f"Delete {weights} and {record_file} to train {name!r} again"
        try:
            record = read_record(path)
            expected = _cache_key(config, data_source)
            differ = [f"{k}: file {record.get(k)!r}, now {v!r}" for k, v in expected.items() if record.get(k) != v]
            if differ:
                raise CheckpointError(f"{weights} was trained with other settings than this call's "
                                      f"({'; '.join(differ)})")
            load_model(path, model)
        except (CheckpointError, FileNotFoundError) as err:
            raise type(err)(f"{err}. {again}") from None
        print(f"{name}: loaded {weights} (trained earlier with this config and data)")
        return model, record
    start = time.perf_counter()
    model, metrics = _trained(train_fn(model.to(device)))
    seconds = time.perf_counter() - start
    cfg = _config_dict(config) or {}
    if isinstance(cfg.get("train"), dict):  # a run description of dmlib.train.load_config
        cfg = cfg["train"]
    record = save_model(path, model, config=config, data_source=data_source, seed=cfg.get("seed"),
                        step=cfg.get("steps"), metrics={**(metrics or {}), "train_seconds": round(seconds, 3)})
    print(f"{name}: trained in {seconds:.1f} s on {device.type} and saved to {weights}")
    return model, record


def load(name: str, *, device=None) -> tuple[torch.nn.Module, dict]:
    """The shipped model ``name``, whatever the run mode and device: for instruments such as
    the evaluation classifier of Chapter 9, which measure rather than being studied.

    The architecture is rebuilt from the config in the checkpoint's record (a run description
    of :func:`dmlib.train.load_config`); the file must match ``MANIFEST.json``. Returns
    ``(model, record)`` with the model in eval mode on ``device`` (default
    :func:`dmlib.run.get_device`). A missing file is an error that says how to make it.
    """
    from .train import build_model

    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"name must be a checkpoint name of letters, digits, '_', '.', '-' (no folders), got {name!r}")
    device = get_device(None if device is None else str(device))
    weights, _ = files(shipped_dir() / name)
    if not weights.exists():
        raise FileNotFoundError(f"the shipped checkpoint {weights} is missing; make it with "
                                f"`python -m dmlib.train {name}` (DMLIB_CHECKPOINTS may name another folder)")
    record = read_record(weights)
    cfg = record.get("config") or {}
    if "model" not in cfg:
        raise CheckpointError(f"the record of {weights} has no run description (config.model), so its "
                              "architecture is unknown; it was not made by `python -m dmlib.train`")
    model = build_model(cfg)
    _check_manifest(weights)
    load_model(weights, model)
    return model.to(device).eval(), record

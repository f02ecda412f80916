"""Checkpoints: safetensors weights beside a JSON record, saved atomically, verified on load. Chapter 10.

A checkpoint ``NAME`` is two files in one folder:

* ``NAME.safetensors``: the tensors. safetensors stores raw arrays behind a JSON header, so
  loading one runs no code (``torch.save`` writes a pickle, and unpickling can run anything);
* ``NAME.json``: the record: config, data source, seed, step, metrics, versions, device,
  creation time, code commit, and the sha256 of ``NAME.safetensors``.

Saving writes both files to temporary names, flushed to disk, then renames them into place
(a rename is atomic), weights first; until the new record is in place the previous weights
are kept as ``NAME.safetensors.prev``. A crash at any moment therefore leaves a checkpoint
whose record and weights agree. Loading checks the sha256 before reading a single tensor, so
a truncated or damaged file is refused with a message naming it; nothing half-written is ever
loaded.

A model checkpoint holds one model's ``state_dict``; a training state (:func:`save_training_state`)
also holds the EMA weights, the optimiser's moments, the generator's state and the loss
history, so that :func:`dmlib.train.train` resumes exactly. :func:`load_or_train` is what a
chapter calls: it loads the shipped weights or trains at the declared budget, as
:func:`dmlib.run.checkpoint_policy` decides.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from . import __version__
from .run import cache_dir, checkpoint_policy, get_device

FORMAT = 1  # version of the record's layout
STORE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what floating weights may be stored as
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # checkpoint names of load_or_train (no folders)


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used: damaged, incomplete, or not for this model. Chapter 10."""


# -- files ------------------------------------------------------------------------------------
def files(path) -> tuple[Path, Path]:
    """The two files of checkpoint ``path``: ``(NAME.safetensors, NAME.json)``. Chapter 10.

    ``path`` is the stem (``runs/ch7_unet``) or either file's name.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"path must be a checkpoint path (str or Path), got {path!r}")
    path = Path(path).expanduser()
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _backup(weights: Path) -> Path:
    return weights.with_name(weights.name + ".prev")


def exists(path) -> bool:
    """True when anything of checkpoint ``path`` is on disk (loading then says whether it is usable). Chapter 10."""
    weights, record = files(path)
    return weights.exists() or record.exists() or _backup(weights).exists()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new temporary file beside ``path``, flushed to disk; return its path."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def _fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (POSIX; elsewhere a no-op)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(weights: Path, record: Path, data: bytes, text: str) -> None:
    """Put new weights and record in place so that a crash at any moment leaves a usable pair."""
    # 1. both new files complete on disk under temporary names
    tmp_weights = _write_temp(weights, data)
    try:
        tmp_record = _write_temp(record, text.encode())
    except BaseException:
        os.unlink(tmp_weights)
        raise
    # 2. keep the weights the current record names until the new record replaces it
    #    (after an interrupted save the backup is the one it names: leave it)
    if _matches_record(weights, record):
        os.replace(weights, _backup(weights))
    # 3. weights first, then the record whose hash names them
    os.replace(tmp_weights, weights)
    os.replace(tmp_record, record)
    _backup(weights).unlink(missing_ok=True)
    _fsync_folder(weights.parent)


def _matches_record(weights: Path, record: Path) -> bool:
    try:
        return _sha256(weights.read_bytes()) == json.loads(record.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


# -- the record -------------------------------------------------------------------------------
def _git_commit() -> str | None:
    """The commit of the repository dmlib was imported from, or None (no git, or an installed copy)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=repo,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != repo:
        return None  # not a checkout of this repository (e.g. the user's own repository around site-packages)
    return lines[1]


def _config_dict(config) -> dict | None:
    """A config (dataclass instance, dict or None) as a JSON-ready dict."""
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dataclass instance, a dict or None, got {type(config).__name__}")
    try:
        return json.loads(json.dumps(config))
    except (TypeError, ValueError) as err:
        raise TypeError(f"config must hold only JSON values (numbers, strings, lists, dicts, None): {err}") from None


def config_hash(config) -> str:
    """A short hash (10 hex digits) of a config, for file names that change when the config does. Chapter 10."""
    text = json.dumps(_config_dict(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _device_of(model: torch.nn.Module) -> str:
    tensor = next(iter(model.state_dict().values()), None)
    return str(tensor.device) if tensor is not None else "cpu"


def _new_record(kind: str, *, config, data_source, seed, step, metrics, device: str, dtype) -> dict:
    if data_source is not None and not isinstance(data_source, str):
        raise TypeError(f"data_source must be a str (where the training data came from) or None, "
                        f"got {type(data_source).__name__}")
    if metrics is not None and not isinstance(metrics, dict):
        raise TypeError(f"metrics must be a dict or None, got {type(metrics).__name__}")
    return {
        "format": FORMAT,
        "kind": kind,  # "model" or "training_state"
        "config": _config_dict(config),
        "data_source": data_source,
        "seed": seed,
        "step": step,
        "metrics": dict(metrics or {}),
        "stored_dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "dmlib_version": __version__,
        "torch_version": torch.__version__,
        "git_commit": _git_commit(),
    }


def _save(path, tensors: dict[str, torch.Tensor], record: dict) -> dict:
    """Serialise ``tensors``, add the weights' hash to ``record``, write both atomically."""
    weights, record_file = files(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    data = safetensors.torch.save(tensors)
    record = {**record, "weights": weights.name, "sha256": _sha256(data), "bytes": len(data)}
    _commit(weights, record_file, data, json.dumps(record, indent=2) + "\n")
    return record


def read_record(path) -> dict:
    """The JSON record of checkpoint ``path``, checked to be one. Chapter 10.

    Raises FileNotFoundError when no file of the checkpoint exists, :class:`CheckpointError`
    when the record is missing beside the weights or is not a valid record.
    """
    weights, record = files(path)
    if not record.exists():
        if weights.exists():
            raise CheckpointError(f"{weights} has no record {record.name} beside it, so its sha256 cannot be "
                                  "checked; refusing to load it (restore the record or save the checkpoint again)")
        raise FileNotFoundError(f"no checkpoint at {weights}: the file does not exist")
    try:
        out = json.loads(record.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint record {record} is not valid JSON ({err}); "
                              "it was damaged or edited by hand") from None
    if not isinstance(out, dict) or not isinstance(out.get("sha256"), str):
        raise CheckpointError(f"checkpoint record {record} has no sha256 of its weights; it is not a dmlib record")
    if out.get("format", 0) > FORMAT:
        raise CheckpointError(f"checkpoint record {record} has format {out['format']}, newer than this dmlib "
                              f"(reads format {FORMAT}); update dmlib")
    return out


# -- reading verified tensors -----------------------------------------------------------------
def _verified_bytes(weights: Path, record: dict) -> bytes:
    """The bytes of the weights file whose sha256 the record names; a clear error otherwise."""
    backup = _backup(weights)
    if backup.exists() and (not weights.exists() or _sha256(weights.read_bytes()) != record["sha256"]):
        data = backup.read_bytes()
        if _sha256(data) == record["sha256"]:
            warnings.warn(f"a save of {weights} was interrupted; loading the previous checkpoint, "
                          f"{backup.name}, which its record still describes", stacklevel=4)
            return data
    if not weights.exists():
        raise FileNotFoundError(f"checkpoint file {weights} does not exist (its record {weights.stem}.json does)")
    data = weights.read_bytes()
    digest = _sha256(data)
    if digest != record["sha256"]:
        size, expected = len(data), record.get("bytes")
        why = (f"truncated: {size} of {expected} bytes" if isinstance(expected, int) and size < expected
               else f"sha256 {digest[:12]}... but the record says {record['sha256'][:12]}...")
        raise CheckpointError(f"checkpoint file {weights} does not match its record {weights.stem}.json ({why}): "
                              "the file is damaged or incomplete, or was replaced after saving")
    return data


def _read_tensors(weights: Path, record: dict) -> dict[str, torch.Tensor]:
    data = _verified_bytes(weights, record)
    try:
        return safetensors.torch.load(data)
    except safetensors.SafetensorError as err:
        raise CheckpointError(f"checkpoint file {weights} is not a safetensors file ({err})") from None


def _describe(names, tensors, limit: int = 4) -> str:
    shown = ", ".join(f"{k} {tuple(tensors[k].shape)}" for k in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _load_state(module: torch.nn.Module, tensors: dict, prefix: str, weights: Path, record: dict) -> None:
    """Copy the tensors named ``prefix + key`` into ``module``, cast to its dtypes; check the architecture."""
    own = module.state_dict()
    given = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    wrong = [k for k in own if k in given and given[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"missing in the file: {_describe(missing, own)}")
        if unexpected:
            problems.append(f"not in the model: {_describe(unexpected, given)}")
        if wrong:
            shapes = ", ".join(f"{k} file {tuple(given[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:4])
            problems.append(f"shape mismatch: {shapes}" + (f" and {len(wrong) - 4} more" if len(wrong) > 4 else ""))
        hint = (" (this file is a training state: pass prefix='ema.' or 'model.')"
                if record.get("kind") == "training_state" and not prefix else "")
        raise CheckpointError(f"checkpoint file {weights} does not fit {type(module).__name__}{hint}: "
                              + "; ".join(problems))
    module.load_state_dict({k: given[k].to(own[k].dtype) for k in own})


# -- model checkpoints ------------------------------------------------------------------------
def save_model(path, model: torch.nn.Module, *, config=None, data_source: str | None = None,
               seed: int | None = None, step: int | None = None, metrics: dict | None = None,
               dtype: torch.dtype | None = None) -> dict:
    """Save ``model``'s weights to ``path`` (a stem: writes NAME.safetensors and NAME.json). Chapter 10.

    ``dtype=torch.float16`` stores floating tensors in half precision (half the size; they are
    cast back to the model's dtype on load). ``config`` (a dataclass or dict), ``data_source``,
    ``seed``, ``step`` and ``metrics`` go into the record. Returns the record.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if dtype is not None and dtype not in STORE_DTYPES:
        raise ValueError(f"dtype must be None or one of {', '.join(map(str, STORE_DTYPES))}, got {dtype!r}")
    tensors = {k: _to_host(v, dtype) for k, v in model.state_dict().items()}
    record = _new_record("model", config=config, data_source=data_source, seed=seed, step=step, metrics=metrics,
                         device=_device_of(model), dtype=dtype)
    return _save(path, tensors, record)


def _to_host(tensor: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    dtype = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
    return tensor.detach().to("cpu", dtype).contiguous()


def load_model(path, model: torch.nn.Module, *, prefix: str = "") -> dict:
    """Load checkpoint ``path`` into ``model`` (in place, on the model's device and dtype). Chapter 10.

    The weights' sha256 is checked against the record first; a model whose architecture does
    not fit (missing, unexpected or differently shaped tensors) is refused with the offending
    names. ``prefix="ema."`` (or ``"model."``) reads one model out of a training state.
    Returns the record.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    weights, _ = files(path)
    record = read_record(path)
    _load_state(model, _read_tensors(weights, record), prefix, weights, record)
    return record


# -- training state ---------------------------------------------------------------------------
def _split_tensors(obj, prefix: str, tensors: dict):
    """Move every tensor inside ``obj`` (nested dicts and lists) into ``tensors[key]`` and leave
    ``{"__tensor__": key}`` in its place, key = the dotted path, e.g. ``optim.state.3.exp_avg``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = _to_host(obj)
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {str(k): _split_tensors(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join_tensors(obj, tensors: dict):
    """Inverse of :func:`_split_tensors`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def save_training_state(path, *, model: torch.nn.Module, ema: torch.nn.Module | None, optimizer, scheduler,
                        generator: torch.Generator, step: int, history: list, running=(), config=None,
                        data_source: str | None = None, metrics: dict | None = None) -> dict:
    """Save everything a training run needs to continue exactly (Chapter 10).

    Tensors (model as ``model.*``, EMA as ``ema.*``, optimiser state as ``optim.state.<i>.<name>``,
    the generator's state, this log interval's losses ``running``) go to NAME.safetensors in
    full precision; the optimiser's and scheduler's other settings, the step and the loss
    history go to the JSON record. Returns the record.
    """
    tensors = {f"model.{k}": _to_host(v) for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": _to_host(v) for k, v in ema.state_dict().items()})
    tensors["generator"] = generator.get_state()  # (n,) uint8
    tensors["running_loss"] = _to_host(torch.stack(list(running))) if len(running) else torch.zeros(0)  # (n,)
    config = _config_dict(config)
    record = _new_record("training_state", config=config, data_source=data_source, seed=(config or {}).get("seed"),
                         step=step, metrics=metrics, device=_device_of(model), dtype=None)
    record["history"] = [list(entry) for entry in history]
    record["optimizer"] = _split_tensors(optimizer.state_dict(), "optim", tensors)
    record["scheduler"] = _split_tensors(scheduler.state_dict(), "sched", tensors) if scheduler is not None else None
    return _save(path, tensors, record)


def load_training_state(path, *, model: torch.nn.Module, ema: torch.nn.Module | None, optimizer, scheduler,
                        generator: torch.Generator) -> dict:
    """Restore a state saved by :func:`save_training_state` into the given objects (Chapter 10).

    Returns ``{"step", "history", "running", "record"}``: the step to continue from, the loss
    history so far, this log interval's losses (a (n,) tensor) and the record.
    """
    weights, _ = files(path)
    record = read_record(path)
    if record.get("kind") != "training_state":
        raise CheckpointError(f"checkpoint {weights} holds {record.get('kind')!r}, not a training state; "
                              "it cannot resume a run")
    tensors = _read_tensors(weights, record)
    _load_state(model, tensors, "model.", weights, record)
    if ema is not None:
        _load_state(ema, tensors, "ema.", weights, record)
    state = _join_tensors(record["optimizer"], tensors)
    state["state"] = {int(k): v for k, v in state["state"].items()}  # JSON keys are strings; torch's are ints
    optimizer.load_state_dict(state)
    if scheduler is not None:
        scheduler.load_state_dict(_join_tensors(record["scheduler"], tensors))
    generator.set_state(tensors["generator"])
    return {"step": record["step"], "history": [tuple(entry) for entry in record["history"]],
            "running": tensors["running_loss"], "record": record}


# -- shipped checkpoints and their manifest ---------------------------------------------------
def shipped_dir() -> Path:
    """The folder of shipped checkpoints: ``$DMLIB_CHECKPOINTS``, else the repository's ``checkpoints/``. Chapter 7."""
    env = os.environ.get("DMLIB_CHECKPOINTS")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "checkpoints"


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
    checking each file against its record (the step before shipping weights). Chapter 7."""
    folder = Path(folder if folder is not None else shipped_dir())
    entries = {}
    for weights in sorted(folder.glob("*.safetensors")):
        record = read_record(weights)
        data = _verified_bytes(weights, record)
        entries[weights.name] = {"sha256": _sha256(data), "bytes": len(data)}
    path = folder / "MANIFEST.json"
    os.replace(_write_temp(path, (json.dumps(entries, indent=2) + "\n").encode()), path)
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
    dict): it is recorded, and its hash names the cached file, so a quick budget and a full
    one never share a file. ``device`` (default :func:`dmlib.run.get_device`) is where the
    model is returned and what :func:`dmlib.run.checkpoint_policy` decides with:

    * ``"load"``: the shipped ``NAME.safetensors`` of :func:`shipped_dir`; missing, it is an
      error that says how to train instead (never an unannounced long training);
    * ``"train"``: the cached ``NAME-<config hash>.safetensors`` in :func:`dmlib.run.cache_dir`
      when present; otherwise train once and save it there. A damaged cached file is an error,
      not a silent retraining.

    Returns ``(model, record)``, the model in eval mode; prints one line saying what it did.
    """
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"name must be a checkpoint name of letters, digits, '_', '.', '-' (no folders), got {name!r}")
    if not callable(build_model) or not callable(train_fn):
        raise TypeError("build_model and train_fn must be callables: build_model() -> model, train_fn(model) -> model")
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
    path = cache_dir() / f"{name}-{config_hash(config)}"
    weights, record_file = files(path)
    if exists(path):
        try:
            record = load_model(path, model)
        except (CheckpointError, FileNotFoundError) as err:
            raise type(err)(f"{err}. Delete {weights} and {record_file} to train {name!r} again") from None
        print(f"{name}: loaded {weights} (trained earlier with this config)")
        return model, record
    start = time.perf_counter()
    model, metrics = _trained(train_fn(model.to(device)))
    seconds = time.perf_counter() - start
    cfg = _config_dict(config) or {}
    record = save_model(path, model, config=config, data_source=data_source, seed=cfg.get("seed"),
                        step=cfg.get("steps"), metrics={**(metrics or {}), "train_seconds": round(seconds, 3)})
    print(f"{name}: trained in {seconds:.1f} s on {device.type} and saved to {weights}")
    return model, record

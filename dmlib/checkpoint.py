"""Checkpoints on disk: safetensors weights beside a JSON record, saved atomically, verified on load. Chapter 10.

A checkpoint ``NAME`` is two files in one folder:

* ``NAME.safetensors``: the tensors. safetensors stores raw arrays behind a JSON header, so
  loading one runs no code (``torch.save`` writes a pickle, and unpickling can run anything);
* ``NAME.json``: the record: config, data source, seed, step, metrics, versions, device,
  creation time, code commit, the sha256 of ``NAME.safetensors``, and ``record_sha256``, the
  sha256 of the record's own content, so that a hand edit or a damaged byte in the record is
  refused as surely as one in the weights.

Saving writes both files to temporary names, flushed to disk, then renames them into place
(a rename is atomic), weights first; until the new record is in place the previous weights
are kept as ``NAME.safetensors.prev``. A crash at any moment therefore leaves a checkpoint
whose record and weights agree. Loading checks both hashes before reading a single tensor,
so a truncated, damaged or edited file is refused with a message naming it; nothing
half-written is ever loaded.

A model checkpoint holds one model's ``state_dict``; a training state (:func:`save_training_state`)
also holds the EMA weights, the optimiser's moments, the generator's state and the loss
history, so that :func:`dmlib.train.train` resumes exactly. Shipped checkpoints and
``load_or_train`` are in :mod:`dmlib.shipped`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import subprocess
import tempfile
import warnings
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from . import __version__

FORMAT = 2  # version of the record's layout (2: the record carries record_sha256)
STORE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what floating weights may be stored as


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used: damaged, incomplete, or not for this model. Chapter 10."""


# -- files and atomic writes ------------------------------------------------------------------
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


def unfinished_first_save(path) -> bool:
    """True when only ``NAME.safetensors`` is on disk: no record and no backup beside it. Chapter 10.

    That is what a first save leaves when it is killed between renaming its weights into place
    and renaming its record: the file was never a checkpoint (nothing says what it holds or
    lets its hash be checked), so a training run may treat it as absent and overwrite it.
    """
    weights, record = files(path)
    return weights.exists() and not record.exists() and not _backup(weights).exists()


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
    temps = [_write_temp(weights, data)]
    try:
        temps.append(_write_temp(record, text.encode()))
        # 2. keep the weights the current record names until the new record replaces it
        #    (after an interrupted save the backup is the one it names: leave it)
        if _matches_record(weights, record):
            os.replace(weights, _backup(weights))
        # 3. weights first, then the record whose hash names them
        os.replace(temps[0], weights)
        os.replace(temps[1], record)
    except OSError as err:
        if len(temps) < 2:
            raise  # writing the record failed (e.g. a full disk): that error says it best
        raise CheckpointError(f"could not put checkpoint {weights} in place ({err}); the previous "
                              "checkpoint, if any, is still the one its record names") from err
    finally:
        for tmp in temps:  # renamed ones are gone already
            tmp.unlink(missing_ok=True)
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


def _record_sha256(record: dict) -> str:
    """The sha256 of ``record``'s canonical JSON (sorted keys, no spaces), its own hash left out."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def _save(path, tensors: dict[str, torch.Tensor], record: dict) -> dict:
    """Serialise ``tensors``, add the weights' hash and the record's own to ``record``, write both atomically."""
    weights, record_file = files(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    data = safetensors.torch.save(tensors)
    # as JSON will read it back (tuples become lists, keys strings), so that the hash is of what is read
    record = json.loads(json.dumps({**record, "weights": weights.name, "sha256": _sha256(data), "bytes": len(data)}))
    record["record_sha256"] = _record_sha256(record)
    _commit(weights, record_file, data, json.dumps(record, indent=2) + "\n")
    return record


def read_record(path) -> dict:
    """The JSON record of checkpoint ``path``, checked against its own sha256. Chapter 10.

    Raises FileNotFoundError when no file of the checkpoint exists, :class:`CheckpointError`
    when the record is missing beside the weights, is not a valid record, or was changed
    after saving.
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
    fmt = out.get("format")
    if isinstance(fmt, bool) or not isinstance(fmt, int):
        raise CheckpointError(f"checkpoint record {record} has format {fmt!r}, not an integer; "
                              "it was damaged or edited by hand")
    if fmt > FORMAT:
        raise CheckpointError(f"checkpoint record {record} has format {fmt}, newer than this dmlib "
                              f"(reads format {FORMAT}); update dmlib")
    saved = out.get("record_sha256")
    if not isinstance(saved, str):
        raise CheckpointError(f"checkpoint record {record} has no record_sha256 (format {fmt}; dmlib writes "
                              f"format {FORMAT}), so its content cannot be checked; save the checkpoint again")
    digest = _record_sha256(out)
    if digest != saved:
        raise CheckpointError(f"checkpoint record {record} was changed after saving (its content hashes to "
                              f"{digest[:12]}... but its record_sha256 says {saved[:12]}...): it was edited by "
                              "hand or damaged; restore it or save the checkpoint again")
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

    The record's and the weights' sha256 are checked first; a model whose architecture does
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


def _stored(tensors: dict, key, weights: Path) -> torch.Tensor:
    """``tensors[key]``, or a clear error when the record names a tensor the weights file lacks."""
    if not isinstance(key, str) or key not in tensors:
        raise CheckpointError(f"checkpoint record {weights.stem}.json names the tensor {key!r}, which {weights} "
                              "does not hold: the two files were not saved together")
    return tensors[key]


def _join_tensors(obj, tensors: dict, weights: Path):
    """Inverse of :func:`_split_tensors`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return _stored(tensors, obj["__tensor__"], weights)
        return {k: _join_tensors(v, tensors, weights) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors, weights) for v in obj]
    return obj


def save_training_state(path, *, model: torch.nn.Module, ema: torch.nn.Module | None, optimizer, scheduler,
                        generator: torch.Generator, step: int, history: list, running=(), config=None,
                        inputs: dict | None = None, data_source: str | None = None,
                        metrics: dict | None = None, scaler=None) -> dict:
    """Save everything a training run needs to continue exactly (Chapter 10).

    Tensors (model as ``model.*``, EMA as ``ema.*``, optimiser state as ``optim.state.<i>.<name>``,
    the generator's state, this log interval's losses ``running``) go to NAME.safetensors in
    full precision; the optimiser's and scheduler's other settings, the fp16 gradient
    scaler's state (``scaler``, when one is in use), the step, the loss
    history and ``inputs`` (short strings describing what the run reads besides its config,
    e.g. ``{"loss": ..., "data": ...}``, which a resumption compares) go to the record.
    Returns the record.
    """
    if inputs is not None and not (isinstance(inputs, dict)
                                   and all(isinstance(v, (str, type(None))) for v in inputs.values())):
        raise TypeError(f"inputs must be a dict of strings (descriptions of the loss, the data, ...) or None, "
                        f"got {inputs!r}")
    tensors = {f"model.{k}": _to_host(v) for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": _to_host(v) for k, v in ema.state_dict().items()})
    tensors["generator"] = generator.get_state()  # (n,) uint8
    tensors["running_loss"] = _to_host(torch.stack(list(running))) if len(running) else torch.zeros(0)  # (n,)
    config = _config_dict(config)
    record = _new_record("training_state", config=config, data_source=data_source, seed=(config or {}).get("seed"),
                         step=step, metrics=metrics, device=_device_of(model), dtype=None)
    record["inputs"] = dict(inputs) if inputs is not None else None
    record["history"] = [list(entry) for entry in history]
    record["optimizer"] = _split_tensors(optimizer.state_dict(), "optim", tensors)
    record["scheduler"] = _split_tensors(scheduler.state_dict(), "sched", tensors) if scheduler is not None else None
    # scale and growth tracker: plain numbers (one host read, at a save)
    record["scaler"] = scaler.state_dict() if scaler is not None and scaler.is_enabled() else None
    return _save(path, tensors, record)


def load_training_state(path, *, model: torch.nn.Module, ema: torch.nn.Module | None, optimizer, scheduler,
                        generator: torch.Generator, scaler=None) -> dict:
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
    state = _join_tensors(record.get("optimizer"), tensors, weights)
    try:
        state["state"] = {int(k): v for k, v in state["state"].items()}  # JSON keys are strings; torch's are ints
        optimizer.load_state_dict(state)
        if scheduler is not None:
            scheduler.load_state_dict(_join_tensors(record.get("scheduler"), tensors, weights))
        if scaler is not None and scaler.is_enabled() and record.get("scaler"):
            scaler.load_state_dict(record["scaler"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"checkpoint {weights} does not fit this optimiser and learning-rate schedule "
                              f"({type(err).__name__}: {err})") from None
    generator.set_state(_stored(tensors, "generator", weights))
    return {"step": record["step"], "history": [tuple(entry) for entry in record["history"]],
            "running": _stored(tensors, "running_loss", weights), "record": record}

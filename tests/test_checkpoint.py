"""Checkpoints: exact round trips, verified loads (weights and record), atomic saves, exact
resumption of the same run only, and shipped.load_or_train.

Nothing here may unpickle: torch.load and pickle's loaders raise for the whole module.
"""

import hashlib
import json
import os
import pickle
import re
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dmlib import checkpoint, losses, run, schedules, shipped, toy
from dmlib.checkpoint import CheckpointError
from dmlib.nn import MLP
from dmlib.train import TrainConfig, train


@pytest.fixture(autouse=True)
def _no_unpickling(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A private cache and shipped folder, full mode, no forced device."""
    for name in ("DMLIB_MODE", "DMLIB_DEVICE", "DMLIB_CACHE", "DMLIB_CHECKPOINTS", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DMLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DMLIB_CHECKPOINTS", str(tmp_path / "shipped"))
    return monkeypatch


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    model = MLP(**{"hidden": 16, "depth": 2, **kw})
    with torch.no_grad():  # the output layer starts at zero; make every tensor distinctive
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _saved(tmp_path, **kw):
    path = tmp_path / "net"
    model = _model()
    checkpoint.save_model(path, model, config=TrainConfig(steps=7), data_source="8gaussians", step=7, **kw)
    return path, model


# -- round trips and the record ---------------------------------------------------------------
def test_round_trip_is_exact(tmp_path):
    path, model = _saved(tmp_path)
    other = _model(seed=1)
    assert not _same(model, other)
    checkpoint.load_model(path, other)
    assert _same(model, other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.json", "net.safetensors"]  # no temp files left


def test_record_describes_the_run(tmp_path):
    path, _ = _saved(tmp_path, seed=3, metrics={"loss": 0.25})
    record = json.loads((tmp_path / "net.json").read_text())
    data = (tmp_path / "net.safetensors").read_bytes()
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["bytes"] == len(data)
    assert record["config"]["steps"] == 7 and record["data_source"] == "8gaussians"
    assert record["seed"] == 3 and record["step"] == 7 and record["metrics"] == {"loss": 0.25}
    assert record["device"] == "cpu" and record["torch_version"] == torch.__version__
    assert record["dmlib_version"] and re.match(r"\d{4}-\d\d-\d\dT", record["created"])
    assert "git_commit" in record  # a hash, or None outside a git checkout
    assert checkpoint.read_record(path) == record


def test_fp16_round_trip_within_half_precision(tmp_path):
    path, model = _saved(tmp_path, dtype=torch.float16)
    full, _ = _saved(tmp_path / "full")
    assert (tmp_path / "net.safetensors").stat().st_size < 0.6 * (tmp_path / "full" / "net.safetensors").stat().st_size
    other = _model(seed=1)
    record = checkpoint.load_model(path, other)
    assert record["stored_dtype"] == "float16"
    for (name, p), q in zip(model.state_dict().items(), other.state_dict().values()):
        assert q.dtype == torch.float32, name  # cast back to the model's dtype
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-4, msg=name)


# -- refusing what cannot be used -------------------------------------------------------------
def test_flipped_byte_is_refused(tmp_path):
    path, _ = _saved(tmp_path)
    file = tmp_path / "net.safetensors"
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"net\.safetensors does not match its record net\.json \(sha256"):
        checkpoint.load_model(path, _model())


def test_truncated_file_is_refused(tmp_path):
    path, _ = _saved(tmp_path)
    file = tmp_path / "net.safetensors"
    file.write_bytes(file.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"net\.safetensors .*truncated: \d+ of \d+ bytes"):
        checkpoint.load_model(path, _model())


def test_wrong_architecture_names_the_tensors_and_shapes(tmp_path):
    path, _ = _saved(tmp_path)
    with pytest.raises(CheckpointError, match=r"net\.safetensors does not fit MLP.*shape mismatch: "
                                              r"embed\.\S+ file \(\d+.*\) vs model \(\d+"):
        checkpoint.load_model(path, _model(hidden=8))
    with pytest.raises(CheckpointError, match=r"missing in the file: norms\.2\.weight \(16,\)"):
        checkpoint.load_model(path, _model(depth=3))
    with pytest.raises(CheckpointError, match=r"not in the model: .*norms\.1\.weight \(16,\)"):
        checkpoint.load_model(path, _model(depth=1))


def test_missing_record_is_refused(tmp_path):
    path, _ = _saved(tmp_path)
    (tmp_path / "net.json").unlink()
    with pytest.raises(CheckpointError, match=r"net\.safetensors has no record net\.json"):
        checkpoint.load_model(path, _model())


def test_record_that_is_not_json_is_refused(tmp_path):
    path, _ = _saved(tmp_path)
    (tmp_path / "net.json").write_text('{"sha256": "abc", ')
    with pytest.raises(CheckpointError, match=r"net\.json is not valid JSON"):
        checkpoint.load_model(path, _model())


def _reseal(record_file: Path, edit) -> None:
    """Edit a record and recompute its record_sha256: a record that passes its own check but
    carries a planted problem, as a bug in the saving code (not a damaged byte) would write it."""
    record = json.loads(record_file.read_text())
    edit(record)
    record["record_sha256"] = checkpoint._record_sha256(record)
    record_file.write_text(json.dumps(record, indent=2))


def _training_state(tmp_path, steps=5):
    config = TrainConfig(**{**RUN, "steps": steps}, checkpoint=str(tmp_path / "run"))
    _fit(config)
    return tmp_path / "run", config


def test_every_flipped_character_of_the_record_is_refused(tmp_path):
    # The record of a training state holds what a resumed run continues with (the optimiser's
    # lr and betas, the scheduler, the loss history, the config): any damage must be refused.
    path, _ = _training_state(tmp_path)
    file = tmp_path / "run.json"
    text, original = file.read_text(), checkpoint.read_record(path)
    refused = kept = 0
    for i, char in enumerate(text):
        if char.isspace():
            continue
        file.write_text(text[:i] + chr(ord(char) ^ 0x01) + text[i + 1:])
        try:
            got = checkpoint.read_record(path)
        except CheckpointError as err:
            assert "run.json" in str(err), err
            refused += 1
        else:  # only a flip that reads back as the same record may pass (e.g. a float's last digit)
            assert got == original, f"character {i} ({char!r}) changed the record unnoticed"
            kept += 1
    assert refused > 2000 and kept <= 5, (refused, kept)


def test_edited_record_stops_a_resumed_run(tmp_path):
    path, config = _training_state(tmp_path)
    file = tmp_path / "run.json"
    record = json.loads(file.read_text())
    record["optimizer"]["param_groups"][0]["lr"] *= 10  # a hand edit: still valid JSON
    file.write_text(json.dumps(record, indent=2))
    with pytest.raises(CheckpointError, match=r"record .*run\.json was changed after saving \(its content hashes "
                                              r"to \w+\.\.\. but its record_sha256 says \w+\.\.\.\)"):
        _fit(config)
    record.pop("record_sha256")
    file.write_text(json.dumps(record, indent=2))
    with pytest.raises(CheckpointError, match=r"run\.json has no record_sha256"):
        checkpoint.read_record(path)


@pytest.mark.parametrize("fmt,match", [("1", r"format '1', not an integer"), (None, r"format None, not an integer"),
                                       (True, r"format True, not an integer"), (99, r"format 99, newer than")])
def test_record_format_must_be_a_known_integer(tmp_path, fmt, match):
    path, _ = _saved(tmp_path)
    _reseal(tmp_path / "net.json", lambda record: record.update(format=fmt))
    with pytest.raises(CheckpointError, match=r"record .*net\.json has " + match):
        checkpoint.load_model(path, _model())


def test_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.safetensors"):
        checkpoint.load_model(tmp_path / "nothing", _model())


# -- atomic saves -----------------------------------------------------------------------------
class Crash(BaseException):
    """A kill, as far as the saving code can tell: not an Exception it could handle."""


@pytest.mark.parametrize("which", [".safetensors", ".json"])
def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch, which):
    path, old = _saved(tmp_path)
    real_fdopen = os.fdopen

    class FullDisk:  # the chosen file gets half its bytes, then the write fails; the other is written
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

        def write(self, data):
            if data.startswith(b"{") != (which == ".json"):  # the record is JSON text, the weights are not
                return self.f.write(data)
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError(28, "No space left on device")

    def fdopen(fd, *args, **kwargs):
        return FullDisk(real_fdopen(fd, *args, **kwargs))

    with monkeypatch.context() as m, pytest.raises(OSError, match="No space left"):
        m.setattr(os, "fdopen", fdopen)
        checkpoint.save_model(path, _model(seed=5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.json", "net.safetensors"]  # temp files removed
    restored = _model(seed=1)
    checkpoint.load_model(path, restored)
    assert _same(restored, old)


@pytest.mark.parametrize("killed_before", ["new weights", "new record"])
def test_crash_between_the_two_files_keeps_the_previous_checkpoint(tmp_path, monkeypatch, killed_before):
    path, old = _saved(tmp_path)
    real_replace = os.replace

    def replace_until_killed(src, dst):
        dst = Path(dst)
        if (killed_before == "new weights" and dst.name == "net.safetensors") or \
                (killed_before == "new record" and dst.name == "net.json"):
            raise Crash
        real_replace(src, dst)

    with monkeypatch.context() as m, pytest.raises(Crash):
        m.setattr(os, "replace", replace_until_killed)
        checkpoint.save_model(path, _model(seed=5))
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    restored = _model(seed=1)
    with pytest.warns(UserWarning, match="interrupted"):
        checkpoint.load_model(path, restored)
    assert _same(restored, old)

    # the next save completes normally, and a second crash still leaves a consistent pair
    newer = _model(seed=6)
    checkpoint.save_model(path, newer)
    checkpoint.load_model(path, restored)
    assert _same(restored, newer)
    assert not (tmp_path / "net.safetensors.prev").exists()


def test_two_interrupted_saves_in_a_row_keep_the_last_complete_one(tmp_path, monkeypatch):
    path, old = _saved(tmp_path)
    real_replace = os.replace

    def killed_before_record(src, dst):
        if Path(dst).name == "net.json":
            raise Crash
        real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", killed_before_record)
        for seed in (5, 6):
            with pytest.raises(Crash):
                checkpoint.save_model(path, _model(seed=seed))
    restored = _model(seed=1)
    with pytest.warns(UserWarning, match="interrupted"):
        checkpoint.load_model(path, restored)
    assert _same(restored, old)


@pytest.mark.parametrize("failing", ["net.safetensors.prev", "net.safetensors", "net.json"])
def test_failed_rename_is_a_checkpoint_error_and_leaves_no_temp_file(tmp_path, monkeypatch, failing):
    path, old = _saved(tmp_path)
    real_replace = os.replace

    def replace_failing(src, dst):
        if Path(dst).name == failing:
            raise PermissionError(13, "Permission denied")
        real_replace(src, dst)

    refused = r"could not put checkpoint .*net\.safetensors in place \(.*Permission denied"
    with monkeypatch.context() as m, pytest.raises(CheckpointError, match=refused):
        m.setattr(os, "replace", replace_failing)
        checkpoint.save_model(path, _model(seed=5))
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    restored = _model(seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "a save was interrupted" once the weights were renamed
        checkpoint.load_model(path, restored)
    assert _same(restored, old)


def test_failed_manifest_rename_leaves_no_temp_file(env, monkeypatch):
    folder = Path(os.environ["DMLIB_CHECKPOINTS"])
    checkpoint.save_model(folder / "toy", _model(hidden=8, depth=1))
    with monkeypatch.context() as m, pytest.raises(CheckpointError, match=r"could not put .*MANIFEST\.json in place"):
        m.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
        shipped.write_manifest()
    assert sorted(p.name for p in folder.iterdir()) == ["toy.json", "toy.safetensors"]


# -- resuming a training run ------------------------------------------------------------------
class Interrupted(Exception):
    pass


def _fit(config, *, init_seed=0, interrupt_at=None):
    """Train a small class-conditional MLP; the loss raises on step ``interrupt_at`` (0-based)."""
    gm = toy.GaussianMixture.eight_gaussians()
    x, y = gm.sample(256, generator=torch.Generator().manual_seed(1), return_labels=True)
    base, calls = losses.diffusion_loss(schedules.CosineSchedule()), [0]

    def loss(model, x0, y, g):
        if calls[0] == interrupt_at:
            raise Interrupted(f"killed at step {interrupt_at}")
        calls[0] += 1
        return base(model, x0, y, g)

    torch.manual_seed(init_seed)
    return train(MLP(hidden=16, depth=1, n_classes=8), loss, x, config, labels=y)


RUN = dict(steps=40, batch_size=64, lr=3e-3, warmup=5, log_every=15, label_dropout=0.2, progress=False, device="cpu")


def test_interrupted_run_resumes_bit_identical(tmp_path):
    config = TrainConfig(**RUN, checkpoint=str(tmp_path / "run"), checkpoint_every=20)
    whole = _fit(replace(config, checkpoint=None))

    with pytest.raises(Interrupted):
        _fit(config, interrupt_at=25)
    assert checkpoint.read_record(tmp_path / "run")["step"] == 20

    resumed = _fit(config, init_seed=99)  # other initial weights: everything must come from the file
    assert resumed.history == whole.history
    for a, b in [(resumed.model, whole.model), (resumed.ema, whole.ema)]:
        for (name, p), q in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(p, q), name
    assert checkpoint.read_record(tmp_path / "run")["step"] == 40


def test_interrupted_run_with_a_gradient_scaler_resumes_bit_identical(tmp_path, monkeypatch):
    # fp16's gradient scaler (CUDA only in dmlib) exercised on the CPU: its scale and growth
    # tracker go into the checkpoint, and a resumed run continues with them
    from dmlib import train as train_module

    monkeypatch.setattr(train_module, "amp_policy", lambda precision, device: (torch.bfloat16, True))
    config = TrainConfig(**RUN, checkpoint=str(tmp_path / "run"), checkpoint_every=20)
    whole = _fit(replace(config, checkpoint=None))
    with pytest.raises(Interrupted):
        _fit(config, interrupt_at=25)
    record = checkpoint.read_record(tmp_path / "run")
    assert record["step"] == 20 and record["scaler"]["scale"] == 65536.0
    resumed = _fit(config, init_seed=99)
    assert resumed.history == whole.history
    for p, q in zip(resumed.model.parameters(), whole.model.parameters()):
        assert torch.equal(p, q)


def test_a_checkpoint_without_the_new_settings_still_resumes(tmp_path):
    # a run saved before TrainConfig had precision, compile, channels_last and rng: the
    # missing fields had their defaults then
    config = TrainConfig(**{**RUN, "steps": 10}, checkpoint=str(tmp_path / "run"), checkpoint_every=5)
    with pytest.raises(Interrupted):
        _fit(config, interrupt_at=7)
    weights, record_path = checkpoint.files(tmp_path / "run")
    record = json.loads(record_path.read_text())
    for name in ("precision", "compile", "channels_last", "rng"):
        del record["config"][name]
    record["record_sha256"] = checkpoint._record_sha256(record)
    record_path.write_text(json.dumps(record, indent=2))
    assert _fit(config).history[-1][0] == 10


def test_resume_needs_the_same_settings(tmp_path):
    config = TrainConfig(**{**RUN, "steps": 10}, checkpoint=str(tmp_path / "run"))
    _fit(config)
    with pytest.raises(CheckpointError, match=r"run.*other settings "
                                              r"\(steps: saved 10, now 20; lr: saved 0\.003, now 0\.001\)"):
        _fit(replace(config, steps=20, lr=1e-3))
    fresh = _fit(replace(config, steps=20, resume=False))  # resume=False starts over
    assert [s for s, _ in fresh.history] == [15, 20]


def test_training_state_stores_optimizer_under_flat_names(tmp_path):
    import safetensors.torch as st
    config = TrainConfig(**{**RUN, "steps": 5}, checkpoint=str(tmp_path / "run"))
    res = _fit(config)
    data = (tmp_path / "run.safetensors").read_bytes()
    names = set(st.load(data))
    assert {"optim.state.0.exp_avg", "optim.state.0.exp_avg_sq", "optim.state.0.step", "generator"} <= names
    record = checkpoint.read_record(tmp_path / "run")
    assert record["optimizer"]["param_groups"][0]["lr"] > 0 and record["kind"] == "training_state"
    ema = MLP(hidden=16, depth=1, n_classes=8)
    checkpoint.load_model(tmp_path / "run", ema, prefix="ema.")
    assert _same(ema, res.ema)
    with pytest.raises(CheckpointError, match=r"training state: pass prefix='ema\.'"):
        checkpoint.load_model(tmp_path / "run", ema)


X, Y = toy.GaussianMixture.eight_gaussians().sample(128, generator=torch.Generator().manual_seed(1), return_labels=True)
TENSOR_RUN = {"loss": lambda: losses.diffusion_loss(schedules.CosineSchedule()), "data": lambda: X, "labels": lambda: Y}
SAMPLER_RUN = {**TENSOR_RUN, "data": lambda: toy.data_sampler("8gaussians"), "labels": lambda: None}
OTHER_INPUTS = {  # the run saved, what the resumption changes, what the refusal must say
    "schedule": (TENSOR_RUN, {"loss": lambda: losses.diffusion_loss(schedules.LinearSchedule())},
                 r"loss: saved .*schedule=CosineSchedule\(s=0\.008\).*, now .*schedule=LinearSchedule\("),
    "weighting": (TENSOR_RUN, {"loss": lambda: losses.diffusion_loss(schedules.CosineSchedule(), weighting="min_snr")},
                  r"loss: saved .*weighting='none'.*, now .*weighting='min_snr'"),
    "loss function": (TENSOR_RUN, {"loss": lambda: losses.classifier_loss(schedules.CosineSchedule())},
                      r"loss: saved .<function diffusion_loss\.<locals>\.loss>.*, now .<function classifier_loss"),
    "data tensor": (TENSOR_RUN, {"data": lambda: X + 1e-3},
                    r"data: saved 'tensor \(128, 2\) float32 sha256 (\w+)', "
                    r"now 'tensor \(128, 2\) float32 sha256 (?!\1)"),
    "labels": (TENSOR_RUN, {"labels": lambda: Y.roll(1)}, r"labels: saved 'tensor \(128,\) int64 sha256 \w+', now"),
    "data sampler": (SAMPLER_RUN, {"data": lambda: toy.data_sampler("moons")},
                     r"data: saved \"data_sampler\('8gaussians'\)\", now \"data_sampler\('moons'\)\""),
}


def _fit_inputs(config, inputs: dict):
    """Train a small class-conditional MLP on freshly built inputs (each a function that builds one)."""
    torch.manual_seed(0)
    return train(MLP(hidden=16, depth=1, n_classes=8), inputs["loss"](), inputs["data"](), config,
                 labels=inputs["labels"]())


@pytest.mark.parametrize("case", OTHER_INPUTS)
def test_resume_needs_the_same_loss_and_data(tmp_path, case):
    saved, change, match = OTHER_INPUTS[case]
    config = TrainConfig(**{**RUN, "steps": 5, "log_every": 5}, checkpoint=str(tmp_path / "run"))
    _fit_inputs(config, saved)
    with pytest.raises(CheckpointError, match=r"run' was saved by a run with other settings \(" + match):
        _fit_inputs(config, {**saved, **change})
    done = _fit_inputs(config, saved)  # the same loss and data, built anew, resume (the finished run: no step left)
    assert [s for s, _ in done.history] == [5]


def test_interrupted_first_save_does_not_block_resuming(tmp_path, monkeypatch):
    config = TrainConfig(**RUN, checkpoint=str(tmp_path / "run"), checkpoint_every=20)
    whole = _fit(replace(config, checkpoint=None))
    real_replace = os.replace

    def killed_before_record(src, dst):
        if Path(dst).name == "run.json":
            raise Crash
        real_replace(src, dst)

    with monkeypatch.context() as m, pytest.raises(Crash):
        m.setattr(os, "replace", killed_before_record)
        _fit(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors"]  # no record, no backup, no temp
    with pytest.raises(CheckpointError, match=r"run\.safetensors has no record run\.json"):
        checkpoint.load_model(tmp_path / "run", MLP(hidden=16, depth=1, n_classes=8), prefix="model.")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = _fit(config)  # starts over (same initial weights as `whole`), overwriting the file
    assert [str(w.message) for w in caught if "run.safetensors" in str(w.message)] == [
        f"{tmp_path / 'run.safetensors'} has no record run.json and no backup beside it: the first save of this run "
        "was interrupted before its record was written. It is not a checkpoint; starting from step 0 and overwriting it"
    ]
    assert resumed.history == whole.history
    assert checkpoint.read_record(tmp_path / "run")["step"] == 40


@pytest.mark.parametrize("damage,error,match", [
    ("weights truncated", CheckpointError, r"run\.safetensors .*truncated"),
    ("weights deleted", FileNotFoundError, r"run\.safetensors does not exist \(its record run\.json does\)"),
    ("record deleted after an interrupted save", CheckpointError, r"run\.safetensors has no record run\.json"),
])
def test_resume_still_refuses_a_checkpoint_with_a_record_or_backup(tmp_path, damage, error, match):
    path, config = _training_state(tmp_path)
    weights = tmp_path / "run.safetensors"
    if damage == "weights truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "weights deleted":
        weights.unlink()
    else:
        shutil.copy(weights, tmp_path / "run.safetensors.prev")
        (tmp_path / "run.json").unlink()
    with pytest.raises(error, match=match):
        _fit(config)


def test_dangling_tensor_reference_is_refused(tmp_path):
    path, config = _training_state(tmp_path)
    _reseal(tmp_path / "run.json",
            lambda record: record["optimizer"]["state"]["0"].update(exp_avg={"__tensor__": "optim.state.0.gone"}))
    with pytest.raises(CheckpointError, match=r"run\.json names the tensor 'optim\.state\.0\.gone', which "
                                              r".*run\.safetensors does not hold"):
        _fit(config)


# -- load_or_train ----------------------------------------------------------------------------
def _trainer(calls):
    def train_fn(model):
        calls.append(1)
        res = train(model, losses.diffusion_loss(schedules.CosineSchedule()),
                    lambda n, g: toy.sample_2d("8gaussians", n, generator=g), TINY)
        return res.best, {"final_loss": res.history[-1][1]}
    return train_fn


TINY = TrainConfig(steps=5, batch_size=32, warmup=1, log_every=5, progress=False, device="cpu")


def _build():
    return MLP(hidden=8, depth=1)


def test_load_policy_loads_the_shipped_checkpoint(env, capsys):
    folder = Path(os.environ["DMLIB_CHECKPOINTS"])
    model = _model(hidden=8, depth=1)
    checkpoint.save_model(folder / "toy", model, dtype=torch.float16, step=5000)
    calls = []
    got, record = shipped.load_or_train("toy", _build, _trainer(calls), config=TINY, device="cpu")
    assert calls == [] and not got.training and record["step"] == 5000
    for p, q in zip(got.parameters(), model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
    assert re.search(r"toy: loaded the shipped checkpoint .*toy\.safetensors", capsys.readouterr().out)


def test_load_policy_with_the_shipped_file_missing_says_how_to_train(env):
    with pytest.raises(FileNotFoundError, match=r"shipped checkpoint .*toy\.safetensors is missing.*quick mode.*GPU"):
        shipped.load_or_train("toy", _build, _trainer([]), config=TINY, device="cpu")


def test_train_policy_trains_once_then_loads(env, capsys):
    env.setenv("DMLIB_MODE", "quick")
    calls = []
    first, record = shipped.load_or_train("toy", _build, _trainer(calls), config=TINY, data_source="8gaussians")
    assert calls == [1] and not first.training
    assert record["data_source"] == "8gaussians" and "final_loss" in record["metrics"]
    cached, _ = checkpoint.files(shipped.cache_path("toy", TINY, "8gaussians"))
    assert cached.parent == Path(os.environ["DMLIB_CACHE"])
    assert cached.exists() and re.search(r"toy: trained .* saved to .*" + cached.name, capsys.readouterr().out)

    second, again = shipped.load_or_train("toy", _build, _trainer(calls), config=TINY, data_source="8gaussians")
    assert calls == [1] and _same(first, second) and again["sha256"] == record["sha256"]
    assert "loaded" in capsys.readouterr().out

    shipped.load_or_train("toy", _build, _trainer(calls), config=replace(TINY, steps=6))
    assert calls == [1, 1]  # another budget, another file


def test_train_policy_refuses_a_damaged_cache_instead_of_retraining(env):
    env.setenv("DMLIB_MODE", "quick")
    calls = []
    shipped.load_or_train("toy", _build, _trainer(calls), config=TINY)
    cached, _ = checkpoint.files(shipped.cache_path("toy", TINY))
    cached.write_bytes(cached.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match=r"toy-\w+\.safetensors .*truncated.*Delete .* to train 'toy' again"):
        shipped.load_or_train("toy", _build, _trainer(calls), config=TINY)
    assert calls == [1]


def test_train_policy_keys_the_cache_on_data_source_and_version(env, monkeypatch):
    env.setenv("DMLIB_MODE", "quick")
    calls = []
    first, _ = shipped.load_or_train("toy", _build, _trainer(calls), config=TINY, data_source="8gaussians")
    _, record = shipped.load_or_train("toy", _build, _trainer(calls), config=TINY, data_source="moons")
    assert calls == [1, 1] and record["data_source"] == "moons"  # trained for it, not the 8gaussians model loaded
    for module in (checkpoint, shipped):  # another release of dmlib
        monkeypatch.setattr(module, "__version__", "99.0")
    _, record = shipped.load_or_train("toy", _build, _trainer(calls), config=TINY, data_source="moons")
    assert calls == [1, 1, 1] and record["dmlib_version"] == "99.0"
    shipped.load_or_train("toy", _build, _trainer(calls), config=TINY, data_source="moons")
    assert calls == [1, 1, 1] and len(list(Path(os.environ["DMLIB_CACHE"]).glob("toy-*.safetensors"))) == 3


def test_train_policy_refuses_a_cached_file_trained_for_other_settings(env):
    env.setenv("DMLIB_MODE", "quick")
    calls = []
    shipped.load_or_train("toy", _build, _trainer(calls), config=TINY, data_source="8gaussians")
    for src, dst in zip(checkpoint.files(shipped.cache_path("toy", TINY, "8gaussians")),
                        checkpoint.files(shipped.cache_path("toy", TINY, "moons"))):
        shutil.copy(src, dst)  # put by hand under the name of another data source
    with pytest.raises(CheckpointError, match=r"toy-\w+\.safetensors was trained with other settings than this "
                                              r"call's \(data_source: file '8gaussians', now 'moons'\)\. Delete"):
        shipped.load_or_train("toy", _build, _trainer(calls), config=TINY, data_source="moons")
    assert calls == [1]


def test_manifest_guards_the_shipped_files(env):
    folder = Path(os.environ["DMLIB_CHECKPOINTS"])
    checkpoint.save_model(folder / "toy", _model(hidden=8, depth=1))
    assert shipped.manifest() == {}
    shipped.write_manifest()
    assert set(shipped.manifest()) == {"toy.safetensors"}
    shipped.load_or_train("toy", _build, _trainer([]), config=TINY, device="cpu")

    checkpoint.save_model(folder / "toy", _model(seed=3, hidden=8, depth=1))  # replaced after the manifest
    with pytest.raises(CheckpointError, match=r"toy\.safetensors does not match .*MANIFEST\.json"):
        shipped.load_or_train("toy", _build, _trainer([]), config=TINY, device="cpu")
    checkpoint.save_model(folder / "other", _model(hidden=8, depth=1))
    with pytest.raises(CheckpointError, match=r"other\.safetensors is not listed in .*MANIFEST\.json"):
        shipped.load_or_train("other", _build, _trainer([]), config=TINY, device="cpu")


@pytest.mark.parametrize("mode,device,policy", [
    ("quick", "cpu", "train"), ("quick", "cuda", "train"),
    ("full", "cuda", "train"), ("full", "cpu", "load"), ("full", "mps", "load"),
])
def test_checkpoint_policy(env, mode, device, policy):
    env.setenv("DMLIB_MODE", mode)
    assert run.checkpoint_policy(device) == policy


def test_cache_dir_is_never_the_repository(env, tmp_path):
    assert run.cache_dir() == tmp_path / "cache"
    env.delenv("DMLIB_CACHE")
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert run.cache_dir() == tmp_path / "xdg" / "dmlib"
    env.delenv("XDG_CACHE_HOME")
    assert run.cache_dir() == Path.home() / ".cache" / "dmlib"
    repo = Path(checkpoint.__file__).resolve().parents[1]
    assert repo not in run.cache_dir().resolve().parents


def test_shipped_dir_defaults_to_the_repository(env):
    env.delenv("DMLIB_CHECKPOINTS")
    assert shipped.shipped_dir() == Path(shipped.__file__).resolve().parents[1] / "checkpoints"


# -- invalid input at the public boundary -----------------------------------------------------
CASES = {
    "save_model not a module": (lambda p: checkpoint.save_model(p / "x", {"w": torch.ones(1)}), TypeError,
                                r"model must be a torch.nn.Module, got dict"),
    "save_model dtype int8": (lambda p: checkpoint.save_model(p / "x", _model(), dtype=torch.int8), ValueError,
                              r"dtype must be None or one of .*float16.*got torch.int8"),
    "save_model config a string": (lambda p: checkpoint.save_model(p / "x", _model(), config="cosine"), TypeError,
                                   r"config must be a dataclass instance, a dict or None, got str"),
    "save_model config not JSON": (lambda p: checkpoint.save_model(p / "x", _model(), config={"f": print}),
                                   TypeError, r"config must hold only JSON values"),
    "save_model data_source": (lambda p: checkpoint.save_model(p / "x", _model(), data_source=3), TypeError,
                               r"data_source must be a str"),
    "load_model not a module": (lambda p: checkpoint.load_model(p / "x", None), TypeError,
                                r"model must be a torch.nn.Module, got NoneType"),
    "path None": (lambda p: checkpoint.files(None), TypeError, r"path must be a checkpoint path"),
    "load_or_train name with folder": (lambda p: shipped.load_or_train("a/b", _build, _trainer([]), config=TINY),
                                       ValueError, r"name must be a checkpoint name .*got 'a/b'"),
    "load_or_train build_model": (lambda p: shipped.load_or_train("a", None, _trainer([]), config=TINY),
                                  TypeError, r"build_model and train_fn must be callables"),
    "load_or_train data_source": (lambda p: shipped.load_or_train("a", _build, _trainer([]), config=TINY,
                                                                  data_source=3),
                                  TypeError, r"data_source must be a str"),
    "load_or_train train_fn result": (lambda p: shipped.load_or_train("a", _build, lambda m: 3, config=TINY),
                                      TypeError, r"train_fn must return the trained model.*got int"),
    "checkpoint_policy device": (lambda p: run.checkpoint_policy("gpu"), ValueError,
                                 r"device must be a torch.device or a name .*got 'gpu'"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input(env, tmp_path, case):
    env.setenv("DMLIB_MODE", "quick")
    call, error, match = CASES[case]
    with pytest.raises(error, match=match):
        call(tmp_path)

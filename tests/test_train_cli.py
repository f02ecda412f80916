"""The training entry point (python -m dmlib.train), run descriptions, the manifest, shipped.load,
train.trained and the on-track checks of Chapter 7.

Everything runs on a small fake MNIST written into a temporary $DMLIB_DATA, so no test depends
on the real digits being present.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dmlib import checkpoint, data, ontrack, shipped, train
from dmlib.nn import DigitClassifier, NoisyDigitClassifier, UNet

SHIPPED_CONFIGS = sorted(p.stem for p in train.CONFIG_DIR.glob("*.json"))


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A tiny MNIST cache (60 / 20 / 20 digits: bright squares whose position is the label)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 60), ("validation", 20), ("test", 20)):
        labels = rng.integers(0, 10, n)
        images = np.zeros((n, 28, 28), np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c:2 * c + 8, 4:12] = 255
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.astype(np.int64)
    folder = tmp_path / "data"
    folder.mkdir()
    np.savez_compressed(folder / data.NPZ, **arrays)
    monkeypatch.setenv("DMLIB_DATA", str(folder))
    monkeypatch.setenv("DMLIB_CHECKPOINTS", str(tmp_path / "ckpt"))
    monkeypatch.setenv("DMLIB_CACHE", str(tmp_path / "cache"))
    return folder


def tiny_config(tmp_path, **changes):
    cfg = {
        "name": "tiny_test",
        "model": {"kind": "unet", "config": {"channels": 8, "mults": [1, 2], "blocks": 1, "attention": [14],
                                            "heads": 2, "groups": 4, "n_classes": 10, "prediction": "eps",
                                            "image_size": 28}},
        "objective": {"kind": "diffusion", "schedule": "cosine"},
        "data": {"dataset": "mnist", "split": "train", "labels": True},
        "train": {"steps": 6, "batch_size": 8, "lr": 1e-3, "warmup": 2, "ema_decay": 0.9, "label_dropout": 0.2,
                  "seed": 0, "log_every": 2, "checkpoint_every": 3, "progress": False},
        "store_dtype": "float16",
    }
    for key, value in changes.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    path = tmp_path / f"{cfg['name']}.json"
    path.write_text(json.dumps(cfg))
    return path


# -- run descriptions ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_every_shipped_config_builds_its_model_and_loss(name):
    cfg = train.load_config(name)
    model = train.build_model(cfg)
    loss = train.build_loss(cfg)
    assert callable(loss) and sum(p.numel() for p in model.parameters()) > 1000
    train.train_config(cfg)  # a valid TrainConfig


def test_the_configs_cover_the_part_ii_models():
    kinds = {n: train.load_config(n)["model"]["kind"] for n in SHIPPED_CONFIGS}
    assert {"mnist_uncond", "mnist_flow", "mnist_cond", "mnist_classifier", "mnist_noisy_classifier",
            "mnist_tiny"} <= set(kinds)
    assert isinstance(train.build_model(train.load_config("mnist_flow")), UNet)
    assert train.build_model(train.load_config("mnist_flow")).prediction == "velocity"
    assert train.build_model(train.load_config("mnist_cond")).n_classes == 10
    assert isinstance(train.build_model(train.load_config("mnist_classifier")), DigitClassifier)
    assert isinstance(train.build_model(train.load_config("mnist_noisy_classifier")), NoisyDigitClassifier)
    # a tiny CPU variant beside the full models (0.2M parameters), the full ones at 0.5M
    sizes = {n: sum(p.numel() for p in train.build_model(train.load_config(n)).parameters())
             for n in ("mnist_tiny", "mnist_uncond")}
    assert 150_000 < sizes["mnist_tiny"] < 300_000 < 400_000 < sizes["mnist_uncond"] < 700_000


def test_load_config_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="shipped: .*mnist_uncond"):
        train.load_config("no_such_run")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        train.load_config(bad)
    bad.write_text(json.dumps({"name": "x", "model": {"kind": "unet"}}))
    with pytest.raises(ValueError, match=r"lacks the sections \['objective', 'data', 'train'\]"):
        train.load_config(bad)
    path = tiny_config(tmp_path, train={"stepz": 3})
    with pytest.raises(TypeError, match="stepz"):
        train.load_config(path)
    path = tiny_config(tmp_path, model={"kind": "transformer"})
    with pytest.raises(ValueError, match="model.kind"):
        train.load_config(path)


# -- the entry point -------------------------------------------------------------------------------
def test_run_writes_checkpoint_record_and_manifest(tmp_path, fake_mnist, capsys):
    path = tiny_config(tmp_path)
    assert train.main([str(path), "--runs", str(tmp_path / "runs")]) == 0
    assert "tiny_test: step 6 on cpu" in capsys.readouterr().out
    out = tmp_path / "ckpt"
    record = checkpoint.read_record(out / "tiny_test")
    assert record["step"] == 6 and record["seed"] == 0 and record["stored_dtype"] == "float16"
    assert "pickle" in record["data_source"] or "mnist.npz" in record["data_source"]
    assert record["config"]["model"]["config"]["channels"] == 8
    assert {"validation_loss", "train_seconds", "parameters"} <= set(record["metrics"])
    # 20 validation digits here, fewer than evaluate()'s 2,000: still a finite mean
    assert 0 < record["metrics"]["validation_loss"] < 10
    entry = json.loads((out / "MANIFEST.json").read_text())["tiny_test.safetensors"]
    digest = hashlib.sha256((out / "tiny_test.safetensors").read_bytes()).hexdigest()
    assert entry["sha256"] == digest
    for key in ("config", "seed", "data_source", "device", "git_commit", "metrics", "step"):
        assert key in entry
    model, rec = shipped.load("tiny_test")
    assert isinstance(model, UNet) and not model.training and rec["sha256"] == digest


def test_run_resumes_and_export_saves_the_ema_weights(tmp_path, fake_mnist):
    path = tiny_config(tmp_path)
    runs, out = tmp_path / "runs", tmp_path / "ckpt"
    cfg = train.load_config(path)
    train.run(cfg, runs=runs, out=out, progress=False)
    first = checkpoint.read_record(out / "tiny_test")
    seconds = json.loads((runs / "tiny_test" / "time.json").read_text())["seconds"]
    # a second call finds the finished state: nothing more is trained, the weights are the same
    train.run(cfg, runs=runs, out=out, progress=False)
    assert checkpoint.read_record(out / "tiny_test")["sha256"] == first["sha256"]
    assert json.loads((runs / "tiny_test" / "time.json").read_text())["seconds"] >= seconds
    # export reads the EMA weights of the training state: the same file again
    train.export(cfg, runs=runs, out=out)
    assert checkpoint.read_record(out / "tiny_test")["sha256"] == first["sha256"]
    # another config with the same name and runs folder is refused, not silently continued
    changed = train.load_config(tiny_config(tmp_path, train={"lr": 2e-3}))
    with pytest.raises(checkpoint.CheckpointError, match="lr: saved 0.001, now 0.002"):
        train.run(changed, runs=runs, out=out, progress=False)


def test_interrupted_cli_run_continues_to_the_same_weights(tmp_path, fake_mnist):
    path = tiny_config(tmp_path)
    cfg = train.load_config(path)
    train.run(cfg, runs=tmp_path / "a", out=tmp_path / "out_a", progress=False)
    # "interrupt" the second run after its step-3 save by running a 3-step prefix: the saved
    # state at step 3 of a 6-step run is what a killed process leaves behind
    state = tmp_path / "b" / "tiny_test" / "state"
    tcfg = train.train_config(cfg, checkpoint=str(state), progress=False)
    images, labels, _ = train.load_data(cfg)

    class Stop(Exception):
        pass

    real_save = checkpoint.save_training_state

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        raise Stop

    import dmlib.train as tr
    tr.checkpoint.save_training_state = save_then_stop
    try:
        with pytest.raises(Stop):
            train.train(train.build_model(cfg), train.build_loss(cfg), images, tcfg, labels=labels)
    finally:
        tr.checkpoint.save_training_state = real_save
    assert checkpoint.read_record(state)["step"] == 3
    train.run(cfg, runs=tmp_path / "b", out=tmp_path / "out_b", progress=False)
    a = checkpoint.read_record(tmp_path / "out_a" / "tiny_test")
    b = checkpoint.read_record(tmp_path / "out_b" / "tiny_test")
    assert a["sha256"] == b["sha256"]  # bit-identical weights


def test_classifier_run_records_test_accuracy_and_ema_keeps_batchnorm_statistics(tmp_path, fake_mnist):
    path = tiny_config(tmp_path, model={"kind": "digit_classifier", "config": {"channels": 4, "features": 8}},
                       objective={"kind": "classifier"}, train={"label_dropout": 0.0, "steps": 30})
    cfg = train.load_config(path)
    record = train.run(cfg, runs=tmp_path / "runs", out=tmp_path / "ckpt", progress=False)
    assert 0.0 <= record["metrics"]["test_accuracy"] <= 1.0
    model, _ = shipped.load("tiny_test")
    bn = model.body[0][1]
    # the EMA copy's batch-norm statistics follow the trained model (not left at 0 and 1)
    assert bn.running_mean.abs().sum() > 0 and not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_trained_in_quick_mode_trains_the_quick_budget_and_caches_it(tmp_path, fake_mnist, monkeypatch, capsys):
    monkeypatch.setenv("DMLIB_MODE", "quick")
    path = tiny_config(tmp_path)
    model, record = train.trained(str(path), quick_steps=4, quick_batch=4)
    assert record["step"] == 4 and record["config"]["train"]["batch_size"] == 4
    assert "trained in" in capsys.readouterr().out
    again, _ = train.trained(str(path), quick_steps=4, quick_batch=4)
    assert "loaded" in capsys.readouterr().out
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)


def test_trained_in_full_mode_on_a_cpu_loads_the_shipped_file_or_says_how(tmp_path, fake_mnist, monkeypatch):
    monkeypatch.setenv("DMLIB_MODE", "full")
    path = tiny_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="shipped checkpoint .*tiny_test.safetensors is missing"):
        train.trained(str(path), device="cpu")
    train.run(train.load_config(path), runs=tmp_path / "runs", progress=False)
    model, record = train.trained(str(path), device="cpu")
    assert record["step"] == 6


def test_shipped_load_errors(tmp_path, fake_mnist):
    with pytest.raises(FileNotFoundError, match="python -m dmlib.train nothing_here"):
        shipped.load("nothing_here")
    with pytest.raises(ValueError, match="checkpoint name"):
        shipped.load("../escape")
    folder = tmp_path / "ckpt"
    checkpoint.save_model(folder / "bare", torch.nn.Linear(2, 2))
    with pytest.raises(checkpoint.CheckpointError, match="no run description"):
        shipped.load("bare")


# -- the shipped checkpoints themselves -------------------------------------------------------------
def test_manifest_hashes_match_the_shipped_files():
    folder = Path(train.__file__).resolve().parents[1] / "checkpoints"
    if not (folder / "MANIFEST.json").exists():
        pytest.skip("no checkpoints/MANIFEST.json in this checkout")
    entries = json.loads((folder / "MANIFEST.json").read_text())
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    assert sorted(entries) == files, "every shipped file is listed, and only those"
    total = 0
    for name, entry in entries.items():
        blob = (folder / name).read_bytes()
        total += len(blob)
        assert hashlib.sha256(blob).hexdigest() == entry["sha256"], name
        assert entry["config"]["name"] == name.removesuffix(".safetensors")
    assert total < 30e6, "checkpoints/ stays within its 30 MB budget"


# -- on-track checks ---------------------------------------------------------------------------------
def test_check_loss_band_and_hints():
    history = [(50, 0.2), (100, 0.08), (150, 0.06)]
    ok = ontrack.check_loss(history, step=120, band=(0.05, 0.1))
    assert ok.ok and ok.values == {"step": 100, "loss": 0.08} and "Usual causes" not in ok.message
    bad = ontrack.check_loss(history, step=150, band=(0.01, 0.05))
    assert not bad.ok and "0.0600" in bad.message and "[-1, 1]" in bad.message
    with pytest.raises(ontrack.OffTrack, match="Usual causes"):
        ontrack.check_loss(history, step=150, band=(0.01, 0.05), strict=True)
    with pytest.raises(ValueError, match="history is empty"):
        ontrack.check_loss([], step=1, band=(0, 1))



def test_loss_bands_pick_the_latest_reference_step():
    bands = ontrack.MNIST_EPS_LOSS_BANDS
    assert ontrack.band_at(20) == (20, bands[20])
    assert ontrack.band_at(1750) == (1000, bands[1000])     # not the step-500 band
    assert ontrack.band_at(2000) == (2000, bands[2000])
    assert ontrack.band_at(10_000) == (max(bands), bands[max(bands)])
    assert ontrack.band_at(7, {5: (0, 1), 10: (2, 3)}) == (5, (0, 1))
    steps = sorted(bands)
    for a, b in zip(steps, steps[1:]):   # bands tighten and move down as training goes on
        assert bands[b][0] <= bands[a][0] and bands[b][1] <= bands[a][1]
    # the logged losses of the reference runs lie inside their own bands
    logged = {500: 0.048, 1000: 0.045, 2000: 0.042, 4000: 0.039}
    for step, loss in logged.items():
        lo, hi = ontrack.band_at(step)[1]
        assert lo < loss < hi and hi / loss < 1.45 and loss / lo < 1.6
    with pytest.raises(ValueError, match="first reference step"):
        ontrack.band_at(10)
    with pytest.raises(ValueError, match="bands is empty"):
        ontrack.band_at(100, {})

class FixedLogits(torch.nn.Module):
    """A 'classifier' that reads the label from the first pixel: logits of a chosen sharpness."""

    def __init__(self, sharpness):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(float(sharpness)))

    def forward(self, x, t=None, y=None):
        k = ((x[:, 0, 0, 0] + 1) * 4.5).round().long()  # pixel value encodes the digit
        return self.scale * torch.nn.functional.one_hot(k, 10).float()


def digits_as_pixels(labels):
    x = torch.zeros(len(labels), 1, 28, 28)
    x[:, 0, 0, 0] = torch.as_tensor(labels).float() / 4.5 - 1
    return x


def test_check_samples_confidence_coverage_accuracy():
    labels = torch.arange(100) % 10
    images = digits_as_pixels(labels)
    sharp = FixedLogits(20.0)
    v = ontrack.check_samples(images, sharp, min_confidence=0.99, labels=labels, min_accuracy=0.99)
    assert v.ok and v.values["coverage"] == 1.0 and v.values["accuracy"] == 1.0
    assert v.values["confidence"] > 0.999
    # oracle: softmax of (s, 0, ..., 0) gives e^s / (e^s + 9)
    vague = ontrack.check_samples(images, FixedLogits(1.0), min_confidence=0.5)
    assert abs(vague.values["confidence"] - np.e / (np.e + 9)) < 1e-6 and not vague.ok
    # only three digits: coverage 0.3, and the message says what usually went wrong
    few = digits_as_pixels(torch.arange(99) % 3)
    v = ontrack.check_samples(few, sharp, min_confidence=0.9)
    assert v.values["coverage"] == pytest.approx(0.3) and not v.ok and "few repeated digits" in v.message
    wrong = ontrack.check_samples(images, sharp, min_confidence=0.9, labels=(labels + 1) % 10, min_accuracy=0.5)
    assert wrong.values["accuracy"] == 0.0 and not wrong.ok
    # a label miss names the label causes; a confidence miss alone does not
    assert "null class never trained" in wrong.message and "labels shifted" in wrong.message
    assert "null class" not in vague.message


def test_training_time_counts_a_killed_session_up_to_its_last_save(tmp_path):
    import os

    runs = tmp_path / "runs" / "x"
    assert train._clock_so_far(runs) is None  # no clock yet
    assert train._clock_start(runs, fresh=False) == 0.0  # session 1 begins
    started = json.loads((runs / "time.json").read_text())["session_start"]
    record = checkpoint.files(runs / "state")[1]
    record.write_text("{}")
    os.utime(record, (started + 5.0, started + 5.0))  # its last save, 5 s in; then it dies
    assert train._clock_so_far(runs) == pytest.approx(5.0)
    assert train._clock_start(runs, fresh=False) == pytest.approx(5.0)  # session 2 carries on
    os.utime(record, (time_now := started + 100.0, time_now))
    later = json.loads((runs / "time.json").read_text())["session_start"]
    assert train._clock_so_far(runs) == pytest.approx(5.0 + max(0.0, time_now - later))
    assert train._clock_start(runs, fresh=True) == 0.0  # --fresh forgets it

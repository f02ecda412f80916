"""dmlib.latent: latent models of Chapter 12 -- the scale factor, the denoiser protocol in
latent space, the latents of a run's data (scaled, cached), and the configs that train them."""

import json

import numpy as np
import pytest
import torch

from dmlib import data, latent, samplers, train
from dmlib.guidance import ClassifierFreeGuidance
from dmlib.nn.autoencoder import Autoencoder
from dmlib.nn.dit import DiT
from dmlib.nn.unet import UNet
from dmlib.schedules import get_schedule


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A tiny MNIST cache (60 / 20 / 20 digits: bright squares whose position is the label),
    quick mode, and private checkpoint and cache folders."""
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
    monkeypatch.setenv("DMLIB_MODE", "quick")
    return folder


def write_configs(tmp_path):
    """A tiny autoencoder run and a tiny latent U-Net run on its latents."""
    ae = {
        "name": "tiny_vae",
        "model": {"kind": "autoencoder", "config": {"channels": 8, "groups": 4}},
        "objective": {"kind": "autoencoder", "kl_weight": 0.01},
        "data": {"dataset": "mnist", "split": "train", "labels": False},
        "train": {"steps": 10, "batch_size": 8, "warmup": 2, "seed": 0, "progress": False},
    }
    lat = {
        "name": "tiny_latent",
        "model": {"kind": "unet", "config": {"channels": 8, "mults": [1], "blocks": 1, "attention": [7],
                                            "heads": 2, "groups": 4, "image_channels": 4, "image_size": 7,
                                            "n_classes": 10}},
        "objective": {"kind": "diffusion", "schedule": "cosine"},
        "data": {"dataset": "mnist", "split": "train", "labels": True, "latent": str(tmp_path / "tiny_vae.json")},
        "train": {"steps": 10, "batch_size": 8, "warmup": 2, "label_dropout": 0.2, "seed": 0, "progress": False},
    }
    for cfg in (ae, lat):
        (tmp_path / f"{cfg['name']}.json").write_text(json.dumps(cfg))
    return tmp_path / "tiny_vae.json", tmp_path / "tiny_latent.json"


def test_latent_stats_on_a_known_case():
    z = 3.0 + 2.0 * torch.randn(4000, 4, 7, 7, generator=torch.Generator().manual_seed(0))
    scale, shift = latent.latent_stats(z)
    assert scale == pytest.approx(0.5, rel=0.01) and shift == pytest.approx(3.0, abs=0.01)
    scaled = scale * (z - shift)
    assert float(scaled.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(scaled.std()) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="standard deviation 0"):
        latent.latent_stats(torch.ones(10, 4))
    with pytest.raises(ValueError, match="at least 2"):
        latent.latent_stats(torch.ones(1, 4))


def _small_pair():
    torch.manual_seed(0)
    ae = Autoencoder(channels=8, groups=4).eval()
    den = DiT(width=32, depth=2, heads=2, n_classes=10)
    with torch.no_grad():
        for p in den.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    return ae, den.eval()


def test_latent_model_is_its_denoiser_in_latent_space():
    ae, den = _small_pair()
    model = latent.LatentModel(den, ae, scale=2.0, shift=0.5)
    z, t, y = torch.randn(3, 4, 7, 7), torch.tensor([0.2, 0.5, 0.9]), torch.tensor([1, 2, 10])
    assert model.prediction == den.prediction and model.n_classes == 10 and model.latent_shape == (4, 7, 7)
    torch.testing.assert_close(model(z, t, y), den(z, t, y), rtol=0, atol=0)
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x), 2.0 * (ae.encode(x)[0] - 0.5))
        # decode undoes the scaling: decode(encode(x)) is the autoencoder's mean reconstruction
        torch.testing.assert_close(model.decode(model.encode(x)), ae.decode(ae.encode(x)[0]), rtol=1e-5, atol=1e-5)


def test_samplers_and_guidance_run_on_a_latent_model_and_decode_to_digits():
    ae, den = _small_pair()
    model = latent.LatentModel(den, ae, scale=1.3)
    x_T = torch.randn(3, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    z = samplers.sample(ClassifierFreeGuidance(model, 2.0), x_T, get_schedule("cosine"), method="ddim",
                        n_steps=4, y=torch.tensor([0, 5, 9]))
    with torch.no_grad():
        assert model.decode(z).shape == (3, 1, 28, 28)


def test_latent_model_errors():
    ae, den = _small_pair()
    with pytest.raises(TypeError, match="Autoencoder"):
        latent.LatentModel(den, torch.nn.Linear(2, 2), scale=1.0)
    with pytest.raises(ValueError, match="scale"):
        latent.LatentModel(den, ae, scale=0.0)
    with pytest.raises(AttributeError, match="prediction"):
        latent.LatentModel(torch.nn.Linear(2, 2), ae, scale=1.0)


def test_latent_data_is_scaled_with_the_training_statistics_and_cached(tmp_path, fake_mnist, capsys):
    _, lat_path = write_configs(tmp_path)
    cfg = train.load_config(lat_path)
    z, y, description, (scale, shift) = latent.latent_data(cfg, "train")
    assert z.shape == (60, 4, 7, 7) and y.shape == (60,) and "tiny_vae" in description
    assert float(z.double().mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(z.double().std()) == pytest.approx(1.0, abs=1e-4)
    cached = sorted((tmp_path / "cache" / "latents").glob("*.safetensors"))
    assert len(cached) == 1 and "train-60" in cached[0].name
    stamp = cached[0].stat().st_mtime_ns
    z2, *_ = latent.latent_data(cfg, "train")
    assert torch.equal(z, z2) and cached[0].stat().st_mtime_ns == stamp  # read back, not recomputed
    zv, yv, *_, stats = latent.latent_data(cfg, "validation")
    assert zv.shape == (20, 4, 7, 7) and stats == (scale, shift)  # scaled with the training split's numbers
    # the training loop's data for a latent run are these latents
    images, labels, source = train.load_data(cfg)
    assert torch.equal(images, z) and torch.equal(labels, y) and source == description


def test_a_latent_run_trains_through_the_entry_point_and_loads_as_a_latent_model(tmp_path, fake_mnist):
    vae_path, lat_path = write_configs(tmp_path)
    record = train.run(train.load_config(lat_path), runs=tmp_path / "runs", out=tmp_path / "out", progress=False)
    assert record["step"] == 10 and "validation_loss" in record["metrics"]
    assert "latents of the autoencoder" in record["data_source"]
    model, _ = latent.load(lat_path)
    assert isinstance(model, latent.LatentModel) and isinstance(model.denoiser, UNet)
    z = samplers.sample(model, torch.randn(2, 4, 7, 7), get_schedule("cosine"), method="ddim", n_steps=2,
                        y=torch.tensor([3, 4]))
    with torch.no_grad():
        assert model.decode(z).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="not a latent model"):
        latent.load(vae_path)


def test_autoencoder_run_records_reconstruction_kl_and_latent_scale(tmp_path, fake_mnist):
    vae_path, _ = write_configs(tmp_path)
    record = train.run(train.load_config(vae_path), runs=tmp_path / "runs", out=tmp_path / "out", progress=False)
    m = record["metrics"]
    assert {"validation_mse", "validation_kl_per_dim", "latent_scale", "latent_shift"} <= set(m)
    assert m["validation_mse"] > 0 and m["latent_scale"] > 0


def test_the_part_iii_configs_build_their_models():
    vae = train.build_model(train.load_config("mnist_vae"))
    assert isinstance(vae, Autoencoder) and vae.latent_shape == (4, 7, 7)
    unet = train.build_model(train.load_config("mnist_latent_cond"))
    dit = train.build_model(train.load_config("mnist_latent_dit"))
    assert isinstance(unet, UNet) and isinstance(dit, DiT)
    n_unet, n_dit = (sum(p.numel() for p in m.parameters()) for m in (unet, dit))
    # "at similar parameter count" (Section 12.4): within 20% of each other, near the pixel U-Net's 0.5M
    assert abs(n_dit - n_unet) / n_unet < 0.2 and 400_000 < n_unet < 700_000
    for name in ("mnist_latent_cond", "mnist_latent_dit"):
        assert train.load_config(name)["data"]["latent"] == "mnist_vae"


def test_the_record_keeps_the_latent_scaling_and_a_changed_autoencoder_is_refused(tmp_path, fake_mnist,
                                                                                   monkeypatch):
    """Full mode on a CPU, as a reader's: both halves are shipped files; retraining the
    autoencoder under the same name leaves a denoiser that no longer fits it."""
    from dmlib.checkpoint import CheckpointError

    monkeypatch.setenv("DMLIB_MODE", "full")
    vae_path, lat_path = write_configs(tmp_path)
    train.run(train.load_config(vae_path), runs=tmp_path / "runs", progress=False)  # shipped to $DMLIB_CHECKPOINTS
    record = train.run(train.load_config(lat_path), runs=tmp_path / "runs", progress=False)
    *_, (scale, shift) = latent.latent_data(train.load_config(lat_path), "train")
    m = record["metrics"]
    assert m["latent_scale"] == scale and m["latent_shift"] == shift and len(m["autoencoder_weights"]) == 16
    model, rec = latent.load(lat_path)
    assert model.scale == m["latent_scale"] and model.shift == m["latent_shift"]
    cfg = json.loads(vae_path.read_text())
    cfg["train"]["seed"] = 1
    vae_path.write_text(json.dumps(cfg))
    train.run(train.load_config(vae_path), runs=tmp_path / "runs", fresh=True, progress=False)
    with pytest.raises(CheckpointError, match="do not fit"):
        latent.load(lat_path)

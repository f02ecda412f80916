"""The on-track check of Chapter 11 (dmlib.ontrack.check_autoencoder): it passes a good
autoencoder and fails planted bad ones (blurry, collapsed, a KL weight of 0, unscaled
latents), each with the hints of its own failure."""

import pytest
import torch

from dmlib import losses, ontrack, train
from dmlib.latent import latent_stats
from dmlib.nn.autoencoder import Autoencoder, kl_to_standard_normal

GOOD = dict(max_mse=0.02, kl_band=(0.5, 4.0), min_accuracy=0.97)


def test_a_good_autoencoder_passes():
    v = ontrack.check_autoencoder(0.008, 1.9, accuracy=0.99, latent_std=1.0, **GOOD)
    assert v.ok and "Usual causes" not in v.message
    assert v.values == {"mse": 0.008, "kl_per_dim": 1.9, "accuracy": 0.99, "latent_std": 1.0}
    assert "reconstruction MSE 0.0080 (needs <= 0.02)" in v.message


@pytest.mark.parametrize("run,hint,not_hint", [
    (dict(mse=0.05, kl_per_dim=1.0, accuracy=0.95), "blurry", "posterior collapse"),
    (dict(mse=0.06, kl_per_dim=0.01, accuracy=0.3), "posterior collapse", "sign slip"),
    (dict(mse=0.008, kl_per_dim=9.0, accuracy=0.99), "sign slip", "blurry"),
    (dict(mse=0.008, kl_per_dim=1.9, accuracy=0.99, latent_std=5.5), "latent_stats",
     "blurry"),
])
def test_planted_bad_runs_fail_with_their_own_hints(run, hint, not_hint):
    v = ontrack.check_autoencoder(**run, **GOOD)
    assert not v.ok and "Usual causes" in v.message
    assert hint in v.message and not_hint not in v.message
    with pytest.raises(ontrack.OffTrack, match=hint):
        ontrack.check_autoencoder(**run, **GOOD, strict=True)


def test_nan_fails():
    assert not ontrack.check_autoencoder(float("nan"), 1.0, **{**GOOD, "min_accuracy": None}
                                         ).ok
    assert not ontrack.check_autoencoder(0.01, float("nan"), max_mse=0.02,
                                         kl_band=(0.5, 4.0)).ok


@pytest.mark.parametrize("kwargs,match", [
    (dict(mse="0.1"), "mse"),
    (dict(kl_band=(2.0, 1.0)), "kl_band"),
    (dict(std_band=(1.0,)), "std_band"),
    (dict(accuracy=0.9, min_accuracy=None), "together"),
    (dict(latent_std=True), "latent_std"),
])
def test_bad_input_is_refused(kwargs, match):
    args = dict(mse=0.01, kl_per_dim=1.0, max_mse=0.02, kl_band=(0.5, 4.0))
    with pytest.raises(ValueError, match=match):
        ontrack.check_autoencoder(**{**args, **kwargs})


def _measure(kl_weight, seed=0, steps=40):
    """Train a tiny autoencoder on smooth images; return (mse, kl per dim, latent std)."""
    g = torch.Generator().manual_seed(2)
    coarse = torch.randn(256, 1, 7, 7, generator=g)
    x = torch.nn.functional.interpolate(coarse, scale_factor=4, mode="bilinear").tanh()
    torch.manual_seed(seed)
    ae = Autoencoder(channels=4, groups=4)
    cfg = train.TrainConfig(steps=steps, batch_size=32, lr=3e-3, warmup=5, progress=False,
                            log_every=steps, device="cpu", seed=seed, ema_decay=None)
    ae = train.train(ae, losses.autoencoder_loss(kl_weight), x, cfg).model.eval()
    with torch.no_grad():
        mean, logvar = ae.encode(x)
        mse = float(((ae.decode(mean) - x) ** 2).mean())
        kl = float(kl_to_standard_normal(mean, logvar).mean() / mean[0].numel())
    return mse, kl, mean


def test_a_real_collapsed_run_fails_and_a_weak_kl_passes():
    """Planted in a real run: a KL weight of 50 collapses the posterior of a tiny
    autoencoder within 40 steps; the same recipe with kl_weight 0.01 keeps its KL."""
    mse_c, kl_c, _ = _measure(50.0)
    mse_w, kl_w, mean_w = _measure(0.01)
    band = dict(max_mse=mse_w * 1.5, kl_band=(0.5 * kl_w, 2.0 * kl_w))
    assert ontrack.check_autoencoder(mse_w, kl_w, **band).ok
    collapsed = ontrack.check_autoencoder(mse_c, kl_c, **band)
    assert not collapsed.ok and "posterior collapse" in collapsed.message
    # the same latents, unscaled by a factor 5 (as a weak KL lets them drift), fail the
    # scale test; scaled with latent_stats they pass it
    scale, shift = latent_stats(5 * mean_w)
    raw = ontrack.check_autoencoder(mse_w, kl_w, **band, latent_std=float((5 * mean_w).std()))
    fixed = float((scale * (5 * mean_w - shift)).std())
    assert not raw.ok and "latent_stats" in raw.message
    assert ontrack.check_autoencoder(mse_w, kl_w, **band, latent_std=fixed).ok

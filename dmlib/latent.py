"""Latent diffusion: a denoiser in an autoencoder's latent space, plus the decoder. Chapter 12.

A latent model (Rombach et al., 2022) generates latents z instead of pixels and decodes
them. Its two halves are trained apart: the autoencoder of Chapter 11 first, then a
denoiser on the scaled latents of the training digits,

    z = scale * (mean(x) - shift),        x_hat = decode(z / scale + shift),

where mean(x) is the encoder's posterior mean and ``scale`` makes the latents' standard
deviation 1 (:func:`latent_stats`, Section 11.3): a schedule built for data of unit scale
then destroys a latent at the rate it destroys a digit.

:class:`LatentModel` follows the denoiser protocol in latent space, so every sampler of
:mod:`dmlib.samplers` and every guidance wrapper of :mod:`dmlib.guidance` runs on it
unchanged; :meth:`LatentModel.decode` turns what they return into digits for the metrics.
"""

from __future__ import annotations

import torch
from torch import nn

from . import _check
from .nn.autoencoder import Autoencoder


@torch.no_grad()
def encode_means(autoencoder: Autoencoder, images: torch.Tensor, *, batch: int = 1000) -> torch.Tensor:
    """The posterior means of q(z | x) for ``images`` (N, 1, 28, 28), in batches on the
    autoencoder's device, returned on the images' device: (N, *latent_shape). Section 11.3."""
    _check.tensor(images, "images", min_dim=4)
    _check.positive_int(batch, "batch")
    device = next(autoencoder.parameters()).device
    was_training = autoencoder.training
    autoencoder.eval()
    out = [autoencoder.encode(images[i : i + batch].to(device))[0].to(images.device)
           for i in range(0, images.shape[0], batch)]
    autoencoder.train(was_training)
    return torch.cat(out)  # (N, C, h, w)


def latent_stats(means: torch.Tensor) -> tuple[float, float]:
    """``(scale, shift)`` of a set of latents (N, C, h, w): shift is their mean and
    scale the inverse of their standard deviation over all entries, so that
    scale * (z - shift) has mean 0 and variance 1 (Section 11.3). Stable Diffusion's
    0.18215 is this number for its autoencoder, computed once and written into the
    code."""
    _check.tensor(means, "means", min_dim=2)
    if means.shape[0] < 2:
        raise ValueError("need at least 2 latents to estimate their spread, got "
                         f"{means.shape[0]}")
    m = means.detach().to("cpu", torch.float64)  # sync: once; MPS has no float64
    shift, std = m.mean(), m.std()
    if not torch.isfinite(std) or std <= 0:  # sync: once, on a statistic
        raise ValueError(f"the latents have standard deviation {float(std)}; "
                         "cannot scale them")
    return float(1.0 / std), float(shift)


class LatentModel(nn.Module):
    """A denoiser in latent space together with the autoencoder that defines the space
    (Section 12.1).

    Calling it is calling the denoiser on scaled latents, ``model(z_t, t, y=None)``, so
    samplers and guidance use it as any denoiser; ``prediction`` and ``n_classes`` are the
    denoiser's. :meth:`encode` and :meth:`decode` move between digits and scaled latents.
    """

    def __init__(self, denoiser: nn.Module, autoencoder: Autoencoder, *, scale: float, shift: float = 0.0):
        super().__init__()
        if not isinstance(autoencoder, Autoencoder):
            raise TypeError(f"autoencoder must be a dmlib Autoencoder, got {type(autoencoder).__name__}")
        self.scale = _check.finite_positive(scale, "scale")
        if not isinstance(shift, (int, float)) or shift != shift:
            raise ValueError(f"shift must be a real number, got {shift!r}")
        self.shift = float(shift)
        self.denoiser, self.autoencoder = denoiser, autoencoder
        self.prediction = getattr(denoiser, "prediction", None)
        if self.prediction is None:
            raise AttributeError("denoiser must declare denoiser.prediction")
        self.n_classes = getattr(denoiser, "n_classes", None)

    @property
    def latent_shape(self) -> tuple:
        """(C, h, w) of one latent: the shape of the samplers' x_T."""
        return self.autoencoder.latent_shape

    def forward(self, z_t: torch.Tensor, t, y=None) -> torch.Tensor:
        return self.denoiser(z_t, t, y)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled latents scale * (mean(x) - shift) of digits x (B, 1, 28, 28).
        Section 12.1."""
        return self.scale * (self.autoencoder.encode(x)[0] - self.shift)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Digits (B, 1, 28, 28) from scaled latents z (B, *latent_shape).
        Section 12.1."""
        return self.autoencoder.decode(z / self.scale + self.shift)


# -- latents of the training data, for the one training loop ----------------------------------
def _weights_digest(module: nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _cached_means(autoencoder: Autoencoder, images: torch.Tensor, key: str) -> torch.Tensor:
    """:func:`encode_means` of ``images``, kept in the cache folder under ``key`` (the
    autoencoder's weights and the images name the file): encoding the 50,000 training digits
    takes about a minute on a laptop CPU, so it is done once."""
    import os

    from safetensors.torch import load_file, save_file

    from .run import cache_dir

    path = cache_dir() / "latents" / f"{key}.safetensors"
    if path.is_file():
        means = load_file(str(path))["means"]
        if means.shape[0] == images.shape[0]:
            return means
    means = encode_means(autoencoder, images)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    save_file({"means": means.to("cpu").contiguous()}, str(tmp))
    os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one
    return means


def latent_data(cfg: dict, split: str | None = None, *, device=None):
    """``(latents, labels or None, description, (scale, shift))`` for a run whose
    ``data`` section names an autoencoder run (``"latent": "mnist_vae"``): the digits of
    ``split`` encoded by that autoencoder (through :func:`dmlib.train.trained`: the shipped
    one in full mode on a CPU) and scaled with the statistics of the training split's
    latents. In quick mode only the first 2,000 digits of a split are encoded. Section 12.1."""
    from .run import budget
    from .train import load_config, load_data, trained

    autoencoder, _ = trained(cfg["data"]["latent"], device=device)
    name = load_config(cfg["data"]["latent"])["name"]  # a shipped name or a config file's run
    pixels = {**cfg, "data": {k: v for k, v in cfg["data"].items() if k != "latent"}}
    digest = _weights_digest(autoencoder)[:16]
    n = budget(full=None, quick=2000)

    def means_of(which):
        images, labels, source = load_data(pixels, which)
        images, labels = images[:n], (labels[:n] if labels is not None else None)
        key = f"{name}-{digest}-{which}-{images.shape[0]}"
        return _cached_means(autoencoder, images, key), labels, source

    train_means = means_of("train")[0]
    scale, shift = latent_stats(train_means)
    split = split or cfg["data"].get("split", "train")
    means, labels, source = means_of(split) if split != "train" else means_of("train")
    description = (f"{source}, as latents of the autoencoder {name} (weights {digest}; "
                   f"scale {scale:.5f}, shift {shift:.5f})")
    return scale * (means - shift), labels, description, (scale, shift)


def latent_info(cfg: dict, *, device=None) -> dict:
    """What a latent run's record keeps about its latent space: ``latent_scale``,
    ``latent_shift`` and ``autoencoder_weights`` (a digest of the autoencoder's weights), so
    that :func:`load` needs neither to encode the training digits again nor to trust that the
    autoencoder is still the one the denoiser learned from. Section 12.1."""
    from .train import trained

    autoencoder, _ = trained(cfg["data"]["latent"], device=device)
    *_, (scale, shift) = latent_data(cfg, "train", device=device)
    return {"latent_scale": scale, "latent_shift": shift,
            "autoencoder_weights": _weights_digest(autoencoder)[:16]}


def load(name, *, quick_steps: int = 60, quick_batch: int = 32, device=None):
    """The trained latent model of the run ``name`` (a shipped config or a path) as a
    :class:`LatentModel`, with the denoiser's record: both halves through
    :func:`dmlib.train.trained` (shipped weights in full mode on a CPU, trained on a CUDA
    GPU or at a quick budget). Returns ``(model, record)``, in eval mode. Section 12.1."""
    from .train import load_config, trained

    cfg = load_config(name)
    if "latent" not in cfg["data"]:
        raise ValueError(f"run {cfg['name']!r} is not a latent model: its data section names no autoencoder "
                         "(\"latent\": \"NAME\")")
    denoiser, record = trained(name, quick_steps=quick_steps, quick_batch=quick_batch, device=device)
    autoencoder, _ = trained(cfg["data"]["latent"], device=device)
    metrics = record.get("metrics") or {}
    digest = _weights_digest(autoencoder)[:16]
    if "latent_scale" in metrics:
        if metrics.get("autoencoder_weights") != digest:
            from .checkpoint import CheckpointError

            raise CheckpointError(
                f"{cfg['name']} was trained on the latents of autoencoder weights "
                f"{metrics.get('autoencoder_weights')}, but {cfg['data']['latent']} now has weights {digest}: "
                f"the two halves do not fit; retrain {cfg['name']} (python -m dmlib.train {cfg['name']})")
        scale, shift = metrics["latent_scale"], metrics["latent_shift"]
    else:  # a record without them: measure them again
        *_, (scale, shift) = latent_data(cfg, "train", device=device)
    model = LatentModel(denoiser, autoencoder, scale=scale, shift=shift)
    return model.eval(), record

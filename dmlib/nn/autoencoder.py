"""A small KL-regularised autoencoder for latent diffusion. Chapter 11.

The first stage of latent diffusion (Rombach et al., 2022): an encoder maps a digit to the
mean and log-variance of a diagonal Gaussian over a small latent, a decoder maps a latent
back to pixels, and a Kullback-Leibler penalty towards N(0, I) keeps the latent space
smooth enough for a second model to generate in it (a variational autoencoder; Kingma and
Welling, 2014):

    x (B, 1, 28, 28) -> encoder -> mean, logvar (B, 4, 7, 7)
    z = mean + exp(logvar / 2) * eps                  (the reparametrisation, Section 11.1)
    z -> decoder -> x_hat (B, 1, 28, 28)

Both halves are stacks of the U-Net's residual blocks without a time input: the encoder
halves the resolution between levels (28 -> 14 -> 7), the decoder doubles it back. There
are no skip connections between them: everything the decoder knows passes through z.

Shapes are written as (B, C, H, W) with B the batch, C channels, H x W the resolution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import _check, noise


@dataclass(frozen=True)
class AutoencoderConfig:
    """The size of an :class:`Autoencoder` (Section 11.1).

    ``channels`` is the width at full resolution; level i has ``channels * mults[i]``
    channels and half the resolution of level i - 1, so ``len(mults) - 1`` halvings give
    the latent's resolution (28 -> 7 with three levels); ``blocks`` residual blocks per
    level in each half; the latent has ``latent_channels`` channels.
    """

    channels: int = 32
    mults: tuple = (1, 2, 2)
    blocks: int = 1
    latent_channels: int = 4
    groups: int = 8  # GroupNorm groups (every width must be a multiple)
    image_channels: int = 1
    image_size: int = 28

    @property
    def latent_shape(self) -> tuple:
        """(C, H, W) of a latent: (4, 7, 7) by default."""
        size = self.image_size // 2 ** (len(self.mults) - 1)
        return (self.latent_channels, size, size)

    def to_dict(self) -> dict:
        """The config as JSON-ready values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "AutoencoderConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown AutoencoderConfig fields {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _check_config(cfg: AutoencoderConfig) -> None:
    if not isinstance(cfg, AutoencoderConfig):
        raise TypeError(f"config must be an AutoencoderConfig, got {type(cfg).__name__}")
    for name in ("channels", "blocks", "latent_channels", "groups", "image_channels", "image_size"):
        _check.positive_int(getattr(cfg, name), f"config.{name}")
    if not cfg.mults or not all(isinstance(m, int) and m > 0 for m in cfg.mults):
        raise ValueError(f"config.mults must be a non-empty tuple of positive ints, got {cfg.mults!r}")
    widths = [cfg.channels * m for m in cfg.mults]
    if any(w % cfg.groups for w in widths):
        raise ValueError(
            f"every width channels * mults = {widths} must be a multiple of config.groups = {cfg.groups}"
        )
    if cfg.image_size % 2 ** (len(cfg.mults) - 1):
        raise ValueError(
            f"config.image_size = {cfg.image_size} cannot be halved {len(cfg.mults) - 1} times "
            "(len(mults) - 1) without remainder"
        )


class Block(nn.Module):
    """Two 3x3 convolutions with GroupNorm and SiLU plus a skip path, as the U-Net's
    ResBlock without the time input: (B, c_in, H, W) -> (B, c_out, H, W). Section 11.1."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, H, W)
        h = self.conv2(F.silu(self.norm2(h)))  # (B, c_out, H, W)
        return self.skip(x) + h


class Autoencoder(nn.Module):
    """A convolutional VAE: :meth:`encode` gives the Gaussian q(z | x) as (mean, logvar),
    :meth:`decode` maps latents to images, and calling the module runs both with one
    reparametrised draw (Section 11.1)."""

    def __init__(self, config: AutoencoderConfig | None = None, **overrides):
        super().__init__()
        if config is not None and overrides:
            raise TypeError("give an AutoencoderConfig or keyword overrides, not both")
        cfg = AutoencoderConfig(**overrides) if config is None else config
        _check_config(cfg)
        self.config = cfg
        widths = [cfg.channels * m for m in cfg.mults]
        g = cfg.groups

        enc = [nn.Conv2d(cfg.image_channels, widths[0], 3, padding=1)]  # (B, w0, 28, 28)
        c = widths[0]
        for i, w in enumerate(widths):
            for _ in range(cfg.blocks):
                enc.append(Block(c, w, g))
                c = w
            if i < len(widths) - 1:  # stride-2 convolution: (B, c, H, W) -> (B, c, H/2, W/2)
                enc.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        enc += [Block(c, c, g), nn.GroupNorm(g, c), nn.SiLU(),
                nn.Conv2d(c, 2 * cfg.latent_channels, 3, padding=1)]  # (B, 2 * latent, 7, 7)
        self.encoder = nn.Sequential(*enc)

        dec = [nn.Conv2d(cfg.latent_channels, c, 3, padding=1), Block(c, c, g)]  # (B, c, 7, 7)
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(cfg.blocks):
                dec.append(Block(c, w, g))
                c = w
            if i > 0:  # nearest-neighbour x2, then a 3x3 convolution: (B, c, H, W) -> (B, c, 2H, 2W)
                dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        dec += [nn.GroupNorm(g, c), nn.SiLU(), nn.Conv2d(c, cfg.image_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_shape(self) -> tuple:
        """(C, H, W) of one latent."""
        return self.config.latent_shape

    def _check_input(self, x: torch.Tensor, name: str, shape: tuple) -> None:
        _check.tensor(x, name, min_dim=4)
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape):
            raise ValueError(
                f"{name} must have shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
            )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and log-variance of q(z | x), each (B, *latent_shape). Section 11.1."""
        cfg = self.config
        self._check_input(x, "x", (cfg.image_channels, cfg.image_size, cfg.image_size))
        mean, logvar = self.encoder(x).chunk(2, dim=1)  # 2 x (B, latent, 7, 7)
        # the clamp keeps exp(logvar) finite in low precision and early in training
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, image_channels, 28, 28) from latents (B, *latent_shape). Section 11.1."""
        self._check_input(z, "z", self.latent_shape)
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """``(x_hat, mean, logvar)``: the reconstruction of x from one draw
        z = mean + exp(logvar / 2) * eps of q(z | x). Section 11.1."""
        mean, logvar = self.encode(x)
        z = mean + torch.exp(0.5 * logvar) * noise.randn_like(mean, generator=generator)
        return self.decode(z), mean, logvar


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) of each sample, summed over its latent
    dimensions, shape (B,) (Section 11.1):

        KL = 1/2 sum_j (mean_j^2 + exp(logvar_j) - 1 - logvar_j).
    """
    _check.tensor(mean, "mean", min_dim=2)
    _check.same_shape(mean, logvar, "mean", "logvar")
    return 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)

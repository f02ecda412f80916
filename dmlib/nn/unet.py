"""A U-Net denoiser for images. Chapter 7.

The network of Ho et al. (2020), after Ronneberger et al. (2015), in a size for MNIST:

    conv_in -> [ResBlock x blocks (+ attention)] per resolution, downsampling between
            -> middle: ResBlock, attention, ResBlock at the lowest resolution
            -> [ResBlock x blocks on (h, skip) (+ attention)] per resolution, upsampling
            -> GroupNorm, SiLU, conv_out

Every ResBlock receives the embedding of the time t (and of the class y) and uses it to
scale and shift its normalised features (FiLM; Perez et al., 2018); self-attention runs
only where the feature map is small (7 x 7 on MNIST: 49 positions), because its cost
grows with the square of the number of positions. The last convolution starts at zero, so the
untrained network outputs 0 (a calm first step, as the MLP of Chapter 2).

Shapes are written as (B, C, H, W) with B the batch, C channels, H x W the resolution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import _check
from ..diffusion import PREDICTIONS
from .embeddings import TimeEmbedding


@dataclass(frozen=True)
class UNetConfig:
    """The size and wiring of a :class:`UNet` (Section 7.2).

    ``channels`` is the width at full resolution; level i has ``channels * mults[i]``
    channels and half the resolution of level i - 1; ``blocks`` ResBlocks per level on
    each side; self-attention at the resolutions listed in ``attention`` (and always in
    the middle). ``n_classes`` adds a class embedding with a null class for
    classifier-free guidance; ``prediction`` names what the network outputs.
    """

    channels: int = 32
    mults: tuple = (1, 2, 2)
    blocks: int = 1
    attention: tuple = (7,)
    heads: int = 4
    groups: int = 8  # GroupNorm groups (every width must be a multiple)
    dropout: float = 0.0
    n_classes: int | None = None
    prediction: str = "eps"
    image_channels: int = 1
    image_size: int = 28

    def to_dict(self) -> dict:
        """The config as JSON-ready values (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown UNetConfig fields {unknown}; known: {sorted(known)}"
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _check_config(cfg: UNetConfig) -> None:
    if not isinstance(cfg, UNetConfig):
        raise TypeError(f"config must be a UNetConfig, got {type(cfg).__name__}")
    for name in (
        "channels",
        "blocks",
        "heads",
        "groups",
        "image_channels",
        "image_size",
    ):
        _check.positive_int(getattr(cfg, name), f"config.{name}")
    if not cfg.mults or not all(isinstance(m, int) and m > 0 for m in cfg.mults):
        raise ValueError(
            "config.mults must be a non-empty tuple of positive ints, "
            f"got {cfg.mults!r}"
        )
    widths = [cfg.channels * m for m in cfg.mults]
    bad = [w for w in widths if w % cfg.groups or w % cfg.heads]
    if bad:
        raise ValueError(
            f"every width channels * mults = {widths} must be a multiple of "
            f"config.groups = {cfg.groups} and config.heads = {cfg.heads}; "
            f"{bad} are not"
        )
    if cfg.image_size % 2 ** (len(cfg.mults) - 1):
        raise ValueError(
            f"config.image_size = {cfg.image_size} cannot be halved "
            f"{len(cfg.mults) - 1} times (len(mults) - 1) without remainder"
        )
    sizes = [cfg.image_size // 2**i for i in range(len(cfg.mults))]
    unused = [s for s in cfg.attention if s not in sizes]
    if unused:
        raise ValueError(
            f"config.attention lists resolutions {unused} that no level has; "
            f"the levels are {sizes}"
        )
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"config.dropout must be in [0, 1), got {cfg.dropout}")
    _check.choice(cfg.prediction, "config.prediction", PREDICTIONS)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and SiLU, FiLM-conditioned on the embedding,
    plus a skip path: (B, c_in, H, W), (B, E) -> (B, c_out, H, W). Section 7.2."""

    def __init__(
        self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float
    ):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)  # a scale and a shift per channel
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # the block starts as its skip path
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, H, W)
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(
            2, dim=1
        )  # (B, c_out, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))  # (B, c_out, H, W)
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H * W positions of a feature map, residual:
    (B, C, H, W) -> (B, C, H, W). Section 7.2."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)  # starts as the identity map
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x))  # (B, 3C, H, W)
        # (B, 3C, H, W) -> 3 x (B, heads, H*W, C / heads)
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, h * w).permute(
            1, 0, 2, 4, 3
        )
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, H*W, C / heads)
        out = out.permute(0, 1, 3, 2).reshape(b, c, h, w)  # (B, C, H, W)
        return x + self.proj(out)


class Level(nn.Module):
    """The ResBlocks (each optionally followed by attention) of one resolution.
    Section 7.2."""

    def __init__(
        self, widths_in: list, c_out: int, emb_dim: int, cfg: UNetConfig, attend: bool
    ):
        super().__init__()
        self.res = nn.ModuleList(
            ResBlock(c, c_out, emb_dim, cfg.groups, cfg.dropout) for c in widths_in
        )
        self.attn = nn.ModuleList(
            SelfAttention(c_out, cfg.heads, cfg.groups) if attend else nn.Identity()
            for _ in widths_in
        )


class UNet(nn.Module):
    """A U-Net denoiser ``model(x_t, t, y=None) -> (B, C, H, W)`` configured by
    :class:`UNetConfig` (Section 7.2).

    It follows the denoiser protocol of every network in the book: ``t`` has shape
    (B,) or is a number, ``y`` holds class labels (B,) for a class-conditional network
    (the label
    ``n_classes`` or ``y=None`` is the null class of classifier-free guidance), and
    ``model.prediction`` says what the output means.
    """

    def __init__(self, config: UNetConfig | None = None, **overrides):
        super().__init__()
        cfg = UNetConfig(**overrides) if config is None else config
        if config is not None and overrides:
            raise TypeError("give a UNetConfig or keyword overrides, not both")
        _check_config(cfg)
        self.config = cfg
        self.prediction = cfg.prediction
        self.n_classes = cfg.n_classes
        emb = 4 * cfg.channels
        self.embed = TimeEmbedding(emb, cfg.n_classes)  # (B,), (B,) -> (B, emb)
        self.conv_in = nn.Conv2d(cfg.image_channels, cfg.channels, 3, padding=1)
        widths = [cfg.channels * m for m in cfg.mults]
        sizes = [cfg.image_size // 2**i for i in range(len(widths))]  # e.g. 28, 14, 7

        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c = (
            [],
            cfg.channels,
        )  # the width of each skip, in the order they are made
        for i, (width, size) in enumerate(zip(widths, sizes)):
            ins = [c] + [width] * (cfg.blocks - 1)
            self.down.append(Level(ins, width, emb, cfg, size in cfg.attention))
            skips += [width] * cfg.blocks
            c = width
            last = i == len(widths) - 1
            # stride-2 convolution: (B, c, H, W) -> (B, c, H/2, W/2)
            self.downsample.append(
                nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1)
            )

        self.mid1 = ResBlock(c, c, emb, cfg.groups, cfg.dropout)
        self.mid_attn = SelfAttention(c, cfg.heads, cfg.groups)
        self.mid2 = ResBlock(c, c, emb, cfg.groups, cfg.dropout)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(widths))):
            width, size = widths[i], sizes[i]
            ins = []
            for _ in range(cfg.blocks):  # each block sees (h, skip) concatenated
                ins.append(c + skips.pop())
                c = width
            self.up.append(Level(ins, width, emb, cfg, size in cfg.attention))
            # nearest-neighbour x2, then a 3x3 convolution:
            # (B, c, H, W) -> (B, c, 2H, 2W)
            self.upsample.append(
                nn.Identity()
                if i == 0
                else nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(c, c, 3, padding=1),
                )
            )

        self.norm_out = nn.GroupNorm(cfg.groups, c)
        self.conv_out = nn.Conv2d(c, cfg.image_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # the untrained network outputs 0
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        cfg = self.config
        _check.tensor(x_t, "x_t", min_dim=4)
        shape = (cfg.image_channels, cfg.image_size, cfg.image_size)
        if x_t.dim() != 4 or tuple(x_t.shape[1:]) != shape:
            raise ValueError(
                f"x_t must have shape (B, {', '.join(map(str, shape))}), "
                f"got {tuple(x_t.shape)}"
            )
        t = _check.time_like(t, x_t)  # shapes only: no value is read back to the host
        emb = self.embed(t, y).to(x_t.dtype)  # (B, 4 * channels)
        h = self.conv_in(x_t)  # (B, channels, 28, 28)
        skips = []
        for level, down in zip(self.down, self.downsample):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(h, emb))  # (B, width_i, size_i, size_i)
                skips.append(h)
            h = down(h)  # halves the resolution, except after the last level
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)  # (B, width_last, 7, 7)
        for level, up in zip(self.up, self.upsample):
            for res, attn in zip(level.res, level.attn):
                h = attn(
                    res(torch.cat([h, skips.pop()], dim=1), emb)
                )  # (B, width_i, size_i, size_i)
            h = up(h)  # doubles the resolution, except after the first level
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, image_channels, 28, 28)


def parameter_count(model: nn.Module) -> int:
    """The number of trainable parameters of ``model``. Section 7.2."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

"""A small diffusion transformer (DiT). Chapter 12.

The backbone of Peebles and Xie (2023) in a size for MNIST latents: the input is cut into
p x p patches, each patch becomes a token, a stack of transformer blocks mixes the tokens,
and a linear layer turns every token back into its patch:

    x_t (B, C, H, W) -> patchify -> tokens (B, N, D), N = (H / p) (W / p)
          + fixed 2D sine-cosine positions
          -> [adaLN-Zero block] x depth, each conditioned on the embedding of (t, y)
          -> adaptive LayerNorm, linear -> unpatchify -> (B, C, H, W)

The condition enters by adaptive LayerNorm: from the embedding c of (t, y), each block
computes a shift, a scale and a gate for its attention branch and for its MLP branch
(six vectors of width D). The layer that computes them starts at zero ("-Zero"), so every
residual branch is gated shut at initialisation and each block starts as the identity, as
the U-Net's zero-initialised last convolutions do. It follows the denoiser protocol of the
U-Net, ``model(x_t, t, y=None)``, with ``model.prediction`` and ``model.n_classes``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import _check
from ..diffusion import PREDICTIONS
from .embeddings import TimeEmbedding


@dataclass(frozen=True)
class DiTConfig:
    """The size of a :class:`DiT` (Section 12.4): tokens of width ``width`` from
    ``patch`` x ``patch`` patches of an input of shape (``in_channels``, ``input_size``,
    ``input_size``), ``depth`` blocks of ``heads``-head attention and an MLP
    ``mlp_ratio`` times as wide; ``n_classes`` and ``prediction`` as in the U-Net."""

    width: int = 128
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    patch: int = 1
    in_channels: int = 4
    input_size: int = 7
    n_classes: int | None = None
    prediction: str = "eps"

    def to_dict(self) -> dict:
        """The config as JSON-ready values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DiTConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DiTConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)


def _check_config(cfg: DiTConfig) -> None:
    if not isinstance(cfg, DiTConfig):
        raise TypeError(f"config must be a DiTConfig, got {type(cfg).__name__}")
    for name in ("width", "depth", "heads", "patch", "in_channels", "input_size"):
        _check.positive_int(getattr(cfg, name), f"config.{name}")
    if cfg.width % cfg.heads or (cfg.width // cfg.heads) % 2:
        raise ValueError(
            f"config.width = {cfg.width} must be a multiple of config.heads = {cfg.heads} "
            "with an even width per head"
        )
    if cfg.width % 4:
        raise ValueError(f"config.width must be a multiple of 4 (2D sine-cosine positions), got {cfg.width}")
    if cfg.input_size % cfg.patch:
        raise ValueError(
            f"config.input_size = {cfg.input_size} is not a multiple of config.patch = {cfg.patch}"
        )
    if not cfg.mlp_ratio > 0:
        raise ValueError(f"config.mlp_ratio must be > 0, got {cfg.mlp_ratio}")
    _check.choice(cfg.prediction, "config.prediction", PREDICTIONS)


def sincos_positions(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position embeddings of a grid x grid set of patches, shape
    (grid * grid, dim): half of the features encode the row, half the column, each with the
    1D sinusoids of Vaswani et al. (2017) at periods up to 10,000. Section 12.4."""
    _check.positive_int(grid, "grid")
    if _check.positive_int(dim, "dim") % 4:
        raise ValueError(f"dim must be a multiple of 4, got {dim}")
    quarter = dim // 4
    freqs = torch.exp(-math.log(10000.0) * torch.arange(quarter, dtype=torch.float64) / quarter)
    pos = torch.arange(grid, dtype=torch.float64)
    one_d = pos[:, None] * freqs[None, :]  # (grid, dim / 4)
    one_d = torch.cat([one_d.sin(), one_d.cos()], dim=1)  # (grid, dim / 2)
    rows = one_d[:, None, :].expand(grid, grid, dim // 2)  # (grid, grid, dim / 2): row r
    cols = one_d[None, :, :].expand(grid, grid, dim // 2)  # column c
    return torch.cat([rows, cols], dim=2).reshape(grid * grid, dim).float()  # (N, dim)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive LayerNorm's affine map x (1 + scale) + shift, per sample:
    x (B, N, D), shift and scale (B, D). Section 12.4."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero conditioning:
    (B, N, D), (B, D) -> (B, N, D). Section 12.4."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Linear(width, 6 * width)  # shift, scale, gate for attention and for the MLP
        nn.init.zeros_(self.ada.weight)  # adaLN-Zero: every gate starts at 0
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        ada = self.ada(F.silu(c)).chunk(6, dim=1)  # 6 x (B, D)
        shift1, scale1, gate1, shift2, scale2, gate2 = ada
        h = modulate(self.norm1(x), shift1, scale1)  # (B, N, D)
        # (B, N, 3D) -> 3 x (B, heads, N, D / heads)
        qkv = self.qkv(h).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, D / heads)
        h = h.transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        x = x + gate1[:, None, :] * self.proj(h)
        h = modulate(self.norm2(x), shift2, scale2)
        return x + gate2[:, None, :] * self.mlp(h)  # (B, N, D)


class DiT(nn.Module):
    """A diffusion transformer ``model(x_t, t, y=None) -> (B, C, H, W)`` configured by
    :class:`DiTConfig` (Section 12.4), with the U-Net's protocol: ``t`` of shape (B,) or a
    number, ``y`` class labels (B,) or None (the null class of classifier-free guidance)."""

    def __init__(self, config: DiTConfig | None = None, **overrides):
        super().__init__()
        if config is not None and overrides:
            raise TypeError("give a DiTConfig or keyword overrides, not both")
        cfg = DiTConfig(**overrides) if config is None else config
        _check_config(cfg)
        self.config = cfg
        self.prediction = cfg.prediction
        self.n_classes = cfg.n_classes
        p, d = cfg.patch, cfg.width
        self.grid = cfg.input_size // p
        # a p x p patch of C channels -> one token: a stride-p convolution, (B, C, H, W) -> (B, D, H/p, W/p)
        self.patchify = nn.Conv2d(cfg.in_channels, d, p, stride=p)
        self.register_buffer("pos", sincos_positions(self.grid, d), persistent=False)  # (N, D)
        self.embed = TimeEmbedding(d, cfg.n_classes)  # (B,), (B,) -> (B, D)
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(d, 2 * d)  # shift and scale of the final LayerNorm
        self.out = nn.Linear(d, p * p * cfg.in_channels)  # one token -> its patch
        for layer in (self.ada_out, self.out):  # the untrained network outputs 0
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        cfg = self.config
        _check.tensor(x_t, "x_t", min_dim=4)
        shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
        if x_t.dim() != 4 or tuple(x_t.shape[1:]) != shape:
            raise ValueError(f"x_t must have shape (B, {', '.join(map(str, shape))}), "
                             f"got {tuple(x_t.shape)}")
        t = _check.time_like(t, x_t)  # shapes only: no value is read back to the host
        c = self.embed(t, y).to(x_t.dtype)  # (B, D)
        b, g, p = x_t.shape[0], self.grid, cfg.patch
        h = self.patchify(x_t).flatten(2).transpose(1, 2)  # (B, D, g, g) -> (B, N, D)
        h = h + self.pos.to(h.dtype)
        for block in self.blocks:
            h = block(h, c)  # (B, N, D)
        shift, scale = self.ada_out(F.silu(c)).chunk(2, dim=1)  # 2 x (B, D)
        h = self.out(modulate(self.norm_out(h), shift, scale))  # (B, N, p * p * C)
        # unpatchify: (B, g, g, p, p, C) -> (B, C, g, p, g, p) -> (B, C, H, W)
        h = h.reshape(b, g, g, p, p, cfg.in_channels).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(b, cfg.in_channels, g * p, g * p)

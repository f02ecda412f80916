"""Embeddings of the diffusion time t in [0, 1] (and of class labels). Chapter 2.

The sinusoidal embedding of Vaswani et al. (2017), as used by Ho et al. (2020), maps a
scalar time to features at geometrically spaced frequencies:

    emb(t)_{2i} = sin(s t / P^{2i/d}),     emb(t)_{2i+1} = cos(s t / P^{2i/d}),

with a scale s = 1000 so that continuous t in [0, 1] covers the same range as DDPM's
integer steps, and P = 10000.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import _check


def sinusoidal_embedding(
    t: torch.Tensor, dim: int, *, scale: float = 1000.0, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal features of times t (shape (B,)), shape (B, dim). Section 2.4."""
    _check.tensor(t, "t")
    if t.dim() != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
    dim = _check.positive_int(dim, "dim")
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    i = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * i / half)
    args = scale * t.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)  # (B, dim)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t followed by a small MLP, plus an optional class
    embedding.

    With ``n_classes`` set, label ``y`` adds a learned vector; ``y=None`` (or the label
    ``n_classes``, the "null" class) gives the unconditional embedding that
    classifier-free guidance needs (Chapter 6). Section 2.4.
    """

    def __init__(self, dim: int, n_classes: int | None = None):
        super().__init__()
        self.dim = _check.positive_int(dim, "dim")
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.n_classes = n_classes
        if n_classes is not None:
            _check.positive_int(n_classes, "n_classes")
            self.label = nn.Embedding(n_classes + 1, dim)  # last row: the null class

    def forward(self, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        features = sinusoidal_embedding(t, self.dim).to(self.mlp[0].weight.dtype)
        emb = self.mlp(features)  # (B, dim)
        if self.n_classes is None:
            if y is not None:
                raise ValueError(
                    "y was given but this network was built without n_classes"
                )
            return emb
        if y is None:
            y = torch.full(
                (t.shape[0],), self.n_classes, dtype=torch.long, device=t.device
            )
        y = torch.as_tensor(y, device=t.device)
        if y.is_floating_point() or y.dtype == torch.bool:
            raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
        y = y.long().expand(t.shape[0]) if y.dim() == 0 else y.long()
        if y.shape != (t.shape[0],):
            raise ValueError(
                f"y must be one label or have shape ({t.shape[0]},), "
                f"got shape {tuple(y.shape)}"
            )
        if y.device.type == "cpu":
            # reading a CPU tensor costs no device sync; on a GPU the values are
            # checked once where they enter (sample(), train()), not at every call of
            # the network
            _check.labels(y, t.shape[0], self.n_classes)
        return emb + self.label(y)

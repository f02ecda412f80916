"""A residual MLP denoiser for low-dimensional data. Section 2.4.

    h_0     = W_in x_t,
    h_{l+1} = h_l + W_l SiLU(LayerNorm(h_l) + c(t, y)),
    out     = W_out SiLU(h_L)

where c(t, y) is the time (and class) embedding. The output has the data's dimension and
means whatever ``prediction`` says ("eps", "x0", "v", "score" or "velocity").
"""

from __future__ import annotations

import torch
from torch import nn

from .. import _check
from ..diffusion import PREDICTIONS
from .embeddings import TimeEmbedding


class MLP(nn.Module):
    """Residual MLP with time (and optional class) conditioning:
    ``model(x_t, t, y=None)``.

    Parameters: ``dim`` of the data, ``hidden`` width, ``depth`` residual blocks,
    ``n_classes`` for class-conditional models, ``prediction`` the quantity it outputs.
    Section 2.4.
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 256,
        depth: int = 3,
        *,
        n_classes: int | None = None,
        prediction: str = "eps",
    ):
        super().__init__()
        self.dim = _check.positive_int(dim, "dim")
        _check.positive_int(hidden, "hidden")
        _check.positive_int(depth, "depth")
        self.prediction = _check.choice(prediction, "prediction", PREDICTIONS)
        # None: unconditional; label n_classes means "no class"
        self.n_classes = n_classes
        self.embed = TimeEmbedding(hidden, n_classes)
        self.inp = nn.Linear(dim, hidden)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(depth))
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)  # start as the zero function: a calm first step
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        _check.tensor(x_t, "x_t", min_dim=2)
        if x_t.dim() != 2 or x_t.shape[1] != self.dim:
            raise ValueError(
                f"x_t must have shape (B, {self.dim}), got {tuple(x_t.shape)}"
            )
        t = _check.time_like(t, x_t)  # shapes only: no value is read back to the host
        c = self.embed(t, y)  # (B, hidden)
        h = self.inp(x_t)  # (B, hidden)
        for norm, layer in zip(self.norms, self.layers):
            h = h + layer(torch.nn.functional.silu(norm(h) + c))
        return self.out(torch.nn.functional.silu(h))  # (B, dim)


class NoisyClassifier(nn.Module):
    """A time-conditioned classifier of noisy inputs, ``classifier(x_t, t) -> logits``
    (Section 6.3).

    Trained on x_t drawn from the forward process at random t (see
    :func:`dmlib.losses.classifier_loss`), its gradient grad_x log p_phi(y | x_t, t)
    steers a sampler in classifier guidance.
    """

    def __init__(
        self, dim: int = 2, n_classes: int = 2, hidden: int = 128, depth: int = 3
    ):
        super().__init__()
        self.body = MLP(dim, hidden, depth)
        # (B, n_classes) logits
        self.body.out = nn.Linear(hidden, _check.positive_int(n_classes, "n_classes"))
        self.n_classes = n_classes

    def forward(self, x_t: torch.Tensor, t) -> torch.Tensor:
        return self.body(x_t, t)

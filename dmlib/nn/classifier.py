"""Classifiers of MNIST digits: a clean one that evaluates samples, a noisy one that
guides them.

:class:`DigitClassifier` reads clean digits; its penultimate layer is the feature space
in which Chapter 9 measures Frechet distance, KID, precision and recall, and its predicted
class and confidence say whether a class-conditional sample shows the digit it was asked
for. :class:`NoisyDigitClassifier` reads noised digits x_t together with the time t (the
encoder half of a :class:`~dmlib.nn.unet.UNet`), so that its gradient
grad_x log p(y | x_t, t) can steer a sampler (classifier guidance, Chapter 8).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import _check
from .embeddings import TimeEmbedding
from .unet import ResBlock, SelfAttention


@dataclass(frozen=True)
class DigitClassifierConfig:
    """Widths of :class:`DigitClassifier` (Chapter 9)."""

    channels: int = 32
    features: int = 128  # dimension of the feature space (the penultimate layer)
    dropout: float = 0.3
    n_classes: int = 10

    def to_dict(self) -> dict:
        """The config as a JSON-ready dict."""
        return asdict(self)


class DigitClassifier(nn.Module):
    """A small convolutional classifier of clean 28 x 28 digits in [-1, 1] (Chapter 9).

    Two blocks of two 3x3 convolutions with batch normalisation, each followed by 2x2
    max-pooling (28 -> 14 -> 7), then a linear layer to ``features`` dimensions: the
    feature space of :meth:`features`; a last linear layer gives the class logits.
    ``model(x)`` returns logits (B, n_classes).
    """

    def __init__(self, config: DigitClassifierConfig | None = None, **overrides):
        super().__init__()
        cfg = DigitClassifierConfig(**overrides) if config is None else config
        _check.positive_int(cfg.channels, "config.channels")
        _check.positive_int(cfg.features, "config.features")
        _check.positive_int(cfg.n_classes, "config.n_classes")
        self.config = cfg
        self.n_classes = cfg.n_classes
        c = cfg.channels

        def block(c_in, c_out):  # (B, c_in, H, W) -> (B, c_out, H/2, W/2)
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.body = nn.Sequential(block(1, c), block(c, 2 * c))  # (B, 2c, 7, 7)
        self.embed = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(cfg.dropout),
            nn.Linear(2 * c * 49, cfg.features),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Dropout(cfg.dropout), nn.Linear(cfg.features, cfg.n_classes)
        )

    def _check_x(self, x):
        _check.tensor(x, "x", min_dim=4)
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"x must have shape (B, 1, 28, 28), got {tuple(x.shape)}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer's activations, shape (B, features): the feature space
        of the Chapter 9 metrics."""
        self._check_x(x)
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor, t=None, y=None) -> torch.Tensor:
        # t and y are accepted (and ignored): the one training loop calls every model
        # alike
        return self.head(self.features(x))  # (B, n_classes)


@dataclass(frozen=True)
class NoisyDigitClassifierConfig:
    """Size of :class:`NoisyDigitClassifier` (Chapter 8)."""

    channels: int = 16
    mults: tuple = (1, 2, 2)
    groups: int = 8
    heads: int = 4
    n_classes: int = 10

    def to_dict(self) -> dict:
        """The config as JSON-ready values."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
        }


class NoisyDigitClassifier(nn.Module):
    """A time-conditioned classifier of noised digits, ``model(x_t, t) -> logits``
    (Chapter 8).

    The encoder half of the U-Net: a ResBlock per resolution (28, 14, 7), each
    conditioned on t, downsampling between them, attention at 7 x 7, then global average
    pooling and a linear layer. Trained on x_t of the forward process at random t
    (:func:`dmlib.losses.classifier_loss`).
    """

    def __init__(self, config: NoisyDigitClassifierConfig | None = None, **overrides):
        super().__init__()
        cfg = NoisyDigitClassifierConfig(**overrides) if config is None else config
        self.config = cfg
        self.n_classes = cfg.n_classes
        emb = 4 * cfg.channels
        self.embed = TimeEmbedding(emb)
        self.conv_in = nn.Conv2d(1, cfg.channels, 3, padding=1)
        widths = [cfg.channels * m for m in cfg.mults]
        self.blocks, self.downs = nn.ModuleList(), nn.ModuleList()
        c = cfg.channels
        for i, w in enumerate(widths):
            self.blocks.append(ResBlock(c, w, emb, cfg.groups, 0.0))
            last = i == len(widths) - 1
            self.downs.append(
                nn.Identity() if last else nn.Conv2d(w, w, 3, stride=2, padding=1)
            )
            c = w
        self.attn = SelfAttention(c, cfg.heads, cfg.groups)
        self.norm = nn.GroupNorm(cfg.groups, c)
        self.head = nn.Linear(c, cfg.n_classes)

    def forward(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        _check.tensor(x_t, "x_t", min_dim=4)
        if x_t.dim() != 4 or tuple(x_t.shape[1:]) != (1, 28, 28):
            raise ValueError(
                f"x_t must have shape (B, 1, 28, 28), got {tuple(x_t.shape)}"
            )
        t = _check.time_like(t, x_t)
        emb = self.embed(t).to(x_t.dtype)  # (B, 4 * channels)
        h = self.conv_in(x_t)  # (B, channels, 28, 28)
        for block, down in zip(self.blocks, self.downs):
            h = down(block(h, emb))  # 28 -> 14 -> 7
        h = F.silu(self.norm(self.attn(h)))  # (B, c, 7, 7)
        return self.head(h.mean(dim=(2, 3)))  # (B, n_classes)

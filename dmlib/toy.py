"""Two-dimensional data: samplers for toy datasets and Gaussian mixtures with exact
answers.

A Gaussian mixture stays a Gaussian mixture under the forward process: if
x_0 ~ sum_m pi_m N(mu_m, Sigma_m), then x_t = alpha_t x_0 + sigma_t eps has density
(Section 1.2)

    p_t(x) = sum_m pi_m N(x; alpha_t mu_m, alpha_t^2 Sigma_m + sigma_t^2 I)

so its noised density, its score and the posterior mean E[x_0 | x_t] are all exact. The
class :class:`GaussianMixture` exposes them, and -- through
:meth:`GaussianMixture.denoiser` -- the denoiser protocol ``model(x_t, t, y=None)`` that
trained networks implement, so that samplers and metrics can be checked against an
oracle with no training at all.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import _check, noise
from .schedules import Schedule

DATASETS = ("moons", "swiss_roll", "circles", "8gaussians", "checkerboard")

# Affine maps that give each dataset mean about 0 and per-coordinate spread about 1, so
# that every toy lives on the same scale as the unit-variance noise it is mixed with.
_SCALE = {
    "moons": 1.5,
    "swiss_roll": 0.15,
    "circles": 1.8,
    "8gaussians": 1.0 / 1.42,
    "checkerboard": 0.85,
}


def _torch_seed(seed, generator) -> int:
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(
                f"seed must be a non-negative integer or None, got {seed!r}"
            )
        return seed
    # NumPy draws the points; torch's generator seeds it
    return noise.seed_from(generator)


def sample_2d(
    name: str,
    n: int,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw n points (float32, shape (n, 2)) from a named 2D toy dataset (Section 1.2).

    ``name`` is one of ``"moons"``, ``"swiss_roll"``, ``"circles"``, ``"8gaussians"`` or
    ``"checkerboard"``; the points are i.i.d. draws. Each is scaled to mean about 0 and
    spread about 1. Randomness comes from ``seed`` if given, else from ``generator``
    (else torch's global generator, so :func:`dmlib.run.set_seed` makes it repeat).
    """
    _check.choice(name, "name", DATASETS)
    n = _check.positive_int(n, "n")
    seed = _torch_seed(seed, generator)
    rng = np.random.default_rng(seed)
    # Every point is drawn independently (component, position along it, noise), so two
    # draws are two i.i.d. samples and their distance is the honest floor of
    # Section 2.6. (A generator that spaces points evenly along each curve, as some
    # libraries do, gives a floor far below what any i.i.d. sampler, the exact
    # distribution included, can reach.)
    if name == "moons":  # two interleaved half circles of radius 1
        upper = rng.random(n) < 0.5
        theta = rng.uniform(0.0, np.pi, n)
        x = np.where(
            upper[:, None],
            np.stack([np.cos(theta), np.sin(theta)], 1),
            np.stack([1.0 - np.cos(theta), 0.5 - np.sin(theta)], 1),
        )
        x = x + 0.05 * rng.standard_normal((n, 2)) - np.array([0.5, 0.25])
    elif name == "circles":  # two concentric circles, radii 1 and 0.5
        radius = np.where(rng.random(n) < 0.5, 1.0, 0.5)
        theta = rng.uniform(0.0, 2 * np.pi, n)
        x = radius[:, None] * np.stack([np.cos(theta), np.sin(theta)], 1)
        x = x + 0.04 * rng.standard_normal((n, 2))
    elif name == "swiss_roll":  # the spiral r = t at angle t, t in [1.5 pi, 4.5 pi]
        t = 1.5 * np.pi * (1.0 + 2.0 * rng.random(n))
        x = t[:, None] * np.stack([np.cos(t), np.sin(t)], 1)
        x = x + 0.3 * rng.standard_normal((n, 2)) - np.array([2.0, 0.25])
    elif name == "8gaussians":
        angles = 2 * np.pi * rng.integers(0, 8, n) / 8
        x = 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
        x = x + 0.1 * rng.standard_normal((n, 2))
    else:  # checkerboard: 8 unit squares of a 4x4 board
        x1 = rng.uniform(-2, 2, n)
        x2 = rng.uniform(0, 1, n) + rng.integers(0, 2, n) * 2 - 2 + (np.floor(x1) % 2)
        x = np.stack([x1, x2], 1)
    return torch.as_tensor(x * _SCALE[name], dtype=torch.float32)


class GaussianMixture:
    """A mixture sum_m pi_m N(mu_m, Sigma_m) in d dimensions with exact noised
    quantities.

    Parameters
    ----------
    means : (K, d) tensor, the means mu_m
    covs : (K, d, d) covariance matrices Sigma_m; or, for isotropic components,
    stds : (K,) standard deviations, so that Sigma_m = stds[m]^2 I (keyword only; give
        exactly one of covs and stds)
    weights : (K,) mixing weights, normalised here (default: uniform)
    labels : (K,) integer class of each component (default: all 0); ``y`` in
        :meth:`denoiser` and :meth:`sample` selects the components of one class.

    Computations run in float64; results come back in the dtype of the input.
    Introduced in Section 1.2; the oracle of every later check.
    """

    def __init__(self, means, covs=None, weights=None, labels=None, *, stds=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        K, D = means.shape
        if (covs is None) == (stds is None):
            raise ValueError("give exactly one of covs (covariance matrices, shape (K, D, D)) "
                             "and stds (standard deviations of isotropic components, shape (K,))")
        if stds is not None:
            stds = torch.as_tensor(stds, dtype=torch.float64)
            if stds.shape != (K,):
                raise ValueError(f"stds must have shape ({K},), one standard deviation per "
                                 f"component, got {tuple(stds.shape)}")
            if (stds <= 0).any():
                raise ValueError("stds must all be > 0")
            covs = stds[:, None, None] ** 2 * torch.eye(D, dtype=torch.float64)  # (K, D, D)
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.shape == (K,):
            raise ValueError(
                f"covs must be covariance matrices of shape ({K}, {D}, {D}); a vector of "
                f"shape ({K},) is ambiguous (variances or standard deviations?): for "
                f"isotropic components pass their standard deviations as stds=..."
            )
        if covs.shape != (K, D, D):
            raise ValueError(
                f"covs must have shape ({K}, {D}, {D}), got {tuple(covs.shape)}"
            )
        if not torch.allclose(covs, covs.transpose(1, 2)):
            raise ValueError("covs must be symmetric")
        if (torch.linalg.eigvalsh(covs) <= 0).any():
            raise ValueError("covs must be positive definite")
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
        else:
            weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"weights must be {K} non-negative numbers with a positive sum, "
                f"got {weights.tolist()}"
            )
        if labels is None:
            labels = torch.zeros(K, dtype=torch.long)
        else:
            labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (K,) or (labels < 0).any():
            raise ValueError(
                f"labels must be {K} non-negative integers, got {labels.tolist()}"
            )
        self.means, self.covs = means, covs
        self.weights, self.labels = weights / weights.sum(), labels
        self.dim, self.n_components = D, K
        self.n_classes = int(labels.max()) + 1

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def eight_gaussians(
        cls, radius: float = 2.0 / 1.42, std: float = 0.1 / 1.42
    ) -> "GaussianMixture":
        """Eight isotropic Gaussians on a circle, labelled 0..7 (the mixture behind
        ``"8gaussians"``)."""
        radius = _check.finite_positive(radius, "radius")
        std = _check.finite_positive(std, "std")
        ang = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        means = radius * torch.stack([ang.cos(), ang.sin()], 1)
        return cls(means, stds=torch.full((8,), std), labels=torch.arange(8))

    # -- checks ------------------------------------------------------------------------
    def _x(self, x, name="x"):
        _check.tensor(x, name, min_dim=2)
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"{name} must have shape (B, {self.dim}), got {tuple(x.shape)}"
            )
        return x

    def _coeffs(self, x, t, schedule):
        _check.schedule(schedule)
        t = _check.batch_time(_check.as_time(t), x)
        a, s = schedule._alpha_sigma(t.to("cpu", torch.float64))
        return a, s  # (B,), (B,)

    def _mask(self, y, n):
        """Log-weights (B, K) of the components allowed for each sample's class y (or
        all)."""
        logw = self.weights.log().expand(n, -1)
        if y is None:
            return logw
        y = torch.as_tensor(y, dtype=torch.long).cpu()
        y = y.expand(n) if y.dim() == 0 else y
        if y.shape != (n,):
            raise ValueError(
                f"y must be a class label or have shape ({n},), got {tuple(y.shape)}"
            )
        if (y < 0).any() or (y >= self.n_classes).any():
            raise ValueError(
                f"y must lie in [0, {self.n_classes - 1}], "
                f"got values in [{y.min()}, {y.max()}]"
            )
        keep = self.labels[None, :] == y[:, None]  # (B, K)
        empty = ~keep.any(1)
        if empty.any():
            missing = sorted(set(y[empty].tolist()))
            raise ValueError(
                f"y selects class(es) {missing} that no component of the mixture has "
                f"(component labels: {self.labels.tolist()})"
            )
        return torch.where(keep, logw, torch.full_like(logw, -math.inf))

    # -- sampling and density ----------------------------------------------------------
    def sample(
        self,
        n: int,
        *,
        y=None,
        generator: torch.Generator | None = None,
        return_labels: bool = False,
    ):
        """Draw n samples x_0 (float32, shape (n, d)); optionally their class labels."""
        n = _check.positive_int(n, "n")
        probs = self._mask(y, n).exp()
        # (n,) component index
        k = noise.multinomial(probs, 1, generator=generator).squeeze(1)
        # (n, d), on the CPU like the mixture's parameters
        z = noise.randn(
            (n, self.dim), generator=generator, device="cpu", dtype=torch.float64
        )
        chol = torch.linalg.cholesky(self.covs)  # (K, D, D)
        x = self.means[k] + torch.einsum("nij,nj->ni", chol[k], z)
        x = x.to(torch.float32)
        return (x, self.labels[k]) if return_labels else x

    def _noised_params(self, a, s):
        # means alpha mu_m: (B, K, d);
        # covariances Sigma_{t,m} = alpha^2 Sigma_m + sigma^2 I: (B, K, d, d)
        eye = torch.eye(self.dim, dtype=torch.float64)
        mu = a[:, None, None] * self.means[None]
        cov = (
            a[:, None, None, None] ** 2 * self.covs[None]
            + s[:, None, None, None] ** 2 * eye
        )
        return mu, cov

    def _component_logpdf(self, x64, mu, cov):
        diff = x64[:, None, :] - mu  # (B, K, D)
        chol = torch.linalg.cholesky(cov)
        # cov^{-1} diff: (B, K, d)
        sol = torch.cholesky_solve(diff[..., None], chol)[..., 0]
        maha = (diff * sol).sum(-1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        return (
            -0.5 * (maha + logdet + self.dim * math.log(2 * math.pi)),  # (B, K)
            sol,  # (B, K, D)
        )

    def _log_pdfs(self, x, t, schedule):
        """log N(x; alpha_t mu_m, Sigma_{t,m}) of every component m,
        (B, K)."""
        # differentiable: autograd of log_prob gives the score
        x64 = x.to("cpu", torch.float64)
        if t is None:
            a = torch.ones(x.shape[0], dtype=torch.float64)
            s = torch.zeros_like(a)
        else:
            a, s = self._coeffs(x, t, schedule)
        mu, cov = self._noised_params(a, s)
        logpdf, _ = self._component_logpdf(x64, mu, cov)
        return logpdf

    def log_prob(
        self, x: torch.Tensor, t=None, schedule: Schedule | None = None, *, y=None
    ) -> torch.Tensor:
        """log p_t(x): the clean density (t=None) or the noised one under ``schedule``
        (Section 1.2).

        With a class ``y`` it is the joint log p_t(x, y), which integrates to p(y)
        rather than 1, so

            log p_t(y | x) = log_prob(x, t, schedule, y=y) - log_prob(x, t, schedule)

        (Chapter 6; :meth:`class_log_posterior` gives it for every class at once).
        """
        x = self._x(x)
        logpdf = self._log_pdfs(x, t, schedule)  # (B, K)
        log_p = torch.logsumexp(self._mask(y, x.shape[0]) + logpdf, 1)
        return log_p.to(x.dtype).to(x.device)

    def class_log_posterior(
        self, x: torch.Tensor, t=None, schedule: Schedule | None = None
    ) -> torch.Tensor:
        """The exact noisy class posterior log p_t(y | x) for every class y,
        shape (B, n_classes):

            log p_t(y | x) = log sum_{m: y_m = y} pi_m N_m(x) - log sum_m pi_m N_m(x),
            N_m(x) = N(x; alpha_t mu_m, alpha_t^2 Sigma_m + sigma_t^2 I)   (Section 6.1)

        with y_m the class of component m; at t = None the clean posterior p(y | x).
        Its rows are normalised (they logsumexp to 0), so it is also the logits of the
        Bayes classifier, and it is differentiable in x: its gradient is the classifier
        term of classifier guidance.
        """
        x = self._x(x)
        # (B, K): log pi_m N_m(x)
        logw = self.weights.log() + self._log_pdfs(x, t, schedule)
        classes = torch.arange(self.n_classes)
        # (n_classes, K): component m has class y_m
        member = self.labels[None, :] == classes[:, None]
        # (B, C)
        log_joint = torch.where(member, logw[:, None, :], -math.inf).logsumexp(2)
        log_post = log_joint - logw.logsumexp(1, keepdim=True)  # (B, C)
        return log_post.to(x.dtype).to(x.device)

    def _posterior_terms(self, x, t, schedule, y):
        # differentiable in x (the ODE likelihood needs div of the velocity)
        x64 = x.to("cpu", torch.float64)
        a, s = self._coeffs(x, t, schedule)
        mu, cov = self._noised_params(a, s)
        logpdf, sol = self._component_logpdf(x64, mu, cov)
        # (B, K) responsibilities
        resp = torch.softmax(self._mask(y, x.shape[0]) + logpdf, 1)
        return a, s, resp, sol

    def score(
        self, x_t: torch.Tensor, t, schedule: Schedule, *, y=None
    ) -> torch.Tensor:
        """Exact score:

            grad_x log p_t(x_t)
              = -sum_m p(m | x_t) Sigma_{t,m}^{-1} (x_t - alpha_t mu_m),

        with Sigma_{t,m} = alpha_t^2 Sigma_m + sigma_t^2 I the noised covariance of
        component m and p(m | x_t) its posterior probability (responsibility)
        (Section 1.2; Chapter 3).
        """
        x_t = self._x(x_t, "x_t")
        _, _, resp, sol = self._posterior_terms(x_t, t, schedule, y)
        return (-(resp[..., None] * sol).sum(1)).to(x_t.dtype).to(x_t.device)

    def posterior_mean(
        self, x_t: torch.Tensor, t, schedule: Schedule, *, y=None
    ) -> torch.Tensor:
        """Exact E[x_0 | x_t], computed component by component (no score involved):

            E[x_0 | x_t]
              = sum_m p(m | x_t) ( mu_m + alpha_t Sigma_m Sigma_{t,m}^{-1}
                                   (x_t - alpha_t mu_m) ).

        Tweedie's formula (Chapter 3) predicts the same value from the score:
        (x_t + sigma_t^2 score) / alpha_t; the tests check that they agree.
        """
        x_t = self._x(x_t, "x_t")
        a, _, resp, sol = self._posterior_terms(x_t, t, schedule, y)
        shift = torch.einsum("kij,bkj->bki", self.covs, sol)  # (B, K, D)
        comp = self.means[None] + a[:, None, None] * shift  # (B, K, D)
        return (resp[..., None] * comp).sum(1).to(x_t.dtype).to(x_t.device)

    def denoiser(self, schedule: Schedule, prediction: str = "eps"):
        """The exact denoiser as a model ``model(x_t, t, y=None)`` predicting
        ``prediction``.

        It returns E[eps | x_t] (or the matching x0 / v / score / velocity), the output
        a perfectly trained network would give, and declares ``model.prediction``.
        """
        from .diffusion import PREDICTIONS, convert

        _check.choice(prediction, "prediction", PREDICTIONS)
        _check.schedule(schedule)
        mixture = self

        class MixtureDenoiser:
            def __init__(self):
                self.prediction, self.schedule = prediction, schedule

            def __call__(self, x_t, t, y=None):
                x0 = mixture.posterior_mean(x_t, t, schedule, y=y)
                return convert(x0, x_t, t, schedule, src="x0", dst=prediction)

            def __repr__(self):
                return (
                    f"MixtureDenoiser(K={mixture.n_components}, "
                    f"prediction={prediction!r}, schedule={schedule!r})"
                )

        return MixtureDenoiser()


class DataSampler:
    """A draw-fresh-data function ``sampler(n, generator=None) -> (n, d)`` float32
    tensor.

    Made by :func:`data_sampler` (Section 2.4); its repr names the data, so a training
    record can say what the model was trained on.
    """

    def __init__(self, source, y=None):
        self.source, self.y = source, y

    def __call__(
        self, n: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if isinstance(self.source, str):
            return sample_2d(self.source, n, generator=generator)
        return self.source.sample(n, y=self.y, generator=generator)

    def __repr__(self):
        if isinstance(self.source, str):
            return f"data_sampler({self.source!r})"
        y = "" if self.y is None else f", y={self.y!r}"
        return (
            f"data_sampler(GaussianMixture(K={self.source.n_components}, "
            f"D={self.source.dim}){y})"
        )


def data_sampler(source, *, y=None) -> DataSampler:
    """Fresh i.i.d. data as a function ``sampler(n, generator)``, the form in which
    :func:`dmlib.train.train` and :func:`dmlib.metrics.floor_ratio` take 2D data
    (Section 2.4).

    ``source`` is a toy dataset name (one of :data:`DATASETS`, drawn by
    :func:`sample_2d`) or a :class:`GaussianMixture` (drawn by its
    :meth:`~GaussianMixture.sample`); ``y``, a class label (mixtures only), keeps the
    components of that class, so the sampler draws from p(x | y) (Chapter 6). Each call
    draws from the generator it is given, so a seeded generator repeats the draw:

        sampler = data_sampler(mixture)
        x0 = sampler(512, torch.Generator().manual_seed(0))    # (512, d) float32
    """
    if isinstance(source, str):
        _check.choice(source, "source", DATASETS)
        if y is not None:
            raise ValueError(
                "y selects a class of a GaussianMixture; "
                f"the dataset {source!r} has no classes"
            )
    elif isinstance(source, GaussianMixture):
        if y is not None:
            # a valid class label, checked now rather than at the first draw
            source._mask(y, 1)
    else:
        raise TypeError(
            f"source must be a dataset name {DATASETS} or a GaussianMixture, "
            f"got {type(source).__name__}"
        )
    return DataSampler(source, y)


# The checkerboard is uniform on 8 of the 16 unit squares of [-2, 2]^2 (those whose corner
# (i, j) has i + j even), scaled by _SCALE: lower-left corners of the 8 squares, unscaled.
_CHECKER_CORNERS = torch.tensor(
    [[a, b] for a in (-2, -1, 0, 1) for b in (-2, -1, 0, 1) if (a + b) % 2 == 0], dtype=torch.float64
)


def in_support_2d(name: str, x: torch.Tensor, *, tol: float = 1e-5) -> torch.Tensor:
    """Whether each point of x lies in the support of a toy dataset with a bounded one,
    an (N,) bool tensor on x's device (Section 2.6).

    Only ``"checkerboard"`` has a bounded support: the union of its 8 closed squares, widened
    by ``tol`` so that points on an edge, rounded by the float32 scaling, still count.
    """
    _check.choice(name, "name", ("checkerboard",))
    _check.tensor(x, "x", min_dim=2)
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (N, 2), got {tuple(x.shape)}")
    tol = _check.finite_positive(tol, "tol")
    return _in_checkerboard(x, tol).to(x.device)


def _in_checkerboard(x, tol=1e-5):
    """(N,) bool on the CPU: x in the union of the checkerboard's closed squares, widened by tol."""
    u = x.detach().to("cpu", torch.float64) / _SCALE["checkerboard"]  # (N, 2), unscaled board
    lo = _CHECKER_CORNERS[None] - tol  # (1, 8, 2)
    hi = _CHECKER_CORNERS[None] + 1 + tol
    return ((u[:, None] >= lo) & (u[:, None] <= hi)).all(2).any(1)  # (N,)


def log_prob_2d(name: str, x: torch.Tensor) -> torch.Tensor:
    """Exact log-density log p(x) of a toy dataset that has one in closed form, (N,) in x's
    dtype and on its device (Section 2.6).

    ``"8gaussians"``: the mixture :meth:`GaussianMixture.eight_gaussians` that
    :func:`sample_2d` draws from. ``"checkerboard"``: uniform on 8 squares of side 0.85,
    so log p = -log(8 * 0.85^2) inside (see :func:`in_support_2d`) and -inf outside. (The other
    toys blur curves with Gaussian noise; their densities are integrals with no closed form.)
    """
    _check.choice(name, "name", ("8gaussians", "checkerboard"))
    _check.tensor(x, "x", min_dim=2)
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (N, 2), got {tuple(x.shape)}")
    if name == "8gaussians":
        return GaussianMixture.eight_gaussians().log_prob(x)
    inside = _in_checkerboard(x)  # (N,), on the CPU: no float64 on x's device
    level = -math.log(8 * _SCALE[name] ** 2)
    out = torch.full(inside.shape, -math.inf, dtype=torch.float64).masked_fill(inside, level)
    return out.to(x.dtype).to(x.device)

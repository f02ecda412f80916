"""Sample-quality metrics for 2D data: exact W2, sliced Wasserstein, MMD, mode spread.
Section 2.6.

A distance between two finite samples is never 0, even when both come from the same
distribution. Every metric is therefore also reported as a ratio to its *floor*, the
distance between two independent samples of the data of the same size:

    R = dist(model samples, data) / dist(data sample 1, data sample 2),

so R close to 1 means "as close to the data as a fresh draw of the data itself".

At small N such distances are dominated by how many points fall in each mode and barely
see blurred edges or bridges between modes. Statistics that do see them (the expected
log-density under a known density, the fraction of points inside a bounded support, k-NN
precision and recall) are judged the same way, against their scatter over fresh data
samples of the same size: :func:`fresh_scatter` measures that floor and
:func:`against_fresh` states a model's gap in its units.

Images (Chapter 9) are compared through features, the rows of an (N, F) matrix from
a classifier's penultimate layer: the Frechet distance between Gaussian fits
(:func:`frechet_distance`, FID), the kernel distance :func:`kid`, and k-NN
:func:`precision_recall`, each judged against its real-vs-real floor at the same N
(:func:`feature_floor`) with a :func:`bootstrap` interval. :func:`class_agreement` and
:func:`digit_coverage` read a classifier's verdict on the samples, and
:func:`memorisation` compares nearest-neighbour distances to training and to held-out
images (:func:`nearest_neighbours` searches a whole training set for near-copies).
:func:`image_report` gathers them for one sample set and :func:`reporter` fixes its
settings for a chapter; :func:`intervals_overlap` compares two reports and :func:`ink`
measures how thick the strokes are.
"""

from __future__ import annotations

import math
import statistics
import weakref

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from . import _check, noise


def _pair(x, y, names=("x", "y"), rows=("N", "M")):
    # two point sets of the same dimension, as float64 on the CPU (no float64 on MPS)
    _check.tensor(x, names[0], min_dim=2)
    _check.tensor(y, names[1], min_dim=2)
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have shapes ({rows[0]}, D) and "
            f"({rows[1]}, D), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x.detach().to("cpu", torch.float64), y.detach().to("cpu", torch.float64)


def w2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact 2-Wasserstein distance between two equal-size empirical distributions
    (Section 2.6).

        W2(x, y)^2 = min over permutations chi of (1/N) sum_i |x^(i) - x'^(chi(i))|^2,

    with x^(i) the points of x and x'^(j) those of y, solved exactly as an assignment
    problem (scipy's linear_sum_assignment), O(N^3).
    """
    x, y = _pair(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"w2 needs samples of equal size, got {x.shape[0]} and {y.shape[0]}"
        )
    # distances from the differences themselves, not |x|^2 + |y|^2 - 2 x.y (cdist's fast
    # path), which loses precision for nearby points: equal samples must give exactly 0
    cost = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    rows, cols = linear_sum_assignment(cost.numpy())
    return float(cost[rows, cols].mean().sqrt())


def sliced_wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    n_projections: int = 256,
    *,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced 2-Wasserstein distance: the root mean of 1D W2^2 over random directions
    (Section 2.6).

    In one dimension optimal transport sorts both samples; with equal sizes W2^2 is the
    mean squared difference of the sorted projections.
    """
    x, y = _pair(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            "sliced_wasserstein needs samples of equal size, "
            f"got {x.shape[0]} and {y.shape[0]}"
        )
    n_projections = _check.positive_int(n_projections, "n_projections")
    theta = noise.randn(
        (x.shape[1], n_projections),
        generator=generator,
        device="cpu",
        dtype=torch.float64,
    )
    theta = theta / theta.norm(dim=0, keepdim=True)  # (D, P) unit directions
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def mmd(
    x: torch.Tensor, y: torch.Tensor, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0)
) -> float:
    """Unbiased squared maximum mean discrepancy with a sum of Gaussian kernels
    (Section 2.6).

        MMD^2    = E G(x^(i), x^(i')) + E G(x'^(j), x'^(j')) - 2 E G(x^(i), x'^(j)),
        G(z, z') = sum over bw in bandwidths of exp(-|z - z'|^2 / (2 bw^2)),

    with i != i', j != j', x^(i) the points of x and x'^(j) those of y.
    """
    x, y = _pair(x, y)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("mmd needs at least two samples on each side")

    def k(a, b):
        d2 = torch.cdist(a, b) ** 2
        return sum(torch.exp(-d2 / (2 * h**2)) for h in bandwidths)

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float(
        (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        - 2 * kxy.mean()
    )


def mode_spread(x: torch.Tensor, centres: torch.Tensor) -> float:
    """Root-mean-square distance of each point to the nearest of the given centres
    (Section 4.5):

        spread = ( (1/N) sum_i min_m |x^(i) - mu_m|^2 )^(1/2),

    with mu_m the centres. For samples of a mixture of well-separated isotropic
    Gaussians of standard deviation sigma_mode in d dimensions it is about
    sigma_mode sqrt(d), so it shows whether a sampler gives the modes their right width
    (too sharp: smaller; blurred: larger), which W2 at small N barely sees.
    """
    x64, c64 = _pair(x, centres, ("x", "centres"), ("N", "K"))
    d = torch.cdist(x64, c64, compute_mode="donot_use_mm_for_euclid_dist")  # (N, K)
    return float(d.min(1).values.pow(2).mean().sqrt())


def rms_spread(x: torch.Tensor) -> float:
    """Root-mean-square distance of the points from their mean (Section 5.4;
    Section 6.5):

        spread = ( (1/N) sum_i |x^(i) - mean(x)|^2 )^(1/2),

    the square root of the trace of the sample covariance (with 1/N). It is
    :func:`mode_spread` with the sample's own mean as the one centre.
    """
    x = _check.tensor(x, "x")
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"x must be a non-empty (N, D) point set, got shape {tuple(x.shape)}")
    return mode_spread(x, x.mean(0, keepdim=True))  # (1, D) centre


METRICS = {"w2": w2, "sw": sliced_wasserstein, "mmd": mmd}


# data_sampler -> {(metric, n, seed): (reference draw, floor)};
# entries leave with the sampler
_FLOORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _reference(metric, fn, data_sampler, n, seed):
    """A data draw of size n and the data-vs-data floor beside it, computed once per
    sampler."""
    key = (metric, n, seed)
    try:
        cached = _FLOORS.setdefault(data_sampler, {})
    except TypeError:  # a sampler that cannot be weakly referenced is not cached
        cached = {}
    if key not in cached:
        g = torch.Generator().manual_seed(seed)
        ref, ref2 = data_sampler(n, g), data_sampler(n, g)
        cached[key] = (ref, fn(ref2, ref))
    return cached[key]


def floor_ratio(
    metric: str,
    samples: torch.Tensor,
    data_sampler,
    *,
    n_repeats: int = 1,
    seed: int = 104729,
) -> dict:
    """A metric of ``samples`` against fresh data, and its ratio R to the data-vs-data
    floor.

    ``data_sampler(n, generator)`` draws n data points. Returns a dict with ``value``
    (model vs data), ``floor`` (data vs data, same N) and ``ratio`` = value / floor,
    each averaged over ``n_repeats`` draws of the reference data, seeded from ``seed``
    (a value unlikely to coincide with the seed that drew ``samples``: the same seed
    would give the same points). Section 2.6.

    The reference draws and the floor depend only on the sampler, N, the metric and the
    seed, so they are computed once per sampler object and reused: comparing many sample
    sets with the same data costs one metric evaluation each. (A sampler must therefore
    draw from the generator it is given, as every sampler in this book does.)
    """
    _check.choice(metric, "metric", METRICS)
    fn = METRICS[metric]
    n = samples.shape[0]
    vals, floors = [], []
    for r in range(_check.positive_int(n_repeats, "n_repeats")):
        ref, floor = _reference(metric, fn, data_sampler, n, seed + 1000 * r)
        vals.append(fn(samples, ref))
        floors.append(floor)
    value, floor = float(np.mean(vals)), float(np.mean(floors))
    return {
        "metric": metric,
        "n": n,
        "value": value,
        "floor": floor,
        "ratio": value / floor,
    }


# -- statistics that see blur and bridges, judged against fresh data (Section 2.6) --


def _points(x, name):
    _check.tensor(x, name, min_dim=2)
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(
            f"{name} must hold at least one point, got shape {tuple(x.shape)}"
        )
    return x.detach()


def _per_point(values, x, what, name):
    """Check that a user function returned one value per point of x."""
    if not isinstance(values, torch.Tensor) or values.shape != (x.shape[0],):
        if isinstance(values, torch.Tensor):
            got = f"shape {tuple(values.shape)}"
        else:
            got = type(values).__name__
        raise ValueError(
            f"{name}(x) must return {what} of shape ({x.shape[0]},), "
            f"one per point, got {got}"
        )
    return values


def expected_log_density(x: torch.Tensor, log_prob) -> float:
    """Mean log-density of the points x under a known density p (Section 2.6):

        mean_log_p(x) = (1/N) sum_i log p(x^(i)).

    ``log_prob(x)`` returns the (N,) exact log-densities, e.g.
    ``GaussianMixture.log_prob`` or :func:`dmlib.toy.log_prob_2d`. For samples of p
    itself, E mean_log_p = E_p log p = -H(p), the negative entropy, and mean_log_p
    scatters around it by std(log p(x)) / sqrt(N). A blurred sample puts points where
    p is small and lowers mean_log_p; a bridge between modes, where log p falls
    quadratically, lowers it a lot; a sample that is too narrow *raises* it. A point
    outside a bounded support gives -inf. One host read (the mean).
    """
    x = _points(x, "x")
    lp = _per_point(log_prob(x), x, "log-densities", "log_prob")
    if not lp.is_floating_point():
        raise TypeError(
            f"log_prob(x) must return floating values, got dtype {lp.dtype}"
        )
    if torch.isnan(lp).any():  # host sync: one check per call
        raise ValueError("log_prob(x) returned NaN")
    return float(lp.double().mean())


def support_fraction(x: torch.Tensor, in_support) -> float:
    """Fraction of the points x that lie in the support of the data (Section 2.6):

        frac(x) = (1/N) #{i : x^(i) in supp p}.

    ``in_support(x)`` returns an (N,) boolean tensor, e.g.
    :func:`dmlib.toy.in_support_2d`. For data with a bounded support (the
    checkerboard) frac = 1 exactly for every data sample, so its fresh-data scatter is
    0 and every point outside counts. One host read.
    """
    x = _points(x, "x")
    inside = _per_point(in_support(x), x, "booleans", "in_support")
    if inside.dtype != torch.bool:
        raise TypeError(
            f"in_support(x) must return a bool tensor, got dtype {inside.dtype}"
        )
    return float(inside.double().mean())


def _knn_radii(x, k):
    """Distance of each point of x to its k-th nearest other point, (N,)."""
    # (N, N) distances, exactly 0 on the diagonal
    d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    # the k + 1 smallest distances of a row include the point itself (distance 0)
    return d.topk(k + 1, dim=1, largest=False).values[:, k]


def _coverage(points, ref, k, chunk=4096):
    """Fraction of ``points`` inside the union of the balls around the points of
    ``ref``, each of radius its k-NN distance within ref."""
    radii = _knn_radii(ref, k)  # (M,)
    hits = []
    for i in range(0, points.shape[0], chunk):
        d = torch.cdist(
            points[i : i + chunk], ref, compute_mode="donot_use_mm_for_euclid_dist"
        )  # (c, M)
        hits.append((d <= radii[None, :]).any(1))  # (c,)
    return float(torch.cat(hits).double().mean())  # host sync: the result


def precision_recall(samples: torch.Tensor, data: torch.Tensor, k: int = 3) -> dict:
    """k-nearest-neighbour precision and recall of ``samples`` against ``data``
    (Kynkaanniemi et al., 2019; Section 2.6).

    Each point x of a set gets the ball of radius dist_j(x), its distance to its
    j-th nearest other point of the set (j = ``k``); the union of the balls estimates
    the support of the set's law.

        precision = fraction of samples inside the balls of the data,
        recall    = fraction of data points inside the balls of the samples.

    Precision falls when samples land where there is no data (blur, bridges,
    outliers); recall falls when parts of the data are missed (too narrow, a lost
    mode). Both are 1 for two identical sets, and below 1 for two independent samples
    of the same law: their values for a perfect sampler depend on k and N, so they
    are compared with fresh data (:func:`fresh_scatter`). Computed on ``samples``'
    device, in its dtype.
    """
    samples, data = _points(samples, "samples"), _points(data, "data")
    if samples.shape[1] != data.shape[1]:
        raise ValueError(
            "samples and data must have the same dimension D, got shapes "
            f"{tuple(samples.shape)} and {tuple(data.shape)}"
        )
    k = _check.positive_int(k, "k")
    if k >= min(samples.shape[0], data.shape[0]):
        raise ValueError(
            f"k must be smaller than the size of each set, got k = {k} for sets of "
            f"{samples.shape[0]} and {data.shape[0]} points"
        )
    return _precision_recall(samples, data.to(samples.device, samples.dtype), k)


def _precision_recall(samples, data, k):
    return {
        "precision": _coverage(samples, data, k),  # samples in the data's balls
        "recall": _coverage(data, samples, k),  # data in the samples' balls
    }


def fresh_scatter(
    statistic,
    data_sampler,
    n: int,
    *,
    draws: int = 20,
    generator: torch.Generator | None = None,
) -> dict:
    """The floor of a statistic: its mean and scatter over fresh data samples of
    size n (Section 2.6).

    ``statistic(x) -> float`` is evaluated on ``draws`` independent samples
    ``data_sampler(n, generator)``. Returns a dict with ``mean`` (the statistic's
    value for a perfect sampler at this N, up to std / sqrt(draws)), ``std`` (its
    scatter: the sample standard deviation, the floor a model is judged against),
    ``n``, ``draws`` and the ``values``. A statistic that needs a reference set
    (precision and recall) closes over one fixed data sample, which the model's
    samples then also use.
    """
    n = _check.positive_int(n, "n")
    draws = _check.positive_int(draws, "draws")
    if draws < 2:
        raise ValueError(f"draws must be at least 2 to measure a scatter, got {draws}")
    values = []
    for _ in range(draws):
        v = statistic(data_sampler(n, generator))
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"statistic(x) must return a float, got {type(v).__name__}")
        values.append(float(v))
    v = np.asarray(values)
    return {
        "n": n,
        "draws": draws,
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)),
        "values": values,
    }


def against_fresh(
    value: float,
    fresh: dict,
    *,
    exact: float | None = None,
    resolution: float = 0.0,
    tolerance: float = 1.5,
) -> dict:
    """A model's statistic judged against fresh data's scatter (Section 2.6).

    ``fresh`` is the dict of :func:`fresh_scatter` at the same N. The gap is the
    model's value minus ``exact`` (the statistic's exact value for the data, when
    known, e.g. -H(p) for :func:`expected_log_density`; else fresh data's mean),
    measured in units of the floor ``max(fresh std, resolution)``:

        z = |value - exact| / floor,   passes  <=>  z <= tolerance.

    ``resolution`` is the finest step the statistic can resolve at N (1 / N for a
    fraction), so a statistic with no fresh scatter (the support fraction of data
    with a bounded support) is still judged in units of one point.
    """
    if not isinstance(fresh, dict) or not {"mean", "std"} <= fresh.keys():
        raise TypeError("fresh must be the dict returned by fresh_scatter")
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, (int, float))
        or resolution < 0
    ):
        raise ValueError(f"resolution must be a number >= 0, got {resolution!r}")
    tolerance = _check.finite_positive(tolerance, "tolerance")
    exact = fresh["mean"] if exact is None else float(exact)
    floor = max(fresh["std"], float(resolution))
    gap = float(value) - exact
    if floor > 0:
        z = abs(gap) / floor
    else:
        z = 0.0 if gap == 0 else math.inf
    return {
        "value": float(value),
        "exact": exact,
        "scatter": fresh["std"],
        "floor": floor,
        "gap": gap,
        "gap_in_scatter": z,
        "tolerance": tolerance,
        "passes": bool(z <= tolerance),
    }


# -- Images: features, Frechet distance, KID, floors, classes, memorisation ---------
# (Chapter 9). Sample sets are compared through features (N, F), e.g. the penultimate
# layer of a classifier; every reduction runs in float64 on the CPU.


def _features(a, b, names=("feats_a", "feats_b"), min_rows=2):
    a, b = _pair(a, b, names, ("N", "M"))
    for x, name in ((a, names[0]), (b, names[1])):
        if x.shape[0] < min_rows:
            raise ValueError(
                f"{name} must hold at least {min_rows} feature vectors, "
                f"got shape {tuple(x.shape)}"
            )
        if not torch.isfinite(x).all():  # host sync: one check per call
            raise ValueError(f"{name} contains NaN or inf")
    return a, b


def _sqrtm_psd(s):
    """The symmetric square root of a symmetric positive semi-definite matrix,
    through its eigendecomposition; round-off negatives are clamped to 0."""
    lam, v = torch.linalg.eigh((s + s.T) / 2)
    return (v * lam.clamp_min(0.0).sqrt()) @ v.T


def _frechet(mu1, s1, mu2, s2):
    # Tr (S1^{1/2} S2 S1^{1/2})^{1/2} = sum of the square roots of the eigenvalues of
    # the symmetric PSD matrix S1^{1/2} S2 S1^{1/2} (same spectrum as S1 S2)
    r1 = _sqrtm_psd(s1)
    m = r1 @ s2 @ r1
    lam = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0.0)
    value = (mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * lam.sqrt().sum()
    return max(float(value), 0.0)  # >= 0 in exact arithmetic


def _moments(x):
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)  # (F,), (F, F) unbiased covariance


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (Heusel et al.,
    2017; Section 9.2).

    With the sample means mu_a, mu_b and covariances S_a, S_b (divisor N - 1) of the
    rows of ``feats_a`` (N, F) and ``feats_b`` (M, F),

        FD = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2}),

    the squared 2-Wasserstein distance between N(mu_a, S_a) and N(mu_b, S_b). With
    classifier features it is the FID of the chapter. The matrix square roots are
    taken through symmetric eigendecompositions in float64 on the CPU (see
    :func:`frechet_distance_gaussian`). Like every sample distance it is not 0 for two
    samples of one law, and it is biased upwards at small N: compare it with the
    real-vs-real floor at the same N (:func:`feature_floor`).
    """
    a, b = _features(feats_a, feats_b)
    return _frechet(*_moments(a), *_moments(b))


def frechet_distance_gaussian(mu1, cov1, mu2, cov2) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, cov1) and N(mu2, cov2),
    from their moments (Section 9.2):

        |mu1 - mu2|^2 + Tr(cov1 + cov2 - 2 (cov1^{1/2} cov2 cov1^{1/2})^{1/2}).

    cov1^{1/2} is the symmetric root from the eigendecomposition of cov1, and the
    trace of the outer root is the sum of the square roots of the eigenvalues of the
    symmetric matrix cov1^{1/2} cov2 cov1^{1/2}; eigenvalues below 0 (round-off) are
    clamped to 0. This route stays symmetric throughout, unlike the square root of the
    non-symmetric product cov1 cov2. ``mu`` of shape (F,), ``cov`` (F, F), symmetric
    positive semi-definite; computed in float64 on the CPU.
    """
    out = []
    for mu, cov, i in ((mu1, cov1, 1), (mu2, cov2, 2)):
        mu = torch.as_tensor(mu).detach().to("cpu", torch.float64)
        cov = torch.as_tensor(cov).detach().to("cpu", torch.float64)
        if mu.dim() != 1 or cov.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(
                f"mu{i} must have shape (F,) and cov{i} shape (F, F), got "
                f"{tuple(mu.shape)} and {tuple(cov.shape)}"
            )
        if not (torch.isfinite(mu).all() and torch.isfinite(cov).all()):
            raise ValueError(f"mu{i} and cov{i} must be finite")
        if (cov - cov.T).abs().max() > 1e-8 * (1.0 + cov.abs().max()):
            raise ValueError(f"cov{i} must be symmetric")
        out += [mu, cov]
    if out[0].shape != out[2].shape:
        raise ValueError(
            f"mu1 and mu2 must have the same dimension, got {tuple(out[0].shape)} "
            f"and {tuple(out[2].shape)}"
        )
    return _frechet(*out)


def _mmd2_poly(x, y):
    # unbiased MMD^2 with k(a, b) = (a.b / F + 1)^3
    f, n, m = x.shape[1], x.shape[0], y.shape[0]
    kxx = (x @ x.T / f + 1) ** 3
    kyy = (y @ y.T / f + 1) ** 3
    kxy = (x @ y.T / f + 1) ** 3
    return (
        (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        - 2 * kxy.mean()
    )


def _subset(n, size, generator):
    # size distinct indices of range(n), uniformly (a random permutation's head)
    return noise.rand((n,), generator=generator, device="cpu").argsort()[:size]


def kid(
    feats_a: torch.Tensor,
    feats_b: torch.Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> dict:
    """Kernel inception distance: the unbiased squared MMD with the cubic polynomial
    kernel (Binkowski et al., 2018; Section 9.3).

        G(x, x') = (x . x' / F + 1)^3,
        MMD^2    = E G(x^(i), x^(i')) + E G(x'^(j), x'^(j')) - 2 E G(x^(i), x'^(j)),

    with i != i', j != j', F the feature dimension. The estimate is averaged over
    ``subsets`` pairs of random subsets of ``subset_size`` rows (without replacement
    within a subset; ``subset_size`` is cut to the smaller set's size), drawn through
    :mod:`dmlib.noise` with ``generator``. Unlike the Frechet distance its expectation
    is exactly 0 when both sets come from one law, whatever N, so values scatter
    around 0 (and can be slightly negative). Returns ``mean``, ``std`` (the scatter
    over subsets, not the error of the mean), ``subsets`` and ``subset_size``.
    """
    a, b = _features(feats_a, feats_b)
    subsets = _check.positive_int(subsets, "subsets")
    size = min(_check.positive_int(subset_size, "subset_size"), a.shape[0], b.shape[0])
    if size < 2:
        raise ValueError(f"subset_size must be at least 2, got {subset_size}")
    vals = torch.stack(
        [
            _mmd2_poly(
                a[_subset(a.shape[0], size, generator)],
                b[_subset(b.shape[0], size, generator)],
            )
            for _ in range(subsets)
        ]
    )
    return {
        "mean": float(vals.mean()),
        "std": float(vals.std()) if subsets > 1 else 0.0,
        "subsets": subsets,
        "subset_size": size,
    }


def _metric_value(metric, a, b):
    v = metric(a, b)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(
            f"metric(feats_a, feats_b) must return a float, got {type(v).__name__}"
            " (wrap a metric that returns a dict, e.g. lambda a, b: kid(a, b)['mean'])"
        )
    return float(v)


def _draws(draws):
    draws = _check.positive_int(draws, "draws")
    if draws < 2:
        raise ValueError(f"draws must be at least 2 to measure a scatter, got {draws}")
    return draws


def feature_floor(
    metric,
    feats_real: torch.Tensor,
    n: int,
    *,
    draws: int = 10,
    generator: torch.Generator | None = None,
) -> dict:
    """The real-vs-real floor of a feature metric at sample size n (Section 9.2).

    Each draw splits a random 2n rows of the pool ``feats_real`` (N, F) into two
    disjoint sets of n and evaluates ``metric(set_1, set_2) -> float`` (e.g.
    :func:`frechet_distance`). A model's value at the same N is judged against this
    floor: the value a perfect sampler would get, up to its scatter. Returns ``mean``,
    ``std`` (sample standard deviation over draws), ``n``, ``draws`` and the
    ``values``, the same keys as :func:`fresh_scatter` so :func:`against_fresh`
    applies. The pool must hold at least 2n rows (draws reuse rows, so they are not
    independent when the pool is not much larger than 2n).
    """
    real = _points(feats_real, "feats_real")
    n = _check.positive_int(n, "n")
    draws = _draws(draws)
    if 2 * n > real.shape[0]:
        raise ValueError(
            f"feats_real must hold at least 2 n = {2 * n} rows for two disjoint sets "
            f"of n, got {real.shape[0]}"
        )
    values = []
    for _ in range(draws):
        idx = _subset(real.shape[0], 2 * n, generator).to(real.device)
        values.append(_metric_value(metric, real[idx[:n]], real[idx[n:]]))
    v = np.asarray(values)
    return {
        "n": n,
        "draws": draws,
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)),
        "values": values,
    }


def bootstrap(
    metric,
    feats_a: torch.Tensor,
    feats_b: torch.Tensor,
    *,
    draws: int = 200,
    level: float = 0.95,
    method: str = "basic",
    generator: torch.Generator | None = None,
) -> dict:
    """A bootstrap interval for a two-sample metric (Section 9.2).

    Each draw resamples the rows of both ``feats_a`` and ``feats_b`` with replacement
    (same sizes) and evaluates ``metric(a*, b*) -> float``; q_lo and q_hi are the
    (1 - level)/2 and (1 + level)/2 quantiles of the resampled values v*, v the metric
    on the sets themselves.

        method="basic":       [lo, hi] = [2 v - q_hi, 2 v - q_lo],
        method="percentile":  [lo, hi] = [q_lo, q_hi].

    The basic interval treats v* - v as distributed like v - theta, theta the
    metric's value for the two laws themselves (infinite N), so it also removes a
    bias of the metric at this N to first order. That matters for the Frechet
    distance: resampled rows repeat, the covariances shrink, and v* lies well above v,
    so the percentile interval can miss v itself. (The basic interval can reach below
    0.) Returns ``value`` (v), ``lo``, ``hi``, ``bias`` (mean v* - v), ``std`` (of
    v*), ``draws`` and ``method``.
    """
    a, b = _points(feats_a, "feats_a"), _points(feats_b, "feats_b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            "feats_a and feats_b must have shapes (N, F) and (M, F), got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    draws = _draws(draws)
    if isinstance(level, bool) or not isinstance(level, float) or not 0 < level < 1:
        raise ValueError(f"level must be a float in (0, 1), got {level!r}")
    _check.choice(method, "method", ("basic", "percentile"))
    value = _metric_value(metric, a, b)
    vals = []
    for _ in range(draws):
        ia = noise.randint(0, a.shape[0], (a.shape[0],), generator=generator)
        ib = noise.randint(0, b.shape[0], (b.shape[0],), generator=generator)
        vals.append(_metric_value(metric, a[ia.to(a.device)], b[ib.to(b.device)]))
    v = np.asarray(vals)
    q_lo, q_hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    lo, hi = (2 * value - q_hi, 2 * value - q_lo) if method == "basic" else (q_lo, q_hi)
    return {
        "value": value,
        "lo": float(lo),
        "hi": float(hi),
        "bias": float(v.mean() - value),
        "std": float(v.std(ddof=1)),
        "draws": draws,
        "method": method,
    }


def _class_probs(logits, from_logits, name="logits"):
    _check.tensor(logits, name, min_dim=2)
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"{name} must have shape (N, K) with K >= 2 classes, "
            f"got {tuple(logits.shape)}"
        )
    p = logits.detach().to("cpu", torch.float64)
    if from_logits:
        return p.softmax(1)
    if (p < 0).any() or ((p.sum(1) - 1).abs() > 1e-4).any():  # host sync: a check
        raise ValueError(
            f"{name} must hold probabilities (rows >= 0 summing to 1) when "
            "from_logits=False"
        )
    return p


def class_agreement(
    logits: torch.Tensor, labels: torch.Tensor, *, from_logits: bool = True
) -> dict:
    """How well a classifier recognises the requested class in class-conditional
    samples (Section 9.4).

    ``logits`` (N, K) are the classifier's outputs on N samples (probabilities with
    ``from_logits=False``), ``labels`` (N,) the classes the samples were asked for.

        accuracy    = (1/N) #{i : argmax_k p(k | x^(i)) = y^(i)},
        confidence  = (1/N) sum_i max_k p(k | x^(i)),
        label_prob  = (1/N) sum_i p(y^(i) | x^(i)).

    Accuracy near the classifier's own test accuracy means the samples carry their
    class as well as real digits do; a low confidence flags ambiguous shapes.
    """
    p = _class_probs(logits, from_logits)
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point():
        raise TypeError("labels must be an integer tensor of class indices")
    if labels.shape != (p.shape[0],):
        raise ValueError(
            f"labels must have shape ({p.shape[0]},), one per row of logits, got "
            f"{tuple(labels.shape)}"
        )
    y = labels.detach().to("cpu", torch.int64)
    if y.numel() and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(
            f"labels must lie in [0, {p.shape[1] - 1}], got values in "
            f"[{int(y.min())}, {int(y.max())}]"
        )
    conf, pred = p.max(1)
    return {
        "accuracy": float((pred == y).double().mean()),
        "confidence": float(conf.mean()),
        "label_prob": float(p.gather(1, y[:, None]).mean()),
        "n": p.shape[0],
    }


def digit_coverage(
    logits: torch.Tensor, *, from_logits: bool = True, min_share: float | None = None
) -> dict:
    """Which classes unconditional samples fall into, by a classifier's argmax
    (Section 9.4).

    With counts n_k of samples assigned to class k among N and shares q_k = n_k / N,

        coverage = (1/K) #{k : q_k >= min_share},
        entropy  = -sum_k q_k log q_k   (nats; log K for a uniform spread),

    and ``evenness`` = entropy / log K in [0, 1]. ``min_share`` defaults to half the
    uniform share, 1 / (2K). Also returns ``histogram`` (the K shares, a list) and
    ``counts``. A model that drops a digit shows coverage below 1; one that favours
    a few shows a low evenness.
    """
    p = _class_probs(logits, from_logits)
    k = p.shape[1]
    if min_share is None:
        min_share = 1.0 / (2 * k)
    if isinstance(min_share, bool) or not isinstance(min_share, (int, float)) or not (
        0 <= min_share <= 1
    ):
        raise ValueError(f"min_share must be a number in [0, 1], got {min_share!r}")
    counts = torch.bincount(p.argmax(1), minlength=k)
    q = counts.double() / p.shape[0]
    entropy = float(-(q[q > 0] * q[q > 0].log()).sum())
    return {
        "coverage": float((q >= min_share).double().mean()),
        "entropy": entropy,
        "evenness": entropy / math.log(k),
        "histogram": q.tolist(),
        "counts": counts.tolist(),
    }


def _nearest(x, ref, chunk):
    # index and exact Euclidean distance of each row of x to its nearest row of ref
    idx = []
    for i in range(0, x.shape[0], chunk):
        d2 = torch.cdist(x[i : i + chunk], ref)  # fast matrix-product path, (c, M)
        idx.append(d2.argmin(1))
    idx = torch.cat(idx)
    # the distance to the chosen neighbour recomputed from the difference itself: the
    # matrix-product path loses precision for near-duplicates (an exact copy -> 0)
    return idx, (x - ref[idx]).norm(dim=1)


def memorisation(
    samples: torch.Tensor,
    train: torch.Tensor,
    test: torch.Tensor,
    *,
    chunk: int = 256,
    level: float = 0.95,
) -> dict:
    """Does a model copy its training images? Nearest-neighbour distances in pixel
    space to the training set and to held-out images (Section 9.5).

    For each sample x^(i), d_train(i) is its Euclidean distance to the nearest image
    of ``train`` and d_test(i) to the nearest of ``test``, two sets of the same size
    (a larger set has closer neighbours, so unequal sizes would bias the comparison).
    A model that generalises is as close to unseen test images as to training images
    (the ratio leaves out samples at distance 0 from a test image):

        ratio          = (1/N) sum_i d_train(i) / d_test(i)   (about 1; 0 for copies),
        closer_train   = (1/N) #{i : d_train(i) < d_test(i)}  (about 1/2; 1 for copies).

    Copies live in the lower tail of the per-sample ratios, which a mean near 1 can
    hide, so the lower quantiles ``ratio_q01`` and ``ratio_q05`` of d_train / d_test are
    returned too, and ``closer_train_lo``, ``closer_train_hi``, the Wilson score
    interval (Wilson, 1927) at confidence ``level`` for the probability behind
    ``closer_train``: with k of N samples closer to train, p_hat = k / N and
    z the standard normal quantile at (1 + level) / 2,

        (p_hat + z^2 / (2N) +- z sqrt(p_hat (1 - p_hat) / N + z^2 / (4 N^2)))
            / (1 + z^2 / N),

    which, unlike p_hat +- z sqrt(p_hat (1 - p_hat) / N), stays inside [0, 1] and keeps
    its coverage near k = 0 or k = N.

    Also returns the mean and median of each distance, and per sample ``d_train``,
    ``d_test``, ``ratios`` (N,) and ``train_index``, the index of the nearest training
    image (to show the pairs). Inputs (N, ...) with equal trailing shapes are flattened
    and compared in float64 on the CPU in chunks of ``chunk`` samples, so 2,000
    samples against 10,000 MNIST images need about 20 MB per chunk.
    """
    names = ("samples", "train", "test")
    flat = []
    for x, name in zip((samples, train, test), names):
        _check.tensor(x, name, min_dim=2)
        if x.shape[0] < 1:
            raise ValueError(
                f"{name} must hold at least one image, got {tuple(x.shape)}"
            )
        flat.append(x.detach().reshape(x.shape[0], -1).to("cpu", torch.float64))
    s, tr, te = flat
    if samples.shape[1:] != train.shape[1:] or samples.shape[1:] != test.shape[1:]:
        raise ValueError(
            "samples, train and test must have the same image shape, got "
            f"{tuple(samples.shape)}, {tuple(train.shape)} and {tuple(test.shape)}"
        )
    if tr.shape[0] != te.shape[0]:
        raise ValueError(
            "train and test must hold the same number of images (a larger reference "
            f"set has closer neighbours), got {tr.shape[0]} and {te.shape[0]}"
        )
    chunk = _check.positive_int(chunk, "chunk")
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    i_tr, d_tr = _nearest(s, tr, chunk)
    _, d_te = _nearest(s, te, chunk)
    ratio = torch.where(d_te > 0, d_tr / d_te.clamp_min(1e-300), torch.nan)
    closer = int((d_tr < d_te).sum())
    lo, hi = _wilson(closer, s.shape[0], level)
    finite = ratio[~ratio.isnan()]
    q01, q05 = (
        (float(torch.quantile(finite, q)) for q in (0.01, 0.05))
        if finite.numel() else (math.nan, math.nan)
    )
    return {
        "d_train_mean": float(d_tr.mean()),
        "d_train_median": float(d_tr.median()),
        "d_test_mean": float(d_te.mean()),
        "d_test_median": float(d_te.median()),
        "ratio": float(ratio.nanmean()),
        "ratio_q01": q01,
        "ratio_q05": q05,
        "closer_train": closer / s.shape[0],
        "closer_train_lo": lo,
        "closer_train_hi": hi,
        "d_train": d_tr,
        "d_test": d_te,
        "ratios": ratio,
        "train_index": i_tr,
    }


def _wilson(k: int, n: int, level: float) -> tuple[float, float]:
    # Wilson's score interval for a binomial probability from k successes in n trials
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def nearest_neighbours(
    x: torch.Tensor, ref: torch.Tensor, *, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest row of ``ref`` to each row of ``x`` in pixel space: the search for
    near-copies of training images (Section 9.5).

    ``x`` (N, ...) and ``ref`` (M, ...) with equal trailing shapes are flattened and
    compared in float64 on the CPU, ``chunk`` rows of ``x`` at a time (a (chunk, M)
    block of distances: 256 rows against the 50,000 MNIST training digits take
    about 100 MB). Returns ``(index, distance)``, both (N,): the index in ``ref`` of
    the nearest row and the Euclidean distance to it, recomputed from the difference
    itself so that an exact copy is at distance exactly 0.
    """
    for v, name in ((x, "x"), (ref, "ref")):
        _check.tensor(v, name, min_dim=2)
        if v.shape[0] < 1:
            raise ValueError(f"{name} must hold at least one row, got {tuple(v.shape)}")
    if x.shape[1:] != ref.shape[1:]:
        raise ValueError(
            "x and ref must have the same trailing shape, got "
            f"{tuple(x.shape)} and {tuple(ref.shape)}"
        )
    chunk = _check.positive_int(chunk, "chunk")
    flat = [v.detach().reshape(v.shape[0], -1).to("cpu", torch.float64)
            for v in (x, ref)]
    return _nearest(*flat, chunk)




# -- one report for a set of image samples -------------------------------------------
@torch.no_grad()
def _in_batches(fn, classifier, images: torch.Tensor, batch: int = 500):
    """``fn(images)`` batch by batch on the classifier's device, in eval mode, images
    clipped to [-1, 1] first (as real digits are); float32 results on the CPU."""
    device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    out = [
        fn(images[i : i + batch].clamp(-1, 1).to(device)).float().cpu()
        for i in range(0, images.shape[0], batch)
    ]
    classifier.train(was_training)
    return torch.cat(out)


def features(classifier, images: torch.Tensor, *, batch: int = 500) -> torch.Tensor:
    """The feature vectors (N, F) of ``images`` (N, 1, 28, 28) in [-1, 1] under a
    frozen classifier with a ``features`` method (:class:`dmlib.nn.DigitClassifier`),
    computed in batches on the classifier's device and returned on the CPU; images are
    clipped to [-1, 1] first, as real digits are. Section 9.1."""
    _check.tensor(images, "images", min_dim=4)
    if not callable(getattr(classifier, "features", None)):
        raise TypeError(
            "classifier must have a features(x) method (a dmlib.nn.DigitClassifier)"
        )
    return _in_batches(classifier.features, classifier, images, batch)


def image_report(
    samples: torch.Tensor,
    classifier,
    real: torch.Tensor,
    *,
    labels=None,
    floor_draws: int = 5,
    bootstrap_draws: int = 50,
    kid_subsets: int = 20,
    generator: torch.Generator | None = None,
) -> dict:
    """Everything Chapter 9 measures about N image samples, in one dict (Section 9.7).

    ``real`` is a pool of at least 3N real images (e.g. the 10,000 test digits), or
    their features (M, F) from :func:`features` when several reports share one pool: a
    fixed N of them are the reference and the floor is taken over disjoint pairs of N
    real images from the pool. Returned:

    * ``fd`` (Frechet distance in the classifier's feature space), its 95% interval
      ``fd_lo``, ``fd_hi`` (fd +- 1.96 bootstrap standard deviations), the real-vs-real
      floor ``fd_floor`` (mean over ``floor_draws``) and the ratio
      ``fd_ratio = fd / fd_floor`` with its interval;
    * ``kid`` and ``kid_std`` (over ``kid_subsets`` subsets of min(1000, N / 2) rows);
      ``precision`` and ``recall`` (k = 3 nearest neighbours);
    * ``confidence`` and ``coverage`` of the classifier's predictions, and ``accuracy``
      when ``labels`` (the classes the samples were asked for) are given;
    * ``n``.
    """
    _check.tensor(samples, "samples", min_dim=4)
    _check.tensor(real, "real", min_dim=2)
    n = samples.shape[0]
    if real.shape[0] < 3 * n:
        raise ValueError(
            f"real must hold at least 3 N = {3 * n} images (a reference set and the "
            f"floor's pairs), got {real.shape[0]}"
        )
    f_s = features(classifier, samples)
    f_r = real.detach().float().cpu() if real.dim() == 2 else features(classifier, real)
    idx = _subset(f_r.shape[0], f_r.shape[0], generator)
    ref, pool = f_r[idx[:n]], f_r[idx[n:]]
    fd = frechet_distance(f_s, ref)
    floor = feature_floor(
        frechet_distance, pool, n, draws=floor_draws, generator=generator
    )
    boot = bootstrap(
        frechet_distance, f_s, ref, draws=bootstrap_draws, generator=generator
    )
    k = kid(
        f_s,
        ref,
        subsets=kid_subsets,
        subset_size=max(2, min(1000, n // 2)),
        generator=generator,
    )
    pr = precision_recall(f_s, ref, k=3)
    logits = _in_batches(classifier, classifier, samples)
    # a normal interval from the bootstrap's scatter: it brackets the expected FD at
    # this N, what the ratio to the floor compares (the basic interval removes FD's
    # finite-N bias and brackets the FD of the two laws; the percentile one aims at
    # neither)
    lo, hi = fd - 1.96 * boot["std"], fd + 1.96 * boot["std"]
    out = {
        "n": n,
        "fd": fd,
        "fd_lo": lo,
        "fd_hi": hi,
        "fd_floor": floor["mean"],
        "fd_ratio": fd / floor["mean"],
        "fd_ratio_lo": lo / floor["mean"],
        "fd_ratio_hi": hi / floor["mean"],
        "kid": k["mean"],
        "kid_std": k["std"],
        "precision": pr["precision"],
        "recall": pr["recall"],
        "confidence": float(torch.softmax(logits, 1).max(1).values.double().mean()),
        "coverage": digit_coverage(logits)["coverage"],
    }
    if labels is not None:
        out["accuracy"] = class_agreement(
            logits, torch.as_tensor(labels).reshape(-1).long().cpu()
        )["accuracy"]
    return out


def reporter(classifier, real, *, seed: int = 2, **settings):
    """``report(samples, labels=None, seed=seed)``: :func:`image_report` against one pool
    of real images or features ``real`` with fixed ``settings`` (``floor_draws``,
    ``bootstrap_draws``, ``kid_subsets``), each call with a fresh generator seeded by
    ``seed``, so that every sample set of a chapter is measured alike and a report does
    not depend on the reports made before it. Section 8.1."""
    unknown = set(settings) - {"floor_draws", "bootstrap_draws", "kid_subsets"}
    if unknown:
        raise TypeError(f"unknown image_report settings {sorted(unknown)}")
    default_seed = seed

    def report(samples: torch.Tensor, labels=None, seed: int = default_seed) -> dict:
        return image_report(samples, classifier, real, labels=labels, **settings,
                            generator=torch.Generator().manual_seed(seed))

    return report


def ink(x: torch.Tensor) -> float:
    """How much ink a set of digits carries: their mean brightness in [0, 1], for images
    x (B, C, H, W) in [-1, 1] (values outside are clipped). Real MNIST digits carry about
    0.13; strong guidance thickens strokes and raises it. Section 8.3."""
    _check.tensor(x, "x", min_dim=2)
    return ((x.clamp(-1, 1) + 1) / 2).mean().item()  # sync: one number, for a report


def intervals_overlap(a: dict, b: dict, key: str = "fd_ratio") -> bool:
    """Do the 95% intervals ``[key_lo, key_hi]`` of two reports of :func:`image_report`
    overlap? When they do, the two sample sets cannot be told apart at this N by that
    measure. Section 8.1."""
    for r in (a, b):
        if f"{key}_lo" not in r or f"{key}_hi" not in r:
            raise KeyError(f"a report without the interval of {key!r} "
                           f"(keys {sorted(r)})")
    return a[f"{key}_lo"] < b[f"{key}_hi"] and b[f"{key}_lo"] < a[f"{key}_hi"]

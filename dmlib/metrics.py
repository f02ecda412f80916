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
"""

from __future__ import annotations

import math
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

"""Sample-quality metrics for 2D data: exact W2, sliced Wasserstein, MMD, mode spread.
Section 2.6.

A distance between two finite samples is never 0, even when both come from the same
distribution. Every metric is therefore also reported as a ratio to its *floor*, the
distance between two independent samples of the data of the same size:

    R = d(model samples, data) / d(data sample 1, data sample 2),

so R close to 1 means "as close to the data as a fresh draw of the data itself".
"""

from __future__ import annotations

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

        W2(x, y)^2 = min over permutations pi of (1/N) sum_i |x_i - y_pi(i)|^2,

    solved exactly as an assignment problem (scipy's linear_sum_assignment), O(N^3).
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

        MMD^2   = E k(x, x') + E k(y, y') - 2 E k(x, y),
        k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2)).
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

        spread = ( (1/N) sum_i min_k |x_i - c_k|^2 )^(1/2).

    For samples of a mixture of well-separated isotropic Gaussians of standard deviation
    s in D dimensions it is about s sqrt(D), so it shows whether a sampler gives the
    modes their right width (too sharp: smaller; blurred: larger), which W2 at small N
    barely sees.
    """
    x64, c64 = _pair(x, centres, ("x", "centres"), ("N", "K"))
    d = torch.cdist(x64, c64, compute_mode="donot_use_mm_for_euclid_dist")  # (N, K)
    return float(d.min(1).values.pow(2).mean().sqrt())


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

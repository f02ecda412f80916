"""2D metrics: exact values on small cases, the floor ratio, and that they see a difference."""

import math

import pytest
import torch

from dmlib import metrics, toy


def test_w2_of_a_shift_is_the_shift():
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    assert metrics.w2(x, x + torch.tensor([3.0, 4.0])) == pytest.approx(5.0, rel=1e-6)  # float32 input
    for seed in range(5):  # any order of the same points: exactly zero
        perm = torch.randperm(200, generator=torch.Generator().manual_seed(seed))
        assert metrics.w2(x, x[perm]) == 0.0


def test_w2_is_an_optimal_assignment():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[1.0, 0.1], [0.0, 0.1]])  # the crossing pairing would cost more
    assert metrics.w2(x, y) == pytest.approx(0.1)


def test_sliced_wasserstein_of_a_shift():
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
    shift = torch.tensor([1.0, 0.0])
    # for a shift c the 1D distance along theta is |<c, theta>|; averaging cos^2 gives |c|^2 / 2
    sw = metrics.sliced_wasserstein(x, x + shift, n_projections=4000, generator=torch.Generator().manual_seed(2))
    assert sw == pytest.approx(math.sqrt(0.5), rel=0.03)


def test_mmd_is_near_zero_for_same_law_and_positive_otherwise():
    g = torch.Generator().manual_seed(3)
    a, b, c = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g) + 0.5
    assert abs(metrics.mmd(a, b)) < 0.01 < metrics.mmd(a, c)


def test_floor_ratio_is_about_one_for_data_and_large_for_noise():
    gm = toy.GaussianMixture.eight_gaussians()
    sampler = lambda n, g: gm.sample(n, generator=g)  # noqa: E731
    data = gm.sample(800, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(800, 2, generator=torch.Generator().manual_seed(5))
    for name in ("w2", "sw"):
        assert 0.7 < metrics.floor_ratio(name, data, sampler, n_repeats=2)["ratio"] < 1.3
        assert metrics.floor_ratio(name, noise, sampler)["ratio"] > 1.5


class _CountingSampler:
    """A data sampler that counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, n, g):
        self.calls += 1
        return toy.sample_2d("moons", n, generator=g)


class _SlottedSampler:
    """The same, with __slots__ and no __weakref__: it cannot be cached."""

    __slots__ = ("calls",)

    def __init__(self):
        self.calls = 0

    def __call__(self, n, g):
        self.calls += 1
        return toy.sample_2d("moons", n, generator=g)


def test_floor_ratio_reuses_its_reference_and_floor():
    x = toy.sample_2d("moons", 300, seed=11) + 0.1
    counting, slotted = _CountingSampler(), _SlottedSampler()
    first = metrics.floor_ratio("w2", x, counting, n_repeats=2)
    assert counting.calls == 4  # two draws per repeat
    again = metrics.floor_ratio("w2", x, counting, n_repeats=2)
    assert counting.calls == 4 and again == first  # the second call draws nothing
    other = metrics.floor_ratio("w2", x[:200], counting, n_repeats=2)  # another N: new draws
    assert counting.calls == 8 and other["n"] == 200
    # the cached answer is the answer without a cache: a sampler that cannot be cached
    for _ in range(2):
        assert metrics.floor_ratio("w2", x, slotted, n_repeats=2) == first
    assert slotted.calls == 8
    # and the floor is the data-vs-data distance of the seeded draws, computed by hand
    g = torch.Generator().manual_seed(104729)
    ref, ref2 = toy.sample_2d("moons", 300, generator=g), toy.sample_2d("moons", 300, generator=g)
    one = metrics.floor_ratio("w2", x, counting)
    assert one["floor"] == pytest.approx(metrics.w2(ref2, ref)) and one["value"] == pytest.approx(metrics.w2(x, ref))


@pytest.mark.parametrize("fn", [metrics.w2, metrics.sliced_wasserstein])
def test_metrics_reject_mismatched_inputs(fn):
    with pytest.raises(ValueError, match="x and y|equal size"):
        fn(torch.randn(10, 2), torch.randn(10, 3))
    with pytest.raises(ValueError, match="equal size"):
        fn(torch.randn(10, 2), torch.randn(11, 2))


def test_mode_spread_exact_values():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    x = torch.tensor([[3.0, 4.0], [10.0, 1.0], [9.0, 0.0], [0.0, 0.0]])  # nearest distances 5, 1, 1, 0
    assert metrics.mode_spread(x, centres) == pytest.approx(math.sqrt((25 + 1 + 1 + 0) / 4), rel=1e-12)
    assert metrics.mode_spread(centres, centres) == 0.0
    # the centres' order and the points' dtype do not matter
    assert metrics.mode_spread(x.double(), centres.flip(0)) == metrics.mode_spread(x, centres)


def test_mode_spread_of_mixture_samples_is_std_sqrt_d():
    # well-separated isotropic modes of std s in D = 2: E min_k |x - mu_k|^2 = D s^2
    gm = toy.GaussianMixture.eight_gaussians()
    n = 20_000
    x = gm.sample(n, generator=torch.Generator().manual_seed(6))
    s = 0.1 / 1.42
    # |x - mu|^2 / s^2 is chi-squared with 2 degrees of freedom (mean 2, variance 4); by the
    # delta method the root of the mean of n of them has standard error s / sqrt(2 n)
    se = s / math.sqrt(2 * n)
    assert abs(metrics.mode_spread(x, gm.means) - s * math.sqrt(2)) < 5 * se
    assert metrics.mode_spread(1.5 * x, gm.means) > 1.4 * s * math.sqrt(2)  # blurred: larger


def test_mode_spread_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="centres"):
        metrics.mode_spread(torch.zeros(5, 2), torch.zeros(3, 3))


def test_sliced_wasserstein_draws_its_directions_as_before():
    x, y = torch.randn(50, 3, generator=torch.Generator().manual_seed(7)), torch.zeros(50, 3)
    got = metrics.sliced_wasserstein(x, y, 16, generator=torch.Generator().manual_seed(8))
    theta = torch.randn(3, 16, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x.double() @ theta, dim=0)
    assert got == pytest.approx(float((px**2).mean().sqrt()), rel=1e-12)

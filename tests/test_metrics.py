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


# -- statistics that see blur, and their fresh-data floors (Section 2.6) ---------------------------


def _gaussian_log_prob(s):
    """log N(x; 0, s^2 I) in D dims, the exact density of the samples drawn below."""
    def log_prob(x):
        d = x.shape[1]
        return -0.5 * (x.double() ** 2).sum(1) / s**2 - 0.5 * d * math.log(2 * math.pi * s**2)
    return log_prob


def test_expected_log_density_of_a_gaussians_own_samples_is_minus_its_entropy():
    # E_p log p = -H(p) = -(D/2) (1 + log(2 pi s^2)); log p = const - |z|^2 / 2 with |z|^2 ~ chi^2_D,
    # so log p has variance D/2 and the mean of N values scatters by sqrt(D / (2 N))
    s, d, n = 0.7, 3, 4000
    log_prob = _gaussian_log_prob(s)
    sampler = lambda m, g: s * torch.randn(m, d, generator=g)  # noqa: E731
    minus_h = -0.5 * d * (1 + math.log(2 * math.pi * s**2))
    x = sampler(50 * n, torch.Generator().manual_seed(0))
    assert metrics.expected_log_density(x, log_prob) == pytest.approx(minus_h, abs=4 * math.sqrt(d / 2 / (50 * n)))
    fresh = metrics.fresh_scatter(lambda x: metrics.expected_log_density(x, log_prob), sampler, n, draws=200,
                                  generator=torch.Generator().manual_seed(1))
    floor = math.sqrt(d / (2 * n))
    assert fresh["draws"] == 200 and len(fresh["values"]) == 200 and fresh["n"] == n
    assert fresh["std"] == pytest.approx(floor, rel=0.15)  # the std of 200 draws: ~5 % standard error
    assert abs(fresh["mean"] - minus_h) < 4 * floor / math.sqrt(200)
    # blurred or too narrow samples move away from -H by many floors, in opposite directions
    blurred, narrow = 1.2 * x[:n], 0.8 * x[:n]
    blurred_judged = metrics.against_fresh(metrics.expected_log_density(blurred, log_prob), fresh, exact=minus_h)
    narrow_judged = metrics.against_fresh(metrics.expected_log_density(narrow, log_prob), fresh, exact=minus_h)
    assert blurred_judged["gap"] < -20 * floor
    assert narrow_judged["gap"] > 20 * floor


def test_support_fraction_closed_forms():
    g = torch.Generator().manual_seed(2)
    data = toy.sample_2d("checkerboard", 20_000, generator=g)
    inside = lambda x: toy.in_support_2d("checkerboard", x)  # noqa: E731
    assert metrics.support_fraction(data, inside) == 1.0  # the data itself: exactly 1
    assert metrics.support_fraction(data + torch.tensor([0.85, 0.0]), inside) < 0.6  # shifted by a square
    # standard normal points in the unit disk: P(chi^2_2 <= 1) = 1 - exp(-1/2), binomial scatter
    disk = lambda x: (x**2).sum(1) <= 1  # noqa: E731
    p, n = 1 - math.exp(-0.5), 2000
    fresh = metrics.fresh_scatter(lambda x: metrics.support_fraction(x, disk),
                                  lambda m, gg: torch.randn(m, 2, generator=gg), n, draws=200, generator=g)
    assert abs(fresh["mean"] - p) < 4 * math.sqrt(p * (1 - p) / n / 200)
    assert fresh["std"] == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.15)


def test_checkerboard_density_is_normalised_and_matches_its_support():
    # Monte Carlo over a box holding the board: area * mean p = 1
    g = torch.Generator().manual_seed(3)
    half = 2.5 * 0.85
    u = (torch.rand(400_000, 2, generator=g, dtype=torch.float64) * 2 - 1) * half
    lp = toy.log_prob_2d("checkerboard", u)
    mass = float(lp.exp().mean()) * (2 * half) ** 2
    assert mass == pytest.approx(1.0, abs=0.01)
    assert torch.equal(torch.isfinite(lp), toy.in_support_2d("checkerboard", u))
    assert lp.dtype == torch.float64 and toy.log_prob_2d("checkerboard", u.float()).dtype == torch.float32
    # corners of the board: (-2, -2) is a black square's corner, (-2 + 0.5, -1 + 0.5) a white centre
    pts = torch.tensor([[-1.5, -1.5], [-1.5, -0.5], [0.5, 0.5], [1.5, 0.5]]) * 0.85
    assert toy.in_support_2d("checkerboard", pts).tolist() == [True, False, True, False]
    # 8 Gaussians: the mixture sample_2d draws from
    x = toy.sample_2d("8gaussians", 10, seed=0)
    torch.testing.assert_close(toy.log_prob_2d("8gaussians", x), toy.GaussianMixture.eight_gaussians().log_prob(x))
    with pytest.raises(ValueError, match="name"):
        toy.log_prob_2d("moons", x)
    with pytest.raises(ValueError, match="name"):
        toy.in_support_2d("8gaussians", x)


def check_knn_hand_example():
    """Points 0, 1, 2, 4 on a line: 1-NN radii (to the nearest *other* point) 1, 1, 1, 2;
    2-NN radii 2, 1, 2, 3. Raises AssertionError if precision / recall disagree."""
    data = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [4.0, 0.0]])
    samples = torch.tensor([[0.0, 0.9], [3.5, 0.0], [2.0, 1.5], [7.5, 0.0]])
    # k = 1: inside (0 within 0.9 <= 1), inside (4 within 0.5 <= 2), outside (1.5 > 1), outside (3.5 > 2)
    got = metrics.precision_recall(samples, data, k=1)
    # samples' own 1-NN radii: 2.07, 1.58, 1.58, 4 (|s1 - s2|, |s2 - s3|, |s3 - s2|, |s4 - s2|);
    # data covered: 0 (0.9 from s1), 1 (1.35 from s1), 2 (1.5 from s3 and 1.58 from s2), 4 (0.5 from s2)
    assert got["precision"] == pytest.approx(0.5), got
    assert got["recall"] == pytest.approx(1.0), got
    got2 = metrics.precision_recall(samples, data, k=2)  # radii 2, 1, 2, 3: (2, 1.5) is 1.5 <= 2 from 2
    assert got2["precision"] == pytest.approx(0.75), got2


def test_knn_precision_recall_hand_example():
    check_knn_hand_example()


def test_knn_hand_example_catches_a_radius_that_counts_the_point_itself(monkeypatch):
    """A planted bug: the k-th nearest neighbour counted with the point itself (one too near)."""
    def buggy(x, k):
        d = torch.cdist(x, x)
        return d.topk(k, dim=1, largest=False).values[:, k - 1]  # k = 1 gives radius 0

    monkeypatch.setattr(metrics, "_knn_radii", buggy)
    with pytest.raises(AssertionError):
        check_knn_hand_example()


def test_precision_recall_identical_shifted_blurred_and_narrow_sets():
    gm = toy.GaussianMixture.eight_gaussians()
    g = torch.Generator().manual_seed(4)
    data, other = gm.sample(2000, generator=g), gm.sample(2000, generator=g)
    assert metrics.precision_recall(data, data) == {"precision": 1.0, "recall": 1.0}
    # a second sample of the same law: high but below 1 at N = 2000
    fresh = metrics.precision_recall(other, data)
    assert 0.9 < fresh["precision"] < 1.0 and 0.9 < fresh["recall"] < 1.0
    shifted = metrics.precision_recall(data + torch.tensor([0.3, 0.0]), data)
    assert shifted["precision"] < 0.5 and shifted["recall"] < 0.5
    blurred = metrics.precision_recall(other + 0.1 * torch.randn(other.shape, generator=g), data)
    assert blurred["precision"] < fresh["precision"] - 0.1  # points off the modes
    centres = gm.means.float()[torch.cdist(other, gm.means.float()).argmin(1)]
    narrow = metrics.precision_recall(centres + 0.3 * (other - centres), data)
    assert narrow["recall"] < fresh["recall"] - 0.2 and narrow["precision"] > 0.98  # the rims are missed
    # the result does not depend on the samples' dtype
    assert metrics.precision_recall(other.double(), data) == pytest.approx(fresh)


def test_against_fresh_arithmetic_and_zero_scatter():
    fresh = {"mean": 1.0, "std": 0.1}
    r = metrics.against_fresh(1.12, fresh)
    assert r["gap"] == pytest.approx(0.12) and r["gap_in_scatter"] == pytest.approx(1.2) and r["passes"]
    r = metrics.against_fresh(1.12, fresh, exact=0.9, tolerance=2.0)
    assert r["exact"] == 0.9 and r["gap_in_scatter"] == pytest.approx(2.2) and not r["passes"]
    zero = {"mean": 1.0, "std": 0.0}  # e.g. the support fraction of bounded data
    assert metrics.against_fresh(1.0, zero)["passes"]
    assert metrics.against_fresh(0.999, zero)["gap_in_scatter"] == math.inf
    r = metrics.against_fresh(0.999, zero, resolution=1 / 2000)  # two points of 2000 outside
    assert r["gap_in_scatter"] == pytest.approx(2.0) and not r["passes"]


def test_new_metrics_reject_bad_input():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="k must be smaller"):
        metrics.precision_recall(x, x, k=10)
    with pytest.raises(ValueError, match="same dimension"):
        metrics.precision_recall(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match=r"k must be a positive integer"):
        metrics.precision_recall(x, x, k=0)
    with pytest.raises(ValueError, match=r"samples must have shape \(N, D\)"):
        metrics.precision_recall(torch.randn(2, 5, 2), x)
    with pytest.raises(ValueError, match=r"log_prob\(x\) must return log-densities of shape \(10,\)"):
        metrics.expected_log_density(x, lambda z: z)
    with pytest.raises(ValueError, match="NaN"):
        metrics.expected_log_density(x, lambda z: torch.full((10,), math.nan))
    with pytest.raises(TypeError, match="bool tensor"):
        metrics.support_fraction(x, lambda z: torch.ones(10))
    with pytest.raises(ValueError, match="draws must be at least 2"):
        metrics.fresh_scatter(lambda z: 0.0, lambda n, g: torch.randn(n, 2), 10, draws=1)
    with pytest.raises(TypeError, match="must return a float"):
        metrics.fresh_scatter(lambda z: z.mean(), lambda n, g: torch.randn(n, 2), 10, draws=2)
    with pytest.raises(TypeError, match="fresh_scatter"):
        metrics.against_fresh(1.0, 0.1)
    with pytest.raises(ValueError, match="resolution"):
        metrics.against_fresh(1.0, {"mean": 1.0, "std": 0.0}, resolution=-1)


def test_expected_log_density_and_support_fraction_of_hand_values():
    x = torch.zeros(4, 2)
    assert metrics.expected_log_density(x, lambda z: torch.tensor([0.0, -1.0, -2.0, -5.0])) == -2.0
    assert metrics.expected_log_density(x, lambda z: torch.tensor([0.0, -math.inf, 0.0, 0.0])) == -math.inf
    assert metrics.support_fraction(x, lambda z: torch.tensor([True, False, True, True])) == 0.75


def test_rms_spread_is_the_root_of_the_covariance_trace():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5000, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0]) + 7.0
    expect = torch.cov(x.T, correction=0).trace().sqrt().item()
    assert abs(metrics.rms_spread(x) - expect) < 1e-9
    assert abs(metrics.rms_spread(x) - 5**0.5) < 0.05  # sqrt(1 + 4), shift-free
    with pytest.raises(ValueError, match="point set"):
        metrics.rms_spread(torch.zeros(3))

"""Image metrics of Chapter 9 on features with known answers: Frechet distance, KID,
floors and bootstrap intervals, precision / recall, class agreement, memorisation."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from dmlib import metrics


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _gaussian(n, mu, cov, seed):
    chol = torch.linalg.cholesky(cov)
    z = torch.randn(n, mu.shape[0], generator=_gen(seed), dtype=torch.float64)
    return mu + z @ chol.T


def _random_cov(f, seed):
    a = torch.randn(f, f, generator=_gen(seed), dtype=torch.float64)
    return a @ a.T / f + 0.1 * torch.eye(f, dtype=torch.float64)


# -- Frechet distance -------------------------------------------------------------------


def test_fd_of_identical_features_is_zero():
    x = torch.randn(500, 64, generator=_gen(0))
    assert abs(metrics.frechet_distance(x, x)) < 1e-6
    assert abs(metrics.frechet_distance(x, x.clone())) < 1e-6


def test_fd_gaussian_closed_form_diagonal():
    # commuting covariances: FD = |dmu|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    f64 = dict(dtype=torch.float64)
    mu1, mu2 = torch.zeros(5, **f64), torch.tensor([1.0, 0, 0, 2, 0], **f64)
    a, b = torch.tensor([1.0, 2, 3, 4, 5], **f64), torch.tensor([4.0, 1, 3, 0.5, 9], **f64)
    exact = 5.0 + float(((a.sqrt() - b.sqrt()) ** 2).sum())
    got = metrics.frechet_distance_gaussian(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(exact, rel=1e-12, abs=1e-12)


def test_fd_gaussian_matches_scipy_sqrtm_for_non_commuting_covariances():
    f = 10
    s1, s2 = _random_cov(f, 1), _random_cov(f, 2)
    mu1 = torch.randn(f, generator=_gen(3), dtype=torch.float64)
    mu2 = torch.randn(f, generator=_gen(4), dtype=torch.float64)
    r1 = scipy.linalg.sqrtm(s1.numpy()).real
    ref = float(((mu1 - mu2) ** 2).sum()) + float(
        np.trace(s1.numpy() + s2.numpy() - 2 * scipy.linalg.sqrtm(r1 @ s2.numpy() @ r1).real)
    )
    got = metrics.frechet_distance_gaussian(mu1, s1, mu2, s2)
    assert got == pytest.approx(ref, rel=1e-9)
    # symmetric in its two arguments
    assert metrics.frechet_distance_gaussian(mu2, s2, mu1, s1) == pytest.approx(got, rel=1e-9)


def test_fd_of_samples_converges_to_the_closed_form():
    f = 6
    s1, s2 = _random_cov(f, 5), _random_cov(f, 6)
    mu1, mu2 = torch.zeros(f, dtype=torch.float64), torch.full((f,), 0.3, dtype=torch.float64)
    exact = metrics.frechet_distance_gaussian(mu1, s1, mu2, s2)
    errors = []
    for n in (300, 30000):
        fd = metrics.frechet_distance(_gaussian(n, mu1, s1, 7), _gaussian(n, mu2, s2, 8))
        errors.append(abs(fd - exact))
    # measured: errors 0.17 and 0.004 for an exact value 2.1
    assert errors[1] < 0.02 * exact
    assert errors[1] < errors[0]


def test_fd_check_fails_without_the_square_roots(monkeypatch):
    # A test of the test: a square root dropped (S itself instead of S^{1/2}) is caught.
    monkeypatch.setattr(metrics, "_sqrtm_psd", lambda s: s)
    with pytest.raises(AssertionError):
        test_fd_gaussian_matches_scipy_sqrtm_for_non_commuting_covariances()


# -- KID --------------------------------------------------------------------------------


def test_kid_near_zero_for_one_law_and_positive_for_a_shift():
    a = torch.randn(1500, 32, generator=_gen(10))
    b = torch.randn(1500, 32, generator=_gen(11))
    same = metrics.kid(a, b, subsets=20, subset_size=500, generator=_gen(12))
    assert abs(same["mean"]) < same["std"]  # measured |mean| / std = 0.1
    shifted = metrics.kid(a, b + 0.5, subsets=20, subset_size=500, generator=_gen(12))
    assert shifted["mean"] > 10 * shifted["std"] > 0


def test_kid_is_the_unbiased_polynomial_mmd():
    # subsets of all rows are permutations of the sets, so KID equals the estimator
    # written out on the full sets, with std 0 over subsets
    a = torch.randn(40, 3, generator=_gen(13), dtype=torch.float64)
    b = torch.randn(30, 3, generator=_gen(14), dtype=torch.float64) + 0.2
    k = lambda u, v: (u @ v.T / 3 + 1) ** 3  # noqa: E731
    a = a[:30]
    kaa, kbb = k(a, a), k(b, b)
    ref = (
        (kaa.sum() - kaa.trace()) / (30 * 29)
        + (kbb.sum() - kbb.trace()) / (30 * 29)
        - 2 * k(a, b).mean()
    )
    got = metrics.kid(a, b, subsets=3, subset_size=100, generator=_gen(0))
    assert got["subset_size"] == 30  # cut to the sets' size
    assert got["mean"] == pytest.approx(float(ref), rel=1e-10)
    assert got["std"] < 1e-10


# -- floors and bootstrap intervals -------------------------------------------------------


def test_feature_floor_uses_disjoint_sets():
    pool = torch.arange(40, dtype=torch.float64)[:, None].repeat(1, 2)  # 40 distinct rows
    shared = lambda a, b: float(torch.isin(a[:, 0], b[:, 0]).sum())  # noqa: E731
    out = metrics.feature_floor(shared, pool, 20, draws=5, generator=_gen(0))
    assert out["values"] == [0.0] * 5
    with pytest.raises(ValueError, match="at least 2 n = 42"):
        metrics.feature_floor(shared, pool, 21, draws=5, generator=_gen(0))


def test_fd_floor_is_positive_and_matches_its_small_n_bias():
    pool = torch.randn(4000, 8, generator=_gen(20), dtype=torch.float64)
    floor = metrics.feature_floor(metrics.frechet_distance, pool, 1000, draws=8, generator=_gen(21))
    # for two N-samples of N(0, I_F), to first order in 1 / N: the means add
    # E|mu_a - mu_b|^2 = 2F / N, and the covariances, S = I + E with
    # E|E_a - E_b|_F^2 = 2 F (F + 1) / N, add |E_a - E_b|_F^2 / 4 = F (F + 1) / (2N)
    f, n = 8, 1000
    expected = 2 * f / n + f * (f + 1) / (2 * n)
    assert floor["std"] > 0
    assert floor["mean"] == pytest.approx(expected, rel=0.15)  # measured ratio 0.99


def test_bootstrap_basic_interval_covers_the_population_fd():
    f = 4
    mu2 = torch.full((f,), 0.2, dtype=torch.float64)
    eye = torch.eye(f, dtype=torch.float64)
    a = _gaussian(1000, torch.zeros(f, dtype=torch.float64), eye, 30)
    b = _gaussian(1000, mu2, 1.5 * eye, 31)
    exact = metrics.frechet_distance_gaussian(torch.zeros(f), eye, mu2, 1.5 * eye)
    out = metrics.bootstrap(metrics.frechet_distance, a, b, draws=100, generator=_gen(32))
    assert out["lo"] < exact < out["hi"]
    assert out["lo"] < out["value"] < out["hi"]
    assert out["bias"] > 0  # resampling shrinks covariances: FD moves up
    pct = metrics.bootstrap(
        metrics.frechet_distance, a, b, draws=100, method="percentile", generator=_gen(32)
    )
    assert pct["hi"] - pct["lo"] == pytest.approx(out["hi"] - out["lo"], rel=1e-12)


# -- precision / recall on features -------------------------------------------------------


def test_precision_recall_identical_and_far_apart_features():
    x = torch.randn(2000, 64, generator=_gen(40))
    same = metrics.precision_recall(x, x.clone())
    assert same == {"precision": 1.0, "recall": 1.0}
    far = metrics.precision_recall(x, torch.randn(2000, 64, generator=_gen(41)) + 100.0)
    assert far == {"precision": 0.0, "recall": 0.0}


# -- classifier verdicts ------------------------------------------------------------------


def test_class_agreement_on_crafted_logits():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]])
    labels = torch.tensor([0, 1, 2, 2])
    out = metrics.class_agreement(logits, labels)
    p_max = math.exp(5) / (math.exp(5) + 2)
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["confidence"] == pytest.approx(p_max)
    assert out["label_prob"] == pytest.approx((3 * p_max + (1 - p_max) / 2) / 4)
    probs = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
    out = metrics.class_agreement(probs, torch.tensor([1, 1]), from_logits=False)
    assert out["accuracy"] == 0.5 and out["confidence"] == pytest.approx(0.65)


def test_digit_coverage_counts_missing_classes():
    pred = torch.arange(90) % 9  # classes 0..8 evenly, class 9 never
    logits = torch.nn.functional.one_hot(pred, 10).float() * 10
    out = metrics.digit_coverage(logits)
    assert out["coverage"] == pytest.approx(0.9)
    assert out["counts"] == [10] * 9 + [0]
    assert out["evenness"] == pytest.approx(math.log(9) / math.log(10))
    uniform = metrics.digit_coverage(torch.nn.functional.one_hot(torch.arange(100) % 10, 10).float())
    assert uniform["coverage"] == 1.0 and uniform["evenness"] == pytest.approx(1.0)


# -- memorisation ---------------------------------------------------------------------------


def test_memorisation_of_copies_and_of_fresh_images():
    train = torch.rand(300, 1, 28, 28, generator=_gen(50)) * 2 - 1
    test = torch.rand(300, 1, 28, 28, generator=_gen(51)) * 2 - 1
    copies = metrics.memorisation(train[:50], train, test, chunk=16)
    assert copies["d_train_mean"] == 0.0 and copies["ratio"] == 0.0
    assert copies["closer_train"] == 1.0
    assert torch.equal(copies["train_index"], torch.arange(50))
    fresh = metrics.memorisation(torch.rand(200, 1, 28, 28, generator=_gen(52)) * 2 - 1, train, test)
    assert fresh["ratio"] == pytest.approx(1.0, abs=0.02)  # measured 1.000
    assert 0.35 < fresh["closer_train"] < 0.65


def test_memorisation_check_fails_when_distances_are_swapped(monkeypatch):
    # A test of the test: comparing to the wrong set is caught.
    orig = metrics._nearest
    calls = []

    def swapped(x, ref, chunk):
        calls.append(1)
        return orig(x, ref + (0.5 if len(calls) == 1 else 0.0), chunk)

    monkeypatch.setattr(metrics, "_nearest", swapped)
    with pytest.raises(AssertionError):
        test_memorisation_of_copies_and_of_fresh_images()


def test_memorisation_lower_tail_sees_a_few_copies_that_the_mean_hides():
    # 6% exact copies among fresh images: the mean ratio stays near 0.94, while the 1%
    # and 5% quantiles of the per-sample ratio drop to 0
    train = torch.rand(400, 1, 8, 8, generator=_gen(53)) * 2 - 1
    test = torch.rand(400, 1, 8, 8, generator=_gen(54)) * 2 - 1
    fresh = torch.rand(376, 1, 8, 8, generator=_gen(55)) * 2 - 1
    mixed = torch.cat([fresh, train[:24]])
    out = metrics.memorisation(mixed, train, test)
    assert out["ratio"] > 0.9 and out["ratio_q01"] == 0.0 and out["ratio_q05"] == 0.0
    assert out["ratios"].shape == (400,) and (out["ratios"] == 0).sum() == 24
    clean = metrics.memorisation(fresh, train, test)
    assert clean["ratio_q05"] > 0.8, clean["ratio_q05"]
    assert clean["closer_train_lo"] < 0.5 < clean["closer_train_hi"]


@pytest.mark.parametrize("k,n", [(0, 20), (3, 50), (100, 200), (199, 200), (20, 20)])
def test_memorisation_wilson_interval_matches_scipy(k, n, monkeypatch):
    # closer_train's interval against SciPy's Wilson interval for k of n samples
    from scipy.stats import binomtest

    d_tr = torch.cat([torch.zeros(k), torch.full((n - k,), 2.0)]).double()
    calls = []

    def planted(x, ref, chunk):  # first call: distances to train; second: to test
        calls.append(1)
        d = d_tr if len(calls) % 2 == 1 else torch.ones(n, dtype=torch.float64)
        return torch.zeros(n, dtype=torch.long), d

    monkeypatch.setattr(metrics, "_nearest", planted)
    x = torch.zeros(n, 3)
    for level in (0.9, 0.95):
        out = metrics.memorisation(x, torch.zeros(4, 3), torch.zeros(4, 3), level=level)
        want = binomtest(k, n).proportion_ci(level, method="wilson")
        assert out["closer_train"] == k / n
        assert out["closer_train_lo"] == pytest.approx(want.low, abs=1e-12)
        assert out["closer_train_hi"] == pytest.approx(want.high, abs=1e-12)


def test_nearest_neighbours_finds_copies_against_brute_force():
    ref = torch.rand(300, 1, 6, 6, generator=_gen(56)) * 2 - 1
    bump = 0.01 * torch.randn(5, 1, 6, 6, generator=_gen(57))
    x = torch.cat([ref[[7, 123]], ref[[40, 41, 299, 0, 5]] + bump,
                   torch.rand(3, 1, 6, 6, generator=_gen(58)) * 2 - 1])
    idx, dist = metrics.nearest_neighbours(x, ref, chunk=4)
    # brute force: every pair, plain loops
    for i in range(len(x)):
        pairs = [float((x[i].double() - r.double()).norm()) for r in ref]
        assert idx[i] == int(np.argmin(pairs)) and dist[i] == pytest.approx(min(pairs))
    assert dist[0] == 0.0 and dist[1] == 0.0  # exact copies: exactly 0
    assert torch.equal(idx[:7], torch.tensor([7, 123, 40, 41, 299, 0, 5]))
    assert torch.allclose(dist[2:7], bump.flatten(1).double().norm(dim=1))
    with pytest.raises(ValueError, match="same trailing shape"):
        metrics.nearest_neighbours(torch.zeros(2, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="level must lie in"):
        metrics.memorisation(x, ref[:3], ref[3:6], level=1.5)


# -- bad input ------------------------------------------------------------------------------


def test_bad_inputs_have_clear_messages():
    a, b = torch.randn(10, 4), torch.randn(10, 5)
    with pytest.raises(ValueError, match=r"shapes \(N, D\) and \(M, D\)"):
        metrics.frechet_distance(a, b)
    with pytest.raises(ValueError, match="at least 2 dimension"):
        metrics.frechet_distance(torch.randn(10), torch.randn(10))
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        metrics.frechet_distance(torch.randn(1, 4), a)
    with pytest.raises(ValueError, match="NaN or inf"):
        metrics.frechet_distance(torch.full((3, 4), float("nan")), a)
    with pytest.raises(ValueError, match=r"cov1 shape \(F, F\)"):
        metrics.frechet_distance_gaussian(torch.zeros(3), torch.eye(4), torch.zeros(3), torch.eye(3))
    with pytest.raises(ValueError, match="symmetric"):
        metrics.frechet_distance_gaussian(torch.zeros(2), torch.tensor([[1.0, 1], [0, 1]]),
                                          torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="shapes"):
        metrics.kid(a, b)
    with pytest.raises(ValueError, match="labels must have shape"):
        metrics.class_agreement(torch.randn(4, 10), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        metrics.class_agreement(torch.randn(2, 10), torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="probabilities"):
        metrics.class_agreement(torch.randn(2, 10), torch.tensor([0, 1]), from_logits=False)
    with pytest.raises(ValueError, match="same number of images"):
        metrics.memorisation(torch.randn(2, 4), torch.randn(5, 4), torch.randn(6, 4))
    with pytest.raises(ValueError, match="same image shape"):
        metrics.memorisation(torch.randn(2, 4), torch.randn(5, 3), torch.randn(5, 3))
    with pytest.raises(TypeError, match="must return a float"):
        metrics.bootstrap(lambda x, y: {"v": 1.0}, a, a, draws=2)


# -- image_report: the whole Chapter 9 report on one set of samples --------------------------------
class PixelFeatures(torch.nn.Module):
    """A fixed 'classifier': the first 16 pixels are the features; the class is read from
    which of the next 10 pixels is brightest."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def features(self, x):
        return x.flatten(1)[:, :16] + 0 * self.dummy

    def forward(self, x, t=None, y=None):
        return 50 * x.flatten(1)[:, 16:26]


def fake_digits(n, generator, shift=0.0):
    labels = torch.randint(0, 10, (n,), generator=generator)
    x = 0.25 * torch.randn(n, 1, 28, 28, generator=generator) + shift
    x.view(n, -1)[:, 16:26] = -0.5
    x.view(n, -1)[torch.arange(n), 16 + labels] = 0.9
    return x, labels


def test_image_report_is_at_its_floor_for_real_data_and_far_above_for_a_shift():
    g = torch.Generator().manual_seed(0)
    real, _ = fake_digits(2400, g)
    same, labels = fake_digits(800, g)
    clf = PixelFeatures()
    r = metrics.image_report(same, clf, real, labels=labels, floor_draws=10, generator=g)
    assert r["fd_ratio_lo"] < 1.0 < r["fd_ratio_hi"] and 0.6 < r["fd_ratio"] < 1.5, r
    assert r["accuracy"] == 1.0 and r["coverage"] == 1.0 and r["confidence"] > 0.99
    assert r["n"] == 800 and r["fd_lo"] < r["fd"] < r["fd_hi"]
    shifted, _ = fake_digits(800, g, shift=0.1)
    far = metrics.image_report(shifted, clf, real, generator=g)
    # the mean term alone is 16 * 0.1^2 = 0.16, far above the floor (about 2F/N * 0.25^2)
    assert far["fd_ratio_lo"] > 5 and far["kid"] > 5 * far["kid_std"] > 0 and "accuracy" not in far
    assert abs(far["fd"] - 0.16) < 0.05
    with pytest.raises(ValueError, match="at least 3 N = 2400"):
        metrics.image_report(same, clf, real[:2000])
    with pytest.raises(TypeError, match="features"):
        metrics.features(torch.nn.Linear(2, 2), same)


def test_reporter_measures_every_set_alike_whatever_came_before():
    g = torch.Generator().manual_seed(0)
    real, _ = fake_digits(1200, g)
    a, labels = fake_digits(300, g)
    b, _ = fake_digits(300, g, shift=0.1)
    clf = PixelFeatures()
    report = metrics.reporter(clf, real, floor_draws=3, bootstrap_draws=5, kid_subsets=3)
    first = report(a, labels=labels)
    report(b)  # a report in between must not change the next one
    again = report(a, labels=labels)
    assert first == again
    direct = metrics.image_report(a, clf, real, labels=labels, floor_draws=3,
                                  bootstrap_draws=5, kid_subsets=3,
                                  generator=torch.Generator().manual_seed(2))
    assert direct == first
    assert report(a, seed=5) != report(a)  # the seed is used
    with pytest.raises(TypeError, match="unknown image_report settings"):
        metrics.reporter(clf, real, bootstrap=5)


def test_ink_and_interval_overlap():
    x = torch.full((2, 1, 4, 4), -1.0)
    x[:, :, :2] = 1.0  # half the pixels white
    assert metrics.ink(x) == 0.5
    assert metrics.ink(3 * x) == 0.5  # values outside [-1, 1] are clipped
    a = {"fd_ratio_lo": 1.0, "fd_ratio_hi": 2.0}
    assert metrics.intervals_overlap(a, {"fd_ratio_lo": 1.9, "fd_ratio_hi": 3.0})
    assert not metrics.intervals_overlap(a, {"fd_ratio_lo": 2.1, "fd_ratio_hi": 3.0})
    assert not metrics.intervals_overlap({"fd_ratio_lo": 2.1, "fd_ratio_hi": 3.0}, a)
    assert metrics.intervals_overlap({"kid_lo": 0, "kid_hi": 1}, {"kid_lo": 0.5, "kid_hi": 2},
                                     key="kid")
    with pytest.raises(KeyError, match="interval of 'fd_ratio'"):
        metrics.intervals_overlap(a, {"fd": 1.0})

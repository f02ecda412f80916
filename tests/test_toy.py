"""dmlib.toy: 2D datasets and Gaussian mixtures (sampling, densities, the denoiser protocol)."""

import math

import pytest
import torch

from dmlib import run, schedules, toy

Z = 5.0  # Monte-Carlo tolerances in standard errors (fixed seeds; see test_math_identities)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# -- sample_2d ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", toy.DATASETS)
def test_sample_2d_shape_and_scale(name):
    x = toy.sample_2d(name, 4000, seed=0)
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    # "mean about 0, spread about 1" (loose: per-coordinate std measured between 0.74 and 1.30)
    assert x.mean(0).abs().max() < 0.1
    std = x.std(0)
    assert ((std > 0.6) & (std < 1.5)).all(), std
    assert x.abs().max() < 4


@pytest.mark.parametrize("name", toy.DATASETS)
def test_sample_2d_seeds(name):
    a = toy.sample_2d(name, 300, seed=1)
    assert torch.equal(a, toy.sample_2d(name, 300, seed=1))
    assert not torch.equal(a, toy.sample_2d(name, 300, seed=2))


@pytest.mark.parametrize("name", ["moons", "8gaussians"])
def test_sample_2d_global_seed_and_generator(name):
    run.set_seed(5)
    a = toy.sample_2d(name, 100)
    run.set_seed(5)
    assert torch.equal(a, toy.sample_2d(name, 100))  # seed=None follows torch's global generator
    assert not torch.equal(a, toy.sample_2d(name, 100))  # ... which then moves on
    g1, g2 = _gen(9), _gen(9)
    assert torch.equal(toy.sample_2d(name, 100, generator=g1), toy.sample_2d(name, 100, generator=g2))


def check_iid_counts(name, n=12, n_draws=1500):
    """The draws of sample_2d are i.i.d.: half-plane counts have the binomial variance.

    For i.i.d. points the number that fall in a fixed half-plane H is Binomial(n, p), with
    variance n p (1 - p). A sampler that spreads its points evenly over the data (one half on
    each moon, angles on a grid, as scikit-learn's make_moons does) has far smaller variance,
    and a data-vs-data distance (Section 2.6) that no i.i.d. sampler can match.
    """
    x = torch.stack([toy.sample_2d(name, n, seed=s) for s in range(n_draws)]).double()  # (draws, n, 2)
    for direction in ([1.0, 0.0], [0.0, 1.0], [1.0, 1.0]):
        inside = (x @ torch.tensor(direction, dtype=torch.float64) > 0.05).sum(1).double()  # (draws,)
        p = inside.sum().item() / (n * n_draws)
        ratio = inside.var().item() / (n * p * (1 - p))
        # the sample variance over 1500 draws has relative standard error about sqrt(2/1500) = 3.7 %
        assert 0.8 < ratio < 1.2, f"{name}: half-plane count variance is {ratio:.2f} x binomial along {direction}"


@pytest.mark.parametrize("name", toy.DATASETS)
def test_sample_2d_is_iid(name):
    check_iid_counts(name)


def test_sample_2d_8gaussians_matches_mixture():
    # "8gaussians" is the mixture behind GaussianMixture.eight_gaussians(): same second moments
    n = 40_000
    x = toy.sample_2d("8gaussians", n, seed=0).double()
    gm = toy.GaussianMixture.eight_gaussians()
    r2 = (x**2).sum(1)
    expected = (2 / 1.42) ** 2 + 2 * (0.1 / 1.42) ** 2  # E|x|^2 = radius^2 + D std^2
    assert abs(r2.mean().item() - expected) < Z * r2.std().item() / math.sqrt(n)
    # every point sits near one of the mixture's eight means
    d = torch.cdist(x, gm.means).min(1).values
    assert d.max() < 6 * 0.1 / 1.42


# -- GaussianMixture --------------------------------------------------------------------------------
def make_mixture():
    means = [[-1.5, 0.5], [1.0, 1.0], [0.5, -1.2]]
    covs = [[[0.30, 0.12], [0.12, 0.20]], [[0.10, -0.05], [-0.05, 0.25]], [[0.40, 0.00], [0.00, 0.05]]]
    return toy.GaussianMixture(means, covs, weights=[0.5, 0.3, 0.2], labels=[0, 1, 1])


def test_mixture_attributes():
    gm = make_mixture()
    assert (gm.dim, gm.n_components, gm.n_classes) == (2, 3, 2)
    torch.testing.assert_close(gm.weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    gm2 = toy.GaussianMixture(torch.zeros(2, 3), stds=torch.tensor([0.5, 2.0]), weights=[2.0, 6.0])
    torch.testing.assert_close(gm2.weights, torch.tensor([0.25, 0.75], dtype=torch.float64))  # normalised
    torch.testing.assert_close(gm2.covs[1], 4.0 * torch.eye(3, dtype=torch.float64))  # stds -> isotropic covs


def test_mixture_sample_moments():
    gm = make_mixture()
    n = 100_000
    x, labels = gm.sample(n, generator=_gen(0), return_labels=True)
    assert x.shape == (n, 2) and x.dtype == torch.float32 and labels.shape == (n,)
    x = x.double()
    pi, mu = gm.weights, gm.means
    m = pi @ mu
    C = torch.einsum("k,kij->ij", pi, gm.covs + mu[:, :, None] * mu[:, None, :]) - torch.outer(m, m)
    assert ((x.mean(0) - m).abs() < Z * x.std(0) / math.sqrt(n)).all()
    d = x - m
    prods = d[:, :, None] * d[:, None, :]
    assert ((prods.mean(0) - C).abs() < Z * prods.std(0) / math.sqrt(n)).all()
    # component frequencies: label 0 is component 0 (weight 0.5); SE sqrt(p (1 - p) / n)
    p0 = (labels == 0).double().mean().item()
    assert abs(p0 - 0.5) < Z * math.sqrt(0.25 / n)


def test_mixture_sample_reproducible():
    gm = make_mixture()
    assert torch.equal(gm.sample(50, generator=_gen(3)), gm.sample(50, generator=_gen(3)))
    assert not torch.equal(gm.sample(50, generator=_gen(3)), gm.sample(50, generator=_gen(4)))


def _grid(lim, n):
    c = torch.linspace(-lim, lim, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], 1), (c[1] - c[0]).item()


@pytest.mark.parametrize("t, schedule", [(None, None), (0.5, schedules.LinearSchedule()),
                                         (0.3, schedules.VESchedule()), (0.9, schedules.FlowSchedule())])
def test_log_prob_integrates_to_one(t, schedule):
    # Riemann sum on a 0.025 grid over [-7, 7]^2: the smallest std (0.05^0.5 = 0.22) spans ~9
    # points, so the sum is accurate to far below 1e-4; the mass outside the box is < 1e-6.
    x, h = _grid(7.0, 561)
    p = make_mixture().log_prob(x, t, schedule).exp()
    assert abs(p.sum().item() * h * h - 1) < 1e-4


def test_log_prob_dtype_and_classes():
    gm = make_mixture()
    x = torch.randn(10, 2, generator=_gen(0))
    lp = gm.log_prob(x)
    assert lp.shape == (10,) and lp.dtype == torch.float32
    # With y, log_prob is the joint log p(x, y) (the class's components with their unnormalised
    # weights), so the classes sum to the marginal: p(x) = sum_c p(x, c).
    x64 = x.double()
    lp0, lp1 = gm.log_prob(x64, y=0), gm.log_prob(x64, y=1)
    torch.testing.assert_close(torch.logaddexp(lp0, lp1), gm.log_prob(x64), rtol=1e-12, atol=1e-12)


def test_log_prob_with_y_is_the_joint_density():
    # Integrates to the class's prior weight p(y) (0.3 + 0.2 for class 1), not to 1: log_prob(x, y=c)
    # is log p(x, y=c), so log p(y | x) = log_prob(x, y=c) - log_prob(x). (Undocumented in dmlib.)
    x, h = _grid(7.0, 561)
    p = make_mixture().log_prob(x, 0.2, schedules.CosineSchedule(), y=1).exp()
    assert abs(p.sum().item() * h * h - 0.5) < 1e-4


def test_class_conditional_sampling():
    # well-separated components: each sample can be traced back to its component
    gm = toy.GaussianMixture([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, -4.0]], stds=torch.full((4,), 0.3),
                             labels=[0, 1, 1, 2])
    for y in range(3):
        x, labels = gm.sample(500, y=y, generator=_gen(y), return_labels=True)
        assert (labels == y).all()
        nearest = torch.cdist(x.double(), gm.means).argmin(1)
        assert (gm.labels[nearest] == y).all()
    x, labels = gm.sample(400, y=1, generator=_gen(7), return_labels=True)
    both = torch.cdist(x.double(), gm.means).argmin(1)
    assert set(both.tolist()) == {1, 2}  # class 1 has two components; both are used
    # one label per sample
    y = torch.tensor([0, 2, 2, 1])
    _, labels = gm.sample(4, y=y, generator=_gen(1), return_labels=True)
    assert torch.equal(labels, y)


def test_class_conditional_score_differs():
    gm = make_mixture()
    sch = schedules.CosineSchedule()
    x = torch.zeros(3, 2, dtype=torch.float64)
    s_all, s0, s1 = gm.score(x, 0.3, sch), gm.score(x, 0.3, sch, y=0), gm.score(x, 0.3, sch, y=1)
    assert not torch.allclose(s0, s1) and not torch.allclose(s_all, s0)
    # class 0 has a single Gaussian component: its score is linear, -C^{-1} (x - alpha mu)
    a, s = (c.item() for c in sch.alpha_sigma(0.3))
    C = a**2 * gm.covs[0] + s**2 * torch.eye(2, dtype=torch.float64)
    ref = -torch.linalg.solve(C, (x - a * gm.means[0]).T).T
    torch.testing.assert_close(s0, ref, rtol=1e-12, atol=1e-12)


def test_score_and_posterior_mean_dtype():
    gm = make_mixture()
    sch = schedules.LinearSchedule()
    x = torch.randn(5, 2, generator=_gen(0))
    for out in (gm.score(x, 0.5, sch), gm.posterior_mean(x, 0.5, sch)):
        assert out.shape == (5, 2) and out.dtype == torch.float32
    t = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])  # one time per sample
    torch.testing.assert_close(gm.score(x, t, sch)[2], gm.score(x[2:3], 0.3, sch)[0], rtol=1e-5, atol=1e-5)


def test_posterior_mean_limits():
    gm = make_mixture()
    sch = schedules.CosineSchedule()
    x = torch.randn(6, 2, generator=_gen(1), dtype=torch.float64)
    # t -> 0: x_t is x_0, so E[x_0 | x_t] = x_t
    torch.testing.assert_close(gm.posterior_mean(x, 1e-6, sch), x, rtol=0, atol=1e-3)
    # t = 1: x_t says almost nothing (alpha_1 = 0.01 with the cosine floor), so E[x_0 | x_t]
    # is the mixture's mean up to O(alpha_1 |x| Var(x_0)); exact with a schedule whose alpha_1 = 0
    m = gm.weights @ gm.means
    torch.testing.assert_close(gm.posterior_mean(x, 1.0, sch), m.expand(6, 2), rtol=0, atol=0.1)
    torch.testing.assert_close(gm.posterior_mean(x, 1.0, schedules.FlowSchedule()), m.expand(6, 2), rtol=0, atol=1e-12)


def test_denoiser_protocol():
    gm = make_mixture()
    sch = schedules.CosineSchedule()
    x = torch.randn(7, 2, generator=_gen(0))
    for kind in ("eps", "x0", "v", "score", "velocity"):
        model = gm.denoiser(sch, kind)
        assert callable(model) and model.prediction == kind and model.schedule is sch
        assert kind in repr(model)
        out = model(x, 0.4)
        assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
        out_y = model(x, torch.full((7,), 0.4), y=torch.ones(7, dtype=torch.long))
        assert not torch.allclose(out, out_y)  # y selects class 1's components
        torch.testing.assert_close(out_y, model(x, 0.4, 1))  # positional y, scalar label
    torch.testing.assert_close(gm.denoiser(sch, "x0")(x, 0.4), gm.posterior_mean(x, 0.4, sch))
    assert gm.denoiser(sch).prediction == "eps"  # default


def test_denoiser_schedule_type_checked():
    with pytest.raises(TypeError, match="schedule must be"):
        make_mixture().denoiser("cosine")


def test_eight_gaussians():
    gm = toy.GaussianMixture.eight_gaussians()
    assert gm.n_components == 8 and gm.n_classes == 8
    torch.testing.assert_close(gm.means.norm(dim=1), torch.full((8,), 2 / 1.42, dtype=torch.float64))
    torch.testing.assert_close(gm.covs[3], (0.1 / 1.42) ** 2 * torch.eye(2, dtype=torch.float64))


# -- class_log_posterior ----------------------------------------------------------------------------
def _posterior_by_scipy(gm, x, t, schedule):
    """log p_t(y | x) from scipy's Gaussian densities, component by component (independent of dmlib)."""
    from scipy.stats import multivariate_normal

    a, s = (1.0, 0.0) if t is None else (c.item() for c in schedule.alpha_sigma(t))
    dens = torch.stack([torch.as_tensor(multivariate_normal(
        (a * gm.means[k]).numpy(), (a**2 * gm.covs[k] + s**2 * torch.eye(gm.dim, dtype=torch.float64)).numpy()
    ).pdf(x.numpy())) for k in range(gm.n_components)], 1)  # (B, K)
    joint = dens * gm.weights  # pi_k N_k(x)
    by_class = torch.stack([joint[:, gm.labels == c].sum(1) for c in range(gm.n_classes)], 1)  # (B, C)
    return (by_class / joint.sum(1, keepdim=True)).log()


@pytest.mark.parametrize("t, schedule", [(None, None), (0.0, schedules.CosineSchedule()),
                                         (0.4, schedules.LinearSchedule()), (0.7, schedules.VESchedule()),
                                         (0.5, schedules.FlowSchedule())])
def test_class_log_posterior_matches_an_independent_bayes_rule(t, schedule):
    gm = make_mixture()  # unequal weights, full covariances, class 1 has two components
    x = 1.5 * torch.randn(50, 2, generator=_gen(2), dtype=torch.float64)
    got = gm.class_log_posterior(x, t, schedule)
    assert got.shape == (50, gm.n_classes) and got.dtype == torch.float64
    torch.testing.assert_close(got, _posterior_by_scipy(gm, x, t, schedule), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got.logsumexp(1), torch.zeros(50, dtype=torch.float64), rtol=0, atol=1e-12)
    # planted bugs: forgetting the weights, or normalising each class's components on its own
    # (the class-conditional density instead of the posterior) gives a different answer
    flat = toy.GaussianMixture(gm.means, gm.covs, labels=gm.labels)
    assert not torch.allclose(flat.class_log_posterior(x, t, schedule), got, atol=1e-3)
    cond = torch.stack([gm.log_prob(x, t, schedule, y=c) for c in range(gm.n_classes)], 1)
    assert not torch.allclose(cond, got, atol=1e-3)


def test_class_log_posterior_dtype_device_and_gradient():
    gm, sch = make_mixture(), schedules.CosineSchedule()
    x = torch.randn(8, 2, generator=_gen(4))
    assert gm.class_log_posterior(x, 0.3, sch).dtype == torch.float32
    t = torch.linspace(0.1, 0.8, 8)  # one time per sample
    one = gm.class_log_posterior(x[5:6], t[5].item(), sch)[0]
    torch.testing.assert_close(gm.class_log_posterior(x, t, sch)[5], one)
    # Bayes' rule for scores (Chapter 6): grad log p_t(y | x) = score(x, y) - score(x)
    x64 = x.double().requires_grad_(True)
    grad = torch.autograd.grad(gm.class_log_posterior(x64, 0.3, sch)[:, 1].sum(), x64)[0]
    torch.testing.assert_close(grad, gm.score(x.double(), 0.3, sch, y=1) - gm.score(x.double(), 0.3, sch))
    with pytest.raises(TypeError, match="schedule"):
        gm.class_log_posterior(x, 0.3)  # a time without a schedule


# -- data_sampler ------------------------------------------------------------------------------------
def test_data_sampler_draws_what_its_source_draws():
    gm = make_mixture()
    for source, direct in [("moons", lambda n, g: toy.sample_2d("moons", n, generator=g)),
                           (gm, lambda n, g: gm.sample(n, generator=g))]:
        sampler = toy.data_sampler(source)
        x = sampler(64, _gen(3))
        assert x.shape == (64, 2) and x.dtype == torch.float32
        assert torch.equal(x, direct(64, _gen(3)))  # the same generator calls: the same points
        assert not torch.equal(x, sampler(64, _gen(4)))
    by_class = toy.data_sampler(gm, y=1)
    assert torch.equal(by_class(30, _gen(5)), gm.sample(30, y=1, generator=_gen(5)))
    assert "moons" in repr(toy.data_sampler("moons")) and "y=1" in repr(by_class)


def test_data_sampler_feeds_floor_ratio_and_its_cache():
    from dmlib import metrics

    sampler = toy.data_sampler("8gaussians")
    x = toy.sample_2d("8gaussians", 200, seed=1)
    first = metrics.floor_ratio("w2", x, sampler)
    assert metrics.floor_ratio("w2", x, sampler) == first  # cached per sampler object
    assert first == metrics.floor_ratio("w2", x, lambda n, g: toy.sample_2d("8gaussians", n, generator=g))


def test_data_sampler_rejects_bad_sources():
    with pytest.raises(ValueError, match="source"):
        toy.data_sampler("spirals")
    with pytest.raises(TypeError, match="source must be"):
        toy.data_sampler(torch.zeros(10, 2))
    with pytest.raises(ValueError, match="y selects"):
        toy.data_sampler("moons", y=0)
    with pytest.raises(ValueError, match="y must lie"):
        toy.data_sampler(make_mixture(), y=5)


# -- random draws go through dmlib.noise, and draw what they drew before ----------------------------
def test_mixture_sample_draws_the_same_numbers_as_plain_torch():
    gm = make_mixture()
    g = _gen(8)
    x, labels = gm.sample(40, generator=g, return_labels=True)
    g_ref = _gen(8)  # what GaussianMixture.sample did before dmlib.noise: the same calls in order
    k = torch.multinomial(gm.weights.expand(40, -1), 1, generator=g_ref).squeeze(1)
    z = torch.randn(40, 2, generator=g_ref, dtype=torch.float64)
    ref = (gm.means[k] + torch.einsum("nij,nj->ni", torch.linalg.cholesky(gm.covs)[k], z)).float()
    assert torch.equal(labels, gm.labels[k]) and torch.equal(x, ref)
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=g_ref))  # same state after


def test_sample_2d_seeds_numpy_as_before():
    # the NumPy seed is one torch.randint draw from the generator, as before dmlib.noise
    g, g_ref = _gen(12), _gen(12)
    x = toy.sample_2d("8gaussians", 20, generator=g)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g_ref).item())
    assert torch.equal(x, toy.sample_2d("8gaussians", 20, seed=seed))
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=g_ref))

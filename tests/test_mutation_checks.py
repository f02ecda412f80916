"""Checks tight enough to catch the single-line bugs a mutation run found the other tests miss.

Each ``check_*`` function raises AssertionError when its identity fails, and looks dmlib's
functions up at call time (``samplers.euler_maruyama_step`` -> ``samplers._euler_maruyama``,
``losses.flow_matching_loss``, ``train.train``, ...), so ``test_planted_bugs.py`` can plant
each of these bugs into dmlib and show that the very same check then fails:

* the reverse SDE's drift with g instead of g^2 (``check_reverse_sde_marginals``);
* DDIM's eta applied as eta^2 (``check_ddim_step_noise``);
* classifier guidance ignoring its scale w (``check_classifier_guidance_scale``);
* flow matching ignoring ``coupling="ot"`` (``check_flow_matching_ot_coupling``);
* the EMA's decay and 1 - decay swapped (``check_ema_is_the_exponential_average``);
* the metrics against closed forms for Gaussians (``check_sliced_wasserstein_gaussians``,
  ``check_mmd_gaussians``).

Monte-Carlo comparisons use fixed seeds and Z = 5 standard errors (``test_math_identities.Z``);
the comment at each check gives the largest deviation measured on the real dmlib.
"""

import math

import pytest
import torch
from scipy.optimize import linear_sum_assignment

import test_math_identities as ids
from dmlib import diffusion as D
from dmlib import guidance, losses, metrics, samplers, toy
from dmlib import schedules as S
from dmlib import train as T
from dmlib.nn import MLP

Z = ids.Z
MIX = ids.make_mixture()  # 3 components, full covariances, unequal weights, classes [0, 1, 1]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _coeffs(schedule, t):
    a, s = schedule.alpha_sigma(torch.tensor(float(t), dtype=torch.float64))
    return a.item(), s.item()


def _mixture_moments(mixture):
    """Mean (D,) and covariance (D, D) of the clean mixture, in closed form."""
    w, mu, cov = mixture.weights, mixture.means, mixture.covs
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
    return mean, second - torch.outer(mean, mean)


def _assert_marginal(x, mixture, schedule, t, what):
    """x ~ p_t, the noised mixture: its mean alpha_t m and covariance alpha_t^2 C + sigma_t^2 I.

    Mean per coordinate (SE from the sample variance), and the three second moments E[r_i r_j]
    of r = x - alpha_t m (SE from the sample standard deviation of r_i r_j).
    """
    n = x.shape[0]
    m, C = _mixture_moments(mixture)
    a, s = _coeffs(schedule, t)
    mean, cov = a * m, a**2 * C + s**2 * torch.eye(mixture.dim, dtype=torch.float64)
    ids._assert_within(x.mean(0), mean, (x.var(0) / n).sqrt(), f"{what}: mean at t={t:.2f}")
    r = x.double() - mean
    prods = r[:, [0, 1, 0]] * r[:, [0, 1, 1]]  # r_1^2, r_2^2, r_1 r_2
    target = torch.stack([cov[0, 0], cov[1, 1], cov[0, 1]])
    ids._assert_within(prods.mean(0), target, prods.std(0) / math.sqrt(n), f"{what}: covariance at t={t:.2f}")


def _exact_p1(mixture, schedule, n, g):
    """Exact samples of p_1: q_sample of mixture samples at t = 1."""
    return D.q_sample(mixture.sample(n, generator=g).double(), 1.0, schedule, generator=g)


# ================================================================================================
# 1. the reverse SDE: Euler-Maruyama with the exact score keeps p_t at every time
# ================================================================================================
def check_reverse_sde_marginals(schedule, *, n=3000, T_steps=100, at=(30, 60, 90), seed=0):
    """Euler-Maruyama steps of the reverse SDE from exact samples of p_1, driven by the exact
    mixture score, on the grid t_k = 1 - k / T_steps: at t = 0.7, 0.4, 0.1 the samples have the
    noised mixture's mean and covariance.

    The only error is the discretisation, O(1 / T_steps). Measured on the real dmlib (seed 0):
    at most 1.9 (linear) and 2.4 (cosine) standard errors over the 15 comparisons; over seeds
    0-2 at most 3.3. With g in place of g^2 in the drift the variances are already off by
    ~40 SE at t = 0.7 (36 against 1.0).
    """
    g = _gen(seed)
    x = _exact_p1(MIX, schedule, n, g)
    for k in range(1, max(at) + 1):
        t, s = 1 - (k - 1) / T_steps, 1 - k / T_steps
        x = samplers.euler_maruyama_step(x, MIX.score(x, t, schedule), t, s, schedule, generator=g)
        if k in at:
            _assert_marginal(x, MIX, schedule, s, "reverse SDE (Euler-Maruyama)")


# ================================================================================================
# 2. DDIM with eta in (0, 1): one step's fresh noise, and the marginals along a trajectory
# ================================================================================================
def check_ddim_step_noise(schedule, eta, *, t=0.6, s=0.45, n=20_000, seed=0):
    """One DDIM step from one x_t, repeated n times with the same x0_hat, is Gaussian with

        mean  alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat,   eps_hat = (x_t - alpha_t x0_hat) / sigma_t,
        var   c^2 = eta^2 var(x_s | x_t, x_0),  var(x_s | x_t, x_0) = sigma_{t|s}^2 sigma_s^2 / sigma_t^2,

    with alpha_{t|s} = alpha_t / alpha_s, sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2,
    all written here from alpha_sigma (not from D.posterior). SE of the mean sqrt(c^2 / n), of
    the variance c^2 sqrt(2 / n). Measured on the real dmlib: at most 1.6 SE (the same z for
    every eta and schedule: the same normal draws, scaled). With eta^2 for eta the variance is
    off by 35-94 SE and the mean by 3-23 SE (cosine, eta = 0.5: the mean by 16 SE).
    """
    g = _gen(seed)
    x_t = torch.tensor([[0.3, -0.8]], dtype=torch.float64)
    x0_hat = MIX.posterior_mean(x_t, t, schedule)
    a_t, sig_t = _coeffs(schedule, t)
    a_s, sig_s = _coeffs(schedule, s)
    var_ts = sig_t**2 - (a_t / a_s) ** 2 * sig_s**2
    c2 = eta**2 * var_ts * sig_s**2 / sig_t**2
    eps_hat = (x_t - a_t * x0_hat) / sig_t
    mean = (a_s * x0_hat + math.sqrt(sig_s**2 - c2) * eps_hat)[0]
    x_s = samplers.ddim_step(x_t.expand(n, 2), x0_hat.expand(n, 2), t, s, schedule, eta=eta, generator=g)
    ids._assert_within(x_s.mean(0), mean, math.sqrt(c2 / n), f"DDIM(eta={eta}) step: mean")
    ids._assert_within(((x_s - mean) ** 2).mean(0), c2, c2 * math.sqrt(2 / n), f"DDIM(eta={eta}) step: noise variance")


def check_ddim_marginals(schedule, eta, *, n=3000, T_steps=100, at=(30, 60, 90), seed=0):
    """sample(method="ddim", eta) with the exact denoiser from exact samples of p_1 keeps the
    noised mixture's mean and covariance at t = 0.7, 0.4, 0.1 (every eta in [0, 1] gives a
    sampler with the marginals p_t; so this check cannot see eta^2 for eta -- the step check
    does -- but it sees any step that leaves the family). Measured on the real dmlib at
    eta = 0.5: at most 3.6 (linear) and 3.0 (cosine) standard errors, the 100-step grid's
    discretisation bias included.
    """
    g = _gen(seed)
    x = _exact_p1(MIX, schedule, n, g)
    times = torch.tensor([1 - k / T_steps for k in range(max(at) + 1)], dtype=torch.float64)
    _, traj = samplers.sample(MIX.denoiser(schedule), x, schedule, method="ddim", eta=eta, times=times,
                              generator=g, return_trajectory=True)
    for k in at:
        _assert_marginal(traj[k], MIX, schedule, times[k].item(), f"DDIM(eta={eta}) trajectory")


# ================================================================================================
# 3. classifier guidance: the exact tilted score for any w
# ================================================================================================
def bayes_classifier(schedule):
    """The exact noisy classifier: logits log p_t(y | x) of MIX, a callable (x, t) -> (B, C)."""
    return lambda x, t: MIX.class_log_posterior(x, t, schedule)


def check_classifier_guidance_scale(schedule, w, *, t=0.4):
    """ClassifierGuidance(denoiser, Bayes classifier, w) = score_t(x) + w grad_x log p_t(y | x),

    the gradient by autograd of GaussianMixture.class_log_posterior; and that oracle equals
    (1 - w) score_t(x) + w score_t(x | y) (Bayes' rule), to 1e-10. Exact arithmetic in
    float64: measured error on the real dmlib at most 4e-14 (tolerance 1e-8). The classifier
    term is not small here (max |grad| = 5.2 cosine, 1.3 linear, at t = 0.4), so w ignored
    (score + grad) is off by |1 - w| max |grad|: 2.6 at w = 0.5 (cosine), 2.5 at w = 3 (linear).
    """
    x = ids._noised_points(MIX, schedule, t, n=100, seed=5)
    y = torch.arange(x.shape[0]) % MIX.n_classes
    tt = torch.full((x.shape[0],), t, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    logp = MIX.class_log_posterior(xg, tt, schedule)
    grad = torch.autograd.grad(logp[torch.arange(x.shape[0]), y].sum(), xg)[0]
    score = MIX.score(x, t, schedule)
    expected = score + w * grad
    torch.testing.assert_close(expected, (1 - w) * score + w * MIX.score(x, t, schedule, y=y), rtol=1e-10, atol=1e-10)
    assert grad.abs().max() > 0.5, "the classifier term must matter at these points"
    guided = guidance.ClassifierGuidance(MIX.denoiser(schedule, "eps"), bayes_classifier(schedule), schedule, w=w)
    got = guided(x, tt, y)
    err = (got - expected).abs().max().item()
    assert err < 1e-8, f"classifier guidance at w={w}: off the tilted score by {err:.3g}"


# ================================================================================================
# 4. flow matching with coupling="ot": the loss sees OT-paired (x0, eps)
# ================================================================================================
class _Recorder(torch.nn.Module):
    """A velocity 'model' that records its inputs (x_t, t) and returns zeros."""

    prediction = "velocity"

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x_t, t, y=None):
        self.seen.append((x_t.detach().clone(), t.detach().clone()))
        return torch.zeros_like(x_t)


def _pairs_seen(coupling, x0, seed):
    """The noise paired with each x0_i inside flow_matching_loss(coupling): eps = (x_t - (1 - t) x0) / t."""
    model = _Recorder()
    losses.flow_matching_loss(coupling=coupling, t_min=0.1)(model, x0, None, _gen(seed))
    x_t, t = model.seen[0]
    a, s = (c.double()[:, None] for c in S.FlowSchedule().alpha_sigma(t))  # 1 - t, t as the loss computed them
    return (x_t - a * x0) / s


def check_flow_matching_ot_coupling(*, n=128, seed=3):
    """flow_matching_loss(coupling="ot") pairs x0 with a permutation of the noise it draws
    that minimises the batch's total squared distance (the assignment solved here with scipy).

    The drawn noise is redrawn from the same seed (t first, then eps, as the loss draws them);
    coupling="independent" must see exactly that noise, which validates the recovery. Float64
    data: the recovered noise matches the drawn one to ~1e-15. Measured: independent pairs cost
    |x0 - eps|^2 = 4.66 per pair, the optimal assignment 0.548, which the loss's pairs reach to
    1e-9 (relative); with "ot" ignored they cost 4.66.
    """
    x0 = MIX.sample(n, generator=_gen(seed + 100)).double()
    g = _gen(seed)
    _ = torch.rand(n, generator=g)  # the times, drawn first
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(_pairs_seen("independent", x0, seed), eps, rtol=0, atol=1e-9)
    paired = _pairs_seen("ot", x0, seed)
    # the same noise vectors, each used once: a permutation of eps
    dist = torch.cdist(paired, eps, compute_mode="donot_use_mm_for_euclid_dist").min(1)
    assert (dist.values < 1e-9).all() and len(set(dist.indices.tolist())) == n, \
        "the OT coupling must re-pair the drawn noise, not draw new noise"
    cost = ((x0 - paired) ** 2).sum(1).mean().item()
    c = (torch.cdist(x0, eps, compute_mode="donot_use_mm_for_euclid_dist") ** 2).numpy()
    rows, cols = linear_sum_assignment(c)
    optimum, independent = c[rows, cols].mean(), ((x0 - eps) ** 2).sum(1).mean().item()
    assert optimum < 0.5 * independent  # the coupling must matter on this batch
    assert abs(cost - optimum) < 1e-9 * independent, (
        f"coupling='ot': the loss's pairs cost {cost:.4f} per pair, the optimal assignment "
        f"{optimum:.4f} (independent pairs {independent:.4f})")


# ================================================================================================
# 5. the training loop's EMA: the exponential average of the weight trajectory
# ================================================================================================
def check_ema_is_the_exponential_average(ema_decay=0.7, *, steps=30):
    """After each optimiser step k = 0, 1, ... the loop sets

        ema <- decay_k ema + (1 - decay_k) theta_{k+1},   decay_k = min(ema_decay, (1 + k) / (10 + k)),

    from ema = theta_0 (the initial weights). The weights theta_k are recorded at each call of
    the loss (before step k) and theta_steps is the returned model; the average is recomputed
    here in float64. With ema_decay = 0.7 and 30 steps both branches of the min are used (the
    cap from k = 20 on); 0.5 would be a poor choice, where swapping decay and 1 - decay changes
    nothing once the cap is reached. Measured on the real dmlib: agreement to 7e-8 (0.7) and
    5e-8 (0.95), float32 lerp, against a tolerance of 1e-6; the swapped EMA is off by 5.5e-3
    (0.7) and 8.1e-3 (0.95).
    """
    trajectory, base = [], losses.diffusion_loss(S.CosineSchedule())

    def recording_loss(model, x0, y, g):
        trajectory.append([p.detach().double().clone() for p in model.parameters()])
        return base(model, x0, y, g)

    torch.manual_seed(11)
    config = T.TrainConfig(steps=steps, batch_size=32, lr=3e-2, warmup=1, ema_decay=ema_decay, grad_clip=None,
                           log_every=steps, progress=False, device="cpu", seed=2)
    data = lambda n, g: MIX.sample(n, generator=g)  # noqa: E731
    res = T.train(MLP(hidden=8, depth=1), recording_loss, data, config)
    trajectory.append([p.detach().double() for p in res.model.parameters()])
    assert len(trajectory) == steps + 1
    ema = [p.clone() for p in trajectory[0]]
    for k in range(steps):
        decay = min(ema_decay, (1 + k) / (10 + k))
        ema = [decay * e + (1 - decay) * p for e, p in zip(ema, trajectory[k + 1])]
    got = [p.detach().double() for p in res.ema.parameters()]
    err = max((a - b).abs().max().item() for a, b in zip(got, ema))
    moved = max((a - b).abs().max().item() for a, b in zip(ema, trajectory[-1]))
    assert moved > 1e-3, "the weights must move for the EMA to be tested"
    assert err < 1e-6, (f"EMA(decay={ema_decay}) after {steps} steps: off the exponential average "
                        f"of the weights by {err:.3g} (EMA to final weights: {moved:.3g})")


# ================================================================================================
# 6. metrics against closed forms for Gaussians
# ================================================================================================
def check_sliced_wasserstein_gaussians(*, n=2000, s1=1.0, s2=3.0, seed=0):
    """SW between N(0, s1^2 I) and N(0, s2^2 I) is |s1 - s2| (every projection: N(0, s1^2) vs
    N(0, s2^2), whose W2 is |s1 - s2|), so no projection noise. Over seeds 0-29 at n = 2000
    (64 projections) the estimate had mean 2.007 and standard deviation 0.038 for the target 2;
    tolerance 5 * 0.038. Without the square root it returns SW^2 ~ 4.
    """
    g = _gen(seed)
    x = s1 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = s2 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    sw = metrics.sliced_wasserstein(x, y, 64, generator=g)
    ids._assert_within(sw, abs(s1 - s2), 0.038, "sliced W2 of two centred isotropic Gaussians")


def mmd_closed_form(shift, s1, s2, dim=2, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0)):
    """MMD^2 between N(0, s1^2 I) and N(shift e_1, s2^2 I) with metrics.mmd's sum of Gaussian
    kernels: E exp(-|a - b|^2 / (2 h^2)) = (h^2 / (h^2 + v))^(D/2) exp(-|m|^2 / (2 (h^2 + v)))
    for a - b ~ N(m, v I)."""
    def e(v, m2, h):
        return (h**2 / (h**2 + v)) ** (dim / 2) * math.exp(-m2 / (2 * (h**2 + v)))
    return sum(e(2 * s1**2, 0, h) + e(2 * s2**2, 0, h) - 2 * e(s1**2 + s2**2, shift**2, h) for h in bandwidths)


def check_mmd_gaussians(*, n=2000, shift=1.0, s1=1.0, s2=0.5, seed=0):
    """The unbiased MMD^2 estimate has expectation exactly mmd_closed_form (0.7295 here). Over
    seeds 0-29 at n = 2000: mean 0.7253, standard deviation 0.0233; tolerance 5 * 0.0233. With
    the kernel on |a - b| instead of |a - b|^2 the value is ~0.38 (15 standard deviations off).
    """
    g = _gen(seed)
    x = s1 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = s2 * torch.randn(n, 2, generator=g, dtype=torch.float64) + torch.tensor([shift, 0.0], dtype=torch.float64)
    ids._assert_within(metrics.mmd(x, y), mmd_closed_form(shift, s1, s2), 0.0233, "MMD^2 of two Gaussians")


# ================================================================================================
# the tests on the real dmlib
# ================================================================================================
VP = [S.LinearSchedule(), S.CosineSchedule()]
VP_IDS = ["linear", "cosine"]


@pytest.mark.parametrize("schedule", VP, ids=VP_IDS)
def test_reverse_sde_keeps_the_noised_marginals(schedule):
    check_reverse_sde_marginals(schedule)


@pytest.mark.parametrize("eta", [0.25, 0.5, 0.8])
@pytest.mark.parametrize("name", ["linear", "cosine", "ve", "flow"])
def test_ddim_step_noise_is_eta_times_the_posterior_std(name, eta):
    check_ddim_step_noise(S.get_schedule(name), eta)


@pytest.mark.parametrize("schedule", VP, ids=VP_IDS)
def test_ddim_with_eta_keeps_the_noised_marginals(schedule):
    check_ddim_marginals(schedule, 0.5)


@pytest.mark.parametrize("w", [0.0, 0.5, 1.0, 3.0])
def test_classifier_guidance_is_the_tilted_score(w):
    check_classifier_guidance_scale(S.CosineSchedule(), w)


def test_flow_matching_ot_coupling_is_used():
    check_flow_matching_ot_coupling()


@pytest.mark.parametrize("ema_decay", [0.7, 0.95])
def test_ema_is_the_exponential_average_of_the_weights(ema_decay):
    check_ema_is_the_exponential_average(ema_decay)


def test_sliced_wasserstein_of_gaussians():
    check_sliced_wasserstein_gaussians()


def test_mmd_of_gaussians():
    check_mmd_gaussians()

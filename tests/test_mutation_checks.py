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
  ``check_mmd_gaussians``);
* section 7: the identities behind the mutants of ``benchmarks/mutation.py`` that the rest of the
  suite let through -- Adam's moves under a unit gradient are the learning-rate schedule, batches
  and ``noise.randint`` are uniform, inverses with non-default schedule parameters, the default
  EDM grid, the default sampler, reflow's Heun order and labels, the classifier loss's noise,
  guidance's invariance to a logit shift, normalised mixture weights, floor-ratio repeats, the
  eta-family of reverse SDEs, the likelihood's Heun order, half-precision checkpoints, config
  hashes, the noiseless last sampler step and the x0 weighting of the eps loss.

Monte-Carlo comparisons use fixed seeds and Z = 5 standard errors (``test_math_identities.Z``);
the comment at each check gives the largest deviation measured on the real dmlib.
"""

import math

import pytest
import safetensors.torch
import torch
from scipy.optimize import linear_sum_assignment

import test_math_identities as ids
from dmlib import checkpoint, flow, guidance, likelihood, losses, metrics, noise, samplers, toy
from dmlib import diffusion as D
from dmlib import schedules as S
from dmlib import train as T
from dmlib.nn import MLP

Z = ids.Z
MIX = ids.make_mixture()  # 3 components, full covariances, unequal weights, classes [0, 1, 1]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _assert_within(est, target, se, what):
    """test_math_identities._assert_within, after checking that the estimate is finite (a NaN
    compares False with any tolerance, so it would pass unnoticed)."""
    est = torch.as_tensor(est, dtype=torch.float64)
    assert torch.isfinite(est).all(), f"{what}: estimate {est.tolist()} is not finite"
    ids._assert_within(est, target, se, what)


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
    _assert_within(x.mean(0), mean, (x.var(0) / n).sqrt(), f"{what}: mean at t={t:.2f}")
    r = x.double() - mean
    prods = r[:, [0, 1, 0]] * r[:, [0, 1, 1]]  # r_1^2, r_2^2, r_1 r_2
    target = torch.stack([cov[0, 0], cov[1, 1], cov[0, 1]])
    _assert_within(prods.mean(0), target, prods.std(0) / math.sqrt(n), f"{what}: covariance at t={t:.2f}")


def _exact_p1(mixture, schedule, n, g):
    """Exact samples of p_1: q_sample of mixture samples at t = 1."""
    return D.q_sample(mixture.sample(n, generator=g).double(), 1.0, schedule, generator=g)


# ================================================================================================
# 1. the reverse SDE: Euler-Maruyama with the exact score keeps p_t at every time
# ================================================================================================
def check_reverse_sde_marginals(schedule, *, n=3000, T_steps=100, at=(30, 60, 90), seed=0, eta=1.0):
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
        kw = {} if eta == 1.0 else {"eta": eta}  # eta = 1: Anderson's reverse SDE, the step's default
        x = samplers.euler_maruyama_step(x, MIX.score(x, t, schedule), t, s, schedule, generator=g, **kw)
        if k in at:
            _assert_marginal(x, MIX, schedule, s, f"reverse SDE (Euler-Maruyama, eta={eta})")


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
    _assert_within(x_s.mean(0), mean, math.sqrt(c2 / n), f"DDIM(eta={eta}) step: mean")
    _assert_within(((x_s - mean) ** 2).mean(0), c2, c2 * math.sqrt(2 / n), f"DDIM(eta={eta}) step: noise variance")


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
    _assert_within(sw, abs(s1 - s2), 0.038, "sliced W2 of two centred isotropic Gaussians")


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
    _assert_within(metrics.mmd(x, y), mmd_closed_form(shift, s1, s2), 0.0233, "MMD^2 of two Gaussians")


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


# ================================================================================================
# 7. checks added for mutants of benchmarks/mutation.py that the suite above did not kill
# ================================================================================================
def _sum_of_weights_loss(model, x0, y, g):
    """L(theta) = sum of every weight: its gradient is 1 for every weight, whatever theta."""
    return sum(p.sum() for p in model.parameters())


def check_adam_moves_follow_the_learning_rate_schedule(*, steps=14, warmup=4, lr=1e-2, lr_min_ratio=0.1):
    """With a gradient of 1 for every weight at every step, Adam's bias-corrected moments are
    m_hat = 1 and v_hat = 1 exactly, so step k moves every weight by -lr_k / (1 + 1e-8) (AdamW,
    no weight decay, eps = 1e-8): the moves read off the weights are the learning-rate schedule,

        lr_k = lr (k + 1) / warmup                                   for k < warmup,
        lr_k = lr (r + (1 - r) (1 + cos(pi p)) / 2),  p = (k - warmup) / (steps - warmup),

    a linear warm-up to lr, then a half cosine from lr towards r lr (r = lr_min_ratio).
    Float64 weights: measured agreement 4e-8 relative (PyTorch's foreach Adam forms its bias
    corrections from float32 step counts), tolerance 1e-6. Left unzeroed,
    the gradients would accumulate to k + 1 at step k and move the weights by other amounts.
    """
    trajectory = []

    def recording_loss(model, x0, y, g):
        trajectory.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
        return _sum_of_weights_loss(model, x0, y, g)

    config = T.TrainConfig(steps=steps, batch_size=4, lr=lr, lr_min_ratio=lr_min_ratio, warmup=warmup,
                           ema_decay=None, grad_clip=None, log_every=steps, progress=False, device="cpu", seed=0)
    torch.manual_seed(0)
    res = T.train(MLP(hidden=4, depth=1).double(), recording_loss, lambda n, g: MIX.sample(n, generator=g), config)
    trajectory.append(torch.cat([p.detach().flatten() for p in res.model.parameters()]))
    moves = torch.stack([a - b for a, b in zip(trajectory[:-1], trajectory[1:])])  # (steps, P)
    expected = []
    for k in range(steps):
        if k < warmup:
            factor = (k + 1) / warmup
        else:
            p = (k - warmup) / (steps - warmup)
            factor = lr_min_ratio + (1 - lr_min_ratio) * (1 + math.cos(math.pi * p)) / 2
        expected.append(lr * factor / (1 + 1e-8))
    expected = torch.tensor(expected, dtype=torch.float64)[:, None].expand_as(moves)
    err = ((moves - expected).abs() / expected).max().item()
    assert err < 1e-6, (f"Adam's moves under a unit gradient are off the learning-rate schedule by {err:.3g} "
                        f"(relative); moves per step {moves[:, 0].tolist()}, schedule {expected[:, 0].tolist()}")


def check_batches_draw_every_example_uniformly(*, n_data=5, steps=40, batch=50, seed=0):
    """train() with a data tensor draws each batch uniformly, with replacement, from all N
    examples: over steps * batch draws each example's count is Binomial(steps * batch, 1 / N)
    (2000 draws, expected 400 each, SE 17.9); Z = 5 standard errors (measured at most 1.2)."""
    data = torch.arange(n_data, dtype=torch.float32)[:, None].repeat(1, 2)  # example i is the row (i, i)
    seen = []

    def recording_loss(model, x0, y, g):
        seen.append(x0[:, 0].clone())
        return _sum_of_weights_loss(model, x0, y, g)

    config = T.TrainConfig(steps=steps, batch_size=batch, ema_decay=None, log_every=steps, progress=False,
                           device="cpu", seed=seed)
    T.train(MLP(hidden=4, depth=1), recording_loss, data, config)
    draws = torch.cat(seen).long()
    counts = torch.bincount(draws, minlength=n_data).double()
    n, p = draws.numel(), 1 / n_data
    _assert_within(counts, n * p, math.sqrt(n * p * (1 - p)), "training batches: draws of each example")


def check_randint_is_uniform(*, low=-2, high=4, n=6000, seed=0):
    """noise.randint(low, high) is uniform on the integers low, ..., high - 1: each count is
    Binomial(n, 1 / (high - low)); Z = 5 standard errors (measured at most 1.7), and nothing outside
    [low, high)."""
    draws = noise.randint(low, high, (n,), generator=_gen(seed))
    assert draws.dtype == torch.int64 and draws.min() >= low and draws.max() < high
    counts = torch.bincount(draws - low, minlength=high - low).double()
    p = 1 / (high - low)
    _assert_within(counts, n * p, math.sqrt(n * p * (1 - p)), f"noise.randint({low}, {high}): counts")


INVERSE_CASES = {
    "linear-0.5-10": lambda: S.LinearSchedule(0.5, 10.0),
    "cosine-s0.02": lambda: S.CosineSchedule(0.02),
    "sigmoid-tau0.5": lambda: S.SigmoidSchedule(-2.0, 4.0, tau=0.5),
    "sigmoid-tau1.7": lambda: S.SigmoidSchedule(-3.0, 3.0, tau=1.7),
    "ve-0.05-20": lambda: S.VESchedule(0.05, 20.0),
}


def check_t_from_log_snr_inverts_with_parameters(schedule):
    """t_from_log_snr(log_snr(t)) = t for a schedule with non-default parameters (the closed-form
    inverses use every parameter: with the defaults, tau = 1 for instance, a parameter the inverse
    forgot can go unseen). Float64; measured error at most 1e-14, tolerance 1e-10."""
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    back = schedule.t_from_log_snr(schedule.log_snr(t))
    err = (back - t).abs().max().item()
    assert err < 1e-10, f"{schedule!r}: t_from_log_snr(log_snr(t)) is off t by {err:.3g}"


@pytest.mark.parametrize("name", list(INVERSE_CASES))
def test_t_from_log_snr_inverts_log_snr_with_parameters(name):
    check_t_from_log_snr_inverts_with_parameters(INVERSE_CASES[name]())


def test_adam_moves_follow_the_learning_rate_schedule():
    check_adam_moves_follow_the_learning_rate_schedule()


def test_training_batches_draw_every_example_uniformly():
    check_batches_draw_every_example_uniformly()


def test_randint_is_uniform():
    check_randint_is_uniform()


def check_edm_grid_default_is_karras_rho_7(*, n=8, t_min=0.01):
    """time_grid(spacing="edm") without rho is the grid Karras et al. (2022) recommend, rho = 7:
    noise levels s_i = sigma / alpha = (s_max^(1/7) + i / n (s_min^(1/7) - s_max^(1/7)))^7.
    Float32 times: measured agreement 3e-7 relative (tolerance 1e-4); rho = 3 is off by 3.5."""
    cos = S.CosineSchedule()
    t = samplers.time_grid(n, spacing="edm", schedule=cos, t_min=t_min).double()
    sig = torch.exp(-cos.log_snr(t) / 2)
    s_max, s_min = sig[0].item(), sig[-1].item()
    i = torch.arange(n + 1, dtype=torch.float64)
    ref = (s_max ** (1 / 7) + i / n * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7
    err = ((sig - ref).abs() / ref).max().item()
    assert err < 1e-4, f"the default EDM grid is off Karras et al.'s rho = 7 grid by {err:.3g} (relative)"


def check_sample_defaults_to_deterministic_ddim(*, n=64, n_steps=10, seed=0):
    """sample() without method or eta is DDIM with eta = 0 (its documented defaults): it draws no
    noise, so two calls without a generator give the same x_0 -- exactly method="ddim"'s."""
    den = MIX.denoiser(S.CosineSchedule())
    x = torch.randn(n, 2, generator=_gen(seed), dtype=torch.float64)
    a = samplers.sample(den, x, S.CosineSchedule(), n_steps=n_steps)
    b = samplers.sample(den, x, S.CosineSchedule(), n_steps=n_steps)
    c = samplers.sample(den, x, S.CosineSchedule(), n_steps=n_steps, method="ddim", eta=0.0)
    assert torch.equal(a, b), "sample()'s default sampler drew noise: it is not the deterministic DDIM"
    assert torch.equal(a, c), "sample()'s default is not method='ddim' with eta = 0"


def _gaussian_flow_map(m, s):
    """Data N(m, s^2 I) on the linear path x_t = (1 - t) x0 + t eps: its probability-flow ODE
    maps eps at t = 1 to x0 = m + s eps at t = 0 (the marginals stay Gaussian with mean (1 - t) m
    and std sqrt((1 - t)^2 s^2 + t^2); the affine map between them is the flow)."""
    mixture = toy.GaussianMixture([m], stds=[s])
    return mixture, lambda eps: torch.tensor(m, dtype=torch.float64) + s * eps


def check_reflow_pairs_use_n_steps_of_heun(*, n=64, seed=0):
    """reflow_pairs integrates the probability-flow ODE with Heun's method in n_steps steps: with the
    exact velocity of Gaussian data the pairs' error to the exact flow map falls as n_steps^-2,
    so halving the step divides it by ~4 (measured 3.83 and 4.22 from 4 -> 8 -> 16 steps; accepted
    [3, 5]; at 100 steps the error is 5e-4). A sampler that ignores n_steps gives a ratio ~1."""
    mixture, exact = _gaussian_flow_map([1.0, -0.5], 0.3)
    model = mixture.denoiser(S.FlowSchedule(), "velocity")
    errs = []
    for k in (4, 8, 16):
        x0, eps = flow.reflow_pairs(model, n, S.FlowSchedule(), n_steps=k, generator=_gen(seed))
        errs.append((x0.double() - exact(eps.double())).norm(dim=1).max().item())
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(3.0 < r < 5.0 for r in ratios), (
        f"reflow_pairs' error at 4, 8, 16 Heun steps {errs}: ratios {ratios}, not the ~4 of a second-order method")


def check_reflow_pairs_follow_the_label(*, n=200, label=3, seed=0):
    """reflow_pairs(..., y) integrates the class-conditional flow: with the exact conditional
    velocity of the eight Gaussians every x0 lands in mode `label` (std 0.07, neighbouring modes
    1.08 apart; measured max distance 0.30 to the mode's mean, allowed 0.45; without the label 2.9)."""
    mixture = toy.GaussianMixture.eight_gaussians()
    model = mixture.denoiser(S.FlowSchedule(), "velocity")
    x0, _ = flow.reflow_pairs(model, n, S.FlowSchedule(), n_steps=50, generator=_gen(seed), y=label)
    far = (x0.double() - mixture.means[label]).norm(dim=1).max().item()
    assert far < 0.45, f"reflow_pairs(y={label}): a pair's x0 lies {far:.2f} from mode {label}"


def check_classifier_loss_sees_noised_data(*, n=4000, t_min=0.2, t_max=0.9, seed=0):
    """classifier_loss trains on x_t = alpha_t x0 + sigma_t eps with t ~ U(t_min, t_max) and fresh
    eps ~ N(0, I): the noise recovered from what the classifier sees, (x_t - alpha_t x0) / sigma_t,
    has mean 0, variance 1 and no correlation with x0 (Z = 5 standard errors each; measured at most
    3.2)."""
    schedule, seen = S.LinearSchedule(), []

    def classifier(x_t, t):
        seen.append((x_t.detach().clone(), t.detach().clone()))
        return torch.zeros(x_t.shape[0], 2, dtype=x_t.dtype, requires_grad=True)

    x0, y = MIX.sample(n, generator=_gen(seed + 1), return_labels=True)
    x0 = x0.double()
    losses.classifier_loss(schedule, t_min=t_min, t_max=t_max)(classifier, x0, y, _gen(seed))
    x_t, t = seen[0]
    assert t.min() >= t_min and t.max() <= t_max
    a, s = (c[:, None] for c in schedule.alpha_sigma(t.double()))
    eps = (x_t - a * x0) / s
    _assert_within(eps.mean(0), 0.0, 1 / math.sqrt(n), "classifier_loss: mean of the noise")
    _assert_within(eps.var(0), 1.0, math.sqrt(2 / n), "classifier_loss: variance of the noise")
    corr = ((eps - eps.mean(0)) * (x0 - x0.mean(0))).mean(0) / (eps.std(0) * x0.std(0))
    _assert_within(corr, 0.0, 1 / math.sqrt(n), "classifier_loss: correlation of noise and data")


def check_classifier_guidance_ignores_a_logit_shift(w=2.0, *, t=0.4):
    """Logits l(x) and l(x) + c(x) (the same c for every class) are the same classifier:
    log_softmax removes c, so classifier guidance must not change (float64: measured 2e-15,
    tolerance 1e-10), though grad c is large here (|grad c| up to 8.2)."""
    schedule = S.CosineSchedule()
    x = ids._noised_points(MIX, schedule, t, n=100, seed=5)
    y = torch.arange(x.shape[0]) % MIX.n_classes
    tt = torch.full((x.shape[0],), t, dtype=torch.float64)
    bayes = bayes_classifier(schedule)
    shifted = lambda z, u: bayes(z, u) + 0.7 * (z**2).sum(1, keepdim=True)  # noqa: E731
    den = MIX.denoiser(schedule, "eps")
    a = guidance.ClassifierGuidance(den, bayes, schedule, w=w)(x, tt, y)
    b = guidance.ClassifierGuidance(den, shifted, schedule, w=w)(x, tt, y)
    err = (a - b).abs().max().item()
    assert err < 1e-10, f"classifier guidance changed by {err:.3g} when every logit was shifted by the same c(x)"


def check_mixture_weights_are_normalised():
    """GaussianMixture normalises its weights: weights (2, 6) are the mixture with (0.25, 0.75), whose
    density integrates to 1 (the log-densities agree to 1e-12)."""
    means, stds = [[-1.0, 0.0], [1.5, 0.5]], [0.5, 0.8]
    a = toy.GaussianMixture(means, stds=stds, weights=[2.0, 6.0])
    b = toy.GaussianMixture(means, stds=stds, weights=[0.25, 0.75])
    x = torch.randn(50, 2, generator=_gen(0), dtype=torch.float64)
    torch.testing.assert_close(a.log_prob(x), b.log_prob(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(a.log_prob(x, 0.3, S.CosineSchedule()), b.log_prob(x, 0.3, S.CosineSchedule()),
                               rtol=0, atol=1e-12)


def check_floor_ratio_repeats_average_independent_references(*, n=200, seeds=40, repeats=4):
    """floor_ratio averages over n_repeats independent reference draws, so over many seeds its
    floor scatters sqrt(n_repeats) times less than with one draw: variance ratio ~4 for 4 repeats
    (measured 5.2 over 40 seeds; accepted > 2, an F(39, 39) ratio falls below half its mean with
    probability ~2%). Repeating one reference draw would give a ratio of exactly 1."""
    sampler = toy.data_sampler(MIX)
    x = MIX.sample(n, generator=_gen(1))
    one = [metrics.floor_ratio("sw", x, sampler, seed=s)["floor"] for s in range(seeds)]
    many = [metrics.floor_ratio("sw", x, sampler, seed=10_000 + s, n_repeats=repeats)["floor"] for s in range(seeds)]
    ratio = torch.tensor(one).var().item() / torch.tensor(many).var().item()
    assert ratio > 2.0, f"floor over {repeats} repeats scatters only {ratio:.2f} times less (in variance) than one"


def test_edm_grid_default_is_karras_rho_7():
    check_edm_grid_default_is_karras_rho_7()


def test_sample_defaults_to_deterministic_ddim():
    check_sample_defaults_to_deterministic_ddim()


def test_reflow_pairs_use_n_steps_of_heun():
    check_reflow_pairs_use_n_steps_of_heun()


def test_reflow_pairs_follow_the_label():
    check_reflow_pairs_follow_the_label()


def test_classifier_loss_sees_noised_data():
    check_classifier_loss_sees_noised_data()


def test_classifier_guidance_ignores_a_logit_shift():
    check_classifier_guidance_ignores_a_logit_shift()


def test_mixture_weights_are_normalised():
    check_mixture_weights_are_normalised()


def test_floor_ratio_repeats_average_independent_references():
    check_floor_ratio_repeats_average_independent_references()


def check_reverse_sde_family_marginals(schedule, eta):
    """Every member of the family dx = [f x - (1 + eta^2) / 2 g^2 score] dt + eta g dW_bar keeps the
    marginals p_t (Section 4.4): the Fokker-Planck equation of the drift's extra
    -(eta^2 - 1) / 2 g^2 score term cancels that of the changed diffusion. The same comparisons as
    check_reverse_sde_marginals, at eta = 0.3 and 0.6 (at eta = 0 and 1, (1 + eta) / 2 and
    (1 + eta^2) / 2 agree, so only other values of eta can tell them apart). Measured on the real
    dmlib: at most 2.5 standard errors over the 2 x 2 x 15 comparisons; with (1 + eta) / 2 for
    (1 + eta^2) / 2 the covariance at t = 0.7 is off by 25-69 standard errors."""
    check_reverse_sde_marginals(schedule, eta=eta)


def check_ode_likelihood_is_second_order(*, steps=(4, 8, 16), t_min=1e-3):
    """ode_log_likelihood integrates with Heun's method, second order: against the exact noised
    log-density of Gaussian data on the flow path (where p_1 = N(0, I) exactly), halving the step
    divides the error by ~4 (measured 4.7 and 4.6 from 4 -> 8 -> 16 steps, the asymptotic 4 not yet
    reached; accepted [3, 6]). A
    corrector evaluated at the wrong time leaves a first-order method (ratio ~2)."""
    schedule = S.FlowSchedule()
    mixture = toy.GaussianMixture([[0.8, -0.4]], stds=[0.5])
    model = mixture.denoiser(schedule, "velocity")
    x = mixture.sample(50, generator=_gen(0)).double()
    exact = mixture.log_prob(x, t_min, schedule)
    errs = [(likelihood.ode_log_likelihood(model, x, schedule, n_steps=k, t_min=t_min) - exact).abs().max().item()
            for k in steps]
    ratios = [a / b for a, b in zip(errs, errs[1:])]
    assert all(3.0 < r < 6.0 for r in ratios), (
        f"ode_log_likelihood's error at {steps} steps {errs}: ratios {ratios}, not the ~4 of Heun's method")


def check_half_precision_checkpoint_keeps_integer_tensors(tmp_path):
    """save_model(dtype=float16) stores the floating tensors in half precision and the others as
    they are: an integer buffer (BatchNorm's num_batches_tracked) of 3001, which float16 cannot
    hold (it rounds to 3000), comes back exactly, and the file stores it as int64."""
    bn = torch.nn.BatchNorm1d(3)
    bn.num_batches_tracked.fill_(3001)
    checkpoint.save_model(tmp_path / "bn", bn, dtype=torch.float16)
    stored = safetensors.torch.load_file(str(tmp_path / "bn.safetensors"))
    assert stored["weight"].dtype == torch.float16
    assert stored["num_batches_tracked"].dtype == torch.int64, "an integer tensor was stored as float16"
    back = torch.nn.BatchNorm1d(3)
    checkpoint.load_model(tmp_path / "bn", back)
    assert back.num_batches_tracked.item() == 3001


def check_config_hash_ignores_key_order():
    """config_hash hashes a config's content: the same settings in another order give the same hash,
    and another value a different one."""
    a = {"lr": 1e-3, "steps": 100, "model": {"hidden": 64, "depth": 3}}
    b = {"model": {"depth": 3, "hidden": 64}, "steps": 100, "lr": 1e-3}
    assert checkpoint.config_hash(a) == checkpoint.config_hash(b), "config_hash depends on the order of the keys"
    assert checkpoint.config_hash(a) != checkpoint.config_hash({**a, "steps": 101})


@pytest.mark.parametrize("eta", [0.3, 0.6])
@pytest.mark.parametrize("schedule", VP, ids=VP_IDS)
def test_reverse_sde_family_keeps_the_noised_marginals(schedule, eta):
    check_reverse_sde_family_marginals(schedule, eta)


def test_ode_likelihood_is_second_order():
    check_ode_likelihood_is_second_order()


def test_half_precision_checkpoint_keeps_integer_tensors(tmp_path):
    check_half_precision_checkpoint_keeps_integer_tensors(tmp_path)


def test_config_hash_ignores_key_order():
    check_config_hash_ignores_key_order()


def check_last_step_adds_no_noise(method, *, n=256, t_min=0.05, seed=0, **kw):
    """sample()'s last step adds no noise (its docstring): on a grid ending at t_min > 0 the last
    step of a stochastic sampler is the deterministic DDIM step from the trajectory's last-but-one
    point, x_s = alpha_s x0_hat + sigma_s (x_t - alpha_t x0_hat) / sigma_t with x0_hat = E[x0 | x_t]
    (float64: measured agreement 1e-15, tolerance 1e-9). On a grid ending at t = 0 on a VP path
    the posterior variance there is 0 anyway, so only such a grid shows the difference."""
    schedule = S.CosineSchedule()
    times = samplers.time_grid(10, t_min=t_min).double()
    x = torch.randn(n, 2, generator=_gen(seed), dtype=torch.float64)
    _, traj = samplers.sample(MIX.denoiser(schedule), x, schedule, method=method, times=times, generator=_gen(seed + 1),
                              return_trajectory=True, **kw)
    t, s = times[-2].item(), times[-1].item()
    a_t, sig_t = _coeffs(schedule, t)
    a_s, sig_s = _coeffs(schedule, s)
    x0_hat = MIX.posterior_mean(traj[-2], t, schedule)
    expected = a_s * x0_hat + sig_s * (traj[-2] - a_t * x0_hat) / sig_t
    err = (traj[-1] - expected).abs().max().item()
    assert err < 1e-9, f"sample(method={method!r}, {kw}): the last step is off the noiseless DDIM step by {err:.3g}"


@pytest.mark.parametrize("method,kw", [("ddim", {"eta": 1.0}), ("ddpm", {}), ("euler_maruyama", {})],
                         ids=["ddim-eta1", "ddpm", "euler_maruyama"])
def test_last_step_adds_no_noise(method, kw):
    check_last_step_adds_no_noise(method, **kw)


class _AsX0:
    """An eps-model seen as the x0-model it implies: x0_hat = (x_t - sigma_t eps_hat) / alpha_t."""

    prediction = "x0"

    def __init__(self, eps_model, schedule):
        self.eps_model, self.schedule = eps_model, schedule

    def __call__(self, x_t, t, y=None):
        return D.convert(self.eps_model(x_t, t, y), x_t, t, self.schedule, src="eps", dst="x0")


def check_x0_weighting_turns_the_eps_loss_into_the_x0_loss(*, n=256, seed=0):
    """|x0 - x0_hat|^2 = |eps - eps_hat|^2 / SNR(t) for the x0_hat an eps-model implies (Section 2.7),
    so diffusion_loss(weighting="x0") of an eps-model equals the plain loss of the same model seen
    as an x0-model, draw for draw (same generator: same t and eps). The model is the exact
    denoiser of MIX with its output perturbed, so the errors are not small. Measured agreement
    1.2e-8 relative (the loss draws t in float32), tolerance 1e-5; ignoring the weighting gives
    the eps loss, 0.416 here against 0.804."""
    schedule = S.CosineSchedule()
    exact = MIX.denoiser(schedule, "eps")

    class Perturbed:
        prediction = "eps"

        def __call__(self, x_t, t, y=None):
            return exact(x_t, t, y) + 0.2 * torch.sin(3 * x_t)

    x0 = MIX.sample(n, generator=_gen(seed)).double()
    weighted = losses.diffusion_loss(schedule, weighting="x0", t_min=0.05, t_max=0.95)(Perturbed(), x0, None, _gen(1))
    x0_loss = losses.diffusion_loss(schedule, t_min=0.05, t_max=0.95)(_AsX0(Perturbed(), schedule), x0, None, _gen(1))
    err = abs(weighted.item() - x0_loss.item()) / x0_loss.item()
    assert err < 1e-5, (f"the x0-weighted eps loss {weighted.item():.6g} is not the x0 loss {x0_loss.item():.6g} "
                        f"of the same predictions")


def test_x0_weighting_turns_the_eps_loss_into_the_x0_loss():
    check_x0_weighting_turns_the_eps_loss_into_the_x0_loss()


def check_label_dropout_rate(*, p=0.25, steps=20, batch=100, seed=0):
    """With label_dropout = p each label of a batch becomes the "no class" label n_classes with
    probability p, independently: over steps * batch labels the count is Binomial(2000, p)
    (expected 500, SE 19.4); Z = 5 standard errors (measured 0.3; dropping with probability 1 - p
    is off by 51)."""
    x, y = MIX.sample(64, generator=_gen(seed), return_labels=True)
    seen = []

    def recording_loss(model, x0, labels, g):
        seen.append(labels.clone())
        return _sum_of_weights_loss(model, x0, labels, g)

    config = T.TrainConfig(steps=steps, batch_size=batch, ema_decay=None, label_dropout=p, log_every=steps,
                           progress=False, device="cpu", seed=seed)
    T.train(MLP(hidden=4, depth=1, n_classes=MIX.n_classes), recording_loss, x, config, labels=y)
    labels = torch.cat(seen)
    dropped = (labels == MIX.n_classes).sum().item()
    n = labels.numel()
    _assert_within(dropped, n * p, math.sqrt(n * p * (1 - p)), f"label dropout {p}: dropped labels")
    assert ((labels >= 0) & (labels <= MIX.n_classes)).all()


def check_resume_accepts_settings_that_change_nothing(tmp_path, *, steps=6):
    """A finished run resumed with only settings that do not change what is computed changed
    (train.RESUMABLE_CHANGES: device, progress, checkpoint_every, ...) continues from its
    checkpoint -- here at its last step, so nothing more is trained -- and returns the same
    weights, rather than refusing as if it were another run."""
    config = T.TrainConfig(steps=steps, batch_size=32, ema_decay=None, log_every=steps, progress=False, device="cpu",
                           checkpoint=str(tmp_path / "run"))
    data = lambda n, g: MIX.sample(n, generator=g)  # noqa: E731
    loss = losses.diffusion_loss(S.CosineSchedule())
    torch.manual_seed(0)
    first = T.train(MLP(hidden=8, depth=1), loss, data, config)
    changed = T.TrainConfig(**{**config.__dict__, "checkpoint_every": 3, "device": None})
    assert set(T.RESUMABLE_CHANGES) >= {"checkpoint_every", "device"}
    torch.manual_seed(1)  # other initial weights: the result must come from the checkpoint
    again = T.train(MLP(hidden=8, depth=1), loss, data, changed)
    for p, q in zip(first.model.parameters(), again.model.parameters()):
        assert torch.equal(p, q), "resuming with harmless changes did not continue the saved run"


def test_label_dropout_rate():
    check_label_dropout_rate()


def test_resume_accepts_settings_that_change_nothing(tmp_path):
    check_resume_accepts_settings_that_change_nothing(tmp_path)


def check_mmd_is_unbiased(*, n=10, repeats=400, seed=0):
    """metrics.mmd is the unbiased estimate of MMD^2 (its docstring): for two samples of the same law
    its expectation is exactly 0, even at n = 10 points, where keeping the diagonal terms
    k(x_i, x_i) would add 5 / (n - 1) = 0.56 per sample. The mean over 400 independent pairs of
    samples is compared with 0 within Z = 5 standard errors (from the spread of the 400 values;
    measured 2.2; with the diagonal of one sample kept it is off by 57)."""
    g = _gen(seed)
    vals = torch.tensor([metrics.mmd(torch.randn(n, 2, generator=g, dtype=torch.float64),
                                     torch.randn(n, 2, generator=g, dtype=torch.float64)) for _ in range(repeats)])
    _assert_within(vals.mean(), 0.0, vals.std() / math.sqrt(repeats), f"MMD^2 of two samples of one law (n={n})")


def test_mmd_is_unbiased():
    check_mmd_is_unbiased()


def check_ode_likelihood_on_a_variance_exploding_path(*, n=50, t_min=1e-3):
    """ode_log_likelihood on the VE path (sigma from 0.01 to 10, alpha = 1), where sigma_1 is far
    from 1, so a slip in its prior N(0, (sigma_1^2 + alpha_1^2) I) shows (on VP paths and the flow
    path sigma_1 ~ 1 hides sigma_1 for sigma_1^2): against the exact noised log-density of a
    two-component mixture, measured max error 0.09 at 100 Heun steps (the prior's unit-variance
    approximation of the data included; tolerance 0.25); with sigma_1 for sigma_1^2, 43 nats."""
    mixture = toy.GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], stds=[0.5, 0.4], weights=[0.4, 0.6])
    schedule = S.VESchedule(0.01, 10.0)
    x = mixture.sample(n, generator=_gen(0)).double()
    ll = likelihood.ode_log_likelihood(mixture.denoiser(schedule, "eps"), x, schedule, n_steps=100, t_min=t_min)
    err = (ll - mixture.log_prob(x, t_min, schedule)).abs().max().item()
    assert err < 0.25, f"ode_log_likelihood on the VE path is off the exact log-density by {err:.3g} nats"


def test_ode_likelihood_on_a_variance_exploding_path():
    check_ode_likelihood_on_a_variance_exploding_path()


def check_labels_range_at_the_boundary():
    """Class labels are checked once at the public boundary: 0..n_classes - 1 are classes and
    n_classes is the "no class" label (classifier-free guidance), so n_classes is accepted and
    n_classes + 1 -- one past it -- is refused with a ValueError naming the range."""
    model = MLP(hidden=4, depth=1, n_classes=3)
    x = torch.zeros(4, 2)
    samplers.sample(model, x, S.CosineSchedule(), n_steps=2, y=3)  # the "no class" label
    with pytest.raises(ValueError, match=r"labels in \[0, 2\]"):
        samplers.sample(model, x, S.CosineSchedule(), n_steps=2, y=4)
    with pytest.raises(ValueError, match=r"labels in \[0, 2\]"):
        samplers.sample(model, x, S.CosineSchedule(), n_steps=2, y=torch.tensor([0, 1, 4, 2]))


def test_labels_range_at_the_boundary():
    check_labels_range_at_the_boundary()

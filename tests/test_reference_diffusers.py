"""dmlib's DDPM quantities against an independent reference: diffusers' DDPMScheduler.

Index conventions: diffusers' timestep i (0-based, i = 0..T-1) is our step k = i + 1, i.e. the
continuous time t = (i + 1) / T; their alphas_cumprod[i] is our alpha_bars(T)[i + 1] and their
betas[i] our betas(T)[i + 1] (our entry 0 is the clean data).

diffusers keeps its tables in float32. Where a comparison should be exact, the scheduler's
tables are replaced by float64 ones computed with diffusers' own formula (cumprod of 1 - beta),
so only float64 rounding remains; with the float32 tables, 1 - alpha_bar loses up to
eps32 / beta_1 ~ 6e-4 of its relative accuracy near t = 0 (catastrophic cancellation).
"""

import math

import pytest
import torch

from dmlib import diffusion, samplers, schedules

diffusers = pytest.importorskip("diffusers")
T = 1000


def _scheduler(**kwargs):
    return diffusers.DDPMScheduler(num_train_timesteps=T, clip_sample=False, **kwargs)


def _scheduler64(schedule, **kwargs):
    """A DDPMScheduler built from our betas, its tables recomputed in float64."""
    betas = schedule.betas(T, torch.float64)[1:]
    ref = _scheduler(trained_betas=betas.float().numpy(), **kwargs)
    ref.betas = betas
    ref.alphas = 1.0 - betas
    ref.alphas_cumprod = torch.cumprod(ref.alphas, dim=0)
    ref.one = torch.tensor(1.0, dtype=torch.float64)
    return ref


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_alphas_cumprod_from_our_betas(name):
    sch = schedules.get_schedule(name)
    ref = _scheduler(trained_betas=sch.betas(T)[1:].numpy())  # diffusers as users get it: float32
    # float32 tables: measured relative error < 2e-6 where alpha_bar > 1e-4 (cumprod over 1000
    # steps); on the last steps float32 betas cost a little more relative accuracy, covered by atol
    torch.testing.assert_close(ref.alphas_cumprod, sch.alpha_bars(T)[1:], rtol=2e-5, atol=1e-9)
    ref64 = _scheduler64(sch)
    torch.testing.assert_close(ref64.alphas_cumprod, sch.alpha_bars(T, torch.float64)[1:], rtol=1e-10, atol=1e-16)


def test_cosine_betas_match_squaredcos_cap_v2():
    # diffusers' "squaredcos_cap_v2" is Nichol & Dhariwal's cosine schedule with beta clipped at
    # 0.999. dmlib floors alpha_bar instead: alpha_bar = F + (1 - F) f(t) / f(0) with F = 1e-4.
    # Applying that documented floor to diffusers' alpha_bar must give our betas; without the
    # floor the two agree only while alpha_bar >> F.
    ref = _scheduler(beta_schedule="squaredcos_cap_v2").betas.double()
    ref_ab = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - ref, 0)])
    F = schedules.ALPHA_BAR_MIN
    floored = F + (1 - F) * ref_ab
    ref_floored = 1 - floored[1:] / floored[:-1]
    ours = schedules.CosineSchedule().betas(T, torch.float64)[1:]
    # float32 storage of diffusers' betas: ~1e-6 relative in the cumulative product
    torch.testing.assert_close(ours[:-1], ref_floored[:-1], rtol=2e-5, atol=1e-7)
    early = ref_ab[1:] > 0.1  # far above the floor the plain schedules agree to ~F / alpha_bar
    torch.testing.assert_close(ours[early], ref[early], rtol=2e-3, atol=1e-7)
    assert ref[-1].item() == pytest.approx(0.999) and 0.0 < ours[-1].item() < 1


def test_linear_schedule_close_to_diffusers_linear():
    # DDPM's linspace(1e-4, 0.02) (stored in float32): ours differs by at most 2.13e-4 (see test_schedules)
    ref = _scheduler(beta_schedule="linear").betas.double()
    ours = schedules.LinearSchedule().betas(T, torch.float64)[1:]
    assert (ours - ref).abs().max().item() < 2.2e-4


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_add_noise_equals_q_sample(dtype, tol):
    sch = schedules.CosineSchedule()
    ref = _scheduler64(sch) if dtype == torch.float64 else _scheduler(trained_betas=sch.betas(T)[1:].numpy())
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 1, 4, 4, generator=g, dtype=dtype)
    noise = torch.randn(6, 1, 4, 4, generator=g, dtype=dtype)
    timesteps = torch.tensor([0, 1, 99, 500, 900, 999])
    ours = diffusion.q_sample(x0, (timesteps + 1).double() / T, sch, noise)
    torch.testing.assert_close(ref.add_noise(x0, noise, timesteps), ours, rtol=tol, atol=tol)


@pytest.mark.parametrize("i", [0, 1, 10, 500, 999])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_step_is_posterior_sample(name, i):
    # DDPMScheduler.step with an x0 prediction samples q(x_{k-1} | x_k, x0): the mean mu~ plus
    # sqrt(beta~) times torch.randn drawn from the generator (no noise at i = 0).
    sch = schedules.get_schedule(name)
    ref = _scheduler64(sch, prediction_type="sample", variance_type="fixed_small")
    g = torch.Generator().manual_seed(i)
    x0 = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    xt = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    out = ref.step(x0, i, xt, generator=torch.Generator().manual_seed(1)).prev_sample
    mean, var = diffusion.posterior(x0, xt, i / T, (i + 1) / T, sch)
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    if i == 0:
        z.zero_()
    torch.testing.assert_close(out, mean + var.sqrt() * z, rtol=1e-10, atol=1e-12)


# -- sampler steps against diffusers' DDPM and DDIM schedulers -------------------------------------
def _diffusers_betas(schedule, T=1000):
    return schedule.betas(T, dtype=torch.float64)[1:].numpy()  # diffusers' index i is our step k = i + 1


def _in_float64(ref):
    # diffusers keeps its tables in float32, where 1 - alpha_bar near t = 0 loses ~1e-3 of its
    # digits; the algorithms are compared in float64 so that only a real difference shows.
    ref.betas = ref.betas.double()
    ref.alphas = 1.0 - ref.betas
    ref.alphas_cumprod = torch.cumprod(ref.alphas, 0)
    return ref


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddpm_step_matches_diffusers(name):
    schedule, T = schedules.get_schedule(name), 1000
    ref = _in_float64(diffusers.DDPMScheduler(num_train_timesteps=T, trained_betas=_diffusers_betas(schedule),
                                              clip_sample=False, variance_type="fixed_small", prediction_type="sample"))
    # The model output is an x0-prediction: the step itself is compared, not the ill-conditioned
    # eps -> x0 division by alpha_t ~ 0.007 at t = 1 that both sides would round differently.
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(16, 2, generator=g, dtype=torch.float64)
    x0_hat = torch.randn(16, 2, generator=g, dtype=torch.float64)
    for i in (999, 500, 37, 1):
        t, s = (i + 1) / T, i / T
        theirs = ref.step(x0_hat, i, x_t, generator=torch.Generator().manual_seed(9)).prev_sample
        ours = samplers.ddpm_step(x_t, x0_hat, t, s, schedule, generator=torch.Generator().manual_seed(9))
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_step_matches_diffusers(name):
    schedule, T = schedules.get_schedule(name), 1000
    ref = _in_float64(diffusers.DDIMScheduler(num_train_timesteps=T, trained_betas=_diffusers_betas(schedule),
                                              clip_sample=False, set_alpha_to_one=True, prediction_type="sample",
                                              timestep_spacing="leading"))
    ref.set_timesteps(50)
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(16, 2, generator=g, dtype=torch.float64)
    x0_hat = torch.randn(16, 2, generator=g, dtype=torch.float64)
    for i in ref.timesteps.tolist()[:-1]:
        prev = i - T // 50
        t, s = (i + 1) / T, (prev + 1) / T
        theirs = ref.step(x0_hat, i, x_t, eta=0.0).prev_sample
        ours = samplers.ddim_step(x_t, x0_hat, t, s, schedule, eta=0.0)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


# -- DPM-Solver++(2M, 3M) against diffusers' DPMSolverMultistepScheduler ---------------------------
def _dpm_scheduler(schedule, n_steps, T=1000):
    ref = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, trained_betas=_diffusers_betas(schedule), solver_order=3,
        algorithm_type="dpmsolver++", prediction_type="sample", lower_order_final=False)
    _in_float64(ref)
    ref.set_timesteps(n_steps)  # its sigmas from the float64 table (stored in float32)
    return ref


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_2m_sde_matches_diffusers_sde_dpmsolver(name):
    """samplers.dpmpp_2m_sde_step against diffusers' algorithm_type="sde-dpmsolver++" with
    solver_type="heun" (its weight of the slope, 1 - (1 - e^{-2h}) / (2h), is eq-sde-dpm-2m's
    (h - psi1 / 2) / h), step by step from the same x_t, x0 predictions and noise. Its first step
    is first order, and ours is then exactly the DDPM step."""
    schedule = schedules.get_schedule(name)
    ref = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, trained_betas=_diffusers_betas(schedule), solver_order=2,
        algorithm_type="sde-dpmsolver++", solver_type="heun", prediction_type="sample",
        lower_order_final=False)
    _in_float64(ref)
    ref.set_timesteps(12)
    ks = ref.timesteps.tolist()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 2, generator=g, dtype=torch.float64)
    prev = None
    for j, (k, k_next) in enumerate(zip(ks, ks[1:])):
        t, s = (k + 1) / T, (k_next + 1) / T
        x0 = torch.randn(16, 2, generator=g, dtype=torch.float64)
        z = torch.randn(16, 2, generator=torch.Generator().manual_seed(100 + j), dtype=torch.float64)
        theirs = ref.step(x0, k, x, variance_noise=z).prev_sample
        kw = dict(x0_prev=prev[0], t_prev=prev[1]) if prev else {}
        ours = samplers.dpmpp_2m_sde_step(x, x0, t, s, schedule, generator=torch.Generator().manual_seed(100 + j),
                                          **kw)
        if j == 0:
            torch.testing.assert_close(ours, samplers.ddpm_step(
                x, x0, t, s, schedule, generator=torch.Generator().manual_seed(100 + j)))
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5, msg=f"step {j} (t={t:.3f})")
        prev, x = (x0, t), theirs


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_steps_match_diffusers_multistep(name):
    """On diffusers' grid (timestep i is our t = (i + 1) / T), step by step from the same x_t and
    the same x0 predictions: its first step is DDIM, its second DPM-Solver++(2M) exactly as ours.
    From the third step on its 3M weights the quadratic term alpha_s phi3 c2 by one half (see
    samplers.dpmpp_3m_step): diffusers = ours - alpha_s phi3 c2 / 2, with phi3 = h^2 - 2 (h - 1 + e^{-h})
    and c2 the second divided difference of the x0 predictions in the half log-SNR l."""
    schedule, T = schedules.get_schedule(name), 1000
    ref = _dpm_scheduler(schedule, 12)
    ks = ref.timesteps.tolist()  # 12 timesteps; the last step (to sigma = 0) is not compared
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 2, generator=g, dtype=torch.float64)
    hist = []  # (x0, t), newest first
    ell = lambda u: schedule.log_snr(u).item() / 2  # noqa: E731
    for j, (k, k_next) in enumerate(zip(ks, ks[1:])):
        t, s = (k + 1) / T, (k_next + 1) / T
        x0 = torch.randn(16, 2, generator=g, dtype=torch.float64)
        theirs = ref.step(x0, k, x).prev_sample
        kw = {}
        if len(hist) >= 1:
            kw.update(x0_prev=hist[0][0], t_prev=hist[0][1])
        if len(hist) >= 2:
            kw.update(x0_prev2=hist[1][0], t_prev2=hist[1][1])
        ours = samplers.dpmpp_3m_step(x, x0, t, s, schedule, **kw)
        if j == 0:
            torch.testing.assert_close(ours, samplers.ddim_step(x, x0, t, s, schedule))
        if len(hist) >= 2:  # the documented difference of the quadratic term
            (x1, t1), (x2, t2) = hist[0], hist[1]
            h, h0, h1 = ell(s) - ell(t), ell(t) - ell(t1), ell(t1) - ell(t2)
            c2 = ((x0 - x1) / h0 - (x1 - x2) / h1) / (h0 + h1)
            phi3 = h**2 - 2 * (h - 1 + math.exp(-h))
            ours = ours - schedule.alpha(s).item() * phi3 * c2 / 2
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5, msg=f"step {j} (t={t:.3f})")
        hist = [(x0, t)] + hist[:1]
        x = theirs


# -- UniPC (UniP + UniC) against diffusers' UniPCMultistepScheduler --------------------------------
def _unipc_scheduler(schedule, n_steps, order, T=1000):
    ref = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=T, trained_betas=_diffusers_betas(schedule), solver_order=order,
        predict_x0=True, solver_type="bh2", prediction_type="sample", lower_order_final=False,
        final_sigmas_type="sigma_min")
    _in_float64(ref)
    ref.set_timesteps(n_steps)
    # its noise levels sigma / alpha at the timesteps and, last, at timestep 0, in float64
    idx = torch.tensor(ref.timesteps.tolist() + [0])
    ref.sigmas = ((1 - ref.alphas_cumprod[idx]) / ref.alphas_cumprod[idx]).sqrt()
    return ref


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_unipc_matches_diffusers_unipc_bh2(name, order):
    """sample(method="unipc_<order>m") against diffusers' UniPC (data prediction, bh2) on its grid:
    the same x0 predictions are fed to both (random tensors standing in for a model, evaluated
    at the predictor's point as both do): every corrected point and the end point (the grid
    ends at timestep 0, t = 1 / T, without a correction) agree to float64 round-off amplified by
    the divided differences of random predictions (measured <= 4e-9 and 6e-8 at the end point).
    This covers the warm-up (DDIM, then the first-order corrector, then 2M) and, for order 3,
    the 3M predictor with the cubic corrector."""
    schedule, T = schedules.get_schedule(name), 1000
    ref = _unipc_scheduler(schedule, 10, order)
    ks = ref.timesteps.tolist()
    g = torch.Generator().manual_seed(3)
    preds = [torch.randn(16, 2, generator=g, dtype=torch.float64) for _ in ks]
    x_T = torch.randn(16, 2, generator=g, dtype=torch.float64)
    corrected, x = [], x_T  # diffusers keeps the point its step j corrected in last_sample
    for k, x0 in zip(ks, preds):
        x = ref.step(x0, k, x).prev_sample
        corrected.append(ref.last_sample.clone())

    class Replay:  # the j-th call returns the j-th prediction
        prediction, calls = "x0", 0

        def __call__(self, x, t, y=None):
            self.calls += 1
            return preds[self.calls - 1]

    times = torch.tensor([(k + 1) / T for k in ks] + [1 / T], dtype=torch.float64)
    model = Replay()
    out, traj = samplers.sample(model, x_T, schedule, method=f"unipc_{order}m", times=times,
                                return_trajectory=True)
    assert model.calls == len(ks) == samplers.nfe(f"unipc_{order}m", len(ks))
    for j in range(len(ks)):  # traj[j]: the point at ks[j] after its correction
        torch.testing.assert_close(traj[j], corrected[j], rtol=1e-7, atol=1e-7, msg=f"point {j}")
    torch.testing.assert_close(out, x, rtol=1e-6, atol=1e-6)

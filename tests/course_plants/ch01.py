"""Chapter 1: planted-wrong submissions."""

PLANTS = [
    {
        "name": "bisection_goes_the_wrong_way",
        # treats lambda_t as increasing in t: the bisection runs to the wrong end
        "answers": {"ex1_1a_answer": '''\
def t_at_log_snr(lam_fn, lam, iters=60):
    lo = torch.zeros_like(lam, dtype=f64)
    hi = torch.ones_like(lam, dtype=f64)
    for _ in range(iters):
        mid = (lo + hi) / 2
        too_clean = lam_fn(mid) < lam
        lo = torch.where(too_clean, mid, lo)
        hi = torch.where(too_clean, hi, mid)
    return (lo + hi) / 2
'''},
        # 1.1(b) and 1.1(c) find their times with t_at_log_snr
        "fails": ["ex1_1a_check", "ex1_1b_check", "ex1_1c_check"],
    },
    {
        "name": "same_noise_level_without_rescaling",
        # finds the right time but keeps the sample as it is
        "answers": {"ex1_1b_answer": '''\
def same_noise_level(x, t, src, dst):
    t_src = torch.tensor([t], dtype=f64)
    t_dst = t_at_log_snr(dst.log_snr, src.log_snr(t_src))
    return x, t_dst.item()
'''},
        "fails": ["ex1_1b_check"],
    },
    {
        "name": "same_noise_level_with_schedule_inverse",
        # looks the time up with dst.t_from_log_snr, which the check does not offer
        "answers": {"ex1_1b_answer": '''\
def same_noise_level(x, t, src, dst):
    t_src = torch.tensor([t], dtype=f64)
    t_dst = dst.t_from_log_snr(src.log_snr(t_src))
    return (dst.alpha(t_dst) / src.alpha(t_src)).item() * x, t_dst.item()
'''},
        "fails": ["ex1_1b_check"],
    },
    {
        "name": "merged_noise_not_normalised",
        # the weighted sum of the step noises, not divided by sqrt(1 - alpha_bar_k)
        "answers": {"ex1_3_answer": '''\
def merged_noise(eps_steps, betas):
    ab = torch.cumprod(1 - betas, 0)
    w = torch.sqrt(betas * ab[-1] / ab)
    return (w[:, None, None] * eps_steps).sum(0)
'''},
        "fails": ["ex1_3_check"],
    },
    {
        "name": "posterior_with_forward_variance",
        # beta_k instead of beta~_k as the variance
        "answers": {"ex1_4_answer": '''\
def ddpm_posterior(x0, x_k, k, schedule, T):
    b = schedule.betas(T, dtype=f64)[k][:, None]
    ab = schedule.alpha_bars(T, dtype=f64)[k][:, None]
    ab_prev = schedule.alpha_bars(T, dtype=f64)[k - 1][:, None]
    mean = (ab_prev.sqrt() * b / (1 - ab) * x0
            + (1 - b).sqrt() * (1 - ab_prev) / (1 - ab) * x_k)
    return mean, b
'''},
        "fails": ["ex1_4_check"],
    },
    {
        "name": "calls_diffusion_posterior",
        "calls_dmlib": True,
        # Exercise 1.4 asks for the posterior; dmlib's is switched off
        "answers": {"ex1_4_answer": '''\
def ddpm_posterior(x0, x_k, k, schedule, T):
    k = k.to(f64)
    return diffusion.posterior(x0, x_k, (k - 1) / T, k / T, schedule)
'''},
        "fails": ["ex1_4_check"],
    },
]

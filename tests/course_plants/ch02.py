"""Chapter 2: planted-wrong submissions."""

PLANTS = [
    {
        "name": "step_with_wrong_sign",
        # adds the scaled noise prediction instead of subtracting it
        "answers": {"ex2_1a_answer": '''\
def ddpm_step_eps(x_k, eps_hat, k, betas, alpha_bars, z):
    b = betas[k][:, None].to(x_k.dtype)
    ab = alpha_bars[k][:, None].to(x_k.dtype)
    ab_prev = alpha_bars[k - 1][:, None].to(x_k.dtype)
    mean = (x_k + b / torch.sqrt(1 - ab) * eps_hat) / torch.sqrt(1 - b)
    beta_tilde = (1 - ab_prev) / (1 - ab) * b
    return mean + torch.sqrt(beta_tilde) * z
'''},
        # 2.1(b) runs the broken step; 2.1(c)'s Monte Carlo has its own
        "fails": ["ex2_1a_check", "ex2_1b_check"],
    },
    {
        "name": "sampler_without_fresh_noise",
        # never adds the fresh noise z: every step moves to the posterior mean
        "answers": {"ex2_1b_answer": '''\
def ancestral_sample(model, x_T, schedule, T, generator):
    betas, alpha_bars = schedule.betas(T, dtype=f64), schedule.alpha_bars(T, dtype=f64)
    x = x_T
    for k in range(T, 0, -1):
        k_b = torch.full((len(x),), k)
        eps_hat = model(x, k_b.to(x.dtype) / T)
        x = ddpm_step_eps(x, eps_hat, k_b, betas, alpha_bars, torch.zeros_like(x))
    return x
'''},
        "fails": ["ex2_1b_check"],
    },
    {
        "name": "calls_samplers_sample",
        "calls_dmlib": True,
        # Exercise 2.1 asks for the ancestral sampler; dmlib's is switched off
        "answers": {"ex2_1b_answer": '''\
def ancestral_sample(model, x_T, schedule, T, generator):
    return samplers.sample(model, x_T, schedule, method="ddpm", n_steps=T,
                           generator=generator)
'''},
        "fails": ["ex2_1b_check"],
    },
    {
        "name": "moments_without_fresh_variance",
        # propagates the variance through the affine map but forgets beta~_k
        "answers": {"ex2_1c_answer": '''\
def exact_moments(schedule, T, m, s):
    b, ab = schedule.betas(T, dtype=f64), schedule.alpha_bars(T, dtype=f64)
    mean, var = 0.0, 1.0
    for k in range(T, 0, -1):
        a_t, s2_t = ab[k].sqrt().item(), 1 - ab[k].item()
        gain = a_t * s**2 / (a_t**2 * s**2 + s2_t)
        c_x = (1 - b[k]).sqrt().item() * (1 - ab[k - 1].item()) / s2_t
        c_0 = ab[k - 1].sqrt().item() * b[k].item() / s2_t
        mean = (c_x + c_0 * gain) * mean + c_0 * m * (1 - gain * a_t)
        var = (c_x + c_0 * gain) ** 2 * var
    return mean, var


ratios = {T: exact_moments(cosine, T, gauss_m, gauss_s)[1] / gauss_s**2
          for T in (2, 5, 10, 50, 200, 1000)}
'''},
        "fails": ["ex2_1c_check"],
    },
    {
        "name": "min_snr_flow_with_the_vp_v_weight",
        # converts with the VP relation |x0 err|^2 = |v err|^2 / (1 + SNR)
        "answers": {"ex2_3_answer": '''\
def min_snr_weight_flow(t, gamma):
    snr = ((1 - t) / t) ** 2
    return torch.clamp(snr, max=gamma) / (1 + snr)
'''},
        "fails": ["ex2_3_check"],
    },
    {
        "name": "min_snr_flow_from_eps_units",
        "calls_dmlib": True,
        # the conversion factor taken from losses._eps_units, which is switched off
        "answers": {"ex2_3_answer": '''\
def min_snr_weight_flow(t, gamma):
    path = schedules.FlowSchedule()
    to_u = (losses._eps_units(t, path, "x0")
            / losses._eps_units(t, path, "velocity"))
    return torch.clamp(path.snr(t), max=gamma) * to_u
'''},
        "fails": ["ex2_3_check"],
    },
    {
        "name": "elbo_weight_without_floor",
        # differentiates the cosine schedule without its floor
        "answers": {"ex2_4_answer": '''\
def elbo_weight_cosine(t):
    s = 0.008
    u = (t + s) / (1 + s) * math.pi / 2
    c0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    ab = torch.cos(u) ** 2 / c0
    d_ab = -math.pi / (2 * (1 + s)) * torch.sin(2 * u) / c0
    return -0.5 * d_ab / (ab * (1 - ab))
'''},
        "fails": ["ex2_4_check"],
    },
    {
        "name": "elbo_weight_by_finite_differences",
        # differences the schedule's own log_snr, switched off while the answer runs
        "answers": {"ex2_4_answer": '''\
def elbo_weight_cosine(t):
    h = 1e-6
    return -0.5 * (cosine.log_snr(t + h) - cosine.log_snr(t - h)) / (2 * h)
'''},
        "fails": ["ex2_4_check"],
    },
]

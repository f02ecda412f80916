"""Chapter 4: planted-wrong submissions."""

PLANTS = [
    {
        "name": "flow_map_inverted",
        # composes the distribution functions the wrong way round: F_t^{-1}(F_s(x))
        "answers": {"ex4_1a_answer": '''\
def exact_flow_1d(x, t, s):
    def cdf(y, u):
        a, sig = (c.item() for c in linear.alpha_sigma(torch.tensor([u], dtype=f64)))
        sd = (a**2 * mix1d.covs[:, 0, 0] + sig**2).sqrt()
        z = (y[:, None] - a * mix1d.means[None, :, 0]) / sd
        return (mix1d.weights * 0.5 * (1 + torch.erf(z / math.sqrt(2)))).sum(1)

    target = cdf(x[:, 0], s)
    lo, hi = torch.full_like(target, -20.0), torch.full_like(target, 20.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        below = cdf(mid, t) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return ((lo + hi) / 2)[:, None]
'''},
        # 4.1(d) measures its errors against exact_flow_1d
        "fails": ["ex4_1a_check", "ex4_1d_check"],
    },
    {
        "name": "2m_extrapolates_to_the_step_end",
        # extrapolates x0_hat to the end of the step (weight 1 / r) instead of its middle:
        # the method is then only of first order
        "answers": {"ex4_1c_answer": '''\
def dpmpp2m_sampler(x0_model, x, times, schedule):
    ell = schedule.log_snr(times.double()) / 2
    alpha, sigma = schedule.alpha_sigma(times.double())
    x0_prev = None
    for k in range(len(times) - 1):
        x0_hat = x0_model(x, times[k].item())
        h = (ell[k + 1] - ell[k]).item()
        D = x0_hat
        if x0_prev is not None:
            r = (ell[k] - ell[k - 1]).item() / h
            D = x0_hat + (x0_hat - x0_prev) / r
        x = (sigma[k + 1] / sigma[k]).item() * x \\
            - alpha[k + 1].item() * math.expm1(-h) * D
        x0_prev = x0_hat
    return x
'''},
        # 4.1(d) checks the order of 2M on the mixture
        "fails": ["ex4_1c_check", "ex4_1d_check"],
    },
    {
        "name": "calls_samplers_ddim_step",
        "calls_dmlib": True,
        # Exercise 4.1(b) asks for the DDIM step; dmlib's is switched off
        "answers": {"ex4_1b_answer": '''\
def ddim_sampler(x0_model, x, times, schedule):
    for t, s in zip(times[:-1].tolist(), times[1:].tolist()):
        x = samplers.ddim_step(x, x0_model(x, t), t, s, schedule)
    return x
'''},
        # 4.1(d) runs ddim_sampler
        "fails": ["ex4_1b_check", "ex4_1d_check"],
    },
    {
        "name": "ddim_through_the_corrector",
        "calls_dmlib": True,
        # samplers.unic_step with no history and x0_s = x0_hat is one DDIM step; it is
        # switched off with the other steps of samplers
        "answers": {"ex4_1b_answer": '''\
def ddim_sampler(x0_model, x, times, schedule):
    for t, s in zip(times[:-1].tolist(), times[1:].tolist()):
        x0 = x0_model(x, t)
        x = samplers.unic_step(x, x0, t, s, schedule, x0_s=x0)
    return x
'''},
        "fails": ["ex4_1b_check", "ex4_1d_check"],
    },
    {
        "name": "ddim_evaluates_at_the_step_end",
        # asks the denoiser at the next time s instead of the current t: exact on a
        # point mass and still of order 1, but off by a factor 2 at 32 steps
        "answers": {"ex4_1b_answer": '''\
def ddim_sampler(x0_model, x, times, schedule):
    for t, s in zip(times[:-1].tolist(), times[1:].tolist()):
        (a_t, a_s), (sig_t, sig_s) = (
            c.tolist() for c in schedule.alpha_sigma(torch.tensor([t, s], dtype=f64)))
        x0_hat = x0_model(x, s)
        eps_hat = (x - a_t * x0_hat) / sig_t
        x = a_s * x0_hat + sig_s * eps_hat
    return x
'''},
        "fails": ["ex4_1b_check", "ex4_1d_check"],
    },
    {
        "name": "2m_through_the_checks_oracle",
        # calls the function the visible check of 4.1(c) defines: the check runs the
        # answer before it defines its oracle
        "answers": {"ex4_1c_answer": '''\
def dpmpp2m_sampler(x0_model, x, times, schedule):
    return two_m_by_hand(x0_model, x, times, schedule)
'''},
        "fails": ["ex4_1c_check", "ex4_1d_check"],
    },
    {
        "name": "family_step_linear_in_eta",
        # (1 + eta) / 2 instead of (1 + eta^2) / 2: right at eta = 0 and 1 only
        "answers": {"ex4_3_answer": '''\
def family_em_step(x_t, score, t, s, schedule, eta, z):
    tt = torch.tensor([t], dtype=f64)
    a, sig = (c.item() for c in schedule.alpha_sigma(tt))
    da, dsig = (c.item() for c in schedule.derivatives(tt))
    f = da / a
    g2 = 2 * sig * dsig - 2 * f * sig**2
    dt = t - s
    return (x_t - dt * (f * x_t - (1 + eta) / 2 * g2 * score)
            + eta * math.sqrt(g2 * dt) * z)
'''},
        "fails": ["ex4_3_check"],
    },
    {
        "name": "family_step_from_private_sde",
        # reads f and g^2 off the schedule's private _sde instead of computing them
        "answers": {"ex4_3_answer": '''\
def family_em_step(x_t, score, t, s, schedule, eta, z):
    f, g2 = (c.item() for c in schedule._sde(torch.tensor([t], dtype=f64)))
    dt = t - s
    return (x_t - dt * (f * x_t - (1 + eta**2) / 2 * g2 * score)
            + eta * math.sqrt(g2 * dt) * z)
'''},
        "fails": ["ex4_3_check"],
    },
]

"""Chapter 6: planted-wrong submissions."""

PLANTS = [
    {
        "name": "joint_without_weights",
        # the components of a class summed with equal weights instead of pi_m
        "answers": {"ex6_1a_answer": '''\
def log_joint(x, t):
    a, s = (v.item() for v in schedule.alpha_sigma(t))
    var = a**2 * lab_stds**2 + s**2
    log_n = (-0.5 * (x[:, None] - a * lab_means) ** 2 / var
             - 0.5 * torch.log(2 * math.pi * var))
    return torch.stack([log_n[:, lab_labels == c].logsumexp(1) for c in (0, 1)], 1)
'''},
        # the guided score, the noised tilt and the measurements of (d) are built on it
        "fails": ["ex6_1a_check", "ex6_1b_check", "ex6_1c_check", "ex6_1d_check"],
    },
    {
        "name": "noised_tilt_is_the_guided_score",
        # the tilt of the noised densities (the guided score of (b)) in place of the
        # noised tilt: right at w = 0 and 1 only
        "answers": {"ex6_1c_answer": '''\
def noised_tilted_score(x, t, y, w):
    return guided_score(x, t, y, w)
'''},
        # 6.1(d) then finds the "noised tilt" samples as pure as CFG's
        "fails": ["ex6_1c_check", "ex6_1d_check"],
    },
    {
        "name": "noised_tilt_without_alpha",
        # the likelihood of x_t given x0 centred at x0 instead of alpha_t x0
        "answers": {"ex6_1c_answer": '''\
def noised_tilted_score(x, t, y, w):
    grid = line[::5]
    a, s = (v.item() for v in schedule.alpha_sigma(t))
    lj0 = log_joint(grid, 0.0)
    log_tilt = (1 - w) * lj0.logsumexp(1) + w * lj0[:, y]
    log_post = log_tilt - 0.5 * ((x[:, None] - grid) / s) ** 2
    x0_hat = (torch.softmax(log_post, 1) * grid).sum(1)
    return (a * x0_hat - x) / s**2
'''},
        "fails": ["ex6_1c_check", "ex6_1d_check"],
    },
    {
        "name": "joint_from_dmlib_mixture",
        "calls_dmlib": True,
        # builds the lab mixture with toy.GaussianMixture, which 6.1 switches off
        "answers": {"ex6_1a_answer": '''\
def log_joint(x, t):
    lab = toy.GaussianMixture(lab_means[:, None].tolist(), stds=lab_stds.tolist(),
                              weights=lab_weights.tolist(), labels=lab_labels.tolist())
    return torch.stack([lab.log_prob(x[:, None], t, schedule, y=c) for c in (0, 1)], 1)
'''},
        "fails": ["ex6_1a_check", "ex6_1b_check", "ex6_1c_check", "ex6_1d_check"],
    },
    {
        "name": "normaliser_ignores_the_class_weight",
        # averages p_t(y | x)^w over samples of p_t(x | y) as if they were samples of p_t
        "answers": {"ex6_3_answer": '''\
def tilted_log_normaliser(y, w, t, n, generator):
    x0 = mixture.sample(n, y=y, generator=generator).double()
    a, s = (v.item() for v in schedule.alpha_sigma(t))
    x_t = a * x0 + s * torch.randn(x0.shape, generator=generator, dtype=f64)
    log_post = mixture.class_log_posterior(x_t, t, schedule)[:, y]
    return (torch.logsumexp(w * log_post, 0) - math.log(n)).item()
'''},
        "fails": ["ex6_3_check"],
    },
    {
        "name": "normaliser_from_unconditional_samples",
        # the body's estimator: samples of p_t (no class) and the average of p_t(y | x)^w;
        # consistent, so only the replay of the draws can tell it from the one asked for
        "answers": {"ex6_3_answer": '''\
def tilted_log_normaliser(y, w, t, n, generator):
    x0 = mixture.sample(n, generator=generator).double()
    a, s = (v.item() for v in schedule.alpha_sigma(t))
    x_t = a * x0 + s * torch.randn(x0.shape, generator=generator, dtype=f64)
    log_post = mixture.class_log_posterior(x_t, t, schedule)[:, y]
    return (torch.logsumexp(w * log_post, 0) - math.log(n)).item()
'''},
        "fails": ["ex6_3_check"],
    },
    {
        "name": "implicit_classifier_eps_formula_on_x0",
        # applies the eps-model formula -(eps(y) - eps(null)) / sigma_t to x0 predictions
        "answers": {"ex6_4_answer": '''\
def implicit_classifier_grad(model, x_t, t, y, schedule):
    return -(model(x_t, t, y) - model(x_t, t, None)) / schedule.sigma(t).item()
'''},
        "fails": ["ex6_4_check"],
    },
    {
        "name": "implicit_classifier_calls_predict",
        "calls_dmlib": True,
        # converts the x0 predictions to eps with samplers.predict, which is switched off
        "answers": {"ex6_4_answer": '''\
def implicit_classifier_grad(model, x_t, t, y, schedule):
    e_y = samplers.predict(model, x_t, t, schedule, "eps", y=y)
    e_n = samplers.predict(model, x_t, t, schedule, "eps")
    return -(e_y - e_n) / schedule.sigma(t).item()
'''},
        "fails": ["ex6_4_check"],
    },
]

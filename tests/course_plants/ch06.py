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
        # the guided score and the measurements of (d) are built on log_joint
        "fails": ["ex6_1a_check", "ex6_1b_check", "ex6_1d_check"],
    },
    {
        "name": "ddim_eps_without_sigma",
        # takes -score itself for the noise prediction, forgetting the factor sigma_t
        "answers": {"ex6_1c_answer": '''\
def ddim_sample(score, x_T, n_steps):
    times = torch.linspace(1.0, 0.0, n_steps + 1, dtype=f64).tolist()
    x = x_T
    for t, s in zip(times[:-1], times[1:]):
        a_t, s_t = (v.item() for v in schedule.alpha_sigma(t))
        a_s, s_s = (v.item() for v in schedule.alpha_sigma(s))
        eps = -score(x, t)
        x0 = (x - s_t * eps) / a_t
        x = a_s * x0 + s_s * eps
    return x
'''},
        # 6.1(d) only compares mean posteriors, which this sampler happens to get close
        # to (2,000 samples, the seed fixed): only the closed-form checks of (c) fail
        "fails": ["ex6_1c_check"],
    },
    {
        "name": "calls_samplers_sample",
        "calls_dmlib": True,
        # Exercise 6.1(c) asks for the DDIM loop; dmlib's sampler is switched off
        "answers": {"ex6_1c_answer": '''\
def ddim_sample(score, x_T, n_steps):
    class ScoreModel:
        prediction = "score"

        def __call__(self, x, t, y=None):
            return score(x[:, 0], float(t[0]))[:, None]

    return samplers.sample(ScoreModel(), x_T[:, None], schedule, method="ddim",
                           n_steps=n_steps)[:, 0]
'''},
        # 6.1(d) samples with ddim_sample, so it fails with it
        "fails": ["ex6_1c_check", "ex6_1d_check"],
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

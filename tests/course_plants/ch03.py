"""Chapter 3: planted-wrong submissions."""

PLANTS = [
    {
        "name": "dsm_mean_over_coordinates",
        # averages the squared error over the coordinates too, instead of summing them
        "answers": {"ex3_1a_answer": '''\
def dsm_loss(score_fn, x0, eps, alpha, sigma):
    x_t = alpha * x0 + sigma * eps
    return 0.5 * (score_fn(x_t) + eps / sigma).pow(2).mean().item()
'''},
        "fails": ["ex3_1a_check"],
    },
    {
        "name": "fit_with_the_wrong_target_sign",
        # regresses onto +eps / sigma: the sign of the conditional score is lost
        "answers": {"ex3_1b_answer": '''\
def fit_dsm(x0, eps, alpha, sigma, ridge):
    feats = bump_features(alpha * x0 + sigma * eps)
    n, k = feats.shape
    gram = feats.T @ feats / n + ridge * torch.eye(k, dtype=feats.dtype)
    return torch.linalg.solve(gram, feats.T @ (eps / sigma) / n)
'''},
        # 3.1(d) fits its learning curve with fit_dsm
        "fails": ["ex3_1b_check", "ex3_1d_check"],
    },
    {
        "name": "posterior_cov_without_sigma_squared",
        # forgets the factor sigma_t^2 in front of the Hessian
        "answers": {"ex3_3_answer": '''\
def posterior_cov(x_t, t):
    a, s = (c.item() for c in cosine.alpha_sigma(torch.tensor(t, dtype=f64)))
    x = x_t.detach().clone().requires_grad_(True)
    score = eight.score(x, t, cosine)
    rows = [torch.autograd.grad(score[:, j].sum(), x, retain_graph=True)[0]
            for j in range(x.shape[1])]
    hessian = torch.stack(rows, 1)
    return s**2 / a**2 * (torch.eye(2, dtype=x.dtype) + hessian)
'''},
        "fails": ["ex3_3_check"],
    },
    {
        "name": "calls_gaussian_mixture",
        "calls_dmlib": True,
        # Exercise 3.4 asks for the score of a noised Gaussian; dmlib's mixture is switched off
        "answers": {"ex3_4_answer": '''\
def noised_gaussian_score(x, mean, cov, alpha, sigma):
    cov_t = alpha**2 * cov + sigma**2 * torch.eye(len(mean), dtype=cov.dtype)
    gauss = toy.GaussianMixture((alpha * mean)[None], cov_t[None])
    return gauss.score(x, 0.0, schedules.FlowSchedule())
'''},
        "fails": ["ex3_4_check"],
    },
]

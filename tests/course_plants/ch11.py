"""Chapter 11: planted-wrong submissions."""

PLANTS = [
    {
        "name": "kl_sign_slip",
        # + log variance instead of - log variance: rewards a posterior variance near 0
        "answers": {"ex11_1a_answer": '''\
def kl_diag(mean, logvar):
    return 0.5 * (mean**2 + logvar.exp() - 1 + logvar).flatten(1).sum(1)
'''},
        "fails": ["ex11_1a_check"],
    },
    {
        "name": "calls_kl_to_standard_normal",
        "calls_dmlib": True,
        # Exercise 11.1(a) asks for what nn.autoencoder.kl_to_standard_normal computes; it
        # is switched off while the exercise is graded
        "answers": {"ex11_1a_answer": '''\
def kl_diag(mean, logvar):
    return nn.autoencoder.kl_to_standard_normal(mean, logvar)
'''},
        "fails": ["ex11_1a_check"],
    },
    {
        "name": "reparam_std_is_the_variance",
        # multiplies the noise by exp(logvar), the variance, instead of exp(logvar / 2)
        "answers": {"ex11_1b_answer": '''\
def reparam_draw(mean, logvar, gen):
    eps = torch.randn(mean.shape, generator=gen, dtype=mean.dtype)
    return mean + torch.exp(logvar) * eps
'''},
        "fails": ["ex11_1b_check"],
    },
    {
        "name": "scale_is_the_std",
        # returns the standard deviation where its inverse is asked for
        "answers": {"ex11_1c_answer": '''\
def scale_and_shift(latents):
    z = latents.double()
    return float(z.std()), float(z.mean())
'''},
        "fails": ["ex11_1c_check"],
    },
    {
        "name": "log_snr_shift_with_the_wrong_sign",
        # subtracts 2 log sigma_z: latents of a large spread would look noisier, not cleaner
        "answers": {"ex11_1d_answer": '''\
def matched_time(schedule, t, sigma_z):
    lam = schedule.log_snr(torch.tensor([t], dtype=torch.float64)) - 2 * math.log(sigma_z)
    return float(schedule.t_from_log_snr(lam))
'''},
        "fails": ["ex11_1d_check"],
    },
    {
        "name": "monte_carlo_draws_from_the_prior",
        # draws z from p = N(0, I) instead of q: the average is not the KL from q to p
        "answers": {"ex11_3_answer": '''\
def kl_monte_carlo(mean, logvar, n, gen):
    z = torch.randn(n, mean.shape[0], generator=gen, dtype=mean.dtype)
    log_q = (-0.5 * logvar - 0.5 * (z - mean) ** 2 / logvar.exp()).sum(1)
    log_p = (-0.5 * z**2).sum(1)
    return float((log_q - log_p).mean())
'''},
        "fails": ["ex11_3_check"],
    },
]

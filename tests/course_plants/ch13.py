"""Chapter 13: planted-wrong submissions."""

PLANTS = [
    {
        "name": "slerp_is_the_straight_line",
        # interpolates linearly: right at the end points, wrong (inside the sphere) between
        "answers": {"ex13_1a_answer": '''\
def my_slerp(a, b, alpha):
    return (1 - alpha) * a + alpha * b
'''},
        "fails": ["ex13_1a_check"],
    },
    {
        "name": "replacement_without_noise",
        # puts back alpha_s x_known without the noise sigma_s eps': a context no noised image has
        "answers": {"ex13_1b_answer": '''\
def my_inpaint(model, x_known, mask, n_steps, generator):
    grid = samplers.time_grid(n_steps, t_max=0.999).tolist()
    x = torch.randn(x_known.shape, generator=generator, dtype=x_known.dtype)
    for i, (t, s) in enumerate(zip(grid[:-1], grid[1:])):
        x0_hat = samplers.predict(model, x, t, cosine, "x0")
        if i == len(grid) - 2:
            x = samplers.ddim_step(x, x0_hat, t, s, cosine)
            break
        x = samplers.ddpm_step(x, x0_hat, t, s, cosine, generator=generator)
        a_s = cosine.alpha(torch.tensor([s], dtype=torch.float64)).item()
        x = mask * (a_s * x_known) + (1 - mask) * x
    return mask * x_known + (1 - mask) * x
'''},
        "fails": ["ex13_1b_check"],
    },
    {
        "name": "inversion_steps_backwards",
        # the coefficients of the two times swapped: each step moves from s back to t
        "answers": {"ex13_1c_answer": '''\
def my_invert(model, x0, n_steps):
    grid = samplers.time_grid(n_steps, t_min=1e-3).flip(0).tolist()
    x = x0
    for t, s in zip(grid[:-1], grid[1:]):
        x0_hat = samplers.predict(model, x, t, cosine, "x0")
        tt = torch.tensor([t, s], dtype=torch.float64)
        (a_t, a_s), (s_t, s_s) = cosine.alpha(tt).tolist(), cosine.sigma(tt).tolist()
        x = a_t * x0_hat + s_t * (x - a_s * x0_hat) / s_s
    return x
'''},
        "fails": ["ex13_1c_check"],
    },
    {
        "name": "calls_edit_ddim_invert",
        "calls_dmlib": True,
        # Exercise 13.1(c) asks for DDIM inversion; dmlib's is switched off while grading
        "answers": {"ex13_1c_answer": '''\
def my_invert(model, x0, n_steps):
    return edit.ddim_invert(model, x0, cosine, n_steps=n_steps)
'''},
        "fails": ["ex13_1c_check"],
    },
    {
        "name": "line_norm_forgets_the_cross_term",
        # right for independent noises only: drops 2 alpha (1 - alpha) rho d
        "answers": {"ex13_3_answer": '''\
def line_norm2(alpha, d, rho):
    return ((1 - alpha) ** 2 + alpha ** 2) * d
'''},
        "fails": ["ex13_3_check"],
    },
    {
        "name": "resampling_repeats_the_last_step",
        # counts r evaluations on every step, the last one too
        "answers": {"ex13_4_answer": '''\
def inpaint_nfe(n_steps, resample):
    return n_steps * resample
'''},
        "fails": ["ex13_4_check"],
    },
]

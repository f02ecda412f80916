"""Chapter 8: planted-wrong submissions."""

PLANTS = [
    {
        "name": "overshoot_counts_pixels",
        # the share of pixels outside [-1, 1] instead of the mean distance outside it
        "answers": {"ex8_1b_answer": '''\
def guided_x0(model, x_t, t, y, w, schedule):
    a = schedule.alpha(t).reshape(-1, 1, 1, 1)
    s = schedule.sigma(t).reshape(-1, 1, 1, 1)
    return (x_t - s * cfg_eps(model, x_t, t, y, w)) / a


def overshoot(x0):
    return (x0.abs() > 1).float().mean().item()
'''},
        "fails": ["ex8_1b_check", "ex8_1c_check"],   # (c) measures with this overshoot
    },
    {
        "name": "nfe_ignores_guidance",
        # forgets that CFG evaluates the network twice per step
        "answers": {"ex8_3_answer": '''\
def guided_nfe(method, n_steps, kind, w):
    return samplers.nfe(method, n_steps)
'''},
        "fails": ["ex8_3_check"],
    },
    {
        "name": "calls_diffusion_convert",
        "calls_dmlib": True,
        # Exercise 8.1(b) asks for the eps -> x0 conversion; dmlib's is switched off
        "answers": {"ex8_1b_answer": '''\
def guided_x0(model, x_t, t, y, w, schedule):
    eps = cfg_eps(model, x_t, t, y, w)
    return diffusion.convert(eps, x_t, t, schedule, src="eps", dst="x0")


def overshoot(x0):
    return (x0.abs() - 1).clamp(min=0).mean().item()
'''},
        # 8.1(c) measures the overshoot with guided_x0, so it fails with it
        "fails": ["ex8_1b_check", "ex8_1c_check"],
    },
]

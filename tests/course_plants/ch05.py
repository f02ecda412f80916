"""Chapter 5: planted-wrong submissions."""

PLANTS = [
    {
        "name": "velocity_ignores_weights",
        # the posterior probabilities p(m | x_t) without the mixture weights pi_m
        "answers": {"ex5_1a_answer": '''\
def marginal_velocity(x, t):
    a, s = 1.0 - t, t
    var = a**2 * lab_stds**2 + s**2
    diff = x[:, None, :] - a * lab_means
    log_n = -0.5 * (diff**2).sum(-1) / var - torch.log(var)
    resp = torch.softmax(log_n, 1)
    x0_m = lab_means + (a * lab_stds**2 / var)[:, None] * diff
    x0_hat = (resp[..., None] * x0_m).sum(1)
    return (x - x0_hat) / t
'''},
        # 5.1(d) samples with this field: one step lands on the unweighted mean
        "fails": ["ex5_1a_check", "ex5_1d_check"],
    },
    {
        "name": "euler_field_at_end_of_step",
        # evaluates the field at the end of each step (and so at t = 0 in the last one)
        "answers": {"ex5_1b_answer": '''\
def euler_sample(velocity, x1, n_steps):
    times = torch.linspace(1.0, 0.0, n_steps + 1, dtype=torch.float64).tolist()
    x, path = x1, [x1]
    for t, s in zip(times[:-1], times[1:]):
        x = x + (s - t) * velocity(x, s)
        path.append(x)
    return x, torch.stack(path)
'''},
        "fails": ["ex5_1b_check", "ex5_1d_check"],
    },
    {
        "name": "straightness_even_grid_formula",
        # n times the sum of squared steps: right on an even grid only
        "answers": {"ex5_1c_answer": '''\
def my_straightness(trajectory, times):
    d = trajectory.flatten(2).double()
    n = d.shape[0] - 1
    kinetic = n * ((d[1:] - d[:-1]) ** 2).sum((0, 2))
    chord = ((d[-1] - d[0]) ** 2).sum(-1)
    return float((kinetic - chord).mean())
'''},
        # 5.1(d) uses the even Euler grid, where this formula is right
        "fails": ["ex5_1c_check"],
    },
    {
        "name": "straightness_without_dt",
        # the sum of squared steps, not divided by the step lengths
        "answers": {"ex5_1c_answer": '''\
def my_straightness(trajectory, times):
    d = trajectory.flatten(2).double()
    kinetic = ((d[1:] - d[:-1]) ** 2).sum((0, 2))
    chord = ((d[-1] - d[0]) ** 2).sum(-1)
    return float((kinetic - chord).mean())
'''},
        # S64 then differs from the straightness of path64 computed in the check
        "fails": ["ex5_1c_check", "ex5_1d_check"],
    },
    {
        "name": "calls_flow_straightness",
        "calls_dmlib": True,
        # Exercise 5.1(c) asks for the straightness; dmlib's is switched off
        "answers": {"ex5_1c_answer": '''\
def my_straightness(trajectory, times):
    return flow.straightness(trajectory)
'''},
        # 5.1(d) measures S64 with my_straightness, so it fails with it
        "fails": ["ex5_1c_check", "ex5_1d_check"],
    },
    {
        "name": "pairing_sorts_noise_only",
        # sorts the noise but ignores the order of the data
        "answers": {"ex5_3_answer": '''\
def ot_pairing_1d(x0, eps):
    return eps.sort().values
'''},
        "fails": ["ex5_3_check"],
    },
    {
        "name": "pairing_by_a_general_solver",
        # right on small batches, but the B x B cost matrix of the hidden B = 10^6 case
        # can not be allocated: the exercise asks for the structure in one dimension
        "answers": {"ex5_3_answer": '''\
def ot_pairing_1d(x0, eps):
    from scipy.optimize import linear_sum_assignment
    cost = ((x0[:, None] - eps[None, :]) ** 2).numpy()
    rows, cols = linear_sum_assignment(cost)
    return eps[torch.as_tensor(cols)[torch.as_tensor(rows).argsort()]]
'''},
        "fails": ["ex5_3_check"],
    },
    {
        "name": "floor_forgets_dimension",
        # the floor of one coordinate
        "answers": {"ex5_4_answer": '''\
def cfm_floor(sigma_data, d):
    return math.pi * sigma_data / 2
'''},
        "fails": ["ex5_4_check"],
    },
]

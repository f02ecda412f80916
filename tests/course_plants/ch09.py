"""Chapter 9: planted-wrong submissions."""

PLANTS = [
    {
        "name": "frechet_through_private_helpers",
        "calls_dmlib": True,
        # answers 9.1(a) with dmlib's own helpers, switched off for the whole exercise;
        # (b) and (c) call my_frechet, so they fail with it
        "answers": {"ex9_1a_answer": '''\
def my_frechet(fa, fb):
    return metrics._frechet(*metrics._moments(fa.double()), *metrics._moments(fb.double()))
'''},
        "fails": ["ex9_1a_check", "ex9_1b_check", "ex9_1c_check"],
    },
    {
        "name": "floor_reuses_one_second_set",
        # draws the second set once and compares every fresh first set with it
        "answers": {"ex9_1b_answer": '''\
def floor_at(draw, n, reps, gen):
    fixed = draw(n, gen)
    return float(np.mean([my_frechet(draw(n, gen), fixed) for _ in range(reps)]))
'''},
        "fails": ["ex9_1b_check"],
    },
    {
        "name": "fd_infinity_takes_the_largest_n",
        # trusts the largest sample size instead of extrapolating the 1/N bias away
        "answers": {"ex9_1c_answer": '''\
def fd_infinity(sample_a, sample_b, ns, reps, gen):
    n = max(ns)
    return float(np.mean([my_frechet(sample_a(n, gen), sample_b(n, gen))
                          for _ in range(reps)]))
'''},
        "fails": ["ex9_1c_check"],
    },
    {
        "name": "dequantisation_noise_twice_as_wide",
        # uniform on the whole bin width on each side, [-2/255, 2/255), not [-1/255, 1/255)
        "answers": {"ex9_3b_answer": '''\
def dequantised_bpd(x, log_density, draws, gen):
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    for _ in range(draws):
        x_dq = x + (torch.rand(x.shape, generator=gen, dtype=x.dtype) - 0.5) * 2 / 127.5
        total = total + my_bits_per_dim(log_density(x_dq), x.shape[1])
    return total / draws
'''},
        "fails": ["ex9_3b_check"],
    },
    {
        "name": "precision_radius_counts_the_point_itself",
        # the k-th smallest distance of a row includes the zero distance to itself
        "answers": {"ex9_4_answer": '''\
def my_precision(samples, data, k):
    radii = torch.cdist(data, data).sort(1).values[:, k - 1]
    return float((torch.cdist(samples, data) <= radii[None]).any(1).double().mean())
'''},
        "fails": ["ex9_4_check"],
    },
    {
        "name": "calls_metrics_precision_recall",
        "calls_dmlib": True,
        # Exercise 9.4 asks for the k-NN precision; dmlib's is switched off
        "answers": {"ex9_4_answer": '''\
def my_precision(samples, data, k):
    return metrics.precision_recall(samples, data, k=k)["precision"]
'''},
        "fails": ["ex9_4_check"],
    },
    {
        "name": "calls_metrics_private_coverage",
        "calls_dmlib": True,
        # the private helper behind precision_recall is switched off too
        "answers": {"ex9_4_answer": '''\
def my_precision(samples, data, k):
    return metrics._coverage(samples, data, k)
'''},
        "fails": ["ex9_4_check"],
    },
]

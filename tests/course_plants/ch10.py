"""Chapter 10: planted-wrong submissions."""

PLANTS = [
    {
        "name": "conv_flops_forget_weight_gradient",
        # counts the backward pass as one more forward pass: the input's gradient only
        "answers": {"ex10_1a_answer": '''\
def conv_step_flops(b, c_in, c_out, n_px, taps, first):
    forward = 2 * b * n_px * c_in * c_out * taps
    return forward * (1 if first else 2)
'''},
        "fails": ["ex10_1a_check"],
    },
    {
        "name": "timer_without_final_sync",
        # stops the clock before the device has finished the queued work
        "answers": {"ex10_1c_answer": '''\
def honest_time(step, sync, warmup, iters):
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - start) / iters
'''},
        "fails": ["ex10_1c_check"],
    },
    {
        "name": "scale_after_fp16",
        # converts to fp16 first and scales afterwards: the small gradients are already 0
        "answers": {"ex10_2_answer": '''\
def fp16_roundtrip(grad, scale):
    return grad.half().float() * scale / scale


def largest_safe_scale(max_abs):
    return 2.0 ** math.floor(math.log2(torch.finfo(torch.float16).max / max_abs))
'''},
        "fails": ["ex10_2_check"],
    },
    {
        "name": "shard_draws_only_its_rows",
        # each process draws shape[0] rows of its own from the seed: every rank gets the
        # same numbers, and the result depends on the number of processes
        "answers": {"ex10_4_answer": '''\
def shard_randn(seed, rank, world, shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))
'''},
        "fails": ["ex10_4_check"],
    },
    {
        "name": "calls_noise_shard",
        "calls_dmlib": True,
        # Exercise 10.4 asks for what noise.Shard does; it is switched off while grading
        "answers": {"ex10_4_answer": '''\
def shard_randn(seed, rank, world, shape):
    gen = noise.Shard(torch.Generator().manual_seed(seed), rank, world)
    return noise.randn(shape, generator=gen)
'''},
        "fails": ["ex10_4_check"],
    },
]

"""dmlib on every device, checked on a CPU.

CI has no GPU, so these tests make the two ways a GPU run breaks or crawls visible here:

* **Random draws with a generator on the wrong device.** The chapters pass CPU generators on
  every machine; PyTorch refuses a CPU generator for a CUDA tensor. The inputs here live on
  PyTorch's ``meta`` device (shapes without data, as foreign to a CPU generator as a GPU is),
  and every torch random function is wrapped by a guard that rejects a draw whose generator
  sits on another device than the one the draw is made on. The guard also rejects a draw made
  anywhere in dmlib but its one noise helper, dmlib/noise.py.
* **Host syncs.** Every read of a tensor's value back to the host (``.item()``, ``bool(t)``,
  ...) stalls a GPU pipeline. They are counted (tests/_syncs.py): a constant number per
  ``sample()`` call whatever the number of steps, none in a network's forward pass.
"""

from __future__ import annotations

import contextlib
import traceback

import pytest
import torch

from _syncs import count_syncs
from dmlib import diffusion, flow, guidance, losses, noise, samplers, schedules, toy, train
from dmlib.nn import MLP

META = torch.device("meta")
RANDOM_FUNCTIONS = ("randn", "rand", "randint", "randn_like", "rand_like", "normal", "multinomial", "randperm",
                    "bernoulli")
RANDOM_METHODS = ("normal_", "uniform_", "bernoulli_", "random_", "exponential_", "geometric_", "cauchy_",
                  "log_normal_")  # in-place draws on a tensor: they happen on the tensor's own device


class DrawGuard:
    """Records every torch random draw; rejects a generator on another device than the draw's,
    and a draw made inside dmlib anywhere but dmlib/noise.py."""

    def __init__(self):
        self.draws, self.errors = [], []

    def check(self, name, args, kwargs):
        gen = kwargs.get("generator")
        if name.endswith("_like") or name in ("multinomial", "bernoulli", "normal"):
            first = args[0] if args else None
            where = kwargs.get("device") or (first.device if isinstance(first, torch.Tensor) else torch.device("cpu"))
        else:
            where = kwargs.get("device") or torch.device("cpu")
        where = torch.device(where)
        stack = traceback.extract_stack()[:-2]
        if "torch/nn/init.py" in stack[-1].filename:
            return  # a layer's weight initialisation: once, at construction, from torch's global generator
        caller = next((f for f in reversed(stack) if "/dmlib/" in f.filename or "/tests/" in f.filename), None)
        self.draws.append((name, where, caller.filename if caller else "?"))
        if gen is not None and gen.device.type != where.type:
            self.errors.append(f"torch.{name} with a generator on {gen.device} draws on {where} "
                               f"(at {caller.filename}:{caller.lineno})")
        if caller is not None and "/dmlib/" in caller.filename and not caller.filename.endswith("dmlib/noise.py"):
            self.errors.append(f"torch.{name} called in {caller.filename}:{caller.lineno}, not through dmlib.noise")


@contextlib.contextmanager
def guarded_draws():
    guard = DrawGuard()
    saved = {name: getattr(torch, name) for name in RANDOM_FUNCTIONS}

    def wrap(name, fn):
        def wrapper(*args, **kwargs):
            guard.check(name, args, kwargs)
            return fn(*args, **kwargs)
        return wrapper

    saved_methods = {name: getattr(torch.Tensor, name) for name in RANDOM_METHODS}

    def wrap_method(name, fn):
        def wrapper(self, *args, **kwargs):
            guard.check(name, (self, *args), {**kwargs, "device": self.device})
            return fn(self, *args, **kwargs)
        return wrapper

    for name, fn in saved.items():
        setattr(torch, name, wrap(name, fn))
    for name, fn in saved_methods.items():
        setattr(torch.Tensor, name, wrap_method(name, fn))
    try:
        yield guard
    finally:
        for name, fn in saved.items():
            setattr(torch, name, fn)
        for name, fn in saved_methods.items():
            setattr(torch.Tensor, name, fn)
    assert not guard.errors, "\n".join(guard.errors[:5])


def cpu_gen(seed=0):
    return torch.Generator().manual_seed(seed)


LIN = schedules.LinearSchedule()
FLOW = schedules.FlowSchedule()


def meta_mlp(prediction="eps", n_classes=None):
    return MLP(hidden=16, depth=1, prediction=prediction, n_classes=n_classes).to(META)


# -- random draws: generator device ---------------------------------------------------------------
@pytest.mark.parametrize(
    "method, eta",
    [(m, None) for m in samplers.METHODS] + [("ddim", 0.5), ("euler_maruyama", 0.0), ("euler_maruyama", 0.5)],
)
def test_samplers_draw_with_a_cpu_generator_for_another_device(method, eta):
    x_T = torch.empty(8, 2, device=META)
    with guarded_draws() as guard:
        out = samplers.sample(meta_mlp(), x_T, LIN, method=method, n_steps=4, eta=eta, generator=cpu_gen())
    assert out.device == META and out.shape == x_T.shape
    # eta=None is each method's default: 0 for DDIM (deterministic), 1 for Euler-Maruyama
    stochastic = (method in ("ddpm", "dpmpp_2m_sde") or (method == "euler_maruyama" and eta != 0.0)
                  or (method == "ddim" and bool(eta)))
    assert bool(guard.draws) == stochastic, f"{method} (eta={eta}) drew {len(guard.draws)} times"


@pytest.mark.parametrize("options", [dict(method="ddim", corrector_steps=2), dict(method="heun", churn=0.3)])
def test_correctors_and_churn_draw_with_a_cpu_generator_for_another_device(options):
    x_T = torch.empty(8, 2, device=META)
    with guarded_draws() as guard:
        out = samplers.sample(meta_mlp(), x_T, LIN, n_steps=4, generator=cpu_gen(), **options)
    assert out.device == META and out.shape == x_T.shape
    assert guard.draws, f"{options} drew nothing on the generator's device"


def test_step_functions_and_forward_process_draw_on_the_generators_device():
    x = torch.empty(8, 2, device=META)
    with guarded_draws() as guard:
        diffusion.q_sample(x, 0.3, LIN, generator=cpu_gen())
        diffusion.q_step(x, 0.2, 0.3, LIN, generator=cpu_gen())
        samplers.ddpm_step(x, x, 0.5, 0.4, LIN, generator=cpu_gen())
        samplers.ddim_step(x, x, 0.5, 0.4, LIN, eta=0.3, generator=cpu_gen())
        samplers.euler_maruyama_step(x, x, 0.5, 0.4, LIN, generator=cpu_gen())
        samplers.langevin_step(x, x, 0.1, generator=cpu_gen())
        samplers.annealed_langevin(lambda z, t: z, x, schedules.VESchedule(), 2, 2, 0.1, generator=cpu_gen())
    assert len(guard.draws) == 2 + 3 + 1 + 4


@pytest.mark.parametrize("make_loss, prediction", [
    (lambda: losses.diffusion_loss(LIN), "eps"),
    (lambda: losses.diffusion_loss(LIN, weighting="elbo_eps"), "eps"),
    (lambda: losses.diffusion_loss(LIN, weighting="min_snr"), "v"),
    (lambda: losses.flow_matching_loss(), "velocity"),
], ids=["eps", "elbo", "min_snr", "flow"])
def test_losses_draw_times_and_noise_on_the_generators_device(make_loss, prediction):
    x0 = torch.empty(16, 2, device=META)
    with guarded_draws() as guard:
        value = make_loss()(meta_mlp(prediction), x0, None, cpu_gen())
    assert value.device == META and value.shape == ()
    assert len(guard.draws) == 2  # the times and the noise


def test_classifier_loss_and_guidance_draw_on_the_generators_device():
    x0 = torch.empty(16, 2, device=META)
    clf = MLP(hidden=16, depth=1).to(META)
    clf.out = torch.nn.Linear(16, 3, device=META)  # logits of 3 classes
    y = torch.zeros(16, dtype=torch.long, device=META)
    with guarded_draws() as guard:
        losses.classifier_loss(LIN)(lambda x, t: clf(x, t), x0, y, cpu_gen())
        cfg = guidance.ClassifierFreeGuidance(meta_mlp(n_classes=3), w=2.0)
        samplers.sample(cfg, torch.empty(4, 2, device=META), LIN, method="ddpm", n_steps=3, y=1,
                        generator=cpu_gen())
    assert len(guard.draws) == 2 + 2  # classifier loss: t and eps; DDPM: 2 of its 3 steps


def test_reflow_pairs_draw_on_the_generators_device():
    with guarded_draws():
        x0, eps = flow.reflow_pairs(meta_mlp("velocity"), 8, FLOW, n_steps=3, generator=cpu_gen(), device=META)
    assert x0.device == eps.device == META


def test_training_draws_only_through_the_noise_helper():
    data = toy.GaussianMixture.eight_gaussians().sample(256, generator=cpu_gen(1))
    model = MLP(hidden=16, depth=1, n_classes=8)
    labels = torch.arange(256) % 8
    config = train.TrainConfig(steps=3, batch_size=32, label_dropout=0.2, progress=False, device="cpu")
    with guarded_draws() as guard:
        train.train(model, losses.diffusion_loss(LIN), data, config, labels=labels)
        toy.sample_2d("moons", 10, generator=cpu_gen())
        toy.GaussianMixture.eight_gaussians().sample(10, generator=cpu_gen())
    assert len(guard.draws) >= 3 * 4  # per step: batch indices, dropout, times, noise


def test_the_guard_rejects_what_broke_on_a_gpu():
    """A test of the test: the draw the samplers used to make (CPU generator, tensor on another
    device) and a draw outside the noise helper both fail the guard."""
    with pytest.raises(AssertionError, match="generator on cpu draws on meta"):
        with guarded_draws():
            torch.randn(3, generator=cpu_gen(), device=META)
    with pytest.raises(AssertionError, match="not through dmlib.noise"):
        with guarded_draws():
            exec(compile("torch.randn(3)", "/x/dmlib/fake.py", "exec"), {"torch": torch})
    with pytest.raises(AssertionError, match="normal_ called in .*fake.py"):
        with guarded_draws():
            exec(compile("torch.empty(3).normal_()", "/x/dmlib/fake.py", "exec"), {"torch": torch})


def test_noise_helper_moves_draws_and_keeps_cpu_numbers():
    a = noise.randn((4, 2), generator=cpu_gen(3), device=META)
    assert a.device == META and a.dtype == torch.float32
    # on the CPU the helper draws exactly what torch.randn draws from the same generator state
    torch.testing.assert_close(noise.randn((4, 2), generator=cpu_gen(3)), torch.randn(4, 2, generator=cpu_gen(3)),
                               rtol=0, atol=0)
    torch.testing.assert_close(noise.rand((5,), generator=cpu_gen(3), dtype=torch.float64),
                               torch.rand(5, generator=cpu_gen(3), dtype=torch.float64), rtol=0, atol=0)
    half = noise.randn((5,), generator=cpu_gen(4), dtype=torch.float16)  # drawn in float32, then rounded
    assert half.dtype == torch.float16
    torch.testing.assert_close(half, torch.randn(5, generator=cpu_gen(4)).half(), rtol=0, atol=0)


def test_deterministic_ddim_leaves_the_generator_untouched():
    den = toy.GaussianMixture.eight_gaussians().denoiser(LIN)
    g = cpu_gen(5)
    before = g.get_state()
    samplers.sample(den, torch.randn(10, 2), LIN, method="ddim", n_steps=5, generator=g)
    assert torch.equal(g.get_state(), before)


# -- host syncs --------------------------------------------------------------------------------------
def _syncs_of_sample(method, n_steps, model):
    x_T = torch.randn(16, 2, generator=cpu_gen(6))
    with count_syncs() as log:
        samplers.sample(model, x_T, LIN, method=method, n_steps=n_steps, eta=0.5 if method == "ddim" else 0.0,
                        generator=cpu_gen(7))
    return log


@pytest.mark.parametrize("method", ["ddpm", "ddim", "euler", "heun", "euler_maruyama", "dpmpp_2m"])
def test_sample_reads_the_host_a_constant_number_of_times(method):
    model = MLP(hidden=16, depth=1).eval()
    short, long = _syncs_of_sample(method, 3, model), _syncs_of_sample(method, 24, model)
    assert long.count == short.count, (
        f"{method}: {short.count} syncs for 3 steps, {long.count} for 24:\n{long.report()}")
    assert short.count <= 2, short.report()


def test_sync_count_sees_a_per_step_read(monkeypatch):
    """A test of the test: a sampler step that reads a value back (as the old loop's
    ``times[i].item()`` did) makes the count grow with the number of steps."""
    inner = samplers._ddim

    def reads_back(x_t, x0_hat, t, s, schedule, eta=0.0, generator=None):
        float(t[0])
        return inner(x_t, x0_hat, t, s, schedule, eta, generator)

    monkeypatch.setattr(samplers, "_ddim", reads_back)
    with pytest.raises(AssertionError, match="syncs for 3 steps"):
        test_sample_reads_the_host_a_constant_number_of_times("ddim")


def test_mlp_forward_reads_nothing_back():
    model = MLP(hidden=16, depth=2, prediction="v")
    x, t = torch.randn(8, 2), torch.rand(8)
    with count_syncs() as log:
        model(x, t)
        model(x, 0.5)
    assert log.count == 0, log.report()


def test_heun_makes_the_advertised_number_of_evaluations():
    calls = []
    model = MLP(hidden=8, depth=1, prediction="velocity")
    counting = lambda x, t, y=None: calls.append(1) or model(x, t, y)  # noqa: E731
    counting.prediction = "velocity"
    for method in samplers.METHODS:
        for times in (samplers.time_grid(6), samplers.time_grid(6, t_min=0.01)):
            calls.clear()
            samplers.sample(counting, torch.randn(4, 2), FLOW, method=method, times=times, generator=cpu_gen())
            assert len(calls) == samplers.nfe(method, 6, t_min=times[-1].item()), (method, times[-1])


# -- no float64 on the device (Apple's MPS has none) ------------------------------------------------
class NoFloat64OnDevice(torch.overrides.TorchFunctionMode):
    """Fails on any torch call that returns a float64 tensor on a non-CPU device."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(o, torch.Tensor) and o.dtype == torch.float64 and o.device.type != "cpu":
                self.seen.append(getattr(func, "__name__", str(func)))
        return out


def test_no_float64_reaches_the_device():
    """Python-float times (a double each) and float64 tables must never be moved to the device
    as float64: inputs live on ``meta`` in float32, standing for MPS."""
    x = torch.empty(8, 2, device=META)
    model = meta_mlp()
    with NoFloat64OnDevice() as mode:
        diffusion.q_sample(x, 0.3, LIN, generator=cpu_gen())
        diffusion.q_step(x, 0.2, 0.3, LIN, generator=cpu_gen())
        diffusion.posterior(x, x, 0.2, 0.3, LIN)
        diffusion.convert(x, x, 0.4, LIN, src="eps", dst="velocity")
        diffusion.target(x, x, 0.4, LIN, "v")
        samplers.predict(model, x, 0.5, LIN, "x0")
        samplers.ddim_step(x, x, 0.5, 0.4, LIN, eta=0.5, generator=cpu_gen())
        samplers.dpmpp_2m_step(x, x, 0.5, 0.4, LIN, x0_prev=x, t_prev=0.6)
        samplers.euler_step(x, x, 0.5, 0.4)
        for method in samplers.METHODS:
            samplers.sample(model, x, LIN, method=method, n_steps=3, generator=cpu_gen(),
                            times=samplers.time_grid(3, spacing="log_snr", schedule=LIN, t_min=1e-3))
        losses.diffusion_loss(LIN, weighting="elbo_eps")(model, x, None, cpu_gen())
        model(x, 0.5)
    assert not mode.seen, f"float64 on the device from: {sorted(set(mode.seen))}"


def test_float64_guard_sees_a_double_time_moved_to_the_device():
    with pytest.raises(AssertionError, match="float64 on the device"):
        with NoFloat64OnDevice() as mode:
            torch.tensor([0.5], dtype=torch.float64).to(META)
        assert not mode.seen, f"float64 on the device from: {sorted(set(mode.seen))}"


@pytest.mark.parametrize("loss_name", ["eps", "elbo", "flow"])
def test_a_real_training_step_reads_nothing_back(loss_name):
    """dmlib's own MLP and losses, trained by dmlib's loop: the host reads do not grow with the
    number of steps (the loop reads the loss once per logging interval, and at the end)."""
    make = {"eps": lambda: (losses.diffusion_loss(LIN), "eps"),
            "elbo": lambda: (losses.diffusion_loss(LIN, weighting="elbo_eps"), "eps"),
            "flow": lambda: (losses.flow_matching_loss(), "velocity")}[loss_name]
    data = toy.GaussianMixture.eight_gaussians().sample(512, generator=cpu_gen(2))
    counts = []
    for steps in (10, 30):
        loss, kind = make()
        config = train.TrainConfig(steps=steps, batch_size=32, log_every=1000, progress=False, device="cpu")
        with count_syncs() as log:
            train.train(MLP(hidden=16, depth=1, prediction=kind), loss, data, config)
        counts.append(log.count)
    assert counts[0] == counts[1] <= 2, f"{counts} host reads for 10 and 30 steps:\n{log.report()}"

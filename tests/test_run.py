"""dmlib.run: run mode, budgets, seeding and device choice."""

import random

import numpy as np
import pytest
import torch

from dmlib import run


# -- run mode and budgets --------------------------------------------------------------------
def test_run_mode_unset_is_full(clean_env):
    assert run.run_mode() == "full"
    assert not run.is_quick()


@pytest.mark.parametrize("value", ["", "  "])
def test_run_mode_empty_is_full(clean_env, value):
    clean_env.setenv("DMLIB_MODE", value)
    assert run.run_mode() == "full"


@pytest.mark.parametrize("value, mode", [("quick", "quick"), ("full", "full"), (" QUICK ", "quick"), ("Full", "full")])
def test_run_mode_reads_env(clean_env, value, mode):
    clean_env.setenv("DMLIB_MODE", value)
    assert run.run_mode() == mode
    assert run.is_quick() == (mode == "quick")


@pytest.mark.parametrize("value", ["fast", "quik", "1", "debug"])
def test_run_mode_invalid_names_the_variable(clean_env, value):
    clean_env.setenv("DMLIB_MODE", value)
    with pytest.raises(ValueError, match="DMLIB_MODE") as info:
        run.run_mode()
    assert repr(value) in str(info.value)  # says what it was given


def test_budget_follows_mode(clean_env):
    assert run.budget(full=5000, quick=50) == 5000
    clean_env.setenv("DMLIB_MODE", "quick")
    assert run.budget(full=5000, quick=50) == 50
    clean_env.setenv("DMLIB_MODE", "full")
    assert run.budget(full=[1, 2], quick=[3]) == [1, 2]  # any value, returned as is


def test_budget_needs_both_keywords(clean_env):
    with pytest.raises(TypeError):
        run.budget(5000, 50)  # keyword-only: a notebook must name both budgets
    with pytest.raises(TypeError):
        run.budget(full=5000)


def test_budget_invalid_mode_raises(clean_env):
    clean_env.setenv("DMLIB_MODE", "fast")
    with pytest.raises(ValueError, match="DMLIB_MODE"):
        run.budget(full=1, quick=0)


# -- seeding ------------------------------------------------------------------------------------
def _draw(gen):
    return (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(),
            torch.randn(2, generator=gen).tolist())


def test_set_seed_repeats_exactly():
    first = _draw(run.set_seed(123))
    second = _draw(run.set_seed(123))
    assert first == second  # bit-for-bit, all three libraries and the returned generator


def test_set_seed_different_seeds_differ():
    a, b = _draw(run.set_seed(1)), _draw(run.set_seed(2))
    for x, y in zip(a, b):
        assert x != y


def test_set_seed_returns_seeded_generator():
    gen = run.set_seed(7)
    assert isinstance(gen, torch.Generator)
    assert gen.initial_seed() == 7
    assert gen.device.type == "cpu"
    ref = torch.Generator().manual_seed(7)
    assert torch.equal(torch.randn(5, generator=gen), torch.randn(5, generator=ref))


def test_set_seed_returns_a_fresh_generator():
    g1, g2 = run.set_seed(3), run.set_seed(3)
    assert g1 is not g2
    torch.randn(10, generator=g1)  # advancing one does not advance the other
    assert torch.equal(torch.randn(3, generator=g2), torch.randn(3, generator=torch.Generator().manual_seed(3)))


def test_set_seed_large_seed_is_accepted():
    big = 2**40 + 5  # beyond NumPy's 32-bit seed range: reduced modulo 2**32 there
    a = _draw(run.set_seed(big))
    b = _draw(run.set_seed(big))
    assert a == b


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True, None])
def test_set_seed_rejects_invalid(seed):
    with pytest.raises(ValueError, match="seed"):
        run.set_seed(seed)


# -- device choice ------------------------------------------------------------------------------
@pytest.fixture
def no_accelerator(clean_env):
    """Pretend this machine has neither CUDA nor MPS, whatever it really has."""
    clean_env.setattr(torch.cuda, "is_available", lambda: False)
    clean_env.setattr(torch.backends.mps, "is_available", lambda: False)
    return clean_env


def test_get_device_defaults_to_cpu(no_accelerator):
    assert run.get_device() == torch.device("cpu")


def test_get_device_prefers_cuda_when_available(no_accelerator):
    no_accelerator.setattr(torch.cuda, "is_available", lambda: True)
    assert run.get_device() == torch.device("cuda")


def test_get_device_uses_mps_when_no_cuda(no_accelerator):
    no_accelerator.setattr(torch.backends.mps, "is_available", lambda: True)
    assert run.get_device() == torch.device("mps")


def test_get_device_explicit_cpu(no_accelerator):
    assert run.get_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("want", ["cuda", "cuda:0"])
def test_get_device_cuda_missing_is_a_clear_error(no_accelerator, want):
    with pytest.raises(RuntimeError, match="CUDA is not available") as info:
        run.get_device(want)
    assert repr(want) in str(info.value) and "get_device()" in str(info.value)  # says how to fall back


def test_get_device_cuda_index_out_of_range(no_accelerator):
    no_accelerator.setattr(torch.cuda, "is_available", lambda: True)
    no_accelerator.setattr(torch.cuda, "device_count", lambda: 1)
    assert run.get_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(RuntimeError, match="only 1 CUDA device"):
        run.get_device("cuda:3")


def test_get_device_mps_missing(no_accelerator):
    with pytest.raises(RuntimeError, match="MPS"):
        run.get_device("mps")


@pytest.mark.parametrize("want", ["gpu", "cuda:x", "banana", "meta", "xla"])
def test_get_device_invalid_string(no_accelerator, want):
    with pytest.raises(ValueError, match="must be 'cpu', 'cuda', 'cuda:N' or 'mps'") as info:
        run.get_device(want)
    assert repr(want) in str(info.value)


def test_get_device_env_var(no_accelerator):
    no_accelerator.setenv("DMLIB_DEVICE", "cpu")
    assert run.get_device() == torch.device("cpu")
    no_accelerator.setenv("DMLIB_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        run.get_device()
    no_accelerator.setenv("DMLIB_DEVICE", "tpu9")
    with pytest.raises(ValueError, match=r"DMLIB_DEVICE\) must be"):
        run.get_device()


def test_get_device_argument_overrides_env(no_accelerator):
    no_accelerator.setenv("DMLIB_DEVICE", "cuda")
    assert run.get_device("cpu") == torch.device("cpu")


def test_get_device_empty_env_means_auto(no_accelerator):
    no_accelerator.setenv("DMLIB_DEVICE", "")
    assert run.get_device() == torch.device("cpu")


def test_describe_names_mode_device_and_torch(no_accelerator):
    no_accelerator.setenv("DMLIB_MODE", "quick")
    line = run.describe()
    assert "run mode: quick" in line and "device: cpu" in line and torch.__version__ in line
    assert f"({torch.get_num_threads()} thread" in line


def test_claim_checks_the_range_of_the_run_mode(monkeypatch):
    monkeypatch.setenv("DMLIB_MODE", "full")
    assert run.claim("x", torch.tensor(0.5), full=(0.4, 0.6)) == 0.5
    with pytest.raises(AssertionError, match="claim 'x'.*\\[0.6, 0.9\\]"):
        run.claim("x", 0.5, full=(0.6, 0.9))
    with pytest.raises(AssertionError, match="says True"):
        run.claim("ok", False, full=True)
    assert run.claim("x", 5.0, full=None, quick=(0, 1)) == 5.0  # quick claim not checked in full mode
    monkeypatch.setenv("DMLIB_MODE", "quick")
    with pytest.raises(AssertionError):
        run.claim("x", 5.0, full=(0, 10), quick=(0, 1))
    assert run.claim("x", 5.0, full=(0, 1)) == 5.0  # full claim not checked in quick mode


def test_claim_refuses_what_is_not_one_number(clean_env):
    with pytest.raises(ValueError, match="one number"):
        run.claim("x", torch.zeros(2), full=(0, 1))
    with pytest.raises(TypeError, match="number or a bool"):
        run.claim("x", "0.5", full=(0, 1))
    with pytest.raises(ValueError, match="low, high"):
        run.claim("x", 0.5, full=0.5)


def test_claims_when_passes_claims_only_under_its_condition():
    on = run.claims_when(True)
    off = run.claims_when(np.bool_(False))
    assert on((0.1, 0.2)) == (0.1, 0.2) and on(True) is True
    assert off((0.1, 0.2)) is None and off(True) is None
    with pytest.raises(TypeError, match="condition must be a bool"):
        run.claims_when("load")


def test_benchmark_records_are_read_and_described(tmp_path, monkeypatch):
    path, record = run.benchmark_record("mnist_samplers")
    assert path.name == "mnist_samplers.json" and record["rows"]["ddpm1000"]["nfe"] == 1000
    words = run.machine_words(record)
    m = record["machine"]
    assert words.startswith(f"{m['cpu']} ({m['torch_threads']} thread")
    assert m["commit"] in words and m["date"][:10] in words
    gpu = {**record, "machine": {**m, "gpu": "NVIDIA H200"}}
    assert run.machine_words(gpu).startswith("NVIDIA H200, torch")
    missing, none = run.benchmark_record("no_such_benchmark")
    assert none is None and missing.name == "no_such_benchmark.json"
    # a broken record is named, not half-read
    fake = tmp_path / "pkg" / "dmlib"
    (tmp_path / "pkg" / "benchmarks" / "results").mkdir(parents=True)
    fake.mkdir()
    (tmp_path / "pkg" / "benchmarks" / "results" / "bad.json").write_text("{not json")
    monkeypatch.setattr(run, "__file__", str(fake / "run.py"))
    with pytest.raises(ValueError, match="bad.json is not a readable benchmark record"):
        run.benchmark_record("bad")

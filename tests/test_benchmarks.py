"""Every benchmark script runs (in --quick mode) and writes a JSON record with its machine."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["samplers_nfe", "flow2d", "ddim_vs_ddpm", "device_core", "samplers_peer", "mnist_quickstart",
           "mnist_samplers", "mnist_guidance", "train_throughput",
           "mnist_gpu5min", "autoencoder", "latent_mnist"]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return mod


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_runs_quick_and_records_the_machine(name, tmp_path):
    out = _load(name).main(["--quick", "--out", str(tmp_path)])
    record = json.loads(Path(out).read_text())
    assert record["benchmark"].startswith(name)
    for key in ("cpu", "cpu_cores", "torch", "commit", "date"):
        assert key in record["machine"]
    if name == "samplers_nfe":  # evaluations counted as samplers.sample makes them (to t = 0)
        from dmlib import samplers

        for row in record["rows"]:
            assert row["nfe"] == samplers.nfe(row["method"], row["steps"]), row

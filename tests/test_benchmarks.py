"""Every benchmark script runs (in --quick mode) and writes a JSON record with its machine."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["samplers_nfe", "flow2d", "ddim_vs_ddpm", "device_core", "samplers_peer", "mnist_quickstart",
           "mnist_samplers", "mnist_guidance", "train_throughput",
           "mnist_gpu5min", "autoencoder", "latent_mnist", "mnist_churn"]


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


def test_sampler_benchmark_merges_new_rows_into_results_of_the_same_run_only(tmp_path):
    bench = _load("mnist_samplers")
    out = Path(bench.main(["--quick", "--out", str(tmp_path), "--only", "ddpm1000", "ddim50"]))
    bench.main(["--quick", "--out", str(tmp_path), "--only", "ddim50_log_snr", "ddim200", "--merge"])
    record = json.loads(out.read_text())
    assert set(record["rows"]) == {"ddpm1000", "ddim50", "ddim50_log_snr", "ddim200"}
    assert record["rows"]["ddim50_log_snr"]["spacing"] == "log_snr"
    assert record["checks"]["best_ddim50_grid"] in ("ddim50", "ddim50_log_snr")
    assert "ddim200_over_ddpm1000" in record["checks"]
    # the kept rows keep the machine they ran on
    assert record["earlier_runs"][0]["rows"] == ["ddim50", "ddpm1000"]
    assert set(record["earlier_runs"][0]["machine"]) == set(record["machine"])
    # a third run: the rows it repeats leave the earlier runs' lists, each kept row stays with
    # the machine it ran on
    record["machine"]["date"] = "second run"
    out.write_text(json.dumps(record))
    bench.main(["--quick", "--out", str(tmp_path), "--only", "ddim50", "heun10_churn", "--merge"])
    record = json.loads(out.read_text())
    assert [e["rows"] for e in record["earlier_runs"]] == [["ddpm1000"], ["ddim200", "ddim50_log_snr"]]
    assert record["earlier_runs"][1]["machine"]["date"] == "second run"
    assert record["rows"]["heun10_churn"]["churn"] == bench.CHURN > 0
    assert record["rows"]["ddim50"]["churn"] == 0.0
    # the stochastic Heun competes for the best second-order sampler, not for the best ODE one
    assert record["checks"]["best_second_order"] == "heun10_churn"
    assert "best_ode_second_order" not in record["checks"]
    # rows of another N (another x_T) are never mixed in
    record["n"] = 31
    out.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="holds N = 31"):
        bench.main(["--quick", "--out", str(tmp_path), "--only", "ddim50_edm", "--merge"])
    with pytest.raises(SystemExit, match="no earlier results"):
        bench.main(["--quick", "--out", str(tmp_path / "empty"), "--only", "ddim50", "--merge"])


def test_sampler_benchmark_scores_the_churn_chosen_on_held_out_noise():
    """The Gamma that mnist_samplers.py scores on the test digits is the one mnist_churn.py
    chose on other draws of x_T and the validation digits, for the same network."""
    chosen = json.loads((ROOT / "benchmarks" / "results" / "mnist_churn.json").read_text())
    samples = json.loads((ROOT / "benchmarks" / "results" / "mnist_samplers.json").read_text())
    assert _load("mnist_samplers").CHURN == chosen["chosen_churn"]
    assert samples["rows"]["heun10_churn"]["churn"] == chosen["chosen_churn"]
    assert chosen["model_step"] == samples["model_step"]
    assert 0 not in chosen["seeds"]  # mnist_samplers.py draws x_T from seed 0
    assert chosen["reference"].startswith("validation")

"""Data-parallel training (Chapter 10) on the CPU's gloo backend: two processes launched by
torchrun end where one process ends on the same global batch; the SLURM launch script starts
the training entry point; the process-group set-up refuses what it cannot do."""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _ddp_case import fit, tensors
from dmlib import noise, train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# gloo sums the two processes' gradients in float32 in another order than one process's
# mean over the global batch: the parameters agree to rounding, amplified a little by 12
# Adam steps (2e-7 measured), far below what a wrong batch split changes (0.03 measured;
# the planted test asks > 1e-3)
TOLERANCE = 2e-6


def _torchrun(args, env=None, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE), **(env or {})}
    env.pop("DMLIB_DEVICE", None)
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _ddp(tmp_path, plant=None):
    out = tmp_path / "ddp"
    done = _torchrun([str(HERE / "_ddp_case.py"), str(out)],
                     env={"DMLIB_TEST_PLANT": plant} if plant else None)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_file(f"{out}.safetensors"), json.loads(Path(f"{out}.json").read_text())


def _gap(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_processes_end_where_one_process_ends_on_the_same_global_batch(tmp_path):
    one = fit()
    two, info = _ddp(tmp_path)
    assert info["world"] == 2
    assert _gap(tensors(one), two) <= TOLERANCE
    # the history is the mean over both processes' losses: the global batch's loss
    assert [s for s, _ in info["history"]] == [s for s, _ in one.history]
    for (_, a), (_, b) in zip(info["history"], one.history):
        assert a == pytest.approx(b, rel=1e-5)


def test_the_comparison_fails_when_each_process_draws_as_if_alone(tmp_path):
    # planted bug: every process draws times and noise for its own rows from the shared
    # generator, so both halves of the global batch get the same draws
    two, _ = _ddp(tmp_path, plant="unsharded")
    assert _gap(tensors(fit()), two) > 1e-3


def test_a_shard_draws_its_rows_of_the_global_draw():
    g = torch.Generator().manual_seed(3)
    whole = noise.randn((6, 2), generator=torch.Generator().manual_seed(3))
    parts = [noise.randn((2, 2), generator=noise.Shard(torch.Generator().manual_seed(3), r, 3))
             for r in range(3)]
    assert torch.equal(torch.cat(parts), whole)
    uniform = noise.rand((4,), generator=noise.Shard(g, 1, 2))
    assert uniform.shape == (4,)
    with pytest.raises(ValueError, match="rank"):
        noise.Shard(g, 2, 2)
    with pytest.raises(TypeError, match="cannot be sharded"):
        noise.multinomial(torch.ones(2, 3), generator=noise.Shard(g, 0, 2))


def test_the_global_batch_must_split_evenly(monkeypatch):
    monkeypatch.setattr(train, "_world", lambda: (0, 3))
    with pytest.raises(ValueError, match="divide evenly between the 3 processes"):
        fit(batch_size=64)


def test_init_distributed_outside_torchrun_does_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert train.init_distributed("cpu") == "cpu"
    assert not torch.distributed.is_initialized()


@pytest.mark.skipif(not hasattr(torch.backends, "mps"), reason="no MPS backend module")
def test_init_distributed_refuses_mps(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(train, "get_device", lambda want=None: torch.device("mps"))
    with pytest.raises(ValueError, match="not on mps"):
        train.init_distributed("mps")


def test_slurm_script_launches_the_entry_point_on_every_process(tmp_path, fake_mnist):  # noqa: F811 (fixture)
    # stand-ins for SLURM's srun and scontrol on one node: the script's own torchrun line
    # runs two processes of python -m dmlib.train on the CPU
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text('#!/bin/bash\nexec "$@"\n')
    (bin_ / "scontrol").write_text("#!/bin/bash\necho localhost\n")
    (bin_ / "torchrun").write_text(f'#!/bin/bash\nexec {sys.executable} -m torch.distributed.run "$@"\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    cfg = tiny_config(tmp_path)
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node1",
           "SLURM_NNODES": "1", "SLURM_JOB_ID": "7", "GPUS_PER_NODE": "2",
           "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    env.pop("DMLIB_DEVICE", None)
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "slurm_train.sh"), str(cfg), "--device", "cpu",
         "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 node(s) x 2 process(es)" in done.stdout
    assert "step 6 on cpu (2 processes)" in done.stdout
    # the same run in one process ends at the same weights
    one = train.run(train.load_config(cfg), runs=tmp_path / "runs1", out=tmp_path / "out1",
                    device="cpu", progress=False)
    assert one["step"] == 6
    two = load_file(tmp_path / "out" / "tiny_test.safetensors")
    ref = load_file(tmp_path / "out1" / "tiny_test.safetensors")
    assert _gap({k: v.float() for k, v in two.items()}, {k: v.float() for k, v in ref.items()}) <= 1e-3


def test_slurm_script_requeues_the_job_before_its_time_limit(tmp_path):
    # SLURM sends USR1 two minutes before the limit (#SBATCH --signal=B:USR1@120): the
    # script asks scontrol to requeue the job; here srun is a stand-in that just waits
    import signal
    import time

    bin_ = tmp_path / "bin"
    bin_.mkdir()
    calls = tmp_path / "scontrol.log"
    (bin_ / "srun").write_text("#!/bin/bash\nexec sleep 60 > /dev/null\n")
    (bin_ / "scontrol").write_text(
        f'#!/bin/bash\necho "$@" >> {calls}\n[ "$1" = show ] && echo localhost\nexit 0\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node1",
           "SLURM_NNODES": "1", "SLURM_JOB_ID": "7", "SLURM_GPUS_ON_NODE": "2"}
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "slurm_train.sh"), "mnist_cond"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()  # the script is waiting for srun now
        assert "1 node(s) x 2 process(es), rendezvous at localhost:20007" in line
        time.sleep(0.5)
        proc.send_signal(signal.SIGUSR1)
        out = proc.communicate(timeout=30)[0]
    finally:  # the stand-in srun is in the script's process group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert "requeueing job 7" in out
    assert "requeue 7" in calls.read_text()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


from test_train_cli import fake_mnist, tiny_config  # noqa: E402,F401  (the fixture and config)

"""DDIM with 20 steps against DDPM with 1000 steps, with the same trained eps-model.

Trains `nn.MLP(hidden=256, depth=3, prediction="eps")` on 8 Gaussians with the cosine
schedule, then samples N = 2000 points with DDPM-1000 (ancestral) and DDIM-20 (eta = 0) and
records the W2 ratio R of each. Target: R(DDIM-20) <= 1.25 R(DDPM-1000).
Usage: python benchmarks/ddim_vs_ddpm.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

from dmlib import losses, metrics, run, samplers, schedules, toy
from dmlib.nn import MLP
from dmlib.train import TrainConfig, train

try:
    from _common import write
except ImportError:
    from benchmarks._common import write


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; with 1 the training's CPU time is one core's wall time")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, n, ddpm_steps = (30, 200, 50) if args.quick else (args.steps, 2000, 1000)
    run.set_seed(0)
    schedule = schedules.CosineSchedule()
    data = toy.data_sampler("8gaussians")
    cpu0 = time.process_time()
    result = train(MLP(hidden=256, depth=3), losses.diffusion_loss(schedule), data,
                   TrainConfig(steps=steps, batch_size=1024, lr=2e-3, progress=False, device="cpu"))
    cpu = time.process_time() - cpu0
    rows = {}
    for method, k in (("ddpm", ddpm_steps), ("ddim", 20)):
        x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(5))
        x = samplers.sample(result.best, x_T, schedule, method=method, n_steps=k,
                            generator=torch.Generator().manual_seed(6))
        rows[f"{method}{k}"] = metrics.floor_ratio("w2", x, data, n_repeats=3)
        print(method, k, round(rows[f"{method}{k}"]["ratio"], 3), flush=True)
    ratio = rows["ddim20"]["ratio"] / rows[f"ddpm{ddpm_steps}"]["ratio"]
    return write("ddim_vs_ddpm" + ("_quick" if args.quick else ""),
                 {"train_steps": steps, "train_cpu_seconds": cpu, "n_samples": n, "results": rows,
                  "ddim20_over_ddpm": ratio, "meets_target": bool(ratio <= 1.25)}, args.out)


if __name__ == "__main__":
    main()

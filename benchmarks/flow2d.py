"""2D flow matching with a 3x256 MLP: quality after a fixed CPU budget of training.

For each of 8 Gaussians, moons and checkerboard: train `nn.MLP(hidden=256, depth=3,
prediction="velocity")` with `losses.flow_matching_loss` for --steps steps, measuring the
training's CPU time (process time), then sample with Euler at 100 and 10 steps and record
the W2 ratio R to the data-vs-data floor at N = 2000. R is the mean of W2(model, data) over
--draws independent model samples (each against 2 fresh data draws) divided by the mean of
the data-vs-data floor over the same data draws. The same protocol applied to fresh data in
place of model samples (the "oracle" column) shows how far R scatters around 1 for a
perfect sampler. Sliced-Wasserstein ratios are recorded beside W2.
Targets: training <= 300 CPU seconds, R(Euler-100) <= 1.5, R(Euler-10) <= 1.25 R(Euler-100).
Usage: python benchmarks/flow2d.py [--quick] [--coupling independent|ot]
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from dmlib import losses, metrics, plot, run, samplers, schedules, toy  # noqa: E402
from dmlib.nn import MLP  # noqa: E402
from dmlib.train import TrainConfig, train  # noqa: E402

try:
    from _common import write
except ImportError:
    from benchmarks._common import write

DATASETS = ("8gaussians", "moons", "checkerboard")


def ratio(metric, xs, data):
    """Mean metric of the samples xs against fresh data over mean data-vs-data floor."""
    rs = [metrics.floor_ratio(metric, x, data, n_repeats=2, seed=104729 + 7919 * j) for j, x in enumerate(xs)]
    return sum(r["value"] for r in rs) / sum(r["floor"] for r in rs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for the test that the script runs")
    ap.add_argument("--steps", type=int, default=8000, help="training steps at most")
    ap.add_argument("--coupling", choices=("independent", "ot"), default="ot")
    ap.add_argument("--batch", type=int, default=256, help="batch size (minibatch OT costs O(batch^3) per step)")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; with 1 the training's CPU time is one core's wall time")
    ap.add_argument("--draws", type=int, default=4, help="independent model samples per evaluation")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, n = (30, 200) if args.quick else (args.steps, 2000)
    schedule = schedules.FlowSchedule()
    rows, samples = [], {}
    for name in args.datasets:
        run.set_seed(0)
        data = toy.data_sampler(name)
        model = MLP(hidden=256, depth=3, prediction="velocity")
        loss = losses.flow_matching_loss(coupling=args.coupling)
        cfg = TrainConfig(steps=steps, batch_size=args.batch, lr=2e-3, warmup=100, ema_decay=0.999, progress=False,
                          device="cpu")
        cpu0 = time.process_time()
        result = train(model, loss, data, cfg)
        cpu = time.process_time() - cpu0
        row = {"dataset": name, "train_steps": steps, "batch_size": args.batch, "train_cpu_seconds": cpu,
               "coupling": args.coupling}
        draws = 1 if args.quick else args.draws
        for k in (100, 10):
            xs = [samplers.sample(result.best, torch.randn(n, 2, generator=torch.Generator().manual_seed(5 + j)),
                                  schedule, method="euler", n_steps=k) for j in range(draws)]
            for metric in ("w2", "sw"):
                row[f"{metric}_ratio_euler{k}"] = ratio(metric, xs, data)
            samples[(name, k)] = xs[0]
        oracle = [data(n, torch.Generator().manual_seed(77 + j)) for j in range(draws)]
        row["w2_ratio_oracle"] = ratio("w2", oracle, data)
        row["euler10_over_euler100"] = row["w2_ratio_euler10"] / row["w2_ratio_euler100"]
        row["meets_targets"] = bool(row["w2_ratio_euler100"] <= 1.5 and row["euler10_over_euler100"] <= 1.25
                                    and cpu <= 300)
        rows.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    out = write("flow2d" + ("_quick" if args.quick else ""), {"n_samples": n, "draws": draws, "rows": rows}, args.out)
    fig, axes = plt.subplots(2, len(rows), figsize=(3.4 * len(rows), 7.0), squeeze=False)
    for j, name in enumerate(args.datasets):
        for i, k in enumerate((100, 10)):
            row = rows[j]
            plot.scatter2d(samples[(name, k)], axes[i, j], s=1.5,
                           title=f"{name}, Euler-{k}: R = {row[f'w2_ratio_euler{k}']:.2f}\n"
                                 f"(fresh data: R = {row['w2_ratio_oracle']:.2f})")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    return out


if __name__ == "__main__":
    main()

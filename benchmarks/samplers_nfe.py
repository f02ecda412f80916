"""NFE versus quality of every sampler, driven by the EXACT score of a Gaussian mixture.

With the exact score there is no model error: what remains is each sampler's discretisation
error. For each sampler and step count this records
  * the W2 ratio R of its samples to the data-vs-data floor (metrics.floor_ratio), and
  * the mean distance to a fine-grid reference solution of the probability-flow ODE
    (deterministic samplers only),
as a JSON table and a log-log plot. Usage: python benchmarks/samplers_nfe.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from dmlib import metrics, samplers, schedules, toy  # noqa: E402

try:
    from _common import RESULTS, write
except ImportError:  # run as a module
    from benchmarks._common import RESULTS, write

def plot(rows: list, path) -> None:
    """Quality and ODE error against function evaluations, one colour and marker per sampler."""
    # more samplers than colours in the book's palette: a colour and a marker tell them apart
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {m: cycle[i % len(cycle)] for i, m in enumerate(samplers.METHODS)}
    markers = {m: "os^"[i // len(cycle) % 3] for i, m in enumerate(samplers.METHODS)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method in samplers.METHODS:
        rs = [r for r in rows if r["method"] == method]
        axes[0].plot([r["nfe"] for r in rs], [r["w2_ratio"] for r in rs], "-", marker=markers[method],
                     color=colours[method], label=method)
        if rs[0]["ode_error"] is not None:
            axes[1].loglog([r["nfe"] for r in rs], [r["ode_error"] for r in rs], "-", marker=markers[method],
                           color=colours[method],
                           label=method)
    axes[0].set(xscale="log", xlabel="function evaluations", ylabel="W2 / floor", title="quality vs NFE (exact score)")
    axes[0].axhline(1.0, color="grey", lw=0.8)
    axes[1].set(xlabel="function evaluations", ylabel="mean distance to reference",
                title="ODE discretisation error (uniform grid in t)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for the test that the script runs")
    ap.add_argument("--out", default=None, help="folder for the JSON and the plot (default benchmarks/results)")
    ap.add_argument("--replot", action="store_true", help="redraw the plot from the existing JSON only")
    args = ap.parse_args(argv)
    if args.replot:
        import json
        from pathlib import Path

        out = Path(args.out or RESULTS) / "samplers_nfe.json"
        plot(json.loads(out.read_text())["rows"], out.with_suffix(".png"))
        return out
    n = 200 if args.quick else 2000
    steps = [5, 10] if args.quick else [5, 10, 20, 50, 100, 200, 500]
    schedule = schedules.CosineSchedule()
    mixture = toy.GaussianMixture.eight_gaussians()
    model = mixture.denoiser(schedule)
    data = toy.data_sampler(mixture)
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = samplers.sample(model, x_T, schedule, method="dpmpp_2m", n_steps=50 if args.quick else 2000)
    rows = []
    t0 = time.time()
    for method in samplers.METHODS:
        for k in steps:
            g = torch.Generator().manual_seed(1)
            x = samplers.sample(model, x_T, schedule, method=method, n_steps=k, generator=g)
            r = metrics.floor_ratio("w2", x.float(), data, n_repeats=2)
            deterministic = method not in ("ddpm", "euler_maruyama")
            rows.append({"method": method, "steps": k, "nfe": samplers.nfe(method, k),  # the grid ends at t = 0
                         "w2": r["value"], "w2_floor": r["floor"], "w2_ratio": r["ratio"],
                         "ode_error": float((x - ref).norm(dim=1).mean()) if deterministic else None})
            print(f"{method:15s} steps={k:4d} W2 ratio={r['ratio']:.3f}"
                  + (f" ODE error={rows[-1]['ode_error']:.2e}" if deterministic else ""), flush=True)
    out = write("samplers_nfe", {"schedule": "cosine", "data": "8 Gaussians (exact score)", "n_samples": n,
                                 "seconds": time.time() - t0, "rows": rows}, args.out)
    plot(rows, out.with_suffix(".png"))
    return out


if __name__ == "__main__":
    main()

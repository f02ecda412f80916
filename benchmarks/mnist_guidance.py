"""Guidance on MNIST: the classifier-free guidance sweep and classifier guidance, by accuracy and FD.

Loads the shipped class-conditional U-Net `mnist_cond` (trained with label dropout) and draws N
samples, N / 10 of each digit, from the same x_T (DPM-Solver++(2M) with 20 steps by default)
with classifier-free guidance at w in {0, 1, 2, 3, 5, 7} (w = 0 is the unconditional model,
w = 1 the conditional one), and with classifier guidance (the unconditional model plus the gradient
of the shipped noisy classifier `mnist_noisy_classifier`, applied to the shipped unconditional
U-Net `mnist_uncond`) at a few scales. As in Chapter 8, the guided data prediction is clipped
to [-1, 1] at every step (`diffusion.ClipX0`; `--no-clip` turns that off). Each set is scored
with `metrics.image_report` against the test digits: the evaluation classifier's accuracy on
the requested digit and its confidence, and the FD ratio to the real-vs-real floor with its
interval: the accuracy-vs-FD trade-off of Chapter 8. Target: accuracy >= 0.99 at some w in
[2, 5] with CFG; FD ratio reported for every w. Writes JSON and a plot of the trade-off.
Usage: python benchmarks/mnist_guidance.py [--n 2000] [--method dpmpp_2m] [--steps 20] [--no-clip]
[--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

from dmlib import data, diffusion, guidance, metrics, run, samplers, shipped, train

try:
    from _common import RESULTS, write
except ImportError:
    from benchmarks._common import RESULTS, write

CFG_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 7.0)
CG_SCALES = (1.0, 3.0, 10.0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--method", default="dpmpp_2m", choices=samplers.METHODS)
    ap.add_argument("--steps", type=int, default=20, help="sampler steps")
    ap.add_argument("--no-clip", action="store_true", help="do not clip x0-hat to [-1, 1]")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="a smoke test: untrained networks, 3 steps")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = train.load_config("mnist_cond")
    schedule = train.build_loss(cfg).schedule
    if args.quick:
        model = train.build_model(cfg).eval()
        noisy = train.build_model(train.load_config("mnist_noisy_classifier")).eval()
        uncond = train.build_model(train.load_config("mnist_uncond")).eval()
        n, steps, cfg_scales, cg_scales = 30, 3, (0.0, 2.0), (1.0,)
        steps_of = {}
    else:
        model, rec_cond = shipped.load("mnist_cond")
        noisy, rec_noisy = shipped.load("mnist_noisy_classifier")
        uncond, rec_uncond = shipped.load("mnist_uncond")
        steps_of = {"mnist_cond": rec_cond.get("step"), "mnist_uncond": rec_uncond.get("step"),
                    "mnist_noisy_classifier": rec_noisy.get("step")}
        n, steps, cfg_scales, cg_scales = args.n, args.steps, CFG_SCALES, CG_SCALES
    device = next(model.parameters()).device
    classifier, _ = shipped.load("mnist_classifier", device=device)
    test = data.load_mnist("test", verbose=False).images[: 300 if args.quick else None]
    real = metrics.features(classifier, test)
    y = torch.arange(n) % 10
    x_T = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    rows = []
    runs = [("cfg", w, guidance.ClassifierFreeGuidance(model, w)) for w in cfg_scales]
    runs += [("classifier", w, guidance.ClassifierGuidance(uncond, noisy, schedule, w)) for w in cg_scales]
    if not args.no_clip:
        runs = [(kind, w, diffusion.ClipX0(guided, schedule)) for kind, w, guided in runs]
    for kind, w, guided in runs:
        g = torch.Generator().manual_seed(1)
        start = time.perf_counter()
        x = torch.cat([samplers.sample(guided, x_T[i:i + args.batch].to(device), schedule,
                                       method=args.method, n_steps=steps, y=y[i:i + args.batch].to(device),
                                       generator=g).cpu()
                       for i in range(0, n, args.batch)])
        seconds = time.perf_counter() - start
        report = metrics.image_report(x, classifier, real, labels=y, generator=torch.Generator().manual_seed(2))
        rows.append({"guidance": kind, "w": w, "sample_seconds": round(seconds, 1), **report})
        print(f"{kind} w = {w}: accuracy {report['accuracy']:.3f}, FD ratio {report['fd_ratio']:.2f} "
              f"[{report['fd_ratio_lo']:.2f}, {report['fd_ratio_hi']:.2f}]", flush=True)
    best = [r for r in rows if r["guidance"] == "cfg" and 2 <= r["w"] <= 5]
    payload = {"model": "mnist_cond", "classifier_guided_model": "mnist_uncond",
               "model_steps": steps_of, "n": n,
               "method": args.method, "steps": steps, "clip_x0": not args.no_clip, "rows": rows,
               "target": "CFG accuracy >= 0.99 at some w in [2, 5]",
               "meets_target": any(r["accuracy"] >= 0.99 for r in best), "run_mode": run.run_mode()}
    name = "mnist_guidance" + ("_quick" if args.quick else "")
    path = write(name, payload, args.out)
    _plot(rows, (path.parent if args.out else RESULTS) / f"{name}.png")
    return path


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for kind, marker in (("cfg", "o"), ("classifier", "s")):
        sel = [r for r in rows if r["guidance"] == kind]
        ax.errorbar([r["fd_ratio"] for r in sel], [r["accuracy"] for r in sel], marker=marker,
                    xerr=[[r["fd_ratio"] - r["fd_ratio_lo"] for r in sel],
                          [r["fd_ratio_hi"] - r["fd_ratio"] for r in sel]],
                    label="classifier-free" if kind == "cfg" else "classifier guidance", capsize=2)
        for r in sel:
            ax.annotate(f"w={r['w']:g}", (r["fd_ratio"], r["accuracy"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("FD / real-vs-real floor")
    ax.set_ylabel("accuracy on the requested digit")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()

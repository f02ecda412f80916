"""A class-conditional MNIST model from scratch in five minutes of CPU training.

Trains the quick-start run `mnist_tiny` (a 0.23M-parameter class-conditional U-Net that
predicts v, label dropout 0.15) from scratch for as many steps as fit in `--minutes` of
training on this machine (the step time is measured first on throwaway copies, so the
learning-rate schedule knows its length), then draws N class-conditional samples with
classifier-free guidance at w = 2 (DPM-Solver++(2M), 20 steps, x0-hat clipped to [-1, 1]
as in Chapter 8) and measures, with the shipped evaluation classifier, their accuracy and
the Frechet distance to test digits as a ratio to the real-vs-real floor. Sampling and
evaluation are timed separately. Target (a 2-core CPU, 5 minutes): accuracy >= 0.95 at w = 2.
Usage: python benchmarks/mnist_quickstart.py [--minutes 5] [--n 2000] [--w 2 3]
       [--method dpmpp_2m] [--steps 20] [--no-clip] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from dmlib import data, diffusion, guidance, metrics, run, samplers, shipped, train

try:
    from _common import write
except ImportError:
    from benchmarks._common import write


SUSTAINED = 1.2  # sustained step time / probe step time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="training wall-clock budget")
    ap.add_argument("--n", type=int, default=2000, help="samples to evaluate")
    ap.add_argument("--w", type=float, nargs="+", default=[2.0], help="guidance scales")
    ap.add_argument("--method", default="dpmpp_2m", choices=samplers.METHODS)
    ap.add_argument("--steps", type=int, default=20, help="sampler steps")
    ap.add_argument("--no-clip", action="store_true", help="do not clip x0-hat to [-1, 1]")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--quick", action="store_true", help="a smoke test: a few steps, a few samples")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    minutes, n, k = (0.02, 30, 3) if args.quick else (args.minutes, args.n, args.steps)
    cfg = train.load_config("mnist_tiny")
    images, labels, source = train.load_data(cfg)
    loss = train.build_loss(cfg)
    # 1. the step time, on throwaway copies: one untimed call absorbs one-time costs (thread
    # pools, first allocations), then the difference of a short and a longer call removes the
    # per-call set-up; if timing noise makes that difference useless, the longer call's mean
    warm, timed = (1, 2) if args.quick else (4, 30)
    probe = train.train_config(cfg, steps=warm, warmup=1, progress=False, device="cpu")

    def timed_call(steps):
        t = time.perf_counter()
        train.train(train.build_model(cfg), loss, images, dataclasses.replace(probe, steps=steps), labels=labels)
        return time.perf_counter() - t

    timed_call(warm)
    short, long = timed_call(warm), timed_call(warm + timed)
    step_time = (long - short) / timed
    if not (0.25 * long / (warm + timed) < step_time < 4 * long / (warm + timed)):
        step_time = long / (warm + timed)
    # a 5-minute run steps about 20% slower than these short probes (measured on 2-core
    # cloud machines: 0.26 s against 0.21 s), so plan for the sustained speed; the record
    # keeps the real training time, and the target counts only if it kept to the budget
    steps = max(2, int(minutes * 60 / (SUSTAINED * step_time)))
    # 2. train for the budget
    tcfg = train.train_config(cfg, steps=steps, warmup=min(cfg["train"]["warmup"], steps // 10), device="cpu")
    start = time.perf_counter()
    result = train.train(train.build_model(cfg), loss, images, tcfg, labels=labels)
    train_s = time.perf_counter() - start
    # 3. sample with CFG and evaluate
    classifier, _ = shipped.load("mnist_classifier", device="cpu")
    test = data.load_mnist("test", verbose=False).images[: 300 if args.quick else None]
    test = metrics.features(classifier, test)  # once, shared by every report
    schedule = train.build_loss(cfg).schedule
    rows = []
    for w in args.w:
        g = torch.Generator().manual_seed(1)
        y = torch.arange(n) % 10
        x_T = torch.randn(n, 1, 28, 28, generator=g)
        start = time.perf_counter()
        guided = guidance.ClassifierFreeGuidance(result.best, w)
        if not args.no_clip:
            guided = diffusion.ClipX0(guided, schedule)
        x = samplers.sample(guided, x_T, schedule, method=args.method, n_steps=k, y=y, generator=g)
        sample_s = time.perf_counter() - start
        start = time.perf_counter()
        report = metrics.image_report(x, classifier, test, labels=y, generator=torch.Generator().manual_seed(2))
        eval_s = time.perf_counter() - start
        rows.append({"w": w, "sample_seconds": round(sample_s, 1), "eval_seconds": round(eval_s, 1), **report})
        print(f"w = {w}: accuracy {report['accuracy']:.3f}, FD ratio {report['fd_ratio']:.2f} "
              f"[{report['fd_ratio_lo']:.2f}, {report['fd_ratio_hi']:.2f}]", flush=True)
    payload = {
        "config": "mnist_tiny", "data_source": source, "train_minutes_budget": minutes,
        "train_seconds": round(train_s, 1), "train_steps": steps, "batch_size": tcfg.batch_size,
        "probe_step_seconds": round(step_time, 4),
        "images_per_second": round(steps * tcfg.batch_size / train_s, 1),
        "final_loss": result.history[-1][1], "method": args.method, "sampler_steps": k,
        "clip_x0": not args.no_clip, "n": n, "rows": rows,
        "target": "accuracy >= 0.95 at w = 2 after 5 minutes of training on a 2-core CPU",
        "within_budget": train_s <= 1.05 * minutes * 60,
        "meets_target": train_s <= 1.05 * minutes * 60
        and any(r["w"] == 2.0 and r["accuracy"] >= 0.95 for r in rows),
        "run_mode": run.run_mode(),
    }
    return write("mnist_quickstart" + ("_quick" if args.quick else ""), payload, args.out)


if __name__ == "__main__":
    main()

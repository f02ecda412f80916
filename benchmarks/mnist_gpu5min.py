"""A class-conditional MNIST U-Net trained from scratch in five minutes of GPU time.

The GPU counterpart of mnist_quickstart.py (Chapter 10). Trains a class-conditional
eps-prediction U-Net (size M of train_throughput.py: about 3.3M parameters; label dropout
0.15 for classifier-free guidance) with the fast settings of Chapter 10 (bf16 autocast where
the GPU has it, channels_last, torch.compile, MNIST and the random draws on the GPU). A probe
run on a throwaway copy measures the warm-up cost and the sustained img/s; the real run gets
as many steps as fit in --minutes of training wall time, warm-up included, so the learning-
rate schedule knows its length. Then N class-conditional samples per guidance scale w
(DPM-Solver++(2M), 20 steps, x0-hat clipped as in Chapter 8) are scored with the shipped
evaluation classifier: accuracy on the requested digit and the FD ratio to the real-vs-real
floor. Goal: at one w, FD ratio <= 2.0 and accuracy >= 0.99, within 5 minutes of training.
Usage: python benchmarks/mnist_gpu5min.py [--minutes 5] [--n 2000] [--w 1 1.5 2 3]
       [--size M] [--batch 256] [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

from dmlib import data, diffusion, guidance, losses, metrics, run, samplers, schedules, shipped, train
from dmlib.nn import UNet

try:
    from _common import write
    from train_throughput import SIZES
except ImportError:
    from benchmarks._common import write
    from benchmarks.train_throughput import SIZES


def model_for(size: str) -> UNet:
    s = SIZES[size]
    return UNet(channels=s["channels"], mults=(1, 2, 2), blocks=s["blocks"], attention=(7,),
                n_classes=10, prediction="eps")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="training wall-clock budget, warm-up included")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--w", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    ap.add_argument("--size", default="M", choices=sorted(SIZES))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--quick", action="store_true", help="a smoke test on any device: size S, a few steps")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = run.get_device(args.device)
    if device.type != "cuda" and not args.quick and args.device is None:
        raise SystemExit("mnist_gpu5min.py measures GPU training: no CUDA device here "
                         "(pass --device cpu to run it anyway, or --quick for a smoke test)")
    size = "S" if args.quick else args.size
    n, k = (30, 3) if args.quick else (args.n, 20)
    images, labels, source = train.load_data(train.load_config("mnist_cond"))
    if args.quick:
        images, labels = images[:256], labels[:256]
    images, labels = images.to(device), labels.to(device)
    loss = losses.diffusion_loss(schedules.CosineSchedule())
    fast = dict(precision="auto", channels_last=True, compile=not (args.no_compile or args.quick),
                rng="device")
    base = train.TrainConfig(batch_size=8 if args.quick else args.batch, lr=args.lr,
                             lr_min_ratio=0.05, ema_decay=0.9995, label_dropout=0.15, seed=0,
                             device=str(device), progress=not args.quick, **fast)
    # 1. probe on a throwaway model: the first log interval holds the warm-up (compilation),
    # the second the sustained rate
    iters = 2 if args.quick else 50
    probe = train.train(model_for(size), loss, images,
                        train.TrainConfig(**{**base.__dict__, "steps": 2 * iters, "warmup": 1,
                                             "log_every": iters, "progress": False}),
                        labels=labels)
    rate = probe.rates[-1][1]
    warm_cost = max(0.0, iters * base.batch_size / probe.rates[0][1] - iters * base.batch_size / rate)
    budget = args.minutes * 60
    steps = max(4, int(0.95 * (budget - warm_cost) * rate / base.batch_size))
    if args.quick:
        steps = 4
    config = train.TrainConfig(**{**base.__dict__, "steps": steps, "warmup": min(500, steps // 10),
                                  "log_every": max(1, min(200, steps // 4))})
    # 2. the timed run
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = train.train(model_for(size), loss, images, config, labels=labels)
    train_s = time.perf_counter() - start  # train() ends at a log line: the GPU is idle
    model = result.best.eval()
    # 3. sample with CFG and score
    classifier, _ = shipped.load("mnist_classifier", device=device)
    test = data.load_mnist("test", verbose=False).images[: 300 if args.quick else None]
    real = metrics.features(classifier, test)
    schedule = loss.schedule
    y = torch.arange(n) % 10
    rows = []
    for w in args.w:
        g = torch.Generator().manual_seed(1)
        x_T = torch.randn(n, 1, 28, 28, generator=g)
        guided = diffusion.ClipX0(guidance.ClassifierFreeGuidance(model, w), schedule)
        start = time.perf_counter()
        x = torch.cat([samplers.sample(guided, x_T[i:i + 500].to(device), schedule, method="dpmpp_2m",
                                       n_steps=k, y=y[i:i + 500].to(device), generator=g).cpu()
                       for i in range(0, n, 500)])
        sample_s = time.perf_counter() - start
        report = metrics.image_report(x, classifier, real, labels=y, generator=torch.Generator().manual_seed(2))
        rows.append({"w": w, "sample_seconds": round(sample_s, 1), **report})
        print(f"w = {w}: accuracy {report['accuracy']:.3f}, FD ratio {report['fd_ratio']:.2f} "
              f"[{report['fd_ratio_lo']:.2f}, {report['fd_ratio_hi']:.2f}]", flush=True)
    within = train_s <= 1.05 * budget
    payload = {
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "size": size, "params": sum(p.numel() for p in model.parameters()), "data_source": source,
        "precision": train.amp_policy("auto", device)[0].__repr__(), "compile": config.compile,
        "train_minutes_budget": args.minutes, "train_seconds": round(train_s, 1), "train_steps": steps,
        "batch_size": config.batch_size, "probe_img_s": round(rate, 1), "warmup_seconds": round(warm_cost, 1),
        "final_loss": result.history[-1][1], "n": n, "sampler": "dpmpp_2m", "sampler_steps": k, "rows": rows,
        "goal": "at one w: FD ratio <= 2.0 and CFG accuracy >= 0.99, within 5 minutes of GPU training",
        "within_budget": within,
        "meets_goal": within and any(r["fd_ratio"] <= 2.0 and r["accuracy"] >= 0.99 for r in rows),
        "run_mode": run.run_mode(),
    }
    return write(f"mnist_gpu5min_{device.type}" + ("_quick" if args.quick else ""), payload, args.out)


if __name__ == "__main__":
    main()

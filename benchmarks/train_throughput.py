"""Training throughput of the Part II U-Net: img/s, step time, TFLOP/s and MFU per precision
and compilation mode, against diffusers' UNet2DModel of similar size trained by the same loop.

Protocol (Chapter 10)
  * Models: dmlib's U-Net at three sizes (S: the shipped 0.5M-parameter configuration; M about
    3M; L about 13M; levels 28/14/7, attention at 7x7 and in the middle) and, as the peer,
    diffusers' UNet2DModel with the same levels, blocks per level and attention placement,
    its width the multiple of 8 nearest in parameter count. Both predict eps on the cosine
    schedule, through dmlib's one training loop (AdamW, gradient clipping, EMA) on the same
    batches of MNIST (random images of the same shape with --quick or without the data).
  * Modes: fp32 eager with TF32 off; fp32 with TF32 matmuls and convolutions (CUDA only);
    bf16 autocast; bf16 + channels_last + torch.compile.
  * Timing: ``train`` runs 2 x ITERS steps with one log line every ITERS steps; the first
    interval is the warm-up (compilation, allocator, cuDNN autotuning), the second is timed
    between the host reads of the two log lines (so every queued kernel has finished):
    img/s = batch x ITERS / seconds.
  * FLOPs of one step (forward and backward, not the optimiser) by torch.utils.flop_counter
    (dmlib.perf.train_step_flops); MFU = achieved FLOP/s / the dense 16-bit peak of the GPU
    (dmlib.perf.PEAK_TFLOPS, or $DMLIB_PEAK_TFLOPS). The fp32 rows are compared with the same
    16-bit peak, so their MFU shows what is left on the table.
  * Goals on a GPU: bf16 + channels_last + compile >= 2x the img/s of fp32 eager; MFU >= 15%
    for the largest size; dmlib's U-Net at least as many img/s as the peer of similar size.
Writes results/train_throughput_<device>.json.
Usage: python benchmarks/train_throughput.py [--sizes S M L] [--batch 512] [--iters 50]
       [--device cuda] [--no-peer] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from dmlib import losses, perf, run, schedules, train
from dmlib.nn import UNet

try:
    from _common import write
except ImportError:
    from benchmarks._common import write

SIZES = {
    "S": dict(channels=24, blocks=1),  # the shipped mnist_uncond / mnist_cond width
    "M": dict(channels=48, blocks=2),
    "L": dict(channels=96, blocks=2),
}
MODES = {
    "fp32": dict(precision="fp32"),
    "fp32+tf32": dict(precision="fp32"),
    "bf16": dict(precision="bf16"),
    "bf16+channels_last+compile": dict(precision="bf16", channels_last=True, compile=True),
}


class Peer(torch.nn.Module):
    """diffusers' UNet2DModel behind dmlib's denoiser protocol: model(x_t, t, y) -> eps-hat,
    with t in [0, 1] passed as diffusers' timestep 999 t."""

    prediction = "eps"

    def __init__(self, channels: int, blocks: int):
        super().__init__()
        from diffusers import UNet2DModel

        self.net = UNet2DModel(
            sample_size=28, in_channels=1, out_channels=1, layers_per_block=blocks,
            block_out_channels=(channels, 2 * channels, 2 * channels),
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
        )

    def forward(self, x_t, t, y=None):
        return self.net(x_t, t * 999).sample


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def dmlib_unet(size: str) -> UNet:
    s = SIZES[size]
    return UNet(channels=s["channels"], mults=(1, 2, 2), blocks=s["blocks"], attention=(7,))


def peer_width(size: str) -> int:
    """The peer's width (a multiple of 8) whose parameter count is nearest dmlib's."""
    target = n_params(dmlib_unet(size))
    widths = range(8, 4 * SIZES[size]["channels"] + 1, 8)
    return min(widths, key=lambda c: abs(n_params(Peer(c, SIZES[size]["blocks"])) - target))


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 matmuls and cuDNN convolutions on or off (CUDA), restored afterwards."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def measure(build, mode: str, images, loss, *, batch, iters, device) -> dict:
    """One row: a fresh model trained 2 x iters steps; the second interval timed."""
    torch.manual_seed(0)
    model = build()
    params = n_params(model)
    g = torch.Generator().manual_seed(0)
    flops = perf.train_step_flops(model.to(device), loss, images[:batch].to(device), None, g)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    config = train.TrainConfig(steps=2 * iters, batch_size=batch, lr=1e-3, warmup=10,
                               log_every=iters, progress=False, device=str(device),
                               rng="device", **MODES[mode])
    start = time.perf_counter()
    try:
        with tf32(mode == "fp32+tf32"):
            result = train.train(model, loss, images, config)
    except Exception as err:  # noqa: BLE001 (a mode this machine cannot run is a row, not a crash)
        return {"params": params, "error": f"{type(err).__name__}: {err}"[:300]}
    wall = time.perf_counter() - start
    img_s = result.rates[-1][1]
    step_s = batch / img_s
    peak = perf.peak_tflops(device)
    row = {"params": params, "img_s": round(img_s, 1), "step_ms": round(1000 * step_s, 3),
           "flops_per_step": flops, "tflops": round(flops / step_s / 1e12, 4),
           "mfu": round(perf.mfu(flops, step_s, peak[0]), 4) if peak else None,
           "wall_seconds_with_warmup": round(wall, 1)}
    if device.type == "cuda":
        row["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=None, choices=sorted(SIZES))
    ap.add_argument("--modes", nargs="+", default=None, choices=list(MODES))
    ap.add_argument("--batch", type=int, default=None, help="default: 512 on a GPU, 128 on a CPU")
    ap.add_argument("--iters", type=int, default=None, help="timed steps (default: 50 GPU, 5 CPU)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-peer", action="store_true", help="skip diffusers' UNet2DModel")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="a smoke test: size S, 2 steps, no compile")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = run.get_device(args.device)
    gpu = device.type == "cuda"
    sizes = args.sizes or (["S"] if args.quick or not gpu else ["S", "M", "L"])
    modes = args.modes or [m for m in MODES if gpu or m != "fp32+tf32"]
    if args.quick:
        modes = [m for m in modes if "compile" not in m]
    batch = args.batch or (8 if args.quick else 512 if gpu else 128)
    iters = args.iters or (2 if args.quick else 50 if gpu else 5)
    loss = losses.diffusion_loss(schedules.CosineSchedule())
    source = "random images"
    if args.quick:
        images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    else:
        try:  # the training digits in [-1, 1], as python -m dmlib.train loads them
            images, _, source = train.load_data(train.load_config("mnist_uncond"))
        except Exception:  # noqa: BLE001 (throughput does not depend on the pictures)
            images = torch.rand(50000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    images = images.to(device)  # MNIST kept on the device, as python -m dmlib.train does
    rows = []
    for size in sizes:
        builders = [("dmlib", lambda size=size: dmlib_unet(size))]
        if not args.no_peer:
            width = peer_width(size)
            builders.append((f"diffusers (width {width})",
                             lambda size=size, width=width: Peer(width, SIZES[size]["blocks"])))
        for model_name, build in builders:
            for mode in modes:
                row = {"size": size, "model": model_name, "mode": mode,
                       **measure(build, mode, images, loss, batch=batch, iters=iters, device=device)}
                rows.append(row)
                print({k: v for k, v in row.items() if k != "flops_per_step"}, flush=True)
    payload = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if gpu else "cpu",
               "peak_tflops": perf.peak_tflops(device), "batch": batch, "iters": iters,
               "data": source, "rows": rows, "goals": goals(rows) if gpu else None,
               "run_mode": run.run_mode()}
    name = f"train_throughput_{device.type}" + ("_quick" if args.quick else "")
    return write(name, payload, args.out)


def goals(rows) -> dict:
    """The three GPU goals, each with the numbers it was judged on."""
    def rate(size, model, mode):
        for r in rows:
            if r["size"] == size and r["model"].startswith(model) and r["mode"] == mode:
                return r.get("img_s")
        return None

    fast = "bf16+channels_last+compile"
    sizes = sorted({r["size"] for r in rows}, key=list(SIZES).index)
    speedup = {s: (rate(s, "dmlib", fast) or 0) / rate(s, "dmlib", "fp32")
               for s in sizes if rate(s, "dmlib", "fp32")}
    largest = sizes[-1]
    mfu = next((r.get("mfu") for r in rows if r["size"] == largest and r["model"] == "dmlib"
                and r["mode"] == fast), None)
    versus = {s: {m: (rate(s, "dmlib", m), rate(s, "diffusers", m)) for m in MODES} for s in sizes}
    return {
        "speedup_fast_over_fp32": speedup,
        "speedup_at_least_2": bool(speedup) and all(v >= 2 for v in speedup.values()),
        "mfu_largest": mfu, "mfu_at_least_0.15": mfu is not None and mfu >= 0.15,
        "dmlib_vs_peer_img_s": versus,
        "dmlib_at_least_peer": all(a is not None and b is not None and a >= b
                                   for s in sizes for a, b in [versus[s][fast]]),
    }


if __name__ == "__main__":
    main()

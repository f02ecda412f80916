"""Latent diffusion on MNIST (Chapter 12): cost per step, quality at equal training time, and the
transformer beside the U-Net.

Three parts, each a key of the JSON:

* ``speed``: img/s of one training step (forward, backward, AdamW) at the same batch for the
  Part II pixel U-Net (`mnist_cond`), the latent U-Net (`mnist_latent_cond`) and the latent
  DiT (`mnist_latent_dit`), with their parameters and FLOPs per step. Target: the latent
  U-Net's step >= 3x faster than the pixel U-Net's.
* ``equal_time``: the pixel and the latent class-conditional U-Nets trained from scratch by
  the one training loop for the same wall-clock time (``--minutes`` each; the latent model
  on the latents of the shipped `mnist_vae`, whose own training time is recorded beside),
  then sampled alike: N digits, N / 10 of each class, DPM-Solver++(2M) with 20 steps,
  classifier-free guidance at each w of ``--w``; FD ratio to the real-vs-real floor and
  accuracy. Target: the latent model's FD ratio <= 1.5x the pixel model's (at the best w of
  each).
* ``shipped``: the shipped latent U-Net and latent DiT (same steps, similar size) through a
  CFG sweep w in {0, 1, 2, 3, 5}: FD ratio, accuracy, sampling img/s. Target: CFG accuracy
  >= 0.99 at some w in [2, 5].

The pixel model's guided x0-prediction is clipped to [-1, 1] as in Chapter 8; latents have no
such range and are not clipped.
Usage: python benchmarks/latent_mnist.py [--parts speed,equal_time,shipped] [--n 2000]
[--minutes 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from dmlib import data, diffusion, guidance, latent, metrics, perf, run, samplers, shipped, train

try:
    from _common import RESULTS, machine, write
except ImportError:
    from benchmarks._common import RESULTS, machine, write

PIXEL, LATENT, DIT, VAE = "mnist_cond", "mnist_latent_cond", "mnist_latent_dit", "mnist_vae"
SWEEP = (0.0, 1.0, 2.0, 3.0, 5.0)


def _step_speed(name, batch, quick):
    cfg = train.load_config(name)
    model = train.build_model(cfg).train()
    loss = train.build_loss(cfg)
    shape = (4, 7, 7) if "latent" in cfg["data"] else (1, 28, 28)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, *shape, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss(model, x0, y, g).backward()
        opt.step()

    seconds = perf.time_steps(step, device="cpu", warmup=1 if quick else 5, iters=1 if quick else 20)
    return {"model": name, "parameters": sum(p.numel() for p in model.parameters()),
            "flops_per_step": perf.train_step_flops(model, loss, x0, y, g),
            "seconds_per_step": seconds, "img_per_s": batch / seconds}


def _sample(model, latent_model, n, w, steps, batch, decode=None):
    cfg_model = guidance.ClassifierFreeGuidance(model, w)
    schedule = train.build_loss(train.load_config(PIXEL)).schedule  # cosine, as every model here
    if not latent_model:
        cfg_model = diffusion.ClipX0(cfg_model, schedule)
    shape = model.latent_shape if latent_model else (1, 28, 28)
    x_T = torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % 10
    g = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    out = []
    with torch.no_grad():
        for i in range(0, n, batch):
            x = samplers.sample(cfg_model, x_T[i:i + batch], schedule, method="dpmpp_2m", n_steps=steps,
                                y=y[i:i + batch], generator=g)
            out.append(model.decode(x) if latent_model else x)
    return torch.cat(out), y, time.perf_counter() - start


def _sweep(model, latent_model, ws, n, steps, batch, classifier, real):
    rows = []
    for w in ws:
        x, y, seconds = _sample(model, latent_model, n, w, steps, batch)
        report = metrics.image_report(x, classifier, real, labels=y, generator=torch.Generator().manual_seed(2))
        rows.append({"w": w, "sample_seconds": round(seconds, 1), "sample_img_per_s": n / seconds, **report})
        print(f"  w = {w}: accuracy {report['accuracy']:.3f}, FD ratio {report['fd_ratio']:.2f} "
              f"[{report['fd_ratio_lo']:.2f}, {report['fd_ratio_hi']:.2f}]", flush=True)
    return rows


def _train_for(name, seconds, quick):
    """Train run ``name`` from scratch for about ``seconds`` of wall-clock time: the step budget
    is set from the measured speed of the first steps, and the real time is recorded."""
    cfg = train.load_config(name)
    images, labels, source = train.load_data(cfg)
    loss = train.build_loss(cfg)
    probe = train.train_config(cfg, steps=2 if quick else 20, warmup=1, progress=False, checkpoint_every=0)
    start = time.perf_counter()
    train.train(train.build_model(cfg), loss, images, probe, labels=labels)
    per_step = (time.perf_counter() - start) / probe.steps
    steps = max(2 if quick else 10, int(seconds / per_step))
    tcfg = train.train_config(cfg, steps=steps, warmup=min(cfg["train"]["warmup"], steps // 10),
                              checkpoint_every=0, progress=not quick)
    model = train.build_model(cfg)
    start = time.perf_counter()
    result = train.train(model, loss, images, tcfg, labels=labels)
    spent = time.perf_counter() - start
    print(f"{name}: {steps} steps in {spent:.0f} s", flush=True)
    return result.best.eval(), {"steps": steps, "train_seconds": round(spent, 1), "data_source": source}


def main(argv=None):
    args = _parse(argv)
    if not args.quick:
        return _run(args)
    # the smoke test runs in quick mode: a quick autoencoder and the first 5,000 digits' latents
    before = os.environ.get("DMLIB_MODE")
    os.environ["DMLIB_MODE"] = "quick"
    try:
        return _run(args)
    finally:
        if before is None:
            del os.environ["DMLIB_MODE"]
        else:
            os.environ["DMLIB_MODE"] = before


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="speed,equal_time,shipped")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--minutes", type=float, default=10.0, help="training time of each model in equal_time")
    ap.add_argument("--w", default="1,2,3", help="guidance scales of equal_time")
    ap.add_argument("--steps", type=int, default=20, help="sampler steps (DPM-Solver++(2M))")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="a smoke test: tiny budgets, 40 samples")
    ap.add_argument("--out", default=None)
    return ap.parse_args(argv)


def _run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - {"speed", "equal_time", "shipped"})
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; choose from speed, equal_time, shipped")
    n, steps = (40, 3) if args.quick else (args.n, args.steps)
    classifier, _ = shipped.load("mnist_classifier")
    test = data.load_mnist("test", verbose=False).images[: 300 if args.quick else None]
    real = metrics.features(classifier, test)
    payload = {"n": n, "sampler": f"dpmpp_2m, {steps} steps", "run_mode": run.run_mode()}

    if "speed" in parts:
        batch = 16 if args.quick else 128
        rows = [_step_speed(name, batch, args.quick) for name in (PIXEL, LATENT, DIT)]
        for r in rows:
            print(f"{r['model']}: {r['img_per_s']:.0f} img/s, {r['parameters']:,} parameters", flush=True)
        ratio = rows[1]["img_per_s"] / rows[0]["img_per_s"]
        payload["speed"] = {"batch": batch, "rows": rows, "latent_over_pixel": ratio,
                            "target": "latent U-Net step >= 3x faster than the pixel U-Net",
                            "meets_target": ratio >= 3.0}

    if "equal_time" in parts:
        seconds = 1.0 if args.quick else 60.0 * args.minutes
        ws = tuple(float(w) for w in args.w.split(","))[: 1 if args.quick else None]
        out = {"seconds_each": seconds, "w": ws}
        for key, name, is_latent in (("pixel", PIXEL, False), ("latent", LATENT, True)):
            model, info = _train_for(name, seconds, args.quick)
            if is_latent:
                *_, (scale, shift) = latent.latent_data(train.load_config(name), "train")
                vae, _ = train.trained(VAE)
                model = latent.LatentModel(model, vae, scale=scale, shift=shift).eval()
            print(f"{name} after {info['train_seconds']} s:", flush=True)
            out[key] = {**info, "rows": _sweep(model, is_latent, ws, n, steps, args.batch, classifier, real)}
        vae_record = shipped.manifest().get(f"{VAE}.safetensors", {})
        out["autoencoder_train_seconds"] = (vae_record.get("metrics") or {}).get("train_seconds")
        best = {k: min(r["fd_ratio"] for r in out[k]["rows"]) for k in ("pixel", "latent")}
        out.update(best_fd_ratio=best, latent_over_pixel_fd=best["latent"] / best["pixel"],
                   target="latent FD ratio <= 1.5x the pixel model's at equal training time",
                   meets_target=best["latent"] <= 1.5 * best["pixel"])
        payload["equal_time"] = out

    if "shipped" in parts:
        out = {}
        for name in (LATENT, DIT):
            if args.quick:
                cfg = train.load_config(name)
                *_, (scale, shift) = latent.latent_data(cfg, "train")
                model = latent.LatentModel(train.build_model(cfg), train.trained(VAE)[0], scale=scale,
                                           shift=shift).eval()
                step = None
            else:
                model, record = latent.load(name)
                step = record.get("step")
            print(f"{name} (step {step}):", flush=True)
            out[name] = {"step": step, "parameters": sum(p.numel() for p in model.denoiser.parameters()),
                         "rows": _sweep(model, True, SWEEP[1:3] if args.quick else SWEEP, n, steps,
                                        args.batch, classifier, real)}
        ok = [r for r in out[LATENT]["rows"] if 2 <= r["w"] <= 5 and r["accuracy"] >= 0.99]
        out.update(target="CFG accuracy >= 0.99 at some w in [2, 5] (mnist_latent_cond)", meets_target=bool(ok))
        payload["shipped"] = out

    name = "latent_mnist" + ("_quick" if args.quick else "")
    _keep_other_parts(name, parts, payload, args.out)
    return write(name, payload, args.out)


def _keep_other_parts(name, parts, payload, out_dir):
    """The parts can run separately (``--parts shipped`` after the others): a part not run
    now keeps its earlier result, with the machine record it was measured on, when the
    earlier file was written on the same kind of machine in the same mode."""
    path = Path(out_dir if out_dir is not None else RESULTS) / f"{name}.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    here = machine()
    same = all(old.get("machine", {}).get(k) == here.get(k) for k in ("cpu", "cpu_cores", "gpu"))
    if not same or old.get("run_mode") != payload["run_mode"] or old.get("n") != payload["n"]:
        return
    for part in ("speed", "equal_time", "shipped"):
        if part not in parts and part in old:
            payload[part] = {**old[part], "machine": old[part].get("machine", old["machine"])}


if __name__ == "__main__":
    main()

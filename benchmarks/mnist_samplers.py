"""Samplers on one trained MNIST eps-model at equal and unequal NFE, by Frechet distance.

Loads the shipped unconditional U-Net `mnist_uncond` (cosine schedule, eps-prediction) and
draws N samples from the same x_T with each sampler: DDPM with 1000 steps (ancestral, the
posterior variance), DDIM with 50 and 20 steps, Heun, DPM-Solver++(2M) and UniPC at <= 20
NFE, Euler-Maruyama; DDIM-50 also on the log-SNR and EDM grids, and DDIM-200, the probability-
flow ODE nearly solved (how close any deterministic sampler can come to DDPM-1000); and Heun
with 10 steps and churn (a stochastic second-order sampler, its Gamma chosen beforehand by
benchmarks/mnist_churn.py on other noise and the validation digits) and DPM-Solver++(2M) on the
reverse SDE with 20 steps (another), beside DDPM with 20 steps. Each
set is scored with `metrics.image_report` (the shipped evaluation
classifier's features; FD with a bootstrap interval, its real-vs-real floor at the same N,
KID, precision and recall, confidence and coverage) and checked for memorisation (Section 9.5:
the distance of each sample to its nearest image among the first 10,000 training digits against
that to its nearest test digit). Targets: DDIM-50 FD <= 1.10 x DDPM-1000
FD; a second-order sampler at <= 20 NFE <= 1.2 x DDPM-1000 FD.
On a CPU, N = 2000 (DDPM-1000 dominates: 2 million network evaluations); on a GPU use
N >= 10000. Usage: python benchmarks/mnist_samplers.py [--n 2000] [--only ddim50 ...] [--quick]
[--merge] (--merge adds the rows run now to the earlier results of the same model and N).

DDPM-1000 at N = 2000 takes hours on a CPU. With ``--cache DIR`` every finished batch of samples
is kept in DIR (safetensors, named by the model's sha256, sampler and batch), so an interrupted
run resumes where it stopped; ``--part K/M`` samples only the batches i with i % M == K and does
not score, so M processes (one per core) can share the work before a last run without
``--part`` scores everything from the cache.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dmlib import data, diffusion, metrics, run, samplers, shipped, train

try:
    from _common import RESULTS, write
except ImportError:
    from benchmarks._common import RESULTS, write

# name: (method, steps[, spacing[, churn]]); NFE as samplers.nfe counts them. The default grid is uniform
# in t; "log_snr" and "edm" (samplers.time_grid) run from t = 1 to T_MIN, then one last step to 0.
# A fourth entry is the churn Gamma of a deterministic method (samplers.sample(churn=...)).
CHURN = 1.0  # the choice recorded in results/mnist_churn.json
CONFIGS = {
    "ddpm1000": ("ddpm", 1000),
    "ddim50": ("ddim", 50),
    "ddim20": ("ddim", 20),
    "euler_maruyama100": ("euler_maruyama", 100),
    "heun10": ("heun", 10),
    "dpmpp_2m20": ("dpmpp_2m", 20),
    "dpmpp_2m10": ("dpmpp_2m", 10),
    "unipc_2m10": ("unipc_2m", 10),
    # the probability-flow ODE nearly solved: how far the deterministic samplers can get
    "ddim200": ("ddim", 200),
    # DDIM-50 on the other grids of Section 4.5
    "ddim50_log_snr": ("ddim", 50, "log_snr"),
    "ddim50_edm": ("ddim", 50, "edm"),
    # a stochastic second-order sampler: Heun with churn (Section 4.10), its Gamma chosen by
    # benchmarks/mnist_churn.py on other draws of x_T and the validation digits
    "heun10_churn": ("heun", 10, "uniform", CHURN),
    # another: DPM-Solver++(2M) on the reverse SDE (Section 4.10), nothing to choose
    "dpmpp_2m_sde20": ("dpmpp_2m_sde", 20),
    "ddpm20": ("ddpm", 20),  # its first-order counterpart at the same NFE
}
T_MIN = 0.002


def grid(config, schedule, quick=False):
    """The time grid of a configuration (None: the sampler's uniform grid), with its NFE."""
    method, steps, *rest = config
    steps = 3 if quick else steps
    spacing = rest[0] if rest else "uniform"
    if spacing == "uniform":
        return None, steps
    times = samplers.time_grid(steps - 1, spacing=spacing, schedule=schedule, t_min=T_MIN)
    return torch.cat([times, torch.zeros(1)]), steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--only", nargs="+", default=None, choices=sorted(CONFIGS))
    ap.add_argument("--batch", type=int, default=500, help="samples per sampler call")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="a smoke test: an untrained network, 3 steps")
    ap.add_argument("--out", default=None)
    ap.add_argument("--cache", default=None, help="keep finished batches here; resume from them")
    ap.add_argument("--part", default=None, help="K/M: sample only batches i with i %% M == K")
    ap.add_argument("--merge", action="store_true",
                    help="add the rows run now to the results file of the same model and N (its other "
                         "rows, e.g. DDPM-1000, are kept), then recompute the checks")
    ap.add_argument("--clip", action="store_true",
                    help="every sampler on the x0-clipped denoiser (diffusion.ClipX0, Section 7.5)")
    args = ap.parse_args(argv)
    part = tuple(int(v) for v in args.part.split("/")) if args.part else None
    if part and not (args.cache and 0 <= part[0] < part[1]):
        ap.error("--part K/M needs --cache and 0 <= K < M")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = train.load_config("mnist_uncond")
    schedule = train.build_loss(cfg).schedule
    if args.quick:
        model, record = train.build_model(cfg).eval(), {"step": 0}
        n, names = 30, args.only or ["ddpm1000", "ddim50", "dpmpp_2m10"]
    else:
        model, record = shipped.load("mnist_uncond")
        n, names = args.n, args.only or list(CONFIGS)
    device = next(model.parameters()).device
    classifier, _ = shipped.load("mnist_classifier", device=device)
    test_images = data.load_mnist("test", verbose=False).images[: 300 if args.quick else None]
    test = metrics.features(classifier, test_images)  # once, shared by every report
    # memorisation (Section 9.5): nearest training image vs nearest test image, equal sizes
    train_ref = data.load_mnist("train", verbose=False).images[: len(test_images)]
    x_T = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    weights = hashlib.sha256(b"".join(
        p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()[:16]
    tag = "_clip" if args.clip else ""
    denoiser = diffusion.ClipX0(model, schedule) if args.clip else model
    rows = {}
    for name in names:
        method = CONFIGS[name][0]
        churn = CONFIGS[name][3] if len(CONFIGS[name]) > 3 else 0.0
        times, steps = grid(CONFIGS[name], schedule, args.quick)
        start = time.perf_counter()
        batches, cached = [], 0
        for b, i in enumerate(range(0, n, args.batch)):
            path = (Path(args.cache) / f"{weights}_{name}{tag}_{args.batch}_{b}.safetensors"
                    if args.cache else None)
            if path is not None and path.is_file():
                batches.append(load_file(path)["x"])
                cached += 1
                continue
            if part and b % part[1] != part[0]:
                batches.append(None)
                continue
            # one generator per batch, so a batch is the same whoever samples it, in any order
            g = torch.Generator().manual_seed(1000 + b)
            x_b = samplers.sample(denoiser, x_T[i:i + args.batch].to(device), schedule, method=method,
                                  n_steps=steps, times=times, churn=churn, generator=g,
                                  progress=not args.quick).cpu()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                save_file({"x": x_b.contiguous()}, str(tmp))
                os.replace(tmp, path)
            batches.append(x_b)
        seconds = time.perf_counter() - start
        if any(x_b is None for x_b in batches):
            print(f"{name}: sampled my part in {seconds:.0f} s; score without --part", flush=True)
            continue
        x = torch.cat(batches)
        report = metrics.image_report(x, classifier, test, generator=torch.Generator().manual_seed(2))
        mem = metrics.memorisation(x, train_ref, test_images)
        rows[name] = {"method": method, "steps": steps, "nfe": samplers.nfe(method, steps),
                      "spacing": CONFIGS[name][2] if len(CONFIGS[name]) > 2 else "uniform",
                      "churn": churn,
                      "sample_seconds": None if cached else round(seconds, 1),
                      "batches_from_cache": cached, **report,
                      "memorisation": {k: v for k, v in mem.items() if not isinstance(v, torch.Tensor)}}
        print(f"{name}: NFE {rows[name]['nfe']}, FD {report['fd']:.3f} "
              f"[{report['fd_lo']:.3f}, {report['fd_hi']:.3f}], ratio {report['fd_ratio']:.2f}; "
              f"memorisation ratio {mem['ratio']:.3f}, closer to train {mem['closer_train']:.3f}", flush=True)
    if part:
        return None
    name = "mnist_samplers" + ("_clip" if args.clip else "") + ("_quick" if args.quick else "")
    earlier = None
    if args.merge:
        new_rows = set(rows)
        rows, old = _merged(rows, name, args.out, n, record.get("step"), args.clip)
        earlier = _earlier(old, new_rows)
    ref = rows.get("ddpm1000")
    checks = {}
    if ref is not None:
        if "ddim50" in rows:
            checks["ddim50_over_ddpm1000"] = rows["ddim50"]["fd"] / ref["fd"]
        grids = [k for k in ("ddim50", "ddim50_log_snr", "ddim50_edm") if k in rows]
        if grids:
            best = min(grids, key=lambda k: rows[k]["fd"])
            checks["best_ddim50_grid"] = best
            checks["best_ddim50_over_ddpm1000"] = rows[best]["fd"] / ref["fd"]
        if "ddim200" in rows:  # the deterministic samplers' limit
            checks["ddim200_over_ddpm1000"] = rows["ddim200"]["fd"] / ref["fd"]
        second = [k for k in ("dpmpp_2m20", "dpmpp_2m10", "unipc_2m10", "heun10", "heun10_churn",
                              "dpmpp_2m_sde20") if k in rows]
        if second:
            best = min(second, key=lambda k: rows[k]["fd"])
            checks["best_second_order"] = best
            checks["best_second_order_over_ddpm1000"] = rows[best]["fd"] / ref["fd"]
            ode = [k for k in second if not rows[k].get("churn") and rows[k]["method"] != "dpmpp_2m_sde"]
            if ode:  # the deterministic ones alone
                best = min(ode, key=lambda k: rows[k]["fd"])
                checks["best_ode_second_order"] = best
                checks["best_ode_second_order_over_ddpm1000"] = rows[best]["fd"] / ref["fd"]
    payload = {"model": "mnist_uncond", "model_step": record.get("step"), "n": n, "rows": rows, "checks": checks,
               "targets": {"ddim50_over_ddpm1000": "<= 1.10", "best_second_order_over_ddpm1000": "<= 1.2"},
               "clipped_x0": args.clip, "t_min_of_other_grids": T_MIN, "run_mode": run.run_mode()}
    if earlier:
        payload["earlier_runs"] = earlier
    return write(name, payload, args.out)


def _earlier(old, new_rows):
    """Where each kept row of a merged record ran: the earlier runs of the old record less the
    rows run again now, then the old record's own machine with its rows that are kept."""
    earlier, placed = [], set(new_rows)
    for run_ in old.get("earlier_runs") or []:
        placed |= set(run_["rows"])
        kept = sorted(set(run_["rows"]) - set(new_rows))
        if kept:
            earlier.append({"machine": run_["machine"], "rows": kept})
    own = sorted(set(old["rows"]) - placed)
    if own:
        earlier.append({"machine": old["machine"], "rows": own})
    return earlier


def _merged(rows, name, out, n, step, clip):
    """The rows of the results file `name` with ``rows`` added (or replaced): refused unless
    that file holds the same model step, N and clipping, so that every row shares one x_T."""
    path = (Path(out) if out else RESULTS) / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"--merge: no earlier results at {path}")
    old = json.loads(path.read_text())
    if (old.get("n"), old.get("model_step"), bool(old.get("clipped_x0"))) != (n, step, clip):
        raise SystemExit(f"--merge: {path} holds N = {old.get('n')}, model step {old.get('model_step')}, "
                         f"clipping {bool(old.get('clipped_x0'))}; this run has {n}, {step}, {clip}")
    return {**old["rows"], **rows}, old


if __name__ == "__main__":
    main()

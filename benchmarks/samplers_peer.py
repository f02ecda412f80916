"""dmlib's ODE samplers against diffusers' schedulers at 10 and 20 function evaluations.

Both sides are driven by the same EXACT denoiser of a 2D Gaussian mixture (the posterior mean
E[x_0 | x_t] in closed form), so the only error is each sampler's discretisation.

Protocol (fixed before any tuning)
  * Forward process: DDPM's linear schedule, beta from 1e-4 to 0.02 over T = 1000 steps. diffusers
    runs on that discrete schedule (its own tables); dmlib on the continuous counterpart
    LinearSchedule(beta_min=0.1, beta_max=b), with b chosen so that alpha_bar(1) equals DDPM's
    alpha_bar at its last step (b = 20.13 instead of 20.0: the continuous integral misses the
    second-order term of prod(1 - beta_k)). So both start from the same noise level.
  * x_T ~ N(0, I) is a sample of p_T at the last DDPM step (noise level sigma/alpha = 157.3).
    Reference: the probability-flow ODE from that x_T solved to convergence (dmlib
    DPM-Solver++(3M), 2000 log-SNR-spaced steps; checked against 4000 Heun steps and 4000 3M steps).
  * Metric: pathwise RMS error sqrt(mean_i |x_0,i - x_0,i^ref|^2) over n samples of x_T.
  * NFE counts every model evaluation (checked by counting calls); the budgets are 10 and 20.
  * diffusers (0.42): DPMSolverMultistepScheduler (dpmsolver++, solver_order 2 and 3) and
    UniPCMultistepScheduler (solver_order 2 and 3), each with timestep_spacing in
    {linspace, leading, trailing} and use_karras_sigmas in {False, True}, other settings default;
    the model is evaluated at the noise level the scheduler's step assumes (sigmas[i]).
    Reported: diffusers' best configuration PER MIXTURE (chosen on that mixture itself).
  * dmlib: ddim, dpmpp_2m, dpmpp_3m, unipc_2m, unipc_3m (added after the first run), heun on grids
    uniform in t, uniform in log-SNR, or EDM's
    rho-grid (rho 3, 5, 7), with last nonzero time t_min in {1e-3, 3e-3, 1e-2, 3e-2} and a final
    step to t = 0. ONE configuration per budget is chosen on the TUNED mixtures (lowest geometric
    mean of the error) and reported on every mixture; the HELD_OUT mixtures are not looked at.

Usage: python benchmarks/samplers_peer.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import time

import torch

from dmlib import samplers, schedules, toy

try:
    from _common import write
except ImportError:  # run as a module
    from benchmarks._common import write

T_TRAIN = 1000
BETA_START, BETA_END = 1e-4, 0.02
NFE_BUDGETS = (10, 20)

# -- the mixtures, and which are tuned on: DECLARED BEFORE ANY TUNING ---------------------------
TUNED = ("eight_gaussians", "anisotropic_pair")
HELD_OUT = ("unequal_three", "narrow_and_broad", "rotated_bars")


def _rot(deg):
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)


def _cov(sx, sy, deg):
    r = _rot(deg)
    return r @ torch.diag(torch.tensor([sx**2, sy**2], dtype=torch.float64)) @ r.T


def mixtures() -> dict:
    """Five 2D mixtures on the unit scale: isotropic / anisotropic, equal / unequal weights."""
    return {
        # tuned
        "eight_gaussians": toy.GaussianMixture.eight_gaussians(),
        "anisotropic_pair": toy.GaussianMixture(
            [[-0.8, -0.3], [0.9, 0.4]], torch.stack([_cov(0.6, 0.08, 30), _cov(0.5, 0.1, -45)]),
            weights=[0.35, 0.65]),
        # held out
        "unequal_three": toy.GaussianMixture(
            [[-1.2, 0.2], [0.6, 0.9], [0.7, -0.9]],
            torch.stack([_cov(0.3, 0.15, 10), _cov(0.2, 0.2, 0), _cov(0.4, 0.1, 70)]),
            weights=[0.6, 0.3, 0.1]),
        "narrow_and_broad": toy.GaussianMixture(
            [[0.0, 0.0], [1.2, 0.8]], torch.stack([_cov(1.0, 0.7, 20), _cov(0.03, 0.03, 0)]),
            weights=[0.85, 0.15]),
        "rotated_bars": toy.GaussianMixture(
            [[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]],
            torch.stack([_cov(0.45, 0.04, d) for d in (45, -45, -45, 45)]),
            weights=[0.4, 0.3, 0.2, 0.1]),
    }


# -- the exact denoiser, fast: closed-form 2x2 algebra (checked against toy.GaussianMixture) ------
class Oracle:
    """E[x_0 | x_t] for x_t = alpha x_0 + sigma eps, at given (alpha, sigma) per sample."""

    def __init__(self, mix: toy.GaussianMixture):
        self.mu, self.cov, self.logw = mix.means, mix.covs, mix.weights.log()  # (K, 2), (K, 2, 2)

    def __call__(self, x, alpha, sigma):
        x = x.double()
        a, s2 = alpha.double()[:, None, None], (sigma.double() ** 2)[:, None, None]  # (B, 1, 1)
        c = a[..., None] ** 2 * self.cov + s2[..., None] * torch.eye(2, dtype=torch.float64)  # (B, K, 2, 2)
        det = c[..., 0, 0] * c[..., 1, 1] - c[..., 0, 1] * c[..., 1, 0]  # (B, K)
        inv = torch.stack([torch.stack([c[..., 1, 1], -c[..., 0, 1]], -1),
                           torch.stack([-c[..., 1, 0], c[..., 0, 0]], -1)], -2) / det[..., None, None]
        diff = x[:, None, :] - a * self.mu  # (B, K, 2)
        sol = torch.einsum("bkij,bkj->bki", inv, diff)  # C^{-1} (x - alpha mu)
        logp = self.logw - 0.5 * ((diff * sol).sum(-1) + det.log())  # (B, K), up to a constant
        resp = torch.softmax(logp, 1)
        comp = self.mu + a * torch.einsum("kij,bkj->bki", self.cov, sol)  # (B, K, 2)
        return (resp[..., None] * comp).sum(1)


class DmlibModel:
    """The oracle as a dmlib model (denoiser protocol, predicting x0), counting its calls."""

    prediction = "x0"

    def __init__(self, oracle, schedule):
        self.oracle, self.schedule, self.calls = oracle, schedule, 0

    def __call__(self, x, t, y=None):
        self.calls += 1
        a, s = self.schedule._alpha_sigma(t.double())
        return self.oracle(x, a, s).to(x.dtype)


# -- the schedules ---------------------------------------------------------------------------------
def ddpm_alpha_bars() -> torch.Tensor:
    """DDPM's discrete alpha_bar_k, k = 1..T, as diffusers builds it (float32 betas, cumprod)."""
    betas = torch.linspace(BETA_START, BETA_END, T_TRAIN, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, 0).double()


def continuous_counterpart(ab_last: float) -> schedules.LinearSchedule:
    """LinearSchedule(0.1, b) with alpha_bar(1) = ab_last: 0.1 + (b - 0.1) / 2 = -log ab_last."""
    return schedules.LinearSchedule(0.1, 0.1 + 2 * (-math.log(ab_last) - 0.1))


# -- diffusers -------------------------------------------------------------------------------------
def diffusers_configs(quick=False):
    kinds = [("dpmpp_2m", 2), ("dpmpp_3m", 3), ("unipc_2", 2), ("unipc_3", 3)]
    spacings = ("linspace", "leading", "trailing")
    karras = (False, True)
    if quick:
        kinds, spacings, karras = kinds[:2] + kinds[2:3], ("trailing",), (False,)
    return [dict(kind=k, order=o, timestep_spacing=sp, use_karras_sigmas=kr)
            for (k, o), sp, kr in itertools.product(kinds, spacings, karras)]


def run_diffusers(cfg, nfe, x_T, oracle):
    import diffusers

    common = dict(num_train_timesteps=T_TRAIN, beta_start=BETA_START, beta_end=BETA_END,
                  beta_schedule="linear", prediction_type="sample", solver_order=cfg["order"],
                  timestep_spacing=cfg["timestep_spacing"], use_karras_sigmas=cfg["use_karras_sigmas"])
    if cfg["kind"].startswith("dpmpp"):
        sch = diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **common)
    else:
        sch = diffusers.UniPCMultistepScheduler(**common)
    sch.set_timesteps(nfe)
    x, calls = x_T.clone(), 0
    for i, k in enumerate(sch.timesteps):
        lvl = sch.sigmas[i].double()  # the noise level sigma / alpha this step assumes
        alpha = 1 / torch.sqrt(1 + lvl**2)
        x0 = oracle(x, alpha.expand(len(x)), (lvl * alpha).expand(len(x)))
        calls += 1
        x = sch.step(x0.to(x.dtype), k, x).prev_sample.double()
    return x, calls


# -- dmlib -----------------------------------------------------------------------------------------
def dmlib_configs(quick=False):
    methods = ("ddim", "dpmpp_2m", "dpmpp_3m", "unipc_2m", "unipc_3m", "heun")
    grids = [("uniform", None), ("log_snr", None), ("edm", 3.0), ("edm", 5.0), ("edm", 7.0)]
    t_mins = (1e-3, 3e-3, 1e-2, 3e-2)
    if quick:
        methods, grids, t_mins = ("ddim", "dpmpp_3m"), [("log_snr", None)], (1e-2,)
    return [dict(method=m, spacing=sp, rho=rho, t_min=tm)
            for m, (sp, rho), tm in itertools.product(methods, grids, t_mins)]


def dmlib_grid(cfg, nfe, schedule):
    """A grid ending at t = 0 whose sampler costs at most nfe evaluations (heun: 2n - 1 for n
    steps to t = 0); its last step goes from t_min to 0."""
    n = (nfe + 1) // 2 if cfg["method"] == "heun" else nfe  # steps
    kw = dict(spacing=cfg["spacing"], t_min=cfg["t_min"])
    if cfg["spacing"] != "uniform":
        kw["schedule"] = schedule
    if cfg["rho"] is not None:
        kw["rho"] = cfg["rho"]
    grid = samplers.time_grid(n - 1, **kw).double()
    return torch.cat([grid, torch.zeros(1, dtype=torch.float64)]), n


def run_dmlib(cfg, nfe, x_T, oracle, schedule):
    model = DmlibModel(oracle, schedule)
    times, n = dmlib_grid(cfg, nfe, schedule)
    x = samplers.sample(model, x_T, schedule, method=cfg["method"], times=times)
    assert model.calls == samplers.nfe(cfg["method"], n), (cfg, model.calls)
    return x, model.calls


def reference(x_T, oracle, schedule, n_steps):
    """The probability-flow ODE from x_T at t = 1, converged: DPM-Solver++(3M) on n_steps
    log-SNR-spaced steps to t = 1e-5, then the posterior mean there (sigma/alpha ~ 1e-3)."""
    times = samplers.time_grid(n_steps, spacing="log_snr", schedule=schedule, t_min=1e-5).double()
    times = torch.cat([times, torch.zeros(1, dtype=torch.float64)])
    return samplers.sample(DmlibModel(oracle, schedule), x_T, schedule, method="dpmpp_3m", times=times)


def reference_checks(x_T, oracle, schedule, ref_steps, ref):
    """How far the reference moves with twice the steps (3M), and 2x-step Heun's distance to it."""
    check = {"dpmpp_3m_2x_steps": rms(reference(x_T, oracle, schedule, 2 * ref_steps), ref)}
    heun_times = torch.cat([samplers.time_grid(2 * ref_steps, spacing="log_snr", schedule=schedule,
                                               t_min=1e-5).double(), torch.zeros(1, dtype=torch.float64)])
    check["heun_2x_steps"] = rms(samplers.sample(DmlibModel(oracle, schedule), x_T, schedule, method="heun",
                                                 times=heun_times), ref)
    return check


def rms(x, ref):
    return float((x - ref).pow(2).sum(1).mean().sqrt())


def _key(cfg):
    return ",".join(f"{k}={v}" for k, v in cfg.items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for the test that the script runs")
    ap.add_argument("--out", default=None, help="folder for the JSON (default benchmarks/results)")
    ap.add_argument("--n", type=int, default=None, help="samples of x_T (default 2000; quick 64)")
    ap.add_argument("--checks-from", default=None,
                    help="reuse the reference checks (the 2x-step re-solves, 3/4 of the run time) of an "
                         "earlier JSON with the same protocol instead of recomputing them")
    args = ap.parse_args(argv)
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)  # small tensors: threads only add overhead
    n = args.n or (64 if args.quick else 2000)
    ref_steps = 100 if args.quick else 2000
    names = (TUNED[:1] + HELD_OUT[:1]) if args.quick else TUNED + HELD_OUT
    ab = ddpm_alpha_bars()
    schedule = continuous_counterpart(float(ab[-1]))
    t0 = time.time()

    mixes = mixtures()
    per_mixture = {}
    for name in names:
        mix = mixes[name]
        oracle = Oracle(mix)
        # the fast oracle is the exact posterior mean of dmlib.toy (float64 round-off)
        xt = torch.randn(64, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        for t in (0.02, 0.3, 0.9):
            a, s = schedule.alpha_sigma(torch.full((64,), t, dtype=torch.float64))
            torch.testing.assert_close(oracle(xt, a, s), mix.posterior_mean(xt, t, schedule), rtol=1e-9, atol=1e-10)
        x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        ref = reference(x_T, oracle, schedule, ref_steps)
        if args.checks_from:
            import json

            with open(args.checks_from) as f:
                check = dict(json.load(f)["mixtures"][name]["reference_check"], reused_from_earlier_run=True)
        else:
            check = reference_checks(x_T, oracle, schedule, ref_steps, ref)
        rows = {"diffusers": {}, "dmlib": {}}
        for nfe in NFE_BUDGETS:
            for cfg in diffusers_configs(args.quick):
                x, calls = run_diffusers(cfg, nfe, x_T, oracle)
                assert calls == nfe
                rows["diffusers"].setdefault(str(nfe), []).append({**cfg, "nfe": calls, "rms": rms(x, ref)})
            for cfg in dmlib_configs(args.quick):
                x, calls = run_dmlib(cfg, nfe, x_T, oracle, schedule)
                rows["dmlib"].setdefault(str(nfe), []).append({**cfg, "nfe": calls, "rms": rms(x, ref)})
        per_mixture[name] = {"split": "tuned" if name in TUNED else "held_out", "reference_check": check,
                             "reference_scale": rms(ref, torch.zeros_like(ref)), "rows": rows}
        print(f"{name}: reference checks {check}", flush=True)

    # dmlib: one configuration per budget, chosen on the tuned mixtures only
    tuned = [m for m in names if m in TUNED]
    summary = {}
    for nfe in map(str, NFE_BUDGETS):
        cfgs = [r for r in per_mixture[tuned[0]]["rows"]["dmlib"][nfe]]
        def score(i, nfe=nfe):  # geometric mean of the error over the tuned mixtures
            return sum(math.log(per_mixture[m]["rows"]["dmlib"][nfe][i]["rms"]) for m in tuned) / len(tuned)
        best_i = min(range(len(cfgs)), key=score)
        chosen = {k: cfgs[best_i][k] for k in ("method", "spacing", "rho", "t_min")}
        table = {}
        for m in names:
            ours = per_mixture[m]["rows"]["dmlib"][nfe][best_i]
            theirs = min(per_mixture[m]["rows"]["diffusers"][nfe], key=lambda r: r["rms"])
            table[m] = {"split": per_mixture[m]["split"], "dmlib_rms": ours["rms"], "dmlib_nfe": ours["nfe"],
                        "diffusers_best_rms": theirs["rms"],
                        "diffusers_best": {k: theirs[k] for k in ("kind", "timestep_spacing", "use_karras_sigmas")},
                        "ratio": ours["rms"] / theirs["rms"]}
        held = [table[m]["ratio"] for m in names if m in HELD_OUT]
        summary[nfe] = {"dmlib_config": chosen, "per_mixture": table,
                        "held_out_ratio_geomean": math.exp(sum(map(math.log, held)) / len(held)) if held else None,
                        "held_out_ratio_max": max(held) if held else None}
        print(f"NFE {nfe}: dmlib config {chosen}", flush=True)
        for m, r in table.items():
            print(f"  {m:18s} {r['split']:8s} dmlib {r['dmlib_rms']:.2e}  diffusers best {r['diffusers_best_rms']:.2e}"
                  f" ({r['diffusers_best']['kind']}, {r['diffusers_best']['timestep_spacing']}, "
                  f"karras={r['diffusers_best']['use_karras_sigmas']})  ratio {r['ratio']:.2f}", flush=True)

    import diffusers

    return write("samplers_peer", {
        "protocol": {"schedule": f"DDPM linear betas {BETA_START}..{BETA_END}, T={T_TRAIN}; dmlib: "
                                 f"LinearSchedule(0.1, {schedule.beta_max:.4f}) (same alpha_bar at t=1)",
                     "metric": "pathwise RMS error of x_0 vs converged PF-ODE from the same x_T",
                     "n_samples": n, "reference_steps": ref_steps, "nfe_budgets": list(NFE_BUDGETS),
                     "tuned": list(TUNED), "held_out": list(HELD_OUT), "quick": args.quick,
                     "diffusers_version": diffusers.__version__},
        "seconds": time.time() - t0, "summary": summary, "mixtures": per_mixture}, args.out)


if __name__ == "__main__":
    main()

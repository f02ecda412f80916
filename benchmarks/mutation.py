"""Mutation testing of dmlib: plant one realistic single-line bug at a time and see whether the
fast test suite notices.

Each mutant below is an exact (file, original snippet, replacement) with a one-line
description of the bug -- the slips a tired author makes in the book's formulas: a sign
flipped, g where g^2 belongs, eta applied as eta^2, decay and 1 - decay swapped, an index off
by one, alpha where alpha^2 belongs, a square root forgotten, an argument ignored, a wrong
default, time run the wrong way. The snippet must occur exactly once in its file; one that no
longer does (the code changed) is reported as "stale", never as killed.

How a mutant is run. The repository is copied to private temporary folders (without .venv,
_build and .git), one per mutant run at once (``--jobs``, default 2); the mutant is written
into a copy's file, pytest runs in that copy with PYTHONPATH pointing at it (each run checks
that ``import dmlib`` came from the copy; the JSON records it), and the file is restored.
/work/main is never written. Each pytest run is ``pytest.main`` in a forked child of this
script, which imported torch, nbval, diffusers, ... once (never dmlib or the tests), so a run
does not pay seconds of imports; ``--no-fork`` starts a fresh interpreter instead. Stages, each
with ``-p no:cacheprovider -q -x`` (stop at the first failure), until one fails:

1. the test that killed this mutant in the previous run (``results/mutation.json``, or
   ``--prior`` files), alone -- cheap when it still kills;
2. the test files most related to the mutated module (``RELATED``);
3. the rest of the fast suite: tests/ without test_book.py and test_benchmarks.py (no
   notebooks), test_planted_bugs.py last (it looks for dmlib's source text to plant bugs).

A failing test kills the mutant (its node id and stage are recorded); a run past ``--timeout``
seconds counts as killed but is reported as "timeout". Alongside the mutants the whole fast
suite runs once on an unmutated copy (the baseline): if it fails, the kills mean nothing and
the script says so.

Usage (from the repository root):

    .venv/bin/python benchmarks/mutation.py              # every mutant -> results/mutation.json
    .venv/bin/python benchmarks/mutation.py --list       # the mutants, and whether each matches
    .venv/bin/python benchmarks/mutation.py --only ID,ID # rerun some; merged into the JSON

Not run in CI (a full run takes about half an hour on two busy cores).

Survivors are listed in the JSON. A mutant that no test can kill because it does not change
behaviour is a true equivalent: it is listed in ``EQUIVALENT`` below with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

PYTEST_OPTS = ["-p", "no:cacheprovider", "-q", "-x"]
FORK = hasattr(os, "fork")  # --no-fork: a fresh interpreter per pytest run
# imported once by the forking parent (seconds each per pytest run otherwise: nbval, which
# pytest loads as a plugin, alone takes ~3 s of CPU); never dmlib or the tests
PRELOAD = ("torch", "numpy", "scipy.optimize", "scipy.stats", "matplotlib.pyplot", "pytest", "nbval.plugin",
           "jupytext", "nbformat", "safetensors.torch", "tqdm.auto", "yaml", "diffusers")
NOT_FAST = ("test_book.py", "test_benchmarks.py")
# test_planted_bugs runs last: besides its honest checks it looks for exact source fragments
# of dmlib (to plant bugs), so a mutant of those very lines would fail it for the wrong reason
LAST = ("test_planted_bugs.py",)


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str  # relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    description: str


def M(id, file, old, new, description):  # noqa: N802  (a table row)
    return Mutant(id, f"dmlib/{file}", old, new, description)


MUTANTS = [
    # -- schedules.py ------------------------------------------------------------------------
    M("sch-logsnr-half", "schedules.py", "return 2 * torch.log(a) - 2 * torch.log(s)",
      "return torch.log(a) - torch.log(s)", "generic log-SNR log(alpha / sigma), not log(alpha^2 / sigma^2)"),
    M("sch-g2-sign", "schedules.py", "return f, (2 * s * (ds - f * s)).clamp_min(0.0)",
      "return f, (2 * s * (ds + f * s)).clamp_min(0.0)", "generic g^2 = (sigma^2)' + 2 f sigma^2 (sign of f flipped)"),
    M("vp-alpha-is-alpha-bar", "schedules.py", "return ab.sqrt(), one_minus_ab.sqrt()",
      "return ab, one_minus_ab.sqrt()", "VP alpha_t = alpha_bar_t (square root forgotten)"),
    M("vp-dsigma-sign", "schedules.py", "-d_ab / (2 * one_minus_ab.sqrt())",
      "d_ab / (2 * one_minus_ab.sqrt())", "VP sigma_t' with the wrong sign"),
    M("vp-logsnr-reversed", "schedules.py", "return torch.log(ab) - torch.log(one_minus_ab)",
      "return torch.log(one_minus_ab) - torch.log(ab)", "VP log-SNR log((1 - alpha_bar) / alpha_bar), upside down"),
    M("vp-f-no-half", "schedules.py", "return d_ab / (2 * ab), (-d_ab / ab).clamp_min(0.0)",
      "return d_ab / ab, (-d_ab / ab).clamp_min(0.0)", "VP drift f = alpha_bar'/alpha_bar (the 1/2 forgotten)"),
    M("vp-inverse-floor", "schedules.py", "ab = ((torch.sigmoid(lam) - m) / (1.0 - m)).clamp(0.0, 1.0)",
      "ab = (torch.sigmoid(lam) - m).clamp(0.0, 1.0)", "t_from_log_snr undoes the alpha_bar floor without 1 / (1 - m)"),
    M("vp-floor-not-affine", "schedules.py", "m + (1.0 - m) * ab.clamp(0.0, 1.0),",
      "m + ab.clamp(0.0, 1.0),", "the alpha_bar floor m + alpha_bar (not m + (1 - m) alpha_bar)"),
    M("vp-betas-off-by-one", "schedules.py", "b[1:] = -torch.expm1(torch.log(ab[1:]) - torch.log(ab[:-1]))",
      "b[:-1] = -torch.expm1(torch.log(ab[1:]) - torch.log(ab[:-1]))", "betas table shifted by one step"),
    M("sch-times-off-by-one", "schedules.py", "return torch.arange(T + 1, dtype=torch.float64) / T",
      "return torch.arange(T, dtype=torch.float64) / T", "times(T) without the last time t_T = 1"),
    M("lin-B-no-half", "schedules.py", "B_t = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2",
      "B_t = self.beta_min * t + (self.beta_max - self.beta_min) * t**2",
      "linear B(t) without the 1/2 of the integral"),
    M("lin-dab-no-ab", "schedules.py", "return ab, -torch.expm1(-B_t), -beta * ab",
      "return ab, -torch.expm1(-B_t), -beta", "linear alpha_bar' = -beta (the factor alpha_bar forgotten)"),
    M("lin-inverse-no-2", "schedules.py", "return 2 * B_t / (self.beta_min + torch.sqrt(",
      "return B_t / (self.beta_min + torch.sqrt(", "linear inverse: the root of the quadratic missing its 2"),
    M("lin-default-beta-max", "schedules.py", "def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):",
      "def __init__(self, beta_min: float = 0.1, beta_max: float = 2.0):", "linear default beta_max 2 (not DDPM's 20)"),
    M("cos-phi-no-offset", "schedules.py", "return (t + self.s) / (1 + self.s) * (math.pi / 2)",
      "return t / (1 + self.s) * (math.pi / 2)", "cosine phi_t without the offset s"),
    M("cos-dab-no-2", "schedules.py", "d_ab = -2 * sin_phi * cos_phi * rate / cos2_phi0",
      "d_ab = -sin_phi * cos_phi * rate / cos2_phi0", "cosine alpha_bar' missing the 2 of d cos^2"),
    M("cos-sin-cos-swapped", "schedules.py", "cos_phi, sin_phi = torch.sin((1 - t) * rate), torch.cos((1 - t) * rate)",
      "cos_phi, sin_phi = torch.cos((1 - t) * rate), torch.sin((1 - t) * rate)",
      "cosine: cos and sin of pi/2 - phi swapped"),
    M("cos-inverse-offset-sign", "schedules.py", "return phi * (2 / math.pi) * (1 + self.s) - self.s",
      "return phi * (2 / math.pi) * (1 + self.s) + self.s", "cosine inverse adds the offset s instead of removing it"),
    M("sig-inverse-ignores-tau", "schedules.py", "return (u * self.tau - self.start) / (self.end - self.start)",
      "return (u - self.start) / (self.end - self.start)", "sigmoid inverse ignores the temperature tau"),
    M("sig-dab-no-rate", "schedules.py", "-torch.sigmoid(u) * torch.sigmoid(-u) * rate /",
      "-torch.sigmoid(u) * torch.sigmoid(-u) /", "sigmoid alpha_bar' without the chain-rule factor du/dt"),
    M("sig-logsinh-no-2", "schedules.py", "return x - math.log(2) + torch.log(-torch.expm1(-2 * x))",
      "return x - math.log(2) + torch.log(-torch.expm1(-x))", "log sinh x with e^{-x} for e^{-2x}"),
    M("ve-dsigma-divides", "schedules.py", "return torch.zeros_like(t), s * math.log(self.sigma_max / self.sigma_min)",
      "return torch.zeros_like(t), s / math.log(self.sigma_max / self.sigma_min)", "VE sigma' = sigma / log(ratio)"),
    M("ve-logsnr-no-2", "schedules.py", "return -2 * self._log_sigma(t)",
      "return -self._log_sigma(t)", "VE log-SNR -log sigma (not -2 log sigma)"),
    M("ve-inverse-no-half", "schedules.py", "return (-lam / 2 - math.log(self.sigma_min)) / log_ratio",
      "return (-lam - math.log(self.sigma_min)) / log_ratio", "VE inverse log sigma = -lambda (not -lambda / 2)"),
    M("flow-dalpha-sign", "schedules.py", "return torch.full_like(t, -1.0), torch.ones_like(t)",
      "return torch.full_like(t, 1.0), torch.ones_like(t)", "flow path alpha' = +1"),
    M("flow-inverse-sign", "schedules.py", "return torch.sigmoid(-lam / 2)  # (1 - t) / t = exp(lam / 2)",
      "return torch.sigmoid(lam / 2)  # (1 - t) / t = exp(lam / 2)", "flow inverse t = sigmoid(lambda / 2), reversed"),
    M("extract-off-by-one", "schedules.py", "return expand_to(table.to(x.device)[k.to(x.device)], x)",
      "return expand_to(table.to(x.device)[k.to(x.device) - 1], x)", "extract reads entry k - 1 of the table"),
    # -- diffusion.py ------------------------------------------------------------------------
    M("q-sample-sigma2", "diffusion.py", "return a * x0 + s * eps  # (B, ...)",
      "return a * x0 + s**2 * eps  # (B, ...)", "q_sample scales the noise by sigma^2"),
    M("marginal-std-for-var", "diffusion.py", "return a * x0, s**2",
      "return a * x0, s", "marginal returns sigma as the variance"),
    M("transition-alpha-s-at-t", "diffusion.py", "a_s, _ = schedule._alpha_sigma(s)",
      "a_s, _ = schedule._alpha_sigma(t)", "transition: alpha_s evaluated at t"),
    M("transition-sigma-not-squared", "diffusion.py", "return a_t / a_s, sig_t**2 * d",
      "return a_t / a_s, sig_t * d", "transition variance sigma_t d (not sigma_t^2 d)"),
    M("q-step-no-sqrt", "diffusion.py", "+ expand_to(var_ts.clamp_min(0.0).sqrt(), x_s) * eps",
      "+ expand_to(var_ts.clamp_min(0.0), x_s) * eps", "q_step: the variance used as the noise scale"),
    M("posterior-cxt-not-squared", "diffusion.py", "c_xt = (a_t / a_s) * (sig_s / sig_t) ** 2",
      "c_xt = (a_t / a_s) * (sig_s / sig_t)", "posterior x_t coefficient with sigma_s / sigma_t unsquared"),
    M("posterior-cx0-alpha2", "diffusion.py", "c_x0 = a_s * d", "c_x0 = a_s**2 * d",
      "posterior x_0 coefficient with alpha_s^2 for alpha_s"),
    M("posterior-var-sigma-t", "diffusion.py", "var = sig_s**2 * d", "var = sig_t**2 * d",
      "posterior variance = the transition's sigma_t^2 d"),
    M("convert-score-no-sigma", "diffusion.py", "eps = -s * pred", "eps = -pred",
      "score -> eps as -score (the factor sigma forgotten)"),
    M("convert-x0-no-alpha", "diffusion.py", "eps = (x_t - a * x0) / s", "eps = (x_t - x0) / s",
      "x0 -> eps ignores alpha_t"),
    M("convert-v-norm-1", "diffusion.py", "norm = a**2 + s**2", "norm = 1.0",
      "v -> (x0, eps) assumes alpha^2 + sigma^2 = 1 (true only for VP)"),
    M("convert-v-eps-sign", "diffusion.py", "eps = (s * x_t + a * pred) / norm",
      "eps = (s * x_t - a * pred) / norm", "v -> eps with the sign of v flipped"),
    M("convert-velocity-det-sign", "diffusion.py", "det = a * ds - s * da", "det = a * ds + s * da",
      "velocity determinant alpha sigma' + sigma alpha'"),
    M("convert-velocity-eps-ds", "diffusion.py", "eps = (a * pred - da * x_t) / det",
      "eps = (a * pred - ds * x_t) / det", "velocity -> eps uses sigma' where alpha' belongs"),
    M("target-score-sign", "diffusion.py", "return -eps / s", "return eps / s",
      "score target +eps / sigma"),
    M("target-v-swapped", "diffusion.py", "return a * eps - s * x0", "return s * eps - a * x0",
      "v target sigma eps - alpha x0 (alpha and sigma swapped)"),
    M("target-velocity-swapped", "diffusion.py", "return da * x0 + ds * eps", "return da * eps + ds * x0",
      "velocity target alpha' eps + sigma' x0"),
    # -- noise.py ----------------------------------------------------------------------------
    M("noise-float64-as-float32", "noise.py", "return dtype if dtype in _DRAW_DTYPES else torch.float32",
      "return torch.float32", "float64 noise drawn in float32 and cast"),
    M("noise-rand-is-randn", "noise.py", "out = torch.rand(tuple(shape),",
      "out = torch.randn(tuple(shape),", "rand draws normal numbers, not uniform ones"),
    M("noise-randint-off-by-one", "noise.py", "out = torch.randint(low, high, tuple(shape),",
      "out = torch.randint(low, high - 1, tuple(shape),", "randint never draws high - 1"),
    # -- samplers.py -------------------------------------------------------------------------
    M("ddim-eps-no-alpha", "samplers.py", "eps_hat = (x_t - a_t * x0_hat) / sig_t",
      "eps_hat = (x_t - x0_hat) / sig_t", "DDIM's implied noise ignores alpha_t"),
    M("ddim-sigma-t-for-sigma-s", "samplers.py", "return x_s + sig_s * eps_hat  # 3. step (eq-ddim)",
      "return x_s + sig_t * eps_hat  # 3. step (eq-ddim)", "deterministic DDIM re-noises with sigma_t, not sigma_s"),
    M("ddim-eta-squared", "samplers.py", "c = eta * var.sqrt()", "c = eta**2 * var.sqrt()",
      "DDIM's fresh-noise scale with eta^2 (reviewer)"),
    M("ddim-c-not-squared", "samplers.py", "(sig_s**2 - c**2).clamp_min(0).sqrt()",
      "(sig_s**2 - c).clamp_min(0).sqrt()", "DDIM keeps sqrt(sigma_s^2 - c), not sqrt(sigma_s^2 - c^2)"),
    M("ddpm-var-as-std", "samplers.py", "return mean + var.sqrt() * noise.randn_like(x_t, generator=generator)",
      "return mean + var * noise.randn_like(x_t, generator=generator)", "DDPM step noise scaled by the variance"),
    M("em-drift-g-not-g2", "samplers.py", "- g2 * score)", "- g2.sqrt() * score)",
      "Euler-Maruyama drift with g, not g^2 (reviewer)"),
    M("em-noise-g2", "samplers.py", "eta * (g2 * h).sqrt() * z", "eta * g2 * h.sqrt() * z",
      "Euler-Maruyama noise g^2 sqrt(h), not g sqrt(h)"),
    M("em-eta-family-linear", "samplers.py", "(1 + eta**2) / 2", "(1 + eta) / 2",
      "the eta-family of reverse SDEs with (1 + eta) / 2 for (1 + eta^2) / 2 (same at eta = 0, 1)"),
    M("em-time-reversed", "samplers.py", "h = expand_to(t - s, x_t)  # step length > 0",
      "h = expand_to(s - t, x_t)  # step length > 0", "Euler-Maruyama step length s - t < 0"),
    M("em-f-sign", "samplers.py", "h * (f * x_t", "h * (-f * x_t", "reverse SDE with the forward drift's sign flipped"),
    M("dpm-h-no-half", "samplers.py", "h = (lam_s - lam_t) / 2", "h = lam_s - lam_t",
      "DPM-Solver++ step in lambda, not lambda / 2"),
    M("dpm-r-inverted", "samplers.py", "r = (lam_t - lam_p) / (lam_s - lam_t)",
      "r = (lam_s - lam_t) / (lam_t - lam_p)", "DPM-Solver++(2M) step ratio upside down"),
    M("dpm-extrapolation-sign", "samplers.py", "d = (1 + 1 / (2 * r)) * x0_hat",
      "d = (1 - 1 / (2 * r)) * x0_hat", "DPM-Solver++(2M) extrapolation with the wrong sign"),
    M("dpm-expm1-sign", "samplers.py", "- a_s * torch.expm1(-h) * d", "- a_s * torch.expm1(h) * d",
      "DPM-Solver++ linear part e^{h} - 1 for e^{-h} - 1"),
    M("langevin-no-2", "samplers.py", "(2 * step_size) ** 0.5 * z", "(step_size) ** 0.5 * z",
      "Langevin noise sqrt(delta), not sqrt(2 delta)"),
    M("annealed-step-not-squared", "samplers.py", "step = delta * (sigma / sigmas[-1]) ** 2",
      "step = delta * (sigma / sigmas[-1])", "annealed Langevin step size with sigma ratio, not its square"),
    M("grid-logsnr-off-by-one", "samplers.py", "lam = torch.linspace(lam_lo, lam_hi, n_steps + 1, dtype=torch.float64)",
      "lam = torch.linspace(lam_lo, lam_hi, n_steps, dtype=torch.float64)", "log-SNR grid with n_steps times"),
    M("grid-edm-sigma2", "samplers.py", "math.exp(-lam_lo / 2) ** (1 / rho),",
      "math.exp(-lam_lo) ** (1 / rho),", "EDM grid: sigma_max^2 for sigma_max"),
    M("grid-edm-lam-no-2", "samplers.py", "lam = -2 * torch.log(sig)", "lam = -torch.log(sig)",
      "EDM grid maps sigma back to lambda = -log sigma"),
    M("grid-edm-default-rho", "samplers.py", "rho: float = 7.0,", "rho: float = 3.0,",
      "EDM grid default rho 3, not Karras et al.'s 7"),
    M("sample-last-step-noisy", "samplers.py", "0.0 if last else eta, generator)", "eta, generator)",
      "sample(): the last DDIM step adds noise"),
    M("sample-heun-wrong-time", "samplers.py", "u2 = _predict(model, x_next, s, schedule, \"velocity\", y)",
      "u2 = _predict(model, x_next, t, schedule, \"velocity\", y)", "Heun's corrector evaluates at t, not s"),
    M("sample-euler-dt-reversed", "samplers.py", "dt = grid[i + 1] - starts[i]", "dt = starts[i] - grid[i + 1]",
      "sample(): the ODE integrated forward in time"),
    M("sample-dpm-prev-time", "samplers.py", "history = [(x0, t)] + history[", "history = [(x0, s)] + history[",
      "DPM-Solver++(2M) remembers the step's end time, not its start"),
    M("nfe-heun-last", "samplers.py", "return total - 1 if method == \"heun\" and t_min == 0.0 else total",
      "return total", "nfe counts Heun's last step twice"),
    M("sample-default-ddpm", "samplers.py", "method: str = \"ddim\",", "method: str = \"ddpm\",",
      "sample()'s default method DDPM, not the documented DDIM"),
    # -- losses.py ---------------------------------------------------------------------------
    M("weight-x0-snr", "losses.py", "return (1.0 / snr).to(t.dtype)", "return snr.to(t.dtype)",
      "x0 weighting SNR, not 1 / SNR"),
    M("weight-minsnr-clamp-min", "losses.py", "x0_weight = snr.clamp(max=gamma)", "x0_weight = snr.clamp(min=gamma)",
      "Min-SNR: max(SNR, gamma), not min"),
    M("weight-minsnr-eps", "losses.py", "\"eps\": 1.0 / snr,", "\"eps\": snr,",
      "Min-SNR for eps: times SNR, not / SNR"),
    M("weight-minsnr-v-not-squared", "losses.py", "\"v\": s**2 / (a**2 + s**2) ** 2,",
      "\"v\": s**2 / (a**2 + s**2),", "Min-SNR for v: (alpha^2 + sigma^2) unsquared (right only for VP)"),
    M("weight-elbo-sigma", "losses.py", "return (schedule._sde(tt)[1] / (2 * s**2)).to(t.dtype)",
      "return (schedule._sde(tt)[1] / (2 * s)).to(t.dtype)", "ELBO weight g^2 / (2 sigma)"),
    M("loss-sum-not-mean", "losses.py", "per_sample = ((pred - goal) ** 2).flatten(1).mean(1)",
      "per_sample = ((pred - goal) ** 2).flatten(1).sum(1)", "loss summed over dimensions, not averaged"),
    M("loss-xt-sigma2", "losses.py", "x_t = expand_to(a, x0) * x0 + expand_to(s, x0) * eps  # (B, ...)",
      "x_t = expand_to(a, x0) * x0 + expand_to(s**2, x0) * eps  # (B, ...)", "diffusion_loss noises with sigma^2"),
    M("loss-target-ignores-kind", "losses.py", "goal = _target(x0, eps, t, schedule, kind)",
      "goal = _target(x0, eps, t, schedule, \"eps\")", "diffusion_loss regresses eps whatever the model predicts"),
    M("loss-ignores-weighting", "losses.py",
      "return (_weight(t, schedule, weighting, kind, gamma) * per_sample).mean()",
      "return per_sample.mean()", "diffusion_loss ignores its weighting"),
    M("loss-coupling-swapped", "losses.py", "eps = coupling(x0, eps)", "eps = coupling(eps, x0)",
      "the coupling called with data and noise swapped"),
    M("loss-pairs-swapped", "losses.py", "x0, eps = x0[:, 0], x0[:, 1]", "eps, x0 = x0[:, 0], x0[:, 1]",
      "paired batches read as (eps, x0)"),
    M("fm-ignores-ot", "losses.py", "coupling=ot_pairing if coupling == \"ot\" else None,", "coupling=None,",
      "flow_matching_loss ignores coupling='ot' (reviewer)"),
    M("fm-ignores-pairs", "losses.py", "paired=coupling == \"pairs\",", "paired=False,",
      "flow_matching_loss ignores coupling='pairs'"),
    M("classifier-loss-clean", "losses.py", "return torch.nn.functional.cross_entropy(classifier(x_t, t), y)",
      "return torch.nn.functional.cross_entropy(classifier(x0, t), y)", "noisy classifier trained on clean data"),
    # -- flow.py -----------------------------------------------------------------------------
    M("ot-inverse-permutation", "flow.py", "perm = torch.as_tensor(cols[rows.argsort()], device=eps.device)",
      "perm = torch.as_tensor(rows[cols.argsort()], device=eps.device)", "OT pairing applies the inverse permutation"),
    M("ot-distance-not-squared", "flow.py", "rows, cols = linear_sum_assignment((torch.cdist(a, b) ** 2).numpy())",
      "rows, cols = linear_sum_assignment(torch.cdist(a, b).numpy())", "OT pairing on |x - y|, not |x - y|^2"),
    M("straightness-mean-steps", "flow.py", "kinetic = ((d[1:] - d[:-1]) ** 2).sum(-1).sum(0) * steps",
      "kinetic = ((d[1:] - d[:-1]) ** 2).sum(-1).mean(0) * steps", "straightness: kinetic energy averaged over steps"),
    M("reflow-ignores-n-steps", "flow.py", "method=\"heun\", n_steps=n_steps, y=y)", "method=\"heun\", y=y)",
      "reflow_pairs ignores n_steps"),
    M("reflow-ignores-y", "flow.py", "method=\"heun\", n_steps=n_steps, y=y)", "method=\"heun\", n_steps=n_steps)",
      "reflow_pairs ignores the labels y"),
    # -- guidance.py -------------------------------------------------------------------------
    M("cfg-base-cond", "guidance.py", "return uncond + self.w * (cond - uncond)",
      "return cond + self.w * (cond - uncond)", "CFG extrapolates from the conditional output"),
    M("cg-ignores-w", "guidance.py", "return score + self.w * self.classifier_grad(",
      "return score + self.classifier_grad(", "classifier guidance ignores its scale w (reviewer)"),
    M("cg-logits-not-logprob", "guidance.py", "logp = torch.log_softmax(self.classifier(x, t), dim=-1)",
      "logp = self.classifier(x, t)", "classifier guidance differentiates the logit, not log p(y | x)"),
    M("cg-score-as-eps", "guidance.py", "self.model.prediction, \"score\")",
      "self.model.prediction, \"eps\")", "classifier guidance adds the gradient to eps, not to the score"),
    M("cg-model-conditional", "guidance.py", "out = self.model(x_t, t, None)", "out = self.model(x_t, t, y)",
      "classifier guidance calls the model with the labels"),
    # -- train.py ----------------------------------------------------------------------------
    M("ema-decay-swapped", "train.py", "torch._foreach_lerp_(ema_params, params, 1 - decay)",
      "torch._foreach_lerp_(ema_params, params, decay)",
      "EMA with decay and 1 - decay swapped (reviewer)"),
    M("ema-warmup-max", "train.py", "decay = min(config.ema_decay, (1 + step) / (10 + step))",
      "decay = max(config.ema_decay, (1 + step) / (10 + step))", "EMA warm-up with max, not min"),
    M("lr-warmup-off-by-one", "train.py", "return (step + 1) / config.warmup", "return step / config.warmup",
      "warm-up starts at learning rate 0"),
    M("lr-cosine-reversed", "train.py", "cosine = 1 + math.cos(math.pi * p)", "cosine = 1 - math.cos(math.pi * p)",
      "cosine decay runs upwards"),
    M("lr-cosine-no-half", "train.py", "(1 - config.lr_min_ratio) * 0.5 * cosine",
      "(1 - config.lr_min_ratio) * cosine", "cosine decay peaks at twice the learning rate"),
    M("label-dropout-reversed", "train.py", "drop = u < config.label_dropout", "drop = u > config.label_dropout",
      "label dropout drops with probability 1 - p"),
    M("zero-grad-forgotten", "train.py", "opt.zero_grad(set_to_none=True)", "pass",
      "gradients accumulate across steps (zero_grad forgotten)"),
    M("history-step-off-by-one", "train.py", "history.append((step + 1, sum(values) / len(values)))",
      "history.append((step, sum(values) / len(values)))", "loss history labelled one step early"),
    M("batch-index-off-by-one", "train.py", "0, data.shape[0], (n,), generator=generator, device=data.device",
      "0, data.shape[0] - 1, (n,), generator=generator, device=data.device", "batches never hold the last example"),
    M("resume-ignores-allowed", "train.py", "if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]",
      "if saved.get(k) != now[k]", "resuming refuses harmless changes (device, progress)"),
    # -- toy.py ------------------------------------------------------------------------------
    M("mix-cov-alpha-not-squared", "toy.py", "a[:, None, None, None] ** 2 * self.covs[None]",
      "a[:, None, None, None] * self.covs[None]", "noised covariance alpha Sigma, not alpha^2 Sigma"),
    M("mix-cov-sigma-not-squared", "toy.py", "+ s[:, None, None, None] ** 2 * eye",
      "+ s[:, None, None, None] * eye", "noised covariance + sigma I, not sigma^2 I"),
    M("mix-logdet-no-2", "toy.py", "logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)",
      "logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)",
      "log det from the Cholesky factor without the 2"),
    M("mix-log-pi", "toy.py", "self.dim * math.log(2 * math.pi)", "self.dim * math.log(math.pi)",
      "Gaussian normaliser log(pi) for log(2 pi)"),
    M("mix-score-no-resp", "toy.py", "return (-(resp[..., None] * sol).sum(1))",
      "return (-sol.sum(1))", "mixture score without the responsibilities"),
    M("mix-posterior-alpha2", "toy.py", "comp = self.means[None] + a[:, None, None] * shift",
      "comp = self.means[None] + a[:, None, None] ** 2 * shift", "E[x0 | x_t, k] with alpha^2 for alpha"),
    M("mix-sample-chol-transposed", "toy.py", "torch.einsum(\"nij,nj->ni\", chol[k], z)",
      "torch.einsum(\"nji,nj->ni\", chol[k], z)", "mixture samples mu + L^T z (covariance L^T L, not Sigma)"),
    M("mix-mask-inverted", "toy.py", "keep = self.labels[None, :] == y[:, None]",
      "keep = self.labels[None, :] != y[:, None]", "class selection keeps the other classes"),
    M("mix-posterior-unnormalised", "toy.py", "log_post = log_joint - logw.logsumexp(1, keepdim=True)",
      "log_post = log_joint", "class posterior log p(x, y), not log p(y | x)"),
    M("mix-weights-unnormalised", "toy.py", "self.weights, self.labels = weights / weights.sum(), labels",
      "self.weights, self.labels = weights, labels", "mixture weights not normalised"),
    M("eight-gaussians-angle", "toy.py", "ang = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8",
      "ang = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 7", "eight Gaussians at angles 2 pi k / 7"),
    M("toy-8g-off-by-one", "toy.py", "angles = 2 * np.pi * rng.integers(0, 8, n) / 8",
      "angles = 2 * np.pi * rng.integers(0, 7, n) / 8", "'8gaussians' never draws the eighth mode"),
    M("toy-moons-sign", "toy.py", "np.stack([1.0 - np.cos(theta), 0.5 - np.sin(theta)], 1),",
      "np.stack([1.0 - np.cos(theta), 0.5 + np.sin(theta)], 1),", "the lower moon bends the wrong way"),
    M("data-sampler-ignores-y", "toy.py", "return self.source.sample(n, y=self.y, generator=generator)",
      "return self.source.sample(n, generator=generator)", "data_sampler(mixture, y) ignores y"),
    # -- metrics.py --------------------------------------------------------------------------
    M("w2-no-sqrt", "metrics.py", "return float(cost[rows, cols].mean().sqrt())",
      "return float(cost[rows, cols].mean())", "W2 returned squared"),
    M("sw-norm-wrong-dim", "metrics.py", "theta = theta / theta.norm(dim=0, keepdim=True)",
      "theta = theta / theta.norm(dim=1, keepdim=True)", "sliced W2 directions normalised over the wrong dim"),
    M("sw-sort-wrong-dim", "metrics.py", "py, _ = torch.sort(y @ theta, dim=0)",
      "py, _ = torch.sort(y @ theta, dim=1)", "sliced W2 sorts y across directions, not across points"),
    M("sw-no-sqrt", "metrics.py", "return float(((px - py) ** 2).mean().sqrt())",
      "return float(((px - py) ** 2).mean())", "sliced W2 returned squared"),
    M("mmd-distance-not-squared", "metrics.py", "d2 = torch.cdist(a, b) ** 2", "d2 = torch.cdist(a, b)",
      "MMD kernel on |a - b|, not |a - b|^2"),
    M("mmd-bandwidth-not-squared", "metrics.py", "torch.exp(-d2 / (2 * h**2))", "torch.exp(-d2 / (2 * h))",
      "MMD kernel bandwidth h, not h^2"),
    M("mmd-biased", "metrics.py", "(kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))",
      "kxx.sum() / (n * (n - 1))", "MMD keeps the diagonal k(x_i, x_i) (biased)"),
    M("mmd-cross-no-2", "metrics.py", "- 2 * kxy.mean()", "- kxy.mean()", "MMD cross term without its 2"),
    M("mode-spread-wrong-dim", "metrics.py", "return float(d.min(1).values.pow(2).mean().sqrt())",
      "return float(d.min(0).values.pow(2).mean().sqrt())", "mode spread: nearest point to each centre"),
    M("floor-ratio-inverted", "metrics.py", "\"ratio\": value / floor,", "\"ratio\": floor / value,",
      "floor ratio upside down"),
    M("floor-same-sample", "metrics.py", "cached[key] = (ref, fn(ref2, ref))", "cached[key] = (ref, fn(ref, ref))",
      "floor: a sample against itself"),
    M("floor-ignores-repeats", "metrics.py", "_reference(metric, fn, data_sampler, n, seed + 1000 * r)",
      "_reference(metric, fn, data_sampler, n, seed)", "floor_ratio repeats the same reference draw"),
    # -- likelihood.py -----------------------------------------------------------------------
    M("lik-logdet-sign", "likelihood.py", "logdet = logdet + 0.5 * h * (d1 + d2)",
      "logdet = logdet - 0.5 * h * (d1 + d2)", "change of variables with the divergence's sign flipped"),
    M("lik-var-sigma", "likelihood.py", "var = sigma_1**2 + alpha_1**2", "var = sigma_1 + alpha_1**2",
      "prior variance with sigma_1 for sigma_1^2"),
    M("lik-normaliser-no-half", "likelihood.py", "- 0.5 * D * math.log(2 * math.pi * var)",
      "- D * math.log(2 * math.pi * var)", "Gaussian normaliser D log(2 pi var), the 1/2 forgotten"),
    M("lik-divergence-one-coordinate", "likelihood.py", "div = div + grad[:, i]", "div = div + grad[:, 0]",
      "divergence sums d u_0 / d x_0 D times"),
    M("lik-heun-wrong-time", "likelihood.py", "_velocity_and_divergence(model, z_euler, at(s), schedule, y)",
      "_velocity_and_divergence(model, z_euler, at(t), schedule, y)", "Heun's corrector evaluated at t"),
    # -- spectrum.py -------------------------------------------------------------------------
    M("spec-norm-h", "spectrum.py", "(torch.fft.fft2(x).abs() ** 2).mean(0) / (H * W)",
      "(torch.fft.fft2(x).abs() ** 2).mean(0) / H", "power normalised by H, not H W"),
    M("spec-bin-off-by-one", "spectrum.py", "idx = torch.round(radius * N).long() - 1",
      "idx = torch.round(radius * N).long()", "radius k / N put in bin k, not k - 1"),
    M("spec-radius-squared", "spectrum.py", "radius = torch.sqrt(fx**2 + fy**2).flatten()",
      "radius = (fx**2 + fy**2).flatten()", "radial frequency squared"),
    M("spec-centres-edges", "spectrum.py", "centers = 0.5 * (edges[1:] + edges[:-1])", "centers = edges[1:]",
      "bins reported at their upper edges"),
    M("spec-sum-not-mean", "spectrum.py", "return centers.float(), (sums / counts.clamp_min(1)).float()",
      "return centers.float(), sums.float()", "power summed over a bin, not averaged"),
    # -- checkpoint.py -----------------------------------------------------------------------
    M("ckpt-truncated-test", "checkpoint.py", "isinstance(expected, int) and size < expected",
      "isinstance(expected, int) and size > expected", "a truncated file is not reported as truncated"),
    M("ckpt-backup-ignores-missing", "checkpoint.py", "(not weights.exists() or _sha256(weights.read_bytes())",
      "(_sha256(weights.read_bytes())", "the backup is not used when the new weights are missing"),
    M("ckpt-hash-unsorted", "checkpoint.py", "text = json.dumps(_config_dict(config), sort_keys=True)",
      "text = json.dumps(_config_dict(config))", "config_hash depends on the order of the keys"),
    M("ckpt-int-buffers-cast", "checkpoint.py",
      "dtype = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype",
      "dtype = dtype if dtype is not None else tensor.dtype", "dtype=float16 also casts integer tensors"),
    M("ckpt-load-no-cast", "checkpoint.py", "module.load_state_dict({k: given[k].to(own[k].dtype) for k in own})",
      "module.load_state_dict({k: given[k] for k in own})", "stored float16 weights loaded without a cast"),
    # -- _check.py ---------------------------------------------------------------------------
    M("check-time-upper", "_check.py", "or (t < lo).any() or (t > hi).any()):", "or (t < lo).any()):",
      "times above 1 are accepted"),
    M("check-time-order-swapped", "_check.py", "bad = (s_ >= t_) if strict else (s_ > t_)",
      "bad = (s_ > t_) if strict else (s_ >= t_)", "strict and non-strict time order swapped"),
    M("check-positive-int-zero", "_check.py", "or not isinstance(n, int) or n < 1:",
      "or not isinstance(n, int) or n < 0:", "positive_int accepts 0"),
    M("check-finite-positive-zero", "_check.py", "or not math.isfinite(v) or v <= 0:",
      "or not math.isfinite(v) or v < 0:", "finite_positive accepts 0"),
    M("check-labels-upper", "_check.py", "y_t.max() > n_classes):", "y_t.max() > n_classes + 1):",
      "labels one past the 'no class' label are accepted"),
]

# True equivalents: mutants that do not change what dmlib computes, so no test can kill them.
EQUIVALENT = {
    "ckpt-load-no-cast": "Module.load_state_dict copies each tensor into the existing parameter with "
                         "Tensor.copy_, which casts to the parameter's dtype: the explicit .to(dtype) "
                         "before it changes nothing.",
}

# The test files to run first for a mutant of each module (fast, most likely to kill, first).
RELATED = {
    "schedules.py": ["test_schedules.py", "test_diffusion.py", "test_math_identities.py", "test_mutation_checks.py"],
    "diffusion.py": ["test_diffusion.py", "test_math_identities.py", "test_losses.py"],
    "noise.py": ["test_devices.py", "test_train.py", "test_losses.py", "test_toy.py", "test_mutation_checks.py"],
    "samplers.py": ["test_reference_diffusers.py", "test_mutation_checks.py", "test_samplers.py"],
    "losses.py": ["test_losses.py", "test_mutation_checks.py", "test_train.py", "test_flow.py"],
    "flow.py": ["test_flow.py", "test_mutation_checks.py"],
    "guidance.py": ["test_guidance.py", "test_mutation_checks.py"],
    "train.py": ["test_train.py", "test_mutation_checks.py", "test_checkpoint.py"],
    "toy.py": ["test_toy.py", "test_math_identities.py", "test_guidance.py", "test_mutation_checks.py"],
    "metrics.py": ["test_metrics.py", "test_mutation_checks.py"],
    "likelihood.py": ["test_likelihood.py", "test_mutation_checks.py"],
    "spectrum.py": ["test_spectrum.py", "test_math_identities.py"],
    "checkpoint.py": ["test_checkpoint.py", "test_mutation_checks.py"],
    "_check.py": ["test_bad_input.py", "test_diffusion.py", "test_schedules.py", "test_mutation_checks.py"],
}


# -- running ---------------------------------------------------------------------------------
def fast_suite(root: Path) -> list[str]:
    """The fast suite's test files, relative to root; test_planted_bugs.py last."""
    names = sorted(p.name for p in (root / "tests").glob("test_*.py") if p.name not in NOT_FAST)
    names = [n for n in names if n not in LAST] + [n for n in LAST if n in names]
    return [f"tests/{n}" for n in names]


def make_copy(dest: Path) -> Path:
    """Copy the repository to dest, without .venv, _build, .git and caches."""
    ignore = shutil.ignore_patterns(".venv", "_build", ".git", "__pycache__", ".pytest_cache", "*.pyc",
                                    ".ipynb_checkpoints", "runs")
    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    return dest


def env_for(copy: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutated file must never be read from a stale .pyc
    return env


def check_import(copy: Path) -> str:
    out = subprocess.run([sys.executable, "-c", "import dmlib; print(dmlib.__file__)"], cwd=copy,
                         env=env_for(copy), capture_output=True, text=True, timeout=120)
    where = out.stdout.strip()
    if not Path(where).resolve().is_relative_to(copy.resolve()):
        raise RuntimeError(f"import dmlib in the copy resolves to {where!r}, not to {copy}: {out.stderr}")
    return where


class PytestRun:
    """One pytest run in a copy, started now: ``pytest.main`` in a forked child of this process
    (which has imported PRELOAD once, but never dmlib or the tests, so each run skips seconds of
    imports), or a fresh interpreter (--no-fork). The child puts the copy first on sys.path (and
    in PYTHONPATH) and reports where dmlib came from, which is checked."""

    def __init__(self, copy: Path, args: list[str], timeout: float):
        self.copy, self.args, self.start = copy, args, time.monotonic()
        self.deadline = self.start + timeout
        self.log = copy.parent / f"{copy.name}.log"
        if FORK:
            self.pid = os.fork()
            if self.pid == 0:
                self._child()  # never returns
            self.proc = None
        else:
            out = open(self.log, "w")
            self.proc = subprocess.Popen([sys.executable, "-m", "pytest", *PYTEST_OPTS, *args], cwd=copy,
                                         env=env_for(copy), stdout=out, stderr=subprocess.STDOUT)
            out.close()

    def _child(self):
        code = 3
        try:
            fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(self.copy)
            os.environ.update(env_for(self.copy))
            sys.path.insert(0, str(self.copy))
            import pytest

            code = int(pytest.main([*PYTEST_OPTS, *self.args]))
            dm = sys.modules.get("dmlib")
            print(f"\n@@dmlib {getattr(dm, '__file__', None)}", flush=True)
        except BaseException as err:  # noqa: BLE001  (report anything, then leave)
            print(f"\n@@error {err!r}", flush=True)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def poll(self):
        """None while running; else ('pass' | 'fail' | 'timeout', first failing node id, seconds)."""
        if FORK:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            code = os.waitstatus_to_exitcode(status) if done else None
        else:
            code = self.proc.poll()
        seconds = time.monotonic() - self.start
        if code is None:
            if time.monotonic() < self.deadline:
                return None
            if FORK:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
            else:
                self.proc.kill()
                self.proc.wait()
            return "timeout", None, seconds
        text = self.log.read_text(errors="replace")
        where = re.search(r"^@@dmlib (.*)$", text, re.M)
        imported = where.group(1) if where else "None"
        if imported != "None" and not Path(imported).resolve().is_relative_to(self.copy.resolve()):
            raise RuntimeError(f"the tests imported dmlib from {imported}, not from the copy {self.copy}")
        if code == 0:
            return "pass", None, seconds
        if code in (4, 5):  # usage error (e.g. a node id that no longer exists) or nothing collected
            return "error", f"pytest exit {code}: {text.strip().splitlines()[-1] if text.strip() else ''}", seconds
        node = None
        for line in text.splitlines():
            m = re.match(r"^(FAILED|ERROR) (\S.*?)(?: - .*)?$", line)
            if m:
                node = m.group(2)
                break
        return "fail", node or f"(pytest exit {code})", seconds


def run_pytest(copy: Path, args: list[str], timeout: float) -> tuple[str, str | None, float]:
    """One pytest run, waited for: ('pass' | 'fail' | 'timeout', first failing node id, seconds)."""
    run = PytestRun(copy, args, timeout)
    while (out := run.poll()) is None:
        time.sleep(0.2)
    return out


def mutant_stages(mutant: Mutant, copy: Path, first: str | None = None, suite: bool = True):
    """A generator: plants the mutant in the copy, yields the test files of each stage in turn and
    receives each run's (outcome, node, seconds); returns the mutant's row (StopIteration.value).
    The copy's file is restored however it ends."""
    path = copy / mutant.file
    original = path.read_text()
    row = {"id": mutant.id, "file": mutant.file, "description": mutant.description,
           "old": mutant.old, "new": mutant.new}
    n = original.count(mutant.old)
    if n != 1:
        return {**row, "status": "stale", "killed_by": None, "stage": None, "seconds": 0.0,
                "note": f"the snippet occurs {n} times in {mutant.file} (must be exactly once)"}
    module = Path(mutant.file).name
    related = [f"tests/{f}" for f in RELATED.get(module, [])]
    rest = [f for f in fast_suite(copy) if f not in related] if suite else []
    # the test that killed this mutant last time, alone, first: cheap when it still kills
    # (a node id of the fast suite, parametrised ids included)
    prior = [first] if first and "::" in first and first.split("::")[0] in fast_suite(copy) else []
    total = 0.0
    try:
        path.write_text(original.replace(mutant.old, mutant.new))
        for stage, files in (("previous killer", prior), ("related", related), ("suite", rest)):
            if not files:
                continue
            outcome, node, seconds = yield files
            total += seconds
            if outcome == "error":
                if stage == "previous killer":  # that test is gone: go on with the related files
                    continue
                raise RuntimeError(f"{mutant.id}: pytest could not run {files}: {node}")
            if outcome != "pass":
                status = "killed" if outcome == "fail" else "timeout"
                return {**row, "status": status, "killed_by": node, "stage": stage, "seconds": round(total, 1)}
    finally:
        path.write_text(original)
    out = {**row, "status": "survived", "killed_by": None, "stage": None, "seconds": round(total, 1)}
    if not suite:
        out["note"] = "only the related test files were run (--skip-suite)"
    if mutant.id in EQUIVALENT:
        out["equivalent"] = EQUIVALENT[mutant.id]
    return out


def run_all(mutants, copies, timeout, prior, suite, report):
    """Run the mutants, one per copy at a time (len(copies) at once), polling their pytest runs."""
    todo = list(mutants)
    slots = {i: None for i in range(len(copies))}  # slot -> (generator, PytestRun)
    while todo or any(slots.values()):
        for i, busy in slots.items():
            if busy is not None or not todo:
                continue
            m = todo.pop(0)
            gen = mutant_stages(m, copies[i], prior.get(m.id), suite)
            try:
                files = next(gen)
            except StopIteration as stop:
                report(stop.value)
                continue
            slots[i] = (gen, PytestRun(copies[i], files, timeout))
        for i, busy in slots.items():
            if busy is None:
                continue
            gen, run = busy
            out = run.poll()
            if out is None:
                continue
            try:
                slots[i] = (gen, PytestRun(copies[i], gen.send(out), timeout))
            except StopIteration as stop:
                slots[i] = None
                report(stop.value)
        time.sleep(0.2)


def totals(rows: list[dict]) -> dict:
    count = {s: sum(r["status"] == s for r in rows) for s in ("killed", "timeout", "survived", "stale")}
    live = len(rows) - count["stale"]
    killed = count["killed"] + count["timeout"]
    equivalent = sum(r["status"] == "survived" and r["id"] in EQUIVALENT for r in rows)
    return {
        "mutants": len(rows),
        **count,
        "equivalent": equivalent,
        "kill_rate": round(killed / live, 4) if live else None,
        # the rate among the mutants that change behaviour (true equivalents left out)
        "kill_rate_non_equivalent": round(killed / (live - equivalent), 4) if live - equivalent else None,
        "survivors": [r["id"] for r in rows if r["status"] == "survived"],
        "survivors_not_equivalent": [r["id"] for r in rows if r["status"] == "survived" and r["id"] not in EQUIVALENT],
        "stale": [r["id"] for r in rows if r["status"] == "stale"],
        "seconds": round(sum(r["seconds"] for r in rows), 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and whether each matches the tree")
    parser.add_argument("--only", default=None, help="comma-separated mutant ids to (re)run, merged into the JSON")
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds per pytest run (default 420)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once, one copy each (default 2)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the run of the suite on an unmutated copy (it runs alongside the mutants)")
    parser.add_argument("--skip-suite", action="store_true",
                        help="run only the related test files (a quick look; survivors are provisional)")
    parser.add_argument("--prior", action="append", default=[],
                        help="another results JSON whose killing tests are tried first (repeatable)")
    parser.add_argument("--no-prior", action="store_true",
                        help="do not try the previous run's killing test first")
    parser.add_argument("--deselect", action="append", default=[],
                        help="a node id (prefix) to leave out of every run, e.g. a book-consistency test that "
                             "fails on the tree while chapters are being edited (repeatable; recorded in the JSON)")
    parser.add_argument("--no-fork", action="store_true",
                        help="start a fresh interpreter per pytest run instead of forking this one")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)

    ids = [m.id for m in MUTANTS]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise SystemExit(f"duplicate mutant ids: {sorted(dupes)}")
    unknown = set(EQUIVALENT) - set(ids)
    if unknown:
        raise SystemExit(f"EQUIVALENT names unknown mutants: {sorted(unknown)}")

    if args.list:
        for m in MUTANTS:
            n = (ROOT / m.file).read_text().count(m.old)
            flag = "ok   " if n == 1 else f"STALE({n})"
            print(f"{flag} {m.id:32s} {m.file:22s} {m.description}")
        return 0

    chosen = MUTANTS
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        missing = [w for w in wanted if w not in ids]
        if missing:
            raise SystemExit(f"unknown mutant ids: {missing}")
        chosen = [m for m in MUTANTS if m.id in wanted]

    global FORK
    FORK = FORK and not args.no_fork
    for node in args.deselect:
        PYTEST_OPTS.extend(["--deselect", node])
    import _common  # noqa: E402  (benchmarks/_common.py: machine record and writing)

    if FORK:  # the heavy imports, once, before any fork (never dmlib itself)
        os.environ.setdefault("MPLBACKEND", "Agg")
        for name in PRELOAD:
            try:
                __import__(name)
            except ImportError:
                pass
        assert "dmlib" not in sys.modules, "dmlib must be imported by each child, from its copy"

    start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="dmlib-mutation-"))
    try:
        copies = [make_copy(tmp / f"copy{j}") for j in range(max(1, args.jobs))]
        where = check_import(copies[0])
        print(f"import dmlib -> {where}", flush=True)
        # the suite on an unmutated copy, alongside the mutants: if it fails, no kill means anything
        baseline, base_run = None, None
        if not args.no_baseline:
            base_copy = make_copy(tmp / "baseline")
            base_run = PytestRun(base_copy, fast_suite(base_copy), 3 * args.timeout)
        out_dir = Path(args.out) if args.out else _common.RESULTS
        previous = out_dir / "mutation.json"
        prior = {}
        for source in [previous, *(Path(p) for p in args.prior)]:
            if source.exists() and not args.no_prior:
                prior.update({r["id"]: r["killed_by"] for r in json.loads(source.read_text())["mutants"]
                              if r.get("killed_by")})
        # mutants without a known killer first: their long stages overlap the quick ones
        chosen = sorted(chosen, key=lambda m: m.id in prior)
        rows: dict[str, dict] = {}

        def report(row):
            rows[row["id"]] = row
            print(f"{row['status']:9s} {row['id']:32s} {row['seconds']:6.1f} s  {row['killed_by'] or ''}", flush=True)

        run_all(chosen, copies, args.timeout, prior, not args.skip_suite, report)
        if base_run is not None:
            while (out := base_run.poll()) is None:
                time.sleep(1)
            outcome, node, seconds = out
            baseline = {"outcome": outcome, "failing": node, "seconds": round(seconds, 1)}
            print(f"baseline (unmutated copy): {outcome} in {seconds:.0f} s {node or ''}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    merged, earlier = {}, {}
    if args.only and previous.exists():  # a partial rerun: keep the other mutants' rows
        earlier = json.loads(previous.read_text())
        merged = {r["id"]: r for r in earlier["mutants"]}
        if baseline is None and earlier.get("baseline"):
            baseline = {**earlier["baseline"], "note": "from the full run before this partial rerun"}
    merged.update(rows)
    ordered = [merged[i] for i in ids if i in merged]
    payload = {
        "test_command": f"{Path(sys.executable).name} -m pytest {' '.join(PYTEST_OPTS)} <stage>, PYTHONPATH=<private "
                        f"copy>; stages in turn until one fails: the previous run's killing test, the related files, "
                        f"the rest of the fast suite (tests/ without {', '.join(NOT_FAST)})",
        "related_files": RELATED,
        "dmlib_imported_from": "a private copy of the repository (checked: " + where.replace(str(tmp), "<tmp>") + ")",
        "runner": "pytest.main in a forked child of a process that imported " + ", ".join(PRELOAD)
                  + " once (never dmlib)" if FORK else "a fresh interpreter per pytest run",
        "deselected": args.deselect,
        "timeout_s": args.timeout,
        "jobs": args.jobs,
        "baseline": baseline,
        "skip_suite": args.skip_suite,
        "run_wall_s": round(time.monotonic() - start, 1),
        "rerun_ids": [m.id for m in chosen] if args.only else None,
        "full_run_wall_s": (earlier.get("full_run_wall_s", earlier.get("run_wall_s")) if args.only
                            else round(time.monotonic() - start, 1)),
        "totals": totals(ordered),
        "equivalent": EQUIVALENT,
        "mutants": ordered,
    }
    _common.write("mutation", payload, out_dir)
    if baseline is not None and baseline["outcome"] != "pass":
        print(f"WARNING: the fast suite fails on the unmutated copy ({baseline['failing']}): the kills are void")
        return 1
    t = payload["totals"]
    print(f"{t['killed']} killed, {t['timeout']} timeouts, {t['survived']} survived, {t['stale']} stale; "
          f"kill rate {t['kill_rate']}; survivors {t['survivors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

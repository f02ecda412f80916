/* The playground of the book (book/playground.md): the exact Gaussian-mixture oracle of
 * dmlib.toy.GaussianMixture, the schedules of dmlib.schedules, classifier-free guidance as
 * dmlib.guidance.ClassifierFreeGuidance, and the samplers of dmlib.samplers.sample(), in
 * plain JavaScript: no kernel, no network.
 *
 * Every formula follows dmlib line by line, in float64, so that the same x_T (and, for
 * DDPM, the same noise) gives the same samples as dmlib run in float64;
 * tests/test_playground.py checks it in a browser. Jupyter Book loads every .js file of
 * _static/ on every page, so this script builds its user interface only where the page
 * has an element with id "dm-playground"; elsewhere it only defines window.dmPlayground.
 */
(function () {
  "use strict";

  // ---------------------------------------------------------------------------------
  // Schedules (dmlib/schedules.py): VP schedules given by alpha_bar(t), with the affine
  // floor alpha_bar_min + (1 - alpha_bar_min) alpha_bar of VPSchedule._floored.

  const clamp01 = (v) => Math.min(Math.max(v, 0.0), 1.0);
  const sigmoid = (v) => 1.0 / (1.0 + Math.exp(-v)); // as torch.sigmoid

  function vpSchedule(name, params, raw, tFromRaw, abMin) {
    const floored = (t) => {
      const r = raw(t); // [alpha_bar, 1 - alpha_bar, d alpha_bar / dt]
      return [abMin + (1.0 - abMin) * clamp01(r[0]), (1.0 - abMin) * clamp01(r[1]),
        (1.0 - abMin) * r[2]];
    };
    return {
      name: name,
      params: params,
      alphaSigma(t) {
        const f = floored(t);
        return [Math.sqrt(f[0]), Math.sqrt(f[1])];
      },
      derivatives(t) { // (alpha', sigma')
        const f = floored(t);
        return [f[2] / (2 * Math.sqrt(f[0])), -f[2] / (2 * Math.sqrt(f[1]))];
      },
      logSnr(t) {
        const f = floored(t);
        return Math.log(f[0]) - Math.log(f[1]);
      },
      tFromLogSnr(lam) {
        const ab = clamp01((sigmoid(lam) - abMin) / (1.0 - abMin));
        const omab = clamp01(sigmoid(-lam) / (1.0 - abMin));
        return tFromRaw(ab, omab);
      },
    };
  }

  // LinearSchedule: alpha_bar(t) = exp(-beta_min t - (beta_max - beta_min) t^2 / 2), no floor
  function linearSchedule(betaMin = 0.1, betaMax = 20.0) {
    const raw = (t) => {
      const B = betaMin * t + 0.5 * (betaMax - betaMin) * t * t;
      const beta = betaMin + (betaMax - betaMin) * t;
      const ab = Math.exp(-B);
      return [ab, -Math.expm1(-B), -beta * ab];
    };
    const tFromRaw = (ab, omab) => {
      const B = ab < 0.5 ? -Math.log(ab) : -Math.log1p(-omab);
      const d = betaMax - betaMin;
      return 2 * B / (betaMin + Math.sqrt(betaMin * betaMin + 2 * d * B));
    };
    return vpSchedule("linear", { beta_min: betaMin, beta_max: betaMax }, raw, tFromRaw, 0.0);
  }

  // CosineSchedule (Nichol & Dhariwal), floored at ALPHA_BAR_MIN = 1e-4
  function cosineSchedule(s = 0.008) {
    const phi0 = s / (1 + s) * (Math.PI / 2);
    const cos2phi0 = Math.cos(phi0) ** 2;
    const rate = Math.PI / (2 * (1 + s));
    const raw = (t) => {
      const cosPhi = Math.sin((1 - t) * rate), sinPhi = Math.cos((1 - t) * rate);
      const ab = cosPhi * cosPhi / cos2phi0;
      const omab = Math.sin(t * rate) * Math.sin(t * rate + 2 * phi0) / cos2phi0;
      const dab = -2 * sinPhi * cosPhi * rate / cos2phi0;
      return [ab, omab, dab];
    };
    const tFromRaw = (ab, omab) => {
      const phi = Math.atan2(Math.sqrt(Math.sin(phi0) ** 2 + omab * Math.cos(phi0) ** 2),
        Math.sqrt(ab) * Math.cos(phi0));
      return phi * (2 / Math.PI) * (1 + s) - s;
    };
    return vpSchedule("cosine", { s: s }, raw, tFromRaw, 1e-4);
  }

  const SCHEDULES = { linear: linearSchedule, cosine: cosineSchedule };

  // ---------------------------------------------------------------------------------
  // Mixtures (dmlib/toy.py GaussianMixture), two-dimensional, with exact noised quantities.

  function makeMixture(spec) {
    const K = spec.means.length;
    const means = spec.means.map((m) => [+m[0], +m[1]]);
    let covs;
    if (spec.covs) covs = spec.covs.map((c) => [[+c[0][0], +c[0][1]], [+c[1][0], +c[1][1]]]);
    else covs = spec.stds.map((s) => [[s * s, 0], [0, s * s]]);
    let w = spec.weights ? spec.weights.map(Number) : means.map(() => 1.0 / K);
    const total = w.reduce((a, b) => a + b, 0);
    w = w.map((v) => v / total);
    const labels = spec.labels ? spec.labels.map((v) => v | 0) : means.map(() => 0);
    return {
      means: means, covs: covs, weights: w, labels: labels,
      logWeights: w.map(Math.log),
      nClasses: Math.max.apply(null, labels) + 1,
    };
  }

  function eightGaussians(radius = 2.0 / 1.42, std = 0.1 / 1.42) {
    const means = [], stds = [], labels = [];
    for (let k = 0; k < 8; k++) {
      const ang = 2 * Math.PI * k / 8;
      means.push([radius * Math.cos(ang), radius * Math.sin(ang)]);
      stds.push(Math.fround(std)); // dmlib builds the stds with torch.full: float32
      labels.push(k);
    }
    return { means: means, stds: stds, labels: labels };
  }

  // Presets: the mixtures and schedules of the chapters.
  const PRESETS = {
    eight: {
      title: "Eight Gaussians (Chapters 1\u20134)",
      short: "the eight-Gaussian mixture",
      spec: eightGaussians(),
      schedule: "linear",
      classNames: ["0 (east)", "1 (north-east)", "2 (north)", "3 (north-west)", "4 (west)",
        "5 (south-west)", "6 (south)", "7 (south-east)"],
    },
    three: {
      title: "Three classes (Chapter 6)",
      short: "the three-class mixture",
      spec: {
        means: [[-1.6, -0.6], [-0.45, 0.2], [0.45, 0.2], [1.6, -0.6], [0.0, 1.5], [0.0, -0.85]],
        stds: [0.35, 0.4, 0.4, 0.35, 0.35, 0.4],
        labels: [0, 0, 1, 1, 2, 2],
      },
      schedule: "cosine",
      classNames: ["0 (left)", "1 (right)", "2 (top and bottom)"],
    },
    two: {
      title: "Two Gaussians, weights 0.2 and 0.8 (Chapter 3)",
      short: "the two-Gaussian mixture",
      spec: {
        means: [[-1.5, -1.5], [1.5, 1.5]], stds: [0.35, 0.35], weights: [0.2, 0.8],
        labels: [0, 1],
      },
      schedule: "cosine",
      classNames: ["0 (lower left)", "1 (upper right)"],
    },
  };

  // Per-component terms at (x, t): log pi_m N(x; alpha mu_m, alpha^2 Sigma_m + sigma^2 I)
  // and sol = Sigma_{t,m}^{-1} (x - alpha mu_m), as GaussianMixture._component_logpdf.
  const LOG2PI = Math.log(2 * Math.PI);

  function componentTerms(mix, x0, x1, a, s, logw, sol) {
    const K = mix.means.length;
    for (let m = 0; m < K; m++) {
      const C = mix.covs[m];
      const c00 = a * a * C[0][0] + s * s, c01 = a * a * C[0][1], c11 = a * a * C[1][1] + s * s;
      const det = c00 * c11 - c01 * c01;
      const d0 = x0 - a * mix.means[m][0], d1 = x1 - a * mix.means[m][1];
      const s0 = (c11 * d0 - c01 * d1) / det, s1 = (c00 * d1 - c01 * d0) / det;
      sol[2 * m] = s0;
      sol[2 * m + 1] = s1;
      logw[m] = -0.5 * (d0 * s0 + d1 * s1 + Math.log(det) + 2 * LOG2PI);
    }
  }

  function logSumExp(v, keep) {
    let mx = -Infinity;
    for (let m = 0; m < v.length; m++) if (keep(m) && v[m] > mx) mx = v[m];
    if (mx === -Infinity) return -Infinity;
    let acc = 0;
    for (let m = 0; m < v.length; m++) if (keep(m)) acc += Math.exp(v[m] - mx);
    return mx + Math.log(acc);
  }

  // Exact E[x_0 | x_t] (GaussianMixture.posterior_mean), for the class y or all (y null):
  //   sum_m p(m | x_t) (mu_m + alpha Sigma_m Sigma_{t,m}^{-1} (x_t - alpha mu_m)).
  function posteriorMean(mix, x, t, sched, y) {
    const K = mix.means.length;
    const as = sched.alphaSigma(t), a = as[0], s = as[1];
    const lp = new Float64Array(K), sol = new Float64Array(2 * K);
    const out = new Float64Array(x.length);
    for (let i = 0; i < x.length; i += 2) {
      componentTerms(mix, x[i], x[i + 1], a, s, lp, sol);
      let mx = -Infinity;
      for (let m = 0; m < K; m++) {
        lp[m] = (y === null || mix.labels[m] === y) ? mix.logWeights[m] + lp[m] : -Infinity;
        if (lp[m] > mx) mx = lp[m];
      }
      let z = 0, e0 = 0, e1 = 0;
      for (let m = 0; m < K; m++) {
        if (lp[m] === -Infinity) continue;
        const r = Math.exp(lp[m] - mx), C = mix.covs[m];
        const sh0 = C[0][0] * sol[2 * m] + C[0][1] * sol[2 * m + 1];
        const sh1 = C[1][0] * sol[2 * m] + C[1][1] * sol[2 * m + 1];
        z += r;
        e0 += r * (mix.means[m][0] + a * sh0);
        e1 += r * (mix.means[m][1] + a * sh1);
      }
      out[i] = e0 / z;
      out[i + 1] = e1 / z;
    }
    return out;
  }

  // log p_t(x) (y null), or the log-density of the target of classifier-free guidance,
  //   log p_t(x) + w log p_t(y | x) = (1 - w) log p_t(x) + w log p_t(x, y)
  // (dmlib.guidance.tilted_log_prob), up to its normaliser. t = 0 is the clean mixture.
  function logDensity(mix, x0, x1, t, sched, y, w) {
    const K = mix.means.length;
    const as = sched.alphaSigma(t);
    const lp = new Float64Array(K), sol = new Float64Array(2 * K);
    componentTerms(mix, x0, x1, as[0], as[1], lp, sol);
    for (let m = 0; m < K; m++) lp[m] += mix.logWeights[m];
    const logP = logSumExp(lp, () => true);
    if (y === null) return logP;
    const logJoint = logSumExp(lp, (m) => mix.labels[m] === y);
    return logP + w * (logJoint - logP);
  }

  // The exact denoiser, mixture.denoiser(schedule): it predicts eps = (x_t - alpha x0) / sigma.
  function exactEps(mix, x, t, sched, y) {
    const x0 = posteriorMean(mix, x, t, sched, y);
    const as = sched.alphaSigma(t);
    const out = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = (x[i] - as[0] * x0[i]) / as[1];
    return out;
  }

  // The model a sampler calls (ClassifierFreeGuidance(oracle, w) when y is a class):
  //   eps_w = eps(x, t) + w (eps(x, t, y) - eps(x, t)); w = 1 and w = 0 need one evaluation.
  function guidedEps(mix, x, t, sched, y, w) {
    if (y === null || w === 1.0) return exactEps(mix, x, t, sched, y);
    const uncond = exactEps(mix, x, t, sched, null);
    if (w === 0.0) return uncond;
    const cond = exactEps(mix, x, t, sched, y);
    const out = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = uncond[i] + w * (cond[i] - uncond[i]);
    return out;
  }

  // dmlib.diffusion._convert from "eps" to x0 or to the probability-flow velocity.
  function epsToX0(eps, x, t, sched) {
    const as = sched.alphaSigma(t), out = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = (x[i] - as[1] * eps[i]) / as[0];
    return out;
  }

  function epsToVelocity(eps, x, t, sched) {
    const as = sched.alphaSigma(t), d = sched.derivatives(t), out = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) {
      const x0 = (x[i] - as[1] * eps[i]) / as[0];
      out[i] = d[0] * x0 + d[1] * eps[i]; // alpha' x0 + sigma' eps
    }
    return out;
  }

  // ---------------------------------------------------------------------------------
  // Time grids (dmlib.samplers.time_grid): float64, then stored as float32 as dmlib does.

  function linspace(a, b, n) { // torch.linspace's two-sided formula
    const out = new Float64Array(n);
    if (n === 1) { out[0] = a; return out; }
    const step = (b - a) / (n - 1), half = Math.floor(n / 2);
    for (let i = 0; i < n; i++) out[i] = i < half ? a + step * i : b - step * (n - i - 1);
    return out;
  }

  function timeGrid(nSteps, spacing, sched, tMin) {
    const tMax = 1.0;
    let t;
    if (spacing === "uniform") {
      t = linspace(tMax, tMin, nSteps + 1);
    } else if (spacing === "log_snr") {
      if (!(tMin > 0)) throw new Error("spacing 'log_snr' needs t_min > 0");
      const lamHi = sched.logSnr(tMin), lamLo = sched.logSnr(tMax);
      const lam = linspace(lamLo, lamHi, nSteps + 1);
      t = lam.map((v) => Math.min(Math.max(sched.tFromLogSnr(v), tMin), tMax));
      t[0] = tMax;
      t[nSteps] = tMin;
    } else {
      throw new Error("spacing must be 'uniform' or 'log_snr', got " + spacing);
    }
    return Array.from(t, Math.fround);
  }

  // ---------------------------------------------------------------------------------
  // Random numbers: mulberry32 and Box-Muller, for x_T and DDPM's noise when none is given.

  function mulberry32(seed) {
    let a = seed >>> 0;
    return function () {
      a = (a + 0x6D2B79F5) >>> 0;
      let r = Math.imul(a ^ (a >>> 15), 1 | a);
      r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
      return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
    };
  }

  function gaussianSource(seed) {
    const uniform = mulberry32(seed);
    let spare = null;
    return function () {
      if (spare !== null) { const v = spare; spare = null; return v; }
      let u = 0;
      while (u === 0) u = uniform(); // (0, 1): log(u) is finite
      const v = uniform(), r = Math.sqrt(-2 * Math.log(u));
      spare = r * Math.sin(2 * Math.PI * v);
      return r * Math.cos(2 * Math.PI * v);
    };
  }

  function randn(gauss, n) {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = gauss();
    return out;
  }

  // Exact draws x_0 ~ p(x | y) (or p(x) when y is null), as GaussianMixture.sample: a
  // component by its weight among those of class y, then mu_m + L_m z with Sigma_m = L_m L_m^T.
  function sampleMixture(mix, n, y, seed) {
    const uniform = mulberry32(seed ^ 0x5bd1e995), gauss = gaussianSource(seed + 1);
    const keep = mix.weights.map((w, m) => (y === null || mix.labels[m] === y) ? w : 0);
    const total = keep.reduce((a, b) => a + b, 0);
    const out = new Float64Array(2 * n);
    for (let i = 0; i < n; i++) {
      let u = uniform() * total, m = 0;
      while (m < keep.length - 1 && (u >= keep[m] || keep[m] === 0)) { u -= keep[m]; m++; }
      while (keep[m] === 0) m--; // rounding at the far end: the last allowed component
      const C = mix.covs[m], l00 = Math.sqrt(C[0][0]), l10 = C[0][1] / l00;
      const l11 = Math.sqrt(C[1][1] - l10 * l10), z0 = gauss(), z1 = gauss();
      out[2 * i] = mix.means[m][0] + l00 * z0;
      out[2 * i + 1] = mix.means[m][1] + l10 * z0 + l11 * z1;
    }
    return out;
  }

  // ---------------------------------------------------------------------------------
  // The sampling loop: dmlib.samplers.sample() without churn or corrector steps.

  const SAMPLERS = {
    ddpm: "DDPM (ancestral)",
    ddim: "DDIM",
    euler: "Euler (probability-flow ODE)",
    heun: "Heun (probability-flow ODE)",
    dpmpp_2m: "DPM-Solver++(2M)",
  };
  const NFE_PER_STEP = { ddpm: 1, ddim: 1, euler: 1, heun: 2, dpmpp_2m: 1 };

  function flat(points) {
    const out = new Float64Array(2 * points.length);
    points.forEach((p, i) => { out[2 * i] = +p[0]; out[2 * i + 1] = +p[1]; });
    return out;
  }

  function pairs(arr) {
    const out = [];
    for (let i = 0; i < arr.length; i += 2) out.push([arr[i], arr[i + 1]]);
    return out;
  }

  function sampleLoop(mix, sched, xT, grid, method, y, w, noiseAt) {
    let x = xT;
    const traj = [x];
    let history = null; // DPM-Solver++(2M): the previous [x0, t]
    let nfe = 0, calls = 0; // evaluations of the model, and of the exact denoiser inside it
    const model = (xx, tt) => {
      nfe += 1;
      calls += (y === null || w === 1 || w === 0) ? 1 : 2;
      return guidedEps(mix, xx, tt, sched, y, w);
    };
    for (let i = 0; i < grid.length - 1; i++) {
      const t = grid[i], s = grid[i + 1];
      const last = i === grid.length - 2, toZero = s === 0.0;
      const n = x.length, next = new Float64Array(n);
      if (method === "ddpm" || method === "ddim") {
        const x0 = epsToX0(model(x, t), x, t, sched);
        const at = sched.alphaSigma(t), as = sched.alphaSigma(s);
        if (method === "ddpm" && !last) {
          // 1. q(x_s | x_t, x0_hat) through the log-SNR (diffusion._posterior)
          const d = -Math.expm1(sched.logSnr(t) - sched.logSnr(s));
          const cXt = (at[0] / as[0]) * (as[1] / at[1]) ** 2, cX0 = as[0] * d;
          const std = Math.sqrt(Math.max(as[1] * as[1] * d, 0.0));
          // 2. draw from it
          const z = noiseAt(i, n);
          for (let k = 0; k < n; k++) next[k] = cXt * x[k] + cX0 * x0[k] + std * z[k];
        } else { // deterministic DDIM (and DDPM's last step, which adds no noise)
          for (let k = 0; k < n; k++) {
            const epsHat = (x[k] - at[0] * x0[k]) / at[1]; // 1. implied noise
            next[k] = as[0] * x0[k] + as[1] * epsHat; // 3. step (eq-ddim)
          }
        }
      } else if (method === "dpmpp_2m") {
        const x0 = epsToX0(model(x, t), x, t, sched);
        if (toZero) { // lambda = inf at t = 0: the solution is the prediction itself
          next.set(x0);
        } else {
          const as = sched.alphaSigma(s), sigT = sched.alphaSigma(t)[1];
          const lamT = sched.logSnr(t), lamS = sched.logSnr(s);
          const h = (lamS - lamT) / 2;
          let c0 = 1, c1 = 0;
          if (history !== null) { // 1. extrapolate x0 (eq-dpmpp-2m)
            const r = (lamT - sched.logSnr(history[1])) / (lamS - lamT);
            c0 = 1 + 1 / (2 * r);
            c1 = 1 / (2 * r);
          }
          const em = Math.expm1(-h), ratio = as[1] / sigT;
          for (let k = 0; k < n; k++) {
            const d = history !== null ? c0 * x0[k] - c1 * history[0][k] : x0[k];
            next[k] = ratio * x[k] - as[0] * em * d; // 2. exact linear part
          }
        }
        history = [x0, t];
      } else if (method === "euler" || method === "heun") {
        const u = epsToVelocity(model(x, t), x, t, sched);
        const dt = s - t;
        for (let k = 0; k < n; k++) next[k] = x[k] + dt * u[k];
        if (method === "heun" && !toZero) {
          const u2 = epsToVelocity(model(next, s), next, s, sched);
          for (let k = 0; k < n; k++) next[k] = x[k] + dt * 0.5 * (u[k] + u2[k]);
        }
      } else {
        throw new Error("unknown sampler " + method);
      }
      x = next;
      traj.push(x);
    }
    return { x: x, traj: traj, nfe: nfe, calls: calls };
  }

  function resolveMixture(m) {
    if (typeof m === "string") {
      if (!PRESETS[m]) throw new Error("unknown mixture " + m + "; presets: " + Object.keys(PRESETS));
      return { name: m, mix: makeMixture(PRESETS[m].spec), schedule: PRESETS[m].schedule };
    }
    return { name: "custom", mix: makeMixture(m), schedule: "linear" };
  }

  // The testing hook and the page's engine: a pure function of its options.
  //   opts.mixture  preset name ("eight", "three", "two") or {means, stds|covs, weights, labels}
  //   opts.schedule "linear" | "cosine" (default: the preset's)
  //   opts.sampler  "ddpm" | "ddim" | "euler" | "heun" | "dpmpp_2m"
  //   opts.steps    number of steps; opts.spacing "uniform" | "log_snr"; opts.tMin
  //   opts.cls      class label y, or null for the unconditional model
  //   opts.guidance the guidance scale w (used when cls is a class; default 1)
  //   opts.xT       [[x, y], ...] starting points at t = 1, or opts.n and opts.seed
  //   opts.noises   DDPM only: steps - 1 arrays [[z1, z2], ...], the noise of each step
  function run(opts) {
    const o = Object.assign({ sampler: "ddim", steps: 20, spacing: "uniform", cls: null,
      guidance: 1.0, seed: 0, n: 500 }, opts || {});
    const m = resolveMixture(o.mixture === undefined ? "eight" : o.mixture);
    const schedName = o.schedule || m.schedule;
    if (!SCHEDULES[schedName]) throw new Error("unknown schedule " + schedName);
    const sched = SCHEDULES[schedName]();
    if (!SAMPLERS[o.sampler]) throw new Error("unknown sampler " + o.sampler);
    const steps = o.steps | 0;
    if (!(steps >= 1)) throw new Error("steps must be an integer >= 1");
    const y = o.cls === null || o.cls === undefined ? null : (o.cls | 0);
    if (y !== null && !(y >= 0 && y < m.mix.nClasses)) throw new Error("cls out of range");
    const w = +o.guidance;
    const tMin = o.tMin !== undefined ? +o.tMin : (o.spacing === "log_snr" ? 1e-3 : 0.0);
    const grid = timeGrid(steps, o.spacing, sched, tMin);
    const gauss = gaussianSource(o.seed);
    const xT = o.xT ? flat(o.xT) : randn(gauss, 2 * o.n);
    const noiseAt = (i, n) => {
      if (o.noises) {
        if (!o.noises[i]) throw new Error("noises has no entry for step " + i);
        return flat(o.noises[i]);
      }
      return randn(gauss, n);
    };
    const res = sampleLoop(m.mix, sched, xT, grid, o.sampler, y, w, noiseAt);
    return {
      samples: pairs(res.x),
      trajectory: res.traj.map(pairs),
      times: grid,
      nfe: res.nfe,
      mixture: {
        name: m.name, means: m.mix.means, covs: m.mix.covs, weights: m.mix.weights,
        labels: m.mix.labels, schedule: { name: sched.name, params: sched.params },
      },
      _flat: res, // typed arrays, for the page's own drawing
    };
  }

  const api = {
    run: (opts) => { const r = run(opts); delete r._flat; return r; },
    presets: PRESETS,
    samplers: SAMPLERS,
    logDensity(mixture, x, t, opts) {
      const o = Object.assign({ cls: null, guidance: 1.0 }, opts || {});
      const m = resolveMixture(mixture);
      const sched = SCHEDULES[o.schedule || m.schedule]();
      const y = o.cls === null || o.cls === undefined ? null : o.cls | 0;
      return x.map((p) => logDensity(m.mix, +p[0], +p[1], t, sched, y, +o.guidance));
    },
    sampleMixture(mixture, n, opts) {
      const o = Object.assign({ cls: null, seed: 0 }, opts || {});
      const y = o.cls === null || o.cls === undefined ? null : o.cls | 0;
      return pairs(sampleMixture(resolveMixture(mixture).mix, n, y, o.seed));
    },
    timeGrid: (n, spacing, schedule, tMin) => timeGrid(n, spacing || "uniform",
      SCHEDULES[schedule || "linear"](), tMin === undefined ? 0.0 : tMin),
  };
  window.dmPlayground = api;

  // ---------------------------------------------------------------------------------
  // The page: controls, two canvases and a step slider.

  const PALETTE = { // Okabe-Ito
    orange: "#E69F00", sky: "#56B4E9", green: "#009E73", yellow: "#F0E442",
    blue: "#0072B2", vermillion: "#D55E00", purple: "#CC79A7", black: "#000000",
  };
  const LIM = 3.0; // the canvases show [-3, 3]^2, as the chapters' figures do
  const HEAT_N = 120; // density cells per side
  const LOG_RANGE = 8; // the heat maps span the top 8 nats of the log-density

  // light-to-dark ramp from white over sky blue to Okabe-Ito's blue and a dark navy
  const RAMP = [[255, 255, 255], [208, 231, 246], [86, 180, 233], [0, 114, 178], [10, 45, 90]];
  function rampColor(v) {
    const p = Math.min(Math.max(v, 0), 1) * (RAMP.length - 1);
    const i = Math.min(Math.floor(p), RAMP.length - 2), f = p - i;
    return RAMP[i].map((c, j) => Math.round(c + f * (RAMP[i + 1][j] - c)));
  }

  function setupCanvas(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const size = canvas.clientWidth || 360;
    canvas.width = Math.round(size * ratio);
    canvas.height = Math.round(size * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return { ctx: ctx, size: size };
  }

  function toPx(size, v0, v1) {
    return [(v0 + LIM) / (2 * LIM) * size, (LIM - v1) / (2 * LIM) * size];
  }

  function drawDensity(ctx, size, mix, sched, t, y, w) {
    const img = document.createElement("canvas");
    img.width = HEAT_N;
    img.height = HEAT_N;
    const ictx = img.getContext("2d"), data = ictx.createImageData(HEAT_N, HEAT_N);
    const vals = new Float64Array(HEAT_N * HEAT_N);
    let mx = -Infinity;
    for (let r = 0; r < HEAT_N; r++) {
      for (let c = 0; c < HEAT_N; c++) {
        const v0 = -LIM + (c + 0.5) / HEAT_N * 2 * LIM, v1 = LIM - (r + 0.5) / HEAT_N * 2 * LIM;
        const v = logDensity(mix, v0, v1, t, sched, y, w);
        vals[r * HEAT_N + c] = v;
        if (v > mx) mx = v;
      }
    }
    for (let k = 0; k < vals.length; k++) {
      // log-density relative to the peak, over the top LOG_RANGE nats: faint modes stay visible
      const col = rampColor(0.9 * Math.max(0, 1 + (vals[k] - mx) / LOG_RANGE));
      data.data[4 * k] = col[0];
      data.data[4 * k + 1] = col[1];
      data.data[4 * k + 2] = col[2];
      data.data[4 * k + 3] = 255;
    }
    ictx.putImageData(data, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(img, 0, 0, size, size);
  }

  function drawAxes(ctx, size) {
    ctx.strokeStyle = "rgba(0, 0, 0, 0.25)";
    ctx.lineWidth = 1;
    ctx.setLineDash([3, 4]);
    const mid = size / 2;
    ctx.beginPath();
    ctx.moveTo(mid, 0); ctx.lineTo(mid, size);
    ctx.moveTo(0, mid); ctx.lineTo(size, mid);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.strokeStyle = "rgba(0, 0, 0, 0.5)";
    ctx.strokeRect(0.5, 0.5, size - 1, size - 1);
    ctx.fillStyle = "rgba(0, 0, 0, 0.6)";
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText("\u22123", 4, mid - 4);
    ctx.fillText("3", size - 11, mid - 4);
  }

  function drawPoints(ctx, size, x, color, radius) {
    ctx.fillStyle = color;
    ctx.strokeStyle = "rgba(0, 0, 0, 0.55)";
    ctx.lineWidth = 0.6;
    for (let i = 0; i < x.length; i += 2) {
      const p = toPx(size, x[i], x[i + 1]);
      ctx.beginPath();
      ctx.arc(p[0], p[1], radius, 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
    }
  }

  function drawLabel(ctx, size, text) {
    ctx.font = "12px system-ui, sans-serif";
    const wdt = ctx.measureText(text).width;
    ctx.fillStyle = "rgba(255, 255, 255, 0.85)";
    ctx.fillRect(6, 6, wdt + 10, 19);
    ctx.fillStyle = "#000";
    ctx.fillText(text, 11, 20);
  }

  const fmt = (v, d) => Number(v).toFixed(d === undefined ? 2 : d);

  function initPage(root) {
    const $ = (name) => root.querySelector("[data-pg=\"" + name + "\"]");
    const el = {
      form: $("form"), mixture: $("mixture"), schedule: $("schedule"), sampler: $("sampler"),
      steps: $("steps"), spacing: $("spacing"), cls: $("cls"), w: $("w"), wOut: $("w-out"),
      n: $("n"), seed: $("seed"), run: $("run"), play: $("play"), step: $("step"),
      stepOut: $("step-out"), status: $("status"), left: $("canvas-samples"),
      right: $("canvas-paths"), leftCap: $("cap-samples"), rightCap: $("cap-paths"),
    };
    let state = null, timer = null;

    function fillClasses() {
      const preset = PRESETS[el.mixture.value];
      el.cls.innerHTML = "";
      const none = document.createElement("option");
      none.value = "";
      none.textContent = "none (unconditional)";
      el.cls.appendChild(none);
      preset.classNames.forEach((name, c) => {
        const opt = document.createElement("option");
        opt.value = String(c);
        opt.textContent = "class " + name;
        el.cls.appendChild(opt);
      });
      el.cls.value = el.mixture.value === "eight" ? "" : "0";
      el.schedule.value = preset.schedule;
      syncGuidance();
    }

    function syncGuidance() {
      el.w.disabled = el.cls.value === "";
      el.wOut.textContent = el.cls.value === "" ? "(no class)" : "w = " + fmt(el.w.value, 1);
    }

    function options() {
      return {
        mixture: el.mixture.value, schedule: el.schedule.value, sampler: el.sampler.value,
        steps: Math.min(Math.max(parseInt(el.steps.value, 10) || 1, 1), 500),
        spacing: el.spacing.value, cls: el.cls.value === "" ? null : parseInt(el.cls.value, 10),
        guidance: parseFloat(el.w.value), n: parseInt(el.n.value, 10),
        seed: Math.max(parseInt(el.seed.value, 10) || 0, 0),
      };
    }

    function describeTarget(o) {
      const preset = PRESETS[o.mixture];
      if (o.cls === null) return preset.short;
      return preset.short + " guided towards class " + preset.classNames[o.cls] +
        " with w = " + fmt(o.guidance, 1);
    }

    function drawStep(k) {
      if (!state) return;
      const o = state.opts, t = state.times[k];
      const L = setupCanvas(el.left);
      drawDensity(L.ctx, L.size, state.mix, state.sched, t, o.cls, o.guidance);
      drawAxes(L.ctx, L.size);
      drawPoints(L.ctx, L.size, state.traj[k], PALETTE.vermillion, 1.9);
      drawLabel(L.ctx, L.size, "t = " + fmt(t, 3) + "  (step " + k + " of " + o.steps + ")");
      el.stepOut.textContent = "step " + k + " of " + o.steps + ", t = " + fmt(t, 3);
      el.left.setAttribute("aria-label", "Heat map of the exact density at t = " + fmt(t, 3) +
        " of " + describeTarget(o) + " (darker is denser), with the " + (state.traj[k].length / 2) +
        " points of the " + SAMPLERS[o.sampler] + " sampler after " + k + " of its " + o.steps +
        " steps drawn as orange-red dots.");
    }

    function drawPaths() {
      const o = state.opts, R = setupCanvas(el.right), tEnd = state.times[state.times.length - 1];
      drawDensity(R.ctx, R.size, state.mix, state.sched, tEnd, o.cls, o.guidance);
      drawAxes(R.ctx, R.size);
      const nShow = Math.min(60, state.traj[0].length / 2);
      R.ctx.lineWidth = 0.9;
      R.ctx.strokeStyle = "rgba(0, 0, 0, 0.55)";
      for (let i = 0; i < nShow; i++) {
        R.ctx.beginPath();
        state.traj.forEach((x, k) => {
          const p = toPx(R.size, x[2 * i], x[2 * i + 1]);
          if (k === 0) R.ctx.moveTo(p[0], p[1]); else R.ctx.lineTo(p[0], p[1]);
        });
        R.ctx.stroke();
      }
      const start = state.traj[0].slice(0, 2 * nShow), end = state.traj[state.traj.length - 1];
      drawPoints(R.ctx, R.size, start, "#ffffff", 2.2);
      drawPoints(R.ctx, R.size, end.slice(0, 2 * nShow), PALETTE.orange, 2.6);
      const endT = "t = " + (tEnd === 0 ? "0" : fmt(tEnd, 3));
      drawLabel(R.ctx, R.size, "paths from t = 1 to " + endT);
      el.right.setAttribute("aria-label", "Heat map of the exact density at " + endT + " of " +
        describeTarget(o) + " (darker is denser), with the paths of " + nShow + " of the points " +
        "from t = 1 (white dots) to " + endT + " (orange dots) as dark lines.");
    }

    // mean distance of points to the nearest mean of the (requested class's) components
    function meanDistance(x, cls) {
      const mix = state.mix;
      let acc = 0;
      for (let i = 0; i < x.length; i += 2) {
        let best = Infinity;
        mix.means.forEach((mu, m) => {
          if (cls !== null && mix.labels[m] !== cls) return;
          best = Math.min(best, Math.hypot(x[i] - mu[0], x[i + 1] - mu[1]));
        });
        acc += best;
      }
      return acc / (x.length / 2);
    }

    function summary(o, res, ms) {
      const n = res.x.length / 2;
      const exact = meanDistance(sampleMixture(state.mix, n, o.cls, o.seed), o.cls);
      const cost = res.calls === res.nfe ? res.nfe + " evaluations of the exact denoiser"
        : res.nfe + " evaluations of the guided model, " + res.calls + " of the exact denoiser";
      return SAMPLERS[o.sampler] + ", " + o.steps + " steps (" + cost + "), " + n +
        " samples of " + describeTarget(o) + ". Mean distance " +
        "to the nearest" + (o.cls === null ? "" : " requested") + " component mean: " +
        fmt(meanDistance(res.x, o.cls), 3) + " (exact samples of " +
        (o.cls === null ? "the mixture" : "p(x | y)") + ": " + fmt(exact, 3) + "). Computed in " +
        fmt(ms, 0) + " ms.";
    }

    function runNow() {
      stopPlay();
      const o = options();
      const t0 = performance.now();
      let r;
      try {
        r = run(o);
      } catch (err) {
        el.status.textContent = "Could not run: " + err.message;
        return;
      }
      const ms = performance.now() - t0;
      state = {
        opts: o, times: r.times, traj: r._flat.traj, mix: makeMixture(PRESETS[o.mixture].spec),
        sched: SCHEDULES[o.schedule](),
      };
      el.step.max = String(o.steps);
      el.step.value = String(o.steps);
      el.step.disabled = false;
      el.play.disabled = false;
      drawStep(o.steps);
      drawPaths();
      el.leftCap.textContent = "The points after the step chosen below, over the exact " +
        "density of " + describeTarget(o) + " at that step's time.";
      el.rightCap.textContent = "Paths of 60 points over the exact density at the last time " +
        (o.cls === null ? "(the mixture itself)." : "(the tilted density that guidance aims at).");
      el.status.textContent = summary(o, r._flat, ms);
      root.dataset.runs = String((parseInt(root.dataset.runs || "0", 10) + 1));
    }

    function stopPlay() {
      if (timer !== null) { clearInterval(timer); timer = null; el.play.textContent = "Play"; }
    }

    function play() {
      if (!state) return;
      if (timer !== null) { stopPlay(); return; }
      const reduce = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
      if (reduce) { el.step.value = el.step.max; drawStep(+el.step.max); return; }
      let k = 0;
      const n = +el.step.max, delay = Math.max(20, Math.round(2000 / n));
      el.play.textContent = "Stop";
      timer = setInterval(() => {
        el.step.value = String(k);
        drawStep(k);
        if (k >= n) stopPlay();
        k += 1;
      }, delay);
    }

    el.mixture.addEventListener("change", fillClasses);
    el.cls.addEventListener("change", syncGuidance);
    el.w.addEventListener("input", syncGuidance);
    el.step.addEventListener("input", () => { stopPlay(); drawStep(+el.step.value); });
    el.play.addEventListener("click", play);
    el.form.addEventListener("submit", (ev) => { ev.preventDefault(); runNow(); });
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (state) { drawStep(+el.step.value); drawPaths(); } }, 150);
    });
    fillClasses();
    root.classList.add("dm-pg-ready");
    runNow();
  }

  function start() {
    const root = document.getElementById("dm-playground");
    if (root) initPage(root);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

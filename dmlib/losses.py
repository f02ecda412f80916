"""Training losses: the denoising loss for any prediction target, and flow matching.
Chapter 2.

A loss is a function ``loss(model, x0, y=None, generator=None) -> scalar`` that draws
the time and the noise itself, so the one training loop (:mod:`dmlib.train`) serves
every chapter. :func:`diffusion_loss` builds one:

    t ~ U(t_min, t_max),  eps ~ N(0, I),  x_t = alpha_t x_0 + sigma_t eps
    L = E[ kappa(t) * mean_dims | model(x_t, t, y) - target(x_0, eps, t) |^2 ]

where ``target`` is what the model predicts (``model.prediction``): eps, x0, v, score or
velocity. Each choice is a reweighting of the same objective over noise levels: in terms
of the eps error, the x0 loss weighs time t by 1 / SNR(t) and the v loss (VP) by
1 + 1 / SNR(t) (Section 2.7).
Flow matching (Chapter 5) is the case ``prediction="velocity"`` on the linear path.
"""

from __future__ import annotations

import torch

from . import _check, noise
from .diffusion import PREDICTIONS, _target
from .schedules import Schedule, _work, expand_to

WEIGHTINGS = ("none", "x0", "min_snr", "elbo_eps")


def weight(
    t: torch.Tensor,
    schedule: Schedule,
    weighting: str,
    *,
    prediction: str = "eps",
    gamma: float = 5.0,
) -> torch.Tensor:
    """Per-sample loss weight kappa(t), shape (B,) (Section 2.7).

    * ``"none"``: kappa = 1 on the model's own target;
    * ``"x0"``: turns an eps-loss into an x0-loss, kappa = 1 / SNR(t), since
      |x_0 - x0_hat|^2 = |eps - eps_hat|^2 / SNR(t) (only for prediction="eps");
    * ``"min_snr"``: Min-SNR-gamma (Hang et al., 2023), the x0-loss weight
      min(SNR, gamma) expressed for the model's target;
    * ``"elbo_eps"``: eps-loss weight proportional to -d lambda/dt, which makes the loss
      the ELBO's continuous-time form (Kingma et al., 2021), up to a constant.
    """
    t = _check.as_time(t)
    _check.schedule(schedule)
    _check.choice(weighting, "weighting", WEIGHTINGS)
    _check.choice(prediction, "prediction", PREDICTIONS)
    return _weight(t, schedule, weighting, prediction, gamma)


def _weight(t, schedule, weighting, prediction, gamma):
    # weight() without checks; t is a valid (B,) tensor
    if weighting == "none":
        return torch.ones_like(t)
    tt = _work(t)
    a, s = schedule._alpha_sigma(tt)
    snr = torch.exp(schedule._log_snr(tt))
    if weighting == "x0":
        if prediction != "eps":
            raise ValueError(
                "weighting='x0' converts an eps-loss to an x0-loss; "
                f"prediction must be 'eps', got {prediction!r}"
            )
        return (1.0 / snr).to(t.dtype)
    if weighting == "min_snr":
        x0_weight = snr.clamp(max=gamma)  # weight of the x0-error
        # the same weight expressed for the model's target:
        # |x0 err|^2 = |eps err|^2 / SNR = sigma^2 / (alpha^2 + sigma^2)^2 |v err|^2
        # (= |v err|^2 / (1 + SNR) for a VP schedule)
        to_target = {
            "x0": torch.ones_like(snr),
            "eps": 1.0 / snr,
            "v": s**2 / (a**2 + s**2) ** 2,
        }
        if prediction not in to_target:
            raise ValueError(
                "weighting='min_snr' supports predictions eps, x0, v; "
                f"got {prediction!r}"
            )
        return (x0_weight * to_target[prediction]).to(t.dtype)
    if prediction != "eps":
        raise ValueError(
            f"weighting='elbo_eps' is defined for prediction 'eps', got {prediction!r}"
        )
    # -lambda'/2 = g^2 / (2 sigma^2), with g^2 = -sigma^2 lambda' the SDE's diffusion
    # (Section 4.1)
    return (schedule._sde(tt)[1] / (2 * s**2)).to(t.dtype)


def _eps_units(t, schedule, prediction):
    # |target error|^2 / |eps error|^2 for a fixed x_t (Sections 2.7 and 4.9), (B,)
    if prediction == "eps":
        return torch.ones_like(t)
    a, s = schedule._alpha_sigma(t)
    if prediction == "x0":  # x0 - x0_hat = -(sigma / alpha)(eps - eps_hat)
        return (s / a) ** 2
    if prediction == "v":  # v - v_hat = ((alpha^2 + sigma^2) / alpha)(eps - eps_hat)
        return ((a**2 + s**2) / a) ** 2
    if prediction == "score":  # score error = -(eps error) / sigma
        return 1.0 / s**2
    da, ds = schedule._derivatives(t)  # velocity: ((alpha sigma' - sigma alpha') / alpha)^2
    return ((a * ds - s * da) / a) ** 2


def log_snr_weighting(
    t,
    schedule: Schedule,
    weighting: str = "none",
    *,
    prediction: str = "eps",
    t_min: float = 1e-3,
    t_max: float = 1.0,
    gamma: float = 5.0,
) -> torch.Tensor:
    """The weight per unit of log-SNR that a denoising loss puts on the noise error
    (Section 4.9; Kingma & Gao, 2023).

    :func:`diffusion_loss` draws t ~ U(t_min, t_max), of density
    p(t) = 1 / (t_max - t_min), and weighs its target's error by kappa(t)
    (:func:`weight`). Changing variables from t to lambda = lambda_t writes its
    expectation as an integral over log-SNR of the noise error
    E(lambda) = E |eps - eps_hat|^2 (mean over coordinates):

        L = int kappa_bar(lambda) E(lambda) d lambda,
        kappa_bar(lambda_t) = p(t) kappa(t) nu(t) / |lambda'(t)|,

    where nu(t) = |target error|^2 / |eps error|^2 converts the target's error to eps
    units (1, e^{-lambda}, (alpha^2 + sigma^2)^2 / alpha^2, 1 / sigma^2 for eps, x0, v,
    score) and |lambda'(t)| = g(t)^2 / sigma_t^2 (Section 4.1). Returns kappa_bar at the
    times ``t``, shape (B,), 0 outside [t_min, t_max] (inf where lambda'(t) = 0). For
    ``"elbo_eps"`` it is the constant p(t) / 2: the ELBO weighs every log-SNR alike.
    """
    t = _check.as_time(t)
    _check.schedule(schedule)
    _check.choice(weighting, "weighting", WEIGHTINGS)
    _check.choice(prediction, "prediction", PREDICTIONS)
    if not (0.0 <= t_min < t_max <= 1.0):
        raise ValueError(
            f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}"
        )
    w = _weight(t, schedule, weighting, prediction, gamma)
    tt = _work(t)
    _, s = schedule._alpha_sigma(tt)
    dlam = schedule._sde(tt)[1] / s**2  # |lambda'(t)| = g^2 / sigma^2
    kappa_bar = w * _eps_units(tt, schedule, prediction) / (dlam * (t_max - t_min))
    inside = (t >= t_min) & (t <= t_max)
    return torch.where(inside, kappa_bar, torch.zeros_like(kappa_bar)).to(t.dtype)


def diffusion_loss(
    schedule: Schedule,
    *,
    weighting: str = "none",
    t_min: float = 1e-3,
    t_max: float = 1.0,
    gamma: float = 5.0,
    coupling=None,
    paired: bool = False,
):
    """Build the denoising loss ``loss(model, x0, y=None, generator=None)``
    (Section 2.4).

    The target follows ``model.prediction``. Time is drawn uniformly from
    [t_min, t_max]; t_min > 0 keeps eps-targets away from sigma_0 = 0 where x_t carries
    no noise to predict. ``coupling(x0, eps) -> eps`` may re-pair data and noise within
    the batch (e.g. :func:`dmlib.flow.ot_pairing`); by default they are independent.
    With ``paired=True`` the batch is a tensor of stored pairs,
    shape (B, 2, ...) = (x_0, eps) (reflow, Section 5.4), and no noise is drawn.
    """
    _check.schedule(schedule)
    _check.choice(weighting, "weighting", WEIGHTINGS)
    if not (0.0 <= t_min < t_max <= 1.0):
        raise ValueError(
            f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}"
        )

    def loss(
        model, x0: torch.Tensor, y=None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        kind = getattr(model, "prediction", None)
        _check.choice(kind, "model.prediction", PREDICTIONS)
        _check.tensor(x0, "x0", min_dim=2)
        if paired:
            if x0.dim() < 3 or x0.shape[1] != 2:
                raise ValueError(
                    "a paired loss needs batches of (x0, eps) pairs, "
                    f"shape (B, 2, ...), got {tuple(x0.shape)}"
                )
            x0, eps = x0[:, 0], x0[:, 1]
        b = x0.shape[0]
        # 1. draw times and noise
        # (on the generator's device, then moved: see dmlib.noise)
        u = noise.rand((b,), generator=generator, device=x0.device)  # U(0, 1)
        t = t_min + (t_max - t_min) * u
        if not paired:
            eps = noise.randn_like(x0, generator=generator)
        if coupling is not None:
            eps = coupling(x0, eps)
        # 2. noise the data (Section 1.2)
        a, s = schedule._alpha_sigma(t)
        x_t = expand_to(a, x0) * x0 + expand_to(s, x0) * eps  # (B, ...)
        # 3. the regression target for the model's kind, from the pair (x0, eps)
        goal = _target(x0, eps, t, schedule, kind)
        pred = model(x_t, t, y)
        per_sample = ((pred - goal) ** 2).flatten(1).mean(1)  # (B,)
        return (_weight(t, schedule, weighting, kind, gamma) * per_sample).mean()

    loss.schedule, loss.weighting = schedule, weighting
    return loss


COUPLINGS = ("independent", "ot", "pairs")


def flow_matching_loss(
    schedule: Schedule | None = None,
    *,
    coupling: str = "independent",
    t_min: float = 0.0,
    t_max: float = 1.0,
):
    """Conditional flow matching (Lipman et al., 2023; Liu et al., 2023), Section 5.2.

    On the linear path x_t = (1 - t) x_0 + t eps (the default) the target velocity is
    u = eps - x_0; the model must declare ``prediction = "velocity"``. It is
    :func:`diffusion_loss` with that target and no weighting. The coupling says how data
    and noise are paired: ``"independent"`` draws fresh noise for every data point,
    ``"ot"`` re-pairs them by minibatch optimal transport (Section 5.5), which
    straightens the paths, and ``"pairs"`` takes batches of stored pairs,
    shape (B, 2, ...) = (x_0, eps), such as those of :func:`dmlib.flow.reflow_pairs`
    (reflow, Section 5.4).
    """
    from .flow import ot_pairing
    from .schedules import FlowSchedule

    _check.choice(coupling, "coupling", COUPLINGS)
    return diffusion_loss(
        schedule if schedule is not None else FlowSchedule(),
        t_min=t_min,
        t_max=t_max,
        coupling=ot_pairing if coupling == "ot" else None,
        paired=coupling == "pairs",
    )


def classifier_loss(schedule: Schedule, *, t_min: float = 0.0, t_max: float = 1.0):
    """Cross-entropy of a noisy classifier on x_t ~ q(x_t | x_0) at random t
    (Section 6.3).

    Returns ``loss(classifier, x0, y, generator)`` for :func:`dmlib.train.train`; ``y``
    is required.
    """
    _check.schedule(schedule)

    def loss(
        classifier, x0: torch.Tensor, y=None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if y is None:
            raise ValueError("classifier_loss needs labels y")
        b = x0.shape[0]
        u = noise.rand((b,), generator=generator, device=x0.device)  # U(0, 1)
        t = t_min + (t_max - t_min) * u
        eps = noise.randn_like(x0, generator=generator)
        a, s = schedule._alpha_sigma(t)
        x_t = expand_to(a, x0) * x0 + expand_to(s, x0) * eps
        return torch.nn.functional.cross_entropy(classifier(x_t, t), y)

    return loss


def autoencoder_loss(kl_weight: float = 1e-3):
    """The loss of a KL-regularised autoencoder (Section 11.1), per pixel:

        L = E[ ||x - x_hat||^2 / D ] + kl_weight * E[ KL(q(z | x) || N(0, I)) / D ],

    with D the number of pixels and x_hat decoded from one reparametrised draw of
    q(z | x). It is the negative evidence lower bound of a decoder
    p(x | z) = N(x_hat, (kl_weight / 2) I), divided by D / kl_weight, up to a constant:
    a smaller ``kl_weight`` trusts the pixels more and the prior less. Returns
    ``loss(model, x0, y=None, generator=None)`` for :func:`dmlib.train.train`.
    """
    from .nn.autoencoder import kl_to_standard_normal

    if (isinstance(kl_weight, bool) or not isinstance(kl_weight, (int, float))
            or not kl_weight >= 0):
        raise ValueError(f"kl_weight must be a number >= 0, got {kl_weight!r}")
    kl_weight = float(kl_weight)

    def loss(model, x0: torch.Tensor, y=None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        x_hat, mean, logvar = model(x0, generator)
        pixels = x0[0].numel()
        recon = ((x_hat - x0) ** 2).flatten(1).mean(1)  # (B,)
        return (recon + kl_weight * kl_to_standard_normal(mean, logvar) / pixels).mean()

    loss.kl_weight = kl_weight
    return loss

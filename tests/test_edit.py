"""dmlib.edit: the applications of Chapter 13, checked against exact answers on Gaussian data
(the exact denoiser of toy.GaussianMixture), where the conditional law of the unknown part of
a point given the known part is known in closed form."""

import math

import pytest
import torch

from dmlib import edit, samplers, toy
from dmlib.nn.unet import UNet
from dmlib.schedules import get_schedule

SCHEDULE = get_schedule("cosine")
RHO = 0.8  # correlation of the two coordinates


def gaussian(rho=RHO):
    return toy.GaussianMixture(torch.zeros(1, 2), covs=torch.tensor([[[1.0, rho], [rho, 1.0]]]))


def draws(gm, n, seed=0):
    out = gm.sample(n, generator=torch.Generator().manual_seed(seed))
    return (out[0] if isinstance(out, tuple) else out).float()


# -- DDIM inversion ---------------------------------------------------------------------------
def _reconstruction_error(model, x0, n):
    x_T = edit.ddim_invert(model, x0, SCHEDULE, n_steps=n)
    rec = samplers.sample(model, x_T, SCHEDULE, method="ddim", times=edit.inversion_grid(n).flip(0))
    return float((rec - x0).abs().max())


def test_inversion_then_reconstruction_converges_at_first_order():
    gm = gaussian()
    model = gm.denoiser(SCHEDULE, "eps")
    x0 = draws(gm, 8)
    errors = [_reconstruction_error(model, x0, n) for n in (25, 50, 100, 200)]
    assert errors[-1] < 0.03
    for coarse, fine in zip(errors, errors[1:]):  # halving the step halves the error
        assert 1.7 < coarse / fine < 2.3, errors


def test_inverted_noise_is_gaussian():
    """The probability-flow ODE maps the data law to N(0, I) at t = 1 (up to alpha_1 ~ 0)."""
    gm = gaussian()
    x_T = edit.ddim_invert(gm.denoiser(SCHEDULE, "eps"), draws(gm, 4000), SCHEDULE, n_steps=100)
    cov = torch.cov(x_T.T.double())
    torch.testing.assert_close(cov, torch.eye(2, dtype=torch.float64), atol=0.08, rtol=0)


def test_inversion_trajectory_and_grid():
    gm = gaussian()
    x0 = draws(gm, 3)
    x_T, traj = edit.ddim_invert(gm.denoiser(SCHEDULE, "x0"), x0, SCHEDULE, n_steps=5, return_trajectory=True)
    assert traj.shape == (6, 3, 2) and torch.equal(traj[0], x0) and torch.equal(traj[-1], x_T)
    grid = edit.inversion_grid(5)
    assert grid[0] == pytest.approx(edit.T_MIN) and grid[-1] == 1.0 and bool((grid.diff() > 0).all())
    with pytest.raises(ValueError, match="t_min"):
        edit.inversion_grid(5, t_min=0.0)


# -- slerp ------------------------------------------------------------------------------------
def test_slerp_ends_norm_and_shape():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 1, 28, 28, generator=g), torch.randn(3, 1, 28, 28, generator=g)
    torch.testing.assert_close(edit.slerp(a, b, 0.0), a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(edit.slerp(a, b, 1.0), b, rtol=1e-5, atol=1e-5)
    path = edit.slerp(a, b, torch.linspace(0, 1, 7))
    assert path.shape == (7, 3, 1, 28, 28)
    norms = path.flatten(2).norm(dim=2)  # (7, 3): close to sqrt(784) = 28 all along
    assert float((norms / 28 - 1).abs().max()) < 0.1
    line = 0.5 * (a + b)
    assert float(line.flatten(1).norm(dim=1).mean()) < 0.75 * 28  # the straight line dips to ~28 / sqrt(2)


def test_slerp_on_orthogonal_unit_vectors_is_the_arc():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    mid = edit.slerp(a, b, 0.5)
    torch.testing.assert_close(mid, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)]]))
    torch.testing.assert_close(edit.slerp(a, a, 0.3), a)  # parallel: no division by sin(0)
    with pytest.raises(ValueError, match="alpha"):
        edit.slerp(a, b, 1.5)


# -- SDEdit -----------------------------------------------------------------------------------
def test_sdedit_strength_zero_is_identity_and_one_forgets_the_input():
    gm = gaussian()
    model = gm.denoiser(SCHEDULE, "eps")
    x = torch.full((3000, 2), 2.5)  # an unlikely point under N(0, Sigma)
    torch.testing.assert_close(edit.sdedit(model, x, 0.0, SCHEDULE), x)
    g = torch.Generator().manual_seed(1)
    full = edit.sdedit(model, x, 1.0, SCHEDULE, n_steps=50, generator=g)
    assert float(full.mean(0).abs().max()) < 0.08  # a fresh sample of N(0, Sigma)
    weak = edit.sdedit(model, x, 0.2, SCHEDULE, n_steps=50, generator=g)
    strong = edit.sdedit(model, x, 0.7, SCHEDULE, n_steps=50, generator=g)
    d_weak, d_strong = (float((out - x).norm(dim=1).mean()) for out in (weak, strong))
    assert d_weak < 0.5 * d_strong  # faithfulness falls as the strength grows


def test_sdedit_posterior_is_exact_for_gaussian_data():
    """For Gaussian data and the exact model, SDEdit with DDPM steps samples p(x_0 | x_t0):
    its mean is the posterior mean E[x_0 | x_t0] averaged over the noise, which for
    x ~ N(0, Sigma) is alpha Sigma (alpha^2 Sigma + sigma^2 I)^-1 alpha x."""
    gm = gaussian()
    model = gm.denoiser(SCHEDULE, "x0")
    x = torch.tensor([[1.5, -0.5]]).repeat(4000, 1)
    t0 = 0.5
    out = edit.sdedit(model, x, t0, SCHEDULE, n_steps=100, generator=torch.Generator().manual_seed(2))
    a, s = (float(v) for v in SCHEDULE._alpha_sigma(torch.tensor([t0], dtype=torch.float64)))
    sigma = gm.covs[0]
    gain = a * sigma @ torch.linalg.inv(a**2 * sigma + s**2 * torch.eye(2, dtype=torch.float64))
    expected = (gain @ (a * x[0].double())).float()
    torch.testing.assert_close(out.mean(0), expected, atol=0.04, rtol=0)


# -- inpainting -------------------------------------------------------------------------------
def _known(c, n):
    return torch.tensor([[c, 0.0]]).repeat(n, 1), torch.tensor([[1.0, 0.0]]).repeat(n, 1)


def test_replacement_is_exact_when_the_parts_are_independent():
    gm = gaussian(rho=0.0)
    x_known, mask = _known(1.0, 3000)
    out = edit.inpaint_replace(gm.denoiser(SCHEDULE, "eps"), x_known, mask, SCHEDULE, n_steps=50,
                               generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0], x_known[:, 0])  # the known part is kept exactly
    assert abs(float(out[:, 1].mean())) < 0.06 and abs(float(out[:, 1].var()) - 1.0) < 0.08


def test_replacement_lags_the_context_and_resampling_repairs_it():
    """x2 | x1 = c is N(rho c, 1 - rho^2). Replacement alone pulls the mean only part of the
    way (the unknown coordinate sees the known one a step late); resampling (r = 5) brings
    it close. The numbers Section 13.4 reports."""
    gm = gaussian()
    model = gm.denoiser(SCHEDULE, "eps")
    x_known, mask = _known(1.0, 3000)
    means = {}
    for r in (1, 5):
        out = edit.inpaint_replace(model, x_known, mask, SCHEDULE, n_steps=50, resample=r,
                                   generator=torch.Generator().manual_seed(1))
        means[r] = float(out[:, 1].mean())
    assert abs(means[1] - RHO) > 0.2  # biased: about 0.47 instead of 0.8
    assert abs(means[5] - RHO) < 0.12 < abs(means[1] - RHO) - 0.1


def test_guided_inpainting_follows_the_context():
    gm = gaussian()
    model = gm.denoiser(SCHEDULE, "eps")
    x_known, mask = _known(1.0, 2000)
    out = edit.inpaint_guided(model, x_known, mask, SCHEDULE, n_steps=50, scale=0.1,
                              generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[:, 0], x_known[:, 0])
    assert abs(float(out[:, 1].mean()) - RHO) < 0.15


def test_edits_run_on_a_unet_with_labels_and_check_their_inputs():
    torch.manual_seed(0)
    net = UNet(channels=8, groups=4, heads=2, n_classes=10).eval()
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    mask = torch.zeros(1, 1, 28, 28)
    mask[..., :14] = 1
    y = torch.tensor([3, 7])
    g = torch.Generator().manual_seed(0)
    assert edit.inpaint_replace(net, x, mask, SCHEDULE, n_steps=3, resample=2, y=y, generator=g).shape == x.shape
    assert edit.inpaint_guided(net, x, mask, SCHEDULE, n_steps=3, y=y, generator=g).shape == x.shape
    assert edit.sdedit(net, x, 0.5, SCHEDULE, n_steps=3, y=y, generator=g).shape == x.shape
    assert edit.ddim_invert(net, x, SCHEDULE, n_steps=3, y=y).shape == x.shape
    with pytest.raises(ValueError, match="mask must hold 0"):
        edit.inpaint_replace(net, x, mask * 0.5, SCHEDULE)
    with pytest.raises(ValueError, match="mask must have the shape"):
        edit.inpaint_replace(net, x, torch.ones(2, 1, 14, 14), SCHEDULE)
    with pytest.raises(ValueError, match="strength"):
        edit.sdedit(net, x, 1.5, SCHEDULE)
    with pytest.raises(ValueError, match="resample"):
        edit.inpaint_replace(net, x, mask, SCHEDULE, resample=0)


def test_inversion_interpolation_and_sdedit_run_on_a_latent_model():
    """Chapter 13's claim for latent models (Chapter 12): inversion, slerp and SDEdit take a
    LatentModel unchanged and work in its latent space (encode first, decode the result)."""
    from dmlib.latent import LatentModel
    from dmlib.nn.autoencoder import Autoencoder, AutoencoderConfig
    from dmlib.nn.dit import DiT, DiTConfig

    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(channels=8, mults=(1, 2, 2), groups=4)).eval()
    den = DiT(DiTConfig(width=32, depth=1, heads=2, in_channels=4, input_size=7, n_classes=10))
    with torch.no_grad():  # off the zero initialisation, so the denoiser is not trivially 0
        for p in den.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    model = LatentModel(den.eval(), ae, scale=1.5, shift=0.1)
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    y = torch.tensor([1, 4, 7])
    with torch.no_grad():
        z = model.encode(x)
    assert z.shape == (3, *model.latent_shape) == (3, 4, 7, 7)
    g = torch.Generator().manual_seed(0)

    torch.testing.assert_close(edit.sdedit(model, z, 0.0, SCHEDULE), z, rtol=0, atol=0)
    z_edit = edit.sdedit(model, z, 0.6, SCHEDULE, n_steps=3, y=y, generator=g)
    z_T = edit.ddim_invert(model, z, SCHEDULE, n_steps=3, y=y)
    path = edit.slerp(z_T[:1], z_T[1:2], torch.linspace(0, 1, 4))
    for out in (z_edit, z_T):
        assert out.shape == z.shape and bool(torch.isfinite(out).all())
    assert path.shape == (4, 1, 4, 7, 7) and bool(torch.isfinite(path).all())
    torch.testing.assert_close(path[0], z_T[:1], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        decoded = model.decode(z_edit)
    assert decoded.shape == x.shape and bool(torch.isfinite(decoded).all())


def test_the_convergence_check_catches_a_planted_inversion_bug(monkeypatch):
    """Planted bug: the inversion's DDIM step evaluated with its two times swapped (it then
    steps backwards). The reconstruction check of the first test must fail on it."""
    from dmlib import samplers as smp

    real = smp._ddim
    monkeypatch.setattr(edit, "_ddim", lambda x, x0, t, s, sch, *a: real(x, x0, s, t, sch, *a))
    gm = gaussian()
    error = _reconstruction_error(gm.denoiser(SCHEDULE, "eps"), draws(gm, 8), 100)
    assert error > 0.03

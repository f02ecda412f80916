"""dmlib.nn.autoencoder and losses.autoencoder_loss: the VAE of Chapter 11 -- shapes, the KL
term in closed form, the loss as a scaled negative ELBO, determinism, errors."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from dmlib import losses
from dmlib.nn.autoencoder import Autoencoder, AutoencoderConfig, kl_to_standard_normal

SMALL = dict(channels=8, groups=4)  # widths 8, 16, 16 at 28, 14, 7


def images(b, seed=1):
    return torch.randn(b, 1, 28, 28, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


@pytest.mark.parametrize("b", [1, 3, 5])
def test_shapes_for_odd_batches(b):
    ae = Autoencoder(**SMALL).eval()
    x = images(b)
    mean, logvar = ae.encode(x)
    assert mean.shape == logvar.shape == (b, 4, 7, 7) == (b, *ae.latent_shape)
    assert ae.decode(mean).shape == x.shape
    x_hat, m2, lv2 = ae(x, torch.Generator().manual_seed(0))
    assert x_hat.shape == x.shape
    torch.testing.assert_close(m2, mean)
    torch.testing.assert_close(lv2, logvar)


@pytest.mark.parametrize("mults,size", [((1, 2), 14), ((1, 2, 2), 7), ((1, 1, 2), 7)])
def test_latent_resolution_follows_the_levels(mults, size):
    ae = Autoencoder(channels=8, groups=4, mults=mults, latent_channels=3)
    assert ae.latent_shape == (3, size, size)
    assert ae.encode(images(2))[0].shape == (2, 3, size, size)
    assert ae.decode(torch.zeros(2, 3, size, size)).shape == (2, 1, 28, 28)


def test_the_decoder_sees_only_the_latent():
    """No skip connections: two images with the same latent decode to the same image."""
    ae = Autoencoder(**SMALL).eval()
    z = torch.randn(1, *ae.latent_shape)
    torch.testing.assert_close(ae.decode(z), ae.decode(z.clone()))
    # the encoder's output fixes the reconstruction: decode(encode(x)) is a function of the mean
    x = images(2)
    mean = ae.encode(x)[0]
    torch.testing.assert_close(ae.decode(mean), ae.decode(ae.encode(x.clone())[0]))


def test_reparametrised_draw_is_seeded_and_has_the_posterior_spread():
    ae = Autoencoder(**SMALL).eval()
    x = images(1)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(ae(x, g())[0], ae(x, g())[0], rtol=0, atol=0)
        assert not torch.equal(ae(x, g())[0], ae(x, torch.Generator().manual_seed(6))[0])


def test_kl_closed_form_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(4, 4, 7, 7, generator=g), torch.randn(4, 4, 7, 7, generator=g)
    ref = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(kl_to_standard_normal(mean, logvar), ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(kl_to_standard_normal(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


def _planted_kl(mean, logvar):  # a sign slip: + logvar instead of - logvar
    return 0.5 * (mean**2 + logvar.exp() - 1.0 + logvar).flatten(1).sum(1)


def test_kl_check_catches_a_planted_sign_error():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    ref = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    assert not torch.allclose(_planted_kl(mean, logvar), ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("kl_weight", [1e-3, 0.1])
def test_loss_is_the_scaled_negative_elbo(kl_weight):
    """With a decoder N(x_hat, (kl_weight / 2) I), -ELBO (one draw) equals
    loss * D / kl_weight + (D / 2) log(pi kl_weight): the docstring's claim, checked with
    torch.distributions on the same draw."""
    ae = Autoencoder(**SMALL)
    with torch.no_grad():  # live weights, so the latent is not trivially N(0, 1)
        for p in ae.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    x = images(3)
    loss = losses.autoencoder_loss(kl_weight)(ae, x, None, torch.Generator().manual_seed(7))
    x_hat, mean, logvar = ae(x, torch.Generator().manual_seed(7))
    s = math.sqrt(kl_weight / 2)
    log_lik = Normal(x_hat, s).log_prob(x).flatten(1).sum(1)
    kl = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)
    neg_elbo = (kl - log_lik).mean()
    d = x[0].numel()
    torch.testing.assert_close(loss * d / kl_weight + d / 2 * math.log(math.pi * kl_weight),
                               neg_elbo, rtol=1e-4, atol=1e-3)


def test_zero_kl_weight_is_plain_reconstruction():
    ae = Autoencoder(**SMALL)
    x = images(2)
    loss = losses.autoencoder_loss(0.0)(ae, x, None, torch.Generator().manual_seed(1))
    x_hat = ae(x, torch.Generator().manual_seed(1))[0]
    torch.testing.assert_close(loss, ((x_hat - x) ** 2).mean())


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    ae = Autoencoder(**SMALL)
    coarse = torch.randn(16, 1, 7, 7, generator=torch.Generator().manual_seed(2))
    x = torch.nn.functional.interpolate(coarse, scale_factor=4, mode="bilinear").tanh()  # smooth images
    loss = losses.autoencoder_loss(1e-3)
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    first = None
    for i in range(30):
        value = loss(ae, x, None, torch.Generator().manual_seed(i))
        first = first if first is not None else float(value.detach())
        opt.zero_grad()
        value.backward()
        opt.step()
    assert float(value.detach()) < 0.6 * first


def test_config_round_trip_and_unknown_fields():
    cfg = AutoencoderConfig(channels=16, mults=(1, 2))
    assert AutoencoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown AutoencoderConfig fields.*'width'"):
        AutoencoderConfig.from_dict({"width": 3})


@pytest.mark.parametrize("kwargs,match", [
    (dict(channels=0), "config.channels"),
    (dict(channels=12, groups=8), "multiple of config.groups"),
    (dict(mults=()), "config.mults"),
    (dict(image_size=30, mults=(1, 2, 2)), "cannot be halved"),
])
def test_bad_configs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Autoencoder(**{**SMALL, **kwargs})


def test_wrong_input_shapes_name_the_argument():
    ae = Autoencoder(**SMALL)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 28, 28\)"):
        ae.encode(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"z must have shape \(B, 4, 7, 7\)"):
        ae.decode(torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match="kl_weight"):
        losses.autoencoder_loss(-1.0)

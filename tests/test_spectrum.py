"""dmlib.spectrum: radially averaged power spectra (the white-noise and sinusoid identities are
in test_math_identities)."""

import math

import pytest
import torch

from dmlib import spectrum


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape, n_bins", [((4, 1, 28, 28), 14), ((3, 32, 32), 16), ((2, 3, 16, 16), 8),
                                           ((2, 16, 32), 8)])
def test_shapes_and_frequency_axis(shape, n_bins):
    freqs, power = spectrum.radial_power_spectrum(torch.randn(shape, generator=_gen(0)))
    assert freqs.shape == power.shape == (n_bins,)  # default: min(H, W) // 2 bins
    assert freqs.dtype == power.dtype == torch.float32
    # default bins are the integer radii k / N, k = 1 .. N / 2 (N = min(H, W)), in cycles per pixel
    torch.testing.assert_close(freqs, torch.arange(1, n_bins + 1) / (2 * n_bins))
    assert (power >= 0).all()


def test_custom_bins():
    freqs, power = spectrum.radial_power_spectrum(torch.randn(2, 32, 32, generator=_gen(0)), n_bins=5)
    assert freqs.shape == power.shape == (5,)


def test_channels_are_pooled_like_batch():
    x = torch.randn(3, 2, 16, 16, generator=_gen(1))
    _, p4 = spectrum.radial_power_spectrum(x)
    _, p3 = spectrum.radial_power_spectrum(x.flatten(0, 1))
    torch.testing.assert_close(p4, p3, rtol=0, atol=0)


def test_batch_average():
    a, b = torch.randn(2, 16, 16, generator=_gen(2)), torch.randn(6, 16, 16, generator=_gen(3))
    _, pa = spectrum.radial_power_spectrum(a)
    _, pb = spectrum.radial_power_spectrum(b)
    _, pab = spectrum.radial_power_spectrum(torch.cat([a, b]))
    torch.testing.assert_close(pab, (2 * pa + 6 * pb) / 8, rtol=1e-5, atol=1e-7)


def test_quadratic_in_amplitude():
    x = torch.randn(2, 1, 16, 16, generator=_gen(4))
    _, p = spectrum.radial_power_spectrum(x)
    _, p3 = spectrum.radial_power_spectrum(3.0 * x)
    torch.testing.assert_close(p3, 9.0 * p, rtol=1e-5, atol=1e-6)


def test_shift_invariant():
    # power ignores phase: a circular shift of the image leaves the spectrum unchanged
    x = torch.randn(2, 16, 16, generator=_gen(5))
    _, p = spectrum.radial_power_spectrum(x)
    _, ps = spectrum.radial_power_spectrum(torch.roll(x, shifts=(3, -5), dims=(1, 2)))
    torch.testing.assert_close(ps, p, rtol=1e-5, atol=1e-6)


def test_constant_image_has_no_power_at_any_frequency():
    # the mean is the zero frequency, which is not a bin; a constant image has nothing else
    _, p = spectrum.radial_power_spectrum(torch.full((1, 16, 16), 0.5))
    assert (p.abs() < 1e-12).all()
    _, p = spectrum.radial_power_spectrum(torch.full((1, 16, 16), 0.5), n_bins=4)
    assert (p.abs() < 1e-12).all()


def test_smooth_images_concentrate_power_at_low_frequencies():
    # blurred noise (3x3 box filter, applied twice) falls off with frequency: the spectral view
    # of Section 1.8, where natural images put most power at low f
    x = torch.randn(8, 1, 32, 32, generator=_gen(6))
    k = torch.ones(1, 1, 3, 3) / 9
    for _ in range(2):
        x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular"), k)
    _, p = spectrum.radial_power_spectrum(x)
    assert p[0] > 10 * p[len(p) // 2]


def test_noise_drowns_high_frequencies_first():
    # alpha^2 P_img(f) + sigma^2 vs sigma^2: the signal stays above the noise floor only at low f
    img = torch.zeros(1, 1, 32, 32)
    n = torch.arange(32, dtype=torch.float32)
    for k in (1, 5, 11):  # odd k: inside bins 0, 2 and 5 of 8 (even k / 32 would sit on bin edges)
        img += (2.0 / k) * torch.cos(2 * math.pi * k * n / 32)[None, :]  # power decreasing in f
    noise = 0.05 * torch.randn(64, 1, 32, 32, generator=_gen(7))
    _, p_sig = spectrum.radial_power_spectrum(img, n_bins=8)
    _, p_noisy = spectrum.radial_power_spectrum(img + noise, n_bins=8)
    _, p_noise = spectrum.radial_power_spectrum(noise, n_bins=8)
    torch.testing.assert_close(p_noisy, p_sig + p_noise, rtol=0.1, atol=5e-4)  # independent: powers add
    ratio = p_sig / p_noise  # per-bin signal-to-noise ratio
    assert ratio[0] > ratio[2] > ratio[5] > 1  # the highest frequency is drowned first
    assert p_sig[[1, 3, 4, 6, 7]].max() < 1e-6 * p_sig.max()  # bins without a sinusoid: no signal

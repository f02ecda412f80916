"""The spectral view of the forward process: which frequencies noise drowns first.

White noise has the same power at every spatial frequency, while natural images
(and digits) put most of their power at low frequencies. Adding noise therefore hides
the high frequencies first: at time t the signal's power alpha_t^2 P(xi) falls below the
noise floor sigma_t^2 (per pixel) at ever lower spatial frequencies xi. Section 1.8.
"""

from __future__ import annotations

import torch

from . import _check


def radial_power_spectrum(
    images: torch.Tensor, n_bins: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power spectrum of a batch of images, averaged over the batch.

        P(xi) = mean over frequency vectors xi_vec with |xi_vec| in bin xi
                of |FFT2(x)(xi_vec)|^2 / d,

    with d = H W the number of pixels. With this normalisation white noise of variance
    sigma^2 has P(xi) = sigma^2 at every xi. ``images`` has shape (B, C, H, W) or
    (B, H, W). By default each bin is one integer radius: frequencies |xi_vec| rounded
    to the nearest multiple of 1/min(H, W) give the bins xi = 1/min(H, W),
    2/min(H, W), ..., 1/2, and the zero frequency (the image mean) is left out. With
    ``n_bins`` the range (0, 1/2] is cut into that many equal bins instead. Returns
    ``(freqs, power)``, each of shape (n_bins,), in cycles per pixel. Section 1.8.
    """
    _check.tensor(images, "images", min_dim=3)
    if images.dim() == 4:
        images = images.flatten(0, 1)  # (B*C, H, W)
    if images.dim() != 3:
        raise ValueError(
            "images must have shape (B, C, H, W) or (B, H, W), "
            f"got {tuple(images.shape)}"
        )
    H, W = images.shape[-2:]
    N = min(H, W)
    # a diagnostic on the CPU (no float64 on MPS)
    x = images.detach().to("cpu", torch.float64)
    power = ((torch.fft.fft2(x).abs() ** 2).mean(0) / (H * W)).flatten()  # (H*W,)
    fy = torch.fft.fftfreq(H, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(W, dtype=torch.float64)[None, :]
    radius = torch.sqrt(fx**2 + fy**2).flatten()  # cycles per pixel
    if n_bins is None:
        idx = torch.round(radius * N).long() - 1  # bin k - 1 holds radius k / N
        n_bins = N // 2
        centers = torch.arange(1, n_bins + 1, dtype=torch.float64) / N
    else:
        n_bins = _check.positive_int(n_bins, "n_bins")
        edges = torch.linspace(0, 0.5, n_bins + 1, dtype=torch.float64)
        idx = torch.bucketize(radius, edges[1:-1], right=True)
        idx[radius == 0] = -1  # the mean is not a frequency
        centers = 0.5 * (edges[1:] + edges[:-1])
    keep = (idx >= 0) & (idx < n_bins)
    sums = torch.zeros(n_bins, dtype=torch.float64).index_add_(
        0, idx[keep], power[keep]
    )
    counts = torch.zeros(n_bins, dtype=torch.float64).index_add_(
        0, idx[keep], torch.ones_like(power[keep])
    )
    return centers.float(), (sums / counts.clamp_min(1)).float()

"""dmlib.nn.dit: the diffusion transformer of Chapter 12 -- shapes, the denoiser protocol,
adaLN-Zero's identity start, patch bookkeeping, positions, errors."""

import pytest
import torch

from dmlib import samplers
from dmlib.guidance import ClassifierFreeGuidance
from dmlib.nn.dit import DiT, DiTBlock, DiTConfig, sincos_positions
from dmlib.schedules import get_schedule

SMALL = dict(width=32, depth=2, heads=2)


def perturb(model, seed=0, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def latents(b, shape=(4, 7, 7), seed=1):
    return torch.randn(b, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("b", [1, 3, 5])
@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
def test_output_shape_equals_input_shape(b, conditional):
    model = perturb(DiT(**SMALL, n_classes=3 if conditional else None)).eval()
    x = latents(b)
    y = torch.arange(b) % 4 if conditional else None  # 3 is the null class
    out = model(x, torch.linspace(0.1, 0.9, b), y)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().max() > 0


@pytest.mark.parametrize("patch,size,channels", [(1, 7, 4), (2, 28, 1), (4, 28, 1), (7, 28, 1)])
def test_patch_sizes_on_latents_and_pixels(patch, size, channels):
    model = perturb(DiT(**SMALL, patch=patch, input_size=size, in_channels=channels)).eval()
    x = latents(2, (channels, size, size))
    assert model(x, 0.5).shape == x.shape
    assert model.pos.shape == ((size // patch) ** 2, SMALL["width"])


def test_null_class_equals_no_label_and_labels_matter():
    model = perturb(DiT(**SMALL, n_classes=3)).eval()
    x, t = latents(3), torch.tensor([0.2, 0.5, 0.8])
    none = model(x, t)
    torch.testing.assert_close(model(x, t, torch.full((3,), 3)), none, rtol=0, atol=0)
    assert not torch.allclose(model(x, t, torch.zeros(3, dtype=torch.long)), none)


def test_untrained_network_outputs_zero_and_blocks_start_as_identity():
    model = DiT(**SMALL, n_classes=10)
    x = latents(2)
    assert torch.equal(model(x, 0.3, torch.tensor([1, 2])), torch.zeros_like(x))
    block = DiTBlock(32, 2, 4.0)
    h, c = torch.randn(2, 49, 32), torch.randn(2, 32)
    torch.testing.assert_close(block(h, c), h, rtol=0, atol=0)  # adaLN-Zero: gates start at 0
    with torch.no_grad():
        block.ada.bias.normal_()
    assert not torch.allclose(block(h, c), h)


def test_each_output_patch_depends_on_its_own_input_patch_only_at_initialisation():
    """With the gates shut (adaLN-Zero) no token sees another, so the output patch at
    (r, c) depends on the input patch at (r, c) alone: patchify and unpatchify agree on
    where each patch lives. A transposed unpatchify would fail this."""
    model = DiT(**SMALL, patch=4, input_size=28, in_channels=1)
    with torch.no_grad():
        model.out.weight.normal_(generator=torch.Generator().manual_seed(0))
    x = latents(1, (1, 28, 28)).requires_grad_(True)
    out = model(x, 0.5)
    out[0, 0, 8:12, 20:24].sum().backward()  # the patch in row 2, column 5
    grad = x.grad[0, 0].abs()
    assert grad[8:12, 20:24].sum() > 0
    grad[8:12, 20:24] = 0
    assert grad.sum() == 0


def test_attention_mixes_tokens_once_the_gates_open():
    model = perturb(DiT(**SMALL, patch=4, input_size=28, in_channels=1))
    x = latents(1, (1, 28, 28)).requires_grad_(True)
    model(x, 0.5)[0, 0, 8:12, 20:24].sum().backward()
    assert x.grad[0, 0, :4, :4].abs().sum() > 0


def test_sincos_positions():
    pos = sincos_positions(7, 16)
    assert pos.shape == (49, 16) and pos.abs().max() <= 1
    assert torch.unique(pos, dim=0).shape[0] == 49  # every patch has its own code
    grid = pos.reshape(7, 7, 16)
    # the first half encodes the row, the second the column
    torch.testing.assert_close(grid[:, 0, :8], grid[:, 3, :8])
    torch.testing.assert_close(grid[0, :, 8:], grid[4, :, 8:])
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_positions(7, 6)


def test_samplers_and_guidance_run_on_it():
    model = perturb(DiT(**SMALL, n_classes=10)).eval()
    x_T = latents(3)
    y = torch.tensor([0, 1, 2])
    guided = ClassifierFreeGuidance(model, 3.0)
    out = samplers.sample(guided, x_T, get_schedule("cosine"), method="ddim", n_steps=3, y=y)
    assert out.shape == x_T.shape and torch.isfinite(out).all()


def test_config_round_trip_and_errors():
    cfg = DiTConfig(width=64, depth=3, n_classes=10)
    assert DiTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown DiTConfig fields"):
        DiTConfig.from_dict({"channels": 3})
    with pytest.raises(ValueError, match="multiple of config.heads"):
        DiT(width=30, heads=4)
    with pytest.raises(ValueError, match="not a multiple of config.patch"):
        DiT(**SMALL, patch=2)  # 7 x 7 latents
    with pytest.raises(ValueError, match="config.prediction"):
        DiT(**SMALL, prediction="noise")
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 4, 7, 7\)"):
        DiT(**SMALL)(torch.zeros(2, 1, 28, 28), 0.5)

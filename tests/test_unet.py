"""dmlib.nn.unet: the U-Net of Chapter 7 -- shapes, conditioning, zero start, sizes, errors.

Small configurations (8 channels) keep the file to a few seconds on one core. Where a check
would pass trivially on the zero-initialised network (every output 0), the weights are first
perturbed by :func:`perturb`.
"""

import json

import pytest
import torch
import torch.nn.functional as F

from dmlib.nn.unet import ResBlock, SelfAttention, UNet, UNetConfig, parameter_count

SMALL = dict(channels=8, groups=4, heads=2)  # widths 8, 16, 16 at 28, 14, 7


def perturb(model, seed=0, scale=0.1):
    """Add small Gaussian noise to every parameter, so the zero-initialised layers (last
    convolution, each ResBlock's second convolution, each attention projection) are live."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def images(b, seed=1):
    return torch.randn(b, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


# -- shapes and the denoiser protocol ---------------------------------------------------------------------
@pytest.mark.parametrize("b", [1, 3, 5])
@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("t_kind", ["float", "tensor"])
def test_output_shape_equals_input_shape(b, conditional, t_kind):
    model = perturb(UNet(**SMALL, n_classes=3 if conditional else None)).eval()
    x = images(b)
    t = 0.3 if t_kind == "float" else torch.linspace(0.1, 0.9, b)
    y = torch.arange(b) % 4 if conditional else None  # 3 is the null class
    out = model(x, t, y)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all() and out.abs().max() > 0


def test_float_t_equals_constant_tensor_t():
    model = perturb(UNet(**SMALL)).eval()
    x = images(3)
    torch.testing.assert_close(model(x, 0.4), model(x, torch.full((3,), 0.4)), rtol=0, atol=0)
    torch.testing.assert_close(model(x, torch.tensor([0.4])), model(x, 0.4), rtol=0, atol=0)  # (1,) broadcasts


def test_null_class_equals_no_label_and_labels_matter():
    model = perturb(UNet(**SMALL, n_classes=3)).eval()
    x, t = images(3), torch.tensor([0.2, 0.5, 0.8])
    none = model(x, t)
    torch.testing.assert_close(model(x, t, torch.full((3,), 3)), none, rtol=0, atol=0)
    torch.testing.assert_close(model(x, t, 3), none, rtol=0, atol=0)  # one label for the batch
    assert not torch.allclose(model(x, t, torch.zeros(3, dtype=torch.long)), none)
    assert not torch.allclose(model(x, t, torch.zeros(3, dtype=torch.long)),
                              model(x, t, torch.ones(3, dtype=torch.long)))


def test_time_matters():
    model = perturb(UNet(**SMALL)).eval()
    x = images(2)
    assert not torch.allclose(model(x, 0.1), model(x, 0.9))


def test_samples_are_independent_of_the_batch():
    # GroupNorm and attention act per sample: a sample's output must not depend on the
    # others (a reshape that mixed the batch in attention would break this)
    model = perturb(UNet(**SMALL, n_classes=3)).eval()
    x, t, y = images(4), torch.tensor([0.1, 0.4, 0.6, 0.9]), torch.tensor([0, 1, 2, 3])
    whole = model(x, t, y)
    for i in range(4):
        torch.testing.assert_close(model(x[i:i + 1], t[i:i + 1], y[i:i + 1]), whole[i:i + 1], rtol=1e-4, atol=1e-5)


def test_protocol_attributes():
    model = UNet(**SMALL, prediction="v", n_classes=10)
    assert model.prediction == "v" and model.n_classes == 10
    assert model.config == UNetConfig(**SMALL, prediction="v", n_classes=10)
    assert UNet(UNetConfig(**SMALL)).config == UNetConfig(**SMALL)


# -- the zero start -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("conditional", [False, True])
def test_untrained_net_outputs_exactly_zero(conditional):
    model = UNet(**SMALL, n_classes=10 if conditional else None)
    x = images(3)
    y = torch.tensor([0, 5, 10]) if conditional else None
    out = model(x, torch.rand(3), y)
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(x))


# -- the blocks ---------------------------------------------------------------------------------------------
def test_resblock_shapes_and_identity_start():
    # ResBlock: (B, c_in, H, W), (B, E) -> (B, c_out, H, W)
    block = ResBlock(8, 16, emb_dim=32, groups=4, dropout=0.0)
    x, emb = torch.randn(3, 8, 14, 14), torch.randn(3, 32)
    assert block(x, emb).shape == (3, 16, 14, 14)
    # with c_in = c_out the skip is the identity and conv2 starts at zero: the block is the identity
    same = ResBlock(16, 16, emb_dim=32, groups=4, dropout=0.0)
    x = torch.randn(3, 16, 7, 7)
    torch.testing.assert_close(same(x, emb), x, rtol=0, atol=0)
    perturb(same)
    assert not torch.allclose(same(x, emb), x)
    assert not torch.allclose(same(x, emb), same(x, emb.flip(0)))  # the embedding acts (FiLM)


def test_resblock_matches_its_formula():
    # h = conv1(silu(norm1(x))); FiLM: norm2(h) * (1 + scale) + shift with (scale, shift) from
    # silu(emb); out = skip(x) + conv2(silu(h)) (dropout 0)
    block = perturb(ResBlock(8, 16, emb_dim=32, groups=4, dropout=0.0), scale=0.3)
    x, emb = torch.randn(2, 8, 6, 6), torch.randn(2, 32)
    h = block.conv1(F.silu(block.norm1(x)))
    film = block.film(F.silu(emb))
    scale, shift = film[:, :16, None, None], film[:, 16:, None, None]
    expected = block.skip(x) + block.conv2(F.silu(block.norm2(h) * (1 + scale) + shift))
    torch.testing.assert_close(block(x, emb), expected, rtol=1e-5, atol=1e-6)


def test_self_attention_shapes_and_identity_start():
    # SelfAttention: (B, C, H, W) -> (B, C, H, W)
    attn = SelfAttention(16, heads=4, groups=4)
    x = torch.randn(3, 16, 7, 7)
    out = attn(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x, rtol=0, atol=0)  # the projection starts at zero


def _attention_reference(attn, x):
    """Multi-head attention written out per head with explicit loops and einsum."""
    b, c, h, w = x.shape
    d = c // attn.heads
    qkv = attn.qkv(attn.norm(x)).reshape(b, 3 * c, h * w)  # channels: [q | k | v], head-major
    out = torch.empty(b, c, h * w)
    for head in range(attn.heads):
        q = qkv[:, head * d:(head + 1) * d]  # (B, d, N)
        k = qkv[:, c + head * d:c + (head + 1) * d]
        v = qkv[:, 2 * c + head * d:2 * c + (head + 1) * d]
        weights = torch.softmax(torch.einsum("bdi,bdj->bij", q, k) / d**0.5, dim=-1)  # (B, N, N)
        out[:, head * d:(head + 1) * d] = torch.einsum("bij,bdj->bdi", weights, v)
    return x + attn.proj(out.reshape(b, c, h, w))


def test_self_attention_matches_per_head_reference():
    attn = perturb(SelfAttention(16, heads=4, groups=4), scale=0.3)
    x = torch.randn(2, 16, 5, 6)
    torch.testing.assert_close(attn(x), _attention_reference(attn, x), rtol=1e-4, atol=1e-5)


def test_self_attention_is_permutation_equivariant():
    # no positional information: permuting the positions permutes the output
    attn = perturb(SelfAttention(16, heads=4, groups=4), scale=0.3)
    x = torch.randn(2, 16, 7, 7)
    perm = torch.randperm(49, generator=torch.Generator().manual_seed(3))
    shuffle = lambda z: z.reshape(2, 16, 49)[:, :, perm].reshape(2, 16, 7, 7)  # noqa: E731
    torch.testing.assert_close(attn(shuffle(x)), shuffle(attn(x)), rtol=1e-4, atol=1e-5)


def test_level_shapes_inside_the_net():
    # the documented resolutions and widths: 28, 14, 7 with channels * mults
    model = UNet(**SMALL, mults=(1, 2, 2))
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(tuple(out.shape)))
             for m in model.modules() if isinstance(m, (ResBlock, SelfAttention))]
    model(images(2), 0.5)
    for h in hooks:
        h.remove()
    # down: 28 (8), 14 (16), 7 (16) + attention; middle: res, attention, res; up: 7 (+ attention), 14, 28
    assert seen == [(2, 8, 28, 28), (2, 16, 14, 14), (2, 16, 7, 7), (2, 16, 7, 7),
                    (2, 16, 7, 7), (2, 16, 7, 7), (2, 16, 7, 7),
                    (2, 16, 7, 7), (2, 16, 7, 7), (2, 16, 14, 14), (2, 8, 28, 28)]


# -- sizes ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, lo, hi", [
    (dict(channels=16), 0.20e6, 0.25e6),  # 225,937
    (dict(channels=32), 0.85e6, 0.95e6),  # 897,313 (the default)
    (dict(channels=64, blocks=2), 5.5e6, 6.0e6),  # 5,775,361
], ids=["16", "32", "64x2"])
def test_parameter_count_of_named_configs(kwargs, lo, hi):
    n = parameter_count(UNet(**kwargs))
    assert lo < n < hi, n


def test_parameter_count_counts_trainable_only():
    model = UNet(**SMALL)
    total = sum(p.numel() for p in model.parameters())
    assert parameter_count(model) == total
    model.conv_in.weight.requires_grad_(False)
    assert parameter_count(model) == total - model.conv_in.weight.numel()


def test_class_embedding_adds_one_row_per_label_and_the_null_class():
    plain, cond = parameter_count(UNet(**SMALL)), parameter_count(UNet(**SMALL, n_classes=10))
    assert cond - plain == 11 * 4 * SMALL["channels"]  # (n_classes + 1) x embedding width


# -- determinism and gradients ------------------------------------------------------------------------------
def test_same_seed_same_network_and_output():
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = perturb(UNet(**SMALL, n_classes=3)).eval()
        outs.append(model(images(2), torch.tensor([0.3, 0.7]), torch.tensor([1, 3])))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    torch.manual_seed(8)
    other = perturb(UNet(**SMALL, n_classes=3)).eval()
    assert not torch.allclose(other(images(2), torch.tensor([0.3, 0.7]), torch.tensor([1, 3])), outs[0])


def test_every_parameter_gets_a_gradient():
    model = perturb(UNet(**SMALL, n_classes=3))
    x = images(5)
    y = torch.tensor([0, 1, 2, 3, 0])  # every label row, the null class included
    loss = F.mse_loss(model(x, torch.rand(5), y), torch.randn_like(x))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


# -- config round trip ---------------------------------------------------------------------------------------
def test_config_to_dict_from_dict_round_trip():
    cfg = UNetConfig(channels=16, mults=(1, 2), blocks=2, attention=(14,), n_classes=10, prediction="v",
                     dropout=0.1)
    d = cfg.to_dict()
    assert d["mults"] == [1, 2] and d["attention"] == [14]
    back = UNetConfig.from_dict(json.loads(json.dumps(d)))
    assert back == cfg and isinstance(back.mults, tuple)
    assert parameter_count(UNet(back)) == parameter_count(UNet(cfg))


# -- bad input ----------------------------------------------------------------------------------------------
UNCOND, COND = UNet(**SMALL), UNet(**SMALL, n_classes=3)
X = torch.zeros(2, 1, 28, 28)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: UNCOND(torch.zeros(2, 1, 32, 32), 0.5), ValueError,
     r"x_t must have shape \(B, 1, 28, 28\), got \(2, 1, 32, 32\)"),
    (lambda: UNCOND(torch.zeros(2, 3, 28, 28), 0.5), ValueError, r"x_t must have shape \(B, 1, 28, 28\)"),
    (lambda: UNCOND(torch.zeros(2, 28, 28), 0.5), ValueError, r"x_t must have at least 4 dimension"),
    (lambda: UNCOND(torch.zeros(2, 1, 28, 28, 1), 0.5), ValueError, r"x_t must have shape \(B, 1, 28, 28\)"),
    (lambda: UNCOND(torch.zeros(2, 1, 28, 28, dtype=torch.long), 0.5), TypeError, r"x_t must be a floating tensor"),
    (lambda: UNCOND(X, torch.tensor([1, 2])), TypeError, r"t must be a floating tensor"),
    (lambda: UNCOND(X, torch.rand(3)), ValueError, r"t has 3 entries but the batch has 2"),
    (lambda: COND(X, 0.5, torch.tensor([0.0, 1.0])), TypeError, r"y must hold integer class labels"),
    (lambda: COND(X, 0.5, torch.tensor([0, 4])), ValueError, r"y must be labels in \[0, 2\] \(or 3 for 'no class'\)"),
    (lambda: COND(X, 0.5, torch.tensor([0, 1, 2])), ValueError, r"y must be one label or have shape \(2,\)"),
    (lambda: UNCOND(X, 0.5, torch.tensor([0, 1])), ValueError,
     r"y was given but this network was built without n_classes"),
], ids=["28->32", "3 channels", "3-D", "5-D", "int images", "int t", "t batch", "float labels", "label out of range",
        "labels batch", "y unconditional"])
def test_forward_rejects_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(channels=12), ValueError, r"\[12, 24, 24\] must be a multiple of config.groups = 8.*; \[12\] are not"),
    (dict(channels=8, groups=4, heads=3), ValueError, r"multiple of config.groups = 4 and config.heads = 3"),
    (dict(image_size=30), ValueError, r"image_size = 30 cannot be halved 2 times"),
    (dict(mults=(1, 2, 2, 2)), ValueError, r"image_size = 28 cannot be halved 3 times"),
    (dict(channels=0), ValueError, r"config.channels must be a positive integer"),
    (dict(blocks=0), ValueError, r"config.blocks must be a positive integer"),
    (dict(mults=()), ValueError, r"config.mults must be a non-empty tuple of positive ints"),
    (dict(mults=(1, 0)), ValueError, r"config.mults must be a non-empty tuple of positive ints"),
    (dict(dropout=1.0), ValueError, r"config.dropout must be in \[0, 1\)"),
    (dict(prediction="noise"), ValueError, r"config.prediction must be one of"),
    (dict(n_classes=0), ValueError, r"n_classes must be a positive integer"),
    (dict(width=32), TypeError, r"width"),
], ids=["channels vs groups", "heads", "image_size", "too many levels", "channels 0", "blocks 0", "no mults",
        "mult 0", "dropout", "prediction", "n_classes 0", "unknown field"])
def test_invalid_config_is_refused(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        UNet(**kwargs)


def test_config_and_overrides_together_or_wrong_type():
    with pytest.raises(TypeError, match=r"give a UNetConfig or keyword overrides, not both"):
        UNet(UNetConfig(**SMALL), channels=16)
    with pytest.raises(TypeError, match=r"config must be a UNetConfig, got dict"):
        UNet(dict(SMALL))
    with pytest.raises(ValueError, match=r"unknown UNetConfig fields \['width'\]"):
        UNetConfig.from_dict({"width": 3, "channels": 8})

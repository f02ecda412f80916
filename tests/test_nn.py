"""Networks: shapes, conditioning, the protocol, and clear errors."""

import pytest
import torch

from dmlib.nn import MLP, TimeEmbedding, sinusoidal_embedding


def test_sinusoidal_embedding_shape_and_values():
    t = torch.tensor([0.0, 0.5, 1.0])
    e = sinusoidal_embedding(t, 8)
    assert e.shape == (3, 8)
    torch.testing.assert_close(e[0], torch.cat([torch.zeros(4), torch.ones(4)]))  # sin 0, cos 0
    torch.testing.assert_close(e[:, 0], torch.sin(1000 * t))  # highest frequency first


def test_mlp_protocol_and_shapes():
    m = MLP(dim=3, hidden=32, depth=2, prediction="v")
    assert m.prediction == "v"
    out = m(torch.randn(5, 3), torch.rand(5))
    assert out.shape == (5, 3)
    torch.testing.assert_close(m(torch.randn(5, 3), 0.3), torch.zeros(5, 3))  # zero-initialised output


def test_class_conditioning_changes_the_output():
    torch.manual_seed(0)
    m = MLP(hidden=32, depth=2, n_classes=4)
    torch.nn.init.normal_(m.out.weight)
    x, t = torch.randn(6, 2), torch.rand(6)
    a, b, u = m(x, t, torch.zeros(6, dtype=torch.long)), m(x, t, torch.full((6,), 3)), m(x, t, None)
    assert not torch.allclose(a, b) and not torch.allclose(a, u)
    torch.testing.assert_close(u, m(x, t, torch.full((6,), 4)))  # None is the null label n_classes


@pytest.mark.parametrize("call,match", [
    (lambda m: m(torch.randn(4, 3), torch.rand(4)), "x_t"),
    (lambda m: m(torch.randn(4, 2), torch.rand(3)), "t has 3 entries"),
    (lambda m: m(torch.randn(4, 2), torch.rand(4), torch.zeros(4, dtype=torch.long)), "n_classes"),
])
def test_mlp_rejects_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(MLP(hidden=16, depth=1))


def test_bad_labels_and_constructor_arguments():
    m = MLP(hidden=16, depth=1, n_classes=3)
    with pytest.raises(ValueError, match="y must be labels"):
        m(torch.randn(4, 2), torch.rand(4), torch.tensor([0, 1, 2, 7]))
    with pytest.raises(ValueError, match="prediction"):
        MLP(prediction="noise")
    with pytest.raises(ValueError, match="dim must be even"):
        TimeEmbedding(7)(torch.rand(2))

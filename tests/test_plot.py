"""dmlib.plot: scatter plots, image grids, the time slider and show_source (Agg backend)."""

import base64
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from dmlib import plot, schedules


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# -- make_grid / image_grid -----------------------------------------------------------------------
@pytest.mark.parametrize("B, C, nrow, rows, cols",
                         [(10, 1, 4, 3, 4), (3, 3, 8, 1, 3), (8, 1, 8, 1, 8), (1, 1, 5, 1, 1)])
def test_make_grid_shape(B, C, nrow, rows, cols):
    H, W, pad = 6, 5, 1
    grid = plot.make_grid(torch.zeros(B, C, H, W), nrow=nrow, pad=pad)
    assert grid.shape == (rows * (H + pad) + pad, cols * (W + pad) + pad, C)
    assert grid.dtype == np.float32


def test_make_grid_values_and_placement():
    imgs = torch.stack([torch.full((1, 4, 4), v) for v in (-1.0, 0.0, 1.0, 5.0)])  # 5.0 is clamped to 1
    grid = plot.make_grid(imgs, nrow=2, pad=1, pad_value=0.25)
    assert grid.min() >= 0 and grid.max() <= 1
    assert grid[1:5, 1:5, 0].tolist() == [[0.0] * 4] * 4  # -1 -> 0, top left
    assert (grid[1:5, 6:10, 0] == 0.5).all()  # 0 -> 0.5, top right
    assert (grid[6:10, 1:5, 0] == 1.0).all() and (grid[6:10, 6:10, 0] == 1.0).all()
    assert (grid[0, :, 0] == 0.25).all() and (grid[:, 5, 0] == 0.25).all()  # padding


def test_make_grid_rgb_channel_order():
    img = torch.zeros(1, 3, 2, 2)
    img[0, 0] = 1.0  # red channel bright
    grid = plot.make_grid(img, pad=0)
    assert grid.shape == (2, 2, 3)
    assert (grid[..., 0] == 1).all() and (grid[..., 1] == 0.5).all()


def test_make_grid_accepts_grad_tensors():
    grid = plot.make_grid(torch.zeros(2, 1, 3, 3, requires_grad=True))
    assert grid.shape == (5, 9, 1)


@pytest.mark.parametrize("C", [1, 3])
def test_image_grid_draws(C):
    fig, ax = plt.subplots()
    out = plot.image_grid(torch.rand(5, C, 8, 8) * 2 - 1, ax, nrow=3, title="digits")
    assert out is ax
    assert len(ax.images) == 1 and ax.get_title() == "digits"
    assert ax.images[0].get_array().shape[:2] == (2 * 9 + 1, 3 * 9 + 1)


def test_image_grid_uses_current_axes():
    plt.figure()
    ax = plot.image_grid(torch.zeros(2, 1, 4, 4))
    assert ax is plt.gca()


# -- scatter2d ----------------------------------------------------------------------------------------
def test_scatter2d():
    fig, ax = plt.subplots()
    x = torch.randn(50, 2)
    out = plot.scatter2d(x, ax, title="moons", lim=2.0, color="C1")
    assert out is ax and ax.get_title() == "moons"
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(np.asarray(offsets), x.numpy(), rtol=1e-6)
    assert ax.get_xlim() == (-2.0, 2.0) and ax.get_ylim() == (-2.0, 2.0)


def test_scatter2d_no_limits_and_float64_grad():
    fig, ax = plt.subplots()
    plot.scatter2d(torch.randn(10, 2, dtype=torch.float64, requires_grad=True), ax, lim=None)
    assert len(ax.collections) == 1


# -- time_slider ----------------------------------------------------------------------------------------
def _render(calls):
    def render(t):
        calls.append(t)
        fig, ax = plt.subplots(figsize=(1.5, 1.5), dpi=40)
        ax.plot([0, 1], [0, t])
        return fig
    return render


def test_time_slider_static_html(clean_env):
    calls = []
    times = [0.0, 0.25, 0.5, 1.0]
    html = plot.time_slider(_render(calls), times, label="t", static=True)
    text = html.data
    assert calls == times  # one frame per time, in order
    imgs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    assert len(imgs) == len(times)
    assert all(base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n" for png in imgs)
    assert text.count('<input type="range"') == 1 and f'max="{len(times) - 1}"' in text
    assert "display:block" in text and text.count("display:none") == len(times) - 1  # first frame shown
    assert '"0.25"' in text and "<script>" in text
    assert "http" not in text  # self-contained: no outside resources
    assert len(plt.get_fignums()) == 0  # the frames' figures are closed


def test_time_slider_static_from_env(clean_env):
    clean_env.setenv("DMLIB_STATIC", "1")
    html = plot.time_slider(_render([]), [0.1, 0.9])
    assert html.data.count("<img") == 2


def test_time_slider_unique_ids(clean_env):
    a = plot.time_slider(_render([]), [0.5], static=True).data
    b = plot.time_slider(_render([]), [0.5], static=True).data
    id_a, id_b = (re.search(r'<div id="(ts[0-9a-f]+)"', s).group(1) for s in (a, b))
    assert id_a != id_b  # two sliders on one page do not control each other


def test_time_slider_live_widget(clean_env):
    widgets = pytest.importorskip("ipywidgets")
    times = [0.0, 0.5, 1.0]
    w = plot.time_slider(_render([]), times, static=False)
    assert isinstance(w, widgets.interactive)
    slider = w.children[0]
    assert isinstance(slider, widgets.SelectionSlider)
    assert [v for _, v in slider.options] == times and slider.description == "t"


def test_time_slider_accepts_tensor_times(clean_env):
    calls = []
    plot.time_slider(_render(calls), torch.tensor([0.2, 0.4]), static=True)
    assert calls == pytest.approx([0.2, 0.4])


# -- show_source ------------------------------------------------------------------------------------------
def test_show_source_displays_markdown_in_notebooks(monkeypatch):
    display = pytest.importorskip("IPython.display")
    shown = []
    monkeypatch.setattr(display, "display", lambda obj: shown.append(obj))
    monkeypatch.setattr(plot, "_in_notebook", lambda: True)
    plot.show_source(schedules.expand_to)
    assert len(shown) == 1 and isinstance(shown[0], display.Markdown)
    assert shown[0].data.startswith("```python\ndef expand_to(") and shown[0].data.endswith("```")


def test_show_source_of_a_class(monkeypatch):
    display = pytest.importorskip("IPython.display")
    shown = []
    monkeypatch.setattr(display, "display", lambda obj: shown.append(obj))
    monkeypatch.setattr(plot, "_in_notebook", lambda: True)
    plot.show_source(schedules.CosineSchedule)
    assert "class CosineSchedule(VPSchedule):" in shown[0].data


def test_show_source_prints_outside_notebooks(capsys):
    plot.show_source(schedules.expand_to)
    assert "def expand_to(" in capsys.readouterr().out


def test_show_source_adds_the_unchecked_twin(capsys):
    from dmlib import diffusion, samplers

    plot.show_source(samplers.ddim_step)
    out = capsys.readouterr().out
    assert "def ddim_step(" in out and "def _ddim(" in out and "eq-ddim-eta" in out
    plot.show_source(diffusion.q_sample)  # no twin: only itself
    out = capsys.readouterr().out
    assert "def q_sample(" in out and "def _" not in out

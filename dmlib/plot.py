"""Plotting helpers shared by the chapters: 2D scatter plots and image grids.

They draw on a Matplotlib ``Axes`` passed in (or a new one) and return it, so a chapter keeps
control of its figure layout. Introduced in Section 1.2.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from . import _check

# The book's colours: Okabe and Ito's palette, which stays distinguishable under the common forms of colour
# blindness (red and green in particular). Ordered like Matplotlib's default cycle (blue, orange, green, red,
# purple, ...), so "C0" to "C3" keep the hue names the figure captions use.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def use_style() -> None:
    """Make :data:`PALETTE` Matplotlib's colour cycle ("C0", "C1", ...); importing this module does it (Section 1.2)."""
    from cycler import cycler

    plt.rcParams["axes.prop_cycle"] = cycler(color=list(PALETTE))


use_style()


def scatter2d(x: torch.Tensor, ax=None, *, title: str | None = None, lim: float | None = 3.5,
              s: float = 2.0, alpha: float = 0.5, color=None, **kwargs):
    """Scatter plot of 2D points of shape (N, 2), square aspect, optional symmetric limits (Section 1.1)."""
    _check.tensor(x, "x", min_dim=2)
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (N, 2), got {tuple(x.shape)}")
    ax = ax if ax is not None else plt.gca()
    pts = x.detach().cpu().float().numpy()
    ax.scatter(pts[:, 0], pts[:, 1], s=s, alpha=alpha, color=color, linewidths=0, **kwargs)
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile images of shape (B, C, H, W) in [-1, 1] into one (rows*H', nrow*W', C) array in [0, 1] (Section 1.2)."""
    _check.tensor(images, "images", min_dim=4)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (B, C, H, W) with C in (1, 3), got {tuple(images.shape)}")
    nrow = _check.positive_int(nrow, "nrow")
    x = ((images.detach().cpu().float().clamp(-1, 1) + 1) / 2).numpy()  # (B, C, H, W) in [0, 1]
    B, C, H, W = x.shape
    ncol = min(nrow, B)
    rows = -(-B // ncol)
    grid = np.full((rows * (H + pad) + pad, ncol * (W + pad) + pad, C), pad_value, dtype=np.float32)
    for i in range(B):
        r, c = divmod(i, ncol)
        y0, x0 = pad + r * (H + pad), pad + c * (W + pad)
        grid[y0:y0 + H, x0:x0 + W] = x[i].transpose(1, 2, 0)  # (H, W, C)
    return grid


def image_grid(images: torch.Tensor, ax=None, *, nrow: int = 8, title: str | None = None, pad: int = 1):
    """Show a batch of images (B, C, H, W) in [-1, 1] as one grid on ``ax`` (Section 1.2)."""
    ax = ax if ax is not None else plt.gca()
    grid = make_grid(images, nrow=nrow, pad=pad)
    if grid.shape[2] == 1:
        ax.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (where rich output can be displayed)."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def show_source(obj) -> None:
    """Display the real source code of a dmlib function or class in a notebook.

    The book shows the library's code this way instead of a copy that could drift from it.
    A public function that checks its arguments and then calls an unchecked twin of the same
    module (``ddim_step`` and ``_ddim``, ``posterior`` and ``_posterior``) is shown together
    with that twin, which is where the equations are. In Jupyter the source is
    syntax-highlighted; elsewhere it is printed. First used in Section 1.1.
    """
    import inspect
    import sys

    src = inspect.getsource(obj)
    name = getattr(obj, "__name__", "")
    module = sys.modules.get(getattr(obj, "__module__", ""), None)
    for twin_name in dict.fromkeys(("_" + name, "_" + name.removesuffix("_step"))):
        twin = getattr(module, twin_name, None) if name and not name.startswith("_") else None
        if inspect.isfunction(twin) and f"{twin_name}(" in src:
            src += "\n\n" + inspect.getsource(twin)
    if _in_notebook():  # highlighted Markdown
        from IPython.display import Markdown, display

        display(Markdown(f"```python\n{src}```"))
    else:  # a script or a terminal
        print(src)


def _figure_png(fig) -> str:
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def time_slider(render, times, *, label: str = "t", fmt: str = "{:.2f}", static: bool | None = None):
    """A slider over time: ``render(t)`` draws a Matplotlib figure for each t in ``times``.

    In a live notebook it is an ipywidgets slider that redraws as it moves. In the rendered
    book (``static=True``, or when the environment variable ``DMLIB_STATIC`` is set, as the
    book's build does) the frames are drawn in advance and embedded with a few lines of
    JavaScript and no outside resources, so the slider still works on a static page.
    Introduced in Section 1.2.
    """
    import os

    times = [float(t) for t in times]
    if not times:
        raise ValueError("times must contain at least one time")
    if static is None:
        static = bool(os.environ.get("DMLIB_STATIC"))
    if not static:
        try:
            import ipywidgets as widgets
        except ImportError:
            static = True
    if not static:
        slider = widgets.SelectionSlider(options=[(fmt.format(t), t) for t in times], description=label,
                                         continuous_update=False, layout=widgets.Layout(width="60%"))

        def show(t):
            render(t)
            plt.show()

        return widgets.interactive(show, t=slider)

    import html
    import uuid

    from IPython.display import HTML

    frames = [_figure_png(render(t)) for t in times]
    uid = "ts" + uuid.uuid4().hex[:8]
    imgs = "".join(
        f'<img src="data:image/png;base64,{png}" alt="{html.escape(label)} = {fmt.format(t)}" '
        f'style="max-width:100%;display:{"block" if i == 0 else "none"}">'
        for i, (png, t) in enumerate(zip(frames, times))
    )
    labels = ",".join(f'"{html.escape(fmt.format(t))}"' for t in times)
    return HTML(
        f'<div id="{uid}" class="dmlib-time-slider">'
        f'<label>{html.escape(label)} = <span class="val">{html.escape(fmt.format(times[0]))}</span> '
        f'<input type="range" min="0" max="{len(times) - 1}" value="0" step="1" style="width:60%"></label>'
        f"<div>{imgs}</div></div>"
        f"<script>(function(){{var r=document.getElementById('{uid}'),l=[{labels}],"
        f"im=r.querySelectorAll('img'),v=r.querySelector('.val');"
        f"r.querySelector('input').addEventListener('input',function(e){{var k=+e.target.value;"
        f"im.forEach(function(x,i){{x.style.display=i===k?'block':'none';}});v.textContent=l[k];}});}})();</script>"
    )

"""Plotting helpers shared by the chapters: 2D scatter plots and image grids.

They draw on a Matplotlib ``Axes`` passed in (or a new one) and return it, so a chapter keeps
control of its figure layout. Introduced in Section 1.2.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from . import _check


def scatter2d(x: torch.Tensor, ax=None, *, title: str | None = None, lim: float | None = 3.5,
              s: float = 2.0, alpha: float = 0.5, color=None, **kwargs):
    """Scatter plot of 2D points of shape (N, 2), square aspect, optional symmetric limits."""
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
    """Tile images of shape (B, C, H, W) in [-1, 1] into one (rows*H', nrow*W', C) array in [0, 1]."""
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
    """Show a batch of images (B, C, H, W) in [-1, 1] as one grid on ``ax``."""
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


def show_source(obj) -> None:
    """Display the real source code of a dmlib function or class in a notebook.

    The book shows the library's code this way instead of a copy that could drift from it.
    In Jupyter the source is syntax-highlighted; elsewhere it is printed.
    """
    import inspect

    src = inspect.getsource(obj)
    try:
        from IPython.display import Markdown, display

        display(Markdown(f"```python\n{src}```"))
    except ImportError:  # outside IPython
        print(src)

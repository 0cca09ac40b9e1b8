"""Pictures for notebooks and widgets: image grids as a matplotlib figure or as PNG bytes.

Samples are tensors in [-1, 1]; `imagen_lib.plumbing.files.to_grid` lays them out
(torchvision's make_grid) and `imagen_lib.plumbing.files.save_grid` writes one to a PNG file.
"""

from __future__ import annotations

import io

import torch

from imagen_lib.plumbing.files import to_grid


def grid_png(images: torch.Tensor, columns: int = 8, scale: int = 2) -> bytes:
    """PNG bytes of a grid, enlarged `scale` times (nearest neighbour).

    Enlarged so that small digits stay crisp.
    """
    grid = to_grid(images, columns)
    grid = grid.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    from torchvision.utils import save_image

    buffer = io.BytesIO()
    save_image(grid, buffer, format="png")
    return buffer.getvalue()


def show_grid(
    images: torch.Tensor, columns: int = 8, title: str | None = None, ax=None, size: float = 4.0
):
    """Draw a grid with matplotlib (grey for 1 channel, colour for 3) and return the axes."""
    import matplotlib.pyplot as plt

    grid = to_grid(images, columns)
    if ax is None:
        _, ax = plt.subplots(figsize=(size, size * grid.shape[1] / grid.shape[2]))
    if grid.shape[0] == 1:
        ax.imshow(grid[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax

"""Pictures: image grids for notebooks, files and widgets.

Samples are tensors in [-1, 1]; these helpers turn them into a matplotlib figure, a PNG
file, or PNG bytes (for an ipywidgets Image). Grids are made by torchvision's make_grid.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch


def to_grid(images: torch.Tensor, columns: int = 8, padding: int = 1) -> torch.Tensor:
    """(B, C, H, W) images in [-1, 1] -> one (C, H', W') grid image in [0, 1]."""
    from torchvision.utils import make_grid  # imported here: torchvision takes a second to import

    return make_grid(
        images.detach().float().cpu().clamp(-1, 1) * 0.5 + 0.5,
        nrow=columns,
        padding=padding,
        pad_value=1.0,
    )


def save_grid(images: torch.Tensor, path: str | Path, columns: int = 8) -> Path:
    from torchvision.utils import save_image

    path = Path(path)
    save_image(to_grid(images, columns), path)
    return path


def grid_png(images: torch.Tensor, columns: int = 8, scale: int = 2) -> bytes:
    """PNG bytes of a grid, enlarged `scale` times (nearest neighbour) so small digits stay crisp."""
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

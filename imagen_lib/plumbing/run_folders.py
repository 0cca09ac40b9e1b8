"""Plumbing, not a lesson: a run folder made ready for training, and held while training runs.

Before its first step, `Trainer.train` (imagen_lib/train.py) takes its run folder with
`training_into`: names that would make the first save or sample grid fail are refused
(`files.check_run_folder`); the process that writes (the first of several) holds the folder's
lock for the whole run (`locks.run_folder_lock`), removes the temporary files that saves killed
midway left behind, and makes sure the disk has room for one more checkpoint, so that a full
disk stops training before it starts rather than losing the work at the first save. When
training stops early, `kept_checkpoint` says what is left on disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from imagen_lib.plumbing.files import check_free_space, check_run_folder, remove_temporaries
from imagen_lib.plumbing.locks import run_folder_lock


def checkpoint_bytes(networks: nn.Module) -> int:
    """About the size of a training checkpoint of `networks`: the weights, the EMA weights and
    AdamW's two moments, and a megabyte for the rest."""
    weights = sum(p.numel() * p.element_size() for p in networks.parameters())
    return 4 * weights + 2**20


def kept_checkpoint(checkpoint: Path, saved_steps: list[int] | None) -> str:
    """What is on disk when training stops, for the messages of a failed save or divergence.

    `saved_steps`: the steps of `checkpoint` as the trainer last saved or resumed it, if it did.
    """
    if not checkpoint.is_file():
        return "no checkpoint had been written yet"
    return f"the checkpoint {checkpoint} is kept as it was" + (
        f", at steps {saved_steps}" if saved_steps else ""
    )


@contextmanager
def training_into(
    checkpoint: Path, writes: bool, sampling: bool, needed_bytes: int
) -> Iterator[None]:
    """Hold the run folder of `checkpoint` while the body trains into it.

    `writes`: whether this process writes the checkpoint (alone, or the first of several; the
    others only check the folder's names). `sampling`: whether sample grids will be written.
    `needed_bytes`: the room the disk must have, 0 where there is nothing left to train.
    """
    folder = checkpoint.parent
    check_run_folder(folder, sampling=sampling)
    if not writes:
        yield
        return
    with run_folder_lock(folder):
        # we hold the lock, so no temporary file beside the checkpoint is being written now
        remove_temporaries(checkpoint)
        if needed_bytes:
            # the checkpoint is written while the old one stays, so all of it must fit
            check_free_space(folder, needed_bytes, "a training checkpoint")
        yield

"""Plumbing, not a lesson: measured training throughput, and waiting for the device.

CUDA runs work asynchronously, so a clock read on the host measures only the launching
unless the device is waited for first (`synchronize`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # for the annotation only: importing train here would be a cycle
    from imagen_lib.train import Trainer


def images_per_second(trainer: Trainer, stage: int, steps: int = 5) -> float:
    """Measured training throughput of one stage (after one warm-up step), without saving.

    It really trains: the trainer's weights, EMA and step count move on, so measure on a
    trainer made for the purpose (as `python -m imagen_lib bench` does).
    """
    trainer.train_step(stage)  # warm-up (and, where it compiles, the compilation)
    synchronize(trainer.device)
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(stage)
    synchronize(trainer.device)
    return steps * trainer.config.batch_size / (time.perf_counter() - started)


def synchronize(device: torch.device) -> None:
    """Wait until the device has finished the work queued so far (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)

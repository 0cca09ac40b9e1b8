"""Plumbing, not a lesson: whether training compiles its networks with torch.compile.

Compiling changes how fast a step runs, never what it computes; the trainer falls back to
the plain network where compiling fails (`Trainer.first_forward_backward`).
"""

from __future__ import annotations

import torch


def compiles(setting: str, device: torch.device) -> bool:
    """Whether training compiles the networks with torch.compile, for a TrainConfig.compile setting.

    "auto" compiles on CUDA, where a step otherwise waits on Python to launch hundreds of
    small kernels; not on the CPU, where compiling takes minutes (2 cores) and saves
    little, since there the arithmetic, not the launching, takes the time.
    """
    return setting == "on" or (setting == "auto" and device.type == "cuda")

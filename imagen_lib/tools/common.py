"""Small checks and a stopwatch that every tool shares.

The tools (sampling, evaluation, bench, training, the experiments) import these from here,
below them all, rather than from one another: `at_least` and `check_seed` refuse a bad
argument in one line before anything slow starts, and `timed` measures how long making a
batch of images took. `machine_description` names the machine that measured, in the
results files and in `bench`'s first line.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from imagen_lib.cascade import default_device

MAX_SEED = 2**63  # torch's generators take 64-bit seeds


def check_seed(seed: int) -> int:
    """`seed` unless torch's generators cannot take it."""
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    return seed


def at_least(value: int | None, minimum: int, name: str, why: str = "") -> int | None:
    """`value` unless it is below `minimum` (None means "not given" and passes)."""
    if value is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}{why}, got {value}")
    return value


def timed(make_images: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Run `make_images` and return its images and the seconds it took."""
    started = time.perf_counter()
    images = make_images()
    return images, time.perf_counter() - started


def machine_description() -> str:
    """The OS, the CPU and its vector instructions, the core count, torch's version, the device."""
    device = default_device()
    if device.type == "cuda":
        accelerator = torch.cuda.get_device_name(device)
    else:
        accelerator = f"{device.type}, {torch.get_num_threads()} torch threads"
    # The widest vector instructions torch uses (AVX2, AVX512, ...): two machines with the
    # same core count measured up to 3x apart on these.
    cpu = f"{cpu_model()}, {torch.backends.cpu.get_cpu_capability()}"
    return (
        f"{platform.system()} {cpu}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}; device: {accelerator}"
    )


def cpu_model() -> str:
    """The processor's name, as Linux's /proc/cpuinfo says it.

    platform.processor() is often empty: it, then platform.machine(), are only fallbacks.
    """
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()

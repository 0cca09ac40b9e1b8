"""Small checks, a stopwatch and the retraining step that the tools share.

The tools (sampling, evaluation, bench, training, the experiments) import these from here,
below them all, rather than from one another: `at_least` and `check_seed` refuse a bad
argument in one line before anything slow starts, and `timed` measures how long making a
batch of images took. `machine_description` names the machine that measured, in the
results files and in `bench`'s first line. `training_recipe` and `train_or_resume` are how
the findings and the scaling experiment retrain stages with a checkpoint's recipe.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from imagen_lib.cascade import default_device
from imagen_lib.checkpoint import read_checkpoint
from imagen_lib.data import DigitSet, resize
from imagen_lib.plumbing.errors import BadSetting
from imagen_lib.plumbing.training_data import training_set
from imagen_lib.presets import Preset
from imagen_lib.train import Trainer

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


def training_recipe(checkpoint: Path) -> Preset:
    """The preset a checkpoint was trained with, which the retraining experiments follow."""
    payload = read_checkpoint(checkpoint)
    if "preset" not in payload:
        raise BadSetting(
            f"{checkpoint} does not say how it was trained (no preset)",
            "this experiment retrains a stage with that recipe",
        )
    return Preset.from_dict(payload["preset"])  # read_checkpoint has checked it


def train_or_resume(
    preset: Preset, out: str | Path, stages: list[int], progress: bool = True
) -> Path:
    """Train the given stages into `out`, resuming from its checkpoint if a run was interrupted."""
    digits = training_set(preset)  # digits, or scenes of two for a scenes preset
    # a base-only cascade trains at its base size (16x16, or 16x32 for scenes): shrink the
    # images as the loss would
    size = preset.model.stages[-1].image_size
    digits = DigitSet(resize(digits.images, size), digits.labels, digits.source)
    trainer = Trainer(preset, out, data=digits, quiet=not progress)
    if trainer.checkpoint_path.exists():
        trainer.resume()
    return trainer.train(stages)

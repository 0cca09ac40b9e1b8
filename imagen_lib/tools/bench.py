"""Where the time goes: `python -m imagen_lib bench`, and the profiling behind it.

Training: per stage, images/s at the preset's batch and at 4x it (the same rate at both
means the host, not the device, sets the pace), torch operations per step, host and wall
milliseconds per step and, on CUDA, the share of time the GPU is busy. Sampling: seconds
for a batch of images per sampling setting, drawn for the lesson's digit prompts or, for a
cascade that draws scenes of two digits, for scene prompts. Every figure is printed as it
is measured, under a progress bar over the measurements (each takes up to tens of seconds
on a CPU); the machine is named first, since two 2-core machines measured up to 3x apart.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from imagen_lib.cascade import ImagenConfig, default_device
from imagen_lib.checkpoint import load_imagen, parse_config, read_checkpoint
from imagen_lib.colours import colour_evaluation_prompts
from imagen_lib.data import LESSON_PROMPTS, DigitSet, size_text
from imagen_lib.plumbing.files import existing_checkpoint, not_empty
from imagen_lib.plumbing.timing import images_per_second, synchronize
from imagen_lib.presets import Preset, get_preset
from imagen_lib.scenes import scene_evaluation_prompts
from imagen_lib.tools.common import at_least, machine_description
from imagen_lib.tools.drawing import (
    SAMPLE_CHUNK,
    check_plan,
    describe_plan,
    draws_colour_scenes,
    draws_scenes,
    parse_sampler_setting,
)
from imagen_lib.train import Trainer

# Timed by default: a minute or two on 2 cores.
DEFAULT_SETTINGS = ("ddim:10", "ddim:25", "dpm++:10", "dpm++:8,ddim:5")


@dataclass
class StepCost:
    """Where the time of one training step goes (`python -m imagen_lib bench`)."""

    operations: int  # top-level torch operations (each one a kernel launch or more on a GPU)
    host_ms: float  # time Python takes to issue the step; on the CPU it also does the arithmetic
    wall_ms: float  # time per step with the device finished
    device_busy: float | None  # share of wall time the GPU spends in kernels (None on the CPU)


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Inside the block, send what native code writes to stderr (file descriptor 2) to nowhere.

    Kineto, the profiler's C++ backend, prints a line at every start and stop and, on a
    machine without a GPU, a harmless "ERROR ... gpuGetDeviceCount failed": noise in the
    middle of `bench`'s figures that a reader would take for a fault.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as nowhere:
            os.dup2(nowhere.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def step_cost(trainer: Trainer, stage: int, steps: int = 5) -> StepCost:
    """Profile and time `steps` training steps of one stage, after a warm-up step.

    It trains, like images_per_second. A step is host-bound when the host takes about as long
    as the whole step and the GPU is mostly idle: then fewer operations per step, not a faster
    GPU, make it faster.
    """
    from torch.profiler import ProfilerActivity, profile

    trainer.train_step(stage)
    synchronize(trainer.device)
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(stage)
    issued = time.perf_counter() - started
    synchronize(trainer.device)
    wall = time.perf_counter() - started
    cuda = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with native_stderr_silenced(), profile(activities=activities) as profiler:
        trainer.train_step(stage)
        synchronize(trainer.device)
    # operations called by our code
    top_level = [event for event in profiler.events() if event.cpu_parent is None]
    busy = None
    if cuda:  # the GPU time of every kernel, per step, against the unprofiled wall time per step
        kernel_us = sum(
            getattr(event, "device_time_total", getattr(event, "cuda_time_total", 0))
            for event in top_level
        )
        busy = min(1.0, kernel_us / 1e6 / (wall / steps))
    return StepCost(len(top_level), issued / steps * 1000, wall / steps * 1000, busy)


def peak_memory_mib() -> float:
    import resource

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def parse_bench_setting(text: str) -> tuple:
    """A bench setting: SAMPLER:STEPS[:THRESHOLDING] for every stage, or SAMPLER:STEPS per stage.

    Per-stage settings are joined by commas: dpm++:8,ddim:5 gives (("dpm++", "ddim"), (8, 5),
    "dynamic"). A thresholding other than dynamic goes after the last stage's steps
    (dpm++:8,ddim:5:none) and serves every stage.
    """
    parts = [parse_sampler_setting(part, "--samplers") for part in text.split(",")]
    if any(thresholding != "dynamic" for _, _, thresholding in parts[:-1]):
        raise ValueError(
            "--samplers: give the thresholding once, after the last stage "
            f"(such as dpm++:8,ddim:5:none), got {text!r}"
        )
    if len(parts) == 1:
        return parts[0]
    return tuple(s for s, _, _ in parts), tuple(steps for _, steps, _ in parts), parts[-1][2]


def bench_training(preset: Preset, train_steps: int, bar: tqdm) -> None:
    """Print each stage's training throughput and step cost for `preset` above `bar`.

    `bar` counts the measurements: one per stage.
    """
    bar.set_description(f"loading preset {preset.name}'s encoder and digits")
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(preset, scratch, quiet=True)
        # the same images/s at 4x the batch: the host sets the pace
        four_times = dataclasses.replace(preset.training, batch_size=4 * preset.training.batch_size)
        larger = dataclasses.replace(preset, training=four_times)
        same_digits = DigitSet(trainer.images, trainer.labels, "the same digits")
        large = Trainer(
            larger, scratch, text_encoder=trainer.model.text_encoder, data=same_digits, quiet=True
        )
        compiled = trainer.training_networks[0] is not trainer.model.networks[0]
        bar.write(
            f"training preset {preset.name} ({'compiled' if compiled else 'not compiled'}; "
            f"--compile {preset.training.compile}), {train_steps} timed steps per measurement:"
        )
        batch = preset.training.batch_size
        for stage, network in enumerate(trainer.model.networks):
            size = preset.model.stages[stage].image_size
            bar.set_description(f"timing training stage {stage}")
            cost = step_cost(trainer, stage, steps=train_steps)  # also the preset batch's rate
            larger_rate = images_per_second(large, stage, steps=train_steps)
            parameters = sum(p.numel() for p in network.parameters()) / 1e6
            busy = (
                "" if cost.device_busy is None else f", GPU busy {cost.device_busy:.0%} of the time"
            )
            bar.write(
                f"  stage {stage} ({size_text(size)}, {type(network).__name__}, "
                f"{parameters:.2f} M parameters): "
                f"{batch * 1000 / cost.wall_ms:.0f} images/s at batch {batch}, "
                f"{larger_rate:.0f} at batch {larger.training.batch_size}; "
                f"per step at batch {batch}: {cost.operations} torch operations, "
                f"{cost.host_ms:.1f} ms on the host, {cost.wall_ms:.1f} ms in all{busy}"
            )
            bar.update()


def bench_prompts(
    preset: dict | None, config: ImagenConfig, num_samples: int
) -> tuple[list[str], str]:
    """The `num_samples` prompts `bench` times sampling with, and what they draw, in words.

    A cascade that draws scenes of two digits (`drawing.draws_scenes`, from the
    checkpoint's stored preset and config) gets the first scene prompts of the "training"
    evaluation set (of colour scenes, for a cascade trained on them), every caption category
    in turn, so its time is that of the scenes it was trained for; any other cascade gets
    the lesson's 64 digit prompts, repeated.
    """
    if draws_colour_scenes(preset):
        prompts = colour_evaluation_prompts(num_samples)["training"]
        return [prompt.text for prompt in prompts], "colour scenes of two digits (scene prompts)"
    if draws_scenes(preset, config):
        prompts = scene_evaluation_prompts(num_samples)["training"]
        return [prompt.text for prompt in prompts], "scenes of two digits (scene prompts)"
    return [LESSON_PROMPTS[i % len(LESSON_PROMPTS)] for i in range(num_samples)], "images"


def bench(
    checkpoint: str | Path | None = None,
    preset: str = "cpu",
    train_steps: int = 10,
    num_samples: int = 64,
    encoder: str | None = None,
    samplers: list[str] = DEFAULT_SETTINGS,
    compile: str = "auto",
    ddpm: bool = False,
) -> None:
    """Print the machine, then training and sampling figures, each as soon as it is measured."""
    checkpoint = existing_checkpoint(checkpoint)
    training = get_preset(preset)
    # new configs (dataclasses.replace), so their checks run on the new values too
    training = dataclasses.replace(
        training, training=dataclasses.replace(training.training, compile=compile)
    )
    if encoder is not None:
        not_empty(encoder, "--encoder", "a text encoder, or leave --encoder out for the preset's")
        training = dataclasses.replace(
            training, model=dataclasses.replace(training.model, text_encoder=encoder)
        )
    at_least(train_steps, 1, "--train-steps")
    # per sampler, fewest steps first; per-stage settings last
    settings = sorted(
        {parse_bench_setting(text) for text in samplers},
        key=lambda setting: (
            isinstance(setting[0], tuple),
            str(setting[0]),
            sum(setting[1]) if isinstance(setting[1], tuple) else setting[1],
            setting[2],
        ),
    )
    if not 1 <= num_samples <= SAMPLE_CHUNK:  # sampled in one batch, to time it
        raise ValueError(f"--num-samples must be between 1 and {SAMPLE_CHUNK}, got {num_samples}")
    payload = read_checkpoint(checkpoint)  # read without loading the model (seconds)
    config = parse_config(payload["config"], checkpoint)
    for sampler, steps, _ in settings:  # a setting that does not fit is refused before loading
        check_plan(config, sampler, steps, ("--samplers", "--samplers"))
    model = load_imagen(checkpoint, weights="ema", device=default_device())
    print(f"machine: {machine_description()}", flush=True)
    prompts, drawn = bench_prompts(payload.get("preset"), config, num_samples)
    every_step = min(schedule.timesteps for schedule in model.schedules)
    timings = settings + ([("ddpm", every_step, "dynamic")] if ddpm else [])
    recommended = config.sampling_plan()  # the checkpoint's own sampler and steps

    def is_recommended(sampler, steps, thresholding: str) -> bool:
        return thresholding == "dynamic" and config.sampling_plan(sampler, steps) == recommended

    if all(stage.sampling_steps is not None for stage in recommended.stages) and not any(
        is_recommended(*setting) for setting in timings
    ):
        timings.append((None, None, "dynamic"))
    measurements = len(training.model.stages) + len(timings)
    with tqdm(total=measurements, desc="bench", unit="measurement", dynamic_ncols=True) as bar:
        bench_training(training, train_steps, bar)
        bar.write(f"sampling {len(prompts)} {drawn} through the cascade ({checkpoint.name}):")
        for sampler, steps, thresholding in timings:
            plan = describe_plan(config, sampler, steps)
            shown = "" if thresholding == "dynamic" else f", {thresholding} thresholding"
            shown += (
                " (the checkpoint's recommendation)"
                if is_recommended(sampler, steps, thresholding)
                else ""
            )
            bar.set_description(f"timing {plan}{shown}")
            started = time.perf_counter()
            model.sample(prompts, sampler=sampler, steps=steps, thresholding=thresholding)
            bar.write(f"  {plan}{shown}: {time.perf_counter() - started:.1f} s")
            bar.update()
    if not ddpm:
        print(f"  (DDPM over all {every_step} steps skipped: --ddpm times it, minutes on a CPU)")
    print(f"peak memory: {peak_memory_mib():.0f} MiB")

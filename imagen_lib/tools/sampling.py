"""Sampling many images from a checkpoint into files: `python -m imagen_lib sample`.

`sample_to_folder` checks every argument before the model loads, samples `SAMPLE_CHUNK`
images at a time (memory stays bounded for any count), and writes the grids and an .npz
of every image. `final_images` is the chunked sampling it and the experiments share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from imagen_lib.cascade import Imagen, default_device
from imagen_lib.checkpoint import load_imagen
from imagen_lib.data import LESSON_PROMPTS
from imagen_lib.diffusion import (
    SAMPLERS,
    THRESHOLDINGS,
    check_guidance_interval,
    check_guidance_weight,
)
from imagen_lib.files import existing_checkpoint, save_grid, writable_folder

SAMPLE_CHUNK = 256  # images sampled at once: memory stays bounded for any --num-samples
MAX_SEED = 2**63  # torch's generators take 64-bit seeds


def check_seed(seed: int) -> int:
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    return seed


def at_least(value: int | None, minimum: int, name: str, why: str = "") -> int | None:
    """`value` unless it is below `minimum` (None means "not given" and passes)."""
    if value is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}{why}, got {value}")
    return value


def read_prompts(prompts: list[str] | None, prompts_file: str | Path | None) -> list[str]:
    """`prompts`, else the lines of `prompts_file` (blank ones skipped), else the lesson's 64."""
    if prompts_file is not None:
        try:
            lines = Path(prompts_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not UTF-8 text"
            raise ValueError(
                f"--prompts-file {prompts_file} cannot be read ({reason}): "
                "give a text file with one prompt per line"
            ) from None
        prompts = [line.strip() for line in lines if line.strip()]
        if not prompts:
            raise ValueError(
                f"--prompts-file {prompts_file} holds no prompts: write one prompt per line"
            )
        return prompts
    if prompts is None:
        return list(LESSON_PROMPTS)
    for number, prompt in enumerate(prompts, 1):
        if not prompt.strip():
            raise ValueError(
                f"--prompts: prompt {number} is empty; give one prompt per argument, "
                'such as --prompts 7 "a handwritten 7" seven'
            )
    return prompts


def parse_sampler_setting(text: str, option: str = "--settings") -> tuple[str, int, str]:
    """SAMPLER:STEPS[:THRESHOLDING], such as ddim:25 or ddim:25:none (default: dynamic)."""
    sampler, _, rest = text.partition(":")
    steps, _, thresholding = rest.partition(":")
    thresholding = thresholding or "dynamic"
    if (
        sampler not in SAMPLERS
        or not steps.isdigit()
        or int(steps) < 1
        or thresholding not in THRESHOLDINGS
    ):
        raise ValueError(
            f"{option} takes SAMPLER:STEPS[:THRESHOLDING] such as ddim:50, ddpm:1000, dpm++:15 "
            f"or ddim:25:none, got {text!r}"
        )
    return sampler, int(steps), thresholding


def describe_plan(plan: list[tuple[str, int | None]]) -> str:
    """A sampling plan (sampler and steps per stage, as Imagen.sampling_plan gives it) in words."""
    named = [f"{sampler.upper()} {steps or 'default'}" for sampler, steps in plan]
    if len(set(named)) == 1:
        return f"{named[0]} steps per stage"
    return " then ".join(named) + " steps (stage by stage)"


def describe_interval(interval: tuple[float, float]) -> str:
    """ " in [0.35, 0.7]" for a guidance interval, "" for every step."""
    return "" if tuple(interval) == (0, 1) else f" in [{interval[0]:g}, {interval[1]:g}]"


def timed(make_images: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Run `make_images` and return its images and the seconds it took."""
    started = time.perf_counter()
    images = make_images()
    return images, time.perf_counter() - started


def final_images(
    model: Imagen,
    prompts: list[str],
    seed: int,
    chunk: int = 100,
    low_res: torch.Tensor | None = None,
    bar: tqdm | None = None,
    **options,
) -> torch.Tensor:
    """The last stage's images for many prompts, `chunk` at a time (bounded memory).

    Chunk k is seeded with seed + its first index. `options` go to `Imagen.sample`;
    `low_res` (for `first_stage` > 0) is split with the prompts; `bar` counts the images.
    """
    parts = []
    for start in range(0, len(prompts), chunk):
        given = {} if low_res is None else {"low_res": low_res[start : start + chunk]}
        chunk_prompts = prompts[start : start + chunk]
        parts.append(model.sample(chunk_prompts, seed=seed + start, **given, **options)[-1].cpu())
        if bar is not None:
            bar.update(len(chunk_prompts))
    return torch.cat(parts)


def sample_to_folder(
    out: str | Path,
    checkpoint: str | Path | None = None,
    prompts: list[str] | None = None,
    prompts_file: str | Path | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    guidance_weight: float | None = None,
    guidance_interval: tuple[float, float] | None = None,
    thresholding: str = "dynamic",
    sampler: str | list[str] | None = None,
    steps: int | list[int] | None = None,
) -> Path:
    """Sample from a checkpoint (default: the shipped one) into grids and an .npz in OUT.

    The grids show the first SAMPLE_CHUNK images (every stage's); samples.npz holds every
    final image as uint8 (N, C, H, W) with its prompt. Returns the grid's path.
    """
    checkpoint = existing_checkpoint(checkpoint)
    prompts = read_prompts(prompts, prompts_file)
    if at_least(num_samples, 1, "--num-samples") is not None:
        prompts = [prompts[i % len(prompts)] for i in range(num_samples)]
    if guidance_weight is not None:
        check_guidance_weight(guidance_weight)
    if guidance_interval is not None:
        guidance_interval = check_guidance_interval(guidance_interval)
    for count in steps if isinstance(steps, list) else [steps]:
        at_least(count, 1, "--steps", " (sampling steps per stage)")
    check_seed(seed)
    out = writable_folder(out)
    print(f"loading checkpoint {checkpoint} and its text encoder ...", flush=True)
    model = load_imagen(checkpoint, weights="ema", device=default_device())
    print(f"sampling with {describe_plan(model.sampling_plan(sampler, steps))}", flush=True)
    options = dict(
        guidance_weight=guidance_weight,
        guidance_interval=guidance_interval,
        thresholding=thresholding,
        sampler=sampler,
        steps=steps,
        progress=True,
    )
    started = time.perf_counter()
    shown = model.sample(prompts[:SAMPLE_CHUNK], seed=seed, **options)  # every stage: the grids
    images = shown[-1].cpu()
    if len(prompts) > SAMPLE_CHUNK:  # the rest, seeded as final_images seeds its chunks
        rest = prompts[SAMPLE_CHUNK:]
        more = final_images(model, rest, seed + SAMPLE_CHUNK, chunk=SAMPLE_CHUNK, **options)
        images = torch.cat([images, more])
    seconds = time.perf_counter() - started
    if not all(torch.isfinite(stage).all() for stage in [*shown, images]):
        raise ValueError(
            f"the samples contain NaN or infinite values (are {checkpoint}'s weights diverged?): "
            "nothing was saved"
        )
    out.mkdir(parents=True, exist_ok=True)
    columns = 8 if len(shown[-1]) % 8 == 0 else min(len(shown[-1]), 10)
    for index, stage_images in enumerate(shown):
        save_grid(stage_images, out / f"grid_stage{index}.png", columns)
    grid = save_grid(shown[-1], out / "grid.png", columns)
    pixels = ((images * 0.5 + 0.5) * 255).round().clamp(0, 255).numpy().astype(np.uint8)
    np.savez(out / "samples.npz", images=pixels, prompts=np.array(prompts))
    grids = f" (the grids show the first {SAMPLE_CHUNK})" if len(prompts) > SAMPLE_CHUNK else ""
    print(f"{len(prompts)} samples in {seconds:.1f} s -> {grid}, {out / 'samples.npz'}{grids}")
    return grid

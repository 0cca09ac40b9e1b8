"""Plumbing, not a lesson: exporting a trained cascade as a small file for sampling.

A training checkpoint holds the raw weights, the EMA weights and the optimiser states; an
export keeps only what sampling needs (config, encoder name, EMA weights), about a third of
the size. The shipped cascades in data/ are exports. Unlike most plumbing this module builds
on a taught one (`imagen_lib.checkpoint`, to read the checkpoints it exports), so no taught
module imports it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

from imagen_lib import checkpoint
from imagen_lib.plumbing.errors import BadFile, BadSetting
from imagen_lib.plumbing.files import (
    SHIPPED_CASCADES,
    atomic_save,
    existing_checkpoint,
    writable_file,
)
from imagen_lib.plumbing.plans import stages_with
from imagen_lib.plumbing.safe_loading import load_file
from imagen_lib.plumbing.setting_checks import check_guidance_interval, check_guidance_weight

if TYPE_CHECKING:
    from imagen_lib.cascade import ImagenConfig


def export_for_sampling(
    training_checkpoint: str | Path,
    path: str | Path,
    guidance_weights: float | list[float] | None = None,
    sampler: str | list[str] | None = None,
    sampling_steps: int | list[int] | None = None,
    guidance_interval: tuple[float, float] | None = None,
    overwrite: bool = False,
    stages_from: dict[int, str | Path] | None = None,
    half_precision: bool = False,
) -> Path:
    """Write a small file with only what sampling needs: config, encoder name, EMA weights.

    The recommended sampling settings found by evaluating the trained cascade (per stage: a
    guidance weight, the sampler and its steps, each one value for every stage or one per
    stage; one guidance interval for every stage, which goes with the stages' own weights)
    can be written into its config here; they become the defaults of `Imagen.sample` and of
    sampling from the command line. The settings and the output path are checked before the
    file is read.

    `stages_from` maps a stage to another run of the same cascade whose EMA weights of that
    stage replace this one's: stages trained apart (training only that stage, into another
    folder, on another core or machine) become one cascade. The checkpoints may be given by a
    shipped cascade's name ("scenes").

    `half_precision` stores the weights as 16-bit floats, half the file (the colour cascade in
    data/ is stored so, to keep the repository small). Loading widens them back to 32 bits,
    so sampling computes as before, from weights rounded to about three significant digits.

    A file already at `path` (an earlier export, a shipped cascade, a training checkpoint)
    is replaced only with `overwrite=True`, and the input itself never (its training state
    would be lost); a link, a pipe or a device never.
    """
    path = writable_file(path, "imagen_mnist.pt")
    training_checkpoint = existing_checkpoint(training_checkpoint)
    sources = {stage: existing_checkpoint(source) for stage, source in (stages_from or {}).items()}
    check_export_target(training_checkpoint, path, overwrite)
    for weight in guidance_weights if isinstance(guidance_weights, list) else [guidance_weights]:
        if weight is not None:
            check_guidance_weight(weight)
    for steps in sampling_steps if isinstance(sampling_steps, list) else [sampling_steps]:
        if steps is not None and steps < 1:
            raise BadSetting(f"sampling_steps must be at least 1, got {steps}", sampling_steps=None)
    if guidance_interval is not None:
        guidance_interval = check_guidance_interval(guidance_interval)
    payload = checkpoint.read_checkpoint(training_checkpoint)
    if "ema" not in payload:
        raise BadFile(
            f"{training_checkpoint} has no EMA weights",
            "export a checkpoint written by training",
            checkpoint=None,
        )
    config = checkpoint.parse_config(payload["config"], training_checkpoint)
    for stage, source in sources.items():
        payload = with_stage_from(payload, config, stage, source, training_checkpoint)
    stages = stages_with(
        config.stages,
        guidance_weight=guidance_weights,
        sampler=sampler,
        sampling_steps=sampling_steps,
        guidance_interval=guidance_interval,
    )
    config = dataclasses.replace(config, stages=stages)  # a new config: checked as a whole
    if half_precision:
        payload["ema"] = {
            name: weight.half() if weight.is_floating_point() else weight
            for name, weight in payload["ema"].items()
        }
    keep = ("format", "text_encoder", "text_dim", "ema", "preset", "steps")
    return atomic_save(
        {"config": config.to_dict(), **{key: payload[key] for key in keep if key in payload}}, path
    )


def with_stage_from(
    payload: dict, config: ImagenConfig, stage: int, source: Path, path: Path
) -> dict:
    """`payload` (read from `path`) with the EMA weights of `stage` taken from `source`.

    Refused unless `source` is a run of the same cascade (config and text encoder) that
    trained that stage, so the weights fit the network and the text they were trained on.
    """
    if isinstance(stage, bool) or not 0 <= stage < len(config.stages):
        raise BadSetting(
            f"stages_from names stage {stage}, but {path} has stages 0 to {len(config.stages) - 1}",
            "name one of its stages",
            stage_from=None,
        )
    other = checkpoint.read_checkpoint(source)
    if "ema" not in other:
        raise BadFile(
            f"{source} has no EMA weights", "give a checkpoint written by training", stage_from=None
        )
    if checkpoint.parse_config(other["config"], source).to_dict() != config.to_dict():
        raise BadFile(
            f"{source} holds a different cascade from {path} (its config differs)",
            "take stages only from runs of the same preset",
            stage_from=None,
        )
    if (other["text_encoder"], other["text_dim"]) != (payload["text_encoder"], payload["text_dim"]):
        raise BadFile(
            f"{source} was trained with text encoder {other['text_encoder']!r}, {path} with "
            f"{payload['text_encoder']!r}",
            "take stages only from runs with the same encoder",
            stage_from=None,
        )
    trained = other.get("steps", [None] * len(config.stages))[stage]
    if trained == 0:
        raise BadFile(
            f"{source} never trained stage {stage} (0 steps)",
            "give the run that did",
            stage_from=None,
        )
    prefix = f"networks.{stage}."
    ema = {key: value for key, value in payload["ema"].items() if not key.startswith(prefix)}
    ema.update({key: value for key, value in other["ema"].items() if key.startswith(prefix)})
    merged = {**payload, "ema": ema}
    if "steps" in payload:
        merged["steps"] = [
            trained if index == stage else steps for index, steps in enumerate(payload["steps"])
        ]
    return merged


def check_export_target(source: Path, target: Path, overwrite: bool) -> None:
    """Refuse to export over the input, or (unless `overwrite`) over any file already there.

    An export over its own training checkpoint would drop the optimiser states, so the run
    could never be resumed again. Any other file, an earlier export or a shipped cascade
    included, is replaced only when asked to; the error says what it is. `target` is a new
    or regular file (`writable_file` refused the rest), so reading it cannot hang.
    """
    if not target.exists():
        return
    if os.path.samefile(source, target):
        raise BadSetting(
            f"the export {target} is the same file as the checkpoint {source} it exports",
            "it would replace it and lose its training state: choose another out",
            out=None,
        )
    if overwrite:
        return
    shipped = [
        name
        for name, cascade in SHIPPED_CASCADES.items()
        if cascade.exists() and os.path.samefile(cascade, target)
    ]
    if shipped:
        kind = f"the shipped cascade {shipped[0]!r}, which sampling uses by that name"
    else:
        try:
            existing = load_file(target, "checkpoint")
        except ValueError:
            existing = None
        if not isinstance(existing, dict) or existing.get("format") != checkpoint.FORMAT:
            kind = "not an imagen_lib checkpoint"
        elif "optimizers" in existing:
            kind = "a training checkpoint (an export would lose its training state)"
        else:
            kind = "an earlier export"
    raise BadSetting(
        f"the export {target} exists and is {kind}",
        "choose another out, or overwrite it",
        out=None,
        overwrite=True,
    )

"""Plumbing, not a lesson: whether a training checkpoint can be resumed, checked before loading.

`Trainer.resume` (imagen_lib/train.py) restores a run exactly; this module refuses, each in one
line, the files it cannot restore: a damaged file or one of weights only (`training_state`), a
run of another model, another text encoder, other images or other data (`check_resumable`),
one whose encoder width or random generators do not fit the trainer (`check_fits_trainer`),
and optimiser states edited or written by another version (`load_optimizer_states`). All of it
runs before the first tensor is loaded, so a refused resume leaves the trainer as it was.

Unlike most of plumbing/, this module imports taught modules (the checkpoint format and the
presets); the trainer imports it, never the other way round.
"""

from __future__ import annotations

from pathlib import Path

import torch

from imagen_lib.checkpoint import USE_ANOTHER, read_checkpoint
from imagen_lib.plumbing.errors import BadFile, BadSetting
from imagen_lib.plumbing.safe_loading import require_entries
from imagen_lib.presets import Preset
from imagen_lib.text import TextEncoder

# What a training checkpoint holds beyond the weights-only file that `read_checkpoint` checks.
TRAINING_ENTRIES = ("preset", "model", "ema", "scaler", "steps", "generators")


def training_state(path: str | Path) -> dict:
    """A training checkpoint's dictionary, checked as a whole (a weights-only file is refused)."""
    path = Path(path)
    payload = read_checkpoint(path)
    if "optimizers" not in payload:
        raise BadFile(
            f"{path} holds weights only, not a training state",
            "it cannot be resumed: resume a run folder's checkpoint.pt",
        )
    require_entries(payload, TRAINING_ENTRIES, path, USE_ANOTHER)
    return payload


def run_preset(path: str | Path) -> Preset:
    """The preset a run's checkpoint was saved with: its model, and the training settings a
    resume keeps."""
    return Preset.from_dict(training_state(path)["preset"])


def check_resumable(saved: Preset, preset: Preset, path: Path) -> None:
    """Refuse to resume a run saved with `saved` as `preset`, unless both have one model.

    Said in terms of the settings that fix it: the text encoder, the channels, the data, or
    the preset. A run learns one set of images: resuming it on other data is refused too.
    """
    if saved.model.text_encoder != preset.model.text_encoder:
        raise BadSetting(
            f"{path} was trained with text encoder {saved.model.text_encoder!r}, "
            f"not {preset.model.text_encoder!r}",
            "resume with the encoder it was trained with",
            text_encoder=saved.model.text_encoder,
        )
    if saved.model.channels != preset.model.channels:
        raise BadSetting(
            f"{path} was trained on {saved.model.channels}-channel images, not "
            f"{preset.model.channels}",
            "resume with the channels it was trained with",
            channels=saved.model.channels,
        )
    if saved.training.data != preset.training.data:
        # a run on the digits has no data to name: it resumes with data left unset
        own_data = {"data": saved.training.data} if saved.training.data else {}
        raise BadSetting(
            f"{path} was trained on {saved.training.data or 'the digits'}, not "
            f"{preset.training.data or 'the digits'}",
            "resume it on its own data, or train anew into another out",
            **own_data,
            out=None,
        )
    if saved.model != preset.model:
        raise BadSetting(
            f"{path} was trained with a different model config (preset {saved.name!r})",
            "resume with the preset it was trained with, or train anew into another out",
            preset=saved.name,
        )


def check_fits_trainer(
    payload: dict, text_encoder: TextEncoder, generators: list[torch.Generator], path: Path
) -> None:
    """Refuse a training state whose text width or random generators do not fit a trainer's.

    A generator's state has a size for each kind of device: a CUDA run's cannot be set on a
    CPU generator, and the other way round.
    """
    if payload["text_dim"] != text_encoder.dim:
        raise BadSetting(
            f"{path} was trained with text encoder {payload['text_encoder']!r}; "
            f"this run uses {text_encoder.name!r}",
            "resume with the encoder it was trained with",
            text_encoder=payload["text_encoder"],
        )
    for stage, (generator, state) in enumerate(zip(generators, payload["generators"])):
        expected = generator.get_state().numel()
        if state.numel() != expected:
            raise BadSetting(
                f"the random generator state of stage {stage} in {path} has {state.numel()} "
                f"bytes, but a {generator.device.type} generator's has {expected}",
                "resume on the kind of device the run was trained on, or train anew into "
                "another out",
                out=None,
            )


def load_optimizer_states(
    optimizers: list[torch.optim.Optimizer], states: list[dict], path: Path
) -> None:
    """Load each stage's optimiser state, with a one-line error for one that does not fit."""
    for stage, (optimizer, state) in enumerate(zip(optimizers, states)):
        try:
            optimizer.load_state_dict(state)
        except (ValueError, KeyError, TypeError, RuntimeError) as error:
            raise BadFile(
                f"the optimiser state of stage {stage} in {path} does not fit its network "
                f"({' '.join(str(error).split())[:200]})",
                "the file was edited, or written by a different version of imagen_lib",
            ) from error

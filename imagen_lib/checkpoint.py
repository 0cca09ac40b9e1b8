"""Saving and loading an Imagen cascade, safely.

A checkpoint is one file made by `torch.save` holding a dictionary: a format tag, the
cascade's config, the text encoder's name and width, and the networks' weights (training
adds its own entries, such as the EMA weights and optimiser states). It is written to a
temporary file and renamed into place, so an interrupted save (or a full disk) never leaves
a corrupt checkpoint behind, and loading checks the whole file (`validate_checkpoint`) and
says clearly, in one line, what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import torch

from imagen_lib.cascade import Imagen, ImagenConfig, encoder_for
from imagen_lib.plumbing.errors import BadSetting, damaged
from imagen_lib.plumbing.files import atomic_save
from imagen_lib.plumbing.safe_loading import (
    check_finite_weights,
    load_tagged_file,
    load_weights,
    require_entries,
)
from imagen_lib.presets import MAX_STEPS, Preset
from imagen_lib.text import TextEncoder

FORMAT = "imagen_lib-checkpoint-v1"
# What the errors for a damaged checkpoint ask for
USE_ANOTHER = "use another checkpoint"


def model_payload(model: Imagen) -> dict:
    """What any checkpoint holds: enough to rebuild the cascade and its weights."""
    return {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "text_encoder": model.text_encoder.name,
        "text_dim": model.text_encoder.dim,
        "model": model.state_dict(),
    }


def save_imagen(model: Imagen, path: str | Path) -> Path:
    return atomic_save(model_payload(model), path)


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file's dictionary.

    With a clear error for a missing, truncated, foreign or incomplete file.
    """
    path = Path(path)
    train_one = "check the path, or train one with `python -m imagen_lib train`"
    payload = load_tagged_file(path, "checkpoint", FORMAT, "checkpoint.pt", train_one)
    require_entries(payload, ("config", "text_encoder", "text_dim"), path, USE_ANOTHER)
    validate_checkpoint(payload, path)
    return payload


def parse_config(values: object, path: Path) -> ImagenConfig:
    """The cascade config a checkpoint stores, with a one-line error for a damaged one.

    ImagenConfig checks every value's type and range, so a number stored as text (say,
    timesteps "ten") or a negative width fails here, not deep inside torch while the
    networks are built.
    """
    try:
        return ImagenConfig.from_dict(values)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise damaged(path, f"holds an invalid cascade config ({error})", USE_ANOTHER) from error


def validate_checkpoint(payload: dict, path: Path) -> ImagenConfig:
    """Check a checkpoint as a whole, before anything uses it; return its cascade config.

    The one place every reader relies on (load_imagen, export_for_sampling, Trainer.resume,
    the experiments): the config's and the preset's types and ranges, one entry per stage
    in every per-stage list, step counts that agree with the optimisers, finite weights.
    Whatever is out of place is a one-line ValueError naming the file, instead of an error
    from deep inside torch or a resume that silently goes wrong.
    """

    def whole(number: object) -> bool:
        return isinstance(number, int) and not isinstance(number, bool)

    config = parse_config(payload["config"], path)
    stages = len(config.stages)
    if not isinstance(payload["text_encoder"], str) or not payload["text_encoder"]:
        raise damaged(
            path,
            f"names no text encoder (text_encoder is {payload['text_encoder']!r})",
            USE_ANOTHER,
        )
    if not whole(payload["text_dim"]) or payload["text_dim"] < 1:
        raise damaged(
            path,
            f"records text_dim {payload['text_dim']!r}, not a positive whole number",
            USE_ANOTHER,
        )
    for what in ("model", "ema"):
        if what in payload:
            check_finite_weights(payload[what], path, what, "use an earlier checkpoint")
    if "preset" in payload:
        try:
            Preset.from_dict(payload["preset"])
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            raise damaged(path, f"holds an invalid preset ({error})", USE_ANOTHER) from error
    steps = payload.get("steps")
    if "steps" in payload and not (
        isinstance(steps, list)
        and len(steps) == stages
        and all(whole(count) and 0 <= count <= MAX_STEPS for count in steps)
    ):
        raise damaged(
            path,
            f"records steps {steps!r}, not one whole number from 0 to {MAX_STEPS:,} "
            f"per stage ({stages})",
            USE_ANOTHER,
        )
    per_stage = {"optimizers": "optimiser states", "generators": "random generator states"}
    for key, what in per_stage.items():
        if key in payload and (not isinstance(payload[key], list) or len(payload[key]) != stages):
            count = len(payload[key]) if isinstance(payload[key], list) else "no list of"
            raise damaged(path, f"holds {count} {what} for its {stages} stages", USE_ANOTHER)
    for stage, state in enumerate(payload.get("optimizers", [])):
        try:
            taken = max((int(entry["step"]) for entry in state["state"].values()), default=0)
        except (TypeError, KeyError, ValueError, AttributeError, RuntimeError) as error:
            raise damaged(
                path, f"holds a malformed optimiser state for stage {stage}", USE_ANOTHER
            ) from error
        if steps is not None and taken > steps[stage]:
            raise damaged(
                path,
                f"records {steps[stage]} steps for stage {stage}, but its optimiser took {taken}",
                USE_ANOTHER,
            )
    for stage, state in enumerate(payload.get("generators", [])):
        if not (isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.ndim == 1):
            raise damaged(
                path,
                f"holds a random generator state for stage {stage} that is no byte tensor",
                USE_ANOTHER,
            )
    if "scaler" in payload and not isinstance(payload["scaler"], dict):
        raise damaged(path, "holds a loss scaler state that is no dictionary", USE_ANOTHER)
    return config


def load_imagen(
    path: str | Path,
    text_encoder: TextEncoder | None = None,
    weights: str | None = None,
    device: str | torch.device | None = None,
) -> Imagen:
    """Rebuild a cascade from a checkpoint.

    weights: "ema" (the averaged weights training keeps for sampling), "model" (the raw
    trained weights), or None for the EMA weights when the file has them, else the raw ones.
    """
    path = Path(path)
    payload = read_checkpoint(path)  # validated as a whole, config included
    config = parse_config(payload["config"], path)
    if text_encoder is None:
        text_encoder = encoder_for(config, name=payload["text_encoder"])
    if text_encoder.dim != payload["text_dim"]:
        raise BadSetting(
            f"{path} was trained with text encoder {payload['text_encoder']!r} "
            f"({payload['text_dim']}-dim embeddings), but {text_encoder.name!r} gives "
            f"{text_encoder.dim}-dim ones",
            "load it with the encoder it was trained with",
            text_encoder=payload["text_encoder"],
        )
    if weights is None:
        weights = "ema" if "ema" in payload else "model"
    if weights not in payload:
        raise BadSetting(
            f"{path} holds no {weights!r} weights",
            f"it has: {[k for k in ('model', 'ema') if k in payload]}",
        )
    try:
        model = Imagen(config, text_encoder)
    except ValueError as error:  # sizes that fit no network, such as widths and heads
        raise damaged(
            path, f"holds a cascade config whose networks cannot be built ({error})", USE_ANOTHER
        ) from error
    load_weights(model, payload[weights], path, weights)
    return model.to(device) if device is not None else model

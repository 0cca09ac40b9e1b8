"""Plumbing, not a lesson: the range checks of a cascade's configs and of its sampling inputs.

`StageConfig` and `ImagenConfig` (imagen_lib.cascade) call these when they are made, after
`check_types`, as the networks' configs call `check_network`: configs also come from files
(checkpoints, presets), so a damaged value fails here, in one line naming it, not deep
inside torch while the networks are built. Unlike most plumbing this module imports taught
modules (for the names of the schedules, samplers and networks), so only the cascade imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from imagen_lib import diffusion
from imagen_lib.data import height_width, size_text
from imagen_lib.efficient_unet import EfficientUNetConfig
from imagen_lib.layers import check_image, check_levels
from imagen_lib.plumbing.errors import BadSetting
from imagen_lib.plumbing.setting_checks import check_guidance_weight
from imagen_lib.unet import UNetConfig

if TYPE_CHECKING:  # annotations only: the cascade imports this module
    from imagen_lib.cascade import ImagenConfig, StageConfig


def check_stage_settings(stage: StageConfig) -> None:
    """A BadSetting naming the first of a stage's settings out of its range."""
    if min(height_width(stage.image_size)) < 1:
        raise BadSetting(f"image_size must be at least 1, got {stage.image_size}")
    choices = {
        "schedule": diffusion.SCHEDULES,
        "prediction": diffusion.PREDICTIONS,
        "sampler": diffusion.SAMPLERS,
    }
    for name, allowed in choices.items():
        if getattr(stage, name) not in allowed:
            raise BadSetting(f"{name} must be one of {allowed}, got {getattr(stage, name)!r}")
    if stage.timesteps < 2:
        raise BadSetting(f"timesteps must be at least 2, got {stage.timesteps}")
    check_guidance_weight(stage.guidance_weight)
    if stage.sampling_steps is not None and not 1 <= stage.sampling_steps <= stage.timesteps:
        raise BadSetting(
            f"sampling_steps must be between 1 and its schedule's {stage.timesteps}, "
            f"got {stage.sampling_steps}",
            sampling_steps=None,
        )
    for name in ("sampling_augmentation", "max_training_augmentation"):
        if not 0 <= getattr(stage, name) <= 1:
            raise BadSetting(
                f"{name} is a fraction of the schedule in [0, 1], got {getattr(stage, name)}"
            )
    check_levels(stage.image_size, len(stage.network.channel_mults))


def check_cascade_settings(config: ImagenConfig) -> None:
    """A BadSetting (or TypeError, for a stage's network) naming the first setting out of range.

    Each stage, and its network, checked its own values when it was made; this checks what
    the cascade adds: the networks' kinds, the sizes growing stage by stage, the text settings.
    """
    if not config.stages:
        raise BadSetting("a cascade needs at least one stage (the base model)")
    for index, stage in enumerate(config.stages):
        expected = UNetConfig if index == 0 else EfficientUNetConfig
        if not isinstance(stage.network, expected):
            raise TypeError(
                f"stage {index} needs a {expected.__name__} "
                "(stage 0 is the base U-Net, the rest are SR)"
            )
    if config.channels not in (1, 3):
        raise BadSetting(f"channels must be 1 (grey) or 3 (RGB), got {config.channels}")
    if config.max_text_tokens < 1:
        raise BadSetting(
            f"max_text_tokens must be at least 1 (the encoder reads that many tokens of a "
            f"prompt), got {config.max_text_tokens}"
        )
    if not config.text_encoder:
        raise BadSetting("text_encoder is empty", "name an encoder, such as 'minilm'")
    if config.text_encoder_layers is not None and config.text_encoder_layers < 0:
        raise BadSetting(
            f"text_encoder_layers must be at least 0 (0 keeps the encoder's embedding layer "
            f"only) or None for all layers, got {config.text_encoder_layers}"
        )
    sizes = [height_width(stage.image_size) for stage in config.stages]
    if any(
        later[0] <= earlier[0] or later[1] <= earlier[1] for earlier, later in zip(sizes, sizes[1:])
    ):
        raise BadSetting(
            "stage image sizes must strictly increase through the cascade, got "
            + ", ".join(size_text(size) for size in sizes)
        )
    if not 0 <= config.text_drop_prob < 1:
        raise BadSetting(f"text_drop_prob must be in [0, 1), got {config.text_drop_prob}")


def check_low_res(
    low_res: torch.Tensor | None, first_stage: int, batch: int, config: ImagenConfig
) -> None:
    """Sampling's given low-resolution images: none from stage 0, else one per prompt.

    Starting at stage k > 0 needs the images stage k - 1 would have made, one for each of
    the `batch` prompts, of that stage's size.
    """
    if first_stage == 0:
        if low_res is not None:
            raise BadSetting(
                "low_res is only for starting at a later stage",
                "also pass first_stage=1 (or later)",
                first_stage=1,
            )
        return
    if low_res is None:
        raise BadSetting(
            f"starting at stage {first_stage} needs low_res: "
            f"the images stage {first_stage - 1} would have made"
        )
    size = config.stages[first_stage - 1].image_size
    check_image(low_res, config.channels, size, f"low_res for stage {first_stage}")
    if len(low_res) != batch:
        raise BadSetting(
            f"give one low-resolution image per prompt: {len(low_res)} images for {batch} prompts"
        )

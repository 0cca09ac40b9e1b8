"""Plumbing, not a lesson: the images a run trains on, and the checks that keep them fair.

The trainer (imagen_lib/train.py, lesson 8) learns whatever images it is given; this module
makes a preset's images (`training_set`), and refuses in one line a set that the cascade
cannot or must not learn. A preset trains on one of:
- the training digits (`data.load_mnist`), at the preset's channels;
- scenes of two digits side by side (TrainConfig.captions "scenes", the `scenes` preset), made
  with the training pairs of `imagen_lib.scenes` only, so the held-out pairs that test binding
  are never seen (`check_training_scenes` refuses a set that shows one);
- colour scenes (captions "colour scenes", the `colour-scenes` preset), made alike with the
  training colour-digit combinations of `imagen_lib.colours` only;
- your own captioned images (TrainConfig.data: a folder, or a torchvision dataset's name),
  read by `imagen_lib.plumbing.datasets` at the preset's size and channels.
Every set is checked against the cascade's images before its captions are encoded
(`training_captions`), so a mismatch is found at once, not at the first step.

Unlike most of plumbing/, this module imports taught modules (the digits, the scenes, the
presets); the trainer imports it, never the other way round.
"""

from __future__ import annotations

import torch

from imagen_lib.colours import (
    ALL_COLOUR_SCENES,
    TRAINING_COLOUR_SCENES,
    held_out_in,
    make_colour_scenes,
)
from imagen_lib.data import (
    IMAGE_SIZE,
    Captions,
    DigitSet,
    Size,
    height_width,
    load_mnist,
    size_text,
)
from imagen_lib.plumbing.datasets import CaptionedImages, LabelCaptions, load_images
from imagen_lib.plumbing.errors import BadSetting
from imagen_lib.presets import Preset, caption_family
from imagen_lib.scenes import HELD_OUT_PAIRS, SCENE_SIZE, TRAINING_PAIRS, SceneCaptions, make_scenes


def training_set(preset: Preset) -> DigitSet | CaptionedImages:
    """The images a preset trains on: the training digits, scenes made from them, or your own.

    Scenes (captions "scenes") pair the digits as TRAINING_PAIRS only, and colour scenes
    (captions "colour scenes") show TRAINING_COLOUR_SCENES only, reproducibly for the run's
    seed, so a resumed run trains on the same scenes. Your own images (TrainConfig.data) come
    at the size and channels of the cascade's last stage, with their captions.
    """
    config = preset.training
    if config.data:
        size = height_width(preset.model.stages[-1].image_size)
        return load_images(config.data, preset.model.channels, size)
    if config.captions == "colour scenes":
        if preset.model.channels != 3:
            raise BadSetting(
                f"colour scenes are RGB images, but preset {preset.name!r} makes "
                f"{preset.model.channels}-channel ones",
                "train colour scenes in 3 channels",
                channels=3,
            )
        grey = load_mnist("train", 1, config.data_source)  # tinted as the scenes are made
        return make_colour_scenes(grey, TRAINING_COLOUR_SCENES, config.scene_count, config.seed)
    digits = load_mnist("train", preset.model.channels, config.data_source)
    if config.captions != "scenes":
        return digits
    return make_scenes(digits, TRAINING_PAIRS, config.scene_count, seed=config.seed)


def training_captions(
    data: DigitSet | CaptionedImages, preset: Preset, image_size: Size
) -> Captions | SceneCaptions | LabelCaptions:
    """The captions training on `data` draws from, once `data` is checked to be learnable.

    Your own images bring their captions; digits and scenes take the family that
    TrainConfig.captions names. Checked against the cascade's images (`image_size`), and for
    scenes against the held-out ones, before the trainer encodes the captions.
    """
    check_training_images(data, preset, image_size)
    if isinstance(data, CaptionedImages):
        return data.captions
    captions = caption_family(preset.training.captions)
    if isinstance(captions, SceneCaptions):
        check_training_scenes(data.labels, captions)
    return captions


def check_training_images(
    data: DigitSet | CaptionedImages, preset: Preset, image_size: Size
) -> None:
    """Refuse an empty training set, or one whose images are not the cascade's (`image_size`)."""
    if len(data) == 0:
        raise BadSetting("the training set is empty", "give a DigitSet with at least one image")
    wanted = (preset.model.channels, *height_width(image_size))
    if tuple(data.images.shape[1:]) != wanted:
        raise BadSetting(
            f"the training images are {tuple(data.images.shape[1:])} (channels, height, "
            f"width), but preset {preset.name!r} makes {wanted}",
            f"load_mnist's digits are {size_text(IMAGE_SIZE)}, make_scenes's scenes of two "
            f"digits (captions 'scenes') {size_text(SCENE_SIZE)}, in 3 channels for "
            "'colour scenes'",
        )


def check_training_scenes(labels: torch.Tensor, captions: SceneCaptions) -> None:
    """Refuse training scenes (labels (N,)) of a held-out pair or combination, or uncaptioned.

    Captions are drawn only for the scenes of the training set, so with no held-out one
    among them no caption of one is ever drawn either.
    """
    if captions.colourings:
        check_training_colour_scenes(labels)
        return
    pairs = [divmod(int(label), 10) for label in labels.unique()]
    held_out = sorted(set(pairs) & set(HELD_OUT_PAIRS))
    if held_out:
        raise BadSetting(
            f"the training scenes include the held-out pairs {held_out}, which test binding "
            "and must never be trained on",
            "make the scenes from scenes.TRAINING_PAIRS",
        )
    captions.check_can_caption(pairs)


def check_training_colour_scenes(labels: torch.Tensor) -> None:
    """Refuse colour scenes (labels (N,)) that show a held-out colour-digit combination."""
    labels = labels.unique().tolist()
    outside = [label for label in labels if not 0 <= label < len(ALL_COLOUR_SCENES)]
    if outside:
        raise BadSetting(
            f"colour scene labels index colours.ALL_COLOUR_SCENES, 0-{len(ALL_COLOUR_SCENES) - 1}: "
            f"got {outside[:5]}",
            "make the scenes with colours.make_colour_scenes",
        )
    held_out = sorted(
        {combination for label in labels for combination in held_out_in(ALL_COLOUR_SCENES[label])}
    )
    if held_out:
        raise BadSetting(
            f"the training scenes show the held-out colour-digit combinations {held_out}, which "
            "test binding and must never be trained on",
            "make the scenes from colours.TRAINING_COLOUR_SCENES",
        )

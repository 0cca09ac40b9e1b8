"""Plumbing, not a lesson: what the sample grids written while training show, and their score.

Every `sample_every` steps the trainer (imagen_lib/train.py) samples a grid with the EMA
weights (`Trainer.write_samples`). This module says which prompts it samples (`grid_prompts`)
and reads the grid with the shipped digit classifier (`grid_score`): the share of digits that
are the prompted digit, or, on scenes, the share of scenes with both digits right (and both
colours, in colour scenes), apart for the training scenes and the held-out ones that test
binding.

Unlike most of plumbing/, this module imports taught modules (the digits, the scenes, the
metrics); the trainer imports it, never the other way round.
"""

from __future__ import annotations

import torch

from imagen_lib.colour_metrics import colour_scene_scores
from imagen_lib.colours import (
    COLOUR_CAPTIONS,
    HELD_OUT_COLOUR_SCENES,
    TRAINING_COLOUR_SCENES,
    asked,
    colour_scene_prompts,
)
from imagen_lib.data import IMAGE_SIZE, NUMBER_WORDS, Captions, resize
from imagen_lib.metrics import load_classifier, prompt_accuracy, scene_scores
from imagen_lib.plumbing.datasets import LabelCaptions
from imagen_lib.plumbing.files import SHIPPED_CLASSIFIER
from imagen_lib.presets import Preset
from imagen_lib.scenes import (
    HELD_OUT_PAIRS,
    TRAINING_PAIRS,
    TRAINING_SCENE_CAPTIONS,
    SceneCaptions,
    scene_prompts,
)

# The grid written while training: every digit as a numeral, a word and two phrasings.
GRID_PROMPTS = (
    [str(digit) for digit in range(10)]
    + list(NUMBER_WORDS)
    + [f"a handwritten {word}" for word in NUMBER_WORDS]
    + [f"the number {digit}" for digit in range(10)]
)
# The grid written while training on scenes, 4 scenes a row (as wide as 8 digits): five
# rows of order and relation prompts of training pairs, then a row of held-out pairs,
# which training never shows: the binding test.
SCENE_GRID_TRAINING = scene_prompts(
    TRAINING_SCENE_CAPTIONS, TRAINING_PAIRS, 20, ("order", "relation")
)
SCENE_GRID_HELD_OUT = scene_prompts(
    TRAINING_SCENE_CAPTIONS, HELD_OUT_PAIRS, 4, ("order", "relation")
)
SCENE_GRID_PROMPTS = [prompt.text for prompt in SCENE_GRID_TRAINING + SCENE_GRID_HELD_OUT]
# The same for colour scenes: five rows of training scenes, then a row that shows held-out
# colour-digit combinations.
COLOUR_GRID_TRAINING = colour_scene_prompts(COLOUR_CAPTIONS, TRAINING_COLOUR_SCENES, 20)
COLOUR_GRID_HELD_OUT = colour_scene_prompts(COLOUR_CAPTIONS, HELD_OUT_COLOUR_SCENES, 4)
COLOUR_GRID_PROMPTS = [prompt.text for prompt in COLOUR_GRID_TRAINING + COLOUR_GRID_HELD_OUT]
# Per family of scenes: the grid's training prompts and held-out prompts, and what each
# part shows, in the words of the score written beside the grid
SCENE_GRIDS = {
    "scenes": (SCENE_GRID_TRAINING, SCENE_GRID_HELD_OUT, ("training pairs", "held-out pairs")),
    "colour scenes": (
        COLOUR_GRID_TRAINING,
        COLOUR_GRID_HELD_OUT,
        ("training scenes", "scenes of held-out combinations"),
    ),
}
SCENE_GRID_COLUMNS = 4


def grid_prompts(
    family: str, captions: Captions | SceneCaptions | LabelCaptions
) -> tuple[list[str], int]:
    """The prompts of the sample grids, and how many columns the grid has.

    For TrainConfig.captions `family` drawing from `captions`: GRID_PROMPTS, the prompts of
    SCENE_GRIDS for a run on scenes, or for your own images the first captions of their
    vocabulary: with class names, a row per caption template.
    """
    if isinstance(captions, LabelCaptions):
        prompts = captions.vocabulary()[: len(GRID_PROMPTS)]
        return prompts, min(len(captions.names), 10)
    if family in SCENE_GRIDS:
        trained, held_out, _ = SCENE_GRIDS[family]
        return [prompt.text for prompt in trained + held_out], SCENE_GRID_COLUMNS
    return GRID_PROMPTS, 10


def grid_score(
    images: torch.Tensor,
    prompts: list[str],
    preset: Preset,
    captions: Captions | SceneCaptions | LabelCaptions,
) -> str:
    """What the shipped digit classifier reads in a grid of `images` (B, C, H, W), in words.

    The grid of `grid_prompts` for a run of `preset` drawing from `captions`. "" where the
    classifier is missing, for your own images (no digits to read), or for digits in colour
    outside colour scenes.
    """
    family = preset.training.captions
    scenes = SCENE_GRIDS.get(family)
    coloured = family == "colour scenes"
    own_images = isinstance(captions, LabelCaptions)
    if (
        own_images
        or not SHIPPED_CLASSIFIER.is_file()
        or not (preset.model.channels == 1 or coloured)
    ):
        return ""
    images = images.float().cpu()
    if not scenes:
        accuracy = prompt_accuracy(load_classifier(), resize(images, IMAGE_SIZE), prompts)
        return f"prompt accuracy {accuracy:.0%} ({len(prompts)} samples, EMA weights)"
    trained, held_out, shown = scenes
    classifier, seen = load_classifier(), len(trained)
    accuracies = []
    for part, part_prompts in ((images[:seen], trained), (images[seen:], held_out)):
        if coloured:
            scores = colour_scene_scores(classifier, part, asked(part_prompts))
        else:
            left, right = [p.left for p in part_prompts], [p.right for p in part_prompts]
            scores = scene_scores(classifier, part, left, right)
        accuracies.append(scores["scene"])
    return (
        f"scene accuracy {accuracies[0]:.0%} on {seen} {shown[0]}, {accuracies[1]:.0%} on "
        f"{len(held_out)} {shown[1]} (EMA weights)"
    )

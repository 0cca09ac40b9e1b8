"""Colour scenes: two digits side by side, each in a named colour that the caption binds to it.

DrawBench, the paper's set of hard prompts (Saharia et al. 2022), has a category about
colours: a model must put each colour on the object that the words attach it to, not merely
use both colours somewhere. Our stand-in tints the real MNIST
digits (`tint`) and sets two of them side by side, as the scenes of `imagen_lib.scenes`,
each in its own colour on a black background. The captions are the scene language with a
colour word before each digit's name:
- "a red 3 then a blue 7" and "blue 7 after red 3" (order);
- "a red 3 to the left of a blue 7" and "a blue 7 to the right of a red 3" (relation).
"a blue 3 to the left of a red 7" has the same words and is another picture: only their
order says which colour goes on which digit, and which digit goes where.

The four colours are corners of the RGB cube, so a simple rule reads them back from the
pixels (`read_colour`), and the brightest channel of a tinted digit is the grey digit it was
made from (`ink`), which the digit classifier reads. A scene is scored slot by slot
(`colour_metrics.colour_binding_scores`): both digits and both colours right, each in its
place, and the colour swap rate: both colours drawn, each on the other slot's digit.

Binding is tested with held-out colour-digit combinations, as `scenes` tests it with held-out
pairs: each digit is never shown in one of the colours, in either slot, yet it is shown in
the three others, and each colour on 7 or 8 digits. A model that draws "a blue 2" right,
never having seen one, has put together a colour and a digit from the words; one that only
recalls which colours each digit came in draws the 2 in another.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from imagen_lib.data import IMAGE_SIZE, DigitSet
from imagen_lib.scene_captions import SceneCaptions, labelled_prompts
from imagen_lib.scene_language import (
    COLOURED_CATEGORIES,
    HELD_OUT_SCENE_TEMPLATES,
    ScenePrompt,
    check_unrepeated,
)
from imagen_lib.scenes import side_by_side

# name -> (red, green, blue) in [0, 1]. Corners of the RGB cube: every colour has a channel
# at full strength, so a digit's ink is its brightest channel (`ink`), and the colours differ
# in which channels are lit, which `read_colour` tells apart whatever the ink's strength.
# Four, not more: the trainer encodes every caption once, and each colour multiplies them.
PALETTE = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
}
COLOURS = tuple(PALETTE)

# (colour, digit), such as ("blue", 2)
Combination = tuple[str, int]
ALL_COMBINATIONS = tuple((colour, digit) for colour in COLOURS for digit in range(10))
# A quarter of the 40 combinations, held out of training: digit d in COLOURS[d mod 4] (red 0,
# green 1, blue 2, yellow 3, red 4, ...). So each digit is held out in one colour and trained
# in the three others, and each colour is held out on 2 or 3 digits and trained on 7 or 8.
HELD_OUT_COMBINATIONS = tuple((COLOURS[digit % len(COLOURS)], digit) for digit in range(10))
TRAINING_COMBINATIONS = tuple(
    combination for combination in ALL_COMBINATIONS if combination not in HELD_OUT_COMBINATIONS
)

# (left digit, right digit, left colour, right colour), such as (3, 7, "red", "blue")
ColourScene = tuple[int, int, str, str]
# The (left colour, right colour) of a scene: always two different colours, so every scene
# asks for colours to be bound, and a swap of them can be seen.
COLOURINGS = tuple((left, right) for left in COLOURS for right in COLOURS if left != right)

# Training phrasings: four of the scene language's (scene_language.SCENE_TEMPLATES), balanced
# by direction as it is: in each category one names the left digit first and one the right.
COLOUR_TEMPLATES = {
    "order": ("{a_left} then {a_right}", "{right} after {left}"),
    "relation": ("{a_left} to the left of {a_right}", "{a_right} to the right of {a_left}"),
}
# Names as numerals only. The trainer encodes every caption once: 12 colourings x 100 pairs
# x 4 templates make 4,800 captions; words too ("a red three") would double the table.
COLOUR_NAME_FORMS = ("{numeral}",)
COLOUR_CAPTIONS = SceneCaptions.build(COLOUR_TEMPLATES, COLOUR_NAME_FORMS, COLOURINGS)
# The scene language's held-out order and relation phrasings, coloured: never trained on.
HELD_OUT_COLOUR_CAPTIONS = SceneCaptions.build(
    {category: HELD_OUT_SCENE_TEMPLATES[category] for category in COLOURED_CATEGORIES},
    COLOUR_NAME_FORMS,
    COLOURINGS,
)

# Every colour scene in label order, the order of the caption families' `scenes`
ALL_COLOUR_SCENES = tuple(
    (left, right, *colours) for left, right, colours in COLOUR_CAPTIONS.scenes
)
LABELS = {scene: label for label, scene in enumerate(ALL_COLOUR_SCENES)}
# (S, 4): each scene's left and right digits and colours (palette indices), by label
PARTS = torch.tensor(
    [(left, right, COLOURS.index(a), COLOURS.index(b)) for left, right, a, b in ALL_COLOUR_SCENES]
)


def held_out_in(scene: ColourScene) -> list[Combination]:
    """The held-out combinations a scene shows: none, one, or one in each slot."""
    left, right, left_colour, right_colour = scene
    slots = [(left_colour, left), (right_colour, right)]
    return [slot for slot in slots if slot in HELD_OUT_COMBINATIONS]


TRAINING_COLOUR_SCENES = tuple(scene for scene in ALL_COLOUR_SCENES if not held_out_in(scene))
HELD_OUT_COLOUR_SCENES = tuple(scene for scene in ALL_COLOUR_SCENES if held_out_in(scene))


# ----- colours and pixels -------------------------------------------------------------------
def colour_indices(names: Sequence[str]) -> torch.Tensor:
    """The palette indices (N,) of colour names (N,), or a ValueError naming an unknown one."""
    unknown = [name for name in names if name not in PALETTE]
    if unknown:
        raise ValueError(f"colours must be some of {COLOURS}, got {unknown}")
    return torch.tensor([COLOURS.index(name) for name in names], dtype=torch.long)


def tint(digits: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Grey digits (N, 1, H, W) in [-1, 1] as RGB images (N, 3, H, W) in colours (N,).

    `colours` are indices into COLOURS. Each pixel's ink, 0 on the background and 1 at the
    core of a stroke, scales the colour: the background stays black and a stroke's soft edge
    is a darker shade of the same colour.
    """
    if digits.dim() != 4 or digits.shape[1] != 1:
        raise ValueError(
            f"tint colours grey digits (N, 1, H, W), got shape {tuple(digits.shape)}: "
            "load them with load_mnist(channels=1)"
        )
    colours = torch.as_tensor(colours, dtype=torch.long)
    outside = colours.numel() and not (0 <= colours.min() and colours.max() < len(COLOURS))
    if colours.shape != (len(digits),) or outside:
        raise ValueError(
            f"colours must be one palette index 0-{len(COLOURS) - 1} per digit "
            f"({len(digits)}), got {colours.tolist()}"
        )
    palette = torch.tensor(list(PALETTE.values()), dtype=digits.dtype, device=digits.device)
    ink = (digits + 1) / 2  # (N, 1, H, W) in [0, 1]
    rgb = palette[colours.to(digits.device)][:, :, None, None]  # (N, 3, 1, 1)
    return ink * rgb * 2 - 1  # (N, 3, H, W) in [-1, 1]


def ink(images: torch.Tensor) -> torch.Tensor:
    """The grey digits (N, 1, H, W) of colour images (N, 3, H, W): each pixel's brightest channel.

    Of a tinted digit this is exactly the grey digit it was made from. The digit classifier
    reads shapes in grey; its own grey, the mean of the channels, would show a red digit a
    third as bright as it is.
    """
    return images.amax(dim=1, keepdim=True)


# What `read_colour` says of an image with no colour of the palette to read
NO_COLOUR = -1
# `read_colour` averages the brightest 5% of an image's pixels: the core of the strokes, as
# a 32x32 digit's strokes cover about 15% of it.
INK_SHARE = 0.05
# Below a quarter of full strength, the brightest pixels are background, not ink.
MIN_INK = 0.25
# A hue further than this from every palette colour is none of them: white or grey ink
# (1 from yellow, the nearest), or a mix half way between two colours, such as orange (0.5
# from red and from yellow).
MAX_HUE_DISTANCE = 0.4


def read_colour(images: torch.Tensor) -> torch.Tensor:
    """The palette colour (N,) of images (N, 3, H, W) in [-1, 1] of one digit each.

    The rule: average the colour of the brightest INK_SHARE of the pixels (the core of the
    strokes), divide it by its brightest channel, so that a faint stroke reads like a bright
    one, and take the nearest palette colour. NO_COLOUR where even those pixels are darker
    than MIN_INK (no ink, no colour), or where the nearest palette colour is further than
    MAX_HUE_DISTANCE (ink of a colour not in the palette).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"read_colour reads RGB images (N, 3, H, W), got shape {tuple(images.shape)}"
        )
    pixels = (images.detach().float().cpu().flatten(2) * 0.5 + 0.5).clamp(0, 1)  # (N, 3, HW)
    brightness = pixels.amax(dim=1)  # (N, HW)
    count = max(1, round(INK_SHARE * brightness.shape[1]))
    brightest = brightness.topk(count, dim=1).indices  # (N, k)
    colour = pixels.gather(2, brightest[:, None, :].expand(-1, 3, -1)).mean(dim=2)  # (N, 3)
    strength = colour.amax(dim=1)  # (N,)
    hue = colour / strength.clamp(min=1e-6)[:, None]  # (N, 3), its brightest channel 1
    palette = torch.tensor(list(PALETTE.values()))  # (K, 3)
    distance, read = torch.cdist(hue, palette).min(dim=1)  # (N,), (N,)
    unreadable = (strength < MIN_INK) | (distance > MAX_HUE_DISTANCE)
    return torch.where(unreadable, NO_COLOUR, read)


# ----- colour scenes ------------------------------------------------------------------------
def check_colour_scenes(scenes: Sequence[ColourScene]) -> list[int]:
    """The labels of colour scenes, or a ValueError saying what is wrong with them."""
    if len(scenes) == 0:
        raise ValueError(
            "the list of colour scenes is empty: give at least one "
            "(left digit, right digit, left colour, right colour)"
        )
    labels = []
    for scene in scenes:
        scene = tuple(scene)
        if scene not in LABELS:
            raise ValueError(
                "a colour scene is (left digit, right digit, left colour, right colour), the "
                f"digits 0-9 and the colours two different ones of {COLOURS}; got {scene!r}"
            )
        labels.append(LABELS[scene])
    check_unrepeated([ALL_COLOUR_SCENES[label] for label in labels], "colour scenes")
    return labels


def make_colour_scenes(
    digits: DigitSet, scenes: Sequence[ColourScene], count: int, seed: int = 0
) -> DigitSet:
    """`count` colour scenes (N, 3, 32, 64), reproducible for a seed.

    Each scene is drawn uniformly from `scenes`, each of its two digits uniformly from the
    images of that class in the grey `digits` (load_mnist's, 1 channel), then tinted in its
    colour. The labels index ALL_COLOUR_SCENES (`parts` splits them).
    """
    labels = torch.tensor(check_colour_scenes(scenes))
    if count < 1:
        raise ValueError(f"count must be at least 1 scene, got {count}")
    if digits.images.dim() != 4 or digits.images.shape[1] != 1:
        raise ValueError(
            f"colour scenes are tinted from grey digits (N, 1, 32, 32), got images of shape "
            f"{tuple(digits.images.shape)}: load them with load_mnist(channels=1)"
        )
    generator = torch.Generator().manual_seed(seed)
    chosen = labels[torch.randint(len(labels), (count,), generator=generator)]  # (N,)
    left, right, left_colour, right_colour = parts(chosen)
    grey = side_by_side(digits, left, right, generator)  # (N, 1, 32, 64)
    images = torch.cat(
        [tint(grey[..., :IMAGE_SIZE], left_colour), tint(grey[..., IMAGE_SIZE:], right_colour)],
        dim=-1,
    )  # (N, 3, 32, 64)
    return DigitSet(images=images, labels=chosen, source=digits.source)


def parts(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The left and right digits and colours (palette indices), each (N,), of labels (N,)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < len(LABELS)):
        raise ValueError(
            f"a colour scene's label indexes ALL_COLOUR_SCENES, 0-{len(LABELS) - 1}; "
            f"got {labels.tolist()}"
        )
    left, right, left_colour, right_colour = PARTS[labels].unbind(dim=-1)
    return left, right, left_colour, right_colour


# ----- captions and evaluation prompts ------------------------------------------------------
def colour_scene_prompts(
    family: SceneCaptions, scenes: Sequence[ColourScene], count: int, seed: int = 0
) -> list[ScenePrompt]:
    """`count` prompts of a colour family for some colour scenes, reproducible for a seed.

    Order and relation captions take turns, each cycling through the scenes in a seeded
    shuffle (`scene_captions.labelled_prompts`).
    """
    if family.colourings != COLOURINGS:
        raise ValueError("colour scene prompts come from a family of colour scenes")
    return labelled_prompts(family, check_colour_scenes(scenes), count, seed=seed)


def asked(
    prompts: Sequence[ScenePrompt],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What colour scene prompts ask for: the left and right digits and colours, each (N,)."""
    uncoloured = [prompt.text for prompt in prompts if prompt.colours is None]
    if uncoloured:
        raise ValueError(f"these prompts give no colours: {uncoloured[:3]}")
    return (
        torch.tensor([prompt.left for prompt in prompts], dtype=torch.long),
        torch.tensor([prompt.right for prompt in prompts], dtype=torch.long),
        colour_indices([prompt.colours[0] for prompt in prompts]),
        colour_indices([prompt.colours[1] for prompt in prompts]),
    )


COLOUR_EVALUATION_SETS = ("training", "held-out combinations", "held-out phrasings")


def colour_evaluation_prompts(count: int = 1000, seed: int = 0) -> dict[str, list[ScenePrompt]]:
    """`count` prompts for each evaluation set, keyed as in COLOUR_EVALUATION_SETS.

    - "training": training scenes, training phrasings;
    - "held-out combinations": scenes showing a held-out combination in one slot or both,
      in training phrasings: the binding test;
    - "held-out phrasings": training scenes in the scene language's held-out order and
      relation phrasings (each of its types, synonym, new word and inverted, about a third).
    """
    return {
        "training": colour_scene_prompts(COLOUR_CAPTIONS, TRAINING_COLOUR_SCENES, count, seed),
        "held-out combinations": colour_scene_prompts(
            COLOUR_CAPTIONS, HELD_OUT_COLOUR_SCENES, count, seed
        ),
        "held-out phrasings": colour_scene_prompts(
            HELD_OUT_COLOUR_CAPTIONS, TRAINING_COLOUR_SCENES, count, seed
        ),
    }

"""Scoring colour scenes: the digit and the colour in each slot, against what the caption asked.

The colour counterpart of lesson 10's scene metrics (`metrics.binding_scores`). DrawBench's
"Colors" prompts (Saharia et al. 2022) ask a model to put each colour on the object the
words attach it to. In a colour scene (`imagen_lib.colours`) the classifier reads each
half's digit from its ink (`colours.ink`), and `colours.read_colour` reads its colour from
its pixels: a scene is right with both digits and both colours right, each in its slot, and
the colour swap rate counts the colours drawn on each other's digits.
"""

from __future__ import annotations

import torch

from imagen_lib.classifier import DigitClassifier, classify
from imagen_lib.colours import COLOURS, ink, read_colour
from imagen_lib.data import check_digits
from imagen_lib.metrics import binding_scores, scene_halves

# What a colour scene shows, or what its caption asks for, slot by slot: (left digits, right
# digits, left colours, right colours), each (N,), the colours as indices into colours.COLOURS.
Slots = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def read_colour_scenes(model: DigitClassifier, scenes: torch.Tensor) -> Slots:
    """What colour scenes (N, 3, H, 2H) show in each slot: the digit and the colour.

    The classifier reads each half's ink (`colours.ink`, its grey digit); `colours.read_colour`
    its colour (colours.NO_COLOUR where it has no ink).
    """
    if scenes.dim() != 4 or scenes.shape[1] != 3:
        raise ValueError(f"colour scenes are (N, 3, H, 2H), got shape {tuple(scenes.shape)}")
    left, right = scene_halves(scenes.cpu())
    return (
        classify(model, ink(left)),
        classify(model, ink(right)),
        read_colour(left),
        read_colour(right),
    )


def colour_binding_scores(drawn: Slots, asked: Slots) -> dict[str, float]:
    """Scores of what colour scenes show against what their captions asked for, per slot.

    "scene": the share with both digits and both colours right, each in its slot;
    "digits": the share with both digits right (`binding_scores`' "scene");
    "colours": the share with both colours right;
    "colour_left", "colour_right": the share whose colour in that slot is right;
    "colour_swap": among scenes that ask for two different colours, the share that drew both,
        each in the other's slot: the colours bound to the wrong digits. A scene drawn as
        the mirror image of its caption (digits and colours both exchanged) counts here and
        in the digit swap rate. NaN if no scene asks for two colours.
    """
    if len({len(slot) for slot in (*drawn, *asked)}) != 1:
        raise ValueError(
            "drawn and asked hold four slots' values (left and right digits and colours), "
            f"one per scene, got lengths {[len(slot) for slot in (*drawn, *asked)]}"
        )
    right = torch.stack([shown == wanted for shown, wanted in zip(drawn, asked)]).all(dim=0)
    digits = binding_scores(drawn[0], drawn[1], asked[0], asked[1])
    colours = binding_scores(drawn[2], drawn[3], asked[2], asked[3])  # per slot, as digits are
    return {
        "scene": right.float().mean().item(),
        "digits": digits["scene"],
        "colours": colours["scene"],
        "colour_left": colours["left"],
        "colour_right": colours["right"],
        "colour_swap": colours["swap"],
    }


def colour_scene_scores(
    model: DigitClassifier, scenes: torch.Tensor, asked: Slots
) -> dict[str, float]:
    """`colour_binding_scores` of colour scenes (N, 3, H, 2H) drawn for `asked`.

    `asked` as `colours.asked` gives it for the scenes' prompts.
    """
    count = len(scenes)
    asked = (
        check_digits(asked[0], "left", count).cpu(),
        check_digits(asked[1], "right", count).cpu(),
        _colours(asked[2], count, "left colours"),
        _colours(asked[3], count, "right colours"),
    )
    return colour_binding_scores(read_colour_scenes(model, scenes), asked)


def _colours(values, count: int, what: str) -> torch.Tensor:
    """`values` as a (count,) long tensor of palette indices, or a ValueError naming `what`."""
    colours = torch.as_tensor(values, dtype=torch.long).cpu()
    if colours.shape != (count,) or not all(0 <= c < len(COLOURS) for c in colours.tolist()):
        raise ValueError(
            f"{what} must hold one palette index 0-{len(COLOURS) - 1} per scene ({count}), "
            f"got {colours.tolist()}"
        )
    return colours

"""Two digits side by side: a world where the words of a caption, and their order, matter.

With one digit per picture a text encoder only has to recognise a name: "7", "seven" and
"a handwritten Seven" all mean the same picture. The paper's hard prompts (DrawBench,
Saharia et al. 2022, in categories such as "Positional" and "Colors") are about
composition instead: which object is where, which colour belongs to which object. Our
stand-in is a scene of two MNIST digits, left and right, 32x64 pixels (the base stage
works at 16x32), described by captions whose meaning depends on order and on relations:
- "order":    "3 7", "a 3 then a 7", and, naming the right digit first, "7 after 3";
- "relation": "a 3 to the left of a 7" and "a 7 to the right of a 3" are the same picture,
              while "a 7 to the left of a 3" is the opposite one: the same words, bound the
              other way;
- "number":   "37", "thirty-seven", "the number 37" (only when the left digit is 1-9);
- "repeat":   "two 5s", "a pair of fives", "5 twice" (only when both digits are equal).

A scene is labelled by its pair index, 10 * left + right, so a set of scenes is a plain
`DigitSet` that the trainer batches like single digits. The captions' grammar and the
held-out phrasings are `imagen_lib.scene_language`; the families of captions the trainer
draws from, with the interface of `data.Captions`, are `imagen_lib.scene_captions`.

Binding is tested with held-out pairs: 20 of the 100 ordered pairs never appear in
training, in any phrasing, yet each of their digits is seen in both slots and each of
their reverses is seen too. A model that draws "a 3 to the left of a 6" right, having only
seen a 6 left of a 3, has bound the digits to the slots the words say; one that has only
learned which digits go together draws them the wrong way round (see
`metrics.scene_scores`, swap rate). Separately, a set of held-out phrasings per category,
as `data.HELD_OUT_TEMPLATES` is for single digits, measures how far the text conditioning
generalises to wordings it never saw.

`imagen_lib.colours` puts each digit in a named colour, in the same captions ("a red 3 to
the left of a blue 7"): a `SceneCaptions` with `colourings` describes those scenes.

This module makes the pictures, names the held-out pairs, and draws the evaluation prompts;
lesson 10 also finds here, imported, the names it uses of the other two (`SceneCaptions`,
`SCENE_TEMPLATES`, `TRAINING_SCENE_CAPTIONS`, `TRAINING_NAME_FORMS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from imagen_lib.data import IMAGE_SIZE, DigitSet, check_digits
from imagen_lib.scene_captions import (
    HELD_OUT_CAPTIONS_BY_PHRASING,
    SCENE_CAPTIONS,
    scene_prompts,
)
from imagen_lib.scene_captions import TRAINING_NAME_FORMS as TRAINING_NAME_FORMS
from imagen_lib.scene_captions import TRAINING_SCENE_CAPTIONS as TRAINING_SCENE_CAPTIONS
from imagen_lib.scene_captions import SceneCaptions as SceneCaptions
from imagen_lib.scene_language import (
    ALL_PAIRS,
    CATEGORIES,
    HELD_OUT_PHRASINGS,
    Pair,
    ScenePrompt,
    check_pairs,
)
from imagen_lib.scene_language import SCENE_TEMPLATES as SCENE_TEMPLATES

SCENE_SIZE = (IMAGE_SIZE, 2 * IMAGE_SIZE)  # (height, width): two 32x32 digits side by side

# A fifth of the ordered pairs, held out of training. Each digit is held out once three and
# once four places after itself, so every digit stays in training in both slots (8 times
# each), no pair of equal digits is held out, and every reverse (b, a) is trained, being
# 7 or 6 places on: the model has seen both digits of a held-out pair, the other way round.
HELD_OUT_PAIRS = tuple(
    sorted((left, (left + shift) % 10) for left in range(10) for shift in (3, 4))
)
TRAINING_PAIRS = tuple(pair for pair in ALL_PAIRS if pair not in HELD_OUT_PAIRS)


def pair_labels(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Pair indices 10 * left + right (N,) of left and right digits (N,)."""
    return 10 * check_digits(left, "left") + check_digits(right, "right")


def left_right(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The left and right digits (N,), (N,) of pair indices (N,) in 0-99."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) <= 99):
        raise ValueError(f"a pair index is 10 * left + right, in 0-99; got {labels.tolist()}")
    return labels // 10, labels % 10


def make_scenes(digits: DigitSet, pairs: Sequence[Pair], count: int, seed: int = 0) -> DigitSet:
    """`count` scenes (N, C, 32, 64) of two digits side by side, reproducible for a seed.

    Each scene's pair is drawn uniformly from `pairs`, then each of its two digits
    uniformly from the images of that class in `digits` (32x32, as load_mnist gives them).
    The labels are pair indices, 10 * left + right: `left_right` splits them.
    """
    pairs = check_pairs(pairs)
    if count < 1:
        raise ValueError(f"count must be at least 1 scene, got {count}")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.tensor(pairs)[torch.randint(len(pairs), (count,), generator=generator)]
    left, right = chosen[:, 0], chosen[:, 1]  # (N,), (N,)
    images = side_by_side(digits, left, right, generator)  # (N, C, 32, 64)
    return DigitSet(images=images, labels=pair_labels(left, right), source=digits.source)


def side_by_side(
    digits: DigitSet, left: torch.Tensor, right: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Scenes (N, C, 32, 64) showing the digits `left` (N,) and `right` (N,) side by side.

    Each digit is an image of its class drawn uniformly from `digits` (32x32, as load_mnist
    gives them) with `generator`, the left ones first.
    """
    if tuple(digits.images.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"scenes are made of {IMAGE_SIZE}x{IMAGE_SIZE} digits (as load_mnist gives them), "
            f"got images of shape {tuple(digits.images.shape)}"
        )
    counts = torch.bincount(digits.labels, minlength=10)  # (10,) images per class
    missing = [digit for digit in torch.cat([left, right]).unique().tolist() if counts[digit] == 0]
    if missing:
        raise ValueError(f"the digit set has no image of {missing}, which the scenes need")
    by_class = torch.argsort(digits.labels, stable=True)  # image indices, grouped by class
    starts = counts.cumsum(0) - counts  # (10,) where each class's group begins

    def one_of_class(labels: torch.Tensor) -> torch.Tensor:
        # float64: a float32 draw just under 1, times a class of 6,000, can round up to 6,000
        offset = torch.rand(len(labels), generator=generator, dtype=torch.float64) * counts[labels]
        return by_class[starts[labels] + offset.long()]  # (N,) image indices

    return torch.cat(
        [digits.images[one_of_class(left)], digits.images[one_of_class(right)]], dim=-1
    )  # (N, C, 32, 64)


def word_blind_order(prompts: Sequence[ScenePrompt]) -> dict[str, float]:
    """The conditional order accuracy of two readers that ignore every word but the digits.

    Both draw the two digits named; only their order can be wrong. Over the prompts whose
    digits differ:
    - "first named": puts the digit named first on the left. On captions balanced by
      direction it scores about 50%; on captions that always name the left digit first, 100%.
    - "trained layout": knows only which two digits are named, and draws the one layout of
      them that training showed, or either at random when training showed both (or
      neither). It scores 100% on a trained pair whose reverse is held out, and 0% on that
      held-out pair: what recalling pictures instead of reading words looks like.
    NaN if no prompt's digits differ.
    """
    trained = set(TRAINING_PAIRS)
    first_named, recalled = [], []
    for prompt in prompts:
        if prompt.left == prompt.right:
            continue
        first_named.append(0.0 if prompt.right_first else 1.0)
        forward = (prompt.left, prompt.right) in trained
        backward = (prompt.right, prompt.left) in trained
        recalled.append(0.5 if forward == backward else float(forward))
    if not first_named:
        return {"first named": math.nan, "trained layout": math.nan}
    return {
        "first named": sum(first_named) / len(first_named),
        "trained layout": sum(recalled) / len(recalled),
    }


EVALUATION_SETS = ("training", "held-out pairs", "held-out numbers", "held-out phrasings")


def scene_evaluation_prompts(count: int = 1000, seed: int = 0) -> dict[str, list[ScenePrompt]]:
    """`count` prompts for each evaluation set, keyed as in EVALUATION_SETS.

    - "training": every category, training pairs, training phrasings;
    - "held-out pairs": held-out pairs written in order and relation captions (training
      phrasings): the binding test;
    - "held-out numbers": held-out pairs written as numbers. Reported apart, because a
      held-out number is a token the encoder never saw with a picture ("fourteen", "25"),
      not only a new arrangement of known ones;
    - "held-out phrasings": every category, training pairs, held-out phrasings: each type
      of HELD_OUT_PHRASINGS takes an equal share (a quarter each), so every type is
      measured on as many scenes as the others.
    """
    shares = [count // len(HELD_OUT_PHRASINGS)] * len(HELD_OUT_PHRASINGS)
    for i in range(count % len(HELD_OUT_PHRASINGS)):
        shares[i] += 1
    held_out_phrasings = [
        prompt
        for family, share in zip(HELD_OUT_CAPTIONS_BY_PHRASING.values(), shares)
        for prompt in scene_prompts(family, TRAINING_PAIRS, share, seed=seed)
    ]
    return {
        "training": scene_prompts(SCENE_CAPTIONS, TRAINING_PAIRS, count, CATEGORIES, seed),
        "held-out pairs": scene_prompts(
            SCENE_CAPTIONS, HELD_OUT_PAIRS, count, ("order", "relation"), seed
        ),
        "held-out numbers": scene_prompts(SCENE_CAPTIONS, HELD_OUT_PAIRS, count, ("number",), seed),
        "held-out phrasings": held_out_phrasings,
    }

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
`DigitSet` that the trainer batches like single digits; `SceneCaptions` has the
interface of `data.Captions` (`vocabulary()`, `draw(labels, generator)`).

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
"""

from __future__ import annotations

import math
import numbers
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from imagen_lib.data import IMAGE_SIZE, NAME_FORMS, NUMBER_WORDS, DigitSet

SCENE_SIZE = (IMAGE_SIZE, 2 * IMAGE_SIZE)  # (height, width): two 32x32 digits side by side

Pair = tuple[int, int]  # (left digit, right digit)

ALL_PAIRS = tuple((left, right) for left in range(10) for right in range(10))

# A fifth of the ordered pairs, held out of training. Each digit is held out once three and
# once four places after itself, so every digit stays in training in both slots (8 times
# each), no pair of equal digits is held out, and every reverse (b, a) is trained, being
# 7 or 6 places on: the model has seen both digits of a held-out pair, the other way round.
HELD_OUT_PAIRS = tuple(
    sorted((left, (left + shift) % 10) for left in range(10) for shift in (3, 4))
)
TRAINING_PAIRS = tuple(pair for pair in ALL_PAIRS if pair not in HELD_OUT_PAIRS)

CATEGORIES = ("order", "relation", "number", "repeat")
# The categories whose captions can give each digit a colour (imagen_lib.colours)
COLOURED_CATEGORIES = ("order", "relation")

# Training phrasings, balanced by direction: in the order and relation categories half the
# templates name the left digit first and half the right one ("{right} after {left}"), so a
# reader that puts the first-named digit on the left is right half the time, never always.
# The relation templates come in mirror pairs: exchanging "left" and "right" gives a caption
# of the reversed picture, so which digit goes where is told by the order of the words,
# never by which words there are.
# A template's fields are the names of the scene's digits, written in one of
# data.NAME_FORMS ("3", "three", "Three", "THREE"):
#   {left} {right}      the left and right digits;          "3", "seven"
#   {a_left} {a_right}  the same with their article;        "a 3", "an eight"
#   {number}            the two-digit number 10*left+right; "37", "thirty-seven"
#   {digit} {plural}    the repeated digit, one or several;  "5", "fives"
SCENE_TEMPLATES = {
    "order": (
        "{left} {right}",
        "{a_left} then {a_right}",
        "{left} followed by {right}",
        "{left} before {right}",
        "{right} after {left}",
        "{right}, preceded by {left}",
        "{a_right} with {a_left} before it",
        "{right} following {left}",
    ),
    "relation": (
        "{a_left} to the left of {a_right}",
        "{a_right} to the right of {a_left}",
        "{a_left} on the left and {a_right} on the right",
        "{a_right} on the right and {a_left} on the left",
        "{left} left of {right}",
        "{right} right of {left}",
        "{a_left} with {a_right} on its right",
        "{a_right} with {a_left} on its left",
        "{left} on the left, {right} on the right",
        "{right} on the right, {left} on the left",
        "on the left {a_left}, on the right {a_right}",
        "on the right {a_right}, on the left {a_left}",
    ),
    "number": (
        "{number}",
        "the number {number}",
        "number {number}",
        "the two-digit number {number}",
        "a handwritten {number}",
        "write {number}",
    ),
    "repeat": (
        "two {plural}",
        "a pair of {plural}",
        "{digit} twice",
        "double {digit}",
        "{digit} two times",
        "{digit} repeated",
    ),
}

# Phrasings that no training caption uses: report them, never train on them. Each has a
# type, and within each order/relation type half name the right digit first:
# - "synonym": a training relation said with other words ("placed", "sits", "side");
# - "new word": order said with a word that no training caption has ("precedes", "ahead");
# - "inverted": a training construction turned around ("to the left of a 7 is a 3");
# - "paraphrase": numbers and repeats in other words (they have no direction to balance).
HELD_OUT_PHRASINGS = {
    "synonym": {
        "relation": (
            "{a_left} placed to the left of {a_right}",
            "{a_right} sits to the right of {a_left}",
            "{a_left} on the left side and {a_right} on the right side",
            "{a_right} on the right side and {a_left} on the left side",
        ),
    },
    "new word": {
        "order": (
            "{left} precedes {right}",
            "{right} trailing {left}",
            "{left} ahead of {right}",
            "{right} later than {left}",
        ),
    },
    "inverted": {
        "order": (
            "after {left} comes {right}",
            "before {right} comes {left}",
        ),
        "relation": (
            "to the right of {a_left} is {a_right}",
            "to the left of {a_right} is {a_left}",
        ),
    },
    "paraphrase": {
        "number": (
            "the value {number}",
            "show me {number}",
            "a drawing of the number {number}",
            "my number is {number}",
        ),
        "repeat": (
            "{digit} and another {digit}",
            "two copies of the digit {digit}",
            "a couple of {plural}",
        ),
    },
}
PHRASINGS = ("training", *HELD_OUT_PHRASINGS)
# The same templates by category, as SCENE_TEMPLATES is
HELD_OUT_SCENE_TEMPLATES = {
    category: tuple(
        text
        for by_category in HELD_OUT_PHRASINGS.values()
        for text in by_category.get(category, ())
    )
    for category in ("order", "relation", "number", "repeat")
}
_PHRASING_OF = {
    text: phrasing
    for phrasing, by_category in HELD_OUT_PHRASINGS.items()
    for texts in by_category.values()
    for text in texts
}

# The fields each category may use, and the groups it must use at least one field of: an
# order or relation caption names both digits, a repeat caption the repeated one.
_PAIR_FIELDS = ({"left", "a_left"}, {"right", "a_right"})
_FIELDS = {
    "order": ({"left", "right", "a_left", "a_right"}, _PAIR_FIELDS),
    "relation": ({"left", "right", "a_left", "a_right"}, _PAIR_FIELDS),
    "number": ({"number"}, ({"number"},)),
    "repeat": ({"digit", "plural"}, ({"digit", "plural"},)),
}

TEENS = (
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


# ----- pairs and scenes ---------------------------------------------------------------
def check_digit(digit: int, what: str = "a digit") -> int:
    """The digit as an int, or a ValueError naming `what` if it is not a whole number 0-9."""
    if isinstance(digit, bool) or not isinstance(digit, numbers.Integral) or not 0 <= digit <= 9:
        raise ValueError(f"{what} must be a digit 0-9, got {digit!r}")
    return int(digit)


def check_pairs(pairs: Sequence[Pair]) -> list[Pair]:
    """The pairs as a list of (left, right) tuples, or a ValueError saying what is wrong."""
    if len(pairs) == 0:
        raise ValueError("the list of pairs is empty: give at least one (left, right) pair")
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"a pair is (left digit, right digit), got {pair!r}")
    pairs = [
        (
            check_digit(left, f"the left digit of {(left, right)}"),
            check_digit(right, f"the right digit of {(left, right)}"),
        )
        for left, right in pairs
    ]
    check_unrepeated(pairs, "pairs")
    return pairs


def check_unrepeated(items: Sequence, what: str) -> None:
    """Refuse items (pairs, scenes) that appear more than once, naming them as `what`.

    A repeated item would silently be drawn twice as often as the others.
    """
    repeated = sorted(item for item, times in Counter(items).items() if times > 1)
    if repeated:
        raise ValueError(f"{what} appear more than once: {repeated}")


def pair_labels(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Pair indices 10 * left + right (N,) of left and right digits (N,)."""
    left, right = torch.as_tensor(left, dtype=torch.long), torch.as_tensor(right, dtype=torch.long)
    for name, digits in (("left", left), ("right", right)):
        if digits.numel() and not (0 <= int(digits.min()) and int(digits.max()) <= 9):
            raise ValueError(f"{name} digits must be 0-9, got {digits.tolist()}")
    return 10 * left + right


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


# ----- captions -----------------------------------------------------------------------
def number_words(number: int) -> str:
    """0-99 in English words: "seven", "thirteen", "forty", "thirty-seven"."""
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= 99:
        raise ValueError(f"number_words spells 0-99, got {number!r}")
    if number < 10:
        return NUMBER_WORDS[number]
    if number < 20:
        return TEENS[number - 10]
    tens, ones = divmod(number, 10)
    return TENS[tens] if ones == 0 else f"{TENS[tens]}-{NUMBER_WORDS[ones]}"


def written(numeral: str, word: str, form: str) -> str:
    """A name in one of data.NAME_FORMS: "{numeral}" -> "37", "{Word}" -> "Thirty-seven"."""
    return form.format(numeral=numeral, word=word, Word=word.capitalize(), WORD=word.upper())


def article(digit: int) -> str:
    """ "an" before a digit whose name starts with a vowel sound (8, eight), else "a".

    Only eight does: "one" starts with a w sound ("a one").
    """
    return "an" if digit == 8 else "a"


def applies(category: str, left: int, right: int) -> bool:
    """Whether captions of a category can describe the pair (left, right)."""
    if category == "number":
        return left >= 1  # "07" is not how anyone writes seven
    if category == "repeat":
        return left == right
    return True


@dataclass(frozen=True)
class SceneTemplate:
    """One phrasing of a category, such as ("relation", "{a_left} to the left of {a_right}").

    `phrasing` is "training" or the type of a held-out phrasing (HELD_OUT_PHRASINGS).
    """

    category: str
    text: str
    phrasing: str = "training"

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"a category is one of {CATEGORIES}, got {self.category!r}")
        if self.phrasing not in PHRASINGS:
            raise ValueError(f"a phrasing is one of {PHRASINGS}, got {self.phrasing!r}")
        allowed, required = _FIELDS[self.category]
        fields = {name for _, name, _, _ in string.Formatter().parse(self.text) if name is not None}
        if not fields <= allowed or not all(fields & group for group in required):
            raise ValueError(
                f"a {self.category} template may use the fields {sorted(allowed)}, and must use "
                f"one of each of {[sorted(group) for group in required]}; "
                f"{self.text!r} uses {sorted(fields)}"
            )

    @property
    def right_first(self) -> bool | None:
        """Whether the caption names the right digit first; None where it has no direction.

        Number captions name the left digit first ("37"); repeats have no order to tell.
        """
        if self.category == "repeat":
            return None
        fields = [name for _, name, _, _ in string.Formatter().parse(self.text) if name]
        return fields[0] in ("right", "a_right")

    def fill(self, left: int, right: int, form: str, colours: tuple[str, str] | None = None) -> str:
        """The caption of the pair (left, right), its names written in `form` (from NAME_FORMS).

        With `colours`, the (left, right) digits' colours in a colour scene
        (`imagen_lib.colours`), each name follows its digit's colour: {a_left} is "a red 3"
        and {left} "red 3". Only order and relation captions take colours: a number or a
        repeat names no one digit to put a colour on.
        """
        check_digit(left, "the left digit")
        check_digit(right, "the right digit")
        if not applies(self.category, left, right):
            raise ValueError(f"a {self.category} caption cannot describe the pair {left} {right}")
        names = [written(str(digit), NUMBER_WORDS[digit], form) for digit in (left, right)]
        articles = [article(left), article(right)]
        if colours is not None:
            if self.category not in COLOURED_CATEGORIES:
                raise ValueError(
                    f"a {self.category} caption names no one digit to colour: colour scenes "
                    f"are described by {' and '.join(COLOURED_CATEGORIES)} captions"
                )
            names = [f"{colour} {name}" for colour, name in zip(colours, names)]
            # the article now stands before the colour: "a red 8", where "an 8"
            articles = ["an" if colour[0] in "aeiou" else "a" for colour in colours]
        fields = {
            "left": names[0],
            "right": names[1],
            "a_left": f"{articles[0]} {names[0]}",
            "a_right": f"{articles[1]} {names[1]}",
            "digit": names[0],
        }
        if self.category == "number":
            number = 10 * left + right
            fields["number"] = written(str(number), number_words(number), form)
        if self.category == "repeat":
            word = NUMBER_WORDS[left]  # six -> sixes, the others take an s
            fields["plural"] = written(
                f"{left}s", word + ("es" if word.endswith("x") else "s"), form
            )
        return self.text.format(**fields)

    def prompt(
        self, left: int, right: int, form: str, colours: tuple[str, str] | None = None
    ) -> ScenePrompt:
        """`fill`'s caption with its meaning."""
        text = self.fill(left, right, form, colours)
        return ScenePrompt(
            text, left, right, self.category, self.phrasing, self.right_first, colours
        )


@dataclass(frozen=True)
class ScenePrompt:
    """A caption and what it means: the picture (left, right), its category, and its phrasing.

    `right_first` says whether the caption names the right digit first (None for repeats);
    `colours` are the (left, right) digits' colours in a colour scene, None in a grey one.
    """

    text: str
    left: int
    right: int
    category: str
    phrasing: str = "training"
    right_first: bool | None = None
    colours: tuple[str, str] | None = None


@dataclass(frozen=True)
class SceneCaptions:
    """A family of scene captions, with the interface of data.Captions.

    Every template that applies to a scene, filled with every name form, for every scene:
    the 100 pairs (held-out pairs included: the table of caption embeddings may hold them,
    but the trainer draws captions only for the labels of its scenes, which are training
    pairs), or, for a family of colour scenes, the 100 pairs in each of its `colourings`.
    Templates that do not apply to a pair (repeat for 3 7, number for 0 7) get no caption
    for it, so ids are not a product of sizes as in data.Captions: `first_ids` maps a scene
    and a template to the id of its first form.
    """

    templates: tuple[SceneTemplate, ...]
    forms: tuple[str, ...]
    # Each template's relative weight, where it applies. The default gives every category
    # that applies to a pair the same share, split evenly between its templates.
    template_weights: tuple[float, ...]
    # For colour scenes (imagen_lib.colours): the (left colour, right colour) of each
    # colouring. Empty for grey scenes, labelled by their pair index 0-99; a colour scene's
    # label is 100 * its colouring's index + its pair index (`scenes` lists them in order).
    colourings: tuple[tuple[str, str], ...] = ()

    @classmethod
    def build(
        cls,
        templates: dict[str, tuple[str, ...]],
        forms: tuple[str, ...] = NAME_FORMS,
        colourings: tuple[tuple[str, str], ...] = (),
    ) -> SceneCaptions:
        """A family from {category: template texts}, categories weighted equally."""
        return cls(
            tuple(
                SceneTemplate(category, text, _PHRASING_OF.get(text, "training"))
                for category in templates
                for text in templates[category]
            ),
            forms,
            tuple(1 / len(texts) for texts in templates.values() for _ in texts),
            colourings,
        )

    def __post_init__(self) -> None:
        if not self.templates or not self.forms:
            raise ValueError("a caption family needs at least one template and one name form")
        if len(self.template_weights) != len(self.templates):
            raise ValueError(
                f"{len(self.templates)} templates but {len(self.template_weights)} weights"
            )
        uncoloured = set(self.categories) - set(COLOURED_CATEGORIES)
        if self.colourings and uncoloured:
            raise ValueError(
                f"a family of colour scenes has {' and '.join(COLOURED_CATEGORIES)} templates "
                f"only (they name each digit, to colour it), got {sorted(uncoloured)}"
            )

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(template.category for template in self.templates))

    @cached_property
    def scenes(self) -> tuple[tuple[int, int, tuple[str, str] | None], ...]:
        """Every scene the family describes, by label: (left, right, colours or None)."""
        return tuple(
            (left, right, colours)
            for colours in self.colourings or (None,)
            for left, right in ALL_PAIRS
        )

    @cached_property
    def first_ids(self) -> torch.Tensor:
        """(S, T): the id of the first caption of each scene and template; -1 where none."""
        ids = torch.full((len(self.scenes), len(self.templates)), -1, dtype=torch.long)
        next_id = 0
        for label, (left, right, _) in enumerate(self.scenes):
            for t, template in enumerate(self.templates):
                if applies(template.category, left, right):
                    ids[label, t] = next_id
                    next_id += len(self.forms)
        return ids

    @cached_property
    def scene_weights(self) -> torch.Tensor:
        """(S, T): each template's weight for each scene, 0 where it does not apply."""
        return (self.first_ids >= 0) * torch.tensor(self.template_weights)

    def prompts(self) -> list[ScenePrompt]:
        """Every caption with its meaning, in id order."""
        return [
            template.prompt(left, right, form, colours)
            for left, right, colours in self.scenes
            for template in self.templates
            if applies(template.category, left, right)
            for form in self.forms
        ]

    def vocabulary(self) -> list[str]:
        """Every caption, in id order."""
        return [prompt.text for prompt in self.prompts()]

    def check_can_caption(self, pairs: Sequence[Pair]) -> None:
        """Raise a ValueError if some pair has no caption here (call once, before `draw`)."""
        cannot = [
            (left, right)
            for left, right in check_pairs(pairs)
            if not self.scene_weights[10 * left + right].any()
        ]
        if cannot:
            raise ValueError(f"this caption family has no caption for the pairs {cannot}")

    def draw(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random caption id (B,) per scene label (B,), on the labels' device.

        Only templates that apply to a pair are drawn for it (per-scene weights). The labels
        are not checked here, which would wait for the device at every training step: check
        the pairs once with `check_can_caption`.
        """
        weights = self.scene_weights.to(labels.device)[labels]  # (B, T)
        template = torch.multinomial(weights, 1, generator=generator).squeeze(1)  # (B,)
        # (B,)
        form = torch.randint(
            len(self.forms), (len(labels),), generator=generator, device=labels.device
        )
        return self.first_ids.to(labels.device)[labels, template] + form


SCENE_CAPTIONS = SceneCaptions.build(SCENE_TEMPLATES)
HELD_OUT_SCENE_CAPTIONS = SceneCaptions.build(HELD_OUT_SCENE_TEMPLATES)

# What the trainer draws from (TrainConfig.captions "scenes"), and its twin in the held-out
# phrasings: numerals and lower-case words only. MiniLM lower-cases its input, so "Seven"
# and "SEVEN" would only repeat "seven", doubling the table of caption embeddings (5,200
# captions instead of 10,400) for nothing.
TRAINING_NAME_FORMS = ("{numeral}", "{word}")
TRAINING_SCENE_CAPTIONS = SceneCaptions.build(SCENE_TEMPLATES, TRAINING_NAME_FORMS)
# One family per type of held-out phrasing, in all of NAME_FORMS (for evaluation)
HELD_OUT_CAPTIONS_BY_PHRASING = {
    phrasing: SceneCaptions.build(templates) for phrasing, templates in HELD_OUT_PHRASINGS.items()
}
HELD_OUT_TRAINING_SCENE_CAPTIONS = SceneCaptions.build(
    HELD_OUT_SCENE_TEMPLATES, TRAINING_NAME_FORMS
)


# ----- evaluation prompts -------------------------------------------------------------
def scene_prompts(
    family: SceneCaptions,
    pairs: Sequence[Pair],
    count: int,
    categories: Sequence[str] | None = None,
    seed: int = 0,
) -> list[ScenePrompt]:
    """`count` prompts of a family of grey scenes for some pairs, reproducible for a seed.

    `labelled_prompts` for the pairs' labels, 10 * left + right.
    """
    if family.colourings:
        raise ValueError(
            "this family describes colour scenes: draw its prompts with "
            "colours.colour_scene_prompts, which names each scene's colours too"
        )
    labels = [10 * left + right for left, right in check_pairs(pairs)]
    return labelled_prompts(family, labels, count, categories, seed)


def labelled_prompts(
    family: SceneCaptions,
    labels: Sequence[int],
    count: int,
    categories: Sequence[str] | None = None,
    seed: int = 0,
) -> list[ScenePrompt]:
    """`count` prompts of a family for some of its scenes, given by their labels.

    The labels index `family.scenes`. The categories take turns; each cycles through the
    scenes it applies to (in a seeded shuffle), so the scenes appear equally often, with a
    random template of the category and a random name form. Reproducible for a seed.
    """
    outside = [label for label in labels if not 0 <= label < len(family.scenes)]
    if outside:
        raise ValueError(f"scene labels must be in 0-{len(family.scenes) - 1}, got {outside}")
    if count < 0:
        raise ValueError(f"count must be 0 or more prompts, got {count}")
    categories = tuple(categories) if categories is not None else family.categories
    unknown = [category for category in categories if category not in family.categories]
    if unknown or not categories:
        raise ValueError(f"categories must be some of {family.categories}, got {categories}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator).tolist()
    pools = {}
    for category in categories:
        pools[category] = (
            [labels[i] for i in order if applies(category, *family.scenes[labels[i]][:2])],
            [template for template in family.templates if template.category == category],
        )
        if not pools[category][0]:
            pairs = [family.scenes[label][:2] for label in labels]
            raise ValueError(f"no {category} caption describes any of the pairs {pairs}")
    prompts = []
    for i in range(count):
        category = categories[i % len(categories)]
        category_labels, templates = pools[category]
        left, right, colours = family.scenes[
            category_labels[i // len(categories) % len(category_labels)]
        ]
        template = templates[int(torch.randint(len(templates), (), generator=generator))]
        form = family.forms[int(torch.randint(len(family.forms), (), generator=generator))]
        prompts.append(template.prompt(left, right, form, colours))
    return prompts


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

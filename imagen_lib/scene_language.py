"""The scene language: captions that say which digit is where, and the phrasings held out.

Lesson 10. The paper's hard prompts (DrawBench, Saharia et al. 2022) are about composition:
which object is where, which colour belongs to which object. A caption of a scene of two
digits means a pair (left digit, right digit), said in one of four categories of phrasing
(order, relation, number, repeat; see `imagen_lib.scenes` for examples). A `SceneTemplate`
is one phrasing with fields for the digits' names, which it fills for a pair in one of
`data.NAME_FORMS` ("3", "three", "Three", "THREE"); a `ScenePrompt` is the caption with its
meaning. Held-out phrasings, never trained on, measure how far the text conditioning
generalises to wordings it never saw, as `data.HELD_OUT_TEMPLATES` does for single digits.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from imagen_lib.data import NUMBER_WORDS, check_digit, written

Pair = tuple[int, int]  # (left digit, right digit)

ALL_PAIRS = tuple((left, right) for left in range(10) for right in range(10))


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


# ----- phrasings ----------------------------------------------------------------------------
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


def phrasing_of(text: str) -> str:
    """The type of held-out phrasing a template's text is (HELD_OUT_PHRASINGS), or "training"."""
    return _PHRASING_OF.get(text, "training")


# ----- filling a template ------------------------------------------------------------------
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

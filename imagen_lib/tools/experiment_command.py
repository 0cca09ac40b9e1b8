"""`python -m imagen_lib experiment NAME`: its options, and which experiment each name runs.

Three kinds of experiment share the command: the paper's findings
(`experiments.run_experiment`), the scaling grid (`scaling.run_scaling`, or its pilot
learning curve) and the embedding probe (`probe.run_probe`, which trains no image model).
Each takes only some of the options: `RUNNERS` maps every name to the function that refuses
the options its experiment does not take and calls it by keyword.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from imagen_lib.diffusion import THRESHOLDINGS
from imagen_lib.tools.commands import CLASSIFIER, GUIDANCE, SHIPPED

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


def run_probe(args: argparse.Namespace) -> None:
    from imagen_lib.tools.probe import DEFAULT_SEEDS, DEFAULT_STEPS, DEFAULT_WIDTHS, run_probe

    # the probe trains no image model: the options about one would be silently ignored
    ignored = ", ".join(
        "--" + option.replace("_", "-")
        for option in PROBE_IGNORES
        if getattr(args, option) is not None
    )
    if ignored:
        raise ValueError(f"{ignored} do not apply to the probe, which trains no image model")
    run_probe(
        encoders=args.encoders or (),
        seeds=DEFAULT_SEEDS if args.seeds is None else args.seeds,
        widths=args.widths or DEFAULT_WIDTHS,
        steps=DEFAULT_STEPS if args.steps is None else args.steps,
        out=args.out,
    )


def refuse_probe_options(args: argparse.Namespace) -> None:
    if args.widths is not None or args.steps is not None:
        raise ValueError(f"--widths and --steps set the probe's reader; {args.name} has none")


def run_scaling(args: argparse.Namespace) -> None:
    from imagen_lib.tools.scaling import SCALING_SAMPLES, learning_curve, run_scaling

    refuse_probe_options(args)
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


def run_finding(args: argparse.Namespace) -> None:
    from imagen_lib.tools.experiments import run_experiment

    refuse_probe_options(args)
    if args.rows is not None or args.curve is not None:
        raise ValueError(
            f"--rows and --curve belong to the scaling experiment; {args.name} has neither"
        )
    run_experiment(
        args.name,
        checkpoint=args.checkpoint,
        seeds=3 if args.seeds is None else args.seeds,
        num_samples=200 if args.num_samples is None else args.num_samples,
        guidance=args.guidance,
        thresholding=args.thresholding,
        levels=args.levels,
        encoders=args.encoders,
        settings=args.settings,
        reuse=args.reuse,
        train_steps=args.train_steps,
        runs=args.runs,
        out=args.out,
        classifier=args.classifier,
    )


def runners() -> dict[str, Callable[[argparse.Namespace], None]]:
    """Every experiment's name, and the function that runs it from the command's options."""
    from imagen_lib.tools.experiments import EXPERIMENTS

    return {**dict.fromkeys(EXPERIMENTS, run_finding), "scaling": run_scaling, "probe": run_probe}


def run_experiment(args: argparse.Namespace) -> None:
    runners()[args.name](args)


# fmt: off
def experiment_options(experiment: argparse.ArgumentParser) -> None:
    """The options of every experiment; each experiment's runner refuses those it ignores."""
    from imagen_lib.tools import experiments, probe
    from imagen_lib.tools.scaling import (
        HUB_ENCODERS,
        MAX_SEEDS,
        SCALING_GUIDANCE,
        SCALING_ROWS,
        SCALING_SAMPLES,
    )

    experiment.add_argument("name", choices=list(runners()),
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
# fmt: on

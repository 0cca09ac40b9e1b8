"""`python -m imagen_lib experiment NAME`: every experiment in one registry, and its options.

Three kinds of experiment share the command: the paper's six findings (findings.py runs
what experiments.py measures), the scaling grid with its pilot learning curve (scaling.py)
and the embedding probe (probe.py, which trains no image model). Each is an
`experiment_spine.Experiment` in `EXPERIMENTS`, the one table the command reads: its
options dataclass says which options it takes. The command passes those by keyword and
refuses any other option given, so none is silently ignored.
"""

from __future__ import annotations

import argparse
import dataclasses

from imagen_lib.diffusion import THRESHOLDINGS
from imagen_lib.tools import findings, probe, scaling
from imagen_lib.tools.commands import CLASSIFIER, GUIDANCE, SHIPPED
from imagen_lib.tools.experiment_spine import Experiment
from imagen_lib.tools.findings import finding

# Every experiment by its name, in the order `experiment --help` lists them
EXPERIMENTS: dict[str, Experiment] = {
    experiment.name: experiment
    for experiment in (
        finding("guidance", findings.measure_guidance, guidance=findings.GUIDANCE_WEIGHTS),
        finding("augmentation", findings.measure_augmentation, retrains=True),
        finding("language", findings.measure_language, retrains=True, phrasings=True),
        finding("sampler", findings.measure_sampler),
        finding("prediction", findings.measure_prediction, retrains=True),
        finding("conditioning", findings.measure_conditioning, retrains=True, phrasings=True),
        Experiment("scaling", scaling.ScalingOptions, scaling.measure_scaling),
        Experiment("probe", probe.ProbeRunOptions, probe.measure_probe),
    )
}


def taken(experiment: Experiment) -> list[str]:
    """The options an experiment takes: its options dataclass's fields."""
    return [field.name for field in dataclasses.fields(experiment.options)]


def flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def run_experiment(args: argparse.Namespace) -> None:
    """Run experiment `args.name` with the options given, by keyword; refuse the others."""
    experiment = EXPERIMENTS[args.name]
    options = {option for every in EXPERIMENTS.values() for option in taken(every)}
    # None: not given (argparse's default), so the experiment's own default applies
    given = {key: value for key, value in vars(args).items() if key in options}
    given = {key: value for key, value in given.items() if value is not None}
    refused = [option for option in given if option not in taken(experiment)]
    if refused:
        raise ValueError(
            f"{', '.join(map(flag, refused))} {'does' if len(refused) == 1 else 'do'} not "
            f"apply to experiment {experiment.name}, which takes "
            f"{', '.join(map(flag, taken(experiment)))}"
        )
    experiment.run(experiment.options(**given))


def defaults(values: object) -> str:
    """How argparse's %(default)s shows a default list."""
    return str(list(values))


# fmt: off
def experiment_options(experiment: argparse.ArgumentParser) -> None:
    """The options of every experiment; `run_experiment` refuses those one does not take.

    Options default to None (not given), so that each experiment's options dataclass sets
    its own default; the help says what that is.
    """
    experiment.add_argument("name", choices=list(EXPERIMENTS),
                            help="which finding; probe: what each frozen text encoder's tokens "
                                 "say about a scene, read by a small trained reader (no images)")
    experiment.add_argument("--checkpoint",
                            help=f"default: {SHIPPED}; scaling: a scenes checkpoint whose "
                                 "recipe to scale (default: the scenes preset's)")
    experiment.add_argument("--seeds", type=int,
                            help=f"seeds per setting (default: 3; probe: {probe.DEFAULT_SEEDS}, "
                                 f"at most {probe.MAX_SEEDS}; scaling: each row's own, at "
                                 f"most {scaling.MAX_SEEDS})")
    experiment.add_argument("--num-samples", type=int,
                            help="samples per setting and seed (default: 200; scaling: "
                                 f"{scaling.SCALING_SAMPLES} scenes per set)")
    experiment.add_argument("--guidance", type=float, nargs="+",
                            help=f"guidance, scaling: weights, {GUIDANCE}; augmentation: the base "
                                 "stage's weights (default: the checkpoint's; guidance "
                                 f"{' '.join(f'{w:g}' for w in findings.GUIDANCE_WEIGHTS)}; "
                                 f"scaling {' '.join(f'{w:g}' for w in scaling.SCALING_GUIDANCE)})")
    experiment.add_argument("--thresholding", nargs="+", choices=THRESHOLDINGS,
                            help="guidance: modes (default: "
                                 f"{defaults(findings.THRESHOLDINGS)})")
    experiment.add_argument("--levels", type=float, nargs="+",
                            help="augmentation: SR noise levels in [0, 1] (default: "
                                 f"{defaults(findings.AUGMENTATION_LEVELS)})")
    experiment.add_argument("--encoders", nargs="+",
                            help="language: text encoders (default: "
                                 f"{' '.join(findings.ENCODERS)}); scaling: encoders to add "
                                 f"as rows, such as {' '.join(scaling.HUB_ENCODERS)}; probe: "
                                 "encoders to add to MiniLM (random, 0 layers, all) and MPNet "
                                 "if installed (default: none)")
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
                                 f"({'; '.join(row.name for row in scaling.SCALING_ROWS)}) "
                                 "(default: all)")
    experiment.add_argument("--settings", nargs="+", metavar="SAMPLER:STEPS[:THRESHOLDING]",
                            help="sampler, prediction: settings to compare (default: "
                                 + "; ".join(f"{name}: {' '.join(settings)}" for name, settings
                                             in findings.SAMPLING_SETTINGS.items()) + ")")
    experiment.add_argument("--reuse", nargs="+", metavar="SAMPLER:STEPS[:THRESHOLDING]",
                            help="sampler: take these rows from the earlier OUT/sampler.json "
                                 "(default: none)")
    experiment.add_argument("--train-steps", type=int,
                            help="steps for the stages it trains (default: the recipe's)")
    experiment.add_argument("--runs",
                            help="where trained stages are kept (default: runs/experiments)")
    experiment.add_argument("--out", default="runs/results",
                            help="where the JSON and plots go (default: %(default)s)")
    experiment.add_argument("--classifier", help=CLASSIFIER)
# fmt: on

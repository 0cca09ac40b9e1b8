"""Running one finding: `python -m imagen_lib experiment NAME` for the six of experiments.py.

Plumbing around lesson 9's module: experiments.py measures (the sweeps, and the stages they
retrain); this module turns the command's options into a measurement and its files. Each
finding is an `experiment_spine.Experiment` (`finding`) whose options are `FindingOptions`:
`run_finding` checks them, runs the shared preparation step (`experiment_spine.prepare`),
loads the checkpoint's cascade to sample as every finding samples, measures, and writes
OUT/NAME.json with NAME.png and NAME_examples.png.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from imagen_lib.cascade import Imagen, default_device
from imagen_lib.checkpoint import load_imagen
from imagen_lib.diffusion import check_guidance_weight
from imagen_lib.metrics import Scorer
from imagen_lib.plumbing.errors import damaged
from imagen_lib.plumbing.files import existing_checkpoint, writable_folder
from imagen_lib.presets import Preset
from imagen_lib.tools import results
from imagen_lib.tools.common import at_least, machine_description, training_recipe
from imagen_lib.tools.drawing import parse_sampler_setting
from imagen_lib.tools.experiment_spine import Experiment, prepare
from imagen_lib.tools.experiments import (
    AugmentationRow,
    GuidanceRow,
    PhrasingRow,
    PredictionRow,
    SamplerRow,
    augmentation_models,
    augmentation_sweep,
    conditioning_models,
    encoder_models,
    guidance_sweep,
    lowres_ceiling,
    phrasing_comparison,
    prediction_comparison,
    prediction_models,
    sample_as_measured,
    sampler_sweep,
)

# The default of every finding's swept setting.
GUIDANCE_WEIGHTS = (0, 1, 2, 3, 5, 8, 12, 20)
THRESHOLDINGS = ("dynamic", "static", "none")
AUGMENTATION_LEVELS = (0, 0.1, 0.2, 0.25, 0.4, 0.6)
ENCODERS = ("tiny-t5", "minilm")
SAMPLING_SETTINGS = {  # the settings compared by the experiments that compare sampling
    "sampler": (
        "ddpm:1000",
        "ddpm:50",
        "ddim:10",
        "ddim:15",
        "ddim:25",
        "ddim:50",
        "dpm++:10",
        "dpm++:15",
        "dpm++:25",
    ),
    "prediction": ("ddpm:50", "ddim:10", "ddim:25", "ddim:50", "ddim:25:none"),
}


def measured_with(row: dict) -> tuple[str, int, str]:
    """The sampling setting a sampler-experiment row was measured with.

    As parse_sampler_setting gives it: (sampler, steps, thresholding).
    """
    return row["sampler"], row["steps"], row["thresholding"]


def reused_rows(
    previous: Path, reuse: Sequence[str], setup: dict, settings: list[tuple]
) -> list[dict]:
    """The rows of an earlier `experiment sampler` run for the `reuse` settings.

    They stand in for measuring those settings again. Only rows measured the same way are
    taken: the same `setup` (checkpoint file name, samples per setting and seeds); each
    reused setting must be one of the run's settings.
    """
    if not previous.is_file():
        raise ValueError(
            f"--reuse takes rows from {previous}, which does not exist: run without --reuse first"
        )
    earlier = results.load_results(previous)
    for index, row in enumerate(earlier["rows"]):
        if "thresholding" not in row:  # which measured_with needs
            raise damaged(
                previous,
                f"holds a row that cannot be reused (row {index} lacks 'thresholding')",
                "measure every setting again (leave out --reuse)",
            )
    asked = {key: earlier["settings"].get(key) for key in setup}
    if asked != setup:
        raise ValueError(
            f"{previous} was measured with {asked}, this run uses {setup}: "
            "rows can only be reused from the same setup"
        )
    rows = []
    for setting in (parse_sampler_setting(text, "--reuse") for text in reuse):
        named = ":".join(map(str, setting))
        if setting not in settings:
            raise ValueError(f"--reuse {named} is not one of this run's settings")
        found = [row for row in earlier["rows"] if measured_with(row) == setting]
        if {row["seed"] for row in found} != set(range(setup["seeds"])):
            raise ValueError(
                f"{previous} lacks some seeds of {named}: "
                "measure it again (leave it out of --reuse)"
            )
        rows += found
    return rows


@dataclass(frozen=True)
class FindingOptions:
    """What `experiment NAME` takes for a finding; each finding reads the options it varies."""

    checkpoint: str | Path | None = None  # None: the shipped cascade
    seeds: int = 3
    num_samples: int = 200  # per setting and seed
    guidance: Sequence[float] | None = None  # guidance: the weights; augmentation: the base's
    thresholding: Sequence[str] = THRESHOLDINGS  # guidance
    levels: Sequence[float] = AUGMENTATION_LEVELS  # augmentation
    encoders: Sequence[str] = ENCODERS  # language
    settings: Sequence[str] | None = None  # sampler, prediction (None: SAMPLING_SETTINGS)
    reuse: Sequence[str] | None = None  # sampler: settings whose rows an earlier run measured
    train_steps: int | None = None  # for the stages it trains (None: the recipe's)
    runs: str | Path = "runs/experiments"  # where trained stages are kept
    out: str | Path = "runs/results"  # where the results go
    classifier: str | Path | None = None  # None: the shipped one


@dataclass
class Measurement:
    """What every finding's measurement gets: the cascade, how to score it, and its options."""

    model: Imagen  # the checkpoint's cascade, sampling as every finding samples
    preset: Preset | None  # the checkpoint's training recipe, for the findings that retrain
    scorer: Scorer
    options: FindingOptions
    settings: list[tuple[str, int, str]]  # sampler, prediction: (sampler, steps, thresholding)
    reused: list[dict]  # sampler: rows taken from an earlier run
    runs: Path  # where trained stages are kept
    examples: dict  # the first seed's digits 0-9 per setting, drawn into NAME_examples.png

    @property
    def seeds(self) -> list[int]:
        return list(range(self.options.seeds))


def measure_guidance(run: Measurement) -> list[GuidanceRow]:
    options = run.options
    return guidance_sweep(
        run.model,
        run.scorer,
        options.guidance,
        options.thresholding,
        run.seeds,
        examples=run.examples,
    )


def measure_augmentation(run: Measurement) -> list[AugmentationRow]:
    options = run.options
    models = augmentation_models(run.model, run.preset, run.runs, options.train_steps)
    return augmentation_sweep(
        models,
        run.scorer,
        options.levels,
        run.seeds,
        examples=run.examples,
        base_guidance=options.guidance,
    )


def measure_language(run: Measurement) -> list[PhrasingRow]:
    options = run.options
    models = encoder_models(run.model, run.preset, options.encoders, run.runs, options.train_steps)
    weight = run.model.config.stages[0].guidance_weight
    return phrasing_comparison(
        models, run.scorer, run.seeds, "encoder", guidance_weight=weight, examples=run.examples
    )


def measure_conditioning(run: Measurement) -> list[PhrasingRow]:
    models = conditioning_models(run.model, run.preset, run.runs, run.options.train_steps)
    weight = run.model.config.stages[0].guidance_weight
    return phrasing_comparison(
        models, run.scorer, run.seeds, "conditioning", guidance_weight=weight, examples=run.examples
    )


def measure_sampler(run: Measurement) -> list[SamplerRow]:
    kept = {measured_with(row) for row in run.reused}
    to_measure = [setting for setting in run.settings if setting not in kept]
    return run.reused + sampler_sweep(
        run.model, run.scorer, to_measure, run.seeds, examples=run.examples
    )


def measure_prediction(run: Measurement) -> list[PredictionRow]:
    models = prediction_models(run.model, run.preset, run.runs, run.options.train_steps)
    return prediction_comparison(models, run.scorer, run.settings, run.seeds, examples=run.examples)


@dataclass(frozen=True)
class Finding:
    """How one finding is measured, and what it needs first."""

    name: str
    measure: Callable[[Measurement], list]
    retrains: bool = False  # trains stages first, following the checkpoint's recipe
    phrasings: bool = False  # compares phrasings: its file records the low-res ceiling too
    guidance: Sequence[float] | None = None  # its guidance weights when none are given


def finding(
    name: str,
    measure: Callable[[Measurement], list],
    retrains: bool = False,
    phrasings: bool = False,
    guidance: Sequence[float] | None = None,
) -> Experiment[FindingOptions]:
    """Finding `name`, measured by `measure`, as an `Experiment` of the command's registry."""
    how = Finding(name, measure, retrains, phrasings, guidance)
    return Experiment(name, FindingOptions, partial(run_finding, how))


def checked_options(name: str, options: FindingOptions) -> tuple[list[tuple[str, int, str]], Path]:
    """A finding's options checked before anything slow starts: its sampling settings parsed,
    and the folder its trained stages go to."""
    at_least(options.seeds, 1, "--seeds")
    at_least(options.num_samples, 10, "--num-samples", " (one per digit)")
    at_least(options.train_steps, 1, "--train-steps")
    guidance = options.guidance
    for weight in guidance or ():
        check_guidance_weight(weight)
    if guidance is not None and len(set(guidance)) != len(guidance):
        raise ValueError(
            f"--guidance gives a weight more than once: {list(guidance)}; give each once"
        )
    for level in options.levels:
        if not 0 <= level <= 1:
            raise ValueError(f"--levels are fractions of the schedule in [0, 1], got {level}")
    settings = options.settings or SAMPLING_SETTINGS.get(name, [])
    if options.reuse and name != "sampler":
        raise ValueError(
            "--reuse keeps rows of an earlier `experiment sampler` run; "
            f"it does not apply to {name}"
        )
    return [parse_sampler_setting(text) for text in settings], writable_folder(
        options.runs, "--runs"
    )


def load_measured(name: str, checkpoint: Path, settings: list[tuple[str, int, str]]) -> Imagen:
    """The checkpoint's cascade as every finding samples it, checked against the finding."""
    print(f"loading checkpoint {checkpoint} and its text encoder ...", flush=True)
    shipped = load_imagen(checkpoint, weights="ema", device=default_device())
    if name == "augmentation" and len(shipped.networks) < 2:
        raise ValueError(f"{checkpoint} has no super-resolution stage to experiment on")
    shortest = min(schedule.timesteps for schedule in shipped.schedules)
    if any(steps > shortest for _, steps, _ in settings):
        raise ValueError(
            f"--settings asks for more steps than {checkpoint.name}'s {shortest}-step schedules: "
            f"use at most {shortest}"
        )
    return sample_as_measured(shipped)


def recorded_options(name: str, options: FindingOptions, checkpoint: Path, scorer: Scorer) -> dict:
    """The options as the results file records them: the checkpoint by its name, not its path."""
    return dict(
        command="experiment",
        name=name,
        checkpoint=checkpoint.name,
        seeds=options.seeds,
        num_samples=options.num_samples,
        guidance=None if options.guidance is None else list(options.guidance),
        thresholding=list(options.thresholding),
        levels=list(options.levels),
        encoders=list(options.encoders),
        settings=None if options.settings is None else list(options.settings),
        reuse=None if options.reuse is None else list(options.reuse),
        train_steps=options.train_steps,
        classifier=None if options.classifier is None else str(options.classifier),
        fid_real_vs_real=scorer.real_vs_real,
        machine=machine_description(),
    )


def write_finding(
    name: str, rows: list[dict], recorded: dict, run: Measurement, out: Path, seconds: float
) -> Path:
    """Save a finding's rows as OUT/NAME.json, draw NAME.png and NAME_examples.png, print
    its table; returns the JSON file's path."""
    path = results.save_results(out / f"{name}.json", name, rows, recorded, seconds)
    measured = results.load_results(path)
    results.plot_results(measured).savefig(out / f"{name}.png", dpi=110)
    results.plot_examples(run.examples, f"Samples of the first seed ({name})").savefig(
        out / f"{name}_examples.png", dpi=110, bbox_inches="tight"
    )
    print(results.results_table(measured))
    print(
        f"real-vs-real MNIST-FID at {run.scorer.num_samples} samples: "
        f"{run.scorer.real_vs_real:.1f}; {len(run.seeds)} seeds; {seconds / 60:.1f} min -> "
        f"{path}, {out / (name + '.png')}"
    )
    return path


def run_finding(finding: Finding, options: FindingOptions) -> list[dict]:
    """Measure one finding, write its results into OUT and print its table; returns its rows.

    The files are OUT/NAME.json, NAME.png and NAME_examples.png. Stages it needs are trained
    first into RUNS (resumed if interrupted). Every option is checked before anything slow
    starts.
    """
    if options.guidance is None:  # guidance: the weights it sweeps; augmentation: the model's
        options = dataclasses.replace(options, guidance=finding.guidance)
    settings, runs = checked_options(finding.name, options)
    checkpoint = existing_checkpoint(options.checkpoint)
    setup = dict(checkpoint=checkpoint.name, num_samples=options.num_samples, seeds=options.seeds)

    def read_reused(out: Path) -> list[dict]:
        if not options.reuse:
            return []
        return reused_rows(out / f"{finding.name}.json", options.reuse, setup, settings)

    prepared = prepare(
        options.out, [checkpoint], options.num_samples, options.classifier, read_earlier=read_reused
    )
    scorer, reused = prepared.scorer, prepared.earlier
    preset = training_recipe(checkpoint) if finding.retrains else None
    model = load_measured(finding.name, checkpoint, settings)
    run = Measurement(model, preset, scorer, options, settings, reused, runs, examples={})
    started = time.perf_counter()
    rows = finding.measure(run)
    seconds = time.perf_counter() - started
    recorded = recorded_options(finding.name, options, checkpoint, scorer)
    if finding.phrasings:
        recorded["lowres_ceiling"] = lowres_ceiling(scorer)
    write_finding(finding.name, rows, recorded, run, prepared.out, seconds)
    return rows

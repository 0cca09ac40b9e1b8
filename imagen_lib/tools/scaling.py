"""Imagen's scaling finding in miniature: `python -m imagen_lib experiment scaling`.

Lesson 10. The paper's headline (Saharia et al. 2022, Section 4.4 and Figure 4a/4b): a
bigger frozen text encoder improves image-text alignment and fidelity more than a bigger
image U-Net. One-digit prompts cannot test that, because every one carries a single fact;
scenes of two digits (imagen_lib.scenes) can, because "a 3 to the left of a 7" and "a 7 to
the left of a 3" share their words and differ in order only.

The experiment trains the base stage of the `scenes` cascade (16x32 scenes) once per row
and seed, with the same recipe and budget, changing one thing per row:

- encoder depth at fixed width and tokenizer: all-MiniLM-L6-v2 truncated to its first 0
  (embeddings only: no word sees another), 1, 2, 3 and 6 layers;
- pretraining: MiniLM's architecture with random weights, frozen;
- conditioning: the pooled text vector alone (no cross-attention), at depth 6 and 0;
- U-Net width x0.5 and x2 at full encoder depth (Figure 4b's axis);
- any other encoder, for users with the model hub, such as T5-small, -base and -large
  (Figure 4a's axis): `--encoders google-t5/t5-small google-t5/t5-base google-t5/t5-large`.

Each trained base stage draws the four scene evaluation sets at each guidance weight and
is scored per caption category: scene accuracy (both digits right), swap rate (both drawn,
in each other's places) and per-slot MNIST-FID. The results file grows one (row, seed) at
a time, so a run stopped after hours continues where it stopped, even in a later session
whose training folders are gone.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from imagen_lib.cascade import Imagen
from imagen_lib.metrics import DigitClassifier, Scorer
from imagen_lib.plumbing.files import atomic_save
from imagen_lib.presets import Preset, get_preset
from imagen_lib.tools import results
from imagen_lib.tools.evaluation import sample_scene_sets, score_scene_sets

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


@dataclass(frozen=True)
class ScalingRow:
    """One model of the experiment: what differs from the recipe's base stage."""

    name: str
    axis: str  # the paper's question this row answers
    text_encoder: str = "minilm"
    layers: int | None = None  # the encoder's first layers kept (None: all)
    pretrained: bool = True
    cross_attention: bool = True
    width: float = 1.0  # the U-Net's channels, as a multiple of the recipe's


SCALING_ROWS = (
    ScalingRow("MiniLM, 0 layers", "encoder depth", layers=0),
    ScalingRow("MiniLM, 1 layer", "encoder depth", layers=1),
    ScalingRow("MiniLM, 2 layers", "encoder depth", layers=2),
    ScalingRow("MiniLM, 3 layers", "encoder depth", layers=3),
    ScalingRow("MiniLM, 6 layers", "encoder depth"),
    ScalingRow("MiniLM, random weights", "pretraining", pretrained=False),
    ScalingRow("pooled only, 6 layers", "conditioning", cross_attention=False),
    ScalingRow("pooled only, 0 layers", "conditioning", layers=0, cross_attention=False),
    ScalingRow("U-Net x0.5", "U-Net width", width=0.5),
    ScalingRow("U-Net x2", "U-Net width", width=2.0),
)
# Figure 4a's encoders, for users with the model hub (not run by default: offline here)
HUB_ENCODERS = ("google-t5/t5-small", "google-t5/t5-base", "google-t5/t5-large")

# The recipe: the `scenes` preset's base stage, half as wide, on batches half as large, so
# that ten rows x three seeds fit in hours on two CPU cores. Its "x2" row is the shipped
# scene cascade's width.
SCALING_CHANNELS = 16
SCALING_BATCH = 32
SCALING_STEPS = 2000
SCALING_GUIDANCE = (1.0, 3.0, 6.0)  # a Pareto curve per model, as the paper's Figure 4
SCALING_SAMPLING = ("ddim", 25)  # as every other finding samples (experiments.py)


def encoder_row(text_encoder: str) -> ScalingRow:
    """A row for another encoder at full depth, named by its last path part ("t5-small")."""
    return ScalingRow(f"encoder {Path(text_encoder).name}", "encoder", text_encoder=text_encoder)


def scaling_recipe(preset: Preset | None = None, steps: int | None = None) -> Preset:
    """The base stage every row trains: `preset`'s (default `scenes`), at the scaling budget.

    A `preset` given here (such as `smoke-scenes` in tests) keeps its own width, batch and
    steps unless `steps` is given; the default is made `SCALING_CHANNELS` wide, on batches
    of `SCALING_BATCH`, for `SCALING_STEPS` steps.
    """
    recipe = Preset.from_dict((preset or get_preset("scenes")).to_dict())
    if recipe.training.captions != "scenes":
        raise ValueError(
            f"the scaling experiment trains on scenes of two digits, but preset {recipe.name!r} "
            "trains on single digits: use the scenes preset or a scenes checkpoint"
        )
    recipe.model.stages = recipe.model.stages[:1]
    if preset is None:
        recipe.model.stages[0].network.channels = SCALING_CHANNELS
        recipe.training.batch_size = SCALING_BATCH
        recipe.training.steps = SCALING_STEPS
    if steps is not None:
        recipe.training.steps = steps
    recipe.training.sample_every = 0  # the experiment scores the model itself
    recipe.name, recipe.description = f"{recipe.name}-scaling", "the base stage of a scaling row"
    return recipe


def row_preset(recipe: Preset, row: ScalingRow, seed: int) -> Preset:
    """The recipe with the row's one change, trained from seed `seed`."""
    changed = Preset.from_dict(recipe.to_dict())
    network = changed.model.stages[0].network
    width = round(network.channels * row.width)
    if width < 1:
        raise ValueError(f"row {row.name!r} makes the U-Net {width} channels wide")
    network.channels, network.cross_attention = width, row.cross_attention
    changed.model = dataclasses.replace(
        changed.model,
        text_encoder=row.text_encoder,
        text_encoder_layers=row.layers,
        text_encoder_pretrained=row.pretrained,
    )
    changed.training.seed = seed
    changed.description = f"{recipe.description}: {row.name}"
    return changed


def score_row(
    model: Imagen,
    row: ScalingRow,
    seed: int,
    scorer: Scorer,
    guidance: Sequence[float],
    examples: dict[str, torch.Tensor] | None = None,
) -> list[dict]:
    """One results row per (guidance weight, evaluation set, category) of a trained model.

    `examples` gets the model's first eight relation scenes ("a 3 to the left of a 7") at
    the middle guidance weight, for the figure of swaps.
    """
    sampler, steps = SCALING_SAMPLING
    steps = min(steps, model.config.stages[0].timesteps)
    rows = []
    for weight in guidance:
        sampled = sample_scene_sets(
            model,
            scorer.num_samples,
            seed,
            guidance_weight=weight,
            sampler=sampler,
            steps=steps,
            guidance_interval=(0.0, 1.0),
        )
        for scores in score_scene_sets(scorer.classifier, scorer.reference, sampled):
            rows.append(
                {"model": row.name, "axis": row.axis, "guidance": weight, "seed": seed, **scores}
            )
        if examples is not None and weight == guidance[len(guidance) // 2]:
            images, prompts = sampled["training"]
            relations = [i for i, prompt in enumerate(prompts) if prompt.category == "relation"]
            examples[row.name] = images[relations[:8]].clone()
    return rows


def done_runs(rows: list[dict]) -> set[tuple[str, int]]:
    """The (model, seed) pairs whose scores are in `rows`."""
    return {(row["model"], row["seed"]) for row in rows}


def train_row(preset: Preset, folder: Path, progress: bool) -> tuple[Imagen, float]:
    """Train (or resume, or find finished) a row's base stage; its EMA model and seconds."""
    from imagen_lib.checkpoint import load_imagen
    from imagen_lib.tools.experiments import train_or_resume

    started = time.perf_counter()
    checkpoint = train_or_resume(preset, folder, [0], progress)
    return load_imagen(checkpoint, weights="ema"), time.perf_counter() - started


def scaling_experiment(
    recipe: Preset,
    rows: Sequence[ScalingRow],
    seeds: Sequence[int],
    classifier: DigitClassifier,
    num_samples: int,
    guidance: Sequence[float],
    runs: Path,
    measured: list[dict],
    examples: dict[str, torch.Tensor],
    save: Callable[[list[dict], dict[str, torch.Tensor]], None],
    progress: bool = True,
) -> list[dict]:
    """Train and score every (row, seed) not yet in `measured`; return all rows.

    `save(rows, examples)` is called after each (row, seed), so nothing measured is lost if
    the run stops; `measured` and `examples` (the first seed's relation scenes per row) hold
    what an earlier run of the same recipe measured, kept as they are.
    """
    scorer = Scorer.build(num_samples, classifier, recipe.model.channels)
    results = list(measured)
    todo = [
        (row, seed) for seed in seeds for row in rows if (row.name, seed) not in done_runs(results)
    ]
    with tqdm(total=len(todo), desc="scaling rows", disable=not progress) as bar:
        for row, seed in todo:
            bar.set_postfix_str(f"{row.name}, seed {seed}")
            folder = runs / f"{row.name.replace(' ', '_').replace(',', '')}_seed{seed}"
            model, seconds = train_row(row_preset(recipe, row, seed), folder, progress)
            first_seed = examples if seed == seeds[0] else None
            scored = score_row(model, row, seed, scorer, guidance, first_seed)
            for entry in scored:
                entry["train_seconds"] = seconds
            results += scored
            save(results, examples)
            bar.update(1)
    return results


@contextmanager
def results_lock(folder: Path) -> Iterator[None]:
    """Hold FOLDER/.scaling.lock while the results file is read, merged and written.

    Two processes measuring different rows (`--rows`) into the same OUT then never lose
    each other's rows. Where the operating system has no `fcntl` (Windows), run one at a time.
    """
    folder.mkdir(parents=True, exist_ok=True)  # a new --out folder
    if fcntl is None:
        yield
        return
    with open(folder / ".scaling.lock", "a") as lock:  # closing it releases the lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def measured_so_far(
    path: Path, settings: dict
) -> tuple[list[dict], dict[str, torch.Tensor], float]:
    """The rows, examples and wall seconds an earlier run of the same settings left at `path`."""
    if not path.is_file():
        return [], {}, 0.0
    earlier = results.load_results(path)
    recipe = json.loads(json.dumps(settings["recipe"]))  # as the file holds it: tuples as lists
    if earlier["experiment"] != "scaling" or earlier["settings"].get("recipe") != recipe:
        raise ValueError(
            f"{path} holds results of another recipe (training, sampling or sample count "
            "differ): measure into another --out, or move that file away to start afresh"
        )
    examples_path = path.with_name("scaling_examples.pt")
    examples = torch.load(examples_path, weights_only=True) if examples_path.is_file() else {}
    pictures = {name: images.float() / 127.5 - 1 for name, images in examples.items()}
    return earlier["rows"], pictures, earlier["wall_seconds"]


def save_measured(
    path: Path, settings: dict, rows: list[dict], examples: dict, seconds: float
) -> None:
    """Merge `rows` with what is on disk (another process's rows), then write them atomically.

    The file's settings name every row either process measures. Its wall time is the
    longer of the file's and this process's `seconds` (the file's time when the process
    started plus its own time since): processes side by side share the clock, and
    sessions one after another add up.
    """
    with results_lock(path.parent):
        on_disk, disk_examples, disk_seconds = measured_so_far(path, settings)
        ours = done_runs(rows)
        kept = [row for row in on_disk if (row["model"], row["seed"]) not in ours] + rows
        names = {row["model"] for row in kept} | set(settings["rows"])
        order = [row.name for row in SCALING_ROWS] + [row["model"] for row in kept]
        merged = dict(settings, rows=[name for name in dict.fromkeys(order) if name in names])
        # the file lists its rows in the experiment's order, whichever process measured first
        kept.sort(key=lambda row: (merged["rows"].index(row["model"]), row["seed"]))
        results.save_results(path, "scaling", kept, merged, max(seconds, disk_seconds))
        pictures = {**disk_examples, **examples}
        # uint8 pixels: a quarter of the size, and exact for images already in [-1, 1]
        atomic_save(
            {
                name: ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
                for name, images in pictures.items()
            },
            path.with_name("scaling_examples.pt"),
        )


def run_scaling(
    checkpoint: str | Path | None = None,
    seeds: int = 3,
    num_samples: int = 200,
    guidance: Sequence[float] | None = None,
    encoders: Sequence[str] = (),
    rows: Sequence[str] | None = None,
    train_steps: int | None = None,
    runs: str | Path = "runs/experiments",
    out: str | Path = "runs/results",
    classifier: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Measure the scaling finding into OUT/scaling.json, .png and _examples.png.

    The recipe is the `scenes` preset's base stage at the scaling budget, or, with
    `checkpoint`, the base stage of the scenes preset that checkpoint was trained with.
    `rows` chooses rows by name (default: all of SCALING_ROWS); `encoders` adds a row per
    encoder (hub names such as HUB_ENCODERS, or local folders). Continues an interrupted run
    of the same settings in OUT, measuring only the (row, seed) pairs it lacks.
    """
    from imagen_lib.diffusion import check_guidance_weight
    from imagen_lib.metrics import load_classifier
    from imagen_lib.plumbing.files import existing_checkpoint, writable_folder
    from imagen_lib.tools.bench import machine_description
    from imagen_lib.tools.experiments import training_recipe
    from imagen_lib.tools.sampling import at_least

    at_least(seeds, 1, "--seeds")
    at_least(num_samples, 10, "--num-samples", " (one per digit)")
    at_least(train_steps, 1, "--train-steps")
    guidance = [check_guidance_weight(weight) for weight in guidance or SCALING_GUIDANCE]
    known = {row.name: row for row in SCALING_ROWS}
    unknown = [name for name in rows or () if name not in known]
    if unknown:
        raise ValueError(
            f"--rows names unknown rows {unknown}: choose among {', '.join(map(repr, known))}"
        )
    chosen = [known[name] for name in rows] if rows else list(SCALING_ROWS)
    chosen += [encoder_row(name) for name in encoders]
    recipe = scaling_recipe(
        training_recipe(existing_checkpoint(checkpoint)) if checkpoint else None, train_steps
    )
    out, runs = writable_folder(out), writable_folder(runs, "--runs") / "scaling"
    sampler, steps = SCALING_SAMPLING
    settings = dict(
        command="experiment",
        name="scaling",
        recipe=dict(
            preset=recipe.to_dict(),
            num_samples=num_samples,
            guidance=list(guidance),
            sampling=[sampler, steps],
        ),
        seeds=seeds,
        rows=[row.name for row in chosen],
        classifier=None if classifier is None else str(classifier),
        machine=machine_description(),
    )
    path = out / "scaling.json"
    with results_lock(out):
        measured, examples, earlier = measured_so_far(path, settings)
    scoring_classifier = load_classifier(classifier)  # None: the shipped one; "" is refused
    started = time.perf_counter()

    def save(rows_so_far: list[dict], pictures: dict) -> None:
        save_measured(
            path, settings, rows_so_far, pictures, earlier + time.perf_counter() - started
        )

    print(
        f"scaling: {len(chosen)} rows x {seeds} seeds, {recipe.training.steps} training steps "
        f"each, {num_samples} samples per evaluation set and guidance weight; "
        f"{len(done_runs(measured))} (row, seed) pairs already in {path}",
        flush=True,
    )
    rows_measured = scaling_experiment(
        recipe,
        chosen,
        list(range(seeds)),
        scoring_classifier,
        num_samples,
        guidance,
        runs,
        measured,
        examples,
        save,
        progress,
    )
    save(rows_measured, examples)
    with results_lock(out):
        final = results.load_results(path)
        _, pictures, _ = measured_so_far(path, settings)
    results.plot_results(final).savefig(out / "scaling.png", dpi=110)
    results.plot_examples(pictures, "Relation prompts, first seed").savefig(
        out / "scaling_examples.png", dpi=110, bbox_inches="tight"
    )
    print(results.results_table(final))
    print(f"-> {path}, {out / 'scaling.png'}, {out / 'scaling_examples.png'}")
    return path

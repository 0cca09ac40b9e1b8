"""Imagen's Figure 4 in miniature: `python -m imagen_lib experiment scaling`.

Lesson 10. The paper's headline (Saharia et al. 2022, Section 4.4 and Figure 4a/4b): a
bigger frozen text encoder improves image-text alignment and fidelity more than a bigger
image U-Net. One-digit prompts cannot test that, because every one carries a single fact;
scenes of two digits (imagen_lib.scenes) can, because "a 3 to the left of a 7" and "a 7 to
the left of a 3" share their words and differ in order only, and the captions name the
right digit first as often as the left one, so only reading the words draws them right.

The experiment trains the base stage of the `scenes` cascade (16x32 scenes) once per row
and seed, with one recipe and budget, on Figure 4's two axes:
- the frozen encoder: MiniLM's architecture with random weights; MiniLM's word embeddings
  alone (0 layers: no word sees another); all-MiniLM-L6-v2 (22.7M parameters); and
  all-mpnet-base-v2 (109.5M, about 5x: `python -m imagen_lib install-encoder mpnet`);
  users with the model hub can add T5-small, -base and -large with `--encoders`;
- the U-Net's width: 16 and 32 channels (32 is the shipped scene cascade's base).

A row is a result only if it passed the convergence gate: a conditional order accuracy of
at least GATE_ORDER on *training* relation captions ("a 3 to the left of a 7", pairs and
phrasings it was trained on). A model that has not learned to read the captions it was
trained on cannot say anything about language understanding; it is reported as "not
converged". Each trained base stage then draws, at each guidance weight, the gate's set,
held-out pairs (the binding test) and the three types of held-out phrasings; the primary
measure is conditional order accuracy per phrasing type. Per-slot MNIST-FID is measured
against real digits sent through the same shrink-and-enlarge path as the base stage's
samples, whose real-vs-real floor the results keep.

The results file grows one (row, seed) at a time and carries the whole recipe (training,
sampling, sample count, classifier), so a run stopped after hours continues where it
stopped, even in a later session, and a run of another recipe is refused, not mixed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from imagen_lib.cascade import Imagen
from imagen_lib.checkpoint import load_imagen, read_checkpoint
from imagen_lib.diffusion import check_guidance_weight
from imagen_lib.metrics import Scorer
from imagen_lib.plumbing.errors import damaged
from imagen_lib.plumbing.files import (
    SHIPPED_CLASSIFIER,
    atomic_save,
    atomic_write_text,
    existing_checkpoint,
    writable_folder,
)
from imagen_lib.presets import Preset, get_preset
from imagen_lib.scenes import (
    HELD_OUT_CAPTIONS_BY_PHRASING,
    HELD_OUT_PAIRS,
    SCENE_CAPTIONS,
    TRAINING_PAIRS,
    ScenePrompt,
    scene_prompts,
)
from imagen_lib.text import resolve_encoder
from imagen_lib.tools import results
from imagen_lib.tools.common import at_least, machine_description, train_or_resume, training_recipe
from imagen_lib.tools.drawing import sample_scene_sets, score_scene_sets
from imagen_lib.tools.experiment_spine import BindingScores, prepare

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


@dataclass(frozen=True)
class ScalingRow:
    """One model of the experiment: its frozen encoder and its U-Net's width."""

    name: str
    text_encoder: str = "minilm"
    layers: int | None = None  # the encoder's first layers kept (None: all)
    pretrained: bool = True
    channels: int = 32  # the U-Net's base width
    seeds: int = 1  # seeds measured by default (`--seeds` raises every row to at least that)


SCALING_ROWS = (
    ScalingRow("MiniLM random, 16 ch", pretrained=False, channels=16),
    ScalingRow("MiniLM 0 layers, 16 ch", layers=0, channels=16),
    ScalingRow("MiniLM, 16 ch", channels=16),
    ScalingRow("MPNet, 16 ch", text_encoder="mpnet", channels=16),
    ScalingRow("MiniLM random, 32 ch", pretrained=False),
    ScalingRow("MiniLM 0 layers, 32 ch", layers=0),
    ScalingRow("MiniLM, 32 ch", seeds=2),
    ScalingRow("MPNet, 32 ch", text_encoder="mpnet", seeds=2),
)
# Figure 4a's encoders, for users with the model hub (not run by default: offline here)
HUB_ENCODERS = ("google-t5/t5-small", "google-t5/t5-base", "google-t5/t5-large")

# The recipe: the `scenes` preset's base stage (batch 64), for SCALING_STEPS steps, chosen
# with the pilot learning curve (findings section 8) so that the reference row passes the gate.
SCALING_STEPS = 4000
SCALING_GUIDANCE = (1.0, 3.0, 6.0)  # a curve per model, as the paper's Figure 4
# the scene cascade's base sampler; guided only where t / (T - 1) lies in the interval
SCALING_SAMPLING = ("dpm++", 8)
SCALING_INTERVAL = (0.2, 0.7)
GATE_ORDER = 0.95  # conditional order accuracy on training relation captions
GATE_GUIDANCE = 3.0
# Decided before the runs: a difference smaller than this is "no detectable difference"
SMALLEST_EFFECT = 0.05
MAX_SEEDS = 10
SCALING_SAMPLES = 1000  # scenes per set: a 95% interval of about +-3 points on a share
PHRASING_TYPES = (
    "synonym",
    "new word",
    "inverted",
)  # held-out phrasings that have an order
SCALING_SETS = (
    "training relations",
    "held-out pairs",
    *(f"held-out {phrasing}" for phrasing in PHRASING_TYPES),
)


class SceneScores(BindingScores, total=False):
    """The columns `drawing.score_scene_sets` gives each (set, category or phrasing)."""

    set: str
    category: str  # "all", or one caption category
    phrasing: str  # "all", or one type of held-out phrasing
    blind_first_named: float  # the word-blind readers' order accuracy
    blind_trained_layout: float
    fid_left: float  # per-slot MNIST-FID: on the "all" rows only
    fid_right: float


class ScalingResultRow(SceneScores):
    """A row of scaling.json: one model and seed at one guidance weight, on one group."""

    model: str  # the ScalingRow's name
    seed: int
    guidance: float
    encoder_parameters: int
    channels: int  # the U-Net's base width
    unet_parameters: int
    train_seconds: float


class CurveRow(SceneScores):
    """A row of scaling_curve.json: one snapshot on the gate's set."""

    checkpoint: str  # the snapshot's file name
    steps: int  # its base stage's training steps
    seed: int


def scaling_prompt_sets(count: int, seed: int = 0) -> dict[str, list[ScenePrompt]]:
    """`count` prompts for each of SCALING_SETS.

    - "training relations": relation captions of training pairs in training phrasings,
      the convergence gate's set;
    - "held-out pairs": order and relation captions of the pairs never trained on;
    - "held-out synonym", "held-out new word", "held-out inverted": training pairs in each
      type of held-out phrasing (scenes.HELD_OUT_PHRASINGS).
    """
    sets = {
        "training relations": scene_prompts(
            SCENE_CAPTIONS, TRAINING_PAIRS, count, ("relation",), seed
        ),
        "held-out pairs": scene_prompts(
            SCENE_CAPTIONS, HELD_OUT_PAIRS, count, ("order", "relation"), seed
        ),
    }
    for phrasing in PHRASING_TYPES:
        family = HELD_OUT_CAPTIONS_BY_PHRASING[phrasing]
        sets[f"held-out {phrasing}"] = scene_prompts(family, TRAINING_PAIRS, count, seed=seed)
    return sets


def encoder_row(text_encoder: str) -> ScalingRow:
    """A row for another encoder at full depth and 32 channels, named by its last path part."""
    return ScalingRow(f"{Path(text_encoder).name}, 32 ch", text_encoder=text_encoder)


def scaling_recipe(preset: Preset | None = None, steps: int | None = None) -> Preset:
    """The base stage every row trains: `preset`'s (default `scenes`), for `steps` steps.

    The default trains SCALING_STEPS steps; a `preset` given here (such as `smoke-scenes`
    in tests) keeps its own steps unless `steps` is given.
    """
    recipe = preset or get_preset("scenes")
    if recipe.training.captions != "scenes":
        raise ValueError(
            f"the scaling experiment trains on scenes of two digits, but preset {recipe.name!r} "
            "trains on single digits: use the scenes preset or a scenes checkpoint"
        )
    chosen_steps = steps if steps is not None else (recipe.training.steps if preset else None)
    training = dataclasses.replace(
        recipe.training,
        steps=chosen_steps or SCALING_STEPS,
        sample_every=0,  # the experiment scores the model itself
    )
    model = dataclasses.replace(recipe.model, stages=recipe.model.stages[:1])
    return Preset(f"{recipe.name}-scaling", model, training, "the base stage of a scaling row")


def row_preset(recipe: Preset, row: ScalingRow, seed: int) -> Preset:
    """The recipe with the row's encoder and width, trained from seed `seed`."""
    stage = recipe.model.stages[0]
    network = dataclasses.replace(stage.network, channels=row.channels)
    model = dataclasses.replace(
        recipe.model,
        stages=[dataclasses.replace(stage, network=network)],
        text_encoder=row.text_encoder,
        text_encoder_layers=row.layers,
        text_encoder_pretrained=row.pretrained,
    )
    training = dataclasses.replace(recipe.training, seed=seed)
    return Preset(recipe.name, model, training, f"{recipe.description}: {row.name}")


def parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def score_row(
    model: Imagen,
    row: ScalingRow,
    seed: int,
    scorer: Scorer,
    guidance: Sequence[float],
    examples: dict[str, torch.Tensor] | None = None,
) -> list[ScalingResultRow]:
    """One results row per (guidance weight, set, category or phrasing) of a trained model.

    `examples` gets the model's first eight held-out-pair scenes at the middle guidance
    weight, for the figure of swaps.
    """
    sampler, steps = SCALING_SAMPLING
    steps = min(steps, model.config.stages[0].timesteps)
    prompt_sets = scaling_prompt_sets(scorer.num_samples, seed)
    sizes = {
        "encoder_parameters": parameters(model.text_encoder.model),
        "channels": row.channels,
        "unet_parameters": parameters(model.networks[0]),
    }
    rows = []
    for weight in guidance:
        sampled = sample_scene_sets(
            model,
            scorer.num_samples,
            seed,
            guidance_weight=weight,
            sampler=sampler,
            steps=steps,
            guidance_interval=SCALING_INTERVAL,
            prompt_sets=prompt_sets,
        )
        for scores in score_scene_sets(scorer.classifier, scorer.reference, sampled):
            rows.append({"model": row.name, "seed": seed, "guidance": weight, **sizes, **scores})
        if examples is not None and weight == guidance[len(guidance) // 2]:
            examples[row.name] = sampled["held-out pairs"][0][:8].clone()
    return rows


def done_runs(rows: list[dict]) -> set[tuple[str, int]]:
    """The (model, seed) pairs whose scores are in `rows`."""
    return {(row["model"], row["seed"]) for row in rows}


def runs_to_do(
    rows: Sequence[ScalingRow], seeds: int | None, measured: list[dict]
) -> list[tuple[ScalingRow, int]]:
    """Each (row, seed) not yet `measured`: every row's own seeds, or `seeds` if more."""
    return [
        (row, seed)
        for row in rows
        for seed in range(max(row.seeds, seeds or 0))
        if (row.name, seed) not in done_runs(measured)
    ]


def as_recorded(preset: Preset) -> dict:
    """A preset as a JSON file holds it (tuples as lists), to compare with one read back."""
    return json.loads(json.dumps(preset.to_dict()))


def check_row_folder(folder: Path, preset: Preset) -> None:
    """Refuse a row folder trained with another recipe, or for more steps than this one.

    The folder's `row.json` holds the preset it was made for; a resume may only continue a
    run of the same settings towards the same or a larger budget.
    """
    record = folder / "row.json"
    wanted = as_recorded(preset)
    if not record.is_file():
        if (folder / "checkpoint.pt").exists():
            raise ValueError(
                f"{folder} holds a training run with no record of its recipe: move it away "
                "or choose another --runs folder"
            )
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(wanted, indent=1), record)
        return
    try:  # read back through Preset, so a field added to the configs since takes its default
        found = as_recorded(Preset.from_dict(json.loads(record.read_text(encoding="utf-8"))))
    except (TypeError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError too
        raise damaged(
            record,
            f"holds an unreadable recipe ({error})",
            f"move {folder} away or choose another --runs folder",
        ) from None
    steps_found, steps_wanted = found["training"]["steps"], wanted["training"]["steps"]
    found["training"]["steps"] = wanted["training"]["steps"] = 0
    differ = [key for key in ("model", "training") if found.get(key) != wanted.get(key)]
    if differ:
        raise ValueError(
            f"{folder} was trained with another {' and '.join(differ)} recipe: move it away or "
            "choose another --runs folder"
        )
    if steps_found > steps_wanted:
        raise ValueError(
            f"{folder} was trained for {steps_found} steps, more than this recipe's "
            f"{steps_wanted}: give --train-steps {steps_found}, or another --runs folder"
        )
    wanted["training"]["steps"] = steps_wanted
    atomic_write_text(json.dumps(wanted, indent=1), record)


def train_row(preset: Preset, folder: Path, progress: bool) -> tuple[Imagen, float]:
    """Train (or resume, or find finished) a row's base stage; its EMA model and seconds."""
    check_row_folder(folder, preset)
    started = time.perf_counter()
    checkpoint = train_or_resume(preset, folder, [0], progress)
    return load_imagen(checkpoint, weights="ema"), time.perf_counter() - started


def scaling_experiment(
    recipe: Preset,
    runs_to_do: Sequence[tuple[ScalingRow, int]],
    scorer: Scorer,
    guidance: Sequence[float],
    runs: Path,
    examples: dict[str, torch.Tensor],
    save: Callable[[list[dict], dict[str, torch.Tensor]], None],
    progress: bool = True,
) -> list[ScalingResultRow]:
    """Train and score each (row, seed) of `runs_to_do`; `save` after each one.

    `save(rows, examples)` gets this process's rows so far after every (row, seed), so
    nothing measured is lost if a later row fails; `examples` (seed 0's held-out-pair
    scenes per row) is filled in as rows are scored.
    """
    measured: list[dict] = []
    with tqdm(total=len(runs_to_do), desc="scaling rows", disable=not progress) as bar:
        for row, seed in runs_to_do:
            bar.set_postfix_str(f"{row.name}, seed {seed}")
            folder = runs / f"{row.name.replace(' ', '_').replace(',', '')}_seed{seed}"
            model, seconds = train_row(row_preset(recipe, row, seed), folder, progress)
            scored = score_row(model, row, seed, scorer, guidance, examples if seed == 0 else None)
            measured += [{**entry, "train_seconds": round(seconds, 1)} for entry in scored]
            save(measured, examples)
            bar.update(1)
    return measured


# ----- the results file ---------------------------------------------------------------------
@contextmanager
def results_lock(folder: Path) -> Iterator[None]:
    """Hold FOLDER/.scaling.lock while the results file is read, merged and written.

    Two processes measuring different rows (`--rows`) into the same OUT then never lose
    each other's rows. Where the operating system has no `fcntl` (Windows), run one at a time.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with open(folder / ".scaling.lock", "a") as lock:  # closing it releases the lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# Which option sets each part of the recipe, to name it when a file disagrees
RECIPE_OPTIONS = {
    "preset": "--train-steps (or --checkpoint)",
    "num_samples": "--num-samples",
    "guidance": "--guidance",
    "sampling": "the sampler (SCALING_SAMPLING, SCALING_INTERVAL)",
    "classifier": "--classifier",
}


def measured_so_far(path: Path, recipe: dict) -> tuple[list[dict], float]:
    """The rows and wall seconds an earlier run of the same recipe left at `path`.

    The file is checked as a whole (`results.load_results`: keys, numbers, shares in
    [0, 1]); one of another recipe is refused with the option that differs.
    """
    if not path.is_file():
        return [], 0.0
    earlier = results.load_results(path)
    recipe_found = earlier["settings"].get("recipe")
    fix = f"move {path} away to start afresh, or measure into another --out"
    if earlier["experiment"] != "scaling" or not isinstance(recipe_found, dict):
        raise ValueError(f"{path} is not a scaling results file with its recipe: {fix}")
    wanted = json.loads(json.dumps(recipe))  # as the file holds it: tuples as lists
    try:  # read back through Preset, so a field added to the configs since takes its default
        preset_found = as_recorded(Preset.from_dict(recipe_found.get("preset")))
    except (TypeError, ValueError) as error:
        raise damaged(path, f"holds an unreadable recipe ({error})", fix) from None
    recipe_found = {**recipe_found, "preset": preset_found}
    differ = [key for key in RECIPE_OPTIONS if recipe_found.get(key) != wanted.get(key)]
    if differ:
        options = ", ".join(RECIPE_OPTIONS[key] for key in differ)
        raise ValueError(
            f"{path} was measured with another {', '.join(differ)} ({options}): "
            f"give the same options to continue it, or {fix}"
        )
    seconds = earlier.get("wall_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise damaged(path, "records a 'wall_seconds' that is not a time", fix)
    return earlier["rows"], float(seconds)


def load_examples(path: Path) -> dict[str, torch.Tensor]:
    """The examples file's scenes {row name: (8, C, H, W) uint8}, checked; {} if there is none."""
    if not path.is_file():
        return {}
    fix = f"move {path} away (its pictures are remade with each row's first seed)"
    try:
        examples = torch.load(path, weights_only=True)
    except Exception as error:  # a truncated or foreign file, or a pickle of other objects
        raise ValueError(f"{path} is not a file of example scenes ({error}): {fix}") from None
    if not isinstance(examples, dict) or not all(
        isinstance(name, str) and isinstance(images, torch.Tensor) and images.dtype == torch.uint8
        for name, images in examples.items()
    ):
        raise ValueError(f"{path} does not hold {{row name: uint8 scenes}}: {fix}")
    return examples


def save_measured(
    path: Path, settings: dict, rows: list[dict], examples: dict, seconds: float
) -> None:
    """Merge `rows` with what is on disk (another process's rows), then write them atomically.

    The file's wall time is the longer of the file's and this process's `seconds`:
    processes side by side share the clock, and sessions one after another add up.
    """
    with results_lock(path.parent):
        on_disk, disk_seconds = measured_so_far(path, settings["recipe"])
        ours = done_runs(rows)
        kept = [row for row in on_disk if (row["model"], row["seed"]) not in ours] + rows
        order = [row.name for row in SCALING_ROWS] + [row["model"] for row in kept]
        measured = {row["model"] for row in kept}
        names = list(dict.fromkeys(name for name in order if name in measured))
        # the file lists its rows in the experiment's order, whichever process measured first
        kept.sort(key=lambda row: (names.index(row["model"]), row["seed"]))
        wall = max(seconds, disk_seconds)
        results.save_results(path, "scaling", kept, dict(settings, rows=names), wall)
        examples_path = path.with_name("scaling_examples.pt")
        pictures = {
            **load_examples(examples_path),
            **{
                # uint8 pixels: a quarter of the size, and exact for images already in [-1, 1]
                name: ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
                for name, images in examples.items()
            },
        }
        atomic_save(pictures, examples_path)


# ----- the command --------------------------------------------------------------------------
def file_digest(path: str | Path) -> str:
    """The first 16 hex digits of a file's SHA-256: which classifier scored the rows."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def chosen_rows(rows: Sequence[str] | None, encoders: Sequence[str]) -> list[ScalingRow]:
    """The rows named by `--rows` (default: all SCALING_ROWS) and one per `--encoders` entry.

    Every name is checked here, before the first row trains: an unknown or repeated row, a
    repeated encoder, and a local encoder folder that does not exist.
    """
    known = {row.name: row for row in SCALING_ROWS}
    names = list(rows or known)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"--rows names unknown rows {unknown}: choose among {', '.join(map(repr, known))}"
        )
    extra = [encoder_row(name) for name in encoders]
    every = [known[name] for name in names] + extra
    repeated = sorted({row.name for row in every if [r.name for r in every].count(row.name) > 1})
    if repeated:
        raise ValueError(f"rows named more than once: {repeated}; give each row or encoder once")
    for name in encoders:
        looks_local = Path(name).expanduser().exists() or name.startswith((".", "/", "~"))
        if looks_local and not Path(name).expanduser().is_dir():
            raise ValueError(f"--encoders {name}: no such encoder folder")
        resolve_encoder(name)  # a local folder or a hub name; the hub is asked when it loads
    return every


def check_guidance(guidance: Sequence[float]) -> list[float]:
    """The guidance weights, each checked, none twice (a repeat would be read as two seeds)."""
    weights = [check_guidance_weight(weight) for weight in guidance]
    if len(set(weights)) != len(weights):
        raise ValueError(f"--guidance gives a weight more than once: {weights}; give each once")
    if GATE_GUIDANCE not in weights:
        raise ValueError(
            f"--guidance must include {GATE_GUIDANCE:g}, the weight the convergence gate reads"
        )
    return weights


def scaling_settings(
    recipe: Preset, num_samples: int, weights: list[float], classifier: str | Path
) -> dict:
    """What scaling.json records of how it was measured.

    Its "recipe" must match for a later run to add rows to the file (`measured_so_far`); the
    classifier is recorded by its file's digest.
    """
    sampler, steps = SCALING_SAMPLING
    return dict(
        command="experiment",
        name="scaling",
        recipe=dict(
            preset=recipe.to_dict(),
            num_samples=num_samples,
            guidance=weights,
            sampling=[sampler, steps, *SCALING_INTERVAL],
            classifier=file_digest(classifier),
        ),
        gate=dict(set="training relations", guidance=GATE_GUIDANCE, order=GATE_ORDER),
        smallest_effect=SMALLEST_EFFECT,
        machine=machine_description(),
    )


def run_scaling(
    checkpoint: str | Path | None = None,
    seeds: int | None = None,
    num_samples: int = SCALING_SAMPLES,
    guidance: Sequence[float] | None = None,
    encoders: Sequence[str] = (),
    rows: Sequence[str] | None = None,
    train_steps: int | None = None,
    runs: str | Path = "runs/experiments",
    out: str | Path = "runs/results",
    classifier: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Measure the scaling experiment into OUT/scaling.json and scaling_examples.pt, then plot.

    The recipe is the `scenes` preset's base stage for `train_steps` steps (default
    SCALING_STEPS), or, with `checkpoint`, the base stage of the scenes preset that
    checkpoint was trained with. `rows` chooses rows by name (default: SCALING_ROWS);
    `encoders` adds a row per encoder (hub names such as HUB_ENCODERS, or local folders).
    `seeds` raises every row to at least that many seeds (default: each row's own). Every
    option is checked before anything trains. Continues a stopped run of the same recipe
    in OUT, measuring only the (row, seed) pairs it lacks.
    """
    if seeds is not None and not 1 <= at_least(seeds, 1, "--seeds") <= MAX_SEEDS:
        raise ValueError(f"--seeds must be between 1 and {MAX_SEEDS}, got {seeds}")
    at_least(num_samples, 10, "--num-samples", " (one per digit)")
    at_least(train_steps, 1, "--train-steps")
    weights = check_guidance(guidance or SCALING_GUIDANCE)
    every = chosen_rows(rows, encoders)
    recipe = scaling_recipe(
        training_recipe(existing_checkpoint(checkpoint)) if checkpoint else None,
        train_steps,
    )
    runs = writable_folder(runs, "--runs") / "scaling"

    def read_earlier(folder: Path) -> tuple[dict, list[dict], float]:
        """The settings, and what a stopped run of them left in OUT. Called once the
        classifier is checked (the recipe records its digest), before the scorer is built."""
        settings = scaling_settings(recipe, num_samples, weights, classifier or SHIPPED_CLASSIFIER)
        with results_lock(folder):
            measured, seconds = measured_so_far(folder / "scaling.json", settings["recipe"])
            load_examples(folder / "scaling_examples.pt")  # a damaged file fails now
        return settings, measured, seconds

    # the scorer's real digits go through the base stage's resolution, for the per-slot FID
    prepared = prepare(
        out,
        num_samples=num_samples,
        classifier=classifier,
        scored_as=recipe.model,
        base_resolution=True,
        read_earlier=read_earlier,
    )
    out, scorer, (settings, measured, earlier) = prepared.out, prepared.scorer, prepared.earlier
    settings["fid_floor"] = scorer.real_vs_real  # the real-vs-real floor at that resolution
    path = out / "scaling.json"
    todo = runs_to_do(every, seeds, measured)
    started = time.perf_counter()

    def save(rows_so_far: list[dict], pictures: dict) -> None:
        elapsed = earlier + time.perf_counter() - started
        save_measured(path, settings, rows_so_far, pictures, elapsed)

    print(
        f"scaling: {len(todo)} (row, seed) runs to train and score, "
        f"{recipe.training.steps} training steps each, {num_samples} scenes per set and "
        f"guidance weight; {len(done_runs(measured))} already in {path}",
        flush=True,
    )
    scaling_experiment(recipe, todo, scorer, weights, runs, {}, save, progress)
    with results_lock(out):
        final = results.load_results(path)
    results.plot_scaling(final).savefig(out / "scaling.png", dpi=110)
    print(results.scaling_table(final))
    print(f"-> {path}, {out / 'scaling.png'}")
    return path


# ----- the pilot learning curve -------------------------------------------------------------
def base_stage(model: Imagen) -> Imagen:
    """The base stage of a cascade alone, as a one-stage cascade with the same weights."""
    config = dataclasses.replace(model.config, stages=model.config.stages[:1])
    base = Imagen(config, model.text_encoder).to(model.device)
    base.networks[0].load_state_dict(model.networks[0].state_dict())
    return base.eval()


def learning_curve(
    checkpoints: Sequence[str | Path],
    num_samples: int = SCALING_SAMPLES,
    classifier: str | Path | None = None,
    seed: int = 0,
    out: str | Path = "runs/results",
) -> Path:
    """The gate's score of snapshots of one run, to choose the budget every row trains for.

    Each checkpoint (the `scenes` base stage saved after 1,000, 2,000, ... steps) draws
    `num_samples` training relation captions at the gate's guidance weight; one row per
    checkpoint, with its training steps, conditional order accuracy, pair and scene
    accuracy, written to OUT/scaling_curve.json and plotted in scaling_curve.png. The
    budget is the first at which the reference row passes the gate.
    """
    started = time.perf_counter()
    # every path checked first; per-slot FID against real digits shrunk to the base stage's size
    prepared = prepare(out, checkpoints, num_samples, classifier, base_resolution=True)
    paths, scorer, out = prepared.checkpoints, prepared.scorer, prepared.out
    prompts = {"training relations": scaling_prompt_sets(num_samples, seed)["training relations"]}
    sampler, steps = SCALING_SAMPLING
    rows: list[CurveRow] = []
    for path in paths:
        model = base_stage(load_imagen(path, weights="ema"))
        sampled = sample_scene_sets(
            model,
            num_samples,
            seed,
            guidance_weight=GATE_GUIDANCE,
            sampler=sampler,
            steps=min(steps, model.config.stages[0].timesteps),
            guidance_interval=SCALING_INTERVAL,
            prompt_sets=prompts,
        )
        scores = score_scene_sets(scorer.classifier, scorer.reference, sampled)[0]
        trained = read_checkpoint(path)["steps"][0]
        rows.append({"checkpoint": path.name, "steps": trained, "seed": seed, **scores})
        print(
            f"{path}: {trained} steps, order accuracy {scores['order']:.1%} "
            f"(gate {GATE_ORDER:.0%}), pair {scores['pair']:.1%}, scene {scores['scene']:.1%}",
            flush=True,
        )
    settings = dict(
        num_samples=num_samples, seed=seed, gate_order=GATE_ORDER, fid_floor=scorer.real_vs_real
    )
    settings.update(guidance=GATE_GUIDANCE, sampling=[sampler, steps, *SCALING_INTERVAL])
    path = out / "scaling_curve.json"
    results.save_results(path, "scaling_curve", rows, settings, time.perf_counter() - started)
    results.plot_scaling_curve(results.load_results(path)).savefig(
        out / "scaling_curve.png", dpi=110
    )
    print(f"-> {path}, {out / 'scaling_curve.png'}")
    return path


# ----- the experiment, as the command runs it -------------------------------------------------
@dataclass(frozen=True)
class ScalingOptions:
    """What `experiment scaling` takes: `run_scaling`'s arguments, or with `curve` the
    snapshots whose learning curve to score (`learning_curve`, which reads only
    `num_samples`, `classifier` and `out` of the rest)."""

    checkpoint: str | Path | None = None  # None: the scenes preset's recipe
    seeds: int | None = None  # None: each row's own
    num_samples: int = SCALING_SAMPLES
    guidance: Sequence[float] | None = None  # None: SCALING_GUIDANCE
    encoders: Sequence[str] = ()
    rows: Sequence[str] | None = None  # None: every one of SCALING_ROWS
    train_steps: int | None = None
    runs: str | Path = "runs/experiments"
    out: str | Path = "runs/results"
    classifier: str | Path | None = None
    curve: Sequence[str | Path] | None = None


def measure_scaling(options: ScalingOptions) -> list[ScalingResultRow | CurveRow]:
    """Run the grid (or the learning curve); the rows of its results file, all runs' so far."""
    if options.curve:
        path = learning_curve(
            options.curve, options.num_samples, options.classifier, out=options.out
        )
    else:
        grid = {field.name: getattr(options, field.name) for field in dataclasses.fields(options)}
        del grid["curve"]
        path = run_scaling(**grid)
    return results.load_results(path)["rows"]

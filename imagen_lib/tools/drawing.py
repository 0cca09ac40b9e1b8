"""Drawing and scoring samples as every command does: below `sample`, `evaluate`, `bench` and
the experiments, which import it and never each other.

- `final_images`: a cascade's last-stage images for many prompts, a chunk at a time, chunk k
  seeded with seed + its first index, so a result is reproducible for a seed;
- the sampling settings as the commands take them: `parse_sampler_setting`
  (SAMPLER:STEPS[:THRESHOLDING]), `check_plan` (checked against a checkpoint's config before
  the model loads), `describe_plan` and `describe_interval` (in words);
- scenes of two digits (`imagen_lib.scenes`, `imagen_lib.colours`): `sample_scene_sets` draws
  the evaluation sets, `score_scene_sets` scores each set and caption category by binding
  and each slot by MNIST-FID; `draws_scenes` tells a scene cascade from a digit cascade.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from imagen_lib.cascade import Imagen, ImagenConfig
from imagen_lib.checkpoint import parse_config, read_checkpoint
from imagen_lib.colour_metrics import colour_binding_scores, read_colour_scenes
from imagen_lib.colours import asked, ink
from imagen_lib.data import height_width, size_text
from imagen_lib.diffusion import SAMPLERS, THRESHOLDINGS, default_steps
from imagen_lib.metrics import DigitClassifier, scene_fid, scene_report
from imagen_lib.presets import SCENE_FAMILIES
from imagen_lib.scenes import ScenePrompt, scene_evaluation_prompts, word_blind_order
from imagen_lib.tools.common import at_least, check_seed

SAMPLE_CHUNK = 256  # images sampled at once: memory stays bounded for any --num-samples


def checkpoint_config(checkpoint: Path) -> ImagenConfig:
    """The cascade config a checkpoint stores, read without building the networks or loading
    the text encoder (which take seconds), to check the sampling settings against it first.
    """
    return parse_config(read_checkpoint(checkpoint)["config"], checkpoint)


def check_plan(
    config: ImagenConfig,
    sampler: str | list[str] | None,
    steps: int | list[int] | None,
    options: tuple[str, str] = ("--sampler", "--steps"),
) -> None:
    """`ImagenConfig.sampling_plan`'s checks, before the model loads, naming the option at fault.

    `options` name the sampler's and the steps' option in the errors.
    """
    for option, plan in zip(options, ((sampler, None), (None, steps))):
        try:
            config.sampling_plan(*plan)
        except ValueError as error:
            raise ValueError(f"{option}: {error}") from None


def parse_sampler_setting(text: str, option: str = "--settings") -> tuple[str, int, str]:
    """SAMPLER:STEPS[:THRESHOLDING], such as ddim:25 or ddim:25:none (default: dynamic)."""
    sampler, _, rest = text.partition(":")
    steps, _, thresholding = rest.partition(":")
    thresholding = thresholding or "dynamic"
    if (
        sampler not in SAMPLERS
        or not (steps.isascii() and steps.isdigit())  # isdigit alone accepts "²"
        or int(steps) < 1
        or thresholding not in THRESHOLDINGS
    ):
        raise ValueError(
            f"{option} takes SAMPLER:STEPS[:THRESHOLDING] such as ddim:50, ddpm:1000, dpm++:15 "
            f"or ddim:25:none, got {text!r}"
        )
    return sampler, int(steps), thresholding


def describe_plan(
    config: ImagenConfig,
    sampler: str | Sequence[str] | None,
    steps: int | Sequence[int] | None,
) -> str:
    """A cascade's sampling plan for `sampler` and `steps` (as `sample` takes them), in words.

    Step counts left to a sampler's default are written out, as DDIM 50.
    """
    stages = config.sampling_plan(sampler, steps).stages
    named = [
        f"{stage.sampler.upper()} "
        f"{stage.sampling_steps or default_steps(stage.sampler, stage.timesteps)}"
        for stage in stages
    ]
    if len(set(named)) == 1:
        return f"{named[0]} steps per stage"
    return " then ".join(named) + " steps (stage by stage)"


def describe_interval(interval: tuple[float, float]) -> str:
    """ " in [0.35, 0.7]" for a guidance interval, "" for every step."""
    return "" if tuple(interval) == (0, 1) else f" in [{interval[0]:g}, {interval[1]:g}]"


def final_images(
    model: Imagen,
    prompts: list[str],
    seed: int,
    chunk: int = 100,
    low_res: torch.Tensor | None = None,
    bar: tqdm | None = None,
    **options,
) -> torch.Tensor:
    """The last stage's images for many prompts, `chunk` at a time (bounded memory).

    Chunk k is seeded with seed + its first index. `options` go to `Imagen.sample`;
    `low_res` (for `first_stage` > 0) is split with the prompts; `bar` counts the images.
    """
    parts = []
    for start in range(0, len(prompts), chunk):
        given = {} if low_res is None else {"low_res": low_res[start : start + chunk]}
        chunk_prompts = prompts[start : start + chunk]
        parts.append(model.sample(chunk_prompts, seed=seed + start, **given, **options)[-1].cpu())
        if bar is not None:
            bar.update(len(chunk_prompts))
    return torch.cat(parts)


EVALUATION_CHUNK = 250  # images sampled at once: memory stays bounded for any sample count


def draws_scenes(preset: dict | None, config: ImagenConfig) -> bool:
    """Whether a checkpoint's cascade draws scenes of two digits side by side, grey or colour.

    `preset` is the checkpoint's stored preset (`Preset.to_dict()`), None for a file without
    one. The preset says it best (captions "scenes" or "colour scenes": trained on scenes);
    without it, the final stage's images being twice as wide as high is the sign.
    """
    if preset is not None:
        return preset["training"].get("captions") in SCENE_FAMILIES
    height, width = height_width(config.stages[-1].image_size)
    return width == 2 * height


def draws_colour_scenes(preset: dict | None) -> bool:
    """Whether a checkpoint's stored preset (None: none) trained it on colour scenes."""
    return preset is not None and preset["training"].get("captions") == "colour scenes"


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
    `prompt_sets` ({name: prompts}, such as `colours.colour_evaluation_prompts`), those sets
    instead (`count` is then unused). Each set is sampled as `evaluate` samples:
    EVALUATION_CHUNK prompts at a time, chunk k seeded with seed + its first index, so every
    set starts from the same noise and a result is reproducible for a seed. The options go
    to `Imagen.sample` (None: each stage's own); `bar` counts the scenes.
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
    "scene", "swap", "order", "order_count" and "pair" (NaN where undefined), and "count",
    its number of scenes. A grey set's rows have the order accuracy of the two word-blind
    readers of `scenes.word_blind_order` on its prompts: "blind_first_named",
    "blind_trained_layout". A set of colour scenes (prompts with colours) is scored on its
    digits' ink (`colours.ink`), and its rows have the `metrics.colour_binding_scores`
    instead: "scene" there asks for both colours right too, "digits" for the digits alone.

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
        rows += score_scene_set(classifier, reference, name, images, prompts)
    return rows


def score_scene_set(
    classifier: DigitClassifier,
    reference: torch.Tensor,
    name: str,
    images: torch.Tensor,
    prompts: list[ScenePrompt],
) -> list[dict]:
    """`score_scene_sets`'s rows for one set: its scenes (N, C, H, 2H) and their prompts."""
    if len(images) == 0 or len(images) != len(prompts):
        raise ValueError(
            f"set {name!r} must hold at least one scene and one prompt per scene, "
            f"got {len(images)} scenes and {len(prompts)} prompts"
        )
    coloured = {prompt.colours is not None for prompt in prompts}
    if len(coloured) == 2:
        raise ValueError(f"set {name!r} mixes colour scenes with grey ones: give one kind")
    coloured = coloured.pop()
    # the classifier reads digits in grey: a colour scene's ink
    digits = ink(images) if coloured else images
    left = torch.tensor([prompt.left for prompt in prompts])
    right = torch.tensor([prompt.right for prompt in prompts])
    fid = (
        scene_fid(classifier, digits, reference)
        if len(images) == len(reference)
        else {"left": math.nan, "right": math.nan}
    )
    if coloured:
        drawn, wanted = read_colour_scenes(classifier, images), asked(prompts)
    groupings = [("category", [prompt.category for prompt in prompts])]
    if {prompt.phrasing for prompt in prompts} != {"training"}:
        groupings.append(("phrasing", [prompt.phrasing for prompt in prompts]))
    rows = []
    for key, labels in groupings:
        report = scene_report(classifier, digits, left, right, labels)
        for group, scores in report.items():
            if key == "phrasing" and group == "all":
                continue  # the category grouping's "all" row covers the whole set
            chosen = torch.tensor([group in ("all", label) for label in labels])  # (N,)
            row = {"set": name, "category": "all", "phrasing": "all", key: group}
            row.update(scores, count=int(chosen.sum()))
            if coloured:
                row.update(
                    colour_binding_scores(
                        tuple(slot[chosen] for slot in drawn),
                        tuple(slot[chosen] for slot in wanted),
                    )
                )
            else:
                blind = word_blind_order([p for p, k in zip(prompts, chosen.tolist()) if k])
                row.update(blind_first_named=blind["first named"])
                row.update(blind_trained_layout=blind["trained layout"])
            if group == "all":
                row.update(fid_left=fid["left"], fid_right=fid["right"])
            rows.append(row)
    return rows

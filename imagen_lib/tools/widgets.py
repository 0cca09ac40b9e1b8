"""Widgets to look at sampling: sliders over precomputed pictures, and a prompt box.

Lessons 5 to 8. A slider's pictures are all sampled once, up front, with one fixed seed,
so moving it only swaps pictures and feels instant; the same seed also means every
setting starts from the same noise, so the differences are that setting alone:

- `guidance_slider`: the classifier-free guidance weight (lessons 5 and 8);
- `percentile_slider`: dynamic thresholding's percentile p (lesson 6);
- `augmentation_slider`: the SR stage's conditioning-noise level at sampling (lesson 7);
- `timestep_scrubber`: one sampling run, step by step: the noisy image x_t above the
  model's estimate of the final image at that step (lesson 6).

`prompt_box` is the one that samples live: type any prompt and the cascade draws it (a
few seconds on a CPU). Only core ipywidgets (SelectionSlider, Text, Button, Image, Label,
VBox, HBox) are used, so they work in Jupyter and on Colab; every part is an attribute, so
tests can drive them headless.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from imagen_lib.cascade import Imagen
from imagen_lib.tools.plotting import grid_png


@dataclass
class PictureSlider:
    """The widget (`.widget`, display it) and its parts."""

    values: list[float]
    samples: dict[float, torch.Tensor]  # value -> final-stage images (B, C, H, W)
    pictures: dict[float, bytes]  # value -> PNG of the grid
    slider: object
    image: object
    caption: object
    widget: object


def picture_slider(
    values: Sequence[float],
    make_images: Callable[[float], torch.Tensor],
    name: str,
    columns: int = 8,
    captions: dict[float, str] | None = None,
) -> PictureSlider:
    """Call `make_images(value)` once per value and return a slider that flips between the grids."""
    import ipywidgets as widgets

    values = [float(value) for value in values]
    if not values:
        raise ValueError(f"give at least one {name}")
    samples = {value: make_images(value) for value in values}
    pictures = {value: grid_png(images, columns) for value, images in samples.items()}
    captions = captions or {}

    def caption_of(value: float) -> str:
        return captions.get(value, f"{name} {value:g}")

    slider = widgets.SelectionSlider(
        options=values, value=values[0], description=name.split()[-1], continuous_update=True
    )
    image = widgets.Image(value=pictures[values[0]], format="png")
    caption = widgets.Label(value=caption_of(values[0]))

    def show(change) -> None:
        image.value = pictures[change["new"]]
        caption.value = caption_of(change["new"])

    slider.observe(show, names="value")
    return PictureSlider(
        values, samples, pictures, slider, image, caption, widgets.VBox([slider, caption, image])
    )


def guidance_slider(
    model: Imagen,
    prompts: Sequence[str],
    weights: Sequence[float] = (0, 1, 2, 3, 5, 8),
    seed: int = 0,
    columns: int = 8,
    captions: dict[float, str] | None = None,
    **sample_options,
) -> PictureSlider:
    """The cascade's samples of `prompts` at each guidance weight.

    Classifier-free guidance: Ho & Salimans 2022; Imagen Section 2.2. sample_options go to
    `Imagen.sample` (sampler, steps, thresholding, ...). `captions` can add a line per
    weight, such as the prompt accuracy measured there.
    """
    return picture_slider(
        weights,
        lambda weight: model.sample(
            prompts,
            guidance_weight=weight,
            seed=seed,
            **sample_options,
        )[-1],
        "guidance weight",
        columns,
        captions,
    )


def percentile_slider(
    model: Imagen,
    prompts: Sequence[str],
    percentiles: Sequence[float] = (0.9, 0.95, 0.99, 0.995, 1.0),
    seed: int = 0,
    columns: int = 8,
    captions: dict[float, str] | None = None,
    **sample_options,
) -> PictureSlider:
    """Samples with dynamic thresholding at each percentile p (Imagen Section 2.3).

    p = 1 never clips, only rescales. Use it with a large guidance weight
    (sample_options: guidance_weight=...), where thresholding matters.
    """
    return picture_slider(
        percentiles,
        lambda p: model.sample(
            prompts, thresholding="dynamic", percentile=p, seed=seed, **sample_options
        )[-1],
        "dynamic thresholding percentile",
        columns,
        captions,
    )


def augmentation_slider(
    model: Imagen,
    prompts: Sequence[str],
    levels: Sequence[float] = (0, 0.1, 0.25, 0.4, 0.6, 0.8),
    seed: int = 0,
    columns: int = 8,
    captions: dict[float, str] | None = None,
    **sample_options,
) -> PictureSlider:
    """The SR stage's output when its low-resolution input is noised to each level.

    Noise conditioning augmentation, Imagen Section 2.4. The base stage samples once; every
    level super-resolves those same base images, so what changes is the conditioning noise
    alone.
    """
    base = model.sample(prompts, seed=seed, last_stage=0, **sample_options)[0]
    return picture_slider(
        levels,
        lambda level: model.sample(
            prompts,
            seed=seed,
            first_stage=1,
            low_res=base,
            augmentation_level=level,
            **sample_options,
        )[-1],
        "SR noise level",
        columns,
        captions,
    )


def timestep_scrubber(
    model: Imagen, prompts: Sequence[str], stage: int = 0, seed: int = 0, **sample_options
) -> PictureSlider:
    """Scrub through one sampling run of a stage, step by step.

    Per step, x_t (top row) and the predicted x_0 (bottom row). The slider's values are the
    timesteps, from pure noise (the largest t) to the image; `samples[t]` holds x_t stacked
    above x_0. For an SR stage the earlier stages run first.
    """
    states: dict[float, torch.Tensor] = {}

    def record(at_stage: int, t: int, x_t: torch.Tensor, x0: torch.Tensor) -> None:
        if at_stage == stage:
            # (2B, C, H, W): x_t row, then x0 row
            states[float(t)] = torch.cat([x_t.clamp(-1, 1), x0]).cpu()

    model.sample(prompts, seed=seed, last_stage=stage, on_step=record, **sample_options)
    captions = {
        t: f"timestep {t:g}: x_t (top), the model's estimate of x_0 (bottom)" for t in states
    }
    return picture_slider(list(states), states.__getitem__, "timestep", len(prompts), captions)


@dataclass
class PromptBox:
    """A text box and a Draw button over the cascade's samples of the typed prompt."""

    text: object
    button: object
    image: object
    caption: object
    widget: object
    samples: torch.Tensor | None = None  # the last drawing's final-stage images


def prompt_box(
    model: Imagen, prompt: str = "a handwritten 7", count: int = 8, seed: int = 0, **sample_options
) -> PromptBox:
    """Type a prompt, press Enter or Draw: `count` samples of it from the cascade.

    One seed, so a prompt always gives the same digits. A prompt the text encoder refuses
    (empty, say) shows its message in place of a picture.
    """
    import ipywidgets as widgets

    text = widgets.Text(value=prompt, description="prompt", continuous_update=False)
    button = widgets.Button(description="Draw")
    image = widgets.Image(format="png")
    caption = widgets.Label()
    box = PromptBox(
        text, button, image, caption, widgets.VBox([widgets.HBox([text, button]), caption, image])
    )

    def draw(*_) -> None:
        caption.value = f"drawing {text.value!r} ..."
        started = time.perf_counter()
        try:
            box.samples = model.sample([text.value] * count, seed=seed, **sample_options)[-1]
        except ValueError as error:  # a prompt the library refuses: say why, keep the last picture
            caption.value = f"cannot draw {text.value!r}: {error}"
            return
        image.value = grid_png(box.samples, count)
        caption.value = f"{text.value!r}: {count} samples in {time.perf_counter() - started:.1f} s"

    button.on_click(draw)
    text.observe(draw, names="value")  # Enter (or leaving the box) draws too
    draw()
    return box

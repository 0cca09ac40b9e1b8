"""The guidance-weight slider: see how classifier-free guidance changes samples.

Lessons 5 and 8. Samples for every weight are computed once, up front, with one fixed
seed, so moving the slider only swaps pictures and feels instant; the same seed also
means every weight starts from the same noise, so the differences are guidance alone.
Only core ipywidgets (SelectionSlider, Image, Label, VBox) are used, so it works in
Jupyter and on Colab.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from imagen_lib.cascade import Imagen
from imagen_lib.plotting import grid_png


@dataclass
class GuidanceSlider:
    """The widget (`.widget`, display it) and its parts, which tests can drive headless."""

    weights: list[float]
    samples: dict[float, torch.Tensor]  # weight -> final-stage images (B, C, H, W)
    pictures: dict[float, bytes]  # weight -> PNG of the grid
    slider: object
    image: object
    caption: object
    widget: object


def guidance_slider(
    model: Imagen,
    prompts: Sequence[str],
    weights: Sequence[float] = (0, 1, 2, 3, 5, 8),
    seed: int = 0,
    columns: int = 8,
    captions: dict[float, str] | None = None,
    **sample_options,
) -> GuidanceSlider:
    """Sample `prompts` once per guidance weight and return a slider that flips between them.

    sample_options go to `Imagen.sample` (sampler, steps, thresholding, ...). `captions`
    can add a line per weight, such as the prompt accuracy measured there.
    """
    import ipywidgets as widgets

    weights = [float(weight) for weight in weights]
    if not weights:
        raise ValueError("give at least one guidance weight, e.g. weights=(0, 1, 3, 5)")
    samples = {weight: model.sample(prompts, guidance_weight=weight, seed=seed, **sample_options)[-1] for weight in weights}
    pictures = {weight: grid_png(images, columns) for weight, images in samples.items()}
    captions = captions or {}

    slider = widgets.SelectionSlider(options=weights, value=weights[0], description="guidance w", continuous_update=True)
    image = widgets.Image(value=pictures[weights[0]], format="png")
    caption = widgets.Label(value=captions.get(weights[0], f"guidance weight {weights[0]:g}"))

    def show(change) -> None:
        weight = change["new"]
        image.value = pictures[weight]
        caption.value = captions.get(weight, f"guidance weight {weight:g}")

    slider.observe(show, names="value")
    return GuidanceSlider(weights, samples, pictures, slider, image, caption, widgets.VBox([slider, caption, image]))

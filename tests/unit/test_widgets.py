"""The guidance-weight slider, driven headless: moving it must swap in that weight's samples."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import randomize_parameters
from PIL import Image

from imagen_lib.tools.plotting import grid_png
from imagen_lib.tools.widgets import (
    augmentation_slider,
    guidance_slider,
    percentile_slider,
    prompt_box,
    timestep_scrubber,
)

pytest.importorskip("ipywidgets")


def test_slider_shows_the_samples_of_the_chosen_weight(make_cascade):
    model = randomize_parameters(make_cascade(2))
    slider = guidance_slider(
        model, ["1", "two", "3", "four"], weights=(0, 5), columns=2, sampler="ddim", steps=3
    )
    assert slider.image.value == slider.pictures[0.0]
    # Different weights give different samples (the test could fail if guidance did nothing).
    assert not torch.equal(slider.samples[0.0], slider.samples[5.0])
    slider.slider.value = 5.0
    assert slider.image.value == slider.pictures[5.0]
    assert slider.image.value == grid_png(slider.samples[5.0], 2)
    assert "5" in slider.caption.value


def test_samples_for_each_weight_start_from_the_same_noise(make_cascade):
    """Weight 1 in the slider equals a direct sample with the same seed.

    So sliding changes the guidance only.
    """
    model = randomize_parameters(make_cascade(2))
    slider = guidance_slider(model, ["7", "8"], weights=(1,), seed=3, sampler="ddim", steps=3)
    direct = model.sample(["7", "8"], guidance_weight=1, seed=3, sampler="ddim", steps=3)[-1]
    assert torch.equal(slider.samples[1.0], direct)


def test_no_weights_is_a_clear_error(make_cascade):
    with pytest.raises(ValueError, match="at least one guidance weight"):
        guidance_slider(make_cascade(2), ["7"], weights=())


def test_percentile_slider_shows_each_percentiles_samples(make_cascade):
    model = randomize_parameters(make_cascade(2))
    slider = percentile_slider(
        model, ["7", "8"], percentiles=(0.5, 1.0), guidance_weight=8, sampler="ddim", steps=3
    )
    direct = model.sample(
        ["7", "8"],
        guidance_weight=8,
        thresholding="dynamic",
        percentile=0.5,
        sampler="ddim",
        steps=3,
    )[-1]
    assert torch.equal(slider.samples[0.5], direct)
    assert not torch.equal(slider.samples[0.5], slider.samples[1.0])
    slider.slider.value = 1.0
    assert slider.image.value == slider.pictures[1.0] and "percentile 1" in slider.caption.value


def test_augmentation_slider_super_resolves_the_same_base_images_at_each_level(make_cascade):
    model = randomize_parameters(make_cascade(2))
    slider = augmentation_slider(
        model, ["3", "four"], levels=(0, 0.5), columns=2, sampler="ddim", steps=3
    )
    base = model.sample(["3", "four"], last_stage=0, sampler="ddim", steps=3)[0]
    direct = model.sample(
        ["3", "four"], first_stage=1, low_res=base, augmentation_level=0.5, sampler="ddim", steps=3
    )[-1]
    assert torch.equal(slider.samples[0.5], direct)
    assert not torch.equal(slider.samples[0.0], slider.samples[0.5])
    slider.slider.value = 0.5
    assert slider.image.value == grid_png(direct, 2) and "level 0.5" in slider.caption.value


def test_prompt_box_draws_the_typed_prompt_and_explains_a_refused_one(make_cascade):
    model = randomize_parameters(make_cascade(2))
    box = prompt_box(model, "seven", count=3, sampler="ddim", steps=2)
    assert torch.equal(box.samples, model.sample(["seven"] * 3, sampler="ddim", steps=2)[-1])
    assert box.image.value == grid_png(box.samples, 3) and "'seven': 3 samples" in box.caption.value
    box.text.value = "a handwritten 2"  # Enter in the box draws
    assert torch.equal(
        box.samples, model.sample(["a handwritten 2"] * 3, sampler="ddim", steps=2)[-1]
    )
    assert "'a handwritten 2'" in box.caption.value
    drawn = box.image.value
    box.text.value = "   "
    box.button.click()
    # the last picture stays
    assert box.caption.value.startswith("cannot draw '   ': ") and box.image.value == drawn


def test_prompt_box_draws_a_colour_cascade_in_colour(make_cascade):
    """A cascade of 3 channels, such as the colour-scenes one: the picture is an RGB grid."""
    model = randomize_parameters(make_cascade(2, channels=3))
    box = prompt_box(model, "a red 3 then a blue 7", count=2, sampler="ddim", steps=2)
    assert box.samples.shape == (2, 3, 16, 16)
    with Image.open(io.BytesIO(box.image.value)) as picture:
        assert picture.mode == "RGB"
        pixels = np.asarray(picture).astype(int)  # (H, W, 3)
    assert (pixels[..., 0] != pixels[..., 1]).any()  # the channels differ: not grey


def test_timestep_scrubber_shows_every_step_of_one_sampling_run(make_cascade):
    model = randomize_parameters(make_cascade(2))
    scrubber = timestep_scrubber(model, ["7", "eight"], sampler="ddim", steps=4)
    # from noise to image
    assert scrubber.values == sorted(scrubber.values, reverse=True) and len(scrubber.values) == 4
    last = scrubber.samples[scrubber.values[-1]]
    final = model.sample(["7", "eight"], sampler="ddim", steps=4, last_stage=0)[0]
    torch.testing.assert_close(last[2:], final)  # the last step's estimate of x_0 is the sample
    first = scrubber.samples[scrubber.values[0]]
    size = model.config.stages[0].image_size
    assert first.shape == (4, 1, size, size) and not torch.equal(first[:2], last[:2])
    scrubber.slider.value = scrubber.values[1]
    assert scrubber.image.value == grid_png(scrubber.samples[scrubber.values[1]], 2)
    assert f"timestep {scrubber.values[1]:g}" in scrubber.caption.value
    sr = timestep_scrubber(model, ["7"], stage=1, sampler="ddim", steps=2)
    assert sr.samples[sr.values[0]].shape[-1] == model.config.stages[1].image_size

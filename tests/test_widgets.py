"""The guidance-weight slider, driven headless: moving it must swap in that weight's samples."""

from __future__ import annotations

import pytest
import torch

from conftest import randomize_parameters
from imagen_lib.plotting import grid_png
from imagen_lib.widgets import guidance_slider

pytest.importorskip("ipywidgets")


def test_slider_shows_the_samples_of_the_chosen_weight(make_cascade):
    model = randomize_parameters(make_cascade(2))
    slider = guidance_slider(model, ["1", "two", "3", "four"], weights=(0, 5), columns=2, sampler="ddim", steps=3)
    assert slider.image.value == slider.pictures[0.0]
    # Different weights give different samples (the test could fail if guidance did nothing).
    assert not torch.equal(slider.samples[0.0], slider.samples[5.0])
    slider.slider.value = 5.0
    assert slider.image.value == slider.pictures[5.0]
    assert slider.image.value == grid_png(slider.samples[5.0], 2)
    assert "5" in slider.caption.value


def test_samples_for_each_weight_start_from_the_same_noise(make_cascade):
    """Weight 1 in the slider equals a direct sample with the same seed: sliding changes guidance only."""
    model = randomize_parameters(make_cascade(2))
    slider = guidance_slider(model, ["7", "8"], weights=(1,), seed=3, sampler="ddim", steps=3)
    direct = model.sample(["7", "8"], guidance_weight=1, seed=3, sampler="ddim", steps=3)[-1]
    assert torch.equal(slider.samples[1.0], direct)


def test_no_weights_is_a_clear_error(make_cascade):
    with pytest.raises(ValueError, match="at least one guidance weight"):
        guidance_slider(make_cascade(2), ["7"], weights=())

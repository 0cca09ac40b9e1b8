"""The digit classifier the metrics read samples with: a small CNN, and how it is trained.

Lessons 3 and 5 to 10. The paper measures its samples with networks trained for other
tasks: CLIP for text-image alignment and Inception for FID (Saharia et al. 2022, Section
4.1). Our stand-in for both is one small classifier of 32x32 digits: its label says which
digit a sample shows (prompt accuracy), its 128-d penultimate features stand in for
Inception's (MNIST-FID). Both metrics are in `imagen_lib.metrics`.

It is trained by `python -m imagen_lib classifier` on the training digits, with random
rotations, scalings and shifts so that it reads a sample's digit wherever and however it
is drawn. Its weights (under 1 MB) ship in `data/`; saving and loading them is plumbing
(`imagen_lib.plumbing.classifier_file`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from imagen_lib.data import DigitSet


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

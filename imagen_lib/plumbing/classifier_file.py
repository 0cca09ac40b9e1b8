"""Plumbing, not a lesson: the digit classifier's file, written and read back with its checks.

`save_classifier` writes the weights of `imagen_lib.classifier.DigitClassifier` in half
precision (the shipped file is under 1 MB), tagged so that `load_classifier` can tell a
classifier file from a checkpoint or a stray file. `load_classifier` refuses, in one line
each, what would quietly spoil every score: a missing, damaged or foreign file, weights that
are not finite, and weights that give every image the same features.
"""

from __future__ import annotations

from pathlib import Path

import torch

from imagen_lib.classifier import DigitClassifier
from imagen_lib.data import IMAGE_SIZE
from imagen_lib.plumbing.errors import BadFile, BadSetting
from imagen_lib.plumbing.files import SHIPPED_CLASSIFIER, atomic_save
from imagen_lib.plumbing.safe_loading import (
    check_finite_weights,
    load_tagged_file,
    load_weights,
    require_entries,
)

# The tag `save_classifier` writes into its files, and `load_classifier` looks for
CLASSIFIER_FORMAT = "imagen_lib-classifier-v1"


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
    train_one = "train one with `python -m imagen_lib classifier`"
    if path is None:
        path = SHIPPED_CLASSIFIER
    if str(path) == "":  # Path("") would quietly mean the current folder
        raise BadSetting(
            "classifier is empty",
            "give a classifier file, or leave classifier out for the shipped one",
            classifier=None,
        )
    path = Path(path)
    payload = load_tagged_file(
        path, "classifier file", CLASSIFIER_FORMAT, "mnist_classifier.pt", train_one
    )
    require_entries(payload, ("state",), path, train_one)
    check_finite_weights(payload["state"], path, "classifier", train_one)
    model = DigitClassifier()
    load_weights(
        model, {key: value.float() for key, value in payload["state"].items()}, path, "classifier"
    )
    # A black and a white image must look different to a classifier that has learnt anything.
    extremes = torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        black, white = model.eval().features(extremes)
    if torch.equal(black, white):
        raise BadFile(
            f"{path} gives every image the same features (are its weights all zero?), so every "
            "MNIST-FID would be 0 and every prompt accuracy chance",
            train_one,
        )
    return model

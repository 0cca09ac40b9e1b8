"""Plumbing, not a lesson: your own captioned images as a training set (`train --data`).

The lessons train on MNIST digits (`imagen_lib.data`); `TrainConfig.data` names other
images instead, read here into the digits' layout: a (N, C, H, W) float tensor in [-1, 1]
at the preset's image size and channels (1 grey, 3 colour), and labels (N,) that index
each image's captions. `TrainConfig.data` is one of:
- a folder with a `metadata.jsonl` beside the images (the convention of Hugging Face's
  imagefolder): one JSON object per line, such as {"file_name": "cats/1.png", "text":
  "a black cat"}, the file's path relative to the folder and its caption;
- a folder with one subfolder per class, whose name becomes the captions through
  CLASS_TEMPLATES: "ankle_boot/" gives "ankle boot", "an ankle boot", "a photo of an
  ankle boot", ...;
- the name of a torchvision dataset, FashionMNIST or CIFAR10, captioned by its class names
  the same way, and downloaded into the user cache folder as `load_mnist` downloads MNIST.

It lives here, beside files and locks, because the taught `train.py` calls it (and taught
modules may not reach into `imagen_lib/tools/`), while reading and checking files is no part
of Imagen. Every image is read and checked before training starts: bad data is one line
naming the file and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from imagen_lib.plumbing.errors import Unavailable
from imagen_lib.plumbing.files import cache_folder

METADATA = "metadata.jsonl"
METADATA_EXAMPLE = '{"file_name": "cats/1.png", "text": "a black cat"}'
TORCHVISION_SETS = ("FashionMNIST", "CIFAR10")
# The captions of a class: {name} is its name, {a_name} the same with "a" or "an".
CLASS_TEMPLATES = ("{name}", "{a_name}", "a picture of {a_name}", "a photo of {a_name}")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PIL_MODES = {1: "L", 3: "RGB"}  # channels -> the PIL mode converted to


@dataclass(frozen=True)
class LabelCaptions:
    """The captions of labelled images, with the interface of `data.Captions`.

    Label k's captions are every template filled with `names[k]`: a class's name, or, for
    captions of your own, the whole caption with the one template "{name}". Caption ids are
    template-major, id = template * len(names) + label, so the vocabulary starts with every
    label's first caption.
    """

    names: tuple[str, ...]
    templates: tuple[str, ...] = ("{name}",)

    def vocabulary(self) -> list[str]:
        """Every caption, in id order."""
        return [
            template.format(name=name, a_name=with_article(name))
            for template in self.templates
            for name in self.names
        ]

    def draw(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random caption id (B,) per label (B,), on the labels' device."""
        # (B,)
        template = torch.randint(
            len(self.templates), (len(labels),), generator=generator, device=labels.device
        )
        return template * len(self.names) + labels


@dataclass
class CaptionedImages:
    """Your own images in the layout of `data.DigitSet`, with the captions its labels index.

    Images in [-1, 1] as a (N, C, H, W) float tensor, labels as a (N,) long tensor.
    """

    images: torch.Tensor
    labels: torch.Tensor
    source: str  # the folder or the dataset's name
    captions: LabelCaptions

    def __len__(self) -> int:
        return len(self.labels)


def with_article(name: str) -> str:
    """ "an apple", "a cat": the article by the first letter, which is right for most names."""
    return ("an " if name[0].lower() in "aeiou" else "a ") + name


def class_name(text: str) -> str:
    """A class's name as captions say it: "ankle_boot" -> "ankle boot" (spaces tidied)."""
    return " ".join(text.replace("_", " ").split())


def data_name(data: str) -> str:
    """`--data` as TrainConfig.data keeps it: "" (the digits), a folder, or a dataset's name.

    A folder is kept as its absolute path, so a resume from another working folder finds it;
    a folder wins over a dataset of its name. Anything else is one line listing the choices.
    """
    if data == "":
        return ""
    folder = Path(data).expanduser()
    if folder.is_dir():
        return str(folder.resolve())
    known = {name.lower(): name for name in TORCHVISION_SETS}  # "cifar10" is CIFAR10 too
    if data.lower() in known:
        return known[data.lower()]
    raise ValueError(
        f"--data {data!r} is neither a folder nor a known torchvision dataset "
        f"({', '.join(TORCHVISION_SETS)}): give a folder of images (with a {METADATA}, or one "
        "subfolder per class) or one of those names"
    )


def load_images(data: str, channels: int, size: tuple[int, int]) -> CaptionedImages:
    """Your own images as (N, C, H, W) in [-1, 1] at `size` (H, W), labels (N,), captions.

    `data` is a folder or a torchvision dataset's name (see `data_name`).
    """
    if not data:  # Path("") would quietly be the working folder
        raise ValueError("data is empty: give a folder of images or a torchvision dataset's name")
    data = data_name(data)
    if data in TORCHVISION_SETS:
        return from_torchvision(data, channels, size)
    return from_folder(Path(data), channels, size)


def from_folder(folder: Path, channels: int, size: tuple[int, int]) -> CaptionedImages:
    """A folder's images with their captions: from its metadata.jsonl, else its class folders."""
    if (folder / METADATA).is_file():
        paths, captions = metadata_entries(folder)
        templates = ("{name}",)
    else:
        paths, captions = class_entries(folder)
        templates = CLASS_TEMPLATES
    names = tuple(dict.fromkeys(captions))  # each distinct caption once, in order of appearance
    label_of = {name: label for label, name in enumerate(names)}
    labels = torch.tensor([label_of[caption] for caption in captions])  # (N,)
    images = torch.stack([read_image(path, channels, size) for path in paths])  # (N, C, H, W)
    return CaptionedImages(images, labels, str(folder), LabelCaptions(names, templates))


def metadata_entries(folder: Path) -> tuple[list[Path], list[str]]:
    """The image files and captions that a folder's metadata.jsonl lists, every line checked."""
    metadata = folder / METADATA
    try:
        text = metadata.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{metadata} is not UTF-8 text (byte {error.start}): save it as UTF-8"
        ) from None
    inside = folder.resolve()
    paths, captions = [], []
    # split at "\n" only: str.splitlines would also split inside a caption, at \x85 or \u2028
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{metadata} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{where} is not JSON ({error.msg}): write one object per line, such as "
                f"{METADATA_EXAMPLE}"
            ) from None
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not a JSON object: write one such as {METADATA_EXAMPLE}")
        name, caption = entry.get("file_name"), entry.get("text")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where} has no file_name: name its image, as in {METADATA_EXAMPLE}")
        path = folder / name
        # resolved, so "a/../../x.png" and links that lead out are caught too
        if Path(name).is_absolute() or not path.resolve().is_relative_to(inside):
            raise ValueError(
                f"{where}: file_name {name!r} is outside {folder}: give the image's path "
                "relative to that folder, such as cats/1.png"
            )
        if not path.is_file():
            raise ValueError(
                f"{where}: file_name {name!r} is missing ({path} is no file): "
                "correct the name, or remove the line"
            )
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(
                f'{where}: the caption ("text") of {name} is missing or empty: '
                "write what the image shows"
            )
        paths.append(path)
        captions.append(caption.strip())
    if not paths:
        raise ValueError(
            f"{metadata} lists no images: write one line per image, such as {METADATA_EXAMPLE}"
        )
    return paths, captions


def is_image_file(path: Path) -> bool:
    """Whether `path` is a file with an image's suffix, not hidden (macOS's ._ files are not)."""
    hidden = path.name.startswith(".")
    return path.suffix.lower() in IMAGE_SUFFIXES and not hidden and path.is_file()


def class_entries(folder: Path) -> tuple[list[Path], list[str]]:
    """The image files in a folder's class subfolders, and each one's class name."""
    loose = sorted(path for path in folder.iterdir() if is_image_file(path))
    if loose:
        raise ValueError(
            f"{loose[0]} lies in {folder} itself, which has no {METADATA}: add a {METADATA} "
            "that captions every image, or move the images into one subfolder per class"
        )
    classes = sorted(
        path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")
    )
    paths, captions = [], []
    for class_folder in classes:
        name = class_name(class_folder.name)
        if not name:
            raise ValueError(
                f"class folder {class_folder} gives an empty caption: rename it after what "
                "its images show, such as ankle_boot"
            )
        images = sorted(path for path in class_folder.rglob("*") if is_image_file(path))
        if not images:
            raise ValueError(
                f"class folder {class_folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): "
                "add some, or remove the folder"
            )
        paths += images
        captions += [name] * len(images)
    if not paths:
        raise ValueError(
            f"{folder} holds no images: put them in one subfolder per class, or beside a "
            f"{METADATA} with one line per image, such as {METADATA_EXAMPLE}"
        )
    return paths, captions


def read_image(path: Path, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """An image file as a (C, H, W) tensor in [-1, 1] at `size`, or one line naming the file."""
    try:
        with Image.open(path) as image:
            image.load()  # decodes every pixel: a truncated file fails here, not in training
            image = image.convert(PIL_MODES[channels])
    except (OSError, Image.DecompressionBombError) as error:  # damaged, truncated, not an image
        reason = " ".join(str(error).split())
        raise ValueError(
            f"{path} cannot be read as an image ({reason}): replace it, or remove it"
        ) from None
    height, width = size
    if image.height < height or image.width < width:
        raise ValueError(
            f"{path} is {image.height}x{image.width} pixels (height x width), smaller than the "
            f"{height}x{width} that training makes: use larger images (enlarging would blur them)"
        )
    return image_tensor(image, size)


def image_tensor(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """A PIL image (mode L or RGB) as a (C, H, W) tensor in [-1, 1] at `size`.

    An image at least as large is shrunk until its shorter side fits, then its centre is
    cropped, so nothing is stretched. A smaller one (FashionMNIST's 28x28 clothes) is centred
    on black instead, as `load_mnist` pads its 28x28 digits to 32x32.
    """
    from torchvision.transforms import functional  # imported here: torchvision is slow to import

    height, width = size
    if image.height >= height and image.width >= width:
        image = functional.resize(image, max(height, width))  # the shorter side
    image = functional.center_crop(image, [height, width])  # crops, or pads with black
    return functional.to_tensor(image) * 2 - 1  # (C, H, W): [0, 1] -> [-1, 1]


def from_torchvision(
    name: str, channels: int, size: tuple[int, int], root: str | Path | None = None
) -> CaptionedImages:
    """A torchvision dataset's training images, captioned by their class names.

    Downloaded into `root` (default: the user cache folder) when it is not there yet.
    """
    import torchvision.datasets

    root = Path(root) if root is not None else cache_folder()
    try:
        dataset = getattr(torchvision.datasets, name)(str(root), train=True, download=True)
    except Exception as error:  # offline: urllib, socket and checksum errors all land here
        reason = " ".join(str(error).split())
        raise Unavailable(
            f"could not load or download torchvision's {name} into {root} ({reason})",
            "connect to the internet once, or train on a folder of your own images",
            data=None,
        ) from error
    tensors, labels = [], []
    for image, label in dataset:  # PIL images and class indices
        tensors.append(image_tensor(image.convert(PIL_MODES[channels]), size))
        labels.append(label)
    captions = LabelCaptions(tuple(map(class_name, dataset.classes)), CLASS_TEMPLATES)
    # (N, C, H, W), (N,)
    return CaptionedImages(torch.stack(tensors), torch.tensor(labels), name, captions)

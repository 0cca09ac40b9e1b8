"""Tests of the configs' one contract: frozen, and checked on construction and on every change.

Every config (the two networks', a stage's, the cascade's, the training settings, a preset)
is a frozen dataclass that checks its values' types and ranges when it is made, so
`dataclasses.replace` checks the new values too, and nothing can change a config after its
checks ran. The types are checked against the annotations themselves, resolved to real
types (`imagen_lib.plumbing.configs`), not against their text.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from imagen_lib.cascade import ImagenConfig, StageConfig
from imagen_lib.efficient_unet import EfficientUNetConfig
from imagen_lib.plumbing.configs import check_types
from imagen_lib.presets import TrainConfig, get_preset
from imagen_lib.tools.cli import main
from imagen_lib.unet import UNetConfig


def configs() -> dict[str, object]:
    """One valid config of every kind, by name."""
    smoke = get_preset("smoke")
    return {
        "UNetConfig": UNetConfig(),
        "EfficientUNetConfig": EfficientUNetConfig(),
        "StageConfig": smoke.model.stages[0],
        "ImagenConfig": smoke.model,
        "TrainConfig": smoke.training,
        "Preset": smoke,
    }


@pytest.mark.parametrize("name", sorted(configs()))
def test_no_field_of_any_config_can_be_changed_in_place(name):
    config = configs()[name]
    for item in dataclasses.fields(config):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(config, item.name, getattr(config, item.name))


def test_a_cascades_stages_are_a_tuple_so_no_stage_can_be_swapped_after_the_checks():
    model = get_preset("smoke").model
    assert isinstance(model.stages, tuple)
    with pytest.raises(TypeError):
        model.stages[0] = model.stages[1]  # an SR network in the base stage, unchecked
    # a list is taken, as Python code and files give one, and held as a tuple
    assert ImagenConfig(stages=list(model.stages), text_encoder="minilm") == model
    assert isinstance(model.to_dict()["stages"], list)  # files hold a list, as they always have


def test_replace_runs_the_checks_again():
    with pytest.raises(ValueError, match="training field steps must be at most 1,000,000,000"):
        dataclasses.replace(TrainConfig(), steps=10**10)
    stage = get_preset("smoke").model.stages[0]
    with pytest.raises(ValueError, match="sampler must be one of"):
        dataclasses.replace(stage, sampler="euler")
    with pytest.raises(ValueError, match="UNetConfig.heads must be at least 1, got 0"):
        dataclasses.replace(stage.network, heads=0)
    with pytest.raises(ValueError, match="text_drop_prob"):
        dataclasses.replace(get_preset("smoke").model, text_drop_prob=1.0)
    with pytest.raises(TypeError, match="Preset.training must be TrainConfig"):
        dataclasses.replace(get_preset("smoke"), training={"steps": 10})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TrainConfig(steps="10"), "TrainConfig.steps must be int, got '10'"),
        (lambda: TrainConfig(learning_rate="fast"), "TrainConfig.learning_rate must be float"),
        (lambda: TrainConfig(mixed_precision=1), "TrainConfig.mixed_precision must be bool"),
        (
            lambda: StageConfig(image_size=(16, "32"), network=UNetConfig()),
            r"StageConfig.image_size must be int \| tuple\[int, int\], got \(16, '32'\)",
        ),
        (
            lambda: StageConfig(image_size=16, network={"channels": 32}),
            r"StageConfig.network must be UNetConfig \| EfficientUNetConfig",
        ),
        (
            lambda: StageConfig(image_size=16, network=UNetConfig(), sampling_steps=2.5),
            r"StageConfig.sampling_steps must be int \| None, got 2.5",
        ),
        (
            lambda: UNetConfig(channel_mults=(1, 2.0)),
            r"UNetConfig.channel_mults must be tuple\[int, \.\.\.\], got \(1, 2.0\)",
        ),
        (lambda: EfficientUNetConfig(num_res_blocks=2), "EfficientUNetConfig.num_res_blocks"),
        (lambda: UNetConfig(channels=True), "UNetConfig.channels must be int, got True"),
        (
            lambda: ImagenConfig(stages=[get_preset("smoke").model.stages[0], "an SR stage"]),
            r"ImagenConfig.stages must be tuple\[StageConfig, \.\.\.\]",
        ),
    ],
)
def test_a_value_of_the_wrong_type_is_one_error_naming_the_config_and_field(make, message):
    with pytest.raises(TypeError, match=message):
        make()


def test_each_part_checks_its_own_ranges_when_it_is_made():
    """Not only once it is put into a cascade, so the error points at the line that made it."""
    with pytest.raises(ValueError, match="UNetConfig.channels must be at least 1, got 0"):
        UNetConfig(channels=0)
    with pytest.raises(ValueError, match="EfficientUNetConfig.dropout must be in"):
        EfficientUNetConfig(dropout=1.0)
    with pytest.raises(ValueError, match=r"num_res_blocks needs one entry per level \(3\)"):
        EfficientUNetConfig(num_res_blocks=(1, 2))
    with pytest.raises(ValueError, match="timesteps must be at least 2"):
        StageConfig(image_size=16, network=UNetConfig(), timesteps=1)
    with pytest.raises(ValueError, match="must have sides divisible by 2"):
        StageConfig(image_size=(8, 13), network=UNetConfig())


def test_a_stage_read_from_a_file_is_named_in_its_error():
    values = get_preset("smoke").model.to_dict()
    values["stages"][1]["network"]["channels"] = 0
    with pytest.raises(ValueError, match="stage 1: EfficientUNetConfig.channels must be at least"):
        ImagenConfig.from_dict(values)
    values = get_preset("smoke").model.to_dict()
    values["stages"][0]["timesteps"] = "a hundred"
    with pytest.raises(TypeError, match="stage 0: StageConfig.timesteps must be int"):
        ImagenConfig.from_dict(values)


def test_an_annotation_the_check_cannot_read_is_an_error_not_a_pass():
    @dataclasses.dataclass(frozen=True)
    class Unreadable:
        table: dict[str, int]

    with pytest.raises(TypeError, match="cannot check"):
        check_types(Unreadable({"a": 1}))


def test_train_with_a_billion_fold_steps_is_refused_in_one_line_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    """The default run folder (runs/smoke) is not made: the config refuses before anything."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "smoke", "--steps", "10000000000"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "steps must be at most 1,000,000,000" in lines[0]
    assert os.listdir(tmp_path) == []

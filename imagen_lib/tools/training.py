"""Training a preset from the command line: `python -m imagen_lib train`.

`train_preset` checks every argument before anything slow starts, refuses to touch an
existing checkpoint unless asked to resume it (a resume keeps the run's own training
settings, and says which ones --steps and --set change; a run of another preset, or on other
data, is refused before the encoder loads), reads the training images before the encoder so
that bad data is one line at once (`--data`: your own images), holds the run folder's lock
from start to end, leaves no empty run folder behind when the first run fails before it
saved, and on Ctrl-C says whether a checkpoint is kept. The training itself is
`imagen_lib.train.Trainer` (lesson 8).

Under torchrun the same command trains in several processes (`imagen_lib.plumbing.distributed`):
each checks the arguments, a batch size they cannot share evenly included; the first one alone
holds the lock, makes the run folder and prints; each loads the images and the encoder (the
first on each machine before the others, since it may download them); they all start from the
same steps, which a run folder that not every machine sees would break. When one process ends,
the others stop, each saying in one line which checkpoint is kept.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

from imagen_lib.plumbing import distributed
from imagen_lib.plumbing.datasets import data_name
from imagen_lib.plumbing.files import check_run_folder, not_empty, writable_folder
from imagen_lib.plumbing.locks import LOCK_NAME, run_folder_lock
from imagen_lib.plumbing.overrides import override
from imagen_lib.plumbing.resuming import check_resumable, run_preset
from imagen_lib.plumbing.training_data import training_set
from imagen_lib.presets import Preset, TrainConfig, get_preset
from imagen_lib.tools.common import at_least
from imagen_lib.train import Trainer


@contextmanager
def removed_if_failed_empty(folder: Path) -> Iterator[None]:
    """Run the body; if it fails, remove `folder` and the parents made for it, if only a lock is in.

    So a first `train` that fails (an encoder that cannot be loaded, say) leaves no empty run
    folder behind.
    """
    made = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for path in made:
            if path.is_dir() and {child.name for child in path.iterdir()} <= {LOCK_NAME}:
                (path / LOCK_NAME).unlink(missing_ok=True)
                path.rmdir()
        raise


@contextmanager
def interrupt_says_what_is_kept(checkpoint: Path) -> Iterator[None]:
    """Run the body; on Ctrl-C, or when another process of the run ended, say in the error
    whether `checkpoint` is kept (`main` prints it): a new run has none until its first save."""
    try:
        yield
    except KeyboardInterrupt:
        raise KeyboardInterrupt(kept(checkpoint)) from None
    except Exception as error:
        stopped = distributed.ending(error)
        if stopped is None:
            raise
        raise distributed.ProcessesStopped(f"{stopped}: {kept(checkpoint)}") from error


def kept(checkpoint: Path) -> str:
    """Whether `checkpoint` is kept when training stops early, and how to go on."""
    if checkpoint.is_file():
        return f"{checkpoint} is kept; continue it with --resume"
    return "no checkpoint had been written yet"


def with_settings(
    training: TrainConfig, overrides: Sequence[str], steps: int | None, data: str | None = None
) -> TrainConfig:
    """`training` with the FIELD=VALUE `overrides`, then `steps` and `data`, applied, as a new
    config; its data is checked, a folder kept as its absolute path (`data_name`).

    TrainConfig is frozen: `dataclasses.replace` makes a new one, whose checks run on the new
    values (so a billion-fold --steps is refused before anything is written).
    """
    changed = override(training, list(overrides))
    if at_least(steps, 1, "--steps", " (steps per stage)") is not None:
        changed = dataclasses.replace(changed, steps=steps)
    if data is not None:
        changed = dataclasses.replace(changed, data=data)
    return dataclasses.replace(changed, data=data_name(changed.data))


def train_preset(
    preset: str = "cpu",
    out: str | Path | None = None,
    stage: int | None = None,
    steps: int | None = None,
    resume: bool = False,
    encoder: str | None = None,
    overrides: Sequence[str] = (),
    data: str | None = None,
    channels: int | None = None,
) -> Path:
    """Train every stage of a preset (or one) into OUT (default runs/PRESET); return the checkpoint.

    `overrides` are FIELD=VALUE assignments to the preset's training settings; `encoder`
    replaces its text encoder and `channels` its images' channels (1 or 3), both saved in
    every checkpoint with the rest of the preset; `data` names your own images, a folder or
    a torchvision dataset (`imagen_lib.plumbing.datasets`). A resumed run keeps its own
    training settings, its data included, with `steps`, `overrides` and `data` applied on
    top, and prints what they change; other data than its own is refused.
    """
    chosen = preset_to_train(preset, stage, steps, encoder, overrides, data, channels)
    out = writable_folder(f"runs/{chosen.name}" if out is None else out)
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists() and not resume:
        raise ValueError(
            f"{checkpoint} exists: add --resume to continue it, or choose another --out"
        )
    processes = distributed.from_environment()  # alone, unless torchrun started several
    # one training process per folder: of several, the first holds the lock and makes the folder
    lock = run_folder_lock(out) if processes.writes else nullcontext()
    made = removed_if_failed_empty(out) if processes.writes else nullcontext()
    with (
        distributed.started(),
        made,
        lock,
        processes.output(),
        interrupt_says_what_is_kept(checkpoint),
    ):
        if resume and checkpoint.is_file():
            saved = run_preset(checkpoint)
            # the run's own settings, and on top only what this command gives
            chosen = dataclasses.replace(
                chosen, training=with_settings(saved.training, overrides, steps, data)
            )
            check_resumable(saved, chosen, checkpoint)  # before the encoder and images load
        trainer = loaded_trainer(chosen, out, processes)
        if resume and checkpoint.exists():
            resumed(trainer, checkpoint)
        elif resume:
            print(f"no checkpoint in {out} yet: starting a new run")
        processes.check_same(trainer.steps, "steps")
        print(f"training preset {chosen.name!r} on {trainer.device}: {chosen.description}")
        started = time.perf_counter()
        path = trainer.train([stage] if stage is not None else None)
    seconds = time.perf_counter() - started
    if not processes.writes:
        return path
    print(f"done in {seconds:.0f} s; checkpoint: {path}; sample grids: {out / 'samples'}")
    return path


def preset_to_train(
    preset: str,
    stage: int | None,
    steps: int | None,
    encoder: str | None,
    overrides: Sequence[str],
    data: str | None,
    channels: int | None,
) -> Preset:
    """The preset named `preset` with the command's settings applied, each checked (see
    `train_preset`); a resume then puts the run's own training settings beneath them."""
    chosen = get_preset(preset)
    training = with_settings(chosen.training, overrides, steps, data)
    model = chosen.model
    if encoder is not None:
        not_empty(encoder, "--encoder", "a text encoder, or leave --encoder out for the preset's")
        model = dataclasses.replace(model, text_encoder=encoder)
    if channels is not None:
        model = dataclasses.replace(model, channels=channels)
    chosen = dataclasses.replace(chosen, model=model, training=training)
    stages = len(chosen.model.stages)
    if stage is not None and not 0 <= stage < stages:
        raise ValueError(
            f"--stage must be between 0 and {stages - 1} for preset {chosen.name!r}, got {stage}"
        )
    return chosen


def loaded_trainer(chosen: Preset, out: Path, processes: distributed.Processes) -> Trainer:
    """A Trainer of `chosen` into `out`, for this process of `processes`: the training images
    are read first, so that bad data is one line before the encoder takes its seconds to load.

    A batch size the processes cannot share evenly is said by the first process alone.
    """
    try:
        processes.check_batch_size(chosen.training.batch_size)
    except ValueError:
        if processes.writes:
            raise
        raise SystemExit(2) from None  # every process finds it alike: the first one says it
    check_run_folder(out, sampling=chosen.training.sample_every > 0)
    images = (
        f"images ({chosen.training.data})"
        if chosen.training.data
        else f"digits ({chosen.training.data_source})"
    )
    print(
        f"loading the text encoder {chosen.model.text_encoder!r} and the training {images} ...",
        flush=True,
    )
    with processes.first_on_each_machine():  # which may download them
        training_data = training_set(chosen)
    quiet = not processes.writes  # one progress bar, the first process's
    return Trainer(chosen, out, processes.device, data=training_data, quiet=quiet)


def resumed(trainer: Trainer, checkpoint: Path) -> None:
    """Resume `trainer` from `checkpoint`, saying where it resumed and what the command changed."""
    print(f"loading checkpoint {checkpoint} ...", flush=True)
    changes = trainer.resume()
    print(f"resumed from {checkpoint} at steps {trainer.steps}")
    if changes:
        print(f"changed: {', '.join(changes)}")

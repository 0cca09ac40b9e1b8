"""Training the cascade: each stage with its own optimiser and EMA, resumable exactly.

Lesson 8. Imagen trains its base and super-resolution models independently (Saharia et
al. 2022, Section 2.4): each SR stage learns from real low-resolution images, never from
the base model's samples, so the stages can be trained one after another, or one at a
time, in any order.

Per stage: AdamW with a linear learning-rate warm-up, gradient-norm clipping, an
exponential moving average (EMA) of the weights that sampling uses (its decay warmed up
so that early checkpoints are already useful), and mixed precision on CUDA (bf16 on GPUs
that compute it natively, fp16 with loss scaling on older ones). Every training caption
is encoded once, into a table on the device.

The same trainer learns scenes of two digits side by side (TrainConfig.captions "scenes",
the `scenes` preset): it makes them from the training digits, with the training pairs of
`imagen_lib.scenes` only, so the held-out pairs that test binding are never seen, and its
sample grids report scene accuracy (both digits right, each in its place). Colour scenes
(captions "colour scenes", the `colour-scenes` preset) are made alike, with the training
colour-digit combinations of `imagen_lib.colours` only; their scene accuracy asks for both
colours right too.

It learns your own captioned images as well (TrainConfig.data: a folder, or a torchvision
dataset's name): `imagen_lib.plumbing.datasets` reads them at the preset's size and channels
with their captions, and the grids prompt the first of those captions.

A step is lean, because on a GPU each operation costs a kernel launch from Python: the
optimiser, the gradient clipping and the EMA each update all parameters in one fused
call, nothing waits for the device except every SYNC_EVERY steps, and on CUDA the
networks are compiled with torch.compile (TrainConfig.compile), falling back to plain
PyTorch where compiling fails.

A checkpoint holds the preset, the weights, the EMA weights, the optimiser states, the
step of every stage and every stage's random generator, and is written atomically: a
kill never corrupts it, and resuming gives exactly the weights an uninterrupted run
would. Resuming checks the whole file first and reports the training settings in which the
new run differs from the saved one; a full disk stops training in one line, with the last
checkpoint whole (and training does not start without room for a checkpoint). A NaN or
infinite loss or weight, or weights that suddenly grow huge, stop training with a clear
message before anything is saved, so a checkpoint never holds diverged weights. One process
at a time trains into a run folder: it holds the folder's lock file for the whole run.

Several processes train as one when torchrun starts them (on several GPUs, or machines):
every process draws the same whole batch, runs its network on its own block of it, and their
gradients add up to the one-process gradient (`imagen_lib.plumbing.distributed`), so each
takes the one-process step. The first process alone writes checkpoints and sample grids.
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from imagen_lib.cascade import Imagen, default_device, encoder_for
from imagen_lib.checkpoint import load_weights, model_payload, read_checkpoint, require_entries
from imagen_lib.colours import (
    ALL_COLOUR_SCENES,
    COLOUR_CAPTIONS,
    HELD_OUT_COLOUR_SCENES,
    TRAINING_COLOUR_SCENES,
    asked,
    colour_scene_prompts,
    held_out_in,
    make_colour_scenes,
)
from imagen_lib.data import (
    IMAGE_SIZE,
    NUMBER_WORDS,
    DigitSet,
    height_width,
    load_mnist,
    resize,
    size_text,
)
from imagen_lib.plumbing import distributed
from imagen_lib.plumbing.compiling import compiles
from imagen_lib.plumbing.datasets import CaptionedImages, LabelCaptions, load_images
from imagen_lib.plumbing.errors import Stopped
from imagen_lib.plumbing.files import (
    SHIPPED_CLASSIFIER,
    DiskFull,
    atomic_save,
    check_free_space,
    check_run_folder,
    remove_temporaries,
    save_grid,
)
from imagen_lib.plumbing.locks import run_folder_lock
from imagen_lib.presets import Preset, caption_family, training_changes
from imagen_lib.scenes import (
    HELD_OUT_PAIRS,
    SCENE_SIZE,
    TRAINING_PAIRS,
    TRAINING_SCENE_CAPTIONS,
    SceneCaptions,
    make_scenes,
    scene_prompts,
)
from imagen_lib.text import TextEncoder

# The grid written while training: every digit as a numeral, a word and two phrasings.
GRID_PROMPTS = (
    [str(digit) for digit in range(10)]
    + list(NUMBER_WORDS)
    + [f"a handwritten {word}" for word in NUMBER_WORDS]
    + [f"the number {digit}" for digit in range(10)]
)
# The grid written while training on scenes, 4 scenes a row (as wide as 8 digits): five
# rows of order and relation prompts of training pairs, then a row of held-out pairs,
# which training never shows: the binding test.
SCENE_GRID_TRAINING = scene_prompts(
    TRAINING_SCENE_CAPTIONS, TRAINING_PAIRS, 20, ("order", "relation")
)
SCENE_GRID_HELD_OUT = scene_prompts(
    TRAINING_SCENE_CAPTIONS, HELD_OUT_PAIRS, 4, ("order", "relation")
)
SCENE_GRID_PROMPTS = [prompt.text for prompt in SCENE_GRID_TRAINING + SCENE_GRID_HELD_OUT]
# The same for colour scenes: five rows of training scenes, then a row that shows held-out
# colour-digit combinations.
COLOUR_GRID_TRAINING = colour_scene_prompts(COLOUR_CAPTIONS, TRAINING_COLOUR_SCENES, 20)
COLOUR_GRID_HELD_OUT = colour_scene_prompts(COLOUR_CAPTIONS, HELD_OUT_COLOUR_SCENES, 4)
COLOUR_GRID_PROMPTS = [prompt.text for prompt in COLOUR_GRID_TRAINING + COLOUR_GRID_HELD_OUT]
# Per family of scenes: the grid's training prompts and held-out prompts, and what each
# part shows, in the words of the score written beside the grid
SCENE_GRIDS = {
    "scenes": (SCENE_GRID_TRAINING, SCENE_GRID_HELD_OUT, ("training pairs", "held-out pairs")),
    "colour scenes": (
        COLOUR_GRID_TRAINING,
        COLOUR_GRID_HELD_OUT,
        ("training scenes", "scenes of held-out combinations"),
    ),
}
SCENE_GRID_COLUMNS = 4
SYNC_EVERY = 25  # steps between looks at the loss from the host (each look waits for the GPU)
# Between two looks (at most SYNC_EVERY steps apart) healthy training changes the weights'
# norm by a few percent: measured on the smoke preset at 50 times its learning rate, +5% in
# 10 steps and +20% in 60. A tenfold growth is a step that blew the weights up: they are
# still finite, but the next loss would be NaN.
GROWTH_LIMIT = 10.0


class TrainingDiverged(Stopped):
    """The loss or the weights became NaN or infinite, or the weights grew huge in a few steps."""


def training_state(path: str | Path) -> dict:
    """A training checkpoint's dictionary, checked as a whole (a weights-only file is refused)."""
    path = Path(path)
    payload = read_checkpoint(path)
    if "optimizers" not in payload:
        raise ValueError(f"{path} holds weights only, not a training state: it cannot be resumed")
    require_entries(payload, ("preset", "model", "ema", "scaler", "steps", "generators"), path)
    return payload


def run_preset(path: str | Path) -> Preset:
    """The preset a run's checkpoint was saved with: its model, and the training settings a
    resume keeps."""
    return Preset.from_dict(training_state(path)["preset"])


def check_resumable(saved: Preset, preset: Preset, path: Path) -> None:
    """Refuse to resume a run saved with `saved` as `preset`, unless both have one model.

    Said in terms of the options that fix it: --encoder, --channels, --data or --preset. A
    run learns one set of images: resuming it on other data is refused too.
    """
    if saved.model.text_encoder != preset.model.text_encoder:
        raise ValueError(
            f"{path} was trained with text encoder {saved.model.text_encoder!r}, "
            f"not {preset.model.text_encoder!r}: resume with --encoder {saved.model.text_encoder}"
        )
    if saved.model.channels != preset.model.channels:
        raise ValueError(
            f"{path} was trained on {saved.model.channels}-channel images, not "
            f"{preset.model.channels}: resume with --channels {saved.model.channels}"
        )
    if saved.training.data != preset.training.data:
        raise ValueError(
            f"{path} was trained on {saved.training.data or 'the digits'}, not "
            f"{preset.training.data or 'the digits'}: leave --data out to resume it on its own "
            "data, or use a new --out"
        )
    if saved.model != preset.model:
        raise ValueError(
            f"{path} was trained with a different model config (preset {saved.name!r}): "
            f"resume with --preset {saved.name}, or use a new --out folder"
        )


def training_set(preset: Preset) -> DigitSet | CaptionedImages:
    """The images a preset trains on: the training digits, scenes made from them, or your own.

    Scenes (captions "scenes") pair the digits as TRAINING_PAIRS only, and colour scenes
    (captions "colour scenes") show TRAINING_COLOUR_SCENES only, reproducibly for the run's
    seed, so a resumed run trains on the same scenes. Your own images (TrainConfig.data) come
    at the size and channels of the cascade's last stage, with their captions.
    """
    config = preset.training
    if config.data:
        size = height_width(preset.model.stages[-1].image_size)
        return load_images(config.data, preset.model.channels, size)
    if config.captions == "colour scenes":
        if preset.model.channels != 3:
            raise ValueError(
                f"colour scenes are RGB images, but preset {preset.name!r} makes "
                f"{preset.model.channels}-channel ones: leave --channels out, or give 3"
            )
        grey = load_mnist("train", 1, config.data_source)  # tinted as the scenes are made
        return make_colour_scenes(grey, TRAINING_COLOUR_SCENES, config.scene_count, config.seed)
    digits = load_mnist("train", preset.model.channels, config.data_source)
    if config.captions != "scenes":
        return digits
    return make_scenes(digits, TRAINING_PAIRS, config.scene_count, seed=config.seed)


def check_training_scenes(labels: torch.Tensor, captions: SceneCaptions) -> None:
    """Refuse training scenes (labels (N,)) of a held-out pair or combination, or uncaptioned.

    Captions are drawn only for the scenes of the training set, so with no held-out one
    among them no caption of one is ever drawn either.
    """
    if captions.colourings:
        check_training_colour_scenes(labels)
        return
    pairs = [divmod(int(label), 10) for label in labels.unique()]
    held_out = sorted(set(pairs) & set(HELD_OUT_PAIRS))
    if held_out:
        raise ValueError(
            f"the training scenes include the held-out pairs {held_out}, which test binding "
            "and must never be trained on: make the scenes from scenes.TRAINING_PAIRS"
        )
    captions.check_can_caption(pairs)


def check_training_colour_scenes(labels: torch.Tensor) -> None:
    """Refuse colour scenes (labels (N,)) that show a held-out colour-digit combination."""
    labels = labels.unique().tolist()
    outside = [label for label in labels if not 0 <= label < len(ALL_COLOUR_SCENES)]
    if outside:
        raise ValueError(
            f"colour scene labels index colours.ALL_COLOUR_SCENES, 0-{len(ALL_COLOUR_SCENES) - 1}: "
            f"got {outside[:5]}; make the scenes with colours.make_colour_scenes"
        )
    held_out = sorted(
        {combination for label in labels for combination in held_out_in(ALL_COLOUR_SCENES[label])}
    )
    if held_out:
        raise ValueError(
            f"the training scenes show the held-out colour-digit combinations {held_out}, which "
            "test binding and must never be trained on: make the scenes from "
            "colours.TRAINING_COLOUR_SCENES"
        )


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay after `step` updates: min(decay, (1 + step) / (10 + step)).

    A warm-up: with a fixed decay of 0.999 half of the average is still the random
    initial weights after 700 steps, so early sample grids would be noise. The ramp lets
    the average follow the weights closely at first and settle to `decay` later.
    """
    return min(decay, (1 + step) / (10 + step))


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for all parameters in one fused call."""
    # torch has no public fused lerp over a list of tensors; torch.optim.swa_utils' own EMA
    # helper uses this same call.
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
        for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)


@torch.no_grad()
def global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The norm of all `tensors` taken as one vector, as torch.nn.utils.get_total_norm computes it.

    A 0-d tensor on their device (no host sync), NaN or inf if any is. Three operations
    however many tensors there are: get_total_norm adds a `.to(device)` per tensor, 398
    more operations for the gradients of the `mnist` preset's base U-Net.
    """
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def weight_norm(module: nn.Module) -> torch.Tensor:
    """The norm of all parameters of `module` as one vector."""
    return global_norm(list(module.parameters()))


@torch.no_grad()
def clip_gradients(module: nn.Module, max_norm: float) -> None:
    """Scale the gradients of `module` so that their joint norm is at most `max_norm`.

    torch.nn.utils.clip_grad_norm_, bit for bit: every gradient times
    min(1, max_norm / (norm + 1e-6)), a tensor, so that nothing waits for the device to
    decide whether to clip. But in 8 operations, where torch's version (foreach=True
    included) takes one more per parameter (see `global_norm`).
    """
    gradients = [param.grad for param in module.parameters() if param.grad is not None]
    if not gradients:  # the loss did not depend on the weights: nothing to clip, as in torch
        return
    scale = (max_norm / (global_norm(gradients) + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(gradients, scale)


def learning_rate_at(step: int, base_rate: float, warmup_steps: int) -> float:
    """Linear warm-up from 0 to base_rate over warmup_steps, then constant."""
    return base_rate * min(1.0, (step + 1) / max(1, warmup_steps))


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision type for training on `device`, or None for full fp32.

    bf16 only where the GPU computes it natively (compute capability 8.0, Ampere, and
    later); older GPUs such as Colab's T4 (7.5) report bf16 as supported but emulate it
    slowly, so they get fp16, which needs a GradScaler. CPUs and Apple's MPS train in fp32.
    """
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


class Trainer:
    """Owns a cascade, its per-stage optimisers, EMAs and random generators, and the data.

    The training digits, their labels and the embeddings of every training caption live
    on the device, so a batch is a few index operations with the stage's own generator:
    no Python loop over prompts and no copy from the host per step.
    """

    def __init__(
        self,
        preset: Preset,
        out_dir: str | Path,
        device: str | torch.device | None = None,
        text_encoder: TextEncoder | None = None,
        data: DigitSet | CaptionedImages | None = None,
        quiet: bool = False,
    ):
        self.preset = preset
        self.config = preset.training
        self.out_dir = Path(out_dir)
        self.device = torch.device(device) if device is not None else default_device()
        self.quiet = quiet
        # this process's place among several that torchrun started; alone by default
        self.processes = distributed.current()
        self.processes.check_batch_size(self.config.batch_size)
        torch.manual_seed(self.config.seed)  # the networks' initial weights
        encoder = text_encoder or encoder_for(preset.model)
        self.model = Imagen(preset.model, encoder).to(self.device)
        self.ema = copy.deepcopy(self.model.networks).requires_grad_(False)
        self.optimizers = [
            # fused: one kernel for all parameters instead of several per parameter
            torch.optim.AdamW(
                net.parameters(),
                lr=self.config.learning_rate,
                weight_decay=self.config.weight_decay,
                fused=self.device.type in ("cpu", "cuda"),
            )
            for net in self.model.networks
        ]
        compiling = compiles(self.config.compile, self.device)
        # The networks, each wrapped to add up its gradients over several processes
        # (DistributedDataParallel); alone, the networks themselves.
        self.parallel_networks = [self.processes.parallel(net) for net in self.model.networks]
        # What a training step runs: those, or compiled views sharing their weights.
        self.training_networks = [
            torch.compile(net) if compiling else net for net in self.parallel_networks
        ]
        self.compile_tried = [not compiling] * len(self.model.networks)
        self.steps = [0] * len(self.model.networks)
        # the steps of the checkpoint on disk, once this trainer saved or resumed one
        self.saved_steps: list[int] | None = None
        data = data if data is not None else training_set(preset)
        if len(data) == 0:
            raise ValueError("the training set is empty: give a DigitSet with at least one image")
        wanted = (preset.model.channels, *height_width(self.model.image_size))
        if tuple(data.images.shape[1:]) != wanted:
            # found here, not at the first step, after the captions have been encoded
            raise ValueError(
                f"the training images are {tuple(data.images.shape[1:])} (channels, height, "
                f"width), but preset {preset.name!r} makes {wanted}: load_mnist's digits are "
                f"{size_text(IMAGE_SIZE)}, make_scenes's scenes of two digits (captions "
                f"'scenes') {size_text(SCENE_SIZE)}, in 3 channels for 'colour scenes'"
            )
        # your own images bring their captions; digits and scenes take a family by name
        self.captions = (
            data.captions
            if isinstance(data, CaptionedImages)
            else caption_family(self.config.captions)
        )
        if isinstance(self.captions, SceneCaptions):
            check_training_scenes(data.labels, self.captions)
        # (N, C, H, W), (N,)
        self.images, self.labels = data.images.to(self.device), data.labels.to(self.device)
        tokens, mask = encoder.encode(self.captions.vocabulary())  # every caption, encoded once
        # (V, L, D), (V, L)
        self.caption_tokens, self.caption_mask = tokens.to(self.device), mask.to(self.device)
        # One generator per stage: a stage's training is the same whether the stages run
        # one after another, one at a time, or interleaved by a resume that raised --steps.
        self.generators = [
            torch.Generator(self.device).manual_seed(self.config.seed * 100 + stage)
            for stage in range(len(self.steps))
        ]
        self.precision = autocast_dtype(self.device) if self.config.mixed_precision else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == torch.float16)

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    # ----- checkpoints -------------------------------------------------------------
    def ema_state(self) -> dict:
        """The EMA weights keyed like an Imagen state dict, so load_imagen(weights='ema') works."""
        return {f"networks.{key}": value for key, value in self.ema.state_dict().items()}

    def checkpoint_bytes(self) -> int:
        """About the size of a checkpoint: the weights, the EMA weights and AdamW's two moments."""
        weights = sum(p.numel() * p.element_size() for p in self.model.networks.parameters())
        return 4 * weights + 2**20

    def kept_checkpoint(self) -> str:
        """What is on disk when training stops, for the messages of a failed save or divergence."""
        if not self.checkpoint_path.is_file():
            return "no checkpoint had been written yet"
        return f"the checkpoint {self.checkpoint_path} is kept as it was" + (
            f", at steps {self.saved_steps}" if self.saved_steps else ""
        )

    def save(self) -> Path:
        payload = model_payload(self.model)
        payload.update(
            ema=self.ema_state(),
            preset=self.preset.to_dict(),
            optimizers=[optimizer.state_dict() for optimizer in self.optimizers],
            scaler=self.scaler.state_dict(),
            steps=list(self.steps),
            generators=[generator.get_state() for generator in self.generators],
        )
        try:
            path = atomic_save(payload, self.checkpoint_path)
        except DiskFull as error:
            raise DiskFull(
                f"no space left on device to save {self.checkpoint_path} at steps {self.steps}: "
                f"{self.kept_checkpoint()}; free some space, then continue with --resume"
            ) from error
        self.saved_steps = list(self.steps)
        return path

    def resume(self, path: str | Path | None = None) -> list[str]:
        """Restore everything from a checkpoint written by `save` for the same model.

        Returns the training settings in which this trainer differs from the checkpoint's
        run, as "learning_rate 0.0002 -> 0.001"; its next save records its own.
        """
        path = Path(path) if path else self.checkpoint_path
        payload = training_state(path)  # checked as a whole: types, ranges, one entry per stage
        saved = Preset.from_dict(payload["preset"])
        check_resumable(saved, self.preset, path)
        if payload["text_dim"] != self.model.text_encoder.dim:
            raise ValueError(
                f"{path} was trained with text encoder {payload['text_encoder']!r}; "
                f"this run uses {self.model.text_encoder.name!r}"
            )
        for stage, (generator, state) in enumerate(zip(self.generators, payload["generators"])):
            expected = generator.get_state().numel()  # checked before anything is loaded
            if state.numel() != expected:
                raise ValueError(
                    f"the random generator state of stage {stage} in {path} has {state.numel()} "
                    f"bytes, but a {self.device.type} generator's has {expected}: "
                    "resume on the kind of device the run was trained on, or train anew into "
                    "another --out"
                )
        load_weights(self.model, payload["model"], path, "model")
        load_weights(
            self.ema,
            {key.removeprefix("networks."): value for key, value in payload["ema"].items()},
            path,
            "EMA",
        )
        for stage, (optimizer, state) in enumerate(zip(self.optimizers, payload["optimizers"])):
            try:
                optimizer.load_state_dict(state)
            except (ValueError, KeyError, TypeError, RuntimeError) as error:
                raise ValueError(
                    f"the optimiser state of stage {stage} in {path} does not fit its network "
                    f"({' '.join(str(error).split())[:200]}): the file was edited, or written "
                    "by a different version of imagen_lib"
                ) from error
        # A CPU or bf16 run saves the disabled scaler's empty state: an fp16 run resumed from
        # it (on an older GPU) starts loss scaling afresh.
        if payload["scaler"]:
            self.scaler.load_state_dict(payload["scaler"])
        self.steps = list(payload["steps"])
        for generator, state in zip(self.generators, payload["generators"]):
            generator.set_state(state)
        self.saved_steps = list(self.steps)
        return training_changes(saved.training, self.config)

    # ----- training ----------------------------------------------------------------
    def batch(self, stage: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A random batch for a stage: images, and the embeddings and mask of fresh captions.

        Images (B, C, H, W), embeddings (B, L, D) and mask (B, L).
        """
        generator = self.generators[stage]
        # (B,)
        index = torch.randint(
            len(self.labels), (self.config.batch_size,), generator=generator, device=self.device
        )
        # (B,) ids into the caption table
        captions = self.captions.draw(self.labels[index], generator)
        return self.images[index], self.caption_tokens[captions], self.caption_mask[captions]

    def forward_backward(
        self, stage: int, images: torch.Tensor, text: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The stage's loss on a batch, with its gradients (scaled for fp16) left in the network."""
        self.optimizers[stage].zero_grad(set_to_none=True)
        with torch.autocast(
            self.device.type, dtype=self.precision, enabled=self.precision is not None
        ):
            loss = self.model.loss(
                stage,
                images,
                text,
                mask,
                generator=self.generators[stage],
                # with several processes, each runs the network on its own block of the batch
                net=self.processes.sharded(self.training_networks[stage]),
            )
        self.scaler.scale(loss).backward()
        return loss

    def first_forward_backward(
        self, stage: int, images: torch.Tensor, text: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """`forward_backward` at a stage's first step, with the plain network if compiling fails.

        torch.compile compiles at the first call; where it cannot (no C compiler, say), the
        stage trains without it, with the same random draws as the failed attempt.
        """
        generator = self.generators[stage]
        before = generator.get_state()
        try:
            loss = self.forward_backward(stage, images, text, mask)
        except Exception as error:
            generator.set_state(before)
            self.training_networks[stage] = self.parallel_networks[stage]
            reason = " ".join(str(error).split())[:200]
            print(
                f"torch.compile failed for stage {stage} ({type(error).__name__}: {reason}); "
                "training continues without it (--set compile=off skips the attempt)",
                flush=True,
            )
            loss = self.forward_backward(stage, images, text, mask)
        self.compile_tried[stage] = True
        return loss

    def train_step(self, stage: int) -> torch.Tensor:
        """One optimiser step of one stage; returns the loss as a 0-d tensor.

        Reading the loss waits for the device.
        """
        network, optimizer = self.model.networks[stage], self.optimizers[stage]
        network.train()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(
                self.steps[stage], self.config.learning_rate, self.config.warmup_steps
            )
        images, text, mask = self.batch(stage)
        if self.compile_tried[stage]:
            loss = self.forward_backward(stage, images, text, mask)
        else:
            loss = self.first_forward_backward(stage, images, text, mask)
        self.scaler.unscale_(optimizer)
        clip_gradients(network, self.config.grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        ema_update(self.ema[stage], network, ema_decay_at(self.steps[stage], self.config.ema_decay))
        self.steps[stage] += 1
        return loss.detach()

    def check_finite(
        self,
        stage: int,
        losses: torch.Tensor,
        last_good_step: int,
        last_norm: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Stop with TrainingDiverged if the stage just diverged; else return its weights' norm.

        The norm is returned for the next look.

        Diverged: a loss since the last look, or a weight (trained or EMA), is NaN or infinite,
        or, when the norm at the last look is given (`last_norm`), the weights' norm grew more
        than GROWTH_LIMIT times since. The last catches a step that blew the weights up while
        keeping them finite (such as learning rate 1000): they would be saved, and every resume
        would diverge at once.
        """
        norm = weight_norm(self.model.networks[stage])
        finite = (
            torch.isfinite(losses).all()
            & torch.isfinite(norm)
            & torch.isfinite(weight_norm(self.ema[stage]))
        )
        healthy = finite if last_norm is None else finite & (norm <= GROWTH_LIMIT * last_norm)
        if bool(healthy):
            return norm
        if bool(finite):
            what = f"the weights' norm grew {(norm / last_norm).item():.0f}-fold"
        else:
            what = "a loss or weight became NaN or infinite"
        # nothing was saved after the last look, so the file on disk is as this trainer
        # last saved or resumed it
        raise TrainingDiverged(
            f"stage {stage} diverged ({what}) between steps {last_good_step} and "
            f"{self.steps[stage]}: training stopped and {self.kept_checkpoint()}. "
            f"Try a lower learning rate than {self.config.learning_rate:g} "
            "(--set learning_rate=...) or --set mixed_precision=false."
        )

    def sampling_model(self) -> Imagen:
        """A copy of the cascade holding the EMA weights, for sample grids."""
        model = Imagen(self.preset.model, self.model.text_encoder).to(self.device)
        model.load_state_dict(self.ema_state())
        return model

    def grid_prompts(self) -> tuple[list[str], int]:
        """The prompts of the sample grids, and how many columns the grid has.

        GRID_PROMPTS, the prompts of SCENE_GRIDS for a run on scenes, or for your own images
        the first captions of their vocabulary: with class names, a row per caption template.
        """
        if isinstance(self.captions, LabelCaptions):
            prompts = self.captions.vocabulary()[: len(GRID_PROMPTS)]
            return prompts, min(len(self.captions.names), 10)
        if self.config.captions in SCENE_GRIDS:
            trained, held_out, _ = SCENE_GRIDS[self.config.captions]
            return [prompt.text for prompt in trained + held_out], SCENE_GRID_COLUMNS
        return GRID_PROMPTS, 10

    def write_samples(self, stage: int) -> tuple[Path, str]:
        """Sample the grid's prompts through stages 0..stage with the EMA weights; save the grid.

        The prompts of `grid_prompts`. Returns the grid's path and what the shipped digit
        classifier reads in it, in words ("" where it is missing, or for your own images): the
        share of digits that are the prompted digit, or of scenes with both digits right
        (and, in colour scenes, both colours).
        """
        from imagen_lib.colour_metrics import colour_scene_scores
        from imagen_lib.metrics import load_classifier, prompt_accuracy, scene_scores

        scenes = SCENE_GRIDS.get(self.config.captions)
        prompts, columns = self.grid_prompts()
        images = self.sampling_model().sample(
            prompts, sampler="ddim", steps=25, seed=0, last_stage=stage
        )[stage]
        path = self.out_dir / "samples" / f"stage{stage}_step{self.steps[stage]:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_grid(images, path, columns=columns)
        own_images = isinstance(self.captions, LabelCaptions)  # no digits for the classifier
        coloured = self.config.captions == "colour scenes"
        grey = self.preset.model.channels == 1
        if own_images or not SHIPPED_CLASSIFIER.is_file() or not (grey or coloured):
            return path, ""
        images = images.float().cpu()
        if not scenes:
            accuracy = prompt_accuracy(load_classifier(), resize(images, IMAGE_SIZE), prompts)
            return path, f"prompt accuracy {accuracy:.0%} ({len(prompts)} samples, EMA weights)"
        trained, held_out, shown = scenes
        classifier, seen = load_classifier(), len(trained)
        accuracies = []
        for part, part_prompts in ((images[:seen], trained), (images[seen:], held_out)):
            if coloured:
                scores = colour_scene_scores(classifier, part, asked(part_prompts))
            else:
                left, right = [p.left for p in part_prompts], [p.right for p in part_prompts]
                scores = scene_scores(classifier, part, left, right)
            accuracies.append(scores["scene"])
        return path, (
            f"scene accuracy {accuracies[0]:.0%} on {seen} {shown[0]}, {accuracies[1]:.0%} on "
            f"{len(held_out)} {shown[1]} (EMA weights)"
        )

    def train_stage(self, stage: int) -> None:
        stage = self.model.check_stage(stage)
        total = self.config.steps
        if self.steps[stage] >= total:
            return
        started, started_step = time.perf_counter(), self.steps[stage]
        losses, last_good_step, last_norm = (
            [],
            self.steps[stage],
            weight_norm(self.model.networks[stage]),
        )
        with tqdm(
            total=total,
            initial=self.steps[stage],
            desc=f"stage {stage}",
            disable=self.quiet,
            dynamic_ncols=True,
        ) as bar:
            while self.steps[stage] < total:
                losses.append(self.train_step(stage))
                done = self.steps[stage]
                saving = done % self.config.checkpoint_every == 0 or done == total
                sampling = self.config.sample_every and (
                    done % self.config.sample_every == 0 or done == total
                )
                if not (saving or sampling or done % SYNC_EVERY == 0):
                    continue
                stacked = torch.stack(losses)
                losses = []
                # never save or sample diverged weights
                last_norm = self.check_finite(stage, stacked, last_good_step, last_norm)
                last_good_step = done
                rate = (
                    (done - started_step) * self.config.batch_size / (time.perf_counter() - started)
                )
                bar.update(done - bar.n)
                bar.set_postfix(loss=f"{stacked.mean().item():.4f}", img_s=f"{rate:.0f}")
                if saving and self.processes.writes:
                    self.save()
                if sampling and self.processes.writes:
                    bar.set_description(f"stage {stage} (sampling a grid)")
                    path, score = self.write_samples(stage)
                    bar.set_description(f"stage {stage}")
                    score = f"; {score}" if score else ""
                    bar.write(f"stage {stage} step {done}: samples -> {path}{score}")

    def train(self, stages: list[int] | None = None) -> Path:
        """Train the given stages (default: all, base first); return the checkpoint path.

        The run folder's lock is held throughout, by the process that writes (the first of
        several); every process returns once the last checkpoint is written.
        """
        stages = range(len(self.model.networks)) if stages is None else stages
        stages = [self.model.check_stage(stage) for stage in stages]
        check_run_folder(self.out_dir, sampling=self.config.sample_every > 0)
        writes = self.processes.writes
        with run_folder_lock(self.out_dir) if writes else nullcontext():
            # A save killed midway leaves its temporary file behind; we hold the lock, so none is
            # being written now.
            if writes:
                remove_temporaries(self.checkpoint_path)
            if writes and any(self.steps[stage] < self.config.steps for stage in stages):
                # the checkpoint is written while the old one stays, so all of it must fit
                check_free_space(self.out_dir, self.checkpoint_bytes(), "a training checkpoint")
            for stage in stages:
                self.train_stage(stage)
        self.processes.barrier()
        return self.checkpoint_path

"""Training the cascade: each stage with its own optimiser and EMA, resumable exactly.

Lesson 8. Imagen trains its base and super-resolution models independently (Saharia et
al. 2022, Section 2.4): each SR stage learns from real low-resolution images, never from
the base model's samples, so the stages can be trained one after another, or one at a
time, in any order.

Per stage: AdamW with a linear learning-rate warm-up, gradient-norm clipping, an
exponential moving average (EMA) of the weights that sampling uses (its decay warmed up
so that early checkpoints are already useful), and mixed precision on CUDA (bf16 on GPUs
that compute it natively, fp16 with loss scaling on older ones). A step is lean, since on a
GPU each operation costs a kernel launch from Python: every caption is encoded once, the
optimiser, the clipping and the EMA each update all parameters in one fused call, nothing
waits for the device except every SYNC_EVERY steps, and on CUDA the networks are compiled.
A checkpoint holds everything a resume needs, written atomically: resuming gives exactly
the weights an uninterrupted run would.

The machinery around this method is plumbing (imagen_lib/plumbing/): the images and their
checks (`training_data`), the sample grids' prompts and scores (`training_grids`), the checks
before a resume (`resuming`), the divergence check (`divergence`), the run folder's lock and
disk room (`run_folders`), and several processes training as one under torchrun (`distributed`).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from imagen_lib.cascade import Imagen, default_device, encoder_for
from imagen_lib.checkpoint import model_payload
from imagen_lib.data import DigitSet
from imagen_lib.plumbing import distributed, resuming, training_data, training_grids
from imagen_lib.plumbing.compile_fallback import compiled_first_call
from imagen_lib.plumbing.compiling import compiles
from imagen_lib.plumbing.datasets import CaptionedImages
from imagen_lib.plumbing.divergence import TrainingDiverged, divergence
from imagen_lib.plumbing.files import DiskFull, atomic_save, save_grid
from imagen_lib.plumbing.norms import global_norm, weight_norm
from imagen_lib.plumbing.run_folders import checkpoint_bytes, kept_checkpoint, training_into
from imagen_lib.plumbing.safe_loading import load_weights
from imagen_lib.presets import Preset, training_changes
from imagen_lib.text import TextEncoder

SYNC_EVERY = 25  # steps between looks at the loss from the host (each look waits for the GPU)


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
        # The networks, each wrapped to add up its gradients over several processes
        # (DistributedDataParallel), and what a step runs: those, or compiled views of them.
        self.parallel_networks = [self.processes.parallel(net) for net in self.model.networks]
        compiling = compiles(self.config.compile, self.device)
        self.training_networks = [
            torch.compile(net) if compiling else net for net in self.parallel_networks
        ]
        self.compile_tried = [not compiling] * len(self.model.networks)
        self.steps = [0] * len(self.model.networks)
        # the steps of the checkpoint on disk, once this trainer saved or resumed one
        self.saved_steps: list[int] | None = None
        data = data if data is not None else training_data.training_set(preset)
        # checked before its captions are encoded; your own images bring theirs
        self.captions = training_data.training_captions(data, preset, self.model.image_size)
        # (N, C, H, W), (N,)
        self.images, self.labels = data.images.to(self.device), data.labels.to(self.device)
        tokens, mask = encoder.encode(self.captions.vocabulary())  # every caption, encoded once
        # (V, L, D), (V, L)
        self.caption_tokens, self.caption_mask = tokens.to(self.device), mask.to(self.device)
        # One generator per stage: a stage's training is the same whether the stages run
        # one after another, one at a time, or interleaved by a resume that raised the steps.
        self.generators = [
            torch.Generator(self.device).manual_seed(self.config.seed * 100 + stage)
            for stage in range(len(self.steps))
        ]
        self.precision = autocast_dtype(self.device) if self.config.mixed_precision else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == torch.float16)

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def ema_state(self) -> dict:
        """The EMA weights keyed like an Imagen state dict, so load_imagen(weights='ema') works."""
        return {f"networks.{key}": value for key, value in self.ema.state_dict().items()}

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
                f"{kept_checkpoint(self.checkpoint_path, self.saved_steps)}",
                "free some space, then resume the run",
                resume=True,
            ) from error
        self.saved_steps = list(self.steps)
        return path

    def resume(self, path: str | Path | None = None) -> list[str]:
        """Restore everything from a checkpoint written by `save` for the same model.

        Returns the training settings in which this trainer differs from the checkpoint's
        run, as "learning_rate 0.0002 -> 0.001"; its next save records its own.
        """
        path = Path(path) if path else self.checkpoint_path
        # checked as a whole (types, ranges, one entry per stage) before anything is loaded
        payload = resuming.training_state(path)
        saved = Preset.from_dict(payload["preset"])
        resuming.check_resumable(saved, self.preset, path)
        resuming.check_fits_trainer(payload, self.model.text_encoder, self.generators, path)
        load_weights(self.model, payload["model"], path, "model")
        ema = {key.removeprefix("networks."): value for key, value in payload["ema"].items()}
        load_weights(self.ema, ema, path, "EMA")
        resuming.load_optimizer_states(self.optimizers, payload["optimizers"], path)
        # A CPU or bf16 run saves the disabled scaler's empty state: an fp16 run resumed from
        # it (on an older GPU) starts loss scaling afresh.
        if payload["scaler"]:
            self.scaler.load_state_dict(payload["scaler"])
        self.steps = list(payload["steps"])
        for generator, state in zip(self.generators, payload["generators"]):
            generator.set_state(state)
        self.saved_steps = list(self.steps)
        return training_changes(saved.training, self.config)

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
            # with several processes, each runs the network on its own block of the batch
            net = self.processes.sharded(self.training_networks[stage])
            loss = self.model.loss(
                stage, images, text, mask, generator=self.generators[stage], net=net
            )
        self.scaler.scale(loss).backward()
        return loss

    def first_forward_backward(
        self, stage: int, images: torch.Tensor, text: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """`forward_backward` at a stage's first step, with the plain network if compiling fails."""
        loss = compiled_first_call(
            lambda: self.forward_backward(stage, images, text, mask),
            self.generators[stage],
            f"stage {stage}",
        )
        if loss is None:  # the plain network, with the random draws of the failed attempt
            self.training_networks[stage] = self.parallel_networks[stage]
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

        Diverged (`divergence`): a loss or weight is NaN or infinite, or the weights' norm grew
        huge since `last_norm`, where given. The norm returned is the next look's `last_norm`.
        """
        norm = weight_norm(self.model.networks[stage])
        what = divergence(losses, norm, weight_norm(self.ema[stage]), last_norm)
        if not what:
            return norm
        # nothing was saved after the last look: the file is as this trainer last saved it
        kept = kept_checkpoint(self.checkpoint_path, self.saved_steps)
        raise TrainingDiverged(
            f"stage {stage} diverged ({what}) between steps {last_good_step} and "
            f"{self.steps[stage]}: training stopped and {kept}",
            f"try a lower learning rate than {self.config.learning_rate:g}, or train without "
            "mixed precision",
            learning_rate=None,
            mixed_precision=False,
        )

    def write_samples(self, stage: int) -> tuple[Path, str]:
        """Sample the grid's prompts through stages 0..stage with the EMA weights; save the grid.

        Returns its path and what the digit classifier reads in it (`training_grids`).
        """
        prompts, columns = training_grids.grid_prompts(self.config.captions, self.captions)
        model = Imagen(self.preset.model, self.model.text_encoder).to(self.device)
        model.load_state_dict(self.ema_state())  # a copy of the cascade with the EMA weights
        images = model.sample(prompts, sampler="ddim", steps=25, seed=0, last_stage=stage)[stage]
        path = self.out_dir / "samples" / f"stage{stage}_step{self.steps[stage]:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_grid(images, path, columns=columns)
        return path, training_grids.grid_score(images, prompts, self.preset, self.captions)

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

        The run folder is held throughout (`training_into`: its lock, by the process that
        writes, the first of several); every process returns once the last checkpoint is written.
        """
        stages = range(len(self.model.networks)) if stages is None else stages
        stages = [self.model.check_stage(stage) for stage in stages]
        to_train = any(self.steps[stage] < self.config.steps for stage in stages)
        needed = checkpoint_bytes(self.model.networks) if to_train else 0  # room on the disk
        sampling = self.config.sample_every > 0
        with training_into(self.checkpoint_path, self.processes.writes, sampling, needed):
            for stage in stages:
                self.train_stage(stage)
        self.processes.barrier()
        return self.checkpoint_path

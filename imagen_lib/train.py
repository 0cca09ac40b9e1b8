"""Training the cascade: each stage with its own optimiser and EMA, resumable exactly.

Lesson 8. Imagen trains its base and super-resolution models independently (Saharia et
al. 2022, Section 2.4): each SR stage learns from real low-resolution images, never from
the base model's samples, so the stages can be trained one after another, or one at a
time, in any order.

Per stage: AdamW with a linear learning-rate warm-up, gradient-norm clipping, an
exponential moving average (EMA) of the weights that sampling uses, and mixed precision
on CUDA (bf16 where supported). Text embeddings come from the encoder's cache, so each
distinct prompt is encoded once.

A checkpoint holds the preset, the weights, the EMA weights, the optimiser states, the
step of every stage and every random-number state, and is written atomically: a kill
never corrupts it, and resuming gives exactly the weights an uninterrupted run would.
A NaN or infinite loss stops training with a clear message; the last checkpoint is kept.
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from imagen_lib.cascade import Imagen, ImagenConfig, default_device
from imagen_lib.checkpoint import atomic_save, model_payload, read_checkpoint
from imagen_lib.data import NUMBER_WORDS, DigitSet, label_to_prompt, load_mnist, prompt_vocabulary
from imagen_lib.plotting import save_grid
from imagen_lib.presets import Preset
from imagen_lib.text import TextEncoder

GRID_PROMPTS = [str(digit) for digit in range(10)] + list(NUMBER_WORDS)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    with torch.no_grad():
        for ema_param, param in zip(ema.parameters(), model.parameters()):
            ema_param.lerp_(param, 1 - decay)
        for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)


def learning_rate_at(step: int, base_rate: float, warmup_steps: int) -> float:
    """Linear warm-up from 0 to base_rate over warmup_steps, then constant."""
    return base_rate * min(1.0, (step + 1) / max(1, warmup_steps))


def autocast_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU supports it (no loss scaling needed), else fp16."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


class StageRandomness:
    """One stage's own random streams: which digits, which captions, and the loss's draws.

    The loss draws timesteps, noise and text dropout from torch's global generator; each
    stage keeps its own copy of that generator's state and swaps it in for its steps. So
    a stage's training is the same whether the stages run one after another, one at a
    time, or interleaved by a resume that raised --steps.
    """

    def __init__(self, seed: int, device: torch.device):
        self.data = torch.Generator().manual_seed(seed)
        self.prompts = random.Random(seed)
        self.on_cuda = device.type == "cuda"
        with torch.random.fork_rng(devices=[device] if self.on_cuda else []):
            torch.manual_seed(seed)
            self.torch_state = torch.get_rng_state()
            self.cuda_state = torch.cuda.get_rng_state(device) if self.on_cuda else None

    def swap_in(self) -> None:
        torch.set_rng_state(self.torch_state)
        if self.on_cuda:
            torch.cuda.set_rng_state(self.cuda_state)

    def swap_out(self) -> None:
        self.torch_state = torch.get_rng_state()
        if self.on_cuda:
            self.cuda_state = torch.cuda.get_rng_state()

    def state_dict(self) -> dict:
        return {"data": self.data.get_state(), "prompts": self.prompts.getstate(), "torch": self.torch_state, "cuda": self.cuda_state}

    def load_state_dict(self, state: dict) -> None:
        self.data.set_state(state["data"])
        self.prompts.setstate(state["prompts"])
        self.torch_state = state["torch"]
        if self.on_cuda and state["cuda"] is not None:
            self.cuda_state = state["cuda"]


class Trainer:
    """Owns a cascade, its per-stage optimisers, EMAs and random streams, and the data."""

    def __init__(self, preset: Preset, out_dir: str | Path, device: str | torch.device | None = None,
                 text_encoder: TextEncoder | None = None, data: DigitSet | None = None, quiet: bool = False):
        self.preset = preset
        self.config = preset.training
        self.out_dir = Path(out_dir)
        self.device = torch.device(device) if device is not None else default_device()
        self.quiet = quiet
        torch.manual_seed(self.config.seed)
        encoder = text_encoder or TextEncoder(preset.model.text_encoder, preset.model.max_text_tokens)
        self.model = Imagen(preset.model, encoder).to(self.device)
        self.ema = copy.deepcopy(self.model.networks).requires_grad_(False)
        self.optimizers = [
            torch.optim.AdamW(net.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay)
            for net in self.model.networks
        ]
        self.steps = [0] * len(self.model.networks)
        self.data = data if data is not None else load_mnist("train", preset.model.channels, self.config.data_source)
        if len(self.data) == 0:
            raise ValueError("the training set is empty: give a DigitSet with at least one image")
        self.randomness = [StageRandomness(self.config.seed * 100 + stage, self.device) for stage in range(len(self.steps))]
        encoder.encode(prompt_vocabulary(self.config.rich_prompts))  # fill the cache once
        self.use_autocast = self.config.mixed_precision and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_autocast and autocast_dtype(self.device) == torch.float16)

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    # ----- checkpoints -------------------------------------------------------------
    def ema_state(self) -> dict:
        """The EMA weights keyed like an Imagen state dict, so load_imagen(weights='ema') works."""
        return {f"networks.{key}": value for key, value in self.ema.state_dict().items()}

    def save(self) -> Path:
        payload = model_payload(self.model)
        payload.update(
            ema=self.ema_state(),
            preset=self.preset.to_dict(),
            optimizers=[optimizer.state_dict() for optimizer in self.optimizers],
            steps=list(self.steps),
            rng=[randomness.state_dict() for randomness in self.randomness],
        )
        return atomic_save(payload, self.checkpoint_path)

    def resume(self, path: str | Path | None = None) -> None:
        """Restore everything from a checkpoint written by `save` for the same preset."""
        path = Path(path) if path else self.checkpoint_path
        payload = read_checkpoint(path)
        if "optimizers" not in payload:
            raise ValueError(f"{path} holds weights only, not a training state: it cannot be resumed")
        saved = payload["preset"]
        if ImagenConfig.from_dict(saved["model"]) != self.preset.model:
            raise ValueError(
                f"{path} was trained with a different model config (preset {saved['name']!r}): "
                "resume with the same --preset, or use a new --out folder"
            )
        if payload["text_dim"] != self.model.text_encoder.dim:
            raise ValueError(f"{path} was trained with text encoder {payload['text_encoder']!r}; this run uses {self.model.text_encoder.name!r}")
        self.model.load_state_dict(payload["model"])
        self.ema.load_state_dict({key.removeprefix("networks."): value for key, value in payload["ema"].items()})
        for optimizer, state in zip(self.optimizers, payload["optimizers"]):
            optimizer.load_state_dict(state)
        self.steps = list(payload["steps"])
        for randomness, state in zip(self.randomness, payload["rng"]):
            randomness.load_state_dict(state)

    # ----- training ----------------------------------------------------------------
    def batch(self, stage: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A random batch for a stage: images (B, C, 32, 32), and the text tokens and mask of fresh captions."""
        randomness = self.randomness[stage]
        index = torch.randint(len(self.data), (self.config.batch_size,), generator=randomness.data)
        images = self.data.images[index].to(self.device)
        prompts = [label_to_prompt(int(label), randomness.prompts, self.config.rich_prompts) for label in self.data.labels[index]]
        text, mask = self.model.encode_text(prompts)
        return images, text, mask

    def train_step(self, stage: int) -> float:
        network, optimizer = self.model.networks[stage], self.optimizers[stage]
        network.train()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(self.steps[stage], self.config.learning_rate, self.config.warmup_steps)
        images, text, mask = self.batch(stage)
        randomness = self.randomness[stage]
        with torch.random.fork_rng(devices=[self.device] if randomness.on_cuda else []):
            randomness.swap_in()
            with torch.autocast(self.device.type, dtype=autocast_dtype(self.device), enabled=self.use_autocast):
                loss = self.model.loss(stage, images, text, mask)
            randomness.swap_out()
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"stage {stage} loss became {loss.item()} at step {self.steps[stage]}: training stopped, "
                f"the last good checkpoint ({self.checkpoint_path}) is kept. Try a lower learning rate "
                "(--set learning_rate=...) or --set mixed_precision=false."
            )
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(network.parameters(), self.config.grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        ema_update(self.ema[stage], network, self.config.ema_decay)
        self.steps[stage] += 1
        return loss.item()

    def sampling_model(self) -> Imagen:
        """A copy of the cascade holding the EMA weights, for sample grids."""
        model = Imagen(self.preset.model, self.model.text_encoder).to(self.device)
        model.load_state_dict(self.ema_state())
        return model

    def write_samples(self, stage: int) -> Path:
        """Sample GRID_PROMPTS through stages 0..stage with the EMA weights; save a grid."""
        images = self.sampling_model().sample(GRID_PROMPTS, sampler="ddim", steps=25, seed=0)[stage]
        path = self.out_dir / "samples" / f"stage{stage}_step{self.steps[stage]:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_grid(images, path, columns=10)

    def train_stage(self, stage: int) -> None:
        stage = self.model.check_stage(stage)
        total = self.config.steps
        if self.steps[stage] >= total:
            return
        started, started_step = time.perf_counter(), self.steps[stage]
        with tqdm(total=total, initial=self.steps[stage], desc=f"stage {stage}", disable=self.quiet, dynamic_ncols=True) as bar:
            while self.steps[stage] < total:
                loss = self.train_step(stage)
                done = self.steps[stage]
                rate = (done - started_step) * self.config.batch_size / (time.perf_counter() - started)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}")
                if done % self.config.checkpoint_every == 0 or done == total:
                    self.save()
                if self.config.sample_every and (done % self.config.sample_every == 0 or done == total):
                    self.write_samples(stage)

    def train(self, stages: list[int] | None = None) -> Path:
        """Train the given stages (default: all, base first) and return the checkpoint path."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for stage in stages if stages is not None else range(len(self.model.networks)):
            self.train_stage(stage)
        return self.checkpoint_path


def images_per_second(trainer: Trainer, stage: int, steps: int = 5) -> float:
    """Measured training throughput of one stage (after one warm-up step), without saving.

    It really trains: the trainer's weights, EMA and step count move on, so measure on a
    trainer made for the purpose (as `python -m imagen_lib bench` does).
    """
    trainer.train_step(stage)
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(stage)
    return steps * trainer.config.batch_size / (time.perf_counter() - started)

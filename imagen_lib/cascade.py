"""The Imagen pipeline: a text encoder and a cascade of diffusion models.

Lessons 7 and 8. Imagen (Saharia et al. 2022, Section 2.4) generates a
64x64 image with a base model, then upsamples it twice with super-resolution (SR) models,
each a diffusion model conditioned on the text and on the previous stage's image. Ours
works the same way at MNIST sizes (for example 16x16 -> 32x32), with any number of stages.

Gaussian conditioning augmentation (Section 2.4; Ho et al. 2022, "Cascaded Diffusion
Models"): an SR model trained on clean low-resolution images breaks when, at sampling,
it is handed the base model's imperfect ones. So in training the upsampled low-resolution
image is noised by the forward process at a random level, and the network is told that
level. At sampling a fixed level (0.25 of the schedule by default) is applied once, with
noise drawn once, not redrawn at every step.

Every stage has its own noise schedule, network, and recommended sampling settings
(guidance weight and the interval of the schedule it applies in, sampler and steps): the
base stage, which costs most, can take a different sampler from the super-resolution
stages.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from imagen_lib import diffusion
from imagen_lib.data import Size, height_width, resize, size_text
from imagen_lib.diffusion import NoiseSchedule, classifier_free_guidance, q_sample
from imagen_lib.efficient_unet import EfficientUNet, EfficientUNetConfig
from imagen_lib.layers import check_image
from imagen_lib.plumbing.cascade_checks import (
    check_cascade_settings,
    check_low_res,
    check_stage_settings,
)
from imagen_lib.plumbing.config_files import current_values
from imagen_lib.plumbing.configs import check_types
from imagen_lib.plumbing.plans import SamplingPlan, for_stage, stages_with
from imagen_lib.plumbing.setting_checks import check_guidance_interval, check_stage_index
from imagen_lib.text import DEFAULT_ENCODER, TextEncoder, validate_prompts
from imagen_lib.unet import UNet, UNetConfig


@dataclass(frozen=True)
class StageConfig:
    """One diffusion model of the cascade. Stage 0 is the base U-Net; later stages are SR."""

    image_size: Size  # S for S x S, or (height, width)
    network: UNetConfig | EfficientUNetConfig
    schedule: str = "cosine"
    timesteps: int = 1000
    prediction: str = "eps"  # what the network predicts: "eps" or "v"
    guidance_weight: float = 3.0  # recommended classifier-free guidance weight for sampling
    # ... applied only where t / (T - 1) is within this interval ((0, 1): every step)
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    sampler: str = "ddim"  # recommended sampler: "ddim", "dpm++" or "ddpm"
    # recommended sampling steps (None: 50 for DDIM and DPM-Solver++, all for DDPM)
    sampling_steps: int | None = None
    sampling_augmentation: float = 0.25  # SR only: conditioning-noise level at sampling, in [0, 1]
    max_training_augmentation: float = 1.0  # SR only: training levels are drawn from [0, this)

    def __post_init__(self) -> None:
        # An interval read from a file may be a list, or hold whole numbers: it is checked and
        # kept as two floats (a frozen dataclass sets its own field only with object.__setattr__).
        interval = check_guidance_interval(self.guidance_interval)
        object.__setattr__(self, "guidance_interval", interval)
        check_types(self)  # configs also come from files: every value's type, then its range
        check_stage_settings(self)


@dataclass(frozen=True)
class ImagenConfig:
    stages: tuple[StageConfig, ...]  # a list is taken too, and kept as a tuple
    channels: int = 1
    text_encoder: str = DEFAULT_ENCODER
    max_text_tokens: int = 16
    # share of training prompts replaced by the null text (for guidance)
    text_drop_prob: float = 0.1
    # the encoder's first k transformer layers only (0: its embedding layer; None: all layers)
    text_encoder_layers: int | None = None
    # False: the encoder's architecture with random weights (seed 0), to measure what
    # pretraining buys (Section 4.4)
    text_encoder_pretrained: bool = True

    def __post_init__(self) -> None:
        # Python code and files give the stages as a list; a tuple cannot change once checked.
        if isinstance(self.stages, list):
            object.__setattr__(self, "stages", tuple(self.stages))
        check_types(self)
        check_cascade_settings(self)  # each stage, and its network, checked itself when made

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["stages"] = list(values["stages"])  # a list, as files have always held them
        return values

    @classmethod
    def from_dict(cls, values: dict) -> ImagenConfig:
        """The config `to_dict` wrote: read back from a checkpoint, JSON or an older version."""
        values = current_values(values)  # tuples again; older files' settings per stage
        stages = []
        for index, stage in enumerate(values["stages"]):
            network_class = UNetConfig if index == 0 else EfficientUNetConfig
            try:
                network = network_class(**stage["network"])
                stages.append(StageConfig(**{**stage, "network": network}))
            except (TypeError, ValueError) as error:  # each stage checks itself: say which
                raise for_stage(error, index) from None
        return cls(**{**values, "stages": stages})

    def sampling_plan(self, *settings: object, **named: object) -> SamplingPlan:
        """How `Imagen.sample` would sample this cascade with these settings (`SamplingPlan.build`).

        Needs the config alone, so a command can refuse bad settings before the model loads.
        """
        return SamplingPlan.build(self.stages, *settings, **named)


def encoder_for(
    config: ImagenConfig, device: str | torch.device = "cpu", name: str | None = None
) -> TextEncoder:
    """The text encoder a cascade config asks for: its name, token limit, layers and weights.

    `name` replaces the config's encoder name: a checkpoint records the encoder it was
    trained with, which is the one to load even where the config names another.
    """
    return TextEncoder(
        config.text_encoder if name is None else name,
        config.max_text_tokens,
        device,
        layers=config.text_encoder_layers,
        pretrained=config.text_encoder_pretrained,
    )


def default_device() -> torch.device:
    """The best device here: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Imagen(nn.Module):
    """A cascade of text-conditioned diffusion models behind one frozen text encoder.

    The text encoder is held, not registered as a submodule: it is frozen and pretrained,
    so checkpoints store only its name.
    """

    def __init__(self, config: ImagenConfig, text_encoder: TextEncoder):
        super().__init__()
        self.config = config
        self.text_encoder = text_encoder
        networks = []
        for index, stage in enumerate(config.stages):
            network_class = UNet if index == 0 else EfficientUNet
            networks.append(
                network_class(stage.network, stage.image_size, config.channels, text_encoder.dim)
            )
        self.networks = nn.ModuleList(networks)
        self.schedules = [NoiseSchedule(stage.schedule, stage.timesteps) for stage in config.stages]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def image_size(self) -> Size:
        return self.config.stages[-1].image_size

    def check_stage(self, stage: int) -> int:
        """`stage` if it is the index of one of this cascade's stages."""
        return check_stage_index(stage, len(self.networks))

    def encode_text(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (B, L, D) and mask (B, L) on this model's device."""
        tokens, mask = self.text_encoder.encode(prompts)
        return tokens.to(self.device), mask.to(self.device)

    def stage_network(
        self,
        stage: int,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        low_res: torch.Tensor | None,
        augmentation_level: torch.Tensor | None,
        net: nn.Module | None = None,
    ):
        """`network(x_t, t, text_dropped)` for one stage, its text and image conditioning bound.

        `net` runs in place of the stage's own network (the trainer passes a compiled one).
        """
        net = net if net is not None else self.networks[stage]

        def network(x_t: torch.Tensor, t: torch.Tensor, text_dropped: torch.Tensor) -> torch.Tensor:
            repeats = x_t.shape[0] // text.shape[0]  # 2 inside classifier-free guidance
            tokens, mask = text.repeat(repeats, 1, 1), text_mask.repeat(repeats, 1)
            if stage == 0:
                return net(x_t, t, tokens, mask, text_dropped=text_dropped)
            return net(
                x_t,
                t,
                tokens,
                mask,
                low_res.repeat(repeats, 1, 1, 1),
                augmentation_level.repeat(repeats),
                text_dropped=text_dropped,
            )

        return network

    def predict_x0_and_eps(
        self, stage: int, x_t: torch.Tensor, t: torch.Tensor, output: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode a stage network's output into estimates of x_0 and of the noise (lesson 2b).

        Uses the stage's own schedule and prediction type ("eps" or "v"), so a caller
        cannot decode a v-predicting stage's output as eps by mistake.
        """
        stage = self.check_stage(stage)
        return diffusion.predict_x0_and_eps(
            self.schedules[stage], x_t, t, output, self.config.stages[stage].prediction
        )

    def augment_low_res(
        self, stage: int, low_res: torch.Tensor, level: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Upsample the previous stage's image to this stage's size and noise it to `level` (B,)."""
        upsampled = resize(low_res, self.config.stages[stage].image_size)
        return q_sample(self.schedules[stage], upsampled, level, noise)

    def sampling_conditioning(
        self, stage: int, low_res: torch.Tensor, fraction: float, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """An SR stage's conditioning for sampling: the previous stage's images, noised once.

        Conditioning augmentation at sampling (Section 2.4): one level for every image,
        `fraction` of the stage's schedule; the noise is drawn once, so every step of the
        sampler sees the same conditioning image. Returns that image (B, C, H, W) and the
        level (B,), which the network is told.
        """
        config = self.config.stages[stage]
        batch = len(low_res)
        # (B,)
        level = torch.full(
            (batch,), round(fraction * (config.timesteps - 1)), device=self.device, dtype=torch.long
        )
        noise = torch.randn(
            batch, self.config.channels, *height_width(config.image_size), generator=generator
        ).to(self.device)
        return self.augment_low_res(stage, low_res, level, noise), level

    def loss(
        self,
        stage: int,
        images: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        generator: torch.Generator | None = None,
        net: nn.Module | None = None,
    ) -> torch.Tensor:
        """The training loss of one stage on a batch of full-resolution images in [-1, 1].

        The stage's target is the images resized to its size; an SR stage's conditioning is
        the images resized to the previous stage's size, upsampled and noise-augmented at a
        random level. Prompts are replaced by the null text with probability text_drop_prob.
        Every random draw (text dropout, timesteps, noise, augmentation level and noise)
        comes from `generator` (torch's global one if None), on the images' device. `net`
        replaces the stage's network, as in `stage_network`.
        """
        stage = self.check_stage(stage)
        check_image(images, self.config.channels, self.image_size, "training images")
        config = self.config.stages[stage]
        batch, device = images.shape[0], images.device
        x0 = resize(images, config.image_size)
        # (B,)
        text_dropped = (
            torch.rand(batch, generator=generator, device=device) < self.config.text_drop_prob
        )
        t = torch.randint(0, config.timesteps, (batch,), generator=generator, device=device)  # (B,)
        noise = torch.randn(x0.shape, generator=generator, device=device)  # (B, C, H, W)
        low_res = level = None
        if stage > 0:
            top = max(1, int(config.max_training_augmentation * config.timesteps))
            level = torch.randint(0, top, (batch,), generator=generator, device=device)  # (B,)
            previous = resize(images, self.config.stages[stage - 1].image_size)
            augmentation_noise = torch.randn(x0.shape, generator=generator, device=device)
            low_res = self.augment_low_res(stage, previous, level, augmentation_noise)
        network = self.stage_network(stage, text, text_mask, low_res, level, net)
        return diffusion.diffusion_loss(
            lambda x_t, t: network(x_t, t, text_dropped),
            self.schedules[stage],
            x0,
            config.prediction,
            t=t,
            noise=noise,
        )

    def with_stage_settings(self, **settings: object) -> Imagen:
        """A view of this cascade whose stages recommend other sampling settings.

        `settings` are StageConfig fields, each one value for every stage or one per stage,
        such as `guidance_weight=[1.25, 1.0]`. The view shares the networks and text encoder.
        """
        view = copy.copy(self)  # a shallow copy: the same submodules, a config of its own
        stages = stages_with(self.config.stages, **settings)
        view.config = dataclasses.replace(self.config, stages=stages)
        return view

    @torch.no_grad()
    def sample(
        self,
        prompts: Sequence[str],
        guidance_weight: float | Sequence[float] | None = None,
        guidance_interval: tuple[float, float] | None = None,
        thresholding: str = "dynamic",
        percentile: float = 0.95,
        sampler: str | Sequence[str] | None = None,
        steps: int | Sequence[int] | None = None,
        seed: int = 0,
        augmentation_level: float | None = None,
        eta: float = 0.0,
        progress: bool = False,
        first_stage: int = 0,
        low_res: torch.Tensor | None = None,
        last_stage: int | None = None,
        on_step: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
    ) -> list[torch.Tensor]:
        """Generate one image per prompt; return every stage's images (B, C, H_k, W_k) in [-1, 1].

        guidance_weight, sampler ("ddim", "dpm++" or "ddpm"), steps: one value for all stages,
        one per stage, or None for each stage's own (steps failing that: 50, all for DDPM).
        guidance_interval (start, end): guide only where t / (T - 1) lies within it; None:
        each stage's own interval with its own weight, every step with a weight you pass.
        augmentation_level: the SR stages' conditioning-noise level (None: their own).
        first_stage, low_res: run only the later stages, say to upsample given 16x16 digits
        (low_res: stage first_stage - 1's images); last_stage: stop after it (default: last).
        on_step(stage, t, x_t, x0): called at every sampling step with the stage's current
        images and its estimate of the final ones (lesson 6's timestep scrubber).
        """
        prompts = validate_prompts(prompts)
        plan = self.config.sampling_plan(
            sampler=sampler,
            steps=steps,
            guidance_weight=guidance_weight,
            guidance_interval=guidance_interval,
            augmentation_level=augmentation_level,
            eta=eta,
            first_stage=first_stage,
            last_stage=last_stage,
        )
        check_low_res(low_res, plan.first_stage, len(prompts), self.config)
        was_training = self.training
        self.eval()  # no dropout while sampling; the caller's mode is restored below
        generator = torch.Generator().manual_seed(seed)
        text, text_mask = self.encode_text(prompts)
        previous = None if low_res is None else low_res.to(self.device)
        outputs: list[torch.Tensor] = []
        try:
            for stage in plan.running:
                config = plan.stages[stage]  # the stage's config, with this run's settings
                conditioning = level = None
                if stage > 0:
                    conditioning, level = self.sampling_conditioning(
                        stage, previous, config.sampling_augmentation, generator
                    )
                network = self.stage_network(stage, text, text_mask, conditioning, level)
                denoise = classifier_free_guidance(
                    network, config.guidance_weight, config.guidance_interval, config.timesteps
                )
                images = diffusion.sample(
                    denoise,
                    self.schedules[stage],
                    (len(prompts), self.config.channels, *height_width(config.image_size)),
                    prediction=config.prediction,
                    sampler=config.sampler,
                    steps=config.sampling_steps,
                    eta=plan.eta,
                    thresholding=thresholding,
                    percentile=percentile,
                    generator=generator,
                    device=self.device,
                    progress=progress and f"stage {stage} ({size_text(config.image_size)})",
                    on_step=None if on_step is None else functools.partial(on_step, stage),
                )
                previous = images.clamp(-1, 1)
                outputs.append(previous)
        finally:
            self.train(was_training)
        return outputs

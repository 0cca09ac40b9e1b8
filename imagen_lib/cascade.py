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
from imagen_lib.diffusion import (
    NoiseSchedule,
    check_guidance_interval,
    check_guidance_weight,
    classifier_free_guidance,
    q_sample,
)
from imagen_lib.efficient_unet import EfficientUNet, EfficientUNetConfig
from imagen_lib.layers import check_image, check_levels
from imagen_lib.plumbing.configs import check_types
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
        # Configs also come from files (checkpoints, presets): every other value's type next,
        # so a damaged one fails here, not deep inside torch while the networks are built.
        check_types(self)
        if min(height_width(self.image_size)) < 1:
            raise ValueError(f"image_size must be at least 1, got {self.image_size}")
        if self.schedule not in diffusion.SCHEDULES:
            raise ValueError(
                f"schedule must be one of {diffusion.SCHEDULES}, got {self.schedule!r}"
            )
        if self.timesteps < 2:
            raise ValueError(f"timesteps must be at least 2, got {self.timesteps}")
        if self.prediction not in diffusion.PREDICTIONS:
            raise ValueError(
                f"prediction must be one of {diffusion.PREDICTIONS}, got {self.prediction!r}"
            )
        check_guidance_weight(self.guidance_weight)
        if self.sampler not in diffusion.SAMPLERS:
            raise ValueError(f"sampler must be one of {diffusion.SAMPLERS}, got {self.sampler!r}")
        if self.sampling_steps is not None and not 1 <= self.sampling_steps <= self.timesteps:
            raise ValueError(
                f"sampling_steps must be between 1 and its schedule's {self.timesteps}, "
                f"got {self.sampling_steps}"
            )
        for name in ("sampling_augmentation", "max_training_augmentation"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(
                    f"{name} is a fraction of the schedule in [0, 1], got {getattr(self, name)}"
                )
        check_levels(self.image_size, len(self.network.channel_mults))


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
        # each stage, and its network, checked its own values when it was made
        check_types(self)
        if not self.stages:
            raise ValueError("a cascade needs at least one stage (the base model)")
        for index, stage in enumerate(self.stages):
            expected = UNetConfig if index == 0 else EfficientUNetConfig
            if not isinstance(stage.network, expected):
                raise TypeError(
                    f"stage {index} needs a {expected.__name__} "
                    "(stage 0 is the base U-Net, the rest are SR)"
                )
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        if self.max_text_tokens < 1:
            raise ValueError(
                f"max_text_tokens must be at least 1 (the encoder reads that many tokens of a "
                f"prompt), got {self.max_text_tokens}"
            )
        if not self.text_encoder:
            raise ValueError("text_encoder is empty: name an encoder, such as 'minilm'")
        if self.text_encoder_layers is not None and self.text_encoder_layers < 0:
            raise ValueError(
                f"text_encoder_layers must be at least 0 (0 keeps the encoder's embedding layer "
                f"only) or None for all layers, got {self.text_encoder_layers}"
            )
        sizes = [height_width(stage.image_size) for stage in self.stages]
        if any(
            later[0] <= earlier[0] or later[1] <= earlier[1]
            for earlier, later in zip(sizes, sizes[1:])
        ):
            raise ValueError(
                "stage image sizes must strictly increase through the cascade, got "
                + ", ".join(size_text(size) for size in sizes)
            )
        if not 0 <= self.text_drop_prob < 1:
            raise ValueError(f"text_drop_prob must be in [0, 1), got {self.text_drop_prob}")

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["stages"] = list(values["stages"])  # a list, as files have always held them
        return values

    @classmethod
    def from_dict(cls, values: dict) -> ImagenConfig:
        values = dict(values)
        # Files written before per-stage sampling settings held one sampler and step count
        # for all stages.
        shared = {key: values.pop(key) for key in ("sampler", "sampling_steps") if key in values}
        stages = []
        for index, stage in enumerate(values["stages"]):
            stage = {**shared, **stage}
            network_class = UNetConfig if index == 0 else EfficientUNetConfig
            network = {
                k: tuple(v) if isinstance(v, list) else v for k, v in stage["network"].items()
            }
            if isinstance(stage.get("image_size"), list):  # JSON has no tuples
                stage["image_size"] = tuple(stage["image_size"])
            try:
                stages.append(StageConfig(**{**stage, "network": network_class(**network)}))
            except (TypeError, ValueError) as error:  # each stage checks itself: say which
                raise type(error)(f"stage {index}: {error}") from None
        return cls(**{**values, "stages": stages})

    def sampling_plan(
        self, sampler: str | Sequence[str] | None, steps: int | Sequence[int | None] | None
    ) -> list[tuple[str, int | None]]:
        """(sampler, steps) per stage: the stages' own by default, or one for all, or one per stage.

        Steps of None mean the sampler's default (50 for DDIM and DPM-Solver++, all for DDPM).
        Checked on the config alone, so a command can refuse bad settings before the model loads.
        """
        samplers = one_per_stage(sampler, [stage.sampler for stage in self.stages], "sampler")
        own_steps = [stage.sampling_steps for stage in self.stages]
        step_counts = one_per_stage(steps, own_steps, "sampling_steps")
        for index, (name, count) in enumerate(zip(samplers, step_counts)):
            if name not in diffusion.SAMPLERS:
                raise ValueError(
                    f"stage {index}: sampler must be one of {diffusion.SAMPLERS}, got {name!r}"
                )
            timesteps = self.stages[index].timesteps
            if count is not None and (
                isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= timesteps
            ):
                raise ValueError(
                    f"stage {index}: steps must be a whole number between 1 and its schedule's "
                    f"{timesteps}, got {count!r}"
                )
        return list(zip(samplers, step_counts))


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


def one_per_stage(value: object, own: Sequence, setting: str) -> list:
    """One value per stage of a per-stage setting (a StageConfig field such as "sampler").

    None keeps each stage's `own` value; a single value, or a list of one, serves every
    stage; any other list or tuple must hold one value per stage.
    """
    if value is None:
        return list(own)
    if not isinstance(value, (list, tuple)):
        return [value] * len(own)
    if len(value) == 1:
        return list(value) * len(own)
    if len(value) != len(own):
        raise ValueError(f"give one {setting}, or one per stage ({len(own)}), got {list(value)}")
    return list(value)


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
        if (
            not isinstance(stage, int)
            or isinstance(stage, bool)
            or not 0 <= stage < len(self.networks)
        ):
            raise ValueError(
                f"stage must be an index from 0 to {len(self.networks) - 1} "
                f"(this cascade has {len(self.networks)} stages), got {stage}"
            )
        return stage

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

    def per_stage(self, value: object, setting: str) -> list:
        """`one_per_stage` with this cascade's stages' own values as the default."""
        return one_per_stage(
            value, [getattr(stage, setting) for stage in self.config.stages], setting
        )

    def with_stage_settings(self, **settings: object) -> Imagen:
        """A view of this cascade whose stages recommend other sampling settings.

        `self` is unchanged. `settings` are StageConfig fields, each given once for every stage
        or once per stage (`one_per_stage`), such as `guidance_weight=[1.25, 1.0]`. The view
        shares the networks and the text encoder; only its config is new (and validated).
        """
        columns = {name: self.per_stage(value, name) for name, value in settings.items()}
        stages = [
            dataclasses.replace(stage, **{name: column[index] for name, column in columns.items()})
            for index, stage in enumerate(self.config.stages)
        ]
        view = copy.copy(self)  # a shallow copy: the same submodules, a config of its own
        view.config = dataclasses.replace(self.config, stages=stages)
        return view

    def guidance_weights(self, guidance_weight: float | Sequence[float] | None) -> list[float]:
        """One guidance weight per stage: the stages' own by default, or one for all, or a list."""
        return [
            check_guidance_weight(weight)
            for weight in self.per_stage(guidance_weight, "guidance_weight")
        ]

    def guidance_intervals(
        self, guidance_interval: tuple[float, float] | None, own_weights: bool
    ) -> list[tuple[float, float]]:
        """One guidance interval per stage.

        The given one for all; else the stages' own with their own weights, (0, 1) with others.
        """
        if guidance_interval is not None:
            return [check_guidance_interval(guidance_interval)] * len(self.networks)
        return (
            self.per_stage(None, "guidance_interval")
            if own_weights
            else [(0.0, 1.0)] * len(self.networks)
        )

    def sampling_plan(
        self, sampler: str | Sequence[str] | None, steps: int | Sequence[int | None] | None
    ) -> list[tuple[str, int | None]]:
        """(sampler, steps) per stage, as `ImagenConfig.sampling_plan` gives it for this cascade."""
        return self.config.sampling_plan(sampler, steps)

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

        guidance_weight, sampler ("ddim", "dpm++" or "ddpm") and steps: each one value for
        all stages, one per stage, or None for each stage's own recommendation (for steps,
        failing that: 50 for DDIM and DPM-Solver++, the whole schedule for DDPM).
        guidance_interval (start, end): guide only where t / (T - 1) lies within it, for every
        stage (`diffusion.classifier_free_guidance`). None means each stage's own interval
        with its own weight, and every step for a weight you pass: a recommended interval
        was chosen together with its weight.
        augmentation_level: the SR stages' conditioning-noise level (fraction of their
        schedule), or None for each stage's own `sampling_augmentation`.
        first_stage, low_res: to run only the later stages, for example super-resolution of
        given 16x16 digits: low_res holds the images of stage first_stage - 1, and the
        result lists stages first_stage onwards.
        last_stage: stop after this stage (default: the last), for example 0 for the base
        model's images alone.
        on_step(stage, t, x_t, x0): called at every sampling step with the stage's current
        images and its estimate of the final ones (lesson 6's timestep scrubber).
        """
        prompts = validate_prompts(prompts)
        first_stage = self.check_stage(first_stage)
        last_stage = len(self.networks) - 1 if last_stage is None else self.check_stage(last_stage)
        if last_stage < first_stage:
            raise ValueError(
                f"last_stage ({last_stage}) comes before first_stage ({first_stage}): "
                "no stage would run"
            )
        if first_stage > 0:
            if low_res is None:
                raise ValueError(
                    f"starting at stage {first_stage} needs low_res: "
                    f"the images stage {first_stage - 1} would have made"
                )
            size = self.config.stages[first_stage - 1].image_size
            check_image(low_res, self.config.channels, size, f"low_res for stage {first_stage}")
            if len(low_res) != len(prompts):
                raise ValueError(
                    "give one low-resolution image per prompt: "
                    f"{len(low_res)} images for {len(prompts)} prompts"
                )
        elif low_res is not None:
            raise ValueError(
                "low_res is only for starting at a later stage: also pass first_stage=1 (or later)"
            )
        weights = self.guidance_weights(guidance_weight)
        intervals = self.guidance_intervals(guidance_interval, own_weights=guidance_weight is None)
        plan = self.sampling_plan(sampler, steps)
        if eta != 0 and any(name != "ddim" for name, _ in plan[first_stage : last_stage + 1]):
            raise ValueError(
                "eta only applies to the ddim sampler, "
                f"and the stages sample with {[name for name, _ in plan]}: "
                "leave eta at 0, or pass sampler='ddim'"
            )
        if thresholding not in diffusion.THRESHOLDINGS:
            raise ValueError(
                f"thresholding must be one of {diffusion.THRESHOLDINGS}, got {thresholding!r}"
            )
        diffusion.check_percentile(percentile)
        if augmentation_level is not None and not 0 <= augmentation_level <= 1:
            raise ValueError(
                "augmentation level is a fraction of the schedule in [0, 1], "
                f"got {augmentation_level}"
            )
        was_training = self.training
        self.eval()  # no dropout while sampling; the caller's mode is restored below
        device = self.device
        generator = torch.Generator().manual_seed(seed)
        text, text_mask = self.encode_text(prompts)
        batch = len(prompts)
        previous = None if low_res is None else low_res.to(device)
        outputs: list[torch.Tensor] = []
        try:
            for stage in range(first_stage, last_stage + 1):
                config = self.config.stages[stage]
                shape = (batch, self.config.channels, *height_width(config.image_size))
                conditioning = level = None
                if stage > 0:
                    fraction = (
                        config.sampling_augmentation
                        if augmentation_level is None
                        else augmentation_level
                    )
                    conditioning, level = self.sampling_conditioning(
                        stage, previous, fraction, generator
                    )
                network = self.stage_network(stage, text, text_mask, conditioning, level)
                denoise = classifier_free_guidance(
                    network, weights[stage], intervals[stage], config.timesteps
                )
                stage_sampler, stage_steps = plan[stage]
                images = diffusion.sample(
                    denoise,
                    self.schedules[stage],
                    shape,
                    prediction=config.prediction,
                    sampler=stage_sampler,
                    steps=stage_steps,
                    eta=eta,
                    thresholding=thresholding,
                    percentile=percentile,
                    generator=generator,
                    device=device,
                    progress=f"stage {stage} ({size_text(config.image_size)})"
                    if progress
                    else False,
                    on_step=None if on_step is None else functools.partial(on_step, stage),
                )
                previous = images.clamp(-1, 1)
                outputs.append(previous)
        finally:
            self.train(was_training)
        return outputs

"""The base model of the cascade: a text-conditioned U-Net after Improved DDPM.

Lesson 3 (the U-Net) and lesson 4 (its text conditioning). Imagen's base 64x64 model
(Saharia et al. 2022, Section 2.5) builds on the U-Net of Improved DDPM
(Nichol & Dhariwal 2021): residual blocks with scale-shift normalisation from the timestep
embedding, multi-head self-attention at the lower resolutions, a sinusoidal timestep
embedding. Imagen adds text in two ways, both here:
- a pooled text vector added to the timestep embedding (so every residual block sees it);
- cross-attention from the image to the text tokens at the attention resolutions.

Shapes: x (B, C, H, W) noisy image, t (B,) timesteps, text (B, L, D_text) token
embeddings with mask (B, L); output (B, C, H, W), the predicted noise (or v).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from imagen_lib.data import Size, height_width
from imagen_lib.layers import (
    AttentionBlock,
    ConditionedBlock,
    Downsample,
    ResidualBlock,
    TextConditioning,
    TimestepMLP,
    Upsample,
    check_image,
    check_levels,
    group_norm,
)
from imagen_lib.plumbing.configs import check_types
from imagen_lib.plumbing.setting_checks import check_network

if TYPE_CHECKING:  # efficient_unet imports this module
    from imagen_lib.efficient_unet import EfficientUNetConfig


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the base U-Net (sizes are for MNIST, not Imagen's 2B parameters)."""

    channels: int = 64  # width at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 2)  # width multiplier per resolution level
    num_res_blocks: int = 2  # residual blocks per level
    # self- and cross-attention where the feature map is this many pixels high
    attention_resolutions: tuple[int, ...] = (8, 4)
    heads: int = 4
    # False: the text reaches the network only as the pooled vector (an ablation)
    cross_attention: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_types(self)
        check_network(self)


class TextConditionedUNet(nn.Module):
    """What the base U-Net and the super-resolution Efficient U-Net share.

    Both check that the image survives their halvings, embed the timestep (and the pooled
    text, added to it) into one vector every residual block reads, build each block as a
    residual block followed by attention at the attention resolutions, and end in a
    convolution initialised to zero, so that a fresh network predicts zero everywhere.
    """

    def __init__(
        self,
        config: UNetConfig | EfficientUNetConfig,
        image_size: Size,
        image_channels: int,
        text_dim: int,
        embeds_augmentation: bool = False,
    ):
        super().__init__()
        check_levels(image_size, len(config.channel_mults))
        self.config = config
        self.image_size = image_size
        self.image_channels = image_channels
        self.embedding_dim = 4 * config.channels
        self.time_embedding = TimestepMLP(config.channels, self.embedding_dim)
        if embeds_augmentation:  # super-resolution: the augmentation level, like a timestep
            self.augmentation_embedding = TimestepMLP(config.channels, self.embedding_dim)
        self.text = TextConditioning(
            text_dim,
            context_dim=self.embedding_dim,
            embedding_dim=self.embedding_dim,
            heads=config.heads,
        )

    def block(
        self,
        cin: int,
        cout: int,
        size: int,
        cross_attention: bool = True,
        skip_scale: float = 1.0,
    ) -> ConditionedBlock:
        """A residual block, then attention if feature maps `size` pixels high attend."""
        attention = (
            AttentionBlock(cout, self.embedding_dim, self.config.heads, cross_attention)
            if size in self.config.attention_resolutions
            else None
        )
        residual = ResidualBlock(cin, cout, self.embedding_dim, self.config.dropout, skip_scale)
        return ConditionedBlock(residual, attention)

    def output_layer(self, channels: int) -> nn.Sequential:
        """Normalise, activate, and convolve back to image channels, starting from zero."""
        out = nn.Sequential(
            group_norm(channels), nn.SiLU(), nn.Conv2d(channels, self.image_channels, 3, padding=1)
        )
        nn.init.zeros_(out[-1].weight)
        nn.init.zeros_(out[-1].bias)
        return out


class UNet(TextConditionedUNet):
    """Improved-DDPM U-Net with pooled-text and cross-attention conditioning."""

    def __init__(self, config: UNetConfig, image_size: Size, image_channels: int, text_dim: int):
        super().__init__(config, image_size, image_channels, text_dim)
        levels = len(config.channel_mults)
        width, embedding_dim = config.channels, self.embedding_dim

        self.conv_in = nn.Conv2d(image_channels, width, 3, padding=1)
        # Down path: each level's blocks, then a downsample; every output is kept as a skip.
        self.down = nn.ModuleList()
        skip_channels = [width]
        ch, size = width, height_width(image_size)[0]  # size: the feature map's height
        for level, mult in enumerate(config.channel_mults):
            for _ in range(config.num_res_blocks):
                self.down.append(self.block(ch, width * mult, size, config.cross_attention))
                ch = width * mult
                skip_channels.append(ch)
            if level < levels - 1:
                self.down.append(Downsample(ch, ch))
                size //= 2
                skip_channels.append(ch)
        self.middle = nn.ModuleList(
            [
                ConditionedBlock(
                    ResidualBlock(ch, ch, embedding_dim, config.dropout),
                    AttentionBlock(ch, embedding_dim, config.heads, config.cross_attention),
                ),
                ConditionedBlock(ResidualBlock(ch, ch, embedding_dim, config.dropout)),
            ]
        )
        # Up path: one more block per level than the down path, each eating one skip.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mults))):
            for _ in range(config.num_res_blocks + 1):
                self.up.append(
                    self.block(ch + skip_channels.pop(), width * mult, size, config.cross_attention)
                )
                ch = width * mult
            if level > 0:
                self.up.append(Upsample(ch, ch))
                size *= 2
        self.out = self.output_layer(ch)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        text_dropped: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_image(x, self.image_channels, self.image_size, "the noisy image")
        # (B, L, E), (B, L), (B, E)
        context, mask, pooled = self.text(text, text_mask, text_dropped)
        embedding = self.time_embedding(t) + pooled  # (B, E): timestep plus pooled text
        h = self.conv_in(x)  # (B, width, H, W)
        skips = [h]
        for layer in self.down:
            h = layer(h) if isinstance(layer, Downsample) else layer(h, embedding, context, mask)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, embedding, context, mask)
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h)
            else:
                h = layer(torch.cat([h, skips.pop()], dim=1), embedding, context, mask)
        return self.out(h)  # (B, C, H, W)

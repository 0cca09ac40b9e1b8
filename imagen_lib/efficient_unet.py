"""The super-resolution network: Imagen's Efficient U-Net.

Lesson 7. Imagen's super-resolution stages use a U-Net variant (Saharia et al. 2022,
Section 2.5 and Appendix B.1) that is simpler, faster to converge and lighter on memory
than the base U-Net. Its three changes, all here:
1. More residual blocks at the low resolutions and fewer at the high ones, where every
   block is expensive (`num_res_blocks` is a per-level tuple, growing downwards).
2. Skip connections scaled by 1/sqrt(2) (following Song et al. 2021's NCSN++, where it
   sped up convergence): each residual block returns (h + skip(x)) / sqrt(2).
3. The down path downsamples *before* its convolutions and the up path upsamples
   *after* them, so the expensive convolutions run at the lower resolution.

The network sees the noisy high-resolution image concatenated with the upsampled,
noise-augmented low-resolution image, and is conditioned on the timestep, on the
augmentation level (embedded like a timestep) and on the text (pooled vector plus
cross-attention, as in the base U-Net).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from imagen_lib.data import Size, height_width
from imagen_lib.layers import (
    ConditionedBlock,
    Downsample,
    Upsample,
    check_image,
)
from imagen_lib.plumbing.configs import check_types
from imagen_lib.plumbing.setting_checks import check_network
from imagen_lib.unet import TextConditionedUNet


@dataclass(frozen=True)
class EfficientUNetConfig:
    """Architecture of a super-resolution Efficient U-Net."""

    channels: int = 32  # width at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: tuple[int, ...] = (1, 2, 3)  # per level: more blocks at low resolution
    attention_resolutions: tuple[int, ...] = (8,)  # where the feature map is this high
    heads: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_types(self)
        check_network(self)  # num_res_blocks included: one entry per level


class EfficientUNet(TextConditionedUNet):
    """Efficient U-Net for super-resolution, conditioned on a low-resolution image."""

    def __init__(
        self, config: EfficientUNetConfig, image_size: Size, image_channels: int, text_dim: int
    ):
        super().__init__(config, image_size, image_channels, text_dim, embeds_augmentation=True)
        levels = len(config.channel_mults)
        width = config.channels

        def block(cin: int, cout: int, size: int) -> ConditionedBlock:
            # change 2: every residual block scales its sum by 1/sqrt(2)
            return self.block(cin, cout, size, skip_scale=1 / math.sqrt(2))

        widths = [width * mult for mult in config.channel_mults]
        sizes = [height_width(image_size)[0] // 2**level for level in range(levels)]  # heights
        # The noisy image and the upsampled low-resolution image, side by side in channels.
        self.conv_in = nn.Conv2d(2 * image_channels, width, 3, padding=1)
        self.down_samplers = nn.ModuleList()
        self.down_blocks = nn.ModuleList()
        ch = width
        for level in range(levels):
            # Downsample first, so this level's convolutions run at the lower resolution.
            self.down_samplers.append(Downsample(ch, widths[level]) if level > 0 else nn.Identity())
            ch = widths[level]
            self.down_blocks.append(
                nn.ModuleList(
                    block(ch, ch, sizes[level]) for _ in range(config.num_res_blocks[level])
                )
            )
        self.up_blocks = nn.ModuleList()
        self.up_samplers = nn.ModuleList()
        for level in reversed(range(levels)):
            # Every level but the lowest concatenates the skip from its down path.
            cin = ch + widths[level] if level < levels - 1 else ch
            blocks = [block(cin, widths[level], sizes[level])]
            blocks += [
                block(widths[level], widths[level], sizes[level])
                for _ in range(config.num_res_blocks[level] - 1)
            ]
            self.up_blocks.append(nn.ModuleList(blocks))
            ch = widths[level]
            # Upsample last, after this level's convolutions.
            self.up_samplers.append(Upsample(ch, widths[level - 1]) if level > 0 else nn.Identity())
            ch = widths[level - 1] if level > 0 else ch
        self.out = self.output_layer(ch)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        low_res: torch.Tensor,
        augmentation_level: torch.Tensor,
        text_dropped: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, C, H, W) noisy image; low_res (B, C, H, W) the upsampled, augmented conditioning
        image; augmentation_level (B,) the timestep at which low_res was noised."""
        check_image(x, self.image_channels, self.image_size, "the noisy image")
        check_image(
            low_res, self.image_channels, self.image_size, "the upsampled low-resolution image"
        )
        # (B, L, E), (B, L), (B, E)
        context, mask, pooled = self.text(text, text_mask, text_dropped)
        # (B, E)
        embedding = (
            self.time_embedding(t) + self.augmentation_embedding(augmentation_level) + pooled
        )
        h = self.conv_in(torch.cat([x, low_res], dim=1))  # (B, width, H, W)
        skips = []
        for downsample, blocks in zip(self.down_samplers, self.down_blocks):
            h = downsample(h)
            for layer in blocks:
                h = layer(h, embedding, context, mask)
            skips.append(h)
        skips.pop()  # the lowest level feeds the up path directly
        for index, (blocks, upsample) in enumerate(zip(self.up_blocks, self.up_samplers)):
            if index > 0:
                h = torch.cat([h, skips.pop()], dim=1)
            for layer in blocks:
                h = layer(h, embedding, context, mask)
            h = upsample(h)
        return self.out(h)  # (B, C, H, W)

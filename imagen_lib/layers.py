"""Building blocks shared by the base U-Net and the Efficient U-Net.

Lessons 3 and 4.
- `check_image`, `check_levels`: the networks' and the cascade's input checks, so a wrong
  shape is one clear error at the boundary instead of a failure deep inside a convolution.
- `timestep_embedding`: the sinusoidal embedding of a timestep (Vaswani et al. 2017,
  Section 3.5; used for diffusion timesteps by Ho et al. 2020), also used for the
  super-resolution stages' noise-augmentation level.
- `ResidualBlock`: Improved DDPM's residual block (Nichol & Dhariwal 2021, Section 3.1 and
  their code): the conditioning embedding sets a per-channel scale and shift after the
  second GroupNorm ("scale-shift norm").
- `SelfAttention`: multi-head attention among the pixels of a feature map.
- `CrossAttention`: pixels attend to the text tokens, with LayerNorm on the text and the
  padding tokens masked out (Imagen Section 2.5; Rombach et al. 2022);
  `recorded_attention` keeps its attention weights, to draw which pixels read which word.
- `AttentionPooling`: one pooled text vector from the tokens, with LayerNorm (Imagen
  Section 2.5 reports that LayerNorm at the attention and pooling layers helped).
- `TextConditioning`: swaps in the learned null text for classifier-free guidance, and
  produces the token context and the pooled vector that both networks use.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from imagen_lib.data import Size, height_width, size_text


def check_image(x: torch.Tensor, channels: int, size: Size, what: str = "image") -> None:
    """Raise a clear error unless x is a (B, channels, height, width) batch of this size."""
    height, width = height_width(size)
    if x.dim() != 4 or tuple(x.shape[1:]) != (channels, height, width):
        raise ValueError(
            f"{what} must be a (batch, {channels}, {height}, {width}) tensor for this stage, "
            f"got {tuple(x.shape)}: "
            f"check the channel count ({channels}) and resize to {size_text(size)}"
        )


def check_levels(image_size: Size, levels: int) -> None:
    """Each level halves the resolution, so both sides must survive levels - 1 halvings."""
    if any(side % 2 ** (levels - 1) for side in height_width(image_size)):
        raise ValueError(
            f"image size {size_text(image_size)} must have sides divisible by "
            f"2^{levels - 1} for {levels} resolution levels"
        )


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (B,) timesteps: (B, dim), half cosines, then half sines."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    angles = t.float()[:, None] * frequencies[None, :]  # (B, dim/2)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, dim)


class TimestepMLP(nn.Module):
    """Sinusoidal features followed by a small MLP: the conditioning embedding of a level."""

    def __init__(self, sinusoid_dim: int, embedding_dim: int):
        super().__init__()
        self.sinusoid_dim = sinusoid_dim
        self.mlp = nn.Sequential(
            nn.Linear(sinusoid_dim, embedding_dim),
            nn.SiLU(),
            nn.Linear(embedding_dim, embedding_dim),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.sinusoid_dim))  # (B, E)


def group_norm(channels: int, groups: int = 8) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResidualBlock(nn.Module):
    """GroupNorm-SiLU-conv, then scale-shift norm from the embedding, SiLU-dropout-conv.

    out = (h + skip(x)) * skip_scale. The base U-Net uses skip_scale = 1; the Efficient
    U-Net uses 1/sqrt(2), which keeps the variance of a sum of two unit-variance branches at 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embedding_dim: int,
        dropout: float = 0.0,
        skip_scale: float = 1.0,
    ):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.to_scale_shift = nn.Linear(embedding_dim, 2 * out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (Improved DDPM)
        nn.init.zeros_(self.conv2.bias)
        self.skip = (
            nn.Conv2d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )
        self.skip_scale = skip_scale

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        # (B, C_out, 1, 1) each
        scale, shift = self.to_scale_shift(F.silu(embedding))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return (h + self.skip(x)) * self.skip_scale


def check_heads(width: int, heads: int, what: str) -> None:
    """Each of `heads` heads attends with width / heads of the `width` features."""
    if width % heads:
        raise ValueError(f"{what} ({width}) must divide evenly into {heads} heads")


def _multi_head_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, N, D) queries against (B, M, D) keys/values; mask (B, M) is True where keys are real."""
    q, k, v = (rearrange(x, "b n (h d) -> b h n d", h=heads) for x in (q, k, v))
    attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, M)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, N, d)
    return rearrange(out, "b h n d -> b n (h d)")


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, residual."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        check_heads(channels, heads, "attention channels")
        self.heads = heads
        self.norm = group_norm(channels)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        h = rearrange(self.norm(x), "b c x y -> b (x y) c")  # (B, HW, C)
        q, k, v = self.to_qkv(h).chunk(3, dim=-1)
        h = self.out(_multi_head_attention(q, k, v, self.heads))
        return x + rearrange(h, "b (x y) c -> b c x y", x=height, y=width)


class CrossAttention(nn.Module):
    """Pixels (queries) attend to text tokens (keys and values), residual.

    The text is LayerNorm-ed here, at the attention layer, and padding tokens are masked
    so that a one-word prompt is not drowned by a dozen pads.
    """

    def __init__(self, channels: int, context_dim: int, heads: int = 4):
        super().__init__()
        check_heads(channels, heads, "attention channels")
        self.heads = heads
        self.norm = group_norm(channels)
        self.context_norm = nn.LayerNorm(context_dim)
        self.to_q = nn.Linear(channels, channels)
        self.to_kv = nn.Linear(context_dim, 2 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def queries_keys_values(
        self, x: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries from the pixels; keys and values from the LayerNorm-ed text.

        q is (B, HW, C); k and v are (B, L, C) each.
        """
        q = self.to_q(rearrange(self.norm(x), "b c x y -> b (x y) c"))  # (B, HW, C)
        k, v = self.to_kv(self.context_norm(context)).chunk(2, dim=-1)  # (B, L, C) each
        return q, k, v

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        q, k, v = self.queries_keys_values(x, context)
        h = self.out(_multi_head_attention(q, k, v, self.heads, mask))
        return x + rearrange(h, "b (x y) c -> b c x y", x=height, y=width)

    def attention_map(
        self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """How much each pixel reads from each token: (B, heads, H*W, L).

        The weights sum to 1 over the real tokens.

        softmax(q k^T / sqrt(d)) written out (Vaswani et al. 2017, Equation 1); `forward`
        computes the same weights inside `scaled_dot_product_attention`, which never returns them.
        """
        q, k, _ = self.queries_keys_values(x, context)
        q, k = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k))
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, heads, HW, L)
        return logits.masked_fill(~mask.bool()[:, None, None, :], float("-inf")).softmax(dim=-1)


@contextmanager
def recorded_attention(network: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the attention weights of every `CrossAttention` in `network`.

    Inside the block, every call of one appends its weights (B, heads, H, W, L) to the list.
    """
    maps: list[torch.Tensor] = []

    def record(layer: CrossAttention, inputs: tuple, output: torch.Tensor) -> None:
        x, context, mask = inputs
        maps.append(
            rearrange(
                layer.attention_map(x, context, mask), "b h (x y) l -> b h x y l", x=x.shape[-2]
            )
        )

    hooks = [
        layer.register_forward_hook(record)
        for layer in network.modules()
        if isinstance(layer, CrossAttention)
    ]
    try:
        yield maps
    finally:
        for hook in hooks:
            hook.remove()


class AttentionBlock(nn.Module):
    """Self-attention among pixels, then cross-attention to the text.

    `cross_attention=False` keeps the self-attention only, so the network hears the text
    through the pooled vector alone: the ablation that lesson 4 measures.
    """

    def __init__(
        self, channels: int, context_dim: int, heads: int = 4, cross_attention: bool = True
    ):
        super().__init__()
        self.self_attention = SelfAttention(channels, heads)
        self.cross_attention = (
            CrossAttention(channels, context_dim, heads) if cross_attention else None
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.self_attention(x)
        return x if self.cross_attention is None else self.cross_attention(x, context, mask)


class ConditionedBlock(nn.Module):
    """A residual block, optionally followed by an attention block: one step of a U-Net path."""

    def __init__(self, residual: ResidualBlock, attention: AttentionBlock | None = None):
        super().__init__()
        self.residual = residual
        self.attention = attention

    def forward(
        self, x: torch.Tensor, embedding: torch.Tensor, context: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        h = self.residual(x, embedding)
        return h if self.attention is None else self.attention(h, context, mask)


class AttentionPooling(nn.Module):
    """Pool (B, L, D) tokens into one (B, D) vector with a learned query (masked, LayerNorm-ed)."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        check_heads(dim, heads, "pooling dimension")
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.query = nn.Parameter(torch.randn(1, 1, dim) / math.sqrt(dim))
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        k, v = self.to_kv(self.norm(tokens)).chunk(2, dim=-1)  # (B, L, D) each
        q = self.query.expand(tokens.shape[0], -1, -1)  # (B, 1, D)
        return self.out(_multi_head_attention(q, k, v, self.heads, mask)[:, 0])  # (B, D)


class TextConditioning(nn.Module):
    """From encoder tokens to what a U-Net reads: a token context and a pooled embedding.

    For classifier-free guidance, a sample whose `text_dropped` flag is set sees a learned
    null text instead of its prompt: one learned token, with everything after it masked.
    The same mechanism serves training (prompts dropped at random) and sampling (the
    unconditional branch).
    """

    def __init__(self, text_dim: int, context_dim: int, embedding_dim: int, heads: int = 4):
        super().__init__()
        self.text_dim = text_dim
        self.null_token = nn.Parameter(torch.randn(1, text_dim) * 0.02)
        self.to_context = nn.Linear(text_dim, context_dim)
        self.pool = AttentionPooling(context_dim, heads)
        self.pooled_to_embedding = nn.Sequential(
            nn.LayerNorm(context_dim), nn.Linear(context_dim, embedding_dim)
        )

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, text_dropped: torch.Tensor | None = None
    ):
        """tokens (B, L, D_text), mask (B, L), text_dropped (B,) -> context, mask, pooled.

        context is (B, L, D), mask (B, L) and pooled (B, E).
        """
        if tokens.dim() != 3 or tokens.shape[-1] != self.text_dim:
            raise ValueError(
                f"text embeddings must be (batch, tokens, {self.text_dim}), "
                f"got {tuple(tokens.shape)}: "
                "was the network built for a different text encoder?"
            )
        if mask.shape != tokens.shape[:2]:
            raise ValueError(
                f"text mask {tuple(mask.shape)} must match the tokens' (batch, tokens) "
                f"{tuple(tokens.shape[:2])}"
            )
        mask = mask.bool()
        if text_dropped is not None:
            dropped = text_dropped.bool()[:, None]  # (B, 1)
            null_tokens = torch.zeros_like(tokens)
            null_tokens[:, 0] = self.null_token.to(tokens.dtype)
            null_mask = torch.zeros_like(mask)
            null_mask[:, 0] = True
            tokens = torch.where(dropped[:, :, None], null_tokens, tokens)
            mask = torch.where(dropped, null_mask, mask)
        context = self.to_context(tokens)  # (B, L, D)
        pooled = self.pooled_to_embedding(self.pool(context, mask))  # (B, E)
        return context, mask, pooled


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 convolution."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour, then a convolution."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

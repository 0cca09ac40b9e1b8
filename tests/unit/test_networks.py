"""Tests of the two denoising networks: the base U-Net and the super-resolution Efficient U-Net.

What we check is what the rest of Imagen relies on:
- shapes in and out, and clear errors for the wrong ones;
- the text conditioning: padding tokens are invisible, dropped prompts become the null
  text, kept prompts matter;
- the networks can learn (a few optimiser steps lower the loss);
- the Efficient U-Net's 1/sqrt(2) skip scaling.

A fresh network outputs exactly zero (its last convolution is zero-initialised), so tests
about what the output depends on first randomise the weights (`randomize_parameters`).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import base_network_config, randomize_parameters, sr_network_config

from imagen_lib import EfficientUNet, UNet
from imagen_lib.layers import CrossAttention, ResidualBlock, recorded_attention

TEXT_DIM = 32  # the tiny T5's width


def make_network(kind: str, channels: int = 1, seed: int = 0):
    """A tiny base U-Net (8x8) or Efficient U-Net (16x16), seeded."""
    torch.manual_seed(seed)
    if kind == "unet":
        return UNet(base_network_config(), image_size=8, image_channels=channels, text_dim=TEXT_DIM)
    return EfficientUNet(
        sr_network_config(8), image_size=16, image_channels=channels, text_dim=TEXT_DIM
    )


def run(net, x, t, tokens, mask, text_dropped=None, low_res=None):
    """Call either network.

    The Efficient U-Net also gets a low-res image and an augmentation level.
    """
    if isinstance(net, EfficientUNet):
        if low_res is None:  # any fixed conditioning image, the same for every row
            low_res = torch.linspace(-1, 1, x[0].numel()).view_as(x[0]).expand_as(x)
        level = torch.full((x.shape[0],), 5)
        return net(x, t, tokens, mask, low_res, level, text_dropped=text_dropped)
    return net(x, t, tokens, mask, text_dropped=text_dropped)


def noisy_input(net, batch: int = 2, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    size, channels = net.image_size, net.image_channels
    return torch.randn(batch, channels, size, size, generator=generator), torch.tensor(
        [3, 40, 17, 8][:batch]
    )


@pytest.mark.parametrize("kind", ["unet", "efficient"])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_has_the_input_shape(kind, channels, tiny_encoder):
    net = make_network(kind, channels)
    tokens, mask = tiny_encoder.encode(["7", "a handwritten seven"])
    x, t = noisy_input(net)
    out = run(net, x, t, tokens, mask)
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output convolution


@pytest.mark.parametrize("kind", ["unet", "efficient"])
def test_wrong_image_shape_raises_naming_the_expected_shape(kind, tiny_encoder):
    net = make_network(kind, channels=1)
    size = net.image_size
    tokens, mask = tiny_encoder.encode(["7", "seven"])
    t = torch.tensor([1, 2])
    expected = rf"\(batch, 1, {size}, {size}\)"
    with pytest.raises(ValueError, match=expected):
        # 3 channels, not 1
        run(
            net,
            torch.zeros(2, 3, size, size),
            t,
            tokens,
            mask,
            low_res=torch.zeros(2, 1, size, size),
        )
    with pytest.raises(ValueError, match=expected):
        run(
            net,
            torch.zeros(2, 1, size * 2, size * 2),
            t,
            tokens,
            mask,
            low_res=torch.zeros(2, 1, size, size),
        )
    if kind == "efficient":
        with pytest.raises(ValueError, match="low-resolution image must be"):
            run(
                net,
                torch.zeros(2, 1, size, size),
                t,
                tokens,
                mask,
                low_res=torch.zeros(2, 1, size // 2, size // 2),
            )


@pytest.mark.parametrize("kind", ["unet", "efficient"])
def test_wrong_text_width_raises(kind):
    """Embeddings from an encoder of another width are caught with a hint about the encoder."""
    net = make_network(kind)
    x, t = noisy_input(net)
    with pytest.raises(ValueError, match="different text encoder"):
        run(net, x, t, torch.zeros(2, 3, TEXT_DIM + 1), torch.ones(2, 3, dtype=torch.bool))


def test_image_size_must_suit_the_levels():
    with pytest.raises(ValueError, match="divisible by 2"):
        UNet(base_network_config(), image_size=9, image_channels=1, text_dim=TEXT_DIM)
    with pytest.raises(ValueError, match="8x9 must have sides divisible by 2"):
        UNet(base_network_config(), image_size=(8, 9), image_channels=1, text_dim=TEXT_DIM)


@pytest.mark.parametrize("kind", ["unet", "efficient"])
def test_rectangular_images_keep_their_shape_and_attention_follows_the_height(kind, tiny_encoder):
    """An (8, 16) U-Net or (16, 32) Efficient U-Net: attention where the map is 4 (8) high."""
    torch.manual_seed(0)
    if kind == "unet":
        net = UNet(base_network_config(), (8, 16), image_channels=1, text_dim=TEXT_DIM)
        attention_shape = (4, 8)
    else:
        net = EfficientUNet(sr_network_config(8), (16, 32), image_channels=1, text_dim=TEXT_DIM)
        attention_shape = (8, 16)
    randomize_parameters(net)
    height, width = net.image_size
    tokens, mask = tiny_encoder.encode(["7", "a handwritten seven"])
    x = torch.randn(2, 1, height, width, generator=torch.Generator().manual_seed(1))
    seen = []
    hooks = [
        layer.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[-2:]))
        for layer in net.modules()
        if isinstance(layer, CrossAttention)
    ]
    out = run(net, x, torch.tensor([3, 40]), tokens, mask, low_res=torch.zeros_like(x))
    for hook in hooks:
        hook.remove()
    assert out.shape == (2, 1, height, width) and out.abs().sum() > 0
    assert seen and all(tuple(shape) == attention_shape for shape in seen)
    with pytest.raises(ValueError, match=rf"\(batch, 1, {height}, {width}\)"):
        run(net, x.transpose(-1, -2), torch.tensor([3, 40]), tokens, mask, low_res=x)


@pytest.mark.parametrize("kind", ["unet", "efficient"])
def test_padding_tokens_are_masked_out(kind, tiny_encoder):
    """Appending junk "pad" tokens with mask False must not change the output at all.

    Cross-attention and attention pooling see the padded tokens as keys; only the mask keeps
    them out. With the mask ignored (all True), the junk leaks in and the output changes:
    that second check shows the first one could fail.
    """
    net = randomize_parameters(make_network(kind))
    tokens, mask = tiny_encoder.encode(["7", "a handwritten seven"])
    x, t = noisy_input(net)
    with torch.no_grad():
        reference = run(net, x, t, tokens, mask)
        junk = torch.randn(2, 4, TEXT_DIM, generator=torch.Generator().manual_seed(2))
        padded_tokens = torch.cat([tokens, junk], dim=1)  # (2, L + 4, D)
        padded_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], dim=1)
        padded = run(net, x, t, padded_tokens, padded_mask)
        unmasked = run(net, x, t, padded_tokens, torch.ones_like(padded_mask))
    assert torch.allclose(padded, reference, atol=1e-5)
    assert (unmasked - reference).abs().max() > 1e-2


@pytest.mark.parametrize("kind", ["unet", "efficient"])
def test_dropped_text_is_the_null_text_whatever_the_prompt(kind, tiny_encoder):
    """A row with text_dropped = True sees only the learned null text: its prompt cannot matter.

    Rows whose text is kept do depend on the prompt (otherwise the test above would be vacuous).
    """
    net = randomize_parameters(make_network(kind))
    x, t = noisy_input(net)
    x, t = x[:1].repeat(2, 1, 1, 1), t[:1].repeat(2)  # the same noisy image and timestep twice
    tokens_a, mask_a = tiny_encoder.encode(["7", "a picture of a nine"])
    tokens_b, mask_b = tiny_encoder.encode(["the digit three", "1"])
    dropped = torch.tensor([True, True])
    kept = torch.tensor([False, False])
    with torch.no_grad():
        dropped_a = run(net, x, t, tokens_a, mask_a, dropped)
        dropped_b = run(net, x, t, tokens_b, mask_b, dropped)
        kept_a = run(net, x, t, tokens_a, mask_a, kept)
        kept_b = run(net, x, t, tokens_b, mask_b, kept)
    assert torch.allclose(dropped_a[0], dropped_a[1], atol=1e-5)  # two prompts, one null text
    assert torch.allclose(dropped_a, dropped_b, atol=1e-5)  # whatever the prompts were
    assert (kept_a[0] - kept_a[1]).abs().max() > 1e-2  # kept prompts matter...
    assert (kept_a - kept_b).abs().max() > 1e-2
    assert (kept_a - dropped_a).abs().max() > 1e-2  # ...and differ from the null text


@pytest.mark.parametrize("stage", [0, 1])
def test_a_few_adamw_steps_lower_the_loss(stage, make_cascade):
    """Overfitting one fixed batch: 20 AdamW steps must lower that batch's loss.

    Imagen.loss draws t, the noise, the dropped prompts and (for SR) the augmentation at
    random; re-seeding before each evaluation fixes all of them, so "before" and "after"
    are measured on exactly the same problem.
    """
    model = make_cascade(num_stages=2, channels=1)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 16, 16, generator=generator) * 2 - 1
    text, mask = model.encode_text(["7", "seven", "a handwritten 2", "the digit four"])

    def fixed_loss():
        torch.manual_seed(123)
        return model.loss(stage, images, text, mask)

    with torch.no_grad():
        before = fixed_loss().item()
    optimizer = torch.optim.AdamW(model.networks[stage].parameters(), lr=1e-3)
    for _ in range(20):
        optimizer.zero_grad()
        fixed_loss().backward()
        optimizer.step()
    with torch.no_grad():
        after = fixed_loss().item()
    assert after < 0.9 * before, f"loss went from {before:.4f} to {after:.4f}"


def test_skip_scale_is_one_over_sqrt_two_only_in_the_efficient_unet():
    """Imagen's Efficient U-Net scales every residual sum by 1/sqrt(2); the base U-Net does not."""
    base_blocks = [m for m in make_network("unet").modules() if isinstance(m, ResidualBlock)]
    sr_blocks = [m for m in make_network("efficient").modules() if isinstance(m, ResidualBlock)]
    assert base_blocks and sr_blocks
    assert all(block.skip_scale == 1.0 for block in base_blocks)
    assert all(block.skip_scale == pytest.approx(1 / math.sqrt(2)) for block in sr_blocks)


def test_fresh_residual_block_is_the_scaled_identity():
    """A fresh block's last convolution is zero, so it returns skip_scale * x: x, or x / sqrt(2)."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, 4, 4)
    embedding = torch.randn(2, 64)
    plain = ResidualBlock(16, 16, embedding_dim=64)
    scaled = ResidualBlock(16, 16, embedding_dim=64, skip_scale=1 / math.sqrt(2))
    assert torch.equal(plain(x, embedding), x)
    assert torch.allclose(scaled(x, embedding), x / math.sqrt(2))


@pytest.mark.parametrize("cross_attention", [True, False])
def test_without_cross_attention_the_text_arrives_as_the_pooled_vector_only(
    cross_attention, tiny_encoder, monkeypatch
):
    """Replace the token context and keep the pooled vector.

    Only a U-Net with cross-attention notices.
    """
    torch.manual_seed(0)
    config = dataclasses.replace(base_network_config(), cross_attention=cross_attention)
    net = randomize_parameters(UNet(config, image_size=8, image_channels=1, text_dim=TEXT_DIM))
    tokens, mask = tiny_encoder.encode(["7", "a handwritten seven"])
    x, t = noisy_input(net)
    text = net.text.forward

    def other_context(*args, **kwargs):
        context, context_mask, pooled = text(*args, **kwargs)
        # (B, L, E) junk, the same pooled (B, E)
        return torch.randn_like(context), context_mask, pooled

    with torch.no_grad():
        reference = run(net, x, t, tokens, mask)
        monkeypatch.setattr(net.text, "forward", other_context)
        changed = run(net, x, t, tokens, mask)
    has_cross_attention = any(type(module).__name__ == "CrossAttention" for module in net.modules())
    assert has_cross_attention == cross_attention
    assert torch.equal(changed, reference) != cross_attention


def test_attention_map_is_the_weighting_that_cross_attention_applies():
    """The weights, times the values, give the layer's output.

    Checked against torch's fused attention.
    """
    torch.manual_seed(0)
    layer = CrossAttention(16, context_dim=8, heads=4)
    torch.nn.init.normal_(layer.out.weight)  # a fresh layer outputs zero
    x, context = torch.randn(2, 16, 3, 3), torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    weights = layer.attention_map(x, context, mask)  # (B, heads, HW, L)
    assert weights.shape == (2, 4, 9, 5)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(2, 4, 9)) and torch.all(
        weights[0, ..., 3:] == 0
    )
    _, values = layer.to_kv(layer.context_norm(context)).chunk(2, dim=-1)  # (B, L, C)
    # (B, heads, HW, d)
    mixed = torch.einsum("bhnl,bhld->bhnd", weights, values.view(2, 5, 4, 4).transpose(1, 2))
    expected = x + layer.out(mixed.transpose(1, 2).reshape(2, 9, 16)).transpose(1, 2).reshape(
        2, 16, 3, 3
    )
    assert torch.allclose(layer(x, context, mask), expected, atol=1e-5)


def test_recorded_attention_keeps_every_cross_attention_call_and_then_stops(tiny_encoder):
    net = randomize_parameters(make_network("unet"))
    tokens, mask = tiny_encoder.encode(["7", "a handwritten seven"])
    x, t = noisy_input(net)
    layers = sum(isinstance(module, CrossAttention) for module in net.modules())
    with torch.no_grad(), recorded_attention(net) as maps:
        run(net, x, t, tokens, mask)
    assert len(maps) == layers > 0
    assert {tuple(m.shape[:2]) + tuple(m.shape[-1:]) for m in maps} == {
        (2, net.config.heads, tokens.shape[1])
    }
    assert {m.shape[2] for m in maps} == set(net.config.attention_resolutions)
    with torch.no_grad():
        run(net, x, t, tokens, mask)
    assert len(maps) == layers  # the hooks are gone

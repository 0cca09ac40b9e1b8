"""The network diagrams (imagen_lib/tools/diagrams.py) trace the networks they draw.

The traced structure must follow the configuration (blocks per level, channel
multipliers, attention only at the attention resolutions, cross-attention only where
configured, skip connections between matching resolutions), so a diagram cannot drift
from the network; and the figures must draw.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import matplotlib
import matplotlib.pyplot as plt
import pytest
from conftest import base_network_config, sr_network_config

from imagen_lib import EfficientUNet, UNet
from imagen_lib.tools.diagrams import draw_text_conditioning, draw_unet, trace_blocks

matplotlib.use("Agg")

TEXT_DIM = 32


def res_blocks_per_size(blocks, path: str) -> Counter:
    return Counter(b.resolution for b in blocks if b.path == path and b.kind == "res block")


def test_base_unet_trace_follows_its_config():
    config = base_network_config()  # 8x8, channel_mults (1, 2), 1 block, attention at 4x4
    blocks = trace_blocks(UNet(config, 8, 1, TEXT_DIM))
    assert [b.path for b in blocks][:1] == ["in"] and blocks[-1].path == "out"
    assert [b.index for b in blocks] == list(range(len(blocks)))
    # num_res_blocks per level on the way down, one more on the way up, two in the middle
    assert res_blocks_per_size(blocks, "down") == {8: 1, 4: 1}
    assert res_blocks_per_size(blocks, "up") == {8: 2, 4: 2}
    assert len([b for b in blocks if b.path == "middle"]) == 2
    assert Counter(b.kind for b in blocks)["downsample"] == 1
    assert Counter(b.kind for b in blocks)["upsample"] == 1
    for block in blocks:
        if block.kind == "res block" and block.path != "middle":
            level = {8: 0, 4: 1}[block.resolution]
            assert block.channels == config.channels * config.channel_mults[level]
            assert block.self_attention == (block.resolution in config.attention_resolutions)
            assert block.cross_attention == block.self_attention
    # the middle: attention in the first block only
    assert [b.self_attention for b in blocks if b.path == "middle"] == [True, False]
    # every up res block reads one skip, from the down path at its own resolution
    skips = [b for b in blocks if b.skip_from is not None]
    assert skips == [b for b in blocks if b.path == "up" and b.kind == "res block"]
    for block in skips:
        source = blocks[block.skip_from]
        assert source.path in ("in", "down") and source.resolution == block.resolution
        assert block.in_channels == blocks[block.index - 1].channels + source.channels
    assert len({b.skip_from for b in skips}) == len(skips)  # each skip used once


def test_cross_attention_false_keeps_self_attention_only():
    config = dataclasses.replace(base_network_config(), cross_attention=False)
    blocks = trace_blocks(UNet(config, 8, 1, TEXT_DIM))
    assert any(b.self_attention for b in blocks)
    assert not any(b.cross_attention for b in blocks)


def test_efficient_unet_trace_follows_its_config():
    config = sr_network_config(8)  # 16x16, channel_mults (1, 2), (1, 1) blocks, attention at 8
    blocks = trace_blocks(EfficientUNet(config, 16, 1, TEXT_DIM))
    assert blocks[0].in_channels == 2  # the noisy image and the low-res image, concatenated
    assert res_blocks_per_size(blocks, "down") == {16: 1, 8: 1}
    assert res_blocks_per_size(blocks, "up") == {16: 1, 8: 1}
    assert not [b for b in blocks if b.path == "middle"]
    attended = {b.resolution for b in blocks if b.cross_attention}
    assert attended == {8} and all(b.self_attention == b.cross_attention for b in blocks)
    # one skip per level but the lowest, taken after the level's down blocks
    skips = [b for b in blocks if b.skip_from is not None]
    assert [(b.resolution, blocks[b.skip_from].name) for b in skips] == [(16, "down_blocks.0.0")]


def test_a_changed_config_changes_the_traced_structure():
    small = trace_blocks(UNet(base_network_config(), 8, 1, TEXT_DIM))
    config = dataclasses.replace(
        base_network_config(), channel_mults=(1, 2, 3), num_res_blocks=2, attention_resolutions=(8,)
    )
    larger = trace_blocks(UNet(config, 16, 1, TEXT_DIM))
    assert res_blocks_per_size(larger, "down") == {16: 2, 8: 2, 4: 2}
    assert res_blocks_per_size(larger, "up") == {16: 3, 8: 3, 4: 3}
    assert {b.channels for b in larger if b.kind == "res block"} == {16, 32, 48}
    # the bottleneck always attends; elsewhere only the attention resolutions do
    assert {b.resolution for b in larger if b.cross_attention and b.path != "middle"} == {8}
    assert [b.label for b in small] != [b.label for b in larger]

    sr = trace_blocks(EfficientUNet(sr_network_config(8), 16, 1, TEXT_DIM))
    deeper = dataclasses.replace(sr_network_config(16), num_res_blocks=(1, 3))
    traced = trace_blocks(EfficientUNet(deeper, 16, 1, TEXT_DIM))
    assert res_blocks_per_size(traced, "down") == {16: 1, 8: 3}
    assert {b.resolution for b in traced if b.cross_attention} == {16}
    assert [b.label for b in sr] != [b.label for b in traced]


@pytest.mark.parametrize("efficient", [False, True])
def test_diagrams_draw(efficient):
    if efficient:
        network = EfficientUNet(sr_network_config(8), 16, 1, TEXT_DIM)
    else:
        network = UNet(base_network_config(), 8, 1, TEXT_DIM)
    blocks = trace_blocks(network)
    figure = draw_unet(network)
    try:
        texts = [t.get_text() for t in figure.axes[0].texts]
        for block in blocks:  # one box per traced block, labelled from the trace
            assert block.label in texts or block.path == "out"
        figure.canvas.draw()
    finally:
        plt.close(figure)
    figure = draw_text_conditioning(network)
    try:
        text = "\n".join(t.get_text() for t in figure.axes[0].texts)
        assert f"({sum(b.cross_attention for b in blocks)} layers)" in text
        attended = {b.resolution for b in blocks if b.cross_attention}
        for size in {b.resolution for b in blocks}:  # listed where, and only where, it is
            assert (f"{size}×{size}" in text) == (size in attended)
        figure.canvas.draw()
    finally:
        plt.close(figure)


def test_text_diagram_without_cross_attention():
    config = dataclasses.replace(base_network_config(), cross_attention=False)
    figure = draw_text_conditioning(UNet(config, 8, 1, TEXT_DIM))
    try:
        text = "\n".join(t.get_text() for t in figure.axes[0].texts)
        assert "no cross-attention" in text
    finally:
        plt.close(figure)

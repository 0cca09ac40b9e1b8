"""Diagrams of the networks, drawn from the networks themselves (lessons 3, 4 and 7).

Tooling, not a taught module: a lesson calls these to *see* an architecture, and since
every box comes from one traced forward pass of the actual network, a diagram cannot
drift from the code it pictures.

- `trace_blocks(network)`: run one forward pass of a `UNet` or `EfficientUNet` on a
  dummy batch with forward hooks on its blocks (input convolution, residual blocks with
  their optional attention, down- and upsamplers, output convolution) and return one
  `TracedBlock` per block call, in the order they ran: kind, channels in and out,
  resolution, attention, and which earlier blocks it read (so skip connections are found,
  not assumed). To find those, each hook replaces its block's output with a constant
  tensor holding the block's number: a later block's input then names its sources.
  The replaced values are meaningless, but every shape is the real one.
- `draw_unet(network)`: the U: down path on the left (top to bottom), bottleneck, up path
  on the right (bottom to top), one band per resolution, skip connections as dashed arrows,
  the inputs, the output and the conditioning embedding.
- `draw_text_conditioning(network)`: the text path: token embeddings -> context ->
  attention pooling -> pooled vector added to the timestep embedding, and the
  cross-attention layers (LayerNorm on the context) at the resolutions where they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
from torch import nn

from imagen_lib.efficient_unet import EfficientUNet
from imagen_lib.layers import ConditionedBlock, Downsample, Upsample
from imagen_lib.unet import UNet


@dataclass(frozen=True)
class TracedBlock:
    """One block call of a traced forward pass."""

    index: int  # position in the forward pass
    name: str  # the module's name inside the network, e.g. "down.3" or "up_blocks.0.1"
    path: str  # "in", "down", "middle", "up" or "out"
    kind: str  # "input conv", "res block", "downsample", "upsample" or "output conv"
    in_channels: int
    channels: int  # output channels
    resolution: int  # output height (= width)
    self_attention: bool
    cross_attention: bool
    inputs: tuple[int, ...]  # indices of the blocks whose outputs this block reads

    @property
    def skip_from(self) -> int | None:
        """The block whose output arrives by a skip connection (not from the block just before)."""
        skips = [source for source in self.inputs if source != self.index - 1]
        return skips[0] if skips else None

    @property
    def label(self) -> str:
        """Kind, channels and resolution; the attention it carries (if any) on a second line."""
        size = f"{self.resolution}×{self.resolution}"
        text = f"{self.kind}  {self.in_channels}→{self.channels} ch  {size}"
        attention = ["+ self-attn"] * self.self_attention + ["+ cross-attn"] * self.cross_attention
        return text + ("\n" + " ".join(attention) if attention else "")


def _kind(module: nn.Module, path: str) -> str:
    if path == "in":
        return "input conv"
    if path == "out":
        return "output conv"
    if isinstance(module, Downsample):
        return "downsample"
    if isinstance(module, Upsample):
        return "upsample"
    return "res block"


def _traced_modules(network: UNet | EfficientUNet) -> list[tuple[str, str, nn.Module]]:
    """(name, path, module) for the input conv, every block and sampler, and the output conv."""
    found = [("conv_in", "in", network.conv_in)]
    for name, module in network.named_modules():
        if isinstance(module, (ConditionedBlock, Downsample, Upsample)):
            # "down.3" -> "down", "down_blocks.1.0" -> "down", "up_samplers.0" -> "up"
            found.append((name, name.split(".")[0].split("_")[0], module))
    return found + [("out", "out", network.out)]


def _dummy_inputs(network: UNet | EfficientUNet) -> tuple[torch.Tensor, ...]:
    """One sample of the right shapes: noisy image, timestep, 3 text tokens, their mask
    (and, for the Efficient U-Net, the low-resolution image and the augmentation level)."""
    parameter = next(network.parameters())
    size, channels = network.image_size, network.image_channels
    x = torch.zeros(1, channels, size, size, device=parameter.device, dtype=parameter.dtype)
    t = torch.zeros(1, dtype=torch.long, device=parameter.device)
    text = torch.zeros(1, 3, network.text.text_dim, device=parameter.device, dtype=parameter.dtype)
    mask = torch.ones(1, 3, dtype=torch.bool, device=parameter.device)
    if isinstance(network, EfficientUNet):
        return x, t, text, mask, torch.zeros_like(x), t
    return x, t, text, mask


def trace_blocks(network: UNet | EfficientUNet) -> list[TracedBlock]:
    """Run one forward pass with hooks and return the blocks in the order they ran."""
    traced: list[TracedBlock] = []

    def hook_for(name: str, path: str):
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            x = args[0]  # (1, C_in, H, W)
            # Each earlier block's output was replaced by its number, so the channels of
            # x hold the numbers of the blocks it came from, in order.
            sources = [] if path == "in" else x[0, :, 0, 0].round().long().unique_consecutive()
            attention = getattr(module, "attention", None)
            index = len(traced)
            traced.append(
                TracedBlock(
                    index=index,
                    name=name,
                    path=path,
                    kind=_kind(module, path),
                    in_channels=x.shape[1],
                    channels=output.shape[1],
                    resolution=output.shape[-1],
                    self_attention=attention is not None,
                    cross_attention=attention is not None and attention.cross_attention is not None,
                    inputs=tuple(int(source) for source in sources),
                )
            )
            return torch.full_like(output, float(index))

        return record

    hooks = [
        module.register_forward_hook(hook_for(name, path))
        for name, path, module in _traced_modules(network)
    ]
    try:
        with torch.no_grad():
            network(*_dummy_inputs(network))
    finally:
        for hook in hooks:
            hook.remove()
    return traced


# ---- drawing -------------------------------------------------------------------------------

COLOURS = {
    "res block": "#dbe9f6",
    "self-attn": "#fde3bd",
    "cross-attn": "#f6b98a",
    "sampler": "#e6e6e6",
    "conv": "white",
}
X_LEFT, X_RIGHT, BOX_WIDTH, BOX_HEIGHT = 2.0, 8.2, 3.6, 0.76
# the text diagram's two columns: the pooled path's centre, cross-attention's, their boxes' width
TEXT_X_POOL, TEXT_X_CROSS, TEXT_WIDE = 2.9, 8.2, 5.0
FONT = 9.5


def _colour(block: TracedBlock) -> str:
    if block.cross_attention:
        return COLOURS["cross-attn"]
    if block.self_attention:
        return COLOURS["self-attn"]
    if block.kind == "res block":
        return COLOURS["res block"]
    return COLOURS["sampler"] if block.kind.endswith("sample") else COLOURS["conv"]


def _box(ax, x: float, y: float, text: str, colour: str, width: float = BOX_WIDTH, height=None):
    """A rounded box centred at (x, y) with its text; returns the patch (arrows clip to it)."""
    height = BOX_HEIGHT if height is None else height
    patch = FancyBboxPatch(
        (x - width / 2, y - height / 2),
        width,
        height,
        boxstyle="round,pad=0.02,rounding_size=0.08",
        facecolor=colour,
        edgecolor="0.3",
        linewidth=0.8,
    )
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=FONT)
    return patch


def _arrow(ax, start: FancyBboxPatch, end: FancyBboxPatch, skip: bool = False) -> None:
    """An arrow from one box to another, clipped to their edges."""
    ax.add_patch(
        FancyArrowPatch(
            _centre(start),
            _centre(end),
            patchA=start,
            patchB=end,
            arrowstyle="-|>",
            mutation_scale=9,
            color="0.45" if skip else "0.15",
            linestyle=(0, (4, 3)) if skip else "-",
            linewidth=0.9,
            shrinkA=1,
            shrinkB=1,
        )
    )


def _centre(patch: FancyBboxPatch) -> tuple[float, float]:
    return patch.get_x() + patch.get_width() / 2, patch.get_y() + patch.get_height() / 2


def _conditioning_text(network: UNet | EfficientUNet, blocks: list[TracedBlock]) -> str:
    """What the conditioning box says, read from the network's modules and the trace."""
    embedding = network.time_embedding.mlp[-1].out_features
    lines = [
        f"Every res block reads the conditioning embedding (B, {embedding}): it sets a "
        "per-channel scale and shift after the block's second GroupNorm.",
        "embedding = timestep t (sinusoid → MLP)  +  pooled text (attention pooling)",
    ]
    if isinstance(network, EfficientUNet):
        lines[-1] += "  +  augmentation level t_aug (sinusoid → MLP)"
    cross = sorted({b.resolution for b in blocks if b.cross_attention}, reverse=True)
    context = network.text.to_context.out_features
    lines.append(
        f"The text tokens (B, L, {context}) also reach the cross-attention layers at "
        + ", ".join(f"{size}×{size}" for size in cross)
        if cross
        else "No cross-attention: the text reaches this network only as the pooled vector."
    )
    return "\n".join(lines)


@dataclass
class UNetLayout:
    """The traced blocks of a U-Net placed for drawing: by side of the U and by resolution."""

    sizes: list[int]  # the resolutions, largest first: one band each
    left: dict[int, list[TracedBlock]]  # the down path (and the input conv), per resolution
    right: dict[int, list[TracedBlock]]  # the up path, per resolution
    middle: list[TracedBlock]  # the bottleneck (base U-Net only)
    output: TracedBlock

    @classmethod
    def of(cls, blocks: list[TracedBlock]) -> UNetLayout:
        sizes = sorted({b.resolution for b in blocks}, reverse=True)
        left = {
            size: [b for b in blocks if b.path in ("in", "down") and b.resolution == size]
            for size in sizes
        }
        right = {
            size: [b for b in blocks if b.path == "up" and b.resolution == size] for size in sizes
        }
        middle = [b for b in blocks if b.path == "middle"]
        return cls(sizes, left, right, middle, next(b for b in blocks if b.path == "out"))

    def rows(self, size: int) -> int:
        """The rows of boxes a resolution's band needs: its longer side."""
        return max(len(self.left[size]), len(self.right[size]))


def _draw_bands(ax, layout: UNetLayout, top: float, patches: dict[int, FancyBboxPatch]) -> float:
    """One shaded band per resolution from `top` down, holding both sides' boxes.

    Each box goes into `patches` by its block's index; returns the y below the last band.
    """
    y = top
    for number, size in enumerate(layout.sizes):
        top, band = y, layout.rows(size)
        ax.add_patch(
            plt.Rectangle(
                (-1.0, top - band + 0.5),
                11.3,
                band,
                facecolor="0.94" if number % 2 == 0 else "0.985",
                edgecolor="none",
                zorder=0,
            )
        )
        ax.text(-0.9, top - band / 2 + 0.5, f"{size}×{size}", fontsize=FONT + 1, va="center")
        # The down path runs top to bottom; the up path bottom to top, ending at the band's top.
        for row, block in enumerate(layout.left[size]):
            patches[block.index] = _box(ax, X_LEFT, top - row, block.label, _colour(block))
        for row, block in enumerate(reversed(layout.right[size])):
            patches[block.index] = _box(ax, X_RIGHT, top - row, block.label, _colour(block))
        y -= band
    return y


def _draw_bottleneck(
    ax, middle: list[TracedBlock], y: float, patches: dict[int, FancyBboxPatch]
) -> float:
    """The bottleneck's boxes side by side below the bands; returns the y below them."""
    if not middle:
        return y
    y -= 0.4
    ax.text(-0.9, y, "bottleneck", fontsize=FONT + 1, va="center")
    centre = (X_LEFT + X_RIGHT) / 2
    for number, block in enumerate(middle):
        x = centre + (number - (len(middle) - 1) / 2) * 3.3
        patches[block.index] = _box(ax, x, y, block.label, _colour(block), width=3.1)
    return y - 1.0


def _draw_ends(
    ax, network: UNet | EfficientUNet, output: TracedBlock, patches: dict[int, FancyBboxPatch]
) -> None:
    """The inputs above the down path, with an arrow into it; the output above the up path."""
    efficient = isinstance(network, EfficientUNet)
    image = f"(B, {network.image_channels}, {network.image_size}, {network.image_size})"
    inputs = f"noisy image x_t {image}"
    if efficient:
        inputs += f"\n+ low-res image, upsampled to {network.image_size}×{network.image_size}"
        inputs += "\nand noised to level t_aug, concatenated\nalong channels"
    input_box = _box(ax, X_LEFT, -0.45, inputs, "white", height=1.25 if efficient else 0.6)
    patches[output.index] = _box(
        ax,
        X_RIGHT,
        -0.45,
        f"{output.kind}  {output.in_channels}→{output.channels} ch\npredicted noise (or v) {image}",
        COLOURS["conv"],
        height=0.7,
    )
    _arrow(ax, input_box, patches[0])


def _draw_legend(ax, blocks: list[TracedBlock]) -> None:
    """A legend entry for each colour the diagram uses, and the skip line."""
    colours = {_colour(block) for block in blocks}
    meanings = [
        ("res block", "res block"),
        ("self-attn", "+ self-attention"),
        ("cross-attn", "+ self- and cross-attention"),
        ("sampler", "down/upsample"),
    ]
    legend = [
        Patch(facecolor=COLOURS[key], edgecolor="0.3", label=label)
        for key, label in meanings
        if COLOURS[key] in colours
    ]
    legend.append(Line2D([], [], color="0.45", linestyle=(0, (4, 3)), label="skip (concatenated)"))
    ax.legend(
        handles=legend,
        loc="lower center",
        ncol=len(legend),
        fontsize=FONT,
        frameon=False,
        borderaxespad=0,
    )


def draw_unet(
    network: UNet | EfficientUNet, title: str | None = None, width: float = 11.0
) -> Figure:
    """The network's U, one box per traced block, with its skips, inputs and conditioning."""
    blocks = trace_blocks(network)
    efficient = isinstance(network, EfficientUNet)
    layout = UNetLayout.of(blocks)

    # Vertical layout, top to bottom: inputs and output, one band per resolution, the
    # bottleneck row (base U-Net), the conditioning box. One unit is one row of boxes.
    header, footer = 2.0 if efficient else 1.6, 2.0
    bands = sum(layout.rows(size) for size in layout.sizes)
    height = header + bands + (1.4 if layout.middle else 0) + footer + 0.6
    figure, ax = plt.subplots(figsize=(width, 0.6 * height))
    ax.set_xlim(-1.0, 10.3)
    ax.set_ylim(-height + 0.6, 0.4)
    ax.set_axis_off()

    patches: dict[int, FancyBboxPatch] = {}
    y = _draw_bands(ax, layout, -header, patches)
    y = _draw_bottleneck(ax, layout.middle, y, patches)
    _draw_ends(ax, network, layout.output, patches)
    # The data flow (solid) and the skip connections (dashed), from the traced inputs.
    for block in blocks:
        for source in block.inputs:
            _arrow(ax, patches[source], patches[block.index], skip=source != block.index - 1)
    conditioning = _conditioning_text(network, blocks)
    _box(ax, 4.65, y - footer / 2 + 0.3, conditioning, "#f3f0fa", width=10.9, height=1.2)
    _draw_legend(ax, blocks)
    name = "Efficient U-Net" if efficient else "U-Net"
    parameters = sum(p.numel() for p in network.parameters())
    ax.set_title(title or f"{name}, {parameters:,} parameters", fontsize=FONT + 3)
    figure.tight_layout()
    return figure


def _cross_attention_groups(blocks: list[TracedBlock]) -> dict[tuple[str, int, int], int]:
    """The cross-attention layers counted per (path, resolution, channels), in forward order."""
    groups: dict[tuple[str, int, int], int] = {}
    for block in blocks:
        if block.cross_attention:
            key = (block.path, block.resolution, block.channels)
            groups[key] = groups.get(key, 0) + 1
    return groups


def _draw_pooled_path(ax, network: UNet | EfficientUNet, start: FancyBboxPatch) -> None:
    """Left: the pooled vector, from the token context to every res block's scale and shift."""
    text = network.text
    context = text.to_context.out_features
    embedding = text.pooled_to_embedding[-1].out_features
    steps = [
        f"LayerNorm on the tokens (B, L, {context})",
        f"attention pooling: one learned query, {text.pool.heads} heads,\n"
        f"padding masked → (B, {context})",
        f"LayerNorm → Linear {context}→{embedding}: pooled text (B, {embedding})",
        f"+ timestep embedding (B, {embedding})"
        + (" + augmentation-level embedding" if isinstance(network, EfficientUNet) else ""),
        "scale and shift in every res block",
    ]
    previous = start
    for row, step in enumerate(steps):
        colour = COLOURS["res block"] if row == len(steps) - 1 else "white"
        current = _box(ax, TEXT_X_POOL, -2.1 - row * 1.0, step, colour, width=TEXT_WIDE)
        _arrow(ax, previous, current)
        previous = current


def _draw_cross_attention(
    ax, groups: dict[tuple[str, int, int], int], start: FancyBboxPatch
) -> None:
    """Right: the cross-attention layers, where the trace found them (or that there are none)."""
    if not groups:
        _box(
            ax,
            TEXT_X_CROSS,
            -2.1,
            "no cross-attention in this network:\nthe text arrives only as the pooled vector",
            "white",
            width=TEXT_WIDE,
            height=0.8,
        )
        return
    header = _box(
        ax,
        TEXT_X_CROSS,
        -2.3,
        f"cross-attention ({sum(groups.values())} layers):\n"
        "LayerNorm on the context → keys, values;\n"
        "queries from the GroupNorm-ed pixels; residual",
        COLOURS["cross-attn"],
        width=TEXT_WIDE,
        height=1.2,
    )
    _arrow(ax, start, header)
    where = {"down": "down path", "middle": "bottleneck", "up": "up path"}
    listing = "\n".join(
        f"{where[path]}, {size}×{size}, {channels} ch: {count} layer{'s' * (count > 1)}"
        for (path, size, channels), count in groups.items()
    )
    height = 0.3 + 0.3 * len(groups)
    y = -3.4 - 0.2 * len(groups)
    _arrow(
        ax,
        header,
        _box(ax, TEXT_X_CROSS, y, listing, "#fbe2cf", width=TEXT_WIDE - 0.6, height=height),
    )


def draw_text_conditioning(network: UNet | EfficientUNet, width: float = 11.0) -> Figure:
    """The two ways the text enters the network: the pooled vector and cross-attention."""
    text_dim, context = network.text.text_dim, network.text.to_context.out_features
    groups = _cross_attention_groups(trace_blocks(network))

    # the pooled path's five boxes end at y = -6.1; the cross-attention listing's lines may go lower
    bottom = min(-6.7, -3.9 - 0.4 * len(groups))
    figure, ax = plt.subplots(figsize=(width, 0.62 * (1.2 - bottom)))
    ax.set_xlim(0, 11)
    ax.set_ylim(bottom, 1.2)
    ax.set_axis_off()

    tokens = _box(
        ax,
        5.5,
        0.5,
        f"text tokens from the frozen encoder (B, L, {text_dim}), padding mask (B, L)\n"
        "a prompt dropped for guidance becomes the learned null token (one token, rest masked)",
        "white",
        width=9.0,
        height=0.8,
    )
    projected = _box(
        ax,
        5.5,
        -0.8,
        f"Linear {text_dim}→{context}: token context (B, L, {context})",
        "white",
        width=6.0,
    )
    _arrow(ax, tokens, projected)
    _draw_pooled_path(ax, network, projected)
    _draw_cross_attention(ax, groups, projected)
    name = "Efficient U-Net" if isinstance(network, EfficientUNet) else "U-Net"
    ax.set_title(f"How the text enters the {name}", fontsize=FONT + 3)
    figure.tight_layout()
    return figure

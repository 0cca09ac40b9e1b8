"""Plumbing, not a lesson: the range checks of settings that several places accept.

Each setting is checked here, once, whoever takes it: a guidance weight or interval (a stage's
recommendation, an argument of `Imagen.sample`, a command's option), the dynamic thresholding
percentile, a network config's sizes, a stage's index. A bad value is one clear error naming the
setting, raised where it enters, not a NaN image or an index error deep inside a sampler.
"""

from __future__ import annotations

from imagen_lib.plumbing.errors import BadSetting

# Useful weights are small (lesson 9 sweeps 0 to 20); far beyond, samples only saturate,
# and huge weights overflow to NaN.
MAX_GUIDANCE_WEIGHT = 100.0


def check_guidance_weight(guidance_weight: float) -> float:
    """The weight as a float, if it is a number from 0 to MAX_GUIDANCE_WEIGHT."""
    if not isinstance(guidance_weight, (int, float)) or isinstance(guidance_weight, bool):
        raise TypeError(f"guidance weight must be a number, got {guidance_weight!r}")
    if not 0 <= guidance_weight <= MAX_GUIDANCE_WEIGHT:  # NaN fails too
        raise BadSetting(
            f"guidance weight must be between 0 and {MAX_GUIDANCE_WEIGHT:g}, got {guidance_weight}",
            "0 ignores the text, 1 is plain conditioning, larger values follow the text harder",
            guidance_weight=None,
        )
    return float(guidance_weight)


def check_guidance_interval(interval: tuple[float, float]) -> tuple[float, float]:
    """A guidance interval (start, end): fractions of the schedule with 0 <= start <= end <= 1."""
    if (
        not isinstance(interval, (tuple, list))
        or len(interval) != 2
        or any(isinstance(bound, bool) or not isinstance(bound, (int, float)) for bound in interval)
    ):
        raise TypeError(
            f"a guidance interval is two numbers (start, end), such as (0.3, 0.8), got {interval!r}"
        )
    start, end = float(interval[0]), float(interval[1])
    if not 0 <= start <= end <= 1:
        raise BadSetting(
            "a guidance interval (start, end) needs 0 <= start <= end <= 1 "
            f"(fractions of the schedule, 0 the clean end): got ({start:g}, {end:g})",
            "(0, 1) guides at every step",
            guidance_interval=None,
        )
    return start, end


def check_percentile(percentile: float) -> float:
    """The dynamic thresholding percentile as a float, if it is in (0, 1]."""
    if not 0 < percentile <= 1:
        raise BadSetting(
            f"dynamic thresholding percentile must be in (0, 1], got {percentile}",
            "Imagen uses values such as 0.95 or 0.995",
            percentile=None,
        )
    return float(percentile)


def check_stage_index(stage: int, stages: int) -> int:
    """`stage` if it is the index of one of a cascade's `stages` stages."""
    if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage < stages:
        raise BadSetting(
            f"stage must be an index from 0 to {stages - 1} "
            f"(this cascade has {stages} stages), got {stage}"
        )
    return stage


def check_network(config: object) -> None:
    """A ValueError naming the first setting of a network's config out of its range.

    For both networks' configs (`UNetConfig`, `EfficientUNetConfig`): widths, block counts,
    attention sizes and heads of at least 1, one block count per level where they are given
    per level, a dropout rate in [0, 1).
    """
    name = type(config).__name__
    blocks = config.num_res_blocks  # one count for every level, or a tuple of one per level
    positive = {
        "channels": [config.channels],
        "channel_mults": list(config.channel_mults),
        "num_res_blocks": list(blocks) if isinstance(blocks, tuple) else [blocks],
        "attention_resolutions": list(config.attention_resolutions),
        "heads": [config.heads],
    }
    for setting, values in positive.items():
        empty = not values and setting != "attention_resolutions"  # attention is optional
        if empty or any(value < 1 for value in values):
            given = getattr(config, setting)
            rule = (
                "must list values of at least 1"
                if isinstance(given, tuple)
                else "must be at least 1"
            )
            raise BadSetting(f"{name}.{setting} {rule}, got {given}")
    levels = len(config.channel_mults)
    if isinstance(blocks, tuple) and len(blocks) != levels:
        raise BadSetting(
            f"{name}.num_res_blocks needs one entry per level ({levels}), got {blocks}"
        )
    if not 0 <= config.dropout < 1:
        raise BadSetting(f"{name}.dropout must be in [0, 1), got {config.dropout}")

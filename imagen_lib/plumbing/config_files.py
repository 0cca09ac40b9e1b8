"""Plumbing, not a lesson: a cascade config as files hold it, made ready for `ImagenConfig`.

Checkpoints and JSON records hold `ImagenConfig.to_dict()`. JSON has no tuples, so sizes and
per-level settings come back as lists; and files written before the stages had sampling
settings of their own hold one sampler and step count for every stage. `current_values`
turns either into what the configs take today; the configs then check every value.
"""

from __future__ import annotations

# What files written before per-stage sampling settings held once, for all stages.
SHARED_BEFORE = ("sampler", "sampling_steps")


def current_values(values: dict) -> dict:
    """A copy of a stored cascade config with lists as tuples and sampling settings per stage.

    Each stage is a dictionary of StageConfig's fields, its network one of its network
    config's. Malformed values raise whatever Python raises (KeyError, TypeError, ...).
    """
    values = dict(values)
    shared = {key: values.pop(key) for key in SHARED_BEFORE if key in values}
    stages = []
    for stage in values["stages"]:
        stage = {**shared, **stage}
        stage["network"] = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in stage["network"].items()
        }
        if isinstance(stage.get("image_size"), list):
            stage["image_size"] = tuple(stage["image_size"])
        stages.append(stage)
    return {**values, "stages": stages}

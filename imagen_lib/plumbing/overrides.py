"""Plumbing, not a lesson: training settings written as text, `field=value`, made typed.

The command line changes any training setting of a preset with such text (`batch_size=32`,
`mixed_precision=false`). `override` reads each one as its field's type, then makes a new
config with `dataclasses.replace`, so the config's own checks judge the values.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import TypeVar

from imagen_lib.plumbing.errors import BadSetting

Config = TypeVar("Config")

TRUE, FALSE = ("true", "1"), ("false", "0")


def override(training: Config, assignments: list[str]) -> Config:
    """`training` (a TrainConfig) with `field=value` strings applied, each value of its field's
    type (int, float, bool or str); the last assignment to a field wins."""
    changes = {}
    kinds = typing.get_type_hints(type(training))
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or name not in kinds:
            raise BadSetting(
                f"a training setting is written field=value with a field among "
                f"{', '.join(kinds)}, got {assignment!r}"
            )
        kind = kinds[name]
        if kind is bool:
            if text.lower() not in TRUE + FALSE:
                raise BadSetting(f"{name} takes true or false, got {text!r}", **{name: None})
            changes[name] = text.lower() in TRUE
        else:
            try:
                changes[name] = kind(text)
            except ValueError as error:
                raise BadSetting(
                    f"{name} takes {kind.__name__} values, got {text!r}", **{name: None}
                ) from error
    return dataclasses.replace(training, **changes)

"""Typed configs: each field's value checked against its annotation, as a real type.

Every config of the package (the networks', a stage's, the cascade's, the training
settings, a preset) is a frozen dataclass whose `__post_init__` first calls
`check_types(self)`. That runs when the config is made and again on every
`dataclasses.replace`, so a config cannot hold a value of the wrong type, whether it was
written in Python, read from a checkpoint or changed from the command line.

The annotations are resolved to the types they name (`typing.get_type_hints`), so
`image_size: Size` is checked as `int | tuple[int, int]`; an annotation of a kind that
`fits` does not know is an error, never a silent pass.
"""

from __future__ import annotations

import dataclasses
import types
import typing


def check_types(config: object) -> None:
    """A TypeError naming the first field of the dataclass `config` not of its annotated type.

    Such as "StageConfig.timesteps must be int, got 'ten'".
    """
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):
        value, hint = getattr(config, item.name), hints[item.name]
        if not fits(value, hint):
            raise TypeError(
                f"{type(config).__name__}.{item.name} must be {type_text(hint)}, got {value!r}"
            )


def fits(value: object, hint: object) -> bool:
    """Whether `value` is of the type `hint`: a class, X | Y, tuple[X, ...] or tuple[X, Y]."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin is types.UnionType:
        return any(fits(value, arm) for arm in arguments)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if arguments[-1] is Ellipsis:  # tuple[X, ...]: any length
            return all(fits(part, arguments[0]) for part in value)
        return len(value) == len(arguments) and all(
            fits(part, kind) for part, kind in zip(value, arguments)
        )
    # A bool is an int to Python, but True for a step count is a mistake, not a 1.
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an int serves as a float, as in Python's own annotations
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is None and isinstance(hint, type):  # str, bool, None's type, a nested config
        return isinstance(value, hint)
    raise TypeError(f"check_types cannot check a value against {hint!r}: teach `fits` that kind")


def type_text(hint: object) -> str:
    """A type as an annotation writes it: "int", "int | None", "tuple[int, ...]", "UNetConfig"."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin is types.UnionType:
        return " | ".join(type_text(arm) for arm in arguments)
    if origin is tuple:
        parts = ("..." if part is Ellipsis else type_text(part) for part in arguments)
        return f"tuple[{', '.join(parts)}]"
    return "None" if hint is type(None) else hint.__name__

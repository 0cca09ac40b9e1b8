"""Plumbing, not a lesson: loading files without running code they may hold, and checking them.

Unpickling a file can run any code written into it, so the library never unpickles one:
torch files are loaded with `weights_only=True` (tensors and plain data only), and a text
encoder's folder is loaded only from safetensors. A file that would need more is refused in
one line that says why, as is a truncated, empty or foreign file.

Checkpoints and the digit classifier's file are read the same way, here: the file is found
and safely loaded, its format tag checked (`load_tagged_file`), its entries present
(`require_entries`), its weights tensors and finite (`check_finite_weights`) and fitting the
network they are loaded into (`load_weights`).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from imagen_lib.plumbing.errors import BadFile, damaged
from imagen_lib.plumbing.files import existing_file


def load_file(path: Path, what: str) -> object:
    """torch.load tensors and plain data only (no code runs), with a one-line error otherwise.

    `what` names the kind of file in the errors, e.g. "checkpoint".
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    # zip, EOF and pickle errors of truncated, empty, foreign or unsafe files
    except Exception as error:
        # torch's refusal, and lines of advice
        if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in str(error):
            raise BadFile(
                f"{path} contains code or objects that are not plain tensors, so it will not be "
                "loaded (loading it could run that code)",
                f"use a {what} written by imagen_lib",
            ) from error
        reason = (
            str(error).strip().splitlines()[0] if str(error).strip() else "the file ended too early"
        )
        raise BadFile(
            f"{path} could not be read as a {what} "
            f"(truncated, empty or not a torch file?): {reason}"
        ) from error


def load_tagged_file(path: Path, what: str, tag: str, example: str, fix: str) -> dict:
    """The dictionary in an imagen_lib file of kind `what` ("checkpoint"), tagged `tag`.

    A missing file, a folder, a pipe, a truncated or foreign file, or one holding code, is a
    one-line error that ends with `fix` (what to do instead); `example` names such a file
    inside a folder.
    """
    existing_file(path, what, example, fix)
    payload = load_file(path, what)
    if not isinstance(payload, dict) or payload.get("format") != tag:
        raise BadFile(f"{path} is not an imagen_lib {what} (no '{tag}' tag)", fix)
    return payload


def require_entries(payload: dict, keys: tuple[str, ...], path: Path, fix: str) -> None:
    """A one-line error naming the entries of `keys` that the file lacks, if any; `fix` ends it."""
    missing = [key for key in keys if key not in payload]
    if missing:
        raise damaged(path, f"lacks the entries {', '.join(missing)}", fix)


def check_finite_weights(weights: object, path: Path, what: str, fix: str) -> None:
    """A one-line ValueError unless `weights` is a dictionary of tensors, all of them finite.

    Training never saves NaN or infinite weights, so such a file diverged elsewhere or was
    damaged; sampling from it would give blank images, and exporting it would pass it on.
    `fix` ends the errors: what to use instead, such as "use an earlier checkpoint".
    """
    if not isinstance(weights, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in weights.items()
    ):
        raise damaged(path, f"holds {what} weights that are not a dictionary of tensors", fix)
    bad = [
        key
        for key, value in weights.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if bad:
        raise BadFile(
            f"{path} holds NaN or infinite {what} weights ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''})",
            f"the file is damaged, or its weights diverged; {fix}",
        )


def load_weights(module: nn.Module, weights: dict, path: Path, what: str) -> None:
    """module.load_state_dict(weights), with a one-line error if they do not fit.

    The error names a few of the mismatched entries; torch's own error lists every
    mismatched tensor, often a hundred lines or more.
    """
    expected = module.state_dict()
    missing = [key for key in expected if key not in weights]
    unexpected = [key for key in weights if key not in expected]
    reshaped = [
        key
        for key in expected
        if key in weights and getattr(weights[key], "shape", None) != expected[key].shape
    ]
    problems = [
        (label, keys)
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("of another shape", reshaped),
        )
        if keys
    ]
    if problems:
        listed = "; ".join(
            f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
            for label, keys in problems
        )
        raise BadFile(
            f"the {what} weights in {path} do not fit the networks they are loaded into: {listed}",
            "the file was edited, or written by a different version of imagen_lib",
        )
    module.load_state_dict(weights)


def check_encoder_folder(folder: Path) -> None:
    """Refuse a local encoder folder whose weights are a pickle (pytorch_model.bin).

    Local folders are loaded from safetensors only, which hold nothing but tensors
    (`save_pretrained` writes them by default).
    """
    if any(folder.glob("*.safetensors")):
        return
    pickled = ("pytorch_model.bin", "pytorch_model.bin.index.json")
    found = [name for name in pickled if (folder / name).exists()]
    if found:
        raise BadFile(
            f"the text encoder folder {folder} holds its weights as a pickle ({found[0]}), "
            "which could run code when loaded, so it is not loaded",
            "save the model as safetensors (`model.save_pretrained(folder)` writes "
            "model.safetensors) or use another encoder",
        )

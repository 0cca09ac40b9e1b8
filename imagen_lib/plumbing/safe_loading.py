"""Plumbing, not a lesson: loading files without running code they may hold.

Unpickling a file can run any code written into it, so the library never unpickles one:
torch files are loaded with `weights_only=True` (tensors and plain data only), and a text
encoder's folder is loaded only from safetensors. A file that would need more is refused in
one line that says why, as is a truncated, empty or foreign file.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from imagen_lib.plumbing.errors import BadFile


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

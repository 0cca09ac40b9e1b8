"""Plumbing, not a lesson: training on without torch.compile where compiling fails.

torch.compile compiles a network at its first call, and fails there where it cannot (no C
compiler, say). The trainer (`Trainer.first_forward_backward`) makes that first call through
`compiled_first_call`; where it fails, the trainer makes it again with the plain network,
taking the very random draws the failed attempt took, so the weights are those of a run that
never tried to compile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

Result = TypeVar("Result")


def compiled_first_call(
    call: Callable[[], Result], generator: torch.Generator, what: str
) -> Result | None:
    """`call()`, the first one through a compiled network; None where compiling fails.

    Then `generator` is back in its state before the call, and a line says what failed;
    `what` names the network ("stage 0").
    """
    before = generator.get_state()
    try:
        return call()
    except Exception as error:
        generator.set_state(before)
        reason = " ".join(str(error).split())[:200]
        print(
            f"torch.compile failed for {what} ({type(error).__name__}: {reason}); "
            "training continues without it (compile 'off' skips the attempt)",
            flush=True,
        )
        return None

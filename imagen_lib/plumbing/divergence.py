"""Plumbing, not a lesson: telling that training diverged, from the losses and the weights' norms.

The trainer (imagen_lib/train.py) looks at the losses only now and then, since each look waits
for the device; at each look `divergence` says whether the stage diverged since the last one,
and the trainer stops with `TrainingDiverged` before it saves or samples anything, so a
checkpoint never holds diverged weights.
"""

from __future__ import annotations

import torch

from imagen_lib.plumbing.errors import Stopped

# Between two looks (at most train.SYNC_EVERY steps apart) healthy training changes the
# weights' norm by a few percent: measured on the smoke preset at 50 times its learning rate,
# +5% in 10 steps and +20% in 60. A tenfold growth is a step that blew the weights up: they are
# still finite, but the next loss would be NaN.
GROWTH_LIMIT = 10.0


class TrainingDiverged(Stopped):
    """The loss or the weights became NaN or infinite, or the weights grew huge in a few steps."""


def divergence(
    losses: torch.Tensor,
    norm: torch.Tensor,
    ema_norm: torch.Tensor,
    last_norm: torch.Tensor | None = None,
) -> str:
    """How a stage diverged since the last look, in words; "" if it did not.

    `losses` holds the losses since the last look, `norm` and `ema_norm` are the norms of the
    trained and the EMA weights now (0-d tensors), `last_norm` the trained weights' norm at the
    last look, if known. Diverged: a loss or a norm is NaN or infinite, or the norm grew more
    than GROWTH_LIMIT times since the last look. The last catches a step that blew the weights
    up while keeping them finite (such as learning rate 1000): they would be saved, and every
    resume would diverge at once.
    """
    finite = torch.isfinite(losses).all() & torch.isfinite(norm) & torch.isfinite(ema_norm)
    healthy = finite if last_norm is None else finite & (norm <= GROWTH_LIMIT * last_norm)
    if bool(healthy):  # the one wait for the device
        return ""
    if bool(finite):
        return f"the weights' norm grew {(norm / last_norm).item():.0f}-fold"
    return "a loss or weight became NaN or infinite"

"""Plumbing, not a lesson: whether the Hugging Face model hub answers, within a few seconds.

`imagen_lib.text` asks before it downloads an encoder, so that offline it fails at once,
naming the offline encoders, instead of after a minute of retries.
"""

from __future__ import annotations

import socket
import threading

HUB_HOST = "huggingface.co"


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the model hub's host resolves and accepts a connection, within a few seconds.

    Done in a thread because a name lookup ignores socket timeouts; without this check
    an offline `from_pretrained` spends most of a minute retrying.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((HUB_HOST, 443), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])

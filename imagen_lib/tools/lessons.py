"""Small helpers the lesson notebooks share: smoke mode, showing library code, checking exercises.

- `SMOKE`: True when the environment variable IMAGEN_SMOKE is "1". CI sets it so that the
  long lessons (3, 5 to 8) run in seconds: they then shrink data, steps and sample counts.
  The short lessons ignore it: CI runs them in full and compares their printed outputs.
- `show_source(obj)`: display a function's or class's code straight from the library, so
  a lesson never carries a copy that could drift from what actually runs.
- `check(...)`: the answer cell of an exercise: says plainly whether the learner got it.
- `shipped_cascade()`: the pretrained cascade in `data/`, trained on a CPU by
  `python -m imagen_lib train --preset cpu`.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from imagen_lib.cascade import default_device
from imagen_lib.checkpoint import load_imagen
from imagen_lib.plumbing.files import SHIPPED_CASCADES

SMOKE = os.environ.get("IMAGEN_SMOKE") == "1"


def smoke_or(normal, smoke):
    """`smoke` in smoke mode (CI), else `normal`: for step counts, sample counts, data sizes."""
    return smoke if SMOKE else normal


def show_source(obj) -> None:
    """Display the source of a library function or class, with syntax highlighting."""
    from IPython.display import Markdown, display

    obj = inspect.unwrap(obj)  # see through decorators such as @torch.no_grad()
    path = Path(inspect.getsourcefile(obj)).resolve()
    package = Path(__file__).resolve().parent.parent  # imagen_lib/
    name = f"imagen_lib/{path.relative_to(package)}" if path.is_relative_to(package) else path.name
    # A fenced Markdown block: highlighted in Jupyter, Colab and on GitHub, and small on disk.
    display(Markdown(f"```python\n# {name}\n{inspect.getsource(obj)}```"))


def check(passed: bool, success: str = "Correct!", hint: str = "Not yet.") -> bool:
    """Print whether an exercise is solved; returns `passed` so a test can assert on it."""
    print(("✅ " + success) if passed else ("❌ " + hint))
    return bool(passed)


def shipped_cascade(device=None, name: str = "mnist"):
    """A pretrained cascade from `data/` ("mnist", "scenes" or "colour"), EMA weights, to sample."""
    if name not in SHIPPED_CASCADES:
        raise ValueError(f"no shipped cascade {name!r}: choose one of {list(SHIPPED_CASCADES)}")
    return load_imagen(SHIPPED_CASCADES[name], weights="ema", device=device or default_device())

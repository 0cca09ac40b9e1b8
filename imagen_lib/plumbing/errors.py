"""Plumbing, not a lesson: the library's errors, one small hierarchy, each carrying a hint.

Every error the library diagnoses itself is an `ImagenError`: a `problem` (what is wrong, in
the library's own terms) and a `hint` (what to do about it). A hint names settings as
Python does (`text_encoder`, `out`), never as a command-line flag: a notebook user calling
`Trainer.train()` has no `--out`. The settings a hint asks for travel in `settings`, so the
command line (tools/cli.py) can say the same thing in its own flags.

Each kind also inherits the built-in exception Python code would expect for it, so
`except ValueError` keeps working:
    ImagenError
    ├── BadSetting   (ValueError)    a value or a combination of values that cannot work
    ├── BadFile      (ValueError)    a damaged file, or a file of the wrong kind
    ├── Stopped      (RuntimeError)  work that cannot go on: diverged, folder in use
    └── Unavailable  (RuntimeError)  an encoder or dataset neither on disk nor downloadable

A file holding what imagen_lib never writes gets one error, built in one place (`damaged`).
"""

from __future__ import annotations

from pathlib import Path


class ImagenError(Exception):
    """An error the library diagnosed: the problem, and a hint on what to do."""

    def __init__(self, problem: str, hint: str = "", **settings: object):
        self.problem, self.hint, self.settings = problem, hint, settings
        super().__init__(f"{problem}: {hint}" if hint else problem)


class BadSetting(ImagenError, ValueError):
    """A setting, an argument or a combination of them that cannot work."""


class BadFile(ImagenError, ValueError):
    """A file that is damaged, edited, or not the kind that was asked for."""


class Stopped(ImagenError, RuntimeError):
    """Work that cannot go on: training diverged, a run folder in use, a process gone."""


class Unavailable(ImagenError, RuntimeError):
    """Something the work needs that is neither on this machine nor downloadable (offline)."""


def damaged(path: str | Path, problem: str, fix: str) -> BadFile:
    """The error for a file holding what imagen_lib never writes: damaged, or edited by hand.

    `problem` follows the file's name ("lacks the entries config"); `fix` says what to use
    instead ("use another checkpoint").
    """
    return BadFile(f"{path} {problem}", f"the file is damaged or was edited; {fix}")

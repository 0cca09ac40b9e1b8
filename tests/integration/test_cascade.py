"""Tests of the Imagen cascade (imagen_lib.cascade) and its checkpoints (imagen_lib.checkpoint).

The cascades are tiny (8 -> 16 -> 32 pixels, 16 channels, 50 timesteps) and untrained:
these tests check the plumbing, not image quality. Where the output must depend on the
weights (seeding, save/load), the weights are randomised first, because a fresh network
predicts exactly zero noise whatever it is given.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from conftest import (
    base_network_config,
    randomize_parameters,
    sr_network_config,
    tiny_cascade_config,
)

import imagen_lib.cascade
import imagen_lib.diffusion
from imagen_lib import Imagen, ImagenConfig, StageConfig
from imagen_lib.checkpoint import load_imagen, read_checkpoint, save_imagen
from imagen_lib.plumbing.errors import BadSetting
from imagen_lib.plumbing.files import SHIPPED_CHECKPOINT
from imagen_lib.plumbing.plans import SamplingPlan
from imagen_lib.text import TextEncoder, build_tiny_t5

PROMPTS = ["7", "a handwritten seven"]
SIZES = {2: [8, 16], 3: [8, 16, 32]}


def sample_fast(model, prompts=PROMPTS, **options):
    """Sampling with 5 DDIM steps: enough to run every code path, quick on a CPU."""
    options = {"sampler": "ddim", "steps": 5, **options}
    return model.sample(prompts, **options)


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------


def rectangular_cascade(tiny_encoder, **stage_overrides) -> Imagen:
    """8x16 -> 16x32: the shape of a scene of two digits side by side, at tiny sizes."""
    torch.manual_seed(0)
    stage_overrides = {"timesteps": 50, **stage_overrides}
    stages = [
        StageConfig(image_size=(8, 16), network=base_network_config(), **stage_overrides),
        StageConfig(image_size=(16, 32), network=sr_network_config(8), **stage_overrides),
    ]
    config = ImagenConfig(stages=stages, channels=1, text_encoder="tiny-t5")
    return randomize_parameters(Imagen(config, tiny_encoder))


def test_a_rectangular_cascade_samples_trains_and_saves(tiny_encoder, tmp_path):
    model = rectangular_cascade(tiny_encoder)
    images = sample_fast(model)
    assert [tuple(x.shape) for x in images] == [(2, 1, 8, 16), (2, 1, 16, 32)]
    assert all(x.abs().max() <= 1 for x in images)
    batch = torch.rand(2, 1, 16, 32) * 2 - 1
    text, mask = model.encode_text(PROMPTS)
    for stage in (0, 1):
        loss = model.loss(stage, batch, text, mask, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"\(batch, 1, 16, 32\)"):
        model.loss(0, batch.transpose(-1, -2), text, mask)
    path = tmp_path / "rectangular.pt"
    save_imagen(model, path)
    again = load_imagen(path, text_encoder=tiny_encoder)
    assert again.config == model.config and again.config.stages[1].image_size == (16, 32)
    assert all(torch.equal(a, b) for a, b in zip(sample_fast(again), images))
    json.loads(json.dumps(model.config.to_dict()))  # a JSON-able config


def test_a_square_config_is_written_as_before():
    """Square sizes stay plain numbers in files, so older files and readers see no change."""
    values = tiny_cascade_config().to_dict()
    assert [stage["image_size"] for stage in values["stages"]] == [8, 16]
    assert ImagenConfig.from_dict(json.loads(json.dumps(values))) == tiny_cascade_config()


@pytest.mark.parametrize(
    "sizes, message",
    [
        ([(8, 16), (16, 16)], "must strictly increase through the cascade, got 8x16, 16x16"),
        ([(8, 16, 2), (16, 32)], "image_size must be int | tuple"),
        ([(8, 13), (16, 32)], "8x13 must have sides divisible by 2"),
    ],
)
def test_bad_rectangular_sizes_are_one_clear_error(sizes, message):
    with pytest.raises((TypeError, ValueError), match=message.replace("|", r"\|")):
        # a stage checks its own size; the cascade, that the sizes grow
        stages = [
            StageConfig(image_size=sizes[0], network=base_network_config(), timesteps=50),
            StageConfig(image_size=sizes[1], network=sr_network_config(8), timesteps=50),
        ]
        ImagenConfig(stages=stages, text_encoder="tiny-t5")


def test_the_shipped_cascade_samples_exactly_the_images_it_did_before_sizes_could_be_rectangular():
    """tests/reference/shipped_samples.pt was sampled from data/imagen_mnist_cpu.pt before
    `image_size` took (height, width); the same prompts and seed must give the same images."""
    reference = torch.load(
        os.path.join(os.path.dirname(os.path.dirname(__file__)), "reference", "shipped_samples.pt"),
        weights_only=True,
    )
    model = load_imagen(SHIPPED_CHECKPOINT, weights="ema", device="cpu")
    images = model.sample(reference["prompts"], seed=reference["seed"])
    # float32 sums taken in another order (another thread count, another CPU) drift by about
    # 1e-5 over the sampler's hundreds of network calls; any real change moves pixels by 1e-2
    # or more, so 1e-3 tells the two apart.
    for now, before in zip(images, reference["images"], strict=True):
        torch.testing.assert_close(now, before, atol=1e-3, rtol=0)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_predict_x0_and_eps_decodes_with_the_stages_own_prediction(make_cascade, prediction):
    model = make_cascade(num_stages=2, prediction=prediction)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 8, 8, generator=generator) * 2 - 1
    noise = torch.randn(3, 1, 8, 8, generator=generator)
    t = torch.tensor([3, 25, 49])
    # Written out from the definitions (Ho et al. 2020; Salimans & Ho 2022), not the library's.
    abar = model.schedules[0].alphas_cumprod[t].float().view(3, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    v = abar.sqrt() * noise - (1 - abar).sqrt() * x0
    output = noise if prediction == "eps" else v
    x0_hat, eps_hat = model.predict_x0_and_eps(0, x_t, t, output)
    torch.testing.assert_close(x0_hat, x0, atol=1e-3, rtol=0)
    torch.testing.assert_close(eps_hat, noise, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="stage must be an index from 0 to 1"):
        model.predict_x0_and_eps(2, x_t, t, output)


@pytest.mark.parametrize("num_stages", [2, 3])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sample_returns_every_stage_in_range(num_stages, channels, sampler, make_cascade):
    """One (B, C, S_k, S_k) tensor per stage, all in [-1, 1], with either sampler."""
    model = randomize_parameters(make_cascade(num_stages, channels))
    outputs = sample_fast(model, sampler=sampler)
    assert len(outputs) == num_stages
    for images, size in zip(outputs, SIZES[num_stages]):
        assert images.shape == (len(PROMPTS), channels, size, size)
        assert torch.isfinite(images).all()
        assert images.min() >= -1 and images.max() <= 1


def test_sample_restores_training_mode(make_cascade):
    """Sampling switches to eval mode and back, so a training loop can sample mid-run."""
    model = make_cascade(2)
    model.train()
    sample_fast(model, prompts=["1"])
    assert model.training
    model.eval()
    sample_fast(model, prompts=["1"])
    assert not model.training


def test_same_seed_same_samples_other_seed_other_samples(make_cascade):
    model = randomize_parameters(make_cascade(3))
    first = sample_fast(model, seed=0)
    again = sample_fast(model, seed=0)
    other = sample_fast(model, seed=1)
    for a, b, c in zip(first, again, other):
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)


def test_low_res_conditioning_is_noised_once_per_stage(make_cascade, monkeypatch):
    """Conditioning augmentation at sampling: noise the upsampled image once per SR stage, then
    hand the very same conditioning image (and level) to the network at every denoising step."""
    model = randomize_parameters(make_cascade(3))
    steps = 5

    augment_calls = []
    original_augment = model.augment_low_res

    def counting_augment(stage, low_res, level, noise):
        result = original_augment(stage, low_res, level, noise)
        augment_calls.append((stage, result.clone()))
        return result

    monkeypatch.setattr(model, "augment_low_res", counting_augment)

    seen = {1: [], 2: []}  # stage -> [(low_res, augmentation_level)] for each network call
    for stage in (1, 2):
        network = model.networks[stage]
        original_forward = network.forward

        def recording_forward(
            x,
            t,
            text,
            text_mask,
            low_res,
            augmentation_level,
            text_dropped=None,
            _forward=original_forward,
            _stage=stage,
        ):
            seen[_stage].append((low_res.clone(), augmentation_level.clone()))
            return _forward(
                x, t, text, text_mask, low_res, augmentation_level, text_dropped=text_dropped
            )

        monkeypatch.setattr(network, "forward", recording_forward)

    sample_fast(model, steps=steps)

    assert [stage for stage, _ in augment_calls] == [1, 2]  # once per SR stage, not per step
    expected_level = round(
        model.config.stages[1].sampling_augmentation * (model.config.stages[1].timesteps - 1)
    )
    for stage, augmented in augment_calls:
        calls = seen[stage]
        assert len(calls) == steps  # one (guidance-doubled) network call per step
        for low_res, level in calls:
            # Inside guidance the batch is doubled: [conditional rows, unconditional rows].
            assert torch.equal(low_res, augmented.repeat(2, 1, 1, 1))
            assert level.tolist() == [expected_level] * 2 * len(PROMPTS)


def test_augmentation_level_zero_conditions_on_the_clean_upsampled_image(make_cascade, monkeypatch):
    """At level 0 the conditioning image is (almost) the previous stage's output, upsampled."""
    model = randomize_parameters(make_cascade(2))
    captured = []
    original = model.augment_low_res
    monkeypatch.setattr(
        model, "augment_low_res", lambda *args: captured.append(args) or original(*args)
    )
    outputs = sample_fast(model, augmentation_level=0.0)
    stage, low_res, level, noise = captured[0]
    assert level.tolist() == [0, 0]
    assert torch.equal(low_res, outputs[0])  # the base stage's images are what gets upsampled


# ---------------------------------------------------------------------------------------
# Training loss
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_loss_of_every_stage_is_finite_and_trains_only_that_stage(
    channels, prediction, make_cascade
):
    model = make_cascade(3, channels, prediction=prediction)
    torch.manual_seed(0)
    images = torch.rand(2, channels, 32, 32) * 2 - 1
    text, mask = model.encode_text(PROMPTS)
    for stage in range(3):
        model.zero_grad(set_to_none=True)
        loss = model.loss(stage, images, text, mask)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        for index, network in enumerate(model.networks):
            grads = [p.grad for p in network.parameters()]
            if index == stage:
                assert any(g is not None and g.abs().sum() > 0 for g in grads)
                assert all(torch.isfinite(g).all() for g in grads if g is not None)
            else:
                assert all(g is None for g in grads), (
                    f"stage {stage}'s loss reached network {index}"
                )


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


def test_bad_prompts_raise(make_cascade):
    model = make_cascade(2)
    with pytest.raises(ValueError, match="prompt list is empty"):
        model.sample([])
    with pytest.raises(TypeError, match="not a string"):
        model.sample(["7", 7])
    with pytest.raises(TypeError, match="wrap it as"):
        model.sample("7")


def test_bad_sampling_options_raise(make_cascade):
    model = make_cascade(2)
    with pytest.raises(ValueError, match="must be between 0 and 100"):
        model.sample(PROMPTS, guidance_weight=-1.0)
    with pytest.raises(ValueError, match="must be between 0 and 100"):
        model.sample(PROMPTS, guidance_weight=[3.0, -0.5])
    with pytest.raises(ValueError, match=r"one per stage \(2\)"):
        model.sample(PROMPTS, guidance_weight=[1.0, 2.0, 3.0])
    for percentile in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"percentile must be in \(0, 1\]"):
            model.sample(PROMPTS, percentile=percentile)
    with pytest.raises(ValueError, match="thresholding must be one of"):
        model.sample(PROMPTS, thresholding="clip")
    with pytest.raises(ValueError, match="sampling_augmentation is a fraction"):
        model.sample(PROMPTS, augmentation_level=1.5)
    with pytest.raises(
        ValueError, match="stage 0: sampling_steps must be between 1 and its schedule's 50, got 0"
    ):
        model.sample(PROMPTS, steps=0)  # not "the default number of steps"
    with pytest.raises(ValueError, match="stage 1: sampling_steps must .* got 51"):
        model.sample(PROMPTS, steps=[5, 51])
    with pytest.raises(ValueError, match=r"one sampling_steps, or one per stage \(2\)"):
        model.sample(PROMPTS, steps=[5, 5, 5])
    with pytest.raises(ValueError, match="stage 1: sampler must be one of"):
        model.sample(PROMPTS, sampler=["ddim", "euler"])
    with pytest.raises(ValueError, match="eta only applies to the ddim sampler"):
        model.sample(PROMPTS, sampler=["dpm++", "ddim"], eta=1.0)  # refused before any stage runs
    for weight in (100.5, 1e39):  # far beyond any useful weight: saturated, then NaN samples
        with pytest.raises(ValueError, match="must be between 0 and 100"):
            model.sample(PROMPTS, guidance_weight=weight)


def test_bad_training_batches_raise(make_cascade):
    model = make_cascade(2, channels=1)
    text, mask = model.encode_text(PROMPTS)
    with pytest.raises(ValueError, match=r"\(batch, 1, 16, 16\)"):
        model.loss(0, torch.zeros(2, 1, 32, 32), text, mask)  # wrong size
    with pytest.raises(ValueError, match=r"\(batch, 1, 16, 16\)"):
        model.loss(0, torch.zeros(2, 3, 16, 16), text, mask)  # wrong channel count
    for stage in (2, -1):
        with pytest.raises(ValueError, match="stage must be an index from 0 to 1"):
            model.loss(stage, torch.zeros(2, 1, 16, 16), text, mask)


def test_bad_configs_raise():
    base = StageConfig(image_size=16, network=base_network_config(), timesteps=50)
    sr = StageConfig(image_size=16, network=sr_network_config(8), timesteps=50)
    with pytest.raises(ValueError, match="strictly increase"):
        ImagenConfig(stages=[base, sr])  # 16 -> 16
    with pytest.raises(ValueError, match="strictly increase"):
        # 32 -> 16
        ImagenConfig(stages=[StageConfig(image_size=32, network=base_network_config()), sr])
    with pytest.raises(ValueError, match="at least one stage"):
        ImagenConfig(stages=[])
    with pytest.raises(ValueError, match="channels must be 1"):
        ImagenConfig(stages=[base], channels=2)
    with pytest.raises(TypeError, match="stage 0 needs a UNetConfig"):
        ImagenConfig(stages=[StageConfig(image_size=8, network=sr_network_config(8))])
    with pytest.raises(ValueError, match="text_drop_prob"):
        ImagenConfig(stages=[base], text_drop_prob=1.0)
    # a stage checks its own settings, so changing one checks it again
    with pytest.raises(ValueError, match="sampler must be one of"):
        dataclasses.replace(base, sampler="euler")
    with pytest.raises(ValueError, match="sampling_steps must be between 1 and its schedule's 50"):
        dataclasses.replace(base, sampling_steps=51)
    with pytest.raises(
        ValueError, match=r"a guidance interval \(start, end\) needs 0 <= start <= end <= 1"
    ):
        dataclasses.replace(base, guidance_interval=(0.5, 1.2))


def test_each_stage_samples_with_its_own_sampler_and_steps(make_cascade, monkeypatch):
    """Per stage: the config's recommendation by default, one setting for all, or one per stage."""
    model = make_cascade(3).with_stage_settings(
        sampler=["dpm++", "ddim", "ddim"], sampling_steps=[4, 2, 2]
    )
    seen = []
    original = imagen_lib.diffusion.sample
    monkeypatch.setattr(
        imagen_lib.diffusion,
        "sample",
        lambda *a, **k: seen.append((k["sampler"], k["steps"])) or original(*a, **k),
    )
    runs = {
        "own": dict(),
        "one for all": dict(sampler="ddpm", steps=3),
        "one per stage": dict(sampler=["ddim", "dpm++", "ddim"], steps=(3, 2, 1)),
        "later stages": dict(first_stage=1, low_res=torch.zeros(2, 1, 8, 8)),
    }
    expected = {
        "own": [("dpm++", 4), ("ddim", 2), ("ddim", 2)],
        "one for all": [("ddpm", 3)] * 3,
        "one per stage": [("ddim", 3), ("dpm++", 2), ("ddim", 1)],
        "later stages": [("ddim", 2), ("ddim", 2)],
    }
    for name, options in runs.items():
        seen.clear()
        model.sample(PROMPTS, **options)
        assert seen == expected[name], name


def test_a_stage_guides_in_its_own_interval_only_with_its_own_weight(make_cascade, monkeypatch):
    """The recommended interval goes with the recommended weight; a weight you pass guides at
    every step unless you also pass an interval, which then serves every stage."""
    model = make_cascade(2).with_stage_settings(guidance_interval=[(0.3, 0.8), (0.2, 0.6)])
    seen = []
    original = imagen_lib.cascade.classifier_free_guidance
    monkeypatch.setattr(
        imagen_lib.cascade,
        "classifier_free_guidance",
        lambda network, weight, interval, timesteps: (
            seen.append((weight, interval, timesteps))
            or original(network, weight, interval, timesteps)
        ),
    )
    runs = {
        "own": (dict(), [(3.0, (0.3, 0.8), 50), (3.0, (0.2, 0.6), 50)]),
        "a weight": (dict(guidance_weight=2.0), [(2.0, (0.0, 1.0), 50)] * 2),
        "a weight and an interval": (
            dict(guidance_weight=[2.0, 1.0], guidance_interval=(0.1, 0.9)),
            [(2.0, (0.1, 0.9), 50), (1.0, (0.1, 0.9), 50)],
        ),
        "own weights, every step": (dict(guidance_interval=(0, 1)), [(3.0, (0.0, 1.0), 50)] * 2),
    }
    for name, (options, expected) in runs.items():
        seen.clear()
        sample_fast(model, **options)
        assert seen == expected, name
    with pytest.raises(ValueError, match="0 <= start <= end <= 1"):
        model.sample(PROMPTS, guidance_interval=(0.8, 0.3))


def test_a_sampling_plan_holds_one_checked_stage_config_per_stage():
    """Each setting: None (the stage's own), one value for every stage, or one per stage; a
    guidance interval is itself a pair. The plan checks what the run shares on construction."""
    config = tiny_cascade_config(2)
    own = config.sampling_plan()
    assert own.stages == config.stages and own.running == range(0, 2)
    plan = config.sampling_plan(
        sampler=["dpm++", "ddim"], steps=4, guidance_interval=(0.2, 0.6), augmentation_level=0.5
    )
    assert [(stage.sampler, stage.sampling_steps) for stage in plan.stages] == [
        ("dpm++", 4),
        ("ddim", 4),
    ]
    assert all(stage.guidance_interval == (0.2, 0.6) for stage in plan.stages)
    assert all(stage.sampling_augmentation == 0.5 for stage in plan.stages)
    # a weight without an interval guides at every step: its stage's interval went with its own
    weighted = config.sampling_plan(guidance_weight=[2, 1.5])
    assert [stage.guidance_interval for stage in weighted.stages] == [(0.0, 1.0)] * 2
    assert config.sampling_plan(sampler="ddpm") == SamplingPlan.build(config.stages, "ddpm")
    # eta is judged by the stages that run only
    SamplingPlan.build(config.stages, ["dpm++", "ddim"], eta=0.5, first_stage=1)
    with pytest.raises(BadSetting, match="eta only applies to the ddim sampler") as raised:
        SamplingPlan.build(config.stages, ["ddim", "dpm++"], eta=0.5)
    assert raised.value.settings == {"eta": 0, "sampler": "ddim"}
    with pytest.raises(BadSetting, match="comes before first_stage"):
        SamplingPlan(config.stages, first_stage=1, last_stage=0)
    with pytest.raises(BadSetting, match="stage must be an index from 0 to 1"):
        SamplingPlan(config.stages, first_stage=0, last_stage=2)


def test_configs_with_one_sampler_for_every_stage_still_load():
    """Files from before per-stage sampling settings: one sampler and step count for all stages."""
    values = tiny_cascade_config(2).to_dict()
    for stage in values["stages"]:
        del stage["sampler"], stage["sampling_steps"]
    values.update(sampler="dpm++", sampling_steps=7)
    config = ImagenConfig.from_dict(values)
    assert [(stage.sampler, stage.sampling_steps) for stage in config.stages] == [
        ("dpm++", 7),
        ("dpm++", 7),
    ]


# ---------------------------------------------------------------------------------------
# Config and checkpoints
# ---------------------------------------------------------------------------------------


def test_config_round_trips_through_dict_and_json():
    config = tiny_cascade_config(3, channels=3, prediction="v", guidance_interval=(0.25, 0.75))
    assert ImagenConfig.from_dict(config.to_dict()) == config
    # JSON turns tuples into lists; from_dict turns them back.
    assert ImagenConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_save_then_load_gives_identical_samples(make_cascade, tiny_encoder, tmp_path):
    model = randomize_parameters(make_cascade(3), seed=5)
    path = save_imagen(model, tmp_path / "model.pt")
    loaded = load_imagen(path, text_encoder=tiny_encoder)
    assert loaded.config == model.config
    for before, after in zip(sample_fast(model, seed=3), sample_fast(loaded, seed=3)):
        assert torch.equal(before, after)
    # The check can fail: a model with other weights samples something else.
    other = randomize_parameters(make_cascade(3), seed=6)
    assert not torch.allclose(sample_fast(other, seed=3)[-1], sample_fast(loaded, seed=3)[-1])
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic save left no temporary file behind


def test_reading_bad_checkpoint_files_raises_clearly(make_cascade, tmp_path):
    path = save_imagen(make_cascade(2), tmp_path / "model.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="could not be read as a checkpoint"):
        read_checkpoint(truncated)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"a": 1}, foreign)
    with pytest.raises(ValueError, match="not an imagen_lib checkpoint"):
        read_checkpoint(foreign)
    with pytest.raises(ValueError, match="holds no 'ema' weights"):
        load_imagen(path, text_encoder=make_cascade(2).text_encoder, weights="ema")


def test_reading_a_checkpoint_with_missing_entries_names_them(make_cascade, tmp_path):
    payload = read_checkpoint(save_imagen(make_cascade(2), tmp_path / "model.pt"))
    del payload["config"], payload["text_dim"]
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match="lacks the entries config, text_dim"):
        read_checkpoint(tmp_path / "damaged.pt")


def test_a_file_holding_code_is_refused_in_one_line(tmp_path):
    """torch.load(weights_only=True) refuses a pickle that names a function.

    Its advice runs to several lines.
    """
    torch.save({"format": "imagen_lib-checkpoint-v1", "payload": os.system}, tmp_path / "code.pt")
    with pytest.raises(ValueError) as raised:
        read_checkpoint(tmp_path / "code.pt")
    message = str(raised.value)
    assert "contains code or objects that are not plain tensors" in message and "\n" not in message


@pytest.mark.parametrize(
    "where, value",
    [
        (("stages", 0, "timesteps"), "ten"),
        (("stages", 1, "network", "channels"), "16"),
        (("max_text_tokens",), 1.5),
        (("stages", 0, "guidance_weight"), "high"),
    ],
)
def test_a_config_with_a_value_that_is_not_a_number_is_one_line(
    where, value, make_cascade, tiny_encoder, tmp_path
):
    payload = read_checkpoint(save_imagen(make_cascade(2), tmp_path / "model.pt"))
    values = payload["config"]
    for key in where[:-1]:
        values = values[key]
    values[where[-1]] = value
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match="holds an invalid cascade config") as raised:
        load_imagen(tmp_path / "damaged.pt", text_encoder=tiny_encoder)
    assert "\n" not in str(raised.value)


def test_loading_weights_that_do_not_fit_names_a_few_in_one_line(
    make_cascade, tiny_encoder, tmp_path
):
    """torch's own error lists every mismatched tensor.

    Ours names three of each kind and counts them.
    """
    payload = read_checkpoint(save_imagen(make_cascade(2), tmp_path / "model.pt"))
    weights = payload["model"]
    keys = list(weights)
    for key in keys[:5]:
        del weights[key]
    weights[keys[5]] = torch.zeros(3, 3)
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(ValueError) as raised:
        load_imagen(tmp_path / "damaged.pt", text_encoder=tiny_encoder)
    message = str(raised.value)
    assert "\n" not in message and "do not fit" in message
    assert (
        f"5 missing ({keys[0]}, {keys[1]}, {keys[2]}, ...)" in message
        and f"1 of another shape ({keys[5]})" in message
    )


def test_loading_with_an_encoder_of_another_width_raises(make_cascade, tmp_path):
    path = save_imagen(make_cascade(2), tmp_path / "model.pt")
    wider = TextEncoder(str(build_tiny_t5(tmp_path / "t5_48", d_model=48)))
    with pytest.raises(ValueError, match="32-dim embeddings.*48-dim"):
        load_imagen(path, text_encoder=wider)


def test_sampling_from_a_later_stage_super_resolves_given_images(make_cascade):
    """first_stage=1 with low_res runs only the SR stages, on the images it is given."""
    model = randomize_parameters(make_cascade(2))
    full = sample_fast(model, seed=4)
    base_images = full[0]
    sr_only = sample_fast(model, seed=4, first_stage=1, low_res=base_images)
    assert len(sr_only) == 1 and sr_only[0].shape == full[1].shape
    other = sample_fast(model, seed=4, first_stage=1, low_res=-base_images)
    assert not torch.allclose(sr_only[0], other[0])


def test_last_stage_stops_the_cascade_early_with_the_same_images(make_cascade):
    """last_stage=0 returns the base images alone, the very ones the full cascade starts from."""
    model = randomize_parameters(make_cascade(3))
    full = sample_fast(model, seed=5)
    base_only = sample_fast(model, seed=5, last_stage=0)
    assert len(base_only) == 1 and torch.equal(base_only[0], full[0])
    assert torch.equal(sample_fast(model, seed=5, last_stage=1)[1], full[1])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"last_stage": 2}, "stage must be an index"),
        (
            {"first_stage": 1, "low_res": torch.zeros(2, 1, 8, 8), "last_stage": 0},
            "comes before first_stage",
        ),
        ({"first_stage": 1}, "needs low_res"),
        ({"low_res": torch.zeros(2, 1, 8, 8)}, "first_stage=1"),
        ({"first_stage": 1, "low_res": torch.zeros(2, 1, 16, 16)}, r"\(batch, 1, 8, 8\)"),
        (
            {"first_stage": 1, "low_res": torch.zeros(3, 1, 8, 8)},
            "one low-resolution image per prompt",
        ),
        ({"first_stage": 2, "low_res": torch.zeros(2, 1, 8, 8)}, "stage must be an index"),
    ],
)
def test_bad_first_stage_or_low_res_is_a_clear_error(make_cascade, options, message):
    with pytest.raises(ValueError, match=message):
        sample_fast(make_cascade(2), **options)

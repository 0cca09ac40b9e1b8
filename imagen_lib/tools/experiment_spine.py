"""The spine every experiment hangs on: one interface, one preparation step, one sweep.

`python -m imagen_lib experiment NAME` runs the paper's six findings (experiments.py), the
scaling grid (scaling.py) and the embedding probe (probe.py). They measure different
things, but each is an `Experiment`: a name, a typed options dataclass, a `run` that takes
those options and returns the rows it measured (and wrote to OUT/NAME.json), and the table
and plot of its results file. experiment_command.py lists them all in one registry and
builds the command line from their options.

What they share lives here, below all three:
- `prepare`: check the checkpoints and the output folder, load the digit classifier and
  build the `Scorer`, before anything slow starts (the folder is made by the first file
  written into it, so a run refused before then leaves nothing behind);
- `sweep`: the loop the findings' sweeps have in common: for each setting and seed, sample
  (timed), score, keep the first seed's digits as examples, count it on the progress bar.

Rows are TypedDicts, not dataclasses: a row is written to JSON as the dict it is, keys in
the order it was built, so the committed results files (data/results) keep exactly their
keys and layout while the type checker still knows each experiment's columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar

import torch
from tqdm.auto import tqdm

from imagen_lib.data import height_width
from imagen_lib.metrics import Scorer, load_classifier
from imagen_lib.plumbing.files import existing_checkpoint, writable_folder
from imagen_lib.tools import results
from imagen_lib.tools.common import timed
from imagen_lib.tools.drawing import checkpoint_config

if TYPE_CHECKING:  # matplotlib is imported only where a figure is drawn
    from matplotlib.figure import Figure

    from imagen_lib.cascade import ImagenConfig

Options = TypeVar("Options")


# ----- the interface ----------------------------------------------------------------------
@dataclass(frozen=True)
class Experiment(Generic[Options]):
    """One experiment of `python -m imagen_lib experiment NAME`.

    `options` is its frozen options dataclass: the command line passes each option whose
    name is a field, and refuses the others. `run(options)` checks them, measures, writes
    OUT/NAME.json (with its plot, and prints its table) and returns the rows it measured.
    """

    name: str
    options: type[Options]
    run: Callable[[Options], list[Any]]

    def table(self, measured: dict) -> str:
        """The Markdown table of a results file of this experiment (results.KINDS says how)."""
        return results.results_table(measured)

    def plot(self, measured: dict) -> Figure:
        """The figure of a results file of this experiment (results.KINDS says how)."""
        return results.plot_results(measured)


class Scores(TypedDict):
    """What `Scorer` measures of one batch of samples."""

    accuracy: float  # prompt accuracy, the stand-in for CLIP score
    fid: float  # MNIST-FID, the stand-in for FID
    speckle: float  # the share of stray bright pixels near the border


class BindingScores(TypedDict):
    """What `metrics.binding_scores` measures of a group of scenes, and the group's size.

    Shares in [0, 1], NaN where undefined (no scene of the group can show it).
    """

    left: float  # the left slot's digit right
    right: float
    scene: float  # both right
    swap: float  # both drawn, each in the other's slot
    order: float  # in the asked order, among scenes with both digits right as a set
    order_count: int  # how many scenes that is
    pair: float  # both digits right as a set, in either order
    count: int  # scenes in the group


class SweepRow(Scores):
    """The columns every sweep row has besides its setting's."""

    seed: int
    seconds: float  # sampling time of this (setting, seed)


# ----- the preparation step ---------------------------------------------------------------
@dataclass(frozen=True)
class Prepared:
    """What `prepare` hands an experiment: checked paths, and a scorer if it scores images."""

    out: Path  # the output folder, checked to be writable (made when a result is written)
    checkpoints: list[Path]  # each exists
    scorer: Scorer | None  # None: the experiment scores no images (the probe)
    earlier: object = None  # what `read_earlier` found in the output folder


def prepare(
    out: str | Path,
    checkpoints: Sequence[str | Path | None] = (),
    num_samples: int | None = None,
    classifier: str | Path | None = None,
    scored_as: ImagenConfig | None = None,
    base_resolution: bool = False,
    read_earlier: Callable[[Path], object] | None = None,
) -> Prepared:
    """Check the paths, load the classifier, read earlier results, build the scorer.

    `checkpoints` are checked to exist (None: the shipped cascade). With `num_samples`, the
    classifier is loaded (None: the shipped one) and a `Scorer` of that many samples built
    for images of `scored_as` (default: the first checkpoint's cascade): its channels, and
    with `base_resolution` real digits shrunk to its base stage's height, as base samples
    are. `read_earlier(out)` reads and checks what an earlier run left in the output folder
    (kept as `earlier`). Every check comes first: a bad path or a refused earlier file fails
    before the scorer reads a digit. The output folder is not made here: an experiment may
    still refuse its options after this.
    """
    paths = [existing_checkpoint(checkpoint) for checkpoint in checkpoints]
    folder = writable_folder(out)
    scorer = digit_classifier = None
    if num_samples is not None:
        digit_classifier = load_classifier(classifier)  # "" is refused, None is the shipped one
    earlier = read_earlier(folder) if read_earlier is not None else None
    if digit_classifier is not None:
        if scored_as is None:  # the config alone: the networks and the encoder load later
            scored_as = checkpoint_config(paths[0])
        height = height_width(scored_as.stages[0].image_size)[0]
        scorer = Scorer.build(
            num_samples,
            digit_classifier,
            scored_as.channels,
            degraded_to=height if base_resolution else None,
        )
    return Prepared(folder, paths, scorer, earlier)


# ----- the sweep --------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepSetting:
    """One setting a sweep measures: what its rows record, and how to sample it."""

    columns: dict[str, object]  # the row's first columns, naming the setting
    label: str  # its examples' title in NAME_examples.png
    prompts: list[str]  # what it draws, one prompt per sample
    sample: Callable[[list[str], int], torch.Tensor]  # (prompts, seed) -> images (N, C, H, W)


def keep_examples(
    examples: dict | None, label: str, images: torch.Tensor, first_seed: bool
) -> None:
    """Keep a setting's first ten samples (the digits 0 to 9) for `plot_examples`.

    Only the first seed's samples are kept.
    """
    if examples is not None and first_seed:
        examples[label] = images[:10].clone()


def progress_bar(total: int, name: str, show: bool) -> tqdm:
    return tqdm(total=total, desc=name, disable=not show, dynamic_ncols=True)


def sweep(
    settings: Sequence[SweepSetting],
    scorer: Scorer,
    seeds: Sequence[int],
    name: str,
    examples: dict | None = None,
    progress: bool = True,
    seeds_first: bool = False,
) -> list[dict]:
    """One row per (setting, seed): the setting's columns, the seed, its scores, its seconds.

    Settings in order, each with every seed; `seeds_first` runs every setting of a seed
    before the next seed instead, which only changes the order of the rows (each sample
    is seeded by its own seed). Only sampling is timed, not scoring.
    """
    if seeds_first:
        runs = [(setting, seed) for seed in seeds for setting in settings]
    else:
        runs = [(setting, seed) for setting in settings for seed in seeds]
    rows = []
    with progress_bar(len(runs), name, progress) as bar:
        for setting, seed in runs:
            images, seconds = timed(lambda: setting.sample(setting.prompts, seed))
            scores = scorer(images, setting.prompts)
            rows.append({**setting.columns, "seed": seed, **scores, "seconds": seconds})
            keep_examples(examples, setting.label, images, seed == seeds[0])
            bar.update(1)
    return rows

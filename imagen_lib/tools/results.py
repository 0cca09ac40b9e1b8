"""An experiment's results: summary tables, JSON files and plots (lesson 9, the README).

`experiments` measures and returns one row per (setting, seed); this module turns rows
into the Markdown tables quoted in the README (mean ± standard deviation over seeds),
saves and loads them as `NAME.json` with the settings and machine that produced them, and
draws each experiment's figure and its grid of example samples.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from imagen_lib.plumbing.files import atomic_write_text


def summarize(rows: list[dict], keys: Sequence[str]) -> list[dict]:
    """Group rows by `keys` (in first-seen order).

    Every numeric column becomes its mean and sample std over seeds.
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in keys), []).append(row)
    summary = []
    for group_key, members in groups.items():
        entry = dict(zip(keys, group_key), seeds=len(members))
        for column, value in members[0].items():
            if (
                column in keys
                or column == "seed"
                or isinstance(value, bool)
                or not isinstance(value, (int, float))
            ):
                continue
            values = [member[column] for member in members]
            if any(math.isnan(value) for value in values):
                # a measurement that was not defined for one seed (NaN) is not defined overall
                entry[column] = entry[f"{column}_std"] = math.nan
                continue
            entry[column] = statistics.fmean(values)
            entry[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary


def markdown_table(summary: list[dict], keys: Sequence[str], columns: dict[str, str]) -> str:
    """A Markdown table: the `keys`, then each column (name -> header) as mean ± std."""
    headers = list(keys) + list(columns.values())
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for entry in summary:
        cells = [str(entry[key]) for key in keys]
        for column in columns:
            mean, std = entry[column], entry[f"{column}_std"]
            scale = 100 if column in PERCENT else 1
            digits = 1 if column == "accuracy" else 2 if abs(mean * scale) < 10 else 1
            cells.append(
                f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"
                if entry["seeds"] > 1
                else f"{mean * scale:.{digits}f}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


ACCURACY, FID = {"accuracy": "prompt accuracy (%)"}, {"fid": "MNIST-FID"}
# the scaling experiment's summary per model: scene accuracy (%) per evaluation set, the
# swap rates (%) of held-out pairs and of training relation prompts, and the per-slot
# MNIST-FID of the training set
SCALING_HEADLINE = (
    "training",
    "held-out pairs",
    "held-out phrasings",
    "held-out numbers",
    "held-out swaps",
    "relation swaps",
    "fid",
)
# the embedding probe's measures (tools/probe.py), per encoder, reader width, set and group
PROBE_MEASURES = {
    "slot": "slot accuracy (%)",
    "scene": "scene accuracy (%)",
    "pair": "pair accuracy, any order (%)",
    "swap": "swap rate (%)",
    "order": "order accuracy (%)",
}
# shares, shown in percent
PERCENT = (
    "accuracy", "speckle", "scene", "swap", "left", "right", *SCALING_HEADLINE[:-1],
    *PROBE_MEASURES, "held_out_accuracy", "digits", "colours", "colour_swap",
)  # fmt: skip
# experiment -> (the columns that name a setting, the measured columns shown as mean ± std)
TABLES = {
    "guidance": (["guidance", "thresholding"], {**ACCURACY, **FID, "seconds": "seconds"}),
    "augmentation": (["base_guidance", "sr_stage", "level"], {**ACCURACY, **FID}),
    "language": (["encoder", "phrasing"], ACCURACY),
    "conditioning": (["conditioning", "phrasing"], ACCURACY),
    "sampler": (
        ["sampler", "steps"],
        {**ACCURACY, **FID, "speckle": "speckle (%)", "seconds_per_grid": "seconds per 64 images"},
    ),
    "prediction": (
        ["prediction", "sampler", "steps", "thresholding"],
        {**ACCURACY, **FID, "speckle": "speckle (%)", "seconds_per_grid": "seconds per 64 images"},
    ),
    "scaling": (
        ["model", "guidance", "set", "category"],
        {"scene": "scene accuracy (%)", "swap": "swap rate (%)"},
    ),
    "probe": (["encoder", "width", "set", "group"], PROBE_MEASURES),
    # `evaluate --save`: a cascade's scores per setting (single digits, or scenes per set)
    "evaluation": (
        ["guidance", "thresholding"],
        {**ACCURACY, **FID, "speckle": "speckle (%)", "held_out_accuracy": "held-out (%)"},
    ),
    "scene_evaluation": (
        ["guidance", "thresholding", "set", "category", "phrasing"],
        {
            "scene": "scene accuracy (%)",
            "swap": "swap rate (%)",
            "order": "order accuracy (%)",
            "pair": "pair accuracy, any order (%)",
        },
    ),
    "colour_scene_evaluation": (
        ["guidance", "thresholding", "set", "category", "phrasing"],
        {
            "scene": "scene accuracy, digits and colours (%)",
            "digits": "digit accuracy (%)",
            "colours": "colour accuracy (%)",
            "colour_swap": "colour swap rate (%)",
            "swap": "digit swap rate (%)",
        },
    ),
}
# columns a row needs beyond its table's, for the tables and plots drawn from it
EXTRA_COLUMNS = {
    "language": ["seen"],
    "conditioning": ["seen"],
    "probe": ["count", "parameters"],
}


# experiments that compare models phrasing by phrasing
PHRASING_KEYS = {"language": "encoder", "conditioning": "conditioning"}


def seen_and_unseen(rows: list[dict], key: str) -> list[dict]:
    """Phrasing rows averaged over the phrasings of each kind.

    One row per (model named by `key`, seen, seed).
    """
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault((row[key], row["seen"], row["seed"]), []).append(row["accuracy"])
    return [
        {
            key: name,
            "phrasings": "seen" if seen else "unseen",
            "seed": seed,
            "accuracy": statistics.fmean(values),
        }
        for (name, seen, seed), values in groups.items()
    ]


def results_table(results: dict) -> str:
    """The Markdown table of an experiment's results.

    For phrasing experiments, also seen vs unseen phrasings on average.
    """
    keys, columns = TABLES[results["experiment"]]
    if results["experiment"] == "scaling":
        return scaling_table(results["rows"])
    if results["experiment"] == "probe":
        return probe_table(results)
    table = markdown_table(summarize(results["rows"], keys), keys, columns)
    key = PHRASING_KEYS.get(results["experiment"])
    if key is not None:
        by_kind = summarize(seen_and_unseen(results["rows"], key), [key, "phrasings"])
        table += "\n\n" + markdown_table(by_kind, [key, "phrasings"], columns)
    return table


def scaling_summary(rows: list[dict]) -> list[dict]:
    """One record per (model, guidance, seed) with the SCALING_HEADLINE columns.

    Each evaluation set's scene accuracy over all its categories; the swap rate of the
    held-out pairs (a model that learned which digits go together, not where the words put
    them, draws an unseen pair as its trained reverse) and of the training set's relation
    prompts; and the mean of the two slots' MNIST-FID on the training set.
    """
    records: dict[tuple, dict] = {}
    for row in rows:
        record = records.setdefault(
            (row["model"], row["guidance"], row["seed"]),
            {"model": row["model"], "guidance": row["guidance"], "seed": row["seed"]},
        )
        if (row["category"], row.get("phrasing", "all")) == ("all", "all"):
            record[row["set"]] = row["scene"]
            if row["set"] == "training":
                record["fid"] = (row["fid_left"] + row["fid_right"]) / 2
            if row["set"] == "held-out pairs":
                record["held-out swaps"] = row["swap"]
        if row["set"] == "training" and row["category"] == "relation":
            record["relation swaps"] = row["swap"]
    return list(records.values())


def scaling_table(rows: list[dict]) -> str:
    """The scaling experiment's tables: the summary per model, then every category."""
    headers = {
        "training": "training (%)",
        "held-out pairs": "held-out pairs (%)",
        "held-out phrasings": "held-out phrasings (%)",
        "held-out numbers": "held-out numbers (%)",
        "held-out swaps": "swaps, held-out pairs (%)",
        "relation swaps": "swaps, training relations (%)",
        "fid": "MNIST-FID",
    }
    headline = markdown_table(
        summarize(scaling_summary(rows), ["model", "guidance"]), ["model", "guidance"], headers
    )
    keys, columns = TABLES["scaling"]
    by_category = [row for row in rows if row.get("phrasing", "all") == "all"]
    detail = markdown_table(summarize(by_category, keys), keys, columns)
    return (
        "Scene accuracy per evaluation set, swap rates of the held-out pairs and of the "
        "training set's relation prompts, MNIST-FID (mean of the two slots):\n\n"
        + headline
        + "\n\nPer category:\n\n"
        + detail
    )


def plot_scaling(results: dict):
    """The paper's Figure 4 in miniature: scene accuracy against MNIST-FID, a curve per model.

    One point per guidance weight; left, training prompts; right, held-out digit pairs (the
    binding test). Up and to the left is better.
    """
    import matplotlib.pyplot as plt

    summary = summarize(scaling_summary(results["rows"]), ["model", "guidance"])
    models = list(dict.fromkeys(entry["model"] for entry in summary))
    colours = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for axis, column in zip(axes, ("training", "held-out pairs")):
        for index, model in enumerate(models):
            entries = [e for e in summary if e["model"] == model]
            axis.errorbar(
                [e["fid"] for e in entries],
                [100 * e[column] for e in entries],
                xerr=[e["fid_std"] for e in entries],
                yerr=[100 * e[f"{column}_std"] for e in entries],
                marker="os^vD<>ph*"[index % 10],
                color=colours(index),
                capsize=2,
                label=model,
            )
        axis.axhline(1, color="grey", linewidth=0.8, linestyle=":")
        axis.set_xlabel("MNIST-FID, mean of the two digits (lower is better)")
        axis.set_title(f"{column} prompts", fontsize=10)
    axes[0].set_ylabel("scene accuracy: both digits right (%)")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    weights = ", ".join(f"{w:g}" for w in results["settings"]["recipe"]["guidance"])
    figure.suptitle(
        f"Scaling in miniature: one point per guidance weight ({weights}); chance is 1%",
        fontsize=11,
    )
    figure.tight_layout()
    return figure


def probe_by_set(rows: list[dict], column: str) -> list[dict]:
    """One record per (encoder, width, seed): `column` of each set, over all its captions."""
    records: dict[tuple, dict] = {}
    for row in rows:
        if row["group"] == "all":
            key = (row["encoder"], row["width"], row["seed"])
            record = records.setdefault(key, dict(zip(("encoder", "width", "seed"), key)))
            record[row["set"]] = row[column]
    return list(records.values())


# the probe's headline: order accuracy on these (set, group) pairs
PROBE_HEADLINE = (
    ("training", "all"),
    ("held-out phrasings", "synonym"),
    ("held-out phrasings", "new word"),
    ("held-out phrasings", "inverted"),
    ("held-out pairs", "all"),
)


def probe_headline(results: dict, width: int) -> str:
    """The probe's finding in one table: conditional order accuracy (%, mean ± std over
    seeds) of each encoder's reader of `width`, per PROBE_HEADLINE set, with the word-blind
    baselines as the last two rows."""
    rows = [row for row in results["rows"] if row["width"] == width]
    parameters = {row["encoder"]: row["parameters"] for row in rows}
    header = " | ".join(group if group != "all" else name for name, group in PROBE_HEADLINE)
    lines = [f"| encoder | parameters | {header} |", "|---" * (2 + len(PROBE_HEADLINE)) + "|"]
    for encoder, count in parameters.items():
        cells = []
        for name, group in PROBE_HEADLINE:
            chosen = [
                r for r in rows if (r["encoder"], r["set"], r["group"]) == (encoder, name, group)
            ]
            entry = summarize(chosen, ["encoder"])[0]
            cells.append(f"{100 * entry['order']:.1f} ± {100 * entry['order_std']:.1f}")
        lines.append(f"| {encoder} | {count / 1e6:.1f}M | " + " | ".join(cells) + " |")
    baselines = results["settings"]["baselines"]
    for reader, label in (
        ("first named", "first named on the left"),
        ("trained layout", "trained layout"),
    ):
        cells = [f"{100 * baselines[name][group][reader]:.1f}" for name, group in PROBE_HEADLINE]
        lines.append(f"| word-blind: {label} | - | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def probe_table(results: dict) -> str:
    """The probe's tables: the encoders, order and pair accuracy per set, every group, and
    the word-blind baselines to read them against."""
    rows, settings = results["rows"], results["settings"]
    sets = list(dict.fromkeys(row["set"] for row in rows))
    encoders = [
        "| encoder | loaded | width D | parameters | captions cut |",
        "|---|---|---|---|---|",
    ]
    for entry in settings.get("encoders", []):
        encoders.append(
            f"| {entry['label']} | {entry['description']} | {entry['dim']} | "
            f"{entry['parameters']:,} | {entry['truncated']} |"
        )
    keys = ["encoder", "width"]
    by_set = {name: f"{name} (%)" for name in sets}
    parts = [
        "Encoders probed:",
        "\n".join(encoders),
        "Conditional order accuracy (both digits named, in the right order), per set:",
        markdown_table(summarize(probe_by_set(rows, "order"), keys), keys, by_set),
        "Pair accuracy (both slots right), per set:",
        markdown_table(summarize(probe_by_set(rows, "scene"), keys), keys, by_set),
        "Every set and group (count: captions):",
        markdown_table(
            summarize(rows, [*TABLES["probe"][0], "count"]),
            [*TABLES["probe"][0], "count"],
            PROBE_MEASURES,
        ),
        "Word-blind baselines (order accuracy of readers that see only which digits are named):",
        "\n".join(
            [
                "| set | group | first named on the left (%) | trained layout (%) |",
                "|---|---|---|---|",
            ]
            + [
                f"| {name} | {group} | {100 * scores['first named']:.1f} | "
                f"{100 * scores['trained layout']:.1f} |"
                for name, by_group in settings["baselines"].items()
                for group, scores in by_group.items()
            ]
        ),
    ]
    return "\n\n".join(parts)


def plot_probe(results: dict):
    """Conditional order accuracy per encoder, a curve per set, a panel per reader width.

    Error bars: the spread over seeds. Dashed and dotted lines of each set's colour: its
    word-blind baselines (the first-named digit put on the left; the trained layout).
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = [row for row in results["rows"] if row["group"] == "all"]
    encoders = list(dict.fromkeys(row["encoder"] for row in rows))
    widths = list(dict.fromkeys(row["width"] for row in rows))
    sets = list(dict.fromkeys(row["set"] for row in rows))
    figure, axes = plt.subplots(
        1, len(widths), figsize=(1.2 + 3.6 * len(widths), 4.4), sharey=True, squeeze=False
    )
    colours = plt.get_cmap("tab10")
    for axis, width in zip(axes[0], widths):
        for index, name in enumerate(sets):
            summary = summarize(
                [row for row in rows if row["width"] == width and row["set"] == name], ["encoder"]
            )
            shift = 0.08 * (index - (len(sets) - 1) / 2)  # sets side by side, bars apart
            axis.errorbar(
                [encoders.index(entry["encoder"]) + shift for entry in summary],
                [100 * entry["order"] for entry in summary],
                yerr=[100 * entry["order_std"] for entry in summary],
                marker="os^vD<>ph*"[index % 10],
                color=colours(index),
                capsize=2,
                label=name,
            )
            baseline = results["settings"]["baselines"].get(name, {}).get("all", {})
            for reader, style in (("first named", "--"), ("trained layout", ":")):
                value = baseline.get(reader, math.nan)
                if not math.isnan(value):
                    axis.axhline(100 * value, color=colours(index), linestyle=style, linewidth=0.8)
        # a folder's last part names it well enough (as in plot_phrasings)
        labels = [Path(encoder).name or encoder for encoder in encoders]
        axis.set_xticks(range(len(encoders)), labels, rotation=25, ha="right", fontsize=8)
        axis.set_xlim(-0.5, len(encoders) - 0.5)
        axis.set_title(f"reader width {width}", fontsize=10)
        axis.set_ylim(-5, 105)
    axes[0][0].set_ylabel("conditional order accuracy (%)")
    handles, _ = axes[0][-1].get_legend_handles_labels()
    handles += [
        Line2D([], [], color="grey", linestyle=style, linewidth=0.8, label=f"word-blind: {reader}")
        for reader, style in (("first named", "--"), ("trained layout", ":"))
    ]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    figure.suptitle("Embedding probe: can a small reader tell which digit goes where?", fontsize=11)
    figure.tight_layout()
    return figure


def save_results(
    path: str | Path, experiment: str, rows: list[dict], settings: dict, seconds: float
) -> Path:
    """Write an experiment's rows with what produced them: settings, machine, torch, wall time."""

    payload = {
        "experiment": experiment,
        "settings": settings,
        "machine": (
            f"{platform.system()} {platform.machine()}, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
        ),
        "wall_seconds": round(seconds, 1),
        "rows": rows,
    }
    return atomic_write_text(json.dumps(payload, indent=1), path)


def load_results(path: str | Path) -> dict:
    """An experiment's results file, checked: one line naming the file says what is wrong.

    It must hold an object with a known "experiment", "settings" and a list of "rows", each
    row an object with the table's columns and a seed, its measured columns numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no results at {path}: run `python -m imagen_lib experiment NAME` to make them"
        )
    name = path.stem if path.stem in TABLES else "NAME"  # the files are named NAME.json
    fix = f"measure it again with `python -m imagen_lib experiment {name}`"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text, so not a results file: {fix}") from None
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not JSON (line {error.lineno}, column {error.colno}: {error.msg}): {fix}"
        ) from None
    if not isinstance(results, dict):
        raise ValueError(f"{path} holds a {type(results).__name__}, not an object: {fix}")
    if results.get("experiment") not in TABLES or "rows" not in results:
        raise ValueError(
            f"{path} is not an experiment results file (no known 'experiment' and 'rows')"
        )
    problem = results_problem(results)
    if problem:
        raise ValueError(f"{path} is damaged ({problem}): {fix}")
    return results


def results_problem(results: dict) -> str | None:
    """What is wrong with a results object whose experiment is known, or None."""
    if not isinstance(results.get("settings"), dict):
        return "'settings' must be an object"
    if not isinstance(results["rows"], list):
        return "'rows' must be a list"
    keys, columns = TABLES[results["experiment"]]
    extra = EXTRA_COLUMNS.get(results["experiment"], [])  # results_table needs them
    if results["experiment"] == "probe" and not isinstance(
        results["settings"].get("baselines"), dict
    ):
        return "'settings' lacks the word-blind 'baselines' that the plot draws"
    for index, row in enumerate(results["rows"]):
        if not isinstance(row, dict):
            return f"row {index} is not an object"
        missing = [key for key in [*keys, "seed", *extra, *columns] if key not in row]
        if missing:
            return f"row {index} lacks {', '.join(map(repr, missing))}"
        for column in columns:
            if isinstance(row[column], bool) or not isinstance(row[column], (int, float)):
                return f"row {index}'s {column} is not a number"
    return None


def _errorbar(
    axis, x, summary: list[dict], column: str, label: str, scale: float = 1.0, marker: str = "o"
):
    """Plot the mean of `column` against x, with the spread over seeds as error bars."""
    axis.errorbar(
        x,
        [scale * e[column] for e in summary],
        yerr=[scale * e[f"{column}_std"] for e in summary],
        marker=marker,
        capsize=2,
        label=label,
    )


def plot_guidance(results: dict):
    """Prompt accuracy against MNIST-FID, one curve per thresholding, one point per guidance weight.

    Left: every setting. Right: static against dynamic thresholding close up, where the
    large weights separate them.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"dynamic": ("o", (5, -11)), "static": ("s", (5, 5)), "none": ("^", (5, 5))}
    for panel, axis in enumerate(axes):
        for thresholding, (marker, offset) in styles.items():
            rows = [
                r
                for r in results["rows"]
                if r["thresholding"] == thresholding and (panel == 0 or r["guidance"] >= 1)
            ]
            if not rows or (panel == 1 and thresholding == "none"):
                continue
            summary = summarize(rows, ["guidance"])
            fids = [e["fid"] for e in summary]
            axis.errorbar(
                fids,
                [100 * e["accuracy"] for e in summary],
                xerr=[e["fid_std"] for e in summary],
                yerr=[100 * e["accuracy_std"] for e in summary],
                marker=marker,
                capsize=2,
                label=f"{thresholding} thresholding",
            )
            if panel == 1 or thresholding == "none":
                for entry, fid in zip(summary, fids):
                    axis.annotate(
                        f"w={entry['guidance']:g}",
                        (fid, 100 * entry["accuracy"]),
                        textcoords="offset points",
                        xytext=offset,
                        fontsize=7,
                    )
        axis.axvline(
            results["settings"]["fid_real_vs_real"],
            color="grey",
            linestyle="--",
            linewidth=0.8,
            label="real-vs-real FID",
        )
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("MNIST-FID (lower is better), log scale")
        axis.set_ylabel("prompt accuracy (%)")
        axis.legend(fontsize=8, loc="lower left" if panel == 1 else "center left")
    axes[0].set_title("Every guidance weight (w = 0 to 20)")
    axes[1].set_title("Static against dynamic, w >= 1 (close up)")
    figure.suptitle("Guidance trade-off: alignment against fidelity")
    figure.tight_layout()
    return figure


def plot_against(
    results: dict,
    curve_key: str,
    setting_key: str,
    x_key: str,
    x_label: str,
    title: str,
    log_x: bool = False,
    log_fid: bool = False,
):
    """Two panels, MNIST-FID and prompt accuracy against `x_key`, a curve per `curve_key` value.

    Rows are averaged per `setting_key`; when that is not the x axis itself (steps plotted
    at their seconds), each point of the MNIST-FID panel is labelled with its setting.
    """
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for index, name in enumerate(dict.fromkeys(r[curve_key] for r in results["rows"])):
        summary = summarize([r for r in results["rows"] if r[curve_key] == name], [setting_key])
        x = [e[x_key] for e in summary]
        label = str(name).upper() if curve_key == "sampler" else str(name)
        _errorbar(axes[0], x, summary, "fid", label)
        _errorbar(axes[1], x, summary, "accuracy", label, scale=100)
        if setting_key != x_key:
            # every other curve labels to the left of its points, so close curves keep their
            # labels apart
            left = index % 2 == 1
            for entry in summary:
                axes[0].annotate(
                    str(entry[setting_key]),
                    (entry[x_key], entry["fid"]),
                    textcoords="offset points",
                    xytext=(-4 if left else 4, 4),
                    ha="right" if left else "left",
                    fontsize=7,
                )
    axes[0].axhline(
        results["settings"]["fid_real_vs_real"],
        color="grey",
        linestyle="--",
        linewidth=0.8,
        label="real-vs-real FID",
    )
    axes[0].set_ylabel("MNIST-FID (lower is better)" + (", log scale" if log_fid else ""))
    if setting_key != x_key:
        axes[0].set_title(f"points labelled with their {setting_key}", fontsize=8)
    axes[1].set_ylabel("prompt accuracy (%)")
    if log_fid:
        axes[0].set_yscale("log")
    for axis in axes:
        axis.set_xlabel(x_label)
        if log_x:
            axis.set_xscale("log")
    axes[0].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_phrasings(results: dict):
    """Prompt accuracy per phrasing, one bar per model compared.

    Seen phrasings are left of the dotted line.
    """
    import matplotlib.pyplot as plt

    rows, key = results["rows"], PHRASING_KEYS[results["experiment"]]
    figure, axis = plt.subplots(figsize=(9, 3.8))
    names = list(dict.fromkeys(r[key] for r in rows))
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        summary = summarize([r for r in rows if r[key] == name], ["phrasing"])
        positions = [p + (index - (len(names) - 1) / 2) * width for p in range(len(summary))]
        axis.bar(
            positions,
            [100 * e["accuracy"] for e in summary],
            width,
            yerr=[100 * e["accuracy_std"] for e in summary],
            capsize=2,
            label=Path(name).name,
        )
    phrasings = list(dict.fromkeys(r["phrasing"] for r in rows))
    axis.set_xticks(range(len(phrasings)), phrasings, rotation=30, ha="right", fontsize=8)
    axis.axvline(len({r["phrasing"] for r in rows if r["seen"]}) - 0.5, color="grey", linestyle=":")
    axis.axhline(10, color="grey", linewidth=0.8, label="chance (10%)")
    axis.set_ylim(0, 105)
    axis.set_ylabel("prompt accuracy (%)")
    axis.set_title("Phrasings seen in training (left of the dotted line) and never seen")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_prediction(results: dict):
    """Prompt accuracy, MNIST-FID and speckle per sampling setting.

    One bar per prediction target.
    """
    import matplotlib.pyplot as plt

    rows = results["rows"]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    names = list(dict.fromkeys(r["prediction"] for r in rows))
    width = 0.8 / len(names)
    panels = (
        ("accuracy", 100, "prompt accuracy (%)"),
        ("fid", 1, "MNIST-FID (lower is better)"),
        ("speckle", 100, "speckle (% bright border pixels)"),
    )
    for index, name in enumerate(names):
        summary = summarize(
            [r for r in rows if r["prediction"] == name], ["sampler", "steps", "thresholding"]
        )
        positions = [p + (index - (len(names) - 1) / 2) * width for p in range(len(summary))]
        for axis, (column, scale, _) in zip(axes, panels):
            axis.bar(
                positions,
                [scale * e[column] for e in summary],
                width,
                yerr=[scale * e[f"{column}_std"] for e in summary],
                capsize=2,
                label=f"{name}-prediction",
            )
    labels = [
        f"{e['sampler'].upper()} {e['steps']}"
        + ("" if e["thresholding"] == "dynamic" else f"\n{e['thresholding']} thr.")
        for e in summarize(rows, ["sampler", "steps", "thresholding"])
    ]
    for axis, (_, _, title) in zip(axes, panels):
        axis.set_xticks(range(len(labels)), labels, fontsize=7)
        axis.set_title(title, fontsize=10)
    axes[1].axhline(
        results["settings"]["fid_real_vs_real"],
        color="grey",
        linestyle="--",
        linewidth=0.8,
        label="real-vs-real FID",
    )
    axes[1].legend(fontsize=8)
    figure.suptitle("eps- against v-prediction: the same cascade, trained the same way")
    figure.tight_layout()
    return figure


def plot_examples(examples: dict[str, torch.Tensor], title: str):
    """One row of samples per setting, labelled: what the numbers in the tables look like."""
    import matplotlib.pyplot as plt

    from imagen_lib.tools.plotting import show_grid

    figure, axes = plt.subplots(
        len(examples), 1, figsize=(5, 0.55 * len(examples) + 0.4), squeeze=False
    )
    for axis, (label, images) in zip(axes[:, 0], examples.items()):
        show_grid(images, columns=len(images), ax=axis)
        axis.text(-0.02, 0.5, label, transform=axis.transAxes, ha="right", va="center", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(
        left=0.33, right=0.99, top=1 - 0.35 / (0.55 * len(examples) + 0.4), bottom=0.01, hspace=0.08
    )
    return figure


def plot_results(results: dict):
    """The figure for one experiment's results (a matplotlib Figure)."""
    experiment = results["experiment"]
    if experiment == "guidance":
        return plot_guidance(results)
    if experiment == "scaling":
        return plot_scaling(results)
    if experiment == "probe":
        return plot_probe(results)
    if experiment in PHRASING_KEYS:
        return plot_phrasings(results)
    if experiment == "prediction":
        return plot_prediction(results)
    if experiment == "augmentation":
        # a curve per SR stage and base guidance weight
        curves = [
            {**row, "sr_stage": f"{row['sr_stage']}, base guidance {row['base_guidance']:g}"}
            for row in results["rows"]
        ]
        return plot_against(
            {**results, "rows": curves},
            "sr_stage",
            "level",
            "level",
            "SR conditioning-noise level at sampling",
            "Noise conditioning augmentation",
            log_fid=True,
        )
    return plot_against(
        results,
        "sampler",
        "steps",
        "seconds_per_grid",
        "seconds per 64 images (log scale)",
        "Sampling steps: quality against time",
        log_x=True,
    )

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from imagen_lib.plumbing.errors import damaged
from imagen_lib.plumbing.files import atomic_write_text
from imagen_lib.tools.plotting import show_grid

if TYPE_CHECKING:  # matplotlib is imported only where a figure is drawn
    from matplotlib.figure import Figure


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
# the scaling experiment's measures per (model, guidance, set, category or phrasing)
SCALING_MEASURES = {
    "order": "order accuracy (%)",
    "pair": "pair accuracy, any order (%)",
    "scene": "scene accuracy (%)",
    "swap": "swap rate (%)",
}
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
    "accuracy", "speckle", "scene", "swap", "left", "right", *SCALING_MEASURES,
    *PROBE_MEASURES, "held_out_accuracy", "digits", "colours", "colour_swap",
)  # fmt: skip


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
    """The Markdown table of an experiment's results (`KINDS`: its own, or the summary's).

    For phrasing experiments, also seen vs unseen phrasings on average.
    """
    kind = KINDS[results["experiment"]]
    if kind.table is not None:
        return kind.table(results)
    table = markdown_table(summarize(results["rows"], kind.keys), kind.keys, kind.columns)
    if kind.compared is not None:
        key = kind.compared
        by_kind = summarize(seen_and_unseen(results["rows"], key), [key, "phrasings"])
        table += "\n\n" + markdown_table(by_kind, [key, "phrasings"], kind.columns)
    return table


def scaling_runs(results: dict) -> dict[tuple[str, int], bool]:
    """Whether each (model, seed) of a scaling file passed its convergence gate.

    The gate (saved in the file's settings) is a conditional order accuracy of at least
    `order` on its `set` (training relation captions) at its guidance weight. A run that
    fails it has not learned to read the captions it was trained on: it is "not converged",
    never a result.
    """
    gate = results["settings"]["gate"]
    return {
        (row["model"], row["seed"]): row["order"] >= gate["order"]  # NaN fails
        for row in results["rows"]
        if (row["set"], row["guidance"]) == (gate["set"], gate["guidance"])
        and (row["category"], row["phrasing"]) == ("all", "all")
    }


def order_estimate(rows: list[dict]) -> tuple[float, float]:
    """The mean conditional order accuracy of `rows` (one per seed) and its standard error.

    Each seed's share is a binomial estimate over the scenes that drew both digits; the
    error is the larger of the pooled binomial error and the spread between seeds (which
    also holds how training from another seed moves the model), so that one seed is not
    read as more certain than it is.
    """
    shares = [row["order"] for row in rows if not math.isnan(row["order"])]
    drawn = sum(row["order_count"] for row in rows)
    if not shares or drawn == 0:
        return math.nan, math.nan
    mean = sum(shares) / len(shares)
    binomial = math.sqrt(mean * (1 - mean) / drawn)
    if len(shares) < 2:
        return mean, binomial
    spread = statistics.stdev(shares) / math.sqrt(len(shares))
    return mean, max(binomial, spread)


def scaling_summary(results: dict) -> list[dict]:
    """One entry per (model, guidance, set) of a scaling file's runs that passed the gate.

    Conditional order accuracy over the passing seeds with its standard error and 95%
    interval, and the mean over them of pair accuracy, scene accuracy, swap rate and the
    per-slot FID; "seeds" and "converged" count the seeds measured and passing. A model
    none of whose seeds passed has one entry per set with NaN measures.
    """
    passed = scaling_runs(results)
    whole = [r for r in results["rows"] if (r["category"], r["phrasing"]) == ("all", "all")]
    summary = []
    for model, guidance, name in dict.fromkeys(
        (r["model"], r["guidance"], r["set"]) for r in whole
    ):
        measured = [
            r for r in whole if (r["model"], r["guidance"], r["set"]) == (model, guidance, name)
        ]
        chosen = [r for r in measured if passed.get((r["model"], r["seed"]), False)]
        order, error = order_estimate(chosen)
        entry = {"model": model, "guidance": guidance, "set": name, "order": order}
        entry.update(
            order_error=error, order_low=order - 1.96 * error, order_high=order + 1.96 * error
        )
        for column in ("pair", "scene", "swap", "fid_left", "fid_right"):
            values = [r[column] for r in chosen]
            entry[column] = sum(values) / len(values) if values else math.nan
        entry.update(seeds=len(measured), converged=len(chosen))
        for column in ("channels", "encoder_parameters", "unet_parameters"):
            entry[column] = measured[0][column]
        summary.append(entry)
    return summary


def difference(first: dict, second: dict, smallest: float) -> tuple[float, float, str]:
    """first - second of two summary entries' order accuracy, its standard error, and how
    it reads: "no detectable difference" within `smallest` (decided before the runs) or
    two standard errors, else "higher" or "lower"."""
    delta = first["order"] - second["order"]
    error = math.hypot(first["order_error"], second["order_error"])
    if not abs(delta) >= max(smallest, 2 * error):  # NaN reads as no difference
        return delta, error, "no detectable difference"
    return delta, error, "higher" if delta > 0 else "lower"


def size_change(first: dict, second: dict) -> str:
    """What grows from `second` to `first` (two summary entries): "encoder x4.8", "U-Net x3.9"."""
    changes = []
    for column, name in (("encoder_parameters", "encoder"), ("unet_parameters", "U-Net")):
        if first[column] != second[column]:
            changes.append(f"{name} x{first[column] / second[column]:.1f}")
    return ", ".join(changes) or "none"


def comparison_table(results: dict, pairs: Sequence[tuple[str, str]]) -> str:
    """Figure 4's comparisons as Markdown: for each (first, second) pair of models, per set at
    the gate's guidance weight, first - second in conditional order accuracy (points) with its
    95% interval, and how it reads (`difference`, against the smallest effect the file
    records). A model none of whose seeds passed the gate makes its rows "not converged"."""
    weight = results["settings"]["gate"]["guidance"]
    smallest = results["settings"]["smallest_effect"]
    summary = [entry for entry in scaling_summary(results) if entry["guidance"] == weight]
    entries = {(entry["model"], entry["set"]): entry for entry in summary}
    models = {entry["model"] for entry in summary}
    sets = list(dict.fromkeys(entry["set"] for entry in summary))
    lines = [
        "| comparison | what grows | set | difference (points) | reading |",
        "|---|---|---|---|---|",
    ]
    for first, second in pairs:
        for model in (first, second):
            if model not in models:
                raise ValueError(f"{model!r} is not among the measured models {sorted(models)}")
        for name in sets:
            bigger, smaller = entries[first, name], entries[second, name]
            if math.isnan(bigger["order"]) or math.isnan(smaller["order"]):
                cells = ["-", "not converged"]
            else:
                delta, error, reading = difference(bigger, smaller, smallest)
                cells = [f"{100 * delta:+.1f} ± {196 * error:.1f}", reading]
            grows = size_change(bigger, smaller)
            lines.append(f"| {first} - {second} | {grows} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scaling_table(results: dict) -> str:
    """The scaling experiment's summary as Markdown: per model and guidance weight, the gate
    (seeds passed / measured) and conditional order accuracy ± its 95% interval per set."""
    summary = scaling_summary(results)
    sets = list(dict.fromkeys(entry["set"] for entry in summary))
    lines = [
        "| model | guidance | gate | " + " | ".join(f"{name} (%)" for name in sets) + " |",
        "|" + " --- |" * (3 + len(sets)),
    ]
    for model, guidance in dict.fromkeys((e["model"], e["guidance"]) for e in summary):
        entries = {e["set"]: e for e in summary if (e["model"], e["guidance"]) == (model, guidance)}
        first = next(iter(entries.values()))
        gate = f"{first['converged']}/{first['seeds']}"
        cells = []
        for name in sets:
            entry = entries.get(name)
            if entry is None or math.isnan(entry["order"]):
                cells.append("not converged" if entry is not None else "-")
            else:
                cells.append(f"{100 * entry['order']:.1f} ± {196 * entry['order_error']:.1f}")
        lines.append(f"| {model} | {guidance:g} | {gate} | " + " | ".join(cells) + " |")
    floor = results["settings"].get("fid_floor")
    note = (
        f"\n\nPer-slot MNIST-FID floor (real against real at 16x32): {floor:.2f}" if floor else ""
    )
    return "\n".join(lines) + note


def curve_table(results: dict) -> str:
    """The pilot learning curve as Markdown: per snapshot, conditional order accuracy with its
    95% interval, pair and scene accuracy (%), and whether it passes the gate."""
    gate = results["settings"]["gate_order"]
    lines = [
        "| training steps | order accuracy (%) | pair accuracy (%) | scene accuracy (%) | gate |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(results["rows"], key=lambda row: row["steps"]):
        error = order_estimate([row])[1]
        passed = "passed" if row["order"] >= gate else "not yet"
        lines.append(
            f"| {row['steps']:,} | {100 * row['order']:.1f} ± {196 * error:.1f} | "
            f"{100 * row['pair']:.1f} | {100 * row['scene']:.1f} | {passed} |"
        )
    first = results["rows"][0]
    lines.append(
        f"| word-blind: first named on the left | {100 * first['blind_first_named']:.1f} | | | |"
    )
    lines.append(
        f"| word-blind: trained layout | {100 * first['blind_trained_layout']:.1f} | | | |"
    )
    return "\n".join(lines)


def plot_scaling_curve(results: dict):
    """The pilot learning curve: conditional order, pair and scene accuracy of one run's
    snapshots against its training steps, with the order's 95% interval, the convergence
    gate and the two word-blind readers' order accuracy on the same captions."""
    import matplotlib.pyplot as plt

    rows = sorted(results["rows"], key=lambda row: row["steps"])
    steps = [row["steps"] for row in rows]
    figure, axis = plt.subplots(figsize=(6.5, 4))
    errors = [196 * order_estimate([row])[1] for row in rows]
    orders = [100 * row["order"] for row in rows]
    axis.errorbar(steps, orders, yerr=errors, marker="o", capsize=3, label="order accuracy")
    axis.plot(steps, [100 * row["pair"] for row in rows], marker="s", label="pair accuracy")
    axis.plot(steps, [100 * row["scene"] for row in rows], marker="^", label="scene accuracy")
    axis.axhline(100 * results["settings"]["gate_order"], color="black", linewidth=0.8)
    axis.annotate("gate", (steps[0], 100 * results["settings"]["gate_order"]), fontsize=8)
    for key, style, label in (
        ("blind_first_named", ":", "word-blind: first named on the left"),
        ("blind_trained_layout", "--", "word-blind: trained layout"),
    ):
        axis.axhline(100 * rows[0][key], color="grey", linestyle=style, label=label)
    axis.set_xticks(steps, [f"{step:,}" for step in steps])
    axis.set_xlabel("training steps (batch 64)")
    axis.set_ylabel("% of training relation captions")
    axis.set_ylim(0, 100)
    axis.set_title("When the base stage starts reading word order")
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure


PHRASING_TYPES = ("synonym", "new word", "inverted")


def probe_ceilings(probe: dict, width: int) -> list[tuple[int, float, float]]:
    """The probe's order accuracy on held-out phrasings (the mean over PHRASING_TYPES) for each
    pretrained encoder's reader of `width`: (parameters, mean over seeds, standard error),
    in order of size. What the tokens hold: a ceiling for any U-Net reading them."""
    pretrained = {entry["label"] for entry in probe["settings"]["encoders"] if entry["pretrained"]}
    per_seed: dict[tuple[str, int], list[float]] = {}
    sizes = {}
    for row in probe["rows"]:
        if (
            row["encoder"] in pretrained
            and row["width"] == width
            and row["set"] == "held-out phrasings"
            and row["group"] in PHRASING_TYPES
        ):
            per_seed.setdefault((row["encoder"], row["seed"]), []).append(row["order"])
            sizes[row["encoder"]] = row["parameters"]
    ceilings = []
    for encoder, parameters in sizes.items():
        means = [sum(v) / len(v) for (name, _), v in per_seed.items() if name == encoder]
        error = statistics.stdev(means) / math.sqrt(len(means)) if len(means) > 1 else math.nan
        ceilings.append((parameters, sum(means) / len(means), error))
    return sorted(ceilings)


def plot_scaling(results: dict, probe: dict | None = None):
    """Figure 4 in miniature: conditional order accuracy on held-out phrasings against the
    encoder's parameters (a line per U-Net width, and with `probe` its readers' ceilings) and
    the U-Net's parameters (a line per encoder), at the gate's guidance weight, with 95%
    intervals; then order accuracy against the per-slot FID, one point per guidance weight.
    Only runs that passed the gate are drawn; the title names the models that did not."""
    import matplotlib.pyplot as plt

    summary = [e for e in scaling_summary(results) if e["set"].startswith("held-out ")]
    summary = [e for e in summary if e["set"] != "held-out pairs"]
    gate = results["settings"]["gate"]["guidance"]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.4))

    def mean_over_types(entries: list[dict]) -> tuple[float, float]:
        orders = [e["order"] for e in entries]
        errors = [e["order_error"] for e in entries]
        return sum(orders) / len(orders), math.sqrt(sum(x * x for x in errors)) / len(errors)

    def millions(axis, values: list[float]) -> None:  # ticks at the models' sizes, as "22.7M"
        values = sorted(set(values))
        axis.set_xticks(values, [f"{value / 1e6:.1f}M" for value in values])
        axis.minorticks_off()

    models = list(dict.fromkeys(e["model"] for e in summary))
    by_model = {}
    for model in models:
        entries = [e for e in summary if e["model"] == model and e["guidance"] == gate]
        by_model[model] = (entries[0], *mean_over_types(entries))
    for axis, group_key, x_key, x_label in (
        (axes[0], "channels", "encoder_parameters", "text encoder parameters (log)"),
        (axes[1], "encoder", "unet_parameters", "U-Net parameters (log)"),
    ):
        groups: dict[str, list] = {}
        for model, (entry, order, error) in by_model.items():
            group = (
                f"{entry['channels']} ch" if group_key == "channels" else model.rsplit(",", 1)[0]
            )
            groups.setdefault(group, []).append((entry[x_key], order, error))
        for group, points in groups.items():
            points.sort()
            axis.errorbar(
                [p[0] for p in points],
                [100 * p[1] for p in points],
                yerr=[196 * p[2] for p in points],
                marker="o",
                capsize=2,
                label=group,
            )
        axis.set_xscale("log")
        millions(axis, [entry[x_key] for entry, _, _ in by_model.values()])
        axis.set_xlabel(x_label)
        axis.axhline(50, color="grey", linewidth=0.8, linestyle=":")
    if probe is not None:
        width = max(probe["settings"]["widths"])
        ceilings = probe_ceilings(probe, width)
        axes[0].errorbar(
            [c[0] for c in ceilings],
            [100 * c[1] for c in ceilings],
            yerr=[196 * c[2] for c in ceilings],
            color="grey",
            linestyle="--",
            marker="s",
            capsize=2,
            label=f"probe's reader (width {width})",
        )
        encoders = [entry["encoder_parameters"] for entry, _, _ in by_model.values()]
        millions(axes[0], encoders + [c[0] for c in ceilings])
    for axis in axes[:2]:
        axis.legend(fontsize=7)
    axes[0].set_ylabel("order accuracy, held-out phrasings (%)")
    for model in models:
        entries = [e for e in summary if e["model"] == model]
        weights = sorted({e["guidance"] for e in entries})
        points = []
        for weight in weights:
            chosen = [e for e in entries if e["guidance"] == weight]
            fid = sum((e["fid_left"] + e["fid_right"]) / 2 for e in chosen) / len(chosen)
            points.append((fid, 100 * mean_over_types(chosen)[0]))
        axes[2].plot([p[0] for p in points], [p[1] for p in points], marker="o", label=model)
    floor = results["settings"].get("fid_floor")
    if floor:
        axes[2].axvline(floor, color="grey", linewidth=0.8, linestyle=":", label="real vs real")
    axes[2].set_xlabel("per-slot MNIST-FID at 16x32 (lower is better)")
    axes[2].set_ylabel("order accuracy, held-out phrasings (%)")
    axes[2].legend(fontsize=6)
    title = "Figure 4 in miniature: runs that passed the gate; 50% is a coin flip"
    unconverged = [model for model, (_, order, _) in by_model.items() if math.isnan(order)]
    if unconverged:
        title += f"\nnot converged, so not drawn: {'; '.join(unconverged)}"
    figure.suptitle(title)
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
            summarize(rows, [*KINDS["probe"].keys, "count"]),
            [*KINDS["probe"].keys, "count"],
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
    name = path.stem if path.stem in KINDS else "NAME"  # the files are named NAME.json
    # the scaling experiment's learning curve comes from its --curve option
    name = "scaling --curve SNAPSHOT ..." if name == "scaling_curve" else name
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
    if results.get("experiment") not in KINDS or "rows" not in results:
        raise ValueError(
            f"{path} is not an experiment results file (no known 'experiment' and 'rows')"
        )
    problem = results_problem(results)
    if problem:
        raise damaged(path, f"holds malformed results ({problem})", fix)
    return results


def results_problem(results: dict) -> str | None:
    """What is wrong with a results object whose experiment is known, or None."""
    if not isinstance(results.get("settings"), dict):
        return "'settings' must be an object"
    if not isinstance(results["rows"], list):
        return "'rows' must be a list"
    kind = KINDS[results["experiment"]]
    keys, columns, extra = kind.keys, kind.columns, kind.extra  # results_table needs them all
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
            value = row[column]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"row {index}'s {column} is not a number"
            if math.isinf(value):
                return f"row {index}'s {column} is infinite"
            # a share is NaN where it is undefined (no pair of different digits), else in [0, 1]
            if column in PERCENT and not math.isnan(value) and not 0 <= value <= 1:
                return f"row {index}'s {column} is {value}, not a share in [0, 1]"
    return None


def real_vs_real_line(axis, results: dict, vertical: bool = False) -> None:
    """The real-vs-real MNIST-FID of a results file as a dashed line: the FID axis's floor."""
    draw = axis.axvline if vertical else axis.axhline
    draw(
        results["settings"]["fid_real_vs_real"],
        color="grey",
        linestyle="--",
        linewidth=0.8,
        label="real-vs-real FID",
    )


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
        real_vs_real_line(axis, results, vertical=True)
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
    real_vs_real_line(axes[0], results)
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

    rows, key = results["rows"], KINDS[results["experiment"]].compared
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
    real_vs_real_line(axes[1], results)
    axes[1].legend(fontsize=8)
    figure.suptitle("eps- against v-prediction: the same cascade, trained the same way")
    figure.tight_layout()
    return figure


def plot_examples(examples: dict[str, torch.Tensor], title: str):
    """One row of samples per setting, labelled: what the numbers in the tables look like."""
    import matplotlib.pyplot as plt

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


def plot_augmentation(results: dict):
    """MNIST-FID and prompt accuracy against the SR stage's noise level at sampling: a curve
    per SR stage and base guidance weight."""
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


def plot_sampler(results: dict):
    """MNIST-FID and prompt accuracy against seconds, a curve per sampler, points by steps."""
    return plot_against(
        results,
        "sampler",
        "steps",
        "seconds_per_grid",
        "seconds per 64 images (log scale)",
        "Sampling steps: quality against time",
        log_x=True,
    )


def plot_results(results: dict):
    """The figure for one experiment's results (a matplotlib Figure)."""
    plot = KINDS[results["experiment"]].plot
    if plot is None:
        raise ValueError(f"{results['experiment']} results have no plot: print their table")
    return plot(results)


@dataclass(frozen=True)
class ResultsKind:
    """One kind of results file (its "experiment"): the columns of its rows, its table, its plot."""

    keys: tuple[str, ...]  # the columns that name a setting
    columns: dict[str, str]  # the measured columns, shown as mean ± std, with their headers
    plot: Callable[[dict], Figure] | None = None  # None: an `evaluate --save` file, a table only
    table: Callable[[dict], str] | None = None  # None: the summary's Markdown table
    extra: tuple[str, ...] = ()  # columns a row needs beyond those, for its table and plot
    compared: str | None = None  # phrasing experiments: the column that names each model


SAMPLING_COLUMNS = {
    **ACCURACY,
    **FID,
    "speckle": "speckle (%)",
    "seconds_per_grid": "seconds per 64 images",
}
SCENE_KEYS = ("guidance", "thresholding", "set", "category", "phrasing")
# Every kind of results file by its "experiment": the findings (tools/experiments.py), the
# scaling grid and its learning curve (tools/scaling.py), the probe (tools/probe.py) and
# `evaluate --save` (tools/evaluation.py).
KINDS = {
    "guidance": ResultsKind(
        ("guidance", "thresholding"), {**ACCURACY, **FID, "seconds": "seconds"}, plot_guidance
    ),
    "augmentation": ResultsKind(
        ("base_guidance", "sr_stage", "level"), {**ACCURACY, **FID}, plot_augmentation
    ),
    "language": ResultsKind(
        ("encoder", "phrasing"), ACCURACY, plot_phrasings, extra=("seen",), compared="encoder"
    ),
    "conditioning": ResultsKind(
        ("conditioning", "phrasing"),
        ACCURACY,
        plot_phrasings,
        extra=("seen",),
        compared="conditioning",
    ),
    "sampler": ResultsKind(("sampler", "steps"), SAMPLING_COLUMNS, plot_sampler),
    "prediction": ResultsKind(
        ("prediction", "sampler", "steps", "thresholding"), SAMPLING_COLUMNS, plot_prediction
    ),
    "scaling": ResultsKind(
        ("model", "guidance", "set", "category", "phrasing"),
        SCALING_MEASURES,
        plot_scaling,
        scaling_table,
        extra=("count", "order_count", "channels", "encoder_parameters", "unet_parameters"),
    ),
    # the pilot learning curve of the scaling experiment's reference row
    "scaling_curve": ResultsKind(
        ("steps",),
        {key: SCALING_MEASURES[key] for key in ("order", "pair", "scene")},
        plot_scaling_curve,
    ),
    "probe": ResultsKind(
        ("encoder", "width", "set", "group"),
        PROBE_MEASURES,
        plot_probe,
        probe_table,
        extra=("count", "parameters"),
    ),
    # `evaluate --save`: a cascade's scores per setting (single digits, or scenes per set)
    "evaluation": ResultsKind(
        ("guidance", "thresholding"),
        {**ACCURACY, **FID, "speckle": "speckle (%)", "held_out_accuracy": "held-out (%)"},
    ),
    "scene_evaluation": ResultsKind(
        SCENE_KEYS, {key: SCALING_MEASURES[key] for key in ("scene", "swap", "order", "pair")}
    ),
    "colour_scene_evaluation": ResultsKind(
        SCENE_KEYS,
        {
            "scene": "scene accuracy, digits and colours (%)",
            "digits": "digit accuracy (%)",
            "colours": "colour accuracy (%)",
            "colour_swap": "colour swap rate (%)",
            "swap": "digit swap rate (%)",
        },
    ),
}

"""The results of a trick search: the ranked trials, and how much each choice moved the objective.

Trick importance here is descriptive: for each searched hyperparameter, the mean objective of the
completed trials grouped by its value (numeric ranges with more than `MAX_GROUPS` distinct values
are cut into quantile bins), with the number of trials in each group. A hyperparameter's spread is
the best group mean minus the worst. With few trials, or values that always appear together, the
spreads mix the effects of several tricks, so the counts are printed beside every mean.
"""

import csv
import json
import math
from pathlib import Path

import numpy as np

MAX_GROUPS = 5
INACTIVE = None


def completed_trials(tuner):
    """Return the completed trials, best first, in keras-tuner's own order."""
    oracle = tuner.oracle
    best = oracle.get_best_trials(len(oracle.trials))
    return [trial for trial in best if trial.status == "COMPLETED" and trial.score is not None]


def rank_trials(tuner):
    """Return one row per completed trial, best first: rank, trial_id, score and each hyperparameter.

    A hyperparameter that was inactive in a trial (a conditional one whose parent had another
    value) is `None`.
    """
    space = tuner.hypermodel.space
    rows = []
    for rank, trial in enumerate(completed_trials(tuner), start=1):
        row = {"rank": rank, "trial_id": trial.trial_id, "score": float(trial.score)}
        values = trial.hyperparameters.values
        for entry in space.entries:
            row[entry.name] = entry.value_of(values[entry.name]) if entry.name in values else INACTIVE
        rows.append(row)
    return rows


def write_results(rows, names, folder, objective):
    """Write the ranked rows as `results.csv` and `results.json` into `folder`; return both paths."""
    folder = Path(folder)
    csv_path, json_path = folder / "results.csv", folder / "results.json"
    columns = ["rank", "trial_id", "score", *names]
    with open(csv_path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row[column]) for column in columns])
    document = {"objective": {"name": objective.name, "direction": objective.direction},
                "columns": columns, "trials": rows}
    json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return csv_path, json_path


def format_table(rows, names, top=10):
    """Return the `top` rows as an aligned text table."""
    columns = ["rank", "trial_id", "score", *names]
    cells = [columns] + [[_cell(row[column], digits=4) for column in columns] for row in rows[:top]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines)


def trick_importance(rows, names, direction="max"):
    """Group the trials' scores by each hyperparameter's value.

    Args:
        rows: the ranked rows of `rank_trials`.
        names: the hyperparameter names (columns of `rows`) to analyse.
        direction: `"max"` or `"min"`, the objective's direction; groups are listed best first.

    Returns:
        A list of `{"hyperparameter", "spread", "groups": [{"value", "mean", "count"}]}`,
        largest spread first. Trials in which a hyperparameter was inactive are left out of its
        groups; a hyperparameter active in no trial is left out.
    """
    table = []
    for name in names:
        pairs = [(row[name], row["score"]) for row in rows if row[name] is not INACTIVE]
        if not pairs:
            continue
        groups = _group(pairs)
        means = [group["mean"] for group in groups]
        groups.sort(key=lambda group: group["mean"], reverse=direction == "max")
        table.append({"hyperparameter": name, "spread": max(means) - min(means), "groups": groups})
    table.sort(key=lambda item: item["spread"], reverse=True)
    return table


def _group(pairs):
    values = [value for value, _ in pairs]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    keys = [_cell(value) for value in values]
    if numeric and len(set(values)) > MAX_GROUPS:
        keys = _quantile_bins(np.asarray(values, dtype=float))
    grouped = {}
    for key, (_, score) in zip(keys, pairs):
        grouped.setdefault(key, []).append(score)
    return [{"value": key, "mean": float(np.mean(scores)), "count": len(scores)}
            for key, scores in grouped.items()]


def _quantile_bins(values):
    """Label each value with its quantile bin `[low, high]`, `MAX_GROUPS - 1` bins in all."""
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, MAX_GROUPS)))
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    return [f"[{edges[i]:.3g}, {edges[i + 1]:.3g}]" for i in index]


def write_importance(table, folder, objective_name):
    """Write `importance.csv`, `importance.json` and the figure `importance.png`; return the paths."""
    folder = Path(folder)
    csv_path, json_path, png_path = (folder / "importance.csv", folder / "importance.json",
                                     folder / "importance.png")
    with open(csv_path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["hyperparameter", "value", "mean_score", "count", "spread"])
        for item in table:
            for group in item["groups"]:
                writer.writerow([item["hyperparameter"], group["value"], group["mean"],
                                 group["count"], item["spread"]])
    json_path.write_text(json.dumps({"objective": objective_name, "importance": table}, indent=2) + "\n",
                         encoding="utf-8")
    _plot_importance(table, png_path, objective_name)
    return csv_path, json_path, png_path


def _plot_importance(table, path, objective_name):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    count = max(1, len(table))
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(4.5 * columns, 0.6 + 2.4 * rows),
                                   squeeze=False)
    for axis in axes.flat[len(table):]:
        axis.set_visible(False)
    for axis, item in zip(axes.flat, table):
        labels = [str(group["value"]) for group in item["groups"]]
        means = [group["mean"] for group in item["groups"]]
        bars = axis.barh(range(len(means)), means, color="tab:blue")
        axis.set_yticks(range(len(means)), labels, fontsize=8)
        axis.invert_yaxis()
        for bar, group in zip(bars, item["groups"]):
            axis.annotate(f"n={group['count']}", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                          xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
        axis.set_title(f"{item['hyperparameter']} (spread {item['spread']:.3g})", fontsize=9)
        axis.set_xlabel(f"mean {objective_name}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _cell(value, digits=None):
    """Format a table cell: lists and dicts as JSON, `None` as empty, floats to `digits` digits."""
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    if digits is not None and isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)

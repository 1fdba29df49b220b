"""The figures every experiment draws, and helpers for the figures of single experiments.

Each function writes one PNG file and returns `(file name, caption)` for the experiment's summary.
"""

import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kerastricks.callbacks.figures import figure_to_png

FIGSIZE = (6.4, 4.0)
DPI = 100


def new_figure(figsize=FIGSIZE):
    """Return a matplotlib figure on an Agg canvas, outside pyplot's global state."""
    figure = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path, caption):
    """Write `figure` as a PNG file at `path`; return `(file name, caption)`."""
    path = Path(path)
    path.write_bytes(figure_to_png(figure))
    return path.name, caption


def plot_variant_bars(rows, column, path):
    """Draw one bar per variant for the table's first column."""
    figure = new_figure((6.4, 0.9 + 0.4 * len(rows)))
    axes = figure.add_subplot()
    labels = [row["variant"] for row in rows]
    values = [row.get(column.key) for row in rows]
    scale = 100.0 if column.format == "%" else 1.0
    heights = [np.nan if value is None else scale * value for value in values]
    positions = np.arange(len(rows))
    axes.barh(positions, heights, color="#4c72b0")
    axes.set_yticks(positions, labels)
    axes.invert_yaxis()
    axes.set_xlabel(column.title + (" (%)" if column.format == "%" else ""))
    axes.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    return save_figure(figure, path, f"{column.title[:1].upper()}{column.title[1:]} of each variant.")


CURVE_TITLES = {"val_accuracy": "validation accuracy",
                "val_balanced_accuracy": "validation balanced accuracy"}


def plot_validation_curves(rows, folder, path, key="val_accuracy"):
    """Draw the history value `key` per epoch of every variant, read from its `metrics.json`.

    Returns `None`, and writes nothing, when no run has that history.
    """
    curves = []
    for row in rows:
        metrics = json.loads((Path(folder) / row["run"] / "metrics.json").read_text("utf-8"))
        values = metrics.get("history", {}).get(key)
        if values:
            curves.append((row["variant"], values))
    if not curves:
        return None
    figure = new_figure()
    axes = figure.add_subplot()
    for label, values in curves:
        axes.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
    title = CURVE_TITLES.get(key, key)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return save_figure(figure, path, f"{title[:1].upper()}{title[1:]} after each epoch.")

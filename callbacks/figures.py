"""Training figures as pure functions: arrays or a `History` in, a matplotlib figure out.

Every function draws on a new figure with matplotlib's Agg backend and returns it without showing
or saving it; `figure_to_png` and `figure_to_image` turn a figure into PNG bytes or an RGBA array
and close it. A figure is `figsize` inches at `dpi` dots per inch, so its image is
`figsize[0] * dpi` pixels wide and `figsize[1] * dpi` pixels high.

Example:

>>> history = model.fit(x, y, validation_split=0.1, epochs=5)  # doctest: +SKIP
>>> png = figure_to_png(plot_loss_curves(history))  # doctest: +SKIP
"""

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DEFAULT_FIGSIZE = (6.4, 4.0)
DEFAULT_DPI = 100


def _new_figure(figsize, dpi):
    # A bare Figure with an Agg canvas stays out of pyplot's global state, so nothing leaks
    # between calls and no GUI backend is ever touched.
    figure = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(figure)
    # Fixed margins instead of tight_layout, which costs an extra draw of the whole figure.
    figure.subplots_adjust(left=0.12, right=0.96, bottom=0.13, top=0.9)
    return figure


def _history_dict(history):
    values = getattr(history, "history", history)
    if not isinstance(values, dict):
        raise TypeError(
            "`history` must be a keras.callbacks.History or a dict of metric lists. "
            f"Received: {type(history).__name__}."
        )
    return values


def _series(history, key):
    values = history.get(key)
    if values is None or len(values) == 0:
        raise ValueError(
            f"The history has no values for {key!r}. Available keys: {sorted(history)}."
        )
    return np.asarray(values, dtype="float64")


def plot_loss_curves(history, figsize=DEFAULT_FIGSIZE, dpi=DEFAULT_DPI):
    """Draw the training and validation loss against the epoch.

    A loss that rises or turns into NaN suggests a learning rate that is too high; one that falls
    in a straight slow line suggests a learning rate that is too low.

    Args:
        history: a `keras.callbacks.History` or its `history` dict; needs `loss`, and uses
            `val_loss` when present.
        figsize: the size in inches. Defaults to `(6.4, 4.0)`.
        dpi: dots per inch. Defaults to `100`.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    history = _history_dict(history)
    figure = _new_figure(figsize, dpi)
    axes = figure.add_subplot()
    loss = _series(history, "loss")
    epochs = np.arange(1, len(loss) + 1)
    axes.plot(epochs, loss, marker="o", label="training")
    if history.get("val_loss"):
        val_loss = _series(history, "val_loss")
        axes.plot(np.arange(1, len(val_loss) + 1), val_loss, marker="o", label="validation")
    finite = loss[np.isfinite(loss)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
        axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("loss")
    axes.set_title("Loss")
    axes.legend()
    axes.grid(alpha=0.3)
    return figure


def plot_accuracy_gap(history, metric="accuracy", figsize=DEFAULT_FIGSIZE, dpi=DEFAULT_DPI):
    """Draw training and validation accuracy and shade the gap between them.

    A wide gap means overfitting (more regularization or data helps); no gap at a low accuracy
    means the model has too little capacity.

    Args:
        history: a `keras.callbacks.History` or its `history` dict with `metric` and
            `val_<metric>`.
        metric: the metric's name in the history. Defaults to `"accuracy"`.
        figsize: the size in inches. Defaults to `(6.4, 4.0)`.
        dpi: dots per inch. Defaults to `100`.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    history = _history_dict(history)
    train = _series(history, metric)
    validation = _series(history, f"val_{metric}")
    count = min(len(train), len(validation))
    epochs = np.arange(1, count + 1)
    figure = _new_figure(figsize, dpi)
    axes = figure.add_subplot()
    axes.plot(epochs, train[:count], marker="o", label="training")
    axes.plot(epochs, validation[:count], marker="o", label="validation")
    axes.fill_between(epochs, train[:count], validation[:count], alpha=0.2, label="gap")
    gap = train[count - 1] - validation[count - 1]
    axes.set_title(f"{metric}: final gap (training - validation) = {gap:.3f}")
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(metric)
    axes.legend()
    axes.grid(alpha=0.3)
    return figure


def plot_learning_rate(learning_rates, figsize=DEFAULT_FIGSIZE, dpi=DEFAULT_DPI):
    """Draw the learning rate against the epoch on a log scale.

    Args:
        learning_rates: one learning rate per epoch.
        figsize: the size in inches. Defaults to `(6.4, 4.0)`.
        dpi: dots per inch. Defaults to `100`.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    rates = np.asarray(learning_rates, dtype="float64").reshape(-1)
    if rates.size == 0 or not np.all(rates > 0):
        raise ValueError(
            "`learning_rates` must be a non-empty sequence of positive numbers. "
            f"Received: {rates.tolist()!r}."
        )
    figure = _new_figure(figsize, dpi)
    axes = figure.add_subplot()
    axes.step(np.arange(1, rates.size + 1), rates, where="post", marker="o")
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("learning rate")
    axes.set_title("Learning-rate schedule")
    axes.grid(alpha=0.3, which="both")
    return figure


def plot_confusion_matrix(y_true, y_pred, class_names=None, normalize=True,
                          figsize=(6.4, 6.4), dpi=DEFAULT_DPI):
    """Draw the confusion matrix of integer labels, rows being the true class.

    Args:
        y_true: the true class indices.
        y_pred: the predicted class indices.
        class_names: the names on the axes. Defaults to the indices.
        normalize: whether each row is divided by its count, so cells are recall shares.
            Defaults to `True`.
        figsize: the size in inches. Defaults to `(6.4, 6.4)`.
        dpi: dots per inch. Defaults to `100`.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    from sklearn.metrics import confusion_matrix

    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(
            "`y_true` and `y_pred` must be non-empty and of the same length. "
            f"Received: {y_true.size} and {y_pred.size} labels."
        )
    num_classes = int(max(y_true.max(), y_pred.max())) + 1
    if class_names is not None:
        if len(class_names) < num_classes:
            raise ValueError(
                f"`class_names` must name at least {num_classes} classes. "
                f"Received: {len(class_names)} names."
            )
        num_classes = len(class_names)
    matrix = confusion_matrix(y_true, y_pred, labels=np.arange(num_classes)).astype("float64")
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]

    figure = _new_figure(figsize, dpi)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(num_classes), names, rotation=45, ha="right")
    axes.set_yticks(range(num_classes), names)
    if num_classes <= 20:
        threshold = matrix.max() / 2
        for row in range(num_classes):
            for column in range(num_classes):
                value = matrix[row, column]
                text = f"{value:.2f}" if normalize else f"{int(value)}"
                color = "white" if value > threshold else "black"
                axes.text(column, row, text, ha="center", va="center", fontsize=7, color=color)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    # Room for long, rotated class names.
    figure.subplots_adjust(left=0.2, bottom=0.2, right=0.92, top=0.93)
    axes.set_title("Confusion matrix" + (" (row-normalized)" if normalize else ""))
    return figure


def filter_mosaic(kernel, max_filters=64):
    """Return a kernel's filters tiled into one image, each scaled to [0, 1] on its own.

    Filters of a layer with 3 input channels are kept in colour; otherwise the first input
    channel is used. Tiles are separated by one pixel of value 1 (white) and laid out row by row
    on a grid of `ceil(sqrt(count))` columns.

    Args:
        kernel: a `(height, width, in_channels, filters)` array, as `Conv2D.kernel`.
        max_filters: tile at most this many filters. Defaults to `64`.

    Returns:
        A `(rows * (height + 1) - 1, columns * (width + 1) - 1, channels)` float array with
        `channels` 3 or 1.
    """
    kernel = np.asarray(kernel, dtype="float64")
    if kernel.ndim != 4:
        raise ValueError(
            "`kernel` must be a 4D (height, width, in_channels, filters) array. "
            f"Received: shape {kernel.shape}."
        )
    height, width, in_channels, total = kernel.shape
    channels = 3 if in_channels == 3 else 1
    count = min(total, max_filters)
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    mosaic = np.ones((rows * (height + 1) - 1, columns * (width + 1) - 1, channels))
    for index in range(count):
        tile = kernel[..., :channels, index]
        low, high = tile.min(), tile.max()
        tile = (tile - low) / (high - low) if high > low else np.zeros_like(tile)
        top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
        mosaic[top:top + height, left:left + width] = tile
    return mosaic


def plot_filters(kernel, max_filters=64, figsize=(6.4, 6.4), dpi=DEFAULT_DPI):
    """Draw a convolution kernel's filters as an image grid (see `filter_mosaic`).

    Smooth, structured first-layer filters are a sign of a well-trained network; noisy ones
    suggest too little training or too little regularization.

    Args:
        kernel: a `(height, width, in_channels, filters)` array, as `Conv2D.kernel`.
        max_filters: draw at most this many filters. Defaults to `64`.
        figsize: the size in inches. Defaults to `(6.4, 6.4)`.
        dpi: dots per inch. Defaults to `100`.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    mosaic = filter_mosaic(kernel, max_filters)
    count = min(np.shape(kernel)[-1], max_filters)
    figure = _new_figure(figsize, dpi)
    axes = figure.add_subplot()
    if mosaic.shape[-1] == 3:
        axes.imshow(mosaic, interpolation="nearest")
    else:
        axes.imshow(mosaic[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_axis_off()
    axes.set_title(f"First-layer filters ({count} of {np.shape(kernel)[-1]})")
    return figure


def plot_lr_finder(learning_rates, losses, suggestion=None, figsize=DEFAULT_FIGSIZE,
                   dpi=DEFAULT_DPI):
    """Draw the loss of a learning-rate sweep against the learning rate on a log axis.

    Args:
        learning_rates: the swept learning rates.
        losses: the (smoothed) loss at each learning rate.
        suggestion: a learning rate to mark with a vertical line. Defaults to `None`.
        figsize: the size in inches. Defaults to `(6.4, 4.0)`.
        dpi: dots per inch. Defaults to `100`.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    rates = np.asarray(learning_rates, dtype="float64")
    losses = np.asarray(losses, dtype="float64")
    if rates.shape != losses.shape or rates.size == 0:
        raise ValueError(
            "`learning_rates` and `losses` must be non-empty and of the same length. "
            f"Received: {rates.size} and {losses.size} values."
        )
    figure = _new_figure(figsize, dpi)
    axes = figure.add_subplot()
    axes.plot(rates, losses)
    axes.set_xscale("log")
    if suggestion is not None:
        axes.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.2g}")
        axes.legend()
    axes.set_xlabel("learning rate")
    axes.set_ylabel("loss")
    axes.set_title("Learning-rate finder")
    axes.grid(alpha=0.3, which="both")
    return figure


def figure_to_png(figure):
    """Render a figure to PNG bytes of its exact pixel size, then close it."""
    buffer = io.BytesIO()
    # Fast zlib compression: the PNG gets a little larger but is written several times faster.
    figure.savefig(buffer, format="png", dpi=figure.dpi, pil_kwargs={"compress_level": 1})
    _close(figure)
    return buffer.getvalue()


def figure_to_image(figure):
    """Render a figure to a `(1, height, width, 4)` uint8 RGBA array, then close it."""
    canvas = figure.canvas
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba(), dtype="uint8").copy()
    _close(figure)
    return image[np.newaxis]


def _close(figure):
    # Figures made here are not registered with pyplot; clearing frees their artists at once.
    figure.clear()

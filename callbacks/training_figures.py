"""A callback that logs the training figures as TensorBoard images and PNG files."""

import logging
from pathlib import Path

import keras
import numpy as np

from kerastricks.callbacks import _common, figures

logger = logging.getLogger(__name__)

FIGURES = ("loss", "accuracy_gap", "learning_rate", "confusion_matrix", "filters")


def first_conv_kernel(model):
    """Return the kernel of the model's first 2D convolution as NumPy, or `None` if it has none."""
    for layer in _common.iterate_layers(model):
        if isinstance(layer, keras.layers.Conv2D) and getattr(layer, "kernel", None) is not None:
            return keras.ops.convert_to_numpy(layer.kernel)
    return None


def current_learning_rate(optimizer):
    """Return the optimizer's current learning rate as a float (schedules are evaluated)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def predict_classes(model, x, batch_size=256):
    """Return the arg-max class of the model's inference-mode output for each example."""
    # Eager calls avoid tracing a predict function, a one-time cost that is larger than running
    # a few thousand examples eagerly through a small model (an estimate on CPU).
    predictions = [
        np.argmax(keras.ops.convert_to_numpy(model(x[start:start + batch_size], training=False)),
                  axis=-1)
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(predictions)


@keras.saving.register_keras_serializable(package="kerastricks")
class TrainingFigures(keras.callbacks.Callback):
    """Draw the training figures and log them as image summaries and PNG files.

    At the end of training (and every `every_n_epochs` epochs, if set) the callback draws, with
    the pure functions of `kerastricks.callbacks.figures`:

    - `loss`: training and validation loss (`plot_loss_curves`),
    - `accuracy_gap`: training and validation accuracy and their gap (`plot_accuracy_gap`), when
      the model reports `accuracy` and `val_accuracy`,
    - `learning_rate`: the learning rate at the start of each epoch (`plot_learning_rate`),
    - `confusion_matrix`: on `validation_data` (`plot_confusion_matrix`),
    - `filters`: the first `Conv2D` layer's kernel (`plot_filters`).

    Each is written as the image summary `figures/NAME` (step: the last finished epoch) and as
    `png_dir/NAME.png`. A figure whose data is missing (no validation data, no convolution) is
    skipped with a log message.

    Args:
        log_dir: the run's TensorBoard log directory; created if missing.
        validation_data: `(x, y)` arrays with integer labels for the confusion matrix, or `None`.
            Defaults to `None`.
        class_names: the class names on the confusion matrix. Defaults to the indices.
        figures: the names of the figures to draw, from `FIGURES`. Defaults to all.
        every_n_epochs: also draw every this many epochs; `None` draws only at the end.
            Defaults to `None`.
        png_dir: the folder for the PNG files. Defaults to `log_dir/figures`.
        subdir: the folder under `log_dir` for the event file. Defaults to `"diagnostics"`.
        dpi: dots per inch; the images are `figsize * dpi` pixels. Defaults to `100`.

    Example:

    >>> callback = TrainingFigures("runs/demo", validation_data=(x_val, y_val))
    >>> model.fit(x, y, validation_data=(x_val, y_val), callbacks=[callback])  # doctest: +SKIP
    """

    def __init__(self, log_dir, validation_data=None, class_names=None, figures=FIGURES,
                 every_n_epochs=None, png_dir=None, subdir="diagnostics", dpi=100):
        super().__init__()
        unknown = sorted(set(figures) - set(FIGURES))
        if isinstance(figures, str) or unknown:
            raise ValueError(
                f"`figures` must be a list of names from {list(FIGURES)}. "
                f"Received: figures={figures!r}."
            )
        self.figures = tuple(figures)
        self.every_n_epochs = _common.check_interval("every_n_epochs", every_n_epochs, True)
        self.dpi = _common.check_interval("dpi", dpi)
        if validation_data is not None:
            x, y = _common.split_probe(validation_data, "validation_data", require_labels=True)
            validation_data = (x, y.reshape(-1).astype("int64"))
        self.validation_data = validation_data
        self.class_names = list(class_names) if class_names is not None else None
        self.log_dir = str(_common.prepare_log_dir(log_dir))
        self.png_dir = str(_common.prepare_log_dir(png_dir or Path(log_dir) / "figures", "png_dir"))
        self.subdir = subdir
        self._writer = _common.LazyWriter(_common.prepare_log_dir(f"{log_dir}/{subdir}"))
        self.history = {}
        self.learning_rates = []

    def on_train_begin(self, logs=None):
        self.history = {}
        self.learning_rates = []
        self._last_epoch = None
        if self.validation_data is not None:
            _common.check_probe_shape(self.validation_data[0], self.model, "validation_data")

    def on_epoch_begin(self, epoch, logs=None):
        if "learning_rate" in self.figures and self.model.optimizer is not None:
            self.learning_rates.append(current_learning_rate(self.model.optimizer))

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self._last_epoch = epoch
        if self.every_n_epochs is not None and (epoch + 1) % self.every_n_epochs == 0:
            self.log_figures(epoch)

    def on_train_end(self, logs=None):
        if self._last_epoch is not None:
            self.log_figures(self._last_epoch)
        self._writer.close()

    def draw_figures(self):
        """Return a dict from figure name to a new `matplotlib.figure.Figure`."""
        drawn = {}
        for name in self.figures:
            try:
                figure = self._draw(name)
            except ValueError as error:
                logger.info("Figure %r skipped: %s", name, error)
                continue
            if figure is None:
                logger.info("Figure %r skipped: its data is missing.", name)
                continue
            drawn[name] = figure
        return drawn

    def log_figures(self, step):
        """Draw every figure, write it as an image summary at `step` and as a PNG file."""
        import tensorflow as tf

        with self._writer.get().as_default(step=step):
            for name, figure in self.draw_figures().items():
                png = figures.figure_to_png(figure)
                (Path(self.png_dir) / f"{name}.png").write_bytes(png)
                image = tf.image.decode_png(png, channels=4)[tf.newaxis]
                tf.summary.image(f"figures/{name}", image)

    def _draw(self, name):
        if name == "loss":
            return figures.plot_loss_curves(self.history, dpi=self.dpi)
        if name == "accuracy_gap":
            if "val_accuracy" not in self.history:
                return None
            return figures.plot_accuracy_gap(self.history, dpi=self.dpi)
        if name == "learning_rate":
            if not self.learning_rates:
                return None
            return figures.plot_learning_rate(self.learning_rates, dpi=self.dpi)
        if name == "confusion_matrix":
            if self.validation_data is None:
                return None
            x, y = self.validation_data
            return figures.plot_confusion_matrix(
                y, predict_classes(self.model, x), self.class_names, dpi=self.dpi
            )
        kernel = first_conv_kernel(self.model)
        if kernel is None:
            return None
        return figures.plot_filters(kernel, dpi=self.dpi)

    def get_config(self):
        validation = None
        if self.validation_data is not None:
            validation = _common.probe_to_config(*self.validation_data)
        return {
            "log_dir": self.log_dir,
            "validation_data": validation,
            "class_names": self.class_names,
            "figures": list(self.figures),
            "every_n_epochs": self.every_n_epochs,
            "png_dir": self.png_dir,
            "subdir": self.subdir,
            "dpi": self.dpi,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["validation_data"] = _common.probe_from_config(config["validation_data"])
        return cls(**config)

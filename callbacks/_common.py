"""Helpers shared by the diagnostics callbacks: argument checks, log folders and probe data."""

import os
import tempfile
from pathlib import Path

import numpy as np


def check_interval(name, value, allow_none=False):
    """Raise unless `value` is a positive integer (or `None` where `allow_none`)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        rule = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(
            f"`{name}` must be {rule}, counted in epochs or steps. "
            f"Received: {name}={value!r}. Pass 1 to log at every one."
        )
    return int(value)


def check_fraction(name, value):
    """Raise unless `value` is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}.")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1]. Received: {name}={value!r}.")
    return float(value)


def prepare_log_dir(log_dir, name="log_dir"):
    """Create `log_dir` and check that a file can be written in it.

    Raises `ValueError` naming the folder, so a bad path fails when the callback is created, before
    any training time is spent.
    """
    if not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError(
            f"`{name}` must be a path (str or os.PathLike). "
            f"Received: {name}={log_dir!r} ({type(log_dir).__name__})."
        )
    path = Path(log_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A real write is tested because os.access reports every path as writable for root.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(
            f"The log directory cannot be written: {error.strerror or error}. "
            f"Received: {name}={str(log_dir)!r}. Pass a folder you can write to."
        ) from None
    return path


def split_probe(probe_data, name="probe_data", require_labels=False):
    """Return `(x, y)` NumPy arrays from a probe batch given as `x` or `(x, y)`.

    `y` is `None` when only inputs were given.
    """
    if isinstance(probe_data, (tuple, list)):
        if len(probe_data) != 2:
            raise ValueError(
                f"`{name}` must be an array of inputs or an `(x, y)` pair. "
                f"Received: a {type(probe_data).__name__} of length {len(probe_data)}."
            )
        x, y = probe_data
    else:
        x, y = probe_data, None
    try:
        x = np.asarray(x, dtype="float32")
    except (TypeError, ValueError):
        raise TypeError(
            f"The inputs of `{name}` must be a numeric array. Received: {type(x).__name__}."
        ) from None
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(
            f"The inputs of `{name}` must be a non-empty batch with at least 2 dimensions "
            f"(examples first). Received: shape {x.shape}."
        )
    if y is None and require_labels:
        raise ValueError(
            f"`{name}` must be an `(x, y)` pair here, because gradients need labels. "
            f"Received: inputs only, shape {x.shape}."
        )
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(x):
            raise ValueError(
                f"The inputs and labels of `{name}` must have the same number of examples. "
                f"Received: {len(x)} inputs and {len(y)} labels."
            )
    return x, y


def check_probe_shape(x, model, name="probe_data"):
    """Raise unless the probe inputs match the model's input shape (batch axis aside)."""
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        return
    expected = tuple(inputs[0].shape[1:])
    received = tuple(x.shape[1:])
    fits = len(expected) == len(received) and all(
        e is None or e == r for e, r in zip(expected, received)
    )
    if not fits:
        raise ValueError(
            f"The inputs of `{name}` do not match the model's input shape. Expected examples "
            f"shaped {expected}. Received: a batch shaped {x.shape}. Take the probe batch from "
            f"the same data the model trains on."
        )


def iterate_layers(model):
    """Yield the model's layers, descending into nested models, in order."""
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers") and layer.layers:
            yield from iterate_layers(layer)
        else:
            yield layer


class LazyWriter:
    """A `tf.summary` file writer that is opened on first use and can be closed and reopened."""

    def __init__(self, path):
        self.path = Path(path)
        self._writer = None

    def get(self):
        if self._writer is None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(str(self.path))
        return self._writer

    def close(self):
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def ensure_built(model, x, name="probe_data"):
    """Build a model that has not seen data yet (a Sequential without `Input`) on the probe."""
    if getattr(model, "inputs", None):
        return
    try:
        model(x[:1], training=False)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"Running the model on `{name}` failed, so the batch probably does not fit the "
            f"model's input. Received: a batch shaped {x.shape}. Error: {error}"
        ) from None
    if not getattr(model, "inputs", None):
        raise ValueError(
            "The diagnostics need a Functional or Sequential model whose inputs are known. "
            f"Received: a {type(model).__name__} without `inputs`. Add a keras.Input."
        )


def probe_to_config(x, y):
    """Return a probe batch as JSON-ready lists, for a callback's `get_config`."""
    return {"x": x.tolist(), "y": None if y is None else y.tolist()}


def probe_from_config(value):
    """Return the `x` or `(x, y)` probe batch that `probe_to_config` stored."""
    if value is None:
        return None
    x = np.asarray(value["x"], dtype="float32")
    return x if value["y"] is None else (x, np.asarray(value["y"]))

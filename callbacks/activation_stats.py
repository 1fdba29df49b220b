"""Dead rectifier units and saturated sigmoid/tanh outputs, measured on a fixed probe batch."""

import warnings

import keras
import numpy as np

from kerastricks.callbacks import _common

# Activation functions grouped by what can go wrong with them: rectifiers die, squashing
# functions saturate. Names are those of `keras.activations` (`__name__` of the function).
_RECTIFIER_FUNCTIONS = frozenset(
    {"relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "mish", "hard_silu"}
)
_SIGMOID_FUNCTIONS = frozenset({"sigmoid", "hard_sigmoid"})
_TANH_FUNCTIONS = frozenset({"tanh", "hard_tanh"})

# kerastricks's own activation layers, looked up by name when a model is inspected, so a layer
# added to `kerastricks.layers` later is watched without a change here.
_KERASTRICKS_RECTIFIERS = ("PReLU", "RReLU")

_registered_kinds = {}

KINDS = ("rectifier", "sigmoid", "tanh", "other")


def register_activation_layer(layer_class, kind="rectifier"):
    """Register a layer class as an activation layer that the diagnostics watch.

    Args:
        layer_class: a subclass of `keras.layers.Layer`.
        kind: `"rectifier"` (dead units are counted), `"sigmoid"` or `"tanh"` (saturated outputs
            are counted), or `"other"` (histograms only). Defaults to `"rectifier"`.

    Returns:
        `layer_class`, so the function also works as a decorator.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError(
            f"`layer_class` must be a subclass of keras.layers.Layer. Received: {layer_class!r}."
        )
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {list(KINDS)}. Received: kind={kind!r}.")
    _registered_kinds[layer_class] = kind
    return layer_class


def activation_kind(layer):
    """Return the kind of an activation layer, or `None` for a layer that is not one.

    A `keras.layers.Activation` is classified by its function. `ReLU`, `LeakyReLU`, `ELU`,
    `PReLU` and kerastricks's `PReLU` and `RReLU` are rectifiers. Classes registered with
    `register_activation_layer` get their registered kind, which takes precedence.
    """
    for layer_class, kind in _registered_kinds.items():
        if isinstance(layer, layer_class):
            return kind
    if isinstance(layer, keras.layers.Activation):
        name = getattr(layer.activation, "__name__", "")
        if name in _RECTIFIER_FUNCTIONS:
            return "rectifier"
        if name in _SIGMOID_FUNCTIONS:
            return "sigmoid"
        if name in _TANH_FUNCTIONS:
            return "tanh"
        return "other"
    keras_rectifiers = (
        keras.layers.ReLU,
        keras.layers.LeakyReLU,
        keras.layers.ELU,
        keras.layers.PReLU,
    )
    if isinstance(layer, keras_rectifiers):
        return "rectifier"
    import kerastricks.layers

    for name in _KERASTRICKS_RECTIFIERS:
        layer_class = getattr(kerastricks.layers, name, None)
        if isinstance(layer_class, type) and isinstance(layer, layer_class):
            return "rectifier"
    return None


def find_activation_layers(model):
    """Return `(layer, kind)` for each activation layer at the top level of `model`."""
    found = []
    for layer in model.layers:
        kind = activation_kind(layer)
        if kind is not None:
            found.append((layer, kind))
    return found


def dead_unit_fraction(outputs, axis=-1):
    """Return the fraction of units that never activate on a batch.

    A unit is one index along `axis` (a channel of a feature map or a neuron of a dense layer). It
    is dead when its output is at most zero for every example and every spatial position. For
    ReLU this is an output of exactly zero everywhere; for leaky variants it means the unit never
    leaves its negative side.

    Args:
        outputs: the layer's outputs on the batch, examples first.
        axis: the unit axis. Defaults to `-1` (channels last).

    Returns:
        A float in [0, 1].
    """
    outputs = np.moveaxis(np.asarray(outputs), axis, -1)
    per_unit_max = outputs.reshape(-1, outputs.shape[-1]).max(axis=0)
    return float(np.mean(per_unit_max <= 0.0))


def saturation_fraction(outputs, kind, epsilon=0.01):
    """Return the fraction of outputs within `epsilon` of a sigmoid or tanh asymptote.

    A sigmoid output counts as saturated when it is at most `epsilon` or at least `1 - epsilon`,
    and a tanh output when its absolute value is at least `1 - epsilon`. There the local gradient
    is at most about `epsilon` (sigmoid) or `2 * epsilon` (tanh), so little signal flows back.

    Args:
        outputs: the layer's outputs on the batch.
        kind: `"sigmoid"` or `"tanh"`.
        epsilon: the distance to the asymptote. Defaults to `0.01`.

    Returns:
        A float in [0, 1].
    """
    outputs = np.asarray(outputs)
    if kind == "sigmoid":
        saturated = (outputs <= epsilon) | (outputs >= 1.0 - epsilon)
    elif kind == "tanh":
        saturated = np.abs(outputs) >= 1.0 - epsilon
    else:
        raise ValueError(f"`kind` must be 'sigmoid' or 'tanh'. Received: kind={kind!r}.")
    return float(np.mean(saturated))


def strided_sample(values, max_values):
    """Return at most `max_values` evenly strided elements of `values`, flattened."""
    flat = np.asarray(values).reshape(-1)
    stride = max(1, -(-flat.size // max_values))
    return flat[::stride]


@keras.saving.register_keras_serializable(package="kerastricks")
class ActivationStatistics(keras.callbacks.Callback):
    """Log dead units, saturation and histograms of every activation layer on a probe batch.

    Every `every_n_epochs` epochs (and, optionally, every `every_n_steps` steps) the callback runs
    the model in inference mode on a fixed probe batch and writes, for each activation layer found
    by `activation_kind`:

    - `activations/LAYER/dead_fraction` for rectifiers (see `dead_unit_fraction`),
    - `activations/LAYER/saturation_fraction` for sigmoid and tanh (see `saturation_fraction`),
    - a histogram `activations/LAYER` of the outputs.

    Epoch summaries use the epoch index as their step; step summaries go to tags under
    `activations_by_step/` with the global step. A layer that passes `dead_threshold` or
    `saturation_threshold` raises one warning per `fit` with the usual remedy. A model with no
    activation layer raises one warning and the callback does nothing.

    Args:
        log_dir: the run's TensorBoard log directory; created if missing.
        probe_data: a fixed batch, `x` or `(x, y)`, taken from the validation split.
        every_n_epochs: log every this many epochs. Defaults to `1`.
        every_n_steps: also log every this many training steps; `None` disables it.
            Defaults to `None`.
        dead_threshold: warn when a layer's dead fraction is above this. Defaults to `0.4`, the
            share of dead units that a too high learning rate can cause.
        saturation_threshold: warn when a layer's saturation fraction is above this.
            Defaults to `0.5`.
        saturation_epsilon: the distance to an asymptote that counts as saturated.
            Defaults to `0.01`.
        histograms: whether to write activation histograms. Defaults to `True`.
        max_histogram_values: at most this many evenly strided values go into a histogram.
            Defaults to `65536`.
        subdir: the folder under `log_dir` for the event file. Defaults to `"diagnostics"`.

    Example:

    >>> callback = ActivationStatistics("runs/demo", probe_data=x_validation[:256])
    >>> model.fit(x_train, y_train, epochs=5, callbacks=[callback])  # doctest: +SKIP
    """

    def __init__(
        self,
        log_dir,
        probe_data,
        every_n_epochs=1,
        every_n_steps=None,
        dead_threshold=0.4,
        saturation_threshold=0.5,
        saturation_epsilon=0.01,
        histograms=True,
        max_histogram_values=65536,
        subdir="diagnostics",
    ):
        super().__init__()
        self.every_n_epochs = _common.check_interval("every_n_epochs", every_n_epochs)
        self.every_n_steps = _common.check_interval("every_n_steps", every_n_steps, True)
        self.dead_threshold = _common.check_fraction("dead_threshold", dead_threshold)
        self.saturation_threshold = _common.check_fraction(
            "saturation_threshold", saturation_threshold
        )
        self.saturation_epsilon = _common.check_fraction("saturation_epsilon", saturation_epsilon)
        self.histograms = bool(histograms)
        self.max_histogram_values = _common.check_interval(
            "max_histogram_values", max_histogram_values
        )
        self.probe_x, self.probe_y = _common.split_probe(probe_data)
        self.log_dir = str(_common.prepare_log_dir(log_dir))
        self.subdir = subdir
        self._writer = _common.LazyWriter(_common.prepare_log_dir(f"{log_dir}/{subdir}"))
        self._warned_no_layers = False
        self.records = []

    def on_train_begin(self, logs=None):
        self.records = []
        self._warned_layers = set()
        self._global_step = 0
        self._probe_model = None
        self._layers = find_activation_layers(self.model)
        if not self._layers:
            if not self._warned_no_layers:
                warnings.warn(
                    "ActivationStatistics found no activation layer to watch, so it logs "
                    "nothing. Use activation layers (for example keras.layers.Activation('relu') "
                    "or keras.layers.ReLU) instead of the `activation=` argument of "
                    "Dense/Conv2D, or register your layer with register_activation_layer.",
                    stacklevel=2,
                )
                self._warned_no_layers = True
            return
        _common.ensure_built(self.model, self.probe_x)
        _common.check_probe_shape(self.probe_x, self.model)
        outputs = [layer.output for layer, _ in self._layers]
        # A single input is passed bare, so calls with one array match the graph's structure.
        inputs = self.model.inputs[0] if len(self.model.inputs) == 1 else self.model.inputs
        self._probe_model = keras.Model(inputs, outputs)

    def on_epoch_end(self, epoch, logs=None):
        if self._probe_model is not None and (epoch + 1) % self.every_n_epochs == 0:
            self._log(epoch, "activations", epoch=epoch)

    def on_train_batch_end(self, batch, logs=None):
        if self.every_n_steps is None or self._probe_model is None:
            return
        self._global_step += 1
        if self._global_step % self.every_n_steps == 0:
            self._log(self._global_step, "activations_by_step", epoch=None)

    def on_train_end(self, logs=None):
        self._writer.close()

    def latest(self):
        """Return the records of the last logged epoch, keyed by layer name."""
        epochs = [record["epoch"] for record in self.records if record["epoch"] is not None]
        if not epochs:
            return {}
        last = max(epochs)
        return {r["layer"]: r for r in self.records if r["epoch"] == last}

    def _log(self, step, prefix, epoch):
        import tensorflow as tf

        outputs = self._probe_model(self.probe_x, training=False)
        if len(self._layers) == 1:
            outputs = [outputs]
        with self._writer.get().as_default(step=step):
            for (layer, kind), output in zip(self._layers, outputs):
                values = keras.ops.convert_to_numpy(output)
                record = self._measure(layer.name, kind, values, epoch)
                for key in ("dead_fraction", "saturation_fraction"):
                    if record[key] is not None:
                        tf.summary.scalar(f"{prefix}/{layer.name}/{key}", record[key])
                if self.histograms:
                    sample = strided_sample(values, self.max_histogram_values)
                    tf.summary.histogram(f"{prefix}/{layer.name}", sample)
                if epoch is not None:
                    self.records.append(record)
                self._warn_if_unhealthy(record)

    def _measure(self, name, kind, values, epoch):
        record = {
            "epoch": epoch,
            "layer": name,
            "kind": kind,
            "dead_fraction": None,
            "saturation_fraction": None,
        }
        if kind == "rectifier":
            record["dead_fraction"] = dead_unit_fraction(values)
        elif kind in ("sigmoid", "tanh"):
            record["saturation_fraction"] = saturation_fraction(
                values, kind, self.saturation_epsilon
            )
        return record

    def _warn_if_unhealthy(self, record):
        name = record["layer"]
        if name in self._warned_layers:
            return
        dead, saturated = record["dead_fraction"], record["saturation_fraction"]
        if dead is not None and dead > self.dead_threshold:
            message = (
                f"Layer {name!r}: {dead:.0%} of its units are dead (never active on the probe "
                f"batch), above the threshold {self.dead_threshold:.0%}. Lower the learning "
                f"rate, or use leaky ReLU, PReLU or RReLU."
            )
        elif saturated is not None and saturated > self.saturation_threshold:
            message = (
                f"Layer {name!r}: {saturated:.0%} of its {record['kind']} outputs are "
                f"saturated, above the threshold {self.saturation_threshold:.0%}, so its "
                f"gradients vanish. Use smaller initial weights (Glorot or LeCun), normalize "
                f"the inputs, add batch normalization, or switch to ReLU."
            )
        else:
            return
        self._warned_layers.add(name)
        warnings.warn(message, stacklevel=2)

    def get_config(self):
        return {
            "log_dir": self.log_dir,
            "probe_data": _common.probe_to_config(self.probe_x, self.probe_y),
            "every_n_epochs": self.every_n_epochs,
            "every_n_steps": self.every_n_steps,
            "dead_threshold": self.dead_threshold,
            "saturation_threshold": self.saturation_threshold,
            "saturation_epsilon": self.saturation_epsilon,
            "histograms": self.histograms,
            "max_histogram_values": self.max_histogram_values,
            "subdir": self.subdir,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["probe_data"] = _common.probe_from_config(config["probe_data"])
        return cls(**config)

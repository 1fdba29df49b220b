"""Per-layer update-to-weight ratios and gradient norms, logged as TensorBoard scalars."""

import math

import keras
import numpy as np

from kerastricks.callbacks import _common

# The usual rule of thumb for the norm of one step's update relative to the norm of the weights.
HEALTHY_UPDATE_RATIO = 1e-3


def global_norm(arrays):
    """Return the Euclidean norm of several arrays taken together."""
    return math.sqrt(sum(float(np.sum(np.square(np.asarray(a, "float64")))) for a in arrays))


def update_ratio(before, after):
    """Return `||after - before|| / ||before||` over a layer's weight arrays.

    Args:
        before: the layer's weight arrays before the update.
        after: the same arrays after the update.

    Returns:
        A float; `inf` when the weights before were all zero and changed, `0.0` when neither
        changed nor held anything but zeros.
    """
    if len(before) != len(after):
        raise ValueError(
            f"`before` and `after` must hold the same number of arrays. "
            f"Received: {len(before)} and {len(after)}."
        )
    change = global_norm([np.asarray(a, "float64") - np.asarray(b, "float64")
                          for b, a in zip(before, after)])
    base = global_norm(before)
    if base == 0.0:
        return math.inf if change > 0.0 else 0.0
    return change / base


def trainable_layers(model):
    """Return the layers that own trainable weights, nested models flattened, in order."""
    return [layer for layer in _common.iterate_layers(model) if layer.trainable_weights]


def gradient_norms(model, x, y, layers=None):
    """Return the norm of the loss gradient for each layer's trainable weights.

    The loss is the model's compiled loss (regularization included) on `(x, y)`, computed in
    inference mode so that dropout is off and batch-normalization statistics are not updated.

    Args:
        model: a compiled Keras model.
        x: a batch of inputs.
        y: the matching labels.
        layers: the layers to report. Defaults to `trainable_layers(model)`.

    Returns:
        A dict from layer name to gradient norm.
    """
    import tensorflow as tf

    layers = trainable_layers(model) if layers is None else layers
    variables = [v for layer in layers for v in layer.trainable_weights]
    with tf.GradientTape() as tape:
        y_pred = model(x, training=False)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
    gradients = tape.gradient(loss, variables)
    norms, start = {}, 0
    for layer in layers:
        count = len(layer.trainable_weights)
        grads = [g for g in gradients[start:start + count] if g is not None]
        norms[layer.name] = global_norm([g.numpy() for g in grads])
        start += count
    return norms


def _snapshot(layers):
    return [[keras.ops.convert_to_numpy(w) for w in layer.trainable_weights] for layer in layers]


@keras.saving.register_keras_serializable(package="kerastricks")
class UpdateHealth(keras.callbacks.Callback):
    """Log each trainable layer's update-to-weight ratio and gradient norm.

    Every `every_n_epochs` epochs the callback measures, for each layer with trainable weights:

    - `updates/LAYER/update_ratio`: `||W_after - W_before|| / ||W_before||` over the first
      training step of the epoch (see `update_ratio`). About `1e-3` is healthy; far above means
      the learning rate is too high, far below means it is too low.
    - `gradients/LAYER/norm`: the norm of the loss gradient on the probe batch (see
      `gradient_norms`). Norms that shrink layer by layer towards the input show vanishing
      gradients, for example from saturated sigmoids or too small initial weights.

    Summaries use the epoch index as their step. With `every_n_steps`, the update ratio of every
    n-th step is also written under `updates_by_step/` with the global step.

    NOTE: Keras calls batch hooks once per execution, so with `steps_per_execution` above 1 the
    update ratio covers that many optimizer steps, and the step counts are in executions.

    Args:
        log_dir: the run's TensorBoard log directory; created if missing.
        probe_data: a fixed `(x, y)` batch, taken from the validation split.
        every_n_epochs: measure every this many epochs. Defaults to `1`.
        every_n_steps: also measure the update ratio every this many steps; `None` disables it.
            Defaults to `None`.
        subdir: the folder under `log_dir` for the event file. Defaults to `"diagnostics"`.

    Example:

    >>> callback = UpdateHealth("runs/demo", probe_data=(x_val[:256], y_val[:256]))
    >>> model.fit(x_train, y_train, epochs=5, callbacks=[callback])  # doctest: +SKIP
    """

    def __init__(self, log_dir, probe_data, every_n_epochs=1, every_n_steps=None,
                 subdir="diagnostics"):
        super().__init__()
        self.every_n_epochs = _common.check_interval("every_n_epochs", every_n_epochs)
        self.every_n_steps = _common.check_interval("every_n_steps", every_n_steps, True)
        self.probe_x, self.probe_y = _common.split_probe(probe_data, require_labels=True)
        self.log_dir = str(_common.prepare_log_dir(log_dir))
        self.subdir = subdir
        self._writer = _common.LazyWriter(_common.prepare_log_dir(f"{log_dir}/{subdir}"))
        self.records = []

    def on_train_begin(self, logs=None):
        if getattr(self.model, "loss", None) is None:
            raise ValueError(
                "UpdateHealth needs a model compiled with a loss, because gradient norms are "
                "gradients of that loss. Call model.compile(loss=...) first."
            )
        _common.ensure_built(self.model, self.probe_x)
        _common.check_probe_shape(self.probe_x, self.model)
        self.records = []
        self._layers = trainable_layers(self.model)
        self._epoch = 0
        self._global_step = 0
        self._batch_in_epoch = 0
        self._before = None
        self._before_tag = None
        self._pending_ratios = {}

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._batch_in_epoch = 0

    def on_train_batch_begin(self, batch, logs=None):
        watched_epoch = self._batch_in_epoch == 0 and (self._epoch + 1) % self.every_n_epochs == 0
        watched_step = (
            self.every_n_steps is not None and (self._global_step + 1) % self.every_n_steps == 0
        )
        if watched_epoch or watched_step:
            self._before = _snapshot(self._layers)
            self._before_tag = (watched_epoch, watched_step)

    def on_train_batch_end(self, batch, logs=None):
        self._global_step += 1
        self._batch_in_epoch += 1
        if self._before is None:
            return
        import tensorflow as tf

        after = _snapshot(self._layers)
        ratios = {layer.name: update_ratio(b, a)
                  for layer, b, a in zip(self._layers, self._before, after)}
        watched_epoch, watched_step = self._before_tag
        self._before = None
        with self._writer.get().as_default():
            for name, ratio in ratios.items():
                if watched_epoch:
                    tf.summary.scalar(f"updates/{name}/update_ratio", ratio, step=self._epoch)
                if watched_step:
                    tf.summary.scalar(
                        f"updates_by_step/{name}/update_ratio", ratio, step=self._global_step
                    )
        if watched_epoch:
            self._pending_ratios = ratios

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs != 0:
            return
        import tensorflow as tf

        norms = gradient_norms(self.model, self.probe_x, self.probe_y, self._layers)
        ratios = self._pending_ratios
        with self._writer.get().as_default(step=epoch):
            for name, norm in norms.items():
                tf.summary.scalar(f"gradients/{name}/norm", norm)
                self.records.append({
                    "epoch": epoch,
                    "layer": name,
                    "gradient_norm": norm,
                    "update_ratio": ratios.get(name),
                })
        self._pending_ratios = {}

    def on_train_end(self, logs=None):
        self._writer.close()

    def latest(self):
        """Return the records of the last measured epoch, keyed by layer name, in layer order."""
        if not self.records:
            return {}
        last = self.records[-1]["epoch"]
        return {r["layer"]: r for r in self.records if r["epoch"] == last}

    def get_config(self):
        return {
            "log_dir": self.log_dir,
            "probe_data": _common.probe_to_config(self.probe_x, self.probe_y),
            "every_n_epochs": self.every_n_epochs,
            "every_n_steps": self.every_n_steps,
            "subdir": self.subdir,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["probe_data"] = _common.probe_from_config(config["probe_data"])
        return cls(**config)

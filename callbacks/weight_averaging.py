"""Weight averaging and checkpoint ensembles: SWA, batch-normalization re-estimation, last-K
checkpoints."""

import os
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


def batch_normalization_layers(model):
    """Return the `BatchNormalization` layers of `model`, nested models included, in order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(batch_normalization_layers(layer))
    return found


def recompute_batch_norm_statistics(model, data, batch_size=64):
    """Replace the moving statistics of every `BatchNormalization` layer with one pass's averages.

    Weights averaged over epochs (SWA) or over steps (EMA) were never used to compute the
    moving means and variances the layers hold, so those statistics describe other weights.
    This function runs the model in training mode over `data` once and sets each layer's
    `moving_mean` and `moving_variance` to the average of its per-batch means and variances,
    weighted by batch size. Averaging the per-batch (biased) variances matches what the layer
    normalizes with during training. Frozen layers (`trainable=False`) keep their statistics,
    as Keras does not update them in training mode either. No trainable weight changes.

    Args:
        model: a built Keras model.
        data: the training images: a NumPy array, or a `tf.data.Dataset` of image batches or of
            `(images, labels)` batches.
        batch_size: the batch size used to split a NumPy array. Defaults to `64`.

    Returns:
        The number of images in the pass, or 0 when the model has no updatable
        `BatchNormalization` layer (then `data` is not read).

    Raises:
        ValueError: for data that contains no images.

    Reference:
        Izmailov, Podoprikhin, Garipov, Vetrov and Wilson, "Averaging Weights Leads to Wider
        Optima and Better Generalization", UAI 2018, section 3.2.
    """
    layers = [layer for layer in batch_normalization_layers(model) if layer.trainable]
    if not layers:
        return 0
    if isinstance(data, tf.data.Dataset):
        batches = data
    else:
        batches = tf.data.Dataset.from_tensor_slices(np.asarray(data)).batch(batch_size)

    momenta = [layer.momentum for layer in layers]
    # Momentum 0 makes every call overwrite the moving statistics with the batch statistics,
    # which are read back and averaged here.
    for layer in layers:
        layer.momentum = 0.0
    forward = tf.function(lambda images: model(images, training=True))
    sums = [[np.zeros(layer.moving_mean.shape), np.zeros(layer.moving_variance.shape)] for layer in layers]
    seen = 0
    try:
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            count = int(images.shape[0])
            forward(images)
            for total, layer in zip(sums, layers):
                total[0] += count * keras.ops.convert_to_numpy(layer.moving_mean)
                total[1] += count * keras.ops.convert_to_numpy(layer.moving_variance)
            seen += count
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if seen == 0:
        raise ValueError("recompute_batch_norm_statistics() received no images. Pass the training images.")
    for (mean_sum, variance_sum), layer in zip(sums, layers):
        layer.moving_mean.assign(mean_sum / seen)
        layer.moving_variance.assign(variance_sum / seen)
    return seen


def _check_batch_norm_data(model, data, owner):
    if data is None and any(layer.trainable for layer in batch_normalization_layers(model)):
        raise ValueError(
            f"{owner} needs `data` because the model has BatchNormalization layers, whose "
            f"moving statistics must be recomputed for the averaged weights. Pass the training "
            f"images (a NumPy array or a tf.data.Dataset)."
        )


@keras.saving.register_keras_serializable(package="kerastricks")
class StochasticWeightAveraging(keras.callbacks.Callback):
    """Average the weights from a start epoch on, then recompute batch-normalization statistics.

    At the end of every epoch whose index (counted from 0, as in `on_epoch_end`) is at least
    `start_epoch`, the trainable weights are added to a running mean
    (`average += (weights - average) / n`). When training ends the model receives the averaged
    weights, and, if it has `BatchNormalization` layers, their moving statistics are recomputed
    with `recompute_batch_norm_statistics` over `data`. Without that pass the statistics belong
    to the last weights, not the averaged ones, and accuracy can drop sharply.

    Args:
        start_epoch: the index (from 0) of the first epoch whose final weights are averaged.
        data: the training images for the batch-normalization pass (a NumPy array or a
            `tf.data.Dataset`). Required when the model has trainable `BatchNormalization`
            layers. Defaults to `None`.
        learning_rate: a constant learning rate set from `start_epoch` on, as in the SWA paper;
            `None` keeps the optimizer's. Defaults to `None`.
        batch_size: the batch size of the pass over a NumPy `data`. Defaults to `64`.
        state_path: a `.npz` file that receives the running mean after every averaged epoch,
            so that a `fit` resumed from a later epoch (for example by `BackupAndRestore`)
            continues the same average. The state before it is kept beside it. A state whose
            last averaged epoch is not the one just before the resumed epoch is ignored with a
            warning. Place this callback before `BackupAndRestore`, so its state is saved first.
            Defaults to `None` (the mean lives in memory only).

    Attributes:
        averaged_epochs: the epoch indices whose weights are in the running mean.

    Example:

    >>> swa = StochasticWeightAveraging(start_epoch=5, data=x_train)  # doctest: +SKIP
    >>> model.fit(x_train, y_train, epochs=10, callbacks=[swa])  # doctest: +SKIP

    Reference:
        Izmailov, Podoprikhin, Garipov, Vetrov and Wilson, "Averaging Weights Leads to Wider
        Optima and Better Generalization", UAI 2018.
    """

    def __init__(self, start_epoch, data=None, learning_rate=None, batch_size=64, state_path=None):
        super().__init__()
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0:
            raise ValueError(f"`start_epoch` must be an integer >= 0. Received: start_epoch={start_epoch!r}.")
        if learning_rate is not None and not learning_rate > 0:
            raise ValueError(
                f"`learning_rate` must be positive or None. Received: learning_rate={learning_rate!r}."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}.")
        self.start_epoch = start_epoch
        self.data = data
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.state_path = None if state_path is None else Path(state_path)
        self.averaged_epochs = []
        self._average = None
        self._first_epoch = True

    def on_train_begin(self, logs=None):
        _check_batch_norm_data(self.model, self.data, "StochasticWeightAveraging")
        self.averaged_epochs = []
        self._average = None
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch:
            self._first_epoch = False
            self._load_state(epoch)
        if self.learning_rate is not None and epoch >= self.start_epoch:
            self.model.optimizer.learning_rate = self.learning_rate

    def _load_state(self, epoch):
        """Continue the running mean saved by an earlier `fit` that stopped before `epoch`."""
        if self.state_path is None or epoch == 0:
            return
        # The newest state may be one epoch ahead of the weights being resumed (a kill between
        # this callback's save and the backup's), so the state before it is kept as well.
        found = []
        for path in (self.state_path, self._previous_state_path()):
            if not path.is_file():
                continue
            with np.load(path) as state:
                averaged_epochs = [int(value) for value in state["averaged_epochs"]]
                if averaged_epochs and averaged_epochs[-1] == epoch - 1:
                    self.averaged_epochs = averaged_epochs
                    self._average = [state[f"weight_{index}"]
                                     for index in range(len(self.model.trainable_weights))]
                    return
                found.append(averaged_epochs[-1] if averaged_epochs else None)
        if found:
            warnings.warn(
                f"StochasticWeightAveraging ignores {self.state_path}: its last averaged epochs "
                f"({found}) do not end just before the resumed epoch {epoch}, so the average "
                f"restarts here.",
                stacklevel=2,
            )

    def _previous_state_path(self):
        return self.state_path.with_name(self.state_path.stem + ".previous.npz")

    def _save_state(self):
        arrays = {f"weight_{index}": mean for index, mean in enumerate(self._average)}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_name(self.state_path.stem + ".tmp.npz")
        np.savez(temporary, averaged_epochs=np.asarray(self.averaged_epochs), **arrays)
        # Renames are atomic, so a kill at any point leaves a complete state in one of the files.
        if self.state_path.is_file():
            os.replace(self.state_path, self._previous_state_path())
        os.replace(temporary, self.state_path)

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_epoch:
            return
        weights = [keras.ops.convert_to_numpy(w).astype("float64") for w in self.model.trainable_weights]
        self.averaged_epochs.append(epoch)
        if self._average is None:
            self._average = weights
        else:
            count = len(self.averaged_epochs)
            self._average = [mean + (new - mean) / count for mean, new in zip(self._average, weights)]
        if self.state_path is not None:
            self._save_state()

    def on_train_end(self, logs=None):
        if self._first_epoch and self.params and self.params.get("epochs"):
            # No epoch ran in this `fit`: a run resumed after its last epoch (killed before it
            # finished) continues the saved mean, which already covers every epoch.
            self._load_state(self.params["epochs"])
        if self._average is None:
            warnings.warn(
                f"StochasticWeightAveraging averaged nothing: training stopped before "
                f"start_epoch={self.start_epoch}. The model keeps its last weights.",
                stacklevel=2,
            )
            return
        for variable, mean in zip(self.model.trainable_weights, self._average):
            variable.assign(mean.astype(variable.dtype))
        if self.data is not None:
            recompute_batch_norm_statistics(self.model, self.data, self.batch_size)

    def get_config(self):
        # The data is not serializable and must be passed again.
        return {"start_epoch": self.start_epoch, "learning_rate": self.learning_rate,
                "batch_size": self.batch_size,
                "state_path": None if self.state_path is None else str(self.state_path)}


@keras.saving.register_keras_serializable(package="kerastricks")
class RecomputeBatchNormStatistics(keras.callbacks.Callback):
    """Recompute batch-normalization statistics over `data` when training ends.

    Use it after `fit` replaced the weights with averaged ones, as Keras does for an optimizer
    with `use_ema=True` (it copies the moving averages into the model before `on_train_end`).

    Args:
        data: the training images, a NumPy array or a `tf.data.Dataset`.
        batch_size: the batch size of the pass over a NumPy `data`. Defaults to `64`.
    """

    def __init__(self, data, batch_size=64):
        super().__init__()
        if data is None:
            raise ValueError("RecomputeBatchNormStatistics needs `data`. Received: data=None.")
        self.data = data
        self.batch_size = batch_size

    def on_train_end(self, logs=None):
        recompute_batch_norm_statistics(self.model, self.data, self.batch_size)

    def get_config(self):
        return {"batch_size": self.batch_size}


@keras.saving.register_keras_serializable(package="kerastricks")
class KeepLastCheckpoints(keras.callbacks.Callback):
    """Save the model after every epoch and keep only the last `keep` files.

    The kept files form a checkpoint ensemble: models from the last epochs of one run, loaded
    with `kerastricks.recipes.ensembles.load_members`.

    Args:
        directory: the folder that receives the checkpoints; created if missing.
        keep: the number of most recent checkpoints kept; older ones are deleted.
        filename: the file name, formatted with `epoch` (counted from 1). Defaults to
            `"epoch-{epoch:03d}.keras"`, whose names sort in epoch order.

    Attributes:
        paths: the kept checkpoint paths, oldest first.
    """

    def __init__(self, directory, keep, filename="epoch-{epoch:03d}.keras"):
        super().__init__()
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"`keep` must be a positive integer. Received: keep={keep!r}.")
        if "{epoch" not in filename or not filename.endswith(".keras"):
            raise ValueError(
                f"`filename` must contain '{{epoch}}' and end with '.keras'. Received: filename={filename!r}."
            )
        self.directory = str(directory)
        self.keep = keep
        self.filename = filename
        self.paths = []

    def on_train_begin(self, logs=None):
        Path(self.directory).mkdir(parents=True, exist_ok=True)
        self.paths = []

    def on_epoch_end(self, epoch, logs=None):
        path = Path(self.directory) / self.filename.format(epoch=epoch + 1)
        self.model.save(path)
        self.paths.append(str(path))
        while len(self.paths) > self.keep:
            Path(self.paths.pop(0)).unlink(missing_ok=True)

    def on_train_end(self, logs=None):
        if len(self.paths) < self.keep:
            warnings.warn(
                f"KeepLastCheckpoints kept {len(self.paths)} checkpoints, fewer than keep={self.keep}, "
                f"because training ran only {len(self.paths)} epochs.",
                stacklevel=2,
            )

    def get_config(self):
        return {"directory": self.directory, "keep": self.keep, "filename": self.filename}

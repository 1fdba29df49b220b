"""Snapshot ensembles: a cyclic cosine learning rate that saves one model per cycle."""

from pathlib import Path

import keras
import numpy as np


def cyclic_cosine_learning_rate(step, cycle_steps, max_learning_rate, min_learning_rate=0.0):
    """Return the learning rate of the cyclic cosine schedule at `step` (counted from 0).

    Each cycle of `cycle_steps` steps starts at `max_learning_rate` and anneals along half a
    cosine towards `min_learning_rate`; the next cycle restarts at `max_learning_rate`:

        lr(step) = min + (max - min) / 2 * (1 + cos(pi * (step mod cycle_steps) / cycle_steps))

    With `min_learning_rate=0` this is equation 2 of Huang et al. (2017).

    Args:
        step: the training step, counted from 0; an integer or an integer NumPy array.
        cycle_steps: the number of steps in one cycle.
        max_learning_rate: the learning rate at the start of each cycle.
        min_learning_rate: the learning rate the cosine approaches at the end of a cycle.
            Defaults to `0.0`.

    Returns:
        A float, or a float NumPy array for an array of steps.

    Example:

    >>> cyclic_cosine_learning_rate([0, 5, 10], cycle_steps=10, max_learning_rate=0.1)
    array([0.1 , 0.05, 0.1 ])
    """
    position = np.mod(np.asarray(step), cycle_steps) / cycle_steps
    rate = min_learning_rate + 0.5 * (max_learning_rate - min_learning_rate) * (
        1.0 + np.cos(np.pi * position)
    )
    return float(rate) if np.ndim(rate) == 0 else rate


@keras.saving.register_keras_serializable(package="kerastricks")
class SnapshotEnsemble(keras.callbacks.Callback):
    """Train with a cyclic cosine learning rate and save a snapshot at the end of each cycle.

    The `epochs` of a run are split into `cycles` cycles of `epochs // cycles` epochs. Within a
    cycle the learning rate follows `cyclic_cosine_learning_rate` step by step, so it restarts
    at `max_learning_rate` on the first step of every cycle. At the end of each cycle the model
    is saved as a `.keras` file, so one run gives `cycles` models to average.

    The number of cycles must divide the number of epochs, so that every cycle ends at an epoch
    boundary: a rounded cycle length would leave a truncated last cycle whose snapshot was never
    annealed.

    Args:
        cycles: the number of cycles M, which is also the number of snapshots saved.
        epochs: the number of epochs the model is fit for; `fit` must use the same number.
        max_learning_rate: the learning rate at the start of each cycle.
        directory: the folder that receives the snapshots; created if missing.
        min_learning_rate: the learning rate the cosine approaches at the end of each cycle.
            Defaults to `0.0`.
        filename: the snapshot file name, formatted with `cycle` (counted from 1). Defaults to
            `"snapshot-{cycle}.keras"`.
        steps_per_epoch: the number of steps per epoch. Defaults to `None`, which uses the
            `steps` value Keras passes to callbacks (known for arrays and for `tf.data`
            pipelines of known length).

    Attributes:
        snapshot_paths: the paths of the snapshots saved by the last `fit`, in cycle order.
        learning_rates: the learning rate set for each step of the last `fit`.

    Example:

    >>> callback = SnapshotEnsemble(cycles=3, epochs=6, max_learning_rate=0.1,
    ...                             directory="snapshots")
    >>> # model.fit(x, y, epochs=6, callbacks=[callback]) saves 3 models.

    Reference:
        Huang, Li, Pleiss, Liu, Hopcroft and Weinberger, "Snapshot Ensembles: Train 1, get M
        for free", ICLR 2017.
    """

    def __init__(self, cycles, epochs, max_learning_rate, directory, min_learning_rate=0.0,
                 filename="snapshot-{cycle}.keras", steps_per_epoch=None):
        super().__init__()
        for name, value in (("cycles", cycles), ("epochs", epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}.")
        if epochs % cycles != 0:
            lower = max(c for c in range(1, cycles + 1) if epochs % c == 0)
            raise ValueError(
                f"`cycles` must divide `epochs` so that every cycle ends at an epoch boundary. "
                f"Received: cycles={cycles}, epochs={epochs}. Use {lower} cycles or "
                f"{epochs + (-epochs) % cycles} epochs."
            )
        if not max_learning_rate > 0:
            raise ValueError(
                f"`max_learning_rate` must be positive. Received: max_learning_rate={max_learning_rate!r}."
            )
        if not 0 <= min_learning_rate < max_learning_rate:
            raise ValueError(
                f"`min_learning_rate` must be >= 0 and smaller than max_learning_rate="
                f"{max_learning_rate}. Received: min_learning_rate={min_learning_rate!r}."
            )
        if "{cycle" not in filename or not filename.endswith(".keras"):
            raise ValueError(
                f"`filename` must contain '{{cycle}}' and end with '.keras'. Received: filename={filename!r}."
            )
        if steps_per_epoch is not None and (
            isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1
        ):
            raise ValueError(
                f"`steps_per_epoch` must be a positive integer or None. "
                f"Received: steps_per_epoch={steps_per_epoch!r}."
            )
        self.cycles = cycles
        self.epochs = epochs
        self.max_learning_rate = float(max_learning_rate)
        self.min_learning_rate = float(min_learning_rate)
        self.directory = str(directory)
        self.filename = filename
        self.steps_per_epoch = steps_per_epoch
        self.snapshot_paths = []
        self.learning_rates = []

    @property
    def cycle_epochs(self):
        """The number of epochs in one cycle."""
        return self.epochs // self.cycles

    def on_train_begin(self, logs=None):
        fit_epochs = self.params.get("epochs")
        if fit_epochs != self.epochs:
            raise ValueError(
                f"SnapshotEnsemble was built for epochs={self.epochs}, but fit() runs "
                f"{fit_epochs} epochs. Pass the same number of epochs to both."
            )
        steps = self.steps_per_epoch or self.params.get("steps")
        if not steps:
            raise RuntimeError(
                "SnapshotEnsemble cannot tell the number of steps per epoch, because the "
                "training data has no known length. Pass `steps_per_epoch`."
            )
        self._steps = int(steps)
        self._epoch = 0
        self.snapshot_paths = []
        self.learning_rates = []
        Path(self.directory).mkdir(parents=True, exist_ok=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        step_in_cycle = (self._epoch % self.cycle_epochs) * self._steps + batch
        rate = cyclic_cosine_learning_rate(
            step_in_cycle, self.cycle_epochs * self._steps, self.max_learning_rate,
            self.min_learning_rate,
        )
        self.model.optimizer.learning_rate = rate
        self.learning_rates.append(rate)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.cycle_epochs != 0:
            return
        cycle = (epoch + 1) // self.cycle_epochs
        path = Path(self.directory) / self.filename.format(cycle=cycle)
        self.model.save(path)
        self.snapshot_paths.append(str(path))

    def get_config(self):
        return {
            "cycles": self.cycles,
            "epochs": self.epochs,
            "max_learning_rate": self.max_learning_rate,
            "directory": self.directory,
            "min_learning_rate": self.min_learning_rate,
            "filename": self.filename,
            "steps_per_epoch": self.steps_per_epoch,
        }


"""The state of a run folder: status, per-epoch history and resumable training order.

A run folder's `status.json` contains `{"state": ...}` with one of `running`, `complete`, `failed` or
`interrupted`; failed and interrupted runs also record the error. `history.json` gains one entry per
finished epoch, so a run resumed in a new process still reports every epoch.
"""

import errno
import json
import math
import os
import shutil
import signal
import threading
from pathlib import Path

import keras
import tensorflow as tf

RUNNING, COMPLETE, FAILED, INTERRUPTED = "running", "complete", "failed", "interrupted"

# Room for event files, figures and the backup beside the model, checked before training starts.
MINIMUM_FREE_BYTES = 50 * 2**20


class TrainingFailed(RuntimeError):
    """Training stopped on a problem the user must fix (a non-finite loss, a full disk)."""


def write_json(path, values):
    """Write JSON through a temporary file and a rename, so no reader sees a half-written file."""
    temporary = Path(f"{path}.tmp")
    temporary.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_status(run_dir):
    """Return the run folder's status dictionary, or `None` where it has none."""
    path = Path(run_dir) / "status.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {"state": FAILED, "error": "status.json is corrupt"}


def write_status(run_dir, state, **details):
    """Record the run's state; a full disk at this point is reported, not raised again."""
    try:
        write_json(Path(run_dir) / "status.json", {"state": state, **details})
    except OSError:
        pass


def check_free_space(run_dir, model):
    """Raise `TrainingFailed` before training when the disk cannot hold the run's files."""
    model_bytes = sum(math.prod(variable.shape) * 4 for variable in model.variables)
    # The saved model, its optimizer state and the backup each take about the model's size.
    needed = 4 * model_bytes + MINIMUM_FREE_BYTES
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise TrainingFailed(
            f"Not enough free disk space in {run_dir}: {free / 2**20:.0f} MiB free, about "
            f"{needed / 2**20:.0f} MiB needed for the model, its backup and the logs. "
            f"Free some space or choose another --logdir."
        )


def describe_os_error(error, run_dir):
    """Return a message for an `OSError` raised while writing the run folder."""
    if error.errno == errno.ENOSPC:
        return (f"The disk is full (while writing {error.filename or run_dir}). Free some space, "
                f"then resume with --run-dir {run_dir}.")
    return f"Cannot write the run folder {run_dir}: {error}."


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup is never half-written.

    Keras's callback overwrites `latest.weights.h5` in place, so a Ctrl-C or a kill during the
    save leaves a file that cannot be loaded and a run that cannot be resumed. Here each epoch's
    weights go to a new file, and the metadata that names it is replaced atomically afterwards,
    so an interrupted save leaves the previous epoch's backup in force.
    """

    def _save_model(self):
        backup_dir = Path(self.backup_dir)
        backup_dir.mkdir(parents=True, exist_ok=True)
        weights = backup_dir / f"epoch-{self._current_epoch}.weights.h5"
        self.model.save_weights(weights, overwrite=True)
        write_json(self._training_metadata_path, {
            "epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": weights.name,
        })
        for older in backup_dir.glob("epoch-*.weights.h5"):
            if older != weights:
                older.unlink()

    def _load_model(self):
        metadata = Path(self._training_metadata_path)
        if metadata.is_file():
            name = json.loads(metadata.read_text(encoding="utf-8")).get("weights")
            if name:
                self._weights_path = str(Path(self.backup_dir) / name)
        super()._load_model()


class StopOnInterrupt(keras.callbacks.Callback):
    """Turns Ctrl-C (SIGINT) into a `KeyboardInterrupt` raised at the end of the current batch.

    Python delivers SIGINT wherever the main thread happens to be, and a `KeyboardInterrupt`
    raised inside a weak-reference callback or `__del__` is printed and ignored, so training
    would go on. Here the signal only sets a flag, and the callback raises at the next batch
    boundary, which always reaches the caller. A second Ctrl-C raises at once.
    """

    def __init__(self):
        super().__init__()
        self._requested = False
        self._previous_handler = None

    def on_train_begin(self, logs=None):
        self._requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self._requested:
            raise KeyboardInterrupt
        self._requested = True

    def on_train_batch_end(self, batch, logs=None):
        if self._requested:
            self._restore()
            raise KeyboardInterrupt

    def on_train_end(self, logs=None):
        self._restore()

    def _restore(self):
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None


class ShuffleEpoch(keras.callbacks.Callback):
    """Sets the training pipeline's epoch variable so each epoch's order depends on its number."""

    def __init__(self, epoch_variable):
        super().__init__()
        self.epoch_variable = epoch_variable

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_variable.assign(epoch)


class EpochHistory(keras.callbacks.Callback):
    """Writes each finished epoch's logs to `history.json`, keeping the epochs of earlier processes.

    Keras's `History` only contains the epochs of the current `fit` call; after a resume the
    earlier epochs come from this file.
    """

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)
        self.epochs = []

    def on_train_begin(self, logs=None):
        self.epochs = []
        if self.path.is_file():
            self.epochs = json.loads(self.path.read_text(encoding="utf-8"))

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()}}
        self.epochs = [item for item in self.epochs if item["epoch"] < epoch] + [entry]
        write_json(self.path, self.epochs)

    def as_history(self):
        """Return the epochs as Keras's `History.history` layout: {metric: [value per epoch]}."""
        keys = sorted({key for item in self.epochs for key in item if key != "epoch"})
        return {key: [item.get(key) for item in self.epochs] for key in keys}


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose loss or weights are NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN`, it also checks the weights, because Keras's
    cross-entropy clips probabilities: a NaN batch turns the weights into NaN while the reported
    loss stays finite. It keeps the epoch, step and cause in `failure` for the caller to report.
    """

    def __init__(self):
        super().__init__()
        self.failure = None
        self._epoch = 0
        self._weights_finite = None

    def on_train_begin(self, logs=None):
        self.failure = None
        variables = list(self.model.trainable_variables)

        @tf.function
        def weights_finite():
            return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])

        self._weights_finite = weights_finite

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            cause = f"the loss became {float(loss)}"
        elif self._weights_finite is not None and not bool(self._weights_finite()):
            cause = "the weights became NaN or infinite"
        else:
            return
        self.failure = {"epoch": self._epoch + 1, "step": batch + 1, "cause": cause}
        self.model.stop_training = True

    def message(self):
        failure = self.failure
        return (
            f"Training diverged at epoch {failure['epoch']}, step {failure['step']}: "
            f"{failure['cause']}. Try a lower learning rate (--set learning_rate=...), check the "
            f"data for NaN or infinite values, or clip the gradients (--set clipnorm=1.0)."
        )

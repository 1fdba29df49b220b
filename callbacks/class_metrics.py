"""Per-class metrics for imbalanced data: recall per class, balanced accuracy and macro F1."""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from kerastricks.callbacks import _common


def class_metrics(labels, predicted, class_names):
    """Compute recall per class, balanced accuracy and macro F1 from predicted class indices.

    Balanced accuracy is the mean recall over the classes that occur in `labels`; macro F1 is
    the unweighted mean of the per-class F1 scores (scikit-learn's definitions). A class
    without images in `labels` gets recall `None`.

    Args:
        labels: the true class indices.
        predicted: the predicted class indices.
        class_names: the class names, in index order.

    Returns:
        A dict with `balanced_accuracy`, `macro_f1` and `recall_per_class` (class name to
        recall).
    """
    labels = np.asarray(labels).reshape(-1)
    predicted = np.asarray(predicted).reshape(-1)
    indices = list(range(len(class_names)))
    recalls = recall_score(labels, predicted, labels=indices, average=None, zero_division=0)
    present = set(np.unique(labels).tolist())
    return {
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, labels=sorted(present), average="macro",
                                   zero_division=0)),
        "recall_per_class": {
            name: (float(recalls[i]) if i in present else None)
            for i, name in enumerate(class_names)
        },
    }


@keras.saving.register_keras_serializable(package="kerastricks")
class ClassMetrics(keras.callbacks.Callback):
    """Log balanced accuracy, macro F1 and recall per class on validation data each epoch.

    The scalars go to the `validation` run of the TensorBoard log directory as
    `epoch_balanced_accuracy`, `epoch_macro_f1` and `recall/<class name>`, next to Keras's own
    `epoch_accuracy`. They are also added to the epoch's `logs` as `val_balanced_accuracy` and
    `val_macro_f1`, for callbacks that run after this one.

    Args:
        validation_data: a tuple `(images, labels)` of NumPy arrays.
        class_names: the class names, in index order.
        log_dir: the TensorBoard log directory; `None` only updates `logs`. Defaults to `None`.
        batch_size: the prediction batch size. Defaults to `256`.

    Attributes:
        history: one `class_metrics` dict per epoch of the last `fit`.

    Example:

    >>> callback = ClassMetrics((x_val, y_val), ["cat", "dog"], log_dir="runs/one")
    >>> # model.fit(..., callbacks=[callback])
    """

    def __init__(self, validation_data, class_names, log_dir=None, batch_size=256):
        super().__init__()
        if not isinstance(validation_data, tuple) or len(validation_data) != 2:
            raise TypeError(
                f"validation_data must be a tuple (images, labels). Received: "
                f"{type(validation_data).__name__}."
            )
        self.validation_data = validation_data
        self.class_names = list(class_names)
        self.log_dir = None if log_dir is None else str(log_dir)
        self.batch_size = batch_size
        self.history = []
        self._writer = None

    def on_train_begin(self, logs=None):
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        images, labels = self.validation_data
        probabilities = self.model.predict(images, batch_size=self.batch_size, verbose=0)
        metrics = class_metrics(labels, np.argmax(probabilities, axis=-1), self.class_names)
        self.history.append(metrics)
        if logs is not None:
            logs["val_balanced_accuracy"] = metrics["balanced_accuracy"]
            logs["val_macro_f1"] = metrics["macro_f1"]
        if self.log_dir is None:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(Path(self.log_dir) / "validation"))
        with self._writer.as_default(step=epoch):
            tf.summary.scalar("epoch_balanced_accuracy", metrics["balanced_accuracy"])
            tf.summary.scalar("epoch_macro_f1", metrics["macro_f1"])
            for name, recall in metrics["recall_per_class"].items():
                if recall is not None:
                    tf.summary.scalar(f"recall/{name}", recall)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def get_config(self):
        images, labels = self.validation_data
        return {
            "validation_data": _common.probe_to_config(np.asarray(images), np.asarray(labels)),
            "class_names": self.class_names,
            "log_dir": self.log_dir,
            "batch_size": self.batch_size,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["validation_data"] = _common.probe_from_config(config["validation_data"])
        return cls(**config)

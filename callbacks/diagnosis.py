"""A short text diagnosis of a finished run, each finding with its usual remedy."""

import dataclasses
import math
from pathlib import Path

import keras
import numpy as np

from kerastricks.callbacks import _common

# Thresholds of the rules below; each is a keyword argument of `diagnose`.
DEFAULT_THRESHOLDS = {
    "overfitting_gap": 0.05,
    "flat_loss_change": 0.01,
    "dead_fraction": 0.4,
    "saturation_fraction": 0.5,
    "high_update_ratio": 1e-2,
    "low_update_ratio": 1e-5,
    "vanishing_gradient_ratio": 1e-2,
}


@dataclasses.dataclass
class Finding:
    """One problem found in a run: a stable key, what was seen, and what usually fixes it."""

    key: str
    message: str
    remedy: str

    def __str__(self):
        return f"- {self.message} Remedy: {self.remedy}"


def _loss_findings(history, flat_loss_change):
    losses = np.asarray(history.get("loss", []), dtype="float64")
    if losses.size == 0:
        return []
    if not np.all(np.isfinite(losses)):
        return [Finding(
            "diverging_loss",
            "The training loss became NaN or infinite.",
            "lower the learning rate by 3 to 10 times, or clip gradients.",
        )]
    if losses.size >= 2 and losses[-1] > losses[0]:
        return [Finding(
            "diverging_loss",
            f"The training loss rose from {losses[0]:.4g} to {losses[-1]:.4g}.",
            "lower the learning rate by 3 to 10 times.",
        )]
    if losses.size >= 2 and (losses[0] - losses[-1]) < flat_loss_change * abs(losses[0]):
        return [Finding(
            "flat_loss",
            f"The training loss barely moved ({losses[0]:.4g} to {losses[-1]:.4g}).",
            "raise the learning rate, and check for saturated units or vanishing gradients "
            "(initialization, input scaling).",
        )]
    return []


def _gap_findings(history, overfitting_gap):
    train, validation = history.get("accuracy"), history.get("val_accuracy")
    if not train or not validation:
        return []
    gap = float(train[-1]) - float(validation[-1])
    if gap <= overfitting_gap:
        return []
    return [Finding(
        "overfitting",
        f"Training accuracy {train[-1]:.3f} exceeds validation accuracy {validation[-1]:.3f} "
        f"by {gap:.3f} (overfitting).",
        "add regularization (L2, dropout, data augmentation), collect more data, or use a "
        "smaller model.",
    )]


def _activation_findings(records, dead_threshold, saturation_threshold):
    dead = [(r["layer"], r["dead_fraction"]) for r in records
            if r.get("dead_fraction") is not None and r["dead_fraction"] > dead_threshold]
    saturated = [(r["layer"], r["saturation_fraction"]) for r in records
                 if r.get("saturation_fraction") is not None
                 and r["saturation_fraction"] > saturation_threshold]
    findings = []
    if dead:
        listed = ", ".join(f"{name} {value:.0%}" for name, value in dead)
        findings.append(Finding(
            "dead_units",
            f"Layers with more than {dead_threshold:.0%} dead units: {listed}.",
            "lower the learning rate, or use leaky ReLU, PReLU or RReLU.",
        ))
    if saturated:
        listed = ", ".join(f"{name} {value:.0%}" for name, value in saturated)
        findings.append(Finding(
            "saturated_units",
            f"Layers with more than {saturation_threshold:.0%} saturated outputs: {listed}.",
            "use smaller initial weights (Glorot or LeCun), normalize the inputs, add batch "
            "normalization, or switch to ReLU.",
        ))
    return findings


def _update_findings(records, high, low, vanishing_ratio):
    findings = []
    ratios = [r["update_ratio"] for r in records
              if r.get("update_ratio") is not None and math.isfinite(r["update_ratio"])]
    if ratios:
        median = float(np.median(ratios))
        if median > high:
            findings.append(Finding(
                "large_updates",
                f"The median update-to-weight ratio is {median:.2g}, far above about 1e-3.",
                "lower the learning rate.",
            ))
        elif median < low:
            findings.append(Finding(
                "small_updates",
                f"The median update-to-weight ratio is {median:.2g}, far below about 1e-3.",
                "raise the learning rate, or check for vanishing gradients.",
            ))
    norms = [r["gradient_norm"] for r in records if r.get("gradient_norm") is not None]
    if len(norms) >= 2 and max(norms) > 0 and norms[0] < vanishing_ratio * max(norms):
        findings.append(Finding(
            "vanishing_gradients",
            f"The first layer's gradient norm ({norms[0]:.2g}) is below {vanishing_ratio:g} of "
            f"the largest ({max(norms):.2g}), so gradients vanish towards the input.",
            "use ReLU-family activations, He initialization, or batch normalization.",
        ))
    return findings


def diagnose(history, activation_records=(), update_records=(), **thresholds):
    """Return the problems found in a run, each with the usual remedy.

    The rules, with their thresholds (keyword arguments, defaults in `DEFAULT_THRESHOLDS`):

    - `diverging_loss`: the training loss is not finite, or ended above where it started.
    - `flat_loss`: it fell by less than `flat_loss_change` (a fraction of its first value).
    - `overfitting`: final training accuracy minus validation accuracy above `overfitting_gap`.
    - `dead_units` / `saturated_units`: a layer above `dead_fraction` / `saturation_fraction`.
    - `large_updates` / `small_updates`: the median update ratio above `high_update_ratio` or
      below `low_update_ratio`.
    - `vanishing_gradients`: the first layer's gradient norm below `vanishing_gradient_ratio`
      times the largest layer's.

    Args:
        history: a `keras.callbacks.History` or its dict (`loss`, `accuracy`, `val_accuracy`).
        activation_records: the last epoch's records of `ActivationStatistics` (dicts with
            `layer`, `dead_fraction`, `saturation_fraction`). Defaults to none.
        update_records: the last epoch's records of `UpdateHealth` in layer order (dicts with
            `layer`, `update_ratio`, `gradient_norm`). Defaults to none.
        **thresholds: overrides of `DEFAULT_THRESHOLDS`.

    Returns:
        A list of `Finding`; empty when nothing was found.
    """
    unknown = sorted(set(thresholds) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise ValueError(
            f"Unknown threshold {unknown[0]!r}. Expected one of {sorted(DEFAULT_THRESHOLDS)}."
        )
    limits = {**DEFAULT_THRESHOLDS, **thresholds}
    history = getattr(history, "history", history) or {}
    return [
        *_loss_findings(history, limits["flat_loss_change"]),
        *_gap_findings(history, limits["overfitting_gap"]),
        *_activation_findings(
            list(activation_records), limits["dead_fraction"], limits["saturation_fraction"]
        ),
        *_update_findings(
            list(update_records), limits["high_update_ratio"], limits["low_update_ratio"],
            limits["vanishing_gradient_ratio"],
        ),
    ]


def format_diagnosis(findings):
    """Return the findings as a short text, one line each, or a line saying none was found."""
    if not findings:
        return "Diagnosis: no problems found."
    return "\n".join(["Diagnosis:", *(str(finding) for finding in findings)])


@keras.saving.register_keras_serializable(package="kerastricks")
class RunDiagnosis(keras.callbacks.Callback):
    """Diagnose the run at the end of training and keep (and optionally save) the text.

    The callback collects the epoch logs and, in `on_train_end`, calls `diagnose` with the latest
    records of the given `ActivationStatistics` and `UpdateHealth` callbacks. The findings are in
    `findings` and the text in `text`; with `path` set the text is also written there.

    Args:
        activation_statistics: an `ActivationStatistics` callback of the same `fit`, or `None`.
        update_health: an `UpdateHealth` callback of the same `fit`, or `None`.
        path: a file to write the text to, or `None`. Defaults to `None`.
        **thresholds: overrides of `DEFAULT_THRESHOLDS`, checked here.
    """

    def __init__(self, activation_statistics=None, update_health=None, path=None, **thresholds):
        super().__init__()
        unknown = sorted(set(thresholds) - set(DEFAULT_THRESHOLDS))
        if unknown:
            raise ValueError(
                f"Unknown threshold {unknown[0]!r}. Expected one of {sorted(DEFAULT_THRESHOLDS)}."
            )
        self.activation_statistics = activation_statistics
        self.update_health = update_health
        self.path = None if path is None else str(path)
        if self.path is not None:
            _common.prepare_log_dir(Path(self.path).parent, "path")
        self.thresholds = thresholds
        self.findings = []
        self.text = ""

    def on_train_begin(self, logs=None):
        self.history = {}
        self.findings = []
        self.text = ""

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))

    def on_train_end(self, logs=None):
        activations = self.activation_statistics.latest() if self.activation_statistics else {}
        updates = self.update_health.latest() if self.update_health else {}
        self.findings = diagnose(
            self.history, activations.values(), updates.values(), **self.thresholds
        )
        self.text = format_diagnosis(self.findings)
        if self.path is not None:
            Path(self.path).write_text(self.text + "\n", encoding="utf-8")

    def get_config(self):
        # The companion callbacks are objects of the same fit; they are not part of the config.
        return {"path": self.path, **self.thresholds}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def diagnostics_callbacks(log_dir, validation_data, class_names=None, probe_size=256,
                          every_n_epochs=1, confusion_examples=2000, seed=0):
    """Return the default diagnostics callbacks, with settings cheap enough for every run.

    The probe batch is `probe_size` validation examples chosen with `seed`. Activation
    statistics, update ratios and gradient norms are measured on it every `every_n_epochs`
    epochs. The figures are drawn once, at the end of training, and the confusion matrix uses at
    most `confusion_examples` validation examples. The text diagnosis goes to
    `log_dir/diagnosis.txt`.

    Args:
        log_dir: the run's TensorBoard log directory.
        validation_data: `(x, y)` validation arrays with integer labels.
        class_names: the class names for the confusion matrix. Defaults to the indices.
        probe_size: the number of examples in the probe batch. Defaults to `256`.
        every_n_epochs: measure every this many epochs. Defaults to `1`.
        confusion_examples: the maximum number of examples in the confusion matrix.
            Defaults to `2000`.
        seed: the seed that picks the examples. Defaults to `0`.

    Returns:
        `[ActivationStatistics, UpdateHealth, TrainingFigures, RunDiagnosis]`, in the order
        they must run: the diagnosis reads the first two.
    """
    from kerastricks.callbacks.activation_stats import ActivationStatistics
    from kerastricks.callbacks.training_figures import TrainingFigures
    from kerastricks.callbacks.update_health import UpdateHealth

    x, y = _common.split_probe(validation_data, "validation_data", require_labels=True)
    probe_size = _common.check_interval("probe_size", probe_size)
    confusion_examples = _common.check_interval("confusion_examples", confusion_examples)
    order = np.random.default_rng(seed).permutation(len(x))
    probe = order[:probe_size]
    confusion = np.sort(order[:confusion_examples])

    activations = ActivationStatistics(log_dir, x[probe], every_n_epochs=every_n_epochs)
    updates = UpdateHealth(log_dir, (x[probe], y[probe]), every_n_epochs=every_n_epochs)
    figures = TrainingFigures(
        log_dir, validation_data=(x[confusion], y[confusion]), class_names=class_names
    )
    diagnosis = RunDiagnosis(activations, updates, path=Path(log_dir) / "diagnosis.txt")
    return [activations, updates, figures, diagnosis]

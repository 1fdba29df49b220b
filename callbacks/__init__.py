"""Keras callbacks that log the diagnostics of training to TensorBoard, and a learning-rate finder."""

from kerastricks.callbacks.activation_stats import (
    ActivationStatistics,
    activation_kind,
    dead_unit_fraction,
    find_activation_layers,
    register_activation_layer,
    saturation_fraction,
)
from kerastricks.callbacks.class_metrics import ClassMetrics, class_metrics
from kerastricks.callbacks.diagnosis import (
    Finding,
    RunDiagnosis,
    diagnose,
    diagnostics_callbacks,
    format_diagnosis,
)
from kerastricks.callbacks.figures import (
    figure_to_image,
    figure_to_png,
    filter_mosaic,
    plot_accuracy_gap,
    plot_confusion_matrix,
    plot_filters,
    plot_learning_rate,
    plot_loss_curves,
    plot_lr_finder,
)
from kerastricks.callbacks.fine_tuning import GradualUnfreezing, layer_group_names
from kerastricks.callbacks.lr_finder import LRFinderResult, find_learning_rate, suggest_learning_rate
from kerastricks.callbacks.schedules import (
    SCHEDULE_OPTIONS,
    SCHEDULES,
    OneCycle,
    check_schedule,
    learning_rate_schedule,
    plateau_callback,
)
from kerastricks.callbacks.snapshot import SnapshotEnsemble, cyclic_cosine_learning_rate
from kerastricks.callbacks.training_figures import TrainingFigures
from kerastricks.callbacks.update_health import UpdateHealth, gradient_norms, update_ratio
from kerastricks.callbacks.weight_averaging import (
    KeepLastCheckpoints,
    RecomputeBatchNormStatistics,
    StochasticWeightAveraging,
    batch_normalization_layers,
    recompute_batch_norm_statistics,
)

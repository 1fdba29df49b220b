"""Train a recipe on a data set and write its run folder.

A run folder is a TensorBoard log directory that also contains `recipe.json`, `model.keras`,
`metrics.json`, `history.json` and `status.json` (see `kerastricks.recipes.run_state`), and a
`backup/` folder while training. `metrics.json` is written last, so a folder without it never
passes for a finished run.
"""

import datetime
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerastricks.callbacks import (
    ClassMetrics, KeepLastCheckpoints, RecomputeBatchNormStatistics, RunDiagnosis,
    SnapshotEnsemble, StochasticWeightAveraging, class_metrics, diagnostics_callbacks,
    plateau_callback,
)
from kerastricks.layers import apply_lsuv
from kerastricks.recipes.augmentation import (
    adapt_preprocessing, augment_dataset, check_augmentation_fits,
)
from kerastricks.recipes.distribute import configure_replicas, recipe_for_strategy
from kerastricks.recipes.finetune import (
    build_recipe_finetune_model, finetune_callbacks, recipe_strategy, resume_gradual_unfreezing,
)
from kerastricks.recipes.imbalance import fit_class_weight, prepare_imbalanced_data
from kerastricks.recipes.models import build_model, build_optimizer
from kerastricks.recipes.run_state import (
    COMPLETE, FAILED, INTERRUPTED, RUNNING, AtomicBackupAndRestore, EpochHistory, ShuffleEpoch,
    StopOnInterrupt, StopOnNonFiniteLoss, TrainingFailed, check_free_space, describe_os_error,
    read_status, write_json, write_status,
)
from kerastricks.recipes.spec import Recipe, RecipeError


def make_run_dir(logdir, recipe):
    """Create and return a new run folder `LOGDIR/<recipe>-<dataset>-<timestamp>`."""
    logdir = Path(logdir)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    dataset = recipe.dataset.replace(":", "-").replace("/", "_").strip("-_.")
    base = logdir / f"{recipe.name}-{dataset}-{stamp}"
    run_dir, suffix = base, 1
    while run_dir.exists():
        suffix += 1
        run_dir = base.with_name(f"{base.name}-{suffix}")
    run_dir.mkdir(parents=True)
    return run_dir


def check_writable(folder):
    """Raise `OSError` early, before any training, if `folder` cannot be created or written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / ".kerastricks-write-check"
    probe.write_text("ok", encoding="utf-8")
    probe.unlink()


def build_callbacks(recipe, data, run_dir):
    """Return the callbacks a recipe trains with, besides Keras's TensorBoard callback."""
    callbacks = []
    if recipe.diagnostics:
        callbacks += diagnostics_callbacks(
            run_dir, (data.x_validation, data.y_validation), class_names=data.class_names,
            every_n_epochs=recipe.diagnostics_every, seed=recipe.seed,
        )
    callbacks += weight_averaging_callbacks(recipe, data, run_dir)
    if recipe.lr_schedule == "plateau":
        callbacks.append(plateau_callback(**recipe.lr_schedule_options))
    callbacks += finetune_callbacks(recipe)
    # Balanced accuracy, macro F1 and recall per class in TensorBoard's validation run.
    callbacks.append(ClassMetrics(
        (data.x_validation, data.y_validation), data.class_names, log_dir=run_dir))
    return callbacks


def weight_averaging_callbacks(recipe, data, run_dir):
    """Return the callbacks for the recipe's EMA, SWA, snapshot and checkpoint options."""
    # The SWA running mean is kept beside the backup, so a resumed run continues the same average.
    # Snapshots written before a resume stay in RUN/snapshots.
    callbacks = []
    if recipe.ema:
        # Validation measures the averaged weights; fit() copies them into the model at the
        # end, and the batch-normalization statistics are then recomputed for them.
        callbacks.append(keras.callbacks.SwapEMAWeights())
        if recipe.batch_norm:
            callbacks.append(RecomputeBatchNormStatistics(data.train))
    if recipe.swa_start is not None:
        callbacks.append(StochasticWeightAveraging(
            recipe.swa_start, data=data.train,
            state_path=Path(run_dir) / "backup" / "swa_state.npz",
        ))
    if recipe.snapshots:
        callbacks.append(SnapshotEnsemble(
            recipe.snapshots, recipe.epochs, max_learning_rate=recipe.learning_rate,
            directory=Path(run_dir) / "snapshots",
        ))
    if recipe.keep_checkpoints:
        callbacks.append(KeepLastCheckpoints(Path(run_dir) / "checkpoints", recipe.keep_checkpoints))
    return callbacks


def compile_model(recipe, model, steps_per_epoch=None):
    """Compile `model` with the recipe's optimizer, sparse cross-entropy and accuracy.

    `steps_per_epoch` sizes the recipe's learning-rate schedule, see `build_optimizer`.
    """
    model.compile(
        optimizer=build_optimizer(recipe, steps_per_epoch),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def prepare_training(recipe, data):
    """Build, compile and adapt the recipe's model; return it with the training pipeline.

    `train` and the keras-tuner search both start a model here, so a trial trains exactly as a
    `run` of the same recipe would. A recipe with `finetune_from` gets a pre-trained model with
    a new classifier instead (see `build_recipe_finetune_model`), whose pre-processing layers
    keep their pre-trained statistics.

    Raises:
        RecipeError: the `finetune_from` model is missing or does not fit the data.
    """
    steps_per_epoch = -(-len(data.y_train) // data.batch_size)
    if recipe.finetune_from is not None:
        try:
            model, _ = build_recipe_finetune_model(recipe, data, steps_per_epoch)
        except ValueError as error:
            raise RecipeError(str(error)) from None
        configure_replicas(model)
        return model, augment_dataset(data.train, recipe, data.x_train)
    model = compile_model(
        recipe, build_model(recipe, data.input_shape, data.num_classes), steps_per_epoch)
    configure_replicas(model)
    # Pre-processing statistics come from the training split only.
    adapt_preprocessing(model, data.x_train)
    if recipe.lsuv:
        first_images = next(iter(data.train))[0]
        apply_lsuv(model, first_images, seed=recipe.seed)
    train_data = augment_dataset(data.train, recipe, data.x_train)
    return model, train_data


def train(recipe, data, run_dir, verbose=1, deterministic=False, strategy=None):
    """Train `recipe` on `data` and write the run folder `run_dir`.

    A folder left by an unfinished run of the same recipe (killed, interrupted, or failed) is
    resumed from its last finished epoch through `keras.callbacks.BackupAndRestore`, with the
    model's weights and the optimizer's state. Each epoch's training order depends only on the
    seed and the epoch number, so the resumed run trains on the same batches as an uninterrupted
    one.

    Args:
        recipe: a `Recipe`.
        data: a `DataSplits` from `load_dataset`.
        run_dir: the run folder; it is created if missing and doubles as the TensorBoard
            log directory (`train/` and `validation/` runs).
        verbose: Keras's `fit` verbosity (`1` shows the progress bar). Defaults to `1`.
        deterministic: enable TensorFlow's op determinism, so that two runs with the same
            seed give the same numbers on CPU. Defaults to `False`.
        strategy: the single-host `tf.distribute.Strategy` to train under (see
            `kerastricks.recipes.distribute.create_strategy`). The model, optimizer, metrics
            and callbacks are created in its scope. Each batch of `data.train` is the global
            batch, split across the replicas. Defaults to `None` (the current
            strategy, one device unless the caller entered a scope).

    Returns:
        The metrics dictionary also written to `metrics.json`.

    Raises:
        RecipeError: `run_dir` contains a finished run, or an unfinished run with other settings.
        TrainingFailed: the loss became NaN or infinite, or the disk is full.
    """
    strategy = strategy or tf.distribute.get_strategy()
    recipe = recipe_for_strategy(recipe, strategy)
    run_dir = Path(run_dir)
    check_writable(run_dir)
    check_resumable(run_dir, recipe)
    # Checked before the run folder records anything, so a misfit leaves no failed run behind.
    check_augmentation_fits(recipe, data.input_shape)
    recipe.save(run_dir / "recipe.json")
    write_status(run_dir, RUNNING)
    try:
        metrics = _fit_and_evaluate(recipe, data, run_dir, verbose, deterministic, strategy)
        write_json(run_dir / "metrics.json", metrics)
    except KeyboardInterrupt:
        write_status(run_dir, INTERRUPTED, error="interrupted by the user (Ctrl-C)")
        raise
    except TrainingFailed as error:
        write_status(run_dir, FAILED, error=str(error))
        raise
    except OSError as error:
        message = describe_os_error(error, run_dir)
        write_status(run_dir, FAILED, error=message)
        raise TrainingFailed(message) from error
    except BaseException as error:
        write_status(run_dir, FAILED, error=f"{type(error).__name__}: {error}")
        raise
    write_status(run_dir, COMPLETE)
    return metrics


def check_resumable(run_dir, recipe):
    """Raise `RecipeError` unless `run_dir` is new or contains an unfinished run of `recipe`."""
    status = read_status(run_dir)
    if status is None:
        return
    if status.get("state") == COMPLETE:
        raise RecipeError(
            f"Run folder {run_dir} contains a finished run. Choose another folder, or replace it "
            f"(the command line's --overwrite, or delete the folder)."
        )
    saved = run_dir / "recipe.json"
    if not saved.is_file():
        return
    saved_recipe = Recipe.from_file(saved)
    if saved_recipe != recipe:
        differences = ", ".join(
            f"{key}={value!r} (saved: {saved_recipe.to_dict()[key]!r})"
            for key, value in recipe.to_dict().items() if saved_recipe.to_dict()[key] != value
        )
        raise RecipeError(
            f"Run folder {run_dir} contains an unfinished run with other settings: {differences}. "
            f"Resume it with 'kerastricks run {saved} --run-dir {run_dir}', or pass --overwrite "
            f"to replace it."
        )


def _fit_and_evaluate(recipe, data, run_dir, verbose, deterministic, strategy):
    keras.utils.set_random_seed(recipe.seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    # The imbalance options rebuild the training pipeline; its epoch variable is created
    # outside the strategy scope, like the one `load_dataset` creates.
    data = prepare_imbalanced_data(recipe, data)
    with strategy.scope():
        return _fit_in_scope(recipe, data, run_dir, verbose)


def _fit_in_scope(recipe, data, run_dir, verbose):
    model, train_data = prepare_training(recipe, data)
    check_free_space(run_dir, model)

    history = EpochHistory(run_dir / "history.json")
    loss_guard = StopOnNonFiniteLoss()
    interrupt_guard = StopOnInterrupt()
    backup = AtomicBackupAndRestore(str(run_dir / "backup"))
    extra = build_callbacks(recipe, data, run_dir)
    averaging = [callback for callback in extra if isinstance(callback, StochasticWeightAveraging)]
    class_metrics_callbacks = [callback for callback in extra if isinstance(callback, ClassMetrics)]
    # At the end of an epoch, the callbacks before the backup save their state first. A kill
    # between their save and the backup's leaves them one epoch ahead, and the resumed run
    # repeats that epoch: SWA keeps its previous mean too, and EpochHistory replaces the entry.
    # ClassMetrics adds val_balanced_accuracy and val_macro_f1 to the logs, so it comes before
    # the history. It writes them to TensorBoard itself, so it comes after Keras's TensorBoard
    # callback, which would write them again. None of these needs the restored weights in
    # on_train_begin.
    callbacks = [
        *averaging, keras.callbacks.TensorBoard(log_dir=str(run_dir)), *class_metrics_callbacks,
        history, backup, loss_guard, interrupt_guard,
    ]
    if data.shuffle_epoch is not None:
        callbacks.append(ShuffleEpoch(data.shuffle_epoch))
    # The other callbacks come after the backup, so the weights and the epoch are restored
    # before they start.
    callbacks += [c for c in extra if c not in averaging and c not in class_metrics_callbacks]
    resume_gradual_unfreezing(extra, model, backup._training_metadata_path)

    start = time.perf_counter()
    try:
        model.fit(
            train_data, validation_data=data.validation, epochs=recipe.epochs,
            callbacks=callbacks, verbose=verbose, shuffle=False,  # the pipeline shuffles itself
            class_weight=fit_class_weight(recipe, data),
        )
    finally:
        # fit() skips on_train_end when it raises, so the Ctrl-C handler is restored here too.
        interrupt_guard.on_train_end()
    train_seconds = time.perf_counter() - start
    if loss_guard.failure is not None:
        raise TrainingFailed(loss_guard.message())

    test_loss, test_accuracy = model.evaluate(data.test, verbose=0)
    train_metrics = {}
    if recipe.evaluate_train:
        train_loss, train_accuracy = model.evaluate(
            data.x_train, data.y_train, batch_size=data.batch_size, verbose=0)
        train_metrics = {"train_accuracy": float(train_accuracy), "train_loss": float(train_loss)}
    probabilities = model.predict(data.test, verbose=0)
    model.save(run_dir / "model.keras")
    diagnosis = next((c for c in callbacks if isinstance(c, RunDiagnosis)), None)
    test_class_metrics = class_metrics(
        data.y_test, np.argmax(probabilities, axis=-1), data.class_names)
    return {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        **train_metrics,
        "train_seconds": round(train_seconds, 3),
        "epochs": len(history.epochs),
        "per_class_accuracy": per_class_accuracy(data.y_test, probabilities, data.class_names),
        # Test-split balanced accuracy, macro F1 and recall per class (the same numbers as
        # per_class_accuracy), for imbalanced data.
        **test_class_metrics,
        "history": history.as_history(),
        "dataset": data.name,
        # The strategy `auto` chose, or the recipe's own; None without finetune_from.
        "finetune_strategy_used": recipe_strategy(recipe, len(data.y_train)),
        "train_images": int(len(data.y_train)),
        "validation_images": int(len(data.y_validation)),
        "test_images": int(len(data.y_test)),
        # One line per finding of `kerastricks.callbacks.diagnose`; also in diagnosis.txt.
        "diagnosis": [str(f) for f in diagnosis.findings] if diagnosis is not None else None,
    }


def per_class_accuracy(labels, probabilities, class_names):
    """Return {class name: accuracy on the images of that class} (recall per class)."""
    predicted = np.argmax(probabilities, axis=-1)
    result = {}
    for index, name in enumerate(class_names):
        mask = labels == index
        result[name] = float(np.mean(predicted[mask] == index)) if mask.any() else None
    return result

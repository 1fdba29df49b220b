"""Train a recipe on a data set and write its run folder.

A run folder is a TensorBoard log directory that also contains `recipe.json`, `model.keras`,
`metrics.json` and `status.json`. `status.json` says `running` while training, then `complete` or
`failed`; `metrics.json` is written last, so a folder without it never passes for a finished run.
"""

import datetime
import json
import os
import time
from pathlib import Path

import keras
import numpy as np

from kerastricks.recipes.models import build_model, build_optimizer


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
    return []


def compile_model(recipe, model):
    """Compile `model` with the recipe's optimizer, sparse cross-entropy and accuracy."""
    model.compile(
        optimizer=build_optimizer(recipe),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train(recipe, data, run_dir, verbose=1):
    """Train `recipe` on `data` and write the run folder `run_dir`.

    Args:
        recipe: a `Recipe`.
        data: a `DataSplits` from `load_dataset`.
        run_dir: the run folder; it is created if missing and doubles as the TensorBoard
            log directory (`train/` and `validation/` runs).
        verbose: Keras's `fit` verbosity (`1` shows the progress bar). Defaults to `1`.

    Returns:
        The metrics dictionary also written to `metrics.json`.
    """
    run_dir = Path(run_dir)
    check_writable(run_dir)
    recipe.save(run_dir / "recipe.json")
    _write_json(run_dir / "status.json", {"state": "running"})
    try:
        metrics = _fit_and_evaluate(recipe, data, run_dir, verbose)
    except BaseException as error:
        _write_json(run_dir / "status.json", {"state": "failed", "error": f"{type(error).__name__}: {error}"})
        raise
    _write_json(run_dir / "metrics.json", metrics)
    _write_json(run_dir / "status.json", {"state": "complete"})
    return metrics


def _fit_and_evaluate(recipe, data, run_dir, verbose):
    keras.utils.set_random_seed(recipe.seed)
    model = compile_model(recipe, build_model(recipe, data.input_shape, data.num_classes))
    callbacks = [keras.callbacks.TensorBoard(log_dir=str(run_dir)), *build_callbacks(recipe, data, run_dir)]

    start = time.perf_counter()
    history = model.fit(
        data.train, validation_data=data.validation, epochs=recipe.epochs,
        callbacks=callbacks, verbose=verbose, shuffle=False,  # the pipeline shuffles itself
    )
    train_seconds = time.perf_counter() - start

    test_loss, test_accuracy = model.evaluate(data.test, verbose=0)
    probabilities = model.predict(data.test, verbose=0)
    model.save(run_dir / "model.keras")
    return {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "train_seconds": round(train_seconds, 3),
        "epochs": len(history.epoch),
        "per_class_accuracy": per_class_accuracy(data.y_test, probabilities, data.class_names),
        "history": {key: [float(value) for value in values] for key, values in history.history.items()},
        "dataset": data.name,
        "train_images": int(len(data.y_train)),
        "validation_images": int(len(data.y_validation)),
        "test_images": int(len(data.y_test)),
    }


def per_class_accuracy(labels, probabilities, class_names):
    """Return {class name: accuracy on the images of that class} (recall per class)."""
    predicted = np.argmax(probabilities, axis=-1)
    result = {}
    for index, name in enumerate(class_names):
        mask = labels == index
        result[name] = float(np.mean(predicted[mask] == index)) if mask.any() else None
    return result


def _write_json(path, values):
    # Write to a temporary file and rename, so a crash never leaves a half-written file.
    temporary = Path(f"{path}.tmp")
    temporary.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)

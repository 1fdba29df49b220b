"""Stratified k-fold cross-validation of recipes, with out-of-fold predictions.

Cross-validation ranks recipes by their mean held-out accuracy over the folds, so the top-k
recipes of a comparison or a search can be chosen without looking at the test split. Its
out-of-fold predictions (each training image predicted by the one fold model that never trained
on it) are what a stacking meta-learner may be fitted on.

Run time: one training run per fold and recipe, each on (k - 1) / k of the training images.
"""

import dataclasses
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.model_selection import StratifiedKFold

from kerastricks.recipes.spec import RecipeError


@dataclasses.dataclass
class CrossValidation:
    """The fold models of one recipe and their held-out predictions.

    The images are the data set's training and validation splits together (`images`, `labels`);
    the test split is never used.

    Attributes:
        recipe: the `Recipe` that was cross-validated.
        fold_indices: for each fold, a pair `(train_indices, held_out_indices)` into `labels`.
        models: the fold models, in fold order.
        run_dirs: the run folder of each fold.
        fold_accuracies: each fold model's accuracy on its held-out images.
        out_of_fold: `(len(labels), num_classes)` probabilities; row `i` comes from the fold
            model whose held-out images contain `i`.
        labels: the labels of the cross-validated images.
    """

    recipe: object
    fold_indices: list
    models: list
    run_dirs: list
    fold_accuracies: list
    out_of_fold: np.ndarray
    labels: np.ndarray

    @property
    def mean_accuracy(self):
        """The mean of the fold accuracies."""
        return float(np.mean(self.fold_accuracies))

    def predict(self, images, batch_size=256):
        """Return the fold models' probabilities for `images`, averaged."""
        outputs = [model.predict(images, batch_size=batch_size, verbose=0) for model in self.models]
        return np.mean(outputs, axis=0)


def stratified_folds(labels, folds, seed=0):
    """Split `range(len(labels))` into `folds` stratified folds.

    Args:
        labels: the integer class labels.
        folds: the number of folds k, at least 2.
        seed: the seed of the shuffling before the split. Defaults to `0`.

    Returns:
        A list of k pairs `(train_indices, held_out_indices)`. Every index is held out exactly
        once, and never in the training indices of the same fold.

    Raises:
        RecipeError: for fewer than 2 folds, or a class with fewer images than folds.
    """
    labels = np.asarray(labels)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise RecipeError(
            f"Cross-validation needs an integer number of folds >= 2. Received: folds={folds!r}."
        )
    counts = np.bincount(labels) if len(labels) else np.zeros(1, dtype=int)
    smallest = int(counts[counts > 0].min()) if counts.any() else 0
    if smallest < folds:
        raise RecipeError(
            f"Every class needs at least as many images as folds for a stratified split, but the "
            f"smallest class has {smallest}. Received: folds={folds}. Use fewer folds or more images."
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(train, held_out) for train, held_out in splitter.split(np.zeros(len(labels)), labels)]


def cross_validate(recipe, data, folds=3, logdir="runs", verbose=0, deterministic=False):
    """Train `recipe` once per fold and predict each fold's held-out images.

    Each fold is a full recipe run (`kerastricks.recipes.train`) in
    `LOGDIR/<recipe>-cv<k>-fold<i>`, whose validation split is the fold's held-out images, so
    the run's callbacks and TensorBoard curves see held-out data too.

    Args:
        recipe: a `Recipe`; its `seed` seeds the folds and every fold's training.
        data: a `DataSplits`; its training and validation images are cross-validated.
        folds: the number of folds k. Defaults to `3`.
        logdir: the folder that receives the fold run folders. Defaults to `"runs"`.
        verbose: Keras's `fit` verbosity. Defaults to `0`.
        deterministic: enable TensorFlow's op determinism in each fold's run. Defaults to
            `False`.

    Returns:
        A `CrossValidation`.
    """
    from kerastricks.recipes.training import make_run_dir, train

    images = np.concatenate([data.x_train, data.x_validation])
    labels = np.concatenate([data.y_train, data.y_validation])
    splits = stratified_folds(labels, folds, seed=recipe.seed)
    out_of_fold = np.zeros((len(labels), data.num_classes), dtype="float32")
    models, run_dirs, accuracies = [], [], []
    for fold, (train_indices, held_out) in enumerate(splits, start=1):
        fold_recipe = recipe.replace(name=f"{recipe.name}-cv{folds}-fold{fold}")
        fold_data = _fold_data(data, images, labels, train_indices, held_out, recipe.seed)
        run_dir = make_run_dir(logdir, fold_recipe)
        train(fold_recipe, fold_data, run_dir, verbose=verbose, deterministic=deterministic)
        model = keras.saving.load_model(Path(run_dir) / "model.keras")
        probabilities = model.predict(images[held_out], batch_size=256, verbose=0)
        out_of_fold[held_out] = probabilities
        accuracies.append(float(np.mean(np.argmax(probabilities, axis=1) == labels[held_out])))
        models.append(model)
        run_dirs.append(Path(run_dir))
    return CrossValidation(recipe, splits, models, run_dirs, accuracies, out_of_fold, labels)


def rank_recipes(recipes, data, folds=3, top_k=None, logdir="runs", verbose=0, deterministic=False):
    """Cross-validate each recipe and return the `top_k` results, best mean accuracy first.

    Args:
        recipes: a list of `Recipe`s; their names must differ.
        data: a `DataSplits`.
        folds: the number of folds k. Defaults to `3`.
        top_k: how many results to return; `None` returns all. Defaults to `None`.
        logdir: the folder that receives the fold run folders. Defaults to `"runs"`.
        verbose: Keras's `fit` verbosity. Defaults to `0`.
        deterministic: enable TensorFlow's op determinism in every run. Defaults to `False`.

    Returns:
        A list of `CrossValidation`, sorted by `mean_accuracy`, highest first.
    """
    if not recipes:
        raise RecipeError("rank_recipes() received no recipes. Pass at least one recipe.")
    if top_k is not None and not 1 <= top_k <= len(recipes):
        raise RecipeError(
            f"top_k must be between 1 and the number of recipes ({len(recipes)}). "
            f"Received: top_k={top_k!r}."
        )
    results = [cross_validate(recipe, data, folds, logdir, verbose, deterministic) for recipe in recipes]
    results.sort(key=lambda result: result.mean_accuracy, reverse=True)
    return results[:top_k] if top_k is not None else results


def _fold_data(data, images, labels, train_indices, held_out, seed):
    def pipeline(indices, shuffle):
        dataset = tf.data.Dataset.from_tensor_slices((images[indices], labels[indices]))
        if shuffle:
            dataset = dataset.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
        return dataset.batch(data.batch_size).prefetch(tf.data.AUTOTUNE)

    return dataclasses.replace(
        data,
        train=pipeline(train_indices, shuffle=True),
        validation=pipeline(held_out, shuffle=False),
        x_train=images[train_indices],
        y_train=labels[train_indices],
        x_validation=images[held_out],
        y_validation=labels[held_out],
        shuffle_epoch=None,
    )

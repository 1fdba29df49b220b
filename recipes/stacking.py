"""Stacking: a second learner fitted on the out-of-fold predictions of the base networks.

A meta-learner fitted on predictions of images its base networks trained on learns to trust
over-confident, overfitted outputs. `StackingEnsemble` therefore accepts only
`CrossValidation` results, whose every training image was predicted by the one fold model that
never saw it, and checks that through the fold indices before fitting.

Reference:
    Wolpert, "Stacked Generalization", Neural Networks 5(2), 1992.
"""

import keras
import numpy as np
from sklearn.linear_model import LogisticRegression

META_LEARNERS = ("logistic", "keras")


def check_out_of_fold(cross_validation):
    """Raise `ValueError` unless every image is held out by exactly one fold that never trained on it.

    Args:
        cross_validation: a `kerastricks.recipes.crossval.CrossValidation`.
    """
    count = len(cross_validation.labels)
    held_out_counts = np.zeros(count, dtype=int)
    for fold, (train_indices, held_out) in enumerate(cross_validation.fold_indices, start=1):
        overlap = np.intersect1d(train_indices, held_out)
        if overlap.size:
            raise ValueError(
                f"Fold {fold} of {cross_validation.recipe.name!r} trained on {overlap.size} of its "
                f"held-out images (first index {overlap[0]}), so its predictions are in-fold and "
                f"cannot train a meta-learner."
            )
        held_out_counts[held_out] += 1
    if not np.all(held_out_counts == 1):
        wrong = int(np.flatnonzero(held_out_counts != 1)[0])
        raise ValueError(
            f"The folds of {cross_validation.recipe.name!r} must hold out every image exactly once, "
            f"but image {wrong} is held out {held_out_counts[wrong]} times."
        )


def stacking_features(probabilities):
    """Return meta-learner inputs: the members' log-probabilities side by side.

    Args:
        probabilities: `(members, images, classes)` probabilities.

    Returns:
        An `(images, members * classes)` array of `log(max(p, 1e-7))`.
    """
    probabilities = np.asarray(probabilities, dtype="float64")
    members, images, classes = probabilities.shape
    logs = np.log(np.clip(probabilities, 1e-7, 1.0))
    return logs.transpose(1, 0, 2).reshape(images, members * classes)


class StackingEnsemble:
    """A meta-learner over base networks, fitted on their out-of-fold predictions.

    Args:
        meta: `"logistic"` for scikit-learn's multinomial `LogisticRegression`, or `"keras"`
            for a small Keras network (one hidden layer of `hidden_units` ReLU units and a
            softmax). Defaults to `"logistic"`.
        hidden_units: the hidden width of the Keras meta-learner. Defaults to `32`.
        epochs: the training epochs of the Keras meta-learner. Defaults to `30`.
        seed: the seed of the meta-learner. Defaults to `0`.

    Attributes:
        features_: the out-of-fold features the meta-learner was fitted on.

    Example:

    >>> results = rank_recipes([recipe_a, recipe_b], data, folds=3)  # doctest: +SKIP
    >>> stacker = StackingEnsemble().fit(results)  # doctest: +SKIP
    >>> stacker.predict_proba([r.predict(data.x_test) for r in results])  # doctest: +SKIP
    """

    def __init__(self, meta="logistic", hidden_units=32, epochs=30, seed=0):
        if meta not in META_LEARNERS:
            raise ValueError(
                f"Unknown meta-learner. Expected one of {list(META_LEARNERS)}. Received: meta={meta!r}."
            )
        for name, value in (("hidden_units", hidden_units), ("epochs", epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}.")
        self.meta = meta
        self.hidden_units = hidden_units
        self.epochs = epochs
        self.seed = seed
        self.features_ = None
        self._learner = None
        self._classes = None

    def fit(self, cross_validations):
        """Fit the meta-learner on the out-of-fold predictions of `cross_validations`.

        Args:
            cross_validations: a list of `CrossValidation` results over the same images.

        Returns:
            This `StackingEnsemble`.

        Raises:
            ValueError: for an empty list, results over different images, or folds that do not
                hold out every image exactly once (see `check_out_of_fold`).
        """
        if not cross_validations:
            raise ValueError("StackingEnsemble.fit() received no cross-validation results.")
        labels = cross_validations[0].labels
        for result in cross_validations:
            if not np.array_equal(result.labels, labels):
                raise ValueError(
                    f"All base networks must be cross-validated on the same images, but "
                    f"{result.recipe.name!r} used other images than "
                    f"{cross_validations[0].recipe.name!r}."
                )
            check_out_of_fold(result)
        self._classes = cross_validations[0].out_of_fold.shape[1]
        self.features_ = stacking_features([result.out_of_fold for result in cross_validations])
        if self.meta == "logistic":
            self._learner = LogisticRegression(max_iter=1000, random_state=self.seed)
            self._learner.fit(self.features_, labels)
        else:
            self._learner = self._fit_network(self.features_, labels)
        return self

    def predict_proba(self, probabilities):
        """Return the meta-learner's `(images, classes)` probabilities.

        Args:
            probabilities: the base networks' `(members, images, classes)` probabilities for new
                images, in the order of the results passed to `fit`.
        """
        if self._learner is None:
            raise RuntimeError("StackingEnsemble.predict_proba() called before fit(). Call fit() first.")
        features = stacking_features(probabilities)
        if features.shape[1] != self.features_.shape[1]:
            raise ValueError(
                f"The stacking ensemble was fitted on {self.features_.shape[1]} features "
                f"(members x classes), but received {features.shape[1]}. Pass the same members, in "
                f"the same order."
            )
        if self.meta == "keras":
            return self._learner.predict(features, verbose=0)
        # Logistic regression outputs only the classes it saw; the others get probability 0.
        output = np.zeros((len(features), self._classes))
        output[:, self._learner.classes_] = self._learner.predict_proba(features)
        return output

    def _fit_network(self, features, labels):
        keras.utils.set_random_seed(self.seed)
        network = keras.Sequential([
            keras.Input((features.shape[1],)),
            keras.layers.Dense(self.hidden_units, activation="relu"),
            keras.layers.Dense(self._classes, activation="softmax"),
        ])
        network.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
        network.fit(features.astype("float32"), labels, batch_size=128, epochs=self.epochs, verbose=0)
        return network

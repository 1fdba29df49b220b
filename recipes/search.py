"""A keras-tuner search over combinations of tricks.

Each trial is a `Recipe`: the base recipe with the searched fields of a `SearchSpace` set by the
tuner. The search runs on keras-tuner's own tuners (Hyperband, Bayesian optimization, random and
grid search), so its project folder, `overwrite=False` resuming and distributed mode (the
`KERASTUNER_*` environment variables) behave as keras-tuner documents them.

A project folder contains keras-tuner's `oracle.json` and `trial_*/trial.json`, `search.json`
(what defines this search, checked when the folder is reused), `logs/` (TensorBoard: one run per
trial with its scalars and its HParams), and after the search `results.csv`/`results.json` (the
ranked trials) and `importance.csv`/`importance.json`/`importance.png`.
"""

import dataclasses
import json
import os
import time
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from kerastricks.recipes.imbalance import fit_class_weight, prepare_imbalanced_data
from kerastricks.recipes.run_state import ShuffleEpoch
from kerastricks.recipes.search_space import SearchError
from kerastricks.recipes.training import build_callbacks, prepare_training, train

TUNERS = ("hyperband", "bayesian", "random", "grid")
FINGERPRINT_FILE = "search.json"


class _DeclaredSpace:
    """Fill a tuner's initial space from `HyperModel.declare_hyperparameters` alone.

    keras-tuner builds models until every conditional scope has been active once. A
    `SearchSpace` registers its conditional entries without building, so no model is built
    before the first trial.
    """

    def _populate_initial_space(self):
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def _try_build(self, hp):
        # keras-tuner 1.4.8 runs `gc.collect()` again after `clear_session()`, which already
        # collects. One full collection is enough, and each took up to a second per trial in
        # bench_search.py. NOTE: this skips keras-tuner's `max_model_size` check, which these
        # tuners never set.
        keras.backend.clear_session(free_memory=True)
        model = self._build_hypermodel(hp)
        if not isinstance(model, keras.Model):
            raise keras_tuner.errors.FatalTypeError(
                f"HyperModel.build() must return a keras.Model. Received: {type(model).__name__}."
            )
        return model


_TUNER_CLASSES = {
    name: type(f"Recipe{base.__name__}", (_DeclaredSpace, base), {})
    for name, base in (("hyperband", keras_tuner.Hyperband),
                       ("bayesian", keras_tuner.BayesianOptimization),
                       ("random", keras_tuner.RandomSearch),
                       ("grid", keras_tuner.GridSearch))
}


class ObjectiveNotLoggedError(SearchError, keras_tuner.errors.FatalError):
    """An objective that is not among the metrics that training logs, which stops the search."""


class RecipeHyperModel(keras_tuner.HyperModel):
    """A keras-tuner `HyperModel` whose models are the recipes of a `SearchSpace`.

    Args:
        space: the `SearchSpace`; its base recipe gives every field the space does not search.
        data: the `DataSplits` every trial trains and validates on.
        verbose: Keras's `fit` verbosity. Defaults to `0`.

    Attributes:
        fit_seconds: the wall-clock seconds of each `model.fit` call, in trial order.
    """

    def __init__(self, space, data, verbose=0, objective="val_accuracy"):
        super().__init__(name="recipe")
        self.space = space
        self.data = data
        self.verbose = verbose
        self.objective = objective
        self.fit_seconds = []

    def declare_hyperparameters(self, hp):
        self.space.declare(hp)

    def recipe(self, hp):
        """Return the `Recipe` of the trial whose hyperparameters are `hp`."""
        return self.space.recipe_for(self.space.declare(hp))

    def build(self, hp):
        recipe = self.recipe(hp)
        keras.utils.set_random_seed(recipe.seed)
        # The same steps as `kerastricks run`: apply the class-imbalance options to the data,
        # build, compile, adapt the pre-processing, and put the augmentation into the
        # training pipeline that `fit` then uses.
        self._trial_data = prepare_imbalanced_data(recipe, self.data)
        model, self._train_data = prepare_training(recipe, self._trial_data)
        return model

    def fit(self, hp, model, *args, **kwargs):
        recipe = self.recipe(hp)
        callbacks = list(kwargs.pop("callbacks", []))
        run_dir = next((c.log_dir for c in callbacks if isinstance(c, keras.callbacks.TensorBoard)), None)
        callbacks.append(ObjectiveCheck(self.objective))
        data = self._trial_data
        if getattr(data, "shuffle_epoch", None) is not None:
            callbacks.append(ShuffleEpoch(data.shuffle_epoch))
        if run_dir is not None:
            callbacks.extend(build_callbacks(recipe, data, Path(run_dir)))

        start = time.perf_counter()
        history = model.fit(
            self._train_data, validation_data=data.validation, callbacks=callbacks,
            verbose=self.verbose, shuffle=False,  # the pipeline shuffles itself
            epochs=kwargs.pop("epochs", recipe.epochs), initial_epoch=kwargs.pop("initial_epoch", 0),
            class_weight=fit_class_weight(recipe, data),
        )
        self.fit_seconds.append(time.perf_counter() - start)
        return history


class ObjectiveCheck(keras.callbacks.Callback):
    """Stop the search after the first epoch when the objective is not a logged metric."""

    def __init__(self, objective):
        super().__init__()
        self.objective = objective

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.objective not in logs:
            raise ObjectiveNotLoggedError(
                f"The objective {self.objective!r} is not a metric that training logs. "
                f"Logged metrics: {sorted(logs)}. Choose one of them with --objective."
            )


def make_objective(name, direction=None):
    """Return a `keras_tuner.Objective`, inferring the direction from the metric name if `None`.

    Raises:
        SearchError: for an invalid direction, or a name whose direction cannot be inferred.
    """
    if direction is not None:
        if direction not in ("min", "max"):
            raise SearchError(f"The objective direction must be 'min' or 'max'. Received: {direction!r}.")
        return keras_tuner.Objective(name, direction)
    try:
        return keras_tuner.Objective(name, _infer_direction(name))
    except ValueError:
        raise SearchError(
            f"Cannot infer whether to maximize or minimize the objective {name!r}. "
            f"Give the direction with --direction max or --direction min."
        ) from None


def _infer_direction(name):
    from keras_tuner.src.engine import objective as objective_module

    return objective_module.create_objective(name).direction


def create_tuner(space, data, project_dir, *, tuner="hyperband", objective="val_accuracy",
                 direction=None, max_trials=None, max_epochs=3, factor=3, overwrite=False,
                 verbose=0, strategy=None):
    """Create a keras-tuner tuner over `space` with its project in `project_dir`.

    Args:
        space: the `SearchSpace`.
        data: the `DataSplits` to train and validate on.
        project_dir: the project folder. An existing folder of the same search resumes it.
        tuner: one of `hyperband`, `bayesian`, `random`, `grid`. Defaults to `"hyperband"`.
        objective: a metric name that training logs. Defaults to `"val_accuracy"`.
        direction: `"min"` or `"max"`; `None` infers it from the metric name. Defaults to `None`.
        max_trials: the number of trials; `None` lets Hyperband and grid search decide, and
            means 10 for random and Bayesian search. Defaults to `None`.
        max_epochs: the epochs of a trial (Hyperband's largest bracket). Defaults to `3`.
        factor: Hyperband's reduction factor. Defaults to `3`.
        overwrite: start afresh, deleting an existing project folder. Defaults to `False`.
        verbose: Keras's `fit` verbosity for each trial. Defaults to `0`.
        strategy: a single-host `tf.distribute.Strategy` that builds and trains every trial
            (keras-tuner's `distribution_strategy`), see
            `kerastricks.recipes.distribute.create_strategy`. Defaults to `None` (one device).

    Returns:
        The keras-tuner tuner, ready for `run_search`.

    Raises:
        SearchError: for an unknown tuner, a budget below 1, an objective whose direction
            cannot be inferred, or a project folder that belongs to another search.
    """
    if tuner not in TUNERS:
        raise SearchError(f"Unknown tuner. Expected one of {list(TUNERS)}. Received: tuner={tuner!r}.")
    for label, value in (("max_trials", max_trials), ("max_epochs", max_epochs), ("factor", factor)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SearchError(f"The search budget {label} must be an integer >= 1. Received: {label}={value!r}.")
    if factor < 2:
        raise SearchError(f"Hyperband's factor must be >= 2. Received: factor={factor!r}.")
    if tuner == "grid":
        space.check_grid()
    objective = make_objective(objective, direction)

    project_dir = Path(project_dir)
    fingerprint = _fingerprint(space, tuner, objective, max_epochs, factor)
    if not overwrite:
        check_project(project_dir, fingerprint)

    hypermodel = RecipeHyperModel(space, data, verbose=verbose, objective=objective.name)
    options = dict(objective=objective, directory=str(project_dir.parent),
                   project_name=project_dir.name, overwrite=overwrite,
                   # keras-tuner treats seed 0 as "no seed" and draws one, so shift by one.
                   seed=space.base.seed + 1, distribution_strategy=strategy)
    if tuner == "hyperband":
        options.update(max_epochs=max_epochs, factor=factor)
    elif tuner in ("random", "bayesian"):
        options["max_trials"] = max_trials or 10
    else:
        options["max_trials"] = max_trials
    instance = _TUNER_CLASSES[tuner](hypermodel, **options)
    if tuner == "hyperband" and max_trials is not None:
        # Hyperband sizes its brackets from max_epochs; the generic Oracle cap still applies.
        instance.oracle.max_trials = max_trials
    instance.max_epochs = max_epochs
    _write_json(project_dir / FINGERPRINT_FILE, fingerprint)
    return instance


def _fingerprint(space, tuner, objective, max_epochs, factor):
    values = {
        "tuner": tuner,
        "objective": {"name": objective.name, "direction": objective.direction},
        "space": space.to_config(),
        "base_recipe": space.base.to_dict(),
        "max_epochs": max_epochs,
    }
    if tuner == "hyperband":
        values["factor"] = factor
    return json.loads(json.dumps(values))


def check_project(project_dir, fingerprint):
    """Raise `SearchError` if `project_dir` contains a search other than `fingerprint`'s."""
    project_dir = Path(project_dir)
    if not (project_dir / "oracle.json").exists():
        return
    saved_file = project_dir / FINGERPRINT_FILE
    if not saved_file.exists():
        raise SearchError(
            f"The project folder {project_dir} contains a keras-tuner project that is not a "
            f"kerastricks search ({FINGERPRINT_FILE} is missing). Choose another folder or overwrite it."
        )
    saved = json.loads(saved_file.read_text(encoding="utf-8"))
    differences = [key for key in sorted(set(saved) | set(fingerprint)) if saved.get(key) != fingerprint.get(key)]
    if differences:
        verb = "differs" if len(differences) == 1 else "differ"
        raise SearchError(
            f"The project folder {project_dir} contains another search: its {', '.join(differences)} "
            f"{verb} from this one's. Use another folder to start a new search, or overwrite it "
            f"(--overwrite on the command line, overwrite=True in create_tuner)."
        )


def run_search(tuner, verbose=1):
    """Run (or resume) the search of a tuner from `create_tuner`; return its ranked trials.

    Each trial writes its TensorBoard run, with its hyperparameters for the HParams dashboard,
    to `PROJECT/logs/<trial id>/execution0`. A worker of a distributed search returns `[]`:
    only the chief's oracle contains every trial, and the chief ranks them.

    Args:
        tuner: the tuner from `create_tuner`.
        verbose: `1` prints keras-tuner's table of each trial's hyperparameters and the best
            score so far; `0` hides it. Training's own output follows `create_tuner`'s
            `verbose`. Defaults to `1`.
    """
    logdir = Path(tuner.project_dir) / "logs"
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(logdir))
    # keras-tuner reads `verbose` for its trial table; `RecipeHyperModel.fit` ignores it.
    tuner.search(epochs=tuner.max_epochs, callbacks=[tensorboard], verbose=verbose)
    if is_search_worker():
        return []
    from kerastricks.recipes.importance import rank_trials

    return rank_trials(tuner)


def is_search_worker():
    """Return whether this process is a worker of keras-tuner's distributed mode (not the chief)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and os.environ.get("KERASTUNER_TUNER_ID", "") != "chief"


def best_recipe(tuner):
    """Return the `Recipe` of the best completed trial."""
    from kerastricks.recipes.importance import completed_trials

    trials = completed_trials(tuner)
    if not trials:
        raise SearchError(f"The search in {tuner.project_dir} has no completed trial to retrain.")
    return tuner.hypermodel.recipe(trials[0].hyperparameters.copy())


def retrain_best(tuner, data, run_dir, verbose=0):
    """Retrain the best recipe on the training and validation images; evaluate it on the test split.

    The recipe trains for the search's `max_epochs`. Its run folder's validation curves are on
    images it trained on, so only the test metrics are held out.

    Returns:
        `(recipe, metrics)`, the metrics as written to `run_dir/metrics.json`.
    """
    recipe = best_recipe(tuner).replace(epochs=tuner.max_epochs)
    x_all = np.concatenate([data.x_train, data.x_validation])
    y_all = np.concatenate([data.y_train, data.y_validation])
    pipeline = (tf.data.Dataset.from_tensor_slices((x_all, y_all))
                .shuffle(len(x_all), seed=recipe.seed, reshuffle_each_iteration=True)
                .batch(data.batch_size).prefetch(tf.data.AUTOTUNE))
    combined = dataclasses.replace(data, train=pipeline, x_train=x_all, y_train=y_all)
    if hasattr(combined, "shuffle_epoch"):
        # This pipeline reshuffles by itself; the epoch variable belongs to the original one.
        combined = dataclasses.replace(combined, shuffle_epoch=None)
    return recipe, train(recipe, combined, run_dir, verbose=verbose)


def _write_json(path, values):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(f"{path}.tmp")
    temporary.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)

"""The named recipes: each is a module of `kerastricks.recipes` that defines `RECIPE`."""

import importlib

from kerastricks.recipes.spec import RecipeError

# Recipe name -> (module, one-line description). A recipe module defines `RECIPE`.
RECIPES = {
    "baseline": ("kerastricks.recipes.baseline", "small VGG-style CNN with batch norm, Adam"),
    "all_tricks": ("kerastricks.recipes.all_tricks",
                   "Fashion-MNIST: the tricks that paid off here, chosen on the validation split"),
}

# Experiment name -> (module, one-line description). An experiment module defines `EXPERIMENT`
# (see `kerastricks.recipes.experiments`); the report shows them in this order.
EXPERIMENTS = {
    "preprocessing_compare": ("kerastricks.recipes.preprocessing_compare",
                              "none, centring, normalization, min-max, PCA, ZCA: test error"),
    "init_compare": ("kerastricks.recipes.init_compare",
                     "zeros, small random, 1/sqrt(n), He: symmetry and test error"),
    "deep_init": ("kerastricks.recipes.deep_init",
                  "30-layer ReLU net: 1/sqrt(n) against He and LSUV"),
    "activation_compare": ("kerastricks.recipes.activation_compare",
                           "sigmoid, tanh, ReLU, Leaky ReLU, PReLU, RReLU: train/test error"),
    "dead_relu": ("kerastricks.recipes.dead_relu",
                  "dead ReLU units against the SGD learning rate, per layer"),
    "regularization_compare": ("kerastricks.recipes.regularization_compare",
                               "none, L2, L1, max-norm, dropout, combined: train/test gap"),
    "augmentation_compare": ("kerastricks.recipes.augmentation_compare",
                             "none, flips, crops, brightness/contrast, erasing, all: train/test gap"),
    "lr_compare": ("kerastricks.recipes.lr_compare",
                   "learning-rate finder; constant, step, plateau, cosine, one-cycle schedules"),
    "finetune_compare": ("kerastricks.recipes.finetune_compare",
                         "the four fine-tuning strategies, gradual unfreezing, discriminative rates"),
    "ensemble_compare": ("kerastricks.recipes.ensemble_compare",
                         "one model against seed, snapshot, SWA, EMA and test-time-view ensembles"),
    "imbalance_compare": ("kerastricks.recipes.imbalance_compare",
                          "class weights, resampling, minority crops, two-stage: minority recall"),
}


def available_recipes():
    """Return the names of the registered recipes and experiments, sorted."""
    return sorted({**RECIPES, **EXPERIMENTS})


def is_experiment(name):
    """Return whether `name` is a registered experiment."""
    return name in EXPERIMENTS


def get_experiment(name):
    """Return the `Experiment` registered as `name`.

    Raises:
        RecipeError: for an unknown name; the message lists the registered experiments.
    """
    if name not in EXPERIMENTS:
        raise RecipeError(f"Unknown experiment {name!r}. Expected one of {sorted(EXPERIMENTS)}.")
    return importlib.import_module(EXPERIMENTS[name][0]).EXPERIMENT


def get_recipe(name):
    """Return the `Recipe` registered as `name`.

    Raises:
        RecipeError: for an unknown name; the message lists the registered ones.
    """
    if name in EXPERIMENTS:
        raise RecipeError(
            f"{name!r} is an experiment, not a single recipe; run it with 'kerastricks run {name}'."
        )
    if name not in RECIPES:
        raise RecipeError(
            f"Unknown recipe {name!r}. Expected one of {available_recipes()} "
            f"or a path to a .json/.yaml recipe file."
        )
    module = importlib.import_module(RECIPES[name][0])
    return module.RECIPE

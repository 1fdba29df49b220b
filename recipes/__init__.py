"""Data sets, the Recipe spec, the model family, training and the command-line interface.

Attributes are imported on first use, so `kerastricks --help` starts without loading TensorFlow.
"""

import importlib

_EXPORTS = {
    "Recipe": "spec",
    "RecipeError": "spec",
    "DataSplits": "data",
    "DataError": "data",
    "load_dataset": "data",
    "available_datasets": "data",
    "build_model": "models",
    "build_optimizer": "models",
    "train": "training",
    "make_run_dir": "training",
    "load_model": "saving",
    "TrainingFailed": "run_state",
    "available_recipes": "registry",
    "get_recipe": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kerastricks.recipes' has no attribute {name!r}")
    module = importlib.import_module(f"kerastricks.recipes.{_EXPORTS[name]}")
    return getattr(module, name)


def __dir__():
    return __all__

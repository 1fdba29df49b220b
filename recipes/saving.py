"""Loading saved models without running code from the file."""

from pathlib import Path

import keras

from kerastricks.recipes.spec import RecipeError


def load_model(path):
    """Load a `.keras` model (or a run folder's `model.keras`) with Keras's `safe_mode=True`.

    Safe mode refuses `Lambda` layers, whose Python code would run while loading, so a model file
    from someone else cannot run code on this machine. kerastricks models contain no `Lambda`
    layers, and all their custom layers are registered.

    Raises:
        RecipeError: the file is missing, is not a Keras model, or contains a `Lambda` layer.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise RecipeError(f"Model file not found: {path}. Pass a .keras file or a run folder.")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except ValueError as error:
        if "lambda" in str(error).lower() or "safe_mode" in str(error):
            raise RecipeError(
                f"Refused to load {path}: it contains a Lambda layer, whose code would run on "
                f"loading. Load it with keras.saving.load_model(path, safe_mode=False) only if "
                f"you trust where the file came from."
            ) from None
        raise RecipeError(f"Cannot load model {path}: {error}") from None
    except (OSError, KeyError) as error:
        raise RecipeError(f"{path} is not a readable .keras model file ({error}).") from None

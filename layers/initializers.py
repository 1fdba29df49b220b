"""Kernel initializers by name, so a recipe can switch initialization with a string."""

import keras

# Keras initializer names accepted as they are.
_KERAS_INITIALIZERS = (
    "glorot_normal", "glorot_uniform", "he_normal", "he_uniform",
    "lecun_normal", "lecun_uniform", "orthogonal", "zeros",
)


def get_initializer(name, seed=None):
    """Create a kernel initializer from its name.

    Args:
        name: one of `available_initializers()`.
        seed: optional integer seed for random initializers.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in _KERAS_INITIALIZERS:
        raise ValueError(
            f"Unknown initializer name. Expected one of {available_initializers()}. "
            f"Received: name={name!r}."
        )
    if name == "zeros":
        return keras.initializers.Zeros()
    return keras.initializers.get({"class_name": name, "config": {"seed": seed}})


def available_initializers():
    """Return the initializer names that `get_initializer` accepts, sorted."""
    return sorted(_KERAS_INITIALIZERS)

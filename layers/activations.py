"""Activation layers by name, so a recipe can switch activation with a string."""

import keras

# Keras activations that take no options and are wrapped in `keras.layers.Activation`.
_KERAS_ACTIVATIONS = ("sigmoid", "tanh", "relu", "elu", "selu", "gelu", "swish", "softplus")


def get_activation(name, **options):
    """Create a fresh activation layer from its name.

    Args:
        name: one of `available_activations()`.
        **options: options of the layer, for example `negative_slope` for `leaky_relu`.

    Returns:
        A new `keras.layers.Layer`; each call returns a new instance, so layers are never shared.

    Raises:
        ValueError: for an unknown name or an option the activation does not take.
    """
    if name in _KERAS_ACTIVATIONS:
        if options:
            raise ValueError(
                f"Activation '{name}' takes no options. Received: {sorted(options)}."
            )
        return keras.layers.Activation(name)
    if name == "leaky_relu":
        return keras.layers.LeakyReLU(**options)
    raise ValueError(
        f"Unknown activation name. Expected one of {available_activations()}. "
        f"Received: name={name!r}."
    )


def available_activations():
    """Return the activation names that `get_activation` accepts, sorted."""
    return sorted((*_KERAS_ACTIVATIONS, "leaky_relu"))

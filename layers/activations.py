"""Activation layers by name, so a recipe can switch activation with a string."""

import inspect

import keras

from kerastricks.layers._validation import check_slope
from kerastricks.layers.prelu import PReLU
from kerastricks.layers.rrelu import RReLU

# Keras activations that take no options and are wrapped in `keras.layers.Activation`.
_KERAS_ACTIVATIONS = ("sigmoid", "tanh", "relu", "selu", "gelu", "swish", "softplus")

# Leaky ReLU's slope in Maas, Hannun, Ng (2013). Keras's own LeakyReLU defaults to 0.3.
LEAKY_RELU_SLOPE = 0.01


def _leaky_relu(negative_slope=LEAKY_RELU_SLOPE):
    return keras.layers.LeakyReLU(negative_slope=check_slope("negative_slope", negative_slope))


def _elu(alpha=1.0):
    return keras.layers.ELU(alpha=alpha)


# Activations with options, each mapped to a constructor whose keyword arguments are the options.
_LAYER_ACTIVATIONS = {
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "prelu": PReLU,
    "rrelu": RReLU,
}


def get_activation(name, **options):
    """Create a fresh activation layer from its name.

    Names and their options:

    - `sigmoid`, `tanh`, `relu`, `selu`, `gelu`, `swish`, `softplus`: no options, a
      `keras.layers.Activation`.
    - `leaky_relu`: `negative_slope` in `[0, 1)`, defaults to 0.01 (Maas et al.), a
      `keras.layers.LeakyReLU`.
    - `elu`: `alpha`, defaults to 1.0, a `keras.layers.ELU`.
    - `prelu`: the arguments of `kerastricks.layers.PReLU` (`channel_shared`,
      `alpha_initializer`, ...).
    - `rrelu`: the arguments of `kerastricks.layers.RReLU` (`lower`, `upper`, `sampling`,
      `seed`).

    Args:
        name: one of `available_activations()`.
        **options: keyword options of that activation, listed above.

    Returns:
        A new `keras.layers.Layer`; each call returns a new instance, so layers are never shared.

    Raises:
        ValueError: for an unknown name or an invalid option value.
        TypeError: for an option the activation does not take, or an option of the wrong type.

    Example:

    >>> layer = get_activation("rrelu", lower=0.1, upper=0.3, sampling="uniform")
    """
    if name in _KERAS_ACTIVATIONS:
        if options:
            raise TypeError(
                f"Activation {name!r} takes no options. Received: {sorted(options)}."
            )
        return keras.layers.Activation(name)
    if name not in _LAYER_ACTIVATIONS:
        raise ValueError(
            f"Unknown activation name. Expected one of {available_activations()}. "
            f"Received: name={name!r}."
        )

    constructor = _LAYER_ACTIVATIONS[name]
    accepted = _option_names(constructor)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"Activation {name!r} does not take the option {unknown[0]!r}. "
            f"Expected options among {accepted}. Received: {sorted(options)}."
        )
    return constructor(**options)


def available_activations():
    """Return the activation names that `get_activation` accepts, sorted."""
    return sorted((*_KERAS_ACTIVATIONS, *_LAYER_ACTIVATIONS))


def he_negative_slope(name, **options):
    """Return the negative slope `a` that He initialization should use before an activation.

    He et al.'s variance `2 / ((1 + a**2) * fan_in)` depends on the mean of the squared
    negative slope. That is the slope itself for `leaky_relu`, the initial slope for `prelu`
    when `alpha_initializer` is a number (0.25 by default), and `sqrt(E[slope**2])` over the
    training distribution for `rrelu`. Every other activation, and `prelu` with an
    initializer object, returns 0, the ReLU case.

    Args:
        name: one of `available_activations()`.
        **options: the options given to `get_activation` for that name.

    Returns:
        A float in `[0, 1)`.

    Raises:
        ValueError, TypeError: as `get_activation` raises for the same name and options.
    """
    layer = get_activation(name, **options)
    if isinstance(layer, keras.layers.LeakyReLU):
        return float(layer.negative_slope)
    if isinstance(layer, PReLU):
        initializer = layer.alpha_initializer
        if isinstance(initializer, keras.initializers.Constant):
            return float(initializer.value)
        return 0.0
    if isinstance(layer, RReLU):
        return _rrelu_rms_slope(layer)
    return 0.0


def _rrelu_rms_slope(layer):
    """Return `sqrt(E[slope**2])` of an RReLU's training slopes."""
    lower, upper = layer.lower, layer.upper
    if lower == upper:
        return lower
    if layer.sampling == "reciprocal":
        # slope = 1/a with a ~ U(1/upper, 1/lower), so
        # E[1/a**2] = (upper - lower) / (1/lower - 1/upper).
        mean_square = (upper - lower) / (1.0 / lower - 1.0 / upper)
    else:
        mean_square = (upper**3 - lower**3) / (3.0 * (upper - lower))
    return mean_square**0.5


def _option_names(constructor):
    parameters = inspect.signature(constructor).parameters.values()
    return sorted(
        parameter.name
        for parameter in parameters
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        and parameter.name != "self"
    )

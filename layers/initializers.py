"""Kernel initializers: He et al.'s rule for leaky rectifiers and the schemes selectable by name.

`get_initializer(name)` maps a recipe's initializer name to an initializer, so a recipe switches
between the classic schemes (all zeros, small random numbers, variance calibrated by fan-in, He
et al.'s 2/fan_in) and Keras's own initializers with one string.
"""

import numbers

import keras

from kerastricks.layers._validation import check_slope

# Names that map to Keras's initializers of the same name.
_KERAS_INITIALIZERS = (
    "glorot_normal", "glorot_uniform", "he_normal", "he_uniform",
    "lecun_normal", "lecun_uniform", "orthogonal", "zeros",
)

# Names defined here: the classic schemes and He et al.'s rule with a negative slope.
_SCHEMES = ("small_random", "calibrated", "he", "he_leaky_normal", "he_leaky_uniform")


class _HeLeaky(keras.initializers.VarianceScaling):
    """Shared part of `HeNormal` and `HeUniform`: variance 2 / ((1 + a^2) * fan_in)."""

    _distribution = None

    def __init__(self, negative_slope=0.0, seed=None):
        check_slope("negative_slope", negative_slope)
        self.negative_slope = float(negative_slope)
        super().__init__(
            scale=2.0 / (1.0 + self.negative_slope**2),
            mode="fan_in",
            distribution=self._distribution,
            seed=seed,
        )

    def get_config(self):
        seed = keras.saving.serialize_keras_object(self._init_seed)
        return {"negative_slope": self.negative_slope, "seed": seed}


@keras.saving.register_keras_serializable(package="kerastricks")
class HeNormal(_HeLeaky):
    """He normal initializer for rectifiers with a negative slope.

    Draws from a normal distribution truncated at two standard deviations and rescaled, so the
    standard deviation of the values drawn is `sqrt(2 / ((1 + a**2) * fan_in))`, where `a` is
    the negative slope of the rectifier that follows the layer. With `a = 0` this is
    `keras.initializers.HeNormal`; with `a > 0` it is the rule He et al. derive for Leaky ReLU
    and PReLU, which keeps the variance of the activations constant from layer to layer.

    Args:
        negative_slope: the slope `a` of the rectifier for negative inputs, in `[0, 1)`. For
            PReLU use its initial slope (0.25). Defaults to `0.0` (ReLU).
        seed: an integer or `keras.random.SeedGenerator` for reproducible draws. Defaults to
            `None` (a different draw each time).

    Example:

    >>> initializer = HeNormal(negative_slope=0.25, seed=0)
    >>> layer = keras.layers.Conv2D(32, 3, kernel_initializer=initializer)

    Reference:
        He, Zhang, Ren, Sun, "Delving Deep into Rectifiers: Surpassing Human-Level Performance
        on ImageNet Classification", ICCV 2015, equation 15.
    """

    _distribution = "truncated_normal"


@keras.saving.register_keras_serializable(package="kerastricks")
class HeUniform(_HeLeaky):
    """He uniform initializer for rectifiers with a negative slope.

    Draws from `U(-limit, limit)` with `limit = sqrt(6 / ((1 + a**2) * fan_in))`, so the
    variance is `2 / ((1 + a**2) * fan_in)`, where `a` is the negative slope of the rectifier
    that follows the layer. With `a = 0` this is `keras.initializers.HeUniform`.

    Args:
        negative_slope: the slope `a` of the rectifier for negative inputs, in `[0, 1)`.
            Defaults to `0.0` (ReLU).
        seed: an integer or `keras.random.SeedGenerator` for reproducible draws. Defaults to
            `None` (a different draw each time).

    Example:

    >>> initializer = HeUniform(negative_slope=0.01, seed=0)
    >>> layer = keras.layers.Dense(64, kernel_initializer=initializer)

    Reference:
        He, Zhang, Ren, Sun, "Delving Deep into Rectifiers: Surpassing Human-Level Performance
        on ImageNet Classification", ICCV 2015, equation 15.
    """

    _distribution = "uniform"


def get_initializer(name, seed=None, *, negative_slope=None):
    """Create a kernel initializer from its name.

    The names and what they draw (`fan_in` is the number of inputs of one unit, for a
    convolution `kernel_height * kernel_width * input_channels`):

    - `zeros`: all zeros. Every unit of a layer then computes the same output and receives the
      same update, so the units never become different.
    - `small_random`: `0.001 * N(0, 1)`.
    - `calibrated`: `N(0, 1) / sqrt(fan_in)`, variance 1/fan_in.
    - `he`: `N(0, 1) * sqrt(2 / fan_in)`, an untruncated normal, for ReLU.
    - `he_leaky_normal`, `he_leaky_uniform`: `HeNormal` and `HeUniform` with
      `negative_slope`, variance `2 / ((1 + a**2) * fan_in)`.
    - Keras's initializers by their Keras names: `glorot_normal`, `glorot_uniform`,
      `he_normal` (truncated normal), `he_uniform`, `lecun_normal`, `lecun_uniform`,
      `orthogonal`.

    Args:
        name: one of `available_initializers()`.
        seed: an integer seed for the random initializers. Defaults to `None`.
        negative_slope: the rectifier's negative slope for `he_leaky_normal` and
            `he_leaky_uniform`, for example `he_negative_slope(activation, **options)`. Other
            names do not use it. Defaults to `None`, which those two names reject.

    Returns:
        A new `keras.initializers.Initializer`.

    Raises:
        ValueError: for an unknown name, or a `he_leaky_*` name without a valid
            `negative_slope`.
        TypeError: for a seed that is not an integer or `None`.
    """
    if name not in available_initializers():
        raise ValueError(
            f"Unknown initializer name. Expected one of {available_initializers()}. "
            f"Received: name={name!r}."
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an integer or None. Received: seed={seed!r}.")

    if name == "zeros":
        return keras.initializers.Zeros()
    if name == "small_random":
        return keras.initializers.RandomNormal(mean=0.0, stddev=0.001, seed=seed)
    if name in ("calibrated", "he"):
        scale = 1.0 if name == "calibrated" else 2.0
        return keras.initializers.VarianceScaling(
            scale=scale, mode="fan_in", distribution="untruncated_normal", seed=seed
        )
    if name in ("he_leaky_normal", "he_leaky_uniform"):
        if negative_slope is None:
            raise ValueError(
                f"Initializer {name!r} needs the negative slope of the activation that follows "
                f"the layer. Pass negative_slope=he_negative_slope(activation, **options). "
                f"Received: negative_slope=None."
            )
        initializer_class = HeNormal if name == "he_leaky_normal" else HeUniform
        return initializer_class(negative_slope=negative_slope, seed=seed)
    return keras.initializers.get({"class_name": name, "config": {"seed": seed}})


def available_initializers():
    """Return the initializer names that `get_initializer` accepts, sorted."""
    return sorted((*_KERAS_INITIALIZERS, *_SCHEMES))


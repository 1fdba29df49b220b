"""Randomized leaky ReLU (RReLU)."""

import keras

from kerastricks.layers._validation import check_slope

SAMPLINGS = ("reciprocal", "uniform")


@keras.saving.register_keras_serializable(package="kerastricks")
class RReLU(keras.layers.Layer):
    """Randomized leaky ReLU: a random negative slope in training, a fixed one at inference.

    `f(x) = x` for `x >= 0` and `f(x) = slope * x` for `x < 0`. In training, every element of
    every call draws its own slope between `lower` and `upper`, and the gradient of a negative
    input is that sampled slope. At inference the slope is fixed:

    - `sampling="reciprocal"` (Xu et al.): `slope = 1 / a` with
      `a ~ U(1 / upper, 1 / lower)`, which is `U(3, 8)` for the defaults, and the inference
      slope is `2 / (1 / lower + 1 / upper)`, which is `2 / 11` for the defaults. The mean
      training slope is `ln(upper / lower) / (1 / lower - 1 / upper)`, `ln(8 / 3) / 5` for the
      defaults.
    - `sampling="uniform"` (PyTorch's `torch.nn.RReLU`): `slope ~ U(lower, upper)` and the
      inference slope is `(lower + upper) / 2`.

    Args:
        lower: the smallest negative slope, in `[0, 1)`; above 0 with `"reciprocal"`
            sampling, because `1 / lower` is a bound of `a`. Defaults to `1/8`.
        upper: the largest negative slope, in `[lower, 1)`. Defaults to `1/3`.
        sampling: `"reciprocal"` or `"uniform"`, see above. Defaults to `"reciprocal"`.
        seed: an integer seed for the slopes, so two layers with the same seed draw the same
            slopes. Defaults to `None`.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        Any shape.

    Output shape:
        The input shape.

    Example:

    >>> layer = RReLU(seed=0)
    >>> outputs = layer(np.array([-11.0, 0.0, 2.0]), training=False)  # slope 2/11
    >>> keras.ops.convert_to_numpy(outputs)
    array([-2.,  0.,  2.], dtype=float32)

    Reference:
        Xu, Wang, Chen, Li, "Empirical Evaluation of Rectified Activations in Convolutional
        Network", arXiv:1505.00853, 2015.
    """

    def __init__(self, lower=1 / 8, upper=1 / 3, sampling="reciprocal", seed=None, **kwargs):
        super().__init__(**kwargs)

        lower = check_slope("lower", lower)
        upper = check_slope("upper", upper)
        if lower > upper:
            raise ValueError(
                f"lower must not exceed upper, because they bound the negative slope. "
                f"Received: lower={lower!r}, upper={upper!r}."
            )
        if sampling not in SAMPLINGS:
            raise ValueError(
                f"Unknown sampling. Expected one of {list(SAMPLINGS)}. "
                f"Received: sampling={sampling!r}."
            )
        if sampling == "reciprocal" and lower == 0.0:
            raise ValueError(
                "lower must be above 0 with sampling='reciprocal', because the slope is 1/a "
                "with a ~ U(1/upper, 1/lower). Use sampling='uniform' for a lower slope of 0. "
                f"Received: lower={lower!r}."
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an integer or None. Received: seed={seed!r}.")

        self.lower = lower
        self.upper = upper
        self.sampling = sampling
        self.seed = seed
        # A seed generator is random state, not a weight, so it is created here as Keras's
        # Dropout does.
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True
        self.built = True

    @property
    def inference_slope(self):
        """The fixed negative slope used at inference."""
        if self.sampling == "reciprocal":
            return 2.0 / (1.0 / self.lower + 1.0 / self.upper)
        return (self.lower + self.upper) / 2.0

    def call(self, inputs, training=False):
        if not training:
            return keras.ops.leaky_relu(inputs, negative_slope=self.inference_slope)

        shape = keras.ops.shape(inputs)
        if self.sampling == "reciprocal":
            # Dividing by a ~ U(1/upper, 1/lower) applies the slope 1/a in one operation.
            denominators = keras.random.uniform(
                shape, minval=1.0 / self.upper, maxval=1.0 / self.lower,
                dtype=self.compute_dtype, seed=self.seed_generator,
            )
            scaled = inputs / denominators
        else:
            slopes = keras.random.uniform(
                shape, minval=self.lower, maxval=self.upper,
                dtype=self.compute_dtype, seed=self.seed_generator,
            )
            scaled = inputs * slopes
        # Every slope is below 1, so `scaled` is the larger value exactly where the input is
        # negative. One `maximum` replaces a comparison and a `where`, which saves a pass.
        return keras.ops.maximum(inputs, scaled)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "lower": self.lower,
                "upper": self.upper,
                "sampling": self.sampling,
                "seed": self.seed,
            }
        )
        return config

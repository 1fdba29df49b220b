"""Randomized leaky ReLU (RReLU)."""

import functools

import keras

from kerastricks.layers._validation import check_slope

SAMPLINGS = ("reciprocal", "uniform")

# Multipliers of the lowbias32 integer hash (Chris Wellons, hash-prospector): two rounds of
# xor-shift and multiply that map 32-bit integers one to one with low avalanche bias.
_LOWBIAS32_MULTIPLIERS = (0x7FEB352D, 0x846CA68B)


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

    On the TensorFlow backend the training slopes come from a counter-based generator that
    XLA compiles into one kernel with the activation. It hashes each element's flat index with
    two rounds of the lowbias32 integer hash, keyed by two integers that the seed generator
    draws for every call. The top 24 bits of the hash place `a` (or the uniform slope) on a
    grid of 2**24 steps between its bounds. That is finer than the 2**23 steps of a float32
    `keras.random.uniform` draw, so the grid does not change the distribution measurably. On a
    2-core CPU this draw takes about a quarter of the time of `keras.random.uniform`, which
    other backends use. The two draw different slopes for the same seed.

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
        if keras.backend.backend() == "tensorflow":
            return self._randomize_tensorflow(inputs)
        return self._randomize_generic(inputs)

    def _randomize_generic(self, inputs):
        """Apply per-element random slopes drawn with `keras.random.uniform` (any backend)."""
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

    def _randomize_tensorflow(self, inputs):
        """Apply per-element random slopes from the XLA-compiled hash generator (TensorFlow).

        The generator and the choice between 1 and the slope run as one fused XLA kernel that
        writes one factor per element. The output is `inputs * factors` and the input gradient
        is `upstream * factors`, so the backward pass reuses the factors instead of drawing or
        comparing again.
        """
        import tensorflow as tf

        # A fresh key per call comes from the seed generator, so equal seeds give equal slopes
        # and every call draws new ones, as with `keras.random`.
        key = keras.random.randint((2,), 0, 2**31 - 1, dtype="int32", seed=self.seed_generator)
        if self.sampling == "reciprocal":
            bounds = (1.0 / self.upper, 1.0 / self.lower)
        else:
            bounds = (self.lower, self.upper)
        factors = _compiled_factor_sampler()(
            inputs, key, tf.constant(bounds, tf.float32), self.sampling == "reciprocal"
        )

        @tf.custom_gradient
        def scale(features):
            def grad(upstream):
                return upstream * factors

            return features * factors, grad

        return scale(inputs)

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


def _lowbias32(values):
    """Hash uint32 `values` with lowbias32: xor-shifts by 16, 15 and 16 between two multiplies."""
    import tensorflow as tf

    first, second = _LOWBIAS32_MULTIPLIERS
    values = tf.bitwise.bitwise_xor(values, tf.bitwise.right_shift(values, 16))
    values = values * tf.constant(first, tf.uint32)
    values = tf.bitwise.bitwise_xor(values, tf.bitwise.right_shift(values, 15))
    values = values * tf.constant(second, tf.uint32)
    return tf.bitwise.bitwise_xor(values, tf.bitwise.right_shift(values, 16))


@functools.cache
def _compiled_factor_sampler():
    """Build the XLA-compiled function that returns RReLU's per-element factors (TensorFlow).

    `sample(inputs, key, bounds, reciprocal)` returns a tensor shaped like `inputs` that is 1
    where `inputs >= 0` and a random slope elsewhere. The draw `v ~ U(bounds[0], bounds[1])`
    comes from a counter-based generator that hashes the element's flat index with two keyed
    rounds of lowbias32. The top 24 bits of the hash place `v` on a grid of 2**24 steps,
    the resolution of a float32 in [0.5, 1). The slope is `1 / v` when `reciprocal` is true
    and `v` otherwise.

    This path exists because TensorFlow's Philox kernel, behind `keras.random.uniform`, takes
    6 to 10 times as long as a ReLU on the same tensor on a 2-core CPU, while XLA fuses the
    hash, the conversion and the choice into one pass.
    """
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def sample(inputs, key, bounds, reciprocal):
        key = tf.bitcast(key, tf.uint32)
        # NOTE: the flat index is int32, so it overflows on inputs of 2**31 elements or more,
        # and this path has not been run on inputs that large.
        index = tf.bitcast(tf.range(tf.size(inputs)), tf.uint32)
        bits = _lowbias32(tf.bitwise.bitwise_xor(index, key[0]))
        # With the first round alone, two calls whose first keys differ by `d` (XOR) would
        # draw the same hashes at indices `i` and `i ^ d`. A second keyed round breaks that.
        bits = _lowbias32(bits + key[1])
        unit = tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * (2.0**-24)
        values = bounds[0] + (bounds[1] - bounds[0]) * unit
        slopes = 1.0 / values if reciprocal else values
        slopes = tf.reshape(tf.cast(slopes, inputs.dtype), tf.shape(inputs))
        return tf.where(inputs >= 0, tf.ones_like(slopes), slopes)

    return sample

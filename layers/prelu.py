"""Parametric ReLU with He et al.'s defaults: one learned slope per channel."""

import functools
import numbers

import keras

from kerastricks.layers._validation import check_slope

DATA_FORMATS = ("channels_last", "channels_first")


@keras.saving.register_keras_serializable(package="kerastricks")
class PReLU(keras.layers.Layer):
    """Parametric ReLU with one learned negative slope per channel.

    `f(x) = x` for `x >= 0` and `f(x) = alpha_c * x` for `x < 0`, where `alpha_c` is learned
    for each channel `c` (or one `alpha` for all channels with `channel_shared=True`). The
    slopes start at 0.25 and have no weight decay unless `alpha_regularizer` is given, as in
    He et al. The slopes are shared over every axis except the channel axis, so the layer
    works on 1D, 2D and 3D feature maps of any size, including `None` spatial dimensions in
    fully convolutional models.

    The output is exact for any learned slope, including slopes below 0 and above 1. The
    layer computes one factor per element, 1 for `x >= 0` and the slope elsewhere, and
    multiplies by it in the forward pass and again for the input gradient. The slope gradient
    sums `upstream * min(x, 0)` over the shared axes, so the gradient at `x = 0` is 1 for the
    input and 0 for the slope. On the TensorFlow backend XLA computes the factors in one pass.

    `keras.layers.PReLU` differs: by default it learns one slope per activation (after a
    28x28 feature map with 32 channels, 28 * 28 * 32 = 25,088 slopes instead of 32), and it
    cannot be built on inputs with `None` spatial dimensions unless `shared_axes` is set.

    Args:
        channel_shared: whether one slope is shared by all channels. Defaults to `False` (one
            slope per channel).
        alpha_initializer: the initial slope as a number in `[0, 1)`, or a Keras initializer
            (object, name or config). Defaults to `0.25`.
        alpha_regularizer: a regularizer for the slopes. Defaults to `None` (no weight decay,
            as He et al. recommend, because decay pushes the slopes toward 0, a plain ReLU).
        alpha_constraint: a constraint for the slopes. Defaults to `None`.
        data_format: `"channels_last"` or `"channels_first"`, the position of the channel
            axis in inputs of rank 3 or more. Defaults to `None`, which uses
            `keras.config.image_data_format()`. Inputs of rank 2, `(batch, features)`, always
            have the channel axis last.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        A tensor of rank 2 or more with a known channel size, for example
        `(batch, height, width, channels)`. Other dimensions may be `None`.

    Output shape:
        The input shape.

    Example:

    >>> inputs = keras.Input(shape=(None, None, 3))
    >>> features = keras.layers.Conv2D(32, 3)(inputs)
    >>> activated = PReLU()(features)  # 32 slopes, for images of any size

    Reference:
        He, Zhang, Ren, Sun, "Delving Deep into Rectifiers: Surpassing Human-Level Performance
        on ImageNet Classification", ICCV 2015.
    """

    def __init__(
        self,
        channel_shared=False,
        alpha_initializer=0.25,
        alpha_regularizer=None,
        alpha_constraint=None,
        data_format=None,
        **kwargs,
    ):
        if "shared_axes" in kwargs:
            raise TypeError(
                "This PReLU takes no shared_axes argument: it shares the slopes over every "
                "axis except the channel axis. Use channel_shared=True to share one slope over "
                "the channels as well, data_format to place the channel axis, or "
                "keras.layers.PReLU for other sharing patterns. "
                f"Received: shared_axes={kwargs['shared_axes']!r}."
            )
        super().__init__(**kwargs)

        if not isinstance(channel_shared, bool):
            raise TypeError(
                f"channel_shared must be a bool. Received: channel_shared={channel_shared!r}."
            )
        if isinstance(alpha_initializer, numbers.Real) and not isinstance(
            alpha_initializer, bool
        ):
            value = check_slope("alpha_initializer", alpha_initializer)
            alpha_initializer = keras.initializers.Constant(value)
        if data_format is None:
            data_format = keras.config.image_data_format()
        if data_format not in DATA_FORMATS:
            raise ValueError(
                f"Unknown data_format. Expected one of {list(DATA_FORMATS)}. "
                f"Received: data_format={data_format!r}."
            )

        self.channel_shared = channel_shared
        self.alpha_initializer = keras.initializers.get(alpha_initializer)
        self.alpha_regularizer = keras.regularizers.get(alpha_regularizer)
        self.alpha_constraint = keras.constraints.get(alpha_constraint)
        self.data_format = data_format
        self.supports_masking = True

    def build(self, input_shape):
        rank = len(input_shape)
        if rank < 2:
            raise ValueError(
                f"PReLU expects inputs of rank 2 or more, (batch, ..., channels). "
                f"Received: input_shape={tuple(input_shape)}."
            )
        channel_axis = 1 if (self.data_format == "channels_first" and rank > 2) else rank - 1
        channels = input_shape[channel_axis]

        if self.channel_shared:
            alpha_shape = (1,)
            self.input_spec = keras.layers.InputSpec(ndim=rank)
        else:
            if channels is None:
                raise ValueError(
                    f"PReLU needs a known channel size on axis {channel_axis} "
                    f"(data_format={self.data_format!r}) to create one slope per channel. "
                    f"Set the channel size, or use channel_shared=True. "
                    f"Received: input_shape={tuple(input_shape)}."
                )
            # A (channels, 1, ..., 1) shape broadcasts over the spatial axes of channels_first.
            alpha_shape = (channels,) + (1,) * (rank - 1 - channel_axis)
            self.input_spec = keras.layers.InputSpec(ndim=rank, axes={channel_axis: channels})

        self.alpha = self.add_weight(
            name="alpha",
            shape=alpha_shape,
            initializer=self.alpha_initializer,
            regularizer=self.alpha_regularizer,
            constraint=self.alpha_constraint,
        )

    def call(self, inputs):
        # A tensor copy rather than the variable: the custom gradient returns the slope
        # gradient as the gradient of an input, and the tape carries it to the variable.
        alpha = keras.ops.copy(self.alpha)
        # The slope gradient sums over every axis where `alpha` (aligned right) has size 1.
        alpha_shape = (1,) * (len(inputs.shape) - len(alpha.shape)) + tuple(alpha.shape)
        slope_axes = tuple(axis for axis, size in enumerate(alpha_shape) if size == 1)

        @keras.ops.custom_gradient
        def activate(features, slopes):
            factors = _slope_factors(features, slopes)

            def grad(*args, upstream=None):
                if upstream is None:
                    (upstream,) = args
                # d(alpha_c * x)/d(alpha_c) = x on the negative inputs of channel c.
                slope_grad = keras.ops.sum(
                    upstream * keras.ops.minimum(features, 0), axis=slope_axes, keepdims=True
                )
                return upstream * factors, keras.ops.reshape(slope_grad, keras.ops.shape(slopes))

            return features * factors, grad

        return activate(inputs, alpha)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "channel_shared": self.channel_shared,
                "alpha_initializer": keras.initializers.serialize(self.alpha_initializer),
                "alpha_regularizer": keras.regularizers.serialize(self.alpha_regularizer),
                "alpha_constraint": keras.constraints.serialize(self.alpha_constraint),
                "data_format": self.data_format,
            }
        )
        return config


def _slope_factors(inputs, alpha):
    """Return factors shaped like `inputs`: 1 where `inputs >= 0`, else the channel's slope.

    Multiplying by these factors gives the output and, in the backward pass, the input gradient,
    so both take one multiplication. `x * 1` is `x` and `x * alpha` is `alpha * x`, so the
    output is exact for every slope, including slopes below 0 and above 1.
    """
    if keras.backend.backend() == "tensorflow":
        return _compiled_tensorflow_factors()(inputs, alpha)
    return _generic_slope_factors(inputs, alpha)


def _generic_slope_factors(inputs, alpha):
    """Compute `_slope_factors` with `keras.ops` (any backend)."""
    return keras.ops.where(inputs >= 0, keras.ops.ones((), inputs.dtype), alpha)


@functools.cache
def _compiled_tensorflow_factors():
    """Build the XLA-compiled form of `_slope_factors` (TensorFlow).

    TensorFlow's CPU kernels run the comparison, the broadcast of the slopes and the
    select as separate passes, and its broadcasting select is slow. XLA fuses them into one.
    """
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def factors(inputs, alpha):
        return tf.where(inputs >= 0, tf.ones((), inputs.dtype), alpha)

    return factors

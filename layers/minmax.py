"""Min-max scaling of each feature to [-1, 1], adapt-able like `keras.layers.Normalization`."""

import keras
import numpy as np

from kerastricks.layers import _statistics


@keras.saving.register_keras_serializable(package="kerastricks")
class MinMaxScaling(_statistics.AdaptedWeightsMixin, keras.layers.Layer):
    """Scales each feature linearly so that its training minimum maps to -1 and maximum to 1.

    `adapt()` records the minimum and maximum of each feature batch by batch, and the layer
    computes `2 * (x - min) / (max - min) - 1`. A feature that is constant in the training data
    (`max == min`, such as an always-black border pixel) maps to 0. Values outside the training
    range map outside [-1, 1]; nothing is clipped. This is the survey's alternative to
    standardization, meant for features on different scales. For images in [0, 1] it mainly
    stretches pixels whose range is narrow.

    Args:
        axis: the axis or axes that keep separate statistics, as in
            `keras.layers.Normalization`: `-1` scales each channel of an image (or each
            column of a `(batch, features)` matrix), `(1, 2, 3)` scales each pixel of each
            channel of an image, and `None` uses one minimum and maximum for all values. The
            batch axis 0 cannot be kept. Defaults to `-1`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        `(batch_size, ...)`: any shape whose kept axes have a fixed size.

    Output shape:
        The input shape.

    Raises:
        ValueError: for an axis out of range or the batch axis, NaN or infinite values in
            `adapt()` data, or inputs whose kept axes differ from the adapted ones.
        RuntimeError: when the layer is called on data before `adapt()`.

    Example:

    >>> layer = MinMaxScaling(axis=-1)
    >>> layer.adapt(np.array([[0.0, 10.0], [2.0, 30.0]], dtype="float32"))
    >>> keras.ops.convert_to_numpy(layer(np.array([[1.0, 20.0]], dtype="float32")))
    array([[0., 0.]], dtype=float32)
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if axis is None:
            axis_tuple = ()
        elif isinstance(axis, int) and not isinstance(axis, bool):
            axis_tuple = (axis,)
        elif isinstance(axis, (tuple, list)) and all(
            isinstance(item, int) and not isinstance(item, bool) for item in axis
        ):
            axis_tuple = tuple(axis)
        else:
            raise TypeError(
                f"`axis` must be an integer, a tuple of integers or None. Received: axis={axis!r}."
            )
        self.axis = axis_tuple
        self._adapted = False

    def build(self, input_shape):
        rank = len(input_shape)
        kept = []
        for axis in self.axis:
            positive = axis + rank if axis < 0 else axis
            if not 1 <= positive < rank:
                raise ValueError(
                    f"`axis` must name non-batch axes of inputs of rank {rank}, between "
                    f"{-(rank - 1)} and {rank - 1} without 0. Received: axis={self.axis}."
                )
            if input_shape[positive] is None:
                raise ValueError(
                    f"The kept axis {axis} must have a fixed size. "
                    f"Received: input_shape={tuple(input_shape)}."
                )
            kept.append(positive)
        self._kept_axes = tuple(sorted(set(kept)))
        self._reduced_axes = tuple(i for i in range(rank) if i not in self._kept_axes)
        # Statistics broadcast against the inputs: size 1 on every reduced axis except batch.
        self._stat_shape = tuple(
            input_shape[i] if i in self._kept_axes else 1 for i in range(1, rank)
        )
        self._rank = rank
        self.minimum = self.add_weight(
            name="minimum", shape=self._stat_shape, initializer="zeros", trainable=False
        )
        self.maximum = self.add_weight(
            name="maximum", shape=self._stat_shape, initializer="ones", trainable=False
        )
        self.built = True

    def adapt(self, data):
        """Record the minimum and maximum of each feature of `data`.

        Args:
            data: a NumPy array or tensor, a batched `tf.data.Dataset` (elements may be
                `(inputs, labels)` tuples), or an iterable of arrays, each a batch.
        """
        minimum = maximum = None
        for index, batch in enumerate(_statistics.iterate_batches(data, "MinMaxScaling")):
            if not self.built:
                self.build((None, *batch.shape[1:]))
            self._check_kept_shape(batch.shape, "adapt() data")
            batch = batch.astype(np.float32, copy=False)
            if batch.shape[0] == 0:
                continue
            batch_min = batch.min(axis=self._reduced_axes, keepdims=True)[0]
            batch_max = batch.max(axis=self._reduced_axes, keepdims=True)[0]
            # NaN propagates into the minimum and infinities reach the extremes, so a finite
            # minimum and maximum prove the batch finite without another pass.
            if not (np.isfinite(batch_min).all() and np.isfinite(batch_max).all()):
                _statistics.check_finite(batch, index, "MinMaxScaling")
            minimum = batch_min if minimum is None else np.minimum(minimum, batch_min)
            maximum = batch_max if maximum is None else np.maximum(maximum, batch_max)
        if minimum is None:
            raise ValueError("MinMaxScaling.adapt() received no data. Pass at least 1 sample.")
        self.minimum.assign(minimum)
        self.maximum.assign(maximum)
        self._adapted = True

    def call(self, inputs):
        if not self._adapted:
            raise RuntimeError(
                "MinMaxScaling was called before adapt(). Call layer.adapt(training_data) "
                "first, or load a saved model that contains an adapted layer."
            )
        self._check_kept_shape(tuple(inputs.shape), "inputs")
        minimum = keras.ops.cast(self.minimum, inputs.dtype)
        value_range = keras.ops.cast(self.maximum, inputs.dtype) - minimum
        constant = keras.ops.equal(value_range, 0)
        safe_range = keras.ops.where(constant, keras.ops.ones_like(value_range), value_range)
        scaled = 2 * (inputs - minimum) / safe_range - 1
        return keras.ops.where(constant, keras.ops.zeros_like(scaled), scaled)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        if not self.axis:
            axis = None
        elif len(self.axis) == 1:
            axis = self.axis[0]
        else:
            axis = self.axis
        config.update({"axis": axis})
        return config


    def _check_kept_shape(self, shape, source):
        if len(shape) != self._rank or any(
            shape[i] != self._stat_shape[i - 1] for i in self._kept_axes
        ):
            raise ValueError(
                f"MinMaxScaling was built for inputs of rank {self._rank} with shape "
                f"{self._stat_shape} on the kept axes {self._kept_axes}, but the {source} have "
                f"shape {tuple(shape)}. Pass data of the adapted shape or adapt a new layer."
            )

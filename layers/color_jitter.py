"""Colour jittering in HSV space: random powers, factors and offsets of saturation and value."""

import math

import keras


def _check_range(value, name, low=None, positive=False):
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        or value[0] > value[1]
    ):
        raise ValueError(
            f"`{name}` must be a pair of numbers (lower, upper) with lower <= upper. "
            f"Received: {name}={value!r}."
        )
    if positive and value[0] <= 0:
        raise ValueError(f"`{name}` must contain positive numbers. Received: {name}={value!r}.")
    if low is not None and value[0] < low:
        raise ValueError(f"`{name}` must lie in [{low}, ...]. Received: {name}={value!r}.")
    return (float(value[0]), float(value[1]))


@keras.saving.register_keras_serializable(package="kerastricks")
class RandomHSVJitter(keras.layers.Layer):
    """Jitters the hue, saturation and value of each image in HSV space.

    For each image, the layer converts RGB to HSV. Independently for saturation `S` and value
    `V`, it draws a power `p`, a factor `f` and an offset `o` and sets
    `S = clip(f * S**p + o, 0, 1)` (likewise for `V`). It adds a random shift to the hue
    (modulo 1) and converts back to RGB. The powers are drawn log-uniformly from
    `power_range`, so that 1 is the median and `p` and `1/p` are equally likely; factors,
    offsets and the hue shift are drawn uniformly. This is the colour jittering that the survey
    below describes in its data augmentation section. `keras.layers.RandomColorJitter` changes
    brightness, contrast, saturation and hue by factors and has no powers, so it cannot
    reproduce it. The layer returns its input unchanged at inference (`training=False`).

    Args:
        power_range: the (lower, upper) range of the powers of S and V, both positive.
            Defaults to `(0.25, 4.0)`.
        factor_range: the (lower, upper) range of the factors of S and V. Defaults to
            `(0.7, 1.4)`.
        offset_range: the (lower, upper) range of the offsets added to S and V. Defaults to
            `(-0.1, 0.1)`.
        hue_range: the (lower, upper) range of the hue shift, in turns (1 is a full
            circle). Defaults to `(-0.1, 0.1)`.
        value_range: the (lower, upper) value range of the RGB images, such as `(0, 1)` or
            `(0, 255)`. Defaults to `(0, 1)`.
        seed: an integer seed for the random draws. Defaults to `None`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        `(batch_size, height, width, 3)` or a single image `(height, width, 3)`, channels last.

    Output shape:
        The input shape.

    Example:

    >>> images = np.random.default_rng(0).random((4, 8, 8, 3)).astype("float32")
    >>> tuple(RandomHSVJitter(seed=1)(images, training=True).shape)
    (4, 8, 8, 3)

    Reference:
        Wei, "Must Know Tips/Tricks in Deep Neural Networks", section 1 (data augmentation).
    """

    def __init__(
        self,
        power_range=(0.25, 4.0),
        factor_range=(0.7, 1.4),
        offset_range=(-0.1, 0.1),
        hue_range=(-0.1, 0.1),
        value_range=(0, 1),
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.power_range = _check_range(power_range, "power_range", positive=True)
        self.factor_range = _check_range(factor_range, "factor_range", low=0)
        self.offset_range = _check_range(offset_range, "offset_range")
        self.hue_range = _check_range(hue_range, "hue_range")
        self.value_range = _check_range(value_range, "value_range")
        if self.value_range[0] == self.value_range[1]:
            raise ValueError(
                f"`value_range` must have lower < upper. Received: value_range={value_range!r}."
            )
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def get_random_transformation(self, images, training=True, seed=None):
        """Draw one image's parameters per row, or return `None` at inference.

        Returns:
            A dict of `(batch, 2)` tensors `power`, `factor` and `offset` (column 0 for S,
            column 1 for V) and a `(batch,)` tensor `hue_shift`.
        """
        if not training:
            return None
        seed = self.generator if seed is None else seed
        batch_size = keras.ops.shape(images)[0] if len(images.shape) == 4 else 1
        log_low, log_high = math.log(self.power_range[0]), math.log(self.power_range[1])
        uniform = keras.random.uniform
        return {
            "power": keras.ops.exp(uniform((batch_size, 2), log_low, log_high, seed=seed)),
            "factor": uniform((batch_size, 2), *self.factor_range, seed=seed),
            "offset": uniform((batch_size, 2), *self.offset_range, seed=seed),
            "hue_shift": uniform((batch_size,), *self.hue_range, seed=seed),
        }

    def transform_images(self, images, transformation):
        """Apply drawn parameters (see `get_random_transformation`) to RGB images."""
        single = len(images.shape) == 3
        if single:
            images = images[None]
        dtype = images.dtype
        low, high = self.value_range
        rgb = keras.ops.cast((images - low) / (high - low), "float32")
        hsv = keras.ops.image.rgb_to_hsv(keras.ops.clip(rgb, 0.0, 1.0))

        def per_image(values):
            return keras.ops.cast(values, "float32")[:, None, None]

        power = per_image(transformation["power"])
        factor = per_image(transformation["factor"])
        offset = per_image(transformation["offset"])
        saturation_value = hsv[..., 1:] ** power * factor + offset
        saturation_value = keras.ops.clip(saturation_value, 0.0, 1.0)
        hue = hsv[..., :1] + per_image(transformation["hue_shift"])[..., None]
        hue = hue - keras.ops.floor(hue)

        rgb = keras.ops.image.hsv_to_rgb(keras.ops.concatenate([hue, saturation_value], -1))
        outputs = keras.ops.cast(rgb * (high - low) + low, dtype)
        return outputs[0] if single else outputs

    def call(self, inputs, training=False):
        if len(inputs.shape) not in (3, 4) or inputs.shape[-1] != 3:
            raise ValueError(
                f"RandomHSVJitter needs RGB images with 3 channels last. Received: "
                f"shape={tuple(inputs.shape)}. Repeat a grayscale channel three times "
                f"(keras.ops.repeat(images, 3, axis=-1)) or leave the jitter out."
            )
        if not training:
            return inputs
        return self.transform_images(inputs, self.get_random_transformation(inputs))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "power_range": self.power_range,
                "factor_range": self.factor_range,
                "offset_range": self.offset_range,
                "hue_range": self.hue_range,
                "value_range": self.value_range,
                "seed": self.seed,
            }
        )
        return config

"""Scale augmentation: random-resized crops and CIFAR-style pad-and-random-crop."""

import math

import keras


def resample(images, rows, cols):
    """Sample `images` bilinearly at per-image row and column coordinates.

    A crop followed by a resize, and a shift, only move pixels along each axis separately, so
    the image is multiplied by one interpolation matrix per axis. Entry `(i, k)` of the row
    matrix is the hat function `max(0, 1 - |rows[i] - k|)`. An integer coordinate therefore
    copies one pixel exactly, and a coordinate one pixel or more outside the image reads 0.

    Args:
        images: `(batch, height, width, channels)` images.
        rows: `(batch, out_height)` source row coordinates, in pixels.
        cols: `(batch, out_width)` source column coordinates, in pixels.

    Returns:
        `(batch, out_height, out_width, channels)` images of the dtype of `images`.
    """
    height, width = images.shape[1], images.shape[2]
    dtype = keras.backend.standardize_dtype(images.dtype)
    # Half-precision sums of up to `height` products lose digits, so interpolate in float32.
    compute = "float64" if dtype == "float64" else "float32"

    def hat_matrix(coordinates, size):
        grid = keras.ops.arange(size, dtype=compute)
        distance = keras.ops.abs(keras.ops.cast(coordinates, compute)[:, :, None] - grid)
        return keras.ops.relu(1.0 - distance)

    row_matrix = hat_matrix(rows, height)
    col_matrix = hat_matrix(cols, width)
    outputs = keras.ops.einsum("bik,bklc->bilc", row_matrix, keras.ops.cast(images, compute))
    outputs = keras.ops.einsum("bjl,bilc->bijc", col_matrix, outputs)
    return keras.ops.cast(outputs, dtype)


def _check_images(shape, layer_name):
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        raise ValueError(
            f"{layer_name} needs a batch of channels-last images with a fixed size, shaped "
            f"(batch, height, width, channels). Received: shape={tuple(shape)}."
        )


def _check_pair(value, name, low, high, low_inclusive=True):
    valid = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and value[0] <= value[1]
        and (value[0] >= low if low_inclusive else value[0] > low)
        and (high is None or value[1] <= high)
    )
    if not valid:
        bound = f"[{low}" if low_inclusive else f"({low}"
        upper = f"{high}]" if high is not None else "inf)"
        raise ValueError(
            f"`{name}` must be a pair (lower, upper) with lower <= upper, both in "
            f"{bound}, {upper}. Received: {name}={value!r}."
        )
    return (float(value[0]), float(value[1]))


def _check_size(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}.")
    return value


@keras.saving.register_keras_serializable(package="kerastricks")
class RandomResizedCrop(keras.layers.Layer):
    """Crops a random area and aspect ratio of each image, then resizes it to a fixed size.

    In training, for each image the layer draws a fraction of the image area uniformly from
    `scale` and an aspect ratio (width / height) log-uniformly from `ratio`. It places a crop
    of that area and ratio uniformly at random inside the image and resizes it bilinearly to
    `(height, width)`. A crop that would be taller or wider than the image is cut to the
    image's height or width. This is the scale augmentation of Szegedy et al. At inference the
    whole image is resized to `(height, width)`, which returns the input unchanged when it
    already has that size. The resize does no antialiasing, so shrinking a crop to less than
    half its size aliases.

    Args:
        height: the output height in pixels.
        width: the output width in pixels.
        scale: the (lower, upper) range of the crop area as a fraction of the image area,
            within (0, 1]. Defaults to `(0.08, 1.0)`.
        ratio: the (lower, upper) range of the crop's aspect ratio (width / height), both
            positive. Defaults to `(3 / 4, 4 / 3)`.
        seed: an integer seed for the random draws. Defaults to `None`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        `(batch_size, image_height, image_width, channels)`, channels last.

    Output shape:
        `(batch_size, height, width, channels)`.

    Example:

    >>> images = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    >>> layer = RandomResizedCrop(24, 24, scale=(0.5, 1.0), seed=1)
    >>> tuple(layer(images, training=True).shape)
    (4, 24, 24, 1)

    Reference:
        Szegedy et al., "Going Deeper with Convolutions", CVPR 2015, section 6.
    """

    def __init__(self, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=None, **kwargs):
        super().__init__(**kwargs)
        self.height = _check_size(height, "height")
        self.width = _check_size(width, "width")
        self.scale = _check_pair(scale, "scale", 0.0, 1.0, low_inclusive=False)
        self.ratio = _check_pair(ratio, "ratio", 0.0, None, low_inclusive=False)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def get_random_transformation(self, images, training=True, seed=None):
        """Draw one crop box per image, or return `None` at inference.

        Returns:
            A `(batch, 4)` tensor of boxes `(top, left, crop_height, crop_width)` in pixels,
            real-valued, each inside the image.
        """
        if not training:
            return None
        seed = self.generator if seed is None else seed
        batch_size = keras.ops.shape(images)[0]
        image_height, image_width = images.shape[1], images.shape[2]
        area = image_height * image_width * keras.random.uniform(
            (batch_size,), *self.scale, seed=seed
        )
        log_ratio = keras.random.uniform(
            (batch_size,), math.log(self.ratio[0]), math.log(self.ratio[1]), seed=seed
        )
        aspect = keras.ops.exp(log_ratio)
        crop_height = keras.ops.minimum(keras.ops.sqrt(area / aspect), float(image_height))
        crop_width = keras.ops.minimum(keras.ops.sqrt(area * aspect), float(image_width))
        top = keras.random.uniform((batch_size,), seed=seed) * (image_height - crop_height)
        left = keras.random.uniform((batch_size,), seed=seed) * (image_width - crop_width)
        return keras.ops.stack([top, left, crop_height, crop_width], axis=1)

    def transform_images(self, images, boxes):
        """Crop each image to its box and resize the crop to `(height, width)` bilinearly."""
        boxes = keras.ops.cast(boxes, "float32")
        image_height, image_width = images.shape[1], images.shape[2]
        rows = _pixel_centres(boxes[:, 0], boxes[:, 2], self.height, image_height)
        cols = _pixel_centres(boxes[:, 1], boxes[:, 3], self.width, image_width)
        return resample(images, rows, cols)

    def call(self, inputs, training=False):
        _check_images(inputs.shape, "RandomResizedCrop")
        if training:
            boxes = self.get_random_transformation(inputs)
        else:
            batch_size = keras.ops.shape(inputs)[0]
            whole = keras.ops.convert_to_tensor(
                [0.0, 0.0, float(inputs.shape[1]), float(inputs.shape[2])]
            )
            boxes = keras.ops.broadcast_to(whole[None], (batch_size, 4))
        return self.transform_images(inputs, boxes)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "height": self.height,
                "width": self.width,
                "scale": self.scale,
                "ratio": self.ratio,
                "seed": self.seed,
            }
        )
        return config


def _pixel_centres(start, length, out_size, in_size):
    """Map output pixel centres onto a window `[start, start + length)` of the input.

    Pixel `i` of the output covers `[i, i + 1)` in output units, so its centre `i + 0.5` maps to
    `start + (i + 0.5) * length / out_size` in input units and to that minus 0.5 as an input
    pixel index. Coordinates are clamped to the image, which repeats the border pixel.
    """
    steps = keras.ops.arange(out_size, dtype="float32") + 0.5
    coordinates = start[:, None] + steps[None, :] * (length / out_size)[:, None] - 0.5
    return keras.ops.clip(coordinates, 0.0, float(in_size - 1))


@keras.saving.register_keras_serializable(package="kerastricks")
class RandomPadCrop(keras.layers.Layer):
    """Pads each image with zeros and crops a random window of the original size (CIFAR style).

    In training, each image is shifted by a random whole number of pixels, drawn uniformly
    and independently from `[-padding, padding]` for rows and columns, and the uncovered
    border is filled with zeros. This equals padding `padding` zeros on every side and taking
    a random crop of the original size, as in the CIFAR-10 augmentation of He et al. It
    returns its input unchanged at inference. Unlike chaining `keras.layers.ZeroPadding2D`
    and `keras.layers.RandomCrop`, whose inference path resizes the padded image, inference
    here is the exact identity.

    Args:
        padding: the number of zero pixels added on each side, at least 1. Defaults to `4`.
        seed: an integer seed for the random draws. Defaults to `None`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        `(batch_size, height, width, channels)`, channels last.

    Output shape:
        The input shape.

    Example:

    >>> images = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    >>> tuple(RandomPadCrop(padding=4, seed=1)(images, training=True).shape)
    (4, 28, 28, 1)

    Reference:
        He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
        section 4.2.
    """

    def __init__(self, padding=4, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = _check_size(padding, "padding")
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        _check_images(input_shape, "RandomPadCrop")
        if self.padding >= min(input_shape[1], input_shape[2]):
            raise ValueError(
                f"`padding` must be smaller than the image height and width "
                f"{tuple(input_shape[1:3])}, or a crop could hold no image pixel. "
                f"Received: padding={self.padding}."
            )
        self.built = True

    def get_random_transformation(self, images, training=True, seed=None):
        """Draw a `(batch, 2)` integer shift `(rows, columns)` per image, or `None`."""
        if not training:
            return None
        seed = self.generator if seed is None else seed
        batch_size = keras.ops.shape(images)[0]
        return keras.random.randint(
            (batch_size, 2), -self.padding, self.padding + 1, seed=seed, dtype="int32"
        )

    def transform_images(self, images, shifts):
        """Return images whose pixel `(i, j)` is the input's `(i + shift_row, j + shift_col)`."""
        shifts = keras.ops.cast(shifts, "float32")
        rows = keras.ops.arange(images.shape[1], dtype="float32")[None, :] + shifts[:, :1]
        cols = keras.ops.arange(images.shape[2], dtype="float32")[None, :] + shifts[:, 1:]
        return resample(images, rows, cols)

    def call(self, inputs, training=False):
        _check_images(inputs.shape, "RandomPadCrop")
        if not training:
            return inputs
        return self.transform_images(inputs, self.get_random_transformation(inputs))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"padding": self.padding, "seed": self.seed})
        return config

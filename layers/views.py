"""Test-time views (10-crop and flips) and prediction averaged over them."""

import keras
import numpy as np

VIEW_SETS = ("ten_crop", "flip")


def ten_crop_views(images, height, width):
    """Return the four corner crops and the centre crop of each image, and their mirrors.

    The views are ordered top-left, top-right, bottom-left, bottom-right, centre, then the
    same five crops flipped horizontally. The centre crop starts at row
    `(image_height - height) // 2` and column `(image_width - width) // 2`.

    Args:
        images: `(batch, image_height, image_width, channels)` images, channels last.
        height: the crop height, at most the image height.
        width: the crop width, at most the image width.

    Returns:
        A `(batch, 10, height, width, channels)` tensor.

    Raises:
        ValueError: for a crop larger than the image.

    Example:

    >>> images = np.zeros((2, 28, 28, 1), dtype="float32")
    >>> tuple(ten_crop_views(images, 24, 24).shape)
    (2, 10, 24, 24, 1)

    Reference:
        Krizhevsky, Sutskever and Hinton, "ImageNet Classification with Deep Convolutional
        Neural Networks", NIPS 2012, section 4.1.
    """
    images = keras.ops.convert_to_tensor(images)
    _check_images(images.shape)
    image_height, image_width = images.shape[1], images.shape[2]
    for name, size, limit in (("height", height, image_height), ("width", width, image_width)):
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= limit:
            raise ValueError(
                f"The crop {name} must be an integer between 1 and the image {name} {limit}. "
                f"Received: {name}={size!r} for images of shape {tuple(images.shape[1:])}."
            )
    bottom, right = image_height - height, image_width - width
    corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
    crops = [images[:, top : top + height, left : left + width] for top, left in corners]
    crops += [keras.ops.flip(crop, axis=2) for crop in crops]
    return keras.ops.stack(crops, axis=1)


def flip_views(images):
    """Return each image and its horizontal mirror, as a `(batch, 2, height, width, channels)`
    tensor."""
    images = keras.ops.convert_to_tensor(images)
    _check_images(images.shape)
    return keras.ops.stack([images, keras.ops.flip(images, axis=2)], axis=1)


def predict_with_views(model, images, views="ten_crop", batch_size=64, from_logits=False):
    """Predict class probabilities averaged over test-time views of each image.

    Each batch of images is turned into its views, the model predicts all of them at once,
    and the probabilities of each image's views are averaged. For `"ten_crop"` the crop size
    is the model's input size, so the images must be at least that large.

    Args:
        model: a Keras model that maps `(batch, height, width, channels)` images to class
            probabilities, or to logits when `from_logits=True`.
        images: a NumPy array or tensor of images, channels last.
        views: `"ten_crop"` or `"flip"`. Defaults to `"ten_crop"`.
        batch_size: the number of images per prediction step. The model receives
            `batch_size * number_of_views` images at a time. Defaults to `64`.
        from_logits: whether the model outputs logits, which are turned into probabilities
            with a softmax before averaging. Defaults to `False`.

    Returns:
        A NumPy array `(number_of_images, number_of_classes)` of averaged probabilities.

    Raises:
        ValueError: for an unknown view set, a non-positive `batch_size`, or images smaller
            than the model's input.
    """
    if views not in VIEW_SETS:
        raise ValueError(
            f"Unknown view set. Expected one of {list(VIEW_SETS)}. Received: views={views!r}."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}."
        )
    images = np.asarray(keras.ops.convert_to_numpy(images))
    _check_images(images.shape)
    if len(images) == 0:
        raise ValueError("predict_with_views() received no images. Pass at least one image.")

    averages = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        if views == "ten_crop":
            height, width = model.input_shape[1], model.input_shape[2]
            stacked = ten_crop_views(batch, height, width)
        else:
            stacked = flip_views(batch)
        num_images, num_views = stacked.shape[0], stacked.shape[1]
        flat = keras.ops.reshape(stacked, (num_images * num_views, *stacked.shape[2:]))
        outputs = model(flat, training=False)
        if from_logits:
            outputs = keras.ops.softmax(outputs, axis=-1)
        outputs = keras.ops.reshape(outputs, (num_images, num_views, -1))
        averages.append(keras.ops.convert_to_numpy(keras.ops.mean(outputs, axis=1)))
    return np.concatenate(averages, axis=0)


def _check_images(shape):
    if len(shape) != 4:
        raise ValueError(
            f"Test-time views need a batch of channels-last images, shaped "
            f"(batch, height, width, channels). Received: shape={tuple(shape)}."
        )

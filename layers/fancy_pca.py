"""AlexNet's PCA colour augmentation ("fancy PCA")."""

import keras
import numpy as np

from kerastricks.layers import _statistics


@keras.saving.register_keras_serializable(package="kerastricks")
class FancyPCA(_statistics.AdaptedWeightsMixin, keras.layers.Layer):
    """Adds a random multiple of the principal components of RGB pixel colours to each image.

    For each image, the layer draws `alpha_i ~ N(0, stddev)` for `i = 1, 2, 3` once and adds
    `sum_i alpha_i * lambda_i * p_i` to every pixel, where `lambda_i` and the columns `p_i` are
    the eigenvalues and eigenvectors of the 3x3 covariance of RGB pixel values over the
    training images. The shift follows the directions in which natural colours vary, so it
    mimics changes in the intensity and colour of the illumination. The eigenpairs come from
    `adapt()` on the training images, or are passed in. Because they are estimated on the
    images themselves, the shift has the right size for whatever value range the pipeline
    uses ([0, 1] or [0, 255]), as long as `adapt()` gets the same range. Nothing is clipped.
    The layer returns its input unchanged at inference (`training=False`).

    Args:
        stddev: the standard deviation of each `alpha_i`. Defaults to `0.1`, the value
            of Krizhevsky et al.
        eigenvalues: optional 3 eigenvalues of the RGB covariance, in any order. Passing them
            (with `eigenvectors`) makes `adapt()` unnecessary. Defaults to `None`.
        eigenvectors: optional 3x3 matrix whose column `i` is the eigenvector of
            `eigenvalues[i]`. Defaults to `None`.
        seed: an integer seed for the random draws. Defaults to `None`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        `(batch_size, height, width, 3)` or a single image `(height, width, 3)`, channels last.

    Output shape:
        The input shape.

    Raises:
        ValueError: for a negative `stddev`, eigenpairs of the wrong shape, images without 3
            channels, or NaN or infinite values in `adapt()` data.
        RuntimeError: when the layer is called in training before `adapt()` and without
            eigenpairs.

    Example:

    >>> images = np.random.default_rng(0).random((8, 16, 16, 3)).astype("float32")
    >>> layer = FancyPCA(stddev=0.1, seed=1)
    >>> layer.adapt(images)
    >>> tuple(layer(images, training=True).shape)
    (8, 16, 16, 3)

    Reference:
        Krizhevsky, Sutskever and Hinton, "ImageNet Classification with Deep Convolutional
        Neural Networks", NIPS 2012, section 4.1.
    """

    def __init__(self, stddev=0.1, eigenvalues=None, eigenvectors=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(stddev, bool) or not isinstance(stddev, (int, float)) or stddev < 0:
            raise ValueError(
                f"`stddev` must be a non-negative number. Received: stddev={stddev!r}."
            )
        if (eigenvalues is None) != (eigenvectors is None):
            raise ValueError(
                "Pass both `eigenvalues` and `eigenvectors`, or neither and call adapt(). "
                f"Received: eigenvalues={eigenvalues!r}, eigenvectors={eigenvectors!r}."
            )
        if eigenvalues is not None:
            eigenvalues = _as_float_array(eigenvalues, (3,), "eigenvalues")
            eigenvectors = _as_float_array(eigenvectors, (3, 3), "eigenvectors")
        self.stddev = float(stddev)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)
        self._initial_eigenvalues = eigenvalues
        self._initial_eigenvectors = eigenvectors
        self._adapted = eigenvalues is not None

    def build(self, input_shape):
        _check_channels(input_shape)
        if self._initial_eigenvalues is None:
            values_init, vectors_init = "zeros", "zeros"
        else:
            values_init = keras.initializers.Constant(self._initial_eigenvalues)
            vectors_init = keras.initializers.Constant(self._initial_eigenvectors)
        self.eigenvalues = self.add_weight(
            name="eigenvalues", shape=(3,), initializer=values_init, trainable=False
        )
        self.eigenvectors = self.add_weight(
            name="eigenvectors", shape=(3, 3), initializer=vectors_init, trainable=False
        )
        self.built = True

    def adapt(self, data):
        """Set the eigenpairs from the covariance of the RGB pixels of `data`.

        Args:
            data: images `(batch, height, width, 3)` as a NumPy array or tensor, a batched
                `tf.data.Dataset` (elements may be `(images, labels)` tuples), or an iterable
                of image batches. Use the same value range as the images the layer augments.
        """
        accumulator = _statistics.MomentAccumulator(3)
        for index, batch in enumerate(_statistics.iterate_batches(data, "FancyPCA")):
            _check_channels(batch.shape)
            pixels = batch.reshape(-1, 3).astype(np.float32, copy=False)
            _statistics.check_finite(pixels, index, "FancyPCA")
            accumulator.update(pixels)
        if accumulator.count < 2:
            raise ValueError(
                f"FancyPCA.adapt() needs at least 2 pixels to estimate a covariance. "
                f"Received: {accumulator.count}."
            )
        eigenvalues, eigenvectors = np.linalg.eigh(accumulator.covariance())
        # Descending order, with each eigenvector's largest entry positive, so that
        # `eigenvalues[0]` is the principal component whatever the LAPACK build.
        eigenvalues = np.clip(eigenvalues[::-1], 0.0, None)
        eigenvectors = eigenvectors[:, ::-1]
        rows = np.argmax(np.abs(eigenvectors), axis=0)
        eigenvectors = eigenvectors * np.sign(eigenvectors[rows, np.arange(3)])
        if not self.built:
            self.build((None, None, None, 3))
        self.eigenvalues.assign(eigenvalues.astype(np.float32))
        self.eigenvectors.assign(eigenvectors.astype(np.float32))
        self._adapted = True

    def get_random_transformation(self, images, training=True, seed=None):
        """Draw the `(batch, 3)` coefficients `alpha`, or return `None` at inference."""
        if not training:
            return None
        batch_size = keras.ops.shape(images)[0] if len(images.shape) == 4 else 1
        return keras.random.normal(
            (batch_size, 3), stddev=self.stddev, seed=self.generator if seed is None else seed
        )

    def transform_images(self, images, alpha):
        """Add `sum_i alpha[:, i] * lambda_i * p_i` to every pixel of each image.

        Args:
            images: `(batch, height, width, 3)` images, or one `(height, width, 3)` image.
            alpha: `(batch, 3)` coefficients, one row per image.
        """
        if not self.built:
            self.build(images.shape)
        eigenvalues = keras.ops.cast(self.eigenvalues, images.dtype)
        eigenvectors = keras.ops.cast(self.eigenvectors, images.dtype)
        alpha = keras.ops.cast(alpha, images.dtype)
        shift = keras.ops.matmul(alpha * eigenvalues, keras.ops.transpose(eigenvectors))
        if len(images.shape) == 3:
            return images + shift[0]
        return images + shift[:, None, None, :]

    def call(self, inputs, training=False):
        _check_channels(inputs.shape)
        if not training:
            return inputs
        if not self._adapted:
            raise RuntimeError(
                "FancyPCA was called in training before adapt(). Call "
                "layer.adapt(training_images), or pass `eigenvalues` and `eigenvectors`."
            )
        alpha = self.get_random_transformation(inputs, training=True)
        return self.transform_images(inputs, alpha)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        # A saved model stores the eigenpairs as weights. The config contains only the ones
        # passed to the constructor, so that `from_config` rebuilds the same layer.
        values = self._initial_eigenvalues
        vectors = self._initial_eigenvectors
        config.update(
            {
                "stddev": self.stddev,
                "eigenvalues": None if values is None else values.tolist(),
                "eigenvectors": None if vectors is None else vectors.tolist(),
                "seed": self.seed,
            }
        )
        return config



def _as_float_array(value, shape, name):
    array = np.asarray(value, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"`{name}` must have shape {shape}. Received: {name}={value!r}.")
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` must be finite. Received: {name}={value!r}.")
    return array


def _check_channels(shape):
    if len(shape) not in (3, 4) or shape[-1] != 3:
        raise ValueError(
            f"FancyPCA needs RGB images with 3 channels last, shaped (batch, height, width, 3) "
            f"or (height, width, 3). Received: shape={tuple(shape)}. Repeat a grayscale channel "
            f"three times (keras.ops.repeat(images, 3, axis=-1)) or leave FancyPCA out."
        )

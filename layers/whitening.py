"""PCA and ZCA whitening as an adapt-able pre-processing layer."""

import math
import os

import keras
import numpy as np
import scipy.linalg

from kerastricks.layers import _statistics

METHODS = ("zca", "pca")


@keras.saving.register_keras_serializable(package="kerastricks")
class Whitening(_statistics.AdaptedWeightsMixin, keras.layers.Layer):
    """Whitens inputs with PCA or ZCA, using statistics learned by `adapt()`.

    Every sample is flattened to a vector of `d` features (for images, all pixels of all
    channels) and centred on the training mean. `"pca"` rotates it into the eigenbasis of the
    training covariance and divides by `sqrt(eigenvalue + epsilon)`, so that the features are
    decorrelated with unit variance. `"zca"` then rotates back into the input space, so the
    output stays an image whose covariance is the identity (Bell and Sejnowski 1997), while
    `"pca"` returns the coefficients of the leading components.

    `adapt()` accumulates the mean and covariance batch by batch, so its memory is O(d^2)
    whatever the number of samples. Each batch's cross products are computed in float32
    (float64 for float64 data) and summed in float64. The products are taken about zero, with
    no centred copy of the data, while each feature's mean lies within 3 standard deviations
    of zero, which at most multiplies their rounding error bound by 10. Otherwise they are
    taken about a recent batch mean, so a large offset (a mean of 1000 with a standard
    deviation of 1, say) costs no accuracy. Half-precision inputs are whitened in
    float32 and the output is cast back to the layer's compute dtype. The covariance is the
    population one (divided by the number of samples, as in `keras.layers.Normalization`).
    With fewer samples than features the covariance is singular, and `epsilon` keeps the
    division finite. The mean, the eigenvalues and the whitening matrix are non-trainable
    weights, so a saved model needs no new `adapt()`.

    Args:
        method: `"zca"` or `"pca"`. Defaults to `"zca"`.
        epsilon: a positive number added to each eigenvalue before the square root, which
            regularizes directions of tiny variance. Defaults to `1e-5`.
        n_components: for `"pca"`, the number of leading components kept, between 1 and `d`;
            `None` keeps all `d`. Must be `None` for `"zca"`. Defaults to `None`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        `(batch_size, ...)`: any fixed shape per sample, the same as the adapted data.

    Output shape:
        `"zca"`: the input shape. `"pca"`: `(batch_size, n_components)`, or
        `(batch_size, d)` when `n_components` is `None`.

    Raises:
        ValueError: for an unknown method, a non-positive `epsilon`, `n_components` out of
            range, a covariance too large for this machine's memory, NaN or infinite values in
            `adapt()` data, or inputs of another shape than the adapted one.
        RuntimeError: when the layer is called on data before `adapt()`.

    Example:

    >>> images = np.random.default_rng(0).random((500, 4, 4, 1)).astype("float32")
    >>> layer = Whitening(method="zca")
    >>> layer.adapt(images)
    >>> tuple(layer(images).shape)
    (500, 4, 4, 1)

    Reference:
        Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009, appendix A
        (ZCA whitening of image pixels).
    """

    def __init__(self, method="zca", epsilon=1e-5, n_components=None, **kwargs):
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(
                f"Unknown whitening method. Expected one of {list(METHODS)}. "
                f"Received: method={method!r}."
            )
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ValueError(
                f"`epsilon` must be a positive number, because a zero-variance direction would "
                f"otherwise be divided by zero. Received: epsilon={epsilon!r}."
            )
        if n_components is not None:
            if method != "pca":
                raise ValueError(
                    f"`n_components` only applies to method='pca', because ZCA rotates all "
                    f"components back into the input space. Received: method={method!r}, "
                    f"n_components={n_components!r}."
                )
            if isinstance(n_components, bool) or not isinstance(n_components, int):
                raise TypeError(
                    f"`n_components` must be an integer or None. "
                    f"Received: n_components={n_components!r}."
                )
            if n_components < 1:
                raise ValueError(
                    f"`n_components` must be at least 1. Received: n_components={n_components}."
                )
        self.method = method
        self.epsilon = float(epsilon)
        self.n_components = n_components
        self.supports_masking = False
        self._adapted = False

    def build(self, input_shape):
        feature_shape = tuple(input_shape[1:])
        if not feature_shape or any(size is None for size in feature_shape):
            raise ValueError(
                f"Whitening needs a fixed shape per sample, such as (28, 28, 1). "
                f"Received: input_shape={tuple(input_shape)}."
            )
        num_features = math.prod(feature_shape)
        num_components = self.n_components or num_features
        if num_components > num_features:
            raise ValueError(
                f"`n_components` must be at most the number of features per sample, "
                f"{num_features} for inputs of shape {feature_shape}. "
                f"Received: n_components={self.n_components}."
            )
        _check_memory(num_features, num_components, self.method)

        self._feature_shape = feature_shape
        self._num_features = num_features
        self._num_components = num_components
        self.mean = self.add_weight(
            name="mean", shape=(num_features,), initializer="zeros", trainable=False
        )
        self.eigenvalues = self.add_weight(
            name="eigenvalues", shape=(num_components,), initializer="zeros", trainable=False
        )
        matrix_shape = (num_features, num_features if self.method == "zca" else num_components)
        self.whitening_matrix = self.add_weight(
            name="whitening_matrix", shape=matrix_shape, initializer="zeros", trainable=False
        )
        self.built = True

    def adapt(self, data):
        """Compute the mean and covariance of `data` and set the whitening weights.

        Args:
            data: a NumPy array or tensor of samples, a batched `tf.data.Dataset` (elements
                may be `(images, labels)` tuples), or an iterable of arrays, each a batch.

        Raises:
            ValueError: for NaN or infinite values, fewer than 2 samples, or samples of
                another shape than the layer was built or adapted for.
        """
        first, batches = _statistics.first_and_rest(
            _statistics.iterate_batches(data, "Whitening")
        )
        if first is None:
            raise ValueError("Whitening.adapt() received no data. Pass at least 2 samples.")
        self._check_sample_shape(first.shape[1:], "adapt() data")
        if not self.built:
            self.build((None, *first.shape[1:]))

        # The accumulator also raises for NaN or infinite values, found from its column sums.
        accumulator = _statistics.MomentAccumulator(self._num_features, "Whitening")
        for batch in batches:
            self._check_sample_shape(batch.shape[1:], "adapt() data")
            # The feature count, not -1, so that an empty batch reshapes too.
            rows = batch.reshape(batch.shape[0], self._num_features)
            rows = rows.astype(_accumulation_dtype(batch), copy=False)
            accumulator.update(rows)
        if accumulator.count < 2:
            raise ValueError(
                f"Whitening.adapt() needs at least 2 samples to estimate a covariance. "
                f"Received: {accumulator.count}."
            )

        mean = accumulator.mean
        covariance = accumulator.covariance()
        # Dropping the accumulator frees its float64 sums before the eigendecomposition.
        del accumulator
        eigenvalues, eigenvectors = _leading_eigenpairs(covariance, self._num_components)
        scaled = eigenvectors / np.sqrt(eigenvalues + self.epsilon)
        matrix = scaled @ eigenvectors.T if self.method == "zca" else scaled
        self.mean.assign(mean.astype(np.float32))
        self.eigenvalues.assign(eigenvalues.astype(np.float32))
        self.whitening_matrix.assign(matrix.astype(np.float32))
        self._adapted = True

    def call(self, inputs):
        if not self._adapted:
            raise RuntimeError(
                "Whitening was called before adapt(). Call layer.adapt(training_images) "
                "first, or load a saved model that contains an adapted layer."
            )
        self._check_sample_shape(tuple(inputs.shape[1:]), "inputs")
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        # Whitening matrices of ill-conditioned data have large entries that cancel, which
        # half precision cannot resolve, so half-precision inputs are whitened in float32.
        compute = "float64" if dtype == "float64" else "float32"
        rows = keras.ops.cast(keras.ops.reshape(inputs, (-1, self._num_features)), compute)
        mean = keras.ops.cast(self.mean, compute)
        matrix = keras.ops.cast(self.whitening_matrix, compute)
        outputs = keras.ops.matmul(rows - mean, matrix)
        if self.method == "zca":
            outputs = keras.ops.reshape(outputs, (-1, *self._feature_shape))
        return keras.ops.cast(outputs, dtype)

    def compute_output_shape(self, input_shape):
        # Symbolic calls (a functional model's Input) reach here instead of `call`, so a layer
        # adapted on another shape is caught while the model is built, not at predict time.
        self._check_sample_shape(tuple(input_shape[1:]), "inputs")
        if self.method == "zca":
            return tuple(input_shape)
        num_features = math.prod(input_shape[1:])
        return (input_shape[0], self.n_components or num_features)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"method": self.method, "epsilon": self.epsilon, "n_components": self.n_components}
        )
        return config


    def _check_sample_shape(self, sample_shape, source):
        expected = getattr(self, "_feature_shape", None)
        if expected is not None and tuple(sample_shape) != expected:
            raise ValueError(
                f"Whitening was built for samples of shape {expected}, but the {source} have "
                f"samples of shape {tuple(sample_shape)}. Pass data of shape {expected} or "
                f"create and adapt a new layer for the new shape."
            )


def _leading_eigenpairs(covariance, num_components):
    """Return the `num_components` largest eigenvalues (descending) and their eigenvectors.

    Each eigenvector's largest-magnitude entry is made positive, so the PCA output's signs do
    not depend on the LAPACK build. Rounding can make tiny eigenvalues negative, so they are
    clipped at zero. `covariance` must be finite, and it may be overwritten.
    """
    num_features = covariance.shape[0]
    if num_components == num_features:
        # NumPy's LAPACK (syevd) shares the OpenBLAS threads of the cross products. The SciPy
        # wheel bundles a second OpenBLAS, and on 2 cores its eigh ran slower right after
        # NumPy's products, probably because the first library's idle threads still spin.
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    else:
        # LAPACK overwrites only Fortran-ordered arrays in place. The transpose of the
        # symmetric covariance is the same matrix in that order, so SciPy makes no copy.
        eigenvalues, eigenvectors = scipy.linalg.eigh(
            covariance.T,
            subset_by_index=(num_features - num_components, num_features - 1),
            overwrite_a=True,
            check_finite=False,
        )
    eigenvalues = np.clip(eigenvalues[::-1], 0.0, None)
    eigenvectors = eigenvectors[:, ::-1]
    rows = np.argmax(np.abs(eigenvectors), axis=0)
    signs = np.sign(eigenvectors[rows, np.arange(eigenvectors.shape[1])])
    signs[signs == 0] = 1.0
    eigenvectors *= signs
    return eigenvalues, eigenvectors


def _accumulation_dtype(batch):
    """Return float64 for float64 data and float32 otherwise, the dtype of the products."""
    return np.float64 if batch.dtype == np.float64 else np.float32


def _check_memory(num_features, num_components, method):
    """Raise a `ValueError` before allocating a covariance that would not fit in memory.

    The estimate counts the float64 covariance and eigenvectors that `adapt()` keeps and the
    float32 whitening matrix. It leaves out NumPy's temporary copies, so it is a lower bound.
    """
    stored_columns = num_features if method == "zca" else num_components
    needed = 8 * num_features * num_features + 8 * num_features * num_components
    needed += 4 * num_features * stored_columns
    available = _physical_memory_bytes()
    if available is None or needed <= available:
        return
    raise ValueError(
        f"Whitening inputs with {num_features} features per sample needs at least "
        f"{needed / 2**30:.1f} GiB for the covariance and eigenvectors, more than the "
        f"{available / 2**30:.1f} GiB of memory on this machine. Reduce the input (resize "
        f"or crop the images, or whiten small patches), use method='pca' with a small "
        f"n_components (which needs less than half the memory), or normalize per channel with "
        f"keras.layers.Normalization(axis=-1) instead."
    )


def _physical_memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None

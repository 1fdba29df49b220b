"""Batch-by-batch statistics for the adapt-able layers (whitening, min-max, fancy PCA)."""

import itertools

import keras
import numpy as np

# Rows per chunk when `adapt` receives one large array: big enough for an efficient matrix
# product, small enough that one chunk's float64 copy stays far below the covariance's size.
ADAPT_CHUNK_ROWS = 8192


class AdaptedWeightsMixin:
    """Marks an adapt-able layer as adapted when its weights come from elsewhere.

    Weights restored from a saved model, or copied from another layer with `set_weights`, are
    adapted statistics, so the layer must not ask for `adapt()` again.
    """

    def load_own_variables(self, store):
        super().load_own_variables(store)
        self._adapted = True

    def set_weights(self, weights):
        super().set_weights(weights)
        self._adapted = True


def iterate_batches(data, layer_name):
    """Yield NumPy float arrays, one per batch, from an array, a tensor or batched data.

    `data` is a NumPy array or backend tensor (split into chunks of rows), a batched
    `tf.data.Dataset`, or any iterable of batches. Elements that are `(x, y)` or
    `(x, y, sample_weight)` tuples contribute `x` only.
    """
    if isinstance(data, (list, tuple)) and data and not _is_array_like(data[0]):
        raise TypeError(
            f"{layer_name}.adapt() expects an array, a tensor, a batched tf.data.Dataset or "
            f"an iterable of array batches. Received a {type(data).__name__} of "
            f"{type(data[0]).__name__}."
        )
    if _is_array_like(data) and not _is_dataset(data):
        # A NumPy array is sliced in place: converting it would copy the whole data set.
        array = data if isinstance(data, np.ndarray) else keras.ops.convert_to_numpy(data)
        array = np.asarray(array)
        if array.ndim == 0:
            raise ValueError(
                f"{layer_name}.adapt() needs a batch of samples with a leading batch axis. "
                f"Received a scalar: {array!r}."
            )
        for start in range(0, max(len(array), 1), ADAPT_CHUNK_ROWS):
            yield array[start : start + ADAPT_CHUNK_ROWS]
        return
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError(
            f"{layer_name}.adapt() expects an array, a tensor, a batched tf.data.Dataset or "
            f"an iterable of array batches. Received: {type(data).__name__}."
        ) from None
    for batch in iterator:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if isinstance(batch, dict):
            raise TypeError(
                f"{layer_name}.adapt() expects batches of arrays, not dictionaries. "
                f"Map the dataset to the image tensor first. Received keys: {sorted(batch)}."
            )
        yield np.asarray(keras.ops.convert_to_numpy(batch))


def _is_dataset(data):
    return type(data).__name__ in ("DatasetV2", "DatasetV1Adapter") or hasattr(data, "element_spec")


def _is_array_like(value):
    return isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and not _is_dataset(value)
    )


def check_finite(batch, batch_index, layer_name):
    """Raise a `ValueError` naming the batch when it contains NaN or infinite values."""
    # A finite sum proves every value finite in one pass, so the element-wise check and the
    # count run only when the sum is NaN or infinite (or overflows).
    if np.isfinite(batch.sum()):
        return
    finite = np.isfinite(batch)
    if not finite.all():
        bad = int(batch.size - np.count_nonzero(finite))
        raise ValueError(
            f"{layer_name}.adapt() received {bad} NaN or infinite values in batch "
            f"{batch_index} (shape {batch.shape}). Remove or impute them before adapting."
        )


def first_and_rest(batches):
    """Split an iterator into its first item and an iterator over all items, first included."""
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return None, iter(())
    return first, itertools.chain([first], batches)


class MomentAccumulator:
    """The running count, mean and centred cross-product matrix of rows of features.

    Each batch is centred before its cross products are formed, so large offsets in the data
    (images in [0, 255], say) cancel no digits. Batches merge with the pairwise formula of
    Chan, Golub and LeVeque (1979): `M = M_a + M_b + outer(d, d) * n_a * n_b / n`, with
    `d = mean_b - mean_a`. Memory is O(features^2) whatever the number of rows.
    """

    def __init__(self, num_features):
        self.count = 0
        self.mean = np.zeros(num_features, dtype=np.float64)
        self.cross = np.zeros((num_features, num_features), dtype=np.float64)

    def update(self, rows):
        """Add a `(rows, features)` batch."""
        count_b = rows.shape[0]
        if count_b == 0:
            return
        # The products run in the data's own precision (float32 for images) because that is
        # where the time goes. Centring on a shift close to the batch mean keeps their
        # rounding error small, and the residual sum makes the result exact for the batch mean.
        ones = np.ones(count_b, dtype=rows.dtype)
        shift = (ones @ rows) / rows.dtype.type(count_b)
        centred = rows - shift
        residual = (ones @ centred).astype(np.float64)
        cross_b = (centred.T @ centred).astype(np.float64)
        cross_b -= np.outer(residual, residual) / count_b
        mean_b = shift.astype(np.float64) + residual / count_b

        count = self.count + count_b
        delta = mean_b - self.mean
        self.cross += cross_b + np.outer(delta, delta) * (self.count * count_b / count)
        self.mean += delta * (count_b / count)
        self.count = count

    def covariance(self):
        """Return the population covariance (divided by the count, as `Normalization` does)."""
        return self.cross / self.count

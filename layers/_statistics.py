"""Batch-by-batch statistics for the adapt-able layers (whitening, min-max, fancy PCA)."""

import itertools

import keras
import numpy as np

# Rows per chunk when `adapt` receives one large array: big enough for an efficient matrix
# product, few enough that the float32 sums of one chunk's products stay accurate before
# they are added in float64. A centred copy, when needed, takes one chunk.
ADAPT_CHUNK_ROWS = 8192

# `MomentAccumulator` keeps its current shift, and so makes no centred copy of a batch,
# while every feature's mean in the batch lies within this many standard deviations of the
# shift. The rounding error bound of the products is proportional to the mean square about
# the shift, so it is then at most 1 + 3**2 = 10 times the bound for exactly centred data.
MAX_SHIFT_OFFSET = 3.0

# Rows of the first batch whose mean and mean square choose the first shift.
PROBE_ROWS = 256


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

    The cross products of a batch run in the data's own precision (float32 for images),
    because that is where the time goes, on the rows minus a shift. Their rounding errors
    grow with each feature's mean square about the shift, `variance + (mean - shift)**2`, so
    the shift must lie near the mean when the data have a large offset (a mean of 1000 and a
    standard deviation of 1, say). The first shift is zero, which needs no centred copy,
    unless the first `PROBE_ROWS` rows show a larger offset than twice `MAX_SHIFT_OFFSET`
    standard deviations. Each batch is checked after its products. If a feature's mean lies
    more than `MAX_SHIFT_OFFSET` standard deviations from the shift, the batch is recomputed
    on a copy centred on its own mean. That mean becomes the shift of the next batches.

    Batches with the same shift add their column sums and cross products in float64. Groups
    of batches with different shifts merge with the pairwise formula of Chan, Golub and
    LeVeque (1979): `M = M_a + M_b + outer(d, d) * n_a * n_b / n`, with
    `d = mean_b - mean_a`. Memory is O(features^2), plus one batch-sized copy while a shift
    is in use, whatever the number of rows.

    Args:
        num_features: the number of columns of each batch.
        layer_name: the layer named in error messages. Defaults to `"MomentAccumulator"`.
    """

    def __init__(self, num_features, layer_name="MomentAccumulator"):
        self.num_features = num_features
        self.layer_name = layer_name
        self._num_batches = 0
        self._shift = None
        self._centred = None
        self._products = None
        # Statistics of the groups merged so far, and sums of the current group's batches.
        self._merged_count = 0
        self._merged_mean = np.zeros(num_features, dtype=np.float64)
        self._merged_cross = None
        self._group_count = 0
        self._group_sums = None
        self._group_products = None

    @property
    def count(self):
        """The number of rows added so far."""
        return self._merged_count + self._group_count

    @property
    def mean(self):
        """The float64 mean of the rows added so far (zeros before the first row)."""
        self._merge_group()
        return self._merged_mean

    def update(self, rows):
        """Add a `(rows, features)` batch.

        Raises:
            ValueError: when the batch contains NaN or infinite values, or values so large
                that their sums or squares overflow the batch's dtype.
        """
        batch_index = self._num_batches
        self._num_batches += 1
        count_b = rows.shape[0]
        if count_b == 0:
            return
        if self.count == 0:
            self._shift = _probe_shift(rows)

        sums, products = self._shifted_moments(rows, batch_index)
        offset = sums.astype(np.float64) / count_b
        if not _shift_fits(offset, np.diagonal(products) / count_b):
            # Recompute the batch centred on its own mean, which starts a new group.
            self._merge_group()
            new_shift = offset if self._shift is None else self._shift + offset
            self._shift = new_shift.astype(rows.dtype)
            sums, products = self._shifted_moments(rows, batch_index)
            if not np.isfinite(np.diagonal(products)).all():
                self._raise_overflow(rows, batch_index)

        if self._group_count == 0:
            self._group_sums = sums.astype(np.float64)
            self._group_products = products.astype(np.float64)
        else:
            self._group_sums += sums
            self._group_products += products
        self._group_count += count_b

    def covariance(self):
        """Return the population covariance (divided by the count, as `Normalization` does)."""
        self._merge_group()
        return self._merged_cross / self._merged_count

    def _shifted_moments(self, rows, batch_index):
        """Return the column sums and cross products of `rows - shift`, in the rows' dtype.

        The sums are finite exactly when the values are, unless they overflow, so they
        replace a separate pass over the batch to find NaN or infinite values.
        """
        block = rows
        if self._shift is not None:
            block = np.subtract(rows, self._shift, out=self._scratch(rows))
        sums = np.ones(len(block), dtype=block.dtype) @ block
        if not np.isfinite(sums).all():
            check_finite(rows, batch_index, self.layer_name)
            self._raise_overflow(rows, batch_index)

        if self._products is None or self._products.dtype != rows.dtype:
            self._products = np.empty((self.num_features,) * 2, dtype=rows.dtype)
        # Squares that overflow are caught by the caller from the diagonal, so NumPy's
        # overflow warning would only repeat that error.
        with np.errstate(over="ignore", invalid="ignore"):
            # NumPy runs `a.T @ a` as a symmetric rank-k update, half the work of a product.
            products = np.matmul(block.T, block, out=self._products)
        return sums, products

    def _scratch(self, rows):
        """Return a reused `rows`-shaped buffer for the centred copy of a batch."""
        size = len(rows)
        buffer = self._centred
        if buffer is None or len(buffer) < size or buffer.dtype != rows.dtype:
            buffer = self._centred = np.empty((size, self.num_features), dtype=rows.dtype)
        return buffer[:size]

    def _merge_group(self):
        """Fold the current group of batches into the merged statistics."""
        count_b = self._group_count
        if count_b == 0:
            return
        offset = self._group_sums / count_b
        mean_b = offset if self._shift is None else offset + self._shift
        cross_b = self._group_products
        cross_b -= np.outer(self._group_sums, offset)
        self._group_count = 0
        self._group_sums = self._group_products = None

        count_a = self._merged_count
        count = count_a + count_b
        if count_a == 0:
            self._merged_cross = cross_b
            self._merged_mean = mean_b
        else:
            delta = mean_b - self._merged_mean
            self._merged_cross += cross_b
            self._merged_cross += np.outer(delta, delta * (count_a * count_b / count))
            self._merged_mean += delta * (count_b / count)
        self._merged_count = count

    def _raise_overflow(self, rows, batch_index):
        raise ValueError(
            f"{self.layer_name}.adapt() failed on batch {batch_index}: its values (largest "
            f"magnitude {np.max(np.abs(rows)):.3g}) overflow {rows.dtype} in the column sums "
            f"or squares. Scale the data to a smaller range before adapting."
        )


def _probe_shift(rows):
    """Return `None` (no shift) or the mean of the first `PROBE_ROWS` rows, as the first shift.

    The probe's standard deviations are rough, so it picks a shift only for offsets beyond
    twice the limit. The check of the whole batch then decides the cases in between.
    """
    probe = rows[:PROBE_ROWS].astype(np.float64)
    mean = probe.mean(axis=0)
    # A NaN or infinite mean gets no shift, and the batch's sums then report those values.
    if not np.isfinite(mean).all():
        return None
    if _shift_fits(mean, np.mean(probe * probe, axis=0), 2.0 * MAX_SHIFT_OFFSET):
        return None
    return mean.astype(rows.dtype)


def _shift_fits(offset, mean_square, max_offset=MAX_SHIFT_OFFSET):
    """Return whether `|offset| <= max_offset * std` holds for every feature.

    `offset` is the mean minus the shift and `mean_square` the mean of the squared shifted
    values, `variance + offset**2`. The test is rearranged so that it needs no subtraction.
    Infinite or NaN squares fail it.
    """
    limit = max_offset**2
    mean_square = mean_square.astype(np.float64)
    if not np.isfinite(mean_square).all():
        return False
    return bool(np.all(offset * offset * (1.0 + limit) <= limit * mean_square))

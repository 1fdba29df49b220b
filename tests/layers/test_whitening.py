"""Tests of the Whitening and MinMaxScaling pre-processing layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.decomposition import PCA

from kerastricks.layers import MinMaxScaling, Whitening
from kerastricks.layers._statistics import MAX_SHIFT_OFFSET, MomentAccumulator
from tests.layers.contract import check_in_fresh_process, check_layer_contract

NUM_SAMPLES, NUM_FEATURES = 600, 12


def correlated_data(num_samples=NUM_SAMPLES, num_features=NUM_FEATURES, seed=0, smallest=0.2):
    """Return float32 rows with correlated features, an offset and unequal variances.

    The covariance is about `Q diag(scales**2) Q^T` with a random rotation `Q` and scales
    from `smallest` to 3, so `smallest` sets the condition number `(3 / smallest)**2`.
    """
    rng = np.random.default_rng(seed)
    scales = np.linspace(smallest, 3.0, num_features)
    rotation, _ = np.linalg.qr(rng.standard_normal((num_features, num_features)))
    mixing = scales[:, None] * rotation.T
    rows = rng.standard_normal((num_samples, num_features)) @ mixing + 5.0
    return rows.astype("float32")


def to_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def adapted(data, **options):
    layer = Whitening(**options)
    layer.adapt(data)
    return layer


@pytest.mark.parametrize("n_components", [None, 5])
def test_pca_matches_sklearn_whiten(n_components):
    data = correlated_data()
    epsilon = 1e-6
    layer = adapted(data, method="pca", epsilon=epsilon, n_components=n_components)
    outputs = to_numpy(layer(data)).astype(np.float64)

    reference = PCA(n_components=n_components, whiten=True).fit(data.astype(np.float64))
    expected = reference.transform(data.astype(np.float64))
    # scikit-learn divides by sqrt of the variance over n - 1; the layer uses n and epsilon.
    variance_n = reference.explained_variance_ * (NUM_SAMPLES - 1) / NUM_SAMPLES
    expected *= np.sqrt(reference.explained_variance_) / np.sqrt(variance_n + epsilon)
    # Each component is defined up to its sign.
    signs = np.sign(np.sum(outputs * expected, axis=0))

    assert outputs.shape == (NUM_SAMPLES, n_components or NUM_FEATURES)
    np.testing.assert_allclose(outputs, expected * signs, atol=2e-3)
    # float32 products: errors relative to the largest eigenvalue, not to each one.
    np.testing.assert_allclose(
        to_numpy(layer.eigenvalues), variance_n, rtol=1e-4, atol=1e-6 * variance_n[0]
    )


def test_zca_output_covariance_is_identity():
    data = correlated_data()
    layer = adapted(data, method="zca", epsilon=1e-7)
    outputs = to_numpy(layer(data)).astype(np.float64)

    covariance = np.cov(outputs, rowvar=False, bias=True)
    np.testing.assert_allclose(covariance, np.eye(NUM_FEATURES), atol=2e-3)
    np.testing.assert_allclose(outputs.mean(axis=0), 0.0, atol=1e-3)


def test_zca_matrix_symmetric_and_matches_numpy():
    data = correlated_data()
    epsilon = 1e-3
    matrix = to_numpy(adapted(data, method="zca", epsilon=epsilon).whitening_matrix)

    centred = data.astype(np.float64) - data.mean(axis=0, dtype=np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(data))
    expected = eigenvectors @ np.diag(1 / np.sqrt(eigenvalues + epsilon)) @ eigenvectors.T

    np.testing.assert_allclose(matrix, matrix.T, atol=1e-5)
    np.testing.assert_allclose(matrix, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method", ["zca", "pca"])
def test_centred_or_not_gives_same_output(method):
    data = correlated_data() * 40.0 + 200.0
    centred = data - data.mean(axis=0)
    raw_layer = adapted(data, method=method)
    centred_layer = adapted(centred, method=method)

    np.testing.assert_allclose(
        to_numpy(raw_layer(data)), to_numpy(centred_layer(centred)), atol=2e-3
    )


@pytest.mark.parametrize("num_batches", [1, 7])
def test_large_offset_matches_sklearn_centred(num_batches):
    # With a mean of 1000 and standard deviations from 0.2 to 3, float32 products of the raw
    # values would lose nearly all of float32's 7 significant digits to the offset.
    data = correlated_data() - 5.0 + 1000.0
    epsilon = 1e-6
    layer = adapted(np.array_split(data, num_batches), method="pca", epsilon=epsilon)
    outputs = to_numpy(layer(data)).astype(np.float64)

    centred = data.astype(np.float64) - data.astype(np.float64).mean(axis=0)
    reference = PCA(whiten=True).fit(centred)
    variance_n = reference.explained_variance_ * (NUM_SAMPLES - 1) / NUM_SAMPLES
    expected = reference.transform(centred)
    expected *= np.sqrt(reference.explained_variance_) / np.sqrt(variance_n + epsilon)
    signs = np.sign(np.sum(outputs * expected, axis=0))

    np.testing.assert_allclose(to_numpy(layer.eigenvalues), variance_n, rtol=1e-4)
    np.testing.assert_allclose(to_numpy(layer.mean), data.astype(np.float64).mean(axis=0), rtol=1e-7)
    np.testing.assert_allclose(outputs, expected * signs, atol=2e-3)


def test_offset_in_later_batch_is_centred():
    # The first batch needs no shift. The second lies hundreds of standard deviations away,
    # so its products must be recomputed on centred values.
    first = correlated_data(num_samples=300, seed=1) - 5.0
    second = correlated_data(num_samples=300, seed=2) - 5.0 + 1000.0
    layer = adapted([first, second], method="pca", epsilon=1e-6)

    both = np.concatenate([first, second]).astype(np.float64)
    expected = np.linalg.eigvalsh(np.cov(both, rowvar=False, bias=True))[::-1]
    # The smallest eigenvalues (about 0.04) come from the spread within the batches.
    np.testing.assert_allclose(to_numpy(layer.eigenvalues), expected, rtol=1e-4)


@pytest.mark.parametrize("offset_in_stds", [0.0, 2.5, -2.5])
def test_accumulator_skips_copy_within_limit(offset_in_stds):
    import tracemalloc

    rng = np.random.default_rng(4)
    stds = np.linspace(0.5, 2.0, 64)
    rows = (rng.standard_normal((8192, 64)) + offset_in_stds) * stds
    rows = rows.astype(np.float32)
    accumulator = MomentAccumulator(64)
    tracemalloc.start()
    accumulator.update(rows)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # A centred copy would take rows.nbytes (2 MiB); the probe rows in float64 take 256 KiB.
    assert peak < rows.nbytes / 4
    # float32 sums of 8192 products typically err by about sqrt(8192) * 6e-8 = 5e-6 of the
    # mean square, which is up to 1 + 3**2 = 10 times the variance within the limit.
    reference = np.cov(rows.astype(np.float64), rowvar=False, bias=True)
    scale = np.sqrt(np.outer(np.diag(reference), np.diag(reference)))
    error = np.abs(accumulator.covariance() - reference) / scale
    assert error.max() < 5e-5


def test_accumulator_centres_beyond_limit():
    import tracemalloc

    rng = np.random.default_rng(5)
    offset = (MAX_SHIFT_OFFSET + 1.0) * 0.5
    rows = (rng.standard_normal((8192, 64)) * 0.5 + offset).astype(np.float32)
    accumulator = MomentAccumulator(64)
    tracemalloc.start()
    accumulator.update(rows)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert peak >= rows.nbytes
    reference = np.cov(rows.astype(np.float64), rowvar=False, bias=True)
    scale = np.sqrt(np.outer(np.diag(reference), np.diag(reference)))
    assert (np.abs(accumulator.covariance() - reference) / scale).max() < 1e-5


def test_batches_match_one_array():
    data = correlated_data(smallest=2.0)
    whole = adapted(data)
    batches = adapted([data[:100], data[100:350], data[350:]])
    labels = np.zeros(len(data), dtype="int32")
    dataset = tf.data.Dataset.from_tensor_slices((data, labels)).batch(64)
    from_dataset = adapted(dataset)
    from_tensor = adapted(tf.constant(data))

    for other in (batches, from_dataset, from_tensor):
        np.testing.assert_allclose(to_numpy(other.mean), to_numpy(whole.mean), rtol=1e-6)
        np.testing.assert_allclose(
            to_numpy(other.whitening_matrix), to_numpy(whole.whitening_matrix), atol=1e-4
        )


def test_images_keep_shape_in_zca():
    images = np.random.default_rng(1).random((300, 4, 4, 2)).astype("float32")
    layer = adapted(images, method="zca")
    outputs = to_numpy(layer(images))

    assert outputs.shape == images.shape
    flat = outputs.reshape(len(images), -1)
    np.testing.assert_allclose(np.cov(flat, rowvar=False, bias=True), np.eye(32), atol=0.02)


def test_fewer_samples_than_features():
    data = correlated_data(num_samples=10, num_features=40)
    epsilon = 1e-2
    layer = adapted(data, method="zca", epsilon=epsilon)
    outputs = to_numpy(layer(data)).astype(np.float64)

    # The centred data span 9 directions; on those the output variance is lambda / (lambda + eps).
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(outputs, rowvar=False, bias=True)))[::-1]
    adapted_values = to_numpy(layer.eigenvalues).astype(np.float64)
    assert np.isfinite(outputs).all()
    np.testing.assert_allclose(
        eigenvalues[:9], adapted_values[:9] / (adapted_values[:9] + epsilon), rtol=1e-3
    )
    np.testing.assert_allclose(eigenvalues[9:], 0.0, atol=1e-4)


def test_adapt_after_model_is_built():
    data = correlated_data()
    layer = Whitening()
    inputs = keras.Input(shape=(NUM_FEATURES,))
    model = keras.Model(inputs, layer(inputs))
    layer.adapt(data)

    np.testing.assert_allclose(
        model.predict(data, verbose=0), to_numpy(adapted(data)(data)), atol=1e-5
    )


def test_whitening_contract(tmp_path):
    data = correlated_data(num_samples=200, num_features=8, smallest=2.0)
    cases = [
        check_layer_contract(
            lambda: Whitening(method="zca"),
            input_shape=(6, 8),
            expected_output_shape=(6, 8),
            expected_trainable_weights=0,
            expected_non_trainable_weights=3,
            adapt_data=data,
            input_data=data[:6],
            run_fresh_process=False,
            save_dir=tmp_path / "zca",
        ),
        check_layer_contract(
            lambda: Whitening(method="pca", n_components=3),
            input_shape=(6, 8),
            expected_output_shape=(6, 3),
            expected_non_trainable_weights=3,
            adapt_data=data,
            input_data=data[:6],
            run_fresh_process=False,
            save_dir=tmp_path / "pca",
        ),
        check_layer_contract(
            lambda: MinMaxScaling(axis=-1),
            input_shape=(6, 8),
            expected_output_shape=(6, 8),
            expected_trainable_weights=0,
            expected_non_trainable_weights=2,
            adapt_data=data,
            input_data=data[:6],
            run_fresh_process=False,
            save_dir=tmp_path / "minmax",
        ),
    ]
    # One fresh process loads the three saved models: the same outputs, no new adapt().
    check_in_fresh_process(cases)


def test_whitening_called_before_adapt():
    with pytest.raises(RuntimeError, match="before adapt"):
        Whitening()(correlated_data())


def test_whitening_other_shape_names_both():
    layer = adapted(correlated_data())
    with pytest.raises(ValueError, match=r"\(12,\).*\(7,\)"):
        layer(np.zeros((2, 7), dtype="float32"))
    with pytest.raises(ValueError, match=r"\(12,\).*\(7,\)"):
        layer.adapt(np.zeros((20, 7), dtype="float32"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_whitening_rejects_non_finite(bad):
    data = correlated_data()
    data[3, 4] = bad
    with pytest.raises(ValueError, match="1 NaN or infinite values in batch 0"):
        Whitening().adapt(data)


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_whitening_names_later_non_finite_batch(offset):
    batches = [correlated_data(num_samples=50, seed=seed) - 5.0 + offset for seed in range(4)]
    batches.insert(1, np.zeros((0, NUM_FEATURES), dtype="float32"))
    batches[3][7, 2] = np.nan
    batches[3][9, 0] = np.inf
    with pytest.raises(ValueError, match="2 NaN or infinite values in batch 3"):
        Whitening().adapt(batches)


def test_whitening_rejects_overflowing_values():
    # Finite float32 values whose squares exceed the float32 range (about 3.4e38).
    data = (np.random.default_rng(6).standard_normal((50, 3)) * 1e20).astype("float32")
    with pytest.raises(ValueError, match="overflow float32.*Scale the data"):
        Whitening().adapt(data)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"method": "pca", "n_components": 0}, "n_components=0"),
        ({"method": "zca", "n_components": 3}, "only applies to method='pca'"),
        ({"method": "svd"}, "method='svd'"),
        ({"epsilon": 0.0}, "epsilon=0.0"),
    ],
)
def test_whitening_rejects_bad_arguments(options, message):
    with pytest.raises(ValueError, match=message):
        Whitening(**options)


def test_whitening_n_components_above_features():
    layer = Whitening(method="pca", n_components=13)
    with pytest.raises(ValueError, match="at most .* 12 .*n_components=13"):
        layer.adapt(correlated_data())


def test_whitening_too_large_for_memory():
    layer = Whitening(method="zca")
    # 224 x 224 x 3 = 150,528 features: the float64 covariance alone needs about 169 GiB.
    with pytest.raises(ValueError, match="150528 features.*n_components.*Normalization"):
        layer.build((None, 224, 224, 3))
    assert not layer.weights


def test_whitening_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        Whitening().adapt(np.ones((1, 4), dtype="float32"))


def test_minmax_matches_numpy_per_feature():
    data = correlated_data()
    layer = MinMaxScaling(axis=-1)
    layer.adapt([data[:250], data[250:]])
    low, high = data.min(axis=0), data.max(axis=0)

    outputs = to_numpy(layer(data))
    np.testing.assert_allclose(outputs, 2 * (data - low) / (high - low) - 1, atol=1e-5)
    np.testing.assert_allclose(outputs.min(axis=0), -1.0, atol=1e-6)
    np.testing.assert_allclose(outputs.max(axis=0), 1.0, atol=1e-6)
    # Nothing is clipped: one range above the training maximum maps to 3.
    beyond = to_numpy(layer((2 * high - low)[None]))
    np.testing.assert_allclose(beyond, 3.0, rtol=1e-4)


def test_minmax_per_pixel_and_constant_pixel():
    images = np.random.default_rng(2).random((50, 3, 3, 1)).astype("float32")
    images[:, 0, 0, 0] = 0.0  # A border pixel that is always black.
    layer = MinMaxScaling(axis=(1, 2, 3))
    layer.adapt(images)
    outputs = to_numpy(layer(images))

    low, high = images[:, 1:, 1:].min(axis=0), images[:, 1:, 1:].max(axis=0)
    expected = 2 * (images[:, 1:, 1:] - low) / (high - low) - 1
    np.testing.assert_allclose(outputs[:, 1:, 1:], expected, atol=1e-5)
    np.testing.assert_array_equal(outputs[:, 0, 0, 0], 0.0)


def test_minmax_global_axis_none():
    data = correlated_data()
    layer = MinMaxScaling(axis=None)
    layer.adapt(data)
    outputs = to_numpy(layer(data))

    assert outputs.min() == pytest.approx(-1.0, abs=1e-6)
    assert outputs.max() == pytest.approx(1.0, abs=1e-6)
    assert layer.get_config()["axis"] is None


def test_minmax_errors():
    with pytest.raises(RuntimeError, match="before adapt"):
        MinMaxScaling()(correlated_data())
    with pytest.raises(ValueError, match="axis=\\(0,\\)"):
        MinMaxScaling(axis=0).adapt(correlated_data())
    data = correlated_data()
    data[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        MinMaxScaling().adapt(data)
    layer = MinMaxScaling()
    layer.adapt(correlated_data())
    with pytest.raises(ValueError, match=r"shape \(2, 5\)"):
        layer(np.zeros((2, 5), dtype="float32"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("axis", [-1, (1, 2, 3), None])
def test_minmax_names_non_finite_batch(bad, axis):
    images = np.random.default_rng(7).random((20, 3, 3, 1)).astype("float32")
    images[12, 1, 1, 0] = bad
    with pytest.raises(ValueError, match="1 NaN or infinite values in batch 1"):
        MinMaxScaling(axis=axis).adapt([images[:8], images[8:]])


def test_functional_input_of_another_shape_fails_at_build():
    layer = Whitening(method="zca")
    layer.adapt(np.random.default_rng(0).normal(size=(50, 6, 6, 3)).astype("float32"))
    with pytest.raises(ValueError, match=r"built for samples of shape \(6, 6, 3\).*\(5, 5, 3\)"):
        layer(keras.Input((5, 5, 3)))

"""Tests of the FancyPCA colour augmentation layer."""

import keras
import numpy as np
import pytest

from kerastricks.layers import FancyPCA
from tests.layers.contract import check_in_fresh_process, check_layer_contract

# A rotation that is not symmetric, so eigenvectors are not confused with rows of the basis.
ANGLE = 0.6
ROTATION = np.array(
    [
        [np.cos(ANGLE), -np.sin(ANGLE), 0.0],
        [np.sin(ANGLE) * np.cos(0.4), np.cos(ANGLE) * np.cos(0.4), -np.sin(0.4)],
        [np.sin(ANGLE) * np.sin(0.4), np.cos(ANGLE) * np.sin(0.4), np.cos(0.4)],
    ]
)
VARIANCES = np.array([0.04, 0.01, 0.0025])


def coloured_images(num_images=64, size=8, seed=0):
    """Return images whose pixel covariance is close to `ROTATION diag(VARIANCES) ROTATION^T`."""
    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((num_images * size * size, 3)) * np.sqrt(VARIANCES)
    pixels = pixels @ ROTATION.T + np.array([0.5, 0.4, 0.3])
    return pixels.reshape(num_images, size, size, 3).astype("float32")


def reference_eigenpairs(images):
    pixels = images.reshape(-1, 3).astype(np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(pixels, rowvar=False, bias=True))
    return eigenvalues[::-1], eigenvectors[:, ::-1]


def to_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def test_basis_is_not_symmetric():
    assert not np.allclose(ROTATION, ROTATION.T)
    np.testing.assert_allclose(ROTATION @ ROTATION.T, np.eye(3), atol=1e-12)


def test_adapt_finds_eigenpairs():
    images = coloured_images()
    layer = FancyPCA()
    layer.adapt(images)
    eigenvalues, eigenvectors = reference_eigenpairs(images)
    adapted_vectors = to_numpy(layer.eigenvectors)

    np.testing.assert_allclose(to_numpy(layer.eigenvalues), eigenvalues, rtol=1e-4)
    for i in range(3):
        sign = np.sign(adapted_vectors[:, i] @ eigenvectors[:, i])
        np.testing.assert_allclose(adapted_vectors[:, i], sign * eigenvectors[:, i], atol=1e-4)
    # The sample estimates are close to the covariance the images were drawn from.
    np.testing.assert_allclose(to_numpy(layer.eigenvalues), VARIANCES, rtol=0.1)
    np.testing.assert_allclose(np.abs(adapted_vectors.T @ ROTATION), np.eye(3), atol=0.05)


def test_first_component_shift():
    images = coloured_images()
    layer = FancyPCA()
    layer.adapt(images)
    eigenvalues, eigenvectors = reference_eigenpairs(images)
    alpha = np.tile([[1.0, 0.0, 0.0]], (len(images), 1)).astype("float32")

    shift = to_numpy(layer.transform_images(images, alpha)) - images
    expected = eigenvalues[0] * eigenvectors[:, 0]
    sign = np.sign(shift[0, 0, 0] @ expected)

    np.testing.assert_allclose(shift, np.broadcast_to(sign * expected, shift.shape), atol=1e-6)


def test_given_eigenpairs_shift_exactly():
    eigenvectors = ROTATION
    layer = FancyPCA(eigenvalues=VARIANCES, eigenvectors=eigenvectors)
    images = coloured_images(num_images=4)
    alpha = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, -1.0], [0.5, 0.5, 0.5]])

    shift = to_numpy(layer.transform_images(images, alpha.astype("float32"))) - images
    expected = (alpha * VARIANCES) @ eigenvectors.T

    for i in range(4):
        everywhere = np.broadcast_to(expected[i], shift[i].shape)
        np.testing.assert_allclose(shift[i], everywhere, atol=1e-6)


def test_zero_alpha_is_identity():
    images = coloured_images(num_images=4)
    layer = FancyPCA()
    layer.adapt(images)
    outputs = layer.transform_images(images, np.zeros((4, 3), dtype="float32"))
    np.testing.assert_array_equal(to_numpy(outputs), images)


def test_identity_at_inference():
    images = coloured_images(num_images=4)
    layer = FancyPCA(stddev=1.0)
    layer.adapt(images)
    np.testing.assert_array_equal(to_numpy(layer(images)), images)
    np.testing.assert_array_equal(to_numpy(layer(images, training=False)), images)


def test_training_draws_alpha_per_image():
    images = coloured_images(num_images=2000, size=2)
    stddev = 0.3
    layer = FancyPCA(stddev=stddev, seed=3)
    layer.adapt(images)
    shift = to_numpy(layer(images, training=True)) - images

    # Every pixel of an image gets the same shift.
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1, :1], shift.shape), atol=1e-6)
    # Projected on the eigenvectors and divided by the eigenvalues, the shifts are the alphas.
    alpha = shift[:, 0, 0] @ to_numpy(layer.eigenvectors) / to_numpy(layer.eigenvalues)
    np.testing.assert_allclose(alpha.mean(axis=0), 0.0, atol=0.03)
    np.testing.assert_allclose(alpha.std(axis=0), stddev, rtol=0.08)
    assert abs(np.corrcoef(alpha, rowvar=False)[0, 1]) < 0.1


def test_single_image():
    image = coloured_images(num_images=1)[0]
    layer = FancyPCA(eigenvalues=VARIANCES, eigenvectors=ROTATION, seed=1)
    shifted = to_numpy(layer(image, training=True))
    assert shifted.shape == image.shape
    shift = shifted - image
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0, 0], shift.shape), atol=1e-6)


def test_fancy_pca_contract(tmp_path):
    images = coloured_images(num_images=16, size=6)
    # With training=True the contract still compares inference outputs after save and load.
    cases = [
        check_layer_contract(
            lambda: FancyPCA(stddev=0.1, seed=1),
            input_shape=(4, 6, 6, 3),
            expected_output_shape=(4, 6, 6, 3),
            expected_trainable_weights=0,
            expected_non_trainable_weights=2,
            adapt_data=images,
            training=True,
            run_fresh_process=False,
            save_dir=tmp_path / "adapted",
        )
    ]
    cases.append(
        check_layer_contract(
            lambda: FancyPCA(eigenvalues=VARIANCES, eigenvectors=ROTATION),
            input_shape=(4, 6, 6, 3),
            expected_output_shape=(4, 6, 6, 3),
            training=True,
            run_fresh_process=False,
            save_dir=tmp_path / "given",
        )
    )
    check_in_fresh_process(cases)


def test_saved_eigenpairs_survive_reload(tmp_path):
    images = coloured_images(num_images=8)
    layer = FancyPCA(seed=2)
    layer.adapt(images)
    inputs = keras.Input(shape=images.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "fancy.keras")

    loaded = keras.saving.load_model(tmp_path / "fancy.keras").layers[-1]
    np.testing.assert_array_equal(to_numpy(loaded.eigenvalues), to_numpy(layer.eigenvalues))
    np.testing.assert_array_equal(to_numpy(loaded.eigenvectors), to_numpy(layer.eigenvectors))
    assert to_numpy(loaded(images, training=True)).shape == images.shape


def test_rejects_grayscale():
    with pytest.raises(ValueError, match=r"3 channels.*shape=\(2, 8, 8, 1\)"):
        FancyPCA().adapt(np.zeros((2, 8, 8, 1), dtype="float32"))
    layer = FancyPCA(eigenvalues=VARIANCES, eigenvectors=ROTATION)
    with pytest.raises(ValueError, match=r"shape=\(2, 8, 8, 1\)"):
        layer(np.zeros((2, 8, 8, 1), dtype="float32"), training=True)


def test_training_before_adapt():
    with pytest.raises(RuntimeError, match="before adapt"):
        FancyPCA()(coloured_images(num_images=2), training=True)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_rejects_non_finite_adapt_data(bad):
    images = coloured_images(num_images=2)
    images[1, 2, 3, 0] = bad
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        FancyPCA().adapt(images)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"stddev": -0.1}, "stddev=-0.1"),
        ({"eigenvalues": [1.0, 2.0, 3.0]}, "Pass both"),
        ({"eigenvalues": [1.0, 2.0], "eigenvectors": np.eye(3)}, r"shape \(3,\)"),
        ({"eigenvalues": [1.0, 2.0, 3.0], "eigenvectors": np.eye(2)}, r"shape \(3, 3\)"),
    ],
)
def test_rejects_bad_arguments(options, message):
    with pytest.raises(ValueError, match=message):
        FancyPCA(**options)

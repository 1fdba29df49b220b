import json

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from kerastricks.layers import HeNormal, HeUniform, available_initializers, get_initializer

# A 3x3 convolution from 64 to 256 channels: fan_in = 3 * 3 * 64 = 576, 147,456 values.
KERNEL_SHAPE = (3, 3, 64, 256)
FAN_IN = 3 * 3 * 64


def draw(initializer, shape=KERNEL_SHAPE):
    return keras.ops.convert_to_numpy(initializer(shape, dtype="float32")).astype("float64")


def he_std(negative_slope):
    """He et al. 2015, equation 15: Var[w] = 2 / ((1 + a**2) * fan_in)."""
    return np.sqrt(2.0 / ((1.0 + negative_slope**2) * FAN_IN))


@pytest.mark.parametrize("initializer_class", [HeNormal, HeUniform])
@pytest.mark.parametrize("negative_slope", [0.0, 0.25])
def test_he_std_matches_theory(initializer_class, negative_slope):
    values = draw(initializer_class(negative_slope=negative_slope, seed=1))

    assert abs(values.mean()) < 0.01 * he_std(negative_slope)
    assert values.std() == pytest.approx(he_std(negative_slope), rel=0.01)


def test_he_normal_truncated_at_two_std():
    values = draw(HeNormal(negative_slope=0.25, seed=2))

    # Truncating N(0, s**2) at 2s shrinks its std to 0.8796 s, so s = std / 0.8796.
    untruncated_std = he_std(0.25) / 0.87962566103423978
    assert np.abs(values).max() <= 2.0 * untruncated_std * (1 + 1e-5)
    assert np.abs(values).max() > 1.9 * untruncated_std


def test_he_uniform_bounds():
    values = draw(HeUniform(negative_slope=0.25, seed=3))

    limit = np.sqrt(3.0) * he_std(0.25)
    assert np.abs(values).max() <= limit * (1 + 1e-6)
    assert np.abs(values).max() > 0.99 * limit


@pytest.mark.parametrize(
    "ours_class, keras_class",
    [(HeNormal, keras.initializers.HeNormal), (HeUniform, keras.initializers.HeUniform)],
)
def test_zero_slope_equals_keras_he(ours_class, keras_class):
    ours = draw(ours_class(seed=4), shape=(3, 3, 8, 16))
    keras_values = draw(keras_class(seed=4), shape=(3, 3, 8, 16))

    np.testing.assert_allclose(ours, keras_values, rtol=1e-6)


@pytest.mark.parametrize("initializer_class", [HeNormal, HeUniform])
def test_config_round_trip(initializer_class):
    initializer = initializer_class(negative_slope=0.1, seed=5)

    config = json.loads(json.dumps(keras.initializers.serialize(initializer)))
    restored = keras.initializers.deserialize(config)

    assert type(restored) is initializer_class
    assert restored.get_config() == {"negative_slope": 0.1, "seed": 5}
    np.testing.assert_array_equal(draw(restored, (4, 4)), draw(initializer, (4, 4)))


def test_saved_in_layer(tmp_path):
    inputs = keras.Input((6,))
    initializer = HeUniform(negative_slope=0.2, seed=0)
    outputs = keras.layers.Dense(3, kernel_initializer=initializer)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "model.keras")

    loaded = keras.saving.load_model(tmp_path / "model.keras")

    assert loaded.layers[-1].kernel_initializer.negative_slope == pytest.approx(0.2)


def test_names_listed():
    names = available_initializers()

    assert names == sorted(names)
    for name in ("zeros", "small_random", "calibrated", "he", "he_leaky_normal",
                 "he_leaky_uniform", "he_normal", "glorot_uniform", "orthogonal"):
        assert name in names


@pytest.mark.parametrize(
    "name, expected_std",
    [
        ("small_random", 0.001),
        ("calibrated", 1.0 / np.sqrt(FAN_IN)),
        ("he", np.sqrt(2.0 / FAN_IN)),
        ("he_normal", np.sqrt(2.0 / FAN_IN)),
        ("lecun_normal", np.sqrt(1.0 / FAN_IN)),
        ("glorot_uniform", np.sqrt(2.0 / (FAN_IN + 3 * 3 * 256))),
    ],
)
def test_named_scheme_std(name, expected_std):
    values = draw(get_initializer(name, seed=6))

    assert values.std() == pytest.approx(expected_std, rel=0.01)


@pytest.mark.parametrize("name", ["small_random", "calibrated", "he"])
def test_named_schemes_untruncated(name):
    values = draw(get_initializer(name, seed=7))

    # 147,456 draws of an untruncated normal go beyond 3.5 standard deviations about 69 times.
    assert np.abs(values).max() > 3.5 * values.std()


def test_zeros_all_zero():
    assert not draw(get_initializer("zeros")).any()


def test_he_leaky_takes_slope():
    initializer = get_initializer("he_leaky_uniform", seed=8, negative_slope=0.25)

    assert isinstance(initializer, HeUniform)
    assert draw(initializer).std() == pytest.approx(he_std(0.25), rel=0.01)


def test_seed_reproduces():
    for name in available_initializers():
        first = draw(get_initializer(name, seed=9, negative_slope=0.1), (5, 7))
        second = draw(get_initializer(name, seed=9, negative_slope=0.1), (5, 7))
        np.testing.assert_array_equal(first, second, err_msg=name)


def test_unknown_name_lists_names():
    with pytest.raises(ValueError, match=r"Expected one of \[.*'calibrated'.*name='xavier'"):
        get_initializer("xavier")


def test_he_leaky_needs_slope():
    with pytest.raises(ValueError, match=r"'he_leaky_normal' needs the negative slope.*=None"):
        get_initializer("he_leaky_normal")


@pytest.mark.parametrize("negative_slope", [-0.5, 1.0])
def test_slope_range(negative_slope):
    with pytest.raises(ValueError, match=rf"negative_slope.*\[0, 1\).*={negative_slope}"):
        HeNormal(negative_slope=negative_slope)


def test_seed_type():
    with pytest.raises(TypeError, match=r"seed must be an integer or None.*seed='1'"):
        get_initializer("he", seed="1")


def hidden_kernel_after_training(initializer):
    """Train a sigmoid MLP on digits for a few steps; return its hidden kernel (64 x 8)."""
    images, labels = load_digits(return_X_y=True)
    images = (images[:256] / 16.0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(8, activation="sigmoid", kernel_initializer=initializer),
            keras.layers.Dense(10, activation="softmax", kernel_initializer=initializer),
        ]
    )
    model.compile(keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    model.fit(images, labels[:256], batch_size=32, epochs=2, verbose=0)
    return keras.ops.convert_to_numpy(model.layers[0].kernel)


def test_zeros_keep_units_identical():
    kernel = hidden_kernel_after_training(get_initializer("zeros"))

    # Every hidden unit (a column) moved away from zero, but all moved the same way.
    assert np.abs(kernel).max() > 1e-4
    np.testing.assert_allclose(kernel, np.repeat(kernel[:, :1], 8, axis=1), rtol=1e-5, atol=1e-7)


def test_random_init_breaks_symmetry():
    kernel = hidden_kernel_after_training(get_initializer("calibrated", seed=0))

    differences = np.abs(kernel[:, 1:] - kernel[:, :1]).max(axis=0)
    assert differences.min() > 1e-2

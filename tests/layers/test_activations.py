import keras
import numpy as np
import pytest

from kerastricks.layers import (
    PReLU,
    RReLU,
    available_activations,
    get_activation,
    he_negative_slope,
)
from tests.layers.contract import check_in_fresh_process, tolerance

X = np.linspace(-3.0, 3.0, 13).astype("float32")

# Independent NumPy formulas for the activations without random parts.
REFERENCES = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
    "elu": lambda x: np.where(x >= 0, x, np.exp(x) - 1.0),
    "selu": lambda x: 1.0507009873554805 * np.where(x >= 0, x, 1.6732632423543772 * np.expm1(x)),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "swish": lambda x: x / (1.0 + np.exp(-x)),
    "prelu": lambda x: np.where(x >= 0, x, 0.25 * x),
    "rrelu": lambda x: np.where(x >= 0, x, 2.0 / 11.0 * x),
}


def test_names_listed():
    names = available_activations()

    assert names == sorted(names)
    for name in ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "rrelu", "elu"):
        assert name in names


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_values(name):
    output = get_activation(name)(X[None, :], training=False)

    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(output)[0], REFERENCES[name](X), rtol=1e-5, atol=1e-6
    )


def test_gelu_close_to_formula():
    from scipy.special import erf

    output = keras.ops.convert_to_numpy(get_activation("gelu")(X))

    # Keras's gelu defaults to the tanh approximation, within 1e-3 of the exact form.
    np.testing.assert_allclose(output, 0.5 * X * (1.0 + erf(X / np.sqrt(2.0))), atol=1e-3)


@pytest.mark.parametrize("name", available_activations())
def test_fresh_layer_each_call(name):
    first, second = get_activation(name), get_activation(name)

    assert isinstance(first, keras.layers.Layer)
    assert first is not second


def test_options_reach_layers():
    prelu = get_activation("prelu", channel_shared=True, alpha_initializer=0.1)
    rrelu = get_activation("rrelu", lower=0.1, upper=0.3, sampling="uniform", seed=2)
    leaky = get_activation("leaky_relu", negative_slope=0.2)
    elu = get_activation("elu", alpha=0.5)

    assert isinstance(prelu, PReLU) and prelu.channel_shared
    assert isinstance(rrelu, RReLU)
    assert (rrelu.lower, rrelu.upper, rrelu.sampling, rrelu.seed) == (0.1, 0.3, "uniform", 2)
    assert leaky.negative_slope == pytest.approx(0.2)
    elu_output = keras.ops.convert_to_numpy(elu(np.array([-1.0])))
    np.testing.assert_allclose(elu_output, 0.5 * np.expm1(-1.0))


def test_unknown_name_lists_names():
    with pytest.raises(ValueError, match=r"Expected one of \[.*'prelu'.*'rrelu'.*name='mish'"):
        get_activation("mish")


def test_unknown_option_lists_options():
    with pytest.raises(TypeError, match=r"'rrelu' does not take the option 'alpha'.*'lower'"):
        get_activation("rrelu", alpha=0.1)


def test_options_for_plain_activation():
    with pytest.raises(TypeError, match=r"'relu' takes no options.*\['negative_slope'\]"):
        get_activation("relu", negative_slope=0.1)


@pytest.mark.parametrize("slope", [-0.1, 1.0, 2.0])
def test_leaky_slope_range(slope):
    with pytest.raises(ValueError, match=rf"negative_slope must be .*\[0, 1\).*={slope}"):
        get_activation("leaky_relu", negative_slope=slope)


def test_he_negative_slope_values():
    # RReLU's E[slope**2] by numerical integration over a ~ U(3, 8), and over U(0.1, 0.3).
    a = np.linspace(3.0, 8.0, 200_001)
    reciprocal_mean_square = np.trapezoid(1.0 / a**2, a) / 5.0
    s = np.linspace(0.1, 0.3, 200_001)
    uniform_mean_square = np.trapezoid(s**2, s) / 0.2

    assert he_negative_slope("relu") == 0.0
    assert he_negative_slope("tanh") == 0.0
    assert he_negative_slope("leaky_relu") == pytest.approx(0.01)
    assert he_negative_slope("leaky_relu", negative_slope=0.2) == pytest.approx(0.2)
    assert he_negative_slope("prelu") == pytest.approx(0.25)
    assert he_negative_slope("prelu", alpha_initializer="zeros") == 0.0
    assert he_negative_slope("rrelu") == pytest.approx(np.sqrt(reciprocal_mean_square), rel=1e-6)
    assert he_negative_slope("rrelu", lower=0.1, upper=0.3, sampling="uniform") == pytest.approx(
        np.sqrt(uniform_mean_square), rel=1e-6
    )
    assert he_negative_slope("rrelu", lower=0.2, upper=0.2) == pytest.approx(0.2)


def small_cnn(input_shape=(12, 12, 3)):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = PReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding="same")(x)
    x = RReLU(seed=1)(x)
    x = keras.layers.Conv2D(4, 3, data_format="channels_first")(keras.layers.Permute((3, 1, 2))(x))
    x = PReLU(data_format="channels_first", channel_shared=True)(x)
    x = RReLU(0.05, 0.2, sampling="uniform", seed=2)(x)
    x = keras.layers.GlobalAveragePooling2D(data_format="channels_first")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def train_briefly(model, jit_compile, steps=3, image_shape=(12, 12, 3)):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((16 * steps, *image_shape)).astype("float32")
    labels = rng.integers(0, 3, len(images))
    model.compile(
        optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy",
        jit_compile=jit_compile,
    )
    return model.fit(images, labels, batch_size=16, epochs=1, verbose=0)


def test_jit_training_mixed_float16():
    # One test for both: XLA compilation takes several seconds on a 2-core machine.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = small_cnn()
        prelu = next(layer for layer in model.layers if isinstance(layer, PReLU))
        history = train_briefly(model, jit_compile=True)
    finally:
        keras.config.set_dtype_policy(previous)

    assert np.isfinite(history.history["loss"]).all()
    # The slopes are learned: training moves them away from 0.25.
    assert not np.allclose(keras.ops.convert_to_numpy(prelu.alpha), 0.25)
    assert prelu.alpha.dtype == "float32"


def test_subclassed_and_sequential_models():
    class Classifier(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(6, 3)
            self.prelu = PReLU()
            self.rrelu = RReLU(seed=3)
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.head = keras.layers.Dense(3, activation="softmax")

        def call(self, inputs, training=False):
            x = self.rrelu(self.prelu(self.conv(inputs)), training=training)
            return self.head(self.pool(x))

    sequential = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(6, 3), PReLU(), RReLU(seed=4),
         keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")]
    )
    for model in (Classifier(), sequential):
        model(np.zeros((1, 8, 8, 3), "float32"))
        history = train_briefly(model, jit_compile=False, steps=2, image_shape=(8, 8, 3))

        assert np.isfinite(history.history["loss"]).all()
        prelu = next(layer for layer in model.layers if isinstance(layer, PReLU))
        assert prelu.alpha.shape == (6,)


def test_saved_model_predicts_same_in_fresh_process(tmp_path):
    model = small_cnn(input_shape=(None, None, 3))
    cases = []
    rng = np.random.default_rng(5)
    for height, width in [(12, 12), (9, 14)]:
        images = rng.standard_normal((4, height, width, 3)).astype("float32")
        name = f"model_{height}x{width}"
        model_path, input_path, expected_path = (
            tmp_path / f"{name}.keras", tmp_path / f"{name}_in.npy", tmp_path / f"{name}_out.npy"
        )
        model.save(model_path)
        np.save(input_path, images)
        np.save(expected_path, model.predict(images, verbose=0))
        cases.append((str(model_path), str(input_path), str(expected_path)))

    reloaded = keras.saving.load_model(cases[1][0])
    np.testing.assert_allclose(
        reloaded.predict(np.load(cases[1][1]), verbose=0), np.load(cases[1][2]),
        *tolerance("float32"),
    )
    check_in_fresh_process(cases)

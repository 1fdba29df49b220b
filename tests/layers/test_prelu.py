import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastricks.layers import PReLU
from kerastricks.layers import prelu as prelu_module
from tests.layers.contract import check_layer_contract, tolerance


def reference_prelu(x, alpha, channel_axis):
    """PReLU in NumPy: `alpha[c] * x` for negative `x` in channel `c`."""
    shape = [1] * x.ndim
    shape[channel_axis] = -1
    return np.where(x >= 0, x, np.reshape(alpha, shape) * x)


def test_one_slope_per_filter():
    inputs = keras.Input((28, 28, 1))
    layer = PReLU()
    layer(keras.layers.Conv2D(32, 3)(inputs))

    assert len(layer.trainable_weights) == 1
    assert layer.alpha.shape == (32,)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.alpha), 0.25)


def test_channel_shared_one_slope():
    layer = PReLU(channel_shared=True)
    layer(keras.Input((None, None, 32)))

    assert int(np.prod(layer.alpha.shape)) == 1


def test_keras_prelu_defaults_differ():
    # The docstring's comparison: Keras learns one slope per activation.
    keras_layer = keras.layers.PReLU()
    keras_layer(keras.Input((28, 28, 32)))
    assert int(np.prod(keras_layer.alpha.shape)) == 28 * 28 * 32 == 25_088

    with pytest.raises(ValueError):
        keras.layers.PReLU()(keras.Input((None, None, 32)))


def test_variable_size_inputs():
    inputs = keras.Input((None, None, 3))
    features = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    prelu = PReLU()
    model = keras.Model(inputs, prelu(features))
    features_model = keras.Model(inputs, features)
    alpha = np.array([0.0, 0.1, 0.25, 0.9], "float32")
    prelu.set_weights([alpha])

    rng = np.random.default_rng(0)
    for height, width in [(8, 8), (13, 11), (5, 20)]:
        images = rng.standard_normal((2, height, width, 3)).astype("float32")
        expected = reference_prelu(features_model.predict(images, verbose=0), alpha, -1)

        output = model.predict(images, verbose=0)

        assert output.shape == (2, height, width, 4)
        np.testing.assert_allclose(output, expected, *tolerance("float32"))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("shape", [(2, 7), (2, 9, 3), (2, 5, 6, 3), (2, 4, 3, 5, 3)])
def test_ranks_and_data_formats(shape, data_format):
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    if data_format == "channels_first" and len(shape) > 2:
        x = np.moveaxis(x, -1, 1)
    channel_axis = 1 if data_format == "channels_first" and len(shape) > 2 else -1
    layer = PReLU(data_format=data_format)
    layer.build(x.shape)
    alpha = np.linspace(0.0, 0.5, x.shape[channel_axis]).astype("float32")
    layer.set_weights([alpha.reshape(layer.alpha.shape)])

    output = keras.ops.convert_to_numpy(layer(x))

    expected = reference_prelu(x, alpha, channel_axis)
    np.testing.assert_allclose(output, expected, *tolerance("float32"))


def test_channels_first_none_spatial_dimensions():
    inputs = keras.Input((3, None, None))
    layer = PReLU(data_format="channels_first")
    model = keras.Model(inputs, layer(inputs))
    x = -np.ones((1, 3, 4, 7), "float32")

    output = model.predict(x, verbose=0)

    assert layer.alpha.shape == (3, 1, 1)
    np.testing.assert_allclose(output, -0.25)


def test_slope_gradient_sums_negative_inputs():
    x = tf.constant(np.random.default_rng(2).standard_normal((16, 4, 4, 3)).astype("float32"))
    layer = PReLU()
    layer.build(x.shape)

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x))
    gradient = tape.gradient(loss, layer.alpha)

    # d/d alpha_c of sum(alpha_c * x) over the negative x of channel c.
    expected = np.where(x.numpy() < 0, x.numpy(), 0.0).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(gradient.numpy(), expected, rtol=1e-5)


# Slopes below 0, at 0 and 1, and above 1: the layer must not assume slopes in [0, 1].
ANY_SLOPES = np.array([-0.5, 0.0, 0.25, 1.0, 1.5, 3.0], "float32")


def make_inputs(shape, seed):
    """Return normal float32 inputs of `shape` with every fifth element set to exactly 0."""
    x = np.random.default_rng(seed).standard_normal(shape).astype("float32")
    x.reshape(-1)[::5] = 0.0
    return x


@pytest.mark.parametrize(
    "data_format, channel_shared, alpha",
    [
        ("channels_last", False, ANY_SLOPES),
        ("channels_first", False, ANY_SLOPES),
        ("channels_last", True, np.array([1.5], "float32")),
        ("channels_last", True, np.array([-0.5], "float32")),
    ],
)
def test_any_slope_exact(data_format, channel_shared, alpha):
    shape = (3, 6, 4, 5) if data_format == "channels_first" else (3, 4, 5, 6)
    channel_axis = 1 if data_format == "channels_first" else -1
    x = make_inputs(shape, seed=3)
    upstream = np.random.default_rng(4).standard_normal(shape).astype("float32")
    layer = PReLU(channel_shared=channel_shared, data_format=data_format)
    layer.build(shape)
    layer.set_weights([alpha.reshape(layer.alpha.shape)])
    x_tensor = tf.constant(x)

    with tf.GradientTape() as tape:
        tape.watch(x_tensor)
        y = layer(x_tensor)
        loss = tf.reduce_sum(y * upstream)
    input_grad, slope_grad = tape.gradient(loss, [x_tensor, layer.alpha])

    alpha_shape = [1] * x.ndim
    alpha_shape[channel_axis] = -1
    factors = np.where(x >= 0, 1.0, np.reshape(alpha, alpha_shape)).astype("float32")
    channel = channel_axis % x.ndim
    axes = tuple(axis for axis in range(x.ndim) if channel_shared or axis != channel)

    # float32 products, so the output and the input gradient match the reference bit for bit.
    np.testing.assert_array_equal(y.numpy(), reference_prelu(x, alpha, channel_axis))
    np.testing.assert_array_equal(input_grad.numpy(), upstream * factors)
    # The slope gradient is a sum, so only its rounding differs from a float64 reference.
    expected = (upstream.astype("float64") * np.minimum(x, 0.0)).sum(axis=axes)
    np.testing.assert_allclose(
        slope_grad.numpy().reshape(-1), np.reshape(expected, -1), rtol=1e-5, atol=1e-5
    )


def test_zero_input_gradient_is_one():
    layer = PReLU(alpha_initializer=0.25)
    x = tf.constant([[0.0, -2.0, 2.0]])

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)

    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [[1.0, 0.25, 1.0]])


def test_generic_factors_match_compiled():
    x = make_inputs((4, 5, 6), seed=5)
    alpha = ANY_SLOPES

    generic = keras.ops.convert_to_numpy(prelu_module._generic_slope_factors(x, alpha))
    compiled = prelu_module._compiled_tensorflow_factors()(tf.constant(x), tf.constant(alpha))

    np.testing.assert_array_equal(generic, np.where(x >= 0, 1.0, alpha).astype("float32"))
    np.testing.assert_array_equal(compiled.numpy(), generic)


def test_no_weight_decay_by_default():
    layer = PReLU()
    layer(np.ones((2, 3), "float32"))
    assert layer.losses == []

    regularized = PReLU(alpha_regularizer=keras.regularizers.L2(0.5))
    regularized(np.ones((2, 3), "float32"))
    np.testing.assert_allclose(float(sum(regularized.losses)), 0.5 * 3 * 0.25**2, rtol=1e-6)


def test_initializer_forms():
    assert float(PReLU(alpha_initializer=0.1).alpha_initializer.value) == pytest.approx(0.1)

    layer = PReLU(alpha_initializer="zeros")
    layer(np.ones((1, 4), "float32"))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.alpha), 0.0)


def test_masks_pass_through():
    inputs = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(10, 4, mask_zero=True)(inputs)
    activated = PReLU()(embedded)

    assert activated._keras_mask is not None


@pytest.mark.parametrize(
    "arguments",
    [
        {"channel_shared": False},
        {"channel_shared": True},
        {"data_format": "channels_first", "alpha_initializer": 0.1},
    ],
)
def test_contract(tmp_path, arguments):
    check_layer_contract(
        lambda: PReLU(**arguments),
        (3, 5, 5, 4),
        expected_output_shape=(3, 5, 5, 4),
        expected_trainable_weights=1,
        expected_non_trainable_weights=0,
        run_fresh_process=False,  # test_activations.py reloads PReLU in a fresh process.
        save_dir=tmp_path,
    )


def test_config_keeps_arguments():
    layer = PReLU(
        channel_shared=True, alpha_initializer=0.1, alpha_regularizer="l2",
        alpha_constraint="non_neg", data_format="channels_first",
    )

    restored = PReLU.from_config(layer.get_config())

    assert restored.channel_shared is True
    assert restored.data_format == "channels_first"
    assert float(restored.alpha_initializer.value) == pytest.approx(0.1)
    assert isinstance(restored.alpha_regularizer, keras.regularizers.L2)
    assert isinstance(restored.alpha_constraint, keras.constraints.NonNeg)


@pytest.mark.parametrize(
    "arguments, error, pattern",
    [
        ({"shared_axes": [1, 2]}, TypeError, r"no shared_axes.*channel_shared=True.*\[1, 2\]"),
        ({"channel_shared": 1}, TypeError, r"channel_shared must be a bool.*channel_shared=1"),
        ({"alpha_initializer": 1.5}, ValueError, r"alpha_initializer.*\[0, 1\).*=1.5"),
        ({"alpha_initializer": -0.25}, ValueError, r"alpha_initializer.*\[0, 1\).*=-0.25"),
        ({"data_format": "NHWC"}, ValueError, r"\['channels_last', 'channels_first'\].*'NHWC'"),
    ],
)
def test_invalid_arguments(arguments, error, pattern):
    with pytest.raises(error, match=pattern):
        PReLU(**arguments)


def test_rank_one_input_rejected():
    with pytest.raises(ValueError, match=r"rank 2 or more.*input_shape=\(5,\)"):
        PReLU().build((5,))


def test_unknown_channels_rejected():
    with pytest.raises(ValueError, match=r"known channel size on axis 1.*channel_shared=True"):
        PReLU(data_format="channels_first").build((None, None, 8, 8))


def test_other_channel_count_rejected():
    layer = PReLU()
    layer(np.ones((1, 4, 4, 3), "float32"))

    with pytest.raises(ValueError, match="axis -1|axis 3"):
        layer(np.ones((1, 4, 4, 5), "float32"))

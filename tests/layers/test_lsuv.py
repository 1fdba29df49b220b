import keras
import numpy as np
import pytest

from kerastricks.layers import apply_lsuv

BATCH = np.random.default_rng(0).uniform(0.0, 1.0, (64, 10, 10, 3)).astype("float32")


def conv_model():
    """A CNN with a bias-free conv, a conv with a non-zero bias and ReLU inside, and dense."""
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="conv_no_bias")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", bias_initializer="ones", name="conv_relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(12, name="dense")(x)
    x = keras.layers.Activation("tanh")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="classifier")(x))


def linear_output(model, layer, batch):
    """The layer's output before its activation, computed from its input with NumPy."""
    inputs = keras.Model(model.inputs, layer.input).predict(batch, verbose=0)
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    if isinstance(layer, keras.layers.Dense):
        output = inputs @ kernel
    else:
        # A 'valid' stride-1 convolution as a sum over the kernel's positions.
        height, width = kernel.shape[:2]
        out_h, out_w = inputs.shape[1] - height + 1, inputs.shape[2] - width + 1
        output = sum(
            inputs[:, i:i + out_h, j:j + out_w, :] @ kernel[i, j]
            for i in range(height)
            for j in range(width)
        )
    if layer.use_bias:
        output = output + keras.ops.convert_to_numpy(layer.bias)
    return output


def test_unit_variance_per_layer():
    model = conv_model()

    variances = apply_lsuv(model, BATCH, seed=0)

    assert list(variances) == ["conv_no_bias", "conv_relu", "dense", "classifier"]
    for name, reported in variances.items():
        layer = model.get_layer(name)
        measured = np.var(linear_output(model, layer, BATCH))
        assert abs(measured - 1.0) < 0.1, name
        assert measured == pytest.approx(reported, rel=1e-4), name


def test_biases_unchanged():
    model = conv_model()
    bias_before = keras.ops.convert_to_numpy(model.get_layer("conv_relu").bias).copy()

    apply_lsuv(model, BATCH, seed=1)

    bias_after = keras.ops.convert_to_numpy(model.get_layer("conv_relu").bias)
    np.testing.assert_array_equal(bias_after, bias_before)
    assert model.get_layer("conv_no_bias").bias is None


def test_orthogonal_start_then_scaled():
    model = conv_model()

    apply_lsuv(model, BATCH, seed=2)

    # Columns of an orthogonal kernel (flattened to fan_in x filters) are orthogonal, and LSUV
    # only scales them, so the Gram matrix is a multiple of the identity.
    kernel = keras.ops.convert_to_numpy(model.get_layer("conv_relu").kernel).reshape(-1, 16)
    gram = kernel.T @ kernel
    np.testing.assert_allclose(gram, gram[0, 0] * np.eye(16), atol=1e-4 * gram[0, 0])


def test_without_orthogonal_keeps_directions():
    model = conv_model()
    kernel_before = keras.ops.convert_to_numpy(model.get_layer("dense").kernel).copy()

    apply_lsuv(model, BATCH, orthogonal=False)

    kernel_after = keras.ops.convert_to_numpy(model.get_layer("dense").kernel)
    ratio = kernel_after / kernel_before
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-4)


def test_model_output_keeps_activation():
    model = conv_model()
    apply_lsuv(model, BATCH, seed=3)

    layer = model.get_layer("conv_relu")
    activated = keras.Model(model.inputs, layer.output).predict(BATCH, verbose=0)

    # The recording wrapper is gone and ReLU still applies inside the layer.
    assert "call" not in vars(layer)
    assert activated.min() >= 0.0
    expected = np.maximum(linear_output(model, layer, BATCH), 0.0)
    np.testing.assert_allclose(activated, expected, atol=1e-4)


def test_subclassed_model_in_call_order():
    class TwoConvs(keras.Model):
        def __init__(self):
            super().__init__()
            # Created in the opposite order of use, so only the call order is right.
            self.second = keras.layers.Conv2D(4, 3, name="second")
            self.first = keras.layers.Conv2D(6, 3, use_bias=False, name="first")

        def call(self, inputs):
            return self.second(keras.ops.relu(self.first(inputs)))

    model = TwoConvs()
    model(BATCH[:1])

    variances = apply_lsuv(model, BATCH, seed=4)

    assert list(variances) == ["first", "second"]
    output = keras.ops.convert_to_numpy(model(BATCH))
    assert abs(np.var(output) - 1.0) < 0.1


def test_nested_model_layers():
    inner = keras.Sequential(
        [keras.Input((10, 10, 3)), keras.layers.Conv2D(4, 3, name="inner_conv")]
    )
    inputs = keras.Input((10, 10, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, name="outer_dense")(inner(inputs)))

    variances = apply_lsuv(model, BATCH, seed=5)

    assert list(variances) == ["inner_conv", "outer_dense"]


def test_warns_when_tolerance_unreachable():
    inputs = keras.Input((10, 10, 3))
    # A bias of +-10 across channels alone gives the output a variance of 100.
    layer = keras.layers.Conv2D(2, 3, bias_initializer=keras.initializers.Constant([10.0, -10.0]))
    model = keras.Model(inputs, layer(inputs))

    with pytest.warns(UserWarning, match=r"left layer .* after 3 rescalings, outside 1 \+/- 0.1"):
        apply_lsuv(model, BATCH, max_iterations=3, seed=6)


def test_unbuilt_model_rejected():
    model = keras.Sequential([keras.layers.Conv2D(4, 3)])

    with pytest.raises(ValueError, match=r"needs a built model.*built=False"):
        apply_lsuv(model, BATCH)


def test_non_model_rejected():
    with pytest.raises(TypeError, match=r"expects a keras.Model.*Conv2D"):
        apply_lsuv(keras.layers.Conv2D(4, 3), BATCH)


def test_model_without_kernels_rejected():
    model = keras.Sequential([keras.Input((10, 10, 3)), keras.layers.ReLU()])

    with pytest.raises(ValueError, match="no Dense or Conv1D/2D/3D layer"):
        apply_lsuv(model, BATCH)


def test_constant_batch_rejected():
    model = keras.Sequential([keras.Input((10, 10, 3)), keras.layers.Conv2D(4, 3, use_bias=False)])

    with pytest.raises(ValueError, match=r"output variance of layer .* is 0.0"):
        apply_lsuv(model, np.zeros_like(BATCH))


@pytest.mark.parametrize(
    "arguments, error, pattern",
    [
        ({"tolerance": 0.0}, ValueError, r"tolerance must be in \(0, 1\).*tolerance=0.0"),
        ({"tolerance": "0.1"}, TypeError, r"tolerance must be a real number.*'0.1'"),
        ({"max_iterations": 0}, ValueError, r"max_iterations must be at least 1.*=0"),
        ({"max_iterations": 2.5}, TypeError, r"max_iterations must be an integer.*=2.5"),
        ({"seed": "0"}, TypeError, r"seed must be an integer or None.*seed='0'"),
    ],
)
def test_invalid_arguments(arguments, error, pattern):
    with pytest.raises(error, match=pattern):
        apply_lsuv(conv_model(), BATCH, **arguments)

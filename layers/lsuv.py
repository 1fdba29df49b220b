"""Layer-sequential unit-variance (LSUV) initialization of a built model."""

import contextlib
import math
import numbers
import warnings

import keras
import numpy as np

# The layers LSUV rescales: they have a `kernel` and an optional bias and activation.
LSUV_LAYERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def apply_lsuv(model, batch, *, tolerance=0.1, max_iterations=10, orthogonal=True, seed=None):
    """Rescale each convolution and dense kernel until its output variance is 1 on a batch.

    LSUV (Mishkin and Matas) initializes layer by layer, in the order the model calls them.
    For each layer it sets the kernel to an orthogonal matrix and runs the batch through the
    model. Then it divides the kernel by the standard deviation of the layer's output before
    its activation, until that variance is within `tolerance` of 1 or `max_iterations`
    rescalings are done. Biases are left as they are, and layers without a bias are handled
    the same way.

    Every `Dense`, `Conv1D`, `Conv2D` and `Conv3D` layer that the model calls is rescaled,
    including layers of nested models. Other layers (depthwise, separable or transposed
    convolutions, batch normalization) keep their weights. Call it once on a built model
    before training, with a batch of typical training inputs.

    Args:
        model: a built `keras.Model` (Sequential, functional or subclassed).
        batch: the model's input for one batch, for example the first training batch of
            images. Its size should be a few hundred elements per unit at least, so the
            variance estimate is stable.
        tolerance: the accepted distance of each output variance from 1, in `(0, 1)`.
            Defaults to `0.1`, the value of Mishkin and Matas.
        max_iterations: the maximum number of rescalings per layer, at least 1. Defaults to
            `10`. A layer still outside the tolerance after them causes a warning.
        orthogonal: whether to start each kernel from an orthogonal matrix. Defaults to
            `True`; `False` rescales the current kernel.
        seed: an integer seed for the orthogonal matrices. Defaults to `None`.

    Returns:
        A dict mapping each rescaled layer's name to its final output variance.

    Raises:
        TypeError: if `model` is not a `keras.Model`, or an argument has the wrong type.
        ValueError: if the model is not built, contains no layer to rescale, a layer's
            output variance is 0 on the batch, or an argument is out of range.

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3)])
    >>> variances = apply_lsuv(model, np.random.rand(64, 8, 8, 1).astype("float32"))

    Reference:
        Mishkin, Matas, "All you need is a good init", ICLR 2016.
    """
    _check_arguments(model, tolerance, max_iterations, seed)

    layers = _layers_in_call_order(model, batch)
    if not layers:
        raise ValueError(
            f"apply_lsuv found no Dense or Conv1D/2D/3D layer that model {model.name!r} calls, "
            f"so there is nothing to rescale."
        )

    variances = {}
    for index, layer in enumerate(layers):
        if orthogonal:
            layer_seed = None if seed is None else seed + index
            initializer = keras.initializers.Orthogonal(seed=layer_seed)
            layer.kernel.assign(initializer(layer.kernel.shape, dtype=layer.kernel.dtype))

        variance = _output_variance(model, layer, batch)
        iterations = 0
        while abs(variance - 1.0) >= tolerance and iterations < max_iterations:
            layer.kernel.assign(layer.kernel / math.sqrt(variance))
            variance = _output_variance(model, layer, batch)
            iterations += 1

        if abs(variance - 1.0) >= tolerance:
            warnings.warn(
                f"LSUV left layer {layer.name!r} at output variance {variance:.4g} after "
                f"{max_iterations} rescalings, outside 1 +/- {tolerance}. A larger batch or "
                f"more max_iterations may help.",
                stacklevel=2,
            )
        variances[layer.name] = variance
    return variances


def _check_arguments(model, tolerance, max_iterations, seed):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"apply_lsuv expects a keras.Model. Received: model of type {type(model).__name__}."
        )
    if not model.built:
        raise ValueError(
            f"apply_lsuv needs a built model, because it rescales existing kernels. Build "
            f"model {model.name!r} first, with keras.Input or by calling it on a batch. "
            f"Received: a model with built=False."
        )
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise TypeError(f"tolerance must be a real number. Received: tolerance={tolerance!r}.")
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must be in (0, 1). Received: tolerance={tolerance!r}.")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, numbers.Integral):
        raise TypeError(
            f"max_iterations must be an integer. Received: max_iterations={max_iterations!r}."
        )
    if max_iterations < 1:
        raise ValueError(
            f"max_iterations must be at least 1. Received: max_iterations={max_iterations!r}."
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an integer or None. Received: seed={seed!r}.")


def _flatten_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _flatten_layers(layer)
        else:
            yield layer


def _layers_in_call_order(model, batch):
    """Return the LSUV layers in the order one forward pass calls them."""
    candidates = [layer for layer in _flatten_layers(model) if isinstance(layer, LSUV_LAYERS)]
    order = []
    with contextlib.ExitStack() as stack:
        for layer in candidates:
            stack.enter_context(_recording(layer, order, keep_output=False))
        model(batch, training=False)

    unique = []
    for layer in order:
        if not any(layer is seen for seen in unique):
            unique.append(layer)
    return unique


def _output_variance(model, layer, batch):
    """Run the batch through the model and return the variance of `layer`'s linear output."""
    outputs = []
    with _recording(layer, outputs, keep_output=True):
        model(batch, training=False)
    values = np.concatenate(
        [keras.ops.convert_to_numpy(output).astype("float64").ravel() for output in outputs]
    )
    variance = float(np.var(values))
    if not variance > 0.0:
        raise ValueError(
            f"The output variance of layer {layer.name!r} is {variance} on this batch, so LSUV "
            f"cannot rescale its kernel. Use a batch of varied training inputs."
        )
    return variance


@contextlib.contextmanager
def _recording(layer, records, keep_output):
    """Record each call of `layer` (its output before the activation, or the layer itself).

    The layer's activation is swapped for the identity inside its own call and applied
    afterwards, so the model's output, and every later layer's input, stay as before.
    """
    original_call = layer.call
    activation = layer.activation

    def recording_call(*args, **kwargs):
        layer.activation = keras.activations.linear
        try:
            linear_output = original_call(*args, **kwargs)
        finally:
            layer.activation = activation
        records.append(linear_output if keep_output else layer)
        return activation(linear_output) if activation is not None else linear_output

    layer.call = recording_call
    try:
        yield
    finally:
        del layer.call

"""The contract every kerastricks layer meets, checked by one shared helper.

Use `check_layer_contract` in each layer's tests:

    from tests.layers.contract import check_layer_contract, tolerance

    def test_rrelu_contract(tmp_path):
        check_layer_contract(
            lambda: RReLU(seed=1),
            input_shape=(4, 6, 6, 3),
            expected_output_shape=(4, 6, 6, 3),
            expected_trainable_weights=0,
            save_dir=tmp_path,
        )

Each Python process that imports TensorFlow costs several seconds, so the `.keras` reload in a
fresh process is the slow part. To check several layers with one process, pass
`run_fresh_process=False`, keep the `FreshProcessCase` that `check_layer_contract` returns and
check them all at once:

    cases = [
        check_layer_contract(make, shape, run_fresh_process=False, save_dir=tmp_path / name)
        for name, (make, shape) in LAYERS.items()
    ]
    check_in_fresh_process(cases)
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import typing
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

# (rtol, atol) for comparing two computations of the same values in a dtype. float16 has a 10-bit
# mantissa (relative spacing about 1e-3) and bfloat16 a 7-bit one (about 8e-3).
_TOLERANCES = {
    "float64": (1e-7, 1e-9),
    "float32": (1e-5, 1e-6),
    "float16": (2e-3, 2e-3),
    "bfloat16": (2e-2, 2e-2),
}


def tolerance(dtype):
    """Return the `(rtol, atol)` pair for comparing values computed in `dtype`.

    Args:
        dtype: a dtype name (`"float32"`, `"float16"`, `"mixed_float16"`, ...) or anything with a
            `.name` or accepted by `keras.backend.standardize_dtype`. A mixed policy name maps to
            its compute dtype.

    Returns:
        A tuple `(rtol, atol)` for `numpy.testing.assert_allclose`.
    """
    name = getattr(dtype, "name", dtype)
    if isinstance(name, str) and name.startswith("mixed_"):
        name = name[len("mixed_"):]
    name = keras.backend.standardize_dtype(name)
    if name not in _TOLERANCES:
        raise ValueError(
            f"No tolerance is defined for dtype {name!r}. Expected one of {sorted(_TOLERANCES)}."
        )
    return _TOLERANCES[name]


class FreshProcessCase(typing.NamedTuple):
    """A saved `.keras` model, its input and the output it must reproduce after loading."""

    model_path: str
    input_path: str
    expected_path: str


def check_layer_contract(
    make_layer,
    input_shape,
    *,
    expected_output_shape=None,
    expected_trainable_weights=None,
    expected_non_trainable_weights=None,
    adapt_data=None,
    training=False,
    run_fresh_process=True,
    mixed_precision=True,
    input_data=None,
    save_dir=None,
):
    """Check that a layer meets the kerastricks layer contract.

    The checks, in order:

    1. Build and call: the layer is called eagerly on the input (with `training`) and on a
       symbolic `keras.Input` with an unknown batch size. The output shapes must match
       `expected_output_shape`, and the output dtype must be the layer's `compute_dtype`.
       Where the layer implements `compute_output_shape`, it must agree as well.
    2. Weight counts: `len(layer.trainable_weights)` and `len(layer.non_trainable_weights)`.
    3. Config round trip: `get_config` is JSON-serializable, `from_config` rebuilds a layer with
       the same config, and the rebuilt layer, given the same weights, gives the same inference
       output. A layer whose class lives in `kerastricks` must be registered under the
       `kerastricks>` package.
    4. `.keras` save and load: a functional model around the layer is saved and loaded back in
       this process. Unless `run_fresh_process=False`, it is also loaded in a fresh Python
       process that imports only `kerastricks.layers`. Both must reproduce the inference output.
    5. `tf.data`: the layer runs inside `tf.data.Dataset.map` (graph mode) and gives the eager
       output (inference) or an output of the right shape and dtype (training).
    6. Precision policies, if `mixed_precision`: built under the `float16` and the
       `mixed_float16` policy, the layer computes in float16, keeps its variables in float16 or
       float32 respectively, and, given the float32 layer's weights, its inference output
       matches float32 within
       `tolerance("float16")`, where the absolute tolerance is scaled by the largest absolute
       float32 output (so layers with large outputs, such as whitening, are compared
       relatively).

    Inference outputs are compared with `training=False`. With `training=True`, random layers
    differ between calls, so only shapes and dtypes are compared on the training path.

    Args:
        make_layer: a callable with no arguments that returns a new, unbuilt layer. It is called
            several times (also under other dtype policies), so it must not return a shared
            instance.
        input_shape: the full input shape including the batch size, all integers, for example
            `(4, 8, 8, 3)`.
        expected_output_shape: the expected output shape including the batch size; a `None`
            entry matches any size. Defaults to `None` (not checked).
        expected_trainable_weights: the expected number of trainable weights once built.
            Defaults to `None` (not checked).
        expected_non_trainable_weights: the expected number of non-trainable weights once
            built. Defaults to `None` (not checked).
        adapt_data: data passed to `layer.adapt` right after each layer is created, for layers
            that learn statistics from data. Defaults to `None` (no `adapt` call).
        training: the `training` argument of the eager and `tf.data` calls. Defaults to `False`.
        run_fresh_process: whether to start a fresh Python process for the `.keras` check.
            Defaults to `True`. With `False`, the saved files are kept and returned so that
            several layers can be checked in one process with `check_in_fresh_process`.
        mixed_precision: whether to run the `float16` and `mixed_float16` checks. Defaults to
            `True`.
        input_data: the input array. Defaults to `None`, which draws standard normal float32
            values of `input_shape` with a fixed seed (so it has negative values too).
        save_dir: the folder for the `.keras` file and the arrays. Defaults to `None`, which
            uses a new temporary folder (removed after a fresh-process check it ran).

    Returns:
        The `FreshProcessCase` of the saved model. Its files exist until `save_dir` is removed
        (or, with the default `save_dir`, until the fresh-process check has run).

    Raises:
        AssertionError: for the first contract check that fails.
    """
    x = _make_input(input_shape, input_data)
    layer = _new_layer(make_layer, adapt_data)

    # 1. Build and call, eagerly and symbolically.
    y = layer(x, training=training)
    _assert_shape(y.shape, expected_output_shape, "eager output")
    assert keras.backend.standardize_dtype(y.dtype) == layer.compute_dtype, (
        f"The output dtype {y.dtype} differs from the layer's compute_dtype "
        f"{layer.compute_dtype}."
    )
    symbolic = layer(keras.Input(batch_shape=(None, *x.shape[1:])), training=training)
    _assert_shape(symbolic.shape, _with_unknown_batch(expected_output_shape), "symbolic output")
    _check_compute_output_shape(layer, x.shape, y.shape)

    # 2. Weight counts.
    if expected_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_trainable_weights, (
            f"Expected {expected_trainable_weights} trainable weights. "
            f"Received: {[w.path for w in layer.trainable_weights]}."
        )
    if expected_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_non_trainable_weights, (
            f"Expected {expected_non_trainable_weights} non-trainable weights. "
            f"Received: {[w.path for w in layer.non_trainable_weights]}."
        )

    # 3. Config round trip and registration.
    reference = keras.ops.convert_to_numpy(layer(x, training=False))
    _check_config_round_trip(layer, x, reference)

    # 4. `.keras` save and load.
    case = _save_model_case(layer, x, save_dir)
    loaded = keras.saving.load_model(case.model_path)
    _assert_close(
        loaded.predict(x, verbose=0), np.load(case.expected_path), "float32",
        "the model loaded in this process",
    )
    if run_fresh_process:
        check_in_fresh_process([case])

    # 5. tf.data.
    _check_dataset_map(make_layer, adapt_data, x, y, training)

    # 6. float16 and mixed_float16 policies.
    if mixed_precision:
        for policy in ("float16", "mixed_float16"):
            _check_policy(make_layer, adapt_data, x, layer, reference, policy, training)

    if run_fresh_process and save_dir is None:
        _remove_case(case)
    return case


def check_in_fresh_process(cases, imports=("kerastricks.layers",), timeout=300):
    """Load saved `.keras` models in one fresh Python process and compare their outputs.

    The process imports only the modules in `imports` (which registers the kerastricks
    classes, as a user's `import` would), loads each model, predicts on the saved input and
    compares with the saved output within `tolerance("float32")`.

    Args:
        cases: an iterable of `FreshProcessCase` (or `(model_path, input_path, expected_path)`
            tuples), for example the values `check_layer_contract(..., run_fresh_process=False)`
            returns.
        imports: the modules the fresh process imports before loading. Defaults to
            `("kerastricks.layers",)`.
        timeout: the limit for the process, in seconds. Defaults to 300.

    Raises:
        AssertionError: if the process fails, with the model path and the process's error.
    """
    cases = [FreshProcessCase(*case) for case in cases]
    if not cases:
        return
    rtol, atol = tolerance("float32")
    script = textwrap.dedent(
        f"""
        import importlib, json, sys
        import numpy as np
        for name in {list(imports)!r}:
            importlib.import_module(name)
        import keras
        for model_path, input_path, expected_path in json.loads(sys.argv[1]):
            model = keras.saving.load_model(model_path)
            output = model.predict(np.load(input_path), verbose=0)
            np.testing.assert_allclose(
                output, np.load(expected_path), rtol={rtol}, atol={atol},
                err_msg=f"Output of {{model_path}} after loading in a fresh process",
            )
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps([list(case) for case in cases])],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    assert result.returncode == 0, (
        f"Loading {[case.model_path for case in cases]} in a fresh process failed "
        f"(exit status {result.returncode}):\n{result.stderr[-4000:]}"
    )


def _make_input(input_shape, input_data):
    if input_data is not None:
        return np.asarray(input_data)
    if any(size is None for size in input_shape):
        raise ValueError(
            f"input_shape must be fully known, including the batch size, to draw test data. "
            f"Received: input_shape={input_shape}."
        )
    return np.random.default_rng(0).standard_normal(input_shape).astype("float32")


def _new_layer(make_layer, adapt_data):
    layer = make_layer()
    assert isinstance(layer, keras.layers.Layer), (
        f"make_layer must return a keras.layers.Layer. Received: {type(layer).__name__}."
    )
    if adapt_data is not None:
        layer.adapt(adapt_data)
    return layer


def _with_unknown_batch(shape):
    return None if shape is None else (None, *shape[1:])


def _assert_shape(actual, expected, what):
    if expected is None:
        return
    actual = tuple(actual)
    matches = len(actual) == len(expected) and all(
        want is None or got == want for got, want in zip(actual, expected)
    )
    assert matches, f"The {what} has shape {actual}. Expected: {tuple(expected)}."


def _check_compute_output_shape(layer, input_shape, output_shape):
    try:
        computed = layer.compute_output_shape(tuple(input_shape))
    except NotImplementedError:
        return
    _assert_shape(output_shape, tuple(computed), "output (against compute_output_shape)")


def _check_config_round_trip(layer, x, reference):
    config = layer.get_config()
    json.dumps(config)  # A config must be plain JSON, or `.keras` saving fails.

    if type(layer).__module__.startswith("kerastricks"):
        registered = keras.saving.get_registered_name(type(layer))
        assert registered.startswith("kerastricks>"), (
            f"{type(layer).__name__} is not registered with "
            f"keras.saving.register_keras_serializable(package='kerastricks'). "
            f"Received registered name: {registered!r}."
        )

    serialized = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(clone) is type(layer), f"Deserialized {type(clone)}. Expected {type(layer)}."
    assert clone.get_config() == config, (
        f"from_config did not restore the config.\nOriginal: {config}\n"
        f"Restored: {clone.get_config()}"
    )

    if not clone.built:  # Deserializing applies `build_config` where the layer saved one.
        clone.build(tuple(x.shape))
    clone.set_weights(layer.get_weights())
    _assert_close(
        clone(x, training=False), reference, layer.compute_dtype, "the layer rebuilt from_config"
    )


def _save_model_case(layer, x, save_dir):
    directory = Path(save_dir if save_dir is not None else tempfile.mkdtemp(prefix="contract-"))
    directory.mkdir(parents=True, exist_ok=True)
    inputs = keras.Input(shape=x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    name = type(layer).__name__.lower()
    case = FreshProcessCase(
        model_path=str(directory / f"{name}.keras"),
        input_path=str(directory / f"{name}_input.npy"),
        expected_path=str(directory / f"{name}_expected.npy"),
    )
    model.save(case.model_path)
    np.save(case.input_path, x)
    np.save(case.expected_path, model.predict(x, verbose=0))
    return case


def _remove_case(case):
    for path in case:
        Path(path).unlink(missing_ok=True)
    try:
        Path(case.model_path).parent.rmdir()
    except OSError:
        pass  # The folder contains other files, so it stays.


def _check_dataset_map(make_layer, adapt_data, x, eager_output, training):
    layer = _new_layer(make_layer, adapt_data)
    layer(x[:1], training=False)  # Build outside the graph so weights are created eagerly.
    if not training:
        # The same weights as the eager call are needed to compare values.
        eager_output = layer(x, training=False)

    dataset = tf.data.Dataset.from_tensor_slices(x).batch(len(x))
    dataset = dataset.map(lambda batch: layer(batch, training=training))
    (mapped,) = list(dataset.as_numpy_iterator())

    assert mapped.shape == tuple(eager_output.shape), (
        f"Inside tf.data.Dataset.map the output has shape {mapped.shape}. "
        f"Expected: {tuple(eager_output.shape)}."
    )
    assert keras.backend.standardize_dtype(mapped.dtype) == layer.compute_dtype
    if not training:
        _assert_close(mapped, eager_output, layer.compute_dtype, "tf.data.Dataset.map")


def _check_policy(make_layer, adapt_data, x, float32_layer, reference, policy, training):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        layer = _new_layer(make_layer, adapt_data)
        y = layer(x, training=training)
        # Random initial weights differ between instances, so compare with the same weights.
        layer.set_weights(float32_layer.get_weights())
        inference = layer(x, training=False)
    finally:
        keras.config.set_dtype_policy(previous)

    assert layer.compute_dtype == "float16", (
        f"Under the {policy} policy the layer computes in {layer.compute_dtype}."
    )
    assert keras.backend.standardize_dtype(y.dtype) == "float16", (
        f"Under the {policy} policy the output dtype is {y.dtype}. Expected float16."
    )
    variable_dtype = "float32" if policy.startswith("mixed_") else "float16"
    for weight in layer.weights:
        assert keras.backend.standardize_dtype(weight.dtype) == variable_dtype, (
            f"Under the {policy} policy the weight {weight.path} is {weight.dtype}. "
            f"Expected {variable_dtype}."
        )

    rtol, atol = tolerance("float16")
    scale = max(1.0, float(np.max(np.abs(reference))))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(inference).astype("float32"), reference,
        rtol=rtol, atol=atol * scale,
        err_msg=f"Inference output under the {policy} policy against float32",
    )


def _assert_close(actual, expected, dtype, what):
    rtol, atol = tolerance(dtype)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(actual), keras.ops.convert_to_numpy(expected),
        rtol=rtol, atol=atol, err_msg=f"Output of {what} differs from the reference",
    )

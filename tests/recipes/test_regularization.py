import keras
import numpy as np
import pytest

from kerastricks.callbacks import (
    KeepLastCheckpoints,
    RecomputeBatchNormStatistics,
    SnapshotEnsemble,
    StochasticWeightAveraging,
)
from kerastricks.recipes import Recipe, RecipeError, build_model, build_optimizer, load_dataset, train
from kerastricks.recipes.training import compile_model, weight_averaging_callbacks

TINY = dict(width=8, depth=2, convs_per_block=1, dense_units=16, batch_size=32,
            diagnostics=False)


def _kernels(model):
    return [layer.kernel.numpy().astype("float64") for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


def _evaluate_loss(model, x, y):
    model.compile(loss="sparse_categorical_crossentropy")
    return model.evaluate(x, y, verbose=0, batch_size=len(x))


@pytest.mark.parametrize("batch_norm, activation", [(False, "relu"), (True, "prelu")])
def test_l2_adds_exact_kernel_penalty(batch_norm, activation):
    x = np.random.default_rng(0).random((16, 8, 8, 1), dtype="float32")
    y = np.arange(16) % 10
    recipe = Recipe(**TINY, batch_norm=batch_norm, activation=activation, l2=0.01)
    model = build_model(recipe, (8, 8, 1), 10)
    plain = build_model(recipe.replace(l2=0.0), (8, 8, 1), 10)
    plain.set_weights(model.get_weights())

    penalty = 0.01 * sum(np.sum(kernel**2) for kernel in _kernels(model))
    assert float(sum(model.losses)) == pytest.approx(penalty, rel=1e-5)
    difference = _evaluate_loss(model, x, y) - _evaluate_loss(plain, x, y)
    assert difference == pytest.approx(penalty, rel=1e-4)


def test_l2_skips_biases_batch_norm_and_prelu():
    model = build_model(Recipe(**TINY, batch_norm=True, activation="prelu", l2=0.01, l1=0.001),
                        (8, 8, 1), 10)
    regularized = [layer.name for layer in model.layers
                   if getattr(layer, "kernel_regularizer", None) is not None]
    assert regularized == ["block1_conv1", "block2_conv1", "dense", "classifier"]
    for layer in model.layers:
        for name in ("bias_regularizer", "beta_regularizer", "gamma_regularizer", "alpha_regularizer"):
            assert getattr(layer, name, None) is None, (layer.name, name)
    assert len(model.losses) == 4


def test_l1_and_l2_add_both_penalties():
    model = build_model(Recipe(**TINY, l1=0.002, l2=0.01), (8, 8, 1), 10)
    kernels = _kernels(model)
    expected = sum(0.002 * np.sum(np.abs(k)) + 0.01 * np.sum(k**2) for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_l1_alone_adds_absolute_penalty():
    model = build_model(Recipe(**TINY, l1=0.003), (8, 8, 1), 10)
    expected = sum(0.003 * np.sum(np.abs(k)) for k in _kernels(model))
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


def _filter_norms(model):
    """Per-filter norms of conv kernels (axes 0, 1, 2) and per-unit norms of dense kernels (axis 0)."""
    norms = []
    for layer in model.layers:
        kernel = layer.kernel.numpy() if hasattr(layer, "kernel") else None
        if isinstance(layer, keras.layers.Conv2D):
            norms.append(np.sqrt(np.sum(kernel**2, axis=(0, 1, 2))))
        elif isinstance(layer, keras.layers.Dense):
            norms.append(np.sqrt(np.sum(kernel**2, axis=0)))
    return np.concatenate(norms)


def _train_steps(recipe, x, y):
    keras.utils.set_random_seed(0)
    model = compile_model(recipe, build_model(recipe, (8, 8, 1), 10))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    return model


def test_max_norm_bounds_every_filter(digit_arrays):
    x, y = digit_arrays[0][:256], digit_arrays[1][:256]
    recipe = Recipe(**TINY, optimizer="sgd", learning_rate=0.5, max_norm=1.0)
    unconstrained = _filter_norms(_train_steps(recipe.replace(max_norm=0.0), x, y))
    assert unconstrained.max() > 1.0  # the bound matters for this model

    model = _train_steps(recipe, x, y)
    norms = _filter_norms(model)
    assert norms.max() <= 1.0 + 1e-5
    assert np.sum(norms > 0.99) > 0  # some filters sit at the bound
    conv = model.get_layer("block1_conv1").kernel_constraint
    assert isinstance(conv, keras.constraints.MaxNorm)
    assert conv.get_config() == {"max_value": 1.0, "axis": [0, 1, 2]}
    assert model.get_layer("dense").kernel_constraint.get_config() == {"max_value": 1.0, "axis": 0}


def test_spatial_dropout_drops_whole_maps():
    model = build_model(Recipe(**TINY, spatial_dropout=0.5), (8, 8, 1), 10)
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.SpatialDropout2D)]
    assert [layer.name for layer in layers] == ["block1_dropout", "block2_dropout"]
    maps = np.ones((64, 4, 4, 8), dtype="float32")
    dropped = layers[0](maps, training=True).numpy()
    per_map = dropped.reshape(64, 16, 8)
    # Each (image, channel) map is either all zero or all scaled by 1 / (1 - rate).
    assert np.all(np.ptp(per_map, axis=1) == 0)
    assert set(np.unique(per_map)) == {0.0, 2.0}
    assert 0.35 < np.mean(per_map == 0) < 0.65
    np.testing.assert_array_equal(layers[0](maps, training=False).numpy(), maps)


def test_ema_sets_optimizer_options():
    optimizer = build_optimizer(Recipe(ema=True, ema_momentum=0.95))
    assert optimizer.use_ema is True
    assert optimizer.ema_momentum == pytest.approx(0.95)
    assert build_optimizer(Recipe()).use_ema is False


def test_averaging_callbacks_follow_recipe(tmp_path):
    data = load_dataset("digits", subset=100, batch_size=32)
    recipe = Recipe(**TINY, epochs=4, ema=True, snapshots=2, keep_checkpoints=3)
    kinds = [type(c) for c in weight_averaging_callbacks(recipe, data, tmp_path)]
    assert kinds == [keras.callbacks.SwapEMAWeights, RecomputeBatchNormStatistics,
                     SnapshotEnsemble, KeepLastCheckpoints]
    swa = weight_averaging_callbacks(recipe.replace(ema=False, swa_start=2), data, tmp_path)
    assert [type(c) for c in swa][0] is StochasticWeightAveraging
    assert weight_averaging_callbacks(Recipe(**TINY), data, tmp_path) == []


def test_train_writes_snapshots_and_checkpoints(tmp_path):
    data = load_dataset("digits", subset=300, batch_size=32)
    recipe = Recipe(**TINY, epochs=4, snapshots=2, keep_checkpoints=2, ema=True)
    metrics = train(recipe, data, tmp_path / "run", verbose=0)
    assert sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir()) == [
        "snapshot-1.keras", "snapshot-2.keras"]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "epoch-003.keras", "epoch-004.keras"]
    assert metrics["epochs"] == 4


def test_train_with_swa(tmp_path):
    data = load_dataset("digits", subset=300, batch_size=32)
    metrics = train(Recipe(**TINY, epochs=3, swa_start=1), data, tmp_path / "run", verbose=0)
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert (tmp_path / "run" / "model.keras").is_file()


@pytest.mark.parametrize("changes, message", [
    ({"l1": -0.1}, "'l1' must be >= 0"),
    ({"max_norm": -3}, "'max_norm' must be >= 0"),
    ({"spatial_dropout": 1.0}, "'spatial_dropout' must be < 1"),
    ({"ema_momentum": 1.5}, "'ema_momentum' must be"),
    ({"snapshots": 3, "epochs": 10}, "Use snapshots=2 or epochs=12"),
    ({"swa_start": 10, "epochs": 10}, "'swa_start' must be smaller than 'epochs'"),
    ({"keep_checkpoints": 5, "epochs": 4}, "'keep_checkpoints' must be at most 'epochs'"),
    ({"ema": True, "swa_start": 1}, "use one of them"),
    ({"snapshots": 1.5}, "'snapshots' must be int"),
])
def test_bad_regularization_fields(changes, message):
    with pytest.raises(RecipeError, match=message):
        Recipe(**changes)


@pytest.fixture(scope="module")
def digit_arrays():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype("float32").reshape(-1, 8, 8, 1), y.astype("int32")

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastricks.callbacks import (
    KeepLastCheckpoints,
    StochasticWeightAveraging,
    batch_normalization_layers,
    recompute_batch_norm_statistics,
)
from tests.callbacks.conftest import make_cnn


def make_bn_cnn(seed=0):
    """A compiled CNN for 8x8x1 digits with two BatchNormalization layers."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
        keras.layers.BatchNormalization(momentum=0.9),
        keras.layers.ReLU(),
        keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
        keras.layers.BatchNormalization(momentum=0.9),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


class WeightRecorder(keras.callbacks.Callback):
    """Copies the trainable weights at the end of every epoch."""

    def on_train_begin(self, logs=None):
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([w.numpy().copy() for w in self.model.trainable_weights])


def _fresh_pass_statistics(model, images, batch_size):
    """Batch-size-weighted means of each BatchNormalization input's per-batch mean and variance.

    A clone runs the pass so that the model under test keeps its statistics.
    """
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    expected = []
    for layer in batch_normalization_layers(clone):
        probe = keras.Model(clone.inputs[0], layer.input)
        means, variances, counts = [], [], []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            features = probe(batch, training=True).numpy().astype("float64")
            flat = features.reshape(-1, features.shape[-1])
            means.append(flat.mean(axis=0))
            variances.append(flat.var(axis=0))
            counts.append(len(batch))
        weights = np.array(counts, dtype="float64") / sum(counts)
        expected.append((weights @ np.array(means), weights @ np.array(variances)))
    return expected


@pytest.fixture(scope="module")
def swa_run(digit_images):
    x, y = digit_images[0][:300], digit_images[1][:300]
    model = make_bn_cnn()
    swa = StochasticWeightAveraging(start_epoch=2, data=x, batch_size=64)
    recorder = WeightRecorder()
    model.fit(x, y, batch_size=50, epochs=5, callbacks=[recorder, swa], verbose=0)
    return model, swa, recorder, x


def test_swa_weights_are_mean_of_collected(swa_run):
    model, swa, recorder, _ = swa_run
    assert swa.averaged_epochs == [2, 3, 4]
    for index, variable in enumerate(model.trainable_weights):
        expected = np.mean([epoch_weights[index] for epoch_weights in recorder.weights[2:]], axis=0)
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_swa_differs_from_last_weights(swa_run):
    model, _, recorder, _ = swa_run
    assert not np.allclose(model.trainable_weights[0].numpy(), recorder.weights[-1][0])


def test_swa_batch_norm_equals_fresh_pass(swa_run):
    model, _, _, x = swa_run
    expected = _fresh_pass_statistics(model, x, batch_size=64)
    layers = batch_normalization_layers(model)
    assert len(layers) == 2
    for layer, (mean, variance) in zip(layers, expected):
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-5)
        assert layer.momentum == 0.9


def test_recompute_accepts_tf_data_pairs(digit_images):
    x, y = digit_images[0][:130], digit_images[1][:130]
    model = make_bn_cnn(seed=3)
    seen = recompute_batch_norm_statistics(
        model, tf.data.Dataset.from_tensor_slices((x, y)).batch(40))
    assert seen == 130
    expected = _fresh_pass_statistics(model, x, batch_size=40)
    for layer, (mean, variance) in zip(batch_normalization_layers(model), expected):
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-5)


def test_recompute_without_batch_norm_reads_nothing():
    assert recompute_batch_norm_statistics(make_cnn(), data=np.zeros((0, 8, 8, 1))) == 0


def test_recompute_rejects_empty_data():
    with pytest.raises(ValueError, match="no images"):
        recompute_batch_norm_statistics(make_bn_cnn(), np.zeros((0, 8, 8, 1), "float32"))


def test_swa_needs_data_with_batch_norm(digit_images):
    x, y = digit_images[0][:32], digit_images[1][:32]
    with pytest.raises(ValueError, match="needs `data` because the model has BatchNormalization"):
        make_bn_cnn().fit(x, y, epochs=1, callbacks=[StochasticWeightAveraging(0)], verbose=0)


def test_swa_before_start_warns_and_keeps_weights(digit_images):
    x, y = digit_images[0][:64], digit_images[1][:64]
    model = make_cnn()
    recorder = WeightRecorder()
    with pytest.warns(UserWarning, match="averaged nothing"):
        model.fit(x, y, epochs=2, callbacks=[recorder, StochasticWeightAveraging(5)], verbose=0)
    np.testing.assert_array_equal(model.trainable_weights[0].numpy(), recorder.weights[-1][0])


def test_swa_sets_constant_learning_rate(digit_images):
    x, y = digit_images[0][:64], digit_images[1][:64]
    model = make_cnn()
    model.fit(x, y, epochs=2, verbose=0,
              callbacks=[StochasticWeightAveraging(1, learning_rate=0.0123)])
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.0123)


@pytest.mark.parametrize("arguments, message", [
    ({"start_epoch": -1}, "start_epoch"),
    ({"start_epoch": 1.0}, "start_epoch"),
    ({"start_epoch": 0, "learning_rate": 0}, "learning_rate"),
    ({"start_epoch": 0, "batch_size": 0}, "batch_size"),
])
def test_swa_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        StochasticWeightAveraging(**arguments)


def test_keep_last_checkpoints(digit_images, tmp_path):
    x, y = digit_images[0][:64], digit_images[1][:64]
    model = make_cnn()
    keeper = KeepLastCheckpoints(tmp_path / "checkpoints", keep=2)
    recorder = WeightRecorder()
    model.fit(x, y, epochs=4, callbacks=[recorder, keeper], verbose=0)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch-003.keras", "epoch-004.keras"]
    assert keeper.paths == [str(tmp_path / "checkpoints" / f"epoch-00{n}.keras") for n in (3, 4)]
    third = keras.saving.load_model(keeper.paths[0])
    np.testing.assert_array_equal(third.trainable_weights[0].numpy(), recorder.weights[2][0])


def test_keep_more_than_epochs_warns(digit_images, tmp_path):
    x, y = digit_images[0][:32], digit_images[1][:32]
    with pytest.warns(UserWarning, match="kept 1 checkpoints, fewer than keep=3"):
        make_cnn().fit(x, y, epochs=1, callbacks=[KeepLastCheckpoints(tmp_path, keep=3)], verbose=0)


@pytest.mark.parametrize("arguments, message", [
    ({"keep": 0}, "keep"),
    ({"keep": 2, "filename": "last.keras"}, "filename"),
])
def test_keep_bad_arguments(arguments, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        KeepLastCheckpoints(tmp_path, **arguments)


@pytest.mark.parametrize("name", ["StochasticWeightAveraging", "KeepLastCheckpoints",
                                  "RecomputeBatchNormStatistics"])
def test_callbacks_registered(name):
    assert keras.saving.get_registered_object(f"kerastricks>{name}").__name__ == name


def test_config_round_trips(tmp_path):
    swa = StochasticWeightAveraging(3, learning_rate=0.01, batch_size=32)
    assert StochasticWeightAveraging(**swa.get_config()).get_config() == swa.get_config()
    keeper = KeepLastCheckpoints(tmp_path, keep=4, filename="e{epoch}.keras")
    assert KeepLastCheckpoints(**keeper.get_config()).get_config() == keeper.get_config()


def test_swa_resumes_running_mean(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(64, 6)).astype("float32")
    labels = rng.integers(0, 3, 64)
    snapshots = []

    class RecordWeights(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append([w.numpy().copy() for w in self.model.trainable_weights])

    class StopAfterSecondEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    state = tmp_path / "swa_state.npz"
    first = StochasticWeightAveraging(start_epoch=0, state_path=state)
    with pytest.raises(KeyboardInterrupt):
        model.fit(images, labels, epochs=4, verbose=0,
                  callbacks=[RecordWeights(), first, StopAfterSecondEpoch()])

    # A new process would build a new callback; it continues from the saved running mean.
    resumed = StochasticWeightAveraging(start_epoch=0, state_path=state)
    model.fit(images, labels, epochs=4, initial_epoch=2, verbose=0,
              callbacks=[RecordWeights(), resumed])
    assert resumed.averaged_epochs == [0, 1, 2, 3]
    for variable, index in zip(model.trainable_weights, range(len(snapshots[0]))):
        expected = np.mean([weights[index] for weights in snapshots], axis=0)
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_swa_ignores_stale_state(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(32, 4)).astype("float32")
    labels = rng.integers(0, 2, 32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    state = tmp_path / "swa_state.npz"
    np.savez(state, averaged_epochs=np.asarray([0]),
             **{f"weight_{i}": w.numpy() for i, w in enumerate(model.trainable_weights)})
    swa = StochasticWeightAveraging(start_epoch=0, state_path=state)
    with pytest.warns(UserWarning, match="the average restarts here"):
        model.fit(images, labels, epochs=5, initial_epoch=3, verbose=0, callbacks=[swa])
    assert swa.averaged_epochs == [3, 4]


def test_swa_falls_back_to_previous_state(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    state = tmp_path / "swa_state.npz"
    weights = [w.numpy() for w in model.trainable_weights]
    # The newest state is one epoch ahead of the resumed weights; the one before it matches.
    np.savez(state, averaged_epochs=np.asarray([0, 1, 2]),
             **{f"weight_{i}": w + 100.0 for i, w in enumerate(weights)})
    np.savez(tmp_path / "swa_state.previous.npz", averaged_epochs=np.asarray([0, 1]),
             **{f"weight_{i}": w for i, w in enumerate(weights)})
    swa = StochasticWeightAveraging(start_epoch=0, state_path=state)
    swa.set_model(model)
    swa.on_train_begin()
    swa.on_epoch_begin(2)
    assert swa.averaged_epochs == [0, 1]
    np.testing.assert_array_equal(swa._average[0], weights[0])


def test_swa_resumed_after_last_epoch_applies_saved_mean(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.normal(size=(32, 4)).astype("float32")
    labels = rng.integers(0, 2, 32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    state = tmp_path / "swa_state.npz"
    saved = [w.numpy() + 7.0 for w in model.trainable_weights]
    np.savez(state, averaged_epochs=np.asarray([1, 2]),
             **{f"weight_{i}": w for i, w in enumerate(saved)})
    # Every epoch ran before the kill, so the resumed fit trains nothing.
    swa = StochasticWeightAveraging(start_epoch=1, state_path=state)
    model.fit(images, labels, epochs=3, initial_epoch=3, verbose=0, callbacks=[swa])
    assert swa.averaged_epochs == [1, 2]
    for variable, expected in zip(model.trainable_weights, saved):
        np.testing.assert_allclose(variable.numpy(), expected)

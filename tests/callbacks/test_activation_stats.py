"""Tests of `ActivationStatistics` and its pure helpers, with real training and event files."""

import warnings

import keras
import numpy as np
import pytest

from kerastricks.callbacks import (
    ActivationStatistics,
    activation_kind,
    dead_unit_fraction,
    find_activation_layers,
    register_activation_layer,
    saturation_fraction,
)
from kerastricks.callbacks.activation_stats import strided_sample
from tests.callbacks.conftest import make_mlp
from tests.callbacks.events import load_events, scalar_series, tags_by_plugin


def mean_dead_fraction(callback):
    return np.mean([record["dead_fraction"] for record in callback.latest().values()])


class TestHelpers:
    def test_dead_fraction_matches_reference(self):
        rng = np.random.default_rng(0)
        outputs = np.maximum(rng.normal(size=(16, 4, 4, 10)), 0.0)
        outputs[..., [1, 7]] = 0.0
        outputs[..., 3] = -0.5  # a leaky unit that never leaves its negative side
        # Reference: a unit is dead when no example and no position is positive.
        reference = np.mean([not np.any(outputs[..., unit] > 0) for unit in range(10)])
        assert dead_unit_fraction(outputs) == pytest.approx(reference)
        assert reference == pytest.approx(0.3)

    def test_dead_fraction_unit_axis(self):
        outputs = np.ones((5, 3, 6))
        outputs[:, 2, :] = 0.0
        assert dead_unit_fraction(outputs, axis=1) == pytest.approx(1 / 3)
        assert dead_unit_fraction(outputs, axis=-1) == 0.0

    def test_saturation_sigmoid_and_tanh(self):
        sigmoid = 1.0 / (1.0 + np.exp(-np.array([-10.0, -4.0, 0.0, 4.0, 10.0])))
        # Only |x| = 10 gives outputs within 0.01 of 0 or 1 (sigmoid(4) = 0.982).
        assert saturation_fraction(sigmoid, "sigmoid", 0.01) == pytest.approx(2 / 5)
        tanh = np.tanh(np.array([-3.0, -1.0, 0.0, 1.0, 3.0]))
        # tanh(3) = 0.995 lies within 0.01 of 1; tanh(1) = 0.76 does not.
        assert saturation_fraction(tanh, "tanh", 0.01) == pytest.approx(2 / 5)

    @pytest.mark.parametrize("size", [10, 65536, 65537, 131071, 1_000_000])
    def test_histogram_sample_is_capped(self, size):
        values = np.arange(size, dtype="float32").reshape(-1, 1)
        sample = strided_sample(values, 65536)
        assert sample.size <= 65536
        assert sample.size >= min(size, 65536) // 2
        assert sample[0] == 0.0
        # Evenly strided: all gaps between the sampled values are equal.
        assert np.all(np.diff(sample) == np.diff(sample)[0])

    def test_saturation_rejects_unknown_kind(self):
        with pytest.raises(ValueError, match="'sigmoid' or 'tanh'"):
            saturation_fraction(np.zeros(3), "relu")

    def test_activation_kinds(self):
        assert activation_kind(keras.layers.Activation("relu")) == "rectifier"
        assert activation_kind(keras.layers.Activation("sigmoid")) == "sigmoid"
        assert activation_kind(keras.layers.Activation("tanh")) == "tanh"
        assert activation_kind(keras.layers.Activation("softmax")) == "other"
        for layer in (keras.layers.ReLU(), keras.layers.LeakyReLU(), keras.layers.ELU(),
                      keras.layers.PReLU()):
            assert activation_kind(layer) == "rectifier"
        assert activation_kind(keras.layers.Dense(3)) is None

    def test_kerastricks_activation_layers_are_rectifiers(self):
        import kerastricks.layers

        for name in ("PReLU", "RReLU"):
            layer_class = getattr(kerastricks.layers, name, None)
            if layer_class is None:
                pytest.skip(f"kerastricks.layers.{name} does not exist yet")
            assert activation_kind(layer_class()) == "rectifier"

    def test_registered_layer_is_found(self):
        class Squash(keras.layers.Layer):
            def call(self, inputs):
                return keras.ops.tanh(inputs)

        assert activation_kind(Squash()) is None
        register_activation_layer(Squash, kind="tanh")
        assert activation_kind(Squash()) == "tanh"
        with pytest.raises(ValueError, match="kind"):
            register_activation_layer(Squash, kind="relu")
        with pytest.raises(TypeError, match="layer_class"):
            register_activation_layer(int)

    def test_find_activation_layers(self):
        model = make_mlp(depth=2)
        found = find_activation_layers(model)
        assert [kind for _, kind in found] == ["rectifier", "rectifier"]


class TestTraining:
    def test_high_learning_rate_kills_more_units(self, digits, tmp_path):
        x, y = digits
        dead = {}
        for name, rate in (("sane", 1e-3), ("too_high", 0.1)):
            model = make_mlp(optimizer=keras.optimizers.Adam(rate))
            callback = ActivationStatistics(tmp_path / name, x[-256:])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(x[:1500], y[:1500], epochs=2, batch_size=32, verbose=0,
                          callbacks=[callback])
            dead[name] = mean_dead_fraction(callback)
            # The logged value is the recomputed NumPy reference on the final model.
            probe_model = keras.Model(model.inputs[0], model.layers[1].output)
            reference = dead_unit_fraction(np.asarray(probe_model(x[-256:])))
            first = callback.latest()[model.layers[1].name]["dead_fraction"]
            assert first == pytest.approx(reference)
        assert dead["too_high"] > 0.4
        assert dead["too_high"] > dead["sane"] + 0.3

    def test_warns_about_dead_layer(self, digits, tmp_path):
        x, y = digits
        model = make_mlp(optimizer=keras.optimizers.Adam(0.1))
        callback = ActivationStatistics(tmp_path, x[-256:], dead_threshold=0.4)
        with pytest.warns(UserWarning, match="dead .*Lower the learning rate"):
            model.fit(x[:1500], y[:1500], epochs=2, batch_size=32, verbose=0,
                      callbacks=[callback])

    def test_event_file_scalars_and_histograms(self, digits, tmp_path):
        x, y = digits
        model = make_mlp(depth=1)
        model.layers[1].name = "hidden_act"
        callback = ActivationStatistics(tmp_path, x[-128:], every_n_epochs=2, every_n_steps=10)
        model.fit(x[:640], y[:640], epochs=4, batch_size=32, verbose=0, callbacks=[callback])
        events = load_events(tmp_path / "diagnostics")
        plugins = tags_by_plugin(events)
        assert "activations/hidden_act/dead_fraction" in plugins["scalars"]
        assert "activations_by_step/hidden_act/dead_fraction" in plugins["scalars"]
        assert "activations/hidden_act" in plugins["histograms"]
        steps, values = scalar_series(events, "activations/hidden_act/dead_fraction")
        assert steps == [1, 3]
        assert values[-1] == pytest.approx(callback.latest()["hidden_act"]["dead_fraction"])
        step_steps, _ = scalar_series(events, "activations_by_step/hidden_act/dead_fraction")
        assert step_steps == list(range(10, 81, 10))

    def test_one_object_serves_two_fits(self, digits, tmp_path):
        x, y = digits
        model = make_mlp(depth=1)
        callback = ActivationStatistics(tmp_path, x[-64:])
        model.fit(x[:256], y[:256], epochs=2, verbose=0, callbacks=[callback])
        model.fit(x[:256], y[:256], epochs=1, verbose=0, callbacks=[callback])
        assert [record["epoch"] for record in callback.records] == [0]


class TestBadInput:
    @pytest.mark.parametrize("name", ["every_n_epochs", "every_n_steps"])
    @pytest.mark.parametrize("value", [0, -2, 1.5, True])
    def test_non_positive_interval(self, tmp_path, name, value):
        with pytest.raises(ValueError, match=f"`{name}` must be .*Received: {name}="):
            ActivationStatistics(tmp_path, np.zeros((4, 64)), **{name: value})

    def test_probe_of_wrong_shape(self, digits, tmp_path):
        x, y = digits
        model = make_mlp()
        callback = ActivationStatistics(tmp_path, np.zeros((8, 32), "float32"))
        with pytest.raises(ValueError, match=r"do not match the model's input shape.*\(64,\)"):
            model.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[callback])
        assert not model.optimizer.iterations.numpy()

    def test_probe_without_batch_axis(self, tmp_path):
        with pytest.raises(ValueError, match="at least 2 dimensions"):
            ActivationStatistics(tmp_path, np.zeros(64))

    def test_unwritable_log_dir(self, tmp_path):
        blocker = tmp_path / "a_file"
        blocker.write_text("not a folder")
        with pytest.raises(ValueError, match="log directory cannot be written.*a_file"):
            ActivationStatistics(blocker / "logs", np.zeros((4, 64)))

    def test_model_without_activation_layers_warns_once(self, digits, tmp_path):
        x, y = digits
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        callback = ActivationStatistics(tmp_path, x[:32])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x[:64], y[:64], epochs=2, verbose=0, callbacks=[callback])
            model.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[callback])
        messages = [str(w.message) for w in caught if "no activation layer" in str(w.message)]
        assert len(messages) == 1
        assert callback.records == []
        assert model.optimizer.iterations.numpy() > 0

"""Tests of `UpdateHealth`: update ratios and gradient norms against NumPy references."""

import math
import warnings

import keras
import numpy as np
import pytest

from kerastricks.callbacks import ActivationStatistics, UpdateHealth, gradient_norms, update_ratio
from tests.callbacks.conftest import make_mlp
from tests.callbacks.events import load_events, scalar_series, tags_by_plugin


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def logistic_regression(seed=0, learning_rate=0.5):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, name="logits")])
    model.compile(keras.optimizers.SGD(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def reference_gradient(model, x, y):
    """The mean cross-entropy gradient of a softmax regression: X^T (p - onehot) / n."""
    kernel, bias = (np.asarray(w, "float64") for w in model.get_weights())
    probabilities = softmax(x @ kernel + bias)
    error = probabilities - np.eye(10)[y]
    return x.T @ error / len(x), error.mean(axis=0)


class TestHelpers:
    def test_update_ratio_formula(self):
        before = [np.array([[3.0, 0.0], [0.0, 4.0]]), np.array([0.0])]
        after = [np.array([[3.0, 0.0], [0.0, 4.0]]) + 0.01, np.array([0.02])]
        change = math.sqrt(4 * 0.01**2 + 0.02**2)
        assert update_ratio(before, after) == pytest.approx(change / 5.0)

    def test_update_ratio_zero_weights(self):
        zeros = [np.zeros((2, 2))]
        assert update_ratio(zeros, zeros) == 0.0
        assert update_ratio(zeros, [np.ones((2, 2))]) == math.inf

    def test_update_ratio_length_mismatch(self):
        with pytest.raises(ValueError, match="same number of arrays"):
            update_ratio([np.zeros(2)], [])

    def test_gradient_norm_matches_softmax_regression(self, digits):
        x, y = digits
        model = logistic_regression()
        kernel_gradient, bias_gradient = reference_gradient(model, x[:200].astype("float64"),
                                                            y[:200])
        expected = math.sqrt(np.sum(kernel_gradient**2) + np.sum(bias_gradient**2))
        norms = gradient_norms(model, x[:200], y[:200])
        assert norms["logits"] == pytest.approx(expected, rel=1e-4)


class TestTraining:
    def test_update_ratio_of_first_step(self, digits, tmp_path):
        x, y = digits
        rate = 0.5
        model = logistic_regression(learning_rate=rate)
        before = [np.asarray(w, "float64") for w in model.get_weights()]
        # Plain SGD moves the weights by -rate * gradient of the first batch.
        kernel_gradient, bias_gradient = reference_gradient(model, x[:32].astype("float64"),
                                                            y[:32])
        step = rate * math.sqrt(np.sum(kernel_gradient**2) + np.sum(bias_gradient**2))
        expected = step / math.sqrt(sum(np.sum(w**2) for w in before))

        callback = UpdateHealth(tmp_path, (x[-100:], y[-100:]))
        model.fit(x[:320], y[:320], batch_size=32, epochs=1, shuffle=False, verbose=0,
                  callbacks=[callback])
        assert callback.latest()["logits"]["update_ratio"] == pytest.approx(expected, rel=1e-3)
        events = load_events(tmp_path / "diagnostics")
        steps, values = scalar_series(events, "updates/logits/update_ratio")
        assert steps == [0]
        assert values[0] == pytest.approx(expected, rel=1e-3)

    def test_saturated_sigmoid_network(self, digits, tmp_path):
        x, y = digits
        large = keras.initializers.RandomNormal(stddev=4.0, seed=1)
        model = make_mlp("sigmoid", kernel_initializer=large,
                         optimizer=keras.optimizers.SGD(0.1))
        activations = ActivationStatistics(tmp_path, x[-256:])
        updates = UpdateHealth(tmp_path, (x[-256:], y[-256:]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x[:1000], y[:1000], batch_size=32, epochs=1, verbose=0,
                      callbacks=[activations, updates])

        saturation = [r["saturation_fraction"] for r in activations.latest().values()]
        assert len(saturation) == 3
        assert min(saturation) > 0.5
        records = list(updates.latest().values())
        norms = [r["gradient_norm"] for r in records]
        ratios = [r["update_ratio"] for r in records]
        # Gradients vanish towards the input: the first hidden layers get a small share.
        assert norms[0] < 0.25 * norms[-1]
        assert norms[1] < 0.25 * norms[-1]
        # and their weights move far less than the rule of thumb of 1e-3 per step.
        assert ratios[0] < 1e-4
        assert ratios[1] < 1e-4

        events = load_events(tmp_path / "diagnostics")
        scalars = tags_by_plugin(events)["scalars"]
        assert {f"gradients/{layer.name}/norm" for layer in model.layers[::2]} <= scalars
        first = model.layers[0].name
        assert scalar_series(events, f"gradients/{first}/norm")[1][0] == pytest.approx(norms[0])

    def test_sane_sigmoid_network_is_not_saturated(self, digits, tmp_path):
        x, y = digits
        model = make_mlp("sigmoid", kernel_initializer="glorot_uniform",
                         optimizer=keras.optimizers.SGD(0.1))
        activations = ActivationStatistics(tmp_path, x[-256:])
        model.fit(x[:320], y[:320], batch_size=32, epochs=1, verbose=0, callbacks=[activations])
        assert max(r["saturation_fraction"] for r in activations.latest().values()) < 0.05

    def test_every_n_steps(self, digits, tmp_path):
        x, y = digits
        model = logistic_regression()
        callback = UpdateHealth(tmp_path, (x[-64:], y[-64:]), every_n_epochs=2, every_n_steps=4)
        model.fit(x[:320], y[:320], batch_size=32, epochs=2, verbose=0, callbacks=[callback])
        events = load_events(tmp_path / "diagnostics")
        assert scalar_series(events, "updates_by_step/logits/update_ratio")[0] == [4, 8, 12, 16, 20]
        assert scalar_series(events, "updates/logits/update_ratio")[0] == [1]
        assert scalar_series(events, "gradients/logits/norm")[0] == [1]


class TestBadInput:
    def test_probe_needs_labels(self, tmp_path):
        with pytest.raises(ValueError, match=r"must be an `\(x, y\)` pair here"):
            UpdateHealth(tmp_path, np.zeros((4, 64)))

    def test_label_count_mismatch(self, tmp_path):
        with pytest.raises(ValueError, match="4 inputs and 3 labels"):
            UpdateHealth(tmp_path, (np.zeros((4, 64)), np.zeros(3)))

    @pytest.mark.parametrize("value", [0, -1])
    def test_non_positive_interval(self, tmp_path, value):
        with pytest.raises(ValueError, match="every_n_epochs"):
            UpdateHealth(tmp_path, (np.zeros((4, 64)), np.zeros(4)), every_n_epochs=value)

    def test_probe_of_wrong_shape(self, digits, tmp_path):
        x, y = digits
        callback = UpdateHealth(tmp_path, (np.zeros((4, 8, 8)), np.zeros(4)))
        model = logistic_regression()
        with pytest.raises(ValueError, match="do not match the model's input shape"):
            model.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[callback])

    def test_uncompiled_model(self, tmp_path):
        callback = UpdateHealth(tmp_path, (np.zeros((4, 64)), np.zeros(4)))
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(2)])
        callback.set_model(model)
        with pytest.raises(ValueError, match="compiled with a loss"):
            callback.on_train_begin()

    def test_unwritable_log_dir(self, tmp_path):
        blocker = tmp_path / "file"
        blocker.write_text("")
        with pytest.raises(ValueError, match="cannot be written"):
            UpdateHealth(blocker, (np.zeros((4, 64)), np.zeros(4)))

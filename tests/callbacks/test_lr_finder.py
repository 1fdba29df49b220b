"""Tests of the learning-rate finder: restored state, suggestion rule and bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastricks.callbacks import find_learning_rate, suggest_learning_rate
from kerastricks.callbacks.lr_finder import exponential_schedule, smooth_losses
from tests.callbacks.conftest import make_cnn, make_mlp


def optimizer_state(model):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables]


class TestHelpers:
    def test_schedule_is_geometric(self):
        rates = exponential_schedule(1e-6, 1.0, 7)
        np.testing.assert_allclose(rates, 10.0 ** np.arange(-6, 1), rtol=1e-12)

    def test_smoothing_reference(self):
        losses = [4.0, 2.0, 3.0]
        beta = 0.9
        # Written out: the moving average divided by its bias 1 - beta^t.
        a1 = 0.1 * 4.0
        a2 = beta * a1 + 0.1 * 2.0
        a3 = beta * a2 + 0.1 * 3.0
        expected = [a1 / (1 - beta), a2 / (1 - beta**2), a3 / (1 - beta**3)]
        np.testing.assert_allclose(smooth_losses(losses, beta), expected)

    def test_suggestion_is_steepest_descent_before_minimum(self):
        rates = np.geomspace(1e-5, 1.0, 6)
        losses = [2.3, 2.2, 1.2, 1.0, 0.9, 5.0]
        # Slopes per decade before the minimum (index 4): the steepest is around index 2.
        assert suggest_learning_rate(rates, losses) == pytest.approx(rates[2])

    def test_suggestion_skips_the_first_steps(self):
        rates = np.geomspace(1e-5, 10.0, 100)
        # A steep drop in the first 3 batches, then a gentler dip around step 60.
        losses = np.concatenate([[6.0, 3.0, 2.4], 2.3 - 0.01 * np.arange(57),
                                 1.73 - 0.02 * np.arange(20), 1.33 + 0.3 * np.arange(20)])
        lowest = int(np.argmin(losses))
        slopes = np.gradient(losses[: lowest + 1], np.log10(rates[: lowest + 1]))
        steepest_after_start = 10 + int(np.argmin(slopes[10:]))
        assert steepest_after_start > 10
        assert suggest_learning_rate(rates, losses) == pytest.approx(rates[steepest_after_start])
        assert suggest_learning_rate(rates, losses, skip_start=0) == pytest.approx(rates[0])

    def test_suggestion_when_loss_only_rises(self):
        rates = np.geomspace(1e-3, 1.0, 5)
        assert suggest_learning_rate(rates, [1.0, 2.0, 3.0, 4.0, 5.0]) == rates[0]


class TestSweep:
    def test_restores_weights_and_optimizer(self, digit_images):
        x, y = digit_images
        model = make_cnn()
        model.fit(x[:64], y[:64], epochs=1, verbose=0)  # gives Adam a non-trivial state
        weights = [w.copy() for w in model.get_weights()]
        state = optimizer_state(model)
        rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))

        result = find_learning_rate(model, (x, y), min_lr=1e-5, max_lr=10.0, num_steps=60)

        assert len(result.losses) > 5
        for before, after in zip(weights, model.get_weights()):
            np.testing.assert_array_equal(before, after)
        for before, after in zip(state, optimizer_state(model)):
            np.testing.assert_array_equal(before, after)
        assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == rate

    def test_suggestion_inside_range_and_trains(self, digits):
        x, y = digits
        model = make_mlp(optimizer=keras.optimizers.SGD(1e-3))
        result = find_learning_rate(model, (x, y), min_lr=1e-4, max_lr=100.0, num_steps=120)
        assert 1e-4 <= result.suggestion <= 100.0
        assert result.learning_rates[0] == pytest.approx(1e-4)
        # The sweep goes far enough to see the loss blow up and stops early.
        assert len(result.learning_rates) < 120
        assert result.smoothed_losses.min() < result.smoothed_losses[0]
        # The suggested rate trains the untouched model better than the smallest swept one.
        losses = {}
        for rate in (1e-4, result.suggestion):
            trial = make_mlp(optimizer=keras.optimizers.SGD(rate))
            trial.set_weights(model.get_weights())
            history = trial.fit(x[:1000], y[:1000], epochs=1, batch_size=32, verbose=0)
            losses[rate] = history.history["loss"][-1]
        assert losses[result.suggestion] < losses[1e-4]

    def test_accepts_a_dataset(self, digits):
        x, y = digits
        model = make_mlp(depth=1)
        dataset = tf.data.Dataset.from_tensor_slices((x[:256], y[:256])).batch(32)
        result = find_learning_rate(model, dataset, num_steps=20, divergence_factor=1e9)
        assert len(result.losses) == 20
        assert result.to_dict()["suggestion"] == result.suggestion

    def test_plot(self, digits):
        x, y = digits
        model = make_mlp(depth=1)
        result = find_learning_rate(model, (x, y), num_steps=10)
        line = result.plot().axes[0].get_lines()[0]
        np.testing.assert_allclose(line.get_ydata(), result.smoothed_losses)


class TestBadInput:
    @pytest.mark.parametrize("options, match", [
        ({"min_lr": 0.0}, "`min_lr` must be a positive number"),
        ({"min_lr": 1e-3, "max_lr": 1e-4}, "`max_lr` must be greater than `min_lr`"),
        ({"num_steps": 2}, "`num_steps` must be an integer of at least 5"),
        ({"smoothing": 1.0}, r"`smoothing` must be in \[0, 1\)"),
        ({"divergence_factor": 1.0}, "`divergence_factor` must be greater than 1"),
    ])
    def test_invalid_arguments(self, digits, options, match):
        x, y = digits
        with pytest.raises(ValueError, match=match):
            find_learning_rate(make_mlp(depth=1), (x, y), **options)

    def test_uncompiled_model(self, digits):
        x, y = digits
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
        with pytest.raises(ValueError, match="compiled model"):
            find_learning_rate(model, (x, y))

    def test_schedule_optimizer(self, digits):
        x, y = digits
        schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 100, 0.9)
        model = make_mlp(depth=1, optimizer=keras.optimizers.SGD(schedule))
        with pytest.raises(ValueError, match="float learning rate, not a schedule"):
            find_learning_rate(model, (x, y))

    def test_data_of_wrong_type(self, digits):
        with pytest.raises(TypeError, match="tf.data.Dataset"):
            find_learning_rate(make_mlp(depth=1), digits[0])

    def test_label_count_mismatch(self, digits):
        x, y = digits
        with pytest.raises(ValueError, match="as many labels as inputs"):
            find_learning_rate(make_mlp(depth=1), (x, y[:10]))

"""Tests for the learning-rate schedules, checked against NumPy formulas written here."""

import json
import math
import subprocess
import sys

import keras
import numpy as np
import pytest

from kerastricks.callbacks import (
    ClassMetrics, GradualUnfreezing, OneCycle, learning_rate_schedule, plateau_callback,
)


def rates(schedule, steps):
    return np.array([float(schedule(step)) for step in steps])


def one_cycle_reference(step, max_lr, total, pct_start=0.3, div=25.0, final_div=1e4):
    peak = round(pct_start * total)
    start, end = max_lr / div, max_lr / div / final_div
    if step <= peak:
        return max_lr + (start - max_lr) * 0.5 * (1 + math.cos(math.pi * step / peak))
    fraction = min(1.0, (step - peak) / (total - peak))
    return end + (max_lr - end) * 0.5 * (1 + math.cos(math.pi * fraction))


class TestOneCycle:
    def test_peak_and_ends(self):
        schedule = OneCycle(0.1, total_steps=100)
        assert float(schedule(0)) == pytest.approx(0.1 / 25)
        assert float(schedule(30)) == pytest.approx(0.1)
        assert float(schedule(100)) == pytest.approx(0.1 / 25 / 1e4)
        assert float(schedule(500)) == pytest.approx(0.1 / 25 / 1e4)

    def test_matches_reference_formula(self):
        schedule = OneCycle(0.05, total_steps=70, pct_start=0.25, div_factor=10.0,
                            final_div_factor=100.0)
        steps = np.arange(0, 71)
        expected = [one_cycle_reference(s, 0.05, 70, 0.25, 10.0, 100.0) for s in steps]
        np.testing.assert_allclose(rates(schedule, steps), expected, rtol=1e-5)

    def test_rises_then_falls(self):
        values = rates(OneCycle(1.0, total_steps=50), range(51))
        assert np.all(np.diff(values[:16]) > 0)
        assert np.all(np.diff(values[15:]) < 0)

    def test_config_round_trip(self):
        schedule = OneCycle(0.2, total_steps=40, pct_start=0.4)
        copy = OneCycle.from_config(schedule.get_config())
        np.testing.assert_allclose(rates(copy, range(41)), rates(schedule, range(41)))

    @pytest.mark.parametrize("kwargs, word", [
        ({"max_learning_rate": 0.0, "total_steps": 10}, "max_learning_rate"),
        ({"max_learning_rate": 0.1, "total_steps": 1}, "total_steps"),
        ({"max_learning_rate": 0.1, "total_steps": 10, "pct_start": 1.0}, "pct_start"),
        ({"max_learning_rate": 0.1, "total_steps": 10, "div_factor": -2}, "div_factor"),
    ])
    def test_bad_arguments(self, kwargs, word):
        with pytest.raises(ValueError, match=f"{word}.*Received"):
            OneCycle(**kwargs)

    def test_saved_optimizer_reloads_in_fresh_process(self, tmp_path):
        # One fresh process also loads serialized ClassMetrics and GradualUnfreezing
        # callbacks, so the start-up of TensorFlow is paid once.
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer=keras.optimizers.SGD(OneCycle(0.3, total_steps=20)), loss="mse")
        model.fit(np.ones((8, 3)), np.ones((8, 2)), epochs=1, batch_size=4, verbose=0)
        path = tmp_path / "model.keras"
        model.save(path)
        metrics_callback = ClassMetrics((np.zeros((2, 3), "float32"), np.array([0, 1])),
                                        ["a", "b"], log_dir=str(tmp_path), batch_size=8)
        config_path = tmp_path / "callback.json"
        unfreezing = GradualUnfreezing(unfreeze_every=2, train_batch_norm=True)
        config_path.write_text(json.dumps([keras.saving.serialize_keras_object(callback)
                                           for callback in (metrics_callback, unfreezing)]))
        code = (
            "import json, sys, keras, kerastricks.callbacks\n"
            "model = keras.saving.load_model(sys.argv[1])\n"
            "schedule = model.optimizer._learning_rate\n"
            "callback, unfreezing = [keras.saving.deserialize_keras_object(item)\n"
            "                        for item in json.load(open(sys.argv[2]))]\n"
            "print(type(schedule).__name__, float(schedule(6)), type(callback).__name__,\n"
            "      callback.batch_size, type(unfreezing).__name__, unfreezing.unfreeze_every,\n"
            "      unfreezing.train_batch_norm, callback.validation_data[1].tolist())\n"
        )
        output = subprocess.run([sys.executable, "-c", code, str(path), str(config_path)],
                                capture_output=True, text=True, check=True).stdout.split()
        assert output[0] == "OneCycle"
        assert float(output[1]) == pytest.approx(0.3, rel=1e-5)
        assert output[2] == "ClassMetrics"
        assert output[3] == "8"
        assert output[4:7] == ["GradualUnfreezing", "2", "True"]
        assert "".join(output[7:]) == "[0,1]"


class TestScheduleFactory:
    def test_step_divides_by_factor(self):
        schedule = learning_rate_schedule("step", 0.1, epochs=9, steps_per_epoch=10)
        expected = 0.1 * 0.1 ** (np.arange(90) // 30)
        np.testing.assert_allclose(rates(schedule, range(90)), expected, rtol=1e-5)

    def test_cosine_with_warmup(self):
        schedule = learning_rate_schedule("cosine", 0.2, epochs=10, steps_per_epoch=10,
                                          warmup_epochs=2)
        steps = np.arange(0, 101)
        expected = np.where(
            steps < 20, 0.2 * steps / 20,
            0.2 * 0.5 * (1 + np.cos(np.pi * np.clip((steps - 20) / 80, 0, 1))),
        )
        np.testing.assert_allclose(rates(schedule, steps), expected, rtol=1e-4, atol=1e-7)

    def test_sgdr_restarts(self):
        # Cycles of 10, 20 and 40 steps, each restarting at the base rate.
        schedule = learning_rate_schedule("sgdr", 0.1, epochs=7, steps_per_epoch=10,
                                          first_cycle_epochs=1)
        values = rates(schedule, range(71))
        for restart in (0, 10, 30, 70):
            assert values[restart] == pytest.approx(0.1)
        assert values[5] == pytest.approx(0.05, rel=1e-5)
        assert values[20] == pytest.approx(0.05, rel=1e-5)
        assert values[29] == pytest.approx(0.05 * (1 + math.cos(math.pi * 19 / 20)), rel=1e-4)

    def test_one_cycle_uses_run_length(self):
        schedule = learning_rate_schedule("one_cycle", 0.01, epochs=5, steps_per_epoch=20)
        assert schedule.total_steps == 100
        assert float(schedule(30)) == pytest.approx(0.01)

    def test_constant_and_plateau_return_float(self):
        assert learning_rate_schedule("constant", 0.01, 5, 10) == 0.01
        assert learning_rate_schedule("plateau", 0.01, 5, 10) == 0.01

    def test_plateau_callback_divides_by_ten(self):
        callback = plateau_callback(patience=1)
        assert isinstance(callback, keras.callbacks.ReduceLROnPlateau)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        callback.set_model(model)
        callback.on_train_begin()
        for epoch, loss in enumerate([1.0, 1.0]):
            callback.on_epoch_end(epoch, {"val_loss": loss})
        assert float(model.optimizer.learning_rate) == pytest.approx(0.001)

    @pytest.mark.parametrize("name, options, word", [
        ("warm", {}, "Unknown learning-rate schedule"),
        ("step", {"warmup_epochs": 1}, "Unknown option 'warmup_epochs'"),
        ("step", {"factor": 2.0}, r"option factor must be > 0 and < 1\. Received: "
                                  r"lr_schedule_options=\{'factor': 2\.0\}"),
        ("cosine", {"alpha": 1.0}, r"'cosine' schedule's option alpha must be >= 0 and < 1\. "
                                   r"Received: lr_schedule_options=\{'alpha': 1\.0\}"),
        ("sgdr", {"t_mul": 0}, "t_mul must be a positive number"),
    ])
    def test_bad_schedule(self, name, options, word):
        with pytest.raises(ValueError, match=word):
            learning_rate_schedule(name, 0.1, 5, 10, **options)


class TestRecipeOptimizer:
    def test_build_optimizer_uses_schedule(self):
        from kerastricks.recipes.models import build_optimizer
        from kerastricks.recipes.spec import Recipe

        recipe = Recipe(lr_schedule="one_cycle", learning_rate=0.02, epochs=4)
        optimizer = build_optimizer(recipe, steps_per_epoch=10)
        schedule = optimizer._learning_rate
        assert isinstance(schedule, OneCycle)
        assert schedule.total_steps == 40
        assert float(schedule(12)) == pytest.approx(0.02)

    def test_no_steps_per_epoch_keeps_constant_rate(self):
        from kerastricks.recipes.models import build_optimizer
        from kerastricks.recipes.spec import Recipe

        optimizer = build_optimizer(Recipe(lr_schedule="step", learning_rate=0.03))
        assert float(optimizer.learning_rate) == pytest.approx(0.03)

    def test_plateau_keeps_float_learning_rate(self):
        from kerastricks.recipes.models import build_optimizer
        from kerastricks.recipes.spec import Recipe

        optimizer = build_optimizer(Recipe(lr_schedule="plateau", learning_rate=0.01))
        assert float(optimizer.learning_rate) == pytest.approx(0.01)

"""The learning-rate experiment: finder figure, schedules, verdict, and a tiny run end to end."""

import json

import keras
import numpy as np
import pytest

from kerastricks.recipes.experiments import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from kerastricks.recipes.lr_compare import (
    EXPERIMENT, PEAK_LEARNING_RATE, epoch_learning_rates, measure, verdict,
)
from kerastricks.recipes.saving import load_model
from kerastricks.recipes.spec import Recipe
from tests.recipes.experiment_checks import check_experiment_folder, run_experiment_cli

VARIANTS = ("constant", "step", "plateau", "cosine + warmup", "one-cycle")
SCHEDULES = {"constant": "constant", "step": "step", "plateau": "plateau",
             "cosine + warmup": "cosine", "one-cycle": "one_cycle"}


def made_up_rows(test_errors):
    return [{"variant": label, "test_error": error} for label, error in zip(VARIANTS, test_errors)]


@pytest.mark.parametrize("test_errors, status", [
    ((0.12, 0.10, 0.11, 0.105, 0.1), SUPPORTED),
    ((0.10, 0.12, 0.11, 0.105, 0.1), NOT_SUPPORTED),
    ((0.11, 0.10, 0.12, 0.105, 0.11), INCONCLUSIVE),
    # Two standard errors of 0.10 on 10,000 images are 0.6 points: 0.095 is a tie.
    ((0.10, 0.095, 0.096, 0.097, 0.095), NOT_SUPPORTED),
])
def test_verdict_on_made_up_rows(test_errors, status):
    result = verdict(made_up_rows(test_errors))
    assert result.status == status
    assert f"constant {100 * test_errors[0]:.2f} % test error" in result.text


def test_verdict_names_the_schedules_that_win():
    assert "2 of 4 decaying schedules beat the constant learning rate (step, cosine + warmup)" in (
        verdict(made_up_rows((0.11, 0.10, 0.12, 0.10, 0.11))).text)


def test_variants_share_the_peak_learning_rate():
    base = EXPERIMENT.base_recipe("full")
    assert base.optimizer == "sgd"
    assert base.learning_rate == PEAK_LEARNING_RATE
    for label in VARIANTS:
        recipe = EXPERIMENT.variant_recipe(base, label)
        assert recipe.lr_schedule == SCHEDULES[label]
        assert recipe.learning_rate == PEAK_LEARNING_RATE
        assert recipe.epochs == base.epochs


def test_measure_reads_a_lowered_learning_rate_after_loading(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    model.fit(np.ones((4, 3)), np.array([0, 1, 0, 1]), verbose=0)
    # What ReduceLROnPlateau does when the validation loss stops improving.
    model.optimizer.learning_rate.assign(0.005)
    model.save(tmp_path / "model.keras")
    assert measure(load_model(tmp_path), None, None)["final_learning_rate"] == pytest.approx(0.005)


def test_epoch_learning_rates_read_tensorboard_logs(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    steps_per_epoch, epochs = 4, 3
    schedule = keras.optimizers.schedules.ExponentialDecay(
        0.1, steps_per_epoch, 0.5, staircase=True)
    model.compile(keras.optimizers.SGD(schedule), "sparse_categorical_crossentropy")
    x, y = np.ones((4 * steps_per_epoch, 3)), np.zeros(4 * steps_per_epoch, "int32")
    model.fit(x, y, batch_size=4, epochs=epochs, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(str(tmp_path))])
    # At the end of epoch e the optimizer has taken (e + 1) * steps_per_epoch steps.
    expected = [0.1 * 0.5 ** (epoch + 1) for epoch in range(epochs)]
    assert epoch_learning_rates(tmp_path) == pytest.approx(expected)
    assert epoch_learning_rates(tmp_path / "missing") == []


@pytest.mark.experiment
def test_lr_experiment_runs(tmp_path, capsys):
    status, out, err = run_experiment_cli("lr_compare", tmp_path / "runs", capsys)
    assert status == 0, err
    assert "| one-cycle |" in out
    assert "Verdict:" in out
    folder = tmp_path / "runs" / "lr_compare"
    summary = check_experiment_folder(folder, VARIANTS)
    assert {"lr_find.png", "learning_rates.png"} <= {f["file"] for f in summary["figures"]}
    finder = json.loads((folder / "lr_find.json").read_text("utf-8"))
    assert 1e-5 <= finder["suggestion"] <= 10.0
    assert finder["learning_rates"][0] == pytest.approx(1e-5)

    rows = {row["variant"]: row for row in summary["rows"]}
    for label, row in rows.items():
        assert Recipe.from_file(folder / row["run"] / "recipe.json").lr_schedule == SCHEDULES[label]
    # One epoch of 540 images is 9 steps. The constant, step (drops after 2 epochs), plateau
    # (first epoch always improves) and cosine (warmup ends at step 9) runs end at the peak;
    # one-cycle ends at peak / (div_factor * final_div_factor).
    final = {label: PEAK_LEARNING_RATE for label in VARIANTS}
    final["one-cycle"] = PEAK_LEARNING_RATE / (25.0 * 1e4)
    for label, expected in final.items():
        assert rows[label]["final_learning_rate"] == pytest.approx(expected, rel=1e-5)
        logged = epoch_learning_rates(folder / rows[label]["run"])
        assert logged == pytest.approx([expected], rel=1e-5)

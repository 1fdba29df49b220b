"""The dead-ReLU experiment: its measurement, verdict and figure, and a tiny run end to end."""

import json

import keras
import numpy as np
import pytest

from kerastricks.recipes.dead_relu import (
    EXPERIMENT, LEARNING_RATES, dead_fractions, figures, measure, verdict,
)
from kerastricks.recipes.experiments import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from kerastricks.recipes.spec import Recipe
from tests.recipes.experiment_checks import check_experiment_folder, run_experiment_cli

VARIANTS = tuple(f"SGD lr {rate:g}" for rate in LEARNING_RATES)


def tiny_relu_model(dead_channels):
    """Return a conv + dense ReLU model whose conv channels `dead_channels` can never fire."""
    inputs = keras.Input((6, 6, 1))
    conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
    x = keras.layers.Activation("relu", name="conv_act")(conv(inputs))
    x = keras.layers.Flatten()(x)
    dense = keras.layers.Dense(5, name="dense")
    outputs = keras.layers.ReLU(name="dense_act")(dense(x))
    model = keras.Model(inputs, outputs)
    kernel, bias = conv.get_weights()
    # Inputs lie in [0, 1], so a zero kernel and a negative bias keep the output at 0.
    kernel[..., dead_channels] = 0.0
    bias[dead_channels] = -1.0
    conv.set_weights([kernel, bias])
    return model


class Splits:
    """The part of `DataSplits` that `measure` reads."""

    def __init__(self, x_validation):
        self.x_validation = x_validation


def test_dead_fractions_match_a_numpy_reference():
    images = np.random.default_rng(0).uniform(size=(37, 6, 6, 1)).astype("float32")
    model = tiny_relu_model(dead_channels=[1, 3])
    fractions = dead_fractions(model, images, batch_size=8)

    conv_model = keras.Model(model.input, model.get_layer("conv_act").output)
    conv_out = conv_model.predict(images, verbose=0)
    dense_out = model.predict(images, verbose=0)
    assert list(fractions) == ["conv_act", "dense_act"]
    assert fractions["conv_act"] == np.mean(conv_out.max(axis=(0, 1, 2)) <= 0)
    assert fractions["dense_act"] == np.mean(dense_out.max(axis=0) <= 0)
    assert fractions["conv_act"] >= 0.5


def test_dead_fractions_one_live_image():
    model = tiny_relu_model(dead_channels=[])
    conv = model.get_layer("conv")
    kernel, bias = conv.get_weights()
    # Only channel 0 has a non-zero kernel. With bias -0.5 it fires only near a pixel of 1.
    kernel[...] = 0.0
    kernel[..., 0] = 1.0
    conv.set_weights([kernel, np.full_like(bias, -0.5)])
    images = np.zeros((20, 6, 6, 1), "float32")
    images[19, 2, 2, 0] = 1.0
    assert dead_fractions(model, images, batch_size=8)["conv_act"] == 0.75
    assert dead_fractions(model, images[:19], batch_size=8)["conv_act"] == 1.0


def test_measure_reports_mean_max_and_learning_rate():
    images = np.random.default_rng(1).uniform(size=(16, 6, 6, 1)).astype("float32")
    model = tiny_relu_model(dead_channels=[0, 1, 2])
    values = measure(model, Splits(images), Recipe(learning_rate=0.25))
    fractions = list(values["dead_fractions"].values())
    assert values["learning_rate"] == 0.25
    assert values["dead_mean"] == pytest.approx(np.mean(fractions))
    assert values["dead_max"] == pytest.approx(np.max(fractions))
    assert values["dead_fractions"]["conv_act"] >= 0.75


def made_up_rows(dead_means):
    return [{"variant": f"SGD lr {rate:g}", "learning_rate": rate, "dead_mean": dead,
             "test_error": 0.1, "dead_fractions": {"a": dead, "b": dead}}
            for rate, dead in zip(LEARNING_RATES, dead_means)]


@pytest.mark.parametrize("dead_means, status", [
    ((0.0, 0.0, 0.1, 0.5, 0.9), SUPPORTED),
    ((0.05, 0.05, 0.06, 0.06, 0.06), NOT_SUPPORTED),
    ((0.0, 0.0, 0.05, 0.1, 0.15), INCONCLUSIVE),
    # Many units die at the highest rate, but the lowest rate already lost nearly as many.
    ((0.1, 0.1, 0.1, 0.2, 0.25), INCONCLUSIVE),
])
def test_verdict_on_made_up_rows(dead_means, status):
    # The rows arrive in another order than the learning rates; the verdict sorts them.
    result = verdict(list(reversed(made_up_rows(dead_means))))
    assert result.status == status
    assert f"{100 * dead_means[-1]:.1f} %" in result.text


def test_figure_is_a_png(tmp_path):
    names = figures(made_up_rows((0.0, 0.1, 0.2, 0.5, 0.9)), None, tmp_path)
    assert [name for name, _ in names] == ["dead_fraction.png"]
    assert (tmp_path / "dead_fraction.png").read_bytes().startswith(b"\x89PNG")


def test_variants_change_only_the_learning_rate():
    base = EXPERIMENT.base_recipe("quick")
    assert base.optimizer == "sgd"
    assert not base.batch_norm
    assert base.activation == "relu"
    assert base.clipnorm == 1.0
    for label, rate in zip(VARIANTS, LEARNING_RATES):
        recipe = EXPERIMENT.variant_recipe(base, label)
        assert recipe.replace(name=base.name, learning_rate=base.learning_rate) == base
        assert recipe.learning_rate == rate


@pytest.mark.experiment
def test_dead_relu_experiment_runs(tmp_path, capsys):
    status, out, err = run_experiment_cli("dead_relu", tmp_path / "runs", capsys)
    assert status == 0, err
    assert "| SGD lr 1 |" in out
    assert "Verdict:" in out
    folder = tmp_path / "runs" / "dead_relu"
    summary = check_experiment_folder(folder, VARIANTS)
    assert "dead_fraction.png" in [figure["file"] for figure in summary["figures"]]
    for row, rate in zip(summary["rows"], LEARNING_RATES):
        saved = Recipe.from_file(folder / row["run"] / "recipe.json")
        assert saved.learning_rate == rate
        assert saved.optimizer == "sgd"
        measured = json.loads((folder / row["run"] / "measurements.json").read_text("utf-8"))
        assert measured["learning_rate"] == rate
        assert list(measured["dead_fractions"]) == [
            "block1_act1", "block1_act2", "block2_act1", "block2_act2", "dense_act"]
        fractions = list(measured["dead_fractions"].values())
        assert measured["dead_mean"] == pytest.approx(np.mean(fractions))
        assert all(0.0 <= value <= 1.0 for value in measured["dead_fractions"].values())

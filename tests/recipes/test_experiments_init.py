"""The initialization experiments: unit symmetry, the initial signal spread, verdicts, runs."""

import math

import keras
import numpy as np
import pytest

from kerastricks.callbacks import find_activation_layers
from kerastricks.recipes import deep_init, init_compare
from kerastricks.recipes.experiments import (
    INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, experiment_recipe,
)
from kerastricks.recipes.init_compare import (
    activation_std, count_distinct_units, hidden_layers, unit_weights,
)
from kerastricks.recipes.models import build_model
from kerastricks.recipes.saving import load_model
from kerastricks.recipes.spec import Recipe
from tests.recipes.experiment_checks import check_experiment_folder, run_experiment_cli

INIT_VARIANTS = ("zeros", "small random", "calibrated", "He")
DEEP_VARIANTS = ("calibrated", "He", "LSUV")


def test_count_distinct_units_groups_equal_rows():
    rows = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.5], [1.0, 2.0 + 1e-9]])
    assert count_distinct_units(rows) == 2
    assert count_distinct_units(np.zeros((16, 10))) == 1
    assert count_distinct_units(np.eye(5)) == 5
    # Rows that differ by less than the tolerance, relative to the largest weight, are equal.
    assert count_distinct_units(np.array([[1000.0], [1000.0005]])) == 1
    assert count_distinct_units(np.array([[1e-3], [2e-3]])) == 2


def test_unit_weights_are_each_filter_and_its_bias():
    layer = keras.layers.Conv2D(3, 2, bias_initializer="random_normal")
    layer.build((None, 5, 5, 2))
    weights = unit_weights(layer)
    kernel, bias = (np.asarray(w) for w in layer.get_weights())
    assert weights.shape == (3, 2 * 2 * 2 + 1)
    for unit in range(3):
        np.testing.assert_array_equal(weights[unit, :-1], kernel[..., unit].ravel())
        assert weights[unit, -1] == bias[unit]
    no_bias = keras.layers.Dense(4, use_bias=False)
    no_bias.build((None, 3))
    np.testing.assert_array_equal(unit_weights(no_bias)[:, -1], np.zeros(4))


def plain_relu_model(initializer, convs=6, width=16, seed=0):
    """Return a plain ReLU CNN of `convs` 3x3 convolutions on 16x16x1 images."""
    recipe = experiment_recipe("spread", dataset="digits", batch_norm=False, depth=1,
                               convs_per_block=convs, width=width, dense_units=0,
                               initializer=initializer, seed=seed)
    return build_model(recipe, (16, 16, 1), 10)


def activation_outputs(model, images):
    layers = [layer for layer, _ in find_activation_layers(model)]
    probe = keras.Model(model.input, [layer.output for layer in layers])
    return [np.asarray(output, dtype="float64") for output in probe(images)]


def box_sum(second_moment):
    """Sum each pixel's 3x3 neighbourhood, with zeros outside the map (a 'same' convolution)."""
    padded = np.pad(second_moment, 1)
    height, width = second_moment.shape
    return sum(padded[i:i + height, j:j + width] for i in range(3) for j in range(3))


@pytest.mark.parametrize("initializer, scale", [("calibrated", 1.0), ("he", 2.0)])
def test_initial_spread_follows_the_variance_recurrence(initializer, scale):
    images = np.random.default_rng(0).normal(size=(16, 16, 16, 1)).astype("float32")
    moment_ratios, std_ratios = [], []
    # One narrow network's layers scatter by tens of percent around the expectation, so the
    # checks average over eight networks. `build_model` seeds layer k with seed + k, so seeds
    # 100 apart share no draws.
    for seed in range(0, 800, 100):
        model = plain_relu_model(initializer, seed=seed)
        outputs = activation_outputs(model, images)
        stds = [std for _, std in activation_std(model, images)]
        np.testing.assert_allclose(stds, [output.std() for output in outputs], rtol=1e-5)

        # Kernels of variance scale / fan_in with fan_in = 9 * channels, and a ReLU that keeps
        # half of a symmetric input's second moment, give in expectation
        # E[x_l^2](p) = scale / 18 * (sum of E[x_(l-1)^2] over the 3x3 neighbourhood of p),
        # where the zero padding contributes nothing.
        for before, after in zip(outputs, outputs[1:]):
            expected = scale / 18.0 * box_sum(np.mean(before**2, axis=(0, 3)))
            moment_ratios.append(np.mean(after**2) / expected.mean())
        std_ratios += list(np.array(stds[1:]) / np.array(stds[:-1]))

    assert np.mean(moment_ratios) == pytest.approx(1.0, abs=0.2)
    # Away from the borders that is a factor 1/sqrt(2) per layer for 1/n and 1 for 2/n.
    assert np.mean(std_ratios) == pytest.approx(math.sqrt(scale / 2.0), rel=0.1)


def test_initial_spread_of_small_random_weights_collapses():
    images = np.random.default_rng(1).normal(size=(16, 16, 16, 1)).astype("float32")
    stds = [std for _, std in activation_std(plain_relu_model("small_random", convs=3), images)]
    # Each layer multiplies the standard deviation by about 0.001 * sqrt(9 * channels / 2).
    assert stds[0] < 1e-2
    for before, after in zip(stds, stds[1:]):
        assert after / before < 0.02


def test_init_measure_on_zero_and_he_models():
    recipe = experiment_recipe("zeros", dataset="digits", batch_norm=False, width=4,
                               dense_units=8, initializer="zeros", subset=200)
    from kerastricks.recipes.data import load_dataset

    data = load_dataset("digits", subset=200, seed=0)
    model = build_model(recipe, data.input_shape, data.num_classes)
    measured = init_compare.measure(model, data, recipe)
    assert measured["first_conv_distinct_filters"] == 1
    assert measured["first_conv_filters"] == 4
    assert measured["identical_layer_fraction"] == 1.0
    assert measured["initial_last_std"] == 0.0

    he_model = build_model(recipe.replace(initializer="he"), data.input_shape, data.num_classes)
    measured = init_compare.measure(he_model, data, recipe.replace(initializer="he"))
    assert measured["first_conv_distinct_filters"] == 4
    assert measured["identical_layer_fraction"] == 0.0
    assert measured["initial_last_std"] > 0.05


def init_rows(**changes):
    rows = {
        "zeros": {"test_error": 0.9, "test_accuracy": 0.1, "first_conv_distinct_filters": 1,
                  "first_conv_filters": 16, "identical_layer_fraction": 1.0,
                  "initial_last_std": 0.0},
        "small random": {"test_error": 0.9, "test_accuracy": 0.1, "initial_last_std": 2e-11},
        "calibrated": {"test_error": 0.19, "test_accuracy": 0.81, "initial_last_std": 0.07},
        "He": {"test_error": 0.17, "test_accuracy": 0.83, "initial_last_std": 0.4},
    }
    for label, values in changes.items():
        rows[label].update(values)
    return [{"variant": label, **values} for label, values in rows.items()]


def test_init_verdict_supported():
    result = init_compare.verdict(init_rows())
    assert result.status == SUPPORTED
    assert "small random 90.00 %" in result.text
    assert "He 17.00 %" in result.text
    assert "zeros keeps 1 distinct first-layer filter(s) of 16" in result.text


def test_init_verdict_inconclusive_when_small_random_trains():
    rows = init_rows(**{"small random": {"test_error": 0.18, "test_accuracy": 0.82}})
    assert init_compare.verdict(rows).status == INCONCLUSIVE


def test_init_verdict_not_supported_when_zeros_break_symmetry():
    rows = init_rows(zeros={"identical_layer_fraction": 0.5, "first_conv_distinct_filters": 16})
    assert init_compare.verdict(rows).status == NOT_SUPPORTED


def deep_rows(**changes):
    rows = {
        "calibrated": {"test_error": 0.9, "final_val_accuracy": 0.1, "initial_std_ratio": 1e-5},
        "He": {"test_error": 0.28, "final_val_accuracy": 0.71, "initial_std_ratio": 0.5},
        "LSUV": {"test_error": 0.3, "final_val_accuracy": 0.7, "initial_std_ratio": 0.9},
    }
    for label, values in changes.items():
        rows[label].update(values)
    return [{"variant": label, **values} for label, values in rows.items()]


def test_deep_verdict_supported():
    result = deep_init.verdict(deep_rows())
    assert result.status == SUPPORTED
    assert "1e-05 for 1/sqrt(n) and 0.5 for He" in result.text


def test_deep_verdict_inconclusive_when_calibrated_still_trains():
    rows = deep_rows(calibrated={"test_error": 0.5, "final_val_accuracy": 0.5})
    assert deep_init.verdict(rows).status == INCONCLUSIVE


def test_deep_verdict_not_supported_without_gain():
    rows = deep_rows(He={"test_error": 0.9, "final_val_accuracy": 0.1, "initial_std_ratio": 0.5})
    assert deep_init.verdict(rows).status == NOT_SUPPORTED


@pytest.mark.experiment
def test_init_experiment_runs_end_to_end(tmp_path, capsys):
    # A narrower CNN than the experiment's keeps the four runs within the test budget.
    status, out, err = run_experiment_cli("init_compare", tmp_path, capsys,
                                          "--set", "width=4", "--set", "dense_units=16")
    assert status == 0, err
    assert "| small random |" in out
    assert "Verdict:" in out
    folder = tmp_path / "init_compare"
    summary = check_experiment_folder(folder, INIT_VARIANTS)
    rows = {row["variant"]: row for row in summary["rows"]}
    for row in summary["rows"]:
        assert not Recipe.from_file(folder / row["run"] / "recipe.json").batch_norm

    # The zero-initialized model is still all zeros after training: no hidden weight moved.
    zeros = load_model(folder / "zeros")
    for layer in hidden_layers(zeros):
        assert not np.any(unit_weights(layer)), layer.name
    assert rows["zeros"]["identical_layer_fraction"] == 1.0
    assert rows["zeros"]["first_conv_distinct_filters"] == 1
    assert rows["zeros"]["test_accuracy"] == pytest.approx(0.1, abs=0.05)
    assert rows["small random"]["first_conv_distinct_filters"] == 4
    assert rows["small random"]["initial_last_std"] < 1e-6 < rows["He"]["initial_last_std"]


@pytest.mark.experiment
def test_deep_init_experiment_runs_end_to_end(tmp_path, capsys):
    # Three convolutions per block instead of ten, and half the width, keep the three runs
    # within the test budget.
    status, out, err = run_experiment_cli("deep_init", tmp_path, capsys,
                                          "--set", "convs_per_block=3", "--set", "width=4")
    assert status == 0, err
    assert "| LSUV |" in out
    assert "Verdict:" in out
    folder = tmp_path / "deep_init"
    summary = check_experiment_folder(folder, DEEP_VARIANTS)
    rows = {row["variant"]: row for row in summary["rows"]}
    # Nine convolutions and the dense layer, each followed by a ReLU.
    assert len(rows["He"]["initial_std"]) == 10
    assert rows["He"]["initial_layers"][0] == "block1_act1"
    calibrated = np.array(rows["calibrated"]["initial_std"])
    he = np.array(rows["He"]["initial_std"])
    # Both nets draw the same normal numbers, and ReLU and max pooling commute with positive
    # scaling, so He's outputs are those of 1/sqrt(n) times sqrt(2) per layer.
    np.testing.assert_allclose(he / calibrated, np.sqrt(2.0) ** np.arange(1, 11), rtol=1e-3)
    assert rows["calibrated"]["initial_std_ratio"] == pytest.approx(calibrated[-1] / calibrated[0])
    assert Recipe.from_file(folder / "lsuv" / "recipe.json").lsuv
    assert "initial_std.png" in [figure["file"] for figure in summary["figures"]]

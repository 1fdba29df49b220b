"""The pre-processing experiment: noise amplification, verdict, and the run end to end."""

import json
import re

import numpy as np
import pytest

from kerastricks.layers import Whitening
from kerastricks.recipes.augmentation import adapt_preprocessing
from kerastricks.recipes.experiments import (
    INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, experiment_recipe,
)
from kerastricks.recipes.models import build_model
from kerastricks.recipes.preprocessing_compare import (
    noise_amplification, preprocessing_model, verdict,
)
from kerastricks.recipes.spec import Recipe
from tests.recipes.experiment_checks import check_experiment_folder, run_experiment_cli

VARIANTS = ("none", "center", "standardize_pixel", "standardize_channel", "minmax", "pca", "zca")


def correlated_images(count, seed=0):
    """Return 4x4x1 images whose pixels are correlated and have very different variances."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(16, 16)) * np.geomspace(1.0, 0.01, 16)[:, None]
    flat = 0.5 + 0.1 * rng.normal(size=(count, 16)) @ mixing
    return flat.reshape(count, 4, 4, 1).astype("float32")


def test_noise_amplification_is_one_for_a_single_scale():
    images = correlated_images(400)
    gains = noise_amplification(lambda x: 3.0 * (x - 0.5), images, images[:200])
    assert gains["noise_gain"] == pytest.approx(3.0, rel=1e-4)
    assert gains["signal_gain"] == pytest.approx(3.0, rel=1e-4)
    assert gains["noise_amplification"] == pytest.approx(1.0, rel=1e-4)


def test_noise_amplification_of_per_pixel_scaling_matches_numpy():
    images = correlated_images(2000)
    scale = np.linspace(0.5, 8.0, 16).reshape(1, 4, 4, 1)
    gains = noise_amplification(lambda x: x * scale, images, images[:1000], seed=3)

    # Noise of equal variance on every pixel is scaled by the root mean square of the factors.
    # The images' variation is scaled by the factors weighted with each pixel's variance.
    expected_noise = np.sqrt(np.mean(scale**2))
    variance = images.reshape(-1, 16)[:1000].var(axis=0)
    centred = images[:1000] - images.mean(axis=0)
    expected_signal = np.sqrt(np.sum(scale.ravel()**2 * np.mean(centred.reshape(-1, 16)**2, axis=0))
                              / np.sum(np.mean(centred.reshape(-1, 16)**2, axis=0)))
    assert variance.max() / variance.min() > 5
    assert gains["noise_gain"] == pytest.approx(expected_noise, rel=0.02)
    assert gains["signal_gain"] == pytest.approx(expected_signal, rel=1e-4)
    assert gains["noise_amplification"] == pytest.approx(expected_noise / expected_signal, rel=0.02)


def test_noise_amplification_of_zca_matches_its_whitening_matrix():
    images = correlated_images(3000)
    epsilon = 1e-3
    layer = Whitening(method="zca", epsilon=epsilon)
    layer.adapt(images)
    gains = noise_amplification(lambda x: np.asarray(layer(x)), images, images[:1500], seed=1)

    # An independent ZCA matrix from the population covariance.
    flat = images.reshape(len(images), -1).astype("float64")
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(flat, rowvar=False, bias=True))
    matrix = eigenvectors @ np.diag(1.0 / np.sqrt(eigenvalues + epsilon)) @ eigenvectors.T
    centred = flat[:1500] - flat.mean(axis=0)
    expected_noise = np.sqrt(np.trace(matrix @ matrix.T) / 16)
    expected_signal = np.sqrt(np.mean((centred @ matrix) ** 2) / np.mean(centred**2))
    assert gains["noise_gain"] == pytest.approx(expected_noise, rel=0.02)
    assert gains["signal_gain"] == pytest.approx(expected_signal, rel=1e-3)
    assert gains["noise_amplification"] > 2


def test_preprocessing_model_runs_the_front_layers_only():
    images = correlated_images(300)
    recipe = experiment_recipe("probe", dataset="digits", preprocessing="center", width=4)
    model = build_model(recipe, images.shape[1:], 10)
    adapt_preprocessing(model, images)
    front = preprocessing_model(model)
    np.testing.assert_allclose(front(images), images - images.mean(axis=0), atol=1e-5)

    plain = build_model(recipe.replace(preprocessing="none"), images.shape[1:], 10)
    assert preprocessing_model(plain)(images) is images


def rows_with(errors, amplification=None):
    """Return made-up rows with the given test errors, in the experiment's variant order."""
    amplification = amplification or {}
    return [{"variant": name, "test_error": errors[name],
             "noise_amplification": amplification.get(name, 1.0)} for name in VARIANTS]


ERRORS = {"none": 0.12, "center": 0.105, "standardize_pixel": 0.118,
          "standardize_channel": 0.12, "minmax": 0.125, "pca": 0.2, "zca": 0.14}


def test_verdict_supported_when_whitening_loses():
    result = verdict(rows_with(ERRORS, {"zca": 2.25}))
    assert result.status == SUPPORTED
    assert "best centring/normalization 10.50 % (center)" in result.text
    assert "best whitening 14.00 % (zca)" in result.text
    assert "ZCA amplifies white noise 2.2 times" in result.text
    # Two standard errors of a 12 % error on 10,000 test images are 0.65 points.
    assert "differences below 0.6 points are within the noise" in result.text


def test_verdict_not_supported_when_whitening_wins_clearly():
    result = verdict(rows_with({**ERRORS, "zca": 0.09}))
    assert result.status == NOT_SUPPORTED
    assert "best whitening 9.00 % (zca)" in result.text


def test_verdict_inconclusive_within_the_margin():
    result = verdict(rows_with({**ERRORS, "zca": 0.103}))
    assert result.status == INCONCLUSIVE


def test_verdict_inconclusive_when_normalization_ties_none():
    result = verdict(rows_with({**ERRORS, "center": 0.116}))
    assert result.status == INCONCLUSIVE
    assert "do not beat no pre-processing beyond the noise" in result.text


def test_verdict_normalization_worse_than_none():
    errors = {**ERRORS, "none": 0.10, "center": 0.13, "standardize_pixel": 0.13,
              "standardize_channel": 0.13}
    assert verdict(rows_with(errors)).status == NOT_SUPPORTED


@pytest.mark.experiment
def test_preprocessing_experiment_runs_end_to_end(tmp_path, capsys):
    # A narrower CNN than the experiment's keeps the seven runs within the test budget.
    status, out, err = run_experiment_cli("preprocessing_compare", tmp_path, capsys,
                                          "--set", "width=4", "--set", "dense_units=16")
    assert status == 0, err
    assert "| zca |" in out
    assert "Verdict:" in out
    folder = tmp_path / "preprocessing_compare"
    summary = check_experiment_folder(folder, VARIANTS)

    recipes = {row["variant"]: Recipe.from_file(folder / row["run"] / "recipe.json")
               for row in summary["rows"]}
    assert {label: recipe.preprocessing for label, recipe in recipes.items()} == {
        label: label for label in VARIANTS}
    assert not any(recipe.batch_norm for recipe in recipes.values())
    rows = {row["variant"]: row for row in summary["rows"]}
    # One scale factor for all pixels leaves the ratio of noise to content unchanged.
    for label in ("none", "center", "standardize_channel"):
        assert rows[label]["noise_amplification"] == pytest.approx(1.0, rel=1e-3), label
    for label in ("standardize_pixel", "minmax", "zca"):
        assert rows[label]["noise_amplification"] > 1.2, label
    measurements = json.loads((folder / "zca" / "measurements.json").read_text("utf-8"))
    assert measurements["noise_amplification"] == rows["zca"]["noise_amplification"]

    figures = {figure["file"]: figure["caption"] for figure in summary["figures"]}
    assert "epsilon 1e-05 and 0.1" in figures["zca_epsilon.png"]
    # The survey's small epsilon amplifies the noise more than the recipes' 0.1.
    amplifications = re.findall(r"([\d.]+) times with epsilon", figures["zca_epsilon.png"])
    small, large = map(float, amplifications)
    assert small > large > 1

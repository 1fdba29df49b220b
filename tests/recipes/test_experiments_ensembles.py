"""The ensemble experiment end to end, checked against predictions made in the test."""

import json

import keras
import numpy as np
import pytest

from kerastricks.recipes.data import load_dataset
from kerastricks.recipes.ensemble_compare import ENSEMBLES, SINGLE_RUN_METHODS, snapshot_cycles
from kerastricks.recipes.spec import Recipe
from tests.recipes.experiment_checks import check_experiment_folder, run_experiment_cli


@pytest.mark.parametrize("epochs, cycles", [(1, 1), (4, 2), (5, 1), (6, 3), (8, 4)])
def test_snapshot_cycles_divide_epochs(epochs, cycles):
    assert snapshot_cycles(epochs) == cycles


@pytest.mark.experiment
def test_ensemble_averages_member_probabilities(tmp_path, capsys):
    status, out, err = run_experiment_cli("ensemble_compare", tmp_path, capsys)
    assert status == 0, err
    folder = tmp_path / "ensemble_compare"
    summary = check_experiment_folder(
        folder, ["one model", *ENSEMBLES, *SINGLE_RUN_METHODS])

    seeds = [folder / "members" / f"seed-{i}" for i in range(3)]
    assert [Recipe.from_file(run / "recipe.json").seed for run in seeds] == [0, 1, 2]
    data = load_dataset("fashion_mnist", subset=600, seed=0)
    probabilities = np.mean(
        [keras.saving.load_model(run / "model.keras").predict(data.x_test, verbose=0)
         for run in seeds], axis=0)
    expected = np.mean(np.argmax(probabilities, axis=-1) == data.y_test)
    saved = json.loads((folder / "3-seeds-averaged" / "metrics.json").read_text("utf-8"))
    assert saved["test_accuracy"] == pytest.approx(expected, abs=1e-9)
    # An ensemble's training time is its members' time; the experiment counts each run once.
    member_seconds = [json.loads((run / "metrics.json").read_text("utf-8"))["train_seconds"]
                      for run in seeds]
    assert saved["train_seconds"] == pytest.approx(sum(member_seconds), abs=1e-3)
    runs = sorted((folder / "members").iterdir())
    total = sum(json.loads((run / "metrics.json").read_text("utf-8"))["train_seconds"]
                for run in runs)
    assert summary["train_seconds"] == pytest.approx(total, abs=0.1)

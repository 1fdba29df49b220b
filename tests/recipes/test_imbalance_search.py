"""Tests that `kerastricks search` trains its trials with the recipe's class-imbalance fields."""

import json
from pathlib import Path

import numpy as np
import pytest

from kerastricks.recipes.data import load_dataset
from tests.recipes.cli_runner import run_cli

SUBSET = 300
TINY = ["--subset", str(SUBSET), "--set", "width=4", "--set", "depth=1", "--set", "dense_units=0",
        "--set", "convs_per_block=1", "--set", "diagnostics=false", "--quiet"]


def search(tmp_path, capsys, flags):
    """Run a one-trial grid search of 4 epochs; return the trial's recorded metric values."""
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: [0.05]\n")
    project = tmp_path / "project"
    status, _, err = run_cli(
        ["search", "--space", str(space), "--tuner", "grid", "--max-epochs", "4",
         "--project", str(project), *TINY, *flags], capsys)
    assert status == 0, err
    (trial_file,) = Path(project).glob("trial_*/trial.json")
    metrics = json.loads(trial_file.read_text())["metrics"]["metrics"]
    return {name: [obs["value"][0] for obs in entry["observations"]]
            for name, entry in metrics.items()}


def test_sampling_and_imbalance_reach_trials(tmp_path, capsys):
    # Every training image drawn from class 0, so the model predicts class 0; the validation
    # split is cut like the training split, so val_accuracy is class 0's share of the cut split.
    ratios = {c: 0.2 for c in range(1, 10)}
    imbalance = "{" + ", ".join(f"{c}: {ratio}" for c, ratio in ratios.items()) + "}"
    flags = ["--set", f"imbalance={imbalance}", "--set", "sampling={0: 1.0}"]
    observations = search(tmp_path, capsys, flags)

    data = load_dataset("digits", subset=SUBSET, seed=0)
    counts = np.bincount(data.y_validation, minlength=10)
    # make_imbalanced keeps round(ratio * n) images of each cut class, at least one.
    kept_counts = [counts[0]] + [max(1, round(0.2 * n)) for n in counts[1:]]
    expected = kept_counts[0] / sum(kept_counts)
    assert expected > counts[0] / counts.sum() + 0.05
    assert observations["val_accuracy"][-1] == pytest.approx(expected, abs=1e-6)


def test_class_weight_reaches_trials(tmp_path, capsys):
    # Zero weight on every class makes every weighted training loss exactly 0.
    zero_weights = "{" + ", ".join(f"{c}: 0" for c in range(10)) + "}"
    observations = search(tmp_path, capsys, ["--set", f"class_weight={zero_weights}"])
    # keras-tuner records the best epoch's value. A cross-entropy without weights is above 0
    # unless every prediction is certain.
    assert observations["loss"] == [0.0]
    assert observations["val_loss"][-1] > 0.0

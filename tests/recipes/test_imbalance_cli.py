"""Tests for the class-imbalance fields on the command line: counts, history, messages."""

import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from kerastricks.recipes.data import load_dataset
from kerastricks.recipes.imbalance import class_balanced_sampler
from tests.callbacks.events import load_events, scalar_series
from tests.recipes.cli_runner import run_cli

TINY_FLAGS = ["--epochs", "2", "--no-diagnostics", "--quiet", "--set", "width=4",
              "--set", "depth=1", "--set", "dense_units=8"]


def test_start_line_and_history_after_cut(tmp_path, capsys):
    status, out, err = run_cli(
        ["run", "baseline", "--run-dir", str(tmp_path / "run"), *TINY_FLAGS,
         "--set", "imbalance={0: 0.1, 3: 0.1}", "--set", "minority_crops=2"], capsys)
    assert status == 0, err

    # Reference counts: classes 0 and 3 keep round(0.1 * n) images (at least one), and each
    # kept image of those classes, the minority classes at threshold 0.5, gives two crops.
    data = load_dataset("digits")
    expected = {}
    for split, labels in (("train", data.y_train), ("validation", data.y_validation)):
        counts = np.bincount(labels, minlength=10)
        kept = counts.copy()
        kept[[0, 3]] = [max(1, round(0.1 * counts[c])) for c in (0, 3)]
        expected[split] = int(kept.sum())
    expected["train"] += 2 * int(sum(max(1, round(0.1 * n)) for n in
                                     np.bincount(data.y_train, minlength=10)[[0, 3]]))
    assert (f"Training baseline on digits: {expected['train']} training, "
            f"{expected['validation']} validation, {len(data.y_test)} test images" in out)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_images"] == expected["train"]
    assert metrics["validation_images"] == expected["validation"]
    assert metrics["finetune_strategy_used"] is None

    # Every logged value of each epoch is kept, ClassMetrics' included, equal to TensorBoard's.
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    events = load_events(tmp_path / "run" / "validation")
    for key, tag in (("val_balanced_accuracy", "epoch_balanced_accuracy"),
                     ("val_macro_f1", "epoch_macro_f1")):
        values = [entry[key] for entry in history]
        np.testing.assert_allclose(values, scalar_series(events, tag)[1], rtol=1e-6)
        assert metrics["history"][key] == values
    assert 0.0 <= history[-1]["val_balanced_accuracy"] <= 1.0


@pytest.mark.parametrize("overrides, expected", [
    (["minority_crops=2"],
     "minority_threshold selects no class for minority_crops: a minority class has fewer than "
     "minority_threshold x the images of the largest class"),
    (["sampling={0: 0.5, 1: 0.4}"],
     "The probabilities of the target class distribution sampling must sum to 1, but they "
     "sum to 0.9. Divide each value by the sum. Received: sampling={'0': 0.5, '1': 0.4}."),
    (["class_weight={12: 2.0}"],
     "class_weight names an unknown class '12'. Use a class name from"),
    (["imbalance={cat: 0.1}"], "imbalance names an unknown class 'cat'."),
    (["sampling={cat: 1.0}"], "sampling names an unknown class 'cat'."),
])
def test_class_mistakes_before_start_line(tmp_path, capsys, overrides, expected):
    args = ["run", "baseline", "--logdir", str(tmp_path / "runs"), *TINY_FLAGS]
    for override in overrides:
        args += ["--set", override]
    status, out, err = run_cli(args, capsys)
    assert status == 2
    assert expected in err
    assert "Received: " in err
    assert "stage" not in err
    assert len(err.strip().splitlines()) == 1
    assert "Training" not in out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unknown_class_message_shows_mapping(capsys):
    status, _, err = run_cli(["run", "baseline", "--no-diagnostics",
                              "--set", "class_weight={12: 2.0, 1: 3.0}"], capsys)
    assert status == 2
    assert err.strip().endswith("Received: class_weight={'12': 2.0, '1': 3.0}.")


def test_sampler_rejects_balanced_string():
    data = load_dataset("digits", subset=100)
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
    with pytest.raises(TypeError, match=r"distribution must be a probability vector .*"
                                        r"target_distribution\(distribution, class_names\)\. "
                                        r"Received: distribution='balanced'"):
        class_balanced_sampler(dataset, "balanced")

"""The all-tricks recipe trains end to end on real Fashion-MNIST, alone and as an ensemble."""

import json

import keras
import numpy as np
import pytest

from kerastricks.recipes.all_tricks import RECIPE
from kerastricks.recipes.registry import get_recipe
from tests.recipes.cli_runner import run_cli

pytestmark = pytest.mark.slow

SMALL = ["--subset", "1200", "--epochs", "2", "--quiet"]


def test_registered_under_its_name():
    assert get_recipe("all_tricks") is RECIPE
    assert RECIPE.dataset == "fashion_mnist"
    assert RECIPE.validation_split > 0


def test_trains_with_every_trick_in_place(fashion_mnist_folder, tmp_path, capsys):
    run_dir = tmp_path / "run"
    status, _, err = run_cli(["run", "all_tricks", *SMALL, "--run-dir", str(run_dir)], capsys)
    assert status == 0, err

    saved = json.loads((run_dir / "recipe.json").read_text())
    expected = {**RECIPE.to_dict(), "subset": 1200, "epochs": 2}
    assert saved == json.loads(json.dumps(expected))

    model = keras.models.load_model(run_dir / "model.keras")
    filters = [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert filters == [32, 32, 64, 64, 128, 128]
    assert model.get_layer("dropout").rate == RECIPE.dropout

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_images"] == 1080
    # 1,080 training images for 2 epochs: far from the full recipe, far above chance (0.1).
    assert metrics["test_accuracy"] > 0.4, metrics["test_accuracy"]

    # One-cycle ends at peak / (div_factor * final_div_factor) = 0.05 / 2.5e5.
    final_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    np.testing.assert_allclose(final_rate, 0.05 / 2.5e5, rtol=1e-3)


def test_seed_ensemble_with_flipped_views(fashion_mnist_folder, tmp_path, capsys):
    status, _, err = run_cli(
        ["ensemble", "all_tricks", "--seeds", "2", "--views", "flip", *SMALL,
         "--logdir", str(tmp_path / "runs"), "--output", str(tmp_path / "report")], capsys)
    assert status == 0, err
    rows = json.loads((tmp_path / "report" / "ensemble.json").read_text())["rows"]
    members = [row["accuracy"] for row in rows if row["kind"] == "member"]
    assert len(members) == 2
    names = [row["name"] for row in rows]
    assert "average over flip views" in names

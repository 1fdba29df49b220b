"""Tests for the fine-tuning recipe fields, through `train()` and the `kerastricks` command."""

import json

import keras
import numpy as np
import pytest

from kerastricks.recipes.data import load_dataset
from kerastricks.recipes.models import build_model
from kerastricks.recipes.spec import Recipe, RecipeError
from kerastricks.recipes.training import train
from tests.recipes.cli_runner import run_cli

SUBSET = 300
# A tiny recipe without diagnostics; the fine-tuning fields are added per test.
TINY = dict(dataset="digits", subset=SUBSET, epochs=2, learning_rate=0.01, diagnostics=False)
TINY_FLAGS = ["--subset", str(SUBSET), "--epochs", "2", "--set", "learning_rate=0.01",
              "--set", "diagnostics=false", "--quiet"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", subset=SUBSET, seed=0)


@pytest.fixture(scope="module")
def base_file(tmp_path_factory):
    """A recipe CNN for 8x8 digits (groups block1, block2, dense, classifier), saved."""
    recipe = Recipe(width=4, depth=2, convs_per_block=1, dense_units=8, seed=0)
    model = build_model(recipe, (8, 8, 1), 10)
    path = tmp_path_factory.mktemp("base") / "base.keras"
    model.save(path)
    return path


def weights_by_layer(model):
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers}


class TestTrain:
    def test_similar_small_keeps_base_weights(self, digits, base_file, tmp_path):
        recipe = Recipe(**TINY, finetune_from=str(base_file), finetune_strategy="similar_small")
        metrics = train(recipe, digits, tmp_path / "run", verbose=0)
        trained = keras.saving.load_model(tmp_path / "run" / "model.keras")
        base = weights_by_layer(keras.saving.load_model(base_file))

        assert "finetune_classifier" in [layer.name for layer in trained.layers]
        assert "classifier" not in [layer.name for layer in trained.layers]
        # Every base layer, batch normalization included, ends bit-identical.
        for layer in trained.layers:
            if layer.name.startswith("finetune_"):
                continue
            for value, expected in zip(layer.get_weights(), base[layer.name]):
                np.testing.assert_array_equal(value, expected)
        # The zero-initialized classifier trained.
        assert np.any(trained.get_layer("finetune_classifier").get_weights()[0] != 0)
        assert metrics["test_accuracy"] > 0.1

    def test_run_folder_as_base(self, digits, base_file, tmp_path):
        run_folder = tmp_path / "pretrained"
        run_folder.mkdir()
        keras.saving.load_model(base_file).save(run_folder / "model.keras")
        recipe = Recipe(**TINY, finetune_from=str(run_folder), finetune_strategy="similar_large",
                        finetune_trainable_groups=1)
        train(recipe, digits, tmp_path / "run", verbose=0)
        trained = keras.saving.load_model(tmp_path / "run" / "model.keras")
        base = keras.saving.load_model(base_file)

        # similar_large with one group trains the dense layer and leaves the convolutions.
        np.testing.assert_array_equal(trained.get_layer("block1_conv1").kernel.numpy(),
                                      base.get_layer("block1_conv1").kernel.numpy())
        assert not np.array_equal(trained.get_layer("dense").kernel.numpy(),
                                  base.get_layer("dense").kernel.numpy())

    def test_different_large_lowers_learning_rate(self, digits, base_file, tmp_path):
        recipe = Recipe(**TINY, finetune_from=str(base_file), finetune_strategy="different_large")
        train(recipe, digits, tmp_path / "run", verbose=0)
        trained = keras.saving.load_model(tmp_path / "run" / "model.keras")
        # learning_rate=0.01 times the factor 0.1 of different_large.
        assert float(trained.optimizer.learning_rate) == pytest.approx(0.001)

    def test_gradual_unfreezing_opens_groups(self, digits, base_file, tmp_path):
        recipe = Recipe(**TINY, finetune_from=str(base_file), finetune_strategy="similar_small",
                        gradual_unfreezing=1)
        train(recipe, digits, tmp_path / "run", verbose=0)
        trained = keras.saving.load_model(tmp_path / "run" / "model.keras")
        base = keras.saving.load_model(base_file)

        # Two epochs: the dense group opens at epoch 1, the convolution blocks stay frozen.
        assert not np.array_equal(trained.get_layer("dense").kernel.numpy(),
                                  base.get_layer("dense").kernel.numpy())
        np.testing.assert_array_equal(trained.get_layer("block2_conv1").kernel.numpy(),
                                      base.get_layer("block2_conv1").kernel.numpy())

    def test_discriminative_lr_per_group(self, digits, base_file, tmp_path):
        recipe = Recipe(**TINY, finetune_from=str(base_file), finetune_strategy="similar_large",
                        finetune_trainable_groups=3, discriminative_lr=0.5)
        train(recipe, digits, tmp_path / "run", verbose=0)
        trained = keras.saving.load_model(tmp_path / "run" / "model.keras")
        rates = sorted({round(float(sub.learning_rate), 9)
                        for sub in trained.optimizer.optimizers})
        # Groups finetune, dense, block2 and block1 at 0.01 / 2**k; the default sub-optimizer
        # of the map has the top rate.
        assert rates == pytest.approx(sorted(0.01 * 0.5**k for k in range(4)))

    def test_auto_counts_training_images(self, digits, base_file, tmp_path):
        recipe = Recipe(**TINY, finetune_from=str(base_file), finetune_similar=False)
        train(recipe, digits, tmp_path / "run", verbose=0)
        trained = keras.saving.load_model(tmp_path / "run" / "model.keras")
        # Fewer than 5,000 images and different data: a classifier on the middle group.
        assert trained.name.endswith("different_small")


class TestBadInput:
    def test_missing_file(self, digits, tmp_path):
        recipe = Recipe(**TINY, finetune_from=str(tmp_path / "none.keras"))
        with pytest.raises(RecipeError, match=r"Pre-trained model not found: .*none\.keras"):
            train(recipe, digits, tmp_path / "run", verbose=0)

    def test_not_a_model(self, digits, tmp_path):
        path = tmp_path / "broken.keras"
        path.write_text("not a zip file")
        recipe = Recipe(**TINY, finetune_from=str(path))
        with pytest.raises(RecipeError, match="could not be loaded as a Keras model"):
            train(recipe, digits, tmp_path / "run", verbose=0)

    def test_unknown_layer(self, digits, base_file, tmp_path):
        recipe = Recipe(**TINY, finetune_from=str(base_file), finetune_feature_layer="block9")
        with pytest.raises(RecipeError, match="Layer 'block9' not found"):
            train(recipe, digits, tmp_path / "run", verbose=0)

    def test_input_shape_does_not_fit(self, digits, tmp_path):
        base = build_model(Recipe(width=4, depth=1, dense_units=0), (16, 16, 1), 10)
        base.save(tmp_path / "big.keras")
        recipe = Recipe(**TINY, finetune_from=str(tmp_path / "big.keras"))
        with pytest.raises(RecipeError, match=r"\(16, 16, 1\).*\(8, 8, 1\).*A recipe cannot "
                                              r"resize images"):
            train(recipe, digits, tmp_path / "run", verbose=0)

    @pytest.mark.parametrize("fields, message", [
        ({"finetune_strategy": "tiny"}, "Unknown fine-tuning strategy"),
        ({"gradual_unfreezing": 1}, "'gradual_unfreezing' applies only when fine-tuning"),
        ({"finetune_batch_norm": True}, "'finetune_batch_norm' applies only when fine-tuning"),
        ({"finetune_from": "m.keras", "preprocessing": "center"}, "preprocessing='none'"),
        ({"finetune_from": "m.keras", "discriminative_lr": 0.5, "ema": True},
         "which ema does not support"),
        ({"finetune_from": "m.keras", "discriminative_lr": 0.5},
         "which diagnostics does not support"),
        ({"finetune_from": "m.keras", "discriminative_lr": 1.5},
         "'discriminative_lr' must be > 0.0 and <= 1.0"),
        ({"finetune_from": "m.keras", "finetune_trainable_groups": 0},
         "'finetune_trainable_groups' must be >= 1"),
    ])
    def test_invalid_fields(self, fields, message):
        with pytest.raises(RecipeError, match=message):
            Recipe(**fields)


class TestCommandLine:
    def test_run_with_set(self, base_file, tmp_path, capsys):
        status, out, err = run_cli(
            ["run", "baseline", "--logdir", str(tmp_path / "runs"), *TINY_FLAGS,
             "--set", f"finetune_from={base_file}", "--set", "finetune_strategy=similar_small"],
            capsys)
        assert status == 0, err
        (run_dir,) = (tmp_path / "runs").iterdir()
        saved = json.loads((run_dir / "recipe.json").read_text())
        assert saved["finetune_from"] == str(base_file)
        trained = keras.saving.load_model(run_dir / "model.keras")
        assert trained.name.endswith("similar_small")

    def test_missing_file_exits_2(self, tmp_path, capsys):
        missing = tmp_path / "missing.keras"
        status, _, err = run_cli(
            ["run", "baseline", "--logdir", str(tmp_path / "runs"), *TINY_FLAGS,
             "--set", f"finetune_from={missing}"], capsys)
        assert status == 2
        assert f"Pre-trained model not found: {missing}" in err
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


class TestCommandLineReport:
    def test_no_diagnostics_allows_discriminative_lr(self, base_file, tmp_path, capsys):
        status, _, err = run_cli(
            ["run", "baseline", "--run-dir", str(tmp_path / "run"), "--subset", str(SUBSET),
             "--epochs", "1", "--quiet", "--no-diagnostics",
             "--set", f"finetune_from={base_file}", "--set", "finetune_strategy=different_large",
             "--set", "discriminative_lr=0.5"], capsys)
        assert status == 0, err
        saved = json.loads((tmp_path / "run" / "recipe.json").read_text())
        assert saved["diagnostics"] is False
        assert saved["discriminative_lr"] == 0.5

    def test_no_diagnostics_and_set_conflict(self, capsys):
        status, _, err = run_cli(["run", "baseline", "--no-diagnostics",
                                  "--set", "diagnostics=true"], capsys)
        assert status == 2
        assert "--no-diagnostics and --set diagnostics=... both set diagnostics" in err

    def test_start_line_and_metrics_name_strategy(self, base_file, tmp_path, capsys,
                                                  monkeypatch):
        monkeypatch.chdir(base_file.parent)
        status, out, err = run_cli(
            ["run", "baseline", "--run-dir", str(tmp_path / "run"), *TINY_FLAGS,
             "--set", f"finetune_from={base_file.name}"], capsys)
        assert status == 0, err
        # auto on fewer than 5,000 similar images: similar_small.
        assert (f"Training baseline on digits (fine-tuning {base_file}, strategy "
                f"similar_small): " in out)
        metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
        assert metrics["finetune_strategy_used"] == "similar_small"

        # recipe.json keeps the absolute path, so it reruns from another folder.
        saved = json.loads((tmp_path / "run" / "recipe.json").read_text())
        assert saved["finetune_from"] == str(base_file)
        monkeypatch.chdir(tmp_path)
        status, _, err = run_cli(
            ["run", str(tmp_path / "run" / "recipe.json"), "--run-dir", str(tmp_path / "again"),
             "--epochs", "1", "--quiet"], capsys)
        assert status == 0, err

    def test_auto_strategy_recorded(self, digits, base_file, tmp_path):
        recipe = Recipe(**TINY, finetune_from=str(base_file), finetune_similar=False)
        metrics = train(recipe, digits, tmp_path / "run", verbose=0)
        assert metrics["finetune_strategy_used"] == "different_small"


class TestMessages:
    @pytest.mark.parametrize("make_base, expected", [
        ("missing", "Pre-trained model not found: "),
        ("not_a_model", "could not be loaded as a Keras model: "),
        ("unknown_layer", "Layer 'block9' not found in the base model"),
        ("big", "A recipe cannot resize images, so fine-tune on a data set with images of "
                "shape (16, 16, 1), or build the model in Python with build_finetune_model"),
    ])
    def test_caught_before_start_line(self, base_file, tmp_path, capsys, make_base, expected):
        extra = []
        path = tmp_path / "model.keras"
        if make_base == "not_a_model":
            path.write_text("not a zip file")
        elif make_base == "unknown_layer":
            path = base_file
            extra = ["--set", "finetune_feature_layer=block9"]
        elif make_base == "big":
            build_model(Recipe(width=4, depth=1, dense_units=0), (16, 16, 1), 10).save(path)
        status, out, err = run_cli(
            ["run", "baseline", "--logdir", str(tmp_path / "runs"), *TINY_FLAGS,
             "--set", f"finetune_from={path}", *extra], capsys)
        assert status == 2
        assert expected in err
        assert len(err.strip().splitlines()) == 1
        # Short apart from the paths, whose length depends on the test folder.
        assert len(err.replace(str(path), "PATH")) < 350
        if make_base == "not_a_model":
            # Only the first sentence of Keras's message.
            cause = err.split("as a Keras model: ", 1)[1].split(". Give a file written by", 1)[0]
            assert ". " not in cause
        assert "Training" not in out
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

    def test_gradual_unfreezing_with_discriminative_lr(self):
        with pytest.raises(RecipeError, match=r"gradual_unfreezing and discriminative_lr cannot "
                                              r"be combined: gradual unfreezing replaces the "
                                              r"model's optimizer"):
            Recipe(finetune_from="m.keras", gradual_unfreezing=1, discriminative_lr=0.5,
                   diagnostics=False)

    @pytest.mark.parametrize("base_shape, data_shape, advice", [
        ((8, 8, 1), (16, 16, 3), "In a tf.data map, resize them with keras.layers.Resizing(8, 8) "
                                 "and average their channels into one with keras.ops.mean("
                                 "images, axis=-1, keepdims=True), or tf.image.rgb_to_grayscale"),
        ((8, 8, 3), (8, 8, 1), "In a tf.data map, repeat their one channel 3 times with "
                               "keras.ops.repeat(images, 3, axis=-1)."),
        ((None, None, 3), (8, 8, 4), "In a tf.data map, give them 3 channels."),
        ((8, 8, 1), (16, 16, 1), "In a tf.data map, resize them with "
                                 "keras.layers.Resizing(8, 8)."),
    ])
    def test_python_shape_advice(self, base_shape, data_shape, advice):
        from kerastricks.recipes.finetune import check_input_fits

        base = keras.Sequential([keras.Input(base_shape), keras.layers.Conv2D(2, 3)])
        with pytest.raises(ValueError) as raised:
            check_input_fits(base, data_shape)
        message = str(raised.value)
        assert advice in message
        assert "1 channels" not in message

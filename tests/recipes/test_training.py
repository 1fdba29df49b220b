import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from kerastricks.recipes import Recipe, load_dataset, train

TINY = dict(width=8, depth=2, convs_per_block=1, dense_units=16, epochs=1, batch_size=32)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "digits"
    recipe = Recipe(name="tiny", **TINY).replace(epochs=2)
    data = load_dataset("digits", batch_size=recipe.batch_size)
    metrics = train(recipe, data, run_dir, verbose=0)
    return recipe, data, run_dir, metrics


def _scalar_tags(folder):
    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator, set(accumulator.Tags()["tensors"]) | set(accumulator.Tags()["scalars"])


def test_run_folder_contents(digits_run):
    recipe, _, run_dir, metrics = digits_run
    for name in ("recipe.json", "metrics.json", "model.keras", "status.json"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "status.json").read_text()) == {"state": "complete"}
    assert Recipe.from_file(run_dir / "recipe.json") == recipe
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "train_seconds", "epochs", "per_class_accuracy"):
        assert key in saved, key
    assert saved["epochs"] == 2


def test_metrics_agree_with_evaluate(digits_run):
    _, data, run_dir, metrics = digits_run
    model = keras.saving.load_model(run_dir / "model.keras")
    loss, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-5)


def test_per_class_accuracy_is_recall(digits_run):
    _, data, run_dir, metrics = digits_run
    model = keras.saving.load_model(run_dir / "model.keras")
    predicted = np.argmax(model.predict(data.x_test, verbose=0), axis=1)
    for index, name in enumerate(data.class_names):
        mask = data.y_test == index
        assert metrics["per_class_accuracy"][name] == pytest.approx(np.mean(predicted[mask] == index))


def test_model_loads_in_fresh_process(digits_run, tmp_path):
    _, data, run_dir, _ = digits_run
    model = keras.saving.load_model(run_dir / "model.keras")
    np.save(tmp_path / "inputs.npy", data.x_test[:32])
    expected = model.predict(data.x_test[:32], verbose=0)
    script = (
        "import sys, numpy as np, keras\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(run_dir / "model.keras"), str(tmp_path / "inputs.npy"),
         str(tmp_path / "outputs.npy")],
        check=True, capture_output=True,
    )
    np.testing.assert_allclose(np.load(tmp_path / "outputs.npy"), expected, rtol=1e-5, atol=1e-6)


def test_event_files_hold_train_and_validation_scalars(digits_run):
    _, _, run_dir, metrics = digits_run
    for split, prefix in (("train", ""), ("validation", "val_")):
        accumulator, tags = _scalar_tags(run_dir / split)
        assert {"epoch_loss", "epoch_accuracy"} <= tags, tags
        losses = [float(event.tensor_proto.float_val[0]) if event.tensor_proto.float_val
                  else float(np.frombuffer(event.tensor_proto.tensor_content, np.float32)[0])
                  for event in accumulator.Tensors("epoch_loss")]
        np.testing.assert_allclose(losses, metrics["history"][f"{prefix}loss"], rtol=1e-5)


def test_fashion_mnist_subset(fashion_mnist_folder, tmp_path):
    recipe = Recipe(name="tiny", dataset="fashion_mnist", subset=1200, **TINY).replace(
        width=16, epochs=2, learning_rate=3e-3
    )
    data = load_dataset("fashion_mnist", subset=1200, batch_size=32)
    metrics = train(recipe, data, tmp_path / "run", verbose=0)
    assert metrics["dataset"] == "fashion_mnist"
    assert metrics["test_images"] == 200
    # Ten balanced classes: two epochs of a small CNN must beat chance (0.1) clearly.
    assert metrics["test_accuracy"] > 0.25


def test_failed_run_is_marked(tmp_path):
    data = load_dataset("digits", batch_size=32)
    data.train = data.train.map(lambda images, labels: (images, labels + 100))
    with pytest.raises(Exception):
        train(Recipe(**TINY), data, tmp_path / "run", verbose=0)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed"
    assert not (tmp_path / "run" / "metrics.json").exists()

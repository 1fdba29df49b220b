"""Tests of `TrainingFigures` and of the whole diagnostics set as TensorBoard shows it."""

import io
import json
import socket
import subprocess
import sys
import time
import urllib.request

import keras
import numpy as np
import pytest
from PIL import Image

from kerastricks.callbacks import (
    ActivationStatistics,
    RunDiagnosis,
    TrainingFigures,
    UpdateHealth,
)
from kerastricks.callbacks.training_figures import FIGURES
from tests.callbacks.conftest import make_cnn
from tests.callbacks.events import image_pngs, load_events, tags_by_plugin

SIZES = {"loss": (640, 400), "accuracy_gap": (640, 400), "learning_rate": (640, 400),
         "confusion_matrix": (640, 640), "filters": (640, 640)}


@pytest.fixture(scope="module")
def trained_run(digit_images, tmp_path_factory):
    """A CNN trained for 3 epochs with all diagnostics and Keras's TensorBoard callback."""
    x, y = digit_images
    run_dir = tmp_path_factory.mktemp("run")
    validation = (x[-300:], y[-300:])
    model = make_cnn()
    activations = ActivationStatistics(run_dir, x[-128:])
    updates = UpdateHealth(run_dir, (x[-128:], y[-128:]))
    figures = TrainingFigures(run_dir, validation_data=validation, class_names=list("0123456789"))
    diagnosis = RunDiagnosis(activations, updates, path=run_dir / "diagnosis.txt")
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, rate: 1e-3 * 0.5**epoch)
    model.fit(x[:1200], y[:1200], validation_data=validation, epochs=3, batch_size=32, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(str(run_dir), histogram_freq=1),
                         schedule, activations, updates, figures, diagnosis])
    return run_dir, model, figures, diagnosis


def test_pngs_have_stated_size(trained_run):
    run_dir = trained_run[0]
    for name in FIGURES:
        path = run_dir / "figures" / f"{name}.png"
        assert Image.open(path).size == SIZES[name], name


def test_image_summaries_decode_to_stated_size(trained_run):
    run_dir = trained_run[0]
    events = load_events(run_dir / "diagnostics")
    assert tags_by_plugin(events)["images"] == {f"figures/{name}" for name in FIGURES}
    for name in FIGURES:
        pngs = image_pngs(events, f"figures/{name}")
        assert len(pngs) == 1
        image = Image.open(io.BytesIO(pngs[0]))
        assert image.size == SIZES[name], name
        assert image.format == "PNG"
        assert events.Tensors(f"figures/{name}")[0].step == 2


def test_learning_rate_is_recorded_per_epoch(trained_run):
    figures = trained_run[2]
    np.testing.assert_allclose(figures.learning_rates, [1e-3, 5e-4, 2.5e-4], rtol=1e-6)


def test_history_matches_keras_history(trained_run):
    model, figures = trained_run[1], trained_run[2]
    for key, values in model.history.history.items():
        np.testing.assert_allclose(figures.history[key], values, rtol=1e-6)


def test_diagnosis_is_saved(trained_run):
    run_dir, diagnosis = trained_run[0], trained_run[3]
    assert diagnosis.text.startswith("Diagnosis:")
    assert (run_dir / "diagnosis.txt").read_text().strip() == diagnosis.text


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_tensorboard_server_lists_tags(trained_run):
    run_dir = trained_run[0]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(run_dir),
         "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/data/plugin"
    try:
        deadline = time.monotonic() + 60
        scalars = {}
        while time.monotonic() < deadline:
            assert server.poll() is None, "tensorboard exited early"
            try:
                scalars = get_json(f"{base}/scalars/tags")
            except OSError:
                scalars = {}
            if "diagnostics" in scalars and "train" in scalars:
                break
            time.sleep(0.5)
        images = get_json(f"{base}/images/tags")
        histograms = get_json(f"{base}/histograms/tags")
    finally:
        server.terminate()
        server.wait(timeout=10)

    assert "activations/relu/dead_fraction" in scalars["diagnostics"]
    assert "activations/tanh/saturation_fraction" in scalars["diagnostics"]
    assert "gradients/conv/norm" in scalars["diagnostics"]
    assert "updates/conv/update_ratio" in scalars["diagnostics"]
    assert "epoch_loss" in scalars["train"]
    assert set(images["diagnostics"]) == {f"figures/{name}" for name in FIGURES}
    assert {"activations/relu", "activations/tanh"} <= set(histograms["diagnostics"])


class TestBadInput:
    def test_unknown_figure(self, tmp_path):
        with pytest.raises(ValueError, match="`figures` must be a list of names"):
            TrainingFigures(tmp_path, figures=["loss", "roc"])

    def test_non_positive_interval(self, tmp_path):
        with pytest.raises(ValueError, match="every_n_epochs"):
            TrainingFigures(tmp_path, every_n_epochs=0)

    def test_validation_data_of_wrong_shape(self, digit_images, tmp_path):
        x, y = digit_images
        model = make_cnn()
        callback = TrainingFigures(tmp_path, validation_data=(x[:10, :4], y[:10]))
        with pytest.raises(ValueError, match="`validation_data` do not match"):
            model.fit(x[:32], y[:32], epochs=1, verbose=0, callbacks=[callback])

    def test_unwritable_png_dir(self, tmp_path):
        blocker = tmp_path / "file"
        blocker.write_text("")
        with pytest.raises(ValueError, match="png_dir"):
            TrainingFigures(tmp_path, png_dir=blocker / "figures")

    def test_missing_data_skips_figures(self, digits, tmp_path):
        x, y = digits
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x[:64], y[:64], epochs=1, verbose=0,
                  callbacks=[TrainingFigures(tmp_path, every_n_epochs=1)])
        assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
            "learning_rate.png", "loss.png"]

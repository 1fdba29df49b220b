import math

import keras
import numpy as np
import pytest

from kerastricks.callbacks import SnapshotEnsemble, cyclic_cosine_learning_rate
from tests.callbacks.conftest import make_cnn


def _paper_schedule(t, total_steps, cycles, alpha0):
    """Equation 2 of Huang et al. (2017), with the iteration t counted from 1."""
    cycle_length = math.ceil(total_steps / cycles)
    return alpha0 / 2 * (math.cos(math.pi * ((t - 1) % cycle_length) / cycle_length) + 1)


class LearningRateRecorder(keras.callbacks.Callback):
    """Records the optimizer's learning rate as each batch starts."""

    def on_train_begin(self, logs=None):
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_schedule_matches_paper_formula():
    steps = np.arange(60)
    ours = cyclic_cosine_learning_rate(steps, cycle_steps=20, max_learning_rate=0.2)
    reference = [_paper_schedule(step + 1, total_steps=60, cycles=3, alpha0=0.2) for step in steps]
    np.testing.assert_allclose(ours, reference, rtol=1e-12)


def test_schedule_minimum_learning_rate():
    rates = cyclic_cosine_learning_rate(np.arange(10), 10, max_learning_rate=0.1, min_learning_rate=0.01)
    assert rates[0] == pytest.approx(0.1)
    assert rates[5] == pytest.approx(0.055)
    assert rates.min() > 0.01


def test_snapshot_fit_restarts_and_saves(digit_images, tmp_path):
    x, y = digit_images[0][:200], digit_images[1][:200]
    model = make_cnn()
    snapshots = SnapshotEnsemble(cycles=3, epochs=6, max_learning_rate=0.05,
                                 directory=tmp_path / "snapshots")
    recorder = LearningRateRecorder()
    model.fit(x, y, batch_size=50, epochs=6, callbacks=[snapshots, recorder], verbose=0)

    # 200 images in batches of 50: 4 steps per epoch, 8 per cycle, 24 in all.
    assert len(recorder.rates) == 24
    np.testing.assert_allclose(recorder.rates, snapshots.learning_rates, rtol=1e-6)
    restarts = [step for step, rate in enumerate(recorder.rates) if rate == pytest.approx(0.05)]
    assert restarts == [0, 8, 16]
    for start in restarts:
        cycle = np.array(recorder.rates[start : start + 8])
        assert np.all(np.diff(cycle) < 0)
    reference = [_paper_schedule(t, total_steps=24, cycles=3, alpha0=0.05) for t in range(1, 25)]
    np.testing.assert_allclose(recorder.rates, reference, rtol=1e-6)

    expected = [str(tmp_path / "snapshots" / f"snapshot-{cycle}.keras") for cycle in (1, 2, 3)]
    assert snapshots.snapshot_paths == expected
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [
        "snapshot-1.keras", "snapshot-2.keras", "snapshot-3.keras"]
    last = keras.saving.load_model(expected[-1])
    for saved, current in zip(last.weights, model.weights):
        np.testing.assert_array_equal(saved.numpy(), current.numpy())
    first = keras.saving.load_model(expected[0])
    assert not np.allclose(first.layers[0].kernel.numpy(), model.layers[0].kernel.numpy())


def test_snapshot_second_fit_resets(digit_images, tmp_path):
    x, y = digit_images[0][:64], digit_images[1][:64]
    model = make_cnn()
    snapshots = SnapshotEnsemble(cycles=1, epochs=1, max_learning_rate=0.01, directory=tmp_path)
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[snapshots], verbose=0)
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[snapshots], verbose=0)
    assert len(snapshots.snapshot_paths) == 1
    assert len(snapshots.learning_rates) == 2


def test_cycles_not_dividing_epochs_rejected():
    with pytest.raises(ValueError, match=r"cycles=4, epochs=10\. Use 2 cycles or 12 epochs"):
        SnapshotEnsemble(cycles=4, epochs=10, max_learning_rate=0.1, directory="unused")


@pytest.mark.parametrize("arguments, message", [
    ({"cycles": 0}, "cycles"),
    ({"epochs": 2.5}, "epochs"),
    ({"max_learning_rate": 0}, "max_learning_rate"),
    ({"min_learning_rate": 0.5}, "min_learning_rate"),
    ({"filename": "snap.h5"}, "filename"),
    ({"steps_per_epoch": 0}, "steps_per_epoch"),
])
def test_snapshot_bad_arguments(arguments, message):
    values = {"cycles": 2, "epochs": 4, "max_learning_rate": 0.1, "directory": "unused", **arguments}
    with pytest.raises(ValueError, match=message):
        SnapshotEnsemble(**values)


def test_fit_epochs_must_match(digit_images, tmp_path):
    x, y = digit_images[0][:32], digit_images[1][:32]
    snapshots = SnapshotEnsemble(cycles=2, epochs=4, max_learning_rate=0.1, directory=tmp_path)
    with pytest.raises(ValueError, match="built for epochs=4, but fit\\(\\) runs 2 epochs"):
        make_cnn().fit(x, y, epochs=2, callbacks=[snapshots], verbose=0)


def test_snapshot_config_round_trip():
    callback = SnapshotEnsemble(cycles=2, epochs=4, max_learning_rate=0.1, directory="snaps",
                                min_learning_rate=0.001, steps_per_epoch=7)
    registered = keras.saving.get_registered_object("kerastricks>SnapshotEnsemble")
    assert registered is SnapshotEnsemble
    clone = SnapshotEnsemble(**callback.get_config())
    assert clone.get_config() == callback.get_config()

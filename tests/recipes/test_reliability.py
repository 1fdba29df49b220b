import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastricks.recipes import Recipe, RecipeError, TrainingFailed, load_dataset, load_model, train
from kerastricks.recipes import cli
from kerastricks.recipes import run_state

# Small enough to run in seconds, with enough steps per epoch to be killed in the middle of one.
RESUMABLE = ["--subset", "900", "--batch-size", "8", "--epochs", "4", "--seed", "7",
             "--set", "width=8", "--set", "dense_units=16", "--set", "convs_per_block=1", "--quiet"]
TIMING_KEYS = ("train_seconds",)


def _metrics_without_timing(run_dir):
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    return {key: value for key, value in metrics.items() if key not in TIMING_KEYS}


def _start(args, cwd):
    command = [sys.executable, "-m", "kerastricks.recipes.cli", *args]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epochs(run_dir, count, process, timeout=240):
    """Wait until `history.json` lists `count` epochs, then a little into the next epoch."""
    deadline = time.monotonic() + timeout
    history = Path(run_dir) / "history.json"
    while time.monotonic() < deadline:
        if history.is_file():
            try:
                if len(json.loads(history.read_text())) >= count:
                    time.sleep(0.3)
                    return
            except json.JSONDecodeError:
                pass
        if process.poll() is not None:
            pytest.fail(f"the run ended before epoch {count}: {process.communicate()}")
        time.sleep(0.05)
    pytest.fail(f"no {count} epochs within {timeout} s")


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    result = subprocess.run([sys.executable, "-m", "kerastricks.recipes.cli", "run", "baseline",
                             "--run-dir", "run", *RESUMABLE], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return folder / "run"


def test_killed_run_resumes_to_same_metrics(tmp_path, uninterrupted_run):
    args = ["run", "baseline", "--run-dir", "run", *RESUMABLE]
    process = _start(args, tmp_path)
    _wait_for_epochs(tmp_path / "run", 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "running"
    assert not (tmp_path / "run" / "metrics.json").exists()

    resumed = subprocess.run([sys.executable, "-m", "kerastricks.recipes.cli", *args],
                             cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming the unfinished run" in resumed.stdout
    assert _metrics_without_timing(tmp_path / "run") == _metrics_without_timing(uninterrupted_run)


def test_ctrl_c_leaves_resumable_run(tmp_path, uninterrupted_run):
    args = ["run", "baseline", "--run-dir", "run", *RESUMABLE]
    process = _start(args, tmp_path)
    _wait_for_epochs(tmp_path / "run", 1, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Resume with: kerastricks run run/recipe.json --run-dir run" in err
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "interrupted"

    resumed = subprocess.run([sys.executable, "-m", "kerastricks.recipes.cli", *args],
                             cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert _metrics_without_timing(tmp_path / "run") == _metrics_without_timing(uninterrupted_run)


def test_seeded_runs_identical(tmp_path, capsys):
    for name in ("first", "second"):
        status = cli.main(["run", "baseline", "--run-dir", str(tmp_path / name), *RESUMABLE])
        assert status == 0
    capsys.readouterr()
    assert _metrics_without_timing(tmp_path / "first") == _metrics_without_timing(tmp_path / "second")


def test_finished_run_not_overwritten(tmp_path, capsys, uninterrupted_run):
    before = (uninterrupted_run / "metrics.json").read_text()
    status = cli.main(["run", "baseline", "--run-dir", str(uninterrupted_run), *RESUMABLE])
    err = capsys.readouterr().err
    assert status == 2
    assert "contains a finished run" in err
    assert "--overwrite" in err
    assert (uninterrupted_run / "metrics.json").read_text() == before


def test_overwrite_replaces_finished_run(tmp_path, capsys):
    quick = ["--subset", "300", "--epochs", "1", "--set", "width=4", "--quiet"]
    assert cli.main(["run", "baseline", "--run-dir", str(tmp_path / "run"), *quick]) == 0
    (tmp_path / "run" / "marker.txt").write_text("from the first run")
    assert cli.main(["run", "baseline", "--run-dir", str(tmp_path / "run"), "--overwrite", *quick]) == 0
    capsys.readouterr()
    assert not (tmp_path / "run" / "marker.txt").exists()
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_resume_finds_unfinished_run(tmp_path, capsys):
    recipe = Recipe(width=4, epochs=1, subset=300)
    folder = tmp_path / "baseline-digits-20260101-000000"
    folder.mkdir()
    recipe.save(folder / "recipe.json")
    run_state.write_status(folder, run_state.INTERRUPTED)
    status = cli.main(["run", "baseline", "--logdir", str(tmp_path), "--resume", "--subset", "300",
                       "--epochs", "1", "--set", "width=4", "--quiet"])
    out = capsys.readouterr().out
    assert status == 0
    assert f"Resuming the unfinished run in {folder}" in out
    assert json.loads((folder / "status.json").read_text())["state"] == "complete"


def test_resume_without_unfinished_run(tmp_path, capsys):
    status = cli.main(["run", "baseline", "--logdir", str(tmp_path), "--resume"])
    assert status == 2
    assert "No unfinished run of recipe 'baseline'" in capsys.readouterr().err


def test_resume_and_overwrite_conflict(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "baseline", "--resume", "--overwrite", "--logdir", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--resume and --overwrite contradict" in capsys.readouterr().err


def test_other_recipe_in_run_dir_rejected(tmp_path):
    data = load_dataset("digits", subset=300)
    folder = tmp_path / "run"
    folder.mkdir()
    Recipe(width=4).save(folder / "recipe.json")
    run_state.write_status(folder, run_state.FAILED, error="earlier failure")
    with pytest.raises(RecipeError, match=r"unfinished run with other settings: width=8 \(saved: 4\)"):
        train(Recipe(width=8, epochs=1), data, folder, verbose=0)


def test_nan_in_data_stops_with_message(tmp_path):
    data = load_dataset("digits", subset=400, batch_size=16)

    def poison_batch(index, batch):
        images, labels = batch
        poisoned = tf.where(index == 5, images * np.nan, images)
        return poisoned, labels

    data.train = data.train.enumerate().map(poison_batch)
    with pytest.raises(TrainingFailed) as error:
        train(Recipe(width=4, epochs=2), data, tmp_path / "run", verbose=0)
    message = str(error.value)
    assert "Training diverged at epoch 1, step 6" in message
    assert "lower learning rate" in message
    assert "clip the gradients" in message
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed"
    assert "epoch 1, step 6" in status["error"]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_nan_exit_status_from_cli(tmp_path, capsys, monkeypatch):
    # A learning rate of 1e30 makes the weights overflow within the first steps.
    status = cli.main(["run", "baseline", "--run-dir", str(tmp_path / "run"), "--subset", "300",
                       "--epochs", "1", "--set", "learning_rate=1e30", "--set", "optimizer=sgd",
                       "--set", "batch_norm=false", "--quiet"])
    err = capsys.readouterr().err
    assert status == 1
    assert "training failed: Training diverged at epoch 1" in err
    assert "status.json" in err


def test_full_disk_fails_before_training(tmp_path, monkeypatch):
    data = load_dataset("digits", subset=300)
    # Reports 1 MiB free, as on a full disk, without filling a real one.
    usage = run_state.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(run_state.shutil, "disk_usage",
                        lambda path: usage._replace(free=2**20))
    with pytest.raises(TrainingFailed, match="Not enough free disk space"):
        train(Recipe(width=4, epochs=1), data, tmp_path / "run", verbose=0)
    assert not (tmp_path / "run" / "history.json").exists()


def test_lambda_model_refused(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    with pytest.raises(RecipeError, match="contains a Lambda layer"):
        load_model(tmp_path / "lambda.keras")


def test_run_model_loads_safely(tmp_path):
    data = load_dataset("digits", subset=300)
    train(Recipe(width=4, epochs=1), data, tmp_path / "run", verbose=0)
    model = load_model(tmp_path / "run")
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("content", [b"", b"not a zip file"])
def test_corrupt_model_file(tmp_path, content):
    path = tmp_path / "broken.keras"
    path.write_bytes(content)
    with pytest.raises(RecipeError, match="broken.keras"):
        load_model(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(RecipeError, match="Model file not found"):
        load_model(tmp_path / "absent.keras")


def test_stop_on_non_finite_loss_unit():
    guard = run_state.StopOnNonFiniteLoss()
    guard.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    guard.on_train_begin()
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(0, {"loss": 1.0})
    assert guard.failure is None
    guard.on_train_batch_end(4, {"loss": math.inf})
    assert guard.failure == {"epoch": 3, "step": 5, "cause": "the loss became inf"}
    assert guard.model.stop_training


def test_stop_on_non_finite_weights_unit():
    guard = run_state.StopOnNonFiniteLoss()
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    guard.set_model(model)
    guard.on_train_begin()
    guard.on_epoch_begin(0)
    guard.on_train_batch_end(0, {"loss": 1.0})
    assert guard.failure is None
    model.layers[0].kernel.assign([[np.nan]])
    guard.on_train_batch_end(1, {"loss": 1.0})
    assert guard.failure["cause"] == "the weights became NaN or infinite"
    assert guard.failure["step"] == 2


def test_interrupted_backup_save_keeps_previous(tmp_path):
    data = load_dataset("digits", subset=300)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile("adam", "sparse_categorical_crossentropy")
    kernels = []

    class RecordKernel(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kernels.append(self.model.layers[-1].kernel.numpy())

    save_weights = model.save_weights

    def save_interrupted_on_second_call(filepath, overwrite=True):
        # The second save is cut off half-way, as by Ctrl-C or a kill during the write.
        if len(kernels) == 2:
            Path(filepath).write_bytes(b"half written")
            raise KeyboardInterrupt
        return save_weights(filepath, overwrite=overwrite)

    model.save_weights = save_interrupted_on_second_call
    backup = run_state.AtomicBackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(KeyboardInterrupt):
        model.fit(data.x_train, data.y_train, epochs=3, verbose=0, callbacks=[RecordKernel(), backup])

    fresh = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    fresh.compile("adam", "sparse_categorical_crossentropy")
    restored = run_state.AtomicBackupAndRestore(str(tmp_path / "backup"))
    restored.set_model(fresh)
    restored.on_train_begin()
    np.testing.assert_array_equal(fresh.layers[-1].kernel.numpy(), kernels[0])
    assert fresh._initial_epoch == 1


def test_killed_swa_run_resumes_to_same_metrics(tmp_path):
    # Five epochs, so the kill after three finished epochs never comes after the last one,
    # however fast the epochs run.
    args = ["run", "baseline", *RESUMABLE, "--epochs", "5", "--set", "swa_start=1"]
    reference = subprocess.run([sys.executable, "-m", "kerastricks.recipes.cli", *args,
                                "--run-dir", "reference"], cwd=tmp_path, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr

    process = _start([*args, "--run-dir", "run"], tmp_path)
    _wait_for_epochs(tmp_path / "run", 3, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (tmp_path / "run" / "backup" / "swa_state.npz").is_file()
    resumed = subprocess.run([sys.executable, "-m", "kerastricks.recipes.cli", *args,
                              "--run-dir", "run"], cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert _metrics_without_timing(tmp_path / "run") == _metrics_without_timing(tmp_path / "reference")


def test_ctrl_c_raises_at_batch_end():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    events = []

    class SendInterrupt(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            events.append(("batch", batch))
            if batch == 2:
                os.kill(os.getpid(), signal.SIGINT)

        def on_epoch_end(self, epoch, logs=None):
            events.append(("epoch_end", epoch))

    handler_before = signal.getsignal(signal.SIGINT)
    guard = run_state.StopOnInterrupt()
    with pytest.raises(KeyboardInterrupt):
        model.fit(np.ones((64, 3)), np.ones((64, 1)), batch_size=8, epochs=2, verbose=0,
                  callbacks=[SendInterrupt(), guard])
    assert events[-1] == ("batch", 2)
    assert ("epoch_end", 0) not in events
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_killed_gradual_unfreezing_resumes_same(tmp_path, capsys):
    from kerastricks.recipes.models import build_model

    base = build_model(Recipe(width=4, depth=2, convs_per_block=1, dense_units=8, seed=0), (8, 8, 1), 10)
    base.save(tmp_path / "base.keras")
    # Unfreezings begin epochs 1, 2 and 3. The kill comes during epoch 2, so the backup, from
    # the end of epoch 1, follows one unfreezing.
    args = ["run", "baseline", *RESUMABLE, "--no-diagnostics",
            "--set", f"finetune_from={tmp_path / 'base.keras'}",
            "--set", "finetune_strategy=similar_small", "--set", "gradual_unfreezing=1"]
    assert cli.main([*args, "--run-dir", str(tmp_path / "reference")]) == 0
    capsys.readouterr()

    process = _start([*args, "--run-dir", "run"], tmp_path)
    _wait_for_epochs(tmp_path / "run", 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = subprocess.run([sys.executable, "-m", "kerastricks.recipes.cli", *args,
                              "--run-dir", "run"], cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming the unfinished run" in resumed.stdout
    assert _metrics_without_timing(tmp_path / "run") == _metrics_without_timing(tmp_path / "reference")
    reference = keras.saving.load_model(tmp_path / "reference" / "model.keras")
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    for expected, value in zip(reference.weights, model.weights):
        np.testing.assert_array_equal(value.numpy(), expected.numpy())

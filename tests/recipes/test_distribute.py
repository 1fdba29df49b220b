"""Tests for training under `tf.distribute` and for keras-tuner's distributed search.

The mirrored tests run in a subprocess, because splitting the CPU into two logical devices must
happen before TensorFlow initializes its devices. The distributed search runs a chief and two
worker processes that talk over gRPC on a free port of 127.0.0.1.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from kerastricks.recipes.cli import main
from kerastricks.recipes.distribute import (
    DistributeError,
    add_search_cluster_arguments,
    apply_search_cluster_arguments,
    create_strategy,
    scale_for_replicas,
)
from kerastricks.recipes.spec import Recipe

# A small model and data set, so a distributed run takes seconds of compute.
SMALL_RUN = ["--subset", "200", "--epochs", "2", "--seed", "0", "--quiet",
             "--set", "width=8", "--set", "dense_units=16", "--no-diagnostics"]
SUBPROCESS_TIMEOUT = 600

MIRRORED_SCRIPT = textwrap.dedent("""
    import json
    import sys
    import warnings
    from pathlib import Path

    import numpy as np

    from kerastricks.recipes.cli import main

    root = Path(sys.argv[1])
    small_run = json.loads(sys.argv[2])
    results = {}
    # Mirrored first: it splits the CPU, which must happen before any other TensorFlow work.
    results["mirrored_exit"] = main(["run", "baseline", *small_run, "--distribute", "mirrored",
                                     "--logdir", str(root / "mirrored")])
    results["none_exit"] = main(["run", "baseline", *small_run, "--logdir", str(root / "none")])
    results["search_exit"] = main([
        "search", "baseline", "--distribute", "mirrored", "--tuner", "random", "--trials", "2",
        "--max-epochs", "1", "--subset", "200", "--set", "width=8", "--set", "dense_units=16",
        "--project", str(root / "search"), "--quiet",
    ])

    import keras
    import tensorflow as tf

    from kerastricks.layers import RReLU
    from kerastricks.recipes.augmentation import augment_dataset
    from kerastricks.recipes.distribute import (
        configure_replicas, create_strategy, recipe_for_strategy,
    )
    from kerastricks.recipes.spec import Recipe

    strategy = create_strategy("mirrored")
    results["replicas"] = strategy.num_replicas_in_sync
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results["diagnostics_after"] = recipe_for_strategy(Recipe(), strategy).diagnostics
    results["warnings"] = [str(warning.message) for warning in caught]
    saved = keras.saving.load_model(next((root / "mirrored").glob("*/model.keras")))
    results["synchronized"] = [layer.synchronized for layer in saved.layers
                               if isinstance(layer, keras.layers.BatchNormalization)]
    x = -np.ones((8, 64), "float32")

    def per_replica_outputs(layer):
        @tf.function
        def draw():
            return strategy.run(lambda: layer(x, training=True))
        return [t.numpy().tolist() for t in strategy.experimental_local_results(draw())]

    with strategy.scope():
        rrelu = keras.Sequential([keras.Input((64,)), RReLU(seed=3)])
        dropout = keras.Sequential([keras.Input((64,)), keras.layers.Dropout(0.5, seed=3)])
        configure_replicas(rrelu)
        configure_replicas(dropout)
    results["rrelu"] = per_replica_outputs(rrelu)
    results["dropout"] = per_replica_outputs(dropout)
    single = keras.Sequential([keras.Input((64,)), RReLU(seed=3)])
    results["rrelu_single"] = tf.function(lambda: single(x, training=True))().numpy().tolist()

    # Identical images, so any difference between the replicas' batches is the augmentation's.
    image = np.random.default_rng(0).random((1, 8, 8, 1)).astype("float32")
    images = np.repeat(image, 16, axis=0)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(16, "int32"))).batch(16)
    with strategy.scope():
        dataset = augment_dataset(dataset, Recipe(augmentation=["pad_crop", "flip"]), images)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    replica_images = strategy.experimental_local_results(batch[0])
    results["augmented"] = [t.numpy().tolist() for t in replica_images]
    results["image"] = image.tolist()
    (root / "results.json").write_text(json.dumps(results))
""")


def _run_subprocesses(commands, timeout=SUBPROCESS_TIMEOUT):
    """Start `(arguments, environment, output path)` commands together; return their exit codes."""
    processes = []
    for arguments, environment, output in commands:
        with open(output, "w") as stream:
            processes.append(subprocess.Popen(arguments, env=environment, stdout=stream,
                                              stderr=subprocess.STDOUT))
    try:
        return [process.wait(timeout=timeout) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _environment(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def _tail(path, lines=30):
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Results of the mirrored subprocess: two CLI runs, per-replica draws and batches."""
    root = tmp_path_factory.mktemp("mirrored")
    output = root / "output.txt"
    arguments = [sys.executable, "-c", MIRRORED_SCRIPT, str(root), json.dumps(SMALL_RUN)]
    (code,) = _run_subprocesses([(arguments, _environment(), output)])
    assert code == 0, _tail(output)
    results = json.loads((root / "results.json").read_text())
    results["root"] = root
    results["output"] = output.read_text(errors="replace")
    return results


def _only_run_dir(logdir):
    folders = [path for path in Path(logdir).iterdir() if path.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def _history(run_dir):
    return json.loads((run_dir / "history.json").read_text())


class TestScaleForReplicas:
    def test_global_keeps_recipe(self):
        recipe = Recipe(batch_size=64, learning_rate=0.01)
        assert scale_for_replicas(recipe, 4, "global") == recipe

    def test_linear(self):
        scaled = scale_for_replicas(Recipe(batch_size=64, learning_rate=0.01), 4, "linear")
        assert scaled.batch_size == 256
        assert scaled.learning_rate == pytest.approx(0.04)

    def test_sqrt(self):
        scaled = scale_for_replicas(Recipe(batch_size=64, learning_rate=0.01), 4, "sqrt")
        assert scaled.batch_size == 256
        assert scaled.learning_rate == pytest.approx(0.02)

    def test_one_replica_unchanged(self):
        recipe = Recipe(batch_size=64, learning_rate=0.01)
        assert scale_for_replicas(recipe, 1, "linear") == recipe

    def test_unknown_rule(self):
        with pytest.raises(DistributeError, match=r"Received: batch_scaling='cube'"):
            scale_for_replicas(Recipe(), 2, "cube")

    def test_bad_replicas(self):
        with pytest.raises(DistributeError, match=r"Received: replicas=0"):
            scale_for_replicas(Recipe(), 0)


class TestCreateStrategy:
    def test_unknown_name(self):
        with pytest.raises(DistributeError, match=r"Received: distribute='tpu'"):
            create_strategy("tpu")

    def test_none_is_one_replica(self):
        assert create_strategy("none").num_replicas_in_sync == 1

    def test_multiworker_not_offered(self):
        with pytest.raises(DistributeError, match=r"Expected one of \['none', 'mirrored'\]"):
            create_strategy("multiworker")


class TestCommandLine:
    def test_unknown_strategy_is_usage_error(self, capsys):
        with pytest.raises(SystemExit) as exit_info:
            main(["run", "baseline", "--distribute", "tpu"])
        assert exit_info.value.code == 2
        assert "--distribute" in capsys.readouterr().err

    def test_unknown_batch_scaling_is_usage_error(self, capsys):
        with pytest.raises(SystemExit) as exit_info:
            main(["run", "baseline", "--batch-scaling", "cube"])
        assert exit_info.value.code == 2
        assert "--batch-scaling" in capsys.readouterr().err


class TestMirrored:
    def test_two_replicas(self, mirrored):
        assert mirrored["replicas"] == 2
        assert "2 replicas, global batch 64" in mirrored["output"]

    def test_runs_complete(self, mirrored):
        assert mirrored["mirrored_exit"] == 0
        assert mirrored["none_exit"] == 0

    def test_search_trials_on_replicas(self, mirrored):
        assert mirrored["search_exit"] == 0
        assert "each trial trains on 2 replicas, global batch 64" in mirrored["output"]
        results = json.loads((mirrored["root"] / "search" / "results.json").read_text())
        assert len(results["trials"]) == 2

    def test_same_loss_curve_as_one_device(self, mirrored):
        distributed = _history(_only_run_dir(mirrored["root"] / "mirrored"))
        single = _history(_only_run_dir(mirrored["root"] / "none"))
        assert len(distributed) == len(single) == 2
        for key in ("loss", "val_loss", "accuracy"):
            np.testing.assert_allclose([epoch[key] for epoch in distributed],
                                       [epoch[key] for epoch in single], rtol=1e-4, err_msg=key)

    def test_recipe_records_diagnostics_off(self, mirrored):
        run_dir = _only_run_dir(mirrored["root"] / "mirrored")
        saved = Recipe.from_file(run_dir / "recipe.json")
        assert saved.diagnostics is False
        assert saved.batch_size == 64

    def test_batch_norm_synchronized(self, mirrored):
        assert mirrored["synchronized"]
        assert all(mirrored["synchronized"])

    def test_diagnostics_off_with_warning(self, mirrored):
        assert mirrored["diagnostics_after"] is False
        assert any("diagnostics do not run" in message for message in mirrored["warnings"])

    def test_rrelu_differs_between_replicas(self, mirrored):
        first, second = (np.array(values) for values in mirrored["rrelu"])
        assert not np.allclose(first, second)
        # The input is -1, so the outputs are minus the slopes, within RReLU's default bounds.
        for slopes in (-first, -second):
            assert slopes.min() >= 1 / 8
            assert slopes.max() <= 1 / 3

    def test_rrelu_first_replica_keeps_seed(self, mirrored):
        np.testing.assert_allclose(mirrored["rrelu"][0], mirrored["rrelu_single"])

    def test_dropout_differs_between_replicas(self, mirrored):
        first, second = (np.array(values) for values in mirrored["dropout"])
        assert not np.array_equal(first == 0, second == 0)

    def test_augmentation_differs_between_replicas(self, mirrored):
        first, second = (np.array(values) for values in mirrored["augmented"])
        assert first.shape == second.shape == (8, 8, 8, 1)
        assert not np.allclose(first, second)
        # Padding, cropping and flipping only move pixels or add zeros.
        allowed = np.append(np.array(mirrored["image"]).ravel(), 0.0)
        for pixel in np.concatenate([first.ravel(), second.ravel()]):
            assert np.isclose(allowed, pixel).any()



SEARCH_VARIABLES = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def _search_parser():
    parser = argparse.ArgumentParser(prog="search")
    add_search_cluster_arguments(parser)
    return parser


class TestSearchClusterArguments:
    def test_no_flags_is_one_process(self):
        parser = _search_parser()
        assert apply_search_cluster_arguments(parser.parse_args([]), parser, environ={}) is None

    def test_flags_set_variables(self):
        parser = _search_parser()
        args = parser.parse_args(["--tuner-id", "tuner3", "--oracle-ip", "127.0.0.1",
                                  "--oracle-port", "8000"])
        environ = {}
        assert apply_search_cluster_arguments(args, parser, environ=environ) == "tuner3"
        assert environ == {"KERASTUNER_TUNER_ID": "tuner3", "KERASTUNER_ORACLE_IP": "127.0.0.1",
                           "KERASTUNER_ORACLE_PORT": "8000"}

    def test_flags_override_environment(self):
        parser = _search_parser()
        environ = {"KERASTUNER_TUNER_ID": "tuner0", "KERASTUNER_ORACLE_IP": "127.0.0.1",
                   "KERASTUNER_ORACLE_PORT": "8000"}
        args = parser.parse_args(["--tuner-id", "chief"])
        assert apply_search_cluster_arguments(args, parser, environ=environ) == "chief"
        assert environ["KERASTUNER_TUNER_ID"] == "chief"

    def test_missing_port(self, capsys):
        parser = _search_parser()
        args = parser.parse_args(["--tuner-id", "chief", "--oracle-ip", "127.0.0.1"])
        with pytest.raises(SystemExit):
            apply_search_cluster_arguments(args, parser, environ={})
        assert "KERASTUNER_ORACLE_PORT is not set. Pass --oracle-port" in capsys.readouterr().err

    @pytest.mark.parametrize("port", ["0", "70000", "http"])
    def test_bad_port(self, port, capsys):
        with pytest.raises(SystemExit):
            _search_parser().parse_args(["--oracle-port", port])
        assert f"received {port!r}" in capsys.readouterr().err

    def test_worker_rejects_overwrite(self, monkeypatch, capsys):
        for variable in SEARCH_VARIABLES:
            monkeypatch.setenv(variable, "unset")
        with pytest.raises(SystemExit) as exit_info:
            main(["search", "--tuner-id", "tuner0", "--oracle-ip", "127.0.0.1",
                  "--oracle-port", "8000", "--overwrite"])
        assert exit_info.value.code == 2
        assert "--overwrite on a worker" in capsys.readouterr().err


def _wait_for_text(path, text, process, timeout):
    """Wait until `text` appears in the file `path`; return whether it did while `process` ran."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in Path(path).read_text(errors="replace"):
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.5)
    return False


def test_distributed_search_survives_killed_worker(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    project = tmp_path / "project"
    command = [sys.executable, "-m", "kerastricks.recipes.cli", "search", "baseline",
               "--tuner", "random", "--trials", "3", "--max-epochs", "2", "--subset", "200",
               "--set", "width=8", "--set", "dense_units=16", "--set", "diagnostics=false",
               "--project", str(project), "--oracle-ip", "127.0.0.1", "--oracle-port", str(port)]
    # Unbuffered, so the worker's "Epoch 1/2" line shows that it is inside a trial. Keras prints
    # that line only when a fit has more than one epoch, hence two epochs per trial.
    environment = _environment(PYTHONUNBUFFERED="1")
    outputs = {}
    processes = {}

    def start(tuner_id, name):
        outputs[name] = tmp_path / f"{name}.txt"
        with open(outputs[name], "w") as stream:
            processes[name] = subprocess.Popen([*command, "--tuner-id", tuner_id], env=environment,
                                               stdout=stream, stderr=subprocess.STDOUT)

    try:
        start("chief", "chief")
        start("tuner0", "tuner0")
        start("tuner1", "tuner1-killed")
        in_trial = _wait_for_text(outputs["tuner1-killed"], "Epoch 1/2", processes["tuner1-killed"],
                                  SUBPROCESS_TIMEOUT)
        assert in_trial, _tail(outputs["tuner1-killed"])
        processes["tuner1-killed"].send_signal(signal.SIGKILL)
        processes["tuner1-killed"].wait()
        # Restarted with the same id, the worker gets its unfinished trial back from the oracle.
        start("tuner1", "tuner1")
        codes = {name: processes[name].wait(timeout=SUBPROCESS_TIMEOUT)
                 for name in ("tuner0", "tuner1", "chief")}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    text = {name: path.read_text(errors="replace") for name, path in outputs.items()}
    assert codes == {"tuner0": 0, "tuner1": 0, "chief": 0}, "\n\n".join(
        f"{name}:\n{_tail(path)}" for name, path in outputs.items())
    assert f"the chief oracle listens on 127.0.0.1:{port}" in text["chief"]
    # Both workers trained, and all three trials completed although one was killed mid-trial.
    assert "Epoch 1/" in text["tuner0"]
    assert "Epoch 1/" in text["tuner1"]
    assert "Best 3 of 3 completed trials" in text["chief"]
    results = json.loads((project / "results.json").read_text())
    assert len(results["trials"]) == 3
    assert "Best" not in text["tuner0"]
    assert "Best" not in text["tuner1"]

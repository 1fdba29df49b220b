import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from kerastricks.recipes import data as data_module
from kerastricks.recipes.registry import EXPERIMENTS
from tests.recipes.cli_runner import run_cli
from tests.recipes.idx_writer import write_fashion_like
from tests.recipes.image_files import write_png_folder

QUICK = ["--epochs", "1", "--set", "width=8", "--set", "dense_units=16", "--quiet"]



def test_list_names_recipes_and_datasets(capsys):
    status, out, _ = run_cli(["list"], capsys)
    assert status == 0
    for name in ("baseline", "digits", "fashion_mnist", "mnist", "cifar10", "cifar100", "folder:PATH"):
        assert name in out
    experiments = out[out.index("Experiments"):out.index("Data sets")]
    for name in EXPERIMENTS:
        assert f"  {name} " in experiments


def test_run_baseline_on_digits(tmp_path, capsys):
    status, out, _ = run_cli(["run", "baseline", "--logdir", str(tmp_path), *QUICK], capsys)
    assert status == 0
    (run_dir,) = tmp_path.iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"{metrics['test_accuracy']:.4f}" in out
    assert f"Run folder: {run_dir}" in out
    recipe = json.loads((run_dir / "recipe.json").read_text())
    assert recipe["width"] == 8
    assert recipe["epochs"] == 1


def test_run_recipe_file(tmp_path, capsys):
    recipe_file = tmp_path / "mine.yaml"
    recipe_file.write_text("name: mine\nwidth: 8\ndense_units: 0\nepochs: 1\nactivation: tanh\n")
    status, _, err = run_cli(["run", str(recipe_file), "--logdir", str(tmp_path / "runs"),
                               "--subset", "400", "--quiet"], capsys)
    assert status == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("mine-digits-")


def _offline_fashion(monkeypatch, tmp_path):
    import keras

    def offline_download():
        raise urllib.error.URLError("no network")

    monkeypatch.delenv("KERASTRICKS_DATA", raising=False)
    monkeypatch.setattr(data_module, "FASHION_MNIST_SYSTEM_FOLDER", tmp_path / "missing")
    monkeypatch.setattr(data_module.Path, "home", lambda: tmp_path)
    # Stands in for the download failing offline, so the test never reaches the network.
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline_download)


def _bad_folder(root, case):
    root.mkdir()
    if case == "no_images":
        (root / "a").mkdir()
        (root / "b").mkdir()
        return root
    write_png_folder(root, {"a": 6, "b": 6})
    if case == "empty_class":
        (root / "c").mkdir()
    elif case == "corrupt":
        (root / "a" / "bad.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    elif case == "not_image":
        (root / "b" / "labels.csv").write_text("file,label\n")
    return root


BAD_INPUTS = [
    ("unknown dataset", ["--dataset", "imagenet"], "Unknown data set 'imagenet'. Expected one of"),
    ("missing folder", ["--dataset", "folder:{tmp}/absent"], "Image folder not found"),
    ("empty class folder", ["--dataset", "folder:{tmp}/empty_class"], "contains no images"),
    ("folder with no images", ["--dataset", "folder:{tmp}/no_images"], "contains no images"),
    ("corrupt image", ["--dataset", "folder:{tmp}/corrupt"], "is not a readable image"),
    ("non-image file", ["--dataset", "folder:{tmp}/not_image"], "is not an image file"),
    ("unknown set key", ["--set", "colour=red"], "Unknown recipe field 'colour'"),
    ("wrong set type", ["--set", "epochs=many"], "'epochs' must be int"),
    ("zero epochs via set", ["--set", "epochs=0"], "'epochs' must be >= 1"),
]


@pytest.mark.parametrize("case, flags, message", BAD_INPUTS, ids=[case for case, _, _ in BAD_INPUTS])
def test_bad_input_exits_2(tmp_path, capsys, case, flags, message):
    for folder_case in ("empty_class", "no_images", "corrupt", "not_image"):
        if f"{{tmp}}/{folder_case}" in " ".join(flags):
            _bad_folder(tmp_path / folder_case, folder_case)
    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    logdir = tmp_path / "runs"
    status, out, err = run_cli(["run", "baseline", "--logdir", str(logdir), *flags], capsys)
    assert status == 2
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not logdir.exists() or not any(logdir.iterdir())


def test_unknown_recipe_lists_names(tmp_path, capsys):
    status, _, err = run_cli(["run", "basline", "--logdir", str(tmp_path)], capsys)
    assert status == 2
    assert "Unknown recipe 'basline'. Expected one of ['activation_compare', " in err
    assert "'baseline'" in err
    assert "'imbalance_compare'" in err


@pytest.mark.parametrize("epochs", ["0", "-3", "two"])
def test_non_positive_epochs_rejected(tmp_path, capsys, epochs):
    status, _, err = run_cli(["run", "baseline", "--epochs", epochs, "--logdir", str(tmp_path)], capsys)
    assert status == 2
    assert f"expected a positive integer, received '{epochs}'" in err


def test_flag_and_set_conflict(tmp_path, capsys):
    status, _, err = run_cli(["run", "baseline", "--epochs", "2", "--set", "epochs=3",
                               "--logdir", str(tmp_path)], capsys)
    assert status == 2
    assert "--epochs and --set epochs=... both set epochs" in err


def test_unreadable_idx_files(tmp_path, capsys, monkeypatch):
    write_fashion_like(tmp_path / "data", train_count=60)
    (tmp_path / "data" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    monkeypatch.setenv("KERASTRICKS_DATA", str(tmp_path / "data"))
    status, _, err = run_cli(["run", "baseline", "--dataset", "fashion_mnist",
                               "--logdir", str(tmp_path / "runs")], capsys)
    assert status == 2
    assert "train-images-idx3-ubyte.gz" in err
    assert "Reinstall or re-download" in err


def test_fashion_mnist_absent_offline(tmp_path, capsys, monkeypatch):
    _offline_fashion(monkeypatch, tmp_path)
    status, _, err = run_cli(["run", "baseline", "--dataset", "fashion_mnist",
                               "--logdir", str(tmp_path / "runs")], capsys)
    assert status == 2
    assert "apt-get install dataset-fashion-mnist" in err
    assert "KERASTRICKS_DATA" in err


def test_unwritable_logdir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder is expected")
    status, _, err = run_cli(["run", "baseline", "--logdir", str(blocker / "runs")], capsys)
    assert status == 2
    assert f"cannot write to {blocker / 'runs'}" in err


def _console(args, cwd):
    script = Path(sys.executable).with_name("kerastricks")
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([str(script), *args], cwd=cwd, capture_output=True, text=True,
                          env=environment, timeout=300)


def test_console_script_is_quiet(tmp_path):
    result = _console(["run", "baseline", "--logdir", "runs", *QUICK], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Run folder: runs/baseline-digits-" in result.stdout
    assert "oneDNN" not in result.stderr
    assert "cuda" not in result.stderr.lower()


def test_console_script_bad_input_has_no_traceback(tmp_path):
    result = _console(["run", "baseline", "--dataset", "nope"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("kerastricks: error: Unknown data set 'nope'")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_python_module_runs_recipe(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "kerastricks.recipes.baseline", "--logdir", "runs", *QUICK],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "metrics.json").is_file()

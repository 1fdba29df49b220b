"""The diagnostics as the recipes and the `kerastricks` command use them."""

import json

import pytest
from PIL import Image

from kerastricks.recipes.cli import main

SMALL = ["--epochs", "1", "--subset", "300", "--set", "width=8", "--set", "dense_units=16", "--quiet"]


def run_folder(logdir):
    (folder,) = [path for path in logdir.iterdir() if path.is_dir()]
    return folder


def test_run_writes_diagnostics(tmp_path, capsys):
    assert main(["run", "baseline", "--logdir", str(tmp_path), *SMALL]) == 0
    folder = run_folder(tmp_path)
    names = {"loss", "accuracy_gap", "learning_rate", "confusion_matrix", "filters"}
    assert {path.stem for path in (folder / "figures").glob("*.png")} == names
    assert Image.open(folder / "figures" / "confusion_matrix.png").size == (640, 640)
    assert list((folder / "diagnostics").glob("events.out.tfevents.*"))
    metrics = json.loads((folder / "metrics.json").read_text())
    text = (folder / "diagnosis.txt").read_text()
    assert text.startswith("Diagnosis:")
    assert isinstance(metrics["diagnosis"], list)
    assert "Diagnosis (also in diagnosis.txt):" in capsys.readouterr().out


def test_no_diagnostics_flag(tmp_path):
    assert main(["run", "baseline", "--logdir", str(tmp_path), "--no-diagnostics", *SMALL]) == 0
    folder = run_folder(tmp_path)
    assert not (folder / "diagnostics").exists()
    assert not (folder / "figures").exists()
    assert json.loads((folder / "metrics.json").read_text())["diagnosis"] is None
    assert json.loads((folder / "recipe.json").read_text())["diagnostics"] is False


def test_lr_find_command(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["lr-find", "baseline", "--steps", "30", "--min-lr", "1e-5", "--max-lr", "1",
            "--subset", "300", "--set", "width=8", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "lr_find.json").read_text())
    assert 1e-5 <= result["suggestion"] <= 1.0
    assert Image.open(out / "lr_find.png").size == (640, 400)
    assert f"--set learning_rate={result['suggestion']:.3g}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--min-lr", "1", "--max-lr", "0.1"], "--max-lr (0.1) must be greater than --min-lr (1)"),
    (["--steps", "3"], "--steps must be at least 5"),
    (["--min-lr", "-1"], "expected a positive number"),
])
def test_lr_find_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["lr-find", "baseline", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_lr_find_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["lr-find", "baseline", "--out", str(blocker / "sweep")]) == 2
    assert "cannot write to --out" in capsys.readouterr().err


def test_bad_diagnostics_every(tmp_path, capsys):
    argv = ["run", "baseline", "--logdir", str(tmp_path), "--set", "diagnostics_every=0"]
    assert main(argv) == 2
    assert "'diagnostics_every' must be >= 1" in capsys.readouterr().err

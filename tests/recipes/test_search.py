"""End-to-end tests of `kerastricks search`: real keras-tuner searches of tiny CNNs on digits."""

import contextlib
import dataclasses
import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from kerastricks.recipes import cli
from kerastricks.recipes.data import load_dataset
from kerastricks.recipes.spec import Recipe
from tests.recipes.cli_runner import run_cli

SUBSET = 300
TINY = ["--subset", str(SUBSET), "--set", "width=4", "--set", "depth=1", "--set", "dense_units=0",
        "--set", "convs_per_block=1", "--set", "learning_rate=0.01", "--quiet"]
if "diagnostics" in {field.name for field in dataclasses.fields(Recipe)}:
    # Per-layer diagnostics are part of a recipe run, but they only slow these tests down.
    TINY += ["--set", "diagnostics=false"]

# The same without --quiet: keras-tuner's trial table and Keras's per-epoch lines are printed.
TINY_VERBOSE = [arg for arg in TINY if arg != "--quiet"]

LEAKY_SPACE = (
    "activation: [relu, leaky_relu]\n"
    "activation_options.negative_slope:\n"
    "  values: [0.1, 0.3]\n"
    "  when: {activation: leaky_relu}\n"
)
SLOPE = "activation_options.negative_slope"



def _trials(project):
    """Return {trial id: trial.json contents} of a keras-tuner project folder."""
    return {json.loads(path.read_text())["trial_id"]: json.loads(path.read_text())
            for path in Path(project).glob("trial_*/trial.json")}


@pytest.fixture(scope="module")
def grid_search(tmp_path_factory):
    """A finished grid search over relu and leaky_relu with two slopes, retrained at the end."""
    root = tmp_path_factory.mktemp("search")
    space = root / "space.yaml"
    space.write_text(LEAKY_SPACE)
    project = root / "project"
    argv = ["search", "--space", str(space), "--tuner", "grid", "--max-epochs", "1",
            "--project", str(project), "--retrain", *TINY]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return {"status": status, "out": out.getvalue(), "err": err.getvalue(), "project": project,
            "space": space, "argv": argv}


def test_grid_search_completes(grid_search):
    assert grid_search["status"] == 0, grid_search["err"]
    trials = _trials(grid_search["project"])
    assert len(trials) == 3
    assert all(trial["status"] == "COMPLETED" for trial in trials.values())
    assert "Searching 2 hyperparameters of" in grid_search["out"]
    # --quiet hides keras-tuner's table of each trial as well as Keras's progress.
    assert "Running Trial" not in grid_search["out"]
    assert "So Far" not in grid_search["out"]


def test_grid_covers_conditional_values(grid_search):
    rows = json.loads((grid_search["project"] / "results.json").read_text())["trials"]
    combinations = {(row["activation"], row[SLOPE]) for row in rows}
    assert combinations == {("relu", None), ("leaky_relu", 0.1), ("leaky_relu", 0.3)}


def test_ranking_matches_trial_scores(grid_search):
    trials = _trials(grid_search["project"])
    document = json.loads((grid_search["project"] / "results.json").read_text())
    rows = document["trials"]
    assert document["objective"] == {"name": "val_accuracy", "direction": "max"}
    assert [row["rank"] for row in rows] == [1, 2, 3]
    assert {row["trial_id"] for row in rows} == set(trials)
    for row in rows:
        assert row["score"] == pytest.approx(trials[row["trial_id"]]["score"])
        recorded = trials[row["trial_id"]]["hyperparameters"]["values"]
        assert row["activation"] == recorded["activation"]
        assert row[SLOPE] == recorded.get(SLOPE)
    scores = [row["score"] for row in rows]
    assert scores == sorted(scores, reverse=True)


def test_ranking_csv_and_printout(grid_search):
    lines = (grid_search["project"] / "results.csv").read_text().splitlines()
    assert lines[0] == f"rank,trial_id,score,activation,{SLOPE}"
    rows = json.loads((grid_search["project"] / "results.json").read_text())["trials"]
    for line, row in zip(lines[1:], rows):
        rank, trial_id, score, activation, slope = line.split(",")
        assert (int(rank), trial_id, activation) == (row["rank"], row["trial_id"], row["activation"])
        assert float(score) == pytest.approx(row["score"])
        assert slope == ("" if row[SLOPE] is None else str(row[SLOPE]))
    assert "Best 3 of 3 completed trials by val_accuracy:" in grid_search["out"]
    header = next(line for line in grid_search["out"].splitlines() if line.startswith("rank "))
    assert header.split() == ["rank", "trial_id", "score", "activation", SLOPE]


def test_importance_is_mean_per_value(grid_search):
    rows = json.loads((grid_search["project"] / "results.json").read_text())["trials"]
    table = json.loads((grid_search["project"] / "importance.json").read_text())["importance"]
    by_name = {item["hyperparameter"]: item for item in table}
    assert set(by_name) == {"activation", SLOPE}

    for value in ("relu", "leaky_relu"):
        scores = [row["score"] for row in rows if row["activation"] == value]
        (group,) = [g for g in by_name["activation"]["groups"] if g["value"] == value]
        assert group["count"] == len(scores)
        assert group["mean"] == pytest.approx(np.mean(scores))
    means = [group["mean"] for group in by_name["activation"]["groups"]]
    assert by_name["activation"]["spread"] == pytest.approx(max(means) - min(means))
    assert means == sorted(means, reverse=True)
    # The slope is active in the two leaky_relu trials only.
    assert sum(group["count"] for group in by_name[SLOPE]["groups"]) == 2

    image = matplotlib.image.imread(grid_search["project"] / "importance.png")
    assert image.ndim == 3
    assert image.shape[0] > 100
    csv_lines = (grid_search["project"] / "importance.csv").read_text().splitlines()
    assert csv_lines[0] == "hyperparameter,value,mean_score,count,spread"
    assert len(csv_lines) == 1 + 2 + 2


def test_retrain_uses_train_and_validation(grid_search):
    (run_dir,) = (grid_search["project"] / "best").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    recipe = json.loads((run_dir / "recipe.json").read_text())
    best = json.loads((grid_search["project"] / "results.json").read_text())["trials"][0]
    assert recipe["activation"] == best["activation"]
    assert recipe["activation_options"] == ({} if best[SLOPE] is None else {"negative_slope": best[SLOPE]})
    data = load_dataset("digits", subset=SUBSET, seed=0)
    assert metrics["train_images"] == len(data.y_train) + len(data.y_validation)
    assert metrics["test_images"] == len(data.y_test)
    assert metrics["epochs"] == 1
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert f"test_accuracy {metrics['test_accuracy']:.4f}" in grid_search["out"]


def test_finished_search_resumes_without_training(grid_search, tmp_path, capsys):
    project = tmp_path / "project"
    shutil.copytree(grid_search["project"], project)
    before = {trial_id: trial["score"] for trial_id, trial in _trials(project).items()}
    argv = [arg if arg != str(grid_search["project"]) else str(project) for arg in grid_search["argv"]]
    argv.remove("--retrain")
    status, out, err = run_cli(argv, capsys)
    assert status == 0, err
    assert "Reloading Tuner" in out
    after = {trial_id: trial["score"] for trial_id, trial in _trials(project).items()}
    assert after == before


def test_project_of_other_space_fails(grid_search, tmp_path, capsys):
    project = tmp_path / "project"
    shutil.copytree(grid_search["project"], project)
    other_space = tmp_path / "other.yaml"
    other_space.write_text("activation: [relu, elu]\n")
    argv = ["search", "--space", str(other_space), "--tuner", "grid", "--max-epochs", "1",
            "--project", str(project), *TINY]
    status, _, err = run_cli(argv, capsys)
    assert status == 2
    assert f"The project folder {project} contains another search: its space differ" in err
    assert "its space differs from this one's" in err
    assert "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert len(_trials(project)) == 3

    other_space.write_text("activation: [elu]\n")
    status, out, err = run_cli([*argv, "--overwrite"], capsys)
    assert status == 0, err
    assert "Searching 1 hyperparameter of" in out
    trials = _trials(project)
    assert len(trials) == 1
    assert [trial["hyperparameters"]["values"]["activation"] for trial in trials.values()] == ["elu"]


def test_keras_tuner_project_without_fingerprint_fails(grid_search, tmp_path, capsys):
    project = tmp_path / "project"
    shutil.copytree(grid_search["project"], project)
    (project / "search.json").unlink()
    status, _, err = run_cli(["search", "--space", str(grid_search["space"]), "--tuner", "grid",
                               "--max-epochs", "1", "--project", str(project), *TINY], capsys)
    assert status == 2
    assert "is not a kerastricks search" in err


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post_json(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def _tensorboard(logdir):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
         "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _session_groups(url, expected, timeout=90):
    request = {"experimentName": "", "startIndex": 0, "sliceSize": 100,
               "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]}
    deadline = time.monotonic() + timeout
    while True:
        try:
            groups = _post_json(f"{url}/data/plugin/hparams/session_groups", request)["sessionGroups"]
            if len(groups) >= expected:
                return groups
        except (OSError, KeyError):
            pass  # The server is still starting or loading the event files.
        if time.monotonic() > deadline:
            raise TimeoutError(f"TensorBoard did not serve {expected} HParams session groups in {timeout} s.")
        time.sleep(1)


def test_hparams_served_by_tensorboard(grid_search):
    trials = _trials(grid_search["project"])
    with _tensorboard(grid_search["project"] / "logs") as url:
        groups = _session_groups(url, expected=len(trials))
        experiment = _post_json(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""})
        with urllib.request.urlopen(f"{url}/data/runs", timeout=10) as response:
            runs = json.loads(response.read())

    assert {info["name"] for info in experiment["hparamInfos"]} == {"activation", SLOPE}
    assert {group["name"] for group in groups} == set(trials)
    for group in groups:
        trial = trials[group["name"]]
        values = trial["hyperparameters"]["values"]
        assert group["hparams"]["activation"] == values["activation"]
        if values["activation"] == "leaky_relu":
            assert group["hparams"][SLOPE] == pytest.approx(values[SLOPE])
        else:
            assert SLOPE not in group["hparams"]
        metrics = {(m["name"]["group"], m["name"]["tag"]): m["value"] for m in group["metricValues"]}
        assert metrics[("validation", "epoch_accuracy")] == pytest.approx(trial["score"])
        (session,) = group["sessions"]
        assert session["name"] == f"{group['name']}/execution0"
        assert f"{group['name']}/execution0/train" in runs
        assert f"{group['name']}/execution0/validation" in runs


def test_objective_not_logged_lists_metrics(tmp_path, capsys):
    project = tmp_path / "project"
    status, _, err = run_cli(["search", "--tuner", "random", "--trials", "1", "--max-epochs", "1",
                               "--objective", "val_auc", "--project", str(project), *TINY], capsys)
    assert status == 2
    assert "The objective 'val_auc' is not a metric that training logs." in err
    for metric in ("'accuracy'", "'val_accuracy'", "'val_loss'"):
        assert metric in err
    assert len(err.strip().splitlines()) == 1
    assert not any(trial["status"] == "COMPLETED" for trial in _trials(project).values())


def test_objective_without_direction_fails_early(tmp_path, capsys):
    project = tmp_path / "project"
    status, _, err = run_cli(["search", "--tuner", "random", "--trials", "1", "--max-epochs", "1",
                               "--objective", "val_sharpness", "--project", str(project), *TINY], capsys)
    assert status == 2
    assert "Cannot infer whether to maximize or minimize the objective 'val_sharpness'" in err
    assert not project.exists()


def test_hyperband_minimizes_loss(tmp_path, capsys):
    project = tmp_path / "project"
    space = tmp_path / "space.yaml"
    space.write_text("dropout: [0.0, 0.5]\nlearning_rate: {min: 1.0e-3, max: 1.0e-2, sampling: log}\n")
    status, out, err = run_cli(["search", "--space", str(space), "--objective", "val_loss",
                                 "--max-epochs", "2", "--factor", "2", "--trials", "3",
                                 "--project", str(project), *TINY_VERBOSE], capsys)
    assert status == 0, err
    assert out.count("Running Trial #") == 3
    trials = _trials(project)
    assert len(trials) == 3
    assert any("tuner/epochs" in trial["hyperparameters"]["values"] for trial in trials.values())
    document = json.loads((project / "results.json").read_text())
    assert document["objective"] == {"name": "val_loss", "direction": "min"}
    assert document["columns"] == ["rank", "trial_id", "score", "dropout", "learning_rate"]
    scores = [row["score"] for row in document["trials"]]
    assert scores == sorted(scores)
    assert scores[0] == pytest.approx(min(t["score"] for t in trials.values() if t["status"] == "COMPLETED"))


BAD_FLAGS = [
    ("zero trials", ["--trials", "0"], "expected a positive integer, received '0'"),
    ("zero epochs", ["--max-epochs", "0"], "expected a positive integer, received '0'"),
    ("hyperband factor one", ["--factor", "1"], "Hyperband's factor must be >= 2"),
    ("fixed field in set", ["--set", "colour=red"], "Unknown recipe field 'colour'"),
]


@pytest.mark.parametrize("case, flags, message", BAD_FLAGS, ids=[case for case, _, _ in BAD_FLAGS])
def test_bad_flags_exit_2(tmp_path, capsys, case, flags, message):
    project = tmp_path / "project"
    status, _, err = run_cli(["search", "--project", str(project), *flags], capsys)
    assert status == 2
    assert message in err
    assert "Traceback" not in err
    assert not project.exists() or not list(project.glob("trial_*"))


@pytest.mark.parametrize("text, message", [
    ("colour: [red, blue]\n", "Unknown recipe field 'colour' in the search space"),
    ("activation: []\n", "needs a non-empty list of values"),
    ("learning_rate: {min: 0.1, max: 0.001}\n", "needs min <= max"),
    ("activation: [relu, elu\n", "is not valid JSON or YAML: expected ',' or ']'"),
], ids=["unknown field", "empty choice", "min above max", "unclosed list"])
def test_bad_space_file_exits_2(tmp_path, capsys, text, message):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    project = tmp_path / "project"
    status, _, err = run_cli(["search", "--space", str(space), "--project", str(project)], capsys)
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not project.exists()


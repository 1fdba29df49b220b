"""A search process killed by SIGKILL mid-search resumes without re-running completed trials."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.recipes.test_search import TINY

TRIALS = 3


def _trials(project):
    trials = {}
    for path in Path(project).glob("trial_*/trial.json"):
        try:
            trial = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue  # keras-tuner is writing this file right now.
        trials[trial["trial_id"]] = trial
    return trials


def _completed(project):
    return {trial_id: trial for trial_id, trial in _trials(project).items() if trial["status"] == "COMPLETED"}


def _search_command(project, space):
    return [sys.executable, "-m", "kerastricks.recipes.cli", "search", "--space", str(space),
            "--tuner", "random", "--trials", str(TRIALS), "--max-epochs", "1",
            "--project", str(project), *TINY]


def test_killed_search_resumes(tmp_path):
    project = tmp_path / "project"
    space = tmp_path / "space.yaml"
    space.write_text("activation: [relu, elu, tanh]\ndropout: [0.0, 0.25]\n")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    first = subprocess.Popen(_search_command(project, space), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=environment, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 180
        # Kill inside a trial's training: after one trial completed and the next one started,
        # so that no keras-tuner state file is half written.
        while not _completed(project) or len(_trials(project)) == len(_completed(project)):
            assert first.poll() is None, f"the search ended before it was killed: {first.stderr.read()}"
            assert time.monotonic() < deadline, "no trial completed within 180 s"
            time.sleep(0.2)
        time.sleep(1.0)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
        first.stderr.close()

    done_before = _completed(project)
    assert 1 <= len(done_before) < TRIALS
    event_files = {trial_id: sorted((project / "logs" / trial_id).rglob("events.out.*"))
                   for trial_id in done_before}

    second = subprocess.run(_search_command(project, space), capture_output=True, text=True,
                            env=environment, cwd=tmp_path, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "Reloading Tuner" in second.stdout

    done_after = _completed(project)
    assert len(done_after) == TRIALS
    assert len(_trials(project)) == TRIALS
    for trial_id, trial in done_before.items():
        # A completed trial keeps its score and its TensorBoard run gets no new event file.
        assert done_after[trial_id]["score"] == trial["score"]
        assert sorted((project / "logs" / trial_id).rglob("events.out.*")) == event_files[trial_id]
    rows = json.loads((project / "results.json").read_text())["trials"]
    assert len(rows) == TRIALS

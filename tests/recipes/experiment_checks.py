"""Shared checks for the experiments' end-to-end tests."""

import json
from pathlib import Path

from kerastricks.recipes.experiments import (
    INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, read_run, row_values,
)
from tests.recipes.cli_runner import run_cli

# The experiments' tests run on this many Fashion-MNIST images for one epoch: enough for every
# code path, small enough for the CI budget.
TINY_FLAGS = ["--quick", "--dataset", "fashion_mnist", "--subset", "600", "--epochs", "1", "--quiet"]


def run_experiment_cli(name, logdir, capsys, *flags):
    """Run `kerastricks run NAME --quick` on a tiny subset; return (status, stdout, stderr)."""
    return run_cli(["run", name, *TINY_FLAGS, "--logdir", str(logdir), *flags], capsys)


def check_experiment_folder(folder, variants):
    """Check an experiment folder: summary, table, figures, and rows equal to the runs' files."""
    folder = Path(folder)
    summary = json.loads((folder / "experiment.json").read_text(encoding="utf-8"))
    assert [row["variant"] for row in summary["rows"]] == list(variants)
    assert summary["verdict"]["status"] in (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)
    assert summary["verdict"]["text"]
    for row in summary["rows"]:
        expected = row_values(*read_run(folder / row["run"]))
        for key, value in expected.items():
            assert row[key] == value, (row["variant"], key)
    table = (folder / "table.md").read_text(encoding="utf-8")
    for variant in variants:
        assert f"| {variant} |" in table
    for figure in summary["figures"]:
        png = (folder / figure["file"]).read_bytes()
        assert png.startswith(b"\x89PNG"), figure["file"]
    return summary

"""The experiment framework, the report, and the activation experiment end to end."""

import json

import pytest

from kerastricks.recipes.activation_compare import verdict as activation_verdict
from kerastricks.recipes.experiments import (
    Column, Experiment, accuracy_margin, experiment_command, format_table, row_values, slug,
)
from kerastricks.recipes.registry import EXPERIMENTS
from kerastricks.recipes.report import collect
from kerastricks.recipes.spec import Recipe, RecipeError
from tests.recipes.cli_runner import run_cli
from tests.recipes.experiment_checks import check_experiment_folder, run_experiment_cli

ACTIVATION_VARIANTS = ("sigmoid", "tanh", "ReLU", "Leaky ReLU 0.01", "Leaky ReLU 0.18", "PReLU",
                       "RReLU")


def test_slug_keeps_digits_and_dots():
    assert slug("Leaky ReLU 0.01") == "leaky-relu-0.01"
    assert slug("none / flips") == "none-flips"


def test_row_values_derive_errors():
    metrics = {"test_accuracy": 0.9, "train_accuracy": 0.95, "train_seconds": 12.0, "epochs": 3,
               "history": {"val_accuracy": [0.7, 0.85, 0.8]}}
    values = row_values(metrics, {"dead_fraction": 0.25})
    assert values["test_error"] == pytest.approx(0.1)
    assert values["train_error"] == pytest.approx(0.05)
    assert values["gap"] == pytest.approx(0.05)
    assert values["best_val_accuracy"] == 0.85
    assert values["final_val_accuracy"] == 0.8
    assert values["dead_fraction"] == 0.25


def test_row_values_without_train_evaluation():
    values = row_values({"test_accuracy": 0.5, "train_seconds": 1.0, "epochs": 1})
    assert "gap" not in values
    assert values["train_accuracy"] is None


def test_format_table_percent_and_missing():
    columns = (Column("test_error", "test error", "%"), Column("dead", "dead", ".2f"))
    table = format_table(columns, [{"variant": "a", "test_error": 0.0834, "dead": None}])
    assert table.splitlines()[2] == "| a | 8.34 % | n/a |"


def test_experiment_command_repeats_changes():
    command = experiment_command("activation_compare", "quick",
                                 {"subset": 600, "dataset": "digits", "lr_schedule": "step"})
    assert command == ("kerastricks run activation_compare --quick --dataset digits "
                       "--set lr_schedule=\"step\" --subset 600")
    assert experiment_command("dead_relu", "full", logdir="out/runs") == (
        "kerastricks run dead_relu --logdir out/runs")


def test_variant_fields_follow_the_size():
    experiment = Experiment(
        name="toy", title="toy", claim="c", source="s", recipe=Recipe(epochs=6), quick={"epochs": 2},
        variants={"half": {"swa_start": lambda base: base.epochs // 2}},
        columns=(Column("test_error", "test error", "%"),), verdict=lambda rows: None,
    )
    assert experiment.variant_recipe(experiment.base_recipe("full"), "half").swa_start == 3
    assert experiment.variant_recipe(experiment.base_recipe("quick"), "half").swa_start == 1
    with pytest.raises(RecipeError, match="'tiny'"):
        experiment.base_recipe("tiny")


@pytest.mark.experiment
def test_activation_experiment_and_report(tmp_path, capsys):
    status, out, err = run_experiment_cli("activation_compare", tmp_path / "runs", capsys)
    assert status == 0, err
    assert "| RReLU |" in out
    assert "Verdict:" in out
    folder = tmp_path / "runs" / "activation_compare"
    summary = check_experiment_folder(folder, ACTIVATION_VARIANTS)
    assert summary["size"] == "quick"
    assert summary["images"]["train"] == 540
    assert summary["command"].startswith("kerastricks run activation_compare --quick")
    # Every variant ran with its own activation and the final training error measured.
    for row in summary["rows"]:
        saved = Recipe.from_file(folder / row["run"] / "recipe.json")
        assert saved.evaluate_train and not saved.batch_norm
    assert {Recipe.from_file(folder / r["run"] / "recipe.json").activation
            for r in summary["rows"]} == {"sigmoid", "tanh", "relu", "leaky_relu", "prelu", "rrelu"}

    # A second run reuses the finished folders instead of training again.
    status, out, _ = run_experiment_cli("activation_compare", tmp_path / "runs", capsys)
    assert status == 0
    assert out.count("reusing the finished run") == len(ACTIVATION_VARIANTS)

    report = tmp_path / "docs" / "report.md"
    status, out, err = run_cli(["report", "--logdir", str(tmp_path / "runs"), "--out", str(report)],
                               capsys)
    assert status == 0, err
    text = report.read_text(encoding="utf-8")
    # The report's numbers are those of the runs' metrics.json files.
    for row in summary["rows"]:
        metrics = json.loads((folder / row["run"] / "metrics.json").read_text(encoding="utf-8"))
        assert f"| {row['variant']} | {100 * (1 - metrics['test_accuracy']):.2f} % |" in text
    assert "kerastricks run activation_compare --quick" in text
    for figure in summary["figures"]:
        assert (tmp_path / "docs" / "report_figures" / "activation_compare" / figure["file"]).is_file()
        assert f"report_figures/activation_compare/{figure['file']}" in text
    # Experiments that have not run are listed with the command that runs them.
    for name in set(EXPERIMENTS) - {"activation_compare"}:
        assert f"- `{name}`: `kerastricks run {name} --logdir {tmp_path / 'runs'}`" in text
    found, missing = collect(tmp_path / "runs", list(EXPERIMENTS))
    assert [summary["name"] for summary in found] == ["activation_compare"]


def test_report_lists_missing_experiments(tmp_path, capsys):
    status, out, err = run_cli(["report", "--logdir", str(tmp_path / "empty"),
                                "--out", str(tmp_path / "report.md")], capsys)
    assert status == 0, err
    assert "not run yet: activation_compare" in out
    report = (tmp_path / "report.md").read_text("utf-8")
    assert f"kerastricks run activation_compare --logdir {tmp_path / 'empty'}" in report


def test_inapplicable_flags_exit_2(tmp_path, capsys):
    status, _, err = run_cli(["run", "activation_compare", "--resume", "--logdir",
                              str(tmp_path)], capsys)
    assert status == 2
    assert "--resume applies to single recipes" in err
    status, _, err = run_cli(["run", "baseline", "--quick", "--logdir", str(tmp_path)], capsys)
    assert status == 2
    assert "--quick applies to experiments" in err
    status, _, err = run_cli(["report", "--only", "nonsense", "--logdir", str(tmp_path)], capsys)
    assert status == 2
    assert "'nonsense'" in err


def test_other_finished_run_is_kept(tmp_path, capsys):
    folder = tmp_path / "activation_compare" / "sigmoid"
    folder.mkdir(parents=True)
    Recipe(name="other").save(folder / "recipe.json")
    (folder / "status.json").write_text(json.dumps({"state": "complete"}), encoding="utf-8")
    status, _, err = run_experiment_cli("activation_compare", tmp_path, capsys)
    assert status == 2
    assert "contains a finished run with other settings" in err
    assert Recipe.from_file(folder / "recipe.json").name == "other"



def test_accuracy_margin_is_two_standard_errors():
    assert accuracy_margin(0.9, 10000) == pytest.approx(2 * (0.9 * 0.1 / 10000) ** 0.5)
    assert accuracy_margin(0.5, 100) == pytest.approx(0.1)


def _activation_rows(errors):
    return [{"variant": name, "test_error": errors.get(name, 0.1), "gap": 0.01,
             "test_images": 10000} for name in ACTIVATION_VARIANTS]


def test_activation_verdict_uses_the_noise_margin():
    clear = _activation_rows({"sigmoid": 0.2, "tanh": 0.15})
    assert activation_verdict(clear).status == "supported"
    # Two standard errors of 0.105 on 10,000 images are 0.61 points.
    close = _activation_rows({"sigmoid": 0.2, "tanh": 0.105})
    assert activation_verdict(close).status == "inconclusive"
    assert "5 of 5 rectifiers beat sigmoid and 0 beat tanh" in activation_verdict(close).text
    none_better = _activation_rows({"sigmoid": 0.1, "tanh": 0.1})
    assert activation_verdict(none_better).status == "not supported"
    mixed = _activation_rows({"sigmoid": 0.2, "tanh": 0.15, "PReLU": 0.16})
    assert activation_verdict(mixed).status == "inconclusive"

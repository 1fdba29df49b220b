"""The regularization experiment: its variants and verdict, and a tiny run end to end."""

import pytest

from kerastricks.recipes.experiments import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from kerastricks.recipes.regularization_compare import EXPERIMENT, verdict
from kerastricks.recipes.spec import Recipe
from tests.recipes.experiment_checks import check_experiment_folder, run_experiment_cli

VARIANTS = ("none", "L2 5e-4", "L1 1e-5", "max-norm 3", "dropout 0.5", "L2 + max-norm + dropout")
# The regularization fields of each variant; everything else stays the base recipe's.
FIELDS = {
    "none": {"l2": 0.0, "l1": 0.0, "max_norm": 0.0, "dropout": 0.0},
    "L2 5e-4": {"l2": 5e-4, "l1": 0.0, "max_norm": 0.0, "dropout": 0.0},
    "L1 1e-5": {"l2": 0.0, "l1": 1e-5, "max_norm": 0.0, "dropout": 0.0},
    "max-norm 3": {"l2": 0.0, "l1": 0.0, "max_norm": 3.0, "dropout": 0.0},
    "dropout 0.5": {"l2": 0.0, "l1": 0.0, "max_norm": 0.0, "dropout": 0.5},
    "L2 + max-norm + dropout": {"l2": 5e-4, "l1": 0.0, "max_norm": 3.0, "dropout": 0.5},
}


def made_up_rows(gaps, test_errors):
    return [{"variant": label, "gap": gap, "test_error": error}
            for label, gap, error in zip(VARIANTS, gaps, test_errors)]


@pytest.mark.parametrize("gaps, test_errors, status", [
    # Every regularizer narrows the gap, dropout has the lowest single test error.
    ((0.08, 0.05, 0.06, 0.07, 0.02, 0.01), (0.15, 0.14, 0.145, 0.148, 0.13, 0.135), SUPPORTED),
    # Only two narrow the gap, and L2 beats dropout.
    ((0.05, 0.04, 0.06, 0.07, 0.04, 0.06), (0.15, 0.12, 0.145, 0.148, 0.13, 0.135), NOT_SUPPORTED),
    # The gaps narrow, but L1 beats dropout.
    ((0.08, 0.05, 0.06, 0.07, 0.02, 0.01), (0.15, 0.14, 0.12, 0.148, 0.13, 0.135), INCONCLUSIVE),
    # Dropout is best, but only three of five narrow the gap.
    ((0.05, 0.04, 0.06, 0.07, 0.02, 0.01), (0.15, 0.14, 0.145, 0.148, 0.13, 0.135), INCONCLUSIVE),
])
def test_verdict_on_made_up_rows(gaps, test_errors, status):
    result = verdict(made_up_rows(gaps, test_errors))
    assert result.status == status
    assert f"without regularization {100 * gaps[0]:.2f}" in result.text


def test_verdict_counts_the_narrower_gaps():
    rows = made_up_rows((0.05, 0.04, 0.06, 0.07, 0.02, 0.01),
                        (0.15, 0.14, 0.145, 0.148, 0.13, 0.135))
    narrower = sum(gap < 0.05 for gap in (0.04, 0.06, 0.07, 0.02, 0.01))
    text = verdict(rows).text
    assert f"{narrower} of 5 regularized variants narrow the gap" in text
    assert "(L2 + max-norm + dropout the most)" in text


def test_variants_change_only_regularizers():
    full, quick = EXPERIMENT.base_recipe("full"), EXPERIMENT.base_recipe("quick")
    assert (full.subset, full.epochs) == (12000, 15)
    assert (quick.subset, quick.epochs) == (3000, 6)
    assert full.evaluate_train
    for label in VARIANTS:
        recipe = EXPERIMENT.variant_recipe(full, label)
        assert {key: getattr(recipe, key) for key in FIELDS[label]} == FIELDS[label]
        assert recipe.replace(name=full.name, **FIELDS["none"]) == full


@pytest.mark.experiment
def test_regularization_experiment_runs(tmp_path, capsys):
    status, out, err = run_experiment_cli("regularization_compare", tmp_path / "runs", capsys)
    assert status == 0, err
    assert "| dropout 0.5 |" in out
    assert "Verdict:" in out
    folder = tmp_path / "runs" / "regularization_compare"
    summary = check_experiment_folder(folder, VARIANTS)
    assert summary["images"]["train"] == 540
    for row in summary["rows"]:
        saved = Recipe.from_file(folder / row["run"] / "recipe.json")
        expected = FIELDS[row["variant"]]
        assert {key: getattr(saved, key) for key in expected} == expected
        assert row["gap"] == pytest.approx(row["test_error"] - row["train_error"])

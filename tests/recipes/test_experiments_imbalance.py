"""The class-imbalance experiment end to end."""

import json

import pytest

from kerastricks.recipes.data import FASHION_MNIST_CLASSES
from kerastricks.recipes.imbalance_compare import EXPERIMENT, MINORITY_CLASSES, REMEDIES, verdict
from kerastricks.recipes.spec import Recipe
from tests.recipes.experiment_checks import check_experiment_folder, run_experiment_cli


def test_two_stage_half_the_epochs():
    for size, epochs in (("quick", 4), ("full", 5)):
        base = EXPERIMENT.base_recipe(size)
        assert base.epochs == epochs
        assert EXPERIMENT.variant_recipe(base, "two-stage").two_stage_epochs == epochs // 2
        replay = EXPERIMENT.variant_recipe(base, "two-stage with replay")
        assert replay.two_stage_epochs == epochs // 2
        assert replay.two_stage_replay == 0.5


def _rows(minority, balanced):
    return [{"variant": name, "minority_recall": minority.get(name, 0.5),
             "majority_recall": 0.9, "balanced_accuracy": balanced.get(name, 0.8),
             "test_images": 10000}
            for name in REMEDIES]


def test_verdict_needs_every_remedy_beyond_the_noise():
    helped = _rows({"none": 0.3}, {"none": 0.7})
    assert verdict(helped).status == "supported"
    assert "30.0 % minority recall" in verdict(helped).text
    # Two standard errors of a recall of 0.3 on the 5,000 minority test images.
    margin = 2 * (0.3 * 0.7 / 5000) ** 0.5
    assert f"{100 * margin:.1f} points of minority recall" in verdict(helped).text
    within_noise = _rows({"none": 0.3, "resampling": 0.3 + margin / 2}, {"none": 0.7})
    assert verdict(within_noise).status == "inconclusive"
    forgets = _rows({"none": 0.3}, {"none": 0.7, "two-stage": 0.4})
    assert verdict(forgets).status == "inconclusive"
    assert "two-stage lower the balanced accuracy" in verdict(forgets).text
    none_help = _rows({"none": 0.9}, {"none": 0.9})
    assert verdict(none_help).status == "not supported"


@pytest.mark.experiment
def test_imbalance_experiment_reports_minority_recall(tmp_path, capsys):
    status, out, err = run_experiment_cli("imbalance_compare", tmp_path, capsys, "--epochs", "2")
    assert status == 0, err
    folder = tmp_path / "imbalance_compare"
    summary = check_experiment_folder(folder, list(REMEDIES))
    minority_names = {FASHION_MNIST_CLASSES[c] for c in MINORITY_CLASSES}
    for row in summary["rows"]:
        metrics = json.loads((folder / row["run"] / "metrics.json").read_text("utf-8"))
        recalls = metrics["recall_per_class"]
        expected = sum(recalls[n] for n in minority_names) / len(minority_names)
        assert row["minority_recall"] == pytest.approx(expected)
        others = [recalls[n] for n in recalls if n not in minority_names]
        assert row["majority_recall"] == pytest.approx(sum(others) / len(others))
    saved = Recipe.from_file(folder / "class-weights" / "recipe.json")
    assert saved.class_weight == "balanced"
    assert set(saved.imbalance) == {str(c) for c in MINORITY_CLASSES}

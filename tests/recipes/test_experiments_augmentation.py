"""The augmentation experiment: variants by channels, verdict, and a tiny run end to end on a
folder of RGB images."""

import json

import pytest

from kerastricks.recipes.augmentation_compare import (
    ALL, COLOUR_VARIANTS, EXPERIMENT, GRAYSCALE_VARIANTS, best_epoch, variant_labels, verdict,
)
from kerastricks.recipes.experiments import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from kerastricks.recipes.spec import Recipe, RecipeError
from tests.recipes.experiment_checks import check_experiment_folder, run_experiment_cli
from tests.recipes.image_files import write_png_folder

GRAYSCALE = ("none", "flips", "pad-and-crop", "random-resized crop", "brightness + contrast",
             "erasing", "all")
COLOUR = ("colour jitter (HSV)", "fancy PCA", "all + colour")


def test_variant_labels_depend_on_channels():
    assert variant_labels(1) == list(GRAYSCALE)
    assert variant_labels(3) == list(GRAYSCALE + COLOUR)


def test_all_variant_combines_the_single_augmentations():
    singles = [name for label, names in GRAYSCALE_VARIANTS.items() if label != ALL
               for name in names]
    assert GRAYSCALE_VARIANTS[ALL] == singles
    colour = COLOUR_VARIANTS["all + colour"]["augmentation"]
    assert colour == singles + ["color_jitter", "fancy_pca"]


def test_colour_variants_are_rejected_on_fashion_mnist():
    base = EXPERIMENT.base_recipe("quick")
    for label in GRAYSCALE:
        assert EXPERIMENT.variant_recipe(base, label).augmentation == GRAYSCALE_VARIANTS[label]
    assert list(EXPERIMENT.variants) == list(GRAYSCALE)
    cifar = EXPERIMENT.base_recipe("quick", {"dataset": "cifar10"})
    for label in COLOUR:
        with pytest.raises(RecipeError, match="grayscale images with 1 channel"):
            base.replace(**COLOUR_VARIANTS[label])
        assert cifar.replace(**COLOUR_VARIANTS[label]).augmentation == (
            COLOUR_VARIANTS[label]["augmentation"])


def test_best_epoch_skips_missing_values():
    assert best_epoch({"val_accuracy": [0.5, 0.7, None, 0.6]}) == 2
    assert best_epoch({"val_accuracy": [0.9]}) == 1
    assert best_epoch({"val_accuracy": [None]}) is None
    assert best_epoch({}) is None


def made_up_rows(gaps, test_errors, best_epochs=None):
    best_epochs = best_epochs or [3] * len(GRAYSCALE)
    return [{"variant": label, "gap": gap, "test_error": error, "best_epoch": epoch}
            for label, gap, error, epoch in zip(GRAYSCALE, gaps, test_errors, best_epochs)]


NARROWER_GAPS = (0.08, 0.05, 0.04, 0.03, 0.07, 0.06, 0.0)


@pytest.mark.parametrize("gaps, test_errors, status", [
    (NARROWER_GAPS, (0.15, 0.14, 0.13, 0.14, 0.16, 0.145, 0.12), SUPPORTED),
    (NARROWER_GAPS, (0.15, 0.16, 0.17, 0.18, 0.16, 0.155, 0.2), NOT_SUPPORTED),
    # Every gap narrows, but only two augmentations lower the test error.
    (NARROWER_GAPS, (0.15, 0.16, 0.13, 0.18, 0.16, 0.155, 0.12), INCONCLUSIVE),
])
def test_verdict_on_made_up_rows(gaps, test_errors, status):
    result = verdict(made_up_rows(gaps, test_errors))
    assert result.status == status
    # Only a test error lower by more than two standard errors (10,000 test images) counts.
    margin = 2 * (test_errors[0] * (1 - test_errors[0]) / 10000) ** 0.5
    better = sum(error < test_errors[0] - margin for error in test_errors[1:])
    assert f"and {better} {'lowers' if better == 1 else 'lower'} the test error" in result.text


def test_verdict_counts_later_best_epochs():
    rows = made_up_rows((0.08,) * 7, (0.15,) * 7, best_epochs=[2, 3, 2, 6, 1, 4, 2])
    assert "3 of 6 augmented variants reach their best validation accuracy at a later epoch" in (
        verdict(rows).text)


@pytest.mark.experiment
def test_augmentation_experiment_adds_colour_variants_on_rgb(tmp_path, capsys):
    # The one end-to-end run uses RGB images, which run every variant; the grayscale list is
    # `variant_labels(1)`, tested above.
    images = write_png_folder(tmp_path / "colour", {"red": 15, "blue": 15}, size=(16, 16),
                              mode="RGB")
    flags = ("--dataset", f"folder:{images}")
    status, out, err = run_experiment_cli("augmentation_compare", tmp_path / "runs", capsys, *flags)
    assert status == 0, err
    assert "| fancy PCA |" in out
    assert "| all + colour |" in out
    assert "Verdict:" in out
    folder = tmp_path / "runs" / "augmentation_compare"
    summary = check_experiment_folder(folder, GRAYSCALE + COLOUR)
    assert summary["base_recipe"]["dataset"] == f"folder:{images}"
    assert summary["size"] == "quick"
    for row in summary["rows"]:
        saved = Recipe.from_file(folder / row["run"] / "recipe.json")
        fields = {**EXPERIMENT.variants, **COLOUR_VARIANTS}[row["variant"]]
        assert saved.augmentation == fields["augmentation"]
        metrics = json.loads((folder / row["run"] / "metrics.json").read_text("utf-8"))
        assert row["best_epoch"] == best_epoch(metrics["history"])

    # A second run reuses the finished folders.
    status, out, _ = run_experiment_cli("augmentation_compare", tmp_path / "runs", capsys, *flags)
    assert status == 0
    assert out.count("reusing the finished run") == len(GRAYSCALE + COLOUR)


def test_finished_run_with_other_settings_is_kept(tmp_path, capsys):
    folder = tmp_path / "augmentation_compare" / "none"
    folder.mkdir(parents=True)
    Recipe(name="other").save(folder / "recipe.json")
    (folder / "status.json").write_text(json.dumps({"state": "complete"}), encoding="utf-8")
    status, _, err = run_experiment_cli("augmentation_compare", tmp_path, capsys)
    assert status == 2
    assert "a finished run with other settings" in err
    assert Recipe.from_file(folder / "recipe.json").name == "other"

"""The fine-tuning experiment end to end."""

import json

import numpy as np
import pytest

from kerastricks.recipes.finetune_compare import VARIANTS, select_classes, verdict
from tests.recipes.experiment_checks import check_experiment_folder, run_experiment_cli

LABELS = ["pre-trained model (classes 0-4)",
          *(f"{name}, {size}" for size in ("500 images", "all images") for name in VARIANTS)]


def test_select_classes_renumbers_and_limits():
    labels = np.array([5, 0, 9, 7, 5, 2])
    images = np.arange(6)[:, None]
    chosen, renumbered = select_classes(images, labels, (5, 6, 7, 8, 9))
    assert chosen.ravel().tolist() == [0, 2, 3, 4]
    assert renumbered.tolist() == [0, 4, 2, 0]
    assert len(select_classes(images, labels, (5, 6, 7, 8, 9), limit=2)[1]) == 2


def _rows(small, large):
    rows = [{"variant": LABELS[0], "test_accuracy": 0.9, "test_images": 5000}]
    for size, values in (("500 images", small), ("all images", large)):
        rows += [{"variant": f"{name}, {size}", "test_accuracy": values.get(name, 0.5),
                  "test_images": 5000} for name in VARIANTS]
    return rows


def test_verdict_checks_both_halves_beyond_the_noise():
    both = _rows({"similar_small": 0.8, "from scratch": 0.6}, {"similar_large": 0.9})
    assert verdict(both).status == "supported"
    assert "similar_large, reaches 90.0 %" in verdict(both).text
    small_only = _rows({"similar_small": 0.8, "from scratch": 0.6},
                       {"different_large": 0.4, "similar_small": 0.7})
    assert verdict(small_only).status == "inconclusive"
    # Two standard errors of 0.8 on 5,000 test images are 1.1 points.
    within_noise = _rows({"similar_small": 0.805, "from scratch": 0.8},
                         {"different_large": 0.805, "similar_small": 0.8})
    assert verdict(within_noise).status == "not supported"
    assert "noise 1.1" in verdict(within_noise).text


@pytest.mark.experiment
def test_finetune_experiment_runs_every_strategy(tmp_path, capsys):
    status, out, err = run_experiment_cli("finetune_compare", tmp_path, capsys)
    assert status == 0, err
    folder = tmp_path / "finetune_compare"
    summary = check_experiment_folder(folder, LABELS)
    images = {row["variant"]: row["train_images"] for row in summary["rows"]}
    # The tiny subset has fewer than 500 images of classes 5-9, so both sizes use them all.
    available = images["from scratch, all images"]
    assert 0 < available < 500
    assert images["similar_small, 500 images"] == available
    frozen = [row for row in summary["rows"] if row["variant"].startswith("similar_small")]
    scratch = [row for row in summary["rows"] if row["variant"].startswith("from scratch")]
    # A frozen base trains only the new head: far fewer weights than a network from scratch.
    assert all(f["trainable_parameters"] < s["trainable_parameters"] / 5
               for f, s in zip(frozen, scratch))
    metrics = [json.loads((folder / row["run"] / "metrics.json").read_text("utf-8"))
               for row in summary["rows"]]
    assert summary["train_seconds"] == pytest.approx(sum(m["train_seconds"] for m in metrics),
                                                     abs=0.2)
    # A second run reuses the finished variants.
    status, out, _ = run_experiment_cli("finetune_compare", tmp_path, capsys)
    assert status == 0
    assert "[finetune_compare] fine-tuning" not in out

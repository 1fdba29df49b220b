"""Experiment: data augmentation against overfitting on Fashion-MNIST.

Trick: train on randomly transformed copies of the training images (horizontal flips, padding
and random crops, random-resized crops, brightness and contrast changes, random erasing), so
that the network trains on more distinct images and overfits less.
Source: the data augmentation section of Wei's survey "Must Know Tips/Tricks in Deep Neural
Networks" (flips, random crops, colour jittering, fancy PCA from Krizhevsky et al., "ImageNet
Classification with Deep Convolutional Neural Networks", NIPS 2012), and random erasing (Zhong
et al., "Random Erasing Data Augmentation", AAAI 2020).

Design: the experiments' small CNN with batch normalization and Adam, on 12,000 training images
for 15 epochs (3,000 images for 6 epochs at the quick size), so that the network without
augmentation overfits visibly. Only the recipe's `augmentation` list changes; validation and
test images are never augmented. The colour augmentations `color_jitter` (hue, saturation and
value jitter) and `fancy_pca` need RGB images, but Fashion-MNIST is grayscale. They run only
when `--dataset` has 3 channels, such as a `folder:PATH` of colour images or cifar10 (online),
because the runner picks the variants from the loaded images' channels.

Run:

    kerastricks run augmentation_compare --quick     # 205 s, two CPU cores, load average 7
    kerastricks run augmentation_compare --quick --dataset folder:/data/colour-images
    python -m kerastricks.recipes.augmentation_compare

The full size trains ten times as many image-epochs as the quick size: an estimated 9 to 13
minutes on an idle 2-core machine, scaled from the quick run at that load.
"""

if __name__ == "__main__":
    from kerastricks.recipes.quiet import quiet_tensorflow

    quiet_tensorflow()

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from kerastricks.recipes.experiments import (  # noqa: E402
    GAP, INCONCLUSIVE, MEASUREMENTS_FILE, NOT_SUPPORTED, SUPPORTED, TEST_ERROR, TRAIN_ERROR,
    TRAIN_SECONDS, Column, Experiment, Verdict, accuracy_margin, experiment_recipe, read_run,
    row_of, slug,
)

NONE = "none"
ALL = "all"
ALL_WITH_COLOUR = "all + colour"
# The augmentations every image accepts, then those of RGB images only.
GRAYSCALE_VARIANTS = {
    NONE: [],
    "flips": ["flip"],
    "pad-and-crop": ["pad_crop"],
    "random-resized crop": ["resized_crop"],
    "brightness + contrast": ["brightness", "contrast"],
    "erasing": ["erasing"],
    ALL: ["flip", "pad_crop", "resized_crop", "brightness", "contrast", "erasing"],
}
# Recipe fields of the colour variants. They are not in `EXPERIMENT.variants`, because the
# experiment builds every listed variant's recipe before it loads the data, and a recipe with a
# colour augmentation on a grayscale data set is invalid.
COLOUR_VARIANTS = {
    "colour jitter (HSV)": {"augmentation": ["color_jitter"]},
    "fancy PCA": {"augmentation": ["fancy_pca"]},
    ALL_WITH_COLOUR: {"augmentation": [*GRAYSCALE_VARIANTS[ALL], "color_jitter", "fancy_pca"]},
}

BEST_EPOCH = Column("best_epoch", "best val. epoch", "d")


def variant_labels(channels):
    """Return the labels of the variants that run on images with `channels` channels."""
    labels = list(GRAYSCALE_VARIANTS)
    if channels == 3:
        labels += list(COLOUR_VARIANTS)
    return labels


def best_epoch(history):
    """Return the 1-based epoch of the highest validation accuracy in a run's history, or
    `None` when the history has no validation accuracy."""
    accuracy = [np.nan if value is None else value for value in history.get("val_accuracy", [])]
    if not accuracy or np.all(np.isnan(accuracy)):
        return None
    return int(np.nanargmax(accuracy)) + 1


def run_variants(experiment, base, data, folder, train_run):
    """Train the grayscale variants, and the colour variants too when the images have 3
    channels; `train_run` reuses a finished run of the same recipe.

    Each run folder also gets `measurements.json` with the epoch of its best validation
    accuracy, read from its `metrics.json`.
    """
    from kerastricks.recipes.run_state import write_json

    runs = []
    for label in variant_labels(data.input_shape[-1]):
        if label in experiment.variants:
            recipe = experiment.variant_recipe(base, label)
        else:
            recipe = base.replace(name=f"{experiment.name}-{slug(label)}", **COLOUR_VARIANTS[label])
        run_dir = Path(folder) / slug(label)
        train_run(recipe, run_dir, label)
        metrics, _ = read_run(run_dir)
        write_json(run_dir / MEASUREMENTS_FILE,
                   {"best_epoch": best_epoch(metrics.get("history", {}))})
        runs.append((label, run_dir))
    return runs


def verdict(rows):
    """Judge the claim: it holds when more than half of the augmented variants narrow the test -
    train gap and more than half lower the test error of the network without augmentation. It
    does not hold when no augmented variant lowers the test error."""
    none = row_of(rows, NONE)
    augmented = [row for row in rows if row["variant"] != NONE]
    narrower = [row for row in augmented if row["gap"] < none["gap"]]
    # A lower test error counts only beyond two standard errors of the test split.
    margin = accuracy_margin(none["test_error"], none.get("test_images", 10000))
    better = [row for row in augmented if row["test_error"] < none["test_error"] - margin]
    best = min(augmented, key=lambda row: row["test_error"])
    later = [row for row in augmented
             if (row.get("best_epoch") or 0) > (none.get("best_epoch") or 0)]

    numbers = (f"without augmentation {100 * none['test_error']:.2f} % test error and a gap of "
               f"{100 * none['gap']:.2f} points; {len(narrower)} of {len(augmented)} augmented "
               f"variants narrow the gap and {len(better)} "
               f"{'lowers' if len(better) == 1 else 'lower'} the test error, best "
               f"{best['variant']} at {100 * best['test_error']:.2f} % (differences below "
               f"{100 * margin:.2f} points are within the noise)")
    epochs = (f"{len(later)} of {len(augmented)} augmented variants reach their best validation "
              f"accuracy at a later epoch than the variant without augmentation (epoch "
              f"{none.get('best_epoch')})")
    majority = len(augmented) / 2
    if len(narrower) > majority and len(better) > majority:
        return Verdict(SUPPORTED, f"Augmentation reduces overfitting and raises test accuracy: "
                                  f"{numbers}. {epochs}.")
    if not better:
        return Verdict(NOT_SUPPORTED, f"No augmentation lowers the test error here: {numbers}. "
                                      f"{epochs}.")
    return Verdict(INCONCLUSIVE, f"Only some augmentations help here: {numbers}. {epochs}.")


EXPERIMENT = Experiment(
    name="augmentation_compare",
    title="Data augmentation: flips, crops, brightness and contrast, erasing",
    claim="Data augmentation reduces overfitting and raises test accuracy; an augmented network "
          "needs more epochs to converge.",
    source="Survey section 1 (data augmentation); Krizhevsky et al. 2012; Zhong et al. 2020.",
    recipe=experiment_recipe("augmentation_compare", subset=12000, epochs=15),
    quick={"subset": 3000, "epochs": 6},
    variants={label: {"augmentation": entries} for label, entries in GRAYSCALE_VARIANTS.items()},
    columns=(TEST_ERROR, TRAIN_ERROR, GAP, BEST_EPOCH, TRAIN_SECONDS),
    verdict=verdict,
    runner=run_variants,
    notes="Every variant trains the same CNN (batch normalization, Adam at 0.001) from the same "
          "initial weights and batches on a subset of the training images; only "
          "the augmentation of the training batches changes, with the defaults of "
          "kerastricks.recipes.augmentation (pad-and-crop pads 4 pixels; random-resized crops "
          "keep 50 to 100 % of the area; brightness and contrast change by up to 20 %). "
          "Fashion-MNIST is grayscale: the colour jitter (HSV) and fancy PCA variants, and "
          "'all + colour', run only on RGB data sets; they are added to the rows then, not to "
          "the variants listed here. The train error is measured on unaugmented training images. "
          "One seed, and the test split shrinks with the subset, in proportion to the training "
          "images (the data line above gives the counts): the standard error of a test error "
          "p on n test images is sqrt(p * (1 - p) / n).",
)


if __name__ == "__main__":
    import sys

    from kerastricks.recipes.experiments import run_experiment_module

    sys.exit(run_experiment_module("augmentation_compare", sys.argv[1:]))

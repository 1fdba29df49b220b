"""Experiment: L2, L1, max-norm and dropout against overfitting on Fashion-MNIST.

Trick: regularize the network so that it fits the training images less and generalizes better.
The variants are an L2 or L1 penalty on the kernels, a max-norm bound on each filter's incoming
weights, dropout before the classifier, and L2, max-norm and dropout together.
Source: the regularization section of Wei's survey "Must Know Tips/Tricks in Deep Neural
Networks", which names dropout the most effective single regularizer and suggests combining it
with max-norm (Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from
Overfitting", JMLR 2014).

Design: the experiments' small CNN with batch normalization and Adam, on 12,000 training
images for 15 epochs (3,000 images for 6 epochs at the quick size). The unregularized network
then overfits visibly, with a training error far below its test error. Only the
regularizer changes: L2 5e-4, L1 1e-5, max-norm 3, dropout 0.5, and L2 5e-4 with max-norm 3 and
dropout 0.5. The table shows the final training error (measured in inference mode on the whole
training split) next to the test error.

Run:

    kerastricks run regularization_compare --quick    # 160 s, two CPU cores, load average 8
    python -m kerastricks.recipes.regularization_compare

The full size trains ten times as many image-epochs as the quick size: about 22 minutes at that
load, an estimated 7 to 11 minutes on an idle 2-core machine.
"""

if __name__ == "__main__":
    from kerastricks.recipes.quiet import quiet_tensorflow

    quiet_tensorflow()

from kerastricks.recipes.experiments import (  # noqa: E402
    GAP, INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, TEST_ERROR, TRAIN_ERROR, TRAIN_SECONDS,
    Experiment, Verdict, accuracy_margin, experiment_recipe, row_of,
)

NONE = "none"
SINGLE = ("L2 5e-4", "L1 1e-5", "max-norm 3", "dropout 0.5")
COMBINED = "L2 + max-norm + dropout"


def verdict(rows):
    """Judge the claim's two parts: at least 4 of the 5 regularized variants narrow the
    unregularized network's test - train gap, and dropout has the lowest test error of the
    single regularizers. Both parts hold: supported. Neither: not supported. One: inconclusive.
    """
    none = row_of(rows, NONE)
    regularized = [row_of(rows, label) for label in (*SINGLE, COMBINED)]
    narrower = [row["variant"] for row in regularized if row["gap"] < none["gap"]]
    singles = {label: row_of(rows, label)["test_error"] for label in SINGLE}
    best_single = min(singles, key=singles.get)
    dropout_best = best_single == "dropout 0.5"

    gaps = ", ".join(f"{row['variant']} {100 * row['gap']:.2f}" for row in regularized)
    numbers = (f"gap (test - train error, points) without regularization "
               f"{100 * none['gap']:.2f}; {gaps}. Lowest single-regularizer test error: "
               f"{best_single} {100 * singles[best_single]:.2f} % (dropout "
               f"{100 * singles['dropout 0.5']:.2f} %, none {100 * none['test_error']:.2f} %)")
    gap_holds = len(narrower) >= 4
    narrowest = min(regularized, key=lambda row: row["gap"])["variant"]
    margin = accuracy_margin(none["test_error"], none.get("test_images", 10000))
    summary = (f"{len(narrower)} of {len(regularized)} regularized variants narrow the gap "
               f"({narrowest} the most), and dropout {'is' if dropout_best else 'is not'} the "
               f"single regularizer with the lowest test error (test-error differences below "
               f"{100 * margin:.2f} points are within the noise of the test split)")
    if gap_holds and dropout_best:
        return Verdict(SUPPORTED, f"{summary}: {numbers}.")
    if not gap_holds and not dropout_best:
        return Verdict(NOT_SUPPORTED, f"The claim does not hold here: {summary}: {numbers}.")
    return Verdict(INCONCLUSIVE, f"Only part of the claim holds here: {summary}: {numbers}.")


EXPERIMENT = Experiment(
    name="regularization_compare",
    title="Regularization: L2, L1, max-norm and dropout",
    claim="Regularization narrows the gap between training and test error, and dropout is the "
          "most effective single regularizer.",
    source="Survey section 6 (regularization); Srivastava et al. 2014.",
    recipe=experiment_recipe("regularization_compare", subset=12000, epochs=15),
    quick={"subset": 3000, "epochs": 6},
    variants={
        NONE: {},
        "L2 5e-4": {"l2": 5e-4},
        "L1 1e-5": {"l1": 1e-5},
        "max-norm 3": {"max_norm": 3.0},
        "dropout 0.5": {"dropout": 0.5},
        COMBINED: {"l2": 5e-4, "max_norm": 3.0, "dropout": 0.5},
    },
    columns=(TEST_ERROR, TRAIN_ERROR, GAP, TRAIN_SECONDS),
    verdict=verdict,
    notes="Every variant trains the same CNN (batch normalization, Adam at 0.001) from the same "
          "initial weights and batches on a subset of the training images, so that the "
          "unregularized network overfits; only the regularizer changes. The penalties and "
          "max-norm apply to the convolution and dense kernels, dropout sits before the "
          "classifier. One seed, and the test split shrinks with the subset, in proportion to "
          "the training images (the data line above gives the counts): the standard error of a "
          "test error p on n test images is sqrt(p * (1 - p) / n).",
)


if __name__ == "__main__":
    import sys

    from kerastricks.recipes.experiments import run_experiment_module

    sys.exit(run_experiment_module("regularization_compare", sys.argv[1:]))

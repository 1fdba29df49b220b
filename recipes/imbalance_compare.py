"""Compare the class-imbalance remedies on an imbalanced Fashion-MNIST.

Trick: up- and down-sampling, extra crops from the small classes, two-stage training (first the
classes with many images, then those with few), and class weights in the loss. Source: the
closing part of Wei's survey "Must Know Tips/Tricks in Deep Neural Networks", after Hensman and
Masko (2015).

Data: Fashion-MNIST with five classes (T-shirt/top, Pullover, Coat, Shirt, Bag by default) cut
to 1 in 20 of their training and validation images. The test split stays whole, so each class
is measured on all of its test images.

Expected result: without a remedy the small classes are rarely predicted and their recall is
low; class weights, resampling and minority crops raise the minority recall. Two-stage
training that ends on the small classes only forgets the large classes (their recall drops to
about 0); replaying the large classes in half of each stage-two batch keeps them.

Run time: 90 seconds for the six remedies at the quick size (6,000 images before the cut, 4
epochs) on a shared 2-core CPU; the table gives each run's training time. The full size uses all
training images and 5 epochs.

    kerastricks run imbalance_compare --quick
    python -m kerastricks.recipes.imbalance_compare --quick
"""

if __name__ == "__main__":
    from kerastricks.recipes.quiet import quiet_tensorflow

    quiet_tensorflow()

from kerastricks.recipes.experiments import (  # noqa: E402
    INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, TEST_ACCURACY, TRAIN_SECONDS, Column, Experiment,
    Verdict, accuracy_margin, row_of,
)
from kerastricks.recipes.spec import Recipe  # noqa: E402

MINORITY_CLASSES = (0, 2, 4, 6, 8)
MINORITY_RATIO = 0.05

# Recipe fields of each remedy, on top of the base recipe.
REMEDIES = {
    "none": {},
    "class weights": {"class_weight": "balanced"},
    "resampling": {"sampling": "balanced"},
    # 19 crops per image bring a class cut to 1 in 20 back to its full number of images.
    "minority crops": {"minority_crops": 19, "minority_crop_size": 0.9},
    # The last half of the epochs train on the small classes only.
    "two-stage": {"two_stage_epochs": lambda base: base.epochs // 2},
    # The same, with half of each stage-two batch drawn from the large classes.
    "two-stage with replay": {"two_stage_epochs": lambda base: base.epochs // 2,
                              "two_stage_replay": 0.5},
}



def minority_recalls(metrics, recipe):
    """Return the mean test recall of the classes the recipe cuts and of the other classes."""
    recalls = metrics["recall_per_class"]
    names = list(recalls)
    cut = {names[int(c)] if c.isdigit() and c not in recalls else c for c in recipe.imbalance}
    minority = [recalls[name] for name in names if name in cut]
    majority = [recalls[name] for name in names if name not in cut]
    return {"minority_recall": sum(minority) / len(minority),
            "majority_recall": sum(majority) / len(majority)}


def verdict(rows):
    """Return the verdict: supported when every remedy raises the minority recall beyond the
    noise of the test split without lowering the balanced accuracy beyond it."""
    none = row_of(rows, "none")
    test_images = none.get("test_images", 10000)
    minority_images = test_images * len(MINORITY_CLASSES) // 10
    recall_margin = accuracy_margin(none["minority_recall"], minority_images)
    balanced_margin = accuracy_margin(none["balanced_accuracy"], test_images)
    helps, hurts = [], []
    for row in rows[1:]:
        if row["balanced_accuracy"] < none["balanced_accuracy"] - balanced_margin:
            hurts.append(row["variant"])
        elif row["minority_recall"] > none["minority_recall"] + recall_margin:
            helps.append(row["variant"])
    numbers = "; ".join(
        f"{row['variant']} {100 * row['minority_recall']:.1f} % minority recall, "
        f"{100 * row['balanced_accuracy']:.1f} % balanced accuracy" for row in rows)
    noise = (f" Differences below {100 * recall_margin:.1f} points of minority recall or "
             f"{100 * balanced_margin:.1f} points of balanced accuracy are within the noise of "
             f"the test split.")
    if len(helps) == len(rows) - 1:
        return Verdict(SUPPORTED, f"Every remedy helps the small classes: {numbers}.{noise}")
    if helps:
        lowered = f" {', '.join(hurts)} lower the balanced accuracy." if hurts else ""
        return Verdict(INCONCLUSIVE, f"{', '.join(helps)} help the small classes, the others "
                                     f"do not beyond the noise: {numbers}.{lowered}{noise}")
    return Verdict(NOT_SUPPORTED, f"No remedy helps the small classes here: {numbers}.{noise}")


EXPERIMENT = Experiment(
    name="imbalance_compare",
    title="Class imbalance: weights, resampling, minority crops, two-stage",
    claim="On class-imbalanced data the small classes are rarely predicted; up- or "
          "down-sampling, extra crops of the small classes, class weights, and two-stage "
          "training (first the large classes, then the small ones) raise their recall.",
    source="Survey, closing part on class imbalance; Hensman and Masko 2015.",
    recipe=Recipe(
        name="imbalance_compare", dataset="fashion_mnist", epochs=5, width=8, depth=2,
        convs_per_block=1, dense_units=64, diagnostics=False,
        imbalance={int(c): MINORITY_RATIO for c in MINORITY_CLASSES},
    ),
    quick={"subset": 6000, "epochs": 4},
    variants=REMEDIES,
    columns=(Column("balanced_accuracy", "balanced accuracy", "%"),
             Column("minority_recall", "minority recall", "%"),
             Column("majority_recall", "majority recall", "%"), TEST_ACCURACY, TRAIN_SECONDS),
    verdict=verdict,
    derive=minority_recalls,
    curve="val_balanced_accuracy",
    notes="Five classes (T-shirt/top, Pullover, Coat, Shirt, Bag) keep 1 in 20 of their "
          "training and validation images; the test split stays whole. The two-stage variants "
          "spend the last half of the epochs in stage two.",
)


if __name__ == "__main__":
    import sys

    from kerastricks.recipes.experiments import run_experiment_module

    sys.exit(run_experiment_module("imbalance_compare", sys.argv[1:]))

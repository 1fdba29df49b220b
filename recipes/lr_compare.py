"""Experiment: the learning-rate finder, then five learning-rate schedules on Fashion-MNIST.

Trick: find a good learning rate with a short range test, then decay it during training
instead of keeping it constant: step decay, "divide by 10 when the validation loss stops
improving" (plateau), cosine decay after a warmup, or the one-cycle policy.
Source: the learning-rate part of the training-tips section of Wei's survey "Must Know
Tips/Tricks in Deep Neural Networks"; the range test and the one-cycle policy are L. N. Smith's
("Cyclical Learning Rates for Training Neural Networks", WACV 2017; Smith and Topin,
"Super-Convergence", 2017), cosine decay is Loshchilov and Hutter's ("SGDR", ICLR 2017).

Design: the experiments' small CNN with batch normalization, trained with SGD with Nesterov
momentum 0.9 for 6 epochs on 24,000 Fashion-MNIST training images (6,000 at the quick size).
This subset keeps the full size well under 10 minutes on two CPU cores (3.7 minutes of training
in the full report). Every variant has the
same peak learning rate 0.05, and only `lr_schedule` changes. `step` divides by 10 every 2 epochs,
`plateau` divides by 10 after 1 epoch without a lower validation loss, `cosine` warms up
linearly over the first epoch, and `one_cycle` uses the fastai defaults. The learning-rate
finder sweeps a fresh model of the base recipe over 100 steps (fastai's default) from 1e-5 to
10, drawn as a figure. It does not set the runs' learning rate, so that every schedule has the
same peak.

Run:

    kerastricks run lr_compare --quick     # 195 s, two CPU cores, load average 8
    python -m kerastricks.recipes.lr_compare

The full size trains four times as many image-epochs as the quick size: about 12 minutes at
that load, an estimated 4 to 6 minutes on an idle 2-core machine.
"""

if __name__ == "__main__":
    from kerastricks.recipes.quiet import quiet_tensorflow

    quiet_tensorflow()

from pathlib import Path  # noqa: E402

from kerastricks.recipes.experiments import (  # noqa: E402
    INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, TEST_ERROR, TRAIN_SECONDS, Column, Experiment,
    Verdict, accuracy_margin, experiment_recipe, row_of,
)

CONSTANT = "constant"
DECAYING = ("step", "plateau", "cosine + warmup", "one-cycle")
PEAK_LEARNING_RATE = 0.05
FINDER_RANGE = (1e-5, 10.0)
FINDER_STEPS = 100

BEST_VAL_ACCURACY = Column("best_val_accuracy", "best val. accuracy", "%")
FINAL_LEARNING_RATE = Column("final_learning_rate", "final learning rate", ".2g")


def measure(model, data, recipe):
    """Return the learning rate the trained model's optimizer ended with."""
    import keras

    return {"final_learning_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))}


def epoch_learning_rates(run_dir):
    """Read the learning rate of each epoch of a run from its TensorBoard `train/` event files.

    Keras's TensorBoard callback writes it as `epoch_learning_rate`. The list is empty when the
    run has no such logs.

    The value is the optimizer's learning rate at the end of the epoch. In a recipe run the
    TensorBoard callback comes before `ReduceLROnPlateau`, so a plateau run logs the rate that
    the epoch trained with, not the lowered one.
    """
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events_dir = Path(run_dir) / "train"
    if not events_dir.is_dir():
        return []
    accumulator = EventAccumulator(str(events_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    if "epoch_learning_rate" not in accumulator.Tags()["tensors"]:
        return []
    events = sorted(accumulator.Tensors("epoch_learning_rate"), key=lambda event: event.step)
    return [float(tf.make_ndarray(event.tensor_proto)) for event in events]


def verdict(rows):
    """Judge the claim: it holds when every decaying schedule ends with a lower test error than
    the constant learning rate by more than the noise of the test split (two standard errors),
    and does not hold when none does."""
    constant = row_of(rows, CONSTANT)
    margin = accuracy_margin(constant["test_error"], constant.get("test_images", 10000))
    errors = {label: row_of(rows, label)["test_error"] for label in DECAYING}
    better = [label for label in DECAYING if errors[label] < constant["test_error"] - margin]
    listed = ", ".join(f"{label} {100 * error:.2f} %" for label, error in errors.items())
    numbers = (f"constant {100 * constant['test_error']:.2f} % test error; {listed}; "
               f"differences below {100 * margin:.2f} points are within the noise")
    if len(better) == len(DECAYING):
        return Verdict(SUPPORTED, f"Every decaying schedule beats the constant learning rate: "
                                  f"{numbers}.")
    if not better:
        return Verdict(NOT_SUPPORTED, f"No decaying schedule beats the constant learning rate "
                                      f"here: {numbers}.")
    return Verdict(INCONCLUSIVE, f"{len(better)} of {len(DECAYING)} decaying schedules beat the "
                                 f"constant learning rate ({', '.join(better)}): {numbers}.")


def figures(rows, data, folder):
    """Draw the learning-rate finder's sweep on the base recipe, and each run's learning rate
    per epoch."""
    return [plot_finder(rows, data, folder), plot_schedules(rows, folder)]


def plot_finder(rows, data, folder):
    """Run the learning-rate finder on the constant variant's recipe and save its figure."""
    from kerastricks.recipes.lr_find import find_recipe_learning_rate, save_result
    from kerastricks.recipes.spec import Recipe

    recipe = Recipe.from_file(Path(folder) / row_of(rows, CONSTANT)["run"] / "recipe.json")
    result = find_recipe_learning_rate(recipe, data, min_lr=FINDER_RANGE[0],
                                       max_lr=FINDER_RANGE[1], num_steps=FINDER_STEPS)
    save_result(result, folder)
    return ("lr_find.png",
            f"Learning-rate finder on a fresh model of the base recipe: smoothed training loss "
            f"against the learning rate. The finder suggests {result.suggestion:.3g} (the "
            f"steepest fall of the smoothed loss), the lowest smoothed loss is at "
            f"{result.min_loss_learning_rate:.3g}, and the runs use {recipe.learning_rate:g}.")


def plot_schedules(rows, folder):
    """Draw the learning rate of each epoch of every run, log y axis."""
    from kerastricks.recipes.experiment_figures import new_figure, save_figure

    figure = new_figure()
    axes = figure.add_subplot()
    for row in rows:
        rates = epoch_learning_rates(Path(folder) / row["run"])
        if rates:
            axes.plot(range(1, len(rates) + 1), rates, marker="o", label=row["variant"])
    # A rate of 0 (the end of the cosine) has no place on a log axis, so it is left out.
    axes.set_yscale("log", nonpositive="mask")
    axes.set_xlabel("epoch")
    axes.set_ylabel("learning rate at the end of the epoch")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return save_figure(figure, Path(folder) / "learning_rates.png",
                       "Learning rate at the end of each epoch, from the runs' TensorBoard logs "
                       "(a rate of 0 is not drawn on the log axis).")


EXPERIMENT = Experiment(
    name="lr_compare",
    title="Learning rate: the finder and five schedules",
    claim="Decaying the learning rate during training (for example dividing it by 10 when the "
          "validation loss stops improving) gives a lower test error than a constant rate.",
    source="Survey section 4 (training tips: learning rate); Smith 2017; Loshchilov and Hutter "
           "2017.",
    recipe=experiment_recipe("lr_compare", optimizer="sgd", learning_rate=PEAK_LEARNING_RATE,
                             subset=24000, epochs=6),
    quick={"subset": 6000},
    variants={
        CONSTANT: {"lr_schedule": "constant"},
        "step": {"lr_schedule": "step", "lr_schedule_options": {"drop_every": 2}},
        "plateau": {"lr_schedule": "plateau", "lr_schedule_options": {"patience": 1}},
        "cosine + warmup": {"lr_schedule": "cosine", "lr_schedule_options": {"warmup_epochs": 1}},
        "one-cycle": {"lr_schedule": "one_cycle"},
    },
    columns=(TEST_ERROR, BEST_VAL_ACCURACY, FINAL_LEARNING_RATE, TRAIN_SECONDS),
    verdict=verdict,
    measure=measure,
    figures=figures,
    notes="Every variant trains the same CNN (batch normalization, SGD with Nesterov momentum "
          "0.9) from the same initial weights and batches on a subset of the training images, "
          "with 0.05 as the constant, starting or peak learning rate; only the schedule "
          "changes. The "
          "learning-rate finder figure is drawn on a fresh model of the same recipe and does "
          "not change the runs.",
)


if __name__ == "__main__":
    import sys

    from kerastricks.recipes.experiments import run_experiment_module

    sys.exit(run_experiment_module("lr_compare", sys.argv[1:]))

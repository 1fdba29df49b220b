"""Experiment: the fraction of dead ReLU units against the learning rate.

Trick: keep the learning rate moderate, because a too large step pushes ReLU units into a
region where they output 0 for every input, and a unit with zero output gets zero gradient,
so it never recovers.
Source: the activation section of Wei's survey "Must Know Tips/Tricks in Deep Neural Networks",
which repeats Karpathy's note (CS231n) that with a too high learning rate as much as 40 % of a
network's ReLU units can end up dead.

Design: the experiments' small CNN with ReLU and He initialization, without batch normalization,
which rescales the pre-activations and would shield the units. It trains with SGD with Nesterov
momentum 0.9 at learning rates 0.001, 0.01, 0.1, 0.3 and 1, and only the learning rate changes.
Every variant clips each gradient to norm 1 (`clipnorm`). Without clipping, the loss became NaN
in the first epoch at 0.3 on the quick size and at 0.2 and 0.5 on the full size, and the run
guard stops such a run before anything can be counted. Unclipped, 0.1 finished and left about
70 % of the units dead at the full size. Clipping bounds each step but does not prevent the
damage: with it, 0.3 and 1 left most units dead at both sizes.
After training, each ReLU layer's dead fraction is measured on the validation images. A unit is
a channel of a feature map or a neuron of the dense layer, and it is dead when its output is 0
for every validation image and every position (`kerastricks.callbacks.dead_unit_fraction`).

Run:

    kerastricks run dead_relu --quick     # 149 s on two CPU cores at a load average of 9
    python -m kerastricks.recipes.dead_relu

The full size (54,000 training images, 5 epochs) took about 3 minutes per variant at that load,
so an estimated 5 to 10 minutes for the five variants on an idle 2-core machine.
"""

if __name__ == "__main__":
    from kerastricks.recipes.quiet import quiet_tensorflow

    quiet_tensorflow()

import numpy as np  # noqa: E402

from kerastricks.recipes.experiments import (  # noqa: E402
    INCONCLUSIVE, NOT_SUPPORTED, QUICK_FIELDS, SUPPORTED, TEST_ERROR, TRAIN_SECONDS, Column,
    Experiment, Verdict, experiment_recipe,
)

LEARNING_RATES = (0.001, 0.01, 0.1, 0.3, 1.0)
# Keeps the loss finite at the high rates, see the module docstring.
CLIPNORM = 1.0
# A fifth of the units dead is "a large fraction"; Karpathy's note reports up to 40 %.
LARGE_DEAD_FRACTION = 0.2
# Dead fractions within this distance count as equal (one unit in 32 is about 0.03).
SAME_FRACTION = 0.02
MEASURE_BATCH_SIZE = 256

DEAD_MEAN = Column("dead_mean", "dead units, mean over layers", "%")
DEAD_MAX = Column("dead_max", "dead units, worst layer", "%")


def rectifier_layers(model):
    """Return the model's top-level rectifier activation layers, in order."""
    from kerastricks.callbacks import find_activation_layers

    return [layer for layer, kind in find_activation_layers(model) if kind == "rectifier"]


def dead_fractions(model, images, batch_size=MEASURE_BATCH_SIZE):
    """Measure {layer name: dead fraction} of the model's rectifier layers on `images`.

    Each batch gives every unit's largest output. The maxima of all batches then go through
    `dead_unit_fraction`, so a unit counts as dead only when its output is at most 0 for every
    image and position, while memory stays at one batch of feature maps.
    """
    import keras

    from kerastricks.callbacks import dead_unit_fraction

    layers = rectifier_layers(model)
    if not layers:
        return {}
    probe = keras.Model(model.input, [layer.output for layer in layers])
    maxima = [[] for _ in layers]
    for start in range(0, len(images), batch_size):
        outputs = probe(images[start:start + batch_size], training=False)
        for index, output in enumerate(outputs):
            output = keras.ops.convert_to_numpy(output)
            maxima[index].append(output.reshape(-1, output.shape[-1]).max(axis=0))
    return {layer.name: dead_unit_fraction(np.stack(layer_maxima))
            for layer, layer_maxima in zip(layers, maxima)}


def measure(model, data, recipe):
    """Measure the dead fraction of each ReLU layer on the validation images, with their mean
    and maximum, and record the run's learning rate for the figure."""
    fractions = dead_fractions(model, data.x_validation)
    values = list(fractions.values())
    return {
        "learning_rate": recipe.learning_rate,
        "dead_fractions": fractions,
        "dead_mean": float(np.mean(values)) if values else None,
        "dead_max": float(np.max(values)) if values else None,
    }


def verdict(rows):
    """Judge the claim: it holds when the highest learning rate leaves at least
    `LARGE_DEAD_FRACTION` of the units dead on average, and that much more than the lowest rate."""
    ranked = sorted(rows, key=lambda row: row["learning_rate"])
    low, high = ranked[0], ranked[-1]
    numbers = (f"mean dead fraction {100 * low['dead_mean']:.1f} % at learning rate "
               f"{low['learning_rate']:g}, {100 * high['dead_mean']:.1f} % at "
               f"{high['learning_rate']:g} (test error {100 * low['test_error']:.2f} % and "
               f"{100 * high['test_error']:.2f} %)")
    increase = high["dead_mean"] - low["dead_mean"]
    if high["dead_mean"] >= LARGE_DEAD_FRACTION and increase >= LARGE_DEAD_FRACTION:
        return Verdict(SUPPORTED,
                       f"The highest learning rate leaves many ReLU units dead: {numbers}.")
    if increase <= SAME_FRACTION:
        return Verdict(NOT_SUPPORTED, f"A higher learning rate does not leave more ReLU units dead "
                                      f"here: {numbers}.")
    return Verdict(INCONCLUSIVE, f"More units die at the highest learning rate, but fewer than "
                                 f"{100 * LARGE_DEAD_FRACTION:.0f} % more: {numbers}.")


def figures(rows, data, folder):
    """Draw the dead fraction of each ReLU layer against the learning rate, log x axis."""
    from kerastricks.recipes.experiment_figures import new_figure, save_figure

    ranked = sorted(rows, key=lambda row: row["learning_rate"])
    rates = [row["learning_rate"] for row in ranked]
    names = list(ranked[0]["dead_fractions"])
    figure = new_figure()
    axes = figure.add_subplot()
    for name in names:
        axes.plot(rates, [100 * row["dead_fractions"][name] for row in ranked], marker="o",
                  label=name)
    axes.plot(rates, [100 * row["dead_mean"] for row in ranked], color="black", linestyle="--",
              marker="s", label="mean over layers")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (SGD, Nesterov momentum 0.9, clipnorm 1)")
    axes.set_ylabel("dead units (%)")
    axes.set_ylim(-2, 102)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return [save_figure(figure, f"{folder}/dead_fraction.png",
                        "Dead ReLU units on the validation images against the learning rate, "
                        "one line per layer.")]


EXPERIMENT = Experiment(
    name="dead_relu",
    title="Dead ReLU units and the learning rate",
    claim="Too high a learning rate leaves a large fraction of the ReLU units dead for good: "
          "they output 0 for every input, so they get no gradient and never recover.",
    source="Survey section 5 (activation functions), Karpathy's CS231n note on dying ReLUs.",
    recipe=experiment_recipe("dead_relu", batch_norm=False, optimizer="sgd", clipnorm=CLIPNORM,
                             activation="relu", initializer="he_normal"),
    quick=QUICK_FIELDS,
    variants={f"SGD lr {rate:g}": {"learning_rate": rate} for rate in LEARNING_RATES},
    columns=(TEST_ERROR, DEAD_MEAN, DEAD_MAX, TRAIN_SECONDS),
    verdict=verdict,
    measure=measure,
    figures=figures,
    notes="Every variant trains the same ReLU CNN without batch normalization, from the same "
          "He-initialized weights and batches, with SGD (Nesterov momentum 0.9) and every "
          "gradient clipped to norm 1; only the learning rate changes. Without the clipping, "
          "rates of 0.2 to 0.5 made the loss NaN in some runs, which stops a run before "
          "anything can be counted. Dead units are counted on the validation images after "
          "training.",
)


if __name__ == "__main__":
    import sys

    from kerastricks.recipes.experiments import run_experiment_module

    sys.exit(run_experiment_module("dead_relu", sys.argv[1:]))

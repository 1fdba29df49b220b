"""Experiment: all-zero, small random, calibrated and He initialization of a CNN.

Trick: initialize each kernel with `N(0, 1) * sqrt(2 / n)` (He et al. 2015), where `n` is the
number of inputs of a unit, rather than with zeros or with small random numbers.
Source: the initialization section of Wei's survey "Must Know Tips/Tricks in Deep Neural
Networks". All-zero weights give every unit of a layer the same output and the same update, so
the units never become different. Small random numbers (`0.001 * N(0, 1)`) break that symmetry
but shrink the signal in every layer. Scaling by `1 / sqrt(n)` keeps the output variance of a
unit near its input variance, and He's `2 / n` also accounts for the ReLU halving it.

Design: the experiments' small CNN on Fashion-MNIST (four 3x3 convolutions, a dense layer of
128 units, ReLU, Adam, 3 epochs). It has no batch normalization, because that would rescale
every layer's output and rescue each initialization. Only the kernel initializer changes, and
biases start at 0.
Each trained model is measured: the number of distinct filters of the first convolution, the
fraction of hidden layers whose units are all identical, and the standard deviation of the last
hidden layer's output at initialization, on 256 training images.

With zero kernels and zero biases, every ReLU input is exactly 0, and TensorFlow's ReLU gradient
at 0 is 0, so no hidden weight gets a gradient. The units stay identical and all 0. Only the
classifier's bias learns, which leaves the network at chance.

Run:

    kerastricks run init_compare --quick
    python -m kerastricks.recipes.init_compare

The quick size (5,400 training images, 3 epochs) took 150 s on the 2-core development machine
while other jobs kept its load average near 8. The full size (54,000 training images, 3 epochs)
trains ten times as many images: an estimated 16 minutes at that load. An idle machine should
need a half to a quarter of that (an estimate from the load, not measured).
"""

if __name__ == "__main__":
    from kerastricks.recipes.quiet import quiet_tensorflow

    quiet_tensorflow()

import numpy as np  # noqa: E402

from kerastricks.recipes.experiments import (  # noqa: E402
    INCONCLUSIVE, NOT_SUPPORTED, QUICK_FIELDS, SUPPORTED, TEST_ERROR, TRAIN_ERROR, TRAIN_SECONDS,
    Column, Experiment, Verdict, experiment_recipe, row_of,
)

# Two units are identical when no weight differs by more than this, or by more than this
# fraction of the layer's largest weight when that is above 1.
IDENTICAL_TOLERANCE = 1e-6
# The number of training images that the activation spread is measured on.
SPREAD_IMAGES = 256
# A variant is "at chance" when its test accuracy is below chance plus this margin.
CHANCE_MARGIN = 0.05
# Test-error differences below this do not count as one variant training better than another.
MARGIN = 0.01


def unit_weights(layer):
    """Return a convolution or dense layer's weights as a `(units, inputs + 1)` array.

    Row `i` contains unit `i`'s kernel, flattened, followed by its bias (0 without a bias).
    """
    kernel = np.asarray(layer.kernel)
    units = kernel.shape[-1]
    rows = kernel.reshape(-1, units).T
    bias = np.asarray(layer.bias) if layer.bias is not None else np.zeros(units)
    return np.concatenate([rows, bias[:, None]], axis=1)


def count_distinct_units(weights, tolerance=IDENTICAL_TOLERANCE):
    """Return the number of distinct rows of `weights`.

    Two rows are equal when no element differs by more than `tolerance` times the larger of 1
    and the largest absolute value in `weights`.
    """
    weights = np.asarray(weights, dtype="float64")
    scale = max(float(np.max(np.abs(weights), initial=0.0)), 1.0)
    representatives = []
    for row in weights:
        if not any(np.max(np.abs(row - other)) <= tolerance * scale for other in representatives):
            representatives.append(row)
    return len(representatives)


def hidden_layers(model):
    """Return the model's convolution and dense layers, without the classifier."""
    import keras

    return [layer for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
            and layer.name != "classifier"]


def activation_std(model, images):
    """Return `(layer name, standard deviation of its output)` for each activation layer.

    The standard deviation is taken over all images, positions and channels of the batch.
    """
    import keras

    from kerastricks.callbacks import find_activation_layers

    layers = [layer for layer, _ in find_activation_layers(model)]
    probe = keras.Model(model.input, [layer.output for layer in layers])
    # A direct call, because `predict` would trace a new function for every model.
    outputs = probe(np.asarray(images, dtype="float32"))
    return [(layer.name, float(np.std(keras.ops.convert_to_numpy(output).astype("float64"))))
            for layer, output in zip(layers, outputs)]


def initial_activation_std(recipe, data):
    """Return `activation_std` of the recipe's model as training starts, on training images.

    The model is built, adapted and (with `recipe.lsuv`) rescaled exactly as `train` does it,
    with the same seed, so its weights are the trained model's initial weights.
    """
    from kerastricks.recipes.training import prepare_training

    model, _ = prepare_training(recipe, data)
    return activation_std(model, data.x_train[:SPREAD_IMAGES])


def measure(model, data, recipe):
    """Measure the symmetry of the trained model's units and its initial signal spread."""
    layers = hidden_layers(model)
    identical = [count_distinct_units(unit_weights(layer)) == 1 for layer in layers]
    spread = initial_activation_std(recipe, data)
    return {
        "first_conv_distinct_filters": count_distinct_units(unit_weights(layers[0])),
        "first_conv_filters": int(layers[0].kernel.shape[-1]),
        "identical_layer_fraction": float(np.mean(identical)),
        "initial_last_std": spread[-1][1],
    }


def verdict(rows):
    """Judge the claim: supported when the zero-initialized net keeps identical units and stays
    at chance, small random numbers do worse than both scaled initializations, and those two
    train."""
    chance = 1.0 / 10 + CHANCE_MARGIN
    zeros, small = row_of(rows, "zeros"), row_of(rows, "small random")
    scaled = {name: row_of(rows, name)["test_error"] for name in ("calibrated", "He")}
    worst_scaled = max(scaled.values())
    numbers = (f"test error zeros {100 * zeros['test_error']:.2f} %, small random "
               f"{100 * small['test_error']:.2f} %, calibrated {100 * scaled['calibrated']:.2f} %, "
               f"He {100 * scaled['He']:.2f} %; zeros keeps "
               f"{zeros['first_conv_distinct_filters']} distinct first-layer filter(s) of "
               f"{zeros['first_conv_filters']}; initial std of the last hidden layer: small "
               f"random {small['initial_last_std']:.2g}, He "
               f"{row_of(rows, 'He')['initial_last_std']:.2g}")

    symmetric = zeros["identical_layer_fraction"] == 1.0
    zeros_at_chance = zeros["test_accuracy"] < chance
    small_worse = small["test_error"] > worst_scaled + MARGIN
    scaled_train = 1.0 - worst_scaled >= chance
    if not symmetric or not scaled_train:
        return Verdict(NOT_SUPPORTED, f"The zero-initialized units did not stay identical, or "
                                      f"the scaled initializations did not train: {numbers}.")
    if zeros_at_chance and small_worse:
        return Verdict(SUPPORTED, f"Zeros never break the symmetry and stay at chance, small "
                                  f"random numbers do worse than 1/sqrt(n) and He: {numbers}.")
    return Verdict(INCONCLUSIVE, f"The zero-initialized units stay identical, but not every "
                                 f"part of the claim shows here: {numbers}.")


DISTINCT_FILTERS = Column("first_conv_distinct_filters", "distinct first-layer filters", "d")
IDENTICAL_LAYERS = Column("identical_layer_fraction", "layers with identical units", ".2f")
INITIAL_LAST_STD = Column("initial_last_std", "initial std, last hidden layer", ".2g")

EXPERIMENT = Experiment(
    name="init_compare",
    title="Initialization: zeros, small random numbers, 1/sqrt(n) and He",
    claim="All-zero weights never break the symmetry between the units of a layer. Small random "
          "numbers break it but shrink the signal in deep nets. Scaling by 1/sqrt(n) keeps the "
          "signal's variance, and He's 2/n does so for ReLU networks.",
    source="Survey section 3 (initializations); He et al. 2015.",
    recipe=experiment_recipe("init_compare", batch_norm=False, epochs=3),
    quick=QUICK_FIELDS,
    variants={
        "zeros": {"initializer": "zeros"},
        "small random": {"initializer": "small_random"},
        "calibrated": {"initializer": "calibrated"},
        "He": {"initializer": "he"},
    },
    columns=(TEST_ERROR, TRAIN_ERROR, DISTINCT_FILTERS, IDENTICAL_LAYERS, INITIAL_LAST_STD,
             TRAIN_SECONDS),
    verdict=verdict,
    measure=measure,
    notes="Every variant trains the same CNN (ReLU, Adam, no batch normalization, which would "
          "rescue every initialization) with the same seed; only the kernel initializer of the "
          "convolutions and the hidden dense layer changes. Biases start at 0, and the "
          "classifier always uses Glorot initialization. 'calibrated' draws N(0, 1/n), 'He' "
          "N(0, 2/n), 'small random' 0.001 * N(0, 1).",
)


if __name__ == "__main__":
    import sys

    from kerastricks.recipes.experiments import run_experiment_module

    sys.exit(run_experiment_module("init_compare", sys.argv[1:]))

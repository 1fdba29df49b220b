"""Experiment: a 30-layer plain ReLU network with 1/sqrt(n), He and LSUV initialization.

Trick: initialize the kernels of a deep ReLU network with variance `2 / n` (He et al. 2015),
where `n` is a unit's number of inputs, instead of `1 / n`.
Source: the initialization section of Wei's survey "Must Know Tips/Tricks in Deep Neural
Networks", and He, Zhang, Ren and Sun (2015), "Delving Deep into Rectifiers". With weights of
variance `1 / n`, a layer's output has the variance of its input before the ReLU, and the ReLU
halves it. The standard deviation therefore shrinks by `1 / sqrt(2)` per layer, which after 30
layers is `2**-15`, about 3e-5, and the network stalls. With `2 / n` the variance stays
constant and the network trains. LSUV (Mishkin and Matas 2016) instead rescales each layer
to unit output variance on a batch of training images.

Design: the experiments' CNN made deep and narrow, 3 blocks of 10 3x3 convolutions (width 8,
16, 32), a dense layer of 128 units, ReLU, Adam. It has no batch normalization, because that
would rescale every layer and rescue both initializations. Only the initializer changes, and
biases start at 0. Each run records the standard deviation of every activation layer's output at
initialization, on 256 training images, and the experiment plots them on a log scale beside
the theory line for `1 / n`.

Run:

    kerastricks run deep_init --quick
    python -m kerastricks.recipes.deep_init

The quick size (5,400 training images, 2 epochs) took 221 s on the 2-core development machine
while other jobs kept its load average near 8. The full size (54,000 training images, 2 epochs)
trains ten times as many images: an estimated 23 minutes at that load. An idle machine should
need a half to a quarter of that (an estimate from the load, not measured).
"""

if __name__ == "__main__":
    from kerastricks.recipes.quiet import quiet_tensorflow

    quiet_tensorflow()

import math  # noqa: E402

import numpy as np  # noqa: E402

from kerastricks.recipes.experiments import (  # noqa: E402
    INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, TEST_ERROR, TRAIN_ERROR, TRAIN_SECONDS, Column,
    Experiment, Verdict, experiment_recipe, row_of,
)
from kerastricks.recipes.init_compare import initial_activation_std  # noqa: E402

# A variant "stalls" when its final validation accuracy is below chance plus this margin.
CHANCE_MARGIN = 0.05
# The per-layer factor of the standard deviation with variance 1/n kernels, from the ReLU
# halving the variance.
CALIBRATED_FACTOR = 1.0 / math.sqrt(2.0)


def measure(model, data, recipe):
    """Record the standard deviation of each activation layer's output at initialization."""
    spread = initial_activation_std(recipe, data)
    stds = [std for _, std in spread]
    return {
        "initial_layers": [name for name, _ in spread],
        "initial_std": stds,
        "initial_std_ratio": stds[-1] / stds[0] if stds[0] > 0 else None,
    }


def verdict(rows):
    """Judge the claim: supported when the 1/sqrt(n) net's signal shrinks by orders of
    magnitude at initialization and it stalls near chance, while the He net keeps its signal
    and trains."""
    chance = 1.0 / 10 + CHANCE_MARGIN
    calibrated, he = row_of(rows, "calibrated"), row_of(rows, "He")
    numbers = (f"last/first activation std at initialization {calibrated['initial_std_ratio']:.2g} "
               f"for 1/sqrt(n) and {he['initial_std_ratio']:.2g} for He; final validation "
               f"accuracy {100 * calibrated['final_val_accuracy']:.2f} % and "
               f"{100 * he['final_val_accuracy']:.2f} %, test error "
               f"{100 * calibrated['test_error']:.2f} % and {100 * he['test_error']:.2f} %")

    shrinks = calibrated["initial_std_ratio"] < 1e-2 < he["initial_std_ratio"]
    calibrated_stalls = calibrated["final_val_accuracy"] < chance
    he_trains = he["final_val_accuracy"] >= chance
    if shrinks and calibrated_stalls and he_trains:
        return Verdict(SUPPORTED, f"The 1/sqrt(n) net's signal vanishes and it stalls, the He "
                                  f"net trains: {numbers}.")
    if he["test_error"] >= calibrated["test_error"]:
        return Verdict(NOT_SUPPORTED, f"He initialization does not train better than 1/sqrt(n) "
                                      f"here: {numbers}.")
    return Verdict(INCONCLUSIVE, f"He trains better, but not every part of the claim shows "
                                 f"here: {numbers}.")


def figures(rows, data, folder):
    """Draw each activation layer's initial standard deviation per variant, on a log scale."""
    from kerastricks.recipes.experiment_figures import new_figure, save_figure

    figure = new_figure()
    axes = figure.add_subplot()
    for row in rows:
        stds = np.asarray(row["initial_std"], dtype="float64")
        axes.semilogy(np.arange(1, len(stds) + 1), stds, marker="o", markersize=3,
                      label=row["variant"])
    first = row_of(rows, "calibrated")["initial_std"][0]
    layers = np.arange(1, len(row_of(rows, "calibrated")["initial_std"]) + 1)
    axes.semilogy(layers, first * CALIBRATED_FACTOR ** (layers - 1), linestyle="--",
                  color="gray", label="theory for 1/sqrt(n): x 1/sqrt(2) per layer")
    axes.set_xlabel("activation layer")
    axes.set_ylabel("output standard deviation at initialization")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize="small")
    figure.tight_layout()
    caption = ("Standard deviation of each activation layer's output at initialization, on 256 "
               "training images. The theory line ignores max pooling (after layers 10 and 20) "
               "and the zero padding at the borders.")
    return [save_figure(figure, folder / "initial_std.png", caption)]


FINAL_VAL_ACCURACY = Column("final_val_accuracy", "final val accuracy", "%")
INITIAL_STD_RATIO = Column("initial_std_ratio", "initial std last/first", ".2g")

EXPERIMENT = Experiment(
    name="deep_init",
    title="Initialization of a deep ReLU network: 1/sqrt(n), He and LSUV",
    claim="In a deep plain ReLU network, 1/sqrt(n) initialization shrinks the activations by "
          "1/sqrt(2) per layer, so a 30-layer network stalls; He's 2/n keeps their variance "
          "and the network trains.",
    source="Survey section 3 (initializations); He et al. 2015, "
           "\"Delving Deep into Rectifiers\".",
    recipe=experiment_recipe("deep_init", batch_norm=False, depth=3, convs_per_block=10,
                             width=8, epochs=2),
    quick={"subset": 6000, "epochs": 2},
    variants={
        "calibrated": {"initializer": "calibrated"},
        "He": {"initializer": "he"},
        "LSUV": {"initializer": "orthogonal", "lsuv": True},
    },
    columns=(TEST_ERROR, TRAIN_ERROR, FINAL_VAL_ACCURACY, INITIAL_STD_RATIO, TRAIN_SECONDS),
    verdict=verdict,
    measure=measure,
    figures=figures,
    notes="Every variant trains the same 30-convolution ReLU network (no batch normalization, "
          "Adam) with the same seed; only the initializer of the convolutions and the hidden "
          "dense layer changes. Biases start at 0 and the classifier uses Glorot "
          "initialization, except under LSUV, which rescales every layer, the classifier "
          "included, on the first training batch. The full size trains 2 epochs, because "
          "this network trains three to five times fewer images per second than the small "
          "CNN.",
)


if __name__ == "__main__":
    import sys

    from kerastricks.recipes.experiments import run_experiment_module

    sys.exit(run_experiment_module("deep_init", sys.argv[1:]))

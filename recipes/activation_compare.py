"""Experiment: sigmoid, tanh and the rectifier family on Fashion-MNIST.

Trick: rectified activations (ReLU, Leaky ReLU, PReLU, RReLU) instead of sigmoid and tanh.
Source: the activation section of Wei's survey "Must Know Tips/Tricks in Deep Neural Networks",
and its table from Xu, Wang, Chen and Li (2015), "Empirical Evaluation of Rectified Activations
in Convolutional Network", which lists the training error, the test error and their gap.

Design: the experiments' small CNN without batch normalization (which would hide much of the
difference between activations, and which Xu et al. did not use), trained with Adam; only the
activation changes. Leaky ReLU is run with the slopes 0.01 (Xu et al.'s a = 100) and 0.18 (their
a = 5.5). Every variant uses He initialization computed for its own negative slope.

Run:

    kerastricks run activation_compare --quick     # a few minutes on two CPU cores
    python -m kerastricks.recipes.activation_compare
"""

if __name__ == "__main__":
    from kerastricks.recipes.quiet import quiet_tensorflow

    quiet_tensorflow()

from kerastricks.recipes.experiments import (  # noqa: E402
    GAP, INCONCLUSIVE, NOT_SUPPORTED, QUICK_FIELDS, SUPPORTED, TEST_ERROR, TRAIN_ERROR,
    TRAIN_SECONDS, Experiment, Verdict, accuracy_margin, experiment_recipe, row_of,
)

RECTIFIERS = ("ReLU", "Leaky ReLU 0.01", "Leaky ReLU 0.18", "PReLU", "RReLU")


def verdict(rows):
    """Return the verdict: supported when every rectifier beats both sigmoid and tanh on test
    error by more than the noise of the test split (two standard errors)."""
    rectifiers = {name: row_of(rows, name)["test_error"] for name in RECTIFIERS}
    best = min(rectifiers, key=rectifiers.get)
    worst = max(rectifiers, key=rectifiers.get)
    beaten = {}
    for name in ("sigmoid", "tanh"):
        row = row_of(rows, name)
        margin = accuracy_margin(row["test_error"], row.get("test_images", 10000))
        beaten[name] = [rectifier for rectifier, error in rectifiers.items()
                        if error < row["test_error"] - margin]
    numbers = (f"sigmoid {100 * row_of(rows, 'sigmoid')['test_error']:.2f} % and tanh "
               f"{100 * row_of(rows, 'tanh')['test_error']:.2f} % test error; rectifiers from "
               f"{100 * rectifiers[best]:.2f} % ({best}) to {100 * rectifiers[worst]:.2f} % "
               f"({worst}); {len(beaten['sigmoid'])} of {len(RECTIFIERS)} rectifiers beat sigmoid "
               f"and {len(beaten['tanh'])} beat tanh beyond the noise")
    gap_text = (f"RReLU's test - train gap is {100 * row_of(rows, 'RReLU')['gap']:.2f} points "
                f"against ReLU's {100 * row_of(rows, 'ReLU')['gap']:.2f}")
    every = len(RECTIFIERS)
    if len(beaten["sigmoid"]) == every and len(beaten["tanh"]) == every:
        return Verdict(SUPPORTED, f"Every rectifier beats sigmoid and tanh: {numbers}. {gap_text}.")
    if beaten["sigmoid"] or beaten["tanh"]:
        return Verdict(INCONCLUSIVE, f"The rectifiers do not beat both saturating activations: "
                                     f"{numbers}. {gap_text}.")
    return Verdict(NOT_SUPPORTED, f"No rectifier beats sigmoid or tanh here: {numbers}. "
                                  f"{gap_text}.")


EXPERIMENT = Experiment(
    name="activation_compare",
    title="Activations: sigmoid, tanh and the rectifiers",
    claim="Rectified activations train deep CNNs better than sigmoid and tanh, and the leaky "
          "variants with a non-zero negative slope do at least as well as ReLU; RReLU's random "
          "slopes act as a regularizer (a smaller train/test gap).",
    source="Survey section 5 (activation functions); Xu et al. 2015.",
    recipe=experiment_recipe("activation_compare", batch_norm=False,
                             initializer="he_leaky_normal"),
    quick=QUICK_FIELDS,
    variants={
        "sigmoid": {"activation": "sigmoid", "initializer": "glorot_uniform"},
        "tanh": {"activation": "tanh", "initializer": "glorot_uniform"},
        "ReLU": {"activation": "relu"},
        "Leaky ReLU 0.01": {"activation": "leaky_relu",
                            "activation_options": {"negative_slope": 0.01}},
        "Leaky ReLU 0.18": {"activation": "leaky_relu",
                            "activation_options": {"negative_slope": 0.18}},
        "PReLU": {"activation": "prelu"},
        "RReLU": {"activation": "rrelu"},
    },
    columns=(TEST_ERROR, TRAIN_ERROR, GAP, TRAIN_SECONDS),
    verdict=verdict,
    notes="Sigmoid and tanh use Glorot initialization, the rectifiers He initialization for "
          "their negative slope. No batch normalization.",
)


if __name__ == "__main__":
    import sys

    from kerastricks.recipes.experiments import run_experiment_module

    sys.exit(run_experiment_module("activation_compare", sys.argv[1:]))

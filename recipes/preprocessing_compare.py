"""Experiment: centring, normalization and PCA/ZCA whitening of the input images.

Trick: subtract the mean image and divide by the standard deviation, per pixel or per channel,
or scale each pixel to [-1, 1]. PCA and ZCA whitening decorrelate the pixels as well.
Source: the pre-processing section of Wei's survey "Must Know Tips/Tricks in Deep Neural
Networks": zero-centring and per-pixel normalization are common, while whitening stretches the
directions of tiny variance, which are mostly noise, and is not used with CNNs in practice.

Design: the experiments' small CNN on Fashion-MNIST, trained with Adam and He initialization.
It has no batch normalization, because that would re-normalize the first convolution's output
and hide most of the difference. Only the `preprocessing` field changes. Whitening uses the recipes'
epsilon of 0.1. Besides the errors, each run measures how much its pre-processing amplifies
white pixel noise relative to the images themselves (`noise_amplification`, 1 for any single
scale factor). The experiment also draws training images after ZCA whitening with epsilon 1e-5
(the survey's value) and 0.1.

Run:

    kerastricks run preprocessing_compare --quick
    python -m kerastricks.recipes.preprocessing_compare

The quick size (5,400 training images, 3 epochs) took 146 s on the 2-core development machine
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
    Column, Experiment, Verdict, accuracy_margin, experiment_recipe, row_of,
)

NORMALIZING = ("center", "standardize_pixel", "standardize_channel")
WHITENING = ("pca", "zca")
# The standard deviation of the white noise added to [0, 1] images by `noise_amplification`.
NOISE_STDDEV = 0.01
# The number of test images that `noise_amplification` runs through the pre-processing.
NOISE_IMAGES = 500
# The epsilons of the whitening figure: the survey's value and the recipes' default.
FIGURE_EPSILONS = (1e-5, 0.1)
FIGURE_IMAGES = 6


def noise_amplification(preprocess, train_images, test_images, stddev=NOISE_STDDEV, seed=0):
    """Return how much more `preprocess` scales white pixel noise than the images' variation.

    The noise gain is `rms(P(x + n) - P(x)) / rms(n)` for Gaussian noise `n` of `stddev`; the
    signal gain is `rms(P(x) - P(m)) / rms(x - m)`, where `m` is the mean training image. Their
    ratio is 1 for any pre-processing that multiplies all pixels by one factor, and grows when
    the pre-processing stretches directions of small variance, where the images have little
    content but noise has as much as anywhere.

    Args:
        preprocess: a function from a batch of images to the pre-processed batch.
        train_images: the training images, for the mean image.
        test_images: the images to measure on.
        stddev: the standard deviation of the added noise. Defaults to `NOISE_STDDEV`.
        seed: the seed of the noise. Defaults to `0`.

    Returns:
        A dict with `noise_gain`, `signal_gain` and `noise_amplification` (their ratio).
    """
    images = np.asarray(test_images, dtype="float32")
    mean_image = np.mean(train_images, axis=0, dtype="float64", keepdims=True)
    noise = np.random.default_rng(seed).normal(0.0, stddev, images.shape).astype("float32")

    clean = np.asarray(preprocess(images), dtype="float64")
    noisy = np.asarray(preprocess(images + noise), dtype="float64")
    centre = np.asarray(preprocess(mean_image.astype("float32")), dtype="float64")

    noise_gain = _rms(noisy - clean) / _rms(noise)
    signal_gain = _rms(clean - centre) / _rms(images - mean_image)
    return {"noise_gain": noise_gain, "signal_gain": signal_gain,
            "noise_amplification": noise_gain / signal_gain}


def _rms(values):
    return float(np.sqrt(np.mean(np.square(values, dtype="float64"))))


def preprocessing_model(model):
    """Return a function that runs a recipe model's pre-processing layers only.

    The identity for a model without them (`preprocessing="none"`).
    """
    import keras

    from kerastricks.recipes.augmentation import PREPROCESS_PREFIX

    layers = [layer for layer in model.layers if layer.name.startswith(PREPROCESS_PREFIX)]
    if not layers:
        return lambda images: images
    front = keras.Model(model.input, layers[-1].output)
    # A direct call, because `predict` would trace a new function for every model.
    return lambda images: keras.ops.convert_to_numpy(front(images))


def measure(model, data, recipe):
    """Measure the noise amplification of a trained model's pre-processing on test images."""
    return noise_amplification(preprocessing_model(model), data.x_train,
                               data.x_test[:NOISE_IMAGES], seed=recipe.seed)


def verdict(rows):
    """Return the verdict: supported when centring or normalization beats no pre-processing
    beyond the noise of the test split, and neither PCA nor ZCA whitening beats the best of
    them."""
    none = row_of(rows, "none")["test_error"]
    normalizing = {name: row_of(rows, name)["test_error"] for name in NORMALIZING}
    whitening = {name: row_of(rows, name)["test_error"] for name in WHITENING}
    best_normalizing = min(normalizing, key=normalizing.get)
    best_whitening = min(whitening, key=whitening.get)
    numbers = (f"none {100 * none:.2f} % test error, best centring/normalization "
               f"{100 * normalizing[best_normalizing]:.2f} % ({best_normalizing}), best "
               f"whitening {100 * whitening[best_whitening]:.2f} % ({best_whitening})")
    amplification = (f"ZCA amplifies white noise {row_of(rows, 'zca')['noise_amplification']:.1f} "
                     f"times more than the images, centring "
                     f"{row_of(rows, 'center')['noise_amplification']:.1f} times")

    # Differences within two standard errors of the test split count as ties.
    margin = accuracy_margin(none, row_of(rows, "none").get("test_images", 10000))
    noise = f"differences below {100 * margin:.1f} points are within the noise of the test split"
    normalizing_helps = normalizing[best_normalizing] < none - margin
    whitening_worse = whitening[best_whitening] > normalizing[best_normalizing]
    if whitening[best_whitening] < normalizing[best_normalizing] - margin:
        return Verdict(NOT_SUPPORTED, f"Whitening beats centring and normalization here: "
                                      f"{numbers}; {noise}. {amplification}.")
    if normalizing_helps and whitening_worse:
        return Verdict(SUPPORTED, f"Centring or normalization beats no pre-processing, and "
                                  f"whitening does not beat it: {numbers}; {noise}. "
                                  f"{amplification}.")
    if whitening_worse and normalizing[best_normalizing] <= none + margin:
        return Verdict(INCONCLUSIVE, f"Whitening does not beat centring and normalization, but "
                                     f"these do not beat no pre-processing beyond the noise "
                                     f"either, on images already scaled to [0, 1]: {numbers}; "
                                     f"{noise}. {amplification}.")
    if whitening_worse:
        return Verdict(NOT_SUPPORTED, f"No pre-processing beats centring and normalization "
                                      f"here, and whitening does not help either: {numbers}; "
                                      f"{noise}. {amplification}.")
    return Verdict(INCONCLUSIVE, f"The differences do not separate the choices: {numbers}; "
                                 f"{noise}. {amplification}.")


def figures(rows, data, folder):
    """Draw training images before and after ZCA whitening with a small and a large epsilon."""
    from kerastricks.layers import Whitening
    from kerastricks.recipes.experiment_figures import new_figure, save_figure

    # One image of each of the first classes, so the figure shows different shapes.
    indices = [int(np.flatnonzero(data.y_train == label)[0])
               for label in np.unique(data.y_train)[:FIGURE_IMAGES]]
    images = data.x_train[indices]
    panels = [("original", images)]
    amplifications = []
    for epsilon in FIGURE_EPSILONS:
        layer = Whitening(method="zca", epsilon=epsilon)
        layer.adapt(data.x_train)
        panels.append((f"ZCA, epsilon {epsilon:g}", np.asarray(layer(images))))
        gains = noise_amplification(lambda batch: np.asarray(layer(batch)), data.x_train,
                                    data.x_test[:NOISE_IMAGES])
        amplifications.append(f"{gains['noise_amplification']:.1f} times with epsilon {epsilon:g}")

    figure = new_figure((1.3 * len(indices), 1.4 * len(panels)))
    for row, (title, batch) in enumerate(panels):
        for column, image in enumerate(batch):
            axes = figure.add_subplot(len(panels), len(indices), row * len(indices) + column + 1)
            # Each image gets its own grey scale, because whitened values have no fixed range.
            axes.imshow(image[..., 0], cmap="gray")
            axes.set_xticks([])
            axes.set_yticks([])
            if column == 0:
                axes.set_ylabel(title, fontsize="small")
    figure.tight_layout()
    caption = (f"Training images, and the same images after ZCA whitening adapted on the "
               f"{len(data.x_train)} training images, with epsilon {FIGURE_EPSILONS[0]:g} and "
               f"{FIGURE_EPSILONS[1]:g}. Each image is scaled to its own grey range. Relative "
               f"to the images' own variation, ZCA amplifies white pixel noise "
               f"{' and '.join(amplifications)}.")
    return [save_figure(figure, folder / "zca_epsilon.png", caption)]


NOISE_AMPLIFICATION = Column("noise_amplification", "noise amplification", ".1f")
BEST_VAL_ACCURACY = Column("best_val_accuracy", "best val accuracy", "%")

EXPERIMENT = Experiment(
    name="preprocessing_compare",
    title="Pre-processing: centring, normalization and whitening",
    claim="Zero-centring the images, and normalizing every pixel, are standard pre-processing "
          "for CNNs. PCA and ZCA whitening are rarely used, because they stretch the directions "
          "of tiny variance, which are mostly noise.",
    source="Survey section 2 (pre-processing).",
    recipe=experiment_recipe("preprocessing_compare", batch_norm=False, epochs=3),
    quick=QUICK_FIELDS,
    variants={
        "none": {"preprocessing": "none"},
        "center": {"preprocessing": "center"},
        "standardize_pixel": {"preprocessing": "standardize_pixel"},
        "standardize_channel": {"preprocessing": "standardize_channel"},
        "minmax": {"preprocessing": "minmax"},
        "pca": {"preprocessing": "pca"},
        "zca": {"preprocessing": "zca"},
    },
    columns=(TEST_ERROR, TRAIN_ERROR, BEST_VAL_ACCURACY, NOISE_AMPLIFICATION, TRAIN_SECONDS),
    verdict=verdict,
    measure=measure,
    figures=figures,
    notes="Every variant trains the same CNN (no batch normalization, He initialization, Adam) "
          "with the same seed; only the pre-processing layer at the front of the model changes. "
          "It is adapted on the training split only. PCA and ZCA use epsilon 0.1; "
          "standardize_pixel and standardize_channel raise variances below 1% of the mean "
          "pixel variance to that floor. Noise amplification is measured on the first 500 test "
          "images (all of them when there are fewer) with white noise of standard deviation "
          "0.01.",
)


if __name__ == "__main__":
    import sys

    from kerastricks.recipes.experiments import run_experiment_module

    sys.exit(run_experiment_module("preprocessing_compare", sys.argv[1:]))

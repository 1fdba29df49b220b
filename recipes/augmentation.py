"""Turn a recipe's `augmentation` list and `preprocessing` choice into Keras layers.

Pre-processing layers sit at the front of the recipe model, so a saved model carries them.
The ones that learn statistics are adapted on the training split only, by
`adapt_preprocessing`, after the model is built. Augmentation runs on the raw [0, 1] training
images in a parallel `tf.data` map (`augment_dataset`), before the model's pre-processing.
On the 2-core development machine that trained as fast as or faster than the same layers
inside the model, because the map overlaps with the training step (see
`benchmarks/bench_augmentation.py` and docs/benchmarks.md). Validation and test images are
never augmented.
"""

import keras
import numpy as np
import tensorflow as tf

from kerastricks.layers import (
    FancyPCA,
    MinMaxScaling,
    RandomHSVJitter,
    RandomPadCrop,
    RandomResizedCrop,
    Whitening,
)
from kerastricks.recipes.spec import RecipeError

# Name -> (layer class, default options). Value-range options assume images in [0, 1], which
# every recipe data set provides.
AUGMENTATIONS = {
    "flip": (keras.layers.RandomFlip, {"mode": "horizontal"}),
    "pad_crop": (RandomPadCrop, {"padding": 4}),
    "resized_crop": (RandomResizedCrop, {"scale": (0.5, 1.0)}),
    "translation": (
        keras.layers.RandomTranslation,
        {"height_factor": 0.1, "width_factor": 0.1, "fill_mode": "constant"},
    ),
    "rotation": (keras.layers.RandomRotation, {"factor": 0.05, "fill_mode": "constant"}),
    "zoom": (keras.layers.RandomZoom, {"height_factor": 0.1, "fill_mode": "constant"}),
    "brightness": (keras.layers.RandomBrightness, {"factor": 0.2, "value_range": (0, 1)}),
    "contrast": (keras.layers.RandomContrast, {"factor": 0.2, "value_range": (0, 1)}),
    "erasing": (keras.layers.RandomErasing, {"value_range": (0, 1)}),
    "keras_color_jitter": (
        keras.layers.RandomColorJitter,
        {
            "value_range": (0, 1),
            "brightness_factor": 0.2,
            "contrast_factor": 0.2,
            "saturation_factor": (0.3, 0.7),
            "hue_factor": 0.1,
        },
    ),
    "color_jitter": (RandomHSVJitter, {"value_range": (0, 1)}),
    "fancy_pca": (FancyPCA, {"stddev": 0.1}),
}

# Augmentations defined on RGB colours only, and the recipe data sets without colour.
RGB_ONLY = ("color_jitter", "fancy_pca", "keras_color_jitter")
GRAYSCALE_DATASETS = ("digits", "fashion_mnist", "mnist")

PREPROCESSING = (
    "none", "center", "standardize_pixel", "standardize_channel", "minmax", "pca", "zca"
)
# The options each pre-processing choice accepts.
PREPROCESSING_OPTIONS = {"pca": ("epsilon",), "zca": ("epsilon",)}
# Whitening's epsilon in recipes. The layer's default of 1e-5 lets a test pixel that never
# varied in training reach hundreds of standard deviations on images in [0, 1].
RECIPE_WHITENING_EPSILON = 0.1
# Per-pixel variances below this fraction of the mean pixel variance are raised to it, for the
# same reason: digits and Fashion-MNIST have border pixels that are (almost) always 0.
VARIANCE_FLOOR_FRACTION = 0.01

AUGMENT_PREFIX = "augment_"
PREPROCESS_PREFIX = "preprocess_"

# The image shape used to check options before the data set is known.
_CHECK_SHAPE = (32, 32, 3)


def available_augmentations():
    """Return the augmentation names a recipe's `augmentation` list accepts, sorted."""
    return sorted(AUGMENTATIONS)


def parse_augmentation(entry):
    """Return `(name, options)` from a list entry: `"flip"` or `{"pad_crop": {"padding": 2}}`."""
    if isinstance(entry, str):
        name, options = entry, {}
    elif isinstance(entry, dict) and len(entry) == 1:
        name, options = next(iter(entry.items()))
        options = {} if options is None else options
    else:
        raise RecipeError(
            f"Each augmentation entry must be a name or a mapping of one name to its options, "
            f"such as 'flip' or {{'pad_crop': {{'padding': 2}}}}. Received: {entry!r}."
        )
    if name not in AUGMENTATIONS:
        raise RecipeError(
            f"Unknown augmentation. Expected one of {available_augmentations()}. "
            f"Received: {name!r}."
        )
    if not isinstance(options, dict):
        raise RecipeError(
            f"The options of augmentation {name!r} must be a mapping. Received: {options!r}."
        )
    return name, options


def check_augmentation(entries, dataset=None):
    """Raise `RecipeError` for an unknown name, options the augmentation layer rejects, or a
    colour augmentation on a data set known to be grayscale."""
    for index, entry in enumerate(entries):
        make_augmentation(entry, _CHECK_SHAPE, index=index, seed=index, check_channels=False)
        name, _ = parse_augmentation(entry)
        if name in RGB_ONLY and dataset in GRAYSCALE_DATASETS:
            raise RecipeError(
                f"Augmentation {name!r} changes RGB colours, but data set {dataset!r} has "
                f"grayscale images with 1 channel. Remove {name!r} from the recipe's "
                f"augmentation, or use a colour data set such as cifar10."
            )


def check_preprocessing(name, options):
    """Raise `RecipeError` for an unknown pre-processing choice or options it does not take."""
    if name not in PREPROCESSING:
        raise RecipeError(
            f"Unknown preprocessing. Expected one of {list(PREPROCESSING)}. "
            f"Received: preprocessing={name!r}."
        )
    allowed = PREPROCESSING_OPTIONS.get(name, ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise RecipeError(
            f"Preprocessing {name!r} takes the options {list(allowed)}. "
            f"Received: preprocessing_options={options!r}."
        )
    if name in ("pca", "zca"):
        try:
            Whitening(method=name, **options)
        except (TypeError, ValueError) as error:
            raise RecipeError(f"Invalid preprocessing_options for {name!r}: {error}") from None


def make_augmentation(entry, input_shape, index, seed, check_channels=True):
    """Create the layer of one augmentation entry for images of `input_shape` (H, W, C).

    The layer is named `augment_<index>_<name>`, and `seed` is its seed unless the entry's
    options set one.
    """
    name, options = parse_augmentation(entry)
    if check_channels and name in RGB_ONLY and input_shape[-1] != 3:
        raise RecipeError(
            f"Augmentation {name!r} changes RGB colours and needs images with 3 channels, but "
            f"the images have shape {tuple(input_shape)}. Remove {name!r} from the recipe's "
            f"augmentation, or use a colour data set such as cifar10."
        )
    cls, defaults = AUGMENTATIONS[name]
    arguments = {**defaults, **options}
    if cls is RandomResizedCrop:
        arguments.setdefault("height", input_shape[0])
        arguments.setdefault("width", input_shape[1])
    arguments.setdefault("seed", seed)
    try:
        return cls(name=f"{AUGMENT_PREFIX}{index}_{name}", **arguments)
    except (TypeError, ValueError) as error:
        raise RecipeError(f"Invalid options for augmentation {name!r}: {error}") from None


def augmentation_layers(recipe, input_shape):
    """Create the recipe's augmentation layers, in list order, each with its own seed."""
    return [
        make_augmentation(entry, input_shape, index=index, seed=recipe.seed + index)
        for index, entry in enumerate(recipe.augmentation)
    ]


def check_augmentation_fits(recipe, input_shape):
    """Raise `RecipeError` unless every augmentation runs on images of `input_shape` (H, W, C)
    and returns images of the same shape.

    Each layer runs once on one blank image, so a crop or padding that does not fit the data set
    is reported before any training. Layers that must be adapted first (`fancy_pca`) are checked
    when they are adapted.
    """
    shape = tuple(int(size) for size in input_shape)
    for layer, entry in zip(augmentation_layers(recipe, shape), recipe.augmentation):
        name = parse_augmentation(entry)[0]
        if hasattr(layer, "adapt"):
            continue
        try:
            output = layer(np.zeros((1, *shape), dtype="float32"), training=True)
        except (TypeError, ValueError) as error:
            first_line = str(error).strip().splitlines()[0]
            raise RecipeError(
                f"Augmentation {name!r} does not fit the images of shape {shape}: {first_line}"
            ) from None
        if tuple(output.shape[1:]) != shape:
            raise RecipeError(
                f"Augmentation {name!r} turns images of shape {shape} into "
                f"{tuple(output.shape[1:])}; augmentations in the input pipeline must keep the "
                f"image size. Set its height and width to {shape[0]} and {shape[1]}, or leave "
                f"them out."
            )


def preprocessing_layers(recipe, input_shape):
    """Create the recipe's pre-processing layers, not yet adapted.

    `pca` keeps all components and lays them out in the image's shape, so the convolutions
    that follow still receive an image. The spatial layout of the components carries no
    meaning.
    """
    name, options = recipe.preprocessing, recipe.preprocessing_options
    layer_name = f"{PREPROCESS_PREFIX}{name}"
    if name == "none":
        return []
    if name in ("center", "standardize_pixel"):
        return [keras.layers.Normalization(axis=(1, 2, 3), name=layer_name)]
    if name == "standardize_channel":
        return [keras.layers.Normalization(axis=-1, name=layer_name)]
    if name == "minmax":
        return [MinMaxScaling(axis=(1, 2, 3), name=layer_name)]
    options = {"epsilon": RECIPE_WHITENING_EPSILON, **options}
    if name == "zca":
        return [Whitening(method="zca", name=layer_name, **options)]
    return [
        Whitening(method="pca", name=layer_name, **options),
        keras.layers.Reshape(tuple(input_shape), name=f"{layer_name}_reshape"),
    ]


def adapt_preprocessing(model, images):
    """Adapt the pre-processing layers of a `build_model` model on the training `images`.

    Args:
        model: a model from `build_model`.
        images: the training images as a NumPy array or a batched `tf.data.Dataset`; never
            the validation or test images.
    """
    for layer in model.layers:
        if not layer.name.startswith(PREPROCESS_PREFIX) or not hasattr(layer, "adapt"):
            continue
        layer.adapt(images)
        if isinstance(layer, keras.layers.Normalization):
            _set_variance(layer, centre_only=layer.name == f"{PREPROCESS_PREFIX}center")


def _set_variance(layer, centre_only):
    """Set an adapted `Normalization`'s variance to 1 (centring only) or floor small ones.

    A pixel that is constant in the training images has variance 0, and `Normalization` then
    divides by 1e-7, so a test image with any ink there gets values in the millions.
    """
    variance = keras.ops.convert_to_numpy(layer.adapt_variance)
    if centre_only:
        variance = np.ones_like(variance)
    else:
        variance = np.maximum(variance, VARIANCE_FLOOR_FRACTION * variance.mean())
    layer.adapt_variance.assign(variance)
    layer.finalize_state()


def augment_dataset(dataset, recipe, images):
    """Return `dataset` with the recipe's augmentation applied to each batch of images.

    Args:
        dataset: a batched `tf.data.Dataset` of `(images, labels)`, the training split.
        recipe: the `Recipe`.
        images: the training images as a NumPy array, for the augmentations that are adapted
            (`fancy_pca`) and for the image shape.

    Returns:
        `dataset` itself when the recipe has no augmentation, otherwise a new dataset that
        runs the augmentation in a parallel map.

    Raises:
        RecipeError: for an augmentation that does not fit the images, such as a colour
            augmentation on grayscale images.
    """
    layers = augmentation_layers(recipe, images.shape[1:])
    if not layers:
        return dataset
    for layer in layers:
        if hasattr(layer, "adapt"):
            layer.adapt(images)
    augment = keras.Sequential(layers, name="augmentation")
    # NOTE: the layers' random state starts from the recipe seed in every process, so a run
    # resumed by BackupAndRestore gets the same batches but other augmentation draws.

    def augment_batch(batch_images, labels):
        return augment(batch_images, training=True), labels

    dataset = dataset.map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)

"""Tests of the recipe fields `augmentation` and `preprocessing` and their wiring."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from kerastricks.layers import FancyPCA, RandomPadCrop, RandomResizedCrop, Whitening
from kerastricks.recipes import Recipe, load_dataset, train
from kerastricks.recipes.augmentation import (
    adapt_preprocessing,
    augment_dataset,
    augmentation_layers,
    available_augmentations,
    check_augmentation_fits,
)
from kerastricks.recipes.models import build_model
from kerastricks.recipes.spec import RecipeError
from tests.recipes.cli_runner import run_cli

TINY = dict(width=4, depth=1, convs_per_block=1, dense_units=0, epochs=1, batch_size=64,
            diagnostics=False)


@pytest.fixture(scope="module")
def digits_images():
    images = (load_digits().images / 16.0).astype("float32")[..., None]
    return images[:1200], images[1200:]


def to_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def preprocessed(recipe, train_images, images):
    """Build the recipe model, adapt it on `train_images`, return the pre-processed `images`."""
    model = build_model(recipe, train_images.shape[1:], 10)
    adapt_preprocessing(model, train_images)
    layers = [layer for layer in model.layers if layer.name.startswith("preprocess_")]
    front = keras.Model(model.input, layers[-1].output)
    return to_numpy(front(images))


# Recipe fields


def test_defaults_keep_plain_model():
    recipe = Recipe()
    assert recipe.augmentation == []
    assert recipe.preprocessing == "none"
    names = [layer.name for layer in build_model(recipe, (8, 8, 1), 10).layers]
    assert not [name for name in names if name.startswith(("preprocess_", "augment_"))]


def test_augmentation_round_trips_through_json_and_overrides(tmp_path):
    recipe = Recipe(augmentation=["flip", {"pad_crop": {"padding": 2}}], preprocessing="zca",
                    preprocessing_options={"epsilon": 0.1})
    recipe.save(tmp_path / "recipe.json")
    assert Recipe.from_file(tmp_path / "recipe.json") == recipe

    overridden = Recipe().with_overrides(
        ["augmentation=[flip, {pad_crop: {padding: 2}}]", "preprocessing=zca"]
    )
    assert overridden.augmentation == ["flip", {"pad_crop": {"padding": 2}}]
    assert overridden.preprocessing == "zca"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"augmentation": ["flop"]}, "Unknown augmentation.*'flop'"),
        ({"augmentation": [{"pad_crop": {"padding": 0}}]}, "padding=0"),
        ({"augmentation": [{"pad_crop": {"pading": 2}}]}, "pad_crop.*pading"),
        ({"augmentation": [{"flip": None, "pad_crop": None}]}, "mapping of one name"),
        ({"augmentation": [{"pad_crop": 2}]}, "options of augmentation 'pad_crop'"),
        ({"augmentation": "flip"}, "'augmentation' must be list"),
        ({"preprocessing": "whiten"}, "Unknown preprocessing.*'whiten'"),
        ({"preprocessing": "center", "preprocessing_options": {"epsilon": 1}}, "'center' takes"),
        ({"preprocessing": "zca", "preprocessing_options": {"epsilon": -1}}, "epsilon=-1"),
    ],
)
def test_bad_fields_raise_recipe_error(fields, message):
    with pytest.raises(RecipeError, match=message):
        Recipe(**fields)


def test_every_augmentation_builds():
    recipe = Recipe(dataset="cifar10", augmentation=available_augmentations())
    layers = augmentation_layers(recipe, (16, 16, 3))
    images = np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32")
    layers[available_augmentations().index("fancy_pca")].adapt(images)

    assert len(layers) == len(available_augmentations())
    for layer in layers:
        assert to_numpy(layer(images, training=True)).shape == images.shape, layer.name


def test_augmentation_layers_use_options_and_seeds():
    recipe = Recipe(seed=7, augmentation=["flip", {"pad_crop": {"padding": 2}}, "resized_crop"])
    flip, pad_crop, resized_crop = augmentation_layers(recipe, (28, 28, 1))

    assert isinstance(flip, keras.layers.RandomFlip)
    assert isinstance(pad_crop, RandomPadCrop)
    assert pad_crop.padding == 2
    assert isinstance(resized_crop, RandomResizedCrop)
    assert (resized_crop.height, resized_crop.width) == (28, 28)
    assert [flip.seed, pad_crop.seed, resized_crop.seed] == [7, 8, 9]
    assert [layer.name for layer in (flip, pad_crop)] == ["augment_0_flip", "augment_1_pad_crop"]


@pytest.mark.parametrize("name", ["fancy_pca", "color_jitter", "keras_color_jitter"])
def test_colour_augmentation_rejects_grayscale(name):
    recipe = Recipe(dataset="cifar10", augmentation=[name])
    with pytest.raises(RecipeError, match=rf"'{name}'.*3 channels.*\(28, 28, 1\)"):
        augmentation_layers(recipe, (28, 28, 1))
    for dataset in ("digits", "fashion_mnist"):
        with pytest.raises(RecipeError, match=rf"'{name}'.*'{dataset}'.*1 channel"):
            Recipe(dataset=dataset, augmentation=[name])


# Pre-processing against NumPy


def test_center_subtracts_training_mean(digits_images):
    train_images, other = digits_images
    outputs = preprocessed(Recipe(preprocessing="center"), train_images, other)
    np.testing.assert_allclose(outputs, other - train_images.mean(axis=0), atol=1e-5)


def test_standardize_pixel_floors_variance(digits_images):
    train_images, other = digits_images
    mean, variance = train_images.mean(axis=0), train_images.var(axis=0)
    outputs = preprocessed(Recipe(preprocessing="standardize_pixel"), train_images, other)

    # Border pixels that are always 0 in training get 1% of the mean variance, not 1e-7.
    floored = np.maximum(variance, 0.01 * variance.mean())
    expected = (other - mean) / np.sqrt(floored)
    assert (variance < floored).any()
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(outputs).max() < 100


def test_standardize_channel(digits_images):
    train_images, other = digits_images
    outputs = preprocessed(Recipe(preprocessing="standardize_channel"), train_images, other)
    expected = (other - train_images.mean()) / train_images.std()
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)


def test_minmax_per_pixel(digits_images):
    train_images, _ = digits_images
    outputs = preprocessed(Recipe(preprocessing="minmax"), train_images, train_images)
    low, high = train_images.min(axis=0), train_images.max(axis=0)
    varying = high > low
    expected = 2 * (train_images - low) / np.where(varying, high - low, 1.0) - 1
    np.testing.assert_allclose(outputs[:, varying], expected[:, varying], atol=1e-5)
    np.testing.assert_array_equal(outputs[:, ~varying], 0.0)


def test_whitening_epsilon_in_recipes(digits_images):
    train_images, _ = digits_images
    default = build_model(Recipe(preprocessing="zca"), train_images.shape[1:], 10)
    chosen = build_model(
        Recipe(preprocessing="pca", preprocessing_options={"epsilon": 0.5}),
        train_images.shape[1:], 10,
    )
    assert default.get_layer("preprocess_zca").epsilon == 0.1
    assert chosen.get_layer("preprocess_pca").epsilon == 0.5


@pytest.mark.parametrize("method", ["zca", "pca"])
def test_whitening_preprocessing(digits_images, method):
    train_images, _ = digits_images
    recipe = Recipe(preprocessing=method, preprocessing_options={"epsilon": 1e-3})
    outputs = preprocessed(recipe, train_images, train_images)

    # Digits have pixels that never vary, so the whitened covariance is the identity only on
    # the directions with variance well above epsilon.
    assert outputs.shape == train_images.shape
    flat = outputs.reshape(len(outputs), -1)
    variances = np.linalg.eigvalsh(np.cov(flat, rowvar=False, bias=True))
    assert variances.max() < 1.0 + 1e-3
    assert np.sum(variances > 0.9) >= 40


def test_adapt_uses_training_split_only(tmp_path):
    recipe = Recipe(name="aug", subset=300, preprocessing="center",
                    augmentation=["flip", {"pad_crop": {"padding": 1}}], **TINY)
    data = load_dataset("digits", subset=300, batch_size=recipe.batch_size)
    metrics = train(recipe, data, tmp_path / "run", verbose=0)

    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    mean = to_numpy(model.get_layer("preprocess_center").mean).reshape(data.input_shape)
    np.testing.assert_allclose(mean, data.x_train.mean(axis=0), atol=1e-5)
    assert not np.allclose(mean, data.x_validation.mean(axis=0), atol=1e-3)
    # Centring only: the reloaded layer still divides by 1.
    np.testing.assert_allclose(to_numpy(model.get_layer("preprocess_center").variance), 1.0)
    assert np.isfinite(metrics["test_loss"])
    # Augmentation stays out of the saved model, so inference gets the images unchanged.
    assert not [layer for layer in model.layers if layer.name.startswith("augment_")]


# Augmentation in tf.data


def test_augment_dataset_changes_images_only(digits_images):
    train_images, _ = digits_images
    labels = np.arange(len(train_images), dtype="int32") % 10
    dataset = tf.data.Dataset.from_tensor_slices((train_images, labels)).batch(100)
    recipe = Recipe(augmentation=[{"pad_crop": {"padding": 2}}])
    augmented = augment_dataset(dataset, recipe, train_images)

    images, batch_labels = next(iter(augmented))
    assert tuple(images.shape) == (100, 8, 8, 1)
    np.testing.assert_array_equal(batch_labels.numpy(), labels[:100])
    assert not np.allclose(images.numpy(), train_images[:100])
    assert augment_dataset(dataset, Recipe(), train_images) is dataset


def test_augment_dataset_adapts_fancy_pca():
    images = np.random.default_rng(0).random((64, 8, 8, 3)).astype("float32")
    images[..., 1] = 0.5 * images[..., 0] + 0.1
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(64, "int32"))).batch(16)
    recipe = Recipe(dataset="cifar10", augmentation=["fancy_pca"])
    augmented = augment_dataset(dataset, recipe, images)

    batch, _ = next(iter(augmented))
    shift = batch.numpy() - images[:16]
    # Each image moves by one colour, and only along the adapted principal directions.
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1, :1], shift.shape), atol=1e-6)
    reference = FancyPCA()
    reference.adapt(images)
    vectors = to_numpy(reference.eigenvectors)
    values = to_numpy(reference.eigenvalues)
    alpha = shift[:, 0, 0] @ vectors / np.where(values > 1e-8, values, 1.0)
    np.testing.assert_allclose(alpha[:, values <= 1e-8], 0.0, atol=1e-3)
    assert np.abs(alpha).max() > 0


def test_whitening_in_model_survives_save(tmp_path, digits_images):
    train_images, other = digits_images
    recipe = Recipe(preprocessing="zca", **TINY)
    model = build_model(recipe, train_images.shape[1:], 10)
    adapt_preprocessing(model, train_images)
    model.save(tmp_path / "model.keras")

    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.get_layer("preprocess_zca"), Whitening)
    np.testing.assert_allclose(
        loaded.predict(other, verbose=0), model.predict(other, verbose=0), atol=1e-6
    )


@pytest.mark.parametrize("augmentation, message", [
    ([{"pad_crop": {"padding": 8}}], "Augmentation 'pad_crop' does not fit the images of shape "
                                     "(8, 8, 1): `padding` must be smaller"),
    ([{"resized_crop": {"height": 20, "width": 20}}],
     "Augmentation 'resized_crop' turns images of shape (8, 8, 1) into (20, 20, 1)"),
])
def test_misfit_augmentation_stops_before_training(tmp_path, augmentation, message):
    recipe = Recipe(dataset="digits", subset=200, epochs=1, augmentation=augmentation)
    data = load_dataset("digits", subset=200)
    with pytest.raises(RecipeError, match=re.escape(message)):
        train(recipe, data, tmp_path / "run", verbose=0)
    assert not (tmp_path / "run" / "status.json").exists()


def test_fitting_augmentation_passes_the_check():
    recipe = Recipe(augmentation=["flip", {"pad_crop": {"padding": 2}}, "resized_crop"])
    check_augmentation_fits(recipe, (8, 8, 1))


def test_misfit_augmentation_from_the_command_line(tmp_path, capsys):
    status, _, err = run_cli(
        ["run", "baseline", "--epochs", "1", "--subset", "300", "--logdir", str(tmp_path),
         "--set", "augmentation=[{pad_crop: {padding: 8}}]"], capsys)
    assert status == 2
    assert len(err.strip().splitlines()) == 1
    assert "Augmentation 'pad_crop' does not fit the images of shape (8, 8, 1)" in err
    assert not any(tmp_path.iterdir())

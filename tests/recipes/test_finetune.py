"""Tests for the fine-tuning strategies and discriminative learning rates, on real training."""

import keras
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from kerastricks.recipes.finetune import (
    build_finetune_model,
    choose_strategy,
    discriminative_optimizer,
    layer_groups,
)
from kerastricks.recipes.models import build_model
from kerastricks.recipes.spec import Recipe

INPUT_SHAPE = (8, 8, 1)


def pretrained_base():
    """A recipe CNN with three blocks (group names block1 to block3, dense, classifier)."""
    recipe = Recipe(width=4, depth=3, convs_per_block=1, dense_units=8, seed=0)
    return build_model(recipe, INPUT_SHAPE, 10)


def trainable_names(model):
    return sorted({layer.name for layer in model.layers if layer.trainable_weights})


def random_data(count=64, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((count,) + INPUT_SHAPE).astype("float32"), rng.integers(0, num_classes, count)


class TestStrategies:
    def test_layer_groups_follow_name_prefix(self):
        names = [name for name, _ in layer_groups(pretrained_base())]
        assert names == ["block1", "block2", "block3", "dense", "classifier"]

    def test_similar_small_trains_only_new_classifier(self):
        model, strategy = build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "similar_small")
        assert strategy == "similar_small"
        assert trainable_names(model) == ["finetune_classifier"]
        # The features are the input of the old classifier: the dense layer's activation.
        assert model.get_layer("finetune_classifier").input.shape[-1] == 8

    def test_similar_large_trains_top_groups(self):
        model, _ = build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "similar_large",
                                        trainable_groups=2)
        assert trainable_names(model) == ["block3_conv1", "dense", "finetune_classifier"]

    def test_similar_large_with_batch_norm_training(self):
        model, _ = build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "similar_large",
                                        trainable_groups=2, train_batch_norm=True)
        assert trainable_names(model) == [
            "block3_bn1", "block3_conv1", "dense", "finetune_classifier"]

    def test_different_small_uses_middle_block(self):
        model, _ = build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "different_small")
        assert trainable_names(model) == ["finetune_classifier"]
        # Groups block1, block2, block3, dense: the middle one is block2, ending in its pool.
        layer_names = [layer.name for layer in model.layers]
        assert "block2_pool" in layer_names
        assert "block3_conv1" not in layer_names
        assert "finetune_pool" in layer_names

    def test_different_large_trains_all_but_batch_norm(self):
        model, _ = build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "different_large")
        assert trainable_names(model) == [
            "block1_conv1", "block2_conv1", "block3_conv1", "dense", "finetune_classifier"]

    def test_feature_layer_by_name(self):
        model, _ = build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "similar_small",
                                        feature_layer="block1_pool")
        assert "block2_conv1" not in [layer.name for layer in model.layers]

    @pytest.mark.parametrize("num_images, similar, expected", [
        (100, True, "similar_small"), (10000, True, "similar_large"),
        (100, False, "different_small"), (10000, False, "different_large"),
    ])
    def test_choose_strategy(self, num_images, similar, expected):
        assert choose_strategy(num_images, similar) == expected

    def test_auto_uses_data_size(self):
        _, strategy = build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "auto",
                                           num_images=50, similar=False)
        assert strategy == "different_small"

    def test_applications_model_without_weights(self):
        base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
        model, _ = build_finetune_model(base, 5, (32, 32, 3), "similar_large")
        assert trainable_names(model) == [
            "block5_conv1", "block5_conv2", "block5_conv3", "finetune_classifier"]


class TestFrozenTraining:
    def test_frozen_batch_norm_statistics_stay_identical(self):
        base = pretrained_base()
        model, _ = build_finetune_model(base, 3, INPUT_SHAPE, "similar_large", trainable_groups=2)
        # The head's own normalization, finetune_norm, is new and trains.
        frozen_bn = [layer for layer in model.layers if isinstance(
            layer, keras.layers.BatchNormalization) and layer.name != "finetune_norm"]
        before = [[w.numpy().copy() for w in layer.weights] for layer in frozen_bn]
        kernel_before = model.get_layer("block3_conv1").kernel.numpy().copy()
        frozen_kernel = model.get_layer("block1_conv1").kernel.numpy().copy()

        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        x, y = random_data()
        # Inputs far from the pre-training statistics would move training-mode statistics.
        model.fit(x * 5 + 3, y, epochs=2, batch_size=16, verbose=0)

        for layer, weights in zip(frozen_bn, before):
            for variable, value in zip(layer.weights, weights):
                np.testing.assert_array_equal(variable.numpy(), value)
        np.testing.assert_array_equal(model.get_layer("block1_conv1").kernel.numpy(),
                                      frozen_kernel)
        assert not np.array_equal(model.get_layer("block3_conv1").kernel.numpy(), kernel_before)

    def test_trained_batch_norm_statistics_move(self):
        model, _ = build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "similar_large",
                                        trainable_groups=2, train_batch_norm=True)
        layer = model.get_layer("block3_bn1")
        before = layer.moving_mean.numpy().copy()
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        x, y = random_data()
        model.fit(x * 5 + 3, y, epochs=1, batch_size=16, verbose=0)
        assert not np.array_equal(layer.moving_mean.numpy(), before)


def offset_feature_base():
    """A base whose 16 features are its 4x4 pixels: an identity dense layer, then ReLU."""
    inputs = keras.Input((4, 4, 1), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = keras.layers.Dense(16, kernel_initializer="identity", name="dense")(x)
    x = keras.layers.ReLU(name="dense_act")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs)


def offset_feature_data(count, seed):
    """Pixels near 3 with noise 0.1; class c adds 0.3 to pixel row c.

    The classes are linearly separable, but most of each feature is a shared offset, as in
    the ReLU features of a network that never saw these classes.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    images = 3.0 + rng.normal(0.0, 0.1, (count, 4, 4, 1))
    images[np.arange(count), labels] += 0.3
    return images.astype("float32"), labels


class TestLinearProbe:
    def test_frozen_features_reach_reference_accuracy(self):
        x_train, y_train = offset_feature_data(320, seed=0)
        x_test, y_test = offset_feature_data(600, seed=1)
        reference = LogisticRegression(max_iter=2000).fit(
            x_train.reshape(len(x_train), -1), y_train).score(
            x_test.reshape(len(x_test), -1), y_test)

        keras.utils.set_random_seed(0)
        model, _ = build_finetune_model(offset_feature_base(), 3, (4, 4, 1), "similar_small")
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        # 30 steps at a fine-tuning learning rate.
        model.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)

        assert reference > 0.95
        assert accuracy >= reference - 0.05

    def test_classifier_starts_uniform(self):
        model, _ = build_finetune_model(offset_feature_base(), 3, (4, 4, 1), "similar_small")
        x, _ = offset_feature_data(8, seed=0)
        np.testing.assert_allclose(model.predict(x, verbose=0), np.full((8, 3), 1 / 3),
                                   atol=1e-6)

    def test_features_standardized_by_default(self):
        model, _ = build_finetune_model(offset_feature_base(), 3, (4, 4, 1), "similar_small")
        norm = model.get_layer("finetune_norm")
        assert not norm.center
        assert not norm.scale
        assert model.get_layer("finetune_classifier").input is norm.output

    def test_normalization_can_be_left_out(self):
        model, _ = build_finetune_model(offset_feature_base(), 3, (4, 4, 1), "similar_small",
                                        normalize_features=False)
        assert "finetune_norm" not in [layer.name for layer in model.layers]


class TestDiscriminativeRates:
    def test_rates_fall_per_group(self):
        model, _ = build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "different_large")
        _, rates = discriminative_optimizer(model, 1e-2, factor=0.5)
        assert rates["finetune"] == pytest.approx(1e-2)
        assert rates["dense"] == pytest.approx(5e-3)
        assert rates["block3"] == pytest.approx(2.5e-3)
        assert rates["block1"] == pytest.approx(1e-2 * 0.5**4)

    def test_lower_layers_move_less(self):
        model, _ = build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "different_large")
        optimizer, rates = discriminative_optimizer(model, 1e-2, factor=0.1)
        kernels = ["block1_conv1", "block2_conv1", "block3_conv1", "dense"]
        before = {name: model.get_layer(name).kernel.numpy().copy() for name in kernels}
        model.compile(optimizer, "sparse_categorical_crossentropy")
        x, y = random_data()
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        moved = {name: np.mean(np.abs(model.get_layer(name).kernel.numpy() - before[name]))
                 for name in kernels}
        # Adam's step is about the learning rate per weight, so with rates ten times apart
        # each group moves less than the group above it.
        assert moved["block1_conv1"] < moved["block2_conv1"] < moved["block3_conv1"]
        assert moved["block3_conv1"] < moved["dense"]
        assert moved["block1_conv1"] > 0


    def test_saved_model_keeps_group_rates(self, tmp_path):
        model, _ = build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "different_large")
        optimizer, rates = discriminative_optimizer(model, 1e-2, factor=0.5)
        model.compile(optimizer, "sparse_categorical_crossentropy")
        x, y = random_data(16)
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        model.save(tmp_path / "model.keras")
        loaded = keras.saving.load_model(tmp_path / "model.keras")
        loaded_rates = sorted({round(float(sub.learning_rate), 9)
                               for sub in loaded.optimizer.optimizers})
        assert loaded_rates == pytest.approx(sorted(rates.values()))


class TestBadInput:
    def test_unknown_strategy(self):
        with pytest.raises(ValueError, match="Unknown fine-tuning strategy.*'tiny'"):
            build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "tiny")

    def test_unknown_layer_name(self):
        with pytest.raises(ValueError, match="Layer 'block9_conv1' not found"):
            build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "similar_small",
                                 feature_layer="block9_conv1")

    def test_input_does_not_fit(self):
        expected = r"expects \(8, 8, 1\).*\(28, 28, 1\).*Resizing\(8, 8\)"
        with pytest.raises(ValueError, match=expected):
            build_finetune_model(pretrained_base(), 3, (28, 28, 1), "similar_small")

    def test_grayscale_into_rgb_model(self):
        base = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(2, 3, name="c1")])
        with pytest.raises(ValueError, match="one channel 3 times with keras.ops.repeat"):
            build_finetune_model(base, 3, (16, 16, 1), "similar_small")

    def test_auto_needs_num_images(self):
        with pytest.raises(ValueError, match="needs num_images"):
            build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "auto")

    def test_trainable_groups_out_of_range(self):
        with pytest.raises(ValueError, match="trainable_groups must be between 1 and"):
            build_finetune_model(pretrained_base(), 3, INPUT_SHAPE, "similar_large",
                                 trainable_groups=9)

"""Tests for the class-imbalance tools, against scikit-learn and NumPy references."""

import json

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.utils.class_weight import compute_class_weight

from kerastricks.callbacks import ClassMetrics, class_metrics
from kerastricks.recipes.imbalance import (
    class_balanced_sampler,
    class_weights,
    make_imbalanced,
    minority_classes,
    minority_crops,
    resolve_class_weight,
    sampled_pipeline,
    target_distribution,
)
from kerastricks.recipes.spec import Recipe, RecipeError

NAMES = ["a", "b", "c"]


def skewed_labels(counts):
    return np.concatenate([np.full(n, c, dtype="int32") for c, n in enumerate(counts)])


def epoch_labels(dataset, epoch_variable, epoch):
    epoch_variable.assign(epoch)
    return np.concatenate([labels.numpy() for _, labels in dataset])


class TestClassWeights:
    def test_balanced_matches_scikit_learn(self):
        labels = skewed_labels([500, 60, 7])
        expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
        weights = class_weights(labels)
        np.testing.assert_allclose([weights[c] for c in range(3)], expected)

    def test_effective_number_formula(self):
        labels = skewed_labels([500, 60, 7])
        beta = 0.99
        raw = (1 - beta) / (1 - beta ** np.array([500.0, 60.0, 7.0]))
        expected = raw * 3 / raw.sum()
        weights = class_weights(labels, "effective_number", beta=beta)
        np.testing.assert_allclose([weights[c] for c in range(3)], expected)

    def test_effective_number_beta_zero_is_uniform(self):
        weights = class_weights(skewed_labels([50, 5]), "effective_number", beta=0.0)
        assert weights == {0: 1.0, 1: 1.0}

    def test_missing_class_raises(self):
        with pytest.raises(ValueError, match="Class 2 has no training images"):
            class_weights(skewed_labels([5, 5]), num_classes=3)

    def test_mapping_by_name_fills_ones(self):
        weights = resolve_class_weight({"c": 4.0, 0: 2}, skewed_labels([3, 3, 3]), NAMES)
        assert weights == {0: 2.0, 1: 1.0, 2: 4.0}

    def test_unknown_class_raises(self):
        with pytest.raises(ValueError, match="class_weight names an unknown class 'dog'"):
            resolve_class_weight({"dog": 2.0}, skewed_labels([3, 3, 3]), NAMES)
        with pytest.raises(ValueError, match="unknown class 7"):
            resolve_class_weight({7: 2.0}, skewed_labels([3, 3, 3]), NAMES)


class TestTargetDistribution:
    def test_balanced_is_uniform(self):
        np.testing.assert_allclose(target_distribution("balanced", NAMES), [1 / 3] * 3)

    def test_mapping_by_name(self):
        np.testing.assert_allclose(target_distribution({"a": 0.2, 2: 0.8}, NAMES), [0.2, 0, 0.8])

    def test_not_summing_to_one_raises(self):
        with pytest.raises(ValueError, match="distribution must sum to 1, but they sum to 0.9"):
            target_distribution({"a": 0.5, "b": 0.4}, NAMES)

    def test_unknown_class_raises(self):
        with pytest.raises(ValueError, match="unknown class 'z'"):
            target_distribution({"a": 0.5, "z": 0.5}, NAMES)


class TestSamplers:
    target = np.array([0.5, 0.3, 0.2])

    def test_streaming_sampler_reaches_target(self):
        labels = skewed_labels([300, 60, 15])
        images = np.arange(len(labels), dtype="float32")
        source = tf.data.Dataset.from_tensor_slices((images, labels))
        sampled = class_balanced_sampler(source, self.target, seed=3).batch(100).take(30)
        drawn = np.concatenate([y.numpy() for _, y in sampled])
        shares = np.bincount(drawn, minlength=3) / len(drawn)
        # Binomial standard error at 3,000 draws is below 0.01, so 0.03 is three of them.
        np.testing.assert_allclose(shares, self.target, atol=0.03)

    def test_streaming_sampler_keeps_pairs(self):
        labels = skewed_labels([50, 5])
        source = tf.data.Dataset.from_tensor_slices((labels.astype("float32"), labels))
        for image, label in class_balanced_sampler(source, [0.5, 0.5], seed=1).take(50):
            assert float(image) == float(label)

    def test_in_memory_sampler_reaches_target(self):
        labels = skewed_labels([900, 90, 10])
        images = labels.astype("float32") * 10
        dataset, epoch = sampled_pipeline(images, labels, 100, seed=0,
                                          distributions=[self.target], epoch_size=6000)
        drawn = epoch_labels(dataset, epoch, 0)
        shares = np.bincount(drawn, minlength=3) / len(drawn)
        np.testing.assert_allclose(shares, self.target, atol=0.02)
        images_drawn = np.concatenate([x.numpy() for x, _ in dataset])
        np.testing.assert_array_equal(images_drawn, epoch_labels(dataset, epoch, 0) * 10)

    def test_in_memory_order_depends_on_seed_and_epoch(self):
        labels = skewed_labels([60, 40])
        dataset, epoch = sampled_pipeline(np.arange(100.0), labels, 10, 5, [[0.5, 0.5]])
        again, again_epoch = sampled_pipeline(np.arange(100.0), labels, 10, 5, [[0.5, 0.5]])
        first = [x.numpy() for x, _ in dataset]
        epoch.assign(1)
        second = [x.numpy() for x, _ in dataset]
        again_epoch.assign(1)
        np.testing.assert_array_equal(np.concatenate(second),
                                      np.concatenate([x.numpy() for x, _ in again]))
        assert not np.array_equal(np.concatenate(first), np.concatenate(second))
        assert len(first) == 10

    def test_two_stages_switch_class_sets(self):
        labels = skewed_labels([50, 50, 5, 5])
        stages = [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]
        dataset, epoch = sampled_pipeline(np.zeros(110), labels, 11, 0, stages, boundaries=[2])
        for stage_epoch, allowed in ((0, {0, 1}), (1, {0, 1}), (2, {2, 3}), (3, {2, 3})):
            assert set(epoch_labels(dataset, epoch, stage_epoch)) == allowed

    def test_class_without_images_raises(self):
        with pytest.raises(ValueError, match=r"classes \[2\].*no training images"):
            sampled_pipeline(np.zeros(10), skewed_labels([5, 5]), 2, 0, [[0.4, 0.4, 0.2]])


class TestMinorityData:
    def test_make_imbalanced_keeps_ratio(self):
        labels = skewed_labels([400, 400, 400])
        images = np.arange(len(labels))
        kept_images, kept = make_imbalanced(images, labels, {1: 0.05, 2: 0.5}, seed=3)
        np.testing.assert_array_equal(np.bincount(kept), [400, 20, 200])
        np.testing.assert_array_equal(labels[kept_images], kept)

    def test_minority_classes_threshold(self):
        labels = skewed_labels([100, 30, 60, 10])
        assert minority_classes(labels, 4, 0.5) == [1, 3]

    def test_threshold_leaving_stage_empty_raises(self):
        labels = skewed_labels([100, 30, 60])
        with pytest.raises(ValueError, match="one stage has no classes"):
            minority_classes(labels, 3, 0.2)
        with pytest.raises(ValueError, match="one stage has no classes"):
            minority_classes(skewed_labels([10, 10]), 2, 0.9)

    def test_crops_come_only_from_given_classes(self):
        labels = skewed_labels([6, 3, 2])
        images = np.random.default_rng(0).random((11, 10, 10, 1)).astype("float32")
        crops, crop_labels = minority_crops(images, labels, [1, 2], 4, seed=1)
        assert crops.shape == (20, 10, 10, 1)
        np.testing.assert_array_equal(np.bincount(crop_labels, minlength=3), [0, 12, 8])

    def test_crop_is_resized_window(self):
        # A 10-column ramp from 0 to 1 cropped to 8 columns and resized back stays a ramp with
        # the range of 8 columns, 7/9, so the crop really cut the image.
        ramp = np.tile(np.linspace(0, 1, 10, dtype="float32"), (10, 1))[None, ..., None]
        crops, _ = minority_crops(np.repeat(ramp, 3, 0), [0, 0, 0], [0], 2, seed=0)
        for crop in crops:
            assert np.all(np.diff(crop[0, :, 0]) >= -1e-6)
            assert crop.max() - crop.min() < 0.8 + 1e-5
        full, _ = minority_crops(ramp, [0], [0], 1, crop_size=1.0)
        np.testing.assert_allclose(full[0], ramp[0], atol=1e-6)


class TestClassMetrics:
    def test_matches_scikit_learn(self):
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 4, 300)
        predicted = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 4, 300))
        metrics = class_metrics(labels, predicted, ["w", "x", "y", "z"])
        assert metrics["balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(labels, predicted))
        assert metrics["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
        for index, name in enumerate("wxyz"):
            expected = np.mean(predicted[labels == index] == index)
            assert metrics["recall_per_class"][name] == pytest.approx(expected)

    def test_absent_class_has_no_recall(self):
        metrics = class_metrics([0, 0, 1], [0, 1, 1], ["a", "b", "c"])
        assert metrics["recall_per_class"]["c"] is None
        assert metrics["balanced_accuracy"] == pytest.approx(0.75)

    def test_callback_config_round_trip(self):
        callback = ClassMetrics((np.zeros((2, 3), "float32"), np.array([0, 1])), ["a", "b"])
        copy = ClassMetrics.from_config(callback.get_config())
        np.testing.assert_array_equal(copy.validation_data[1], [0, 1])
        assert copy.class_names == ["a", "b"]


class TestRecipeFields:
    @pytest.mark.parametrize("changes, message", [
        ({"class_weight": "inverse"}, "Unknown class_weight method"),
        ({"class_weight": {"a": -1}}, "class_weight values must be numbers >= 0"),
        ({"sampling": {"a": 0.7, "b": 0.7}}, "must sum to 1"),
        ({"sampling": "uniform"}, "sampling must be 'balanced'"),
        ({"imbalance": {0: 0}}, r"imbalance values must be fractions in \(0, 1\]"),
        ({"two_stage_epochs": 3, "epochs": 3}, "two_stage_epochs must be smaller than epochs"),
        ({"minority_threshold": 0.0}, "'minority_threshold' must be > 0"),
        ({"lr_schedule": "cosine", "snapshots": 2, "epochs": 4}, "needs lr_schedule='constant'"),
    ])
    def test_bad_fields(self, changes, message):
        with pytest.raises(RecipeError, match=message):
            Recipe(**changes)

    def test_set_overrides(self):
        recipe = Recipe().with_overrides([
            "class_weight=effective_number", "sampling={Trouser: 0.5, 0: 0.5}",
            "imbalance={Coat: 0.05}", "two_stage_epochs=2", "lr_schedule=sgdr",
            "lr_schedule_options={first_cycle_epochs: 1}",
        ])
        assert recipe.sampling == {"Trouser": 0.5, "0": 0.5}
        assert recipe.imbalance == {"Coat": 0.05}
        assert Recipe.from_dict(json.loads(recipe.to_json())) == recipe
        assert recipe.lr_schedule_options == {"first_cycle_epochs": 1}


MINORITY = (0, 2, 4, 6, 8)


def train_with_remedy(remedy, x, y, seed, epochs=4, batch_size=64):
    """Train a tiny CNN on imbalanced arrays with one remedy; return the fitted model."""
    import keras

    from kerastricks.recipes.data import _shuffled_pipeline

    keras.utils.set_random_seed(seed)
    class_weight = class_weights(y) if remedy == "class weights" else None
    if remedy == "minority crops":
        crops, crop_labels = minority_crops(x, y, MINORITY, 9, crop_size=0.9, seed=seed)
        x, y = np.concatenate([x, crops]), np.concatenate([y, crop_labels])
    if remedy == "resampling":
        dataset, epoch = sampled_pipeline(x, y, batch_size, seed, [np.full(10, 0.1)])
    elif remedy == "two-stage":
        is_minority = np.isin(np.arange(10), MINORITY)
        stages = [~is_minority / 5, is_minority / 5]
        dataset, epoch = sampled_pipeline(x, y, batch_size, seed, stages, boundaries=[epochs // 2])
    else:
        dataset, epoch = _shuffled_pipeline(x, y, batch_size, seed)
    model = keras.Sequential([
        keras.Input(x.shape[1:]),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    set_epoch = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs=None: epoch.assign(e))
    model.fit(dataset, epochs=epochs, class_weight=class_weight, callbacks=[set_epoch],
              shuffle=False, verbose=0)
    return model


def minority_recall(model, x_test, y_test):
    predicted = np.argmax(model.predict(x_test, batch_size=1000, verbose=0), axis=-1)
    recalls = class_metrics(y_test, predicted, [str(c) for c in range(10)])["recall_per_class"]
    return float(np.mean([recalls[str(c)] for c in MINORITY]))


def imbalanced_fashion_mnist(folder, seed):
    from kerastricks.recipes.data import load_dataset

    data = load_dataset("fashion_mnist", path=folder, seed=seed)
    # 5% of the training images, and 1 in 20 of that for the five minority classes.
    ratios = {c: 0.05 * (0.05 if c in MINORITY else 1.0) for c in range(10)}
    x, y = make_imbalanced(data.x_train, data.y_train, ratios, seed=seed)
    return x, y, data.x_test, data.y_test


def test_each_remedy_raises_minority_recall(fashion_mnist_folder):
    # Measured on seeds 0 to 4: no remedy gives a mean minority recall of 0.34 to 0.42, and
    # every remedy at least 0.07 more, so the margin of 0.05 holds on all of them.
    x, y, x_test, y_test = imbalanced_fashion_mnist(fashion_mnist_folder, seed=0)
    recalls = {
        remedy: minority_recall(train_with_remedy(remedy, x, y, seed=0), x_test, y_test)
        for remedy in ("none", "class weights", "resampling", "minority crops", "two-stage")
    }
    for remedy in ("class weights", "resampling", "minority crops", "two-stage"):
        assert recalls[remedy] > recalls["none"] + 0.05, recalls


def test_recipe_two_stage_trains_class_sets_in_order(tmp_path):
    from kerastricks.recipes.data import load_dataset
    from kerastricks.recipes.training import train
    from tests.callbacks.events import load_events, scalar_series

    data = load_dataset("digits", batch_size=32)
    recipe = Recipe(
        epochs=4, two_stage_epochs=2, imbalance={"0": 0.1, 1: 0.1}, width=4, depth=1,
        dense_units=16, batch_norm=False, diagnostics=False, lr_schedule="plateau",
        learning_rate=1e-2,
    )
    metrics = train(recipe, data, tmp_path, verbose=0)

    counts = np.bincount(data.y_train, minlength=10)
    expected_images = counts[2:].sum() + round(0.1 * counts[0]) + round(0.1 * counts[1])
    assert metrics["train_images"] == expected_images
    saved = json.loads((tmp_path / "metrics.json").read_text())
    recalls = [saved["recall_per_class"][name] for name in data.class_names]
    assert saved["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert 0.0 <= saved["macro_f1"] <= 1.0

    events = load_events(tmp_path / "validation")
    minority = np.array([scalar_series(events, f"recall/{c}")[1] for c in "01"])
    majority = np.array([scalar_series(events, f"recall/{c}")[1] for c in "23456789"])
    # Stage one (epochs 0 and 1) never shows classes 0 and 1, so they are never predicted;
    # stage two (epochs 2 and 3) shows only them.
    assert minority[:, :2].max() <= 0.05
    assert minority[:, 3].mean() > majority[:, 3].mean()


def test_recipe_unknown_class_raises_recipe_error():
    from kerastricks.recipes.data import load_dataset
    from kerastricks.recipes.imbalance import fit_class_weight, prepare_imbalanced_data

    data = load_dataset("digits")
    with pytest.raises(RecipeError, match="imbalance names an unknown class 'cat'"):
        prepare_imbalanced_data(Recipe(imbalance={"cat": 0.5}), data)
    with pytest.raises(RecipeError, match="class_weight names an unknown class '12'"):
        fit_class_weight(Recipe(class_weight={12: 2.0}), data)
    with pytest.raises(RecipeError, match="minority_threshold selects no class for two_stage_epochs"):
        prepare_imbalanced_data(Recipe(two_stage_epochs=1), data)

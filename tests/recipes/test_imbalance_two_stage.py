"""Tests for two-stage training with replay of the large classes in stage two."""

import numpy as np
import pytest

from kerastricks.recipes.data import load_dataset
from kerastricks.recipes.imbalance import prepare_imbalanced_data
from kerastricks.recipes.spec import Recipe, RecipeError
from kerastricks.recipes.training import train

SMALL = (0, 1)
# Digits with classes 0 and 1 cut to 1 in 10; two epochs per stage.
TWO_STAGE = dict(
    epochs=4, two_stage_epochs=2, imbalance={"0": 0.1, "1": 0.1}, width=4, depth=1,
    dense_units=16, batch_norm=False, diagnostics=False, learning_rate=1e-2,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", batch_size=32)


def epoch_labels(data, epoch):
    data.shuffle_epoch.assign(epoch)
    return np.concatenate([labels.numpy() for _, labels in data.train])


def test_stage_two_replays_large_classes(digits):
    data = prepare_imbalanced_data(Recipe(**TWO_STAGE, two_stage_replay=0.5), digits)
    stage_one, stage_two = epoch_labels(data, 1), epoch_labels(data, 2)
    large_in_stage_two = ~np.isin(stage_two, SMALL)

    assert not np.isin(stage_one, SMALL).any()
    # About 1,500 draws with probability 0.5: a standard deviation of about 0.013.
    assert large_in_stage_two.mean() == pytest.approx(0.5, abs=0.05)
    # The large classes keep their stage-one proportions (equal here, within 0.05).
    counts = np.bincount(stage_two[large_in_stage_two], minlength=10)[2:]
    expected = np.bincount(data.y_train, minlength=10)[2:]
    np.testing.assert_allclose(counts / counts.sum(), expected / expected.sum(), atol=0.05)


def test_no_replay_keeps_stage_two_small(digits):
    data = prepare_imbalanced_data(Recipe(**TWO_STAGE), digits)
    assert set(epoch_labels(data, 3)) == set(SMALL)


def test_replay_keeps_large_class_recall(digits, tmp_path):
    recalls = {}
    for replay in (0.0, 0.5):
        metrics = train(Recipe(**TWO_STAGE, two_stage_replay=replay), digits,
                        tmp_path / f"replay-{replay}", verbose=0)
        recalls[replay] = metrics["recall_per_class"]
    large = [name for name in digits.class_names if int(name) not in SMALL]

    def mean_recall(replay, names):
        return np.mean([recalls[replay][name] for name in names])

    # Without replay, stage two loses the large classes (their recall drops to 0). With
    # replay, they stay recognized.
    # Measured on seeds 0 and 1: large-class recall 0.0 without replay, 0.77 and 0.65 with
    # it, and small-class recall 0.96 and 0.94 with it.
    assert mean_recall(0.0, large) < 0.2
    assert mean_recall(0.5, large) > 0.5
    assert mean_recall(0.5, ["0", "1"]) > 0.7


@pytest.mark.parametrize("fields, message", [
    ({"two_stage_replay": 0.5}, "needs two_stage_epochs > 0"),
    ({"two_stage_replay": 1.0, "two_stage_epochs": 1, "epochs": 2}, "must be < 1"),
    ({"two_stage_replay": -0.1}, "'two_stage_replay' must be >= 0.0"),
])
def test_bad_replay(fields, message):
    with pytest.raises(RecipeError, match=message):
        Recipe(**fields)


def test_sampling_shares_within_each_stage(digits):
    recipe = Recipe(**TWO_STAGE, sampling={"0": 0.1, "1": 0.3, "2": 0.2, "3": 0.4})
    data = prepare_imbalanced_data(recipe, digits)
    # Stage one: the large classes 2 and 3 at 0.2 : 0.4. Stage two: classes 0 and 1 at
    # 0.1 : 0.3. Classes without a share are never drawn.
    for epoch, expected in ((0, {2: 1 / 3, 3: 2 / 3}), (3, {0: 0.25, 1: 0.75})):
        labels = epoch_labels(data, epoch)
        shares = np.bincount(labels, minlength=10) / len(labels)
        for label in range(10):
            assert shares[label] == pytest.approx(expected.get(label, 0.0), abs=0.04), (epoch, label)


def test_sampling_without_share_in_stage_raises(digits):
    recipe = Recipe(**TWO_STAGE, sampling={"0": 0.5, "1": 0.5})
    with pytest.raises(RecipeError, match=r"gives every class of one training stage share 0\. "
                                          r"Received: sampling="):
        prepare_imbalanced_data(recipe, digits)

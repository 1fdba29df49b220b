import json

import keras
import numpy as np
import pytest

from kerastricks.recipes import Recipe, RecipeError, load_dataset, train
from kerastricks.recipes.crossval import cross_validate, stratified_folds
from kerastricks.recipes.ensembles import (
    accuracy,
    average_probabilities,
    compare_combinations,
    load_members,
    majority_vote,
    predict_members,
    weighted_average,
)
from kerastricks.recipes.stacking import StackingEnsemble, check_out_of_fold, stacking_features
from tests.recipes.cli_runner import run_cli

TINY = dict(width=8, depth=2, convs_per_block=1, dense_units=16, batch_size=32, diagnostics=False)
TINY_FLAGS = ["--set", "width=8", "--set", "depth=2", "--set", "convs_per_block=1",
              "--set", "dense_units=16", "--no-diagnostics", "--quiet"]



def _random_probabilities(members, images, classes, seed=0):
    logits = np.random.default_rng(seed).normal(size=(members, images, classes))
    return np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)


def _tiny_model(input_shape=(8, 8, 1), classes=10, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(classes, activation="softmax")])


# Combining predictions.

def test_average_matches_numpy():
    probabilities = _random_probabilities(3, 20, 4)
    np.testing.assert_allclose(average_probabilities(probabilities),
                               (probabilities[0] + probabilities[1] + probabilities[2]) / 3)


def test_weighted_average_normalizes_weights():
    probabilities = _random_probabilities(3, 20, 4)
    expected = (1 * probabilities[0] + 3 * probabilities[2]) / 4
    np.testing.assert_allclose(weighted_average(probabilities, [1, 0, 3]), expected)


@pytest.mark.parametrize("weights, message", [
    ([1, 2], r"one value per member \(3 members\). Received: weights=\[1.0, 2.0\] \(2 values\)"),
    ([1, 2, 3, 4], r"\(4 values\)"),
    ([1, -1, 1], "must be >= 0"),
    ([0, 0, 0], "positive sum"),
])
def test_weighted_average_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        weighted_average(_random_probabilities(3, 5, 4), weights)


def test_majority_vote_counts_and_breaks_ties():
    # Image 0: two of three members predict class 1, although the average prefers class 0.
    # Image 1: each class gets one vote, and the tie goes to class 2, the highest mean probability.
    probabilities = np.array([
        [[0.45, 0.55, 0.0], [0.5, 0.1, 0.4]],
        [[0.45, 0.55, 0.0], [0.1, 0.6, 0.3]],
        [[1.0, 0.0, 0.0], [0.3, 0.0, 0.7]],
    ])
    scores = majority_vote(probabilities)
    assert np.argmax(average_probabilities(probabilities)[0]) == 0
    assert np.argmax(scores[0]) == 1
    assert np.argmax(scores[1]) == 2
    np.testing.assert_allclose(np.floor(scores * 3 + 1e-9) / 3,
                               [[1 / 3, 2 / 3, 0], [1 / 3, 1 / 3, 1 / 3]])


def test_disagreeing_members_ensemble_beats_worst():
    # Three members, each wrong on a different third of the images: every image has a 2-1 vote.
    labels = np.arange(30) % 3
    probabilities = np.full((3, 30, 3), 0.1)
    for member in range(3):
        predicted = labels.copy()
        wrong = np.arange(member * 10, member * 10 + 10)
        predicted[wrong] = (labels[wrong] + 1) % 3
        probabilities[member, np.arange(30), predicted] = 0.8
    rows = compare_combinations(probabilities, labels, ["a", "b", "c"], weights=[1, 1, 1])
    by_name = {row["name"]: row for row in rows}
    worst = min(by_name[name]["accuracy"] for name in "abc")
    assert worst == pytest.approx(2 / 3)
    for name in ("average", "weighted average", "majority vote"):
        assert by_name[name]["accuracy"] == 1.0
        assert by_name[name]["gain"] == pytest.approx(1 / 3)


# Loading members.

def test_load_members_from_files_and_folders(tmp_path):
    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    _tiny_model().save(run / "model.keras")
    for cycle in (1, 2, 10):
        _tiny_model(seed=cycle).save(run / "snapshots" / f"snapshot-{cycle}.keras")
    members = load_members([run, run / "snapshots"])
    assert [m.name for m in members] == ["run", "snapshots/snapshot-1", "snapshots/snapshot-2",
                                         "snapshots/snapshot-10"]
    last = load_members([run / "snapshots"], last=2)
    assert [m.name for m in last] == ["snapshots/snapshot-2", "snapshots/snapshot-10"]
    images = np.random.default_rng(0).random((5, 8, 8, 1), dtype="float32")
    probabilities = predict_members(last, images)
    assert probabilities.shape == (2, 5, 10)
    np.testing.assert_allclose(probabilities[1], last[1].model.predict(images, verbose=0), rtol=1e-6)


def test_last_larger_than_checkpoints(tmp_path):
    _tiny_model().save(tmp_path / "epoch-001.keras")
    with pytest.raises(ValueError, match=r"contains 1\. Received: last=3\. Use last <= 1"):
        load_members([tmp_path], last=3)


def test_empty_member_list():
    with pytest.raises(ValueError, match="received no members"):
        load_members([])


def test_missing_member_and_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="member not found"):
        load_members([tmp_path / "nothing.keras"])
    with pytest.raises(ValueError, match="No .keras files in"):
        load_members([tmp_path])


def test_members_with_different_classes(tmp_path):
    _tiny_model(classes=10).save(tmp_path / "ten.keras")
    _tiny_model(classes=3).save(tmp_path / "three.keras")
    with pytest.raises(ValueError, match=r"/ten' outputs 10 and '\w+/three' outputs 3"):
        load_members([tmp_path / "ten.keras", tmp_path / "three.keras"])


def test_members_with_different_input_shapes(tmp_path):
    _tiny_model((8, 8, 1)).save(tmp_path / "small.keras")
    _tiny_model((28, 28, 1)).save(tmp_path / "large.keras")
    with pytest.raises(ValueError, match=r"small' takes \(8, 8, 1\) and '\w+/large' takes \(28, 28, 1\)"):
        load_members([tmp_path / "small.keras", tmp_path / "large.keras"])


# Cross-validation and stacking.

def test_stratified_folds_partition():
    labels = np.repeat(np.arange(4), 9)
    splits = stratified_folds(labels, 3, seed=1)
    held_out = np.concatenate([fold for _, fold in splits])
    np.testing.assert_array_equal(np.sort(held_out), np.arange(36))
    for train_indices, fold in splits:
        assert np.intersect1d(train_indices, fold).size == 0
        np.testing.assert_array_equal(np.bincount(labels[fold]), [3, 3, 3, 3])


@pytest.mark.parametrize("folds, message", [(1, "folds >= 2"), (10, "smallest class has 9")])
def test_stratified_folds_bad_count(folds, message):
    with pytest.raises(RecipeError, match=message):
        stratified_folds(np.repeat(np.arange(4), 9), folds)


@pytest.fixture(scope="module")
def digits_cv(tmp_path_factory):
    data = load_dataset("digits", subset=360, batch_size=32)
    recipe = Recipe(name="cv", **TINY, epochs=1)
    result = cross_validate(recipe, data, folds=3, logdir=tmp_path_factory.mktemp("cv"))
    return data, result


def test_out_of_fold_rows_held_out(digits_cv):
    data, result = digits_cv
    images = np.concatenate([data.x_train, data.x_validation])
    assert len(result.models) == 3
    for model, (train_indices, held_out) in zip(result.models, result.fold_indices):
        assert np.intersect1d(train_indices, held_out).size == 0
        assert len(train_indices) + len(held_out) == len(images)
        np.testing.assert_allclose(result.out_of_fold[held_out],
                                   model.predict(images[held_out], verbose=0), rtol=1e-5, atol=1e-6)
        # In-fold predictions of the same images come from another model and differ.
        other = result.models[(result.models.index(model) + 1) % 3]
        assert not np.allclose(other.predict(images[held_out], verbose=0), result.out_of_fold[held_out])


def test_fold_accuracies_and_run_folders(digits_cv):
    _, result = digits_cv
    for accuracy_value, (_, held_out) in zip(result.fold_accuracies, result.fold_indices):
        expected = accuracy(result.out_of_fold[held_out], result.labels[held_out])
        assert accuracy_value == pytest.approx(expected)
    assert [run.name.split("-digits-")[0] for run in result.run_dirs] == [
        "cv-cv3-fold1", "cv-cv3-fold2", "cv-cv3-fold3"]


@pytest.mark.parametrize("meta", ["logistic", "keras"])
def test_stacking_fits_only_out_of_fold(digits_cv, meta):
    data, result = digits_cv
    stacker = StackingEnsemble(meta=meta, epochs=5).fit([result, result])
    expected = np.log(np.clip(result.out_of_fold, 1e-7, 1))
    np.testing.assert_allclose(stacker.features_, np.concatenate([expected, expected], axis=1))
    test = np.stack([result.predict(data.x_test)] * 2)
    output = stacker.predict_proba(test)
    assert output.shape == (len(data.x_test), 10)
    np.testing.assert_allclose(output.sum(axis=1), 1.0, rtol=1e-5)


def test_stacking_rejects_in_fold_predictions(digits_cv):
    _, result = digits_cv
    import dataclasses

    (train_0, held_0), *rest = result.fold_indices
    leaked = dataclasses.replace(result, fold_indices=[(np.union1d(train_0, held_0[:5]), held_0), *rest])
    with pytest.raises(ValueError, match=r"Fold 1 of 'cv' trained on 5 of its held-out images"):
        StackingEnsemble().fit([leaked])
    missing = dataclasses.replace(result, fold_indices=[(train_0, held_0[1:]), *rest])
    with pytest.raises(ValueError, match=f"image {held_0[0]} is held out 0 times"):
        check_out_of_fold(missing)


def test_stacking_bad_use():
    with pytest.raises(ValueError, match="Unknown meta-learner"):
        StackingEnsemble(meta="forest")
    with pytest.raises(RuntimeError, match="before fit"):
        StackingEnsemble().predict_proba(_random_probabilities(1, 3, 2))
    assert stacking_features(_random_probabilities(2, 5, 3)).shape == (5, 6)


# The command line.

def test_cli_checkpoint_ensemble(tmp_path, capsys):
    data = load_dataset("digits", subset=300, batch_size=32)
    run = tmp_path / "run"
    train(Recipe(**TINY, subset=300, epochs=3, keep_checkpoints=2), data, run, verbose=0)
    status, out, err = run_cli(["ensemble", "--members", str(run / "checkpoints"), "--last", "2",
                                 "--views", "flip", "--output", str(tmp_path / "report")], capsys)
    assert status == 0, err
    report = json.loads((tmp_path / "report" / "ensemble.json").read_text())
    names = [row["name"] for row in report["rows"]]
    assert names == ["checkpoints/epoch-002", "checkpoints/epoch-003", "average", "weighted average",
                     "majority vote", "average over flip views"]
    assert report["test_images"] == len(data.y_test)
    assert (tmp_path / "report" / "ensemble.md").read_text().strip() in out

    status, _, err = run_cli(["ensemble", "--members", str(run / "checkpoints"), "--last", "5"], capsys)
    assert status == 2
    assert "contains 2. Received: last=5" in err
    status, _, err = run_cli(["ensemble", "--members", str(run), str(run / "checkpoints"),
                               "--weights", "1,2"], capsys)
    assert status == 2
    assert "--weights needs one value per member (3 members). Received: 2 values" in err


@pytest.mark.parametrize("argv, message", [
    (["ensemble"], "pass at least one RECIPE"),
    (["ensemble", "baseline", "--members", "x"], "not both"),
    (["ensemble", "baseline", "--top-k", "2"], "pass --folds too"),
    (["ensemble", "--members", "x", "--seeds", "2"], "cannot be used with --members"),
    (["ensemble", "--members", "x", "--set", "l2=0.1"], "do not apply to loaded --members"),
    (["ensemble", "baseline", "--resume"], "applies to 'kerastricks run' only"),
])
def test_cli_bad_flag_combinations(argv, message, capsys):
    status, _, err = run_cli(argv, capsys)
    assert status == 2
    assert message in err


def test_cli_weights_checked_before_training(tmp_path, capsys):
    status, _, err = run_cli(["ensemble", "baseline", "--seeds", "3", "--weights", "1,1",
                               "--logdir", str(tmp_path)], capsys)
    assert status == 2
    assert "--weights needs one value per member (3 members). Received: 2 values (1,1)." in err
    assert list(tmp_path.iterdir()) == []


def test_cli_missing_member(tmp_path, capsys):
    status, _, err = run_cli(["ensemble", "--members", str(tmp_path / "absent")], capsys)
    assert status == 2
    assert err.count("\n") == 1
    assert "member not found" in err


def test_fashion_mnist_seed_ensemble(fashion_mnist_folder, tmp_path, capsys):
    status, _, err = run_cli(
        ["ensemble", "baseline", "--dataset", "fashion_mnist", "--subset", "3000", "--seeds", "3",
         "--epochs", "1", "--logdir", str(tmp_path), "--output", str(tmp_path / "report"), *TINY_FLAGS],
        capsys)
    assert status == 0, err
    rows = json.loads((tmp_path / "report" / "ensemble.json").read_text())["rows"]
    members = [row["accuracy"] for row in rows if row["kind"] == "member"]
    average = next(row for row in rows if row["name"] == "average")
    assert len(members) == 3
    assert average["accuracy"] >= np.mean(members)

    loaded = load_members(sorted(p for p in tmp_path.iterdir() if p.name.startswith("baseline-")))
    data = load_dataset("fashion_mnist", subset=3000)
    predicted = np.argmax(predict_members(loaded, data.x_test), axis=-1)
    assert np.any(predicted[0] != predicted[1]) or np.any(predicted[0] != predicted[2])
    assert average["accuracy"] > min(members)


def test_rank_recipes_bad_arguments():
    from kerastricks.recipes.crossval import rank_recipes

    with pytest.raises(RecipeError, match="received no recipes"):
        rank_recipes([], data=None)
    with pytest.raises(RecipeError, match=r"between 1 and the number of recipes \(1\). Received: top_k=2"):
        rank_recipes([Recipe()], data=None, top_k=2)


def test_cli_folds_top_k_and_stacking(tmp_path, capsys):
    status, out, err = run_cli(
        ["ensemble", "baseline", str(_tanh_recipe(tmp_path)), "--folds", "2", "--top-k", "1",
         "--subset", "200", "--epochs", "1", "--logdir", str(tmp_path / "runs"),
         "--output", str(tmp_path / "report"), *TINY_FLAGS], capsys)
    assert status == 0, err
    assert "Cross-validating 2 recipes with 2 folds." in out
    rows = json.loads((tmp_path / "report" / "ensemble.json").read_text())["rows"]
    assert len([row for row in rows if row["kind"] == "member"]) == 1
    assert rows[-1]["name"] == "stacking (logistic)"
    folds = sorted(p.name.split("-fold")[0] for p in (tmp_path / "runs").iterdir() if "-fold" in p.name)
    assert folds == ["baseline-cv2", "baseline-cv2", "tanh-cv2", "tanh-cv2"]


def _tanh_recipe(folder):
    path = folder / "tanh.yaml"
    path.write_text("name: tanh\nactivation: tanh\n")
    return path

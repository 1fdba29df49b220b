"""Tests for GradualUnfreezing, measured on the weights of a real training run."""

import keras
import numpy as np
import pytest

from kerastricks.callbacks import GradualUnfreezing, layer_group_names

KERNELS = ["block1_conv1", "block2_conv1", "block3_conv1", "dense"]


def frozen_model():
    """A three-block CNN, frozen except its new classifier, as a fine-tuning start."""
    inputs = keras.Input((8, 8, 1))
    x = inputs
    for block in (1, 2, 3):
        x = keras.layers.Conv2D(4, 3, padding="same", name=f"block{block}_conv1")(x)
        x = keras.layers.BatchNormalization(name=f"block{block}_bn1")(x)
        x = keras.layers.ReLU(name=f"block{block}_act1")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(8, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers[:-1]:
        layer.trainable = False
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


class Recorder(keras.callbacks.Callback):
    """Copies kernels, trainable flags and optimizer slots at the epoch boundaries."""

    def __init__(self):
        super().__init__()
        self.kernels, self.trainable, self.slots_at_end, self.slots_at_begin = [], [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.trainable.append({name: self.model.get_layer(name).trainable
                               for name in KERNELS + ["block3_bn1"]})
        self.slots_at_begin.append(
            {v.path: v.numpy().copy() for v in self.model.optimizer.variables})

    def on_epoch_end(self, epoch, logs=None):
        self.kernels.append({name: self.model.get_layer(name).kernel.numpy().copy()
                             for name in KERNELS})
        self.slots_at_end.append(
            {v.path: v.numpy().copy() for v in self.model.optimizer.variables})


def fit_with(callback, epochs=4):
    model = frozen_model()
    start = {name: model.get_layer(name).kernel.numpy().copy() for name in KERNELS}
    bn_mean = model.get_layer("block3_bn1").moving_mean.numpy().copy()
    recorder = Recorder()
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 1)).astype("float32") * 4 + 2, rng.integers(0, 3, 64)
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=[callback, recorder])
    return model, start, bn_mean, recorder


def test_group_names_follow_prefix():
    assert layer_group_names(frozen_model()) == [
        ["block1_conv1", "block1_bn1"], ["block2_conv1", "block2_bn1"],
        ["block3_conv1", "block3_bn1"], ["dense"], ["head"]]


def test_unfreezes_one_group_per_epoch_from_top():
    callback = GradualUnfreezing(unfreeze_every=1)
    model, start, _, recorder = fit_with(callback)
    assert callback.unfrozen_at == {
        1: ["dense"], 2: ["block3_conv1", "block3_bn1"], 3: ["block2_conv1", "block2_bn1"]}
    trainable = [[name for name in KERNELS if flags[name]] for flags in recorder.trainable]
    assert trainable == [[], ["dense"], ["block3_conv1", "dense"],
                         ["block2_conv1", "block3_conv1", "dense"]]

    # A kernel changes only in the epochs after its group was unfrozen.
    previous = start
    for epoch, kernels in enumerate(recorder.kernels):
        for name in KERNELS:
            changed = not np.array_equal(kernels[name], previous[name])
            assert changed == (name in trainable[epoch]), (epoch, name)
        previous = kernels
    assert int(model.optimizer.iterations.numpy()) == 16


def test_batch_norm_stays_frozen_by_default():
    model, _, bn_mean, recorder = fit_with(GradualUnfreezing())
    assert all(not flags["block3_bn1"] for flags in recorder.trainable)
    np.testing.assert_array_equal(model.get_layer("block3_bn1").moving_mean.numpy(), bn_mean)


def test_batch_norm_trains_when_asked():
    model, _, bn_mean, recorder = fit_with(GradualUnfreezing(train_batch_norm=True))
    assert recorder.trainable[2]["block3_bn1"]
    assert not np.array_equal(model.get_layer("block3_bn1").moving_mean.numpy(), bn_mean)


def test_every_two_epochs_and_slots_kept():
    callback = GradualUnfreezing(unfreeze_every=2)
    _, _, _, recorder = fit_with(callback, epochs=3)
    assert callback.unfrozen_at == {2: ["dense"]}
    # The new optimizer of epoch 2 starts from the old one's momenta for the head.
    before, after = recorder.slots_at_end[1], recorder.slots_at_begin[2]
    head_slots = [path for path in before if "head" in path]
    assert head_slots
    for path in head_slots:
        np.testing.assert_array_equal(after[path], before[path])


def test_config_round_trip():
    callback = GradualUnfreezing(unfreeze_every=3, train_batch_norm=True)
    copy = GradualUnfreezing.from_config(callback.get_config())
    assert copy.get_config() == {"unfreeze_every": 3, "train_batch_norm": True}


@pytest.mark.parametrize("value", [0, 1.5, True])
def test_bad_unfreeze_every(value):
    with pytest.raises(ValueError, match="unfreeze_every must be a positive integer"):
        GradualUnfreezing(unfreeze_every=value)


def test_backup_resume_equals_uninterrupted(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 1)).astype("float32") * 4 + 2, rng.integers(0, 3, 64)

    def run(epochs, backup_dir, resume=False):
        keras.utils.set_random_seed(1)
        model = frozen_model()
        unfreezing = GradualUnfreezing(1)
        if resume:
            # Two epochs finished before the interruption.
            unfreezing.unfreeze_until(model, 2)
        backup = keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=False)
        model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, shuffle=False,
                  callbacks=[backup, unfreezing])
        return model, unfreezing

    reference, _ = run(4, tmp_path / "reference")
    run(2, tmp_path / "resumed")
    resumed, unfreezing = run(4, tmp_path / "resumed", resume=True)

    for expected, value in zip(reference.weights, resumed.weights):
        np.testing.assert_array_equal(value.numpy(), expected.numpy())
    for expected, value in zip(reference.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_array_equal(value.numpy(), expected.numpy())
    # The groups unfrozen before the resume are listed with those unfrozen after it.
    assert unfreezing.unfrozen_at == {1: ["dense"], 2: ["block3_conv1", "block3_bn1"],
                                      3: ["block2_conv1", "block2_bn1"]}


def test_resume_without_replay_loses_optimizer_state(tmp_path):
    model = frozen_model()
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 32)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path), delete_checkpoint=False)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[backup, GradualUnfreezing(1)])
    # Without unfreeze_until the optimizer has fewer variables than the backup, and Keras
    # skips loading them (this is why a resume must replay the unfreezings).
    fresh = frozen_model()
    fresh.optimizer.build(fresh.trainable_variables)
    with pytest.warns(UserWarning, match="Skipping variable loading for optimizer"):
        fresh.load_weights(tmp_path / "latest.weights.h5")

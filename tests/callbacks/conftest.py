"""Fixtures for the diagnostics tests: small real data sets and tiny models."""

import keras
import pytest
from sklearn.datasets import load_digits


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as `(x, y)`: float32 features in [0, 1] shaped (1797, 64)."""
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype("float32"), y.astype("int64")


@pytest.fixture(scope="session")
def digit_images(digits):
    """The digits as 8x8x1 images."""
    x, y = digits
    return x.reshape(-1, 8, 8, 1), y


def make_mlp(activation="relu", kernel_initializer="he_normal", depth=3, units=64,
             optimizer=None, seed=0):
    """A compiled MLP for the 64 digit features with one `Activation` layer per hidden layer."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,))]
    for _ in range(depth):
        layers.append(keras.layers.Dense(units, kernel_initializer=kernel_initializer))
        layers.append(keras.layers.Activation(activation))
    layers.append(keras.layers.Dense(10))
    model = keras.Sequential(layers)
    model.compile(
        optimizer or keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def make_cnn(seed=0):
    """A compiled CNN for 8x8x1 digit images: conv, relu, hidden (Dense), tanh, classifier."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same", name="conv"),
        keras.layers.ReLU(name="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(32, name="hidden"),
        keras.layers.Activation("tanh", name="tanh"),
        keras.layers.Dense(10, activation="softmax", name="classifier"),
    ])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model

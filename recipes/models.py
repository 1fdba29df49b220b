"""The recipe model family: small VGG-style CNNs that adapt to the input size."""

import keras

from kerastricks.layers import get_activation, get_initializer


def build_model(recipe, input_shape, num_classes):
    """Build the recipe's CNN for images of `input_shape` and `num_classes` classes.

    The network stacks `recipe.depth` blocks of `recipe.convs_per_block` 3x3 convolutions (each
    followed by batch normalization when `recipe.batch_norm` is set, then the activation), doubling
    the filters from `recipe.width` in each block. A block ends with 2x2 max pooling while the
    feature map is at least 4 pixels on each side, so the same recipe fits 8x8 digits and 32x32
    CIFAR images. Global average pooling, an optional hidden dense layer, dropout and a softmax
    classifier follow.

    Returns:
        An uncompiled `keras.Model` whose output is class probabilities.
    """
    regularizer = keras.regularizers.L2(recipe.l2) if recipe.l2 > 0 else None
    seed = recipe.seed

    def kernel_initializer():
        nonlocal seed
        seed += 1
        return get_initializer(recipe.initializer, seed=seed)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    height, width = input_shape[0], input_shape[1]
    for block in range(recipe.depth):
        filters = recipe.width * 2**block
        for conv in range(recipe.convs_per_block):
            x = keras.layers.Conv2D(
                filters, 3, padding="same", use_bias=not recipe.batch_norm,
                kernel_initializer=kernel_initializer(), kernel_regularizer=regularizer,
                name=f"block{block + 1}_conv{conv + 1}",
            )(x)
            if recipe.batch_norm:
                # Momentum 0.9 (PyTorch's default) instead of Keras's 0.99, so the moving
                # statistics are usable after a few hundred steps of a short run.
                x = keras.layers.BatchNormalization(
                    momentum=0.9, name=f"block{block + 1}_bn{conv + 1}"
                )(x)
            x = _activation(recipe, f"block{block + 1}_act{conv + 1}")(x)
        if height >= 4 and width >= 4:
            x = keras.layers.MaxPooling2D(2, name=f"block{block + 1}_pool")(x)
            height, width = height // 2, width // 2

    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if recipe.dense_units > 0:
        x = keras.layers.Dense(
            recipe.dense_units, kernel_initializer=kernel_initializer(),
            kernel_regularizer=regularizer, name="dense",
        )(x)
        x = _activation(recipe, "dense_act")(x)
    if recipe.dropout > 0:
        x = keras.layers.Dropout(recipe.dropout, seed=recipe.seed, name="dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", kernel_initializer="glorot_uniform",
        kernel_regularizer=regularizer, name="classifier",
    )(x)
    return keras.Model(inputs, outputs, name=recipe.name)


def _activation(recipe, name):
    layer = get_activation(recipe.activation, **recipe.activation_options)
    # Keras names layers on creation; renaming before first use keeps the model readable.
    layer.name = name
    return layer


def build_optimizer(recipe):
    """Create the recipe's optimizer with its learning rate."""
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(recipe.learning_rate, momentum=recipe.momentum, nesterov=True)
    if recipe.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(recipe.learning_rate, momentum=recipe.momentum)
    if recipe.optimizer == "adamw":
        return keras.optimizers.AdamW(recipe.learning_rate)
    return keras.optimizers.Adam(recipe.learning_rate)

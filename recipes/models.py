"""The recipe model family: small VGG-style CNNs that adapt to the input size."""

import keras

from kerastricks.callbacks import learning_rate_schedule
from kerastricks.layers import get_activation, get_initializer, he_negative_slope
from kerastricks.recipes.augmentation import preprocessing_layers


def build_model(recipe, input_shape, num_classes):
    """Build the recipe's CNN for images of `input_shape` and `num_classes` classes.

    The network stacks `recipe.depth` blocks of `recipe.convs_per_block` 3x3 convolutions (each
    followed by batch normalization when `recipe.batch_norm` is set, then the activation), doubling
    the filters from `recipe.width` in each block. A block ends with 2x2 max pooling while the
    feature map is at least 4 pixels on each side, so the same recipe fits 8x8 digits and 32x32
    CIFAR images. Flattening (or global average pooling, see `recipe.head`), an optional hidden
    dense layer, dropout and a softmax classifier follow.

    Regularization: `recipe.l1` and `recipe.l2` penalize the convolution and dense kernels only,
    never biases, batch-normalization parameters or PReLU slopes. Shrinking a bias or a
    normalization scale does not reduce capacity, and a penalty pulls PReLU slopes towards 0,
    which turns PReLU into ReLU. `recipe.max_norm` constrains every kernel with Keras's `MaxNorm`: over axes
    (0, 1, 2) of a `(height, width, in, out)` convolution kernel, so each filter's norm is
    bounded, and over axis 0 of a dense kernel, so each unit's incoming weights are.
    `recipe.spatial_dropout` adds `SpatialDropout2D` at the end of each convolution block.

    Returns:
        An uncompiled `keras.Model` whose output is class probabilities.
    """
    regularizer = _kernel_regularizer(recipe)
    conv_constraint = _max_norm(recipe, axis=[0, 1, 2])
    dense_constraint = _max_norm(recipe, axis=0)
    seed = recipe.seed
    # The `he_leaky_*` initializers size the variance for the activation's negative slope.
    negative_slope = he_negative_slope(recipe.activation, **recipe.activation_options)

    def kernel_initializer():
        nonlocal seed
        seed += 1
        return get_initializer(recipe.initializer, seed=seed, negative_slope=negative_slope)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    # The recipe's pre-processing, adapted on the training split by `train`.
    for layer in preprocessing_layers(recipe, input_shape):
        x = layer(x)
    height, width = input_shape[0], input_shape[1]
    for block in range(recipe.depth):
        filters = recipe.width * 2**block
        for conv in range(recipe.convs_per_block):
            x = keras.layers.Conv2D(
                filters, 3, padding="same", use_bias=not recipe.batch_norm,
                kernel_initializer=kernel_initializer(), kernel_regularizer=regularizer,
                kernel_constraint=conv_constraint, name=f"block{block + 1}_conv{conv + 1}",
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
        if recipe.spatial_dropout > 0:
            x = keras.layers.SpatialDropout2D(
                recipe.spatial_dropout, seed=recipe.seed + block, name=f"block{block + 1}_dropout"
            )(x)

    if recipe.head == "average":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    else:
        x = keras.layers.Flatten(name="flatten")(x)
    if recipe.dense_units > 0:
        x = keras.layers.Dense(
            recipe.dense_units, kernel_initializer=kernel_initializer(),
            kernel_regularizer=regularizer, kernel_constraint=dense_constraint, name="dense",
        )(x)
        x = _activation(recipe, "dense_act")(x)
    if recipe.dropout > 0:
        x = keras.layers.Dropout(recipe.dropout, seed=recipe.seed, name="dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", kernel_initializer="glorot_uniform",
        kernel_regularizer=regularizer, kernel_constraint=dense_constraint, name="classifier",
    )(x)
    return keras.Model(inputs, outputs, name=recipe.name)


def _kernel_regularizer(recipe):
    if recipe.l1 > 0 and recipe.l2 > 0:
        return keras.regularizers.L1L2(l1=recipe.l1, l2=recipe.l2)
    if recipe.l1 > 0:
        return keras.regularizers.L1(recipe.l1)
    if recipe.l2 > 0:
        return keras.regularizers.L2(recipe.l2)
    return None


def _max_norm(recipe, axis):
    if recipe.max_norm <= 0:
        return None
    return keras.constraints.MaxNorm(recipe.max_norm, axis=axis)


def _activation(recipe, name):
    layer = get_activation(recipe.activation, **recipe.activation_options)
    # Keras names layers on creation; renaming before first use keeps the model readable.
    layer.name = name
    return layer


def build_optimizer(recipe, steps_per_epoch=None):
    """Create the recipe's optimizer with its learning rate, gradient clipping and EMA.

    The learning rate follows `recipe.lr_schedule` when `steps_per_epoch` is given, because
    the schedules count steps. Without it the learning rate stays the constant
    `recipe.learning_rate`, for callers that set the rate themselves, such as the
    learning-rate finder.
    """
    learning_rate = recipe.learning_rate
    if recipe.lr_schedule not in ("constant", "plateau") and steps_per_epoch is not None:
        learning_rate = learning_rate_schedule(
            recipe.lr_schedule, recipe.learning_rate, recipe.epochs, steps_per_epoch,
            **recipe.lr_schedule_options,
        )
    options = {"learning_rate": learning_rate, "clipnorm": recipe.clipnorm}
    if recipe.ema:
        options.update(use_ema=True, ema_momentum=recipe.ema_momentum)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=recipe.momentum, nesterov=True, **options)
    if recipe.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(momentum=recipe.momentum, **options)
    if recipe.optimizer == "adamw":
        return keras.optimizers.AdamW(**options)
    return keras.optimizers.Adam(**options)

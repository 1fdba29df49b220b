"""Fine-tuning a pre-trained model on new data with one of the four standard strategies.

Which layers to train depends on how similar the new data are to the pre-training data and how
many images there are (the survey's fine-tuning section, after Yosinski et al., "How
transferable are features in deep neural networks?", NIPS 2014):

| strategy | new data | what trains |
|---|---|---|
| `similar_small` | similar, few images | a new classifier on the frozen top features |
| `similar_large` | similar, many images | the classifier and the top `trainable_groups` groups |
| `different_small` | different, few images | a new classifier on frozen earlier-layer features |
| `different_large` | different, many images | every layer, with a lower learning rate |

`auto` picks one from the number of images and a similarity flag. Frozen layers, batch
normalization included, are set `trainable=False`; Keras 3 then runs `BatchNormalization` in
inference mode, so its moving mean and variance stay exactly as pre-trained.
`discriminative_optimizer` gives each layer group its own learning rate, lower for lower
groups.
"""

import re

import keras

from kerastricks.callbacks import layer_group_names

STRATEGIES = ("similar_small", "similar_large", "different_small", "different_large", "auto")
# Learning-rate factor of `different_large`: all layers train, so they move more gently.
DIFFERENT_LARGE_LEARNING_RATE_FACTOR = 0.1


def choose_strategy(num_images, similar, large_threshold=5000):
    """Pick a strategy from the number of training images and whether the data are similar.

    Args:
        num_images: the number of training images of the new data set.
        similar: whether the new images resemble the pre-training images.
        large_threshold: data sets with at least this many images count as large. The survey
            gives no number, so the default is a rule of thumb. Defaults to `5000`.

    Returns:
        One of `similar_small`, `similar_large`, `different_small`, `different_large`.
    """
    size = "large" if num_images >= large_threshold else "small"
    return f"{'similar' if similar else 'different'}_{size}"


def layer_groups(model):
    """Split a model's layers that have weights into groups, from the input to the output.

    Consecutive layers whose names share the part before the first `_` form one group:
    `block1_conv1` and `block1_bn1` are group `block1`, and `conv2_block1_1_conv` is in group
    `conv2`. This matches the recipe models and the VGG and ResNet models of
    `keras.applications`. The rule is that of `kerastricks.callbacks.layer_group_names`.

    Returns:
        A list of `(group name, [layers])` in the order of the model's layers.
    """
    return [
        (names[0].split("_", 1)[0], [model.get_layer(name) for name in names])
        for names in layer_group_names(model)
    ]


def check_input_fits(base_model, input_shape):
    """Raise `ValueError` unless images of `input_shape` fit the base model's input.

    Args:
        base_model: a Keras model.
        input_shape: `(height, width, channels)` of the new images.
    """
    expected = tuple(base_model.input_shape[1:])
    received = tuple(input_shape)
    fits = len(expected) == len(received) and all(
        e is None or e == r for e, r in zip(expected, received))
    if fits:
        return
    advice = (
        f"Resize the images first, e.g. with keras.layers.Resizing({expected[0]}, "
        f"{expected[1]}) in a tf.data map"
        if len(expected) == 3 else "Reshape the images to the base model's input shape"
    )
    if len(expected) == 3 and len(received) == 3 and expected[2] != received[2]:
        advice += (
            f", and give them {expected[2]} channels (for grayscale into RGB, "
            f"keras.ops.repeat(images, 3, axis=-1))"
        )
    raise ValueError(
        f"The images do not fit the base model's input: the base model expects "
        f"{expected} (None means any size), but the data have shape {received}. {advice}."
    )


def build_finetune_model(base_model, num_classes, input_shape, strategy="auto", *,
                         num_images=None, similar=True, feature_layer=None, trainable_groups=1,
                         train_batch_norm=False, large_threshold=5000):
    """Put a new classifier on a pre-trained model and freeze layers by a strategy.

    The features come from `feature_layer`, or by default from the base model's output, or
    from the layer before it when the base model ends in a `Dense` classifier (a saved run).
    `different_small` defaults to the last layer of the middle layer group instead. A 4D
    feature map is averaged over space (`GlobalAveragePooling2D`) before the new softmax
    `Dense` layer, named `finetune_classifier`.

    Args:
        base_model: a pre-trained Keras model; its layers are frozen in place.
        num_classes: the number of classes of the new data.
        input_shape: `(height, width, channels)` of the new images; checked against the base
            model's input.
        strategy: one of `STRATEGIES`. Defaults to `"auto"`.
        num_images: the number of training images, needed by `auto`. Defaults to `None`.
        similar: for `auto`, whether the new data resemble the pre-training data. Defaults to
            `True`.
        feature_layer: the name of the layer whose output feeds the new classifier. Defaults
            to `None` (see above).
        trainable_groups: for `similar_large`, the number of layer groups (see
            `layer_groups`) that train, counted from the top. Defaults to `1`.
        train_batch_norm: whether `BatchNormalization` layers of the groups that train also
            train (their scale, offset and moving statistics). With `False`, every
            `BatchNormalization` layer stays frozen in inference mode. Defaults to `False`.
        large_threshold: the `auto` size threshold, see `choose_strategy`. Defaults to `5000`.

    Returns:
        `(model, strategy)`: the new model, not compiled, and the strategy applied. For
        `different_large`, compile it with a learning rate times
        `DIFFERENT_LARGE_LEARNING_RATE_FACTOR`.

    Raises:
        ValueError: for an unknown strategy or layer name, a missing `num_images` with
            `auto`, or an input shape that does not fit.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"Unknown fine-tuning strategy. Expected one of {list(STRATEGIES)}. "
            f"Received: strategy={strategy!r}."
        )
    if strategy == "auto":
        if num_images is None:
            raise ValueError(
                "strategy='auto' picks a strategy from the data size, so it needs num_images. "
                "Received: num_images=None."
            )
        strategy = choose_strategy(num_images, similar, large_threshold)
    check_input_fits(base_model, input_shape)

    features = _feature_output(base_model, strategy, feature_layer)
    x = features
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="finetune_pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax",
                                 name="finetune_classifier")(x)
    model = keras.Model(base_model.input, outputs, name=f"{base_model.name}_{strategy}")

    # Only the layers that feed the new classifier count as groups to unfreeze.
    extractor = keras.Model(base_model.input, features)
    _freeze_base(extractor, strategy, trainable_groups, train_batch_norm)
    return model, strategy


def _feature_output(base_model, strategy, feature_layer):
    if feature_layer is not None:
        names = [layer.name for layer in base_model.layers]
        if feature_layer not in names:
            raise ValueError(
                f"Layer {feature_layer!r} not found in the base model {base_model.name!r}. "
                f"Choose one of its layers, e.g. {names[-6:]}."
            )
        return base_model.get_layer(feature_layer).output
    last = base_model.layers[-1]
    top_features = base_model.output
    if isinstance(last, keras.layers.Dense) and len(base_model.layers) > 1:
        top_features = last.input
    if strategy != "different_small":
        return top_features
    # The output of the middle group below the top features: its last layer, pooling and
    # activations included.
    groups = layer_groups(keras.Model(base_model.input, top_features))
    middle = groups[(len(groups) - 1) // 2][0]
    members = [layer for layer in base_model.layers if layer.name.split("_", 1)[0] == middle]
    return members[-1].output


def _freeze_base(extractor, strategy, trainable_groups, train_batch_norm):
    groups = layer_groups(extractor)
    if strategy == "different_large":
        training = {layer.name for _, layers in groups for layer in layers}
    elif strategy == "similar_large":
        if not 1 <= trainable_groups <= len(groups):
            raise ValueError(
                f"trainable_groups must be between 1 and the base model's {len(groups)} layer "
                f"groups. Received: trainable_groups={trainable_groups!r}."
            )
        training = {layer.name for _, layers in groups[-trainable_groups:] for layer in layers}
    else:
        training = set()
    for layer in extractor.layers:
        trains = layer.name in training
        if isinstance(layer, keras.layers.BatchNormalization):
            trains = trains and train_batch_norm
        layer.trainable = trains


def discriminative_optimizer(model, learning_rate, factor=0.5, optimizer="adam"):
    """Build an optimizer whose learning rate falls by `factor` per layer group going down.

    The top layer group (see `layer_groups`) trains with `learning_rate`, the one below with
    `learning_rate * factor`, then `learning_rate * factor**2`, and so on, through Keras's
    `MultiOptimizer` with one sub-optimizer per group (Howard and Ruder, "Universal Language
    Model Fine-tuning for Text Classification", ACL 2018, use `factor = 1 / 2.6`).

    Args:
        model: the model to train; groups are read from its layers.
        learning_rate: the learning rate of the top group.
        factor: the ratio between the learning rates of two neighbouring groups, in (0, 1].
            Defaults to `0.5`.
        optimizer: the name of the sub-optimizers' class, as `keras.optimizers.get` takes it.
            Defaults to `"adam"`.

    Returns:
        A `keras.optimizers.MultiOptimizer`, and the learning rate of each group as a dict
        `{group name: learning rate}`.
    """
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"factor must be in (0, 1]. Received: factor={factor!r}.")
    groups = layer_groups(model)
    default = keras.optimizers.get(
        {"class_name": optimizer, "config": {"learning_rate": learning_rate}})
    # An OptimizerMap keyed by layer (`name/.*` matches the layer's variable paths) is stored
    # in a `.keras` file, unlike a Python function.
    optimizer_map = keras.optimizers.OptimizerMap(default_optimizer=default)
    rates = {}
    for depth, (name, layers) in enumerate(reversed(groups)):
        rate = learning_rate * factor**depth
        rates[name] = rate
        sub_optimizer = keras.optimizers.get(
            {"class_name": optimizer, "config": {"learning_rate": rate}})
        for layer in layers:
            optimizer_map[f"{re.escape(layer.name)}/.*"] = sub_optimizer
    return keras.optimizers.MultiOptimizer(optimizer_map), rates

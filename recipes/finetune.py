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
inference mode, so its moving mean and variance stay exactly as pre-trained. The new classifier
starts at zero on standardized features, so that a linear classifier on frozen features trains
well at a fine-tuning learning rate.
`discriminative_optimizer` gives each layer group its own learning rate, lower for lower
groups.
"""

import dataclasses
import json
import re
import zipfile
from pathlib import Path

import keras

from kerastricks.callbacks import GradualUnfreezing, layer_group_names
from kerastricks.recipes.models import build_optimizer
from kerastricks.recipes.spec import RecipeError

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


def check_input_fits(base_model, input_shape, *, for_recipe=False):
    """Raise `ValueError` unless images of `input_shape` fit the base model's input.

    The message explains how to convert the images: resize them, and repeat a grayscale channel
    for an RGB model or average the RGB channels for a grayscale one.

    Args:
        base_model: a Keras model.
        input_shape: `(height, width, channels)` of the new images.
        for_recipe: whether the images come from a recipe's data set. A recipe has no field
            that resizes images, so the message then points to a data set of the right size
            or to the Python API. Defaults to `False`.
    """
    expected = tuple(base_model.input_shape[1:])
    received = tuple(input_shape)
    fits = len(expected) == len(received) and all(
        e is None or e == r for e, r in zip(expected, received))
    if fits:
        return
    problem = (
        f"The images do not fit the base model's input: the base model expects {expected} "
        f"(None means any size), but the data have shape {received}."
    )
    if for_recipe:
        raise ValueError(
            f"{problem} A recipe cannot resize images, so fine-tune on a data set with images "
            f"of shape {expected}, or build the model in Python with build_finetune_model "
            f"and convert the images in a tf.data map."
        )
    if len(expected) != 3 or len(received) != 3:
        raise ValueError(f"{problem} Reshape the images to the base model's input shape.")
    steps = []
    # A size of None accepts any size, so the images keep theirs on that axis.
    size = [e if e is not None else r for e, r in zip(expected[:2], received[:2])]
    if size != list(received[:2]):
        steps.append(f"resize them with keras.layers.Resizing({size[0]}, {size[1]})")
    channels = expected[2]
    if channels is not None and channels != received[2]:
        if received[2] == 1:
            steps.append(f"repeat their one channel {channels} times with "
                         f"keras.ops.repeat(images, {channels}, axis=-1)")
        elif channels == 1:
            steps.append("average their channels into one with keras.ops.mean(images, "
                         "axis=-1, keepdims=True), or tf.image.rgb_to_grayscale for RGB")
        else:
            steps.append(f"give them {channels} channels")
    raise ValueError(f"{problem} In a tf.data map, {' and '.join(steps)}.")


def build_finetune_model(base_model, num_classes, input_shape, strategy="auto", *,
                         num_images=None, similar=True, feature_layer=None, trainable_groups=1,
                         train_batch_norm=False, large_threshold=5000, normalize_features=True):
    """Put a new classifier on a pre-trained model and freeze layers by a strategy.

    The features come from `feature_layer`, or by default from the base model's output, or
    from the layer before it when the base model ends in a `Dense` classifier (a saved run).
    `different_small` defaults to the last layer of the middle layer group instead. A 4D
    feature map is averaged over space (`GlobalAveragePooling2D`, layer `finetune_pool`).
    With `normalize_features`, a `BatchNormalization` layer without scale and offset
    (`finetune_norm`) standardizes the features, as in the linear probes of He et al.
    ("Masked Autoencoders Are Scalable Vision Learners", CVPR 2022). The new softmax `Dense`
    layer, `finetune_classifier`, starts with a zero kernel, so the first predictions are
    uniform and the starting loss is `log(num_classes)`.

    Frozen ReLU features are far from standardized: large, all positive, and with most of
    their variance in a shared offset. A randomly initialized classifier on them starts with
    large random logits, and a small fine-tuning learning rate moves it slowly. In
    `finetune_compare`, 64 Adam steps at 1e-3 left such a probe at 0.24 accuracy on five
    classes, where scikit-learn's logistic regression on the same features reached 0.83.

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
            `BatchNormalization` layer of the base model stays frozen in inference mode.
            Defaults to `False`.
        large_threshold: the `auto` size threshold, see `choose_strategy`. Defaults to `5000`.
        normalize_features: whether to standardize the features with `finetune_norm` before
            the classifier. Its moving statistics always train, since it is a new layer.
            Defaults to `True`.

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
    if normalize_features:
        # Momentum 0.9, so the moving statistics follow the features within a few dozen steps
        # of a short fine-tuning run (0.9**50 is below 0.01).
        x = keras.layers.BatchNormalization(
            center=False, scale=False, momentum=0.9, name="finetune_norm")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_initializer="zeros",
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


def discriminative_optimizer(model, learning_rate, factor=0.5, optimizer="adam", *,
                             make_optimizer=None):
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
        make_optimizer: a function that takes a learning rate and returns a new optimizer,
            for sub-optimizers with more options than a learning rate (momentum, clipping, a
            schedule); it replaces `optimizer`. Defaults to `None`.

    Returns:
        A `keras.optimizers.MultiOptimizer`, and the learning rate of each group as a dict
        `{group name: learning rate}`.
    """
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"factor must be in (0, 1]. Received: factor={factor!r}.")
    if make_optimizer is None:
        def make_optimizer(rate):
            return keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": rate}})

    groups = layer_groups(model)
    default = make_optimizer(learning_rate)
    # An OptimizerMap keyed by layer (`name/.*` matches the layer's variable paths) is stored
    # in a `.keras` file, unlike a Python function.
    optimizer_map = keras.optimizers.OptimizerMap(default_optimizer=default)
    rates = {}
    for depth, (name, layers) in enumerate(reversed(groups)):
        rate = learning_rate * factor**depth
        rates[name] = rate
        sub_optimizer = make_optimizer(rate)
        for layer in layers:
            optimizer_map[f"{re.escape(layer.name)}/.*"] = sub_optimizer
    return keras.optimizers.MultiOptimizer(optimizer_map), rates


# Recipe fields that only apply with `finetune_from`.
_FINETUNE_FIELDS = (
    "finetune_strategy", "finetune_similar", "finetune_feature_layer",
    "finetune_trainable_groups", "finetune_batch_norm", "gradual_unfreezing", "discriminative_lr",
)


def check_finetune_fields(recipe):
    """Raise `ValueError` for fine-tuning recipe fields that are invalid on any data set.

    The base model file, its layer names and its input shape are checked when training starts,
    by `build_recipe_finetune_model`.
    """
    if recipe.finetune_strategy not in STRATEGIES:
        raise ValueError(
            f"Unknown fine-tuning strategy. Expected one of {list(STRATEGIES)}. "
            f"Received: finetune_strategy={recipe.finetune_strategy!r}."
        )
    if recipe.finetune_from is None:
        defaults = {field.name: field.default for field in dataclasses.fields(recipe)}
        for name in _FINETUNE_FIELDS:
            value = getattr(recipe, name)
            if value != defaults[name]:
                raise ValueError(
                    f"Recipe field {name!r} applies only when fine-tuning, so it needs "
                    f"finetune_from (a .keras file or a run folder). Received: {name}={value!r}, "
                    f"finetune_from=None."
                )
        return
    if recipe.preprocessing != "none" or recipe.lsuv:
        raise ValueError(
            f"A fine-tuned model keeps the base model's layers, its pre-processing and "
            f"initialization included, so set preprocessing='none' and lsuv=False. Received: "
            f"preprocessing={recipe.preprocessing!r}, lsuv={recipe.lsuv!r}."
        )
    if recipe.discriminative_lr is None:
        return
    if recipe.gradual_unfreezing:
        raise ValueError(
            f"gradual_unfreezing and discriminative_lr cannot be combined: gradual unfreezing "
            f"replaces the model's optimizer at each unfreezing, and it rebuilds one optimizer, "
            f"not the per-group optimizers of discriminative_lr. Set one of them to None or 0. "
            f"Received: gradual_unfreezing={recipe.gradual_unfreezing!r}, "
            f"discriminative_lr={recipe.discriminative_lr!r}."
        )
    # Each group has its own sub-optimizer, so callbacks that read or set the one learning
    # rate of `model.optimizer` fail on the `MultiOptimizer`.
    conflicts = {
        "ema": recipe.ema, "snapshots": recipe.snapshots, "diagnostics": recipe.diagnostics,
        "lr_schedule": recipe.lr_schedule if recipe.lr_schedule == "plateau" else None,
    }
    for name, value in conflicts.items():
        if value:
            raise ValueError(
                f"discriminative_lr gives each layer group its own optimizer, which {name} does "
                f"not support (it reads or sets the model's single learning rate). Change "
                f"{name} or set discriminative_lr=None. Received: {name}={value!r}, "
                f"discriminative_lr={recipe.discriminative_lr!r}."
            )


def load_base_model(path):
    """Load the pre-trained model of `finetune_from`: a `.keras` file or a run folder.

    Raises:
        ValueError: the file is missing or is not a Keras model.
    """
    path = Path(path)
    file = path / "model.keras" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(
            f"Pre-trained model not found: {file}. Give the path of a .keras file or of a run "
            f"folder that contains model.keras. Received: finetune_from={str(path)!r}."
        )
    try:
        return keras.saving.load_model(file, compile=False)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        # Keras's own message can run to several sentences and lines, so only its first
        # sentence is quoted.
        cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
        cause = cause.split(". ", 1)[0].rstrip(".")
        raise ValueError(
            f"Pre-trained model {file} could not be loaded as a Keras model: {cause}. Give a "
            f"file written by model.save('name.keras'). Received: finetune_from={str(path)!r}."
        ) from None


def build_recipe_finetune_model(recipe, data, steps_per_epoch=None):
    """Build and compile the fine-tuning model of a recipe that sets `finetune_from`.

    The base model comes from `load_base_model`, the new classifier and the frozen layers from
    `build_finetune_model` with the recipe's `finetune_*` fields (`auto` counts the training
    images of `data`). The optimizer is the recipe's (see `build_optimizer`), at
    `learning_rate` times `DIFFERENT_LARGE_LEARNING_RATE_FACTOR` for `different_large`, and
    one per layer group with `discriminative_lr`.

    Returns:
        `(model, strategy)`: the compiled model and the strategy applied.

    Raises:
        ValueError: the file is missing or not a model, the feature layer is not in the base
            model, or the images do not fit the base model's input.
    """
    model, strategy = _build_recipe_model(recipe, data, len(data.y_train))
    learning_rate = recipe.learning_rate
    if strategy == "different_large":
        learning_rate *= DIFFERENT_LARGE_LEARNING_RATE_FACTOR

    def make_optimizer(rate):
        return build_optimizer(recipe.replace(learning_rate=rate), steps_per_epoch)

    if recipe.discriminative_lr is None:
        optimizer = make_optimizer(learning_rate)
    else:
        optimizer, _ = discriminative_optimizer(
            model, learning_rate, recipe.discriminative_lr, make_optimizer=make_optimizer)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model, strategy


def recipe_strategy(recipe, num_images):
    """Return the strategy a recipe fine-tunes with on `num_images` images, or `None`.

    `choose_strategy` resolves `auto`. A recipe without `finetune_from` gives `None`.
    """
    if recipe.finetune_from is None:
        return None
    if recipe.finetune_strategy != "auto":
        return recipe.finetune_strategy
    return choose_strategy(num_images, recipe.finetune_similar)


def _build_recipe_model(recipe, data, num_images):
    base = load_base_model(recipe.finetune_from)
    check_input_fits(base, data.input_shape, for_recipe=True)
    return build_finetune_model(
        base, data.num_classes, data.input_shape, recipe.finetune_strategy,
        num_images=num_images, similar=recipe.finetune_similar,
        feature_layer=recipe.finetune_feature_layer,
        trainable_groups=recipe.finetune_trainable_groups,
        train_batch_norm=recipe.finetune_batch_norm,
    )


def check_finetune_data(recipe, data, num_images=None):
    """Check a recipe's `finetune_from` model against `data`, before training starts.

    Loads the base model and builds the fine-tuning model once, so that a missing or broken
    file, an unknown `finetune_feature_layer`, an invalid `finetune_trainable_groups` or images
    of the wrong shape are reported before the command line prints its start line.

    Args:
        recipe: a `Recipe`.
        data: the `DataSplits` the recipe trains on.
        num_images: the number of training images that `auto` counts, when it differs from
            `data`'s (see `kerastricks.recipes.imbalance.check_imbalance_data`). Defaults to
            `None` (the images of `data`).

    Returns:
        The strategy the run fine-tunes with (the one `auto` chooses), or `None` for a recipe
        without `finetune_from`.

    Raises:
        RecipeError: the base model does not fit the recipe or the data.
    """
    if recipe.finetune_from is None:
        return None
    try:
        _, strategy = _build_recipe_model(
            recipe, data, len(data.y_train) if num_images is None else num_images)
    except ValueError as error:
        raise RecipeError(str(error)) from None
    return strategy


def finetune_callbacks(recipe):
    """Return the callbacks of a recipe's fine-tuning fields: `GradualUnfreezing`, or none."""
    if not recipe.gradual_unfreezing:
        return []
    return [GradualUnfreezing(recipe.gradual_unfreezing,
                              train_batch_norm=recipe.finetune_batch_norm)]


def resume_gradual_unfreezing(callbacks, model, backup_metadata):
    """Re-apply the unfreezings of an interrupted run before `fit` restores its backup.

    Args:
        callbacks: the run's callbacks; each `GradualUnfreezing` among them is replayed.
        model: the compiled model, its groups frozen as at the start of training.
        backup_metadata: the JSON file in which `keras.callbacks.BackupAndRestore` stores the
            number of finished epochs (`"epoch"`). Nothing happens while it is missing.
    """
    metadata = Path(backup_metadata)
    if not metadata.is_file():
        return
    epoch = json.loads(metadata.read_text(encoding="utf-8"))["epoch"]
    for callback in callbacks:
        if isinstance(callback, GradualUnfreezing):
            callback.unfreeze_until(model, epoch)

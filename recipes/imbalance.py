"""Class-imbalance tools: class weights, balanced sampling, minority crops, two-stage training.

Deep CNNs trained on imbalanced data favour the classes with many images (Hensman and Masko,
"The Impact of Imbalanced Training Data for Convolutional Neural Networks", 2015). The remedies
here are the ones the survey lists, plus loss weighting:

- `class_weights`: per-class loss weights from the training labels, passed to `fit`.
- `class_balanced_sampler` (streaming, for data that do not fit in memory) and
  `sampled_pipeline` (in memory, one order per seed and epoch): over- and under-sampling to a
  target class distribution.
- `minority_crops`: extra random crops taken only from images of the small classes.
- two-stage training: `sampled_pipeline` with one class set per stage, first the classes with
  many images, then those with few, optionally with a share of the large classes replayed in
  stage two. Both stages belong to one `fit`, so stage two continues from stage one's model.
- `make_imbalanced`: an imbalanced version of a data set, for recipes and tests.

`prepare_imbalanced_data` and `fit_class_weight` apply a recipe's options to a `DataSplits`.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from kerastricks.recipes import data as data_module
from kerastricks.recipes.spec import RecipeError

CLASS_WEIGHT_METHODS = ("balanced", "effective_number")


def class_weights(labels, method="balanced", *, num_classes=None, beta=0.999):
    """Compute per-class loss weights from the training labels.

    - `balanced`: `n / (k * n_c)` for `n` images, `k` classes and `n_c` images of class `c`,
      the same as scikit-learn's `compute_class_weight("balanced", ...)`.
    - `effective_number`: `(1 - beta) / (1 - beta**n_c)`, the inverse of the effective number
      of samples, scaled so that the weights sum to `k` (Cui et al., "Class-Balanced Loss Based
      on Effective Number of Samples", CVPR 2019). `beta=0` gives equal weights, and `beta`
      near 1 approaches `balanced`.

    Args:
        labels: integer class labels of the training images.
        method: `"balanced"` or `"effective_number"`. Defaults to `"balanced"`.
        num_classes: the number of classes; every class must occur in `labels`. Defaults to
            `None` (`max(labels) + 1`).
        beta: the `effective_number` hyperparameter, in [0, 1). Defaults to `0.999`.

    Returns:
        A dict `{class index: weight}`, as `fit(class_weight=...)` takes it.

    Example:

    >>> class_weights([0, 0, 0, 1])
    {0: 0.6666666666666666, 1: 2.0}
    """
    if method not in CLASS_WEIGHT_METHODS:
        raise ValueError(
            f"Unknown class weight method. Expected one of {list(CLASS_WEIGHT_METHODS)}. "
            f"Received: method={method!r}."
        )
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1). Received: beta={beta!r}.")
    counts = _class_counts(labels, num_classes)
    if method == "balanced":
        weights = counts.sum() / (len(counts) * counts)
    else:
        weights = (1.0 - beta) / (1.0 - beta ** counts)
        weights = weights * len(counts) / weights.sum()
    return {index: float(weight) for index, weight in enumerate(weights)}


def _class_counts(labels, num_classes):
    labels = np.asarray(labels).reshape(-1).astype("int64")
    if labels.size == 0 or labels.min() < 0:
        raise ValueError("labels must be a non-empty array of class indices >= 0.")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.max() >= num_classes:
        raise ValueError(
            f"labels contain class {int(labels.max())}, but num_classes={num_classes}."
        )
    counts = np.bincount(labels, minlength=num_classes).astype("float64")
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise ValueError(
            f"Class {int(missing[0])} has no training images, so its weight or share is "
            f"undefined. Remove the class or add images of it. Received counts: "
            f"{counts.astype(int).tolist()}."
        )
    return counts


def class_index(key, class_names, argument, received=None):
    """Return the index of a class given by name or index, or raise `ValueError` naming it.

    `received`, the whole mapping that `key` comes from, is shown in the message.
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if 0 <= key < len(class_names):
            return int(key)
    elif isinstance(key, str) and key in class_names:
        return list(class_names).index(key)
    elif isinstance(key, str) and key.isdigit() and int(key) < len(class_names):
        return int(key)
    received_text = f" Received: {argument}={received!r}." if received is not None else ""
    raise ValueError(
        f"{argument} names an unknown class {key!r}. Use a class name from {list(class_names)} "
        f"or an index from 0 to {len(class_names) - 1}.{received_text}"
    )


def resolve_class_weight(class_weight, labels, class_names, beta=0.999):
    """Turn a recipe's `class_weight` (a method name or a mapping) into `{index: weight}`.

    A mapping names classes by name or index; classes it leaves out get weight 1.

    Raises:
        ValueError: for an unknown method or class, or a weight that is negative or not a
            number.
    """
    if class_weight is None:
        return None
    if isinstance(class_weight, str):
        return class_weights(labels, class_weight, num_classes=len(class_names), beta=beta)
    weights = {index: 1.0 for index in range(len(class_names))}
    for key, weight in class_weight.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(
                f"class_weight values must be numbers >= 0. Received: {key!r}: {weight!r}."
            )
        weights[class_index(key, class_names, "class_weight", class_weight)] = float(weight)
    return weights


def target_distribution(distribution, class_names, argument="distribution"):
    """Return a target class distribution as a probability vector, one entry per class.

    Args:
        distribution: `"balanced"` (every class equally often), or a mapping of class names or
            indices to probabilities that sum to 1; classes it leaves out get probability 0.
        class_names: the data set's class names.
        argument: the name that error messages give `distribution`, such as the recipe field
            `sampling`. Defaults to `"distribution"`.

    Raises:
        ValueError: the mapping names an unknown class, has a negative value, or does not sum
            to 1 (within 1e-6).
    """
    num_classes = len(class_names)
    if distribution == "balanced":
        return np.full(num_classes, 1.0 / num_classes)
    if not isinstance(distribution, dict):
        raise ValueError(
            f"{argument} must be 'balanced' or a mapping of classes to probabilities. "
            f"Received: {argument}={distribution!r}."
        )
    _check_probabilities(distribution, argument)
    probabilities = np.zeros(num_classes)
    for key, value in distribution.items():
        probabilities[class_index(key, class_names, argument, distribution)] = value
    return probabilities


def _check_probabilities(distribution, argument):
    """Raise `ValueError` unless the mapping's values are probabilities that sum to 1."""
    for value in distribution.values():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(
                f"{argument} values must be probabilities >= 0. Received: "
                f"{argument}={distribution!r}."
            )
    total = float(sum(distribution.values()))
    if abs(total - 1.0) > 1e-6:
        raise ValueError(
            f"The probabilities of the target class distribution {argument} must sum to 1, "
            f"but they sum to {total:.6g}. Divide each value by the sum. "
            f"Received: {argument}={distribution!r}."
        )


def class_balanced_sampler(dataset, distribution, *, seed=None, shuffle_buffer=1024):
    """Resample an unbatched `(image, label)` dataset to a target class distribution.

    The dataset is split into one stream per class (`filter`), each repeated forever and
    shuffled, and `tf.data.Dataset.sample_from_datasets` draws the next element's class with the
    target probabilities. Classes above their natural share are over-sampled (their images
    repeat) and the others under-sampled. Nothing is loaded into memory beyond the shuffle
    buffers, so it works for data sets read from files.

    The result is infinite; batch it and pass `steps_per_epoch` to `fit`, or use `take`.

    Args:
        dataset: an unbatched `tf.data.Dataset` of `(image, label)` pairs with integer scalar
            labels.
        distribution: a probability vector with one entry per class that sums to 1 (see
            `target_distribution`). Classes with probability 0 are left out.
        seed: the seed of the shuffling and of the class draws. Defaults to `None`.
        shuffle_buffer: the shuffle buffer of each class stream. Defaults to `1024`.

    Returns:
        An infinite, unbatched `tf.data.Dataset` of `(image, label)` pairs.

    Raises:
        TypeError: `distribution` is a string such as `"balanced"` or a mapping.
        ValueError: `distribution` is not a vector of probabilities that sums to 1.
    """
    if isinstance(distribution, (str, dict)):
        raise TypeError(
            f"distribution must be a probability vector with one entry per class. Turn "
            f"'balanced' or a mapping of classes into one with "
            f"target_distribution(distribution, class_names). Received: "
            f"distribution={distribution!r}."
        )
    distribution = np.asarray(distribution, dtype="float64")
    if distribution.ndim != 1 or np.any(distribution < 0) or abs(distribution.sum() - 1) > 1e-6:
        raise ValueError(
            f"distribution must be a vector of probabilities >= 0 that sums to 1. "
            f"Received: distribution={distribution.tolist()}."
        )
    # NOTE: a class with a positive probability but no images in `dataset` makes its filtered
    # stream search forever, because the stream repeats. Check the counts beforehand.
    streams, weights = [], []
    for index, probability in enumerate(distribution):
        if probability == 0:
            continue
        stream = dataset.filter(lambda image, label, index=index: tf.equal(
            tf.cast(label, tf.int64), index))
        stream_seed = None if seed is None else seed + index
        stream = stream.repeat().shuffle(shuffle_buffer, seed=stream_seed)
        streams.append(stream)
        weights.append(float(probability))
    return tf.data.Dataset.sample_from_datasets(streams, weights=weights, seed=seed)


def sampled_pipeline(images, labels, batch_size, seed, distributions, boundaries=(),
                     epoch_size=None):
    """Build an in-memory training pipeline that samples classes by a target distribution.

    Every image slot of an epoch first draws a class from the distribution in force, then an
    image of that class uniformly (with replacement). The draws are stateless random numbers
    keyed by `(seed, epoch, position)`, so each epoch's batches depend only on the seed and the
    value of the returned epoch variable, as with `load_dataset`'s training pipeline, and a
    resumed run trains on the same batches as an uninterrupted one.

    `distributions[i]` is in force from epoch `boundaries[i - 1]` (0 for `i = 0`) on, which
    gives two-stage training with two distributions that cover different classes.

    Args:
        images: the training images, a NumPy array.
        labels: their integer labels.
        batch_size: the number of images per batch.
        seed: the sampling seed.
        distributions: a list of probability vectors, one entry per class each.
        boundaries: the epochs at which the next distribution takes over, increasing, one
            fewer than `distributions`. Defaults to `()`.
        epoch_size: the number of images per epoch. Defaults to `None` (`len(images)`, so an
            epoch has as many batches as without sampling).

    Returns:
        `(dataset, epoch)`: a batched `tf.data.Dataset` and the `tf.Variable` that the training
        loop sets to the epoch number before each epoch (see `ShuffleEpoch`).
    """
    labels = np.asarray(labels).astype("int64")
    matrix = np.asarray(distributions, dtype="float64")
    if len(boundaries) != len(matrix) - 1:
        raise ValueError(
            f"boundaries must have one entry fewer than distributions. Received: "
            f"{len(boundaries)} boundaries for {len(matrix)} distributions."
        )
    counts = np.bincount(labels, minlength=matrix.shape[1])
    empty = [int(c) for c in np.flatnonzero((matrix > 0).any(axis=0) & (counts == 0))]
    if empty:
        raise ValueError(
            f"The target distribution gives classes {empty} a positive share, but they have no "
            f"training images. Set their share to 0."
        )

    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="sampling_epoch")
    order = tf.constant(np.argsort(labels, kind="stable"))
    starts = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype("int64"))
    counts_tensor = tf.constant(counts.astype("float64"))
    # A share of 0 becomes a logit of -inf, so `stateless_categorical` never draws that class.
    with np.errstate(divide="ignore"):
        logits = tf.constant(np.log(matrix).astype("float32"))
    boundaries_tensor = tf.constant(list(boundaries) or [np.iinfo(np.int64).max], tf.int64)
    all_images, all_labels = tf.constant(images), tf.constant(labels.astype("int32"))
    epoch_size = len(labels) if epoch_size is None else epoch_size

    def sample_batch(positions):
        current = epoch.read_value()
        stage = tf.reduce_sum(tf.cast(boundaries_tensor <= current, tf.int32))
        stage = tf.minimum(stage, len(matrix) - 1)
        key = tf.stack([tf.constant(seed, tf.int64), current * epoch_size + positions[0]])
        size = tf.shape(positions)[0]
        classes = tf.random.stateless_categorical(
            logits[stage][tf.newaxis], size, seed=key, dtype=tf.int64)[0]
        uniform = tf.random.stateless_uniform([size], seed=key + [0, 1], dtype=tf.float64)
        within = tf.cast(tf.floor(uniform * tf.gather(counts_tensor, classes)), tf.int64)
        indices = tf.gather(order, tf.gather(starts, classes) + within)
        return tf.gather(all_images, indices), tf.gather(all_labels, indices)

    dataset = tf.data.Dataset.range(epoch_size).batch(batch_size)
    dataset = dataset.map(sample_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE), epoch


def minority_classes(labels, num_classes, threshold):
    """Return the classes with fewer than `threshold` times the largest class's image count.

    Raises:
        ValueError: no class, or every class, falls below the threshold, so one of the two
            stages of two-stage training would be empty.
    """
    counts = np.bincount(np.asarray(labels).astype("int64"), minlength=num_classes)
    small = np.flatnonzero(counts < threshold * counts.max())
    if small.size == 0 or small.size == num_classes:
        raise ValueError(
            f"minority_threshold={threshold} puts {small.size} of {num_classes} classes below "
            f"{threshold} x the largest class ({int(counts.max())} images), so one stage has no "
            f"classes. Choose a threshold between the smallest and largest count ratio; the "
            f"class counts are {counts.tolist()}."
        )
    return [int(c) for c in small]


def minority_crops(images, labels, classes, crops_per_image, *, crop_size=0.8, seed=0):
    """Take extra random crops from the images of the given (small) classes.

    Each crop is a random window of `crop_size` times the image's height and width, resized
    back to the full size (bilinear), so the crops can join the training set. Images of other
    classes give no crops.

    Args:
        images: images shaped `(n, height, width, channels)`.
        labels: their integer labels.
        classes: the class indices to take crops from.
        crops_per_image: the number of crops from each image of those classes.
        crop_size: the window side as a fraction of the image side, in (0, 1]. Defaults to `0.8`.
        seed: the seed of the crop positions. Defaults to `0`.

    Returns:
        `(crops, crop_labels)`: NumPy arrays with `crops_per_image` entries per selected image.
    """
    if not 0.0 < crop_size <= 1.0:
        raise ValueError(f"crop_size must be in (0, 1]. Received: crop_size={crop_size!r}.")
    labels = np.asarray(labels)
    selected = np.flatnonzero(np.isin(labels, classes))
    source = np.repeat(selected, crops_per_image)
    height, width = images.shape[1:3]
    window_height = max(1, round(crop_size * height))
    window_width = max(1, round(crop_size * width))
    rng = np.random.default_rng(seed)
    tops = rng.integers(0, height - window_height + 1, size=len(source))
    lefts = rng.integers(0, width - window_width + 1, size=len(source))
    crops = np.empty((len(source),) + images.shape[1:], dtype=images.dtype)
    for i, (index, top, left) in enumerate(zip(source, tops, lefts)):
        window = images[index, top:top + window_height, left:left + window_width]
        crops[i] = tf.image.resize(window, (height, width)).numpy()
    return crops, labels[source]


def make_imbalanced(images, labels, ratios, *, seed=0):
    """Keep only a fraction of the images of some classes, to make an imbalanced data set.

    Args:
        images: the images.
        labels: their integer labels.
        ratios: a mapping of class index to the fraction of its images to keep, in (0, 1];
            classes left out keep all their images. Each kept class keeps at least one image.
            For example `{c: 0.05 for c in (0, 2, 4, 6, 8)}` cuts five classes to 1 in 20.
        seed: the seed of the random choice of the kept images. Defaults to `0`.

    Returns:
        `(images, labels)` of the kept images, in their original order.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep = np.ones(len(labels), dtype=bool)
    for label, ratio in ratios.items():
        if not 0.0 < ratio <= 1.0:
            raise ValueError(
                f"Each kept fraction must be in (0, 1]. Received: class {label!r}: {ratio!r}."
            )
        members = np.flatnonzero(labels == label)
        kept = max(1, round(ratio * len(members))) if len(members) else 0
        dropped = rng.permutation(members)[kept:]
        keep[dropped] = False
    return images[keep], labels[keep]


def imbalance_ratios(imbalance, class_names):
    """Turn a recipe's `imbalance` mapping (class names or indices) into `{index: ratio}`."""
    return {class_index(key, class_names, "imbalance", imbalance): value
            for key, value in imbalance.items()}


def check_imbalance_data(recipe, data):
    """Check a recipe's class fields against `data` and count the images the run trains on.

    This is the cheap part of `prepare_imbalanced_data` (labels only, no crops, no pipeline),
    so the command line can reject a class the data set lacks, or a `minority_threshold`
    that selects no class, before training starts.

    Returns:
        `(training images, validation images)` after the `imbalance` cut, the minority crops
        included.

    Raises:
        RecipeError: a field names a class the data set lacks, or `minority_threshold` selects
            no class or every class.
    """
    try:
        resolve_class_weight(recipe.class_weight, data.y_train, data.class_names,
                             beta=recipe.class_weight_beta)
        if isinstance(recipe.sampling, dict):
            target_distribution(recipe.sampling, data.class_names, "sampling")
        y_train, y_validation = data.y_train, data.y_validation
        if recipe.imbalance:
            ratios = imbalance_ratios(recipe.imbalance, data.class_names)
            # The same seeds as `_prepare_imbalanced_data`, so the same images are kept.
            _, y_train = make_imbalanced(y_train, y_train, ratios, seed=recipe.seed)
            _, y_validation = make_imbalanced(y_validation, y_validation, ratios,
                                              seed=recipe.seed + 1)
        crops = 0
        if recipe.minority_crops or recipe.two_stage_epochs:
            small = _minority_classes_of_recipe(recipe, y_train, data.num_classes)
            if recipe.minority_crops:
                crops = int(np.isin(y_train, small).sum()) * recipe.minority_crops
    except ValueError as error:
        raise RecipeError(str(error)) from None
    return len(y_train) + crops, len(y_validation)


def _minority_classes_of_recipe(recipe, labels, num_classes):
    """`minority_classes`, with a message that names the recipe fields that need them."""
    try:
        return minority_classes(labels, num_classes, recipe.minority_threshold)
    except ValueError:
        counts = np.bincount(np.asarray(labels).astype("int64"), minlength=num_classes)
        users = " and ".join(
            name for name in ("minority_crops", "two_stage_epochs") if getattr(recipe, name))
        # minority_threshold is at most 1, so the largest class is never selected and the
        # only failure is an empty selection.
        raise ValueError(
            f"minority_threshold selects no class for {users}: a minority class has fewer "
            f"than minority_threshold x the images of the largest class, and the training "
            f"class counts are {counts.tolist()}. Set minority_threshold above the smallest "
            f"count ratio ({counts.min() / counts.max():.3g}), or cut classes with imbalance. "
            f"Received: minority_threshold={recipe.minority_threshold!r}."
        ) from None


def prepare_imbalanced_data(recipe, data):
    """Apply a recipe's `imbalance`, `minority_crops`, `sampling` and `two_stage_epochs`.

    `recipe.imbalance` cuts the training and validation splits. The test split stays whole, so
    recall is measured on every class alike. Crops of the minority classes join the training
    split. The training pipeline is then rebuilt: sampled by class when the recipe sets
    `sampling` or `two_stage_epochs`, otherwise shuffled as by `load_dataset`.

    Returns:
        `data` itself when the recipe sets none of them, else a new `DataSplits`.

    Raises:
        RecipeError: a field names a class the data set lacks, or the threshold leaves a
            stage of two-stage training without classes.
    """
    try:
        return _prepare_imbalanced_data(recipe, data)
    except ValueError as error:
        raise RecipeError(str(error)) from None


def _prepare_imbalanced_data(recipe, data):
    changed = {}
    x_train, y_train = data.x_train, data.y_train
    if recipe.imbalance:
        ratios = imbalance_ratios(recipe.imbalance, data.class_names)
        x_train, y_train = make_imbalanced(x_train, y_train, ratios, seed=recipe.seed)
        x_validation, y_validation = make_imbalanced(
            data.x_validation, data.y_validation, ratios, seed=recipe.seed + 1)
        changed.update(
            x_validation=x_validation, y_validation=y_validation,
            validation=data_module._pipeline(x_validation, y_validation, data.batch_size),
        )
    if recipe.minority_crops:
        small = _minority_classes_of_recipe(recipe, y_train, data.num_classes)
        crops, crop_labels = minority_crops(
            x_train, y_train, small, recipe.minority_crops,
            crop_size=recipe.minority_crop_size, seed=recipe.seed)
        x_train = np.concatenate([x_train, crops])
        y_train = np.concatenate([y_train, crop_labels])
    if not changed and x_train is data.x_train and not (recipe.sampling or recipe.two_stage_epochs):
        return data

    train, epoch = _training_pipeline(recipe, data, x_train, y_train)
    return dataclasses.replace(
        data, x_train=x_train, y_train=y_train, train=train, shuffle_epoch=epoch, **changed)


def _training_pipeline(recipe, data, x_train, y_train):
    if not (recipe.sampling or recipe.two_stage_epochs):
        return data_module._shuffled_pipeline(x_train, y_train, data.batch_size, recipe.seed)
    counts = np.bincount(y_train, minlength=data.num_classes).astype("float64")
    if recipe.sampling:
        base = target_distribution(recipe.sampling, data.class_names, "sampling")
    else:
        base = counts / counts.sum()
    if not recipe.two_stage_epochs:
        return sampled_pipeline(x_train, y_train, data.batch_size, recipe.seed, [base])
    small = _minority_classes_of_recipe(recipe, y_train, data.num_classes)
    stages = []
    for in_stage in (~np.isin(np.arange(data.num_classes), small), np.isin(
            np.arange(data.num_classes), small)):
        share = np.where(in_stage, base, 0.0)
        if share.sum() == 0:
            raise ValueError(
                "The sampling distribution gives every class of one training stage share 0. "
                f"Received: sampling={recipe.sampling!r}, minority classes {small}."
            )
        stages.append(share / share.sum())
    # Replay: stage two keeps drawing the large classes, at their stage-one proportions, so
    # the classifier keeps seeing them and does not forget them.
    replay = recipe.two_stage_replay
    stages[1] = (1.0 - replay) * stages[1] + replay * stages[0]
    boundary = recipe.epochs - recipe.two_stage_epochs
    return sampled_pipeline(x_train, y_train, data.batch_size, recipe.seed, stages, [boundary])


def check_imbalance_fields(recipe):
    """Raise `ValueError` for class-imbalance recipe fields that are invalid on any data set.

    Class names and indices are checked against the data set when training starts.
    """
    if isinstance(recipe.class_weight, str) and recipe.class_weight not in CLASS_WEIGHT_METHODS:
        raise ValueError(
            f"Unknown class_weight method. Expected one of {list(CLASS_WEIGHT_METHODS)} or a "
            f"mapping of classes to weights. Received: class_weight={recipe.class_weight!r}."
        )
    if isinstance(recipe.class_weight, dict):
        for key, weight in recipe.class_weight.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(
                    f"class_weight values must be numbers >= 0. Received: {key!r}: {weight!r}."
                )
    if recipe.class_weight_beta >= 1.0:
        raise ValueError(
            f"class_weight_beta must be < 1. Received: class_weight_beta="
            f"{recipe.class_weight_beta!r}."
        )
    if isinstance(recipe.sampling, str) and recipe.sampling != "balanced":
        raise ValueError(
            f"sampling must be 'balanced' or a mapping of classes to probabilities. "
            f"Received: sampling={recipe.sampling!r}."
        )
    if isinstance(recipe.sampling, dict):
        # The class names are checked against the data set once it is loaded.
        _check_probabilities(recipe.sampling, "sampling")
    for key, ratio in recipe.imbalance.items():
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ValueError(
                f"imbalance values must be fractions in (0, 1]. Received: {key!r}: {ratio!r}."
            )
    if recipe.two_stage_epochs >= recipe.epochs:
        raise ValueError(
            f"two_stage_epochs must be smaller than epochs, or stage one has no epochs. "
            f"Received: two_stage_epochs={recipe.two_stage_epochs}, epochs={recipe.epochs}."
        )
    if recipe.two_stage_replay >= 1.0:
        raise ValueError(
            f"two_stage_replay must be < 1, or stage two has no minority-class images. "
            f"Received: two_stage_replay={recipe.two_stage_replay!r}."
        )
    if recipe.two_stage_replay and not recipe.two_stage_epochs:
        raise ValueError(
            f"two_stage_replay applies to stage two of two-stage training, so it needs "
            f"two_stage_epochs > 0. Received: two_stage_replay={recipe.two_stage_replay!r}, "
            f"two_stage_epochs=0."
        )


def fit_class_weight(recipe, data):
    """Return the `class_weight` dict for `fit` from the recipe, or `None`."""
    try:
        return resolve_class_weight(
            recipe.class_weight, data.y_train, data.class_names, beta=recipe.class_weight_beta)
    except ValueError as error:
        raise RecipeError(str(error)) from None

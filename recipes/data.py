"""Image classification data sets as train, validation and test `tf.data` pipelines.

Every loader returns float32 images scaled to [0, 1] with shape (height, width, channels) and int32
labels. The validation split is carved from the training images (seeded and stratified), never from
the test images.
"""

import dataclasses
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split

from kerastricks.recipes import idx, image_folder

DATASETS = ("digits", "fashion_mnist", "mnist", "cifar10", "cifar100", "folder:PATH")

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_SYSTEM_FOLDER = Path("/usr/share/datasets/fashion-mnist")


class DataError(ValueError):
    """A data set that cannot be found, read or split as requested."""


@dataclasses.dataclass
class DataSplits:
    """Train, validation and test splits of one data set.

    The `tf.data` pipelines are batched and prefetched; the training pipeline is shuffled every
    epoch. The NumPy arrays behind them are kept for statistics such as `adapt` and class weights.
    """

    name: str
    class_names: list
    input_shape: tuple
    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    x_train: np.ndarray
    y_train: np.ndarray
    x_validation: np.ndarray
    y_validation: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    batch_size: int
    shuffle_epoch: tf.Variable = None

    @property
    def num_classes(self):
        return len(self.class_names)


def available_datasets():
    """Return the data set names that `load_dataset` accepts."""
    return list(DATASETS)


def load_dataset(name="digits", *, path=None, subset=None, validation_split=0.1,
                 batch_size=64, seed=0):
    """Load a data set as batched, prefetched train, validation and test pipelines.

    Args:
        name: `digits` (scikit-learn's 8x8 digits, offline), `fashion_mnist`, `mnist`, `cifar10`,
            `cifar100`, or `folder:PATH` for a folder of class subfolders. Defaults to `"digits"`.
        path: for `fashion_mnist`, a folder with the four IDX files, searched before the other
            places. Defaults to `None`.
        subset: keep at most this many training images (a stratified sample), for quick runs.
            The test split is cut to the same fraction. Defaults to `None` (all images).
        validation_split: the fraction of the training images held out for validation.
            Defaults to `0.1`.
        batch_size: the batch size of the three pipelines. Defaults to `64`.
        seed: the seed of the subset, the validation split and the shuffling. Defaults to `0`.

    Returns:
        A `DataSplits`.

    Raises:
        DataError: for an unknown name, missing or unreadable files, or an impossible split.
    """
    if not 0.0 < validation_split < 1.0:
        raise DataError(
            f"validation_split must be between 0 and 1 (exclusive). "
            f"Received: validation_split={validation_split!r}."
        )
    if subset is not None and subset < 1:
        raise DataError(f"subset must be a positive number of images. Received: subset={subset!r}.")
    if batch_size < 1:
        raise DataError(f"batch_size must be positive. Received: batch_size={batch_size!r}.")

    (x_train, y_train), (x_test, y_test), class_names = _load_arrays(name, path)
    minimum = 2 * len(class_names)
    if subset is not None and subset < minimum:
        raise DataError(
            f"subset={subset} is too small for a stratified subset of {name}: each of its "
            f"{len(class_names)} classes needs 2 images, so use a subset of at least {minimum}."
        )
    if subset is not None and subset < len(x_train):
        test_size = max(len(class_names), round(len(x_test) * subset / len(x_train)))
        x_train, y_train = _stratified_sample(x_train, y_train, subset, seed, name)
        x_test, y_test = _stratified_sample(x_test, y_test, test_size, seed, name)
    x_train, x_validation, y_train, y_validation = _split(
        x_train, y_train, validation_split, seed, name
    )
    train, shuffle_epoch = _shuffled_pipeline(x_train, y_train, batch_size, seed)
    return DataSplits(
        name=name,
        class_names=list(class_names),
        input_shape=tuple(x_train.shape[1:]),
        train=train,
        validation=_pipeline(x_validation, y_validation, batch_size),
        test=_pipeline(x_test, y_test, batch_size),
        x_train=x_train,
        y_train=y_train,
        x_validation=x_validation,
        y_validation=y_validation,
        x_test=x_test,
        y_test=y_test,
        batch_size=batch_size,
        shuffle_epoch=shuffle_epoch,
    )


def _load_arrays(name, path):
    if not isinstance(name, str):
        raise DataError(f"The data set name must be a string. Received: {name!r}.")
    loaders = {
        "digits": _load_digits,
        "fashion_mnist": lambda: _load_fashion_mnist(path),
        "mnist": lambda: _load_keras("mnist", [str(i) for i in range(10)]),
        "cifar10": lambda: _load_keras("cifar10", CIFAR10_CLASSES),
        "cifar100": lambda: _load_keras("cifar100", [str(i) for i in range(100)]),
    }
    if name.startswith("folder:"):
        loader = lambda: image_folder.load_image_folder(name[len("folder:"):])  # noqa: E731
    elif name in loaders:
        loader = loaders[name]
    else:
        raise DataError(f"Unknown data set {name!r}. Expected one of {available_datasets()}.")
    (x_train, y_train), (x_test, y_test), class_names = loader()
    return (_to_float(x_train), _to_labels(y_train)), (_to_float(x_test), _to_labels(y_test)), class_names


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)


def _load_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    # The pixel values are counts from 0 to 16; dividing by 16 puts them in [0, 1].
    images = (digits.images / 16.0).astype("float32")[..., np.newaxis]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
    return (x_train, y_train), (x_test, y_test), [str(i) for i in range(10)]


def fashion_mnist_folders(path=None):
    """Return the folders searched for the Fashion-MNIST IDX files, in search order."""
    folders = []
    if path is not None:
        folders.append(Path(path))
    if os.environ.get("KERASTRICKS_DATA"):
        base = Path(os.environ["KERASTRICKS_DATA"])
        folders += [base / "fashion-mnist", base / "fashion_mnist", base]
    folders.append(FASHION_MNIST_SYSTEM_FOLDER)
    folders.append(Path.home() / ".keras" / "datasets" / "fashion-mnist")
    return folders


def _load_fashion_mnist(path):
    if path is not None and not Path(path).is_dir():
        raise DataError(f"Fashion-MNIST folder not found: {path}. Pass a folder with the IDX files.")
    for folder in fashion_mnist_folders(path):
        if idx.find_idx_file(folder, "train-images-idx3-ubyte") is not None:
            (x_train, y_train), (x_test, y_test) = idx.load_idx_folder(folder)
            return (x_train[..., np.newaxis], y_train), (x_test[..., np.newaxis], y_test), list(
                FASHION_MNIST_CLASSES
            )
    try:
        (x_train, y_train), (x_test, y_test), _ = _load_keras("fashion_mnist", FASHION_MNIST_CLASSES)
    except DataError:
        searched = ", ".join(str(folder) for folder in fashion_mnist_folders(path))
        raise DataError(
            f"Fashion-MNIST not found in {searched}, and the download failed. "
            f"Install it with 'apt-get install dataset-fashion-mnist' (Debian/Ubuntu), set "
            f"KERASTRICKS_DATA to a folder with the four IDX files, or connect to the internet."
        ) from None
    return (x_train[..., np.newaxis], y_train), (x_test[..., np.newaxis], y_test), list(
        FASHION_MNIST_CLASSES
    )


def _load_keras(name, class_names):
    import keras

    module = getattr(keras.datasets, name)
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as error:  # Keras raises plain Exception subclasses for network failures.
        raise DataError(
            f"Downloading {name} through keras.datasets failed ({type(error).__name__}: {error}). "
            f"It needs internet access; use 'folder:PATH' with local images otherwise."
        ) from None
    return (x_train, y_train), (x_test, y_test), list(class_names)


def _to_float(images):
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.dtype == np.uint8:
        return images.astype("float32") / 255.0
    return images.astype("float32")


def _to_labels(labels):
    return np.asarray(labels).reshape(-1).astype("int32")


def _stratified_sample(images, labels, size, seed, name):
    try:
        sample, _, sample_labels, _ = train_test_split(
            images, labels, train_size=size, stratify=labels, random_state=seed
        )
    except ValueError:
        raise DataError(
            f"Cannot take a stratified subset of {size} images from {name} "
            f"({len(np.unique(labels))} classes). Use a subset of at least "
            f"{2 * len(np.unique(labels))} images."
        ) from None
    return sample, sample_labels


def _split(images, labels, validation_split, seed, name):
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    if counts.min() < 2:
        raise DataError(
            f"Data set {name} has a class with fewer than 2 training images, so no stratified "
            f"validation split is possible. Add images or use a larger subset."
        )
    try:
        return train_test_split(
            images, labels, test_size=validation_split, stratify=labels, random_state=seed
        )
    except ValueError:
        raise DataError(
            f"validation_split={validation_split} leaves fewer validation images than the "
            f"{len(counts)} classes of {name}. Use a larger split or more images."
        ) from None


def _pipeline(images, labels, batch_size):
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _shuffled_pipeline(images, labels, batch_size, seed):
    """Return a training pipeline whose order depends only on (seed, epoch), and its epoch variable.

    `tf.data`'s own reshuffling depends on how many epochs one iterator has served, so a run
    resumed in a new process would see other orders than an uninterrupted one. Here each epoch is
    a stateless permutation keyed by the seed and the value of the returned variable, which the
    training loop sets at the start of every epoch.
    """
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="shuffle_epoch")
    all_images = tf.constant(images)
    all_labels = tf.constant(labels)
    last_index = len(images) - 1

    def gather_batch(indices):
        key = tf.stack([tf.constant(seed, tf.int64), epoch.read_value()])
        order = tf.random.experimental.index_shuffle(indices, key, last_index)
        return tf.gather(all_images, order), tf.gather(all_labels, order)

    dataset = tf.data.Dataset.range(len(images)).batch(batch_size)
    dataset = dataset.map(gather_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE), epoch

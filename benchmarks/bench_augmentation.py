"""Throughput of the augmentation pipeline against the training step, and where to run it.

On Fashion-MNIST training images (28x28x1, float32 in [0, 1]) and the baseline recipe's CNN,
all in one process:

1. the augmentation alone, as a parallel `tf.data` map over batches, in images per second;
2. training without augmentation, in images per second;
3. training with the augmentation layers inside the model;
4. training with the augmentation in a parallel `tf.data` map in front of the model.

Augmentation is never the bottleneck when (1) is well above (2); the faster of (3) and (4)
is where the recipes run it. Colour augmentations need RGB images, so they are timed on
their own on random 32x32x3 batches (CIFAR-sized).

Run:

    python benchmarks/bench_augmentation.py               # about 3 minutes on 2 CPU cores
    python benchmarks/bench_augmentation.py --images 2048 # a quick look
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerastricks.recipes.augmentation import augmentation_layers  # noqa: E402
from kerastricks.recipes.idx import load_idx_folder  # noqa: E402
from kerastricks.recipes.models import build_model  # noqa: E402
from kerastricks.recipes.spec import Recipe  # noqa: E402

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
GRAY_AUGMENTATION = ["flip", "pad_crop", {"resized_crop": {"scale": [0.5, 1.0]}}]
RGB_AUGMENTATION = ["flip", "pad_crop", "color_jitter", "fancy_pca"]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=FASHION_MNIST,
                        help="folder with the Fashion-MNIST IDX files (default: %(default)s)")
    parser.add_argument("--images", type=int, default=8192,
                        help="training images per timed epoch (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="images per batch (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="timed epochs of each variant after a warm-up (default: %(default)s)")
    return parser


def sequential(layers):
    return keras.Sequential(layers, name="augmentation")


def pipeline(images, labels, batch_size, augment=None):
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    if augment is not None:
        dataset = dataset.map(
            lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def images_per_second(run_epoch, num_images, rounds):
    """Run one warm-up epoch, then return the median images per second of `rounds` epochs."""
    run_epoch()
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        run_epoch()
        rates.append(num_images / (time.perf_counter() - start))
    return statistics.median(rates)


def augmentation_rate(images, labels, batch_size, entries, rounds):
    # The recipe check allows colour augmentation only for a colour data set name.
    dataset = "cifar10" if images.shape[-1] == 3 else "fashion_mnist"
    recipe = Recipe(dataset=dataset, augmentation=entries)
    augment = sequential(augmentation_layers(recipe, images.shape[1:]))
    for layer in augment.layers:
        if hasattr(layer, "adapt"):
            layer.adapt(images)
    dataset = pipeline(images, labels, batch_size, augment)
    return images_per_second(lambda: [None for _ in dataset], len(images), rounds)


def training_rate(images, labels, batch_size, entries, in_model, rounds):
    model = build_model(Recipe(dataset="fashion_mnist"), images.shape[1:], 10)
    augment = None
    if entries:
        augment = sequential(augmentation_layers(Recipe(augmentation=entries), images.shape[1:]))
    if augment is not None and in_model:
        model = keras.Sequential([keras.Input(images.shape[1:]), augment, model])
        augment = None
    model.compile("adam", "sparse_categorical_crossentropy")
    dataset = pipeline(images, labels, batch_size, augment)
    return images_per_second(
        lambda: model.fit(dataset, epochs=1, verbose=0), len(images), rounds
    )


def main(argv=None):
    args = build_parser().parse_args(argv)
    (x_train, y_train), _ = load_idx_folder(args.data)
    images = (x_train[: args.images, :, :, None] / np.float32(255)).astype(np.float32)
    labels = y_train[: args.images].astype(np.int32)
    print(f"{len(images)} Fashion-MNIST images, batch size {args.batch_size}, "
          f"augmentation {GRAY_AUGMENTATION}")

    pipeline_alone = augmentation_rate(
        images, labels, args.batch_size, GRAY_AUGMENTATION, args.rounds
    )
    plain = training_rate(images, labels, args.batch_size, [], True, args.rounds)
    in_model = training_rate(images, labels, args.batch_size, GRAY_AUGMENTATION, True, args.rounds)
    in_data = training_rate(images, labels, args.batch_size, GRAY_AUGMENTATION, False, args.rounds)

    rgb = np.random.default_rng(0).random((args.images, 32, 32, 3)).astype(np.float32)
    rgb_alone = augmentation_rate(rgb, labels, args.batch_size, RGB_AUGMENTATION, args.rounds)

    print(f"{'variant':48s} {'images/s':>10s}")
    rows = [
        ("augmentation alone, tf.data parallel map", pipeline_alone),
        ("training, no augmentation", plain),
        ("training, augmentation in the model", in_model),
        ("training, augmentation in tf.data map", in_data),
        (f"RGB 32x32 augmentation alone {RGB_AUGMENTATION}", rgb_alone),
    ]
    for name, rate in rows:
        print(f"{name:48s} {rate:10.0f}")
    print(f"augmentation alone / training step: {pipeline_alone / plain:.1f}x")
    print(f"in-model / tf.data training rate: {in_model / in_data:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

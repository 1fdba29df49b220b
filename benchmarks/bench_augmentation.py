"""Throughput of the augmentation pipeline against the training step, and where to run it.

On Fashion-MNIST training images (28x28x1, float32 in [0, 1]) and the baseline recipe's CNN,
all in one process:

1. the augmentation alone, as the recipes run it (`augment_dataset`, a parallel `tf.data`
   map over batches), in images per second;
2. training without augmentation, in images per second;
3. training with the augmentation layers inside the model;
4. training with the augmentation in the recipes' `tf.data` map in front of the model.

Augmentation is never the bottleneck when (1) is well above (2); the faster of (3) and (4)
is where the recipes run it. Colour augmentations need RGB images, so they are timed on
random 32x32x3 images (CIFAR-sized): (1), (2) and (4) again, with the CIFAR-10 recipe's CNN.

Run:

    python benchmarks/bench_augmentation.py               # a few minutes on 2 CPU cores
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

from kerastricks.recipes.augmentation import augment_dataset, augmentation_layers  # noqa: E402
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


def pipeline(images, labels, batch_size):
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
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


def recipe_for(images, entries=()):
    # The recipe check allows colour augmentation only for a colour data set name.
    dataset = "cifar10" if images.shape[-1] == 3 else "fashion_mnist"
    return Recipe(dataset=dataset, augmentation=list(entries))


def augmentation_rate(images, labels, batch_size, entries, rounds):
    # `augment_dataset` is the recipes' own map; it adapts FancyPCA on `images`.
    dataset = augment_dataset(
        pipeline(images, labels, batch_size), recipe_for(images, entries), images
    )
    return images_per_second(lambda: [None for _ in dataset], len(images), rounds)


def training_rate(images, labels, batch_size, entries, in_model, rounds):
    recipe = recipe_for(images, entries)
    model = build_model(recipe, images.shape[1:], 10)
    dataset = pipeline(images, labels, batch_size)
    if entries and in_model:
        augment = sequential(augmentation_layers(recipe, images.shape[1:]))
        for layer in augment.layers:
            if hasattr(layer, "adapt"):
                layer.adapt(images)
        model = keras.Sequential([keras.Input(images.shape[1:]), augment, model])
    elif entries:
        dataset = augment_dataset(dataset, recipe, images)
    model.compile("adam", "sparse_categorical_crossentropy")
    return images_per_second(
        lambda: model.fit(dataset, epochs=1, verbose=0, shuffle=False), len(images), rounds
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
    rgb_plain = training_rate(rgb, labels, args.batch_size, [], True, args.rounds)
    rgb_in_data = training_rate(rgb, labels, args.batch_size, RGB_AUGMENTATION, False, args.rounds)

    print(f"{'variant':70s} {'images/s':>10s}")
    rows = [
        ("augmentation alone, tf.data parallel map", pipeline_alone),
        ("training, no augmentation", plain),
        ("training, augmentation in the model", in_model),
        ("training, augmentation in tf.data map", in_data),
        (f"RGB 32x32x3 augmentation alone {RGB_AUGMENTATION}", rgb_alone),
        ("RGB 32x32x3 training, no augmentation", rgb_plain),
        ("RGB 32x32x3 training, augmentation in tf.data map", rgb_in_data),
    ]
    for name, rate in rows:
        print(f"{name:70s} {rate:10.0f}")
    print(f"augmentation alone / training step: {pipeline_alone / plain:.1f}x")
    print(f"in-model / tf.data training rate: {in_model / in_data:.2f}x")
    print(f"RGB augmentation alone / RGB training step: {rgb_alone / rgb_plain:.1f}x")
    print(f"RGB training with / without augmentation: {rgb_in_data / rgb_plain:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

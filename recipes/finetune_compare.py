"""Compare the fine-tuning strategies: pre-train on some classes, fine-tune on the others.

Trick: fine-tuning a pre-trained CNN with a strategy chosen by data similarity and size, gradual
unfreezing, and discriminative learning rates. Source: the fine-tuning section of Wei's survey
"Must Know Tips/Tricks in Deep Neural Networks".

Data: Fashion-MNIST. A recipe CNN is pre-trained on classes 0 to 4 (T-shirt/top, Trouser,
Pullover, Dress, Coat); then a copy is fine-tuned on a few images of classes 5 to 9 (Sandal,
Shirt, Sneaker, Bag, Ankle boot) under each strategy, and tested on all test images of those
classes. A network trained from scratch on the same few images is the baseline.

Expected result: with few images, the strategies that keep pre-trained features beat training
from scratch; which strategy wins depends on the number of fine-tuning images.

    python -m kerastricks.recipes.finetune_compare --pretrain-images 12000 --finetune-images 500
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from kerastricks.callbacks import GradualUnfreezing
from kerastricks.recipes.cli import positive_int
from kerastricks.recipes.data import load_dataset
from kerastricks.recipes.finetune import (
    DIFFERENT_LARGE_LEARNING_RATE_FACTOR, build_finetune_model, discriminative_optimizer,
)
from kerastricks.recipes.models import build_model
from kerastricks.recipes.spec import Recipe

PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
FINETUNE_CLASSES = (5, 6, 7, 8, 9)
LEARNING_RATE = 1e-3


def select_classes(images, labels, classes, limit=None, seed=0):
    """Return the images of `classes` with labels renumbered 0, 1, ..., at most `limit`."""
    mask = np.isin(labels, classes)
    images, labels = images[mask], np.searchsorted(classes, labels[mask]).astype("int32")
    if limit is not None and limit < len(labels):
        keep = np.random.default_rng(seed).permutation(len(labels))[:limit]
        images, labels = images[keep], labels[keep]
    return images, labels


def pretrain(images, labels, input_shape, epochs, seed, path):
    """Train the recipe CNN on the pre-training classes and save it to `path`."""
    recipe = Recipe(width=16, depth=2, dense_units=64, seed=seed)
    model = build_model(recipe, input_shape, len(PRETRAIN_CLASSES))
    model.compile(keras.optimizers.Adam(LEARNING_RATE), "sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=epochs, batch_size=64, verbose=0)
    model.save(path)


def fine_tune_variants(base_path, input_shape, seed):
    """Yield `(name, model, optimizer, callbacks)` for each variant, each on a fresh base copy."""
    num_classes = len(FINETUNE_CLASSES)
    for strategy in ("similar_small", "similar_large", "different_small", "different_large"):
        base = keras.saving.load_model(base_path)
        model, _ = build_finetune_model(base, num_classes, input_shape, strategy,
                                        trainable_groups=2)
        factor = DIFFERENT_LARGE_LEARNING_RATE_FACTOR if strategy == "different_large" else 1.0
        yield strategy, model, keras.optimizers.Adam(LEARNING_RATE * factor), []

    base = keras.saving.load_model(base_path)
    model, _ = build_finetune_model(base, num_classes, input_shape, "similar_small")
    yield ("gradual unfreezing", model, keras.optimizers.Adam(LEARNING_RATE),
           [GradualUnfreezing(unfreeze_every=1)])

    base = keras.saving.load_model(base_path)
    model, _ = build_finetune_model(base, num_classes, input_shape, "different_large")
    optimizer, _ = discriminative_optimizer(model, LEARNING_RATE, factor=0.5)
    yield "discriminative rates", model, optimizer, []

    recipe = Recipe(width=16, depth=2, dense_units=64, seed=seed)
    yield ("from scratch", build_model(recipe, input_shape, num_classes),
           keras.optimizers.Adam(LEARNING_RATE), [])


def compare_strategies(data, pretrain_images, finetune_images, epochs, seed, folder):
    """Pre-train once, fine-tune each variant, and return one row per variant."""
    keras.utils.set_random_seed(seed)
    x_pre, y_pre = select_classes(data.x_train, data.y_train, PRETRAIN_CLASSES,
                                  pretrain_images, seed)
    x_new, y_new = select_classes(data.x_train, data.y_train, FINETUNE_CLASSES,
                                  finetune_images, seed)
    x_test, y_test = select_classes(data.x_test, data.y_test, FINETUNE_CLASSES)
    base_path = Path(folder) / "pretrained.keras"
    pretrain(x_pre, y_pre, data.input_shape, epochs, seed, base_path)

    rows = []
    for name, model, optimizer, callbacks in fine_tune_variants(base_path, data.input_shape, seed):
        keras.utils.set_random_seed(seed)
        model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
        start = time.perf_counter()
        model.fit(x_new, y_new, epochs=epochs, batch_size=32, callbacks=callbacks, verbose=0)
        seconds = time.perf_counter() - start
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        rows.append({"variant": name, "test_accuracy": float(accuracy),
                     "trainable_parameters": trainable, "train_seconds": seconds})
    return rows


def format_table(rows):
    """Format the rows of `compare_strategies` as a Markdown table."""
    lines = ["| variant | test accuracy | trainable parameters at the end | train s |",
             "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['test_accuracy']:.3f} | "
                     f"{row['trainable_parameters']} | {row['train_seconds']:.0f} |")
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m kerastricks.recipes.finetune_compare",
        description="Pre-train on Fashion-MNIST classes 0-4, fine-tune on classes 5-9 under "
                    "each fine-tuning strategy.",
    )
    parser.add_argument("--pretrain-images", type=positive_int, default=12000,
                        help="pre-training images of classes 0-4 (default: %(default)s)")
    parser.add_argument("--finetune-images", type=positive_int, default=500,
                        help="fine-tuning images of classes 5-9 (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=4,
                        help="epochs of pre-training and of each fine-tuning (default: "
                             "%(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    data = load_dataset("fashion_mnist", seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="finetune-") as folder:
        rows = compare_strategies(data, args.pretrain_images, args.finetune_images,
                                  args.epochs, args.seed, folder)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

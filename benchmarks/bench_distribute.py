"""Training step time under `tf.distribute.MirroredStrategy` against one device, same global batch.

The baseline recipe's CNN trains on Fashion-MNIST images (28x28x1; random images of that shape
when the IDX files are missing) in one process whose CPU is split into two logical devices:

1. one device (TensorFlow's default strategy), in milliseconds per step;
2. `--distribute mirrored` over the two logical CPU devices, each replica taking half of every
   global batch, with batch normalization synchronized as `kerastricks run` does it.

Both logical devices share the same CPU cores, so the ratio (2) / (1) shows the overhead of
splitting, synchronizing and all-reducing, not the speed-up that separate devices (GPUs) give.
The first epoch of each variant traces the functions and is not timed.

Run:

    python benchmarks/bench_distribute.py                  # about 2 minutes on 2 CPU cores
    python benchmarks/bench_distribute.py --steps 10       # a quick look
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Importing TensorFlow does not initialize its devices, so the CPU can still be split in main().
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerastricks.recipes.distribute import configure_replicas, create_strategy  # noqa: E402
from kerastricks.recipes.idx import load_idx_folder  # noqa: E402
from kerastricks.recipes.models import build_model  # noqa: E402
from kerastricks.recipes.spec import Recipe  # noqa: E402
from kerastricks.recipes.training import compile_model  # noqa: E402

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=FASHION_MNIST,
                        help="folder with the Fashion-MNIST IDX files (default: %(default)s)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256],
                        help="global batch sizes to time (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=30,
                        help="training steps per timed epoch (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="timed epochs of each variant after a warm-up (default: %(default)s)")
    return parser


def load_images(folder, count):
    if (folder / "train-images-idx3-ubyte.gz").is_file():
        (images, labels), _ = load_idx_folder(folder)
        return (images[:count, ..., None] / 255.0).astype("float32"), labels[:count].astype("int32")
    rng = np.random.default_rng(0)
    images = rng.random((count, 28, 28, 1), dtype="float32")
    return images, rng.integers(0, 10, count).astype("int32")


class EpochTimer(keras.callbacks.Callback):
    """Records the wall-clock seconds of each epoch of `fit`."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def time_training(strategy, images, labels, batch_size, steps, rounds):
    """Return the median milliseconds per training step after a warm-up epoch."""
    recipe = Recipe(name="bench", diagnostics=False)
    dataset = (tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
               .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    with strategy.scope():
        model = configure_replicas(compile_model(recipe, build_model(recipe, images.shape[1:], 10)))
        timer = EpochTimer()
        model.fit(dataset, epochs=1 + rounds, steps_per_epoch=steps, verbose=0,
                  callbacks=[timer], shuffle=False)
    return 1000 * statistics.median(timer.seconds[1:]) / steps


def main(argv=None):
    args = build_parser().parse_args(argv)
    # Split the CPU first: TensorFlow allows it only before its devices are initialized.
    mirrored = create_strategy("mirrored")
    one_device = tf.distribute.get_strategy()
    images, labels = load_images(args.data, max(args.batch_sizes) * args.steps)
    print(f"Replicas: {mirrored.num_replicas_in_sync} logical CPU devices; "
          f"{args.steps} steps per epoch, median of {args.rounds} epochs.")
    print(f"{'global batch':>12} {'one device ms/step':>19} {'mirrored ms/step':>17} {'ratio':>6}")
    for batch_size in args.batch_sizes:
        single = time_training(one_device, images, labels, batch_size, args.steps, args.rounds)
        split = time_training(mirrored, images, labels, batch_size, args.steps, args.rounds)
        print(f"{batch_size:>12} {single:>19.1f} {split:>17.1f} {split / single:>6.2f}")


if __name__ == "__main__":
    main()

"""Throughput of the class-balanced samplers, as ratios to the plain shuffled training pipeline.

One epoch of batches is read from each pipeline over the same images: the shuffled pipeline of
`load_dataset` (the baseline), the in-memory `sampled_pipeline` with a balanced target, and the
streaming `class_balanced_sampler` over `Dataset.from_tensor_slices`, cut to the same number
of images. The pipelines are read in turns, in a new random order each round, and the figure
is the median over rounds of each round's ratio of reading time to the baseline.

Run:

    python benchmarks/bench_sampling.py --images 20000 --rounds 3
"""

import argparse
import os
import random
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerastricks.recipes.data import _shuffled_pipeline, load_dataset  # noqa: E402
from kerastricks.recipes.imbalance import (  # noqa: E402
    class_balanced_sampler, make_imbalanced, sampled_pipeline,
)


def read_all(dataset):
    start = time.perf_counter()
    for _ in dataset:
        pass
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000,
                        help="Fashion-MNIST training images before the cut (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="batch size (default: %(default)s)")
    args = parser.parse_args()

    data = load_dataset("fashion_mnist", subset=args.images)
    # Five classes cut to 1 in 20, as in the imbalance recipe.
    x, y = make_imbalanced(data.x_train, data.y_train, {c: 0.05 for c in (0, 2, 4, 6, 8)})
    uniform = np.full(10, 0.1)
    pipelines = {
        "shuffled (baseline)": _shuffled_pipeline(x, y, args.batch_size, 0)[0],
        "sampled_pipeline": sampled_pipeline(x, y, args.batch_size, 0, [uniform])[0],
        "class_balanced_sampler": class_balanced_sampler(
            tf.data.Dataset.from_tensor_slices((x, y)), uniform, seed=0,
        ).batch(args.batch_size).take(-(-len(y) // args.batch_size)),
    }
    for dataset in pipelines.values():
        read_all(dataset.take(2))  # traces the map functions before timing

    ratios = {name: [] for name in pipelines}
    times = {name: [] for name in pipelines}
    for _ in range(args.rounds):
        order = list(pipelines)
        random.shuffle(order)
        seconds = {name: read_all(pipelines[name]) for name in order}
        for name in pipelines:
            times[name].append(seconds[name])
            ratios[name].append(seconds[name] / seconds["shuffled (baseline)"])

    print(f"{len(y)} images per epoch, batch size {args.batch_size}, {args.rounds} rounds")
    print("| pipeline | fastest s | median ratio to baseline |")
    print("|---|---|---|")
    for name in pipelines:
        print(f"| {name} | {min(times[name]):.2f} | {statistics.median(ratios[name]):.2f}x |")


if __name__ == "__main__":
    main()

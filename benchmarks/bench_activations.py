"""Training-step time of one CNN with ReLU, Leaky ReLU, PReLU and RReLU, as ratios to ReLU.

Every activation runs in the same process on the same random 28x28x1 batches (the size of
Fashion-MNIST images). The models are timed in turns, in a new random order each round, so a
change in machine load affects all of them alike. The main figure is the median over rounds of each
round's ratio to ReLU, because a ratio within one round cancels slow changes in load. The
fastest round of each activation (the one least disturbed by other processes) is shown too.
Targets: PReLU at most 1.05x and RReLU at most 1.10x of ReLU.

Run:

    python benchmarks/bench_activations.py            # 1 to 3 minutes on 2 shared CPU cores
    python benchmarks/bench_activations.py --jit      # with XLA compilation, several minutes
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerastricks.layers import get_activation  # noqa: E402
from kerastricks.layers.rrelu import _compiled_factor_sampler  # noqa: E402

ACTIVATIONS = ("relu", "leaky_relu", "prelu", "rrelu")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch-size", type=int, default=64, help="images per step (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=5, help="steps timed per round (default: %(default)s)"
    )
    parser.add_argument(
        "--rounds", type=int, default=15,
        help="timed rounds per activation (default: %(default)s)",
    )
    parser.add_argument(
        "--width", type=int, default=32,
        help="filters of the first convolution (default: %(default)s)",
    )
    parser.add_argument("--jit", action="store_true", help="compile the training step with XLA")
    return parser


def build_cnn(activation, width):
    """Build a VGG-style CNN of three blocks of two 3x3 convolutions, each with `activation`."""
    inputs = keras.Input((28, 28, 1))
    x = inputs
    for block in range(3):
        for _ in range(2):
            x = keras.layers.Conv2D(width * 2**block, 3, padding="same")(x)
            x = get_activation(activation)(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def make_step(model, jit):
    """Return a compiled function that runs one training step on a batch."""
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=jit)
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        return loss

    return step


def time_random_draw(shape, rounds):
    """Return the fastest times (s) of ReLU and of the random draws on a tensor of `shape`.

    RReLU draws one random slope per element in every training step; this separates the cost
    of the draw from the rest of the step. The keys are `relu`, `uniform` (one
    `keras.random.uniform` draw, which RReLU uses on backends other than TensorFlow) and
    `hash` (RReLU's XLA-compiled hash generator, which also chooses between 1 and the slope).
    """
    seed_generator = keras.random.SeedGenerator(0)
    features = tf.random.normal(shape)
    key = tf.constant([1, 2], tf.int32)
    bounds = tf.constant([3.0, 8.0])
    sample_factors = _compiled_factor_sampler()
    functions = {
        "relu": tf.function(lambda x: keras.ops.relu(x)),
        "uniform": tf.function(
            lambda x: keras.random.uniform(keras.ops.shape(x), seed=seed_generator)
        ),
        "hash": tf.function(lambda x: sample_factors(x, key, bounds, True)),
    }
    fastest = {}
    for name, function in functions.items():
        function(features).numpy()
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            function(features).numpy()
            times.append(time.perf_counter() - start)
        fastest[name] = min(times)
    return fastest


def main(argv=None):
    args = build_parser().parse_args(argv)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 1, (args.batch_size, 28, 28, 1)).astype("float32"))
    labels = tf.constant(rng.integers(0, 10, args.batch_size))

    steps = {}
    for name in ACTIVATIONS:
        steps[name] = make_step(build_cnn(name, args.width), args.jit)
        for _ in range(3):  # Warm up: trace, compile and fill caches.
            steps[name](images, labels).numpy()

    times = {name: [] for name in ACTIVATIONS}
    order = list(ACTIVATIONS)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = steps[name](images, labels)
            loss.numpy()
            times[name].append((time.perf_counter() - start) / args.steps)

    fastest_relu = min(times["relu"])
    print(f"batch {args.batch_size}, width {args.width}, jit_compile={args.jit}, "
          f"{args.rounds} rounds of {args.steps} steps")
    print(f"{'activation':<12}{'median ratio':>14}{'fastest (ms)':>14}{'fastest ratio':>15}")
    for name in ACTIVATIONS:
        ratios = [time_ / relu for time_, relu in zip(times[name], times["relu"])]
        fastest = min(times[name])
        print(
            f"{name:<12}{statistics.median(ratios):>14.3f}{fastest * 1e3:>14.2f}"
            f"{fastest / fastest_relu:>15.3f}"
        )

    shape = (args.batch_size, 28, 28, args.width)
    fastest = time_random_draw(shape, args.rounds)
    print(f"on one {shape} activation tensor (fastest of {args.rounds}): "
          f"ReLU {fastest['relu'] * 1e3:.2f} ms, "
          f"keras.random.uniform {fastest['uniform'] * 1e3:.2f} ms, "
          f"RReLU hash draw {fastest['hash'] * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

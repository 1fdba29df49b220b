"""Training-step time of the all-tricks network in float32, bfloat16 and with XLA, as ratios.

The network is the one `kerastricks run all_tricks` trains (built by
`kerastricks.recipes.models.build_model` from the recipe), on random 28x28x1 batches. Three
variants of the same network take turns, in a new random order each round:

- `float32`: what the recipe runs, and the baseline of the ratios;
- `mixed_bfloat16`: Keras's mixed-precision policy, with bfloat16 computations and float32
  weights;
- `xla`: float32 with the training step compiled by XLA (`jit_compile=True`).

The main figure is the median over rounds of each round's ratio to float32. The script also
times a large float32 matrix product in the same rounds and reports the float32 step's
arithmetic rate as a fraction of the product's. The product is about the fastest float32
arithmetic TensorFlow runs on this CPU, so the fraction shows how much of the machine's
arithmetic speed the training step uses.

Run:

    python benchmarks/bench_training_speed.py      # about 30 seconds on 2 CPU cores
"""

import argparse
import dataclasses
import statistics
import time

from kerastricks.recipes.quiet import quiet_tensorflow

# Import TensorFlow without its start-up log lines, as the kerastricks command does.
quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerastricks.recipes.all_tricks import RECIPE  # noqa: E402
from kerastricks.recipes.models import build_model  # noqa: E402

VARIANTS = ("float32", "mixed_bfloat16", "xla")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch-size", type=int, default=RECIPE.batch_size,
        help="images per step (default: the recipe's, %(default)s)",
    )
    parser.add_argument(
        "--steps", type=int, default=3, help="steps timed per round (default: %(default)s)"
    )
    parser.add_argument(
        "--rounds", type=int, default=10, help="timed rounds per variant (default: %(default)s)"
    )
    parser.add_argument(
        "--width", type=int, default=RECIPE.width,
        help="filters of the first convolution (default: the recipe's, %(default)s)",
    )
    parser.add_argument(
        "--matrix-size", type=int, default=2048,
        help="side of the square float32 matrices of the reference product (default: %(default)s)",
    )
    return parser


def build_variant(variant, recipe):
    """Build and compile the recipe's network in `variant`."""
    policy = "mixed_bfloat16" if variant == "mixed_bfloat16" else "float32"
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(recipe, (28, 28, 1), 10)
    finally:
        # The policy applies to layers created while it is set, so restore the default.
        keras.mixed_precision.set_global_policy("float32")
    model.compile(
        optimizer=keras.optimizers.SGD(recipe.learning_rate, momentum=recipe.momentum, nesterov=True),
        loss="sparse_categorical_crossentropy",
        jit_compile=variant == "xla",
    )
    return model


def training_flops(model, batch_size):
    """Return an estimate of the floating-point operations of one training step.

    Each convolution and dense layer does `2 * inputs * outputs` operations per output position
    in the forward pass. The backward pass costs about twice the forward pass (the input and the
    weight gradients), so a step is estimated at three forward passes. Pooling, normalization
    and activations are left out.
    """
    forward = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel_height, kernel_width, channels_in, channels_out = layer.kernel.shape
            height, width = layer.output.shape[1:3]
            forward += 2 * height * width * kernel_height * kernel_width * channels_in * channels_out
        elif isinstance(layer, keras.layers.Dense):
            forward += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return 3 * forward * batch_size


def main(argv=None):
    args = build_parser().parse_args(argv)
    recipe = dataclasses.replace(RECIPE, width=args.width)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (args.batch_size, 28, 28, 1)).astype("float32")
    labels = rng.integers(0, 10, args.batch_size)

    models, steps = {}, {}
    for variant in VARIANTS:
        models[variant] = build_variant(variant, recipe)
        steps[variant] = models[variant].train_on_batch
        for _ in range(3):  # Warm up: trace, compile and fill caches.
            steps[variant](images, labels)

    size = args.matrix_size
    left = tf.random.normal((size, size))
    right = tf.random.normal((size, size))
    product = tf.function(lambda a, b: tf.reduce_sum(tf.linalg.matmul(a, b)))
    product(left, right).numpy()
    steps["matmul"] = lambda *_: product(left, right).numpy()

    times = {name: [] for name in steps}
    order = list(steps)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[name](images, labels)
            times[name].append((time.perf_counter() - start) / args.steps)

    print(f"all_tricks network, width {args.width}, batch {args.batch_size}, "
          f"{args.rounds} rounds of {args.steps} steps")
    print(f"{'variant':<16}{'median ratio':>14}{'fastest step (ms)':>19}")
    for variant in VARIANTS:
        ratios = [time_ / base for time_, base in zip(times[variant], times["float32"])]
        print(f"{variant:<16}{statistics.median(ratios):>14.3f}{min(times[variant]) * 1e3:>19.1f}")

    step_rate = training_flops(models["float32"], args.batch_size) / min(times["float32"])
    matmul_rate = 2 * size**3 / min(times["matmul"])
    print(f"float32 step: {step_rate / 1e9:.0f} GFLOP/s (estimated operations / fastest step); "
          f"{size}x{size} matrix product: {matmul_rate / 1e9:.0f} GFLOP/s; "
          f"ratio {step_rate / matmul_rate:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

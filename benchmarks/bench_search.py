"""Tuner overhead of a trick search: the time a trial spends outside `model.fit`, as a ratio to fit.

A small random search runs in this process with the real `kerastricks search` machinery
(`create_tuner` and `run_search`), and the benchmark splits its wall-clock time into:

- fit: the `model.fit` calls, which include Keras's TensorBoard, HParams and keras-tuner's
  best-epoch checkpoint callbacks, since they run inside `fit`;
- build: `HyperModel.build` (model construction, compilation, pre-processing adaptation);
- tuner: everything else (oracle decisions, trial and oracle files, `clear_session`, results).

The overhead ratio is (build + tuner) / fit, and the keras-tuner part alone is tuner / fit.
Target: at most 5% (0.05).

Run:

    python benchmarks/bench_search.py                          # about 1 minute on 2 CPU cores
    python benchmarks/bench_search.py --dataset fashion_mnist --subset 6000 --epochs 2
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerastricks.recipes.data import load_dataset  # noqa: E402
from kerastricks.recipes.search import create_tuner, run_search  # noqa: E402
from kerastricks.recipes.search_space import SearchSpace  # noqa: E402
from kerastricks.recipes.spec import Recipe  # noqa: E402

SPACE = {
    "activation": ["relu", "leaky_relu", "elu"],
    "activation_options.negative_slope": {"values": [0.1, 0.3], "when": {"activation": "leaky_relu"}},
    "dropout": {"min": 0.0, "max": 0.4, "step": 0.1},
    "learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"},
}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", help="data set (default: %(default)s)")
    parser.add_argument("--subset", type=int, help="training images to use (default: all)")
    parser.add_argument("--trials", type=int, default=4, help="trials of the search (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (default: %(default)s)")
    parser.add_argument("--width", type=int, default=16, help="filters of the first block (default: %(default)s)")
    return parser


def timed_build(hypermodel, seconds):
    """Wrap `hypermodel.build` so each call adds its duration to the list `seconds`."""
    original = hypermodel.build

    def build(hp, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(hp, *args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    hypermodel.build = build


def main(argv=None):
    args = build_parser().parse_args(argv)
    fields = {field for field in Recipe.__dataclass_fields__}
    options = {"diagnostics": False} if "diagnostics" in fields else {}
    base = Recipe(dataset=args.dataset, subset=args.subset, width=args.width, depth=2,
                  dense_units=64, **options)
    data = load_dataset(base.dataset, subset=base.subset, batch_size=base.batch_size, seed=base.seed)
    space = SearchSpace(SPACE, base=base)

    with tempfile.TemporaryDirectory() as folder:
        tuner = create_tuner(space, data, Path(folder) / "project", tuner="random",
                             max_trials=args.trials, max_epochs=args.epochs)
        tuner.oracle.verbose = 0
        build_seconds = []
        timed_build(tuner.hypermodel, build_seconds)
        start = time.perf_counter()
        rows = run_search(tuner)
        total = time.perf_counter() - start

    fit = sum(tuner.hypermodel.fit_seconds)
    build = sum(build_seconds)
    bookkeeping = total - fit - build
    print(f"{args.dataset}: {len(data.y_train)} training images, {len(rows)} trials of {args.epochs} "
          f"epochs, width {args.width}")
    print(f"  search {total:8.2f} s   fit {fit:8.2f} s   build {build:6.2f} s   tuner {bookkeeping:6.2f} s")
    print(f"  per trial: fit {fit / len(rows):.2f} s, outside fit {(total - fit) / len(rows):.3f} s")
    print(f"  overhead (build + tuner) / fit: {(total - fit) / fit:.3f}   (target <= 0.05)")
    print(f"  keras-tuner alone, tuner / fit: {bookkeeping / fit:.3f}")


if __name__ == "__main__":
    main()

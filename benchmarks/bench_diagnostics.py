"""Overhead of the default diagnostics on one epoch of the baseline recipe, as a ratio.

The baseline recipe trains for one epoch on Fashion-MNIST with `diagnostics=True` (activation
statistics and update ratios on a 256-image probe batch, gradient norms, five figures drawn at
the end, the text diagnosis) and with `diagnostics=False`, in turns, in one process. The time is
`model.fit`'s, as `metrics.json` records it (`train_seconds`), so it includes the figures drawn
in `on_train_end` but not the test evaluation or the model save, which do not depend on the
diagnostics. A short warm-up run first pays the one-time costs of the process. Target: at most
1.05x.

Two ratios are printed. The paired ratio divides the epoch times with and without diagnostics;
on a shared machine a change in load between the two runs moves it by several percent either
way. The in-run ratio times the diagnostics callbacks' own hooks inside the run with diagnostics
and divides that run's time by the time without them, so load drift cancels out; it leaves out
indirect costs such as cache pollution.

Run:

    python benchmarks/bench_diagnostics.py             # about 8 minutes on 2 CPU cores
    python benchmarks/bench_diagnostics.py --subset 5000 --rounds 1   # a quick check
"""

import argparse
import functools
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerastricks.recipes import training  # noqa: E402
from kerastricks.recipes.data import load_dataset  # noqa: E402
from kerastricks.recipes.registry import get_recipe  # noqa: E402

HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
         "on_train_batch_begin", "on_train_batch_end")


class HookTimer:
    """Accumulate the seconds spent in the hooks of the callbacks that `build_callbacks` returns."""

    def __init__(self):
        self.seconds = 0.0
        self._build_callbacks = training.build_callbacks
        training.build_callbacks = self._timed_build_callbacks

    def _timed_build_callbacks(self, recipe, data, run_dir):
        callbacks = self._build_callbacks(recipe, data, run_dir)
        for callback in callbacks:
            for name in HOOKS:
                setattr(callback, name, self._timed(getattr(callback, name)))
        return callbacks

    def _timed(self, hook):
        @functools.wraps(hook)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist",
                        help="data set of the runs (default: %(default)s)")
    parser.add_argument("--subset", type=int, default=None,
                        help="train on at most this many images; default: all")
    parser.add_argument("--rounds", type=int, default=2,
                        help="timed epochs with and without diagnostics (default: %(default)s)")
    return parser


def time_epoch(recipe, data, diagnostics, timer):
    """Train one epoch in a fresh run folder; return `model.fit`'s and the hooks' seconds."""
    timer.seconds = 0.0
    with tempfile.TemporaryDirectory() as run_dir:
        metrics = training.train(recipe.replace(diagnostics=diagnostics), data, run_dir, verbose=0)
    return metrics["train_seconds"], timer.seconds


def main(argv=None):
    args = build_parser().parse_args(argv)
    recipe = get_recipe("baseline").replace(dataset=args.dataset, epochs=1, subset=args.subset)
    data = load_dataset(recipe.dataset, subset=recipe.subset,
                        validation_split=recipe.validation_split,
                        batch_size=recipe.batch_size, seed=recipe.seed)
    print(f"baseline recipe, 1 epoch on {data.name}: {len(data.y_train)} training and "
          f"{len(data.y_validation)} validation images")

    warm_up = load_dataset(recipe.dataset, subset=2000, validation_split=recipe.validation_split,
                           batch_size=recipe.batch_size, seed=recipe.seed)
    timer = HookTimer()
    time_epoch(recipe.replace(subset=2000), warm_up, True, timer)

    times = {False: [], True: []}
    in_run_ratios = []
    for round_index in range(args.rounds):
        # Alternate the order, so a drift in machine load does not favour one side.
        order = (False, True) if round_index % 2 == 0 else (True, False)
        for diagnostics in order:
            seconds, hook_seconds = time_epoch(recipe, data, diagnostics, timer)
            times[diagnostics].append(seconds)
            line = f"  round {round_index + 1}, diagnostics={str(diagnostics).lower():<5} {seconds:8.2f} s"
            if diagnostics:
                in_run_ratios.append(seconds / (seconds - hook_seconds))
                line += f"  (diagnostics hooks: {hook_seconds:.2f} s)"
            print(line)

    without, with_ = min(times[False]), min(times[True])
    median_ratio = statistics.median(times[True]) / statistics.median(times[False])
    print(f"fastest epoch without diagnostics: {without:.2f} s, with: {with_:.2f} s")
    print(f"paired ratio (fastest): {with_ / without:.3f}x   paired ratio (median): "
          f"{median_ratio:.3f}x")
    print(f"in-run ratio (median): {statistics.median(in_run_ratios):.3f}x   target: <= 1.05x")


if __name__ == "__main__":
    main()

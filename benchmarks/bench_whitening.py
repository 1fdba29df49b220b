"""Time and peak memory of `Whitening.adapt` against scikit-learn's `PCA(whiten=True).fit`.

Both fit all 60,000 Fashion-MNIST training images (784 features, float32 in [0, 1]) in the
same process, in turns, round after round, so that a change in machine load affects both
alike. The ratio divides the layer's time by scikit-learn's, for the fastest round and for
the median round; the target is at most 1.0x. Peak memory is the largest NumPy allocation
that `tracemalloc` records during one fit, on top of the images already in memory.

Run:

    python benchmarks/bench_whitening.py                 # about 2 minutes on 2 CPU cores
    python benchmarks/bench_whitening.py --rounds 1      # a quick look
"""

import argparse
import os
import statistics
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from kerastricks.layers import Whitening  # noqa: E402
from kerastricks.recipes.idx import load_idx_folder  # noqa: E402

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=FASHION_MNIST,
                        help="folder with the Fashion-MNIST IDX files (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed rounds of each fit (default: %(default)s)")
    parser.add_argument("--n-components", type=int, default=None,
                        help="also compare fits that keep only this many components "
                             "(default: only the fits with all components)")
    return parser


def load_images(folder):
    """Return the 60,000 training images as a float32 (60000, 784) array in [0, 1]."""
    (x_train, _), _ = load_idx_folder(folder)
    return (x_train.reshape(len(x_train), -1) / np.float32(255)).astype(np.float32)


def measure(fit):
    """Run `fit()` and return (seconds, peak MiB allocated during it)."""
    tracemalloc.start()
    start = time.perf_counter()
    fit()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20


def compare(images, method, n_components, rounds):
    """Time both fits in turns and return their (times, peak memories)."""
    fits = {
        "Whitening.adapt": lambda: Whitening(method, n_components=n_components).adapt(images),
        "PCA(whiten=True).fit": lambda: PCA(n_components=n_components, whiten=True).fit(images),
    }
    times = {name: [] for name in fits}
    peaks = {name: 0.0 for name in fits}
    for _ in range(rounds):
        for name, fit in fits.items():
            seconds, peak = measure(fit)
            times[name].append(seconds)
            peaks[name] = max(peaks[name], peak)
    return times, peaks


def report(title, times, peaks):
    ours, theirs = times["Whitening.adapt"], times["PCA(whiten=True).fit"]
    print(f"\n{title}")
    print(f"{'fit':24s} {'fastest s':>10s} {'median s':>10s} {'peak MiB':>10s}")
    for name in times:
        print(
            f"{name:24s} {min(times[name]):10.2f} {statistics.median(times[name]):10.2f} "
            f"{peaks[name]:10.0f}"
        )
    print(
        f"ratio (Whitening / scikit-learn): fastest {min(ours) / min(theirs):.2f}x, "
        f"median {statistics.median(ours) / statistics.median(theirs):.2f}x (target <= 1.0x)"
    )


def main(argv=None):
    args = build_parser().parse_args(argv)
    images = load_images(args.data)
    print(f"Fashion-MNIST training images: {images.shape}, {images.nbytes / 2**20:.0f} MiB")

    times, peaks = compare(images, "pca", None, args.rounds)
    report("PCA whitening, all 784 components", times, peaks)
    if args.n_components:
        times, peaks = compare(images, "pca", args.n_components, args.rounds)
        report(f"PCA whitening, {args.n_components} components", times, peaks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

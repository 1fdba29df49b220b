"""Time and peak memory of `Whitening.adapt` against scikit-learn's `PCA(whiten=True).fit`.

Both fit all 60,000 Fashion-MNIST training images (784 features, float32 in [0, 1]) in the
same process, in turns, round after round, with the order swapped every round, so that a
change in machine load affects both alike. One untimed round of each comes first. Each
round's ratio divides the layer's time by scikit-learn's, and the script reports the median
of those ratios and the ratio of the fastest rounds. The target is at most 1.0x. Wall-clock
and process CPU time are both reported: with `--threads 1`, CPU time barely depends on other
jobs, while wall-clock time on a loaded machine can vary tenfold between rounds. Peak memory
is the largest allocation that `tracemalloc` records during one more, untimed, fit of each,
on top of the images already in memory. It counts NumPy's arrays (LAPACK workspaces
included) but not TensorFlow's variables or OpenBLAS's internal buffers.

Run:

    python benchmarks/bench_whitening.py                 # under a minute on 2 idle CPU cores
    python benchmarks/bench_whitening.py --rounds 1      # a quick look
    python benchmarks/bench_whitening.py --threads 1     # steadier on a loaded machine
    python benchmarks/bench_whitening.py --accuracy      # also the eigenvalue errors
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
from threadpoolctl import threadpool_limits  # noqa: E402

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
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS threads for both fits (default: the BLAS library's own)")
    parser.add_argument("--accuracy", action="store_true",
                        help="also compare both fits' eigenvalues with a float64 reference "
                             "(default: off)")
    return parser


def load_images(folder):
    """Return the 60,000 training images as a float32 (60000, 784) array in [0, 1]."""
    (x_train, _), _ = load_idx_folder(folder)
    return (x_train.reshape(len(x_train), -1) / np.float32(255)).astype(np.float32)


def measure_time(fit):
    """Run `fit()` and return its (wall-clock seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fit()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_peak(fit):
    """Run `fit()` and return the peak MiB that `tracemalloc` records during it."""
    tracemalloc.start()
    fit()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def compare(images, method, n_components, rounds):
    """Time both fits in turns and return their times per round and peak memories.

    The times are `{fit name: {"wall": [seconds per round], "cpu": [...]}}`.
    """
    fits = {
        "Whitening.adapt": lambda: Whitening(method, n_components=n_components).adapt(images),
        "PCA(whiten=True).fit": lambda: PCA(n_components=n_components, whiten=True).fit(images),
    }
    for fit in fits.values():
        fit()
    times = {name: {"wall": [], "cpu": []} for name in fits}
    for round_index in range(rounds):
        names = list(fits) if round_index % 2 == 0 else list(fits)[::-1]
        for name in names:
            wall, cpu = measure_time(fits[name])
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
    peaks = {name: measure_peak(fit) for name, fit in fits.items()}
    return times, peaks


def report(title, times, peaks):
    ours, theirs = times["Whitening.adapt"], times["PCA(whiten=True).fit"]
    print(f"\n{title}")
    print(f"{'fit':24s} {'fastest s':>10s} {'median s':>10s} {'median cpu s':>13s} "
          f"{'peak MiB':>9s}")
    for name, clocks in times.items():
        print(
            f"{name:24s} {min(clocks['wall']):10.3f} {statistics.median(clocks['wall']):10.3f} "
            f"{statistics.median(clocks['cpu']):13.3f} {peaks[name]:9.1f}"
        )
    for clock in ("wall", "cpu"):
        ratios = [a / b for a, b in zip(ours[clock], theirs[clock])]
        print(
            f"ratio (Whitening / scikit-learn), {clock:4s}: median of rounds "
            f"{statistics.median(ratios):.3f}x, fastest rounds "
            f"{min(ours[clock]) / min(theirs[clock]):.3f}x (target <= 1.0x)"
        )


def eigenvalue_errors(images):
    """Return each fit's largest relative eigenvalue error against a float64 reference.

    The reference is the eigendecomposition of the float64 covariance of the centred
    images. Eigenvalues below 1e-6 of the largest are left out, because float32 data cannot
    resolve them. scikit-learn's variances divide by n - 1 and are rescaled to n.
    """
    count = len(images)
    centred = images.astype(np.float64)
    centred -= centred.mean(axis=0)
    expected = np.linalg.eigvalsh(centred.T @ centred / count)[::-1]
    del centred
    resolved = expected > 1e-6 * expected[0]

    layer = Whitening("pca")
    layer.adapt(images)
    ours = np.asarray(layer.eigenvalues.numpy(), dtype=np.float64)
    theirs = PCA(whiten=True).fit(images).explained_variance_ * (count - 1) / count
    return {
        name: float(
            np.max(np.abs(values[resolved] - expected[resolved]) / expected[resolved])
        )
        for name, values in (("Whitening.adapt", ours), ("PCA(whiten=True).fit", theirs))
    }


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        threadpool_limits(args.threads)
    images = load_images(args.data)
    print(f"Fashion-MNIST training images: {images.shape}, {images.nbytes / 2**20:.0f} MiB")

    times, peaks = compare(images, "pca", None, args.rounds)
    report("PCA whitening, all 784 components", times, peaks)
    if args.n_components:
        times, peaks = compare(images, "pca", args.n_components, args.rounds)
        report(f"PCA whitening, {args.n_components} components", times, peaks)
    if args.accuracy:
        print("\nlargest relative eigenvalue error against float64 (eigenvalues above 1e-6 of "
              "the largest)")
        for name, error in eigenvalue_errors(images).items():
            print(f"{name:24s} {error:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

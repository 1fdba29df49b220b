"""An independent IDX writer for tests: builds the files the loader must read."""

import gzip
import struct

import numpy as np


def write_idx(path, array, compress=True):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    payload = header + array.tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as stream:
        stream.write(payload)


def write_fashion_like(folder, train_count=60, test_count=20, seed=0, compress=True):
    """Write four IDX files of random 28x28 images with balanced labels; return the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if compress else ""
    arrays = {}
    for part, count in (("train", train_count), ("t10k", test_count)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = np.arange(count, dtype=np.uint8) % 10
        write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", labels, compress)
        arrays[part] = (images, labels)
    return arrays

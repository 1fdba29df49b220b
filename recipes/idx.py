"""Readers for the IDX files that MNIST and Fashion-MNIST ship in.

An IDX file is a big-endian header (two zero bytes, a type code, the number of dimensions, then
one 32-bit size per dimension) followed by the raw values. Only unsigned bytes (type 0x08) occur in
these data sets.
"""

import gzip
from pathlib import Path

import numpy as np

_UNSIGNED_BYTE = 0x08
IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def find_idx_file(folder, stem):
    """Return the path of `stem` or `stem.gz` in `folder`, or `None` if neither exists."""
    folder = Path(folder)
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path):
    """Read one IDX file (optionally gzip-compressed) into a uint8 array.

    Raises:
        ValueError: for a file that is not an unsigned-byte IDX file or is truncated.
    """
    from kerastricks.recipes.data import DataError

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            data = stream.read()
    except (OSError, EOFError) as error:
        raise DataError(f"Cannot read IDX file {path}: {error}. Reinstall or re-download it.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UNSIGNED_BYTE:
        raise DataError(
            f"{path} is not an unsigned-byte IDX file (bad header). Reinstall or re-download it."
        )
    ndim = data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"IDX file {path} is truncated inside its header. Reinstall or re-download it.")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header_size != expected:
        raise DataError(
            f"IDX file {path} contains {len(data) - header_size} values, but its header declares "
            f"shape {shape} ({expected} values), so it is truncated or corrupt. "
            f"Reinstall or re-download it."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def load_idx_folder(folder):
    """Read the four standard IDX files of a folder as ((x_train, y_train), (x_test, y_test))."""
    from kerastricks.recipes.data import DataError

    arrays = {}
    for key, stem in IDX_STEMS.items():
        path = find_idx_file(folder, stem)
        if path is None:
            raise DataError(f"IDX file {stem}(.gz) is missing from {folder}.")
        arrays[key] = read_idx(path)
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"The {part} IDX files in {folder} do not match: images {images.shape}, "
                f"labels {labels.shape}. Reinstall or re-download them."
            )
    return (arrays["train_images"], arrays["train_labels"]), (
        arrays["test_images"], arrays["test_labels"]
    )

"""Shared pytest fixtures: quiet TensorFlow and the Fashion-MNIST files."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

FASHION_MNIST_FOLDER = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def fashion_mnist_folder():
    """The Debian package's Fashion-MNIST folder; skipped where absent, except in CI."""
    if not (FASHION_MNIST_FOLDER / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get("CI"):
            pytest.fail("CI must install dataset-fashion-mnist, but its files are missing")
        pytest.skip("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")
    return FASHION_MNIST_FOLDER


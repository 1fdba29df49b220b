"""Small image folders written with Pillow, for the folder loader tests."""

from pathlib import Path

import numpy as np


def write_png_folder(root, class_sizes, size=(12, 10), mode="L", seed=0):
    """Write a folder of class subfolders of random PNG images; return the root."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for class_name, count in class_sizes.items():
        folder = Path(root) / class_name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            channels = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            pixels = rng.integers(0, 256, channels, dtype=np.uint8)
            Image.fromarray(pixels, mode=None).save(folder / f"{index}.png")
    return Path(root)

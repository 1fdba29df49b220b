"""A folder of class subfolders of images, read into arrays with Pillow.

Two layouts are accepted: `PATH/train/<class>/...` with `PATH/test/<class>/...`, or
`PATH/<class>/...`, from which a stratified fifth is held out as the test split.
"""

from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def load_image_folder(path):
    """Read a folder of class subfolders into ((x_train, y_train), (x_test, y_test), class_names).

    Images of mixed sizes are rejected with the sizes found; mixed grayscale and colour images are
    all converted to RGB.
    """
    from kerastricks.recipes.data import DataError

    root = Path(path)
    if not path:
        raise DataError("folder: needs a path, for example folder:/data/flowers.")
    if not root.is_dir():
        raise DataError(f"Image folder not found: {root}.")
    if (root / "train").is_dir() and (root / "test").is_dir():
        class_names = _class_names(root / "train")
        train_files, train_labels = _list_images(root / "train", class_names)
        test_files, test_labels = _list_images(root / "test", class_names)
    else:
        class_names = _class_names(root)
        files, labels = _list_images(root, class_names)
        try:
            train_files, test_files, train_labels, test_labels = train_test_split(
                files, labels, test_size=0.2, stratify=labels, random_state=0
            )
        except ValueError:
            raise DataError(
                f"Image folder {root} has too few images per class to hold out a test split; "
                f"each class needs at least 5 images."
            ) from None
    images = _read_images(list(train_files) + list(test_files))
    x_train, x_test = images[: len(train_files)], images[len(train_files):]
    return (x_train, np.asarray(train_labels)), (x_test, np.asarray(test_labels)), class_names


def _class_names(folder):
    from kerastricks.recipes.data import DataError

    names = sorted(entry.name for entry in folder.iterdir()
                   if entry.is_dir() and not entry.name.startswith("."))
    if len(names) < 2:
        raise DataError(
            f"Image folder {folder} must contain one subfolder per class (at least 2). "
            f"Found: {names}."
        )
    return names


def _list_images(folder, class_names):
    from kerastricks.recipes.data import DataError

    files, labels = [], []
    for label, name in enumerate(class_names):
        class_folder = folder / name
        if not class_folder.is_dir():
            raise DataError(f"Class folder {class_folder} is missing; every split needs all classes.")
        entries = sorted(entry for entry in class_folder.iterdir()
                         if entry.is_file() and not entry.name.startswith("."))
        for entry in entries:
            if entry.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(
                    f"{entry} is not an image file (expected one of {list(IMAGE_EXTENSIONS)}). "
                    f"Move it out of the class folder."
                )
        if not entries:
            raise DataError(f"Class folder {class_folder} contains no images.")
        files += entries
        labels += [label] * len(entries)
    return files, labels


def _read_images(files):
    from PIL import Image, UnidentifiedImageError

    from kerastricks.recipes.data import DataError

    images, sizes, modes = [], set(), set()
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                sizes.add(image.size)
                modes.add("L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB")
                images.append(image.copy())
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise DataError(f"{file} is not a readable image ({error}). Remove or replace it.") from None
    if len(sizes) > 1:
        raise DataError(
            f"Images have different sizes: {sorted(sizes)[:4]} (width, height). "
            f"Resize them to one size first."
        )
    mode = "RGB" if "RGB" in modes else "L"
    arrays = [np.asarray(image.convert(mode), dtype=np.uint8) for image in images]
    stacked = np.stack(arrays)
    if stacked.ndim == 3:
        stacked = stacked[..., np.newaxis]
    return stacked

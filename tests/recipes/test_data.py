import gzip
import urllib.error

import numpy as np
import pytest

from kerastricks.recipes import data as data_module
from kerastricks.recipes import DataError, load_dataset
from tests.recipes.idx_writer import write_fashion_like, write_idx
from tests.recipes.image_files import write_png_folder


def _labels_of(dataset):
    return np.concatenate([labels.numpy() for _, labels in dataset])


class TestDigits:
    def test_shapes_and_range(self):
        splits = load_dataset("digits", batch_size=32)
        assert splits.input_shape == (8, 8, 1)
        assert splits.num_classes == 10
        assert splits.x_train.dtype == np.float32
        assert splits.x_train.min() >= 0.0
        assert splits.x_train.max() <= 1.0
        total = len(splits.y_train) + len(splits.y_validation) + len(splits.y_test)
        assert total == 1797

    def test_pipelines_are_batched_and_complete(self):
        splits = load_dataset("digits", batch_size=50)
        images, labels = next(iter(splits.train))
        assert images.shape == (50, 8, 8, 1)
        assert labels.dtype.name == "int32"
        assert len(_labels_of(splits.validation)) == len(splits.y_validation)
        np.testing.assert_array_equal(_labels_of(splits.test), splits.y_test)

    def test_validation_split_is_stratified(self):
        splits = load_dataset("digits", validation_split=0.2)
        train_share = np.bincount(splits.y_train) / len(splits.y_train)
        validation_share = np.bincount(splits.y_validation) / len(splits.y_validation)
        np.testing.assert_allclose(validation_share, train_share, atol=0.01)
        assert len(splits.y_validation) == pytest.approx(0.2 * (len(splits.y_train) + len(splits.y_validation)), abs=1)

    def test_validation_comes_from_training_images(self):
        full = load_dataset("digits")
        pool = {image.tobytes() for image in np.concatenate([full.x_train, full.x_validation])}
        test_images = {image.tobytes() for image in full.x_test}
        assert all(image.tobytes() in pool for image in full.x_validation)
        assert not any(image.tobytes() in test_images for image in full.x_validation)

    def test_split_is_seeded(self):
        first = load_dataset("digits", seed=3)
        second = load_dataset("digits", seed=3)
        other = load_dataset("digits", seed=4)
        np.testing.assert_array_equal(first.x_validation, second.x_validation)
        assert not np.array_equal(first.x_validation, other.x_validation)

    def test_subset_is_stratified(self):
        splits = load_dataset("digits", subset=300, validation_split=0.1)
        assert len(splits.y_train) + len(splits.y_validation) == 300
        assert np.bincount(splits.y_train).min() >= 20
        assert len(splits.y_test) < 360


class TestFashionMnist:
    def test_debian_files_subset(self, fashion_mnist_folder):
        splits = load_dataset("fashion_mnist", subset=1000)
        assert splits.input_shape == (28, 28, 1)
        assert splits.class_names[0] == "T-shirt/top"
        assert splits.class_names[9] == "Ankle boot"
        assert len(splits.y_train) + len(splits.y_validation) == 1000
        assert len(splits.y_test) == round(10000 * 1000 / 60000)

    def test_pixels_match_raw_idx(self, fashion_mnist_folder):
        # An independent parse: the header is 16 bytes for 3-dimensional image files.
        with gzip.open(fashion_mnist_folder / "t10k-images-idx3-ubyte.gz", "rb") as stream:
            raw = np.frombuffer(stream.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        with gzip.open(fashion_mnist_folder / "t10k-labels-idx1-ubyte.gz", "rb") as stream:
            raw_labels = np.frombuffer(stream.read(), np.uint8, offset=8)
        (_, _), (x_test, y_test), _ = data_module._load_arrays("fashion_mnist", None)
        assert x_test.shape == (10000, 28, 28, 1)
        np.testing.assert_allclose(x_test[..., 0], raw / 255.0, atol=1e-7)
        np.testing.assert_array_equal(y_test, raw_labels)

    def test_explicit_path_comes_first(self, tmp_path, monkeypatch):
        arrays = write_fashion_like(tmp_path / "explicit", train_count=60)
        write_fashion_like(tmp_path / "from_env", train_count=80)
        monkeypatch.setenv("KERASTRICKS_DATA", str(tmp_path / "from_env"))
        splits = load_dataset("fashion_mnist", path=tmp_path / "explicit", validation_split=0.5)
        assert len(splits.y_train) + len(splits.y_validation) == 60
        np.testing.assert_allclose(np.sort(splits.x_test.ravel()),
                                   np.sort(arrays["t10k"][0].ravel() / 255.0), atol=1e-7)

    def test_environment_folder_before_system(self, tmp_path, monkeypatch):
        write_fashion_like(tmp_path / "fashion-mnist", train_count=80, compress=False)
        monkeypatch.setenv("KERASTRICKS_DATA", str(tmp_path))
        splits = load_dataset("fashion_mnist", validation_split=0.5)
        assert len(splits.y_train) + len(splits.y_validation) == 80

    def test_truncated_idx_file(self, tmp_path, monkeypatch):
        write_fashion_like(tmp_path, train_count=60)
        images = np.zeros((60, 28, 28), np.uint8)
        write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
        with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "rb") as stream:
            payload = stream.read()
        with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as stream:
            stream.write(payload[:-100])
        with pytest.raises(DataError, match="truncated or corrupt"):
            load_dataset("fashion_mnist", path=tmp_path)

    def test_bad_header(self, tmp_path):
        write_fashion_like(tmp_path, train_count=60, compress=False)
        (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"not an idx file at all")
        with pytest.raises(DataError, match="not an unsigned-byte IDX file"):
            load_dataset("fashion_mnist", path=tmp_path)

    def test_corrupt_gzip(self, tmp_path):
        write_fashion_like(tmp_path, train_count=60)
        (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b broken")
        with pytest.raises(DataError, match="Cannot read IDX file"):
            load_dataset("fashion_mnist", path=tmp_path)

    def test_absent_offline_says_how_to_get_it(self, tmp_path, monkeypatch):
        import keras

        def offline_download():
            raise urllib.error.URLError("no network")

        monkeypatch.delenv("KERASTRICKS_DATA", raising=False)
        monkeypatch.setattr(data_module, "FASHION_MNIST_SYSTEM_FOLDER", tmp_path / "missing")
        monkeypatch.setattr(data_module.Path, "home", lambda: tmp_path)
        # Stands in for the download failing offline, so the test never reaches the network.
        monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline_download)
        with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
            load_dataset("fashion_mnist")

    def test_missing_explicit_path(self, tmp_path):
        with pytest.raises(DataError, match="folder not found"):
            load_dataset("fashion_mnist", path=tmp_path / "nowhere")


class TestImageFolder:
    def test_flat_layout_holds_out_test(self, tmp_path):
        root = write_png_folder(tmp_path / "images", {"cats": 20, "dogs": 30})
        splits = load_dataset(f"folder:{root}", validation_split=0.25)
        assert splits.class_names == ["cats", "dogs"]
        assert splits.input_shape == (10, 12, 1)
        assert len(splits.y_test) == 10
        assert len(splits.y_train) + len(splits.y_validation) == 40

    def test_train_test_layout(self, tmp_path):
        write_png_folder(tmp_path / "train", {"a": 10, "b": 10})
        write_png_folder(tmp_path / "test", {"a": 3, "b": 4}, seed=1)
        splits = load_dataset(f"folder:{tmp_path}", validation_split=0.2)
        assert sorted(np.bincount(splits.y_test)) == [3, 4]

    def test_pixel_values_scaled(self, tmp_path):
        from PIL import Image

        root = write_png_folder(tmp_path / "images", {"a": 5, "b": 5})
        first = np.asarray(Image.open(root / "a" / "0.png"), np.float32) / 255.0
        (x_train, _), (x_test, _), _ = data_module._load_arrays(f"folder:{root}", None)
        pool = np.concatenate([x_train, x_test])[..., 0]
        assert any(np.allclose(image, first) for image in pool)

    def test_mixed_gray_and_rgb_become_rgb(self, tmp_path):
        write_png_folder(tmp_path / "images", {"a": 6}, mode="L")
        write_png_folder(tmp_path / "images", {"b": 6}, mode="RGB")
        splits = load_dataset(f"folder:{tmp_path / 'images'}", validation_split=0.25)
        assert splits.input_shape == (10, 12, 3)

    @pytest.mark.parametrize(
        "case, message",
        [
            ("missing", "Image folder not found"),
            ("empty_class", "contains no images"),
            ("no_classes", "one subfolder per class"),
            ("text_file", "is not an image file"),
            ("corrupt_png", "is not a readable image"),
            ("mixed_sizes", "different sizes"),
        ],
    )
    def test_bad_folders(self, tmp_path, case, message):
        root = tmp_path / "images"
        if case != "missing":
            root.mkdir()
        if case in ("empty_class", "text_file", "corrupt_png", "mixed_sizes"):
            write_png_folder(root, {"a": 6, "b": 6})
        if case == "empty_class":
            (root / "c").mkdir()
        if case == "text_file":
            (root / "a" / "notes.txt").write_text("labels were checked")
        if case == "corrupt_png":
            (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        if case == "mixed_sizes":
            write_png_folder(root, {"a": 1}, size=(20, 20), seed=5)
            (root / "a" / "0.png").rename(root / "a" / "large.png")
        with pytest.raises(DataError, match=message):
            load_dataset(f"folder:{root}")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "imagenet"}, "Unknown data set 'imagenet'"),
        ({"name": "digits", "validation_split": 1.0}, "validation_split"),
        ({"name": "digits", "subset": 0}, "subset"),
        ({"name": "digits", "batch_size": 0}, "batch_size"),
        ({"name": "digits", "subset": 12}, "stratified subset"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(DataError, match=message):
        load_dataset(**kwargs)


def test_unknown_name_lists_valid_names():
    with pytest.raises(DataError) as error:
        load_dataset("fashion-mnist")
    assert "fashion_mnist" in str(error.value)
    assert "folder:PATH" in str(error.value)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_keras_datasets_offline_message(name, monkeypatch):
    import keras

    def offline_download():
        raise urllib.error.URLError("no network")

    # Stands in for the download failing offline, so the test never reaches the network.
    monkeypatch.setattr(getattr(keras.datasets, name), "load_data", offline_download)
    with pytest.raises(DataError, match=f"Downloading {name} through keras.datasets failed"):
        load_dataset(name)


def test_keras_dataset_arrays_converted(monkeypatch):
    import keras

    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    test_images = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    # keras.datasets.cifar10 returns labels shaped (n, 1); these arrays follow that layout.
    train_labels = (np.arange(60) % 10).reshape(-1, 1).astype(np.uint8)
    test_labels = (np.arange(20) % 10).reshape(-1, 1).astype(np.uint8)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data",
                        lambda: ((train_images, train_labels), (test_images, test_labels)))
    splits = load_dataset("cifar10", validation_split=0.5)
    assert splits.input_shape == (32, 32, 3)
    assert splits.class_names[0] == "airplane"
    assert splits.y_train.ndim == 1
    np.testing.assert_allclose(np.sort(splits.x_test.ravel()), np.sort(test_images.ravel() / 255.0), atol=1e-7)

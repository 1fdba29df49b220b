"""Tests of the pure figure functions: sizes, contents and bad input."""

import io

import keras
import matplotlib
import numpy as np
import pytest
from PIL import Image

from kerastricks.callbacks import (
    figure_to_image,
    figure_to_png,
    filter_mosaic,
    plot_accuracy_gap,
    plot_confusion_matrix,
    plot_filters,
    plot_learning_rate,
    plot_loss_curves,
    plot_lr_finder,
)

HISTORY = {
    "loss": [2.0, 1.0, 0.6],
    "val_loss": [2.1, 1.3, 1.1],
    "accuracy": [0.5, 0.8, 0.95],
    "val_accuracy": [0.45, 0.7, 0.8],
}


def png_size(png):
    return Image.open(io.BytesIO(png)).size


class TestSizes:
    @pytest.mark.parametrize("draw, size", [
        (lambda: plot_loss_curves(HISTORY), (640, 400)),
        (lambda: plot_accuracy_gap(HISTORY), (640, 400)),
        (lambda: plot_learning_rate([1e-3, 1e-3, 1e-4]), (640, 400)),
        (lambda: plot_confusion_matrix([0, 1, 2, 2], [0, 2, 2, 2]), (640, 640)),
        (lambda: plot_filters(np.random.default_rng(0).normal(size=(3, 3, 1, 8))), (640, 640)),
        (lambda: plot_lr_finder([1e-4, 1e-3, 1e-2], [2.0, 1.0, 3.0], 1e-3), (640, 400)),
    ])
    def test_png_has_stated_size(self, draw, size):
        assert png_size(figure_to_png(draw())) == size

    def test_figsize_and_dpi(self):
        figure = plot_loss_curves(HISTORY, figsize=(3.0, 2.0), dpi=50)
        assert png_size(figure_to_png(figure)) == (150, 100)

    def test_image_array_matches_png(self):
        image = figure_to_image(plot_loss_curves(HISTORY))
        assert image.shape == (1, 400, 640, 4)
        assert image.dtype == np.uint8

    def test_figures_stay_out_of_pyplot(self):
        import matplotlib.pyplot as plt

        open_before = plt.get_fignums()
        figure_to_png(plot_loss_curves(HISTORY))
        assert plt.get_fignums() == open_before
        assert matplotlib.get_backend()  # no GUI backend was needed to draw


class TestContents:
    def test_loss_curves_plot_both_series(self):
        figure = plot_loss_curves(HISTORY)
        lines = figure.axes[0].get_lines()
        assert [list(line.get_ydata()) for line in lines] == [HISTORY["loss"], HISTORY["val_loss"]]

    def test_loss_curves_accept_a_history_object(self):
        history = keras.callbacks.History()
        history.history = {"loss": [1.0, 0.5]}
        figure = plot_loss_curves(history)
        assert len(figure.axes[0].get_lines()) == 1

    def test_accuracy_gap_title_states_final_gap(self):
        figure = plot_accuracy_gap(HISTORY)
        assert "0.150" in figure.axes[0].get_title()

    def test_confusion_matrix_matches_sklearn(self):
        from sklearn.metrics import confusion_matrix

        rng = np.random.default_rng(0)
        y_true = rng.integers(0, 4, 200)
        y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 4, 200))
        figure = plot_confusion_matrix(y_true, y_pred, class_names=list("abcd"))
        shown = figure.axes[0].get_images()[0].get_array()
        expected = confusion_matrix(y_true, y_pred).astype(float)
        expected /= expected.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(shown, expected)
        assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == list("abcd")

    def test_filter_mosaic_tiles(self):
        kernel = np.random.default_rng(0).normal(size=(5, 5, 3, 10))
        mosaic = filter_mosaic(kernel)
        # 10 filters on a 4-column grid: 3 rows of 5-pixel tiles with 1-pixel gaps.
        assert mosaic.shape == (3 * 6 - 1, 4 * 6 - 1, 3)
        for index in (0, 5, 9):
            top, left = (index // 4) * 6, (index % 4) * 6
            tile = kernel[..., index]
            expected = (tile - tile.min()) / np.ptp(tile)
            np.testing.assert_allclose(mosaic[top:top + 5, left:left + 5], expected)
        assert np.all(mosaic[5, :] == 1.0)

    def test_filter_mosaic_grey_uses_first_channel(self):
        kernel = np.random.default_rng(1).normal(size=(3, 3, 4, 2))
        mosaic = filter_mosaic(kernel)
        assert mosaic.shape == (3, 7, 1)
        first = kernel[..., 0, 0]
        np.testing.assert_allclose(mosaic[:, :3, 0], (first - first.min()) / np.ptp(first))

    def test_filters_figure_shows_mosaic(self):
        kernel = np.random.default_rng(0).normal(size=(3, 3, 1, 8))
        shown = plot_filters(kernel).axes[0].get_images()[0].get_array()
        np.testing.assert_allclose(shown, filter_mosaic(kernel)[..., 0])

    def test_lr_finder_marks_suggestion(self):
        figure = plot_lr_finder([1e-4, 1e-3, 1e-2], [2.0, 1.0, 3.0], suggestion=1e-3)
        assert figure.axes[0].get_xscale() == "log"
        assert figure.axes[0].get_lines()[1].get_xdata()[0] == pytest.approx(1e-3)


class TestBadInput:
    def test_missing_history_key(self):
        with pytest.raises(ValueError, match="no values for 'val_accuracy'.*Available keys"):
            plot_accuracy_gap({"accuracy": [0.5]})

    def test_history_of_wrong_type(self):
        with pytest.raises(TypeError, match="History or a dict"):
            plot_loss_curves([1.0, 0.5])

    def test_non_positive_learning_rate(self):
        with pytest.raises(ValueError, match="positive numbers"):
            plot_learning_rate([1e-3, 0.0])

    def test_confusion_length_mismatch(self):
        with pytest.raises(ValueError, match="same length"):
            plot_confusion_matrix([0, 1], [0])

    def test_too_few_class_names(self):
        with pytest.raises(ValueError, match="at least 3 classes"):
            plot_confusion_matrix([0, 1, 2], [0, 1, 2], class_names=["a", "b"])

    def test_kernel_of_wrong_rank(self):
        with pytest.raises(ValueError, match="4D"):
            plot_filters(np.zeros((3, 3, 8)))

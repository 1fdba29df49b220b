"""Tests of the HSV jitter, crop and test-time view augmentations."""

import colorsys

import keras
import numpy as np
import pytest

from kerastricks.layers import (
    RandomHSVJitter,
    RandomPadCrop,
    RandomResizedCrop,
    flip_views,
    predict_with_views,
    ten_crop_views,
)
from tests.layers.contract import check_in_fresh_process, check_layer_contract


def to_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def random_images(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype("float32")


# HSV jitter


def reference_hsv_jitter(image, power, factor, offset, hue_shift):
    """Apply the HSV jitter to one image pixel by pixel with Python's `colorsys`."""
    output = np.empty_like(image, dtype=np.float64)
    for index in np.ndindex(image.shape[:2]):
        hue, saturation, value = colorsys.rgb_to_hsv(*image[index].astype(np.float64))
        saturation = np.clip(factor[0] * saturation ** power[0] + offset[0], 0, 1)
        value = np.clip(factor[1] * value ** power[1] + offset[1], 0, 1)
        output[index] = colorsys.hsv_to_rgb((hue + hue_shift) % 1.0, saturation, value)
    return output


def test_hsv_jitter_matches_colorsys():
    images = random_images((3, 4, 5, 3))
    transformation = {
        "power": np.array([[0.25, 4.0], [2.0, 0.5], [1.0, 1.0]], dtype="float32"),
        "factor": np.array([[0.7, 1.4], [1.2, 0.9], [1.0, 1.0]], dtype="float32"),
        "offset": np.array([[0.1, -0.1], [-0.05, 0.02], [0.0, 0.0]], dtype="float32"),
        "hue_shift": np.array([0.1, -0.1, 0.0], dtype="float32"),
    }
    outputs = to_numpy(RandomHSVJitter().transform_images(images, transformation))

    for i in range(3):
        parameters = [transformation[key][i] for key in ("power", "factor", "offset", "hue_shift")]
        expected = reference_hsv_jitter(images[i], *parameters)
        np.testing.assert_allclose(outputs[i], expected, atol=1e-4)
    # The last image's parameters are neutral, so it comes back unchanged.
    np.testing.assert_allclose(outputs[2], images[2], atol=1e-5)


def test_hsv_jitter_value_range_255():
    images = random_images((2, 3, 3, 3))
    transformation = RandomHSVJitter(seed=4).get_random_transformation(images)
    in_unit = to_numpy(RandomHSVJitter().transform_images(images, transformation))
    in_255 = to_numpy(
        RandomHSVJitter(value_range=(0, 255)).transform_images(images * 255, transformation)
    )
    np.testing.assert_allclose(in_255, in_unit * 255, atol=1e-3)


def test_hsv_jitter_draws_within_ranges():
    images = random_images((4000, 1, 1, 3))
    transformation = RandomHSVJitter(seed=1).get_random_transformation(images)
    power = to_numpy(transformation["power"])
    factor = to_numpy(transformation["factor"])
    offset = to_numpy(transformation["offset"])
    hue_shift = to_numpy(transformation["hue_shift"])

    assert power.min() >= 0.25
    assert power.max() <= 4.0
    # Log-uniform: the median power is 1 and half of the draws are below it.
    assert abs(np.median(np.log(power))) < 0.05
    assert factor.min() >= 0.7
    assert factor.max() <= 1.4
    assert offset.min() >= -0.1
    assert offset.max() <= 0.1
    assert hue_shift.min() >= -0.1
    assert hue_shift.max() <= 0.1
    assert abs(np.corrcoef(power[:, 0], power[:, 1])[0, 1]) < 0.1


def test_hsv_jitter_training_and_inference():
    images = random_images((8, 6, 6, 3))
    layer = RandomHSVJitter(seed=2)
    np.testing.assert_array_equal(to_numpy(layer(images)), images)
    jittered = to_numpy(layer(images, training=True))
    assert jittered.min() >= 0.0
    assert jittered.max() <= 1.0 + 1e-6
    assert np.abs(jittered - images).mean() > 0.01


def test_hsv_jitter_rejects_bad_input():
    with pytest.raises(ValueError, match=r"3 channels.*shape=\(2, 4, 4, 1\)"):
        RandomHSVJitter()(np.zeros((2, 4, 4, 1), dtype="float32"), training=True)
    with pytest.raises(ValueError, match=r"power_range=\(0, 4\)"):
        RandomHSVJitter(power_range=(0, 4))
    with pytest.raises(ValueError, match=r"factor_range=\(1.4, 0.7\)"):
        RandomHSVJitter(factor_range=(1.4, 0.7))


# Random-resized crop


def test_resized_crop_shapes():
    images = random_images((4, 28, 28, 1))
    layer = RandomResizedCrop(24, 20, seed=1)
    assert to_numpy(layer(images, training=True)).shape == (4, 24, 20, 1)
    assert to_numpy(layer(images)).shape == (4, 24, 20, 1)


def test_resized_crop_identity_at_inference():
    images = random_images((3, 10, 12, 2))
    outputs = to_numpy(RandomResizedCrop(10, 12, seed=1)(images, training=False))
    np.testing.assert_allclose(outputs, images, atol=1e-7)


def test_resized_crop_inference_resizes_whole_image():
    images = random_images((2, 8, 8, 1))
    outputs = to_numpy(RandomResizedCrop(4, 4)(images))
    # Halving with half-pixel centres samples between pixels 2i and 2i + 1: the 2x2 mean.
    expected = images.reshape(2, 4, 2, 4, 2, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(outputs, expected, atol=1e-6)


def test_resized_crop_boxes_within_ranges():
    images = random_images((2000, 20, 30, 1))
    scale, ratio = (0.2, 0.9), (0.5, 2.0)
    boxes = to_numpy(
        RandomResizedCrop(8, 8, scale=scale, ratio=ratio, seed=3).get_random_transformation(
            images
        )
    )
    top, left, height, width = boxes.T

    assert top.min() >= 0
    assert left.min() >= 0
    assert (top + height).max() <= 20 + 1e-4
    assert (left + width).max() <= 30 + 1e-4
    # Boxes that did not hit the image border keep the drawn area and aspect ratio.
    inside = (height < 20 - 1e-3) & (width < 30 - 1e-3)
    area = height * width / (20 * 30)
    assert inside.mean() > 0.5
    assert area[inside].min() >= scale[0] - 1e-4
    assert area[inside].max() <= scale[1] + 1e-4
    aspect = width / height
    assert aspect[inside].min() >= ratio[0] - 1e-4
    assert aspect[inside].max() <= ratio[1] + 1e-4
    # Offsets spread over the free room.
    free = (20 - height)[inside]
    assert (top[inside] / free).min() < 0.05
    assert (top[inside] / free).max() > 0.95


def test_resized_crop_integer_box_is_exact_crop():
    images = random_images((2, 28, 28, 3))
    boxes = np.array([[2.0, 3.0, 24.0, 24.0], [0.0, 4.0, 24.0, 24.0]], dtype="float32")
    outputs = to_numpy(RandomResizedCrop(24, 24).transform_images(images, boxes))
    np.testing.assert_allclose(outputs[0], images[0, 2:26, 3:27], atol=1e-7)
    np.testing.assert_allclose(outputs[1], images[1, 0:24, 4:28], atol=1e-7)


def test_resized_crop_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"scale=\(0.0, 1.0\)"):
        RandomResizedCrop(8, 8, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"scale=\(0.5, 1.5\)"):
        RandomResizedCrop(8, 8, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match=r"ratio=\(2.0, 1.0\)"):
        RandomResizedCrop(8, 8, ratio=(2.0, 1.0))
    with pytest.raises(ValueError, match="height=0"):
        RandomResizedCrop(0, 8)
    with pytest.raises(ValueError, match=r"shape=\(4, 8\)"):
        RandomResizedCrop(4, 4)(np.zeros((4, 8), dtype="float32"))


# Pad and random crop


def padded_crop(image, padding, top, left):
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    return padded[top : top + image.shape[0], left : left + image.shape[1]]


def test_pad_crop_matches_numpy_padding():
    images = random_images((3, 8, 9, 2))
    shifts = np.array([[-2, 0], [1, 2], [2, -1]], dtype="int32")
    outputs = to_numpy(RandomPadCrop(padding=2).transform_images(images, shifts))
    for i, (row_shift, col_shift) in enumerate(shifts):
        expected = padded_crop(images[i], 2, row_shift + 2, col_shift + 2)
        np.testing.assert_allclose(outputs[i], expected, atol=1e-7)


def test_pad_crop_offsets_within_range():
    padding = 3
    images = random_images((150, 10, 10, 1)) + 0.1  # No zero pixel, so padding is visible.
    outputs = to_numpy(RandomPadCrop(padding=padding, seed=5)(images, training=True))

    offsets = []
    for image, output in zip(images, outputs):
        matches = [
            (top, left)
            for top in range(2 * padding + 1)
            for left in range(2 * padding + 1)
            if np.allclose(output, padded_crop(image, padding, top, left), atol=1e-6)
        ]
        assert len(matches) == 1, "Each output must be exactly one window of the padded image."
        offsets.append(matches[0])
    offsets = np.array(offsets)
    # All 7 offsets per axis occur, including both extremes.
    assert set(offsets[:, 0]) == set(range(2 * padding + 1))
    assert set(offsets[:, 1]) == set(range(2 * padding + 1))


def test_pad_crop_identity_at_inference():
    images = random_images((2, 8, 8, 3))
    np.testing.assert_array_equal(to_numpy(RandomPadCrop(4)(images)), images)


def test_pad_crop_rejects_bad_padding():
    with pytest.raises(ValueError, match="padding=0"):
        RandomPadCrop(padding=0)
    with pytest.raises(ValueError, match=r"smaller than the image.*\(8, 8\).*padding=8"):
        RandomPadCrop(padding=8)(np.zeros((1, 8, 8, 1), dtype="float32"), training=True)


# Test-time views


def test_ten_crop_windows():
    images = random_images((2, 7, 9, 3))
    views = to_numpy(ten_crop_views(images, 4, 5))
    windows = [(0, 0), (0, 4), (3, 0), (3, 4), (1, 2)]

    assert views.shape == (2, 10, 4, 5, 3)
    for view, (top, left) in enumerate(windows):
        crop = images[:, top : top + 4, left : left + 5]
        np.testing.assert_array_equal(views[:, view], crop)
        np.testing.assert_array_equal(views[:, view + 5], crop[:, :, ::-1])


def test_flip_views():
    images = random_images((2, 4, 5, 1))
    views = to_numpy(flip_views(images))
    assert views.shape == (2, 2, 4, 5, 1)
    np.testing.assert_array_equal(views[:, 0], images)
    np.testing.assert_array_equal(views[:, 1], images[:, :, ::-1])


def test_ten_crop_rejects_crop_larger_than_image():
    with pytest.raises(ValueError, match=r"height=9.*\(8, 8, 1\)"):
        ten_crop_views(np.zeros((1, 8, 8, 1), dtype="float32"), 9, 4)
    with pytest.raises(ValueError, match=r"width=0"):
        ten_crop_views(np.zeros((1, 8, 8, 1), dtype="float32"), 4, 0)


def small_classifier(input_shape, activation="softmax"):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(3, activation)]
    )


def test_predict_with_ten_crops_averages_views():
    images = random_images((5, 10, 10, 1))
    model = small_classifier((8, 8, 1))
    averaged = predict_with_views(model, images, views="ten_crop", batch_size=2)

    views = to_numpy(ten_crop_views(images, 8, 8))
    per_view = np.stack([to_numpy(model(views[:, v])) for v in range(10)], axis=1)
    np.testing.assert_allclose(averaged, per_view.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0, atol=1e-6)


def test_predict_with_flips_from_logits():
    images = random_images((4, 6, 6, 1))
    model = small_classifier((6, 6, 1), activation=None)
    averaged = predict_with_views(model, images, views="flip", from_logits=True)

    logits = [to_numpy(model(images)), to_numpy(model(images[:, :, ::-1]))]
    probabilities = [np.exp(z) / np.exp(z).sum(axis=1, keepdims=True) for z in logits]
    np.testing.assert_allclose(averaged, np.mean(probabilities, axis=0), atol=1e-6)


def test_predict_with_views_rejects_bad_arguments():
    model = small_classifier((6, 6, 1))
    images = random_images((2, 6, 6, 1))
    with pytest.raises(ValueError, match="views='five'"):
        predict_with_views(model, images, views="five")
    with pytest.raises(ValueError, match="batch_size=0"):
        predict_with_views(model, images, batch_size=0)
    with pytest.raises(ValueError, match=r"height=6.*\(4, 4, 1\)"):
        predict_with_views(model, random_images((2, 4, 4, 1)))


# Layer contract


def test_augmentation_contract(tmp_path):
    # With training=True the contract still compares inference outputs after save and load.
    layers = {
        "hsv_training": (lambda: RandomHSVJitter(seed=1), (4, 6, 6, 3), (4, 6, 6, 3), True),
        "resized_training": (
            lambda: RandomResizedCrop(6, 5, seed=1), (4, 8, 8, 3), (4, 6, 5, 3), True
        ),
        "pad_training": (lambda: RandomPadCrop(2, seed=1), (4, 8, 8, 1), (4, 8, 8, 1), True),
    }
    cases = [
        check_layer_contract(
            make,
            input_shape=shape,
            expected_output_shape=output_shape,
            expected_trainable_weights=0,
            training=training,
            input_data=random_images(shape),
            run_fresh_process=False,
            save_dir=tmp_path / name,
        )
        for name, (make, shape, output_shape, training) in layers.items()
    ]
    check_in_fresh_process(cases)

"""The shared contract helper must catch the mistakes it exists for."""

import keras
import pytest

from tests.layers.contract import check_layer_contract, tolerance


@keras.saving.register_keras_serializable(package="contract_test")
class Scale(keras.layers.Layer):
    """Multiplies by `factor`; with `forget_factor`, `get_config` leaves `factor` out."""

    def __init__(self, factor=2.0, forget_factor=False, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor
        self.forget_factor = forget_factor

    def call(self, inputs):
        return inputs * self.factor

    def get_config(self):
        config = {**super().get_config(), "forget_factor": self.forget_factor}
        if not self.forget_factor:
            config["factor"] = self.factor
        return config


def test_complete_layer_passes(tmp_path):
    check_layer_contract(
        lambda: Scale(3.0), (2, 4), expected_output_shape=(2, 4), expected_trainable_weights=0,
        run_fresh_process=False, mixed_precision=True, save_dir=tmp_path,
    )


def test_incomplete_config_fails(tmp_path):
    with pytest.raises(AssertionError, match="rebuilt from_config differs from the reference"):
        check_layer_contract(
            lambda: Scale(3.0, forget_factor=True), (2, 4),
            run_fresh_process=False, mixed_precision=False, save_dir=tmp_path,
        )


def test_wrong_weight_count_fails(tmp_path):
    with pytest.raises(AssertionError, match="Expected 1 trainable weights"):
        check_layer_contract(
            lambda: Scale(), (2, 4), expected_trainable_weights=1,
            run_fresh_process=False, mixed_precision=False, save_dir=tmp_path,
        )


def test_wrong_shape_fails(tmp_path):
    with pytest.raises(AssertionError, match=r"shape \(2, 4\). Expected: \(2, 5\)"):
        check_layer_contract(
            lambda: Scale(), (2, 4), expected_output_shape=(2, 5),
            run_fresh_process=False, mixed_precision=False, save_dir=tmp_path,
        )


def test_tolerance_by_dtype():
    assert tolerance("mixed_float16") == tolerance("float16")
    assert tolerance("float16")[0] > tolerance("float32")[0] > tolerance("float64")[0]

    with pytest.raises(ValueError, match="No tolerance is defined for dtype 'int32'"):
        tolerance("int32")

"""Tests of the end-of-run diagnosis rules and the `RunDiagnosis` callback."""

import math
import warnings

import keras
import numpy as np
import pytest

from kerastricks.callbacks import (
    ActivationStatistics,
    RunDiagnosis,
    UpdateHealth,
    diagnose,
    format_diagnosis,
)
from tests.callbacks.conftest import make_mlp

GOOD = {"loss": [2.0, 1.0, 0.5], "accuracy": [0.5, 0.8, 0.9], "val_accuracy": [0.5, 0.78, 0.88]}


def keys(findings):
    return [finding.key for finding in findings]


class TestRules:
    def test_healthy_run(self):
        assert diagnose(GOOD) == []
        assert format_diagnosis([]) == "Diagnosis: no problems found."

    def test_overfitting_gap(self):
        history = {**GOOD, "accuracy": [0.5, 0.9, 0.99], "val_accuracy": [0.5, 0.8, 0.9]}
        findings = diagnose(history)
        assert keys(findings) == ["overfitting"]
        assert "0.090" in findings[0].message
        assert "regularization" in findings[0].remedy
        assert diagnose(history, overfitting_gap=0.1) == []

    @pytest.mark.parametrize("losses", [[2.0, 3.0, 9.0], [2.0, math.nan, math.nan]])
    def test_diverging_loss(self, losses):
        findings = diagnose({"loss": losses})
        assert keys(findings) == ["diverging_loss"]
        assert "lower the learning rate" in findings[0].remedy

    def test_flat_loss(self):
        findings = diagnose({"loss": [2.302, 2.301, 2.300]})
        assert keys(findings) == ["flat_loss"]
        assert "raise the learning rate" in findings[0].remedy

    def test_dead_and_saturated_layers(self):
        records = [
            {"layer": "act1", "dead_fraction": 0.55, "saturation_fraction": None},
            {"layer": "act2", "dead_fraction": 0.1, "saturation_fraction": None},
            {"layer": "act3", "dead_fraction": None, "saturation_fraction": 0.8},
        ]
        findings = diagnose(GOOD, activation_records=records)
        assert keys(findings) == ["dead_units", "saturated_units"]
        assert "act1 55%" in findings[0].message
        assert "act2" not in findings[0].message
        assert "act3 80%" in findings[1].message

    def test_update_ratios_and_vanishing_gradients(self):
        high = [{"layer": "a", "update_ratio": 0.05, "gradient_norm": 1.0},
                {"layer": "b", "update_ratio": 0.2, "gradient_norm": 1.0}]
        assert keys(diagnose(GOOD, update_records=high)) == ["large_updates"]
        low = [{"layer": "a", "update_ratio": 1e-7, "gradient_norm": 1e-5},
               {"layer": "b", "update_ratio": 1e-6, "gradient_norm": 0.1}]
        assert keys(diagnose(GOOD, update_records=low)) == ["small_updates", "vanishing_gradients"]

    def test_unknown_threshold(self):
        with pytest.raises(ValueError, match="Unknown threshold 'gap'"):
            diagnose(GOOD, gap=0.1)
        with pytest.raises(ValueError, match="Unknown threshold 'gap'"):
            RunDiagnosis(gap=0.1)

    def test_text_lists_each_finding(self):
        findings = diagnose({"loss": [1.0, 2.0]})
        text = format_diagnosis(findings)
        assert text.splitlines()[0] == "Diagnosis:"
        assert text.splitlines()[1].startswith("- The training loss rose")
        assert "Remedy: lower the learning rate" in text


class TestCallback:
    def test_too_high_learning_rate_is_diagnosed(self, digits, tmp_path):
        x, y = digits
        model = make_mlp(optimizer=keras.optimizers.Adam(0.1))
        activations = ActivationStatistics(tmp_path, x[-256:])
        updates = UpdateHealth(tmp_path, (x[-256:], y[-256:]))
        diagnosis = RunDiagnosis(activations, updates, path=tmp_path / "out" / "diagnosis.txt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x[:1500], y[:1500], epochs=2, batch_size=32, verbose=0,
                      validation_data=(x[1500:], y[1500:]),
                      callbacks=[activations, updates, diagnosis])
        assert "dead_units" in keys(diagnosis.findings)
        assert (tmp_path / "out" / "diagnosis.txt").read_text().strip() == diagnosis.text
        assert np.isclose(diagnosis.history["loss"][-1], model.history.history["loss"][-1])

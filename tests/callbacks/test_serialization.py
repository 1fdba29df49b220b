"""The callbacks' configs survive Keras serialization and a load in a fresh process."""

import json
import subprocess
import sys

import keras
import numpy as np

from kerastricks.callbacks import ActivationStatistics, RunDiagnosis, TrainingFigures, UpdateHealth


def test_configs_load_in_fresh_process(tmp_path):
    probe = (np.arange(12, dtype="float32").reshape(3, 4), np.array([0, 1, 0]))
    callbacks = [
        ActivationStatistics(tmp_path, probe[0], every_n_epochs=2, dead_threshold=0.3),
        UpdateHealth(tmp_path, probe, every_n_steps=5),
        TrainingFigures(tmp_path, validation_data=probe, figures=["loss"], dpi=80),
        RunDiagnosis(path=tmp_path / "diagnosis.txt", overfitting_gap=0.1),
    ]
    serialized = [keras.saving.serialize_keras_object(callback) for callback in callbacks]
    path = tmp_path / "callbacks.json"
    path.write_text(json.dumps(serialized))
    script = (
        "import json, sys, keras, kerastricks.callbacks\n"
        "items = json.load(open(sys.argv[1]))\n"
        "print(json.dumps([keras.saving.deserialize_keras_object(item).get_config() "
        "for item in items]))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                               text=True, check=True)
    restored = json.loads(completed.stdout.strip().splitlines()[-1])
    expected = json.loads(json.dumps([callback.get_config() for callback in callbacks]))
    assert restored == expected
    assert restored[0]["dead_threshold"] == 0.3
    assert restored[1]["probe_data"]["y"] == [0, 1, 0]
    assert restored[0]["probe_data"]["y"] is None

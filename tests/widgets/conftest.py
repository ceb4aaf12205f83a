"""Engine data shared by the panel tests: the bundled CNN, its NPU report and its analysis."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import load_model
from engine.analysis import AnalysisConfig, run_analysis
from engine.calibrate import data_spec
from engine.npu import load_profile
from engine.timeline import analyze

SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "samples"


@pytest.fixture(scope="session")
def cnn():
    return load_model(str(SAMPLES / "cnn-digits.onnx"), dims={"batch": 1})


@pytest.fixture(scope="session")
def npu_report(cnn):
    return analyze(cnn, load_profile("journey5"))


@pytest.fixture(scope="session")
def analysis(cnn):
    """The CNN's analysis (64 calibration images, 96 validation images)."""
    return run_analysis(cnn, data_spec(str(SAMPLES / "digits-calib.npz")),
                        data_spec(str(SAMPLES / "digits-val.npz"), limit=96), config=AnalysisConfig())

"""The bundled sample models (trained on scikit-learn's digits) and their data files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelError

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
SAMPLES_DIR = RESOURCES / "samples"


@dataclass(frozen=True)
class Sample:
    """A bundled model with its calibration set and labelled validation set (.npz)."""

    name: str
    description: str
    model: Path
    calib: Path
    val: Path


SAMPLES: dict[str, Sample] = {
    s.name: s
    for s in (
        Sample(
            "vit-digits",
            "tiny vision Transformer (patch embedding, attention, LayerNorm, GELU MLP) on 8x8 digits",
            SAMPLES_DIR / "vit-digits.onnx",
            SAMPLES_DIR / "digits-calib.npz",
            SAMPLES_DIR / "digits-val.npz",
        ),
        Sample(
            "cnn-digits",
            "tiny CNN (Conv+BatchNorm+ReLU blocks) on 8x8 digits",
            SAMPLES_DIR / "cnn-digits.onnx",
            SAMPLES_DIR / "digits-calib.npz",
            SAMPLES_DIR / "digits-val.npz",
        ),
    )
}


def get_sample(name: str) -> Sample:
    """The sample called ``name``; ModelError listing the known names otherwise."""
    try:
        return SAMPLES[name]
    except KeyError:
        raise ModelError(f"no bundled sample named {name!r} (known: {', '.join(SAMPLES)})") from None

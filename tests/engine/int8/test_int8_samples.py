"""Sanity check on the bundled trained samples: top-1 accuracy of the int8 model (min/max
per-channel plan from ``digits-calib.npz``) against the float model on the 360 validation
images. Measured (symmetric int8, per-channel weights, I-BERT integer Softmax/GELU/LayerNorm):
cnn-digits 98.06% float / 98.06% int8; vit-digits 94.44% float / 94.44% int8 (both modes of the
non-linear ops)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import engine
from engine.int8 import Int8Executor
from engine.quant.qparams import QuantScheme
from tests.engine.int8.helpers import minmax_plan

SAMPLES = Path(__file__).resolve().parents[3] / "resources" / "samples"
MAX_DROP = 0.02  # int8 may lose at most 2 points of top-1 accuracy (7 of 360 images)


@pytest.mark.parametrize("name", ["cnn-digits", "vit-digits"])
@pytest.mark.parametrize("nonlinear", ["integer", "float_fallback"])
def test_int8_accuracy_close_to_float(name: str, nonlinear: str) -> None:
    calib = np.load(SAMPLES / "digits-calib.npz")["image"]
    val = np.load(SAMPLES / "digits-val.npz")
    images, labels = val["image"], val["labels"]
    model = engine.load_model(SAMPLES / f"{name}.onnx", dims={"batch": len(images)})
    calib_model = engine.load_model(SAMPLES / f"{name}.onnx", dims={"batch": len(calib)})
    paths = {n.name: nonlinear for n in model.graph.nodes if n.op_type in ("Softmax", "Erf", "LayerNormalization")}
    plan = minmax_plan(calib_model, [{"image": calib}], QuantScheme(symmetric=True, weight_per_channel=True), paths=paths)  # type: ignore[arg-type]
    result = Int8Executor(model, plan).run({"image": images})
    float_acc = float((engine.run(model, {"image": images})["logits"].argmax(1) == labels).mean())
    int8_acc = float((result.values["logits"].argmax(1) == labels).mean())
    print(f"\n{name} ({nonlinear} nonlinear): float {100 * float_acc:.2f}%, int8 {100 * int8_acc:.2f}%")
    assert all(p == nonlinear for n, p in result.paths.items() if n in paths)
    assert int8_acc >= float_acc - MAX_DROP

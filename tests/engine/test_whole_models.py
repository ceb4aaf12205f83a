"""The float executor agrees with onnxruntime on whole models.

Tolerance: max |ours - ort| / max |ort| <= 1e-5 per output (float32; the measured values
are 3e-7 to 7e-7: summation order differs between BLAS libraries, nothing else should).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import engine
from benchmarks.models import bert_encoder, bert_feeds, cnn, cnn_feeds
from engine.fileio import read_npz
from engine.samples import SAMPLES

ort = pytest.importorskip("onnxruntime")
REL_TOL = 1e-5


def _agree(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> float:
    ours = engine.run(engine.model_from_proto(proto), feeds)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    worst = 0.0
    for name, ref in zip(names, sess.run(None, feeds)):
        assert ours[name].shape == ref.shape and ours[name].dtype == ref.dtype
        worst = max(worst, float(np.abs(ours[name] - ref).max() / np.abs(ref).max()))
    return worst


def test_bert_encoder_matches_onnxruntime() -> None:
    rel = _agree(bert_encoder(layers=2, hidden=128, heads=4, ffn=256, seq=32), bert_feeds(seq=32, masked=5))
    assert rel <= REL_TOL, rel


def test_cnn_matches_onnxruntime() -> None:
    rel = _agree(cnn(blocks=3, width=16, image=32), cnn_feeds(image=32))
    assert rel <= REL_TOL, rel


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_bundled_samples_match_onnxruntime(name: str) -> None:
    sample = SAMPLES[name]
    proto = onnx.load(str(sample.model))
    images = read_npz(sample.val)["image"][:32]
    rel = _agree(proto, {"image": images})
    assert rel <= REL_TOL, rel

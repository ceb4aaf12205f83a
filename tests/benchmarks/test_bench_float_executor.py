"""The float-executor benchmark's helpers on a small model (no timings asserted)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from benchmarks.bench_float_executor import (
    OUTSIDE_KERNELS,
    bench_one,
    max_rel_err,
    per_op,
    print_per_op,
)
from benchmarks.models import bert_encoder, bert_feeds


def test_per_op_breakdowns_cover_every_node_of_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    proto = bert_encoder(layers=1, hidden=32, heads=2, ffn=64, seq=8, vocab=50)
    feeds = bert_feeds(seq=8, vocab=50, masked=2)
    ours, theirs = per_op(proto, feeds, warmup=1, repeat=2, threads=1)
    # every node of the model is counted once per run under its op type
    node_counts: dict[str, int] = {}
    for node in proto.graph.node:
        node_counts[node.op_type] = node_counts.get(node.op_type, 0) + 1
    assert {op: n for op, (_, n) in ours.items() if op != OUTSIDE_KERNELS} == node_counts
    assert all(ms >= 0 for ms, _ in ours.values())
    assert OUTSIDE_KERNELS in theirs and sum(n for _, n in theirs.values()) > 0
    assert any(op in theirs for op in ("MatMul", "Gemm", "FusedMatMul"))
    print_per_op(ours, theirs)
    printed = capsys.readouterr().out
    assert f"MatMul ({node_counts['MatMul']})" in printed and "run total" in printed


def test_bench_one_reports_agreement_with_onnxruntime() -> None:
    proto = bert_encoder(layers=1, hidden=32, heads=2, ffn=64, seq=8, vocab=50)
    result = bench_one("tiny", proto, bert_feeds(seq=8, vocab=50, masked=2), warmup=1, repeat=2, threads=1)
    assert result.ours_ms is not None and result.ratio is not None and result.ratio > 0
    assert result.best_ratio is not None and result.best_ratio > 0
    assert result.max_rel_err is not None and result.max_rel_err < 1e-5
    ref = np.array([1.0, -2.0, 4.0])
    assert max_rel_err(ref, ref) == 0.0 and max_rel_err(ref + np.array([0.0, 0.0, 0.4]), ref) == pytest.approx(0.1)

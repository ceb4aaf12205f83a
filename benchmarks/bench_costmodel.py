"""Validate the roofline cost model against measurement on this machine.

Run from the project root::

    .venv/bin/python -m benchmarks.bench_costmodel [--repeat 20] [--seconds 3] [--threads N]

The ``host`` profile is measured in the same run (``engine.npu.measure_host_profile``).
Each model (BERT-style encoder, seq 128, hidden 256, 2 layers; the CNN) is costed on that
profile at float32 element sizes (onnxruntime runs the float model), unfused, and the
per-node ``est_ns`` are compared with onnxruntime's own per-node profile of the same model
run with graph optimizations disabled (so its nodes map one to one onto ours). Printed:
Spearman rank correlation over nodes, the ratio predicted total / measured total (sum of
per-node kernel times), and the nodes the model gets most wrong (by log ratio).
Targets from the issue: Spearman >= 0.8, total within 25%. Nothing here is tuned to a model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnxruntime as ort  # noqa: E402

import engine  # noqa: E402
from benchmarks.models import bert_encoder, bert_feeds, cnn, cnn_feeds  # noqa: E402
from engine.costmodel import layer_estimates  # noqa: E402
from engine.npu import measure_host_profile  # noqa: E402


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x), dtype=np.float64)
        r[order] = np.arange(len(x), dtype=np.float64)
        for value in np.unique(x):  # average ties
            mask = x == value
            if mask.sum() > 1:
                r[mask] = r[mask].mean()
        return r

    ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    ra -= ra.mean()
    rb -= rb.mean()
    return float((ra * rb).sum() / math.sqrt((ra * ra).sum() * (rb * rb).sum()))


def name_nodes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique name so onnxruntime's profile and our model agree on names."""
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    return proto


def measure_ort(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], repeat: int, threads: int | None) -> dict[str, float]:
    """Median per-node kernel time (ns) from onnxruntime's profiler, optimizations off."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.enable_profiling = True
    if threads:
        opts.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        for _ in range(3):
            sess.run(None, feeds)
        for _ in range(repeat):
            sess.run(None, feeds)
        path = sess.end_profiling()
        with open(path) as f:
            events = json.load(f)
    per_node: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_node[e["name"][: -len("_kernel_time")]].append(float(e["dur"]) * 1e3)
    # drop the warm-up runs, keep the median of the timed ones
    return {name: float(np.median(times[-repeat:])) for name, times in per_node.items()}


def measure_wall(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], repeat: int, threads: int | None) -> float:
    """Median wall time (ns) of an unprofiled run, optimizations off (the profiler's own
    per-node cost, a few microseconds, inflates small nodes in the per-node figures)."""
    import time

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, feeds)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e9


def validate(label: str, proto: onnx.ModelProto, feeds: dict[str, np.ndarray], profile, repeat: int, threads: int | None) -> dict:
    proto = name_nodes(proto)
    model = engine.model_from_proto(proto)
    predicted = {e.name: e.est_ns for e in layer_estimates(model, profile, act_bytes=4, weight_bytes=4)}
    measured = measure_ort(proto, feeds, repeat, threads)
    wall = measure_wall(proto, feeds, repeat, threads)
    names = [n for n in predicted if n in measured]
    p = np.array([predicted[n] for n in names])
    m = np.array([measured[n] for n in names])
    rho = spearman(p, m)
    ratio = float(p.sum() / m.sum())
    log_err = np.log(p / np.maximum(m, 1.0))
    worst = sorted(zip(names, p, m, log_err), key=lambda t: -abs(t[3]))[:5]
    by_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    ops = {n.name: n.op_type for n in model.graph.nodes}
    for n, pv, mv in zip(names, p, m):
        by_op[ops[n]][0] += pv
        by_op[ops[n]][1] += mv
    print(f"\n{label}: {len(names)} nodes matched of {len(predicted)}")
    print(f"  Spearman {rho:.3f}   predicted/measured total {ratio:.3f} ({p.sum() / 1e6:.3f} ms vs {m.sum() / 1e6:.3f} ms summed per-node)")
    print(f"  predicted / unprofiled wall time {p.sum() / wall:.3f} ({wall / 1e6:.3f} ms)")
    print("  per op type (predicted ms / measured ms):")
    for op, (pv, mv) in sorted(by_op.items(), key=lambda kv: -kv[1][1]):
        print(f"    {op:<22} {pv / 1e6:8.3f} {mv / 1e6:8.3f}   x{pv / max(mv, 1):.2f}")
    print("  worst nodes (predicted us / measured us):")
    for n, pv, mv, _ in worst:
        print(f"    {n:<40} {pv / 1e3:9.1f} {mv / 1e3:9.1f}")
    return {"model": label, "nodes": len(names), "spearman": rho, "total_ratio": ratio, "wall_ratio": float(p.sum() / wall)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=3.0, help="budget of the host micro-benchmark")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    profile = measure_host_profile(args.seconds)
    print(
        f"host profile: GEMM {profile.float_gflops:.1f} GFLOP/s, vector {profile.vector_gops:.2f} GOP/s, "
        f"DRAM {profile.dram_gbps:.1f} GB/s, cache {profile.sram_kib:.0f} KiB, overhead {profile.op_overhead_ns:.0f} ns"
    )
    results = [
        validate("bert-encoder seq128 h256 x2", bert_encoder(), bert_feeds(), profile, args.repeat, args.threads),
        validate("cnn", cnn(), cnn_feeds(), profile, args.repeat, args.threads),
    ]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

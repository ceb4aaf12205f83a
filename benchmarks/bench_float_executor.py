"""Float executor vs onnxruntime: median latency ratio and output agreement.

Run from the project root::

    .venv/bin/python -m benchmarks.bench_float_executor [--repeat 20] [--warmup 3] [--json out.json]

For each model (BERT-style encoder at hidden 256 and at base size 768, seq 128, 2 layers;
the CNN) it times ``engine.run`` on a model built with ``engine.model_from_proto`` and an
onnxruntime ``InferenceSession`` with default options on the same inputs. Runs alternate
between the two (so load on the shared machine hits both alike); after ``warmup`` runs of
each, the median of ``repeat`` runs is reported, in ms, with the ratio ours / onnxruntime
(lower is better; 1.0 is parity) and the max relative error max|a - b| / max|b| of the
first output, b being onnxruntime's.

Both sides use their default thread counts (OpenBLAS for numpy, onnxruntime's intra-op
pool). ``--threads N`` pins both to N (numpy's BLAS through threadpoolctl when installed):
on a loaded machine a multi-threaded BLAS can spin-wait badly, so the pinned run is the
steadier comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

if __package__ in (None, ""):  # run as a script: make the project root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnxruntime as ort  # noqa: E402

import engine  # noqa: E402
from benchmarks.models import bert_encoder, bert_feeds, cnn, cnn_feeds  # noqa: E402
from engine.executor import unsupported_ops  # noqa: E402


@dataclass(frozen=True)
class BenchResult:
    """One model's comparison; times in ms, ``ratio`` = ours / onnxruntime."""

    model: str
    ours_ms: float | None
    ort_ms: float
    ratio: float | None
    max_rel_err: float | None
    note: str = ""


def _cases() -> list[tuple[str, Callable[[], onnx.ModelProto], Callable[[], dict[str, np.ndarray]]]]:
    return [
        (
            "bert seq128 h256 x2",
            lambda: bert_encoder(layers=2, hidden=256, heads=4, ffn=1024, seq=128),
            lambda: bert_feeds(seq=128, masked=16),
        ),
        (
            "bert seq128 h768 x2 (base width)",
            lambda: bert_encoder(layers=2, hidden=768, heads=12, ffn=3072, seq=128),
            lambda: bert_feeds(seq=128, masked=16),
        ),
        ("cnn 4 blocks w32 64x64", lambda: cnn(blocks=4, width=32, image=64), lambda: cnn_feeds(image=64)),
    ]


def max_rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| (inf when the reference is all zero and ours is not)."""
    diff = float(np.max(np.abs(ours.astype(np.float64) - ref.astype(np.float64)))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / scale


def _time_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e6


def bench_one(
    name: str, proto: onnx.ModelProto, feeds: dict[str, np.ndarray], warmup: int, repeat: int, threads: int = 0
) -> BenchResult:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(proto.SerializeToString(), sess_options=options)
    out_name = proto.graph.output[0].name
    ref = session.run([out_name], feeds)[0]
    model = engine.model_from_proto(proto)
    missing = unsupported_ops(model)
    if missing:
        ort_times = [_time_ms(lambda: session.run(None, feeds)) for _ in range(warmup + repeat)][warmup:]
        return BenchResult(
            name, None, statistics.median(ort_times), None, None, f"not run: no kernel for {', '.join(sorted(missing))}"
        )
    ours_out = engine.run(model, feeds)[out_name]  # also builds the cached executor plan
    err = max_rel_err(np.asarray(ours_out), ref)
    for _ in range(warmup):
        engine.run(model, feeds)
        session.run(None, feeds)
    ours_times: list[float] = []
    ort_times = []
    for _ in range(repeat):
        ours_times.append(_time_ms(lambda: engine.run(model, feeds)))
        ort_times.append(_time_ms(lambda: session.run(None, feeds)))
    ours_ms, ort_ms = statistics.median(ours_times), statistics.median(ort_times)
    return BenchResult(name, ours_ms, ort_ms, ours_ms / ort_ms, err)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per model (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per model first")
    parser.add_argument("--only", default="", help="run only models whose name contains this text")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    parser.add_argument("--threads", type=int, default=0, help="pin numpy BLAS and onnxruntime to N threads (0: defaults)")
    args = parser.parse_args(argv)

    limiter = None
    if args.threads:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            print("threadpoolctl is not installed: only onnxruntime is pinned")
        else:
            limiter = threadpool_limits(limits=args.threads, user_api="blas")
    results: list[BenchResult] = []
    threads = f"{args.threads} thread(s) each" if args.threads else "default threads"
    print(
        f"numpy {np.__version__}, onnxruntime {ort.__version__}, {threads}; "
        f"median of {args.repeat} after {args.warmup} warm-up"
    )
    print(f"{'model':34s} {'ours ms':>9s} {'ort ms':>9s} {'ratio':>7s} {'max rel err':>12s}")
    for name, build, make_feeds in _cases():
        if args.only and args.only not in name:
            continue
        r = bench_one(name, build(), make_feeds(), args.warmup, args.repeat, args.threads)
        results.append(r)
        if r.ours_ms is None:
            print(f"{r.model:34s} {'-':>9s} {r.ort_ms:9.2f} {'-':>7s} {'-':>12s}  {r.note}")
        else:
            print(f"{r.model:34s} {r.ours_ms:9.2f} {r.ort_ms:9.2f} {r.ratio:7.2f} {r.max_rel_err:12.2e}")
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    if limiter is not None:
        limiter.restore_original_limits()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

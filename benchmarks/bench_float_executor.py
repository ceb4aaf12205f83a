"""Float executor vs onnxruntime: median latency ratio and output agreement.

Run from the project root::

    .venv/bin/python -m benchmarks.bench_float_executor [--repeat 20] [--warmup 3] [--threads N]
        [--only TEXT] [--per-op] [--settle S] [--clock wall|cpu] [--json out.json]

For each model (BERT-style encoder at hidden 256 and at base size 768, seq 128, 2 layers;
the CNN) it times ``engine.run`` on a model built with ``engine.model_from_proto`` and an
onnxruntime ``InferenceSession`` with default options on the same inputs. Runs alternate
between the two (so load on the shared machine hits both alike); after ``warmup`` runs of
each, the median of ``repeat`` runs is reported, in ms, with the ratio ours / onnxruntime
(lower is better; 1.0 is parity), the ratio of the two sides' fastest runs (``best``: a second
view when the load on a shared machine varies during the run), and the max
relative error max|a - b| / max|b| of the first output, b being onnxruntime's.

Both sides use their default thread counts (OpenBLAS for numpy, onnxruntime's intra-op
pool). ``--threads N`` pins both to N (numpy's BLAS through threadpoolctl when installed):
on a loaded machine a multi-threaded BLAS can spin-wait badly, so the pinned run is the
steadier comparison. With more than one thread, both libraries keep their idle worker
threads spinning for tens of ms after a run (measured ~30-40 ms of CPU), which in one
process steals the cores from whichever side runs next and slowed both sides 2-20x here;
so before every timed run the benchmark sleeps ``--settle`` seconds (default 0.15 with
more than one thread, 0 with ``--threads 1``), measuring each side as it runs on its own.

``--clock cpu`` (with ``--threads 1``) times each run by the calling thread's CPU time
instead of wall time, so runs preempted by other processes on a shared machine are not
charged for the wait (cache and memory-bandwidth contention still are).

``--per-op`` adds, per model, the time per op type from ``repeat`` more alternating runs:
ours from timing every kernel call (``perf_counter_ns``, summed per op type, mean per
run), onnxruntime's from its own profiler (``SessionOptions.enable_profiling``: the
``*_kernel_time`` node events), and for each the time outside kernels. The two lists are
printed side by side; onnxruntime's graph optimizer fuses nodes (e.g. LayerNormalization
with the residual Add, Gelu, MatMul+Add into Gemm), so its op types differ from the model's.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
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
from engine.executor import executor_for, unsupported_ops  # noqa: E402


OUTSIDE_KERNELS = "(outside kernels)"


@dataclass(frozen=True)
class BenchResult:
    """One model's comparison; times in ms, ``ratio`` = ours / onnxruntime."""

    model: str
    ours_ms: float | None
    ort_ms: float
    ratio: float | None
    max_rel_err: float | None
    note: str = ""
    best_ratio: float | None = None  # fastest of ours / fastest of onnxruntime's timed runs


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


CLOCKS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}


def _time_ms(fn: Callable[[], object], settle: float = 0.0, clock: str = "wall") -> float:
    """Milliseconds ``fn`` takes on ``clock``: wall time, or the calling thread's CPU time
    (``cpu``: not counting time the thread waits preempted by other processes; meaningful
    only single-threaded, where both sides compute in the calling thread)."""
    if settle > 0:
        time.sleep(settle)
    now = CLOCKS[clock]
    start = now()
    fn()
    return (now() - start) / 1e6


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return options


def bench_one(
    name: str,
    proto: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    warmup: int,
    repeat: int,
    threads: int = 0,
    settle: float = 0.0,
    clock: str = "wall",
) -> BenchResult:
    session = ort.InferenceSession(proto.SerializeToString(), sess_options=_session_options(threads))
    out_name = proto.graph.output[0].name
    ref = session.run([out_name], feeds)[0]
    model = engine.model_from_proto(proto)
    missing = unsupported_ops(model)
    if missing:
        ort_times = [_time_ms(lambda: session.run(None, feeds), settle, clock) for _ in range(warmup + repeat)][warmup:]
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
        ours_times.append(_time_ms(lambda: engine.run(model, feeds), settle, clock))
        ort_times.append(_time_ms(lambda: session.run(None, feeds), settle, clock))
    ours_ms, ort_ms = statistics.median(ours_times), statistics.median(ort_times)
    return BenchResult(name, ours_ms, ort_ms, ours_ms / ort_ms, err, best_ratio=min(ours_times) / min(ort_times))


def per_op(
    proto: onnx.ModelProto, feeds: dict[str, np.ndarray], warmup: int, repeat: int, threads: int, settle: float = 0.0
) -> tuple[dict[str, tuple[float, int]], dict[str, tuple[float, int]]]:
    """(ours, onnxruntime's): op type -> (mean ms per run, nodes of that type), plus
    ``OUTSIDE_KERNELS`` -> (run time not spent in kernels, 0).

    Ours from timing every kernel call of the float executor (``run`` and ``run_reusing``);
    onnxruntime's from its own profiler (``*_kernel_time`` events of the optimized graph, so
    its op types are the fused ones). The two sides' runs alternate, like the timed runs.
    """
    plan = executor_for(engine.model_from_proto(proto))
    totals: dict[str, int] = collections.defaultdict(int)
    calls: dict[str, int] = collections.defaultdict(int)
    for kernel in plan.kernels:
        for attr in ("run", "run_reusing"):
            inner = getattr(kernel, attr)

            def timed(*args: object, _inner: Callable[..., tuple] = inner, _op: str = kernel.node.op_type) -> tuple:
                start = time.perf_counter_ns()
                try:
                    return _inner(*args)
                finally:
                    totals[_op] += time.perf_counter_ns() - start
                    calls[_op] += 1

            setattr(kernel, attr, timed)
    options = _session_options(threads)
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort_profile")
        session = ort.InferenceSession(proto.SerializeToString(), sess_options=options)
        for _ in range(warmup):
            plan.run(feeds)
            session.run(None, feeds)
        totals.clear()
        calls.clear()
        ours_wall = ort_wall = 0.0
        for _ in range(repeat):
            ours_wall += _time_ms(lambda: plan.run(feeds), settle)
            ort_wall += _time_ms(lambda: session.run(None, feeds), settle)
        events = json.loads(Path(session.end_profiling()).read_text())
    ours = {op: (ns / repeat / 1e6, calls[op] // repeat) for op, ns in totals.items()}
    ours[OUTSIDE_KERNELS] = (ours_wall / repeat - sum(v[0] for v in ours.values()), 0)

    per_node: dict[str, list[int]] = collections.defaultdict(list)  # node -> durations (us) in run order
    op_of: dict[str, str] = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        node = event["name"][: -len("_kernel_time")]
        per_node[node].append(int(event["dur"]))
        op_of[node] = str(event.get("args", {}).get("op_name", "?"))
    ort_ms: dict[str, float] = collections.defaultdict(float)
    ort_count: dict[str, int] = collections.defaultdict(int)
    for node, durations in per_node.items():
        timed_runs = durations[warmup:] or durations
        ort_ms[op_of[node]] += sum(timed_runs) / len(timed_runs) / 1e3
        ort_count[op_of[node]] += 1
    theirs = {op: (ms, ort_count[op]) for op, ms in ort_ms.items()}
    theirs[OUTSIDE_KERNELS] = (ort_wall / repeat - sum(v[0] for v in theirs.values()), 0)
    return ours, theirs


def print_per_op(ours: dict[str, tuple[float, int]], theirs: dict[str, tuple[float, int]]) -> None:
    """Two columns sorted by time: our op types and onnxruntime's, ms per run (node count);
    the last row of each is the run time spent outside kernels (executor / session overhead,
    timer overhead included; profiling runs are slower than the timed ones)."""
    left = sorted(((k, v) for k, v in ours.items() if k != OUTSIDE_KERNELS), key=lambda kv: -kv[1][0])
    right = sorted(((k, v) for k, v in theirs.items() if k != OUTSIDE_KERNELS), key=lambda kv: -kv[1][0])
    left.append((OUTSIDE_KERNELS, ours[OUTSIDE_KERNELS]))
    right.append((OUTSIDE_KERNELS, theirs[OUTSIDE_KERNELS]))
    print(f"    {'ours: op type':30s} {'ms':>8s}    {'onnxruntime: op type':30s} {'ms':>8s}")
    for i in range(max(len(left), len(right))):
        a = (left[i][0] + (f" ({left[i][1][1]})" if left[i][1][1] else "")) if i < len(left) else ""
        a_ms = f"{left[i][1][0]:8.3f}" if i < len(left) else " " * 8
        b = (right[i][0] + (f" ({right[i][1][1]})" if right[i][1][1] else "")) if i < len(right) else ""
        b_ms = f"{right[i][1][0]:8.3f}" if i < len(right) else ""
        print(f"    {a:30s} {a_ms}    {b:30s} {b_ms}")
    ours_total = sum(v[0] for v in ours.values())
    ort_total = sum(v[0] for v in theirs.values())
    print(f"    {'run total':30s} {ours_total:8.3f}    {'run total':30s} {ort_total:8.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per model (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per model first")
    parser.add_argument("--only", default="", help="run only models whose name contains this text")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    parser.add_argument("--threads", type=int, default=0, help="pin numpy BLAS and onnxruntime to N threads (0: defaults)")
    parser.add_argument("--per-op", action="store_true", help="also print time per op type, ours and onnxruntime's")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall",
        help="wall time, or the calling thread's CPU time (needs --threads 1; steadier on a shared machine)",
    )
    parser.add_argument(
        "--settle", type=float, default=None,
        help="seconds to sleep before each timed run so the other side's idle threads stop spinning "
        "(default 0.15, or 0 with --threads 1)",
    )
    args = parser.parse_args(argv)
    settle = args.settle if args.settle is not None else (0.0 if args.threads == 1 else 0.15)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1 (other threads' work would not be counted)")

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
        f"median of {args.repeat} after {args.warmup} warm-up, {settle:g} s settle, {args.clock} clock"
    )
    print(f"{'model':34s} {'ours ms':>9s} {'ort ms':>9s} {'ratio':>7s} {'best':>6s} {'max rel err':>12s}")
    for name, build, make_feeds in _cases():
        if args.only and args.only not in name:
            continue
        proto, feeds = build(), make_feeds()
        r = bench_one(name, proto, feeds, args.warmup, args.repeat, args.threads, settle, args.clock)
        results.append(r)
        if r.ours_ms is None:
            print(f"{r.model:34s} {'-':>9s} {r.ort_ms:9.2f} {'-':>7s} {'-':>6s} {'-':>12s}  {r.note}")
        else:
            print(f"{r.model:34s} {r.ours_ms:9.2f} {r.ort_ms:9.2f} {r.ratio:7.2f} {r.best_ratio:6.2f} {r.max_rel_err:12.2e}")
            if args.per_op:
                print_per_op(*per_op(proto, feeds, args.warmup, args.repeat, args.threads, settle))
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    if limiter is not None:
        limiter.restore_original_limits()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

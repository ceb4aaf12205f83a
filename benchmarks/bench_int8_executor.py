"""Int8 executor vs float executor: median latency ratio (target: at most 1.5).

Run from the project root::

    .venv/bin/python -m benchmarks.bench_int8_executor [--repeat 15] [--warmup 3] [--threads 1] [--rounds 1] [--json out.json]

For each model (the BERT-style encoder at hidden 256, seq 128, 2 layers; the CNN, 4 blocks,
width 32, 64x64) it builds a min/max plan from 4 random inputs (the tests' minimal plan:
per-channel int8 weights, symmetric int8 activations, pass-through parameters
propagated; GELU subgraphs and MatMul + bias pairs run as fused units, the plan's default),
then times ``Int8Executor.run`` (every op with an integer kernel on its integer path; the BERT encoder twice: Softmax/GELU/LayerNorm on the I-BERT integer
kernels, then on the float fallback) and the float executor
``engine.run`` on the same input, alternating the two. The median of ``repeat`` runs
after ``warmup`` of each is reported in ms with the ratio int8 / float (lower is better),
the median of the per-pair ratios (each int8 run over the float run right after it: less
sensitive to load that drifts during the measurement on a shared machine), and the int8
output's cosine similarity and SQNR against the float output. ``--rounding`` picks the
requantization rounding (default ``half_even_float``). ``--rounds N`` measures every
model N times and closes with the best, median and worst ratio over the rounds.

``--threads N`` pins numpy's BLAS to N threads (threadpoolctl), the steadier comparison
on a shared machine.
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

import engine  # noqa: E402
from benchmarks.models import bert_encoder, bert_feeds, cnn, cnn_feeds  # noqa: E402
from engine.int8 import Int8Executor  # noqa: E402
from engine.quant.metrics import compare  # noqa: E402
from engine.quant.qparams import QuantScheme  # noqa: E402
from tests.engine.int8.helpers import minmax_plan  # noqa: E402


@dataclass(frozen=True)
class Int8BenchResult:
    """One model: times in ms, ``ratio`` = int8 / float; agreement of the int8 output."""

    model: str
    int8_ms: float
    float_ms: float
    ratio: float
    ratio_pairs: float
    cosine: float
    sqnr_db: float
    integer_nodes: int
    fallback_nodes: int


def _cases() -> list[tuple[str, Callable[[], onnx.ModelProto], Callable[[int], dict[str, np.ndarray]]]]:
    return [
        (
            "bert seq128 h256 x2",
            lambda: bert_encoder(layers=2, hidden=256, heads=4, ffn=1024, seq=128),
            lambda seed: bert_feeds(seq=128, masked=0, seed=seed),
        ),
        ("cnn 4 blocks w32 64x64", lambda: cnn(blocks=4, width=32, image=64), lambda seed: cnn_feeds(image=64, seed=seed)),
    ]


def _time_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e6


NONLINEAR_OPS = ("Softmax", "LayerNormalization", "Erf", "Gelu", "Sigmoid")


def bench_one(
    name: str,
    proto: onnx.ModelProto,
    make_feeds: Callable[[int], dict[str, np.ndarray]],
    warmup: int,
    repeat: int,
    rounding: str,
    nonlinear: str = "integer",
) -> Int8BenchResult:
    model = engine.model_from_proto(proto)
    paths = {n.name: nonlinear for n in model.graph.nodes if n.op_type in NONLINEAR_OPS}
    plan = minmax_plan(model, [make_feeds(seed) for seed in range(1, 5)], QuantScheme(), rounding, paths)  # type: ignore[arg-type]
    executor = Int8Executor(model, plan)
    feeds = make_feeds(0)
    out_name = model.graph.output_names[0]
    ref = engine.run(model, feeds)[out_name]
    result = executor.run(feeds)
    stats = compare(ref, result.values[out_name])
    for _ in range(warmup):
        executor.run(feeds)
        engine.run(model, feeds)
    int8_times: list[float] = []
    float_times: list[float] = []
    for _ in range(repeat):
        int8_times.append(_time_ms(lambda: executor.run(feeds)))
        float_times.append(_time_ms(lambda: engine.run(model, feeds)))
    int8_ms, float_ms = statistics.median(int8_times), statistics.median(float_times)
    pairs = statistics.median(a / b for a, b in zip(int8_times, float_times))
    integer = sum(1 for p in result.paths.values() if p == "integer")
    label = f"{name} ({'I-BERT' if nonlinear == 'integer' else 'fallback'})" if paths else name
    return Int8BenchResult(
        label, int8_ms, float_ms, int8_ms / float_ms, pairs, stats.cosine, stats.sqnr_db, integer, len(result.paths) - integer
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per model (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per model first")
    parser.add_argument("--only", default="", help="run only models whose name contains this text")
    parser.add_argument("--rounding", default="half_even_float", choices=["half_even_float", "fixed_point_half_up"])
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    parser.add_argument("--threads", type=int, default=0, help="pin numpy BLAS to N threads (0: default)")
    parser.add_argument("--rounds", type=int, default=1, help="measure every model this many times (best/median/worst)")
    args = parser.parse_args(argv)

    limiter = None
    if args.threads:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            print("threadpoolctl is not installed: threads not pinned")
        else:
            limiter = threadpool_limits(limits=args.threads, user_api="blas")
    print(f"numpy {np.__version__}, rounding {args.rounding}; median of {args.repeat} after {args.warmup} warm-up")
    print(
        f"{'model':36s} {'int8 ms':>9s} {'float ms':>9s} {'ratio':>6s} {'pairs':>6s} {'cosine':>8s} {'sqnr dB':>8s}"
        f" {'int/fallback':>13s}"
    )
    results: list[Int8BenchResult] = []
    for name, build, make_feeds in _cases():
        if args.only and args.only not in name:
            continue
        proto = build()
        has_nonlinear = any(n.op_type in NONLINEAR_OPS for n in proto.graph.node)
        for nonlinear in ("integer", "float_fallback") if has_nonlinear else ("integer",):
            rounds: list[Int8BenchResult] = []
            for _ in range(max(1, args.rounds)):
                r = bench_one(name, proto, make_feeds, args.warmup, args.repeat, args.rounding, nonlinear)
                rounds.append(r)
                print(
                    f"{r.model:36s} {r.int8_ms:9.2f} {r.float_ms:9.2f} {r.ratio:6.2f} {r.ratio_pairs:6.2f} {r.cosine:8.5f}"
                    f" {r.sqnr_db:8.1f} {r.integer_nodes:6d}/{r.fallback_nodes:<6d}"
                )
                sys.stdout.flush()
            results.extend(rounds)
            if len(rounds) > 1:
                ratios = sorted(r.ratio for r in rounds)
                print(
                    f"{'  over ' + str(len(rounds)) + ' rounds':36s} ratio best {ratios[0]:.2f}"
                    f" median {statistics.median(ratios):.2f} worst {ratios[-1]:.2f}"
                )
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    if limiter is not None:
        limiter.restore_original_limits()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

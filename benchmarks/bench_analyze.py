"""Full ``analyze`` vs onnxruntime's ``quantize_static``: time, and peak memory of calibration.

Run from the project root::

    .venv/bin/python -m benchmarks.bench_analyze [--samples 32] [--methods percentile,entropy] [--json out.json]

Model: the BERT-style encoder of :func:`benchmarks.models.bert_encoder` (2 layers, hidden
256, seq 128, batch 1), saved to a temporary folder with ``samples`` calibration samples
(random token ids, an additive attention mask with the last 16 positions masked) in one
``.npz``.

1. Time, per method: our full analysis (:func:`engine.analysis.run_analysis`: streaming
   calibration, plan, int8 run + float run of every sample with the isolated error of every
   layer, output metrics, histograms, findings with re-evaluated layers) against
   ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel int8 weights, int8
   activations) on the same samples, which only calibrates and writes a QDQ model.
   Ratio = ours / onnxruntime (below 1.0: ours is faster), of the medians of ``--repeat``
   alternating runs of each (a shared 2-core machine varies by +-30 % run to run). The CPU
   seconds each side used (processes and threads together) are printed too: ours spreads
   over worker processes, onnxruntime's calibrator computes its histograms on one thread.
2. Peak memory of calibration alone, per method: each side runs in its own fresh
   subprocess (``--child``) that loads the model, calibrates on the same samples and
   reports its peak resident set size (``VmHWM`` in /proc/self/status; ``ru_maxrss`` would
   include the parent's, inherited across fork + exec) and its RSS before calibrating (after imports and model loading, from /proc), so the
   increase attributable to calibration is shown too. MiB.

Both sides run with their default thread counts. On a loaded machine a multi-threaded
OpenBLAS spin-waits badly (numpy's matmuls, ours); ``OPENBLAS_NUM_THREADS=1`` in the
environment pins numpy's BLAS to one thread (onnxruntime keeps its own pool: quantize_static
offers no session options). The header line says which.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

if __package__ in (None, ""):  # run as a script: make the project root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.models import bert_encoder, bert_feeds  # noqa: E402

ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def _rss_mib() -> float:
    """Current resident set size in MiB (from /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its waited-for children: our
    worker processes, onnxruntime's threads."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_mib() -> float:
    """Peak resident set size of this process so far, MiB: VmHWM of /proc/self/status (not
    ru_maxrss, which Linux carries over from the parent across fork + exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def prepare(folder: Path, samples: int) -> tuple[Path, Path]:
    """Write the model and the calibration .npz; returns their paths."""
    model_path = folder / "bert.onnx"
    onnx.save(bert_encoder(), str(model_path))
    ids, masks = [], []
    for i in range(samples):
        feeds = bert_feeds(seq=128, masked=16, seed=i)
        ids.append(feeds["input_ids"])
        masks.append(feeds["attention_mask"])
    calib_path = folder / "calib.npz"
    np.savez(calib_path, input_ids=np.concatenate(ids), attention_mask=np.concatenate(masks))
    return model_path, calib_path


class _Reader:
    """onnxruntime CalibrationDataReader over the same .npz, one sample per run."""

    def __init__(self, calib_path: Path) -> None:
        with np.load(calib_path) as data:
            self.arrays = {k: data[k] for k in data.files}
        self.count = next(iter(self.arrays.values())).shape[0]
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= self.count:
            return None
        feeds = {k: v[self.i : self.i + 1] for k, v in self.arrays.items()}
        self.i += 1
        return feeds

    def rewind(self) -> None:
        self.i = 0


def ort_quantize(model_path: Path, calib_path: Path, method: str, out_path: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(_Reader, CalibrationDataReader):
        pass

    quantize_static(
        str(model_path),
        str(out_path),
        Reader(calib_path),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, ORT_METHODS[method]),
    )


def ours_analyze(model_path: Path, calib_path: Path, method: str) -> dict:
    from engine import load_model
    from engine.analysis import AnalysisConfig, analysis_document, run_analysis
    from engine.calibrate import data_spec
    from engine.quant.qparams import QuantScheme
    from engine.shards import auto_workers

    model = load_model(str(model_path))
    # the command line's default: one worker process per CPU (onnxruntime uses its thread pool)
    config = AnalysisConfig(scheme=QuantScheme(method=method), workers=auto_workers())
    result = run_analysis(model, data_spec(str(calib_path)), config=config)
    return analysis_document(result)


def child(kind: str, model_path: str, calib_path: str, method: str) -> None:
    """Calibration only, in this fresh process; prints one JSON line with RSS figures."""
    if kind == "ours":
        from engine import load_model
        from engine.calibrate import build_plan, calibrate, data_spec, open_data
        from engine.quant.qparams import QuantScheme

        model = load_model(model_path)
        data = open_data(data_spec(calib_path), model)
        before = _rss_mib()
        t = time.perf_counter()
        stats = calibrate(model, data)
        build_plan(model, stats, QuantScheme(method=method))
        seconds = time.perf_counter() - t
    else:
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator

        class Reader(_Reader, CalibrationDataReader):
            pass

        reader = Reader(Path(calib_path))
        with tempfile.TemporaryDirectory() as tmp:
            before = _rss_mib()
            t = time.perf_counter()
            calibrator = create_calibrator(
                model_path,
                None,
                augmented_model_path=os.path.join(tmp, "augmented.onnx"),
                calibrate_method=getattr(CalibrationMethod, ORT_METHODS[method]),
                extra_options={"symmetric": True},
            )
            calibrator.collect_data(reader)
            calibrator.compute_data()
            seconds = time.perf_counter() - t
    print(json.dumps({"before_mib": before, "peak_mib": _peak_mib(), "seconds": seconds}))


def measure_child(kind: str, model_path: Path, calib_path: Path, method: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_analyze", "--child", kind, str(model_path), str(calib_path), method]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(Path(__file__).resolve().parents[1]))
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32, help="calibration samples (default 32)")
    parser.add_argument("--methods", default="percentile,entropy", help="calibration methods to compare")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each side, alternating (default 5)")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "MODEL", "CALIB", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    import onnxruntime as ort

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    figures: dict[str, dict] = {}
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(
        f"numpy {np.__version__}, onnxruntime {ort.__version__}; BERT encoder 2x256 seq 128, {args.samples} samples; "
        f"numpy BLAS threads: {blas}, cpus: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_path, calib_path = prepare(folder, args.samples)
        print(f"{'method':<11} {'ours analyze s':>15} {'ort quantize_static s':>22} {'ratio':>7}   "
              f"(median of {args.repeat} alternating runs each; min in brackets)")
        for method in methods:
            ours_times: list[float] = []
            ort_times: list[float] = []
            ours_cpu: list[float] = []
            ort_cpu: list[float] = []
            for _ in range(max(1, args.repeat)):
                t, c = time.perf_counter(), _cpu_s()
                doc = ours_analyze(model_path, calib_path, method)
                ours_times.append(time.perf_counter() - t)
                ours_cpu.append(_cpu_s() - c)
                t, c = time.perf_counter(), _cpu_s()
                ort_quantize(model_path, calib_path, method, folder / f"q-{method}.onnx")
                ort_times.append(time.perf_counter() - t)
                ort_cpu.append(_cpu_s() - c)
            ours_s, ort_s = float(np.median(ours_times)), float(np.median(ort_times))
            n_layers = sum(1 for l in doc["layers"] if l.get("sqnr_db_isolated") is not None)
            figures[method] = {"ours_s": ours_s, "ort_s": ort_s, "ratio": ours_s / ort_s,
                               "ours_runs_s": ours_times, "ort_runs_s": ort_times,
                               "ours_cpu_s": float(np.median(ours_cpu)), "ort_cpu_s": float(np.median(ort_cpu)),
                               "layers_rated": n_layers,
                               "findings": len(doc["findings"]), "output_sqnr_db": doc["outputs"][0]["sqnr_db"]}
            print(f"{method:<11} {ours_s:8.2f} [{min(ours_times):4.2f}] {ort_s:15.2f} [{min(ort_times):4.2f}] "
                  f"{ours_s / ort_s:7.2f}   ({n_layers} layers rated both views, {len(doc['findings'])} findings; "
                  f"output SQNR {doc['outputs'][0]['sqnr_db']:.1f} dB; CPU s ours {np.median(ours_cpu):.2f}, "
                  f"onnxruntime {np.median(ort_cpu):.2f})")
            sys.stdout.flush()
        print("peak RSS during calibration only, separate processes (MiB): peak (before calibrating -> increase)")
        print(f"{'method':<11} {'ours':>24} {'onnxruntime':>24} {'ours s':>8} {'ort s':>8}")
        for method in methods:
            ours = measure_child("ours", model_path, calib_path, method)
            theirs = measure_child("ort", model_path, calib_path, method)
            figures[method]["memory"] = {"ours": ours, "ort": theirs}

            def fmt(m: dict) -> str:
                return f"{m['peak_mib']:.0f} ({m['before_mib']:.0f} -> +{m['peak_mib'] - m['before_mib']:.0f})"

            print(f"{method:<11} {fmt(ours):>24} {fmt(theirs):>24} {ours['seconds']:8.2f} {theirs['seconds']:8.2f}")
            sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

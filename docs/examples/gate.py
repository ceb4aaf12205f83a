"""Deployment gate with the Python API: what ``inspector check`` does, from a script.

    .venv/bin/python docs/examples/gate.py [MODEL.onnx] [--config docs/examples/gate.toml]

Without MODEL it checks the bundled ``cnn-digits`` sample on its calibration and labelled
validation sets. Prints one line per gate, writes ``gate-report.xml`` (JUnit) next to the
current folder, and exits 0 when every gate holds, 1 when one fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine import ModelError, load_model
from engine.analysis import AnalysisConfig
from engine.calibrate import data_spec
from engine.fileio import write_text
from engine.gates import Thresholds, check_model, load_thresholds
from engine.samples import get_sample

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="an .onnx file (default: the bundled cnn-digits sample)")
    parser.add_argument("--config", default=str(HERE / "gate.toml"), help="thresholds (TOML)")
    parser.add_argument("--calib", help="calibration data (.npz); default: the sample's")
    parser.add_argument("--labels", help="labelled evaluation data (.npz with the inputs and 'labels')")
    parser.add_argument("--profile", default="journey5", help="NPU profile name or .toml file")
    parser.add_argument("--junit", default="gate-report.xml", help="JUnit XML output")
    args = parser.parse_args(argv)
    try:
        thresholds = load_thresholds(args.config)
        # a stricter per-layer budget for this script only: command-line style override
        thresholds = thresholds.merged(Thresholds(min_layer_sqnr_db=24.0))
        if args.model:
            model = load_model(args.model)
            calib = data_spec(args.calib, limit=64) if args.calib else None  # None: synthetic data
            evaluation = data_spec(args.labels) if args.labels else None
        else:
            sample = get_sample("cnn-digits")
            model = load_model(sample.model)
            calib = data_spec(str(sample.calib))
            evaluation = data_spec(str(sample.val))  # holds the inputs and 'labels'
        report, doc = check_model(
            model,
            thresholds,
            profile=args.profile,
            calib=calib,
            evaluation=evaluation,
            config=AnalysisConfig(batch=32),
        )
        for note in report.notes:
            print(f"note: {note}")
        for line in report.lines():
            print(line)
        print(report.summary())
        # the document holds everything else: e.g. the three layers with the lowest isolated SQNR
        rated = sorted((l for l in doc["layers"] if l.get("sqnr_db_isolated") is not None),
                       key=lambda l: l["sqnr_db_isolated"])
        for layer in rated[:3]:
            print(f"  {layer['name']:<45} {layer['sqnr_db_isolated']:6.1f} dB isolated")
        write_text(args.junit, report.to_junit_xml())
        print(f"wrote {args.junit}")
    except ModelError as e:
        print(f"gate: error: {e}", file=sys.stderr)
        return 2
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())

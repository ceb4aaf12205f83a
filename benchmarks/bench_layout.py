"""Graph layout (and optionally the Qt scene) for a large synthetic model: wall time.

Run from the project root::

    .venv/bin/python -m benchmarks.bench_layout [--layers 150] [--repeat 3] [--scene]

The model is ``benchmarks.models.bert_encoder`` with ``layers`` blocks (34 operator nodes per
block: ``--layers 150`` gives 5,107 nodes with the graph terminals), built with
``engine.model_from_proto``; tensor sizes are tiny because the layout only sees the graph.
Reported: nodes, edges, dummy nodes, layers and scene size of the layout, then the median of
``repeat`` runs of :func:`engine.layout.layout_graph` in s and per node in us. ``--scene``
also times ``widgets.graph_view.GraphView.set_layout`` (offscreen Qt) and one full repaint
of the view at the zoom it opens with.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine
from benchmarks.models import bert_encoder
from engine.layout import GraphLayout, layout_graph


def _median_time(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _scene(layout: GraphLayout, repeat: int) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from widgets.graph_view import GraphView

    app = QApplication.instance() or QApplication([])
    view = GraphView()
    view.resize(1400, 1000)
    view.show()
    build, _ = _median_time(lambda: view.set_layout(layout), repeat)
    app.processEvents()
    paint, _ = _median_time(lambda: view.viewport().repaint(), repeat)
    items = len(view.scene().items())
    print(f"scene build   {build:8.3f} s  ({items} items)")
    print(f"full repaint  {paint * 1e3:8.1f} ms at zoom {view.zoom:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=150, help="encoder blocks (34 nodes each)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scene", action="store_true", help="also time the Qt scene build")
    args = parser.parse_args(argv)

    proto = bert_encoder(layers=args.layers, hidden=16, heads=2, ffn=32, seq=8, vocab=50)
    graph = engine.model_from_proto(proto).graph
    seconds, layout = _median_time(lambda: layout_graph(graph), args.repeat)
    assert isinstance(layout, GraphLayout)
    n = len(layout.nodes)
    print(f"bert_encoder(layers={args.layers}): {n} nodes, {len(layout.edges)} edges, "
          f"{layout.dummies} dummies, {layout.layers} layers, scene {layout.width:.0f} x {layout.height:.0f}")
    print(f"layout        {seconds:8.3f} s  ({seconds / n * 1e6:.0f} us/node, median of {args.repeat})")
    if args.scene:
        _scene(layout, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

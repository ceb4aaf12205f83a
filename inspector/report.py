"""The deployment report: one PDF, drawn with Qt's own PDF writer, and its JSON.

:func:`write_report` lays the report out first (title page, summary, the worst layers with
their histograms and findings, per-layer SQNR, fusions, NPU timelines, roofline, and the full
layer table as an appendix) as a list of pages holding drawing operations, then paints them,
so every footer knows the page count and the contents list knows every section's page.
Charts are vector drawings made with QPainter straight from the data (every axis states its
unit); text is real, searchable text. Fonts: DejaVu Sans with CJK fallbacks (WenQuanYi Micro
Hei is installed by ``scripts/bootstrap.sh``), so a Chinese title renders and is embedded.

Only QPdfWriter, QPainter, QFont and QBuffer are used (never a QWidget): the GUI calls
:func:`write_report` on a worker thread. From a script or the CLI it creates an offscreen
QGuiApplication when none exists. The file is written atomically (``engine.fileio``).

Conventions: the data's times are ns (axes pick ns/µs/ms), sizes are bytes, SQNR is dB
(higher is better); geometry is device pixels at :data:`DPI` (see :func:`mm`, :func:`pt`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PySide6.QtCore import (
    QBuffer,
    QIODevice,
    QMarginsF,
    QPointF,
    QRectF,
    Qt,
)
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetricsF,
    QGuiApplication,
    QPageSize,
    QPainter,
    QPdfWriter,
    QPen,
    QPolygonF,
)

from engine.errors import Cancelled
from engine.fileio import write_bytes
from engine.int8.executor import UNIT_MARKS, UNIT_NAMES
from engine.timeline import time_unit

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]

PAGE_SIZES: dict[str, QPageSize.PageSizeId] = {"A4": QPageSize.PageSizeId.A4, "Letter": QPageSize.PageSizeId.Letter}
DPI = 300
"""Device pixels per inch of the PDF painter (all geometry below is in these pixels)."""
WORST_LAYERS = 10
"""Layers shown in detail: the lowest isolated SQNR first."""
MAX_FINDINGS_LISTED = 40
"""Findings listed in the summary section (all of them are in the JSON)."""
MAX_FUSIONS_LISTED = 60
"""Fusions listed one by one (largest saving first); the pattern table counts all of them."""

# page geometry, mm
MARGIN_X = 18.0
MARGIN_TOP = 22.0
MARGIN_BOTTOM = 20.0
HEADER_Y = 11.0  # baseline region of the running header, from the top edge
FOOTER_Y = 12.0  # from the bottom edge

# Palette: the same colours as widgets/style.py (the GUI's panels), copied here because that
# module pulls in pyqtgraph (~1 s to import) which a headless report does not need;
# tests/inspector/test_report.py checks the two agree.
FOREGROUND = "#2b2f36"
MUTED = "#6b7280"
RULE = "#c8ccd2"
GRID = "#e3e6ea"
ZEBRA = "#f4f6f8"
HEADER_FILL = "#e9eef5"
ACCENT = "#3b6fb6"
LANE_COLORS: dict[str, str] = {
    "dma_in": "#8cb4d9",
    "mac": "#3b6fb6",
    "vector": "#3fa266",
    "float": "#8e5bb8",
    "host": "#d1495b",
    "dma_out": "#e6a04b",
}
LANE_LABELS: dict[str, str] = {
    "dma_in": "DMA in",
    "mac": "MAC array",
    "vector": "vector unit",
    "float": "float unit",
    "host": "host CPU",
    "dma_out": "DMA out",
}
LANE_ORDER = ("dma_in", "mac", "vector", "float", "host", "dma_out")
SERIES: dict[str, str] = {
    "isolated": "#3b6fb6",
    "accumulated": "#d1495b",
    "float_hist": "#7f9cc0",
    "clip": "#d62728",
    "roof": "#2b2f36",
}
SEVERITY_COLORS: dict[str, str] = {"high": "#d62728", "medium": "#f0a202", "low": "#4e79a7"}
PASS_COLOR = "#2e7d32"
FAIL_COLOR = "#c62828"

FONT_FAMILIES = ["DejaVu Sans", "WenQuanYi Micro Hei", "Noto Sans CJK SC", "Droid Sans Fallback"]
MONO_FAMILIES = ["DejaVu Sans Mono", "WenQuanYi Micro Hei Mono", "WenQuanYi Micro Hei", "Noto Sans Mono CJK SC"]
CJK_FAMILIES = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "Noto Sans SC", "Droid Sans Fallback", "AR PL UMing CN")

SQNR_TYPICAL_DB = 30.0
"""Reference line of the SQNR chart: well-quantized int8 layers typically give 30-45 dB."""


def mm(value: float) -> float:
    """Millimetres to device pixels."""
    return value * DPI / 25.4


def pt(value: float) -> float:
    """Points (1/72 inch) to device pixels."""
    return value * DPI / 72.0


# --------------------------------------------------------------------------- formatting


def fmt_db(value: float | None) -> str:
    """SQNR in dB with one decimal; "exact" at the 300 dB cap; "–" when unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value >= 300.0:
        return "exact"
    return f"{value:.1f}"


def fmt_ns(ns: float | None) -> str:
    """A duration in ns with a readable unit (ns, µs, ms, s), three significant digits."""
    if ns is None:
        return "–"
    a = abs(ns)
    for limit, div, unit in ((1e3, 1.0, "ns"), (1e6, 1e3, "µs"), (1e9, 1e6, "ms")):
        if a < limit:
            return f"{ns:.0f} ns" if unit == "ns" else f"{ns / div:#.3g}".rstrip(".") + f" {unit}"
    return f"{ns / 1e9:#.3g}".rstrip(".") + " s"


def fmt_bytes(n: float | None) -> str:
    """Bytes with binary prefixes (B, KiB, MiB, GiB)."""
    if n is None:
        return "–"
    value = float(n)
    if abs(value) < 1024:
        return f"{value:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024.0
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.3g} {unit}" if abs(value) < 100 else f"{value:.0f} {unit}"
    return f"{n} B"


def fmt_count(n: float | None) -> str:
    """A count with an SI suffix (k, M, G, T), three significant digits."""
    if n is None:
        return "–"
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f}"


def fmt_pct(fraction: float | None, digits: int = 2) -> str:
    return "–" if fraction is None else f"{100.0 * fraction:.{digits}f} %"


def _si_tick(value: float) -> str:
    if value == 0:
        return "0"
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


# --------------------------------------------------------------------------- fonts


def _font(size: float, bold: bool = False, mono: bool = False, italic: bool = False) -> QFont:
    """The report's font at ``size`` points (DejaVu with CJK fallbacks)."""
    f = QFont()
    f.setFamilies(MONO_FAMILIES if mono else FONT_FAMILIES)
    f.setStyleHint(QFont.StyleHint.Monospace if mono else QFont.StyleHint.SansSerif)
    f.setPointSizeF(size)
    f.setBold(bold)
    f.setItalic(italic)
    f.setHintingPreference(QFont.HintingPreference.PreferNoHinting)
    # no ligatures: "fi"/"fl" as one glyph would make "float" unsearchable in the PDF
    for tag in ("liga", "clig", "dlig"):
        f.setFeature(QFont.Tag(tag), 0)
    return f


def cjk_font_families() -> list[str]:
    """Installed font families that cover Simplified Chinese (empty: Chinese text would be lost)."""
    from PySide6.QtGui import QFontDatabase

    return list(QFontDatabase.families(QFontDatabase.WritingSystem.SimplifiedChinese))


def _ensure_gui_app() -> None:
    """Fonts need a Qt GUI application: create an offscreen one when the process has none (a
    QApplication, so widgets made later in the same process still work). Only valid on the
    main thread, which is where a process without an application calls this from."""
    if QGuiApplication.instance() is None:
        from PySide6.QtWidgets import QApplication

        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        global _APP
        _APP = QApplication(["inspector-report"])


_APP: Any = None  # the application _ensure_gui_app made (kept alive for the process)

# --------------------------------------------------------------------------- layout engine

Op = Callable[[QPainter], None]


@dataclass
class _Page:
    section: str
    ops: list[Op] = field(default_factory=list)
    title_page: bool = False


@dataclass
class Column:
    """A table column: header, weight among the flexible columns, alignment ("l" or "r")."""

    header: str
    weight: float = 1.0
    align: str = "l"
    elide: Qt.TextElideMode | None = None  # set: a flexible column whose long text is elided
    mono: bool = False
    wrap: bool = False  # a flexible column whose text wraps (rows grow)
    max_mm: float | None = None  # cap on a fixed column's natural width (longer text is elided)


class _Flow:
    """Blocks flowing down pages. Drawing is recorded, not done: :meth:`paint` draws every page
    once the page count is known."""

    def __init__(self, page_w: float, page_h: float, device: Any) -> None:
        self.device = device
        self.page_w = page_w
        self.page_h = page_h
        self.left = mm(MARGIN_X)
        self.right = page_w - mm(MARGIN_X)
        self.top = mm(MARGIN_TOP)
        self.bottom = page_h - mm(MARGIN_BOTTOM)
        self.width = self.right - self.left
        self.pages: list[_Page] = []
        self.y = self.top
        self.section = ""
        self.contents: list[tuple[str, str, int]] = []  # (number, title, page index)
        self._metrics: dict[tuple[float, bool, bool, bool], QFontMetricsF] = {}

    # -- measuring
    def metrics(self, font: QFont) -> QFontMetricsF:
        key = (font.pointSizeF(), font.bold(), font.italic(), font.families() == MONO_FAMILIES)
        m = self._metrics.get(key)
        if m is None:
            m = self._metrics[key] = QFontMetricsF(font, self.device)
        return m

    def text_height(self, text: str, font: QFont, width: float) -> float:
        flags = int(Qt.AlignmentFlag.AlignLeft) | int(Qt.TextFlag.TextWordWrap)
        return self.metrics(font).boundingRect(QRectF(0, 0, width, 1e7), flags, text).height()

    def line_height(self, font: QFont) -> float:
        return self.metrics(font).height()

    # -- pages
    def new_page(self, title_page: bool = False) -> None:
        self.pages.append(_Page(self.section, [], title_page))
        self.y = self.top

    def space_left(self) -> float:
        return self.bottom - self.y

    def need(self, height: float) -> None:
        """Start a new page unless ``height`` fits below the cursor (or the page is empty)."""
        if not self.pages or (height > self.space_left() and self.y > self.top + 1):
            self.new_page()

    def draw(self, op: Op) -> None:
        self.pages[-1].ops.append(op)

    # -- blocks
    def section_heading(self, number: str, title: str) -> None:
        """A numbered top-level section on a new page (listed in the contents)."""
        self.section = f"{number}  {title}" if number else title
        self.new_page()
        self.contents.append((number, title, len(self.pages) - 1))
        font = _font(15, bold=True)
        h = self.line_height(font)
        y = self.y
        text = self.section

        def op(p: QPainter, y: float = y) -> None:
            p.setFont(font)
            p.setPen(QColor(FOREGROUND))
            p.drawText(QRectF(self.left, y, self.width, h), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), text)
            p.setPen(QPen(QColor(ACCENT), pt(1.2)))
            p.drawLine(QPointF(self.left, y + h + mm(1.2)), QPointF(self.right, y + h + mm(1.2)))

        self.draw(op)
        self.y += h + mm(5)

    def heading(self, text: str, keep: float = 0.0, size: float = 10.5, color: str = FOREGROUND) -> None:
        """A sub-heading kept on the page with the next ``keep`` pixels."""
        font = _font(size, bold=True)
        h = self.text_height(text, font, self.width)
        self.need(h + mm(2) + keep)
        y = self.y

        def op(p: QPainter) -> None:
            p.setFont(font)
            p.setPen(QColor(color))
            p.drawText(QRectF(self.left, y, self.width, h + 2), int(Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap), text)

        self.draw(op)
        self.y += h + mm(1.5)

    def paragraph(self, text: str, size: float = 9.0, color: str = FOREGROUND, bold: bool = False, italic: bool = False,
                  indent: float = 0.0, after: float | None = None, bullet: str | None = None,
                  bullet_color: str | None = None, mono: bool = False) -> None:
        """Wrapped text; a ``bullet`` (drawn in ``bullet_color``) hangs left of the text."""
        font = _font(size, bold=bold, italic=italic, mono=mono)
        x = self.left + indent
        w = self.width - indent
        h = self.text_height(text, font, w)
        self.need(h)
        y = self.y

        def op(p: QPainter) -> None:
            if bullet is not None:
                bh = self.line_height(font)
                r = bh * 0.22
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(QColor(bullet_color or FOREGROUND))
                p.drawEllipse(QPointF(x - mm(2.6), y + bh * 0.52), r, r)
                p.setBrush(Qt.BrushStyle.NoBrush)
            p.setFont(font)
            p.setPen(QColor(color))
            p.drawText(QRectF(x, y, w, h + 2), int(Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap), text)

        self.draw(op)
        self.y += h + (mm(1.6) if after is None else after)

    def gap(self, height: float) -> None:
        self.y = min(self.y + height, self.bottom)

    def block(self, height: float, paint: Callable[[QPainter, QRectF], None]) -> None:
        """A fixed-height drawing (a chart) over the full text width."""
        self.need(height)
        rect = QRectF(self.left, self.y, self.width, height)
        self.draw(lambda p: paint(p, rect))
        self.y += height

    def kv_table(self, rows: Sequence[tuple[str, str, bool]], key_width: float = mm(40), size: float = 9.0) -> None:
        """Key / value rows (values wrap; ``mono`` values in the monospace font), rules between."""
        key_font = _font(size, bold=True)
        pad = mm(1.3)
        for key, value, mono in rows:
            val_font = _font(size - (0.5 if mono else 0), mono=mono)
            vw = self.width - key_width
            h = max(self.text_height(value, val_font, vw), self.line_height(key_font)) + 2 * pad
            self.need(h)
            y = self.y

            def op(p: QPainter, y: float = y, h: float = h, key: str = key, value: str = value, vf: QFont = val_font,
                   vw: float = vw) -> None:
                p.setPen(QPen(QColor(GRID), pt(0.5)))
                p.drawLine(QPointF(self.left, y + h), QPointF(self.right, y + h))
                p.setFont(key_font)
                p.setPen(QColor(MUTED))
                p.drawText(QRectF(self.left, y + pad, key_width - mm(2), h), int(Qt.AlignmentFlag.AlignLeft), key)
                p.setFont(vf)
                p.setPen(QColor(FOREGROUND))
                p.drawText(QRectF(self.left + key_width, y + pad, vw, h), int(Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap), value)

            self.draw(op)
            self.y += h
        self.y += mm(3)

    def _column_widths(self, columns: Sequence[Column], cells: Sequence[Sequence[str]], head_m: QFontMetricsF,
                       body_m: QFontMetricsF, mono_m: QFontMetricsF, pad: float) -> tuple[list[float], list[list[float]]]:
        """(column widths, text advance of every cell by column). Fixed columns get their natural
        width (widest cell or header); the rest of the line goes to the flexible ones (eliding
        or wrapping), by weight. Shrinks everything if need be."""
        natural = []
        advances = []
        for j, col in enumerate(columns):
            m = mono_m if col.mono else body_m
            adv = [m.horizontalAdvance(row[j]) for row in cells]
            advances.append(adv)
            widest = max(adv, default=0.0)
            w = max(widest, head_m.horizontalAdvance(col.header)) + 2 * pad + 1
            natural.append(min(w, mm(col.max_mm)) if col.max_mm else w)
        flex = [j for j, c in enumerate(columns) if c.wrap or c.elide is not None]
        fixed = sum(w for j, w in enumerate(natural) if j not in flex)
        widths = list(natural)
        if sum(natural) <= self.width:
            share = flex or list(range(len(columns)))
            extra = self.width - sum(natural)
            total = sum(columns[j].weight for j in share) or 1.0
            for j in share:
                widths[j] += extra * columns[j].weight / total
        elif fixed < self.width * 0.85 and flex:
            room = self.width - fixed
            total = sum(columns[j].weight for j in flex) or 1.0
            for j in flex:
                widths[j] = room * columns[j].weight / total
        else:
            widths = [w * self.width / sum(natural) for w in natural]
        return widths, advances

    def table(self, columns: Sequence[Column], rows: Sequence[Sequence[str]], size: float = 8.0,
              row_colors: Sequence[str | None] | None = None, bold_rows: Iterable[int] = (),
              after: float = mm(4)) -> None:
        """A table with zebra rows and the header repeated on every page. Fixed columns get
        their natural width; flexible ones elide (``elide``) or wrap (``wrap``) long text."""
        head_font = _font(size, bold=True)
        body = _font(size)
        body_mono = _font(size - 0.5, mono=True)
        bold_font = _font(size, bold=True)
        bold_set = set(bold_rows)
        line_h = self.line_height(body)
        row_h = line_h * 1.45
        head_h = self.line_height(head_font) * 1.7
        pad = mm(1.1)
        vpad = (row_h - line_h) / 2
        metrics, metrics_mono = self.metrics(body), self.metrics(body_mono)
        texts = [[str(t) for t in row] for row in rows]
        widths, advances = self._column_widths(columns, texts, self.metrics(head_font), metrics, metrics_mono, pad)
        xs = np.concatenate(([self.left], self.left + np.cumsum(widths)))
        heads = [self.metrics(head_font).elidedText(c.header, Qt.TextElideMode.ElideRight, widths[j] - 2 * pad)
                 for j, c in enumerate(columns)]
        wrap_cols = [j for j, c in enumerate(columns) if c.wrap]
        cells: list[list[str]] = []
        heights: list[float] = []
        for r, row in enumerate(texts):
            out = []
            for j, (col, text) in enumerate(zip(columns, row)):
                if col.wrap or advances[j][r] <= widths[j] - 2 * pad:
                    out.append(text)
                    continue
                m = metrics_mono if col.mono else metrics
                out.append(m.elidedText(text, col.elide or Qt.TextElideMode.ElideRight, widths[j] - 2 * pad))
            cells.append(out)
            h = row_h
            for j in wrap_cols:
                h = max(h, self.text_height(row[j], body, widths[j] - 2 * pad) + 2 * vpad)
            heights.append(h)
        wrap_flags = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap)
        i = 0
        while True:
            first_h = heights[i] if i < len(heights) else row_h
            self.need(head_h + first_h + (row_h * 2 if len(cells) - i > 2 else 0))
            room = self.space_left() - head_h
            stop = i
            used = 0.0
            while stop < len(cells) and (used + heights[stop] <= room or stop == i):
                used += heights[stop]
                stop += 1
            chunk = range(i, stop)
            y0 = self.y

            def op(p: QPainter, y0: float = y0, chunk: range = chunk) -> None:
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(QColor(HEADER_FILL))
                p.drawRect(QRectF(self.left, y0, self.width, head_h))
                p.setFont(head_font)
                p.setPen(QColor(FOREGROUND))
                for j, col in enumerate(columns):
                    align = Qt.AlignmentFlag.AlignRight if col.align == "r" else Qt.AlignmentFlag.AlignLeft
                    p.drawText(QRectF(xs[j] + pad, y0, widths[j] - 2 * pad, head_h),
                               int(align | Qt.AlignmentFlag.AlignVCenter), heads[j])
                y = y0 + head_h
                for k, r in enumerate(chunk):
                    h = heights[r]
                    if k % 2 == 1:
                        p.setPen(Qt.PenStyle.NoPen)
                        p.setBrush(QColor(ZEBRA))
                        p.drawRect(QRectF(self.left, y, self.width, h))
                    color = QColor((row_colors[r] if row_colors is not None else None) or FOREGROUND)
                    for j, col in enumerate(columns):
                        p.setFont(bold_font if r in bold_set else (body_mono if col.mono else body))
                        p.setPen(color)
                        if col.wrap:
                            p.drawText(QRectF(xs[j] + pad, y + vpad, widths[j] - 2 * pad, h), wrap_flags, cells[r][j])
                            continue
                        align = Qt.AlignmentFlag.AlignRight if col.align == "r" else Qt.AlignmentFlag.AlignLeft
                        p.drawText(QRectF(xs[j] + pad, y + vpad, widths[j] - 2 * pad, line_h),
                                   int(align | Qt.AlignmentFlag.AlignVCenter), cells[r][j])
                    y += h
                p.setPen(QPen(QColor(RULE), pt(0.6)))
                p.drawLine(QPointF(self.left, y0 + head_h), QPointF(self.right, y0 + head_h))
                p.drawLine(QPointF(self.left, y), QPointF(self.right, y))
                p.setBrush(Qt.BrushStyle.NoBrush)

            self.draw(op)
            self.y += head_h + used
            i = stop
            if i >= len(cells):
                break
        self.y += after


# --------------------------------------------------------------------------- charts


def _nice_step(span: float, target: int) -> float:
    raw = max(span, 1e-30) / max(target, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * mag >= raw * 0.999:
            return m * mag
    return 10.0 * mag


def nice_ticks(lo: float, hi: float, target: int = 6) -> tuple[np.ndarray, float]:
    """Ticks at multiples of 1, 2, 2.5 or 5 x 10^k covering [lo, hi], and their step."""
    step = _nice_step(hi - lo, target)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = np.arange(start, hi + step * 1e-6, step)
    return ticks, step


def nice_range(lo: float, hi: float, target: int = 6) -> tuple[float, float]:
    """[lo, hi] widened to whole tick steps."""
    if hi <= lo:
        hi = lo + 1.0
    step = _nice_step(hi - lo, target)
    return math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step


def _tick_label(value: float, step: float) -> str:
    """A tick value with as many decimals as the step needs (2.5 -> one, 0.25 -> two)."""
    if abs(value) >= 1e6:
        return _si_tick(value)
    decimals = 0
    while decimals < 8 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6 * max(1.0, step * 10**decimals):
        decimals += 1
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text


class _Axes:
    """A plot area with data ranges; ``log`` axes take data values and map log10 of them."""

    def __init__(self, rect: QRectF, x0: float, x1: float, y0: float, y1: float,
                 xlog: bool = False, ylog: bool = False) -> None:
        self.rect = rect
        self.xlog, self.ylog = xlog, ylog
        self.x0, self.x1 = (math.log10(x0), math.log10(x1)) if xlog else (x0, x1)
        self.y0, self.y1 = (math.log10(y0), math.log10(y1)) if ylog else (y0, y1)

    def px(self, x: np.ndarray | float) -> np.ndarray:
        v = np.log10(np.asarray(x, dtype=np.float64)) if self.xlog else np.asarray(x, dtype=np.float64)
        return self.rect.left() + (v - self.x0) / (self.x1 - self.x0) * self.rect.width()

    def py(self, y: np.ndarray | float) -> np.ndarray:
        v = np.log10(np.asarray(y, dtype=np.float64)) if self.ylog else np.asarray(y, dtype=np.float64)
        return self.rect.bottom() - (v - self.y0) / (self.y1 - self.y0) * self.rect.height()


STACKED_TOP = mm(12.5)
"""Room above a narrow chart's plot for its title and, on a second line, its legend."""


def _plot_rect(outer: QRectF, left: float = mm(15), bottom: float = mm(10.5), top: float = mm(7), right: float = mm(3)) -> QRectF:
    return QRectF(outer.left() + left, outer.top() + top, outer.width() - left - right, outer.height() - top - bottom)


def _draw_frame(p: QPainter, ax: _Axes, xticks: Sequence[float], xlabels: Sequence[str], yticks: Sequence[float],
                ylabels: Sequence[str], xtitle: str, ytitle: str, title: str = "", grid: bool = True,
                legend: Sequence[tuple[str, str, str]] = (), stacked: bool = False) -> None:
    """Grid, frame, tick labels, axis titles, the chart title (above the plot, left) and the
    legend: on the title's line, right-aligned, or (``stacked``, for narrow charts whose plot
    rect leaves ``STACKED_TOP`` above it) on a line of its own under the title."""
    r = ax.rect
    tick_font = _font(6.8)
    label_font = _font(7.5)
    p.setBrush(Qt.BrushStyle.NoBrush)
    xs = ax.px(np.asarray(xticks, dtype=np.float64)) if len(xticks) else np.empty(0)
    ys = ax.py(np.asarray(yticks, dtype=np.float64)) if len(yticks) else np.empty(0)
    if grid:
        p.setPen(QPen(QColor(GRID), pt(0.5)))
        for x in xs:
            if r.left() + 1 < x < r.right() - 1:
                p.drawLine(QPointF(x, r.top()), QPointF(x, r.bottom()))
        for y in ys:
            if r.top() + 1 < y < r.bottom() - 1:
                p.drawLine(QPointF(r.left(), y), QPointF(r.right(), y))
    p.setPen(QPen(QColor(FOREGROUND), pt(0.7)))
    p.drawRect(r)
    p.setFont(tick_font)
    tick = mm(0.9)
    for x, text in zip(xs, xlabels):
        if r.left() - 1 <= x <= r.right() + 1:
            p.drawLine(QPointF(x, r.bottom()), QPointF(x, r.bottom() + tick))
            p.drawText(QRectF(x - mm(12), r.bottom() + tick + mm(0.4), mm(24), mm(3.5)),
                       int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop), text)
    for y, text in zip(ys, ylabels):
        if r.top() - 1 <= y <= r.bottom() + 1:
            p.drawLine(QPointF(r.left() - tick, y), QPointF(r.left(), y))
            p.drawText(QRectF(r.left() - mm(14), y - mm(2), mm(14) - tick - mm(0.6), mm(4)),
                       int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), text)
    p.setFont(label_font)
    p.setPen(QColor(FOREGROUND))
    if xtitle:
        p.drawText(QRectF(r.left(), r.bottom() + mm(5), r.width(), mm(4.5)),
                   int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop), xtitle)
    if ytitle:
        p.save()
        p.translate(r.left() - mm(14.5), r.center().y())
        p.rotate(-90)
        p.drawText(QRectF(-r.height() / 2 - mm(10), 0, r.height() + mm(20), mm(4)),
                   int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop), ytitle)
        p.restore()
    title_y = r.top() - (mm(11.2) if stacked else mm(6.7))
    if title:
        p.setFont(_font(8, bold=True))
        p.drawText(QRectF(r.left(), title_y, r.width(), mm(4.5)),
                   int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), title)
    if legend:
        if stacked:
            _draw_legend(p, r.left(), r.top() - mm(6.2), legend, align="left")
        else:
            _draw_legend(p, r.right(), title_y, legend)


def _draw_legend(p: QPainter, x_at: float, y: float, items: Sequence[tuple[str, str, str]], align: str = "right") -> None:
    """Legend entries (colour, label, kind "box" | "line" | "dot" | "dash") in a row ending at
    ``x_at`` (``align`` "right") or starting there ("left")."""
    font = _font(7)
    m = QFontMetricsF(font, p.device())
    swatch = mm(4)
    widths = [swatch + mm(1.2) + m.horizontalAdvance(label) + mm(3.5) for _, label, _ in items]
    x = x_at - sum(widths) + mm(3.5) if align == "right" else x_at
    p.setFont(font)
    for (color, label, kind), w in zip(items, widths):
        c = QColor(color)
        cy = y + mm(2.2)
        if kind == "box":
            p.setPen(QPen(c.darker(130), pt(0.4)))
            p.setBrush(_alpha(color, 0.7))
            p.drawRect(QRectF(x, cy - mm(1.3), swatch, mm(2.6)))
        elif kind == "dot":
            p.setPen(QPen(c.darker(140), pt(0.4)))
            p.setBrush(_alpha(color, 0.85))
            p.drawEllipse(QPointF(x + swatch / 2, cy), mm(0.9), mm(0.9))
        else:
            pen = QPen(c, pt(1.3))
            if kind == "dash":
                pen.setStyle(Qt.PenStyle.DashLine)
            p.setPen(pen)
            p.drawLine(QPointF(x, cy), QPointF(x + swatch, cy))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.setPen(QColor(FOREGROUND))
        p.drawText(QRectF(x + swatch + mm(1.2), y, w, mm(4.4)), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), label)
        x += w


def _alpha(color: str, alpha: float) -> QColor:
    c = QColor(color)
    c.setAlphaF(alpha)
    return c


def _polyline(xs: np.ndarray, ys: np.ndarray) -> QPolygonF:
    return QPolygonF([QPointF(float(x), float(y)) for x, y in zip(xs, ys)])


def _message(p: QPainter, rect: QRectF, text: str) -> None:
    p.setPen(QPen(QColor(RULE), pt(0.6)))
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawRect(rect)
    p.setFont(_font(8, italic=True))
    p.setPen(QColor(MUTED))
    p.drawText(rect, int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), text)


def merge_intervals(starts: np.ndarray, ends: np.ndarray, min_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Union of intervals, also joining ones less than ``min_gap`` apart (same unit): what a
    chart can show at its resolution. Returns sorted (starts, ends)."""
    if starts.size == 0:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    reach = np.maximum.accumulate(e)
    new = np.empty(s.size, dtype=bool)
    new[0] = True
    new[1:] = s[1:] > reach[:-1] + min_gap
    first = np.flatnonzero(new)
    return s[first], np.maximum.reduceat(e, first)


def _error_hist_chart(p: QPainter, rect: QRectF, layer: Mapping[str, Any]) -> None:
    """Error of one layer in quantization steps: isolated (bars) and accumulated (outline), in % of values."""
    iso = (layer.get("isolated") or {}).get("err_hist_steps")
    acc = (layer.get("accumulated") or {}).get("err_hist_steps")
    hists = [(h, key) for h, key in ((iso, "isolated"), (acc, "accumulated")) if h]
    if not hists:
        _message(p, _plot_rect(rect, top=STACKED_TOP), "no error histogram (the layer has no float output)")
        return
    lo, hi = float(hists[0][0]["lo"]), float(hists[0][0]["hi"])
    bins = len(hists[0][0]["counts"])
    edges = np.linspace(lo, hi, bins + 1)
    shares: list[tuple[np.ndarray, str, float]] = []
    for h, key in hists:
        counts = np.asarray(h["counts"], dtype=np.float64)
        n = counts.sum() + h.get("under", 0) + h.get("over", 0)
        beyond = (h.get("under", 0) + h.get("over", 0)) / n if n else 0.0
        shares.append((100.0 * counts / n if n else counts, key, beyond))
    used = np.flatnonzero(np.any(np.stack([s for s, _, _ in shares]) > 0, axis=0))
    half = 2.0
    if used.size:
        half = max(half, abs(edges[used[0]]), abs(edges[used[-1] + 1]))
    half = min(float(math.ceil(half)), max(abs(lo), abs(hi)))
    top = max(float(s.max()) for s, _, _ in shares) or 1.0
    y0, y1 = nice_range(0.0, top * 1.08, 4)
    r = _plot_rect(rect, top=STACKED_TOP)
    ax = _Axes(r, -half, half, y0, y1)
    xt, xstep = nice_ticks(-half, half, 8)
    yt, ystep = nice_ticks(y0, y1, 4)
    _draw_frame(p, ax, xt, [_tick_label(v, xstep) for v in xt], yt, [_tick_label(v, ystep) for v in yt],
                "error (int8 − float) in output steps", "values (%)",
                "Error, in quantization steps", legend=[(SERIES["isolated"], "isolated", "box"),
                                                        (SERIES["accumulated"], "accumulated", "line")], stacked=True)
    p.save()
    p.setClipRect(r)
    left_px, right_px = ax.px(edges[:-1]), ax.px(edges[1:])
    for share, key, _ in shares:
        keep = share > 0
        tops = ax.py(share)
        if key == "isolated":
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(_alpha(SERIES["isolated"], 0.55))
            p.drawRects([QRectF(float(a), float(t), float(b - a), float(r.bottom() - t))
                         for a, b, t in zip(left_px[keep], right_px[keep], tops[keep])])
        else:
            xs = np.repeat(np.concatenate((left_px, right_px[-1:])), 2)[1:-1]
            ys = np.repeat(tops, 2)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.setPen(QPen(QColor(SERIES["accumulated"]), pt(0.9)))
            p.drawPolyline(_polyline(xs, ys))
    p.restore()


def _activation_chart(p: QPainter, rect: QRectF, view: Mapping[str, Any] | None, tensor: str) -> None:
    """Float histogram of an output tensor (log counts) with the int8 range it is clipped to."""
    r = _plot_rect(rect, top=STACKED_TOP)
    if not view or not view.get("counts"):
        _message(p, r, "no activation histogram for this output (not observed in calibration)")
        return
    counts = np.asarray(view["counts"], dtype=np.float64)
    edges = np.asarray(view["edges"], dtype=np.float64)
    lo, hi = view.get("lo"), view.get("hi")
    xs_all = [edges[0], edges[-1]] + [v for v in (lo, hi) if v is not None]
    x_min, x_max = min(xs_all), max(xs_all)
    pad = 0.04 * (x_max - x_min or 1.0)
    x0, x1 = x_min - pad, x_max + pad
    c_max = max(float(counts.max()), 1.0)
    y1 = 10.0 ** math.ceil(math.log10(c_max) + 0.05)
    y0 = 0.5  # one value still shows as a short bar
    ax = _Axes(r, x0, x1, y0, y1, ylog=True)
    xt, xstep = nice_ticks(x0, x1, 6)
    decades = np.arange(0, round(math.log10(y1)) + 1)
    if decades.size > 6:
        decades = decades[:: math.ceil(decades.size / 6)]
    yt = 10.0 ** decades
    _draw_frame(p, ax, xt, [_tick_label(v, xstep) for v in xt], yt, [_si_tick(v) for v in yt],
                "float value (tensor units)", "count (log)", "Output values vs int8 range",
                legend=[(SERIES["float_hist"], "float values (calibration)", "box"), (SERIES["clip"], "int8 range", "dash")],
                stacked=True)
    p.save()
    p.setClipRect(r)
    keep = counts > 0
    left_px, right_px, tops = ax.px(edges[:-1][keep]), ax.px(edges[1:][keep]), ax.py(counts[keep])
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(_alpha(SERIES["float_hist"], 0.8))
    p.drawRects([QRectF(float(a), float(t), float(max(b - a, pt(0.3))), float(r.bottom() - t))
                 for a, b, t in zip(left_px, right_px, tops)])
    pen = QPen(QColor(SERIES["clip"]), pt(1.0))
    pen.setStyle(Qt.PenStyle.DashLine)
    p.setPen(pen)
    for v in (lo, hi):
        if v is not None:
            x = float(ax.px(v))
            p.drawLine(QPointF(x, r.top()), QPointF(x, r.bottom()))
    p.restore()


def _sqnr_chart(p: QPainter, rect: QRectF, layers: Sequence[Mapping[str, Any]]) -> None:
    """SQNR per layer in execution order: isolated (dots) and accumulated (line), dB."""
    r = _plot_rect(rect, left=mm(15), top=mm(8))
    n = len(layers)
    iso = np.array([np.nan if l.get("sqnr_db_isolated") is None else l["sqnr_db_isolated"] for l in layers], dtype=np.float64)
    acc = np.array([np.nan if l.get("sqnr_db") is None else l["sqnr_db"] for l in layers], dtype=np.float64)
    finite = np.concatenate((iso[np.isfinite(iso) & (iso < 150)], acc[np.isfinite(acc) & (acc < 150)]))
    if n == 0 or (finite.size == 0 and not (np.isfinite(iso).any() or np.isfinite(acc).any())):
        _message(p, r, "no layer has an SQNR (no float outputs)")
        return
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = max(SQNR_TYPICAL_DB + 10, float(finite.max()) + 5) if finite.size else 60.0
    y0, y1 = nice_range(lo, hi, 6)
    x0, x1 = -0.5, n - 0.5
    ax = _Axes(r, x0, x1, y0, y1)
    xt, xstep = nice_ticks(0, max(n - 1, 1), 10)
    xt = xt[xt <= n - 1]
    yt, ystep = nice_ticks(y0, y1, 6)
    _draw_frame(p, ax, xt, [_tick_label(v, max(xstep, 1)) for v in xt], yt, [_tick_label(v, ystep) for v in yt],
                "layer index (execution order, as in the appendix table)", "SQNR (dB, higher is better)",
                f"SQNR of {n} layers", legend=[(SERIES["isolated"], "isolated (only this layer int8)", "dot"),
                                              (SERIES["accumulated"], "accumulated (whole model int8)", "line")])
    p.save()
    p.setClipRect(r.adjusted(-mm(1.5), -mm(1.5), mm(1.5), mm(1.5)))
    ref = QPen(QColor(MUTED), pt(0.7))
    ref.setStyle(Qt.PenStyle.DotLine)
    p.setPen(ref)
    y_ref = float(ax.py(SQNR_TYPICAL_DB))
    p.drawLine(QPointF(r.left(), y_ref), QPointF(r.right(), y_ref))
    p.setFont(_font(6.5))
    p.setPen(QColor(MUTED))
    p.drawText(QRectF(r.right() - mm(40), y_ref - mm(3.6), mm(39), mm(3.4)),
               int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom), f"{SQNR_TYPICAL_DB:g} dB (typical int8 floor)")
    idx = np.arange(n, dtype=np.float64)
    ok = np.isfinite(acc)
    if ok.any():
        p.setPen(QPen(QColor(SERIES["accumulated"]), pt(0.9)))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawPolyline(_polyline(ax.px(idx[ok]), ax.py(np.minimum(acc[ok], y1))))
    ok = np.isfinite(iso)
    if ok.any():
        radius = mm(0.75) if n <= 300 else mm(0.45)
        p.setPen(QPen(QColor(SERIES["isolated"]).darker(130), pt(0.3)))
        p.setBrush(_alpha(SERIES["isolated"], 0.8))
        capped = iso[ok] > y1
        xs, ys = ax.px(idx[ok]), ax.py(np.minimum(iso[ok], y1))
        for x, y in zip(xs[~capped], ys[~capped]):
            p.drawEllipse(QPointF(float(x), float(y)), radius, radius)
        for x, y in zip(xs[capped], ys[capped]):  # off the top: a triangle on the edge
            tri = QPolygonF([QPointF(float(x), float(y)), QPointF(float(x) - radius, float(y) + 1.8 * radius),
                             QPointF(float(x) + radius, float(y) + 1.8 * radius)])
            p.drawPolygon(tri)
    p.restore()


def _timeline_chart(p: QPainter, rect: QRectF, events: Sequence[Any], lanes: Sequence[str], t_max: float,
                    title: str) -> None:
    """Gantt chart: one row per lane, busy intervals as bars (merged below 0.3 pt), time axis."""
    label_w = mm(20)
    r = QRectF(rect.left() + label_w, rect.top() + mm(6.5), rect.width() - label_w - mm(3), rect.height() - mm(6.5) - mm(10.5))
    unit, div = time_unit(t_max)
    x1 = t_max / div if t_max > 0 else 1.0
    ax = _Axes(r, 0.0, x1, 0.0, float(len(lanes)))
    xt, xstep = nice_ticks(0.0, x1, 8)
    _draw_frame(p, ax, xt, [_tick_label(v, xstep) for v in xt], [], [], f"time ({unit})", "", title, grid=True)
    by_lane: dict[str, list[Any]] = {lane: [] for lane in lanes}
    for e in events:
        if e.lane in by_lane:
            by_lane[e.lane].append(e)
    row_h = r.height() / max(len(lanes), 1)
    min_gap = pt(0.3) / r.width() * x1 * div  # ns per 0.3 pt
    p.save()
    p.setClipRect(r)
    for i, lane in enumerate(lanes):
        evs = by_lane[lane]
        top = r.top() + i * row_h
        if i % 2 == 1:
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(_alpha(ZEBRA, 0.9))
            p.drawRect(QRectF(r.left(), top, r.width(), row_h))
        if not evs:
            continue
        s = np.fromiter((e.start_ns for e in evs), dtype=np.float64, count=len(evs))
        e_ = np.fromiter((e.end_ns for e in evs), dtype=np.float64, count=len(evs))
        s, e_ = merge_intervals(s, e_, min_gap)
        xs, xe = ax.px(s / div), ax.px(e_ / div)
        xe = np.maximum(xe, xs + pt(0.35))
        color = QColor(LANE_COLORS.get(lane, MUTED))
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(color)
        p.drawRects([QRectF(float(a), top + row_h * 0.18, float(b - a), row_h * 0.64) for a, b in zip(xs, xe)])
    p.restore()
    p.setPen(QPen(QColor(FOREGROUND), pt(0.7)))
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawRect(r)
    p.setFont(_font(7))
    for i, lane in enumerate(lanes):
        top = r.top() + i * row_h
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(LANE_COLORS.get(lane, MUTED)))
        p.drawRect(QRectF(rect.left(), top + row_h / 2 - mm(1), mm(2), mm(2)))
        p.setPen(QColor(FOREGROUND))
        p.drawText(QRectF(rect.left() + mm(3), top, label_w - mm(4), row_h),
                   int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), LANE_LABELS.get(lane, lane))


@dataclass(frozen=True)
class Roof:
    """A roofline roof: the DRAM slope (``kind`` "memory", ``peak`` in GB/s) or a compute
    ceiling (``peak`` in GOP/s, flat from ``ridge`` ops/byte on)."""

    key: str
    kind: str
    label: str
    peak: float
    ridge: float


def profile_roofs(profile: Any, lanes: Iterable[str] = ()) -> list[Roof]:
    """The profile's roofs, as the GUI's roofline panel draws them (widgets/roofline.py)."""
    bw = profile.dram_bytes_per_ns

    def rate(gops: float, unit: str = "OP/s") -> str:
        return f"{gops / 1e3:g} T{unit}" if gops >= 1e3 else f"{gops:g} G{unit}"

    roofs = [Roof("dram", "memory", f"DRAM {profile.dram_gbps:g} GB/s", bw, 0.0)]
    ceilings = [
        ("mac", f"MAC array {rate(profile.mac_ops_per_ns(1))} int8", profile.mac_ops_per_ns(1)),
        ("vector", f"vector unit {rate(profile.vector_ops_per_ns)}", profile.vector_ops_per_ns),
    ]
    if profile.has_float_unit:
        ceilings.append(("float", f"float unit {rate(profile.float_flops_per_ns, 'FLOP/s')}", profile.float_flops_per_ns))
    if "host" in set(lanes):
        ceilings.append(("host", f"host CPU {rate(profile.host_flops_per_ns, 'FLOP/s')}", profile.host_flops_per_ns))
    return roofs + [Roof(k, "compute", label, peak, peak / bw) for k, label, peak in ceilings]


def _roofline_chart(p: QPainter, rect: QRectF, layers: Sequence[Any], profile: Any) -> int:
    """Log-log roofline: every launched op at (ops / DRAM byte, GOP/s) under the profile's roofs.
    Returns how many ops could not be placed (no DRAM traffic or no ops)."""
    r = _plot_rect(rect, left=mm(15), top=mm(8))
    ops = np.array([l.ops for l in layers], dtype=np.float64)
    est = np.array([l.est_ns for l in layers], dtype=np.float64)
    x = np.array([np.nan if l.intensity is None else l.intensity for l in layers], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(est > 0, ops / est, np.nan)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    lanes = np.array([l.lane for l in layers], dtype=object)
    roofs = profile_roofs(profile, set(lanes.tolist()))
    ceilings = [rf for rf in roofs if rf.kind == "compute"]
    top = max(rf.peak for rf in ceilings)
    xs_all = np.concatenate((x[ok], [rf.ridge for rf in ceilings]))
    ys_all = np.concatenate((y[ok], [top]))
    x_lo = 10.0 ** math.floor(math.log10(max(xs_all.min(), 1e-6)) - 0.3)
    x_hi = 10.0 ** math.ceil(math.log10(xs_all.max()) + 0.3)
    y_lo = 10.0 ** math.floor(math.log10(max(ys_all.min(), 1e-9)) - 0.3)
    y_hi = 10.0 ** math.ceil(math.log10(top) + 0.5)
    ax = _Axes(r, x_lo, x_hi, y_lo, y_hi, xlog=True, ylog=True)

    def decades(lo: float, hi: float) -> np.ndarray:
        d = np.arange(round(math.log10(lo)), round(math.log10(hi)) + 1)
        step = max(1, math.ceil(d.size / 9))
        return 10.0 ** d[::step]

    xt, yt = decades(x_lo, x_hi), decades(y_lo, y_hi)
    present = [lane for lane in LANE_ORDER if (ok & (lanes == lane)).any()]
    _draw_frame(p, ax, xt, [_si_tick(v) for v in xt], yt, [_si_tick(v) for v in yt],
                "arithmetic intensity (ops / DRAM byte, log scale)", "attained throughput (GOP/s, log scale)",
                f"Roofline on {profile.name} ({int(ok.sum())} ops)",
                legend=[(LANE_COLORS[l], LANE_LABELS[l], "dot") for l in present])
    p.save()
    p.setClipRect(r)
    bw = roofs[0].peak
    p.setPen(QPen(QColor(SERIES["roof"]), pt(1.2)))
    xx = np.array([x_lo, top / bw])
    p.drawPolyline(_polyline(ax.px(xx), ax.py(xx * bw)))
    label_font = _font(6.5)
    p.setFont(label_font)
    for rf in ceilings:
        pen = QPen(QColor(LANE_COLORS.get(rf.key, SERIES["roof"])).darker(115), pt(1.0))
        if rf.key != "mac":
            pen.setStyle(Qt.PenStyle.DashLine)
        p.setPen(pen)
        yv = float(ax.py(rf.peak))
        p.drawLine(QPointF(float(ax.px(max(rf.ridge, x_lo))), yv), QPointF(r.right(), yv))
        p.setPen(QColor(FOREGROUND))
        p.drawText(QRectF(r.right() - mm(60), yv - mm(3.6), mm(59), mm(3.4)),
                   int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom), rf.label)
    # DRAM slope label near the lower-left end of the slope
    p.save()
    lx, ly = float(ax.px(x_lo * 2.2)), float(ax.py(x_lo * 2.2 * bw))
    dx = float(ax.px(x_lo * 22) - ax.px(x_lo * 2.2))
    dy = float(ax.py(x_lo * 22 * bw) - ax.py(x_lo * 2.2 * bw))
    p.translate(lx, ly)
    p.rotate(math.degrees(math.atan2(dy, dx)))
    p.setPen(QColor(FOREGROUND))
    p.drawText(QRectF(0, -mm(3.8), mm(45), mm(3.4)), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom), roofs[0].label)
    p.restore()
    radius = mm(0.9) if ok.sum() <= 400 else mm(0.6)
    for lane in present:
        sel = ok & (lanes == lane)
        c = QColor(LANE_COLORS.get(lane, MUTED))
        p.setPen(QPen(c.darker(140), pt(0.35)))
        p.setBrush(_alpha(LANE_COLORS.get(lane, MUTED), 0.8))
        for px_, py_ in zip(ax.px(x[sel]), ax.py(y[sel])):
            p.drawEllipse(QPointF(float(px_), float(py_)), radius, radius)
    p.restore()
    return int((~ok).sum())


# --------------------------------------------------------------------------- facts


def file_sha256(path: str) -> str | None:
    """SHA-256 (hex) of a file, read in 1 MiB chunks; None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def scheme_text(plan: Mapping[str, Any] | None) -> str:
    """The quantization scheme in words (from the document's ``plan``)."""
    if not plan:
        return "none (quantization analysis skipped)"
    s = plan.get("scheme") or {}
    parts = [
        f"{s.get('activation_dtype', 'int8')} activations",
        "symmetric" if s.get("symmetric", True) else "asymmetric",
        f"{s.get('weight_dtype', 'int8')} weights per-{'channel' if s.get('weight_per_channel', True) else 'tensor'}",
    ]
    if s.get("power_of_two"):
        parts.append("power-of-two scales")
    text = ", ".join(parts)
    if plan.get("rounding"):
        text += f"; rounding {plan['rounding']}"
    if plan.get("source") == "qdq":
        text += "; scales from the model's Q/DQ nodes"
    return text


def calibration_text(doc: Mapping[str, Any]) -> str:
    cal = doc.get("calibration")
    if not cal:
        return "none (quantization analysis skipped)"
    if cal.get("method") == "qdq":
        return "none: scales and zero points read from the model's QuantizeLinear/DequantizeLinear nodes"
    method = str(cal.get("method"))
    if cal.get("percentile") is not None:
        method += f" ({cal['percentile']:g} percentile)"
    data = "SYNTHETIC random data (ranges are not representative)" if cal.get("synthetic") else str(cal.get("data"))
    return f"{method}, {cal.get('samples')} samples of {data}"


def evaluation_text(doc: Mapping[str, Any]) -> str:
    ev = doc.get("evaluation")
    if not ev:
        return "none"
    data = "SYNTHETIC random data" if ev.get("synthetic") else str(ev.get("data"))
    return f"{ev.get('samples')} samples of {data}{', with labels' if ev.get('labels') else ''}"


def report_facts(model: Any, doc: Mapping[str, Any], npu_report: Any = None, title: str | None = None,
                 page_size: str = "A4", info: Any = None, now: _dt.datetime | None = None) -> dict[str, Any]:
    """Title-page facts (also the JSON's ``report`` section): model, SHA-256, opset, date,
    profile, scheme, calibration, app version, and the headline figures (ns, MACs, params)."""
    from inspector import __version__

    if info is None:
        from engine.summary import model_info

        info = model_info(model)
    now = now or _dt.datetime.now().astimezone()
    cal = doc.get("calibration") or {}
    tl = doc.get("timeline") or {}
    prof = doc.get("profile") or {}
    return {
        "title": title or f"Deployment report: {model.name}",
        "model_name": model.name,
        "model_file": os.path.abspath(model.path) if model.path else "",
        "sha256": file_sha256(model.path) if model.path else None,
        "opset": model.opset,
        "ir_version": model.ir_version,
        "producer": model.producer,
        "date": now.isoformat(timespec="seconds"),
        "profile": prof.get("name"),
        "profile_source": prof.get("source"),
        "scheme": scheme_text(doc.get("plan")),
        "calibration_method": cal.get("method"),
        "calibration_samples": cal.get("samples"),
        "calibration_synthetic": cal.get("synthetic"),
        "app_version": __version__,
        "page_size": page_size,
        "nodes": info.nodes,
        "params": info.params,
        "param_bytes": info.param_bytes,
        "macs": info.macs,
        "est_ns_unfused": tl.get("total_ns_unfused"),
        "est_ns_fused": tl.get("total_ns"),
    }


def report_document(doc: Mapping[str, Any], facts: Mapping[str, Any]) -> dict[str, Any]:
    """The report's JSON: the analysis document (``deployment_document``) plus ``report``."""
    out = dict(doc)
    out["report"] = dict(facts)
    return out


# --------------------------------------------------------------------------- sections


def _unit_tag(layer: Mapping[str, Any], gelu: str, bias: str) -> str:
    """``gelu`` or ``bias`` for a fused unit's member, by its kind ('' for a node run alone)."""
    if not layer.get("fused_unit"):
        return ""
    return bias if layer.get("fused_kind") == "bias" else gelu


def _worst_layers(doc: Mapping[str, Any], count: int = WORST_LAYERS) -> list[Mapping[str, Any]]:
    rated = [l for l in doc.get("layers", []) if l.get("sqnr_db_isolated") is not None]
    rated.sort(key=lambda l: l["sqnr_db_isolated"])
    return rated[:count]


@dataclass(frozen=True)
class GateRow:
    """One gate of the verdict as the report prints it."""

    name: str
    measured: str
    threshold: str
    passed: bool
    detail: str


def verdict_rows(verdict: Any) -> tuple[bool | None, list[GateRow]]:
    """(passed, rows) of a gate evaluation (``engine.gates.GateReport`` or its ``to_dict()``);
    (None, []) without one. A gate the document could not measure shows "not measured"."""
    if verdict is None:
        return None, []
    d = verdict.to_dict() if hasattr(verdict, "to_dict") else dict(verdict)
    rows = []
    for g in d.get("results") or []:
        name = str(g.get("name"))
        unit = f" {g['unit']}" if g.get("unit") else ""
        measured, threshold = g.get("measured"), g.get("threshold")
        relation = "≥" if name.startswith("min_") else "≤"
        if measured is None:
            mtext = "not measured"
        elif name == "max_float_ops":
            mtext = f"{int(measured)}{unit}"
        elif name == "min_cosine":
            mtext = f"{measured:.6f}"
        else:
            mtext = f"{measured:.4g}{unit}"
        ttext = "–" if threshold is None else f"{relation} {threshold:g}{unit}"
        rows.append(GateRow(name, mtext, ttext, bool(g.get("passed")), str(g.get("detail") or "")))
    passed = d.get("passed")
    if passed is None:
        passed = bool(rows) and all(r.passed for r in rows)
    return bool(passed), rows


class _Report:
    """Lays the report out on a :class:`_Flow`."""

    def __init__(self, flow: _Flow, model: Any, result: Any, npu: Any, doc: Mapping[str, Any],
                 facts: Mapping[str, Any], info: Any, verdict: Any) -> None:
        self.f = flow
        self.model = model
        self.result = result
        self.npu = npu
        self.doc = doc
        self.facts = facts
        self.info = info
        self.verdict = verdict
        self.quant = doc.get("quantization", True) is not None and "calibration" in doc
        self.findings: list[Mapping[str, Any]] = list(doc.get("findings") or [])

    # ---------------------------------------------------------------- title page
    def title_page(self) -> None:
        f = self.f
        f.section = ""
        f.new_page(title_page=True)
        f.y = f.top + mm(8)
        label_font = _font(9, bold=True)
        y = f.y

        def band(p: QPainter) -> None:
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(ACCENT))
            p.drawRect(QRectF(0, 0, f.page_w, mm(9)))
            p.setFont(label_font)
            p.setPen(QColor(ACCENT))
            p.drawText(QRectF(f.left, y, f.width, mm(5)), int(Qt.AlignmentFlag.AlignLeft), "DEPLOYMENT INSPECTOR · INT8 NPU DEPLOYMENT REPORT")

        f.draw(band)
        f.y += mm(9)
        f.paragraph(str(self.facts["title"]), size=22, bold=True, after=mm(3))
        f.paragraph(f"Model {self.facts['model_name']}", size=13, color=MUTED, after=mm(8))
        sha = self.facts.get("sha256") or "n/a (the model was not read from a file)"
        rows: list[tuple[str, str, bool]] = [
            ("Model file", str(self.facts["model_file"] or "(in memory)"), False),
            ("SHA-256", sha, True),
            ("Opset / IR", f"opset {self.facts['opset']}, IR version {self.facts['ir_version']}"
                           + (f", produced by {self.facts['producer']}" if self.facts.get("producer") else ""), False),
            ("Date", _dt.datetime.fromisoformat(self.facts["date"]).strftime("%Y-%m-%d %H:%M %Z").strip(), False),
            ("NPU profile", self._profile_text(), False),
            ("Quantization scheme", str(self.facts["scheme"]), False),
            ("Calibration", calibration_text(self.doc), False),
            ("Evaluation", evaluation_text(self.doc), False),
            ("App version", f"Deployment Inspector {self.facts['app_version']}", False),
        ]
        f.kv_table(rows)
        f.gap(mm(4))
        f.heading("Contents", size=11)
        self._contents_at = (len(f.pages) - 1, f.y)
        f.y += f.line_height(_font(9)) * 1.6 * 9  # room for the contents list, filled at paint time

    def _profile_text(self) -> str:
        prof = self.doc.get("profile") or {}
        if not prof:
            return "–"
        text = (f"{prof.get('name')}: {prof.get('int8_tops', 0):g} int8 TOPS, {prof.get('vector_gops', 0):g} vector GOP/s, "
                f"DRAM {prof.get('dram_gbps', 0):g} GB/s, SRAM {prof.get('sram_kib', 0):g} KiB, "
                f"{prof.get('op_overhead_ns', 0):g} ns per op launch")
        if prof.get("source"):
            text += f" ({prof['source']})"
        assumed = self.doc.get("assumed_dims") or {}
        if assumed:
            text += "; estimates per sample: " + ", ".join(f"{k}={v}" for k, v in assumed.items()) + " assumed"
        return text

    def paint_contents(self, p: QPainter) -> None:
        f = self.f
        font = _font(9)
        line = f.line_height(font) * 1.6
        y = self._contents_at[1]
        m = QFontMetricsF(font, f.device)
        for number, title, page in f.contents:
            text = f"{number}  {title}" if number else title
            num = str(page + 1)
            p.setFont(font)
            p.setPen(QColor(FOREGROUND))
            p.drawText(QRectF(f.left, y, f.width, line), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), text)
            p.drawText(QRectF(f.left, y, f.width, line), int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), num)
            x0 = f.left + m.horizontalAdvance(text) + mm(2)
            x1 = f.right - m.horizontalAdvance(num) - mm(2)
            pen = QPen(QColor(RULE), pt(0.6))
            pen.setStyle(Qt.PenStyle.DotLine)
            p.setPen(pen)
            p.drawLine(QPointF(x0, y + line * 0.68), QPointF(x1, y + line * 0.68))
            y += line

    # ---------------------------------------------------------------- summary
    def summary(self, number: str) -> None:
        f = self.f
        f.section_heading(number, "Summary")
        doc, info = self.doc, self.info
        tl = doc.get("timeline") or {}
        fused, unfused = tl.get("total_ns"), tl.get("total_ns_unfused")
        ops = Counter(l["op_type"] for l in doc.get("layers", []))
        top_ops = ", ".join(f"{op} {n}" for op, n in ops.most_common(6))
        rows: list[tuple[str, str, bool]] = [
            ("Nodes (ops)", f"{info.nodes:,} nodes of {len(ops)} op types ({top_ops}{', …' if len(ops) > 6 else ''})", False),
            ("Parameters", f"{fmt_count(info.params)} ({fmt_bytes(info.param_bytes)} as stored)", False),
            ("MACs", f"{fmt_count(info.macs)} multiply-accumulates per inference", False),
        ]
        if fused is not None and unfused is not None:
            saved = 100.0 * (1.0 - fused / unfused) if unfused else 0.0
            prof = (doc.get("profile") or {}).get("name", "")
            rows.append(("Est. latency, unfused", f"{fmt_ns(unfused)} on {prof} (cost model, one op per node)", False))
            rows.append(("Est. latency, fused", f"{fmt_ns(fused)} with {len(doc.get('fusions') or [])} fusions ({saved:.1f} % saved)", False))
            layers = [l for l in doc.get("layers", []) if l.get("est_ns") is not None]
            mem = sum(l["est_ns"] for l in layers if l.get("bound") == "memory")
            tot = sum(l["est_ns"] for l in layers) or 1.0
            rows.append(("Memory-bound share", f"{100 * mem / tot:.1f} % of the unfused layer time", False))
        if self.quant:
            for o in doc.get("outputs") or []:
                text = f"SQNR {fmt_db(o.get('sqnr_db'))} dB, cosine {o['cosine']:.5f}" if o.get("cosine") is not None else f"SQNR {fmt_db(o.get('sqnr_db'))} dB"
                if o.get("max_abs_err") is not None:
                    text += f", max |error| {o['max_abs_err']:.4g}"
                if o.get("top1_agreement") is not None:
                    text += f", top-1 agreement {fmt_pct(o['top1_agreement'])}"
                rows.append((f"Output {o['name']}", text, False))
                if o.get("accuracy_float") is not None:
                    delta = 100.0 * (o["accuracy_int8"] - o["accuracy_float"])
                    text = (f"float {fmt_pct(o['accuracy_float'])} vs int8 {fmt_pct(o['accuracy_int8'])} "
                            f"({delta:+.2f} points, {o.get('labelled_samples')} labelled samples)")
                    rows.append((f"Accuracy ({o['name']})", text, False))
            sev = Counter(x.get("severity") for x in self.findings)
            rows.append(("Findings", f"{len(self.findings)}: {sev.get('high', 0)} high, {sev.get('medium', 0)} medium, {sev.get('low', 0)} low", False))
        else:
            rows.append(("Quantization", "analysis skipped (--no-quant): cost model, fusions and timeline only", False))
        passed, gate_rows = verdict_rows(self.verdict)
        if passed is not None:
            failed = [g.name for g in gate_rows if not g.passed]
            rows.append(("Verdict", ("PASS" if passed else "FAIL") + f": {len(gate_rows) - len(failed)} of {len(gate_rows)} gates hold"
                         + (f" (failed: {', '.join(failed)})" if failed else ""), False))
        f.kv_table(rows, key_width=mm(44))
        if passed is not None:
            self._verdict(passed, gate_rows)
        self._op_types()
        if self.quant:
            worst = _worst_layers(self.doc)
            if worst:
                f.heading(f"Worst {len(worst)} layers at a glance (details in section 2)", keep=mm(15))
                cols = [Column("#", align="r"), Column("Layer", elide=Qt.TextElideMode.ElideMiddle), Column("Op"),
                        Column("Isolated dB", align="r"), Column("Accum. dB", align="r"), Column("Cosine", align="r")]
                f.table(cols, [[str(i), l["name"], l["op_type"] + _unit_tag(l, " (GELU unit)", " (MatMul + bias unit)"),
                                fmt_db(l.get("sqnr_db_isolated")), fmt_db(l.get("sqnr_db")),
                                "–" if l.get("cosine") is None else f"{l['cosine']:.5f}"] for i, l in enumerate(worst, 1)])
            self._findings_list()

    def _verdict(self, passed: bool, rows: list[GateRow]) -> None:
        f = self.f
        f.heading(f"Verdict against the thresholds: {'PASS' if passed else 'FAIL'}", keep=mm(20),
                  color=PASS_COLOR if passed else FAIL_COLOR)
        cols = [Column("Gate"), Column("Measured", align="r"), Column("Threshold", align="r"), Column("Result"),
                Column("Where / why", wrap=True)]
        f.table(cols, [[g.name, g.measured, g.threshold, "pass" if g.passed else "FAIL", g.detail] for g in rows],
                row_colors=[None if g.passed else FAIL_COLOR for g in rows])
        notes = (self.verdict.to_dict() if hasattr(self.verdict, "to_dict") else dict(self.verdict)).get("notes") or []
        for note in notes:
            f.paragraph(f"Note: {note}", size=8, color=MUTED, italic=True)

    def _op_types(self) -> None:
        """Nodes, MACs and unfused estimated time per op type, largest time first (top 12)."""
        layers = list(self.doc.get("layers") or [])
        if not layers or all(l.get("est_ns") is None for l in layers):
            return
        by_op: dict[str, list[float]] = {}
        for l in layers:
            acc = by_op.setdefault(l["op_type"], [0, 0.0, 0.0, 0])
            acc[0] += 1
            acc[1] += l.get("macs") or 0
            acc[2] += l.get("est_ns") or 0.0
            acc[3] += 1 if l.get("lane") in ("float", "host") else 0
        total = sum(v[2] for v in by_op.values()) or 1.0
        ordered = sorted(by_op.items(), key=lambda kv: -kv[1][2])
        top = ordered[:12]
        self.f.heading("Time by op type (unfused estimate)", keep=mm(20))
        cols = [Column("Op type", elide=Qt.TextElideMode.ElideRight), Column("Nodes", align="r"), Column("MACs", align="r"),
                Column("Est. time", align="r"), Column("Share", align="r"), Column("Off int8 path", align="r")]
        rows = [[op, str(int(v[0])), fmt_count(v[1]), fmt_ns(v[2]), fmt_pct(v[2] / total, 1), str(int(v[3]))] for op, v in top]
        if len(ordered) > len(top):
            rest = ordered[len(top):]
            rows.append([f"{len(rest)} other op types", str(int(sum(v[0] for _, v in rest))), fmt_count(sum(v[1] for _, v in rest)),
                         fmt_ns(sum(v[2] for _, v in rest)), fmt_pct(sum(v[2] for _, v in rest) / total, 1),
                         str(int(sum(v[3] for _, v in rest)))])
        self.f.table(cols, rows)

    def _findings_list(self) -> None:
        f = self.f
        f.heading(f"Findings ({len(self.findings)})", keep=mm(10))
        if not self.findings:
            f.paragraph("No findings: no layer shows a pattern the rules flag.", color=MUTED, italic=True)
            return
        order = {"high": 0, "medium": 1, "low": 2}
        items = sorted(self.findings, key=lambda x: order.get(x.get("severity", ""), 3))
        for item in items[:MAX_FINDINGS_LISTED]:
            f.paragraph(f"[{item.get('severity')}] {item.get('node')}: {item.get('text')}", size=8.5, indent=mm(4),
                        bullet="•", bullet_color=SEVERITY_COLORS.get(item.get("severity", ""), MUTED))
        if len(items) > MAX_FINDINGS_LISTED:
            f.paragraph(f"… {len(items) - MAX_FINDINGS_LISTED} more findings in the JSON report.", color=MUTED, italic=True)

    # ---------------------------------------------------------------- worst layers
    def worst_layers(self, number: str) -> None:
        f = self.f
        f.section_heading(number, f"The {WORST_LAYERS} worst layers")
        worst = _worst_layers(self.doc)
        if not worst:
            f.paragraph("No layer has an isolated SQNR (nothing was quantized).", color=MUTED, italic=True)
            return
        f.paragraph("Ranked by isolated SQNR (only that layer quantized, its inputs exact): the layers that lose most "
                    "precision on their own. The error histogram is in units of the output's quantization step; "
                    "the distribution shows the float values against the int8 range they are clipped to.",
                    size=8.5, color=MUTED, after=mm(4))
        activations = self.doc.get("activations") or {}
        layers_all = list(self.doc.get("layers") or [])
        by_node: dict[str, list[Mapping[str, Any]]] = {}
        for item in self.findings:
            by_node.setdefault(item.get("node", ""), []).append(item)
        chart_h = mm(47)
        for rank, layer in enumerate(worst, 1):
            name = layer["name"]
            mine = by_node.get(name, [])
            est_h = mm(6) + mm(8) + chart_h + mm(6) + mm(5) * max(1, len(mine))
            f.need(min(est_h, f.bottom - f.top))
            f.heading(f"{rank}. {name}", keep=mm(8) + chart_h)
            op = layer["op_type"] + _unit_tag(layer, " (fused GELU unit)", " (fused MatMul + bias unit)")
            members = [l for l in layers_all if layer.get("fused_unit") and l.get("fused_unit") == layer.get("fused_unit")]
            if len(members) > 1:  # the unit's error covers all its nodes: name them
                op += ": " + ", ".join(f"{m['op_type']} {m['name']}" for m in members if m is not layer) + " and this node"
            clips = [c for c in (layer.get("clip_fraction"), layer.get("outside_fraction")) if c is not None]
            parts = [
                f"{op}, {layer.get('path') or '–'} path",
                f"isolated SQNR {fmt_db(layer.get('sqnr_db_isolated'))} dB",
                f"accumulated {fmt_db(layer.get('sqnr_db'))} dB",
            ]
            if layer.get("cosine") is not None:
                parts.append(f"cosine {layer['cosine']:.5f}")
            if clips:
                parts.append(f"clipped {100 * max(clips):.3f} %")
            if len(members) > 1 and all(m.get("est_ns") is not None for m in members):
                parts.append(f"est. {fmt_ns(sum(m['est_ns'] for m in members))} for the unit's {len(members)} nodes (unfused)")
            elif layer.get("est_ns") is not None:
                parts.append(f"est. {fmt_ns(layer['est_ns'])} ({layer.get('bound')}-bound, {LANE_LABELS.get(layer.get('lane') or '', layer.get('lane'))})")
            f.paragraph(" · ".join(parts), size=8, color=MUTED, after=mm(1.5))
            tensor = (layer.get("outputs") or [""])[0]
            view = activations.get(tensor)

            def charts(p: QPainter, rect: QRectF, layer: Mapping[str, Any] = layer, view: Any = view, tensor: str = tensor) -> None:
                half = (rect.width() - mm(6)) / 2
                _error_hist_chart(p, QRectF(rect.left(), rect.top(), half, rect.height()), layer)
                _activation_chart(p, QRectF(rect.left() + half + mm(6), rect.top(), half, rect.height()), view, tensor)

            f.block(chart_h, charts)
            f.paragraph(self._chart_caption(layer, view, tensor), size=7.5, color=MUTED, after=mm(1.5))
            if mine:
                for item in mine:
                    f.paragraph(f"[{item.get('severity')}] {item.get('text')}", size=8.5, indent=mm(4), bullet="•",
                                bullet_color=SEVERITY_COLORS.get(item.get("severity", ""), MUTED), after=mm(1))
            else:
                f.paragraph("No findings for this layer.", size=8, color=MUTED, italic=True, after=mm(1))
            f.gap(mm(4))

    @staticmethod
    def _chart_caption(layer: Mapping[str, Any], view: Mapping[str, Any] | None, tensor: str) -> str:
        """What the two charts of a worst layer show, in numbers: error beyond the histogram, the
        output tensor's float range and int8 range."""
        parts = []
        iso = ((layer.get("isolated") or {}).get("err_hist_steps")) or {}
        if iso:
            n = sum(iso.get("counts") or []) + iso.get("under", 0) + iso.get("over", 0)
            beyond = (iso.get("under", 0) + iso.get("over", 0)) / n if n else 0.0
            if beyond > 0:
                parts.append(f"Isolated error beyond ±{iso.get('hi', 0):g} steps: {100 * beyond:.3g} % of values")
        if view:
            text = f"Output {tensor}: float range [{view.get('min', 0):.4g}, {view.get('max', 0):.4g}]"
            if view.get("lo") is not None and view.get("hi") is not None:
                text += f", int8 range [{view['lo']:.4g}, {view['hi']:.4g}]"
            qp = view.get("qparams") or {}
            scale = qp.get("scale")
            if isinstance(scale, (int, float)):
                text += f", scale {scale:.4g}"
            parts.append(text)
        return ". ".join(parts) + "." if parts else ""

    # ---------------------------------------------------------------- SQNR chart
    def sqnr(self, number: str) -> None:
        f = self.f
        f.section_heading(number, "Per-layer SQNR")
        f.paragraph("SQNR = 10·log10(Σ float² / Σ (int8 − float)²) in dB, per layer in execution order. Isolated: "
                    "only that layer runs in int8; accumulated: the whole model runs in int8, so error from earlier "
                    "layers adds up. Each bit of precision is about 6 dB. Points above the chart's top are drawn "
                    "as triangles on its edge.", size=8.5, color=MUTED, after=mm(3))
        layers = list(self.doc.get("layers") or [])
        f.block(mm(95), lambda p, r: _sqnr_chart(p, r, layers))
        rated = [l for l in layers if l.get("sqnr_db_isolated") is not None]
        if rated:
            by_op: dict[str, list[float]] = {}
            for l in rated:  # a fused unit's error counts for the unit, not for the op writing its output
                by_op.setdefault(_unit_tag(l, UNIT_NAMES["gelu"] + " unit", UNIT_NAMES["bias"] + " unit") or l["op_type"], []).append(l["sqnr_db_isolated"])
            rows = sorted(((op, np.asarray(v)) for op, v in by_op.items()), key=lambda kv: float(kv[1].min()))
            f.gap(mm(4))
            f.heading("Isolated SQNR by op type", keep=mm(15))
            cols = [Column("Op type", elide=Qt.TextElideMode.ElideRight), Column("Layers", align="r"),
                    Column("Min dB", align="r"), Column("Median dB", align="r"), Column("Max dB", align="r")]
            f.table(cols, [[op, str(v.size), fmt_db(float(v.min())), fmt_db(float(np.median(v))), fmt_db(float(v.max()))]
                           for op, v in rows])

    # ---------------------------------------------------------------- fusions
    def fusions(self, number: str) -> None:
        from engine.fusion import PATTERNS

        f = self.f
        f.section_heading(number, "Fusions")
        fusions = list(self.doc.get("fusions") or [])
        rejected = list(self.doc.get("rejected_fusions") or [])
        desc = {pat.name: pat.description for pat in PATTERNS}
        tl = self.doc.get("timeline") or {}
        if tl:
            saved_ns = (tl.get("total_ns_unfused") or 0.0) - (tl.get("total_ns") or 0.0)
            f.paragraph(f"{len(fusions)} fusions chosen on {tl.get('profile')}: the fused timeline ends after "
                        f"{fmt_ns(tl.get('total_ns'))} instead of {fmt_ns(tl.get('total_ns_unfused'))} "
                        f"({fmt_ns(saved_ns)} saved). {len(rejected)} candidates matched the graph but do not apply.",
                        size=9, after=mm(3))
        if not fusions:
            f.paragraph("No fusion applies to this model on this profile.", color=MUTED, italic=True)
        else:
            groups: dict[str, list[Mapping[str, Any]]] = {}
            for fu in fusions:
                groups.setdefault(fu["pattern"], []).append(fu)
            f.heading("By pattern", keep=mm(15))
            cols = [Column("Pattern"), Column("What it does", wrap=True), Column("Count", align="r"),
                    Column("DRAM saved", align="r"), Column("Time saved", align="r")]
            prow = sorted(groups.items(), key=lambda kv: -sum(x["est_ns_saved"] for x in kv[1]))
            f.table(cols, [[pat, desc.get(pat, ""), str(len(items)), fmt_bytes(sum(x["dram_bytes_saved"] for x in items)),
                            fmt_ns(sum(x["est_ns_saved"] for x in items))] for pat, items in prow])
            shown = min(len(fusions), MAX_FUSIONS_LISTED)
            f.heading(f"All fusions ({len(fusions)}), largest saving first" if shown == len(fusions) else
                      f"The {shown} fusions with the largest saving (of {len(fusions)}; all are in the JSON)", keep=mm(15))
            cols = [Column("#", align="r"), Column("Pattern"), Column("Nodes", align="r"),
                    Column("Covers (first → last node)", elide=Qt.TextElideMode.ElideMiddle),
                    Column("DRAM saved", align="r"), Column("Time saved", align="r")]
            ordered = sorted(fusions, key=lambda x: -x["est_ns_saved"])
            rows = []
            for i, fu in enumerate(ordered[:MAX_FUSIONS_LISTED], 1):
                nodes = fu["nodes"]
                cover = nodes[0] if len(nodes) == 1 else f"{nodes[0]} → {nodes[-1]}"
                rows.append([str(i), fu["pattern"], str(len(nodes)), cover, fmt_bytes(fu["dram_bytes_saved"]), fmt_ns(fu["est_ns_saved"])])
            rows.append(["", f"total of {len(fusions)}", str(sum(len(x["nodes"]) for x in fusions)), "",
                         fmt_bytes(sum(x["dram_bytes_saved"] for x in fusions)), fmt_ns(sum(x["est_ns_saved"] for x in fusions))])
            f.table(cols, rows, bold_rows=[len(rows) - 1])
        if rejected:
            reasons: dict[tuple[str, str], int] = Counter()
            examples: dict[tuple[str, str], str] = {}
            for rj in rejected:
                key = (rj["pattern"], _reason_kind(rj["reason"]))
                reasons[key] += 1
                examples.setdefault(key, rj["reason"])
            f.heading(f"Candidates that do not apply ({len(rejected)})", keep=mm(15))
            cols = [Column("Pattern"), Column("Count", align="r"), Column("Reason (one example)", wrap=True)]
            rows = [[pat, str(n), examples[(pat, kind)]] for (pat, kind), n in
                    sorted(reasons.items(), key=lambda kv: -kv[1])[:25]]
            f.table(cols, rows)
            if len(reasons) > 25:
                f.paragraph(f"… {len(reasons) - 25} more kinds of reasons in the JSON report (rejected_fusions).",
                            size=8, color=MUTED, italic=True)

    # ---------------------------------------------------------------- timeline
    def timeline(self, number: str) -> None:
        f = self.f
        f.section_heading(number, "NPU timeline")
        npu = self.npu
        if npu is None:
            f.paragraph("No NPU report.", color=MUTED, italic=True)
            return
        fused, unfused = npu.timeline, npu.timeline_unfused
        f.paragraph("Estimated schedule on the profile's lanes: DMA loads (DRAM → SRAM), the MAC array, the vector unit "
                    "(and a float unit or the host CPU when ops fall back), and DMA stores, double-buffered. "
                    "Both charts share the time axis, so the fused schedule's gain shows as the shorter bar span.",
                    size=8.5, color=MUTED, after=mm(3))
        lanes = [lane for lane in LANE_ORDER if any(e.lane == lane for e in unfused.events) or any(e.lane == lane for e in fused.events)]
        extra = sorted({e.lane for e in unfused.events} - set(LANE_ORDER))
        lanes += extra
        t_max = max(unfused.total_ns, fused.total_ns)
        h = mm(14) + mm(7.5) * len(lanes) + mm(8)
        f.block(h, lambda p, r: _timeline_chart(p, r, unfused.events, lanes, t_max,
                                                 f"Unfused: {fmt_ns(unfused.total_ns)} ({len(npu.layers)} ops)"))
        f.gap(mm(3))
        f.block(h, lambda p, r: _timeline_chart(p, r, fused.events, lanes, t_max,
                                                 f"Fused: {fmt_ns(fused.total_ns)} ({len(npu.fused_layers)} ops)"))
        f.gap(mm(4))
        f.heading("Lane busy time", keep=mm(20))
        rows = []
        for lane in lanes:
            busy = []
            for tl in (unfused, fused):
                evs = tl.lane_events(lane)
                s = np.fromiter((e.start_ns for e in evs), dtype=np.float64, count=len(evs))
                e_ = np.fromiter((e.end_ns for e in evs), dtype=np.float64, count=len(evs))
                s, e_ = merge_intervals(s, e_, 0.0)
                busy.append((float((e_ - s).sum()), tl.total_ns))
            rows.append([LANE_LABELS.get(lane, lane), fmt_ns(busy[0][0]), fmt_pct(busy[0][0] / busy[0][1] if busy[0][1] else 0.0, 1),
                         fmt_ns(busy[1][0]), fmt_pct(busy[1][0] / busy[1][1] if busy[1][1] else 0.0, 1)])
        cols = [Column("Lane", elide=Qt.TextElideMode.ElideRight), Column("Busy, unfused", align="r"),
                Column("Share", align="r"), Column("Busy, fused", align="r"), Column("Share", align="r")]
        f.table(cols, rows)
        slow = sorted(npu.fused_layers, key=lambda l: -l.est_ns)[:10]
        if slow:
            f.heading("Slowest launched ops (fused)", keep=mm(20))
            cols = [Column("Op", elide=Qt.TextElideMode.ElideMiddle), Column("Type"), Column("Lane"),
                    Column("Bound"), Column("MACs", align="r"), Column("DRAM", align="r"), Column("Est. time", align="r")]
            f.table(cols, [[l.name, l.op_type, LANE_LABELS.get(l.lane, l.lane), l.bound, fmt_count(l.macs),
                            fmt_bytes(l.dram_bytes), fmt_ns(l.est_ns)] for l in slow])

    # ---------------------------------------------------------------- roofline
    def roofline(self, number: str) -> None:
        f = self.f
        f.section_heading(number, "Roofline")
        npu = self.npu
        if npu is None:
            f.paragraph("No NPU report.", color=MUTED, italic=True)
            return
        f.paragraph("Every launched op (after fusion) at its arithmetic intensity (ops per DRAM byte) and attained "
                    "throughput (ops / estimated time, GOP/s). Ops left of a ceiling's ridge are bound by DRAM "
                    "bandwidth; the fixed per-op launch overhead puts small ops far below the roofs.",
                    size=8.5, color=MUTED, after=mm(3))
        layers = list(npu.fused_layers)
        unplaced = [0]

        def draw(p: QPainter, r: QRectF) -> None:
            unplaced[0] = _roofline_chart(p, r, layers, npu.profile)

        f.block(mm(120), draw)
        missing = sum(1 for l in layers if l.intensity is None or l.intensity <= 0 or l.ops <= 0 or l.est_ns <= 0)
        bound = Counter(l.bound for l in layers)
        f.gap(mm(2))
        f.paragraph(f"{len(layers)} launched ops: {bound.get('memory', 0)} memory-bound, {bound.get('compute', 0)} "
                    f"compute-bound. {missing} ops are not on the chart (no DRAM traffic or no arithmetic: "
                    f"everything stays in SRAM, or pure data movement).", size=8.5)

    # ---------------------------------------------------------------- appendix
    def appendix(self, number: str, progress: ProgressFn | None = None) -> None:
        f = self.f
        f.section_heading(number, "Appendix: all layers")
        layers = list(self.doc.get("layers") or [])
        f.paragraph(f"{len(layers)} layers in execution order. dB: SQNR (isolated: only this layer int8; accumulated: "
                    "whole model int8); clip: share of values saturated; est.: unfused cost-model time on the profile; "
                    "DRAM: bytes moved to and from DRAM.", size=8, color=MUTED, after=mm(3))
        E = Qt.TextElideMode.ElideMiddle
        if self.quant:
            cols = [Column("#", align="r"), Column("Layer", 3.0, elide=E), Column("Op", max_mm=30),
                    Column("Path"), Column("Iso dB", align="r"), Column("Acc dB", align="r"), Column("Cosine", align="r"),
                    Column("Clip %", align="r"), Column("Est.", align="r"), Column("Bound"), Column("MACs", align="r"),
                    Column("DRAM", align="r")]
        else:
            cols = [Column("#", align="r"), Column("Layer", 3.0, elide=E), Column("Op", max_mm=30),
                    Column("Unit"), Column("Bound"), Column("MACs", align="r"), Column("DRAM", align="r"),
                    Column("Ops/B", align="r"), Column("Est.", align="r")]
        rows = []
        colors: list[str | None] = []
        worst = {l["name"] for l in _worst_layers(self.doc)}
        for i, l in enumerate(layers):
            if self.quant:
                clips = [c for c in (l.get("clip_fraction"), l.get("outside_fraction")) if c is not None]
                rows.append([str(i), l["name"], l["op_type"] + _unit_tag(l, " " + UNIT_MARKS["gelu"], " " + UNIT_MARKS["bias"]), l.get("path") or "–",
                             fmt_db(l.get("sqnr_db_isolated")), fmt_db(l.get("sqnr_db")),
                             "–" if l.get("cosine") is None else f"{l['cosine']:.5f}",
                             "–" if not clips else f"{100 * max(clips):.3f}", fmt_ns(l.get("est_ns")),
                             l.get("bound") or "–", fmt_count(l.get("macs")), fmt_bytes(l.get("dram_bytes"))])
                colors.append(SERIES["accumulated"] if l["name"] in worst else None)
            else:
                rows.append([str(i), l["name"], l["op_type"], LANE_LABELS.get(l.get("lane") or "", l.get("lane") or "–"),
                             l.get("bound") or "–", fmt_count(l.get("macs")), fmt_bytes(l.get("dram_bytes")),
                             "–" if l.get("intensity") is None else f"{l['intensity']:.3g}", fmt_ns(l.get("est_ns"))])
                colors.append(None)
        if self.quant:  # the legend before the table, which runs over pages
            f.paragraph("·G: part of a fused GELU unit; ·B: part of a MatMul + bias unit (bias added in int32, one "
                        "requantization); a unit's error is reported on the node writing its output, its other "
                        "nodes show –. – also marks nodes without a float output (shape arithmetic, indices). "
                        f"Red rows: the {WORST_LAYERS} worst layers by isolated SQNR (section 2).", size=7.5, color=MUTED, italic=True)
        f.table(cols, rows, size=6.8, row_colors=colors)


def _reason_kind(reason: str) -> str:
    """A rejection reason with node and tensor names and numbers removed, to group alike reasons."""
    import re

    text = re.sub(r"\S*/\S*", "<name>", reason)
    return re.sub(r"\d+(\.\d+)?", "<n>", text)


# --------------------------------------------------------------------------- painting


def _paint(flow: _Flow, writer: QPdfWriter, report: _Report, facts: Mapping[str, Any], progress: ProgressFn | None,
           cancel: CancelFn | None = None) -> None:
    p = QPainter()
    if not p.begin(writer):
        raise RuntimeError("QPainter could not open the PDF writer")
    try:
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        total = len(flow.pages)
        header_font = _font(7.5)
        footer_font = _font(7.5)
        header_title = str(facts["title"])
        date = _dt.datetime.fromisoformat(facts["date"]).strftime("%Y-%m-%d %H:%M")
        footer_left = f"Deployment Inspector {facts['app_version']} · {facts['model_name']} · {date}"
        hm = QFontMetricsF(header_font, writer)
        for i, page in enumerate(flow.pages):
            if cancel is not None and cancel():
                raise Cancelled("report cancelled")
            if i:
                writer.newPage()
            y_head = mm(HEADER_Y)
            if not page.title_page:
                p.setFont(header_font)
                p.setPen(QColor(MUTED))
                right_w = hm.horizontalAdvance(page.section) + mm(2)
                left_text = hm.elidedText(header_title, Qt.TextElideMode.ElideRight, flow.width - right_w - mm(6))
                p.drawText(QRectF(flow.left, y_head - mm(2.5), flow.width, mm(5)), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), left_text)
                p.drawText(QRectF(flow.left, y_head - mm(2.5), flow.width, mm(5)), int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), page.section)
                p.setPen(QPen(QColor(RULE), pt(0.6)))
                p.drawLine(QPointF(flow.left, y_head + mm(3)), QPointF(flow.right, y_head + mm(3)))
            y_foot = flow.page_h - mm(FOOTER_Y)
            p.setPen(QPen(QColor(RULE), pt(0.6)))
            p.drawLine(QPointF(flow.left, y_foot - mm(3)), QPointF(flow.right, y_foot - mm(3)))
            p.setFont(footer_font)
            p.setPen(QColor(MUTED))
            p.drawText(QRectF(flow.left, y_foot - mm(2), flow.width, mm(5)), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                       hm.elidedText(footer_left, Qt.TextElideMode.ElideMiddle, flow.width - mm(30)))
            p.drawText(QRectF(flow.left, y_foot - mm(2), flow.width, mm(5)), int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
                       f"Page {i + 1} of {total}")
            for op in page.ops:
                p.save()
                op(p)
                p.restore()
            if i == report._contents_at[0]:
                report.paint_contents(p)
            if progress is not None:
                progress(i + 1, total)
    finally:
        p.end()


def render_pdf(model: Any, result: Any, npu_report: Any, doc: Mapping[str, Any], page_size: str = "A4",
               progress: ProgressFn | None = None, title: str | None = None, verdict: Any = None,
               facts: Mapping[str, Any] | None = None, cancel: CancelFn | None = None) -> tuple[bytes, dict[str, Any]]:
    """The report as PDF bytes, and its facts (with ``pages``). See :func:`write_report`."""
    from engine.summary import model_info

    if page_size not in PAGE_SIZES:
        raise ValueError(f"page size must be one of {', '.join(PAGE_SIZES)}, got {page_size!r}")
    _ensure_gui_app()
    info = model_info(model)
    facts = dict(facts) if facts is not None else report_facts(model, doc, npu_report, title, page_size, info)
    facts["page_size"] = page_size
    if verdict is not None:
        facts["verdict"] = verdict.to_dict() if hasattr(verdict, "to_dict") else dict(verdict)
    buf = QBuffer()
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    writer = QPdfWriter(buf)
    writer.setResolution(DPI)
    writer.setPageSize(QPageSize(PAGE_SIZES[page_size]))
    writer.setPageMargins(QMarginsF(0, 0, 0, 0))
    writer.setTitle(str(facts["title"]))
    writer.setCreator(f"Deployment Inspector {facts['app_version']}")
    flow = _Flow(float(writer.width()), float(writer.height()), writer)
    rep = _Report(flow, model, result, npu_report, doc, facts, info, verdict)
    rep.title_page()
    n = 1
    rep.summary(str(n))
    if rep.quant:
        n += 1
        rep.worst_layers(str(n))
        n += 1
        rep.sqnr(str(n))
    if npu_report is not None or doc.get("fusions") is not None:
        n += 1
        rep.fusions(str(n))
    if npu_report is not None:
        n += 1
        rep.timeline(str(n))
        n += 1
        rep.roofline(str(n))
    rep.appendix("A")
    if cancel is not None and cancel():
        raise Cancelled("report cancelled")
    _paint(flow, writer, rep, facts, progress, cancel)
    del writer
    buf.close()
    facts["pages"] = len(flow.pages)
    return bytes(buf.data().data()), facts


def write_report(path: str | os.PathLike[str], model: Any, result: Any, npu_report: Any, doc: Mapping[str, Any],
                 page_size: str = "A4", progress: ProgressFn | None = None, *, title: str | None = None,
                 verdict: Any = None, json_path: str | os.PathLike[str] | None = None,
                 cancel: CancelFn | None = None) -> dict[str, Any]:
    """Write the deployment report PDF to ``path`` atomically (and, with ``json_path``, the
    report's JSON: ``deployment_document`` plus a ``report`` section of title-page facts).

    ``result`` None: a cost-model-only report (``--no-quant``). ``verdict``: the gates'
    evaluation (``engine.gates``), shown as the summary's verdict when given.
    ``progress(done, total)`` counts pages painted; ``cancel()`` returning True stops it
    (``engine.errors.Cancelled``, nothing written): the signature fits ``inspector.workers``.
    Returns the facts (with ``pages`` and ``bytes``). Raises ModelError (one line naming the
    path) when a file cannot be written.
    """
    import json

    from engine.fileio import write_text

    data, facts = render_pdf(model, result, npu_report, doc, page_size, progress, title, verdict, cancel=cancel)
    write_bytes(path, data)
    facts["bytes"] = len(data)
    if json_path is not None:
        write_text(json_path, json.dumps(report_document(doc, {k: v for k, v in facts.items() if k != "bytes"}),
                                         indent=1, allow_nan=False))
    return facts

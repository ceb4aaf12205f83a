"""Fusion panel: the fusion opportunities of a profile and the rejected near-misses.

Shows an :class:`engine.fusion.FusionReport` as given: one row per chosen fusion (pattern,
nodes, DRAM bytes saved, estimated time saved; a bar behind each figure shows its share of
the largest) and one row per rejection with the reason. Selecting a row of either table
emits ``fusion_selected`` with the row's graph node names (the graph view highlights them).
``select_node(name)`` selects the row of the fusion that contains ``name`` without emitting.
Bytes are DRAM bytes at the deployed element size; times are ns of the summed roofline time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from PySide6.QtCore import QModelIndex, QRect, Qt, Signal
from PySide6.QtGui import QFontMetrics, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QSplitter,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.fusion import PATTERNS, FusionReport
from engine.timeline import NpuReport
from widgets import style

SORT_ROLE = Qt.ItemDataRole.UserRole  # numeric sort key of a cell
NODES_ROLE = Qt.ItemDataRole.UserRole + 1  # the row's graph node names (column 0)
SHARE_ROLE = Qt.ItemDataRole.UserRole + 2  # 0..1: length of the bar drawn behind the figure
DESCRIPTIONS = {p.name: p.description for p in PATTERNS}
FUSION_COLUMNS = ("#", "Pattern", "Nodes", "DRAM saved", "Time saved")
REJECTED_COLUMNS = ("#", "Pattern", "Nodes", "Why it does not apply")
NODES_SHARE = 0.34  # of the rejected table's width for its Nodes column (the reason gets the rest)
NO_REPORT = ("No fusion report yet: fusions are looked for when a model is open (and again when the NPU "
             "profile changes).")


class _SortItem(QTableWidgetItem):
    """A cell that sorts by its SORT_ROLE value when it has one (numbers), else by text."""

    def __lt__(self, other: QTableWidgetItem) -> bool:  # type: ignore[override]
        a, b = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if a is not None and b is not None:
            return a < b
        return self.text().lower() < other.text().lower()  # (QTableWidgetItem.__lt__ recurses in PySide6)


class _ShareBarDelegate(QStyledItemDelegate):
    """Draws a light bar of length SHARE_ROLE behind the cell's text."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        share = index.data(SHARE_ROLE)
        if isinstance(share, float) and share > 0:
            r: QRect = option.rect.adjusted(2, 3, -2, -3)
            r.setWidth(max(1, int(r.width() * min(share, 1.0))))
            painter.save()
            painter.fillRect(r, style.qcolor(style.SERIES["fused"], 0.28))
            painter.restore()
        super().paint(painter, option, index)


def short_name(node: str) -> str:
    """A node name without its leading ``/``."""
    return node.lstrip("/") or node


def nodes_text(nodes: Sequence[str]) -> str:
    """Node names joined by arrows, a shared path prefix said once:
    ``blocks.0/attn: Reshape_1 → Transpose_2``."""
    paths = [[p for p in n.split("/") if p] or [n] for n in nodes]
    common = 0
    if len(paths) > 1:
        while all(len(p) > common + 1 for p in paths) and len({p[common] for p in paths}) == 1:
            common += 1
    rest = " → ".join("/".join(p[common:]) for p in paths)
    return f"{'/'.join(paths[0][:common])}: {rest}" if common else rest


def _order_item(row: int, nodes: Sequence[str]) -> _SortItem:
    """The "#" cell: position in the report (graph order); carries the row's node names."""
    item = _SortItem(str(row + 1))
    item.setData(SORT_ROLE, row)
    item.setData(NODES_ROLE, list(nodes))
    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    item.setForeground(style.qcolor(style.MUTED))
    return item


@contextmanager
def bulk_fill(t: QTableWidget) -> Iterator[None]:
    """Fill ``t`` without per-cell work: no sorting, no repaints, and no ResizeToContents
    columns while the cells change (each ``setItem`` would measure the whole column again,
    quadratic in the rows: 7 s for 300 rows). Sizes are measured once at the end."""
    h = t.horizontalHeader()
    modes = [h.sectionResizeMode(c) for c in range(t.columnCount())]
    t.setUpdatesEnabled(False)
    h.blockSignals(True)  # no sectionResized -> resizeRowsToContents per column
    for c in range(t.columnCount()):
        if modes[c] == QHeaderView.ResizeMode.ResizeToContents:
            h.setSectionResizeMode(c, QHeaderView.ResizeMode.Interactive)
    try:
        yield
    finally:
        for c, mode in enumerate(modes):
            if mode == QHeaderView.ResizeMode.ResizeToContents:
                h.setSectionResizeMode(c, mode)
        h.blockSignals(False)
        t.setUpdatesEnabled(True)


def _table(columns: Sequence[str]) -> QTableWidget:
    t = QTableWidget(0, len(columns))
    t.setHorizontalHeaderLabels(list(columns))
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.verticalHeader().setVisible(False)
    t.verticalHeader().setDefaultSectionSize(QFontMetrics(style.font()).height() + 8)
    t.setAlternatingRowColors(True)
    t.setWordWrap(True)
    t.setFont(style.font())
    t.horizontalHeader().setFont(style.font(bold=True))
    t.horizontalHeader().setHighlightSections(False)
    # sorted on a header click only: Qt's own sorting (setSortingEnabled) sorts again on
    # every refill, one Python comparison per pair of rows; refills come in sorted order
    h = t.horizontalHeader()
    h.setSectionsClickable(True)
    h.setSortIndicatorShown(True)

    def on_click(column: int) -> None:
        same = h.sortIndicatorSection() == column
        order = (Qt.SortOrder.AscendingOrder if h.sortIndicatorOrder() == Qt.SortOrder.DescendingOrder
                 else Qt.SortOrder.DescendingOrder) if same else Qt.SortOrder.AscendingOrder
        t.sortItems(column, order)
        h.setSortIndicator(column, order)

    h.sectionClicked.connect(on_click)
    return t


class FusionPanel(QWidget):
    """Tables of chosen and rejected fusions (see the module docstring)."""

    fusion_selected = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.report: FusionReport | None = None
        self.summary = QLabel("No fusion report")
        self.summary.setFont(style.font())
        self.summary.setWordWrap(True)

        self.fusions = _table(FUSION_COLUMNS)
        self.fusions.setWordWrap(False)
        self.fusions.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self._bars = _ShareBarDelegate(self.fusions)
        for col in (3, 4):
            self.fusions.setItemDelegateForColumn(col, self._bars)
        h = self.fusions.horizontalHeader()
        for col, mode in enumerate(("fit", "fit", "stretch", "fit", "fit")):
            h.setSectionResizeMode(col, QHeaderView.ResizeMode.Stretch if mode == "stretch" else QHeaderView.ResizeMode.ResizeToContents)
        self.rejected = _table(REJECTED_COLUMNS)
        h = self.rejected.horizontalHeader()
        h.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(2, QHeaderView.ResizeMode.Interactive)
        h.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.rejected.horizontalHeader().sectionResized.connect(lambda *_: self.rejected.resizeRowsToContents())
        self.fusions.itemSelectionChanged.connect(lambda: self._on_selection(self.fusions, self.rejected))
        self.rejected.itemSelectionChanged.connect(lambda: self._on_selection(self.rejected, self.fusions))

        self.fusions_title = QLabel("<b>Fusion opportunities</b>")
        self.rejected_title = QLabel("<b>Rejected</b> (matched the structure, but do not apply)")
        for label in (self.fusions_title, self.rejected_title):
            label.setFont(style.font())
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.fusions_title)
        tl.addWidget(self.fusions, 1)
        bottom = QWidget()
        bl = QVBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addWidget(self.rejected_title)
        bl.addWidget(self.rejected, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(bottom)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)

        self.empty = style.EmptyState(split)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.summary)
        layout.addWidget(self.empty, 1)
        self._emitting = True
        self.clear()

    def clear(self, message: str = NO_REPORT) -> None:
        """Empty tables; ``message`` (rich text) says why in place of them."""
        self.report = None
        self._emitting = False
        try:
            for t in (self.fusions, self.rejected):
                t.clearContents()
                t.setRowCount(0)
        finally:
            self._emitting = True
        self.summary.setText("")
        self.fusions_title.setText("<b>Fusion opportunities</b>")
        self.rejected_title.setText("<b>Rejected</b>: matched the structure, but do not apply")
        self.empty.show_message(message)

    @property
    def message(self) -> str:
        """The explanation shown instead of the tables ("" when a report is shown)."""
        return self.empty.message

    def resizeEvent(self, event: object) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(event)  # type: ignore[arg-type]
        self._fit_rejected_columns()

    def _fit_rejected_columns(self) -> None:
        """Nodes column a share of the width, so the reason (and its header) keeps room."""
        width = self.rejected.viewport().width()
        if width > 0:
            self.rejected.setColumnWidth(2, max(120, int(NODES_SHARE * width)))

    # ------------------------------------------------------------------ data in

    def set_npu_report(self, report: NpuReport) -> None:
        """Show the report's fusions, with both timelines' totals in the summary."""
        self.set_report(report.fusions, report.timeline_unfused.total_ns, report.timeline.total_ns)

    def set_report(self, report: FusionReport, unfused_ns: float | None = None, fused_ns: float | None = None) -> None:
        """Fill both tables; ``unfused_ns`` / ``fused_ns`` (timeline totals, ns) go in the summary."""
        self.report = report
        self._emitting = False
        try:
            with bulk_fill(self.fusions):
                self._fill_fusions(report)
            with bulk_fill(self.rejected):
                self._fill_rejected(report)
            self._fit_rejected_columns()
            self.rejected.resizeRowsToContents()
        finally:
            self._emitting = True
        saved_b = sum(f.dram_bytes_saved for f in report.fusions)
        saved_ns = sum(f.est_ns_saved for f in report.fusions)
        n = len(report.fusions)
        text = (
            f"<b>{report.profile}</b>: {n} fusion{'s' if n != 1 else ''} save "
            f"{style.format_bytes(saved_b)} of DRAM traffic and {style.format_ns(saved_ns)} of op time "
            f"(each measured alone)"
        )
        if unfused_ns is not None and fused_ns is not None:
            text += f"; scheduled timeline {style.format_ns(unfused_ns)} → {style.format_ns(fused_ns)}"
        text += f". {len(report.rejected)} rejected."
        self.summary.setText(text)
        if report.fusions or report.rejected:
            self.empty.show_content()
        else:
            self.empty.show_message(f"No fusion pattern matched this model on {report.profile}: every op "
                                    "runs as its own kernel.")
        self.fusions_title.setText(f"<b>Fusion opportunities</b> ({n})")
        self.rejected_title.setText(f"<b>Rejected</b> ({len(report.rejected)}): matched the structure, but do not apply")

    def _fill_fusions(self, report: FusionReport) -> None:
        t = self.fusions
        t.clearContents()
        t.setRowCount(len(report.fusions))
        max_b = max([f.dram_bytes_saved for f in report.fusions] + [1])
        max_ns = max([f.est_ns_saved for f in report.fusions] + [1e-9])
        # largest time saving first (ties in report order), as a descending sort would give
        ranked = sorted(range(len(report.fusions)), key=lambda i: -report.fusions[i].est_ns_saved)
        for row, index in enumerate(ranked):
            f = report.fusions[index]
            order = _order_item(index, f.nodes)
            pattern = _SortItem(f.pattern)
            pattern.setToolTip(DESCRIPTIONS.get(f.pattern, f.pattern))
            nodes = _SortItem(nodes_text(f.nodes))
            nodes.setToolTip("\n".join(f.nodes))
            dram = _SortItem(style.format_bytes(f.dram_bytes_saved))
            dram.setData(SORT_ROLE, float(f.dram_bytes_saved))
            dram.setData(SHARE_ROLE, f.dram_bytes_saved / max_b)
            dram.setToolTip(f"{f.dram_bytes_saved:,} bytes of DRAM traffic avoided (written once, read back once)")
            ns = _SortItem(style.format_ns(f.est_ns_saved))
            ns.setData(SORT_ROLE, float(f.est_ns_saved))
            ns.setData(SHARE_ROLE, f.est_ns_saved / max_ns)
            ns.setToolTip(f"{f.est_ns_saved:,.0f} ns less summed roofline time when applied alone")
            for item in (dram, ns):
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            for col, item in enumerate((order, pattern, nodes, dram, ns)):
                t.setItem(row, col, item)
        t.horizontalHeader().setSortIndicator(4, Qt.SortOrder.DescendingOrder)

    def _fill_rejected(self, report: FusionReport) -> None:
        t = self.rejected
        t.clearContents()
        t.setRowCount(len(report.rejected))
        for row, r in enumerate(report.rejected):
            order = _order_item(row, r.nodes)
            pattern = _SortItem(r.pattern)
            pattern.setToolTip(DESCRIPTIONS.get(r.pattern, r.pattern))
            nodes = _SortItem(nodes_text(r.nodes))
            nodes.setToolTip("\n".join(r.nodes))
            reason = _SortItem(r.reason)
            reason.setToolTip(r.reason)
            for col, item in enumerate((order, pattern, nodes, reason)):
                t.setItem(row, col, item)
        t.horizontalHeader().setSortIndicator(0, Qt.SortOrder.AscendingOrder)  # graph order

    # ------------------------------------------------------------------ data out

    def fusion_rows(self) -> list[dict[str, object]]:
        """The fusion table as shown (current sort order): pattern, nodes, bytes, ns."""
        return [
            {
                "pattern": self.fusions.item(r, 1).text(),
                "nodes": list(self.fusions.item(r, 0).data(NODES_ROLE)),
                "dram_bytes_saved": int(self.fusions.item(r, 3).data(SORT_ROLE)),
                "est_ns_saved": float(self.fusions.item(r, 4).data(SORT_ROLE)),
            }
            for r in range(self.fusions.rowCount())
        ]

    def rejected_rows(self) -> list[dict[str, object]]:
        """The rejected table as shown: pattern, nodes, reason."""
        return [
            {
                "pattern": self.rejected.item(r, 1).text(),
                "nodes": list(self.rejected.item(r, 0).data(NODES_ROLE)),
                "reason": self.rejected.item(r, 3).text(),
            }
            for r in range(self.rejected.rowCount())
        ]

    def current_data(self) -> dict[str, object]:
        return {"fusions": self.fusion_rows(), "rejected": self.rejected_rows(), "selected": self.selected_nodes()}

    def selected_nodes(self) -> list[str]:
        for t in (self.fusions, self.rejected):
            rows = t.selectionModel().selectedRows()
            if rows:
                return list(t.item(rows[0].row(), 0).data(NODES_ROLE))
        return []

    # ------------------------------------------------------------------ selection

    def select_row(self, table: str, row: int) -> None:
        """Select row ``row`` of the ``"fusions"`` or ``"rejected"`` table (emits ``fusion_selected``)."""
        t = self.fusions if table == "fusions" else self.rejected
        t.selectRow(row)

    def select_node(self, name: str | None) -> bool:
        """Select the fusion containing graph node ``name`` (no signal); None clears.
        Returns whether a chosen fusion contains it."""
        self._emitting = False
        try:
            self.fusions.clearSelection()
            self.rejected.clearSelection()
            if name is None:
                return False
            for r in range(self.fusions.rowCount()):
                if name in self.fusions.item(r, 0).data(NODES_ROLE):
                    self.fusions.selectRow(r)
                    self.fusions.scrollToItem(self.fusions.item(r, 0))
                    return True
            return False
        finally:
            self._emitting = True

    def _on_selection(self, table: QTableWidget, other: QTableWidget) -> None:
        rows = table.selectionModel().selectedRows()
        if not rows:
            return
        if self._emitting:
            other.blockSignals(True)
            other.clearSelection()
            other.blockSignals(False)
            self.fusion_selected.emit(list(table.item(rows[0].row(), 0).data(NODES_ROLE)))

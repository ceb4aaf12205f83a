"""Findings panel: the analysis' plain-language findings, most severe first, each linked to its node.

Shows :class:`engine.findings.Finding` objects as given (the engine writes the sentences and
measures the numbers): a severity icon and colour, the node, the kind and the sentence. Click a
row: ``node_selected(node)`` (and ``finding_selected(index)``, the finding's position in the list
given). ``select_node(name)`` selects the first finding about that node without emitting. A
severity filter hides the less severe rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.findings import SEVERITY_ORDER, Finding
from widgets import style

COLUMNS = ("Severity", "Node", "Kind", "Finding")
INDEX_ROLE = Qt.ItemDataRole.UserRole  # the finding's index in the given list (column 0)
KIND_LABELS = {
    "outlier_channels": "outlier channels",
    "clipping": "clipping",
    "bias": "biased error",
    "error_enters": "error enters",
    "float_fallback": "float fallback",
}
FILTERS = (("All severities", 3), ("Medium and high", 1), ("High only", 0))
NO_ANALYSIS = ("No analysis yet. <b>Run analysis</b> (F5): the findings name the layers whose int8 error "
               "stands out (clipping, outlier channels, biased error) and say why.")
NO_FINDINGS = "Nothing stood out: no layer clips, has outlier channels or a biased error."


class FindingsPanel(QWidget):
    """Table of findings (see the module docstring)."""

    node_selected = Signal(str)
    finding_selected = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.findings: list[Finding] = []
        self._emitting = True

        self.summary = QLabel("No findings")
        self.summary.setFont(style.font())
        self.filter_box = QComboBox()
        self.filter_box.addItems([label for label, _ in FILTERS])
        self.filter_box.currentIndexChanged.connect(lambda _: self._apply_filter())
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.filter_box)

        t = self.table = QTableWidget(0, len(COLUMNS))
        t.setHorizontalHeaderLabels(list(COLUMNS))
        t.verticalHeader().setVisible(False)
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setWordWrap(True)
        t.setFont(style.font())
        t.horizontalHeader().setFont(style.font(bold=True))
        t.horizontalHeader().setHighlightSections(False)
        h = t.horizontalHeader()
        h.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(1, QHeaderView.ResizeMode.Interactive)
        h.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        h.sectionResized.connect(lambda *_: t.resizeRowsToContents())
        t.setColumnWidth(1, 200)
        t.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        t.itemSelectionChanged.connect(self._on_selection)

        self.empty = style.EmptyState(t)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.empty, 1)
        self.clear()

    def clear(self, message: str = NO_ANALYSIS) -> None:
        """No findings; ``message`` (rich text) says why in place of the table."""
        self.set_findings([])
        self.summary.setText("")
        self.empty.show_message(message)

    @property
    def message(self) -> str:
        """The explanation shown instead of the table ("" when findings are shown)."""
        return self.empty.message

    # ------------------------------------------------------------------ data in

    def set_findings(self, findings: Sequence[Finding]) -> None:
        """Show ``findings`` in the order given (the engine sorts them, most severe first)."""
        self.findings = list(findings)
        t = self.table
        self._emitting = False
        try:
            t.clearContents()
            t.setRowCount(len(self.findings))
            for row, f in enumerate(self.findings):
                color = style.SEVERITY_COLORS.get(f.severity, style.MUTED)
                sev = QTableWidgetItem(style.severity_icon(f.severity), style.SEVERITY_LABELS.get(f.severity, f.severity))
                sev.setData(INDEX_ROLE, row)
                sev.setForeground(style.qcolor(color).darker(140))
                sev.setFont(style.font(bold=True))
                node = QTableWidgetItem(f.node.lstrip("/") or f.node)
                node.setToolTip(f.node + (f"\ntensor: {f.tensor}" if f.tensor else ""))
                kind = QTableWidgetItem(KIND_LABELS.get(f.kind, f.kind.replace("_", " ")))
                text = QTableWidgetItem(f.text)
                text.setToolTip(f.text)
                for col, item in enumerate((sev, node, kind, text)):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
                    t.setItem(row, col, item)
            t.resizeRowsToContents()
        finally:
            self._emitting = True
        counts = Counter(f.severity for f in self.findings)
        if self.findings:
            parts = [f"{counts[s]} {s}" for s in sorted(counts, key=lambda s: SEVERITY_ORDER.get(s, 3))]
            n = len(self.findings)
            self.summary.setText(f"<b>{n} finding{'s' if n != 1 else ''}</b>: " + ", ".join(parts))
            self.empty.show_content()
        else:
            self.summary.setText("No findings")
            self.empty.show_message(NO_FINDINGS)
        self._apply_filter()

    def resizeEvent(self, event: object) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(event)  # type: ignore[arg-type]
        self.table.resizeRowsToContents()  # wrapped sentences: row heights follow the width

    def showEvent(self, event: object) -> None:  # noqa: N802
        super().showEvent(event)  # type: ignore[arg-type]
        self.table.resizeRowsToContents()  # laid out while hidden: measure again at the real width

    def _apply_filter(self) -> None:
        limit = FILTERS[self.filter_box.currentIndex()][1]
        for row, f in enumerate(self.findings):
            self.table.setRowHidden(row, SEVERITY_ORDER.get(f.severity, 3) > limit)

    # ------------------------------------------------------------------ data out

    def visible_rows(self) -> list[int]:
        """Indices (into ``findings``) of the rows shown under the current filter."""
        return [r for r in range(self.table.rowCount()) if not self.table.isRowHidden(r)]

    def current_data(self) -> dict[str, object]:
        """Rows shown: severity, node, kind, text; and the selected finding's index."""
        rows = self.visible_rows()
        return {
            "rows": [
                {
                    "severity": self.findings[r].severity,
                    "node": self.findings[r].node,
                    "kind": self.findings[r].kind,
                    "text": self.table.item(r, 3).text(),
                }
                for r in rows
            ],
            "selected": self.selected_index(),
        }

    def selected_index(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return int(self.table.item(rows[0].row(), 0).data(INDEX_ROLE)) if rows else None

    # ------------------------------------------------------------------ selection

    def set_severity_filter(self, minimum: str) -> None:
        """Show findings at least as severe as ``minimum`` (``"low"`` shows all)."""
        level = SEVERITY_ORDER[minimum]
        index = next(i for i, (_, limit) in enumerate(FILTERS) if limit == (3 if level >= 2 else level))
        self.filter_box.setCurrentIndex(index)

    def click_row(self, row: int) -> None:
        """Select row ``row`` as a click would (emits the signals)."""
        self.table.selectRow(row)

    def select_node(self, name: str | None) -> bool:
        """Select the first finding about node ``name`` (no signal); None clears. Returns whether one exists."""
        self._emitting = False
        try:
            self.table.clearSelection()
            if name is None:
                return False
            for r, f in enumerate(self.findings):
                if f.node == name and not self.table.isRowHidden(r):
                    self.table.selectRow(r)
                    self.table.scrollToItem(self.table.item(r, 0))
                    return True
            return False
        finally:
            self._emitting = True

    def _on_selection(self) -> None:
        index = self.selected_index()
        if index is None or not self._emitting:
            return
        self.finding_selected.emit(index)
        self.node_selected.emit(self.findings[index].node)

"""The layer table: one row per node, sortable on raw values and filterable by name/op type.

:class:`LayerTableModel` is a ``QAbstractTableModel`` over plain row objects (anything with
the attributes named in :data:`COLUMNS`, e.g. ``inspector.session.LayerRow``). Display
text, raw sort keys and colours are computed once per update into lists, so ``data()`` is
a lookup and sorting is a numpy ``lexsort`` (empty cells last in both directions), not a
Python comparison per pair: 5,000 rows sort in milliseconds.

:class:`LayerFilterModel` (a ``QSortFilterProxyModel``) filters with a precomputed mask and
hands sorting to the source model. :class:`LayerTable` puts a filter box above the view and
turns row selection into ``node_selected(name)``; :meth:`LayerTable.select_node` selects a
row without emitting (so graph and table can follow each other without loops).

Units: MACs (multiply-accumulates), DRAM bytes, intensity in ops per DRAM byte, est. time in
microseconds, SQNR in dB (higher is better), clip in percent of output values.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QFontMetrics
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QVBoxLayout,
    QWidget,
)

SORT_ROLE = int(Qt.ItemDataRole.UserRole) + 1
"""Role of a cell's raw value (number, string, or None for an empty cell)."""
NAME_ROLE = int(Qt.ItemDataRole.UserRole) + 2
"""Role of the row's node name (any column)."""

NAME_MIN_W = 140
"""Narrowest the node name column gets when the table is narrow (px; names elide at the left)."""
NAME_MAX_W = 360
"""Widest the node name column gets by itself (px)."""
COLUMN_MAX_W = 150
"""Widest any other column gets by itself (px)."""
FIT_SAMPLE = 12
"""Texts measured per column when fitting widths: the longest by character count."""

SQNR_BAD_DB = 20.0
"""SQNR below this is tinted red (roughly: the int8 error is visible in the output)."""
SQNR_WARN_DB = 30.0
"""SQNR below this is tinted amber (below what a well-quantized int8 layer gives)."""
CLIP_WARN = 1e-3
"""Clip fractions above this are tinted amber."""

_RED = QColor("#f8d7d4")
_AMBER = QColor("#fdebc8")
_MEMORY = QColor("#b35a1f")
_COMPUTE = QColor("#2f5f9e")
_FLOAT_PATH = QColor("#8a4f9e")
_NO_KERNEL = QColor("#c92a2a")


def _count(v: Any) -> str:
    n = float(v)
    for limit, suffix in ((1e9, " G"), (1e6, " M"), (1e4, " k")):
        if abs(n) >= limit:
            return f"{n / limit:.3g}{suffix}" if n / limit < 100 else f"{n / limit:,.0f}{suffix}"
    return f"{int(n):,}"


def _bytes(v: Any) -> str:
    value = float(v)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{v} B"


def _db(v: Any) -> str:
    x = float(v)
    if math.isinf(x) or x >= 300.0:
        return "exact" if x > 0 else "-inf"
    return f"{x:.1f}"


def _us(v: Any) -> str:
    us = float(v) / 1e3
    return f"{us:,.3f}" if us < 100 else f"{us:,.1f}"


def _path(v: Any) -> str:
    """The path's words, and a fused unit's mark after them (``"integer ·B"``)."""
    path, sep, unit = str(v).partition(" ·")
    words = {"integer": "integer", "float_fallback": "float fallback", "float": "float", "no kernel": "no kernel"}.get(path, path)
    return words + sep + unit


@dataclass(frozen=True)
class Column:
    """One table column: the row attribute it shows, its title, kind and formatter."""

    key: str
    title: str
    numeric: bool
    fmt: Callable[[Any], str]
    tip: str


COLUMNS: tuple[Column, ...] = (
    Column("index", "#", True, str, "Position in the graph's node order (topological)"),
    Column("name", "Node", False, str, "Node name"),
    Column("op_type", "Op", False, str, "ONNX op type"),
    Column("output_shape", "Output shape", False, str, "Shape of the first output"),
    Column("macs", "MACs", True, _count, "Multiply-accumulates per run"),
    Column("dram_bytes", "DRAM", True, _bytes,
           "Bytes moved to and from DRAM on the selected NPU (int8); before the NPU report, "
           "every input, output and weight at int8"),
    Column("intensity", "Intensity", True, lambda v: f"{float(v):.2f}", "Arithmetic intensity: ops per DRAM byte"),
    Column("est_ns", "Est. µs", True, _us, "Roofline time estimate on the selected NPU profile, microseconds"),
    Column("bound", "Bound", False, str, "Whether compute or memory traffic limits the op on the NPU"),
    Column("path", "int8 path", False, _path,
           "How the int8 model runs the node: integer, float fallback (dequantize, float, requantize) or float; "
           "no kernel: the inspector cannot run this op type. ·B / ·G: part of a MatMul + bias / GELU unit, fused as "
           "an NPU runs them; the unit's error is on the node writing its output (the cell's tooltip says which)"),
    Column("cosine", "Cosine", True, lambda v: f"{float(v):.5f}",
           "Cosine similarity of int8 and float outputs, whole model quantized (1 is best)"),
    Column("sqnr_db_isolated", "SQNR iso", True, _db,
           "SQNR with only this layer quantized, dB (higher is better; 30-45 dB is typical int8)"),
    Column("sqnr_db", "SQNR acc", True, _db,
           "SQNR of this layer's output with the whole model quantized (errors accumulate), dB"),
    Column("clip_fraction", "Clip %", True, lambda v: f"{100.0 * float(v):.3f}",
           "Percent of output values that saturated at the int8 range"),
)
COLUMN_INDEX: dict[str, int] = {c.key: i for i, c in enumerate(COLUMNS)}


def _background(key: str, value: Any) -> QBrush | None:
    if value is None:
        return None
    if key in ("sqnr_db", "sqnr_db_isolated"):
        v = float(value)
        if v < SQNR_BAD_DB:
            return QBrush(_RED)
        if v < SQNR_WARN_DB:
            return QBrush(_AMBER)
    elif key == "clip_fraction" and float(value) > CLIP_WARN:
        return QBrush(_AMBER)
    return None


def _foreground(key: str, value: Any) -> QBrush | None:
    if key == "bound":
        return QBrush(_MEMORY if value == "memory" else _COMPUTE) if value else None
    if key == "path" and str(value).partition(" ·")[0] in ("float", "float_fallback"):
        return QBrush(_FLOAT_PATH)
    if key == "path" and value == "no kernel":
        return QBrush(_NO_KERNEL)
    return None


_TINTED = frozenset({"sqnr_db", "sqnr_db_isolated", "clip_fraction", "bound", "path"})


class LayerTableModel(QAbstractTableModel):
    """Rows of layer facts; ``data(SORT_ROLE)`` gives raw values, ``DisplayRole`` text."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[Any] = []
        self._names: list[str] = []
        self._row_of: dict[str, int] = {}
        self._raw: list[list[Any]] = []  # per column, per row
        self._text: list[list[str]] = []
        self._bg: list[dict[int, QBrush]] = []  # per column: row -> brush (sparse)
        self._fg: list[dict[int, QBrush]] = []
        self._orig: list[int] = []  # node index of each displayed row
        self._sort: tuple[int, Qt.SortOrder] | None = None

    # ------------------------------------------------------------------ content
    def same_nodes(self, rows: Sequence[Any]) -> bool:
        """True when ``rows`` hold exactly the node names shown now (an update, not a new model)."""
        return len(rows) == len(self._names) and {str(r.name) for r in rows} == set(self._row_of)

    def set_rows(self, rows: Sequence[Any]) -> None:
        """Show ``rows``. With the same node names as before, values are updated in place
        (selection and scroll position survive) and the current sort is kept."""
        if self._names and self.same_nodes(rows):
            by_name = {str(r.name): r for r in rows}
            self._fill([by_name[n] for n in self._names])
            self.dataChanged.emit(self.index(0, 0), self.index(self.rowCount() - 1, self.columnCount() - 1))
        else:
            self.beginResetModel()
            self._fill(list(rows))
            self.endResetModel()
        if self._sort is not None:
            self.sort(*self._sort)

    def _fill(self, rows: list[Any]) -> None:
        self._rows = rows
        self._names = [str(r.name) for r in rows]
        self._orig = [int(getattr(r, "index", i)) for i, r in enumerate(rows)]
        self._row_of = {n: i for i, n in enumerate(self._names)}
        self._raw, self._text, self._bg, self._fg = [], [], [], []
        for col in COLUMNS:
            raw = [getattr(r, col.key, None) for r in rows]
            fmt = col.fmt
            self._raw.append(raw)
            self._text.append(["" if v is None else fmt(v) for v in raw])
            bg: dict[int, QBrush] = {}
            fg: dict[int, QBrush] = {}
            if col.key in _TINTED:
                for i, v in enumerate(raw):
                    b = _background(col.key, v)
                    if b is not None:
                        bg[i] = b
                    f = _foreground(col.key, v)
                    if f is not None:
                        fg[i] = f
            self._bg.append(bg)
            self._fg.append(fg)

    def row(self, i: int) -> Any:
        return self._rows[i]

    def name_at(self, i: int) -> str:
        return self._names[i]

    def row_of(self, name: str) -> int | None:
        return self._row_of.get(name)

    def raw(self, row: int, column: int | str) -> Any:
        c = COLUMN_INDEX[column] if isinstance(column, str) else column
        return self._raw[c][row]

    def column_values(self, column: int | str) -> list[Any]:
        """Raw values of one column in display order."""
        c = COLUMN_INDEX[column] if isinstance(column, str) else column
        return list(self._raw[c])

    # ------------------------------------------------------------------ Qt model API
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r, c = index.row(), index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text[c][r]
        if role == SORT_ROLE:
            return self._raw[c][r]
        if role == NAME_ROLE:
            return self._names[r]
        if role == Qt.ItemDataRole.TextAlignmentRole:
            if COLUMNS[c].numeric:
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            return int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.BackgroundRole:
            return self._bg[c].get(r)
        if role == Qt.ItemDataRole.ForegroundRole:
            return self._fg[c].get(r)
        if role == Qt.ItemDataRole.ToolTipRole and COLUMNS[c].key == "name":
            return self._names[r]
        if role == Qt.ItemDataRole.ToolTipRole and COLUMNS[c].key == "path":
            return getattr(self._rows[r], "note", None) or None
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section].title
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section].tip
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort rows by raw value (numbers numerically, text case-insensitively); empty
        cells last in either order; ties keep node order."""
        if not 0 <= column < len(COLUMNS):
            return
        self._sort = (column, order)
        n = len(self._rows)
        if n < 2:
            return
        raw = self._raw[column]
        missing = np.fromiter((v is None for v in raw), dtype=bool, count=n)
        orig = np.asarray(self._orig, dtype=np.int64)
        descending = order == Qt.SortOrder.DescendingOrder
        if COLUMNS[column].numeric:
            keys = np.fromiter((math.nan if v is None else float(v) for v in raw), dtype=np.float64, count=n)
            keys = np.where(np.isnan(keys), 0.0, keys)
            primary = -keys if descending else keys
            perm = np.lexsort((orig, primary, missing))
        else:
            text = np.array(["" if v is None else str(v).lower() for v in raw])
            ranks = np.unique(text, return_inverse=True)[1].astype(np.int64)
            primary = -ranks if descending else ranks
            perm = np.lexsort((orig, primary, missing))
        if np.array_equal(perm, np.arange(n)):
            return
        self.layoutAboutToBeChanged.emit()
        old_persistent = self.persistentIndexList()
        new_pos = np.empty(n, dtype=np.int64)
        new_pos[perm] = np.arange(n)
        p = perm.tolist()
        self._rows = [self._rows[i] for i in p]
        self._names = [self._names[i] for i in p]
        self._orig = [self._orig[i] for i in p]
        self._row_of = {name: i for i, name in enumerate(self._names)}
        self._raw = [[col[i] for i in p] for col in self._raw]
        self._text = [[col[i] for i in p] for col in self._text]
        pos = new_pos.tolist()
        self._bg = [{pos[r]: b for r, b in d.items()} for d in self._bg]
        self._fg = [{pos[r]: b for r, b in d.items()} for d in self._fg]
        self.changePersistentIndexList(
            old_persistent,
            [self.index(pos[i.row()], i.column()) for i in old_persistent],
        )
        self.layoutChanged.emit()


class LayerFilterModel(QSortFilterProxyModel):
    """Keeps rows whose node name or op type contains the filter text (case-insensitive);
    sorting is done by the source model (numpy), so this proxy never compares rows itself."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._text = ""
        self.setDynamicSortFilter(False)

    def set_filter_text(self, text: str) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.10 (invalidateFilter is deprecated)
            self.beginFilterChange()
            self._text = text.strip().lower()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self._text = text.strip().lower()
            self.invalidateRowsFilter()

    @property
    def filter_text(self) -> str:
        return self._text

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:  # noqa: N802
        if not self._text:
            return True
        model = self.sourceModel()
        assert isinstance(model, LayerTableModel)
        if source_row >= model.rowCount():
            return False
        row = model.row(source_row)
        return self._text in str(row.name).lower() or self._text in str(row.op_type).lower()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        model = self.sourceModel()
        if isinstance(model, LayerTableModel):
            model.sort(column, order)


class LayerTable(QWidget):
    """Filter box + table. ``node_selected(name)`` when the user selects a row."""

    node_selected = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = LayerTableModel(self)
        self.proxy = LayerFilterModel(self)
        self.proxy.setSourceModel(self.model)

        self.filter_edit = QLineEdit(self)
        self.filter_edit.setPlaceholderText("Filter layers by name or op type")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self._on_filter)
        self.count_label = QLabel(self)
        self.count_label.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)

        self.view = QTableView(self)
        self.view.setModel(self.proxy)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setAlternatingRowColors(True)
        self.view.setWordWrap(False)
        self.view.setTextElideMode(Qt.TextElideMode.ElideLeft)
        self.view.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.view.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.view.setSortingEnabled(True)  # node order until a header is clicked
        self.view.horizontalHeader().setSortIndicatorShown(True)
        self.view.horizontalHeader().setHighlightSections(False)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.horizontalHeader().setStretchLastSection(False)
        vh = self.view.verticalHeader()
        vh.setVisible(False)
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(QFontMetrics(self.view.font()).height() + 6)
        self.view.selectionModel().currentRowChanged.connect(self._on_current)
        self.proxy.modelReset.connect(self._update_count)
        self.proxy.layoutChanged.connect(self._update_count)
        self.proxy.rowsInserted.connect(self._update_count)
        self.proxy.rowsRemoved.connect(self._update_count)

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.filter_edit, 1)
        top.addWidget(self.count_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        self._syncing = False
        self._name_width = NAME_MIN_W
        self._fit_columns()
        self._update_count()

    # ------------------------------------------------------------------ content
    def set_rows(self, rows: Sequence[Any]) -> None:
        """Show ``rows`` (see :meth:`LayerTableModel.set_rows`); the selection is kept when
        the node names are unchanged."""
        selected = self.selected_node
        fresh = not self.model.same_nodes(rows)
        self._syncing = True
        try:
            self.model.set_rows(rows)
            if fresh:
                self._fit_columns()
            if selected is not None and self.selected_node != selected:
                self.select_node(selected)
        finally:
            self._syncing = False
        self._update_count()

    def clear(self) -> None:
        self.set_rows([])

    def _fit_columns(self) -> None:
        """Column widths from the header and the widest of each column's FIT_SAMPLE longest
        texts (by characters; not a per-row size hint, which would be slow for thousands of
        rows, and few font measurements: each is a call into Qt)."""
        fm = QFontMetrics(self.view.font())
        hfm = QFontMetrics(self.view.horizontalHeader().font())
        n = self.model.rowCount()
        for c, col in enumerate(COLUMNS):
            texts = heapq.nlargest(FIT_SAMPLE, set(self.model._text[c]), key=len) if n else []
            widest = max((fm.horizontalAdvance(t) for t in texts), default=0)
            width = max(hfm.horizontalAdvance(col.title) + 22, widest + 14)
            if col.key == "name":
                self._name_width = min(NAME_MAX_W, max(NAME_MIN_W, width))
            else:
                self.view.setColumnWidth(c, min(COLUMN_MAX_W, max(36, width)))
        self._fit_name_column()

    def _fit_name_column(self) -> None:
        """The node name column takes the width the other columns leave (between NAME_MIN_W
        and its natural width up to NAME_MAX_W)."""
        c = COLUMN_INDEX["name"]
        others = sum(self.view.columnWidth(i) for i in range(len(COLUMNS)) if i != c)
        avail = self.view.viewport().width() - others - 2
        self.view.setColumnWidth(c, int(max(NAME_MIN_W, min(self._name_width, avail))))

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(event)
        self._fit_name_column()

    def _update_count(self, *args: Any) -> None:
        total = self.model.rowCount()
        shown = self.proxy.rowCount()
        self.count_label.setText(f"{total} layers" if shown == total else f"{shown} of {total} layers")

    def _on_filter(self, text: str) -> None:
        self.proxy.set_filter_text(text)
        self._update_count()
        name = self.selected_node
        if name is not None:
            self._scroll_to(name)

    @property
    def filter_text(self) -> str:
        return self.filter_edit.text()

    def set_filter_text(self, text: str) -> None:
        self.filter_edit.setText(text)

    # ------------------------------------------------------------------ selection
    @property
    def selected_node(self) -> str | None:
        """Node name of the selected row, or None."""
        idx = self.view.selectionModel().currentIndex()
        rows = self.view.selectionModel().selectedRows()
        if rows:
            idx = rows[0]
        if not idx.isValid():
            return None
        name = idx.data(NAME_ROLE)
        return None if name is None else str(name)

    def select_node(self, name: str | None) -> bool:
        """Select (and scroll to) the row of ``name`` without emitting ``node_selected``.

        None clears the selection. False when the node has no row or is filtered out.
        """
        self._syncing = True
        try:
            sel = self.view.selectionModel()
            if name is None:
                sel.clearSelection()
                sel.setCurrentIndex(QModelIndex(), QItemSelectionModel.SelectionFlag.Clear)
                return True
            src = self.model.row_of(name)
            if src is None:
                sel.clearSelection()
                return False
            idx = self.proxy.mapFromSource(self.model.index(src, 0))
            if not idx.isValid():
                sel.clearSelection()
                return False
            sel.setCurrentIndex(
                idx,
                QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
            )
            self.view.scrollTo(idx, QAbstractItemView.ScrollHint.PositionAtCenter)
            return True
        finally:
            self._syncing = False

    def _scroll_to(self, name: str) -> None:
        src = self.model.row_of(name)
        if src is not None:
            idx = self.proxy.mapFromSource(self.model.index(src, 0))
            if idx.isValid():
                self.view.scrollTo(idx, QAbstractItemView.ScrollHint.PositionAtCenter)

    def _on_current(self, current: QModelIndex, previous: QModelIndex) -> None:
        if self._syncing or not current.isValid():
            return
        name = current.data(NAME_ROLE)
        if name is not None:
            self.node_selected.emit(str(name))

    # ------------------------------------------------------------------ helpers for tests and the window
    def visible_names(self) -> list[str]:
        """Node names of the rows shown, top to bottom."""
        return [str(self.proxy.index(r, 0).data(NAME_ROLE)) for r in range(self.proxy.rowCount())]

    def sort_by(self, key: str, descending: bool = False) -> None:
        """Sort as a header click would (``key`` is a column's row attribute)."""
        order = Qt.SortOrder.DescendingOrder if descending else Qt.SortOrder.AscendingOrder
        self.view.sortByColumn(COLUMN_INDEX[key], order)

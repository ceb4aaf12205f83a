"""The layer table: numeric sorting on raw values, empty cells last, filtering, selection sync."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import Qt

from inspector.session import LayerRow
from widgets.layer_table import COLUMN_INDEX, NAME_ROLE, SORT_ROLE, LayerTable


def _rows(n: int = 6) -> list[LayerRow]:
    """Rows whose text order differs from their numeric order (so a string sort would fail)."""
    ops = ["MatMul", "Add", "Relu", "Softmax", "MatMul", "Conv"]
    macs = [9, 100, 20, 3000, 0, 250]  # as strings: "0" < "100" < "20" < "250" < "3000" < "9"
    sqnr = [35.5, None, 8.25, math.inf, 41.0, None]
    return [
        LayerRow(i, f"/block{i}/{ops[i % 6]}", ops[i % 6], "1×4", macs=macs[i % 6], dram_bytes=10 * i,
                 est_ns=float(1000 - i), bound="memory" if i % 2 else "compute", sqnr_db_isolated=sqnr[i % 6])
        for i in range(n)
    ]


@pytest.fixture
def table(qtbot) -> LayerTable:
    t = LayerTable()
    qtbot.addWidget(t)
    t.resize(900, 300)
    t.set_rows(_rows())
    return t


def test_rows_in_node_order_with_empty_cells_for_missing_values(table: LayerTable) -> None:
    assert table.visible_names() == [f"/block{i}/{op}" for i, op in
                                     enumerate(["MatMul", "Add", "Relu", "Softmax", "MatMul", "Conv"])]
    model = table.model
    sqnr_col = COLUMN_INDEX["sqnr_db_isolated"]
    assert model.index(1, sqnr_col).data() == ""  # not analysed: empty, not "0" or "nan"
    assert model.index(1, sqnr_col).data(SORT_ROLE) is None
    assert model.index(3, sqnr_col).data() == "exact"  # infinite SQNR: int8 equals float
    assert model.index(2, sqnr_col).data() == "8.2" or model.index(2, sqnr_col).data() == "8.3"
    assert model.index(0, COLUMN_INDEX["macs"]).data(SORT_ROLE) == 9
    # SQNR below 20 dB is tinted
    assert model.index(2, sqnr_col).data(Qt.ItemDataRole.BackgroundRole) is not None
    assert model.index(0, sqnr_col).data(Qt.ItemDataRole.BackgroundRole) is None


def test_numeric_sort_uses_raw_values(table: LayerTable) -> None:
    table.sort_by("macs")
    assert table.model.column_values("macs") == [0, 9, 20, 100, 250, 3000]
    table.sort_by("macs", descending=True)
    assert table.model.column_values("macs") == [3000, 250, 100, 20, 9, 0]


def test_empty_cells_sort_last_in_both_directions(table: LayerTable) -> None:
    table.sort_by("sqnr_db_isolated")
    values = table.model.column_values("sqnr_db_isolated")
    assert values[:4] == [8.25, 35.5, 41.0, math.inf]
    assert values[4:] == [None, None]
    table.sort_by("sqnr_db_isolated", descending=True)
    values = table.model.column_values("sqnr_db_isolated")
    assert values[:4] == [math.inf, 41.0, 35.5, 8.25]
    assert values[4:] == [None, None]


def test_text_sort_and_back_to_node_order(table: LayerTable) -> None:
    table.sort_by("op_type")
    assert [table.model.raw(r, "op_type") for r in range(6)] == ["Add", "Conv", "MatMul", "MatMul", "Relu", "Softmax"]
    table.sort_by("index")
    assert table.model.column_values("index") == list(range(6))


def test_filter_by_name_or_op_type(table: LayerTable) -> None:
    table.set_filter_text("matmul")
    assert table.visible_names() == ["/block0/MatMul", "/block4/MatMul"]
    assert table.count_label.text() == "2 of 6 layers"
    table.set_filter_text("block3")
    assert table.visible_names() == ["/block3/Softmax"]
    table.set_filter_text("")
    assert len(table.visible_names()) == 6
    assert table.count_label.text() == "6 layers"


def test_user_selection_emits_and_select_node_does_not(table: LayerTable, qtbot) -> None:
    got: list[str] = []
    table.node_selected.connect(got.append)
    assert table.select_node("/block2/Relu")
    assert table.selected_node == "/block2/Relu"
    assert got == []  # programmatic selection: no signal (no loops with the graph)
    table.view.selectRow(4)  # as a click would
    assert got == ["/block4/MatMul"]
    assert table.selected_node == "/block4/MatMul"
    assert not table.select_node("/no/such/node")


def test_selection_survives_sort_and_value_update(table: LayerTable) -> None:
    table.select_node("/block5/Conv")
    table.sort_by("macs", descending=True)
    assert table.selected_node == "/block5/Conv"
    rows = _rows()
    for r in rows:
        r.cosine = 0.5 + r.index / 100  # new analysis results for the same nodes
    table.set_rows(rows)
    assert table.selected_node == "/block5/Conv"
    assert table.model.column_values("macs") == [3000, 250, 100, 20, 9, 0]  # sort kept
    row = table.model.row_of("/block5/Conv")
    assert table.model.raw(row, "cosine") == pytest.approx(0.55)


def test_five_thousand_rows_sort_and_filter(table: LayerTable) -> None:
    rng = np.random.default_rng(0)
    n = 5000
    macs = rng.integers(0, 10**9, n)
    rows = [LayerRow(i, f"/n{i}/{'MatMul' if i % 3 else 'Add'}", "MatMul" if i % 3 else "Add", "1×8",
                     macs=int(macs[i])) for i in range(n)]
    table.set_rows(rows)
    assert table.model.rowCount() == n
    table.sort_by("macs", descending=True)
    assert table.model.column_values("macs") == sorted(macs.tolist(), reverse=True)
    table.set_filter_text("add")
    assert table.proxy.rowCount() == len(range(0, n, 3))
    names = table.visible_names()
    assert all(name.endswith("/Add") for name in names)
    assert table.proxy.index(0, 0).data(NAME_ROLE) == names[0]

"""The start page: open a model, pick a bundled sample, or reopen a recent file.

Plain widget; the window connects its signals: ``open_requested()`` (File > Open),
``sample_requested(name)`` and ``recent_requested(path)``. Files dropped on it are handled
by the window (drops anywhere on the window open the file).
"""

from __future__ import annotations

import os
from typing import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

RECENT_MAX_HEIGHT = 170
"""Tallest the recent-files list gets (px); it scrolls beyond."""

_CARD_STYLE = """
QFrame#card { background: #ffffff; border: 1px solid #d5d9e0; border-radius: 8px; }
QFrame#card:hover { border-color: #7a9cc6; }
"""
_DROP_STYLE = """
QFrame#drop { background: #f6f8fb; border: 2px dashed #a9b4c4; border-radius: 10px; }
"""


class _SampleCard(QFrame):
    """One bundled sample: name, what it is, an Open button."""

    def __init__(self, name: str, description: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("card")
        self.setStyleSheet(_CARD_STYLE)
        self.name = name
        title = QLabel(name)
        f = QFont(title.font())
        f.setPointSizeF(f.pointSizeF() * 1.15)
        f.setBold(True)
        title.setFont(f)
        text = QLabel(description)
        text.setWordWrap(True)
        text.setStyleSheet("color: #4b5563;")
        self.button = QPushButton("Open sample")
        self.button.setObjectName(f"sample-{name}")
        self.button.setCursor(Qt.CursorShape.PointingHandCursor)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(14, 12, 14, 12)
        lay.addWidget(title)
        lay.addWidget(text, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.button)
        lay.addLayout(row)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)


class WelcomeView(QWidget):
    """Start page with a drop zone, the bundled samples and the recent files."""

    open_requested = Signal()
    sample_requested = Signal(str)
    recent_requested = Signal(str)

    def __init__(self, samples: Sequence[tuple[str, str]] = (), parent: QWidget | None = None) -> None:
        """``samples``: (name, description) of each bundled sample."""
        super().__init__(parent)
        self.setAutoFillBackground(True)
        pal = self.palette()
        pal.setColor(self.backgroundRole(), Qt.GlobalColor.white)
        self.setPalette(pal)

        title = QLabel("Deployment Inspector")
        tf = QFont(title.font())
        tf.setPointSizeF(tf.pointSizeF() * 2.0)
        tf.setBold(True)
        title.setFont(tf)
        subtitle = QLabel(
            "See which layer breaks in int8 and why, what fusing would save, "
            "and where the time goes on your NPU."
        )
        subtitle.setWordWrap(True)
        subtitle.setStyleSheet("color: #4b5563;")

        drop = QFrame()
        drop.setObjectName("drop")
        drop.setStyleSheet(_DROP_STYLE)
        drop_label = QLabel(
            "<b>Drop an ONNX model here</b><br>"
            "<span style='color:#6b7280'>then drop calibration data: an .npz / .npy file "
            "or a folder of images</span>"
        )
        drop_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        drop_label.setTextFormat(Qt.TextFormat.RichText)
        self.open_button = QPushButton("Open model…")
        self.open_button.setDefault(True)
        self.open_button.clicked.connect(self.open_requested)
        dl = QVBoxLayout(drop)
        dl.setContentsMargins(20, 26, 20, 26)
        dl.addWidget(drop_label)
        br = QHBoxLayout()
        br.addStretch(1)
        br.addWidget(self.open_button)
        br.addStretch(1)
        dl.addLayout(br)

        samples_title = QLabel("Bundled samples")
        sf = QFont(samples_title.font())
        sf.setBold(True)
        samples_title.setFont(sf)
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        self.sample_buttons: dict[str, QPushButton] = {}
        for i, (name, description) in enumerate(samples):
            card = _SampleCard(name, description)
            card.button.clicked.connect(lambda _=False, n=name: self.sample_requested.emit(n))
            self.sample_buttons[name] = card.button
            grid.addWidget(card, 0, i)

        recent_title = QLabel("Recent files")
        recent_title.setFont(sf)
        self.recent_list = QListWidget()
        self.recent_list.setObjectName("recent")
        self.recent_list.itemClicked.connect(self._on_recent)
        self.recent_empty = QLabel("No recent files yet.")
        self.recent_empty.setStyleSheet("color: #6b7280;")

        column = QVBoxLayout()
        column.setSpacing(10)
        column.addWidget(title)
        column.addWidget(subtitle)
        column.addSpacing(8)
        column.addWidget(drop)
        column.addSpacing(8)
        column.addWidget(samples_title)
        column.addLayout(grid)
        column.addSpacing(8)
        column.addWidget(recent_title)
        column.addWidget(self.recent_list)
        column.addWidget(self.recent_empty)
        column.addStretch(1)
        holder = QWidget()
        holder.setLayout(column)
        holder.setMaximumWidth(820)
        outer = QHBoxLayout(self)
        outer.setContentsMargins(24, 36, 24, 24)
        outer.addStretch(1)
        outer.addWidget(holder, 6)
        outer.addStretch(1)
        self.set_recent([])

    def set_recent(self, paths: Sequence[str]) -> None:
        """Show ``paths`` (newest first); entries that no longer exist are greyed out."""
        self.recent_list.clear()
        for p in paths:
            item = QListWidgetItem(f"{os.path.basename(p)}    —    {os.path.dirname(p)}")
            item.setData(Qt.ItemDataRole.UserRole, p)
            item.setToolTip(p)
            if not os.path.exists(p):
                item.setForeground(Qt.GlobalColor.gray)
            self.recent_list.addItem(item)
        rows = self.recent_list.sizeHintForRow(0) if paths else 0
        self.recent_list.setFixedHeight(min(RECENT_MAX_HEIGHT, rows * len(paths) + 2 * self.recent_list.frameWidth() + 4))
        self.recent_list.setVisible(bool(paths))
        self.recent_empty.setVisible(not paths)

    def _on_recent(self, item: QListWidgetItem) -> None:
        path = item.data(Qt.ItemDataRole.UserRole)
        if path:
            self.recent_requested.emit(str(path))

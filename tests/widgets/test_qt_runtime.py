"""Regression guard for the Qt runtime this app pins (shared/notes/qt-headless.md).

PySide6 6.12.0 on CPython 3.11 lowers None's reference count on every void Qt call and
aborts the process after a few thousand; the project pins 6.11.3 there. 10,000 void calls
must leave ``sys.getrefcount(None)`` where it was (None is immortal on 3.12+).
"""

from __future__ import annotations

import os
import sys


def test_offscreen_platform_is_set() -> None:
    assert os.environ.get("QT_QPA_PLATFORM") == "offscreen"


def test_void_qt_calls_keep_none_refcount(qtbot) -> None:
    from PySide6.QtWidgets import QGraphicsRectItem

    item = QGraphicsRectItem(0, 0, 1, 1)
    before = sys.getrefcount(None)
    for i in range(10_000):
        item.setPos(float(i), 0.0)
        item.setZValue(float(i % 7))
    after = sys.getrefcount(None)
    assert after >= before - 100, f"None refcount fell from {before} to {after}"

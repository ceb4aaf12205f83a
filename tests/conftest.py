"""Test configuration: Qt runs offscreen with the PySide6 binding (see shared/notes/qt-headless.md)."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

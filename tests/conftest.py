"""Test configuration: Qt runs offscreen with the PySide6 binding (see shared/notes/qt-headless.md)."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _collect_garbage_on_the_main_thread():
    """Once a window's JobRunner switched automatic cyclic GC off (see
    inspector.workers.MainThreadGC), tests that spin no event loop would never collect:
    run the collector's threshold check after every test, on this (the main) thread."""
    yield
    import sys

    workers = sys.modules.get("inspector.workers")
    collector = workers.MainThreadGC.installed() if workers is not None else None
    if collector is not None:
        collector.check()

"""Test configuration: Qt runs offscreen with the PySide6 binding (see shared/notes/qt-headless.md)."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _qt_objects_die_on_the_main_thread_at_teardown():
    """Widget trees are destroyed explicitly after each test, never by the garbage collector.

    A test's top-level widgets become unreachable Python cycles when it returns; freeing a
    parent and child wrapper in one collection crashed PySide6 6.11 (QWidget::destroy from
    subtype_dealloc). So, once a window's JobRunner has switched automatic collection off
    (inspector.workers.MainThreadGC), its timer does not run during tests; here, after
    pytest-qt closed the test's widgets, every Python-owned top-level widget still alive is
    deleted on this (the main) thread, and then the collector's threshold check runs.
    """
    from inspector import workers

    workers.MainThreadGC.autostart = False
    yield
    collector = workers.MainThreadGC.installed()
    if collector is None:
        return
    collector.timer.stop()
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if isinstance(app, QApplication):
        import shiboken6

        for widget in app.topLevelWidgets():
            if shiboken6.isValid(widget) and shiboken6.ownedByPython(widget):
                shiboken6.delete(widget)
    collector.check()

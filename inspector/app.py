"""Starting the desktop app: QApplication set-up, the window, and the ``--screenshot`` mode.

:func:`run_app` is what ``inspector`` (no subcommand) and ``inspector gui`` call. With
``screenshot`` it loads the model, runs the NPU report and the analysis (on synthetic data
when no calibration data is given), waits for every worker, lets the widgets lay out, saves
``window.grab()`` as PNG and exits, so it also works without a display (offscreen).

Exit codes: 0 success, 2 bad input (the model did not load, no display, unwritable image).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Sequence

WINDOW_SIZE = (1600, 1000)
"""Default window size (px), also the screenshot's size."""
SCREENSHOT_TIMEOUT_S = 900.0
"""Longest a ``--screenshot`` run waits for its jobs before giving up."""
SETTLE_MS = 400
"""Time given to the widgets to lay out (and pyqtgraph to place its ticks) before a grab."""


def _has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux") or sys.platform.startswith("freebsd"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


_NOISE = ("This plugin does not support propagateSizeHints()",)
"""Qt messages that say nothing to a user (the offscreen platform's missing window hints)."""


def _quiet_qt_messages() -> None:
    """Forward Qt's messages to stderr, except :data:`_NOISE`."""
    from PySide6.QtCore import qInstallMessageHandler

    def handler(mode: object, context: object, message: str) -> None:
        if message not in _NOISE:
            print(message, file=sys.stderr)

    qInstallMessageHandler(handler)


def _application(argv: Sequence[str]) -> "object":
    """The QApplication (created once), Fusion style, the project's UI font."""
    os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
    from PySide6.QtGui import QFont
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        _quiet_qt_messages()
        app = QApplication(list(argv) or ["inspector"])
        app.setStyle("Fusion")
        font = QFont("DejaVu Sans")
        font.setPointSizeF(9.0)
        app.setFont(font)
    app.setOrganizationName("deployment-inspector")
    app.setApplicationName("inspector")
    return app


def run_app(
    argv: Sequence[str] | None = None,
    model: str | None = None,
    sample: str | None = None,
    calib: str | None = None,
    screenshot: str | None = None,
    dims: dict[str, int] | None = None,
    profile: str | None = None,
) -> int:
    """Open the window (optionally with a model / sample and calibration data) and run the
    event loop; with ``screenshot`` save an image of the analysed model instead and exit."""
    if screenshot is None and not _has_display():
        print(
            "inspector: error: no display (DISPLAY is not set); run the GUI on a desktop, "
            "or use 'inspector gui MODEL --screenshot FILE.png' for an image",
            file=sys.stderr,
        )
        return 2
    if screenshot is not None and not _has_display():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    if screenshot is not None:
        folder = os.path.dirname(os.path.abspath(screenshot))
        if not os.path.isdir(folder):
            print(f"inspector: error: {screenshot}: cannot write: the folder does not exist", file=sys.stderr)
            return 2
    app = _application(argv or sys.argv[:1])

    import shiboken6

    from inspector.main_window import MainWindow
    from inspector.session import CalibSource

    window = MainWindow()
    window.resize(*WINDOW_SIZE)
    previous_hook = sys.excepthook

    def hook(exc_type, exc, tb):  # type: ignore[no-untyped-def]
        """Uncaught exceptions in Qt callbacks: a message in the window, not a crash."""
        if os.environ.get("INSPECTOR_DEBUG"):
            previous_hook(exc_type, exc, tb)
        from inspector.workers import error_message

        if shiboken6.isValid(window):  # closed windows are deleted
            window.show_message(error_message(exc), "error")

    sys.excepthook = hook
    if profile:
        window.set_profile(profile)
    window.show()
    if sample:
        window.open_sample(sample, calib)
    elif model:
        source = CalibSource(os.path.abspath(calib)) if calib else None
        window.open_model(model, calib=source, analyse=source is not None or screenshot is not None, dims=dims)
    elif calib:
        window.set_calibration(calib)
    try:
        if screenshot is None:
            return int(app.exec())  # type: ignore[attr-defined]
        return _screenshot(app, window, screenshot)
    finally:
        sys.excepthook = previous_hook
        window.jobs.cancel()
        window.jobs.pool.waitForDone(5000)


def _screenshot(app: "object", window: "object", path: str) -> int:
    """Wait for the model, the NPU report and the analysis, then save ``window.grab()``."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QTimer

    from engine.errors import ModelError
    from engine.fileio import write_bytes

    state = {"code": 0, "asked": False, "settled": False, "done": False}
    started = time.monotonic()

    def finish(code: int, message: str = "") -> None:
        if state["done"]:
            return
        state["done"] = True
        state["code"] = code
        if message:
            print(f"inspector: {message}", file=sys.stderr)
        timer.stop()
        app.quit()  # type: ignore[attr-defined]

    def save() -> None:
        image = window.grab()  # type: ignore[attr-defined]
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        if not image.save(buffer, "PNG"):
            finish(2, f"error: {path}: could not encode the image")
            return
        buffer.close()
        try:
            write_bytes(path, bytes(data.data()))
        except ModelError as e:
            finish(2, f"error: {e}")
            return
        note = f" ({window.message})" if window.message_kind == "error" else ""  # type: ignore[attr-defined]
        finish(0, f"wrote {path}{note}" if note else "")
        if not note:
            print(f"wrote {path}")

    def poll() -> None:
        w = window
        if time.monotonic() - started > SCREENSHOT_TIMEOUT_S:
            finish(2, "error: gave up waiting for the analysis")
            return
        if w.jobs.busy or w.jobs.pending():  # type: ignore[attr-defined]
            return
        session = w.session  # type: ignore[attr-defined]
        if session.loaded is None:
            finish(2, f"error: {w.message or 'no model was given (MODEL or --sample)'}")  # type: ignore[attr-defined]
            return
        if session.analysis is None and not state["asked"] and w.message_kind != "error":  # type: ignore[attr-defined]
            state["asked"] = True
            w.run_analysis()  # type: ignore[attr-defined]
            return
        if not state["settled"]:
            state["settled"] = True
            timer.stop()
            QTimer.singleShot(SETTLE_MS, lambda: QTimer.singleShot(SETTLE_MS, save))

    timer = QTimer()
    timer.setInterval(100)
    timer.timeout.connect(poll)
    timer.start()
    app.exec()  # type: ignore[attr-defined]
    return int(state["code"])

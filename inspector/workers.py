"""Background jobs for the window: ``QThreadPool`` + ``QRunnable``, signals on a separate QObject.

A :class:`Worker` runs ``fn(*args, progress=..., cancel=..., **kwargs)`` on a pool thread.
Its :class:`WorkerSignals` (created on the UI thread, so connected slots run there, queued)
report ``started``, ``progress(done, total)``, then exactly one of ``returned(result)``,
``errored(message)`` or ``cancelled()``, and always ``finished`` last.

Cancelling sets a flag; the job sees it in its next ``progress`` call (which raises
:class:`engine.errors.Cancelled`) or ``cancel()`` poll. The UI thread never waits for a job:
a superseded job's late result is simply ignored (:class:`JobRunner` keeps one current job
per kind).

GIL: pure-Python engine code holds the GIL between switch intervals; the progress callback
also sleeps for 0 s at most every :data:`YIELD_EVERY_S`, handing the GIL to the UI thread
when it waits for it. Progress signals are sent at most every :data:`EMIT_EVERY_S`.
The UI thread takes the GIL back after nearly every call into Qt (PySide releases it around
calls), so with a worker running each such call may wait a whole switch interval: a
:class:`JobRunner` lowers the interpreter's switch interval to :data:`SWITCH_INTERVAL_S`
(from CPython's 5 ms), which bounds that wait; measured on a 2-core machine, an 820-node scene
build with the NPU report running beside it went from 72 ms wall per 10 ms-CPU slice to about
the CPU time.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import traceback
import weakref
from typing import Any, Callable

from PySide6.QtCore import QCoreApplication, QObject, QRunnable, QThreadPool, QTimer, Signal, Slot

from engine.errors import Cancelled, ModelError

EMIT_EVERY_S = 0.05
"""Least time between two progress signals of one job (the last one is always sent)."""
YIELD_EVERY_S = 0.004
"""The progress callback releases the GIL (``time.sleep(0)``) at least this often."""
SWITCH_INTERVAL_S = 0.001
"""Interpreter switch interval while a JobRunner exists (s): the longest a thread waiting
for the GIL (the UI thread) waits for a running worker to hand it over."""


GC_INTERVAL_MS = 250
"""How often the UI thread runs the cyclic garbage collector's threshold check (ms)."""
FULL_GC_EVERY_S = 10.0
"""Least time between two full (generation 2) collections on the UI thread (s)."""


class MainThreadGC(QObject):
    """Cyclic garbage collection on the UI thread only, never on a worker thread.

    CPython runs the cyclic collector on whichever thread crosses the allocation threshold,
    and engine jobs allocate hard. A collection on a worker thread that finds an unreachable
    cycle holding a QWidget wrapper (a closed window, a replaced panel) hands its C++ deletion
    to shiboken's delete-in-main-thread queue, drained later at an arbitrary bytecode of the
    UI thread; with PySide6 6.11 that crashed the process (SIGSEGV in
    ``BindingManager::runDeletionInMainThread``, seen here under load). So automatic
    collection is switched off and this timer does the same threshold-driven work, by
    generation, on the UI thread (as pyqtgraph's ``GarbageCollector`` does); a full collection
    runs at most every :data:`FULL_GC_EVERY_S`, and only when the oldest generation grew by a
    quarter since the last one (CPython's rule), so a big heap does not stall the UI each time.
    """

    _instance: "MainThreadGC | None" = None
    autostart = True
    """Start the timer on install (a test harness that collects between tests sets False)."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thresholds = gc.get_threshold()
        self._last_full = time.monotonic()
        self._long_lived = 0  # objects in the oldest generation after the last full pass
        self._full_requested = False
        self.timer = QTimer(self)
        self.timer.setInterval(GC_INTERVAL_MS)
        self.timer.timeout.connect(self.check)
        gc.disable()
        if self.autostart:
            self.timer.start()

    @classmethod
    def install(cls) -> "MainThreadGC | None":
        """Install once per application (from the UI thread); returns the collector, or None
        when there is no QCoreApplication or this is not the UI thread."""
        app = QCoreApplication.instance()
        if app is None or threading.current_thread() is not threading.main_thread():
            return None
        if cls._instance is None:
            cls._instance = cls(app)
            cls._instance.destroyed.connect(cls._forget)
        return cls._instance

    @staticmethod
    def _forget() -> None:
        MainThreadGC._instance = None
        gc.enable()

    @classmethod
    def installed(cls) -> "MainThreadGC | None":
        return cls._instance

    def request_full(self) -> None:
        """Run a full collection at the next tick: big objects just became garbage in cycles
        (a closed window and its session, a replaced model), which the object counts the
        periodic rule reads do not see (a model's arrays are few objects)."""
        self._full_requested = True

    @Slot()
    def check(self) -> int:
        """Collect the generations whose allocation counts crossed their thresholds (or all of
        them when :meth:`request_full` asked); returns the number of unreachable objects found."""
        if self._full_requested:
            self._full_requested = False
            self._last_full = time.monotonic()
            found = gc.collect(2)
            self._long_lived = len(gc.get_objects(generation=2))
            release_free_heap()  # what the replaced model or closed window held goes back to the system
            return found
        t0, t1, t2 = self.thresholds
        c0, c1, c2 = gc.get_count()
        found = 0
        if c0 > t0:
            found += gc.collect(0)
            if c1 > t1:
                found += gc.collect(1)
                now = time.monotonic()
                if c2 > t2 and now - self._last_full >= FULL_GC_EVERY_S:
                    self._last_full = now
                    # as CPython's own rule: a full pass only once the oldest generation
                    # grew by a quarter since the last one (a big model's scene and graph
                    # are ~200k long-lived objects: a full pass over them costs ~80 ms)
                    old = len(gc.get_objects(generation=2))
                    if old - self._long_lived > self._long_lived // 4:
                        found += gc.collect(2)
                        self._long_lived = len(gc.get_objects(generation=2))
        return found


def release_free_heap() -> bool:
    """Return the C heap's free memory to the system (glibc's ``malloc_trim``), as after a model
    was replaced: glibc keeps freed blocks for reuse, so without it the process stays at its
    peak. Only on Linux with glibc; False when not available (nothing is done)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def error_message(exc: BaseException) -> str:
    """One line for the window: a ModelError as is, anything else with its type."""
    if isinstance(exc, ModelError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory"
    detail = " ".join(str(exc).split())[:300]
    return f"internal error: {type(exc).__name__}: {detail}" if detail else f"internal error: {type(exc).__name__}"


class WorkerSignals(QObject):
    """Signals of one :class:`Worker` (a QRunnable is not a QObject, so it cannot have any)."""

    started = Signal()
    progress = Signal(int, int)
    returned = Signal(object)
    errored = Signal(str)
    cancelled = Signal()
    finished = Signal()


class Worker(QRunnable):
    """Runs ``fn`` on a pool thread with ``progress`` and ``cancel`` keyword arguments.

    ``fn`` must accept ``progress(done, total)`` and ``cancel() -> bool``; its result goes to
    ``signals.returned``. Exceptions never escape: :class:`Cancelled` becomes
    ``signals.cancelled``, anything else a one-line ``signals.errored`` message.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, label: str = "", **kwargs: Any) -> None:
        super().__init__()
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.label = label or getattr(fn, "__name__", "job")
        self.signals = WorkerSignals()
        self._cancel = threading.Event()
        self._last_emit = 0.0
        self._last_yield = 0.0
        # autoDelete stays on: the pool deletes the C++ runnable after ``run``. With it off,
        # PySide keeps a reference to the Python object for ever, and with it the job's
        # arguments (models, results): every job leaked. The signals are a separate object.
        self.setAutoDelete(True)

    # called from the worker thread --------------------------------------------------
    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def report(self, done: int, total: int) -> None:
        """The job's progress callback: raises Cancelled when cancelled, yields the GIL,
        sends ``progress`` at most every EMIT_EVERY_S (always when ``done >= total``)."""
        if self._cancel.is_set():
            raise Cancelled(f"{self.label} cancelled")
        now = time.monotonic()
        if now - self._last_yield >= YIELD_EVERY_S:
            self._last_yield = now
            time.sleep(0)
        if done >= total or now - self._last_emit >= EMIT_EVERY_S:
            self._last_emit = now
            self.signals.progress.emit(int(done), int(total))

    def _poll(self) -> bool:
        """The job's cancel check (engine code polls it between steps); also yields the GIL."""
        now = time.monotonic()
        if now - self._last_yield >= YIELD_EVERY_S:
            self._last_yield = now
            time.sleep(0)
        return self._cancel.is_set()

    def run(self) -> None:  # noqa: D401 (Qt name)
        signals = self.signals
        try:
            signals.started.emit()
            if self._cancel.is_set():
                raise Cancelled(f"{self.label} cancelled")
            result = self.fn(*self.args, progress=self.report, cancel=self._poll, **self.kwargs)
            if self._cancel.is_set():
                raise Cancelled(f"{self.label} cancelled")
        except Cancelled:
            signals.cancelled.emit()
        except BaseException as exc:  # never let an exception reach Qt's thread (it aborts)
            if os.environ.get("INSPECTOR_DEBUG"):
                traceback.print_exc()
            signals.errored.emit(error_message(exc))
        else:
            signals.returned.emit(result)
        finally:
            signals.finished.emit()

    # called from any thread ---------------------------------------------------------
    def cancel(self) -> None:
        """Ask the job to stop; it stops at its next progress call or cancel poll."""
        self._cancel.set()


class _Job:
    """Book-keeping of one started worker (UI thread only)."""

    __slots__ = ("kind", "worker", "signals", "relay", "on_result", "on_error", "on_cancel")

    def __init__(
        self,
        kind: str,
        worker: Worker,
        on_result: Callable[[Any], None],
        on_error: Callable[[str], None] | None,
        on_cancel: Callable[[], None] | None,
    ) -> None:
        self.kind = kind
        self.worker = worker
        self.signals = worker.signals
        self.relay: QObject | None = None
        self.on_result = on_result
        self.on_error = on_error
        self.on_cancel = on_cancel


class _Relay(QObject):
    """Receives one job's signals on the UI thread (it lives there, so Qt queues them) and
    forwards them with the job's key. Used instead of ``sender()``, which is not safe to call
    for signals queued from a pool thread (it crashed the process now and then).

    It is a Qt child of its runner and holds the runner only WEAKLY: with a strong reference
    (a cycle, which no collection frees while MainThreadGC keeps the collector off), the
    relay's deferred deletion could drop the runner's last reference; the runner's C++
    destructor then deleted its children, this relay among them, a second time, inside the
    first deletion (a segfault, 2 runs of the test suite in 23)."""

    def __init__(self, runner: "JobRunner", key: int) -> None:
        super().__init__(runner)
        self._runner = weakref.ref(runner)
        self._key = key

    def _forward(self, handler: str, *args: Any) -> None:
        runner = self._runner()
        if runner is not None:  # (a runner gone takes its relays along: nothing to deliver)
            getattr(runner, handler)(self._key, *args)

    @Slot(int, int)
    def progress(self, done: int, total: int) -> None:
        self._forward("_on_progress", done, total)

    @Slot(object)
    def returned(self, result: Any) -> None:
        self._forward("_on_returned", result)

    @Slot(str)
    def errored(self, message: str) -> None:
        self._forward("_on_errored", message)

    @Slot()
    def cancelled(self) -> None:
        self._forward("_on_cancelled")

    @Slot()
    def finished(self) -> None:
        self._forward("_on_finished")


class JobRunner(QObject):
    """Starts workers on a thread pool, at most one current job per kind.

    ``start`` cancels the running job of the same kind (its result is dropped). The callbacks
    run on the UI thread: ``on_result(result)``, ``on_error(message)``, ``on_cancel()``.
    ``progress(kind, done, total)`` and ``busy_changed(busy)`` drive the progress bar.
    The workers' signals are connected to this object's methods, so Qt queues them to the
    UI thread; a per-job relay object tells which job a signal came from.
    """

    progress = Signal(str, int, int)
    busy_changed = Signal(bool)
    job_finished = Signal(str)

    def __init__(self, pool: QThreadPool | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = pool or QThreadPool.globalInstance()
        MainThreadGC.install()
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._current: dict[str, _Job] = {}
        self._jobs: dict[int, _Job] = {}  # every started job until its ``finished``
        self._labels: dict[str, str] = {}
        self._serial = 0

    def start(
        self,
        kind: str,
        fn: Callable[..., Any],
        *args: Any,
        label: str = "",
        on_result: Callable[[Any], None],
        on_error: Callable[[str], None] | None = None,
        on_cancel: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> Worker:
        """Run ``fn(*args, progress=, cancel=, **kwargs)`` as the current job of ``kind``."""
        old = self._current.get(kind)
        if old is not None:
            old.worker.cancel()
        worker = Worker(fn, *args, label=label or kind, **kwargs)
        self._serial += 1
        job = _Job(kind, worker, on_result, on_error, on_cancel)
        worker.signals.job_key = self._serial
        # Qt owns it now, freed by deleteLater once its ``finished`` reached this runner on
        # the UI thread, never by Python's GC mid-signal. The application owns it, not this
        # runner: a window closed while the job runs deletes its runner, and the worker must
        # still find its signals alive to emit into (the relays are gone with the runner:
        # nothing arrives; those few signal objects stay until the application ends).
        # Not ``finished.connect(deleteLater)``: a signal object deleted that way lost the
        # runner's own queued ``finished`` now and then (1 run in 3 here).
        app = QCoreApplication.instance()
        worker.signals.setParent(app if app is not None else self)
        self._jobs[self._serial] = job
        s = worker.signals
        relay = _Relay(self, self._serial)
        job.relay = relay
        s.progress.connect(relay.progress)
        s.returned.connect(relay.returned)
        s.errored.connect(relay.errored)
        s.cancelled.connect(relay.cancelled)
        s.finished.connect(relay.finished)
        was_busy = self.busy
        self._current[kind] = job
        self._labels[kind] = worker.label
        self.pool.start(worker)
        if not was_busy:
            self.busy_changed.emit(True)
        return worker

    # ------------------------------------------------------------------ state
    @property
    def busy(self) -> bool:
        return bool(self._current)

    def is_running(self, kind: str) -> bool:
        return kind in self._current

    def running(self) -> list[str]:
        """Kinds with a current job, in start order."""
        return list(self._current)

    def label(self, kind: str) -> str:
        return self._labels.get(kind, kind)

    def pending(self) -> int:
        """Started jobs whose ``finished`` has not arrived yet (superseded ones included)."""
        return len(self._jobs)

    def cancel(self, kind: str | None = None) -> None:
        """Cancel the current job of ``kind`` (all current jobs when None)."""
        kinds = list(self._current) if kind is None else [kind]
        for k in kinds:
            job = self._current.get(k)
            if job is not None:
                job.worker.cancel()

    # ------------------------------------------------------------------ slots (UI thread)
    def _job(self, key: int) -> _Job | None:
        return self._jobs.get(key)

    def _is_current(self, job: _Job | None) -> bool:
        return job is not None and self._current.get(job.kind) is job

    def _on_progress(self, key: int, done: int, total: int) -> None:
        job = self._job(key)
        if self._is_current(job) and not job.worker.is_cancelled():
            self.progress.emit(job.kind, done, total)

    def _on_returned(self, key: int, result: Any) -> None:
        job = self._job(key)
        if not self._is_current(job):
            return
        self._release(job)
        if job.worker.is_cancelled():  # cancelled after the work was done: drop the result
            if job.on_cancel is not None:
                job.on_cancel()
            return
        job.on_result(result)

    def _on_errored(self, key: int, message: str) -> None:
        job = self._job(key)
        if self._is_current(job):
            self._release(job)
            if job.on_error is not None:
                job.on_error(message)

    def _on_cancelled(self, key: int) -> None:
        job = self._job(key)
        if self._is_current(job):
            self._release(job)
            if job.on_cancel is not None:
                job.on_cancel()

    def _on_finished(self, key: int) -> None:
        job = self._job(key)
        if job is None:
            return
        if self._is_current(job):  # no verdict arrived (should not happen): free the kind
            self._release(job)
        self._jobs.pop(key, None)
        job.signals.deleteLater()
        if job.relay is not None:
            job.relay.deleteLater()
        self.job_finished.emit(job.kind)

    def _release(self, job: _Job) -> None:
        if self._current.get(job.kind) is job:
            del self._current[job.kind]
            if not self._current:
                self.busy_changed.emit(False)

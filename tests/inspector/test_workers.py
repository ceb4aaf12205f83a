"""Background jobs: results, errors and cancellation arrive on the UI thread, exactly once."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest
from PySide6.QtCore import QThreadPool

from engine.errors import Cancelled, ModelError
from inspector.workers import JobRunner, Worker, error_message

TIMEOUT_MS = 20_000


@pytest.fixture
def pool():
    p = QThreadPool()
    p.setMaxThreadCount(2)
    yield p
    p.waitForDone(10_000)


@pytest.fixture
def runner(qtbot, pool) -> JobRunner:
    return JobRunner(pool)


def counting(n: int, progress: Any, cancel: Any, log: list[int] | None = None, pause: float = 0.002) -> int:
    """A job that reports progress n times (each call may raise Cancelled)."""
    for i in range(n):
        time.sleep(pause)
        if log is not None:
            log.append(i)
        progress(i + 1, n)
    return n * 2


def polling(progress: Any, cancel: Any, log: list[int]) -> str:
    """A job that only polls ``cancel()``, as engine loops do between steps."""
    for i in range(100_000):
        if cancel():
            raise Cancelled("stopped")
        log.append(i)
        time.sleep(0.001)
    return "ran to the end"


def test_worker_signals_exist() -> None:
    w = Worker(counting, 1)
    for name in ("started", "progress", "returned", "errored", "cancelled", "finished"):
        assert hasattr(w.signals, name)


def test_result_and_progress_arrive_on_the_ui_thread(qtbot, runner: JobRunner) -> None:
    results: list[tuple[int, bool]] = []
    progress: list[tuple[str, int, int]] = []
    runner.progress.connect(lambda k, d, t: progress.append((k, d, t)))
    ui_thread = threading.current_thread()
    with qtbot.waitSignal(runner.busy_changed, timeout=TIMEOUT_MS, check_params_cb=lambda busy: not busy):
        runner.start("count", counting, 40,
                     on_result=lambda r: results.append((r, threading.current_thread() is ui_thread)))
        assert runner.is_running("count")
    assert results == [(80, True)]
    assert progress, "no progress reported"
    assert progress[-1] == ("count", 40, 40)  # the final report is never throttled away
    assert all(k == "count" and 0 < d <= t == 40 for k, d, t in progress)
    assert [d for _, d, _ in progress] == sorted(d for _, d, _ in progress)
    assert not runner.busy


def test_model_error_becomes_its_one_line_message(qtbot, runner: JobRunner) -> None:
    def bad(progress: Any, cancel: Any) -> None:
        raise ModelError("not an ONNX model", "/tmp/x.onnx")

    errors: list[str] = []
    results: list[Any] = []
    with qtbot.waitSignal(runner.job_finished, timeout=TIMEOUT_MS):
        runner.start("load", bad, on_result=results.append, on_error=errors.append)
    assert errors == ["/tmp/x.onnx: not an ONNX model"]
    assert results == []


def test_unexpected_exception_is_reported_not_raised(qtbot, runner: JobRunner) -> None:
    def broken(progress: Any, cancel: Any) -> None:
        raise ValueError("shapes (3,) and (4,)\nnot aligned")

    errors: list[str] = []
    with qtbot.waitSignal(runner.job_finished, timeout=TIMEOUT_MS):
        runner.start("x", broken, on_result=lambda r: None, on_error=errors.append)
    assert errors == ["internal error: ValueError: shapes (3,) and (4,) not aligned"]
    assert "\n" not in errors[0]


def test_cancel_stops_the_job_at_its_next_progress_call(qtbot, runner: JobRunner) -> None:
    log: list[int] = []
    outcome: list[str] = []
    runner.start("long", counting, 100_000, log=log, pause=0.001,
                 on_result=lambda r: outcome.append("result"), on_cancel=lambda: outcome.append("cancelled"))
    qtbot.waitUntil(lambda: len(log) > 20, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(runner.job_finished, timeout=TIMEOUT_MS):
        runner.cancel("long")
    assert outcome == ["cancelled"]
    stopped_at = len(log)
    assert stopped_at < 100_000
    time.sleep(0.05)
    assert len(log) == stopped_at  # the job really stopped
    assert not runner.busy


def test_cancel_is_seen_by_engine_style_cancel_polls(qtbot, runner: JobRunner) -> None:
    log: list[int] = []
    outcome: list[str] = []
    runner.start("poll", polling, log=log, on_result=outcome.append, on_cancel=lambda: outcome.append("cancelled"))
    qtbot.waitUntil(lambda: len(log) > 5, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(runner.job_finished, timeout=TIMEOUT_MS):
        runner.cancel()
    assert outcome == ["cancelled"]


def test_a_new_job_of_the_same_kind_supersedes_the_running_one(qtbot, runner: JobRunner) -> None:
    first_log: list[int] = []
    results: list[int] = []
    cancelled: list[str] = []
    runner.start("analysis", counting, 100_000, log=first_log, pause=0.001,
                 on_result=results.append, on_cancel=lambda: cancelled.append("first"))
    qtbot.waitUntil(lambda: len(first_log) > 5, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(runner.busy_changed, timeout=TIMEOUT_MS, check_params_cb=lambda busy: not busy):
        runner.start("analysis", counting, 5, on_result=results.append)
    qtbot.waitUntil(lambda: runner.pending() == 0, timeout=TIMEOUT_MS)
    assert results == [10]  # only the second job's result is delivered
    assert cancelled == []  # a superseded job reports nothing
    assert len(first_log) < 100_000


def test_jobs_of_different_kinds_run_side_by_side(qtbot, runner: JobRunner) -> None:
    results: dict[str, int] = {}
    runner.start("npu", counting, 10, on_result=lambda r: results.__setitem__("npu", r))
    runner.start("analysis", counting, 20, on_result=lambda r: results.__setitem__("analysis", r))
    assert set(runner.running()) == {"npu", "analysis"}
    qtbot.waitUntil(lambda: len(results) == 2 and not runner.busy, timeout=TIMEOUT_MS)
    assert results == {"npu": 20, "analysis": 40}


def test_error_message_formats() -> None:
    assert error_message(ModelError("bad", "m.onnx")) == "m.onnx: bad"
    assert error_message(MemoryError()) == "out of memory"
    assert error_message(KeyError("x")) == "internal error: KeyError: 'x'"


def test_widget_cycles_are_collected_on_the_main_thread_only(runner: JobRunner, qtbot) -> None:
    """A worker thread that allocates hard must not run the cyclic collector: a QWidget in
    an unreachable cycle would then be finalised off the UI thread (shiboken defers its
    deletion to the main thread, which crashed PySide6 6.11 here)."""
    import gc
    import weakref

    from PySide6.QtWidgets import QWidget

    from inspector.workers import MainThreadGC

    collector = MainThreadGC.installed()
    assert collector is not None and not gc.isenabled()
    finalised_on: list[str] = []
    for _ in range(20):
        w = QWidget()
        w.myself = w  # a cycle: only the cyclic collector can free it
        weakref.finalize(w, lambda: finalised_on.append(threading.current_thread().name))
        del w

    def allocate() -> None:
        junk = []
        for i in range(200_000):  # far past generation 0's threshold (700) many times over
            junk.append([i])
            if len(junk) > 1000:
                junk.clear()

    t = threading.Thread(target=allocate, name="allocator")
    t.start()
    t.join()
    assert finalised_on == []  # nothing collected on the worker thread
    gc.collect()
    assert finalised_on == ["MainThread"] * 20


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def old_cycle(runner: JobRunner):
    """(the UI-thread collector, a list that gets True when an unreachable cycle in the oldest
    generation is finalised); the collector's state is restored afterwards."""
    import gc
    import weakref

    from inspector.workers import MainThreadGC

    collector = MainThreadGC.installed()
    assert collector is not None
    saved = collector.thresholds, collector._last_full, collector._long_lived
    finalised: list[bool] = []
    keep = [_Cycle()]
    weakref.finalize(keep[0], finalised.append, True)
    gc.collect()  # the cycle survives into the oldest generation
    keep.clear()  # now unreachable, in generation 2
    yield collector, finalised
    collector.thresholds, collector._last_full, collector._long_lived = saved
    gc.collect()


def test_full_collections_follow_cpythons_quarter_rule(old_cycle) -> None:
    """The UI-thread collector scans the oldest generation only when it grew by a quarter
    since its last full pass (a big model's ~200k long-lived objects cost ~80 ms a pass)."""
    import gc
    import math

    collector, finalised = old_cycle
    collector.thresholds = (0, 0, 0)  # every generation is due

    def all_due() -> list[list[int]]:
        gc.collect(1)  # counts one generation-1 pass (generation 2 is due)
        gc.collect(0)  # counts one generation-0 pass (generation 1 is due)
        junk = [[i] for i in range(100)]  # allocations (generation 0 is due)
        assert all(c > 0 for c in gc.get_count())
        return junk

    junk = all_due()
    collector._last_full, collector._long_lived = -math.inf, 10**9  # grown by far less than a quarter
    collector.check()
    assert finalised == []
    del junk
    junk = all_due()  # noqa: F841 (kept alive: its allocations keep generation 0 due)
    collector._last_full, collector._long_lived = -math.inf, 0
    collector.check()
    assert finalised == [True]
    assert collector._long_lived == len(gc.get_objects(generation=2))


def test_a_window_closed_while_its_job_runs_leaves_no_error(qtbot, pool) -> None:
    """The runner (with its window) is deleted while a job runs: the job still finishes,
    emitting into signals that stay alive (an exception in the pool thread's ``run`` would
    be caught by pytest-qt and fail this test)."""
    import shiboken6
    from PySide6.QtCore import QObject

    window = QObject()
    runner = JobRunner(pool, window)
    gate = threading.Event()
    got: list[Any] = []

    def job(progress: Any, cancel: Any) -> int:
        gate.wait(10)
        progress(1, 1)
        return 7

    worker = runner.start("load", job, on_result=got.append)
    signals = worker.signals
    shiboken6.delete(window)  # the runner and its relays go with it
    assert not shiboken6.isValid(runner) and shiboken6.isValid(signals)
    gate.set()
    assert pool.waitForDone(TIMEOUT_MS)
    qtbot.wait(50)
    assert got == []  # nobody is left to receive the result
    assert shiboken6.isValid(signals)  # owned by the application
    shiboken6.delete(signals)


def test_a_finished_job_and_its_arguments_are_freed(qtbot, runner: JobRunner, pool) -> None:
    """A job's arguments (a model, a result) must not outlive it: with autoDelete off, PySide
    kept every started runnable, and so every model ever analysed, alive."""
    import gc
    import weakref

    class Big:
        pass

    arg = Big()
    ref = weakref.ref(arg)
    done: list[Any] = []
    runner.start("npu", lambda big, progress, cancel: 1, arg, on_result=done.append)
    del arg
    qtbot.waitUntil(lambda: done == [1] and runner.pending() == 0, timeout=TIMEOUT_MS)
    assert pool.waitForDone(TIMEOUT_MS)

    def freed() -> bool:
        gc.collect()
        return ref() is None

    # the pool deletes the finished runnable on its thread; shiboken may release the Python
    # wrapper (and so the arguments) from the UI thread's event queue: let events run (this
    # test failed 1 run in ~20 when it collected once, at once)
    qtbot.waitUntil(freed, timeout=TIMEOUT_MS)


def test_a_requested_full_collection_runs_at_the_next_tick(old_cycle, monkeypatch) -> None:
    """request_full (a window closed, a model replaced) collects every generation at the next
    check, whatever the counts and the quarter rule say, then hands the freed heap back."""
    import math

    import inspector.workers as workers

    collector, finalised = old_cycle
    collector.thresholds = (10**9, 10**9, 10**9)  # nothing due by the counts
    collector._long_lived = 10**9  # nor by the quarter rule
    collector.check()
    assert finalised == []
    real = workers.release_free_heap
    trims: list[bool] = []
    monkeypatch.setattr(workers, "release_free_heap", lambda: trims.append(True) or True)
    collector.request_full()
    collector.check()
    assert finalised == [True] and trims == [True]  # collected, then the freed heap handed back
    assert collector._last_full > -math.inf and not collector._full_requested
    assert real() is sys.platform.startswith("linux")


RELAY_OUTLIVES_RUNNER = r"""
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtCore import QCoreApplication, QEvent, QThreadPool
from PySide6.QtWidgets import QApplication
app = QApplication([])
from inspector.workers import JobRunner, _Relay
destroyed = []
pool = QThreadPool()
runner = JobRunner(pool)
relay = _Relay(runner, 1)
runner.destroyed.connect(lambda: destroyed.append("runner"))
relay.destroyed.connect(lambda: destroyed.append("relay"))
relay.deleteLater()
del relay
del runner  # only the relay's Python side could still reach the runner
QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
print(sorted(destroyed))
"""


def test_a_relay_deleted_after_its_runner_was_dropped_deletes_once(tmp_path) -> None:
    """A job's relay is a Qt child of its runner and was deleted later (deleteLater); when
    the relay held the runner strongly and that was the runner's last reference, the
    relay's deletion freed the runner, whose destructor deleted the relay again inside the
    first deletion: a segfault (2 full-suite runs in 23). In a child process, so a crash is
    a failure here, not the end of the suite."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", RELAY_OUTLIVES_RUNNER], capture_output=True, text=True, cwd=root, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "['relay', 'runner']"

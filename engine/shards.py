"""Run one piece of work over sample ranges in forked worker processes.

Calibration and evaluation are sums over samples: each worker process takes a contiguous
range of samples (split at run boundaries, see :func:`engine.calibrate._shards`), computes
its partial result, and the parent merges the partial results in range order.

Forked workers inherit the loaded model, plan and executors (nothing is reloaded or pickled
on the way in; only the small partial results come back, pickled). ``fork`` is used only
when it is safe: on a POSIX system and from a process with no other Python thread running
(a forked child gets only the forking thread; a lock held by another thread would never be
released in it). Callers fall back to one process otherwise (:func:`fork_is_safe`), which is
always the case inside the GUI, whose jobs run on worker threads.

Each worker limits its BLAS to ``cpus // workers`` threads (threadpoolctl: numpy is already
imported, so environment variables no longer apply) and ignores SIGINT: Ctrl-C reaches the
parent, which terminates its workers. Progress travels back in samples; ``cancel()`` is
polled by the parent every 0.1 s.
"""

from __future__ import annotations

import os
import queue as queue_mod
import signal
import sys
import threading
from typing import Any, Callable, TypeVar

from engine.errors import Cancelled, ModelError

T = TypeVar("T")
ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
Work = Callable[[int, int, ProgressFn], T]
"""``work(start, stop, progress)``: the partial result over samples ``start:stop``;
``progress(done, total)`` counts samples within the range."""

POLL_S = 0.1


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_workers() -> int:
    """The default number of worker processes: one per CPU, at most 8."""
    return max(1, min(8, cpu_count()))


def fork_is_safe() -> bool:
    """True when this process may fork workers: POSIX ``fork`` exists and no other Python
    thread runs (so no lock can be held by a thread the child would not have)."""
    if sys.platform == "win32" or not hasattr(os, "fork"):
        return False
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        return False
    return threading.active_count() == 1


def _child(messages: Any, index: int, work: Work[Any], start: int, stop: int, blas_threads: int) -> None:
    """Entry point of a forked worker: compute the range, send back the result or one line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    last = [0]

    def progress(done: int, _total: int) -> None:
        messages.put(("progress", index, done - last[0]))
        last[0] = done

    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=blas_threads, user_api="blas"):
            result = work(start, stop, progress)
        messages.put(("result", index, result))
    except ModelError as e:
        messages.put(("error", index, str(e)))
    except BaseException as e:  # report, never hang the parent
        detail = " ".join(str(e).split())[:200]
        messages.put(("error", index, f"worker failed: {type(e).__name__}: {detail}"))


def run_forked(
    work: Work[T],
    shards: list[tuple[int, int]],
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    what: str = "work",
) -> list[T]:
    """``work`` over every ``(start, stop)`` of ``shards``, one forked process each; the
    results in shard order. Raises :class:`ModelError` with the worker's one-line message
    when a worker fails or dies, :class:`Cancelled` when ``cancel()`` turns True."""
    import multiprocessing as mp

    if not fork_is_safe():
        raise ModelError(f"{what}: worker processes need fork, which is not safe here")
    ctx = mp.get_context("fork")
    messages = ctx.Queue()
    blas_threads = max(1, cpu_count() // max(1, len(shards)))
    procs = []
    for i, (a, b) in enumerate(shards):
        p = ctx.Process(target=_child, args=(messages, i, work, a, b, blas_threads), daemon=True)
        p.start()
        procs.append(p)
    return gather(procs, messages, sum(b - a for a, b in shards), progress, cancel, what)


def gather(
    procs: list[Any],
    messages: Any,
    total: int,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
    what: str,
) -> list[Any]:
    """Wait for one ``("result", index, value)`` message per worker process (forked or
    spawned), forwarding ``("progress", index, samples)`` to ``progress(done, total)``; an
    ``("error", index, line)`` message or a dead worker is a ModelError, ``cancel()`` a
    Cancelled. Workers still running when this returns or raises are terminated."""
    results: dict[int, Any] = {}
    done = 0
    try:
        while len(results) < len(procs):
            if cancel is not None and cancel():
                raise Cancelled(f"{what} cancelled")
            try:
                kind, index, payload = messages.get(timeout=POLL_S)
            except queue_mod.Empty:
                dead = [i for i, p in enumerate(procs) if i not in results and not p.is_alive() and p.exitcode != 0]
                if dead:
                    raise ModelError(f"{what} worker {dead[0]} died (exit code {procs[dead[0]].exitcode})") from None
                continue
            if kind == "progress":
                done += int(payload)
                if progress is not None:
                    progress(done, total)
            elif kind == "result":
                results[index] = payload
            else:
                raise ModelError(str(payload))
    finally:
        for p in procs:
            if p.is_alive() and len(results) < len(procs):
                p.terminate()
        for p in procs:
            p.join(timeout=5)
        messages.close()
    return [results[i] for i in range(len(procs))]

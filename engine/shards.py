"""Run one piece of work over sample ranges in forked worker processes.

Calibration and evaluation are sums over samples. The samples are cut into contiguous
shards (split at run boundaries, see :func:`engine.calibrate._shards`), more shards than
worker processes; each process takes the next shard whenever it is free, so a process on a
busier core (a shared machine's cores drift by tens of percent) simply takes fewer, and
all finish at about the same time. Partial results come back per shard and the parent
merges them in shard order, so the result does not depend on which process took what;
statistics whose merge is exact in any order (calibration's counts and min/max) are
instead continued within each process and sent once.

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
from typing import Any, Callable

from engine.errors import Cancelled, ModelError

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]

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


def _child(
    messages: Any,
    worker: int,
    work: Callable[..., Any],
    shards: list[tuple[int, int]],
    next_shard: Any,
    blas_threads: int,
    running: bool,
    on_start: Callable[[], None] | None,
) -> None:
    """Entry point of a forked worker: take the next shard until none is left, send back
    each shard's result (``running``: only the last, built on the previous) or one line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from threadpoolctl import threadpool_limits

        if on_start is not None:
            on_start()
        previous: Any = None
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            while True:
                with next_shard.get_lock():
                    index = next_shard.value
                    next_shard.value += 1
                if index >= len(shards):
                    break
                start, stop = shards[index]
                last = [0]

                def progress(done: int, _total: int) -> None:
                    messages.put(("progress", index, done - last[0]))
                    last[0] = done

                if running:
                    previous = work(start, stop, progress, previous)
                else:
                    messages.put(("result", index, work(start, stop, progress)))
        if running:
            messages.put(("result", worker, previous))
    except ModelError as e:
        messages.put(("error", worker, str(e)))
    except BaseException as e:  # report, never hang the parent
        detail = " ".join(str(e).split())[:200]
        messages.put(("error", worker, f"worker failed: {type(e).__name__}: {detail}"))


def run_forked(
    work: Callable[..., Any],
    shards: list[tuple[int, int]],
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    what: str = "work",
    workers: int | None = None,
    running: bool = False,
    on_start: Callable[[], None] | None = None,
    fold: Callable[[Any, Any], Any] | None = None,
) -> list[Any]:
    """``work`` over every ``(start, stop)`` of ``shards`` in ``workers`` forked processes
    (default: one per shard). Each process takes the next shard not yet taken whenever it is
    free, so a process on a busier core takes fewer (give more shards than workers to
    balance). ``on_start()`` runs once in each process first.

    - ``running=False``: ``work(start, stop, progress) -> T``; returns one result per shard,
      in shard order whichever process computed it (merging them in that order gives the
      same sums every run). With ``fold``, the parent folds them in that order as they
      arrive (``acc = fold(acc, next)``, while the workers go on) and returns ``[acc]``.
    - ``running=True``: ``work(start, stop, progress, previous) -> T`` continues the
      process's previous result (None at first), and only each process's last result comes
      back: for statistics whose merge does not depend on order (counts, min/max).

    Raises :class:`ModelError` with the worker's one-line message when a worker fails or
    dies, :class:`Cancelled` when ``cancel()`` turns True."""
    import multiprocessing as mp

    if not fork_is_safe():
        raise ModelError(f"{what}: worker processes need fork, which is not safe here")
    ctx = mp.get_context("fork")
    messages = ctx.Queue()
    count = len(shards) if workers is None else max(1, min(workers, len(shards)))
    next_shard = ctx.Value("i", 0)  # the next shard a free worker takes
    blas_threads = max(1, cpu_count() // count)
    procs = []
    for i in range(count):
        args = (messages, i, work, shards, next_shard, blas_threads, running, on_start)
        p = ctx.Process(target=_child, args=args, daemon=True)
        p.start()
        procs.append(p)
    expected = count if running else len(shards)
    total = sum(b - a for a, b in shards)
    results = gather(procs, messages, total, progress, cancel, what, expected, None if running else fold)
    return [r for r in results if r is not None] if running else results


def gather(
    procs: list[Any],
    messages: Any,
    total: int,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
    what: str,
    expected: int | None = None,
    fold: Callable[[Any, Any], Any] | None = None,
) -> list[Any]:
    """Wait for ``expected`` (default: one per process) ``("result", index, value)``
    messages from worker processes (forked or spawned), forwarding ``("progress", index,
    samples)`` to ``progress(done, total)``; an ``("error", index, line)`` message or a
    worker dead before all results came is a ModelError, ``cancel()`` a Cancelled. Workers
    still running when this returns or raises are terminated. The results by index, or
    with ``fold`` the one value folded over them in index order as they arrive."""
    expected = len(procs) if expected is None else expected
    results: dict[int, Any] = {}
    received = 0
    folded: Any = None
    next_index = 0  # the next result to fold
    done = 0
    try:
        while received < expected:
            if cancel is not None and cancel():
                raise Cancelled(f"{what} cancelled")
            try:
                kind, index, payload = messages.get(timeout=POLL_S)
            except queue_mod.Empty:
                dead = [i for i, p in enumerate(procs) if not p.is_alive() and p.exitcode not in (0, None)]
                if dead:
                    raise ModelError(f"{what} worker {dead[0]} died (exit code {procs[dead[0]].exitcode})") from None
                continue
            if kind == "progress":
                done += int(payload)
                if progress is not None:
                    progress(done, total)
            elif kind == "result":
                results[index] = payload
                received += 1
                while fold is not None and next_index in results:
                    value = results.pop(next_index)
                    folded = value if next_index == 0 else fold(folded, value)
                    next_index += 1
            else:
                raise ModelError(str(payload))
    finally:
        for p in procs:
            if p.is_alive() and received < expected:
                p.terminate()
        for p in procs:
            p.join(timeout=5)
        messages.close()
    return [folded] if fold is not None else [results[i] for i in range(expected)]

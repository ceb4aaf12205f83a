"""Forked shard workers: results in shard order, one-line errors, dead workers, cancel."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from engine.errors import Cancelled, ModelError
from engine.shards import fork_is_safe, run_forked

pytestmark = pytest.mark.skipif(not fork_is_safe(), reason="fork is not safe in this process")


def test_results_come_back_in_shard_order_with_progress() -> None:
    seen: list[int] = []

    def work(start: int, stop: int, progress) -> tuple[int, int, int]:
        for i in range(start, stop):
            progress(i - start + 1, stop - start)
        return (start, stop, os.getpid())

    out = run_forked(work, [(0, 3), (3, 7), (7, 8)], progress=lambda done, total: seen.append(done))
    assert [(a, b) for a, b, _ in out] == [(0, 3), (3, 7), (7, 8)]
    assert all(pid != os.getpid() for _, _, pid in out)  # really in other processes
    assert seen and seen[-1] == 8 and seen == sorted(seen)
    assert multiprocessing.active_children() == []


def test_a_failing_worker_is_a_one_line_error() -> None:
    def work(start: int, stop: int, progress) -> int:
        if start:
            raise ModelError("sample 3 is broken", "data.npz")
        return 0

    with pytest.raises(ModelError, match="sample 3 is broken"):
        run_forked(work, [(0, 2), (2, 4)], what="evaluation")
    assert multiprocessing.active_children() == []


def test_a_dead_worker_is_reported() -> None:
    def work(start: int, stop: int, progress) -> int:
        os._exit(3)

    with pytest.raises(ModelError, match=r"evaluation worker \d died \(exit code 3\)"):
        run_forked(work, [(0, 1), (1, 2)], what="evaluation")


def test_cancel_stops_the_workers() -> None:
    import time

    def work(start: int, stop: int, progress) -> int:
        time.sleep(30)
        return 0

    t = time.monotonic()
    with pytest.raises(Cancelled):
        run_forked(work, [(0, 1), (1, 2)], cancel=lambda: time.monotonic() - t > 0.3)
    assert time.monotonic() - t < 10
    assert multiprocessing.active_children() == []


def test_more_shards_than_workers_are_taken_as_workers_free_up() -> None:
    """Two processes over six shards: every shard once, results in shard order whichever
    process took it; a slow process takes fewer shards."""
    import time

    def work(start: int, stop: int, progress) -> tuple[int, int]:
        if start == 0:
            time.sleep(1.0)  # the first shard keeps its process busy while the other takes the rest
        progress(stop - start, stop - start)
        return (start, os.getpid())

    shards = [(i, i + 1) for i in range(6)]
    out = run_forked(work, shards, workers=2)
    assert [s for s, _ in out] == list(range(6))
    pids = [p for _, p in out]
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert pids.count(pids[0]) == 1  # the process busy with shard 0 took nothing else
    assert multiprocessing.active_children() == []


def test_running_results_continue_within_each_process() -> None:
    """``running=True``: each process continues its previous result; one result per process."""

    def work(start: int, stop: int, progress, previous):
        return (previous or []) + list(range(start, stop))

    out = run_forked(work, [(0, 2), (2, 5), (5, 6), (6, 9)], workers=2, running=True)
    assert len(out) <= 2
    assert sorted(v for part in out for v in part) == list(range(9))
    assert all(part == sorted(part) for part in out)  # a process takes shards in order


def test_fold_combines_results_in_shard_order_as_they_arrive() -> None:
    """``fold``: the parent folds the per-shard results in shard order (shard 0 arrives
    last here), so an order-sensitive fold gives the same value as a sequential one."""
    import time

    def work(start: int, stop: int, progress) -> list[int]:
        if start == 0:
            time.sleep(0.5)
        return list(range(start, stop))

    shards = [(0, 1), (1, 3), (3, 4), (4, 7)]
    (out,) = run_forked(work, shards, workers=2, fold=lambda acc, part: acc + part)
    assert out == list(range(7))

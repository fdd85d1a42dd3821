"""The local executor's process pool: forkserver workers that start with the common modules
imported, the driver's environment, one BLAS thread; spawn where forkserver is missing."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

import pytest

from genloom.core.executors import local
from genloom.core.executors.local import LocalExecutor


def worker_view(name: str) -> dict[str, object]:
    """What a worker sees: its pid, an environment variable, its thread settings and which of
    the preloaded modules it already holds (unpickling this function imports none of them)."""
    return {
        "pid": os.getpid(),
        "value": os.environ.get(name),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "preloaded": [m for m in ("pyarrow", "genloom.core.runner") if m in sys.modules],
        "method": multiprocessing.get_start_method(allow_none=True),
    }


def fail(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x * 2


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="no forkserver")
def test_forkserver_workers_start_warm_with_the_drivers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("GENLOOM_TEST_EXECUTOR", "before")
    ex = LocalExecutor(workers=2)
    try:
        first = ex.map(worker_view, ["GENLOOM_TEST_EXECUTOR"] * 4)
    finally:
        ex.close()
    assert [v["value"] for v in first] == ["before"] * 4
    pooled = [v for v in first if v["pid"] != os.getpid()]
    assert first[0] in pooled  # the first item always goes to the pool
    assert all(v["preloaded"] == ["pyarrow", "genloom.core.runner"] for v in pooled)
    assert all(v["omp"] == "1" for v in pooled)  # one BLAS thread in workers...
    assert "OMP_NUM_THREADS" not in os.environ  # ...and the driver keeps its own
    # the fork server started with the environment above; a later pool still sees the driver's now
    monkeypatch.setenv("GENLOOM_TEST_EXECUTOR", "after")
    monkeypatch.setenv("GENLOOM_TEST_EXECUTOR_NEW", "new")
    ex = LocalExecutor(workers=2)
    try:
        later = ex.map(worker_view, ["GENLOOM_TEST_EXECUTOR", "GENLOOM_TEST_EXECUTOR_NEW"])
        monkeypatch.delenv("GENLOOM_TEST_EXECUTOR_NEW")
    finally:
        ex.close()
    assert [v["value"] for v in later] == ["after", "new"]
    ex = LocalExecutor(workers=2)
    try:
        gone = ex.map(worker_view, ["GENLOOM_TEST_EXECUTOR_NEW"] * 2)
    finally:
        ex.close()
    assert [v["value"] for v in gone] == [None, None]
    assert all(run[0]["pid"] != os.getpid() for run in (first, later, gone))
    # two workers: the driver and one pool process
    assert all(len({v["pid"] for v in run}) <= 2 for run in (first, later, gone))


def test_spawn_where_forkserver_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert local.pool_context().get_start_method() == "spawn"
    monkeypatch.setenv("GENLOOM_TEST_EXECUTOR", "spawned")
    ex = LocalExecutor(workers=2)
    try:
        seen = ex.map(worker_view, ["GENLOOM_TEST_EXECUTOR"] * 2)
    finally:
        ex.close()
    assert [v["value"] for v in seen] == ["spawned"] * 2
    assert seen[0]["omp"] == "1" and seen[0]["pid"] != os.getpid()


def test_results_in_order_and_errors_raised() -> None:
    ex = LocalExecutor(workers=2)
    try:
        done: list[int] = []
        assert ex.map(fail, [0, 1, 2], lambda i, _r: done.append(i)) == [0, 2, 4]
        assert sorted(done) == [0, 1, 2]
        with pytest.raises(ValueError, match="three"):
            ex.map(fail, [1, 3])
    finally:
        ex.close()
    assert LocalExecutor(workers=1).map(fail, [5]) == [10]  # inline


def slow_pid(x: int) -> tuple[int, int]:
    time.sleep(0.05)
    return x, os.getpid()


def test_the_driver_is_one_of_the_workers() -> None:
    """With two workers the pool has one process and the driver runs the items still waiting,
    from the end, while the pool takes them from the front: two processes in all, in order."""
    ex = LocalExecutor(workers=2)
    try:
        done: list[int] = []
        out = ex.map(slow_pid, list(range(8)), lambda i, _r: done.append(i))
        pool_pid = {pid for _x, pid in out} - {os.getpid()}
        assert ex._pool is not None and ex._pool._max_workers == 1
    finally:
        ex.close()
    assert [x for x, _pid in out] == list(range(8))
    assert sorted(done) == list(range(8))
    pids = [pid for _x, pid in out]
    assert pids[0] != os.getpid() and len(pool_pid) == 1  # the first item is the pool's
    assert pids[-1] == os.getpid()  # the last one was waiting when the driver began: its own
    # each took a run of items from its end of the list
    first_driver = pids.index(os.getpid())
    assert all(p != os.getpid() for p in pids[:first_driver]) and all(
        p == os.getpid() for p in pids[first_driver:]
    )


def touch(item: list[int]) -> int:
    item.append(os.getpid())  # as a step's setup fills its private state
    time.sleep(0.02)
    return len(item)


def test_the_driver_runs_a_copy_as_a_worker_receives_it() -> None:
    items = [[k] for k in range(6)]
    ex = LocalExecutor(workers=2)
    try:
        assert ex.map(touch, items) == [2] * 6
    finally:
        ex.close()
    assert items == [[k] for k in range(6)]  # the caller's objects are as they were

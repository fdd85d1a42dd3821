"""The local executor's process pool: forkserver workers that start with the common modules
imported, the driver's environment, one BLAS thread; spawn where forkserver is missing."""

from __future__ import annotations

import multiprocessing
import os
import sys

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
    assert all(v["preloaded"] == ["pyarrow", "genloom.core.runner"] for v in first)
    assert all(v["omp"] == "1" for v in first)  # one BLAS thread in workers...
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
    assert all(v["pid"] != os.getpid() for v in first + later + gone)


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
    assert all(v["omp"] == "1" and v["pid"] != os.getpid() for v in seen)


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

"""Run leases on SQLite and PostgreSQL: one holder at a time, renewed while held, freed on
release, taken over when its holder's process is gone or it expired; a second ``Pipeline.run``
of the same pipeline fails before it starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from genloom.core.catalog import Catalog
from genloom.core.lease import Lease, RunInProgress, leases, run_lease_name
from genloom.pipeline import Pipeline
from tests.conftest import write_pipeline
from tests.core.test_catalog import catalog  # noqa: F401  (SQLite, then PostgreSQL)


def _foreign(cat: Catalog, name: str, *, host: str, pid: int, expires_in: float) -> None:
    """A lease row written by another process (or machine)."""
    Lease(cat.engine, name)  # creates the table
    now = datetime.now(UTC)
    with cat.engine.begin() as c:
        c.execute(
            insert(leases).values(
                name=name,
                holder="other",
                host=host,
                pid=pid,
                acquired_at=now - timedelta(seconds=5),
                expires_at=now + timedelta(seconds=expires_in),
            )
        )


def test_one_holder_then_free_after_release(catalog: Catalog) -> None:  # noqa: F811
    first = Lease(catalog.engine, "run:p")
    first.acquire()
    with pytest.raises(RunInProgress) as info:
        Lease(catalog.engine, "run:p").acquire()
    assert info.value.holder["pid"] == os.getpid()
    assert f"pid {os.getpid()}" in str(info.value) and "run:p" in str(info.value)
    with Lease(catalog.engine, "run:q"):  # another name is independent
        pass
    first.release()
    with Lease(catalog.engine, "run:p") as again:
        assert again.current() is not None and again.current()["holder"] == again.holder
    assert Lease(catalog.engine, "run:p").current() is None


def test_a_held_lease_is_renewed_past_its_ttl(catalog: Catalog) -> None:  # noqa: F811
    with Lease(catalog.engine, "run:p", ttl_s=0.6) as held:
        time.sleep(1.5)  # 2.5 TTLs: only the renewals keep it live
        with pytest.raises(RunInProgress):
            Lease(catalog.engine, "run:p").acquire()
        assert not held.lost


def test_a_dead_local_holder_and_an_expired_remote_one_are_taken_over(catalog: Catalog) -> None:  # noqa: F811
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = Lease(catalog.engine, "run:p")
    _foreign(catalog, "run:p", host=me.host, pid=gone.pid, expires_in=3600)
    assert me.current() is None  # stale: its process no longer exists
    with me:
        pass
    _foreign(catalog, "run:p", host="elsewhere", pid=1, expires_in=-1)
    with Lease(catalog.engine, "run:p"):
        pass
    _foreign(catalog, "run:p", host="elsewhere", pid=1, expires_in=3600)  # live on another machine
    with pytest.raises(RunInProgress) as info:
        Lease(catalog.engine, "run:p").acquire()
    assert info.value.holder["host"] == "elsewhere"
    with catalog.engine.connect() as c:  # the live row is untouched
        assert c.execute(select(leases.c.holder)).scalars().all() == ["other"]


def test_a_second_run_of_a_pipeline_fails_before_it_starts(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path / "p")
    p = Pipeline.from_file(path)
    try:
        _foreign(p.catalog, run_lease_name(p.cfg.name), host="elsewhere", pid=1, expires_in=3600)
        assert p.run_in_progress() is not None
        with pytest.raises(RunInProgress, match="pid 1 on elsewhere"):
            p.run(until="ingest")
        assert p.catalog.runs(p.cfg.name) == []  # nothing recorded: the run never started
        with p.catalog.engine.begin() as c:
            c.execute(leases.delete())
        summary = p.run(until="ingest")
        assert summary.status == "succeeded" and p.run_in_progress() is None
    finally:
        p.close()

"""Run leases: at most one run of a pipeline at a time, across processes and machines.

A lease is a row of the ``leases`` table in the catalog's database (SQLite or PostgreSQL; its
own metadata, like the monitoring log), keyed by name (``run:<pipeline name>``). Taking it is an
INSERT that the primary key lets only one writer win; the holder renews ``expires_at`` from a
background thread every ``ttl / 3`` seconds and deletes the row when it is done. A lease is free
again when it expired (its holder stopped renewing: killed, or its machine gone) or when its
holder ran on this machine and its process no longer exists (a ``kill -9`` here frees it at once,
so a killed run resumes without waiting for the TTL).

A second ``genloom run`` of the same pipeline fails at once with who holds the lease (``RunInProgress``),
as DVC does with its repository lock, rather than waiting or racing the first on the same artifacts;
``genloom monitor`` records a ``none`` decision instead of starting a second retrain.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from genloom.core.errors import GenloomError

log = logging.getLogger("genloom.lease")
metadata = MetaData()

leases = Table(
    "leases",
    metadata,
    Column("name", String(300), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

#: seconds a lease lives without renewal (renewed every third of it)
TTL_S = 120.0


class RunInProgress(GenloomError):
    """Another process holds the lease."""

    def __init__(self, name: str, holder: dict[str, Any]) -> None:
        self.name = name
        self.holder = holder
        since = holder["acquired_at"]
        super().__init__(
            f"another run holds {name!r}: pid {holder['pid']} on {holder['host']} since "
            f"{since:%Y-%m-%d %H:%M:%S} UTC (lease renewed until {holder['expires_at']:%H:%M:%S} UTC); "
            "wait for it to finish, or stop it (a lease whose holder stopped frees itself "
            f"within {TTL_S:.0f} s)"
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite drops the zone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class Lease:
    """``with Lease(engine, name):`` holds the lease for the block (``RunInProgress`` if taken)."""

    def __init__(self, engine: Engine, name: str, ttl_s: float = TTL_S) -> None:
        self.engine = engine
        self.name = name
        self.ttl_s = ttl_s
        self.holder = uuid.uuid4().hex
        self.host = socket.gethostname()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = False
        metadata.create_all(engine)

    # -- reading --------------------------------------------------------------------------------

    def current(self) -> dict[str, Any] | None:
        """The live holder of the lease (None when free or stale)."""
        with self.engine.connect() as c:
            row = c.execute(select(leases).where(leases.c.name == self.name)).mappings().first()
        if row is None:
            return None
        found = dict(row) | {
            "acquired_at": _utc(row["acquired_at"]),
            "expires_at": _utc(row["expires_at"]),
        }
        return None if self._stale(found) else found

    def _stale(self, row: dict[str, Any]) -> bool:
        if _utc(row["expires_at"]) <= _now():
            return True
        return row["host"] == self.host and not _alive(int(row["pid"]))

    # -- taking and giving back -----------------------------------------------------------------

    def acquire(self) -> None:
        for _ in range(3):  # a stale row is removed, then the insert is tried again
            now = _now()
            row = {
                "name": self.name,
                "holder": self.holder,
                "host": self.host,
                "pid": os.getpid(),
                "acquired_at": now,
                "expires_at": now + timedelta(seconds=self.ttl_s),
            }
            try:
                with self.engine.begin() as c:
                    c.execute(insert(leases).values(**row))
            except (IntegrityError, OperationalError) as e:
                if isinstance(e, OperationalError) and "locked" not in str(e).lower():
                    raise
                held = self._held_row()
                if held is None:
                    continue  # released between the insert and the read
                if not self._stale(held):
                    raise RunInProgress(self.name, held) from None
                with self.engine.begin() as c:  # only that stale row: a new holder's stays
                    c.execute(
                        delete(leases).where(leases.c.name == self.name, leases.c.holder == held["holder"])
                    )
                continue
            self._renewer = threading.Thread(target=self._renew, name=f"lease {self.name}", daemon=True)
            self._renewer.start()
            return
        raise GenloomError(f"could not take the lease {self.name!r}: it changed hands three times")

    def _held_row(self) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(leases).where(leases.c.name == self.name)).mappings().first()
        return None if row is None else dict(row)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                with self.engine.begin() as c:
                    done = c.execute(
                        update(leases)
                        .where(leases.c.name == self.name, leases.c.holder == self.holder)
                        .values(expires_at=_now() + timedelta(seconds=self.ttl_s))
                    )
            except OperationalError:  # a busy database: the next renewal is a third of the TTL away
                continue
            if done.rowcount == 0:  # expired unrenewed (the process was stopped) and taken by another
                self.lost = True
                log.warning("lease %s was taken by another process after it expired", self.name)
                return

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        with self.engine.begin() as c:
            c.execute(delete(leases).where(leases.c.name == self.name, leases.c.holder == self.holder))

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def run_lease_name(pipeline_name: str) -> str:
    return f"run:{pipeline_name}"


__all__ = ["Lease", "RunInProgress", "TTL_S", "run_lease_name"]

"""What monitoring found and decided: ``monitor_checks`` and ``monitor_decisions`` rows in the
catalog's database (same engine, their own metadata, like serve/traffic.py's request log).

The read API (``MonitorLog.checks`` / ``MonitorLog.decisions`` and their dict keys) is what the
dashboard shows; keep names and keys stable.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
)
from sqlalchemy.engine import Connection, Engine

from genloom.core.catalog import _jsonable, _now
from genloom.core.errors import ConfigError, GenloomError

metadata = MetaData()

CHECK_KINDS = ("drift", "quality", "feedback", "new_data", "schedule")
ACTIONS = ("none", "retrain", "promote", "keep", "rollback", "failed")

monitor_checks = Table(
    "monitor_checks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("model", String(200), index=True),
    Column("version", Integer),
    Column("window_start", DateTime(timezone=True)),
    Column("window_end", DateTime(timezone=True)),
    Column("kind", String(20), nullable=False),
    Column("signal", String(200), nullable=False),
    Column("method", String(20), nullable=False),
    Column("score", Float),
    Column("threshold", Float),
    Column("p_value", Float),
    Column("breached", Boolean, nullable=False),
    Column("evidence", JSON),
)

monitor_decisions = Table(
    "monitor_decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("model", String(200), nullable=False, index=True),
    Column("action", String(20), nullable=False),
    Column("champion_version", Integer),
    Column("challenger_version", Integer),
    Column("reason", Text, nullable=False),
    Column("evidence", JSON),
)

CHECK_KEYS = tuple(monitor_checks.c.keys())
DECISION_KEYS = tuple(monitor_decisions.c.keys())


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class MonitorLog:
    """Stores monitoring checks and the decisions taken on them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    # -- writers
    def add_check(
        self,
        *,
        kind: str,
        signal: str,
        method: str,
        score: float | None,
        threshold: float | None,
        breached: bool,
        model: str | None = None,
        version: int | None = None,
        window_start: datetime | None = None,
        window_end: datetime | None = None,
        p_value: float | None = None,
        evidence: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> int:
        """Store one check; its id. ``kind`` is one of CHECK_KINDS."""
        if kind not in CHECK_KINDS:
            raise ConfigError(f"check kind {kind!r} is not one of {', '.join(CHECK_KINDS)}")
        values = dict(
            created_at=at or _now(),
            model=model,
            version=version,
            window_start=window_start,
            window_end=window_end,
            kind=kind,
            signal=signal,
            method=method,
            score=_finite(score),
            threshold=_finite(threshold),
            p_value=_finite(p_value),
            breached=bool(breached),
            evidence=_jsonable(evidence if evidence is not None else {}),
        )
        return self._insert(monitor_checks, values)

    def add_decision(
        self,
        *,
        model: str,
        action: str,
        reason: str,
        champion_version: int | None = None,
        challenger_version: int | None = None,
        evidence: dict[str, Any] | None = None,
        at: datetime | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Store one decision; its id. ``action`` is one of ACTIONS. With ``conn``, in that
        connection's transaction (the caller's), else in one of its own."""
        if action not in ACTIONS:
            raise ConfigError(f"decision action {action!r} is not one of {', '.join(ACTIONS)}")
        values = dict(
            created_at=at or _now(),
            model=model,
            action=action,
            champion_version=champion_version,
            challenger_version=challenger_version,
            reason=reason,
            evidence=_jsonable(evidence if evidence is not None else {}),
        )
        return self._insert(monitor_decisions, values, conn)

    def _insert(self, table: Table, values: dict[str, Any], conn: Connection | None = None) -> int:
        if conn is not None:
            res = conn.execute(insert(table).values(**values))
            (rid,) = res.inserted_primary_key or (None,)
        else:
            with self.engine.begin() as c:
                res = c.execute(insert(table).values(**values))
                (rid,) = res.inserted_primary_key or (None,)
        if rid is None:
            raise GenloomError(f"the database gave the {table.name} row no id")
        return int(rid)

    # -- readers (the dashboard's API)
    def checks(self, model: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Stored checks, newest first (keys: CHECK_KEYS)."""
        q = select(monitor_checks).order_by(monitor_checks.c.id.desc()).limit(limit)
        if model is not None:
            q = q.where(monitor_checks.c.model == model)
        return self._rows(q, CHECK_KEYS)

    def decisions(self, model: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Stored decisions, newest first (keys: DECISION_KEYS)."""
        q = select(monitor_decisions).order_by(monitor_decisions.c.id.desc()).limit(limit)
        if model is not None:
            q = q.where(monitor_decisions.c.model == model)
        return self._rows(q, DECISION_KEYS)

    def decision(self, decision_id: int) -> dict[str, Any] | None:
        """One stored decision (keys: DECISION_KEYS), or None."""
        rows = self._rows(
            select(monitor_decisions).where(monitor_decisions.c.id == decision_id), DECISION_KEYS
        )
        return rows[0] if rows else None

    def _rows(self, q: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = [dict(r._mapping) for r in c.execute(q)]
        out = []
        for r in rows:
            d = {k: r.get(k) for k in keys}
            d["evidence"] = d["evidence"] or {}
            if "breached" in d:
                d["breached"] = bool(d["breached"])
            out.append(d)
        return out

"""What the server saw, for monitoring: one ``requests`` row per /v1 request and the ``feedback``
given on them, in the catalog's database (same engine, their own metadata, like the API keys).

A text request also stores why it stopped (``finish_reason``: "length" when any of its choices
stopped at the token limit, else "stop") and the token limit it ran under (``max_tokens``, after
the server's cap), which monitoring's truncation check reads. A ``requests`` table made before
these columns existed gets them added (NULL for its older rows)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from genloom.core.errors import GenloomError, NotFoundError

metadata = MetaData()

requests = Table(
    "requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("endpoint", String(100), nullable=False),
    Column("model", String(200)),
    Column("version", Integer),
    Column("key_id", String(32)),
    Column("latency_s", Float, nullable=False),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("status", Integer, nullable=False),
    Column("prompt", Text),
    Column("output", Text),
    Column("finish_reason", String(16)),
    Column("max_tokens", Integer),
)
#: columns added after the first release of the table, with their SQL type (added when missing)
_ADDED_COLUMNS = {"finish_reason": "VARCHAR(16)", "max_tokens": "INTEGER"}

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("rating", Integer, nullable=False),
    Column("correction", Text),
)


@dataclass
class RequestRecord:
    """One served request, as stored."""

    request_id: str
    created_at: datetime
    endpoint: str
    status: int
    latency_s: float
    model: str | None = None
    version: int | None = None
    key_id: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt: str | None = None
    output: str | None = None
    finish_reason: str | None = None
    max_tokens: int | None = None


class RequestLog:
    """Stores served requests and feedback on them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)
        for name, sql_type in _ADDED_COLUMNS.items():
            if name in self._columns():
                continue
            try:
                with engine.begin() as c:
                    c.execute(text(f"ALTER TABLE requests ADD COLUMN {name} {sql_type}"))
            except DBAPIError:
                if name not in self._columns():  # not another process adding it at the same time
                    raise

    def _columns(self) -> set[str]:
        return {c["name"] for c in inspect(self.engine).get_columns("requests")}

    def add(self, record: RequestRecord) -> None:
        """Store one request."""
        with self.engine.begin() as c:
            c.execute(insert(requests).values(**record.__dict__))

    def get(self, request_id: str) -> dict[str, Any] | None:
        """The stored request ``request_id``, or None."""
        with self.engine.connect() as c:
            r = c.execute(select(requests).where(requests.c.request_id == request_id)).first()
        return dict(r._mapping) if r else None

    def recent(
        self, limit: int = 100, model: str | None = None, version: int | None = None
    ) -> list[dict[str, Any]]:
        """The latest requests (of ``model``, of its ``version``), newest first."""
        q = select(requests).order_by(requests.c.id.desc()).limit(limit)
        if model is not None:
            q = q.where(requests.c.model == model)
        if version is not None:
            q = q.where(requests.c.version == version)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def served(self, model: str, version: int) -> int:
        """How many requests ``model`` version ``version`` answered (any status)."""
        from sqlalchemy import func

        q = (
            select(func.count())
            .select_from(requests)
            .where(requests.c.model == model, requests.c.version == version)
        )
        with self.engine.connect() as c:
            return int(c.execute(q).scalar() or 0)

    def add_feedback(self, request_id: str, rating: int, correction: str | None, at: datetime) -> int:
        """Store feedback on a request; its id. Unknown ``request_id``: NotFoundError."""
        with self.engine.begin() as c:
            known = c.execute(select(requests.c.id).where(requests.c.request_id == request_id)).first()
            if known is None:
                raise NotFoundError(f"no request with id {request_id!r} was served")
            res = c.execute(
                insert(feedback).values(
                    request_id=request_id, created_at=at, rating=rating, correction=correction
                )
            )
            (fid,) = res.inserted_primary_key or (None,)
        if fid is None:
            raise GenloomError(f"the database gave the feedback on {request_id!r} no id")
        return int(fid)

    def feedback(self, request_id: str) -> list[dict[str, Any]]:
        """Feedback stored for ``request_id``, oldest first."""
        q = select(feedback).where(feedback.c.request_id == request_id).order_by(feedback.c.id)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]


def utc(ts: float) -> datetime:
    """A clock reading (seconds since the epoch) as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)

"""Corrections given on served outputs (``/v1/feedback``), as training records with their provenance."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, SecretStr

from genloom.core.errors import SourceError
from genloom.core.records import Rejected
from genloom.core.registry import SOURCES
from genloom.core.steps import Source

#: the request log's text endpoints (genloom.serve writes the rows; this package may not import it)
COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"


def _log_tables() -> tuple[Any, Any]:
    """The columns this source reads of the request log's ``feedback`` and ``requests`` tables
    (genloom.serve.traffic writes them; a source sits below serve, so it declares what it reads)."""
    from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text

    md = MetaData()
    feedback = Table(
        "feedback",
        md,
        Column("id", Integer, primary_key=True),
        Column("request_id", String(64)),
        Column("created_at", DateTime(timezone=True)),
        Column("rating", Integer),
        Column("correction", Text),
    )
    requests = Table(
        "requests",
        md,
        Column("id", Integer, primary_key=True),
        Column("request_id", String(64)),
        Column("created_at", DateTime(timezone=True)),
        Column("endpoint", String(100)),
        Column("model", String(200)),
        Column("version", Integer),
        Column("prompt", Text),
    )
    return feedback, requests


@SOURCES.register("feedback")
class FeedbackSource(Source):
    """Corrected outputs that users sent to ``/v1/feedback``, joined with the request they correct.

    Each feedback row with a non-empty ``correction`` becomes one record: with ``format: text``
    the request's prompt, ``separator`` and the correction (a chat request's prompt is its
    messages' contents, one per line); with ``format: chat`` the conversation as JSON in
    ``text``: the request's messages (a completion's prompt as one user message) and the
    correction as the assistant's reply, what ``train.chat`` reads with ``messages_field: text``.
    The id is ``feedback:<feedback id>``, the source ``feedback``, and ``meta`` carries the
    provenance: ``feedback_id``, ``request_id``, ``rating``, ``endpoint``, the served ``model`` and
    ``version``, ``request_at`` and ``feedback_at`` (ISO, UTC). A request logged without its
    prompt (``genloom serve`` with ``redact: true``) is quarantined as ``no_prompt``; one of
    another endpoint (samples, embeddings) as ``not_a_text_request``; one with several prompts as
    ``several_prompts`` (which one was corrected is unknown). Several corrections of one request
    are several records (a dedup step keeps one).

    The rows are read from the pipeline's own catalog (where ``genloom serve`` logs), or from
    ``catalog``. The fingerprint is the number of corrections and the largest feedback id, so a
    new correction reruns the source (the log is append-only). Reads run on the driver's machine
    (``local_only``): a SQLite catalog is a file of it.
    """

    type: Literal["feedback"] = "feedback"
    catalog: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the catalog holding the request log (default: the pipeline's "
        "catalog.url); a relative SQLite path is relative to the pipeline file",
    )
    model: str | None = Field(default=None, description="only feedback on requests served by this model")
    min_rating: int | None = Field(
        default=None, description="only feedback rated at least this (default: any rating)"
    )
    format: Literal["text", "chat"] = Field(
        default="text",
        description="text: prompt + separator + correction; chat: the conversation as JSON messages "
        "(for train.chat)",
    )
    separator: str = Field(
        default=" ",
        description="between a prompt and its correction (format: text), left out when either side "
        "already has whitespace there",
    )

    version: ClassVar[str] = "1"
    requires: ClassVar[tuple[str, ...]] = ("sqlalchemy",)

    _pipeline_catalog: str | None = PrivateAttr(default=None)

    def bind_catalog(self, url: str) -> None:
        """Take the pipeline's catalog URL (read when ``catalog`` is not given)."""
        self._pipeline_catalog = url

    def _url(self) -> str:
        from genloom.core.catalog import resolve_url

        url = self.catalog.get_secret_value() if self.catalog else self._pipeline_catalog
        if url is None:
            url = "sqlite:///.genloom/catalog.db"  # CatalogConfig's default
        return resolve_url(url, Path(self.base_dir))

    def local_only(self) -> bool:
        return True  # the catalog is usually a SQLite file of this machine

    def _query(self, summary: bool) -> Any:
        """The corrections (joined with their requests) this source reads, or their count and top id."""
        from sqlalchemy import func, select

        f, r = _log_tables()
        joined = f.join(r, r.c.request_id == f.c.request_id)
        if summary:
            q = select(func.count(), func.max(f.c.id)).select_from(joined)
        else:
            q = (
                select(
                    f.c.id,
                    f.c.request_id,
                    f.c.created_at,
                    f.c.rating,
                    f.c.correction,
                    r.c.created_at.label("request_at"),
                    r.c.endpoint,
                    r.c.model,
                    r.c.version,
                    r.c.prompt,
                )
                .select_from(joined)
                .order_by(f.c.id)
            )
        q = q.where(f.c.correction.is_not(None), f.c.correction != "")
        if self.model is not None:
            q = q.where(r.c.model == self.model)
        if self.min_rating is not None:
            q = q.where(f.c.rating >= self.min_rating)
        return q

    def _tables_exist(self, engine: Any) -> bool:
        from sqlalchemy import inspect

        names = set(inspect(engine).get_table_names())
        return {"feedback", "requests"} <= names

    def _engine(self) -> Any:
        from sqlalchemy import create_engine

        try:
            return create_engine(self._url(), future=True)
        except Exception as e:  # a malformed URL: its text may hold a password, never echo it
            raise SourceError(
                f"feedback source: the catalog URL is not usable ({type(e).__name__})"
            ) from None

    def fingerprint(self) -> str:
        """The corrections' count and largest id, and a hash of the catalog URL."""
        from sqlalchemy.exc import SQLAlchemyError

        where = hashlib.sha256(self._url().encode()).hexdigest()[:16]
        engine = self._engine()
        try:
            if not self._tables_exist(engine):
                return f"{where}:no-log"
            with engine.connect() as c:
                count, top = c.execute(self._query(summary=True)).one()
        except SQLAlchemyError as e:
            raise SourceError(f"feedback source: cannot read the request log: {type(e).__name__}") from None
        finally:
            engine.dispose()
        return f"{where}:{count}:{top}"

    def read(self, partition: Any) -> Iterator[dict[str, Any] | Rejected]:
        """One record per correction, or its quarantine marker."""
        from sqlalchemy.exc import SQLAlchemyError

        engine = self._engine()
        try:
            if not self._tables_exist(engine):
                return
            with engine.connect() as c:
                for row in c.execution_options(yield_per=2000).execute(self._query(summary=False)):
                    yield self._record(row._mapping)
        except SQLAlchemyError as e:
            raise SourceError(f"feedback source: cannot read the request log: {type(e).__name__}") from None
        finally:
            engine.dispose()

    def location(self, partition: Any) -> str:
        return "feedback"

    def _record(self, row: Any) -> dict[str, Any] | Rejected:
        rid = f"feedback:{row['id']}"
        where = f"feedback {row['id']} on request {row['request_id']}"
        endpoint, prompt = row["endpoint"], row["prompt"]
        if endpoint not in (COMPLETIONS, CHAT):
            return Rejected(rid, "not_a_text_request", where, f"endpoint {endpoint}")
        if prompt is None:
            return Rejected(rid, "no_prompt", where, "the request log holds no prompt (redact: true)")
        messages = _messages(prompt, endpoint)
        if isinstance(messages, str):
            reason = "several_prompts" if messages.startswith("several") else "malformed_prompt"
            return Rejected(rid, reason, where, messages)
        correction = str(row["correction"])
        if self.format == "chat":
            text = json.dumps([*messages, {"role": "assistant", "content": correction}], ensure_ascii=False)
        else:
            before = "\n".join(m["content"] for m in messages if m["role"] != "assistant")
            if endpoint == COMPLETIONS:
                before = messages[0]["content"]
            sep = "" if not before or before[-1:].isspace() or correction[:1].isspace() else self.separator
            text = before + sep + correction
        meta = {
            "feedback": True,
            "feedback_id": int(row["id"]),
            "request_id": row["request_id"],
            "rating": int(row["rating"]),
            "endpoint": endpoint,
            "model": row["model"],
            "version": row["version"],
            "request_at": _iso(row["request_at"]),
            "feedback_at": _iso(row["created_at"]),
        }
        return {"id": rid, "text": text, "source": "feedback", "meta": meta}


def _messages(prompt: str, endpoint: str) -> list[dict[str, str]] | str:
    """The request's prompt as chat messages (a completion's as one user message), or why not."""
    if endpoint == COMPLETIONS:
        if prompt.startswith('["'):  # several prompts are logged as a JSON list of strings
            try:
                items = json.loads(prompt)
            except ValueError:
                items = None
            if isinstance(items, list) and all(isinstance(x, str) for x in items):
                if len(items) != 1:
                    return f"several prompts ({len(items)}) in one request"
                prompt = items[0]
        return [{"role": "user", "content": prompt}]
    try:
        messages = json.loads(prompt)
    except ValueError:
        return "the logged chat prompt is not JSON"
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in messages
    ):
        return "the logged chat prompt is not a list of {role, content} messages"
    return [{"role": str(m["role"]), "content": m["content"]} for m in messages]


def _iso(value: Any) -> str | None:
    """A stored time as ISO 8601 (SQLite gives naive datetimes, in UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    text = value.isoformat() if value.tzinfo else value.isoformat() + "+00:00"
    return text.replace("+00:00", "Z")


__all__ = ["FeedbackSource"]

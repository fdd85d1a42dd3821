"""MongoDB collections (pymongo): a filter and projection, in _id order, incremental by a field."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal
from urllib.parse import quote, unquote, urlsplit

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from genloom.core.errors import ConfigError, MissingDependencyError, SourceError
from genloom.core.records import RECORD_COLUMNS, Rejected, record_id
from genloom.core.registry import SOURCES
from genloom.core.steps import Source
from genloom.sources._retry import call_with_retries, is_final, retries_note, wait_before_retry
from genloom.sources._series import typed_column
from genloom.sources.csv import render_template

log = logging.getLogger("genloom.sources.mongodb")

# server error codes that no retry fixes: authentication failed, unauthorized, bad query
_FATAL_CODES = {2, 9, 13, 18, 31, 292}


class MongoIncrementalConfig(BaseModel):
    """Incremental reading on a field that only grows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str = Field(
        description="a field that only grows (an update time, an increasing number): each run that "
        "finds documents past the last run's watermark reads them as a new partition"
    )


@SOURCES.register("mongodb")
class MongodbSource(Source):
    """Documents of a MongoDB collection, one record per document, through pymongo.

    ``filter`` and ``projection`` are MongoDB's own (JSON in YAML); documents are read in
    ``_id`` order in batches of ``batch_size``, so a cursor lost mid-read resumes after the last
    ``_id`` read (``retries`` times, with backoff); a server that cannot be reached, refuses the
    credentials or keeps dropping fails the stage with ``SourceError``, never with fewer rows.
    Top-level fields become typed columns (integers, floats, booleans, text, dates as UTC
    timestamps; ObjectId, Decimal128 and UUID as text; nested documents and arrays as JSON text);
    the id is ``mongodb:<db>.<collection>#<_id>``. With ``incremental``, each run that finds
    documents whose field is past the last watermark (kept in the catalog) reads just those as a
    new partition, and the earlier partitions stay cache hits unless their count or largest
    ``_id`` changed. ``uri`` is a secret: messages show it with the password as ``***``.
    Tested only against a real server when ``GENLOOM_TEST_MONGODB_URL`` is set.
    """

    type: Literal["mongodb"] = "mongodb"
    uri: SecretStr = Field(
        description="mongodb://user:${env:MONGO_PASSWORD}@host:27017/?authSource=admin (or mongodb+srv://)"
    )
    database: str = Field(description="the database")
    collection: str = Field(description="the collection")
    filter: dict[str, Any] = Field(default_factory=dict, description="a MongoDB query filter")
    projection: dict[str, Any] | list[str] | None = Field(
        default=None,
        description="the fields to read (a list of names, or MongoDB's projection document); "
        "_id is always read, since the read is ordered and resumed by it",
    )
    incremental: MongoIncrementalConfig | None = Field(
        default=None, description="read only documents past the last run's watermark (kept in the catalog)"
    )
    batch_size: int = Field(
        default=1000, gt=0, le=100_000, description="documents per server round trip and per batch"
    )
    text_template: str | None = Field(
        default=None, description='builds ``text`` from the fields, e.g. "{title}: {body}"'
    )
    text_field: str | None = Field(default=None, description="the field copied to ``text``")
    retries: int = Field(default=3, ge=0, description="attempts after a failed or dropped connection")
    retry_backoff_s: float = Field(default=1.0, ge=0, description="first wait; doubled each retry")
    timeout_s: float = Field(default=10.0, gt=0, description="server selection and socket timeout")

    requires: ClassVar[tuple[str, ...]] = ("pymongo",)
    extra: ClassVar[str] = "mongodb"
    partitions_per_shard: ClassVar[int | None] = 1

    _client_obj: Any = PrivateAttr(default=None)
    _restored: list[Any] = PrivateAttr(default_factory=list)
    _bounds: list[Any] | None = PrivateAttr(default=None)

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        private = dict(state.get("__pydantic_private__") or {})
        private["_client_obj"] = None
        return {**state, "__pydantic_private__": private}

    # -- config and secrets

    def check(self, path: str) -> None:
        if urlsplit(self.uri.get_secret_value()).scheme not in ("mongodb", "mongodb+srv"):
            raise ConfigError("uri is not a MongoDB URI (mongodb://host:27017)", path=f"{path}.uri")
        if self.text_template is not None and self.text_field is not None:
            raise ConfigError("give 'text_template' or 'text_field', not both", path=path)
        if self.incremental is not None and self.incremental.field.startswith("$"):
            raise ConfigError(
                "incremental.field is a field name, not an operator", path=f"{path}.incremental.field"
            )

    def redacted_uri(self) -> str:
        """The URI with its password replaced by ``***``."""
        raw = self.uri.get_secret_value()
        parts = urlsplit(raw)
        if parts.password is None:
            return raw
        user, _, hosts = parts.netloc.rpartition("@")
        name = user.split(":", 1)[0]
        return raw.replace(parts.netloc, f"{name}:***@{hosts}", 1)

    def redact(self, text: str) -> str:
        """``text`` with the URI and its password replaced by their redacted forms."""
        raw = self.uri.get_secret_value()
        text = text.replace(raw, self.redacted_uri())
        password = urlsplit(raw).password
        if password:
            for form in {password, quote(password, safe=""), unquote(password)}:
                text = text.replace(form, "***")
        return text

    @property
    def dataset(self) -> str:
        """``<database>.<collection>``, the name in ids and meta."""
        return f"{self.database}.{self.collection}"

    # -- connection and retries

    def _collection(self) -> Any:
        if self._client_obj is None:
            try:
                import pymongo
            except ImportError as e:
                raise MissingDependencyError(
                    "pymongo (needed by 'mongodb')", "pip install 'genloom[mongodb]'"
                ) from e
            ms = int(self.timeout_s * 1000)
            self._client_obj = pymongo.MongoClient(
                self.uri.get_secret_value(),
                serverSelectionTimeoutMS=ms,
                connectTimeoutMS=ms,
                socketTimeoutMS=ms,
                tz_aware=True,
                retryReads=False,  # this source resumes reads itself, after the last _id
                appname="genloom",
            )
        return self._client_obj[self.database][self.collection]

    def _reset(self) -> None:
        if self._client_obj is not None:
            self._client_obj.close()
            self._client_obj = None

    def _retrying(self, what: str, fn: Callable[[Any], Any]) -> Any:
        return call_with_retries(
            lambda: fn(self._collection()),
            retries=self.retries,
            is_transient=_is_transient,
            give_up=lambda e, attempt: self._error(e, attempt, what),
            wait=lambda e, attempt: self._wait(e, attempt, what),
            passthrough=(SourceError, MissingDependencyError),
            after_failure=self._reset,
        )

    def _give_up_or_wait(self, error: Exception, attempt: int, what: str) -> None:
        """After a failed call: raise SourceError when it is final, else wait before the retry."""
        self._reset()
        if is_final(error, attempt, self.retries, _is_transient):
            raise self._error(error, attempt, what) from None
        self._wait(error, attempt, what)

    def _wait(self, error: Exception, attempt: int, what: str) -> None:
        wait_before_retry(
            log,
            source="mongodb",
            target=self.redacted_uri(),
            error=self.redact(_describe(error)),
            detail=f" ({what})",
            attempt=attempt,
            retries=self.retries,
            backoff_s=self.retry_backoff_s,
        )

    def _error(self, error: Exception, attempt: int, what: str) -> SourceError:
        return SourceError(
            f"{self.redacted_uri()} {self.dataset}{retries_note(attempt)} ({what}): "
            f"{self.redact(_describe(error))}"
        )

    # -- planning

    def restore_state(self, state: dict[str, Any] | None) -> None:
        """The watermarks of the last run (from the catalog)."""
        field = self.incremental.field if self.incremental else None
        if state and state.get("field") == field:
            self._restored = [_decode(v) for v in state.get("bounds", [])]
        else:
            self._restored = []

    def state(self) -> dict[str, Any] | None:
        """The watermarks to keep for the next run (incremental mode only)."""
        if self.incremental is None or self._bounds is None:
            return None
        return {"field": self.incremental.field, "bounds": [_encode(b) for b in self._bounds]}

    def partitions(self) -> list[Any]:
        """Incremental: one partition per watermark segment; else the whole filter."""
        if self.incremental is None:
            return [None]
        field = self.incremental.field

        def top(c: Any) -> Any:
            doc = c.find_one({**self.filter, field: {"$ne": None}}, {field: 1}, sort=[(field, -1)])
            return None if doc is None else _get(doc, field)

        newest = self._retrying(f"max {field}", top)
        bounds = list(self._restored)
        if newest is not None and (not bounds or _gt(newest, bounds[-1])):
            bounds.append(newest)
        self._bounds = bounds
        if not bounds:
            return [{"field": field, "after": None, "upto": None}]
        return [
            {"field": field, "after": _encode(bounds[i - 1]) if i else None, "upto": _encode(b)}
            for i, b in enumerate(bounds)
        ]

    def _query(self, partition: Any) -> dict[str, Any]:
        if not isinstance(partition, dict):
            return dict(self.filter)
        field = partition["field"]
        after, upto = _decode(partition["after"]), _decode(partition["upto"])
        if upto is None:
            cond: dict[str, Any] = {field: None}  # nothing has the field yet
        elif after is None:  # the first segment also holds the documents without the field
            cond = {"$or": [{field: {"$lte": upto}}, {field: None}]}
        else:
            cond = {field: {"$gt": after, "$lte": upto}}
        return {"$and": [self.filter, cond]} if self.filter else cond

    def partition_fingerprint(self, partition: Any) -> str:
        """The count and the largest ``_id`` of the partition's documents (a new or deleted
        document changes it; an update in place does not, unless it moves the watermark)."""
        query = self._query(partition)

        def fp(c: Any) -> str:
            n = c.count_documents(query)
            last = c.find_one(query, {"_id": 1}, sort=[("_id", -1)])
            return f"count={n}:max_id={None if last is None else _show(last['_id'])}"

        return str(self._retrying("fingerprint", fp))

    def location(self, partition: Any) -> str:
        where = "" if partition is None else f" {json.dumps(partition, default=str)}"
        return f"{self.redacted_uri()} {self.dataset}{where}"

    # -- reading

    def read(self, partition: Any) -> Iterator[pa.Table | Rejected]:
        """The partition's documents in ``_id`` order, in batches; a lost cursor resumes."""
        query = self._query(partition)
        projection = self.find_projection()
        last_id: Any = None
        cursor: Any = None
        attempt = 0
        while True:
            try:
                if cursor is None:
                    q = query if last_id is None else {"$and": [query, {"_id": {"$gt": last_id}}]}
                    cursor = self._collection().find(
                        q, projection, sort=[("_id", 1)], batch_size=self.batch_size
                    )
                batch = list(itertools.islice(cursor, self.batch_size))
            except (SourceError, MissingDependencyError):
                raise
            except Exception as e:  # the cursor is lost: a new one starts after the last _id read
                cursor = None
                self._give_up_or_wait(
                    e, attempt, f"find, after {last_id!r}" if last_id is not None else "find"
                )
                attempt += 1
                continue
            if batch:
                last_id = batch[-1]["_id"]
                yield from self.documents_table(batch)
            if len(batch) < self.batch_size:
                return

    def find_projection(self) -> dict[str, Any] | None:
        """``projection`` as MongoDB's document, with ``_id`` always read: the read is ordered
        and resumed by it (it is kept in ``mongo_id``)."""
        projection = self.projection
        if projection is None:
            return None
        if isinstance(projection, list):
            projection = dict.fromkeys(projection, 1)
        if _excludes_only(projection):
            return {k: v for k, v in projection.items() if k != "_id"}
        return {**projection, "_id": 1}

    def documents_table(self, docs: list[dict[str, Any]]) -> Iterator[pa.Table | Rejected]:
        """Documents as one record table (typed top-level fields; ``_id`` in the id)."""
        names: dict[str, None] = {}
        for d in docs:
            for k in d:
                if k != "_id":
                    names.setdefault(k, None)
        ids = [record_id("mongodb", f"{self.dataset}#{_show(d['_id'])}") for d in docs]
        cols: dict[str, Any] = {
            "id": pa.array(ids, pa.string()),
            "source": pa.array(["mongodb"] * len(docs), pa.string()),
            "mongo_id": pa.array([_show(d["_id"]) for d in docs], pa.string()),
        }
        for name in names:
            out = f"col_{name}" if name in RECORD_COLUMNS or name == "mongo_id" else name
            cols[out] = typed_column([_plain(d.get(name)) for d in docs])
        table = pa.table(cols)
        fields = [f"col_{n}" if n in RECORD_COLUMNS or n == "mongo_id" else n for n in names]
        table = table.add_column(1, "text", self._texts(table, fields))
        meta = json.dumps({"database": self.database, "collection": self.collection}, sort_keys=True)
        yield table.add_column(3, "meta", pa.array([meta] * len(docs), pa.string()))

    def _texts(self, table: pa.Table, fields: list[str]) -> pa.Array:
        if self.text_template:
            shown = pa.table({f: _as_text(table.column(f)) for f in fields})
            return render_template(self.text_template, shown)
        if self.text_field:
            name = self.text_field if self.text_field in table.column_names else f"col_{self.text_field}"
            if name not in table.column_names:
                return pa.nulls(table.num_rows, pa.string())
            return _as_text(table.column(name))
        parts = [_as_text(table.column(f)).to_pylist() for f in fields]
        return pa.array(
            [
                "; ".join(f"{f}: {p[i]}" for f, p in zip(fields, parts, strict=True) if p[i] is not None)
                for i in range(table.num_rows)
            ],
            pa.string(),
        )


# ----------------------------------------------------------------------------------------------
# helpers


def _plain(value: Any) -> Any:
    """A BSON value as a plain Python value typed_column can type: ObjectId, Decimal128, UUID and
    other scalars as text, documents and arrays as JSON text."""
    if value is None or isinstance(value, bool | int | float | str | datetime):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, default=_show, sort_keys=True, ensure_ascii=False)
    if isinstance(value, bytes):
        return value.hex()
    return _show(value)


def _show(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if type(value).__name__ == "Decimal128":
        return str(value.to_decimal())
    return str(value)


def _as_text(col: Any) -> pa.Array:
    return pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())


def _excludes_only(projection: dict[str, Any]) -> bool:
    """Whether a projection only excludes fields (``{secret: 0}``), apart from ``_id``."""
    values = [v for k, v in projection.items() if k != "_id"]
    return bool(values) and all(v in (0, False) for v in values)


def _get(doc: dict[str, Any], path: str) -> Any:
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _encode(value: Any) -> Any:
    """A watermark as JSON (kept in the catalog and in partitions)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if type(value).__name__ == "ObjectId":
        return {"oid": str(value)}
    if type(value).__name__ == "Decimal128":
        return {"decimal128": str(value)}
    return str(value)


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "datetime" in value:
            return datetime.fromisoformat(value["datetime"])
        if "date" in value:
            return datetime.fromisoformat(value["date"])
        if "decimal" in value:
            return Decimal(value["decimal"])
        if "oid" in value:
            from bson import ObjectId

            return ObjectId(value["oid"])
        if "decimal128" in value:
            from bson.decimal128 import Decimal128

            return Decimal128(value["decimal128"])
    return value


def _gt(a: Any, b: Any) -> bool:
    try:
        return bool(a > b)
    except TypeError:  # a changed field type: start a new segment
        return str(a) > str(b)


def _is_transient(error: Exception) -> bool:
    """A lost or refused connection, a timeout, a primary stepping down: worth a retry."""
    names = {c.__name__ for c in type(error).__mro__}
    code = getattr(error, "code", None)
    if code in _FATAL_CODES or "ConfigurationError" in names or "InvalidURI" in names:
        return False
    return bool(
        names
        & {
            "AutoReconnect",
            "ConnectionFailure",
            "ServerSelectionTimeoutError",
            "NetworkTimeout",
            "NotPrimaryError",
            "CursorNotFound",
            "ExecutionTimeout",
            "OSError",
        }
    )


def _describe(error: Exception) -> str:
    first = " ".join(str(error).strip().split())
    return f"{type(error).__name__}: {first[:500]}"


__all__ = ["MongoIncrementalConfig", "MongodbSource"]

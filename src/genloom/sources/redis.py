"""Redis keys (hashes, JSON, strings) and streams, found by SCAN, read into typed records."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pyarrow as pa
from pydantic import Field, PrivateAttr, SecretStr

from genloom.core.errors import ConfigError, MissingDependencyError, SourceError
from genloom.core.records import RECORD_COLUMNS, Rejected, record_id
from genloom.core.registry import SOURCES
from genloom.core.steps import Source
from genloom.sources._retry import call_with_retries, retries_note, wait_before_retry
from genloom.sources._series import typed_column
from genloom.sources.csv import render_template

log = logging.getLogger("genloom.sources.redis")

_INT = re.compile(r"^[-+]?\d{1,18}$")
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?)$")
# columns the source adds to every record; a field of the same name becomes col_<name>
_OWN = ("redis_key", "redis_type", "entry_id", "entry_time")
_KINDS = {"hash": "hash", "string": "string", "ReJSON-RL": "json", "stream": "stream"}
FieldType = Literal["int", "float", "bool", "string", "json", "timestamp"]


@SOURCES.register("redis")
class RedisSource(Source):
    """Keys of a Redis server found by ``SCAN MATCH`` (never ``KEYS``, which blocks the server),
    one record per key, and the entries of Redis streams, one record per entry.

    Hashes give one column per field; a string holding a JSON object (or a RedisJSON value)
    gives one column per top-level field with its JSON type (nested values as JSON text); any
    other string is the ``value`` column. Hash, stream and plain-string values are text in Redis:
    a column whose every value reads as an integer (or a number) becomes int64 (float64), and
    ``types`` declares a field's type outright (a value that does not convert quarantines its
    record as ``bad_value``). Records carry ``redis_key`` and ``redis_type`` (streams also
    ``entry_id`` and ``entry_time``, UTC); ids are ``redis:<key>`` and ``redis:<key>#<entry id>``.
    A value that is not UTF-8 is quarantined as ``not_utf8``, a ``value: json`` string that is
    not JSON as ``malformed_json``, a key of a type the source does not read (list, set, zset;
    or not ``value`` when that is given) as ``unsupported_type``.

    Streams are read incrementally: each run that finds entries past the last run's position
    (kept in the catalog) reads just those as a new partition (``XRANGE`` from the position, in
    pages of ``stream_page``), and the earlier partitions stay cache hits. Other keys are one
    partition per pattern whose fingerprint is a digest of every matched key's ``DUMP``, so any
    change re-reads the pattern. ``url`` is a secret: messages show it with the password as
    ``***``. An unreachable server or a connection dropped mid-read is retried ``retries`` times
    (a ``SCAN`` resumes at its cursor, a stream after its last entry); a refused password fails
    at once; either way the stage fails with ``SourceError``, never with fewer rows.
    """

    type: Literal["redis"] = "redis"
    url: SecretStr = Field(
        description="redis://[user:password@]host:port/db (rediss:// for TLS); write the password as "
        "${env:NAME}"
    )
    patterns: list[str] = Field(
        default_factory=lambda: ["*"], min_length=1, description="SCAN MATCH patterns of the keys to read"
    )
    value: Literal["auto", "hash", "json", "string", "stream"] = Field(
        default="auto",
        description="which keys to read: auto (hashes, strings, RedisJSON values and streams, by each "
        "key's type; a string holding a JSON object gives its fields), or one kind only (keys of "
        "other types are quarantined); json: every string must hold JSON; string: strings as text",
    )
    types: dict[str, FieldType] = Field(
        default_factory=dict,
        description="declared types of fields (int, float, bool, string, json, timestamp); other "
        "fields are inferred",
    )
    label: str | None = Field(default=None, description="the name in meta (default: the patterns)")
    text_template: str | None = Field(
        default=None, description='builds ``text`` from the fields, e.g. "{name}: {comment}"'
    )
    text_field: str | None = Field(default=None, description="the field copied to ``text``")
    scan_count: int = Field(default=1000, gt=0, description="the COUNT hint of each SCAN call")
    stream_page: int = Field(default=1000, gt=0, description="stream entries per XRANGE call")
    client_name: str = Field(
        default="genloom", description="the connection's name on the server (CLIENT LIST)"
    )
    retries: int = Field(default=3, ge=0, description="attempts after a refused or dropped connection")
    retry_backoff_s: float = Field(default=0.5, ge=0, description="first wait; doubled each retry")
    timeout_s: float = Field(default=10.0, gt=0, description="connect and read timeout of each call")

    requires: ClassVar[tuple[str, ...]] = ("redis",)
    extra: ClassVar[str] = "redis"
    # one shard per stream segment or pattern: a new segment leaves the old shards' keys alone
    partitions_per_shard: ClassVar[int | None] = 1

    _client_obj: Any = PrivateAttr(default=None)
    _restored: dict[str, list[str]] = PrivateAttr(default_factory=dict)
    _positions: dict[str, list[str]] | None = PrivateAttr(default=None)

    def __getstate__(self) -> dict[Any, Any]:
        # a step is pickled to worker processes: the connection stays behind, each opens its own
        state = super().__getstate__()
        private = dict(state.get("__pydantic_private__") or {})
        private["_client_obj"] = None
        return {**state, "__pydantic_private__": private}

    # -- config and secrets

    def check(self, path: str) -> None:
        parts = urlsplit(self.url.get_secret_value())
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                "url is not a Redis URL (redis://host:6379/0, rediss://, unix://)", path=f"{path}.url"
            )
        if self.text_template is not None and self.text_field is not None:
            raise ConfigError("give 'text_template' or 'text_field', not both", path=path)

    def redacted_url(self) -> str:
        """The URL with its password replaced by ``***``: the only form messages show."""
        parts = urlsplit(self.url.get_secret_value())
        if parts.password is None:
            return self.url.get_secret_value()
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, ""))

    def redact(self, text: str) -> str:
        """``text`` with the URL and its password replaced by their redacted forms."""
        raw = self.url.get_secret_value()
        text = text.replace(raw, self.redacted_url())
        password = urlsplit(raw).password
        if password:
            for form in {password, quote(password, safe=""), unquote(password)}:
                text = text.replace(form, "***")
        return text

    @property
    def dataset(self) -> str:
        """The name in meta."""
        return self.label or ",".join(self.patterns)

    # -- connections and retries

    def _client(self) -> Any:
        if self._client_obj is None:
            try:
                import redis
                from redis.backoff import NoBackoff
                from redis.retry import Retry
            except ImportError as e:
                raise MissingDependencyError(
                    "redis (needed by 'redis')", "pip install 'genloom[redis]'"
                ) from e
            # redis-py's own retries are off: a dropped read resumes here, where the position is known
            self._client_obj = redis.Redis.from_url(
                self.url.get_secret_value(),
                socket_connect_timeout=self.timeout_s,
                socket_timeout=self.timeout_s,
                client_name=self.client_name,
                retry=Retry(NoBackoff(), 0),
                decode_responses=False,
                single_connection_client=True,
            )
        return self._client_obj

    def _reset(self) -> None:
        if self._client_obj is not None:
            with contextlib.suppress(Exception):  # a dead socket: nothing to close cleanly
                self._client_obj.close()
            self._client_obj = None

    def _retrying(self, what: str, fn: Callable[[Any], Any]) -> Any:
        """``fn(client)`` with reconnects; ``fn`` must be safe to call again after a failure."""
        return call_with_retries(
            lambda: fn(self._client()),
            retries=self.retries,
            is_transient=_is_transient,
            give_up=lambda e, attempt: self._error(e, attempt, what),
            wait=lambda e, attempt: wait_before_retry(
                log,
                source="redis",
                target=self.redacted_url(),
                error=self.redact(_describe(e)),
                detail=f" ({what})",
                attempt=attempt,
                retries=self.retries,
                backoff_s=self.retry_backoff_s,
            ),
            after_failure=self._reset,
        )

    def _error(self, error: Exception, attempt: int, what: str) -> SourceError:
        return SourceError(
            f"{self.redacted_url()}{retries_note(attempt)} ({what}): {self.redact(_describe(error))}"
        )

    # -- planning

    def restore_state(self, state: dict[str, Any] | None) -> None:
        """The stream positions of the last run (from the catalog)."""
        streams = (state or {}).get("streams")
        self._restored = {str(k): list(v) for k, v in streams.items()} if isinstance(streams, dict) else {}

    def state(self) -> dict[str, Any] | None:
        """The stream positions (segment bounds per stream) to keep for the next run."""
        if self._positions is None or not self._positions:
            return None
        return {"streams": self._positions}

    def partitions(self) -> list[Any]:
        """One partition per pattern (keys other than streams) and one per new segment of each
        stream (entries past the last run's position)."""
        parts: list[Any] = []
        if self.value != "stream":
            parts += [{"pattern": p} for p in self.patterns]
        positions: dict[str, list[str]] = {}
        if self.value in ("auto", "stream"):
            for key in self._stream_keys():
                last = self._retrying(f"XREVRANGE {key}", partial(_newest_entry, key=key))
                bounds = list(self._restored.get(key, []))
                if last:
                    top = last[0][0].decode()
                    if not bounds or _entry_order(top) > _entry_order(bounds[-1]):
                        bounds.append(top)
                if bounds:
                    positions[key] = bounds
                    for i, upto in enumerate(bounds):
                        parts.append({"stream": key, "after": bounds[i - 1] if i else None, "upto": upto})
        self._positions = positions
        return parts

    def _stream_keys(self) -> list[str]:
        keys: set[str] = set()
        for pattern in self.patterns:

            def scan(c: Any, pattern: str = pattern) -> list[bytes]:
                return list(c.scan_iter(match=pattern, count=self.scan_count, _type="stream"))

            keys.update(k.decode("utf-8", "backslashreplace") for k in self._retrying("SCAN", scan))
        return sorted(keys)

    def partition_fingerprint(self, partition: Any) -> str:
        """A stream segment is fixed by its bounds; a pattern's keys by a digest of their DUMP."""
        if "stream" in partition:
            return json.dumps(partition, sort_keys=True)
        return self._dump_digest(partition["pattern"])

    def _dump_digest(self, pattern: str) -> str:
        def digest(c: Any) -> str:
            h = hashlib.blake2b(digest_size=16)
            keys = sorted(k for k in c.scan_iter(match=pattern, count=self.scan_count))
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                pipe = c.pipeline(transaction=False)
                for k in chunk:
                    pipe.type(k)
                    pipe.dump(k)
                replies = pipe.execute(raise_on_error=False)
                for k, kind, dumped in zip(chunk, replies[::2], replies[1::2], strict=True):
                    for reply in (kind, dumped):
                        if isinstance(reply, Exception):
                            raise reply
                    if kind == b"stream":
                        continue  # streams are read (and fingerprinted) by their segments
                    h.update(k + b"\0" + (dumped or b"") + b"\n")
            return f"keys={len(keys)}:{h.hexdigest()}"

        try:
            return str(self._retrying(f"DUMP {pattern}", digest))
        except SourceError as e:
            if "DUMP" in str(e).upper() and "NOPERM" in str(e).upper():
                # DUMP forbidden by an ACL: no way to tell a change, so every run reads again
                return f"unknown:{uuid.uuid4().hex}"
            raise

    def location(self, partition: Any) -> str:
        return f"{self.redacted_url()} {json.dumps(partition, sort_keys=True)}"

    # -- reading

    def read(self, partition: Any) -> Iterator[pa.Table | Rejected]:
        """The records of one pattern's keys, or of one stream segment."""
        rows: list[dict[str, Any]] = []
        rejected: list[Rejected] = []
        if "stream" in partition:
            self._read_stream(partition, rows, rejected)
        else:
            self._read_keys(partition["pattern"], rows, rejected)
        yield from rejected
        table, bad = self._typed(rows)
        yield from bad
        for start in range(0, table.num_rows, self.batch_rows):
            yield table.slice(start, self.batch_rows)

    def _read_keys(self, pattern: str, rows: list[dict[str, Any]], rejected: list[Rejected]) -> None:
        seen: set[bytes] = set()
        cursor = 0
        done = False

        def page(c: Any) -> None:
            nonlocal cursor, done
            while not done:
                nxt, keys = c.scan(cursor, match=pattern, count=self.scan_count)
                fresh = [k for k in dict.fromkeys(keys) if k not in seen]  # SCAN may repeat a key
                if fresh:
                    got = self._fetch(c, fresh)
                    # only a page read whole counts: a drop above re-reads this page at this cursor
                    for key, kind, raw in got:
                        self._row(key, kind, raw, rows, rejected)
                    seen.update(fresh)
                cursor = int(nxt)
                done = cursor == 0

        self._retrying(f"SCAN {pattern}", page)

    def _fetch(self, c: Any, keys: list[bytes]) -> list[tuple[bytes, str, Any]]:
        pipe = c.pipeline(transaction=False)
        for k in keys:
            pipe.type(k)
        kinds = [t.decode() if isinstance(t, bytes) else str(t) for t in pipe.execute()]
        pipe = c.pipeline(transaction=False)
        wanted: list[tuple[bytes, str]] = []
        out: list[tuple[bytes, str, Any]] = []
        for k, t in zip(keys, kinds, strict=True):
            kind = _KINDS.get(t)
            if t == "none":
                continue  # deleted since SCAN saw it
            if kind == "stream":
                if self.value == "auto":
                    continue  # read through the stream partitions
                kind = None
            if kind is None or (self.value not in ("auto", "json") and kind != self.value):
                out.append((k, "unsupported", t))
                continue
            if self.value == "json" and kind == "hash":
                out.append((k, "unsupported", t))
                continue
            wanted.append((k, kind))
            if kind == "hash":
                pipe.hgetall(k)
            elif kind == "json":
                pipe.execute_command("JSON.GET", k, "$")
            else:
                pipe.get(k)
        values = pipe.execute(raise_on_error=False) if wanted else []
        for (k, kind), v in zip(wanted, values, strict=True):
            if isinstance(v, Exception):
                if _is_transient(v) or not _is_key_error(v):
                    raise v  # the connection, or the server refusing: not this key's problem
                out.append((k, "error", v))  # WRONGTYPE: the key changed type since TYPE
            elif v is not None:
                out.append((k, kind, v))
        return out

    def _row(
        self, key_b: bytes, kind: str, raw: Any, rows: list[dict[str, Any]], rejected: list[Rejected]
    ) -> None:
        key = key_b.decode("utf-8", "backslashreplace")
        rid = record_id("redis", key)
        where = f"{self.redacted_url()} {key}"
        if kind == "unsupported":
            rejected.append(Rejected(rid, "unsupported_type", where, f"a {raw} key (value: {self.value})"))
            return
        if kind == "error":
            rejected.append(Rejected(rid, f"read_error:{type(raw).__name__}", where, str(raw)[:500]))
            return
        try:
            if kind == "hash":
                fields: dict[str, Any] = {_text(f): (_text(v), "text") for f, v in raw.items()}
            elif kind == "json":
                doc = json.loads(_text(raw))
                fields = _json_fields(doc[0] if isinstance(doc, list) and len(doc) == 1 else doc)
            else:
                text = _text(raw)
                fields = self._string_fields(text)
        except UnicodeDecodeError as e:
            rejected.append(Rejected(rid, "not_utf8", where, f"byte {e.start}: {e.reason}"))
            return
        except json.JSONDecodeError as e:
            rejected.append(Rejected(rid, "malformed_json", where, str(e)))
            return
        rows.append({"_id": rid, "_key": key, "_type": kind, "_where": where, "fields": fields})

    def _string_fields(self, text: str) -> dict[str, Any]:
        if self.value == "json":
            return _json_fields(json.loads(text))
        if self.value == "string":  # asked for the text as it is
            return {"value": (text, "text")}
        stripped = text.lstrip()
        if stripped.startswith("{"):
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                doc = None
            if isinstance(doc, dict):
                return _json_fields(doc)
        return {"value": (text, "text")}

    def _read_stream(
        self, part: dict[str, Any], rows: list[dict[str, Any]], rejected: list[Rejected]
    ) -> None:
        key = part["stream"]
        start = f"({part['after']}" if part["after"] else "-"
        upto = part["upto"]

        def pages(c: Any) -> None:
            nonlocal start
            while True:
                entries = c.xrange(key, min=start, max=upto, count=self.stream_page)
                for eid_b, raw in entries:
                    eid = eid_b.decode()
                    rid = record_id("redis", f"{key}#{eid}")
                    where = f"{self.redacted_url()} {key} {eid}"
                    try:
                        fields = {_text(f): (_text(v), "text") for f, v in raw.items()}
                    except UnicodeDecodeError as e:
                        rejected.append(Rejected(rid, "not_utf8", where, f"byte {e.start}: {e.reason}"))
                    else:
                        ms = int(eid.split("-")[0])
                        rows.append(
                            {
                                "_id": rid,
                                "_key": key,
                                "_type": "stream",
                                "_where": where,
                                "_entry": eid,
                                "_time": datetime.fromtimestamp(ms / 1000, UTC),
                                "fields": fields,
                            }
                        )
                    start = f"({eid}"  # a drop after this entry resumes past it
                if len(entries) < self.stream_page:
                    return

        self._retrying(f"XRANGE {key}", pages)

    # -- types and records

    def _typed(self, rows: list[dict[str, Any]]) -> tuple[pa.Table, list[Rejected]]:
        """The rows as one typed table; rows holding a value of a declared type that does not
        convert are quarantined."""
        names: dict[str, None] = {}
        for r in rows:
            for f in r["fields"]:
                names.setdefault(f, None)
        bad: dict[int, str] = {}
        columns: dict[str, list[Any]] = {}
        for name in names:
            cells = [r["fields"].get(name) for r in rows]
            declared = self.types.get(name)
            if declared is not None:
                values: list[Any] = []
                for i, cell in enumerate(cells):
                    if cell is None:
                        values.append(None)
                        continue
                    try:
                        values.append(_convert(cell[0], declared))
                    except (ValueError, TypeError) as e:
                        values.append(None)
                        bad.setdefault(i, f"field {name!r}: {str(cell[0])[:80]!r} is not {declared} ({e})")
                columns[name] = values
            else:
                columns[name] = _infer(cells)
        keep = [i for i in range(len(rows)) if i not in bad]
        rejected = [Rejected(rows[i]["_id"], "bad_value", rows[i]["_where"], bad[i]) for i in sorted(bad)]
        kept = [rows[i] for i in keep]
        out: dict[str, Any] = {
            "id": pa.array([r["_id"] for r in kept], pa.string()),
            "source": pa.array(["redis"] * len(kept), pa.string()),
            "redis_key": pa.array([r["_key"] for r in kept], pa.string()),
            "redis_type": pa.array([r["_type"] for r in kept], pa.string()),
        }
        if any("_entry" in r for r in kept):
            out["entry_id"] = pa.array([r.get("_entry") for r in kept], pa.string())
            out["entry_time"] = pa.array([r.get("_time") for r in kept], pa.timestamp("ms", tz="UTC"))
        for name, values in columns.items():
            col = f"col_{name}" if name in RECORD_COLUMNS or name in _OWN else name
            out[col] = _column([values[i] for i in keep], self.types.get(name))
        table = pa.table(out)
        text = self._texts(table, list(columns))
        meta = json.dumps({"dataset": self.dataset}, sort_keys=True)
        table = table.add_column(1, "text", text)
        table = table.add_column(3, "meta", pa.array([meta] * len(kept), pa.string()))
        return table, rejected

    def _texts(self, table: pa.Table, fields: list[str]) -> pa.Array:
        def col(name: str) -> str:
            return f"col_{name}" if name in RECORD_COLUMNS or name in _OWN else name

        if self.text_template:
            shown = pa.table(
                {f: _as_text(table.column(col(f))) for f in fields if col(f) in table.column_names}
            )
            return render_template(self.text_template, shown)
        if self.text_field:
            if col(self.text_field) not in table.column_names:
                return pa.nulls(table.num_rows, pa.string())
            return _as_text(table.column(col(self.text_field)))
        parts = [_as_text(table.column(col(f))).to_pylist() for f in fields]
        texts = []
        for i in range(table.num_rows):
            texts.append(
                "; ".join(f"{f}: {p[i]}" for f, p in zip(fields, parts, strict=True) if p[i] is not None)
            )
        return pa.array(texts, pa.string())


# ----------------------------------------------------------------------------------------------
# helpers


def _text(raw: Any) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)


def _json_fields(doc: Any) -> dict[str, Any]:
    """A JSON document's top-level fields, tagged as JSON values (their types are kept)."""
    if isinstance(doc, dict):
        return {str(k): (v, "json") for k, v in doc.items()}
    return {"value": (doc, "json")}


def _infer(cells: list[tuple[Any, str] | None]) -> list[Any]:
    """A column's values: JSON values as they are; text values as integers or floats when every
    text value of the column reads as one, else text."""
    texts = [c[0] for c in cells if c is not None and c[1] == "text"]
    convert: Callable[[str], Any] | None = None
    if texts and len(texts) == sum(c is not None for c in cells):
        if all(_INT.match(t) for t in texts):
            convert = int
        elif all(_FLOAT.match(t) for t in texts):
            convert = float
    return [None if c is None else convert(c[0]) if convert else c[0] for c in cells]


def _convert(value: Any, kind: str) -> Any:
    if kind == "int":
        if isinstance(value, bool):
            raise TypeError("a boolean")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("not an integer")
        return int(value) if not isinstance(value, str) else int(value.strip())
    if kind == "float":
        return float(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "t", "1", "yes"):
            return True
        if text in ("false", "f", "0", "no"):
            return False
        raise ValueError("not a boolean")
    if kind == "timestamp":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        dt = datetime.fromisoformat(str(value).strip())
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    if kind == "json":
        return json.dumps(json.loads(value) if isinstance(value, str) else value, sort_keys=True)
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _column(values: list[Any], declared: str | None) -> pa.Array:
    typ = {
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "string": pa.string(),
        "json": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }.get(declared or "")
    if typ is not None:
        return pa.array(values, typ)
    return typed_column(values)


def _as_text(col: Any) -> pa.Array:
    values = col.to_pylist()
    return pa.array(
        [None if v is None else v if isinstance(v, str) else json.dumps(v, default=str) for v in values],
        pa.string(),
    )


def _newest_entry(client: Any, key: str) -> Any:
    return client.xrevrange(key, count=1)


def _entry_order(eid: str) -> tuple[int, int]:
    ms, _, seq = eid.partition("-")
    return int(ms), int(seq or 0)


def _is_transient(error: Exception) -> bool:
    """A lost, refused or timed-out connection (worth a retry), not refused credentials."""
    names = {c.__name__ for c in type(error).__mro__}
    if "AuthenticationError" in names or "AuthenticationWrongNumberOfArgsError" in names:
        return False
    text = str(error)
    if "NOAUTH" in text or "WRONGPASS" in text or "NOPERM" in text:
        return False
    return bool(names & {"ConnectionError", "TimeoutError", "BusyLoadingError", "OSError"})


def _is_key_error(error: Exception) -> bool:
    """A reply error about one key (it changed type between TYPE and the read)."""
    return str(error).startswith("WRONGTYPE")


def _describe(error: Exception) -> str:
    first = " ".join(str(error).strip().split())
    return f"{type(error).__name__}: {first[:500]}"


__all__ = ["RedisSource"]

"""SQL databases (SQLite, PostgreSQL, MySQL/MariaDB) read into Arrow batches."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import zlib
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from genloom.core.errors import ConfigError, MissingDependencyError, SourceError
from genloom.core.records import RECORD_COLUMNS, Rejected
from genloom.core.registry import SOURCES
from genloom.core.steps import Source
from genloom.sources._retry import call_with_retries, is_final, retries_note, wait_before_retry
from genloom.sources.csv import column_name, render_template, row_text

log = logging.getLogger("genloom.sources.sql")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
# the parts of a query that are not code: quoted strings and identifiers, comments
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|--[^\n]*|/\*.*?\*/", re.DOTALL)
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")
# internal bind names, never clashing with a user's
_LO, _HI, _AFTER = "_gl_lo", "_gl_hi", "_gl_after"


class IncrementalConfig(BaseModel):
    """Incremental reading on a watermark column."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str = Field(
        description="a column that only grows: an update time (``updated_at``) or an increasing id. "
        "Each run that finds rows past the last watermark reads them as a new partition; the "
        "partitions read before stay cache hits unless their rows changed"
    )


class PartitionConfig(BaseModel):
    """Key-range partitioning for parallel reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str = Field(description="an integer column (a primary key) split into equal ranges")
    count: int = Field(ge=1, le=10_000, description="how many ranges (partitions) to read")


@SOURCES.register("sql")
class SqlSource(Source):
    """Rows of a table or query of SQLite, PostgreSQL or MySQL/MariaDB, as Arrow batches.

    ``url`` is a SQLAlchemy URL (``postgresql://user:${env:PG_PASSWORD}@host/db``,
    ``mysql+pymysql://...``, ``sqlite:///data/app.db``); it is a secret: logs, manifests, the
    catalog and error messages show it with the password replaced by ``***``. PostgreSQL and
    SQLite are read through ADBC straight into Arrow (PostgreSQL by ``COPY ... TO STDOUT
    (FORMAT binary)``); MySQL/MariaDB (and ``driver: sqlalchemy``) through a server-side cursor
    in chunks of ``chunk_rows``. Every read runs in a read-only transaction (SQLite: the file
    opened ``mode=ro``). Types stay typed: integers, floats, ``numeric(p, s)`` as decimal128,
    dates, timestamps (with time zone: UTC), booleans, JSON and UUID as strings, NULL as null
    (for the missing-value step). A value that does not convert (an out-of-range decimal, a
    MySQL zero date, a SQLite ``timestamp`` column holding ``'soon'``) quarantines its row as
    ``unconvertible_value``. Every row is a record: the columns stay as typed table columns
    (for the tabular models), ``text`` comes from ``text_template``, ``text_column`` or
    ``col: value; ...``; the id is ``sql:<table>#<id_column>=<value>`` (else a hash of the row).
    A server that cannot be reached, refuses the credentials or drops the connection is retried
    ``retries`` times with exponential backoff (with ``id_column``, a dropped read resumes after
    the last row it yielded); then the stage fails with ``SourceError``, never with fewer rows.
    """

    type: Literal["sql"] = "sql"
    url: SecretStr = Field(
        description="SQLAlchemy URL of the database; write the password as ${env:NAME}. Relative "
        "SQLite paths are relative to the pipeline file's folder"
    )
    table: str | None = Field(default=None, description="a table (``schema.table``) to read whole")
    query: str | None = Field(
        default=None,
        description="a SELECT to read instead of a table; values as ``:name`` placeholders bound "
        "from ``params``, never formatted into the text",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="values bound to the query's :name")
    label: str | None = Field(
        default=None, description="the name in record ids and meta (default: the table, or 'query')"
    )
    text_template: str | None = Field(
        default=None, description='builds ``text`` from the columns, e.g. "{subject}: {body}"'
    )
    text_column: str | None = Field(default=None, description="the column copied to ``text``")
    id_column: str | None = Field(
        default=None,
        description="a unique column (primary key) for stable record ids; rows are read in its "
        "order, which makes shards reproducible and lets a dropped read resume",
    )
    chunk_rows: int = Field(default=50_000, gt=0, description="rows per Arrow batch")
    incremental: IncrementalConfig | None = Field(
        default=None, description="read only rows past the last run's watermark (kept in the catalog)"
    )
    partition: PartitionConfig | None = Field(
        default=None, description="split the read into key ranges read in parallel"
    )
    fingerprint_mode: Literal["checksum", "rows"] = Field(
        default="checksum",
        description="what the plan asks the server to tell whether a partition changed: "
        "checksum: the row count and a sum of row hashes (any insert, update or delete; a scan, "
        "about 1 s per million PostgreSQL rows); rows: the count and the largest id_column or "
        "watermark value (cheap with an index; an update in place goes unseen)",
    )
    driver: Literal["auto", "adbc", "sqlalchemy"] = Field(
        default="auto",
        description="auto: ADBC for PostgreSQL and SQLite, SQLAlchemy otherwise; sqlalchemy: a "
        "server-side cursor for every database",
    )
    retries: int = Field(default=3, ge=0, description="attempts after a failed connection or read")
    retry_backoff_s: float = Field(default=1.0, ge=0, description="first wait; doubled each retry")
    connect_timeout_s: int = Field(default=10, ge=1, description="seconds to wait for a connection")

    version: ClassVar[str] = "1"
    # one shard per watermark segment or key range: a new segment leaves the old shards' keys alone
    partitions_per_shard: ClassVar[int | None] = 1
    requires: ClassVar[tuple[str, ...]] = ("sqlalchemy",)
    extra: ClassVar[str] = "sql"

    _bounds: list[Any] | None = PrivateAttr(default=None)
    _restored: list[Any] = PrivateAttr(default_factory=list)

    # -- config

    def check(self, path: str) -> None:
        if (self.table is None) == (self.query is None):
            raise ConfigError("give exactly one of 'table' or 'query'", path=path)
        if self.table is not None and self.params:
            raise ConfigError(
                "'params' bind values of a 'query'; a 'table' takes none", path=f"{path}.params"
            )
        if self.table is not None and not all(_IDENT.match(p) for p in self.table.split(".")):
            raise ConfigError(
                f"table {self.table!r} is not a plain name (letters, digits, _; schema.table)",
                path=f"{path}.table",
                hint="use 'query' for anything else",
            )
        if self.text_template is not None and self.text_column is not None:
            raise ConfigError("give 'text_template' or 'text_column', not both", path=path)
        if self.incremental is not None and self.partition is not None:
            raise ConfigError(
                "'incremental' and 'partition' cannot be combined yet",
                path=f"{path}.partition",
                hint="incremental runs read only new rows; partition a first full load instead",
            )
        if self.query is not None:
            names = set(_placeholders(self.query))
            missing = sorted(names - set(self.params))
            if missing:
                raise ConfigError(f"the query uses :{missing[0]} but 'params' has no value for it", path=path)
            unused = sorted(set(self.params) - names)
            if unused:
                raise ConfigError(f"params.{unused[0]} is not used by the query", path=f"{path}.params")
        try:
            self._url()
        except Exception as e:  # sqlalchemy's ArgumentError: the text is the URL, so never echo it
            raise ConfigError(
                "url is not a SQLAlchemy URL (dialect://user@host/db)", path=f"{path}.url"
            ) from e
        if self._backend_name() not in ("postgresql", "mysql", "mariadb", "sqlite"):
            raise ConfigError(
                f"unsupported database {self._backend_name()!r}",
                path=f"{path}.url",
                hint="postgresql, mysql, mariadb or sqlite",
            )

    # -- URL and names

    def _url(self) -> Any:
        from sqlalchemy.engine import make_url

        url = make_url(self.url.get_secret_value())
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            db = url.database
            if not db.startswith("file:"):
                url = url.set(database=self.resolve_path(db))
        return url

    def _backend_name(self) -> str:
        return str(self._url().get_backend_name())

    @property
    def dialect(self) -> str:
        """``postgresql``, ``mysql`` (MariaDB too) or ``sqlite``."""
        name = self._backend_name()
        return "mysql" if name == "mariadb" else name

    def redacted_url(self) -> str:
        """The URL with its password replaced by ``***``: the only form messages show."""
        return str(self._url().render_as_string(hide_password=True))

    def redact(self, text: str) -> str:
        """``text`` with the URL and its password replaced by their redacted forms."""
        raw = self.url.get_secret_value()
        text = text.replace(raw, self.redacted_url())
        password = self._url().password
        if password:
            for form in {password, quote(password, safe=""), unquote(password)}:
                if len(form) >= 1:
                    text = text.replace(form, "***")
        return text

    @property
    def dataset(self) -> str:
        """The name in record ids and meta."""
        return self.label or self.table or "query"

    def _q(self, name: str) -> str:
        """A quoted identifier in this dialect."""
        if self.dialect == "mysql":
            return "`" + name.replace("`", "``") + "`"
        return '"' + name.replace('"', '""') + '"'

    def _base_sql(self) -> str:
        if self.table is not None:
            return "SELECT * FROM " + ".".join(self._q(p) for p in self.table.split("."))
        assert self.query is not None
        return self.query.strip().rstrip(";")

    # -- planning: partitions, fingerprints, incremental state

    def restore_state(self, state: dict[str, Any] | None) -> None:
        """The watermarks of the last run (from the catalog), before ``partitions()``."""
        col = self.incremental.column if self.incremental else None
        if state and state.get("column") == col:
            self._restored = [_decode(v) for v in state.get("bounds", [])]
        else:
            self._restored = []

    def state(self) -> dict[str, Any] | None:
        """The watermarks to keep in the catalog for the next run (incremental mode only)."""
        if self.incremental is None or self._bounds is None:
            return None
        return {"column": self.incremental.column, "bounds": [_encode(b) for b in self._bounds]}

    def local_only(self) -> bool:
        return self.url.get_secret_value().startswith("sqlite")  # a database file of this machine

    def partitions(self) -> list[Any]:
        """Incremental: one partition per watermark segment; partition: key ranges; else one."""
        if self.incremental is not None:
            col = self.incremental.column
            (top,) = self._scalar_row(f"SELECT max(q.{self._q(col)}) FROM ({self._base_sql()}) q")
            bounds = list(self._restored)
            if top is not None and (not bounds or _gt(top, bounds[-1])):
                bounds.append(top)
            self._bounds = bounds
            if not bounds:
                return [{"watermark": col, "after": None, "upto": None}]
            return [
                {"watermark": col, "after": _encode(bounds[i - 1]) if i else None, "upto": _encode(b)}
                for i, b in enumerate(bounds)
            ]
        if self.partition is not None:
            col = self.partition.column
            lo, hi = self._scalar_row(
                f"SELECT min(q.{self._q(col)}), max(q.{self._q(col)}) FROM ({self._base_sql()}) q"
            )
            if lo is None:
                return [{"column": col, "lo": None, "hi": None}]
            if not all(isinstance(v, int) for v in (lo, hi)):
                raise SourceError(f"partition.column {col!r} must hold integers (got {type(lo).__name__})")
            width = -(-(hi - lo + 1) // self.partition.count)
            # the range holding the smallest key also takes the rows whose key is NULL
            return [
                {"column": col, "lo": start, "hi": min(start + width, hi + 1), "nulls": start == lo}
                for start in range(lo, hi + 1, width)
            ]
        return [None]

    def location(self, partition: Any) -> str:
        where = self.dataset if partition is None else f"{self.dataset} {json.dumps(partition, default=str)}"
        return f"{self.redacted_url()} {where}"

    def partition_fingerprint(self, partition: Any) -> str:
        """Row count and an order-independent checksum of the partition's rows, computed by the
        server: any insert, update or delete in a partition changes its fingerprint, so only
        that partition is read again (see docs/sources-sql.md)."""
        sql, params = self._select(partition, order=False)
        return self._checksum(sql, params)

    def _checksum(self, sql: str, params: dict[str, Any]) -> str:
        if self.fingerprint_mode == "rows":
            key = self.id_column or (self.incremental.column if self.incremental else None)
            top = f"max(q.{self._q(key)})" if key else "NULL"
            n, last = self._scalar_row(f"SELECT count(*), {top} FROM ({sql}) q", params)
            return f"rows={n}:max={last}"
        if self.dialect == "postgresql":
            # hash_record hashes each column with its type's hash (no text conversion: twice as
            # fast); a type without one (json, xml, point) falls back to the row as text
            fast = f"SELECT count(*), coalesce(sum(hash_record_extended(q, 0)), 0) FROM ({sql}) q"
            try:
                n, total = self._scalar_row(fast, params)
            except SourceError as e:
                if "hash" not in str(e).lower():
                    raise
                slow = f"SELECT count(*), coalesce(sum(hashtext(q::text)::bigint), 0) FROM ({sql}) q"
                n, total = self._scalar_row(slow, params)
            return f"rows={n}:sum={total}"
        cols = self._columns(sql, params)
        if self.dialect == "mysql":
            parts = ", ".join(f"coalesce(q.{self._q(c)}, '\\0N')" for c in cols)
            check = f"SELECT count(*), coalesce(sum(crc32(concat_ws('|', {parts}))), 0) FROM ({sql}) q"
        else:
            args = ", ".join(f"q.{self._q(c)}" for c in cols)
            check = f"SELECT count(*), coalesce(sum(genloom_crc({args})), 0) FROM ({sql}) q"
        n, total = self._scalar_row(check, params)
        return f"rows={n}:sum={total}"

    def _columns(self, sql: str, params: dict[str, Any]) -> list[str]:
        def run(conn: Any) -> list[str]:
            cur = conn.cursor()
            try:
                cur.execute(*self._driver_sql(f"SELECT * FROM ({sql}) q LIMIT 0", params, "format"))
                return [d[0] for d in cur.description]
            finally:
                cur.close()

        return self._with_small_connection(run)

    def _scalar_row(self, sql: str, params: dict[str, Any] | None = None) -> tuple[Any, ...]:
        """One row of a small query (bounds, checksums), in a read-only transaction."""
        params = {**self.params, **(params or {})} if self.query is not None else dict(params or {})

        def run(conn: Any) -> tuple[Any, ...]:
            cur = conn.cursor()
            try:
                cur.execute(*self._driver_sql(sql, params, "format"))
                return tuple(cur.fetchone())
            finally:
                cur.close()

        return self._with_small_connection(run)

    def _with_small_connection(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(dbapi_connection)`` with retries; SQLite through the stdlib (read-only), the
        servers through their SQLAlchemy DB-API driver."""

        def once() -> Any:
            conn = self._dbapi_connect()
            try:
                return fn(conn)
            finally:
                try:
                    conn.rollback()
                finally:
                    conn.close()

        return call_with_retries(
            once,
            retries=self.retries,
            is_transient=_is_transient,
            give_up=lambda e, attempt: self._error(e, attempt),
            wait=lambda e, attempt: self._wait(attempt, e),
            passthrough=(SourceError,),
        )

    def _sqlite_file(self) -> str:
        """The SQLite database file; a missing one is an error at once (no retry brings it)."""
        path = str(self._url().database or "")
        if not os.path.isfile(path):
            raise SourceError(f"{self.redacted_url()}: no SQLite database file at {path}")
        return path

    def _dbapi_connect(self) -> Any:
        url = self._url()
        if self.dialect == "sqlite":
            self._sqlite_file()
            import sqlite3

            conn = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True, timeout=self.connect_timeout_s)
            conn.create_function("genloom_crc", -1, _crc, deterministic=True)
            return conn
        if self.dialect == "postgresql":
            try:
                import psycopg
            except ImportError:
                return self._adbc_connect()
            conn = psycopg.connect(_libpq_uri(url), connect_timeout=self.connect_timeout_s)
            conn.execute("SET TRANSACTION READ ONLY")
            return conn
        pymysql = _import("pymysql", "sql")
        conn = pymysql.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username,
            password=url.password or "",
            database=url.database,
            connect_timeout=self.connect_timeout_s,
            charset="utf8mb4",
        )
        cur = conn.cursor()
        cur.execute("SET time_zone = '+00:00'")
        cur.execute("START TRANSACTION READ ONLY")
        cur.close()
        return conn

    def _driver_sql(self, sql: str, params: dict[str, Any], style: str) -> tuple[str, Any]:
        """``sql`` with ``:name`` placeholders in the driver's style and its values.

        ``format``: the stdlib or DB-API driver of the small queries (sqlite3: qmark, psycopg and
        pymysql: %s); ``numeric`` ($1, ADBC PostgreSQL); ``qmark`` (ADBC SQLite)."""
        if style == "format":
            if self.dialect == "sqlite":
                style = "qmark"
            elif self.dialect == "postgresql" and not _has_module("psycopg"):
                style = "numeric"
        return _bind(sql, params, style)

    # -- reading

    def _select(self, partition: Any, order: bool, after: Any = None) -> tuple[str, dict[str, Any]]:
        """The SELECT of one partition (and of what follows ``after`` on the id column)."""
        sql = self._base_sql()
        params: dict[str, Any] = dict(self.params) if self.query is not None else {}
        where: list[str] = []
        if isinstance(partition, dict) and "watermark" in partition:
            col = f"q.{self._q(partition['watermark'])}"
            after_w, upto = _decode(partition["after"]), _decode(partition["upto"])
            if after_w is not None:
                where.append(f"{col} > :{_LO}")
                params[_LO] = after_w
            if upto is None:
                where.append(f"{col} IS NULL")
            elif after_w is None:
                where.append(f"({col} <= :{_HI} OR {col} IS NULL)")
                params[_HI] = upto
            else:
                where.append(f"{col} <= :{_HI}")
                params[_HI] = upto
        elif isinstance(partition, dict) and "column" in partition and partition["lo"] is not None:
            col = f"q.{self._q(partition['column'])}"
            first = bool(partition.get("nulls"))
            cond = f"{col} >= :{_LO} AND {col} < :{_HI}"
            where.append(f"({cond} OR {col} IS NULL)" if first else cond)
            params[_LO], params[_HI] = partition["lo"], partition["hi"]
        if after is not None and self.id_column:
            where.append(f"q.{self._q(self.id_column)} > :{_AFTER}")
            params[_AFTER] = after
        if where or (order and self.id_column):
            sql = f"SELECT * FROM ({sql}) q"
            if where:
                sql += " WHERE " + " AND ".join(where)
        if order and self.id_column:
            sql += f" ORDER BY q.{self._q(self.id_column)}"
        return sql, params

    def read(self, partition: Any) -> Iterator[pa.Table | Rejected]:
        """Stream the partition's rows as record tables, retrying a lost connection."""
        attempt = 0
        last_key: Any = None
        yielded = 0
        failed_at = 0
        skip = 0
        python_sqlite = False
        seen: dict[str, int] = {}

        def select(after: Any) -> tuple[str, dict[str, Any]]:
            return self._select(partition, order=True, after=after)

        while True:
            try:
                stream = (
                    self._stream_sqlite(*select(last_key))
                    if python_sqlite
                    else self._stream(select, last_key)
                )
                for batch in stream:
                    if skip:  # rows yielded before the switch to the stdlib reader (same file, same order)
                        cut = min(skip, batch.num_rows)
                        batch, skip = batch.slice(cut), skip - cut
                        if not batch.num_rows:
                            continue
                    table, rejected = self._convert(batch, partition)
                    if self.id_column and batch.num_rows:
                        key_col = self.id_column
                        last_key = batch.column(key_col)[batch.num_rows - 1].as_py()
                    yielded += batch.num_rows
                    yield from rejected
                    if table.num_rows:
                        yield self._records(table, seen)
                return
            except SourceError:
                raise
            except Exception as e:
                if self.dialect == "sqlite" and not python_sqlite and "type mismatch" in str(e).lower():
                    # ADBC types SQLite columns from the first batch and stops at a later value of
                    # another type; the stdlib reader applies the declared types row by row and
                    # quarantines what does not fit
                    python_sqlite = True
                    skip = 0 if self.id_column else yielded
                    continue
                if yielded > failed_at:  # rows came since the last failure: a fresh drop, fresh retries
                    attempt, failed_at = 0, yielded
                resumable = yielded == 0 or self.id_column is not None
                if is_final(e, attempt, self.retries, _is_transient) or not resumable:
                    extra = (
                        ""
                        if resumable
                        else " (the read cannot resume after a dropped connection without "
                        "'id_column'; set it to a unique column)"
                    )
                    raise self._error(e, attempt, f" after {yielded} rows{extra}") from None
                self._wait(attempt, e, f" after {yielded} rows")
                attempt += 1

    def _use_adbc(self) -> bool:
        """ADBC for PostgreSQL and SQLite, unless ``driver: sqlalchemy`` or, with ``auto``, the
        driver is not installed (then SQLAlchemy's server-side cursor, slower but the same rows)."""
        if self.driver == "sqlalchemy" or self.dialect not in ("postgresql", "sqlite"):
            return False
        return self.driver == "adbc" or _has_module(f"adbc_driver_{self.dialect}")

    def _stream(self, select: Callable[[Any], tuple[str, dict[str, Any]]], after: Any) -> Iterator[pa.Table]:
        """Raw batches of at most ``chunk_rows`` rows, in one read-only transaction, of the rows
        ``select(after)`` selects (``after``: the last id column value already read, or None)."""
        if self.driver == "adbc" and not self._use_adbc():
            raise SourceError(f"driver: adbc reads PostgreSQL and SQLite only, not {self.dialect}")
        sql, params = select(after)
        if self._pages(params):
            yield from self._stream_adbc(sql, params, select, after)
        elif self._use_adbc():
            yield from self._stream_adbc(sql, params)
        else:
            yield from self._stream_sqlalchemy(sql, params)

    def _pages(self, params: dict[str, Any]) -> bool:
        """Whether to read in keyset pages (``id > last ORDER BY id LIMIT chunk_rows``).

        PostgreSQL streams a result through ADBC only by ``COPY``, which takes no bound values;
        a prepared statement's result arrives whole. So a query with bound values (``params``,
        a watermark segment, a key range) is read page by page on the id column, each page a
        bounded result; without ``id_column`` it arrives whole (memory: the partition)."""
        return (
            bool(params) and self.id_column is not None and self._use_adbc() and self.dialect == "postgresql"
        )

    def _adbc_connect(self) -> Any:
        url = self._url()
        if self.dialect == "sqlite":
            self._sqlite_file()
            dbapi = _import("adbc_driver_sqlite.dbapi", "sql")
            return dbapi.connect(f"file:{url.database}?mode=ro")
        dbapi = _import("adbc_driver_postgresql.dbapi", "sql")
        conn = dbapi.connect(_libpq_uri(url, self.connect_timeout_s))
        cur = conn.cursor()
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur.close()
        return conn

    def _stream_adbc(
        self,
        sql: str,
        params: dict[str, Any],
        pages: Callable[[Any], tuple[str, dict[str, Any]]] | None = None,
        after: Any = None,
    ) -> Iterator[pa.Table]:
        """One result through ADBC; with ``pages``, keyset pages of ``chunk_rows`` rows in the
        same transaction (so one snapshot) until a page comes back short."""
        conn = self._adbc_connect()
        try:
            cur = conn.cursor()
            if self.dialect == "postgresql":
                hint = min(max(self.chunk_rows * 200, 1 << 16), 16 << 20)
                cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(hint)})
            else:
                cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(self.chunk_rows)})
            decltypes = self._sqlite_decltypes(conn) if self.dialect == "sqlite" else {}
            while True:
                if pages is not None:
                    sql = f"{sql} LIMIT {int(self.chunk_rows)}"
                text, values = _bind(sql, params, "numeric" if self.dialect == "postgresql" else "qmark")
                if values:
                    cur.execute(text, parameters=tuple(values))
                else:
                    cur.execute(text)
                rows = 0
                for batch in cur.fetch_record_batch():
                    rows += batch.num_rows
                    for start in range(0, batch.num_rows, self.chunk_rows):
                        part = batch.slice(start, self.chunk_rows)
                        if pages is not None and part.num_rows:
                            after = part.column(self.id_column)[part.num_rows - 1].as_py()
                        yield _normalize_adbc(pa.Table.from_batches([part]), decltypes)
                if pages is None or rows < self.chunk_rows:
                    break
                sql, params = pages(after)
            cur.close()
        finally:
            with contextlib.suppress(Exception):  # a lost connection: the read's own error matters
                conn.rollback()
            conn.close()

    def _stream_sqlite(self, sql: str, params: dict[str, Any]) -> Iterator[pa.Table]:
        """SQLite through the stdlib: the declared types (else the first chunk's) fixed for the
        whole read, a value that does not fit quarantined."""
        conn = self._dbapi_connect()
        try:
            decltypes = self._sqlite_decltypes(conn)
            cur = conn.cursor()
            cur.execute(*_bind(sql, params, "qmark"))
            names = [d[0] for d in cur.description]
            types = [_sqlite_type(decltypes.get(n, ""), None) for n in names]
            while rows := cur.fetchmany(self.chunk_rows):
                table = _rows_to_table(names, types, rows)
                types = _settled(types, table)
                yield table
        finally:
            conn.close()

    def _sqlite_decltypes(self, conn: Any) -> dict[str, str]:
        """Declared column types of a SQLite table (a query has none: ADBC's types stand)."""
        if self.table is None:
            return {}
        cur = conn.cursor()
        try:
            cur.execute(f"PRAGMA table_info({self._q(self.table.split('.')[-1])})")
            return {row[1]: str(row[2] or "").upper() for row in cur.fetchall()}
        finally:
            cur.close()

    def _stream_sqlalchemy(self, sql: str, params: dict[str, Any]) -> Iterator[pa.Table]:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        url = self._url()
        connect_args: dict[str, Any] = {}
        if self.dialect == "sqlite":
            url = url.set(database=f"file:{url.database}?mode=ro", query={"uri": "true"})
        elif self.dialect == "mysql":
            connect_args = {"connect_timeout": self.connect_timeout_s}
            if url.drivername in ("mysql", "mariadb"):
                url = url.set(drivername=f"{url.drivername}+pymysql")
        elif self.dialect == "postgresql":
            connect_args = {"connect_timeout": self.connect_timeout_s}
            if url.drivername == "postgresql":
                url = url.set(drivername="postgresql+psycopg")
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
        try:
            with engine.connect() as conn:
                if self.dialect == "mysql":
                    conn.exec_driver_sql("SET time_zone = '+00:00'")
                    conn.exec_driver_sql("START TRANSACTION READ ONLY")
                elif self.dialect == "postgresql":
                    conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                result = conn.execution_options(stream_results=True, max_row_buffer=self.chunk_rows).execute(
                    text(sql), params
                )
                fields = getattr(getattr(result.cursor, "_result", None), "fields", None) or []
                unsigned = [bool(getattr(f, "flags", 0) & 32) for f in fields]  # pymysql's UNSIGNED_FLAG
                types = _description_types(result.cursor.description, self.dialect, unsigned)
                names = list(result.keys())
                try:
                    for rows in result.partitions(self.chunk_rows):
                        table = _rows_to_table(names, types, rows)
                        types = _settled(types, table)
                        yield table
                except Exception:
                    # a dropped server-side cursor must not be drained again when it is collected
                    with contextlib.suppress(Exception):
                        result.cursor._result.unbuffered_active = False
                    conn.invalidate()
                    raise
                conn.rollback()
        finally:
            engine.dispose()

    # -- records

    def _convert(self, batch: pa.Table, partition: Any) -> tuple[pa.Table, list[Rejected]]:
        """Rename columns that clash with the fixed ones; quarantine rows holding a value that
        did not convert (marked by ``_rows_to_table`` / ``_normalize_adbc``)."""
        rejected: list[Rejected] = []
        bad = batch.schema.metadata or {}
        names = [f"col_{n}" if n in RECORD_COLUMNS else n for n in batch.column_names]
        batch = batch.rename_columns(names)
        problems = json.loads(bad.get(b"genloom_bad_rows", b"{}"))
        if problems:
            rows = sorted(int(r) for r in problems)
            for r in rows:
                native = self._native_key(batch, r)
                rejected.append(
                    Rejected(
                        f"sql:{self.dataset}#{native}",
                        "unconvertible_value",
                        self.location(partition),
                        self.redact(problems[str(r)]),
                    )
                )
            keep = pa.array([str(i) not in problems for i in range(batch.num_rows)], pa.bool_())
            batch = batch.filter(keep)
        return batch.replace_schema_metadata(None), rejected

    def _native_key(self, table: pa.Table, row: int) -> str:
        if self.id_column:
            col = column_name(table, self.id_column)
            if col in table.column_names:
                return f"{self.id_column}={table.column(col)[row].as_py()}"
        return f"row={_row_hash(table.slice(row, 1).to_pylist()[0])}"

    def _records(self, table: pa.Table, seen: dict[str, int]) -> pa.Table:
        n = table.num_rows
        prefix = f"sql:{self.dataset}#"
        if self.id_column:
            col = column_name(table, self.id_column)
            if col not in table.column_names:
                raise SourceError(f"id_column {self.id_column!r} is not a column of {table.column_names}")
            native = pc.fill_null(pc.cast(table.column(col), pa.string()), "")
            ids: Any = pc.binary_join_element_wise(f"{prefix}{self.id_column}=", native, "")
        else:
            out = []
            for row in table.to_pylist():
                h = _row_hash(row)
                k = seen.get(h, 0) + 1
                seen[h] = k
                out.append(f"{prefix}row={h}" if k == 1 else f"{prefix}row={h}~{k}")
            ids = pa.array(out, pa.string())
        shown = _printable(table)
        if self.text_template:
            text = render_template(self.text_template, shown)
        elif self.text_column:
            col = column_name(table, self.text_column)
            if col not in table.column_names:
                raise SourceError(f"text_column {self.text_column!r} is not a column of {table.column_names}")
            text = pc.cast(shown.column(col), pa.string())
        else:
            text = row_text(shown, shown.column_names)
        meta = json.dumps({"dialect": self.dialect, "table": self.dataset}, sort_keys=True)
        out_cols: dict[str, Any] = {
            "id": ids,
            "text": text,
            "source": pa.array(["sql"] * n, pa.string()),
            "meta": pa.array([meta] * n, pa.string()),
        }
        out_cols.update({c: table.column(c) for c in table.column_names})
        return pa.table(out_cols)

    # -- errors

    def _wait(self, attempt: int, error: Exception, where: str = "") -> None:
        wait_before_retry(
            log,
            source="sql",
            target=self.redacted_url(),
            error=self.redact(_describe(error)),
            detail=where,
            attempt=attempt,
            retries=self.retries,
            backoff_s=self.retry_backoff_s,
        )

    def _error(self, error: Exception, attempt: int, where: str = "") -> SourceError:
        return SourceError(
            f"{self.redacted_url()}{retries_note(attempt)}{where}: {self.redact(_describe(error))}"
        )


# ----------------------------------------------------------------------------------------------
# helpers


def _import(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(module, f"pip install 'genloom[{extra}]'") from e


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _libpq_uri(url: Any, connect_timeout: int | None = None) -> str:
    """A libpq connection URI from a SQLAlchemy URL (``postgresql+psycopg://`` -> ``postgresql://``)."""
    query = {k: v for k, v in url.query.items() if isinstance(v, str)}
    query.setdefault("application_name", "genloom")
    if connect_timeout is not None:
        query.setdefault("connect_timeout", str(connect_timeout))
    uri = url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)
    return str(uri)


def _placeholders(sql: str) -> list[str]:
    """The ``:name`` placeholders of ``sql`` outside strings, quoted names and comments."""
    return [m.group(1) for part in _code_parts(sql) for m in _NAMED.finditer(part[1]) if part[0]]


def _code_parts(sql: str) -> list[tuple[bool, str]]:
    """``sql`` cut into (is_code, text) pieces."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    for m in _QUOTED.finditer(sql):
        parts.append((True, sql[pos : m.start()]))
        parts.append((False, m.group(0)))
        pos = m.end()
    parts.append((True, sql[pos:]))
    return parts


def _bind(sql: str, params: dict[str, Any], style: str) -> tuple[str, Any]:
    """``:name`` placeholders replaced by the driver's (``$1``, ``?``, ``%s``) and the values in
    order. The values are sent to the server separately; they never enter the SQL text."""
    values: list[Any] = []
    out: list[str] = []

    def sub(m: re.Match[str]) -> str:
        values.append(params[m.group(1)])
        if style == "numeric":
            return f"${len(values)}"
        return "?" if style == "qmark" else "%s"

    for is_code, text in _code_parts(sql):
        if is_code:
            if style == "format":
                text = text.replace("%", "%%")
            out.append(_NAMED.sub(sub, text))
        else:
            out.append(text.replace("%", "%%") if style == "format" else text)
    return "".join(out), values


def _is_transient(error: Exception) -> bool:
    """A lost or refused connection (worth a retry), not a wrong query."""
    names = {c.__name__ for c in type(error).__mro__}
    if names & {"ProgrammingError", "DataError", "IntegrityError", "NotSupportedError"}:
        return False
    if names & {"OperationalError", "InterfaceError", "ConnectionError", "OSError", "TimeoutError"}:
        return True
    text = str(error).lower()
    return any(
        w in text for w in ("connection", "terminat", "server closed", "timeout", "lost", "reset", "io:")
    )


def _describe(error: Exception) -> str:
    text = str(error).strip().splitlines()
    first = " ".join(t.strip() for t in text[:3] if t.strip())
    return f"{type(error).__name__}: {first[:500]}"


def _printable(table: pa.Table) -> pa.Table:
    """``table`` with the columns Arrow cannot cast to text (arrays, structs, bytes) as JSON or
    hex strings, for ``text``; the record keeps the typed columns."""
    cols = {}
    for field, col in zip(table.schema, table.columns, strict=True):
        t = field.type
        if (
            pa.types.is_nested(t)
            or pa.types.is_binary(t)
            or pa.types.is_large_binary(t)
            or pa.types.is_duration(t)
        ):
            values = [None if v is None else json.dumps(v, default=_json_default) for v in col.to_pylist()]
            cols[field.name] = pa.array(values, pa.string())
        else:
            cols[field.name] = col
    return pa.table(cols)


def _crc(*values: Any) -> int:
    return zlib.crc32(repr(values).encode("utf-8"))


def _row_hash(row: dict[str, Any]) -> str:
    payload = json.dumps(list(row.values()), default=_json_default, ensure_ascii=False)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=8).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


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
    return str(value)


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "datetime" in value:
            return datetime.fromisoformat(value["datetime"])
        if "date" in value:
            return date.fromisoformat(value["date"])
        if "decimal" in value:
            return Decimal(value["decimal"])
    return value


def _gt(a: Any, b: Any) -> bool:
    try:
        return bool(a > b)
    except TypeError:  # naive vs aware datetimes, or a changed column type: start a new segment
        return str(a) > str(b)


# -- types


def _normalize_adbc(table: pa.Table, decltypes: dict[str, str]) -> pa.Table:
    """ADBC's Arrow columns as genloom keeps them: numeric(p, s) as decimal128, JSON and UUID
    as strings, intervals as strings; SQLite's declared DATE/TIMESTAMP/DECIMAL/BOOLEAN applied."""
    cols: dict[str, pa.Array | pa.ChunkedArray] = {}
    bad: dict[str, str] = {}
    for field, col in zip(table.schema, table.columns, strict=True):
        typ = field.type
        meta = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
        if isinstance(typ, pa.BaseExtensionType):
            if meta.get("POSTGRESQL:type") == "numeric" or meta.get("ADBC:postgresql:typname") == "numeric":
                target = _pg_numeric_type(meta.get("POSTGRESQL:typmod", "-1"))
                cols[field.name] = _cast_values(field.name, _ext_strings(col), target, bad)
                continue
            cols[field.name] = _ext_strings(col)
            continue
        if pa.types.is_interval(typ):
            cols[field.name] = pa.array([_interval_text(v) for v in col.to_pylist()], pa.string())
            continue
        declared = decltypes.get(field.name, "")
        target = _sqlite_type(declared, typ) if declared else None
        if target is not None and target != typ:
            cols[field.name] = _cast_values(field.name, col, target, bad)
        else:
            cols[field.name] = col
    out = pa.table(cols)
    if bad:
        out = out.replace_schema_metadata({"genloom_bad_rows": json.dumps(bad)})
    return out


def _interval_text(v: Any) -> str | None:
    """A PostgreSQL interval (Arrow month_day_nano) as ISO 8601 (``P1M2DT3.5S``)."""
    if v is None:
        return None
    return f"P{v.months}M{v.days}DT{v.nanoseconds / 1e9:g}S"


def _ext_strings(col: pa.ChunkedArray) -> pa.Array:
    """An extension column (JSON, UUID, opaque) as strings."""
    storage = pa.chunked_array([c.storage for c in col.chunks], col.type.storage_type) if col.chunks else None
    if storage is None:
        return pa.array([], pa.string())
    if pa.types.is_string(storage.type) or pa.types.is_large_string(storage.type):
        return storage.cast(pa.string())
    return pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())


def _pg_numeric_type(typmod: str) -> pa.DataType:
    """numeric(p, s) -> decimal128(p, s) (decimal256 past 38 digits); a bare numeric -> (38, 10)."""
    mod = int(typmod) if typmod.lstrip("-").isdigit() else -1
    if mod < 4:
        return pa.decimal128(38, 10)
    mod -= 4
    precision, scale = (mod >> 16) & 0xFFFF, mod & 0xFFFF
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(min(precision, 76), scale)


_SQLITE_DECIMAL = re.compile(r"^(DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)$")


def _sqlite_type(declared: str, current: pa.DataType | None) -> pa.DataType | None:
    """The Arrow type a SQLite declared type asks for (SQLite itself stores anything anywhere)."""
    if declared in ("DATE",):
        return pa.date32()
    if declared in ("DATETIME", "TIMESTAMP"):
        return pa.timestamp("us")
    if declared in ("BOOLEAN", "BOOL"):
        return pa.bool_()
    m = _SQLITE_DECIMAL.match(declared)
    if m:
        return pa.decimal128(int(m.group(2)), int(m.group(3) or 0))
    if declared in ("JSON", "TEXT") and (current is None or not pa.types.is_string(current)):
        return pa.string()
    return None


def _cast_values(name: str, col: Any, target: pa.DataType, bad: dict[str, str]) -> pa.Array:
    """``col`` (an Arrow column, or a list of Python values) cast to ``target``; a value that
    does not convert becomes null and marks its row in ``bad``."""
    if not isinstance(col, list):
        try:
            return pc.cast(col, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            col = col.to_pylist()
    out: list[Any] = []
    for i, v in enumerate(col):
        if v is None:
            out.append(None)
            continue
        try:
            out.append(_convert_value(v, target))
        except (ValueError, TypeError, InvalidOperation, ArithmeticError, pa.ArrowInvalid) as e:
            out.append(None)
            bad.setdefault(str(i), f"column {name!r}: {str(v)[:80]!r} is not {target} ({type(e).__name__})")
    return pa.array(out, target)


def _convert_value(v: Any, target: pa.DataType) -> Any:
    if pa.types.is_decimal(target):
        d = v if isinstance(v, Decimal) else Decimal(str(v))
        if not d.is_finite():
            raise ValueError("not a finite number")
        q = d.quantize(Decimal(1).scaleb(-target.scale))
        if len(q.as_tuple().digits) > target.precision:
            raise ValueError("too many digits")
        return q
    if pa.types.is_timestamp(target):
        if isinstance(v, datetime):
            return v
        if isinstance(v, int | float):
            return datetime.fromtimestamp(v)
        return datetime.fromisoformat(str(v))
    if pa.types.is_date(target):
        if isinstance(v, datetime):
            return v.date()
        if isinstance(v, date):
            return v
        text = str(v)
        return date.fromisoformat(text[:10] if text[10:11] in (" ", "T") else text)
    if pa.types.is_boolean(target):
        if isinstance(v, bool):
            return v
        if isinstance(v, int | float) and v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.lower() in ("true", "false", "t", "f", "0", "1"):
            return v.lower() in ("true", "t", "1")
        raise ValueError("not a boolean")
    if pa.types.is_integer(target):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError("not an integer")
        pa.scalar(v, target)
        return v
    if pa.types.is_floating(target):
        return float(v)
    if pa.types.is_string(target):
        if isinstance(v, dict | list):
            return json.dumps(v, default=str, ensure_ascii=False)
        if isinstance(v, timedelta):
            return f"P{v.days}DT{v.seconds + v.microseconds / 1e6:g}S"
        return v if isinstance(v, str) else str(v)
    pa.scalar(v, target)
    return v


# MySQL/MariaDB field types (pymysql.constants.FIELD_TYPE) -> Arrow
_MYSQL_INT = {1, 2, 3, 8, 9, 13}
_MYSQL_FLOAT = {4, 5}
_MYSQL_DECIMAL = {0, 246}
_MYSQL_TIMESTAMP = {7, 12}
_MYSQL_DATE = {10, 14}


def _description_types(
    description: Any, dialect: str, unsigned: list[bool] | None = None
) -> list[pa.DataType | None]:
    """Arrow types from a DB-API cursor description (None: inferred from the values)."""
    out: list[pa.DataType | None] = []
    for j, d in enumerate(description or []):
        code = d[1]
        if dialect == "postgresql" and isinstance(code, int):
            out.append(_pg_oid_type(code, d[4], d[5]))
        elif dialect != "mysql" or not isinstance(code, int):
            out.append(None)
        elif code == 1 and d[3] == 1:
            out.append(pa.bool_())  # tinyint(1): MySQL's BOOLEAN
        elif code in _MYSQL_INT:
            out.append(pa.int64())
        elif code in _MYSQL_FLOAT:
            out.append(pa.float64())
        elif code in _MYSQL_DECIMAL:
            # MySQL's display length counts the point and, unless unsigned, the sign
            scale = int(d[5] or 0)
            length = int(d[3] or 39) - (1 if scale else 0) - (0 if unsigned and unsigned[j] else 1)
            out.append(pa.decimal128(min(max(length, scale + 1, 1), 38), scale))
        elif code == 7:
            out.append(pa.timestamp("us", tz="UTC"))  # the session runs in UTC
        elif code in _MYSQL_TIMESTAMP:
            out.append(pa.timestamp("us"))
        elif code in _MYSQL_DATE:
            out.append(pa.date32())
        elif code == 11:
            out.append(pa.duration("us"))
        elif code == 245:
            out.append(pa.string())  # JSON
        else:
            out.append(None)
    return out


_PG_OIDS: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    700: pa.float32(),
    701: pa.float64(),
    17: pa.binary(),
    25: pa.string(),
    1043: pa.string(),
    114: pa.string(),  # json
    3802: pa.string(),  # jsonb
    2950: pa.string(),  # uuid
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    1186: pa.string(),  # interval
}


def _pg_oid_type(oid: int, precision: Any, scale: Any) -> pa.DataType | None:
    """PostgreSQL type OIDs (psycopg's description) -> Arrow, as the ADBC path types them."""
    if oid == 1700:
        if not precision:
            return pa.decimal128(38, 10)
        if precision > 38:
            return pa.decimal256(min(int(precision), 76), int(scale or 0))
        return pa.decimal128(int(precision), int(scale or 0))
    return _PG_OIDS.get(oid)


def _rows_to_table(names: list[str], types: list[pa.DataType | None], rows: list[Any]) -> pa.Table:
    """DB-API rows to an Arrow table; a value that does not fit its column's type marks its row."""
    bad: dict[str, str] = {}
    cols: dict[str, pa.Array] = {}
    for j, name in enumerate(names):
        values = [r[j] for r in rows]
        target = types[j]
        if target is None:
            target = _infer(values)
        try:
            cols[name] = pa.array(values, target)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            cols[name] = _cast_values(name, values, target, bad)
    table = pa.table(cols) if names else pa.table({})
    if bad:
        table = table.replace_schema_metadata({"genloom_bad_rows": json.dumps(bad)})
    return table


def _settled(types: list[pa.DataType | None], table: pa.Table) -> list[pa.DataType | None]:
    """The column types for the next chunks: a type inferred from values is kept for the rest of
    the read once a column had one (an all-NULL chunk decides nothing)."""
    out: list[pa.DataType | None] = []
    for t, name in zip(types, table.column_names, strict=True):
        col = table.column(name)
        out.append(t or (col.type if col.null_count < len(col) else None))
    return out


def _infer(values: list[Any]) -> pa.DataType:
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.string()
    if kinds <= {bytes, bytearray, memoryview}:
        return pa.binary()
    if kinds <= {str} or kinds & {dict, list} or any(k.__name__ == "UUID" for k in kinds):
        return pa.string()  # JSON documents and UUIDs as text, as on the ADBC path
    if kinds <= {Decimal}:
        scale = max(
            (-int(v.as_tuple().exponent) for v in values if v is not None and v.is_finite()), default=0
        )
        return pa.decimal128(38, max(0, min(scale, 37)))
    try:
        return pa.array([v for v in values if v is not None][:1000]).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.string()


__all__ = ["IncrementalConfig", "PartitionConfig", "SqlSource"]

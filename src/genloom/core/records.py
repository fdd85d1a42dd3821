"""Records in Arrow batches: the fixed columns and conversions between rows and tables.

Every stage moves ``pyarrow.Table`` batches. The fixed columns are ``id`` (stable: source type +
native key), ``text`` (or a modality payload), ``source`` and ``meta`` (a JSON object stored as a
string); steps may add more columns (``lang``, ``tokens``...).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

RECORD_COLUMNS = ("id", "text", "source", "meta")

REJECTED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("step", pa.string()),
        ("reason", pa.string()),
        ("location", pa.string()),
        ("detail", pa.string()),
    ]
)

# One row per (record, step) that changed or dropped a record: the record-level lineage.
EVENTS_SCHEMA = pa.schema([("id", pa.string()), ("step", pa.string()), ("event", pa.string())])


@dataclass(frozen=True)
class Rejected:
    """A record or file that could not be read or processed: it goes to the ``rejected`` table."""

    id: str
    reason: str
    location: str = ""
    detail: str = ""


def record_id(source_type: str, native_key: str) -> str:
    """A stable record id: the source type and its native key (path + locator, primary key...)."""
    return f"{source_type}:{native_key}"


def dump_meta(meta: Any) -> str:
    """Meta as canonical JSON (sorted keys), so equal meta gives equal bytes."""
    if meta is None:
        return "{}"
    if isinstance(meta, str):
        return meta
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str)


def load_meta(value: str | None) -> dict[str, Any]:
    """Meta JSON string back to a dict."""
    return json.loads(value) if value else {}


def records_to_table(records: Iterable[dict[str, Any]], schema: pa.Schema | None = None) -> pa.Table:
    """Rows (dicts) to a table; ``meta`` dicts become JSON strings and the fixed columns come first."""
    rows = list(records)
    if schema is not None:
        cols = {name: [_meta_cell(r, name) for r in rows] for name in schema.names}
        return pa.table(cols, schema=schema)
    names: list[str] = [c for c in RECORD_COLUMNS if any(c in r for r in rows)]
    for r in rows:
        for k in r:
            if k not in names:
                names.append(k)
    cols = {name: [_meta_cell(r, name) for r in rows] for name in names}
    table = pa.table(cols) if rows else empty_records()
    return normalize_columns(table)


def _meta_cell(row: dict[str, Any], name: str) -> Any:
    value = row.get(name)
    return dump_meta(value) if name == "meta" else value


def table_to_records(table: pa.Table) -> list[dict[str, Any]]:
    """A table to rows; ``meta`` is parsed into a dict."""
    rows = table.to_pylist()
    if "meta" in table.column_names:
        for r in rows:
            r["meta"] = load_meta(r["meta"])
    return rows


def empty_records() -> pa.Table:
    """An empty table with the fixed columns."""
    return pa.table({c: pa.array([], pa.string()) for c in RECORD_COLUMNS})


def normalize_columns(table: pa.Table) -> pa.Table:
    """Fixed columns first, as strings; null-typed columns (all values missing) become strings."""
    cols = [c for c in RECORD_COLUMNS if c in table.column_names]
    cols += [c for c in table.column_names if c not in RECORD_COLUMNS]
    table = table.select(cols)
    fields = []
    for f in table.schema:
        if f.name in RECORD_COLUMNS or pa.types.is_null(f.type):
            fields.append(pa.field(f.name, pa.string()))
        else:
            fields.append(f)
    return table.cast(pa.schema(fields)) if fields != list(table.schema) else table


def rejected_table(rows: list[Rejected | dict[str, Any]], step: str = "") -> pa.Table:
    """Quarantined rows as a table with REJECTED_SCHEMA."""
    out = []
    for r in rows:
        if isinstance(r, Rejected):
            out.append(
                {"id": r.id, "step": step, "reason": r.reason, "location": r.location, "detail": r.detail}
            )
        else:
            out.append({k: r.get(k, "") for k in REJECTED_SCHEMA.names})
    return pa.Table.from_pylist(out, schema=REJECTED_SCHEMA)

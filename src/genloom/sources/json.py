"""JSON, JSON Lines / NDJSON and Parquet files, with field paths for the text and the id."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from genloom.core.errors import RecordError
from genloom.core.records import RECORD_COLUMNS, Rejected, record_id
from genloom.core.registry import SOURCES
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob
from genloom.sources._files.encoding import DecodedStream, decode_as, sniff_encoding
from genloom.sources._files.text import meta_count_fields, strip_nul_columns
from genloom.sources.csv import render_template, row_text, template_fields

DEFAULT_TEXT_FIELDS = ("text", "content", "body", "message", "description")


def get_path(obj: Any, path: str) -> Any:
    """The value at a dotted path (``a.b.0.c``); list items by index; None when absent."""
    cur = obj
    for part in path.split("."):
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.lstrip("-").isdigit():
            i = int(part)
            cur = cur[i] if -len(cur) <= i < len(cur) else None
        else:
            return None
        if cur is None:
            return None
    return cur


def _as_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


class _Missing(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return ""


@SOURCES.register("json")
class JsonSource(FileSource):
    """JSON (``.json``), JSON Lines (``.jsonl``, ``.ndjson``) and Parquet files: one record per object/row.

    ``text_field`` and ``id_field`` are dotted paths (``payload.body``, ``messages.0.content``);
    ``text_template`` (``"{title}: {body}"``, dotted names allowed) builds the text from several.
    Without them the text is the first of ``text``/``content``/``body``/``message``/``description``,
    else the object as JSON. Other top-level scalar fields go to ``meta.fields``. ``records_path``
    picks the list inside a JSON document (``data.items``). JSON Lines are streamed line by line
    and a bad line is quarantined as ``malformed_json`` with its line number; Parquet is streamed
    in row groups and its columns stay table columns (for tabular models); a Parquet table without
    a text column (no ``text_field``, none of the default names) gets ``col: value; ...`` of its
    non-binary columns as text (binary columns, e.g. image bytes, are kept as they are). UTF-16/32 without a
    byte order mark is detected; in a UTF-8 file with a few damaged bytes each invalid sequence
    becomes U+FFFD, counted in ``meta.invalid_bytes`` of the record whose text holds it. NUL
    characters are removed from the text (and from Parquet string columns), counted in
    ``meta.nul_removed``.
    """

    type: Literal["json"] = "json"
    #: dotted path to the text (``payload.body``)
    text_field: str | None = None
    #: builds the text from several fields, e.g. ``"{title}: {body}"``
    text_template: str | None = None
    #: dotted path to the native id (record ids become ``path#id=<value>``)
    id_field: str | None = None
    #: dotted path to the list of records inside a JSON document (``data.items``)
    records_path: str | None = None
    #: JSON documents (not JSON Lines) are parsed whole; larger ones are quarantined as ``too_large``
    max_json_mb: float = Field(512.0, gt=0)

    formats: ClassVar[tuple[str, ...]] = ("json",)
    default_include: ClassVar[tuple[str, ...]] = ("*.json", "*.jsonl", "*.ndjson", "*.parquet", "*.pq")
    extensions: ClassVar[tuple[str, ...]] = ("json", "jsonl", "ndjson", "parquet", "pq")
    magic: ClassVar[tuple[bytes, ...]] = (b"PAR1",)  # Parquet

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        if blob.head(4) == b"PAR1":
            yield from self._parquet(blob)
            return
        head = blob.head(65536)
        encoding = sniff_encoding(head)
        lines_mode = blob.ext in ("jsonl", "ndjson") or _looks_like_lines(head.decode(encoding, "ignore"))
        if lines_mode:
            yield from self._lines(blob, encoding)
            return
        decoded = decode_as(blob.read_bytes(int(self.max_json_mb * 1e6)), encoding)
        try:
            doc = json.loads(decoded.text)
        except json.JSONDecodeError as e:
            raise RecordError("malformed_json", str(e)[:500]) from e
        items = get_path(doc, self.records_path) if self.records_path else doc
        if self.records_path and items is None:
            raise RecordError("missing_field", f"records_path {self.records_path!r} not found")
        if not isinstance(items, list):
            items = [items]
        n = 0
        for i, obj in enumerate(items):
            n += 1
            yield self._object(obj, blob.key, i, "index", decoded.invalid > 0)
        if n == 0:
            raise RecordError("no_text", "an empty JSON list")

    def _lines(self, blob: Blob, encoding: str) -> Iterator[dict[str, Any] | Rejected]:
        n = 0
        with blob.open() as raw, DecodedStream(raw, encoding) as stream:
            f = io.TextIOWrapper(stream, encoding="utf-8", newline=None)
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    yield Rejected(
                        record_id("json", f"{blob.key}#line={line_no}"),
                        "malformed_json",
                        f"{blob.key}:{line_no}",
                        f"line {line_no}: {e.msg} at column {e.colno}: {line[:200]}",
                    )
                    continue
                n += 1
                yield self._object(obj, blob.key, line_no, "line", stream.invalid > 0)
        if n == 0:
            raise RecordError("no_text", "no JSON object in the file")

    def _object(self, obj: Any, key: str, pos: int, unit: str, damaged: bool = False) -> dict[str, Any]:
        native = _as_text(get_path(obj, self.id_field)) if self.id_field else ""
        rid = f"{key}#id={native}" if native else f"{key}#{unit}={pos}"
        if self.text_template:
            flat = _Missing()
            for name in template_fields(self.text_template):
                flat[name] = _as_text(get_path(obj, name))
            text = (
                self.text_template.replace("{", "{0[").replace("}", "]}").format(flat)
                if any("." in f for f in flat)
                else self.text_template.format_map(flat)
            )
        elif self.text_field:
            text = _as_text(get_path(obj, self.text_field))
        elif isinstance(obj, dict):
            field = next((f for f in DEFAULT_TEXT_FIELDS if isinstance(obj.get(f), str)), None)
            text = obj[field] if field else _as_text(obj)
        else:
            text = _as_text(obj)
        meta: dict[str, Any] = {"path": key, "format": "json", unit: pos}
        if isinstance(obj, dict):
            fields = {k: v for k, v in obj.items() if v is None or isinstance(v, (str, int, float, bool))}
            fields.pop(self.text_field or "", None)
            for f in DEFAULT_TEXT_FIELDS:
                if not self.text_field and not self.text_template and fields.get(f) == text:
                    fields.pop(f)
            if fields:
                meta["fields"] = fields
        return self.record(rid, text, meta, damaged)

    def _parquet(self, blob: Blob) -> Iterator[pa.Table]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(blob.path)
        except (pa.ArrowInvalid, OSError) as e:
            raise RecordError("corrupt", f"Parquet: {e}") from e
        row0 = 0
        path_json = json.dumps(blob.key, ensure_ascii=False)
        for batch in pf.iter_batches(batch_size=65536):
            table, nuls = strip_nul_columns(pa.Table.from_batches([batch]))
            table = table.rename_columns(
                [f"col_{c}" if c in RECORD_COLUMNS else c for c in table.column_names]
            )
            n = table.num_rows
            rows_s = pc.cast(pa.array(range(row0, row0 + n), pa.int64()), pa.string())
            if self.id_field and self.id_field in table.column_names:
                native = pc.fill_null(pc.cast(table.column(self.id_field), pa.string()), "")
                ids = pc.binary_join_element_wise(f"json:{blob.key}#id=", native, "")
            else:
                ids = pc.binary_join_element_wise(f"json:{blob.key}#row=", rows_s, "")
            name = self.text_field or next(
                (f for f in DEFAULT_TEXT_FIELDS if f in table.column_names),
                "col_text" if "col_text" in table.column_names else None,
            )
            if self.text_template:
                text = render_template(self.text_template, table)
            elif name is None:  # a table of data without a text column: ``col: value; ...``
                text = row_text(
                    table, [c for c in table.column_names if not _is_bytes(table.schema.field(c).type)]
                )
            elif name not in table.column_names:
                raise RecordError(
                    "missing_field", f"text_field {name!r} is not a column (columns: {table.column_names})"
                )
            else:
                text = pc.cast(table.column(name), pa.string())
            meta = pc.binary_join_element_wise(
                f'{{"format": "parquet", "path": {path_json}, "row": ',
                rows_s,
                *meta_count_fields(nul_removed=nuls),
                "}",
                "",
            )
            out = {"id": ids, "text": text, "source": pa.array(["json"] * n, pa.string()), "meta": meta}
            out.update({c: table.column(c) for c in table.column_names})
            row0 += n
            yield pa.table(out)
        if row0 == 0:
            raise RecordError("no_text", "the Parquet file has no rows")


def _is_bytes(typ: pa.DataType) -> bool:
    """Binary columns (images, audio...) stay binary: never decoded, never part of the text."""
    return bool(
        pa.types.is_binary(typ) or pa.types.is_large_binary(typ) or pa.types.is_fixed_size_binary(typ)
    )


def _looks_like_lines(head: str) -> bool:
    """Two or more lines that each parse as a JSON object: JSON Lines whatever the extension."""
    lines = [ln for ln in head.splitlines()[:3] if ln.strip()]
    if len(lines) < 2:
        return False
    try:
        return all(isinstance(json.loads(ln), dict) for ln in lines[:2])
    except json.JSONDecodeError:
        return False

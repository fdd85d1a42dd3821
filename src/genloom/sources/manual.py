"""Records typed by people: a CSV or JSON Lines file a person (or, later, the dashboard) filled."""

from __future__ import annotations

import csv as pycsv
import hashlib
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from genloom.core.errors import ConfigError, RecordError, SourceError
from genloom.core.records import RECORD_COLUMNS, Rejected
from genloom.core.registry import SOURCES
from genloom.core.steps import Source
from genloom.sources.csv import template_fields


@SOURCES.register("manual")
class ManualSource(Source):
    """Records written by hand, one per row of a CSV file or line of a JSON Lines file.

    The file is what a person filled in a spreadsheet or an editor (and where the dashboard will
    write): ``text_field`` (or ``text_template``) gives the text, ``author_field`` and
    ``time_field`` who wrote it and when; both go to ``meta.author`` and ``meta.written_at``
    (ISO 8601, converted to UTC; a time without a zone is taken as UTC). The other fields stay as
    table columns (a label, a rating...), CSV values as strings, JSON values as they are (a
    column whose values change type between rows as text). A row
    that lacks one of ``required`` (empty counts as missing), whose time does not parse, whose
    JSON does not parse or whose ``id_field`` repeats an earlier row is quarantined with the
    reason and its line number; the rest are read. Ids are ``manual:<file>#<id_field>=<value>``,
    else ``manual:<file>#line=<n>``. The file's hash is the fingerprint: an edit reruns the source.
    Records are marked ``meta.manual``.
    """

    type: Literal["manual"] = "manual"
    path: str = Field(description="the CSV or JSON Lines file (relative to the pipeline file's folder)")
    format: Literal["auto", "csv", "jsonl"] = Field(
        default="auto", description="auto: by the extension (.csv, .tsv; .jsonl, .ndjson)"
    )
    text_field: str = Field(default="text", description="the field holding the text")
    text_template: str | None = Field(
        default=None, description='builds ``text`` from fields instead, e.g. "{question} {answer}"'
    )
    author_field: str = Field(default="author", description="the field naming who wrote the row")
    time_field: str = Field(default="created_at", description="the field saying when it was written")
    id_field: str | None = Field(default=None, description="a field with a unique id per row")
    required: list[str] | None = Field(
        default=None,
        description="fields a row must fill, else it is quarantined (default: the text field, or "
        "the template's fields, and the author)",
    )
    encoding: str = Field(default="utf-8-sig", description="the file's encoding")

    version: ClassVar[str] = "1"

    def check(self, path: str) -> None:
        if self.format == "auto" and self._format() is None:
            raise ConfigError(
                f"cannot tell the format of {self.path!r} from its extension",
                path=f"{path}.format",
                hint="set format: csv or format: jsonl",
            )

    def _format(self) -> str | None:
        if self.format != "auto":
            return self.format
        ext = os.path.splitext(self.path)[1].lower()
        return {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(ext)

    def _required(self) -> list[str]:
        if self.required is not None:
            return list(self.required)
        text = template_fields(self.text_template) if self.text_template else [self.text_field]
        return [*text, self.author_field]

    def files_read(self) -> list[str]:
        return [self.path]

    def fingerprint(self) -> str:
        """The file's SHA-256 (any edit reruns the source)."""
        try:
            with open(self.resolve_path(self.path), "rb") as f:
                return hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as e:
            raise SourceError(f"manual source: cannot read {self.path}: {e.strerror or e}") from None

    def local_only(self) -> bool:
        return True  # a file of this machine

    def partitions(self) -> list[Any]:
        return [self.path]

    def read(self, partition: Any) -> Iterator[dict[str, Any] | Rejected]:
        """Every row of the file, or its quarantine marker."""
        real = self.resolve_path(self.path)
        try:
            with open(real, "rb") as f:
                data = f.read()
        except OSError as e:
            raise SourceError(f"manual source: cannot read {self.path}: {e.strerror or e}") from None
        try:
            content = data.decode(self.encoding)
        except UnicodeDecodeError as e:
            raise RecordError("bad_encoding", f"{self.path} is not {self.encoding}: {e}") from None
        seen: set[str] = set()
        records: list[dict[str, Any]] = []
        for line, row in self._rows(content):
            item = self._record(line, row, seen)
            if isinstance(item, Rejected):
                yield item
            else:
                records.append(item)
        yield from _uniform_columns(records)

    def _rows(self, content: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
        """(line number, the row as a dict, or why it does not parse)."""
        if self._format() == "jsonl":
            for number, raw in enumerate(content.splitlines(), 1):
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw)
                except ValueError as e:
                    yield number, f"not JSON: {e}"
                    continue
                yield (
                    number,
                    value if isinstance(value, dict) else f"a JSON {type(value).__name__}, not an object",
                )
            return
        dialect: Any = "excel-tab" if self.path.lower().endswith(".tsv") else "excel"
        reader = pycsv.DictReader(io.StringIO(content, newline=""), dialect=dialect)
        for row in reader:
            number = reader.line_num
            if None in row:
                yield number, f"{len(reader.fieldnames or [])} columns in the header, more in this row"
                continue
            yield number, {k: (None if v is None or v == "" else v) for k, v in row.items()}

    def _record(self, line: int, row: dict[str, Any] | str, seen: set[str]) -> dict[str, Any] | Rejected:
        where = f"{self.path}:{line}"
        line_id = f"manual:{self.path}#line={line}"
        if isinstance(row, str):
            return Rejected(line_id, "malformed_row", where, row)
        missing = [f for f in self._required() if _blank(row.get(f))]
        if missing:
            return Rejected(line_id, "missing_field", where, f"no value for {', '.join(missing)}")
        rid = line_id
        if self.id_field:
            native = row.get(self.id_field)
            if _blank(native):
                return Rejected(line_id, "missing_field", where, f"no value for {self.id_field}")
            rid = f"manual:{self.path}#{self.id_field}={native}"
            if rid in seen:
                return Rejected(
                    rid, "duplicate_id", where, f"{self.id_field}={native} repeats an earlier row"
                )
            seen.add(rid)
        meta: dict[str, Any] = {"manual": True, "path": self.path, "line": line}
        author = row.get(self.author_field)
        if not _blank(author):
            meta["author"] = str(author)
        written = row.get(self.time_field)
        if not _blank(written):
            try:
                meta["written_at"] = _utc_iso(written)
            except (ValueError, TypeError, OverflowError, OSError):
                return Rejected(
                    rid, "bad_time", where, f"{self.time_field}={str(written)[:80]!r} is not ISO 8601"
                )
        if self.text_template:
            text = self.text_template
            for name in template_fields(self.text_template):
                value = row.get(name)
                text = text.replace("{" + name + "}", "" if value is None else str(value))
        else:
            text = str(row.get(self.text_field) or "")
        record: dict[str, Any] = {"id": rid, "text": text, "source": "manual", "meta": meta}
        used = {self.author_field, self.time_field}
        if not self.text_template:
            used.add(self.text_field)
        for key, value in row.items():
            if key in used:
                continue
            record[f"col_{key}" if key in RECORD_COLUMNS else key] = (
                json.dumps(value, ensure_ascii=False, sort_keys=True)
                if isinstance(value, list | dict)
                else value
            )
        return record


def _uniform_columns(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with each extra column of one type: a column whose JSON values change type
    between rows (a number here, text there; integers and floats mix) is kept as text."""
    kinds: dict[str, set[type]] = {}
    for record in records:
        for key, value in record.items():
            if key not in RECORD_COLUMNS and value is not None:
                kinds.setdefault(key, set()).add(float if type(value) is int else type(value))
    mixed = {key for key, types in kinds.items() if len(types) > 1}
    if not mixed:
        return records
    for record in records:
        for key in mixed:
            value = record.get(key)
            if value is not None and not isinstance(value, str):
                record[key] = json.dumps(value)
    return records


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _utc_iso(value: Any) -> str:
    """A time as ISO 8601 in UTC: an ISO string (naive = UTC) or epoch seconds."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int | float):
        when = datetime.fromtimestamp(value, UTC)
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        when = datetime.fromisoformat(text)
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.isoformat().replace("+00:00", "Z")


__all__ = ["ManualSource"]

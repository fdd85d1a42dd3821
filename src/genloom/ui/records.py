"""The files of a pipeline's ``manual`` sources, read and written by the dashboard: a new record is
appended, a label is set on an existing row; the next ``genloom run`` ingests them (the file's
hash is the source's fingerprint, so an edit reruns it)."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from genloom.core.errors import ConfigError, NotFoundError
from genloom.sources.manual import ManualSource


@dataclass(frozen=True)
class ManualRow:
    """One row of a manual file: its line number (as the source counts it) and its fields."""

    line: int
    fields: dict[str, Any]


class ManualFile:
    """A manual source's CSV or JSON Lines file, with the source's field names."""

    def __init__(self, source: ManualSource) -> None:
        self.source = source
        self.path = source.resolve_path(source.path)
        fmt = source._format()
        if fmt is None:
            raise ConfigError(f"cannot tell the format of {source.path!r}: set format: csv or jsonl")
        self.format = fmt
        self.delimiter = "\t" if source.path.lower().endswith(".tsv") else ","

    def rows(self) -> list[ManualRow]:
        """Every row that parses, with its line number."""
        content = self._read()
        if self.format == "jsonl":
            out = []
            for number, raw in enumerate(content.splitlines(), 1):
                try:
                    value = json.loads(raw) if raw.strip() else None
                except ValueError:
                    continue
                if isinstance(value, dict):
                    out.append(ManualRow(number, value))
            return out
        reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=self.delimiter)
        return [ManualRow(reader.line_num, dict(row)) for row in reader]

    def append(self, text: str, author: str, extra: dict[str, str]) -> ManualRow:
        """Add a record written now by ``author``; its row."""
        row: dict[str, Any] = {
            self.source.text_field: text,
            self.source.author_field: author,
            self.source.time_field: datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            **{k: v for k, v in extra.items() if v != ""},
        }
        if self.source.id_field:
            row[self.source.id_field] = uuid.uuid4().hex[:12]
        if self.format == "jsonl":
            content = self._read()
            if content and not content.endswith("\n"):
                content += "\n"
            self._write(content + json.dumps(row, ensure_ascii=False) + "\n")
        else:
            header, rows = self._csv()
            rows.append(row)
            self._write_csv(header, rows)
        return self.rows()[-1]

    def label(self, line: int, field: str, value: str) -> None:
        """Set ``field`` of the row on ``line`` to ``value`` (NotFoundError: no such row)."""
        if not field.strip():
            raise ConfigError("the label's field name is empty")
        if self.format == "jsonl":
            lines = self._read().splitlines()
            if not 1 <= line <= len(lines):
                raise NotFoundError(f"{self.source.path} has no line {line}")
            try:
                row = json.loads(lines[line - 1])
            except ValueError:
                row = None
            if not isinstance(row, dict):
                raise NotFoundError(f"{self.source.path}:{line} is not a JSON object")
            row[field] = value
            lines[line - 1] = json.dumps(row, ensure_ascii=False)
            self._write("\n".join(lines) + "\n")
            return
        by_line = {r.line: r for r in self.rows()}
        if line not in by_line:
            raise NotFoundError(f"{self.source.path} has no row ending on line {line}")
        header, rows = self._csv()
        index = list(by_line).index(line)
        rows[index][field] = value
        self._write_csv(header, rows)

    def _read(self) -> str:
        try:
            with open(self.path, encoding=self.source.encoding, newline="") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def _csv(self) -> tuple[list[str], list[dict[str, Any]]]:
        reader = csv.DictReader(io.StringIO(self._read(), newline=""), delimiter=self.delimiter)
        rows = [dict(r) for r in reader]
        return list(reader.fieldnames or []), rows

    def _write_csv(self, header: list[str], rows: list[dict[str, Any]]) -> None:
        for row in rows:
            header += [k for k in row if k not in header]
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=header, delimiter=self.delimiter)
        writer.writeheader()
        writer.writerows(rows)
        self._write(buf.getvalue())

    def _write(self, content: str) -> None:
        """Replace the file at once (a reader never sees half a file)."""
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".genloom-ui-")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(content)
        os.replace(tmp, self.path)


def manual_files(sources: list[Any]) -> list[ManualFile]:
    """The files of the pipeline's manual sources, in config order."""
    return [ManualFile(s) for s in sources if isinstance(s, ManualSource)]

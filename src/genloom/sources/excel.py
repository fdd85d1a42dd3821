"""Spreadsheets (XLSX, XLSM, XLSB, XLS, ODS) through python-calamine."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from genloom.core.errors import RecordError
from genloom.core.records import Rejected, record_id
from genloom.core.registry import SOURCES
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob
from genloom.sources._files.chunking import Block
from genloom.sources._files.text import markdown_table


def cell_text(v: Any) -> str:
    """A cell as text: integral floats without ``.0``, dates in ISO form."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return str(v)
    return str(v).strip()


def fill_merged(rows: list[list[str]], merged: list[Any], origin: tuple[int, int]) -> None:
    """Repeat a merged cell's value down its rows (a horizontal merge keeps it in the first cell only)."""
    r_off, c_off = origin
    for (r0, c0), (r1, c1) in merged or []:
        r0, r1, c0, c1 = r0 - r_off, r1 - r_off, c0 - c_off, c1 - c_off
        if not (0 <= r0 < len(rows)) or r1 <= r0:
            continue
        for c in range(max(c0, 0), c1 + 1):
            if c >= len(rows[r0]):
                break
            value = rows[r0][c]
            for r in range(r0 + 1, min(r1, len(rows) - 1) + 1):
                if c < len(rows[r]) and not rows[r][c]:
                    rows[r][c] = value


def detect_header(rows: list[list[str]]) -> int | None:
    """Index of the header row among the first ten: the first mostly-filled row of text labels
    followed by a data row; None when the sheet has no such row."""
    width = max((sum(1 for c in r if c) for r in rows[:50]), default=0)
    for i, r in enumerate(rows[:10]):
        filled = [c for c in r if c]
        labels = len(filled) >= max(2, (width + 1) // 2) and all(not _is_number(c) for c in filled)
        if labels and any(any(c for c in nxt) for nxt in rows[i + 1 : i + 3]):
            return i
    return None


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
        return True
    except ValueError:
        return False


@SOURCES.register("excel")
class ExcelSource(FileSource):
    """Spreadsheets (``.xlsx``, ``.xlsm``, ``.xlsb``, ``.xls``, ``.ods``) read with python-calamine.

    Every sheet is read. ``mode: sheet`` (default) makes each sheet one document: a Markdown
    table under the sheet name (title rows above the header kept as text, empty rows and columns
    dropped). ``mode: rows`` makes each row a record whose text is ``text_template``
    (``"{Team}: {Cups}"``) or ``header: value; ...``, with the values in ``meta.fields``.
    ``mode: table`` makes each row a record too, but keeps the sheet's columns as typed table
    columns (for tabular models, like the ``csv`` source): a column of numbers is int64 when every
    value is integral, else float64; of dates, date32 or timestamp; of TRUE/FALSE, bool; anything
    mixed is text; an empty cell is null. The header
    row is detected (the first mostly-filled row of labels in the first ten rows, so a title row
    above it is skipped); vertically merged cells repeat their value. Quarantined: ``encrypted``
    (password-protected workbook), ``corrupt``, ``no_text``.
    """

    type: Literal["excel"] = "excel"
    #: each sheet one document (``sheet``), each row one record (``rows``), or each row one record
    #: with the sheet's columns kept as typed table columns (``table``, for tabular models)
    mode: Literal["sheet", "rows", "table"] = "sheet"
    #: in ``rows`` and ``table`` mode, builds the text from the header names, e.g. ``"{Team}: {Stanley Cups}"``
    text_template: str | None = None
    #: in ``table`` mode, the column whose value replaces the row number in record ids
    id_column: str | None = None
    #: read only these sheets (default: all)
    sheets: list[str] = []
    #: whether the sheet has a header row; detected when empty
    header: bool | None = None
    #: rows read per sheet at most
    max_rows: int = Field(1_000_000, gt=0)

    formats: ClassVar[tuple[str, ...]] = ("excel",)
    default_include: ClassVar[tuple[str, ...]] = ("*.xlsx", "*.xlsm", "*.xlsb", "*.xls", "*.ods")
    extensions: ClassVar[tuple[str, ...]] = ("xlsx", "xlsm", "xlsb", "xls", "ods")
    zip_mimetypes: ClassVar[tuple[str, ...]] = ("application/vnd.oasis.opendocument.spreadsheet",)
    zip_members: ClassVar[tuple[tuple[str, ...], ...]] = (("[Content_Types].xml", "xl/"),)
    # BIFF8 (Excel 97-2003) keeps its sheets in "Workbook", BIFF5 (Excel 5/95) in "Book"
    ole_streams: ClassVar[tuple[tuple[str, ...], ...]] = (("Workbook",), ("Book",))
    signature_required: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("python_calamine",)
    extra: ClassVar[str] = "docs"

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        import python_calamine as cal

        try:
            wb = cal.CalamineWorkbook.from_path(str(blob.path))
        except cal.PasswordError as e:
            raise RecordError("encrypted", f"password-protected workbook: {e}") from e
        except Exception as e:
            raise RecordError("corrupt", f"not a readable spreadsheet: {type(e).__name__}: {e}") from e
        n = 0
        for name in wb.sheet_names:
            if self.sheets and name not in self.sheets:
                continue
            try:
                sheet = wb.get_sheet_by_name(name)
                raw = sheet.to_python(nrows=self.max_rows)
            except Exception as e:
                yield Rejected(
                    record_id("excel", f"{blob.key}#sheet={name}"),
                    "corrupt",
                    blob.key,
                    f"sheet {name!r}: {e}",
                )
                continue
            rows = [[cell_text(v) for v in r] for r in raw]
            with _suppress():
                fill_merged(rows, sheet.merged_cell_ranges or [], sheet.start or (0, 0))
            if self.mode == "table":
                keep_rows, keep_cols = _kept(rows)
                if not keep_rows:
                    continue
                table = self._table(
                    blob,
                    name,
                    [[rows[i][j] if j < len(rows[i]) else "" for j in keep_cols] for i in keep_rows],
                    [[raw[i][j] if j < len(raw[i]) else None for j in keep_cols] for i in keep_rows],
                )
                if table is not None:
                    n += table.num_rows
                    yield table
                continue
            rows = _trim(rows)
            if not rows:
                continue
            if self.mode == "rows":
                for rec in self._rows(blob, name, rows):
                    n += 1
                    yield rec
            else:
                for rec in self._sheet(blob, name, rows):
                    n += 1
                    yield rec
        if n == 0:
            raise RecordError("no_text", "every sheet is empty")

    def _split(self, rows: list[list[str]]) -> tuple[list[str], list[list[str]], list[list[str]]]:
        """(header, title rows above it, data rows)."""
        h = detect_header(rows) if self.header is not False else None
        if self.header is True and h is None:
            h = 0
        if h is None:
            width = max(len(r) for r in rows)
            return [f"col{i + 1}" for i in range(width)], [], rows
        header = [c or f"col{i + 1}" for i, c in enumerate(rows[h])]
        return header, rows[:h], rows[h + 1 :]

    def _sheet(self, blob: Blob, name: str, rows: list[list[str]]) -> Iterator[dict[str, Any]]:
        header, titles, data = self._split(rows)
        head_text = "\n".join(" ".join(c for c in r if c) for r in titles if any(r))
        meta = {"sheet": name, "rows": len(data), "columns": header}
        key = f"{blob.key}#sheet={name}"
        section = (name,)
        if self.chunk is None:
            body = markdown_table([header, *data])
            text = f"{head_text}\n\n{body}".strip() if head_text else body
            yield self.record(key, text, {"path": blob.key, "format": "excel", **meta})
            return
        # chunks: slices of rows, each with the header, so every chunk is a readable table
        per = max(1, self.chunk.size // max(1, sum(len(c) + 3 for c in header) + 40))
        blocks = [Block(head_text, section)] if head_text else []
        blocks += [
            Block(markdown_table([header, *data[i : i + per]]), section) for i in range(0, len(data), per)
        ]
        inner = blob.key
        for rec in self.emit_document(Blob(key, blob.path, blob.name), blocks, meta):
            rec["meta"]["path"] = inner
            yield rec

    def _rows(self, blob: Blob, name: str, rows: list[list[str]]) -> Iterator[dict[str, Any]]:
        header, _, data = self._split(rows)
        for i, row in enumerate(data):
            fields = {h: (row[j] if j < len(row) else "") for j, h in enumerate(header)}
            if self.text_template:
                text = self.text_template.format_map(_Blank(fields))
            else:
                text = "; ".join(f"{h}: {v}" for h, v in fields.items() if v)
            yield self.record(
                f"{blob.key}#sheet={name}&row={i}",
                text,
                {"path": blob.key, "format": "excel", "sheet": name, "row": i, "fields": fields},
            )

    def _table(self, blob: Blob, name: str, rows: list[list[str]], raw: list[list[Any]]) -> pa.Table | None:
        """The sheet's data rows as records with its columns kept, typed from the cells' values."""
        import json

        import pyarrow.compute as pc

        from genloom.core.records import RECORD_COLUMNS
        from genloom.sources.csv import render_template, row_text

        header, _, data = self._split(rows)
        data_raw = raw[len(rows) - len(data) :]  # the data rows are the last ones
        if not data_raw:
            return None
        width = len(header)
        names = [f"col_{h}" if h in RECORD_COLUMNS else h for h in _unique(header)]
        columns = {
            names[j]: _typed_column([r[j] if j < len(r) else None for r in data_raw]) for j in range(width)
        }
        table = pa.table(columns)
        n = table.num_rows
        rows_s = pc.cast(pa.array(range(n), pa.int64()), pa.string())
        key = f"{blob.key}#sheet={name}"
        if self.id_column and self.id_column in header:
            id_name = names[header.index(self.id_column)]
            native = pc.fill_null(pc.cast(table.column(id_name), pa.string()), "")
            ids = pc.binary_join_element_wise(f"excel:{key}&{self.id_column}=", native, "")
        else:
            ids = pc.binary_join_element_wise(f"excel:{key}&row=", rows_s, "")
        text = render_template(self.text_template, table) if self.text_template else row_text(table, names)
        path_json = json.dumps(blob.key, ensure_ascii=False)
        sheet_json = json.dumps(name, ensure_ascii=False)
        meta = pc.binary_join_element_wise(
            f'{{"format": "excel", "path": {path_json}, "sheet": {sheet_json}, "row": ', rows_s, "}", ""
        )
        out = {"id": ids, "text": text, "source": pa.array(["excel"] * n, pa.string()), "meta": meta}
        out.update(columns)
        return pa.table(out)


def _unique(names: list[str]) -> list[str]:
    """Header names made unique (``a``, ``a_2``...)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def _typed_column(values: list[Any]) -> pa.Array:
    """A column of cell values as one Arrow type: bool, int64, float64, date32, timestamp, else text."""
    cells = [None if v is None or (isinstance(v, str) and not v.strip()) else v for v in values]
    present = [v for v in cells if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(cells, pa.bool_())
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        if all(float(v).is_integer() and abs(v) < 2**53 for v in present):
            return pa.array([None if v is None else int(v) for v in cells], pa.int64())
        return pa.array([None if v is None else float(v) for v in cells], pa.float64())
    if present and all(isinstance(v, dt.date) for v in present):
        if not any(isinstance(v, dt.datetime) for v in present):
            return pa.array(cells, pa.date32())
        # a spreadsheet stores a midnight timestamp as a bare date: such cells join their column
        stamps = [
            v if v is None or isinstance(v, dt.datetime) else dt.datetime(v.year, v.month, v.day)
            for v in cells
        ]
        return pa.array(stamps, pa.timestamp("us"))
    return pa.array([None if v is None else cell_text(v) for v in cells], pa.string())


def _kept(rows: list[list[str]]) -> tuple[list[int], list[int]]:
    """Indexes of the non-empty rows and columns."""
    keep_rows = [i for i, r in enumerate(rows) if any(r)]
    width = max((len(rows[i]) for i in keep_rows), default=0)
    keep_cols = [j for j in range(width) if any(j < len(rows[i]) and rows[i][j] for i in keep_rows)]
    return keep_rows, keep_cols


class _Blank(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return ""


def _trim(rows: list[list[str]]) -> list[list[str]]:
    """Drop empty rows and columns."""
    rows = [r for r in rows if any(r)]
    if not rows:
        return rows
    width = max(len(r) for r in rows)
    keep = [j for j in range(width) if any(j < len(r) and r[j] for r in rows)]
    return [[r[j] if j < len(r) else "" for j in keep] for r in rows]


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True

"""CSV and TSV files, streamed in Arrow batches."""

from __future__ import annotations

import csv as pycsv
import json
import re
import string
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
from genloom.sources._files.encoding import DecodedStream, sniff_encoding
from genloom.sources._files.text import count_per_row, meta_count_fields, strip_nul_columns

_INT = r"^\s*[-+]?\d{1,18}\s*$"
_FLOAT = r"^\s*[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|inf|nan)\s*$"
NULLS = ["", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "#N/A"]


def template_fields(template: str) -> list[str]:
    """The field names used in a ``str.format`` template (``"{title}: {body}"`` -> title, body)."""
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def render_template(template: str, table: pa.Table) -> pa.Array:
    """``template`` filled from the columns of ``table``, vectorised; missing values become ''."""
    pieces: list[Any] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        if literal:
            pieces.append(literal)
        if name is not None:
            name = column_name(table, name)
            if name not in table.column_names:
                raise RecordError(
                    "missing_field", f"text_template uses {{{name}}}, columns are {table.column_names}"
                )
            pieces.append(pc.fill_null(pc.cast(table.column(name), pa.string()), ""))
    if not pieces:
        return pa.array([template] * table.num_rows, pa.string())
    arrays = [p if not isinstance(p, str) else pa.scalar(p) for p in pieces]
    if all(isinstance(a, pa.Scalar) for a in arrays):
        return pa.array(["".join(pieces)] * table.num_rows, pa.string())
    return pc.binary_join_element_wise(*arrays, "")


def column_name(table: pa.Table, name: str) -> str:
    """``name``, or ``col_<name>`` when it collided with a fixed record column (``id``, ``text``...)."""
    if name not in table.column_names and f"col_{name}" in table.column_names:
        return f"col_{name}"
    return name


def row_text(table: pa.Table, columns: list[str]) -> pa.Array:
    """Default text of a row: ``col: value; col: value`` over the non-empty values."""
    parts = []
    for name in columns:
        val = pc.cast(table.column(name), pa.string())
        parts.append(pc.if_else(pc.is_valid(val), pc.binary_join_element_wise(f"{name}: ", val, ""), ""))
    if not parts:
        return pa.array([""] * table.num_rows)
    joined = pc.binary_join_element_wise(*parts, "; ")
    return pc.utf8_trim(pc.replace_substring_regex(joined, r"(; )+", "; "), "; ")


def _lenient_cast(arr: pa.ChunkedArray | pa.Array, typ: pa.DataType) -> pa.Array:
    """Cast strings to ``typ``; values that do not parse become null instead of failing the batch."""
    if pa.types.is_string(typ):
        return arr
    rx = _INT if pa.types.is_integer(typ) else _FLOAT
    ok = pc.match_substring_regex(arr, rx, ignore_case=True)
    cleaned = pc.if_else(ok, pc.utf8_trim_whitespace(arr), pa.scalar(None, pa.string()))
    return pc.cast(cleaned, typ)


def _infer_type(arr: pa.ChunkedArray) -> pa.DataType:
    valid = arr.drop_null()
    if len(valid) == 0:
        return pa.string()
    if pc.all(pc.match_substring_regex(valid, _INT)).as_py():
        return pa.int64()
    if pc.all(pc.match_substring_regex(valid, _FLOAT, ignore_case=True)).as_py():
        return pa.float64()
    return pa.string()


@SOURCES.register("csv")
class CsvSource(FileSource):
    """CSV/TSV files read in Arrow batches (pyarrow.csv), so a multi-GB file uses bounded memory.

    Sniffed per file: the encoding (BOM, UTF-8, UTF-16, cp1252, cp1251... via charset-normalizer),
    the dialect (delimiter, quote; ``csv.Sniffer``), whether the first row is a header, and title
    rows above the header (skipped). A blank after every delimiter (UCI's ``39, State-gov``) is
    part of the separator: values are trimmed before they are typed or matched to ``null_values``.
    A file without a header row can name its columns with ``column_names``. Column types are inferred from the first batch (int, float,
    else string) and kept for the whole file; later values that do not parse become null.
    Every row is a record: the data columns stay as table columns (for tabular models), ``text``
    comes from ``text_template`` (``"{title}: {body}"``), ``text_column``, or ``col: value; ...``.
    Rows with the wrong number of fields are quarantined as ``malformed_row`` with their line number.
    UTF-16/32 without a byte order mark is detected; in a UTF-8 file with a few damaged bytes each
    invalid sequence becomes U+FFFD, and a row of such a file counts the U+FFFD of its values in
    ``meta.invalid_bytes``. NUL characters are removed from every value, counted per row in
    ``meta.nul_removed``.
    """

    type: Literal["csv"] = "csv"
    #: builds ``text`` from the columns, e.g. ``"{title}: {body}"``
    text_template: str | None = None
    #: the column copied to ``text`` (when there is no template)
    text_column: str | None = None
    #: column whose value replaces the row number in record ids
    id_column: str | None = None
    #: field separator; detected when empty
    delimiter: str | None = None
    #: whether the first row names the columns; detected when empty (False when ``column_names`` is set)
    header: bool | None = None
    #: names of the columns, for a file without a header row (with ``header: true`` they replace the file's)
    column_names: list[str] | None = None
    #: force an encoding instead of detecting it
    encoding: str | None = None
    #: extra strings read as missing values (``?``); the usual ones (``NA``, ``null``, ``""``) always are
    null_values: list[str] = []
    #: read every column as text (no type inference)
    all_strings: bool = False
    #: bytes of input per Arrow batch
    block_mb: float = Field(4.0, gt=0)

    formats: ClassVar[tuple[str, ...]] = ("csv",)
    default_include: ClassVar[tuple[str, ...]] = ("*.csv", "*.tsv", "*.tab")
    extensions: ClassVar[tuple[str, ...]] = ("csv", "tsv", "tab")
    requires: ClassVar[tuple[str, ...]] = ("charset_normalizer",)
    extra: ClassVar[str] = "docs"

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        import pyarrow.csv as pacsv

        head = blob.head(1 << 20)
        encoding = self.encoding or sniff_encoding(head)
        sample = head.decode(encoding, errors="ignore") if encoding else head.decode("utf-8", "ignore")
        if len(head) == 1 << 20 and "\n" in sample:
            sample = sample[: sample.rfind("\n")]
        sample = sample.lstrip("\ufeff")
        dialect = self._dialect(sample, blob)
        if not dialect.skipinitialspace and _blank_after_delimiter(sample, dialect):
            dialect.skipinitialspace = True
        lines = list(pycsv.reader(sample.splitlines()[:50], dialect))
        skip = _title_rows(lines)
        body = lines[skip:]
        has_header = self.header
        if has_header is None and self.column_names is not None:
            has_header = False
        if has_header is None:
            try:
                has_header = pycsv.Sniffer().has_header("\n".join(sample.splitlines()[skip : skip + 50]))
            except pycsv.Error:
                has_header = True
            has_header = has_header or _names_row(body)
        width = max((len(r) for r in body[:20]), default=0)
        if self.column_names is not None:
            if body and len(self.column_names) != width:
                raise RecordError(
                    "malformed_csv",
                    f"column_names has {len(self.column_names)} names, the rows have {width} fields",
                )
            names = list(self.column_names)
        elif has_header and body:
            names = [n.strip() or f"f{i}" for i, n in enumerate(body[0])]
        else:
            names = [f"f{i}" for i in range(width)]
        names = _dedupe([f"col_{n}" if n in RECORD_COLUMNS else n for n in names])
        if not names:
            raise RecordError("no_text", "no columns found")

        bad: list[Rejected] = []
        key = blob.key

        def on_invalid(row: Any) -> str:
            line = row.number if row.number is not None else "?"
            bad.append(
                Rejected(
                    record_id("csv", f"{key}#line={line}"),
                    "malformed_row",
                    f"{key}:{line}",
                    f"line {line}: expected {row.expected_columns} fields, got {row.actual_columns}: {row.text[:200]}",
                )
            )
            return "skip"

        read_opts = pacsv.ReadOptions(  # DecodedStream hands pyarrow UTF-8 whatever the file's encoding
            use_threads=False,
            block_size=int(self.block_mb * 2**20),
            skip_rows=skip + (1 if has_header else 0),
            column_names=names,
        )
        parse_opts = pacsv.ParseOptions(
            delimiter=dialect.delimiter,
            quote_char=dialect.quotechar or False,
            double_quote=dialect.doublequote,
            escape_char=dialect.escapechar or False,
            newlines_in_values=True,
            invalid_row_handler=on_invalid,
        )
        convert = pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            strings_can_be_null=True,
            null_values=NULLS + list(self.null_values),
        )
        trim = dialect.skipinitialspace or dialect.delimiter == ","
        # pyarrow matched null strings before the trim, so " ?" of a ", "-separated file is matched after it
        nulls = pa.array(["", *NULLS, *self.null_values], pa.string())
        path_json = json.dumps(key, ensure_ascii=False)
        types: dict[str, pa.DataType] | None = None
        row0 = 0
        with blob.open() as raw, DecodedStream(raw, encoding, block=read_opts.block_size) as stream:
            try:
                # the reader's blocks and parsed batches come from the system allocator: from
                # Arrow's default (mimalloc) about 25 MB of them stayed resident on Adult's 4 MB
                # file after the last batch was freed, even after release_unused()
                reader = pacsv.open_csv(
                    stream,
                    read_options=read_opts,
                    parse_options=parse_opts,
                    convert_options=convert,
                    memory_pool=pa.system_memory_pool(),
                )
                for batch in reader:
                    table, nuls = strip_nul_columns(pa.Table.from_batches([batch]))
                    if trim:
                        table = pa.table(
                            {n: pc.utf8_trim_whitespace(table.column(n)) for n in table.column_names}
                        )
                        table = pa.table(
                            {
                                n: pc.if_else(pc.is_in(c, value_set=nulls), pa.scalar(None, pa.string()), c)
                                for n, c in zip(table.column_names, table.columns, strict=True)
                            }
                        )
                    invalid = count_per_row(table, "\ufffd") if stream.invalid else None
                    if types is None:
                        types = {
                            n: (pa.string() if self.all_strings else _infer_type(table.column(n)))
                            for n in table.column_names
                        }
                    cols = {n: _lenient_cast(table.column(n), types[n]) for n in table.column_names}
                    table = pa.table(cols)
                    yield self._records(table, key, path_json, row0, nuls, invalid)
                    row0 += table.num_rows
                    yield from bad
                    bad.clear()
            except pa.ArrowInvalid as e:
                yield from bad
                raise RecordError("malformed_csv", f"{key}: {e}") from e
        yield from bad
        if row0 == 0:
            raise RecordError("no_text", "no data rows")

    def _dialect(self, sample: str, blob: Blob) -> Any:
        class Default(pycsv.excel):
            pass

        if self.delimiter:
            Default.delimiter = self.delimiter
            return Default
        try:
            d = pycsv.Sniffer().sniff(sample[:65536], delimiters=",;\t|")
            if blob.ext in ("tsv", "tab") and d.delimiter != "\t":
                raise pycsv.Error
            return d
        except pycsv.Error:
            Default.delimiter = "\t" if blob.ext in ("tsv", "tab") else ","
            return Default

    def _records(
        self, table: pa.Table, key: str, path_json: str, row0: int, nuls: Any = None, invalid: Any = None
    ) -> pa.Table:
        n = table.num_rows
        rows = pa.array(range(row0, row0 + n), pa.int64())
        rows_s = pc.cast(rows, pa.string())
        id_col = column_name(table, self.id_column) if self.id_column else None
        if id_col and id_col in table.column_names:
            native = pc.fill_null(pc.cast(table.column(id_col), pa.string()), "")
            ids = pc.binary_join_element_wise(f"csv:{key}#{self.id_column}=", native, "")
        else:
            ids = pc.binary_join_element_wise(f"csv:{key}#row=", rows_s, "")
        if self.text_template:
            text = render_template(self.text_template, table)
        elif self.text_column:
            text_col = column_name(table, self.text_column)
            if text_col not in table.column_names:
                raise RecordError(
                    "missing_field", f"text_column {self.text_column!r} not in {table.column_names}"
                )
            text = pc.cast(table.column(text_col), pa.string())
        else:
            text = row_text(table, table.column_names)
        counts = meta_count_fields(nul_removed=nuls, invalid_bytes=invalid)
        meta = pc.binary_join_element_wise(
            f'{{"format": "csv", "path": {path_json}, "row": ', rows_s, *counts, "}", ""
        )
        out = {"id": ids, "text": text, "source": pa.array(["csv"] * n, pa.string()), "meta": meta}
        out.update({c: table.column(c) for c in table.column_names})
        return pa.table(out)


def _blank_after_delimiter(sample: str, dialect: Any) -> bool:
    """Whether every value after the first of each row starts with a blank (``a, b, c``).

    ``csv.Sniffer`` judges this from the first row only, and not at all when the delimiter is
    given. The first row is not counted when there are more (it may be a header written without).
    """
    rows = [r for r in pycsv.reader(sample.splitlines()[:50], dialect) if len(r) > 1]
    if len(rows) > 2:
        rows = rows[1:]
    values = [v for r in rows for v in r[1:] if v]
    return bool(values) and all(v[0] == " " for v in values)


def _title_rows(lines: list[list[str]]) -> int:
    """Rows above the header that hold one value (``Stanley Cups,,``) while the table is wider."""
    if len(lines) < 3:
        return 0
    widths = [sum(1 for v in r if v.strip()) for r in lines]
    wide = max(widths[: min(len(widths), 20)])
    return 1 if widths[0] <= 1 < wide and widths[1] >= 2 else 0


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_ .()/-]{0,60}$")


def _names_row(rows: list[list[str]]) -> bool:
    """A first row of identifier-like names that never recur below it reads as a header.

    ``csv.Sniffer`` judges headers by type differences, so it misses them over all-text columns.
    """
    if len(rows) < 2 or not rows[0] or not all(_NAME.match(v.strip()) for v in rows[0]):
        return False
    for i, name in enumerate(rows[0]):
        if any(len(r) > i and r[i].strip() == name.strip() for r in rows[1:]):
            return False
    return True


def _dedupe(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}_{seen[n]}")
        else:
            seen[n] = 0
            out.append(n)
    return out

"""Sensor logs in files (CSV, JSON Lines, GPX tracks) as timed records or series windows."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from genloom.core.errors import ConfigError, MissingDependencyError, RecordError, StepError
from genloom.core.records import Rejected, record_id
from genloom.core.registry import SOURCES
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob
from genloom.sources._series import (
    Sample,
    WindowConfig,
    check_timezone,
    flatten,
    iso,
    sample_records,
    sample_windows,
    to_utc_ns,
)

# column names taken as the time when ``time_field`` is not given (case-insensitive, in order)
TIME_NAMES = ("timestamp", "time", "datetime", "date_time", "date", "ts", "month", "year")
# the parts of a time spread over several columns (``time_field: [year, month, day, hour]``)
_PARTS = ("year", "month", "day", "hour", "minute", "second")
GPX_NAMESPACE = b"http://www.topografix.com/GPX/"
_NULLS = ["", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "#N/A"]


@SOURCES.register("sensor_files")
class SensorFilesSource(FileSource):
    """Sensor logs, one series per file (or per ``series_field`` value, or per GPX track
    segment): CSV/TSV, JSON Lines and GPX tracks, timestamps normalised to UTC and sorted.

    The time is ``time_field`` (a column; or a list of columns holding year, month, day, hour,
    minute, second, as UCI's Beijing PM2.5 file does), else the first column named timestamp,
    time, datetime, date, ts, month or year; GPX points carry their own. ISO 8601 text
    (``2024-03-01T10:00:00Z``, ``2024-03-01 10:00``, ``1949-01``), ``time_format`` (strptime) or
    epoch numbers in ``time_unit``; a time without an offset is in ``timezone``. Without
    ``window`` each reading is a record (``ts``, ``series`` and the fields as typed columns, in
    time order; id ``sensor_files:<path>#<series>@<time>``); with ``window`` the readings become
    series windows (``values``, ``mask``, ``timestamps``: see docs/sources-streams.md), resampled
    to ``window.step`` with gaps marked. A row whose time does not parse is quarantined as
    ``bad_timestamp`` (GPX points without a time as ``no_timestamp``), a JSON line that does not
    parse as ``malformed_json``; a file that cannot be read at all as ``read_error:<Type>``.
    GPX waypoints and routes are not read (tracks only).
    """

    type: Literal["sensor_files"] = "sensor_files"
    format: Literal["auto", "csv", "jsonl", "gpx"] = Field(
        default="auto",
        description="the files' format; auto: by extension (.csv/.tsv/.txt, .jsonl/.ndjson/.json, .gpx)",
    )
    time_field: str | list[str] | None = Field(
        default=None,
        description="the column holding the time, or the columns holding its parts (year, month, "
        "day, hour, minute, second, in that order); default: the first column named like a time",
    )
    time_format: str | None = Field(
        default=None, description="strptime format of the time text (default: ISO 8601)"
    )
    time_unit: Literal["s", "ms", "us", "ns"] = Field(
        default="s", description="the unit of numeric (epoch) times"
    )
    timezone: str = Field(default="UTC", description="the IANA time zone of times written without an offset")
    series_field: str | None = Field(
        default=None,
        description="a column that names the series (a sensor id): one series per value within a file",
    )
    delimiter: str | None = Field(default=None, description="CSV field separator (default: by extension)")
    window: WindowConfig | None = Field(
        default=None, description="cut the readings into series windows instead of one record per reading"
    )

    formats: ClassVar[tuple[str, ...]] = ("sensor_files",)
    # GPX's XML namespace: ``files`` hands GPX tracks to this reader (CSV and JSON stay theirs)
    magic: ClassVar[tuple[bytes, ...]] = (GPX_NAMESPACE,)
    magic_within: ClassVar[int] = 4096
    default_include: ClassVar[tuple[str, ...]] = (
        "*.csv",
        "*.tsv",
        "*.txt",
        "*.jsonl",
        "*.ndjson",
        "*.json",
        "*.gpx",
    )

    def check(self, path: str) -> None:
        super().check(path)
        try:
            check_timezone(self.timezone)
        except ValueError as e:
            raise ConfigError(str(e), path=f"{path}.timezone", hint="an IANA name: Europe/Ljubljana") from e
        if isinstance(self.time_field, list) and not 1 <= len(self.time_field) <= len(_PARTS):
            raise ConfigError(
                f"time_field as a list names 1 to {len(_PARTS)} columns ({', '.join(_PARTS)})",
                path=f"{path}.time_field",
            )

    def read_blob(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        """Read one file by its format; a file that cannot be read is quarantined."""
        try:
            if blob.size == 0:
                raise RecordError("empty_file", "0 bytes")
            yield from self.read_file(blob)
        except RecordError as e:
            yield Rejected(record_id(self.type, blob.key), e.reason, blob.key, e.detail)
        except (MissingDependencyError, StepError):
            raise  # not this file's fault: a library to install, a broken resource
        except Exception as e:  # a parser's exception on one broken file: that file is quarantined
            yield Rejected(
                record_id(self.type, blob.key), f"read_error:{type(e).__name__}", blob.key, str(e)[:2000]
            )

    def file_format(self, blob: Blob) -> str:
        """csv, jsonl or gpx for ``blob``."""
        if self.format != "auto":
            return self.format
        if blob.ext == "gpx" or GPX_NAMESPACE in blob.head(4096):
            return "gpx"
        if blob.ext in ("jsonl", "ndjson", "json"):
            return "jsonl"
        return "csv"

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        fmt = self.file_format(blob)
        if fmt == "gpx":
            samples, rejected = self._gpx(blob)
        else:
            rows = self._csv_rows(blob) if fmt == "csv" else self._jsonl_rows(blob)
            samples, rejected = self._timed(blob, rows)
        yield from rejected
        if not samples:
            raise RecordError("no_readings", "no reading with a valid time")
        samples.sort(key=lambda s: (s.series, s.time_ns))
        meta = {"path": blob.key, "format": fmt}
        if self.window is not None:
            yield from sample_windows(self.type, samples, self.window, meta)
        else:
            yield sample_records(self.type, samples, meta)

    # -- formats

    def _csv_rows(self, blob: Blob) -> Iterator[tuple[int, dict[str, Any] | Rejected]]:
        import pyarrow.csv as pacsv

        delimiter = self.delimiter or ("\t" if blob.ext in ("tsv", "tab") else ",")
        with blob.open() as f:
            table = pacsv.read_csv(
                f,
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=pacsv.ParseOptions(delimiter=delimiter),
                # times stay text: pyarrow would read "2024-03-01 10:00" as naive, losing ``timezone``
                convert_options=pacsv.ConvertOptions(
                    null_values=_NULLS, strings_can_be_null=True, timestamp_parsers=[]
                ),
            )
        for i, row in enumerate(_plain_rows(table)):
            yield i + 2, row  # line numbers: after the header

    def _jsonl_rows(self, blob: Blob) -> Iterator[tuple[int, dict[str, Any] | Rejected]]:
        with blob.open() as raw:
            for n, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8", errors="replace"), start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    yield n, self._reject(blob, n, "malformed_json", f"line {n}: {e}")
                    continue
                if not isinstance(obj, dict):
                    yield n, self._reject(blob, n, "malformed_json", f"line {n}: not an object")
                    continue
                yield n, flatten(obj)

    def _reject(self, blob: Blob, line: int, reason: str, detail: str) -> Rejected:
        return Rejected(record_id(self.type, f"{blob.key}#line={line}"), reason, f"{blob.key}:{line}", detail)

    def _timed(
        self, blob: Blob, rows: Iterator[tuple[int, dict[str, Any] | Rejected]]
    ) -> tuple[list[Sample], list[Rejected]]:
        samples: list[Sample] = []
        rejected: list[Rejected] = []
        time_cols: list[str] | None = None
        seen: dict[tuple[str, int], int] = {}
        for line, row in rows:
            if isinstance(row, Rejected):
                rejected.append(row)
                continue
            if time_cols is None:
                time_cols = self._time_columns(row)
            try:
                t = self._time(row, time_cols)
            except (ValueError, TypeError, OverflowError, KeyError) as e:
                rejected.append(self._reject(blob, line, "bad_timestamp", f"line {line}: {e}"))
                continue
            series = blob.key
            if self.series_field is not None:
                series = f"{blob.key}#{self.series_field}={row.get(self.series_field)}"
            fields = {k: v for k, v in row.items() if k not in time_cols}
            rid = "" if self.window is not None else self._sample_id(series, t, seen)
            samples.append(Sample(series, t, fields, rid, {"line": line}))
        return samples, rejected

    def _time_columns(self, row: dict[str, Any]) -> list[str]:
        if isinstance(self.time_field, list):
            return list(self.time_field)
        if self.time_field is not None:
            return [self.time_field]
        lower = {k.lower(): k for k in row}
        for name in TIME_NAMES:
            if name in lower:
                return [lower[name]]
        raise RecordError(
            "no_time_field", f"no column named like a time ({', '.join(TIME_NAMES)}): set time_field"
        )

    def _time(self, row: dict[str, Any], cols: list[str]) -> int:
        if len(cols) == 1 and not isinstance(self.time_field, list):
            if cols[0] not in row:
                raise KeyError(f"no field {cols[0]!r}")
            return to_utc_ns(row[cols[0]], self.time_unit, self.time_format, self.timezone)
        parts = []
        for c in cols:
            v = row.get(c)
            if v is None:
                raise ValueError(f"{c} is missing")
            parts.append(int(float(v)))
        parts += [1, 1][: max(0, 3 - len(parts))]
        from datetime import datetime

        return to_utc_ns(datetime(*parts), tz=self.timezone)  # type: ignore[arg-type]

    def _sample_id(self, series: str, t: int, seen: dict[tuple[str, int], int]) -> str:
        k = seen.get((series, t), 0) + 1
        seen[(series, t)] = k
        return record_id(self.type, f"{series}@{iso(t)}" + (f"~{k}" if k > 1 else ""))

    def _gpx(self, blob: Blob) -> tuple[list[Sample], list[Rejected]]:
        try:
            import gpxpy
        except ImportError as e:
            raise MissingDependencyError(
                "gpxpy (needed by 'sensor_files' for GPX)", "pip install 'genloom[gpx]'"
            ) from e
        with blob.open() as raw:
            gpx = gpxpy.parse(io.TextIOWrapper(raw, encoding="utf-8", errors="replace"))
        samples: list[Sample] = []
        rejected: list[Rejected] = []
        seen: dict[tuple[str, int], int] = {}
        for ti, track in enumerate(gpx.tracks):
            for si, segment in enumerate(track.segments):
                series = f"{blob.key}#track={ti}/segment={si}"
                for pi, p in enumerate(segment.points):
                    where = f"{series}/point={pi}"
                    if p.time is None:
                        rejected.append(
                            Rejected(
                                record_id(self.type, where),
                                "no_timestamp",
                                where,
                                "a track point without <time>",
                            )
                        )
                        continue
                    t = to_utc_ns(p.time, tz=self.timezone)
                    fields: dict[str, Any] = {"lat": p.latitude, "lon": p.longitude, "ele": p.elevation}
                    meta = {"track": track.name, "point": pi} if track.name else {"point": pi}
                    samples.append(Sample(series, t, fields, self._sample_id(series, t, seen), meta))
        return samples, rejected


def _plain_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    """Rows of a CSV table as dicts of plain Python values."""
    names = table.column_names
    for batch in table.to_batches(max_chunksize=8192):
        cols = [c.to_pylist() for c in batch.columns]
        for values in zip(*cols, strict=True):
            yield dict(zip(names, values, strict=True))


__all__ = ["SensorFilesSource"]

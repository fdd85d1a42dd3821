"""Series windows for the stream and sensor sources (mqtt, sensor_files): timestamps to UTC,
resampling to a fixed step, gaps marked, fixed or sliding windows.

A window record holds ``values`` (T steps x C channels, ``list<list<double>>``, null where a step
had no sample and ``fill`` is ``none``), ``mask`` (same shape, true where the value was observed,
false where it is a gap or was filled), ``timestamps`` (the T step times, UTC) and ``series``
(the series' name: a topic, a file, a file's group). This is the form the series models read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from genloom.core.records import Rejected

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|sec|m|min|h|d|w)?\s*$")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "sec": 1_000_000_000,
    "m": 60_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
    "w": 604_800_000_000_000,
}
_YEAR_MONTH = re.compile(r"^\s*(\d{4})-(\d{1,2})\s*$")
_YEAR = re.compile(r"^\s*(\d{4})\s*$")
# a grid longer than this (steps per series) is a wrong step for the data, not a series
MAX_GRID_STEPS = 20_000_000
NS = np.int64

WINDOW_SCHEMA_FIELDS = [
    ("series", pa.string()),
    ("start", pa.timestamp("us", tz="UTC")),
    ("timestamps", pa.list_(pa.timestamp("us", tz="UTC"))),
    ("values", pa.list_(pa.list_(pa.float64()))),
    ("mask", pa.list_(pa.list_(pa.bool_()))),
]


def parse_duration(text: str | float | int) -> int:
    """A duration as nanoseconds: ``500ms``, ``10s``, ``5min``, ``1h``, ``1d``, ``1w`` (a bare
    number is seconds)."""
    if isinstance(text, int | float):
        if text <= 0:
            raise ValueError("a duration must be positive")
        return int(text * 1_000_000_000)
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 500ms, 10s, 5min, 1h, 1d)")
    ns = int(float(m.group(1)) * _UNIT_NS[m.group(2) or "s"])
    if ns <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return ns


class WindowConfig(BaseModel):
    """Series windows: resampled to ``step`` (optional), cut into fixed or sliding windows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(gt=0, le=1_000_000, description="steps (or samples, without ``step``) per window")
    stride: int | None = Field(
        default=None,
        gt=0,
        description="steps between the starts of two windows: ``size`` (the default) cuts fixed, "
        "non-overlapping windows; less than ``size`` slides (``1``: a window at every step)",
    )
    step: str | None = Field(
        default=None,
        description="resample each series to this fixed step (``500ms``, ``10s``, ``5min``, ``1h``, "
        "``1d``; aligned to the Unix epoch): samples in one step are aggregated by ``agg``, a "
        "step without any sample is a gap (mask false). Without it the windows are cut from the "
        "samples as they come (irregular times kept in ``timestamps``)",
    )
    agg: Literal["mean", "last", "first", "min", "max", "sum"] = Field(
        default="mean", description="how the samples that fall in one step are combined"
    )
    fill: Literal["none", "ffill", "linear", "zero"] = Field(
        default="none",
        description="what a gap holds: none (null), ffill (the last observed value), linear "
        "(interpolated between the observed neighbours; held flat at the ends), zero. The mask "
        "stays false on filled steps either way",
    )
    channels: list[str] | None = Field(
        default=None,
        description="the numeric fields that become the window's channels, in this order "
        "(default: every numeric field, in the order first seen)",
    )
    partial: bool = Field(
        default=False, description="keep the shorter last window when the series does not fill it"
    )
    min_observed: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="the fraction of a window's steps that must hold at least one observed value; "
        "sparser windows are quarantined as ``sparse_window``",
    )

    @field_validator("step")
    @classmethod
    def _step_is_a_duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @property
    def stride_steps(self) -> int:
        """The stride in steps (``size`` when not given)."""
        return self.stride or self.size


# -- timestamps


def to_utc_ns(value: Any, unit: str = "s", fmt: str | None = None, tz: str = "UTC") -> int:
    """One timestamp as nanoseconds since the epoch, UTC.

    Strings are ISO 8601 (``2024-03-01T10:00:00Z``, ``2024-03-01 10:00``, ``2024-03``, ``2024``)
    or ``fmt`` (strptime); numbers are epoch times in ``unit``; a time without an offset is in
    ``tz``. Raises ValueError for anything else."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise ValueError("no timestamp")
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a timestamp")
    if isinstance(value, int | float | np.integer | np.floating):
        return int(round(float(value) * _UNIT_NS[unit])) if unit != "ns" else int(value)
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        if fmt is not None:
            dt = datetime.strptime(text, fmt)
        elif m := _YEAR_MONTH.match(text):
            dt = datetime(int(m.group(1)), int(m.group(2)), 1)
        elif m := _YEAR.match(text):
            dt = datetime(int(m.group(1)), 1, 1)
        else:
            try:
                dt = datetime.fromisoformat(text)
            except ValueError:
                number = float(text)  # an epoch time written as text; ValueError when it is not
                return to_utc_ns(number, unit)
    else:
        raise ValueError(f"{type(value).__name__} is not a timestamp")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_zone(tz))
    delta = dt.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _zone(tz: str) -> Any:
    if tz.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {tz!r}") from e


def check_timezone(tz: str) -> None:
    """Raise ValueError when ``tz`` is not a known IANA time zone."""
    _zone(tz)


def ns_to_datetime(ns: int) -> datetime:
    """Nanoseconds since the epoch as an aware UTC datetime (microseconds kept)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def iso(ns: int) -> str:
    """Nanoseconds since the epoch as ISO 8601 UTC text (``2024-03-01T10:00:00Z``)."""
    return ns_to_datetime(ns).isoformat().replace("+00:00", "Z")


def as_number(value: Any) -> float | None:
    """A channel value as a float: numbers, numeric text, booleans (1/0); None for missing or
    non-numeric values."""
    kind = type(value)
    if kind is float or kind is int:
        return float(value)
    if value is None or kind is bool:
        return None if value is None else float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    if isinstance(value, int | float):
        return float(value)
    return None


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted keys (``{"env": {"temp": 1}}`` -> ``{"env.temp": 1}``); lists stay."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{name}."))
        else:
            out[name] = v
    return out


def numeric_fields(rows: Sequence[dict[str, Any]], skip: set[str]) -> list[str]:
    """The fields holding a number (numeric text counts, booleans do not) in at least one row,
    in the order the fields first appear."""
    order: dict[str, None] = {}
    numeric: set[str] = set()
    for row in rows:
        for k, v in row.items():
            if k in skip:
                continue
            order.setdefault(k, None)
            if k not in numeric and v is not None and not isinstance(v, bool) and as_number(v) is not None:
                numeric.add(k)
    return [k for k in order if k in numeric]


# -- resampling and windows


def resample(times: np.ndarray, values: np.ndarray, step_ns: int, agg: str) -> tuple[np.ndarray, np.ndarray]:
    """Samples (``times`` ns sorted ascending, ``values`` (N, C) with NaN for missing) onto the
    epoch-aligned grid of ``step_ns``: (grid times (T,), values (T, C) with NaN for gaps)."""
    buckets = times // step_ns
    first, last = int(buckets[0]), int(buckets[-1])
    n = last - first + 1
    if n > MAX_GRID_STEPS:
        raise ValueError(
            f"resampling to this step makes {n} steps (more than {MAX_GRID_STEPS}): a larger step"
        )
    idx = (buckets - first).astype(np.int64)
    channels = values.shape[1]
    out = np.full((n, channels), np.nan)
    order = np.arange(len(idx))
    for c in range(channels):
        x = values[:, c]
        ok = ~np.isnan(x)
        ii, xx = idx[ok], x[ok]
        if not len(ii):
            continue
        col = out[:, c]
        if agg in ("mean", "sum"):
            total = np.bincount(ii, weights=xx, minlength=n)
            count = np.bincount(ii, minlength=n)
            has = count > 0
            col[has] = total[has] / count[has] if agg == "mean" else total[has]
        elif agg in ("min", "max"):
            acc = np.full(n, np.inf if agg == "min" else -np.inf)
            (np.minimum if agg == "min" else np.maximum).at(acc, ii, xx)
            has = np.isfinite(acc)
            col[has] = acc[has]
        else:  # first / last sample of each step (times are sorted)
            pos = order[ok]
            pick = np.full(n, -1 if agg == "last" else len(idx), dtype=np.int64)
            (np.maximum if agg == "last" else np.minimum).at(pick, ii, pos)
            has = (pick >= 0) & (pick < len(idx))
            col[has] = x[pick[has]]
    grid = (np.arange(n, dtype=np.int64) + first) * step_ns
    return grid, out


def fill_gaps(values: np.ndarray, how: str) -> np.ndarray:
    """``values`` (T, C) with NaN gaps filled per channel (``none`` leaves them)."""
    if how == "none":
        return values
    out = values.copy()
    for c in range(out.shape[1]):
        col = out[:, c]
        gap = np.isnan(col)
        if not gap.any() or gap.all():
            continue
        if how == "zero":
            col[gap] = 0.0
        elif how == "ffill":
            pos = np.where(~gap, np.arange(len(col)), 0)
            np.maximum.accumulate(pos, out=pos)
            filled = col[pos]
            # before the first observation there is nothing to carry: take the first one
            first = int(np.argmax(~gap))
            filled[:first] = col[first]
            out[:, c] = filled
        else:  # linear; np.interp holds the end values flat
            x = np.arange(len(col))
            out[:, c] = np.interp(x, x[~gap], col[~gap])
    return out


def window_starts(n: int, cfg: WindowConfig) -> list[tuple[int, int]]:
    """(start, end) step ranges of the windows over a series of ``n`` steps."""
    size, stride = cfg.size, cfg.stride_steps
    spans = [(s, s + size) for s in range(0, n - size + 1, stride)] if n >= size else []
    nxt = spans[-1][0] + stride if spans else 0
    if cfg.partial and nxt < n and (not spans or spans[-1][1] < n):
        spans.append((nxt, n))
    return spans


def series_windows(
    source: str,
    series: str,
    times: np.ndarray,
    values: np.ndarray,
    channels: list[str],
    cfg: WindowConfig,
    meta: dict[str, Any] | None = None,
) -> Iterator[pa.Table | Rejected]:
    """Window records of one series (``times`` ns UTC, any order; ``values`` (N, C), NaN for a
    missing value), as one Arrow table, and a Rejected per window sparser than ``min_observed``.

    Ids are ``<source>:<series>#<start>`` (ISO 8601 UTC start time), so re-reading the same data
    gives the same ids."""
    if not len(times):
        return
    order = np.argsort(times, kind="stable")
    times, values = times[order], values[order]
    if cfg.step is not None:
        step_ns = parse_duration(cfg.step)
        grid, grid_values = resample(times, values, step_ns, cfg.agg)
    else:
        step_ns = None
        grid, grid_values = times, values
    observed = ~np.isnan(grid_values)
    filled = fill_gaps(grid_values, cfg.fill)
    rows: dict[str, list[Any]] = {k: [] for k in ("id", "text", "meta", "start")}
    spans: list[tuple[int, int]] = []
    base_meta = {**(meta or {}), "series": series, "channels": channels, "step": cfg.step}
    seen_steps = observed.any(axis=1)
    for k, (a, b) in enumerate(window_starts(len(grid), cfg)):
        steps_seen = int(seen_steps[a:b].sum())
        start = int(grid[a])
        wid = f"{source}:{series}#{iso(start)}"
        if steps_seen < cfg.min_observed * (b - a):
            yield Rejected(
                wid,
                "sparse_window",
                series,
                f"{steps_seen} of {b - a} steps observed (min_observed {cfg.min_observed})",
            )
            continue
        gaps = int((~observed[a:b]).sum())
        end = iso(int(grid[b - 1]))
        spans.append((a, b))
        rows["id"].append(wid)
        rows["text"].append(
            f"{series}: {b - a} steps x {len(channels)} channels ({', '.join(channels)}) from "
            f"{iso(start)} to {end}, {gaps} missing values"
        )
        window_meta = {
            "window": k,
            "start": iso(start),
            "end": end,
            "steps": b - a,
            "missing": gaps,
            "observed_steps": steps_seen,
            "step_ns": step_ns,
        }
        rows["meta"].append(json.dumps({**base_meta, **window_meta}, sort_keys=True, default=str))
        rows["start"].append(start)
    if spans:
        yield _windows_arrow(source, series, rows, spans, grid, filled, observed)


def _windows_arrow(
    source: str,
    series: str,
    rows: dict[str, list[Any]],
    spans: list[tuple[int, int]],
    grid: np.ndarray,
    filled: np.ndarray,
    observed: np.ndarray,
) -> pa.Table:
    """The window table, built from NumPy slices (no Python value per cell)."""
    n, channels = len(spans), filled.shape[1]
    lengths = np.array([b - a for a, b in spans], dtype=np.int32)
    steps = np.concatenate([np.arange(a, b) for a, b in spans])  # (sum T,)
    outer = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    inner = pa.array(np.arange(0, len(steps) * channels + 1, channels, dtype=np.int32))
    flat = filled[steps].ravel()  # (sum T * C,)
    values = pa.array(flat, pa.float64(), mask=np.isnan(flat))
    mask = pa.array(observed[steps].ravel(), pa.bool_())
    times = pa.array(grid[steps] // 1000, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    cols = {
        "id": pa.array(rows["id"], pa.string()),
        "text": pa.array(rows["text"], pa.string()),
        "source": pa.array([source] * n, pa.string()),
        "meta": pa.array(rows["meta"], pa.string()),
        "series": pa.array([series] * n, pa.string()),
        "start": pa.array(np.array(rows["start"], dtype=np.int64) // 1000, pa.int64()).cast(
            pa.timestamp("us", tz="UTC")
        ),
        "timestamps": pa.ListArray.from_arrays(outer, times),
        "values": pa.ListArray.from_arrays(outer, pa.ListArray.from_arrays(inner, values)),
        "mask": pa.ListArray.from_arrays(outer, pa.ListArray.from_arrays(inner, mask)),
    }
    fields = [(c, pa.string()) for c in ("id", "text", "source", "meta")] + WINDOW_SCHEMA_FIELDS
    return pa.Table.from_pydict(cols, schema=pa.schema(fields))


@dataclass
class Sample:
    """One timed reading: a message's or a row's fields, its series and its time (ns, UTC)."""

    series: str
    time_ns: int
    fields: dict[str, Any]
    id: str
    meta: dict[str, Any] = dc_field(default_factory=dict)


def sample_windows(
    source: str, samples: Sequence[Sample], cfg: WindowConfig, meta: dict[str, Any] | None = None
) -> Iterator[pa.Table | Rejected]:
    """Windows of every series in ``samples`` (grouped by ``series``, in first-seen order). The
    channels are ``cfg.channels`` or the numeric fields of all samples, so every window of a
    source has the same channels; a channel a sample lacks (or holds text in) is missing there."""
    if not samples:
        return
    channels = list(cfg.channels) if cfg.channels else numeric_fields([s.fields for s in samples], set())
    if not channels:
        yield Rejected(
            f"{source}:{samples[0].series}",
            "no_numeric_fields",
            samples[0].series,
            f"no field holds numbers; fields: {sorted(samples[0].fields)[:20]}",
        )
        return
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.series, []).append(s)
    for series, group in groups.items():
        times = np.array([s.time_ns for s in group], dtype=np.int64)
        values = np.empty((len(group), len(channels)), dtype=np.float64)
        for j, c in enumerate(channels):
            values[:, j] = _channel([s.fields.get(c) for s in group])
        yield from series_windows(source, series, times, values, channels, cfg, meta)


def _channel(cells: list[Any]) -> np.ndarray:
    """One channel's values as floats, NaN where missing or not a number."""
    try:  # numbers, numeric text, booleans and None (NaN) in one conversion
        return np.array(cells, dtype=np.float64)
    except (ValueError, TypeError):
        return np.array([_nan(as_number(v)) for v in cells], dtype=np.float64)


def _nan(v: float | None) -> float:
    return math.nan if v is None else v


def sample_records(source: str, samples: Sequence[Sample], meta: dict[str, Any] | None = None) -> pa.Table:
    """One record per sample, in the given order: ``id``, ``text`` (``field: value; ...``),
    ``source``, ``meta``, ``series``, ``ts`` (UTC) and the fields as typed columns (integers,
    floats, booleans, text; nested values as JSON text). A field named like a fixed column
    becomes ``col_<name>``."""
    names: list[str] = []
    seen: set[str] = set()
    for s in samples:
        for k in s.fields:
            if k not in seen:
                seen.add(k)
                names.append(k)
    base = meta or {}
    cols: dict[str, Any] = {
        "id": pa.array([s.id for s in samples], pa.string()),
        "text": pa.array(
            ["; ".join(f"{k}: {_show(v)}" for k, v in s.fields.items() if v is not None) for s in samples],
            pa.string(),
        ),
        "source": pa.array([source] * len(samples), pa.string()),
        "meta": pa.array(
            [
                json.dumps({**base, **s.meta, "series": s.series}, sort_keys=True, default=str)
                for s in samples
            ],
            pa.string(),
        ),
        "series": pa.array([s.series for s in samples], pa.string()),
        "ts": pa.array([s.time_ns // 1000 for s in samples], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    }
    for name in names:
        out = f"col_{name}" if name in cols or name in ("id", "text", "source", "meta") else name
        cols[out] = typed_column([s.fields.get(name) for s in samples])
    return pa.table(cols)


def _show(v: Any) -> str:
    kind = type(v)
    if kind is str:
        return v  # type: ignore[no-any-return]
    if kind is int or kind is float:
        return repr(v)  # as JSON writes them, without its cost per value
    return json.dumps(v, ensure_ascii=False, default=str)


def typed_column(values: list[Any]) -> pa.Array:
    """Values of one field as one Arrow type: bool, int64, float64 (ints and floats mixed),
    string, timestamp (UTC; a naive datetime is taken as UTC); nested values (and anything
    mixed with them) as JSON text."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.nulls(len(values), pa.string())
    if kinds == {bool}:
        return pa.array(values, pa.bool_())
    if kinds == {int}:
        try:
            return pa.array(values, pa.int64())
        except OverflowError:
            return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if kinds <= {int, float}:
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if kinds == {str}:
        return pa.array(values, pa.string())
    if kinds == {datetime}:
        return pa.array(
            [None if v is None else v if v.tzinfo else v.replace(tzinfo=UTC) for v in values],
            pa.timestamp("us", tz="UTC"),
        )
    return pa.array(
        [None if v is None else v if isinstance(v, str) else json.dumps(v, default=str) for v in values],
        pa.string(),
    )


__all__ = [
    "Sample",
    "sample_records",
    "sample_windows",
    "typed_column",
    "WindowConfig",
    "as_number",
    "check_timezone",
    "fill_gaps",
    "flatten",
    "iso",
    "ns_to_datetime",
    "numeric_fields",
    "parse_duration",
    "resample",
    "series_windows",
    "to_utc_ns",
    "window_starts",
]

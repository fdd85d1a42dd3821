"""Series data for the series families (``series_gan``, ``series_vae``): the configs they share
and the windows they train on, torch-free (validating a pipeline never imports torch).

Records reach ``prepare`` in one of two forms:

- **window records** (``values``: T x C lists, ``mask`` optional, ``start``/``timestamps``,
  ``series``), as ``sensor_files`` or ``mqtt`` write them with a ``window`` option;
- **readings**, one record per timed sample (a time column such as ``sensor_files``' ``ts``,
  channel columns, a ``series`` column, static attributes such as ``device`` or ``site``): each
  series is resampled to ``window.step`` (samples in a step aggregated by ``window.agg``, a step
  without a sample is a gap), cut into fixed (``stride`` = ``size``) or sliding windows with
  ``sources/_series.py``, the same code the sources use.

Either way a window becomes ``values`` (T, C) float32 scaled per channel to [0, 1] by a min-max
scaler fitted on the observed values of the training windows only (``series.json``), ``mask``
(T, C) true where the value was observed (a gap, or a filled one, is false; a window shorter
than ``window.size`` is padded with false), its length, and its conditions: for each name in
``conditions``, the attribute's level in that window (a column of a window record or a key of
its ``meta``; for readings the most frequent value over the window's readings, which for a
static attribute such as a device type is the series' own value).

Splits go by time, never by a record hash: within each series the windows are ordered by their
start; the last ``val_fraction`` of them (and, when the pipeline's split has a test part, the
last ``test_fraction`` after those) are held out, and a window that would overlap the next part
(sliding windows straddling the cut) is left out of the earlier one, counted as
``dropped.overlaps_<split>``. So every validation window starts after every training window of
its series ends.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genloom.sources._series import WindowConfig

GENLOOM_COLUMNS = ("id", "text", "source", "meta")
WINDOW_COLUMNS = ("series", "start", "timestamps", "values", "mask")
TIME_NAMES = ("ts", "timestamp", "time", "datetime", "date_time", "date")
MISSING_LEVEL = "<missing>"
#: the profile's percentiles of values and lengths, and the condition levels it counts (most frequent)
PROFILE_QUANTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)
PROFILE_LEVELS = 100
#: the profile's key for the levels past ``PROFILE_LEVELS``
OTHER_LEVEL = "<other>"


# ----------------------------------------------------------------------------------------------
# configs (``train.model``)


class SeriesConfig(BaseModel):
    """What the two series families share: the windows, the conditions, the time split, the schedule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trains_tokenizer: ClassVar[bool] = False
    muon: ClassVar[bool] = False
    chat: ClassVar[bool] = False
    window: WindowConfig = Field(
        default_factory=lambda: WindowConfig(size=24, fill="linear"),
        description=(
            "How readings become windows (size, stride, step, agg, fill, channels, partial,"
            " min_observed, as the sources' window option); window records are taken as they are"
            " (only channels applies)."
        ),
    )
    time_column: str | None = Field(
        None, description="Readings: the time column; None: the first of ts, timestamp, time, datetime, date."
    )
    series_column: str | None = Field(
        "series", description="Readings: the column naming the series (a sensor); None or absent: one series."
    )
    conditions: list[str] = Field(
        default_factory=list,
        description="Static attributes (device type, site...) the model is conditioned on: columns or meta keys.",
    )
    calendar: list[Literal["month", "weekday", "hour"]] = Field(
        default_factory=list,
        description=(
            "Conditions derived from each window's start time (as read: UTC, a naive time taken as"
            " it is): month (1-12), weekday (mon-sun), hour (0-23); asked like any other condition"
            " (--where month=1)."
        ),
    )
    max_levels: int = Field(
        50, ge=1, description="Most frequent levels kept per condition; the rest are grouped."
    )
    val_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="The last fraction of each series' windows held out for validation (by time).",
    )
    test_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="With a test split (split.test_fraction > 0): the last fraction of each series' windows, after validation.",
    )
    epochs: int = Field(
        200, ge=1, description="Passes over the training windows (train.max_steps overrides)."
    )
    batch_size: int = Field(64, ge=2, description="Windows per step (train.batch_size overrides).")
    hidden_dim: int = Field(32, ge=2, description="Width of the recurrent layers.")
    num_layers: int = Field(2, ge=1, description="Stacked GRU layers of each network.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    eval_windows: int = Field(
        1000,
        ge=8,
        description="Validation windows the evaluation compares with as many synthetic ones (at most).",
    )


class SeriesVAEConfig(SeriesConfig):
    """A conditional recurrent sequence VAE (GRU encoder to a Gaussian posterior, GRU decoder), a
    fast, stable baseline in the spirit of TimeVAE (Desai et al. 2021) on recurrent layers."""

    type: Literal["series_vae"] = "series_vae"
    latent_dim: int = Field(16, ge=1, description="Latent dimension of a window.")
    kl_weight: float = Field(0.5, ge=0, description="Weight of the KL term against the reconstruction term.")
    step_noise: bool = Field(
        True,
        description=(
            "Sample each step from the decoder's Gaussian around an autoregressive mean (true), or"
            " return the decoder's mean (false, smoother)."
        ),
    )
    temperature: float = Field(
        1.0,
        ge=0,
        description=(
            "Sampling: the scale of each step's draw around its mean, in the decoder's standard"
            " deviations (1: the learned Gaussian; below 1: smoother windows; 0: the means)."
        ),
    )


class SeriesGANConfig(SeriesConfig):
    """TimeGAN (Yoon, Jarrett and van der Schaar, NeurIPS 2019): embedding and recovery networks,
    a generator and a discriminator in the latent space, a supervisor's next-step loss."""

    type: Literal["series_gan"] = "series_gan"
    hidden_dim: int = Field(24, ge=2, description="Width of the recurrent layers and of the latent space.")
    num_layers: int = Field(3, ge=1, description="Stacked GRU layers of each network (the paper: 3).")
    batch_size: int = Field(128, ge=2, description="Windows per step (train.batch_size overrides).")
    epochs: int = Field(
        600, ge=1, description="Passes over the training windows (train.max_steps overrides)."
    )
    embedding_fraction: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="Share of the steps that train the embedder and recovery alone (phase 1).",
    )
    supervised_fraction: float = Field(
        0.15, ge=0, lt=1, description="Share of the steps that train the supervisor alone (phase 2)."
    )
    gamma: float = Field(1.0, ge=0, description="Weight of the adversarial loss on the unsupervised latents.")
    supervised_weight: float = Field(
        100.0, ge=0, description="Weight of the supervised loss in the generator's (the paper: 100)."
    )
    moment_weight: float = Field(
        100.0, ge=0, description="Weight of the mean/std matching loss (the paper: 100)."
    )
    discriminator_threshold: float = Field(
        0.15,
        ge=0,
        description="The discriminator is updated only while its loss is above this (the paper: 0.15).",
    )


# ----------------------------------------------------------------------------------------------
# windows


@dataclass
class Windows:
    """Windows in raw units: values (N, T, C) float64 with NaN where nothing is known, mask (N, T, C)
    observed, lengths (N,), start/end times (N,) ns, series names, ids, condition levels."""

    values: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    start: np.ndarray
    end: np.ndarray
    series: list[str]
    ids: list[str]
    conditions: dict[str, list[str]]
    channels: list[str]
    step_ns: int | None = None
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx: np.ndarray) -> Windows:
        """The windows at ``idx``, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        return Windows(
            self.values[idx],
            self.mask[idx],
            self.lengths[idx],
            self.start[idx],
            self.end[idx],
            [self.series[i] for i in idx],
            [self.ids[i] for i in idx],
            {k: [v[i] for i in idx] for k, v in self.conditions.items()},
            self.channels,
            self.step_ns,
        )


def _level(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING_LEVEL
    return str(v)


def _meta(text: Any) -> dict[str, Any]:
    if not text:
        return {}
    try:
        out = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _to_ns(col: Any) -> tuple[np.ndarray, np.ndarray]:
    """A timestamp, date, numeric (epoch seconds) or text column as (int64 ns since the epoch,
    UTC; whether each parsed)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from genloom.sources._series import to_utc_ns

    t = col.type
    if pa.types.is_date(t):
        col, t = pc.cast(col, pa.timestamp("ns")), pa.timestamp("ns")
    if pa.types.is_timestamp(t):
        arr = pc.cast(pc.cast(col, pa.timestamp("ns", tz=t.tz)), pa.int64())
        ok = np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), bool)
        ns = np.asarray(pc.fill_null(arr, 0).to_numpy(zero_copy_only=False), np.int64)
        return ns, ok
    ns = np.zeros(len(col), np.int64)
    ok = np.zeros(len(col), bool)
    for i, v in enumerate(col.to_pylist()):
        with contextlib.suppress(ValueError, TypeError, OverflowError):  # stays not ok
            ns[i], ok[i] = to_utc_ns(v), True
    return ns, ok


def collect_windows(
    batches: Iterator[Any], columns: list[str], cfg: SeriesConfig, source: str = "series"
) -> Windows:
    """Every window of the records (window records as they are; readings windowed per series),
    with the ``calendar`` conditions of their start times."""
    if cfg.calendar:
        from genloom.core.errors import ConfigError

        clash = [c for c in cfg.calendar if c in cfg.conditions]
        if clash:
            raise ConfigError(
                f"{', '.join(clash)} is both a condition and a calendar condition",
                path="train.model.calendar",
                hint="drop it from train.model.conditions (the calendar derives it from the window's start)",
            )
        if "values" in columns and "start" not in columns and "timestamps" not in columns:
            raise ConfigError(
                "calendar conditions need each window's start time: the window records have neither"
                " a start nor a timestamps column",
                path="train.model.calendar",
            )
    if "values" in columns:
        w = _from_window_records(batches, cfg)
    else:
        w = _from_readings(batches, columns, cfg, source)
    w.conditions.update(calendar_levels(w.start, cfg.calendar))
    return w


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NS = 86_400_000_000_000


def calendar_levels(start_ns: np.ndarray, fields: Sequence[str]) -> dict[str, list[str]]:
    """The levels of the calendar ``fields`` of windows starting at ``start_ns`` (ns since the
    epoch, UTC): ``month`` "1".."12", ``weekday`` "mon".."sun", ``hour`` "0".."23"."""
    ns = np.round(np.asarray(start_ns, np.float64)).astype(np.int64)
    out: dict[str, list[str]] = {}
    for f in fields:
        if f == "month":
            months = ns.astype("datetime64[ns]").astype("datetime64[M]").astype(np.int64) % 12 + 1
            out[f] = [str(int(m)) for m in months]
        elif f == "weekday":
            days = np.floor_divide(ns, DAY_NS)  # 1970-01-01 was a Thursday
            out[f] = [WEEKDAYS[int(d)] for d in (days + 3) % 7]
        elif f == "hour":
            out[f] = [str(int(h)) for h in np.floor_divide(np.mod(ns, DAY_NS), DAY_NS // 24)]
        else:  # the config's Literal keeps this out
            raise ValueError(f"unknown calendar field {f}")
    return out


def _from_window_records(batches: Iterator[Any], cfg: SeriesConfig) -> Windows:
    vals: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    starts: list[float] = []
    ends: list[float] = []
    series: list[str] = []
    ids: list[str] = []
    conds: dict[str, list[str]] = {c: [] for c in cfg.conditions}
    channels: list[str] | None = None
    step_ns: int | None = None
    for batch in batches:
        names = batch.column_names
        rows_v = batch.column("values").to_pylist()
        rows_m = batch.column("mask").to_pylist() if "mask" in names else [None] * batch.num_rows
        metas = (
            [_meta(m) for m in batch.column("meta").to_pylist()] if "meta" in names else [{}] * batch.num_rows
        )
        times = batch.column("timestamps").to_pylist() if "timestamps" in names else None
        start_col = _to_ns(batch.column("start")) if "start" in names else None
        start_ns = np.where(start_col[1], start_col[0], np.nan) if start_col is not None else None
        for i, v in enumerate(rows_v):
            if v is None or not len(v):
                continue
            a = np.array(
                [[np.nan if x is None else x for x in (s if isinstance(s, list) else [s])] for s in v],
                np.float64,
            )
            m = rows_m[i]
            mk = (
                ~np.isnan(a)
                if m is None
                else np.array([s if isinstance(s, list) else [s] for s in m], bool) & ~np.isnan(a)
            )
            meta = metas[i]
            if channels is None:
                channels = list(meta.get("channels") or [f"c{j}" for j in range(a.shape[1])])
                step_ns = meta.get("step_ns")
            if a.shape[1] != len(channels):
                continue
            vals.append(a)
            masks.append(mk)
            ts = times[i] if times is not None else None
            s0 = float(start_ns[i]) if start_ns is not None else np.nan
            if ts:
                t_ns = [t.timestamp() * 1e9 for t in ts if t is not None]
                s0 = t_ns[0] if math.isnan(s0) else s0
                ends.append(t_ns[-1])
            else:
                ends.append(s0 + (len(a) - 1) * (step_ns or 0) if not math.isnan(s0) else float(len(starts)))
            starts.append(s0 if not math.isnan(s0) else float(len(starts)))
            series.append(
                str(batch.column("series")[i].as_py() if "series" in names else meta.get("series", "series"))
            )
            ids.append(str(batch.column("id")[i].as_py()) if "id" in names else f"window-{len(ids)}")
            for c in cfg.conditions:
                conds[c].append(_level(batch.column(c)[i].as_py() if c in names else meta.get(c)))
    return _stack(vals, masks, starts, ends, series, ids, conds, channels or [], step_ns, cfg)


def _stack(
    vals: list[np.ndarray],
    masks: list[np.ndarray],
    starts: list[float],
    ends: list[float],
    series: list[str],
    ids: list[str],
    conds: dict[str, list[str]],
    channels: list[str],
    step_ns: int | None,
    cfg: SeriesConfig,
    dropped: dict[str, int] | None = None,
) -> Windows:
    """Windows padded to the longest (mask false past a window's length), channels as configured."""
    keep = list(range(len(channels)))
    if cfg.window.channels and channels:
        missing = [c for c in cfg.window.channels if c not in channels]
        if missing:
            from genloom.core.errors import ConfigError

            raise ConfigError(
                f"no channel {', '.join(missing)} in the windows; channels: {', '.join(channels)}",
                path="train.model.window.channels",
            )
        keep = [channels.index(c) for c in cfg.window.channels]
        channels = list(cfg.window.channels)
    n = len(vals)
    t_max = max((len(v) for v in vals), default=0)
    values = np.full((n, t_max, len(channels)), np.nan)
    mask = np.zeros((n, t_max, len(channels)), bool)
    lengths = np.zeros(n, np.int32)
    for i, (v, m) in enumerate(zip(vals, masks, strict=True)):
        values[i, : len(v)] = v[:, keep]
        mask[i, : len(v)] = m[:, keep]
        lengths[i] = len(v)
    return Windows(
        values,
        mask,
        lengths,
        np.asarray(starts, np.float64),
        np.asarray(ends, np.float64),
        series,
        ids,
        conds,
        channels,
        step_ns,
        dict(dropped or {}),
    )


def _from_readings(batches: Iterator[Any], columns: list[str], cfg: SeriesConfig, source: str) -> Windows:
    import pyarrow as pa

    from genloom.core.errors import ConfigError
    from genloom.sources._series import parse_duration, series_windows

    time_col = cfg.time_column or next((c for c in TIME_NAMES if c in columns), None)
    if time_col is None or time_col not in columns:
        raise ConfigError(
            f"the records hold neither series windows (a values column) nor a time column ({', '.join(TIME_NAMES)})",
            path="train.model.time_column",
            hint=f"name the time column; columns: {', '.join(columns)}",
        )
    series_col = cfg.series_column if cfg.series_column in columns else None
    skip = {*GENLOOM_COLUMNS, time_col, *(cfg.conditions), *([series_col] if series_col else [])}
    tables = list(batches)
    if not tables:
        return _stack([], [], [], [], [], [], {c: [] for c in cfg.conditions}, [], None, cfg)
    table = pa.concat_tables(tables, promote_options="default")
    if cfg.window.channels:
        channels = list(cfg.window.channels)
        missing = [c for c in channels if c not in table.column_names]
        if missing:
            raise ConfigError(
                f"no channel {', '.join(missing)} in the records; columns: {', '.join(table.column_names)}",
                path="train.model.window.channels",
            )
    else:
        channels = [
            f.name
            for f in table.schema
            if f.name not in skip and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
        ]
    if not channels:
        raise ConfigError("the readings hold no numeric column to model", path="train.model.window.channels")
    times, parsed = _to_ns(table.column(time_col))
    dropped: dict[str, int] = {}
    bad = ~parsed
    if bad.any():
        dropped["bad_timestamp"] = int(bad.sum())
    values = np.stack(
        [
            np.asarray(table.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False), np.float64)
            for c in channels
        ],
        axis=1,
    )
    names = table.column(series_col).to_pylist() if series_col else ["series"] * table.num_rows
    cond_values = {
        c: (table.column(c).to_pylist() if c in table.column_names else None) for c in cfg.conditions
    }
    missing_conds = [c for c, v in cond_values.items() if v is None]
    if missing_conds:
        raise ConfigError(
            f"no column {', '.join(missing_conds)} in the readings; columns: {', '.join(table.column_names)}",
            path="train.model.conditions",
        )
    wcfg = cfg.window
    step_ns = parse_duration(wcfg.step) if wcfg.step else None
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(names):
        if not bad[i]:
            groups.setdefault(str(s), []).append(i)
    vals: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    starts: list[float] = []
    ends: list[float] = []
    series: list[str] = []
    ids: list[str] = []
    conds: dict[str, list[str]] = {c: [] for c in cfg.conditions}
    for name, rows in groups.items():
        idx = np.asarray(rows, dtype=np.int64)
        t = times[idx]
        order = np.argsort(t, kind="stable")
        idx, t = idx[order], t[order]
        for out in series_windows(source, name, t, values[idx], channels, wcfg):
            if not isinstance(out, pa.Table):
                dropped[f"{out.reason}"] = dropped.get(out.reason, 0) + 1
                continue
            for wid, ts, v, m in zip(
                out.column("id").to_pylist(),
                out.column("timestamps").to_pylist(),
                out.column("values").to_pylist(),
                out.column("mask").to_pylist(),
                strict=True,
            ):
                t_ns = np.array([x.timestamp() * 1e9 for x in ts])
                vals.append(np.array([[np.nan if x is None else x for x in s] for s in v], np.float64))
                masks.append(np.array(m, bool))
                starts.append(float(t_ns[0]))
                ends.append(float(t_ns[-1]))
                series.append(name)
                ids.append(wid)
                # the readings inside the window: [start, last step + one step)
                span_end = t_ns[-1] + (step_ns or 1)
                a, b = np.searchsorted(t, [t_ns[0], span_end], side="left")
                for c in cfg.conditions:
                    cells = [cond_values[c][j] for j in idx[a:b]] or [None]  # type: ignore[index]
                    levels = [_level(x) for x in cells]
                    seen = [x for x in levels if x != MISSING_LEVEL] or levels
                    conds[c].append(max(set(seen), key=lambda x, s=seen: (s.count(x), x)))
    return _stack(vals, masks, starts, ends, series, ids, conds, channels, step_ns, cfg, dropped)


# ----------------------------------------------------------------------------------------------
# splits by time


def split_by_time(
    w: Windows, val_fraction: float, test_fraction: float | None
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Window indices of each split, per series in time order: the last ``val_fraction`` (and
    ``test_fraction`` after them) of each series' windows are held out; a window that overlaps the
    next part is left out (counted). Each part is in time order."""
    parts: dict[str, list[int]] = {"train": [], "val": [], **({"test": []} if test_fraction else {})}
    dropped: dict[str, int] = {}
    by_series: dict[str, list[int]] = {}
    for i, s in enumerate(w.series):
        by_series.setdefault(s, []).append(i)
    for rows in by_series.values():
        order = sorted(rows, key=lambda i: (w.start[i], w.ids[i]))
        n = len(order)
        n_test = int(round(n * test_fraction)) if test_fraction else 0
        n_val = int(round(n * val_fraction))
        if n >= 3:
            n_val = max(1, n_val)
            n_test = max(1, n_test) if test_fraction else 0
        n_train = n - n_val - n_test
        if n_train < 1:
            parts["train"] += order
            continue
        chunks = {"train": order[:n_train], "val": order[n_train : n_train + n_val]}
        if test_fraction:
            chunks["test"] = order[n_train + n_val :]
        names = list(chunks)
        for k, name in enumerate(names):
            later = [j for nxt in names[k + 1 :] for j in chunks[nxt]]
            cut = min((w.start[j] for j in later), default=math.inf)
            kept = [i for i in chunks[name] if w.end[i] < cut]
            if len(kept) < len(chunks[name]):
                dropped[f"overlaps_{names[k + 1]}"] = (
                    dropped.get(f"overlaps_{names[k + 1]}", 0) + len(chunks[name]) - len(kept)
                )
            parts[name] += kept
    out = {
        k: np.asarray(sorted(v, key=lambda i: (w.start[i], w.series[i])), np.int64) for k, v in parts.items()
    }
    return out, dropped


# ----------------------------------------------------------------------------------------------
# scaling and conditions


@dataclass
class SeriesLayout:
    """What a trained model needs to turn its [0, 1] output back into windows (``series.json``):
    the channels and their min-max scaler, the window size and step, the condition levels with
    their training frequencies (joint: the combinations seen), the training windows' lengths."""

    channels: list[str]
    low: list[float]
    high: list[float]
    size: int
    step_ns: int | None
    conditions: dict[str, list[str]]
    combos: list[list[int]]
    combo_counts: list[int]
    lengths: list[int]
    length_counts: list[int]

    @property
    def cond_dim(self) -> int:
        """Width of the one-hot condition vector."""
        return sum(len(v) for v in self.conditions.values())

    @classmethod
    def fit(cls, w: Windows, max_levels: int) -> SeriesLayout:
        """Scaler, levels and length distribution of the training windows ``w``."""
        low, high = [], []
        for c in range(len(w.channels)):
            x = w.values[:, :, c][w.mask[:, :, c]]
            x = x[np.isfinite(x)]
            lo, hi = (float(x.min()), float(x.max())) if len(x) else (0.0, 1.0)
            low.append(lo)
            high.append(hi if hi > lo else lo + 1.0)
        levels: dict[str, list[str]] = {}
        for name, vals in w.conditions.items():
            counts: dict[str, int] = {}
            for v in vals:
                counts[v] = counts.get(v, 0) + 1
            levels[name] = [k for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:max_levels]
        lay = cls(list(w.channels), low, high, int(w.values.shape[1]), w.step_ns, levels, [], [], [], [])
        codes = lay.encode_levels(w.conditions, len(w))
        combos, counts_c = np.unique(codes, axis=0, return_counts=True) if len(w) else (np.zeros((0, 0)), [])
        lay.combos, lay.combo_counts = combos.astype(int).tolist(), [int(c) for c in counts_c]
        ln, lc = np.unique(w.lengths, return_counts=True)
        lay.lengths, lay.length_counts = [int(x) for x in ln], [int(x) for x in lc]
        return lay

    def encode_levels(self, conditions: dict[str, list[str]], n: int) -> np.ndarray:
        """(n, K) level index per condition; a level not kept is -1 (all zeros one-hot)."""
        out = np.full((n, len(self.conditions)), -1, np.int64)
        for k, (name, levels) in enumerate(self.conditions.items()):
            pos = {v: i for i, v in enumerate(levels)}
            out[:, k] = [pos.get(v, -1) for v in conditions[name]]
        return out

    def onehot(self, codes: np.ndarray) -> np.ndarray:
        """(n, K) level indices -> (n, cond_dim) float32 one-hot."""
        out = np.zeros((len(codes), self.cond_dim), np.float32)
        offset = 0
        for k, levels in enumerate(self.conditions.values()):
            ok = codes[:, k] >= 0
            out[np.nonzero(ok)[0], offset + codes[ok, k]] = 1.0
            offset += len(levels)
        return out

    def scale(self, values: np.ndarray) -> np.ndarray:
        """Raw (N, T, C) -> [0, 1] (NaN kept)."""
        lo, hi = np.asarray(self.low), np.asarray(self.high)
        return (values - lo) / (hi - lo)

    def unscale(self, x: np.ndarray) -> np.ndarray:
        """[0, 1] (N, T, C) -> raw units."""
        lo, hi = np.asarray(self.low), np.asarray(self.high)
        return x * (hi - lo) + lo

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SeriesLayout:
        """The layout ``to_json`` wrote."""
        return cls(**d)


def model_inputs(w: Windows, layout: SeriesLayout) -> dict[str, np.ndarray]:
    """The arrays a model trains on: ``values`` (N, T, C) float32 in [0, 1] with gaps filled
    (linear within the window, else the channel's training midpoint 0.5) and clipped to [0, 1]
    (held-out windows may leave the training range), ``mask`` (N, T, C) uint8, ``cond`` (N, K)
    level indices, ``lengths`` (N,)."""
    x = layout.scale(w.values)
    n, t, c = x.shape
    for i in range(n):
        length = int(w.lengths[i])
        for j in range(c):
            col = x[i, :length, j]
            ok = np.isfinite(col)
            if ok.all():
                continue
            if ok.any():
                pos = np.arange(length)
                x[i, :length, j] = np.interp(pos, pos[ok], col[ok])
            else:
                x[i, :length, j] = 0.5
    x = np.nan_to_num(x, nan=0.0)
    x[np.arange(t)[None, :] >= w.lengths[:, None]] = 0.0  # padding past a window's end
    return {
        "values": np.clip(x, 0.0, 1.0).astype(np.float32),
        "mask": w.mask.astype(np.uint8),
        "cond": layout.encode_levels(w.conditions, n),
        "lengths": w.lengths.astype(np.int32),
    }


def profile_windows(w: Windows) -> dict[str, Any]:
    """Statistics of the training windows, what monitoring compares live series with: per channel
    the mean, std, range and percentiles of the observed values, the share observed, the lag-1
    autocorrelation (of each window's values minus its mean, pooled) and the std of the steps
    between neighbours; the windows' lengths; the counts of the ``PROFILE_LEVELS`` most frequent
    levels of each condition (the rest summed as ``other``). JSON, bounded in size."""
    out: dict[str, Any] = {
        "windows": len(w),
        "size": int(w.values.shape[1]) if len(w) else 0,
        "series": len(set(w.series)),
        "lengths": _quantiles(w.lengths.astype(float)),
        "channels": {},
    }
    for c, name in enumerate(w.channels):
        v = np.where(w.mask[:, :, c], w.values[:, :, c], np.nan)  # (N, T) observed values, else NaN
        x = v[np.isfinite(v)]
        entry: dict[str, Any] = {
            "mean": float(x.mean()) if len(x) else None,
            "std": float(x.std()) if len(x) else None,
            "min": float(x.min()) if len(x) else None,
            "max": float(x.max()) if len(x) else None,
            "quantiles": _quantiles(x)["quantiles"] if len(x) else None,
            "observed": float(w.mask[:, :, c].mean()) if len(w) else 0.0,
            "lag1_autocorrelation": None,
            "step_std": None,
        }
        if v.shape[1] > 1 and len(x):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a window with nothing observed
                centred = v - np.nanmean(v, axis=1, keepdims=True)  # (N, T)
            a, b = centred[:, :-1], centred[:, 1:]
            pair = np.isfinite(a) & np.isfinite(b)
            if pair.any():
                den = float(np.sum(np.where(np.isfinite(centred), centred, 0.0) ** 2))
                num = float(np.sum(a[pair] * b[pair]))
                entry["lag1_autocorrelation"] = num / den if den > 0 else None
                entry["step_std"] = float(np.std((v[:, 1:] - v[:, :-1])[pair]))
        out["channels"][name] = entry
    out["conditions"] = {k: bounded_levels(v) for k, v in w.conditions.items()}
    return out


def bounded_levels(values: list[str], limit: int | None = None) -> dict[str, int]:
    """Counts of the ``limit`` (default ``PROFILE_LEVELS``) most frequent values (ties by value),
    the rest summed under ``other`` (a key that cannot be a level, ``<other>``)."""
    from collections import Counter

    limit = PROFILE_LEVELS if limit is None else limit
    ranked = sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0]))
    out = dict(ranked[:limit])
    rest = sum(c for _, c in ranked[limit:])
    if rest:
        out[OTHER_LEVEL] = rest
    return out


def _quantiles(x: np.ndarray) -> dict[str, Any]:
    """The mean and the ``PROFILE_QUANTILES`` percentiles of ``x`` (None when it is empty)."""
    if not len(x):
        return {"mean": None, "quantiles": None}
    qs = np.percentile(x, PROFILE_QUANTILES)
    return {
        "mean": float(x.mean()),
        "quantiles": {f"p{q}": float(v) for q, v in zip(PROFILE_QUANTILES, qs, strict=True)},
    }

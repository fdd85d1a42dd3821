"""Features of series windows: statistics, trend, seasonality, rolling statistics, FFT band
energies, lags and autocorrelations, change points."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from genloom.core.errors import ConfigError, MissingDependencyError, StepError
from genloom.core.registry import FEATURES
from genloom.core.steps import Map, StepContext
from genloom.features._media import PartKind, add_parts

Group = Literal["stats", "trend", "seasonality", "rolling", "fft", "lags", "change_points"]
GROUPS: tuple[Group, ...] = ("stats", "trend", "seasonality", "rolling", "fft", "lags", "change_points")


@FEATURES.register("series_features")
class SeriesFeaturesFeature(Map):
    """Features of each series window (the ``values`` column: time x channel, or a plain list
    for one channel), for one channel, as float32 / int32 columns ``<output>_<name>``.

    Time is the step index 0..T-1 of the window. Steps the ``mask`` marks as missing (and NaN
    values) are filled by linear interpolation between observed neighbours first (before the first
    and after the last observed step: that value); a window
    with fewer than 3 observed values gets nulls. The groups (``groups``, all by default):

    - ``stats``: ``mean``, ``std``, ``min``, ``max``;
    - ``trend``: the least-squares line ``trend_slope`` (per step) and ``trend_intercept`` (the
      value at step 0), and ``trend_r2``: y = 2t + 1 gives slope 2 and intercept 1;
    - ``seasonality``: ``season_period`` (int32, 0 when none), the lag of the highest local peak
      of the autocorrelation of the linearly detrended series between 2 and ``max_period`` (and
      at most T/2) that reaches ``min_acf`` and rises at least ``min_prominence`` above the
      lowest autocorrelation at shorter lags (so the slow decay of a persistent series is no
      season), or ``period`` when it is given; ``season_acf``, the autocorrelation at that lag;
      ``season_strength``, 1 - var(R) / var(S + R) (Wang, Smith and Hyndman 2006), 0 without a
      period. With ``seasonality: acf`` (the default) S and R come from a classical
      decomposition at that period (trend by a centred moving average, S the mean per phase, R
      the rest); with ``seasonality: stl`` from STL (Cleveland et al. 1990, statsmodels' ``STL``
      at that period, its default smoothers, not robust), which also gives
      ``stl_trend_strength``, 1 - var(R) / var(T + R) (null without a period, or when the window
      is shorter than two periods);
    - ``rolling``: over windows of ``rolling_window`` steps, ``rolling_mean_std`` and
      ``rolling_mean_range`` (how much the local level moves), ``rolling_std_mean`` and
      ``rolling_std_max`` (local volatility);
    - ``fft``: ``fft_energy``, the share of the spectral power (mean removed, DC left out) in each
      of ``fft_bands`` equal bands of frequency from 0 to 0.5 cycles per step
      (``fixed_size_list<float32>[fft_bands]``), and ``fft_peak_period`` (steps per cycle of the
      strongest frequency);
    - ``lags``: ``lag_<k>``, the value k steps before the window's end (``lag_1`` is the last),
      and ``acf_<k>``, the autocorrelation at lag k, for each k in ``lags``;
    - ``change_points``: binary segmentation of the mean (least squares; a split is kept while it
      lowers the cost by more than ``penalty``, default 4 log(T) sigma^2 with sigma from the
      median absolute first difference), segments of at least ``min_segment`` steps, at most
      ``max_change_points``: ``change_points`` (list<int32>, the first step of each new
      segment) and ``change_points_count``. A step from 0 to 5 at t=50 gives [50].
    """

    type: Literal["series_features"] = "series_features"
    column: str = Field(
        default="values", description="the window column: list<list<float>> (time x channel) or list<float>"
    )
    mask_column: str | None = Field(
        default="mask", description="the column marking observed steps (true) of the same shape; null: none"
    )
    channel: int = Field(default=0, ge=0, description="the channel whose features are computed")
    output: str | None = Field(
        default=None, description="prefix of the output columns; default: the step's type"
    )
    groups: list[Group] = Field(
        default=list(GROUPS), min_length=1, description="the feature groups to compute"
    )
    max_period: int = Field(
        default=64, ge=2, description="seasonality: the longest period looked for (steps)"
    )
    min_acf: float = Field(
        default=0.2, ge=0, lt=1, description="seasonality: the least autocorrelation of a period"
    )
    seasonality: Literal["acf", "stl"] = Field(
        default="acf",
        description="seasonality: the decomposition the strengths come from: acf (a classical one, "
        "NumPy only) or stl (statsmodels' STL; also stl_trend_strength)",
    )
    period: int | None = Field(
        default=None,
        ge=2,
        description="seasonality: the season's length in steps; null: the autocorrelation peak",
    )
    min_prominence: float = Field(
        default=0.1,
        ge=0,
        le=2,
        description="seasonality: how far a period's autocorrelation must rise above the lowest one at shorter lags",
    )
    rolling_window: int = Field(default=7, ge=2, description="rolling: steps per rolling window")
    fft_bands: int = Field(default=4, ge=1, le=64, description="fft: equal frequency bands")
    lags: list[int] = Field(default=[1, 2, 3, 7, 12], description="lags: the lags k of lag_<k> and acf_<k>")
    min_segment: int = Field(default=5, ge=2, description="change points: the shortest segment (steps)")
    max_change_points: int = Field(default=10, ge=1, le=1000, description="change points: at most this many")
    penalty: float | None = Field(
        default=None, gt=0, description="change points: the cost decrease a split needs"
    )

    def check_requirements(self) -> None:
        """statsmodels, for ``seasonality: stl`` only."""
        if self.seasonality == "stl" and "seasonality" in self.groups:
            import importlib.util

            if importlib.util.find_spec("statsmodels") is None:
                raise MissingDependencyError(
                    "statsmodels (needed by series_features with seasonality: stl)",
                    "pip install 'genloom[features]'",
                )

    def check(self, path: str) -> None:
        if any(k < 1 for k in self.lags):
            raise ConfigError("lags must be 1 or more", path=f"{path}.lags")
        if len(set(self.lags)) != len(self.lags):
            raise ConfigError("lags repeat a value", path=f"{path}.lags")

    @property
    def out(self) -> str:
        """The output columns' prefix."""
        return self.output or self.type

    def parts(self) -> dict[str, PartKind]:
        """The output parts of the configured groups."""
        f: PartKind = ("float",)
        kinds: dict[str, PartKind] = {}
        if "stats" in self.groups:
            kinds.update({p: f for p in ("mean", "std", "min", "max")})
        if "trend" in self.groups:
            kinds.update({p: f for p in ("trend_slope", "trend_intercept", "trend_r2")})
        if "seasonality" in self.groups:
            kinds.update({"season_period": ("int",), "season_acf": f, "season_strength": f})
            if self.seasonality == "stl":
                kinds["stl_trend_strength"] = f
        if "rolling" in self.groups:
            kinds.update(
                {
                    p: f
                    for p in ("rolling_mean_std", "rolling_mean_range", "rolling_std_mean", "rolling_std_max")
                }
            )
        if "fft" in self.groups:
            kinds.update({"fft_energy": ("vector", self.fft_bands), "fft_peak_period": f})
        if "lags" in self.groups:
            for k in self.lags:
                kinds[f"lag_{k}"] = f
            for k in self.lags:
                kinds[f"acf_{k}"] = f
        if "change_points" in self.groups:
            kinds.update({"change_points": ("intlist",), "change_points_count": ("int",)})
        return kinds

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        if self.column not in table.column_names:
            raise StepError(
                f"the records have no column {self.column!r} (they have {', '.join(table.column_names)}): "
                "set the step's `column` option"
            )
        values = table.column(self.column).to_pylist()
        masks: list[Any] = [None] * len(values)
        if self.mask_column and self.mask_column in table.column_names:
            masks = table.column(self.mask_column).to_pylist()
        rows = [self.window_features(v, m) for v, m in zip(values, masks, strict=True)]
        return add_parts(table, self.out, self.parts(), rows)

    def series(self, values: Any, mask: Any) -> np.ndarray | None:
        """The chosen channel as floats with gaps interpolated (None: under 3 observed values)."""
        if values is None or len(values) == 0:
            return None
        multichannel = (
            isinstance(values[0], list) or values[0] is None and any(isinstance(v, list) for v in values)
        )
        if multichannel:
            width = max((len(v) for v in values if v is not None), default=0)
            if self.channel >= width:
                raise StepError(f"channel {self.channel} does not exist: the windows have {width} channels")
            x = np.array(
                [math.nan if v is None or v[self.channel] is None else v[self.channel] for v in values],
                np.float64,
            )
            if mask is not None:
                seen = np.array([bool(m is not None and m[self.channel]) for m in mask])
                x[~seen] = math.nan
        else:
            x = np.array([math.nan if v is None else v for v in values], np.float64)
            if mask is not None:
                x[~np.array([bool(m) for m in mask])] = math.nan
        observed = ~np.isnan(x)
        if observed.sum() < 3:
            return None
        if not observed.all():
            t = np.arange(len(x))
            x = np.interp(t, t[observed], x[observed])
        return x

    def window_features(self, values: Any, mask: Any) -> dict[str, Any] | None:
        """Every configured feature of one window."""
        x = self.series(values, mask)
        if x is None:
            return None
        out: dict[str, Any] = {}
        n = len(x)
        t = np.arange(n, dtype=np.float64)
        if "stats" in self.groups:
            out.update(mean=x.mean(), std=x.std(), min=x.min(), max=x.max())
        slope, intercept = np.polyfit(t, x, 1)
        if "trend" in self.groups:
            resid = x - (slope * t + intercept)
            total = ((x - x.mean()) ** 2).sum()
            out.update(
                trend_slope=slope,
                trend_intercept=intercept,
                trend_r2=1 - (resid**2).sum() / total if total > 0 else None,
            )
        if "seasonality" in self.groups:
            period, r = self.season_period(x - (slope * t + intercept))
            out.update(season_period=period, season_acf=r)
            if self.seasonality == "stl":
                out["season_strength"], out["stl_trend_strength"] = stl_strengths(x, period)
            else:
                out["season_strength"] = (
                    seasonal_strength(x - (slope * t + intercept), period) if period else 0.0
                )
        if "rolling" in self.groups:
            out.update(rolling_stats(x, min(self.rolling_window, n)))
        if "fft" in self.groups:
            out["fft_energy"], out["fft_peak_period"] = fft_bands(x, self.fft_bands)
        if "lags" in self.groups:
            acf = autocorrelation(x, max(self.lags))
            for k in self.lags:
                out[f"lag_{k}"] = x[n - k] if k <= n else None
                out[f"acf_{k}"] = acf[k] if k < len(acf) and not math.isnan(acf[k]) else None
        if "change_points" in self.groups:
            points = change_points(x, self.min_segment, self.max_change_points, self.penalty)
            out.update(change_points=points, change_points_count=len(points))
        return out

    def season_period(self, detrended: np.ndarray) -> tuple[int, float | None]:
        """(period, the autocorrelation at it) of a detrended series: ``period`` when given (0
        when the window is shorter than two of them), else the autocorrelation peak; 0: none."""
        n = len(detrended)
        if self.period is not None:
            if n < 2 * self.period:
                return 0, None
            r = autocorrelation(detrended, self.period)[self.period]
            return self.period, None if math.isnan(r) else float(r)
        max_lag = min(self.max_period, n // 2)
        if max_lag < 3:
            return 0, None
        acf = autocorrelation(detrended, max_lag + 1)
        best, best_r = 0, -math.inf
        trough = acf[1]  # the lowest autocorrelation so far: a peak must rise above it
        for k in range(2, min(max_lag, len(acf) - 2) + 1):
            r = acf[k]
            trough = min(trough, r)
            peak = r > acf[k - 1] and r >= acf[k + 1]
            if peak and r >= self.min_acf and r - trough >= self.min_prominence and r > best_r:
                best, best_r = k, r
        if best == 0:
            return 0, None
        return best, float(best_r)


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """The (biased) sample autocorrelation r_0..r_max_lag; NaN for a constant series."""
    d = x - x.mean()
    denom = float((d * d).sum())
    lags = min(max_lag, len(x) - 1)
    if denom == 0:
        return np.full(lags + 1, math.nan)
    return np.array([float((d[: len(d) - k] * d[k:]).sum()) / denom for k in range(lags + 1)])


def seasonal_strength(x: np.ndarray, period: int) -> float:
    """1 - var(R) / var(S + R) of a classical additive decomposition of ``x`` at ``period``."""
    n = len(x)
    if period % 2:
        kernel = np.full(period, 1.0 / period)
    else:  # a 2 x m moving average: centred for an even period
        kernel = np.concatenate([[0.5], np.ones(period - 1), [0.5]]) / period
    half = len(kernel) // 2
    trend = np.full(n, math.nan)
    if n >= len(kernel):
        trend[half : n - half] = np.convolve(x, kernel, mode="valid")
    detrended = x - trend
    ok = ~np.isnan(detrended)
    if ok.sum() < period + 1:
        return 0.0
    phase = np.arange(n) % period
    seasonal_by_phase = np.array(
        [np.nanmean(detrended[phase == p]) if ok[phase == p].any() else 0.0 for p in range(period)]
    )
    seasonal_by_phase -= seasonal_by_phase.mean()
    seasonal = seasonal_by_phase[phase]
    remainder = detrended - seasonal
    var_sr = float(np.var(detrended[ok]))
    if var_sr == 0:
        return 0.0
    return float(max(0.0, 1.0 - np.var(remainder[ok]) / var_sr))


def stl_strengths(x: np.ndarray, period: int) -> tuple[float, float | None]:
    """(seasonal strength, trend strength) of ``x`` from an STL decomposition at ``period``
    (Wang, Smith and Hyndman 2006: 1 - var(R) / var(S + R) and 1 - var(R) / var(T + R), each at
    least 0; 0 when a component and the remainder vary by no more than rounding error); (0,
    None) without a period or under two periods of data."""
    if period < 2 or len(x) < 2 * period:
        return 0.0, None
    from statsmodels.tsa.seasonal import STL

    fit = STL(x, period=period).fit()
    trend, seasonal, resid = (np.asarray(a, dtype=np.float64) for a in (fit.trend, fit.seasonal, fit.resid))
    var_r = float(np.var(resid))
    tiny = 1e-12 * float(np.var(x))  # rounding error: a pure line has no season, not a strength of 0.67

    def strength(component: np.ndarray) -> float:
        total = float(np.var(component + resid))
        return 0.0 if total <= tiny else max(0.0, 1.0 - var_r / total)

    return strength(seasonal), strength(trend)


def rolling_stats(x: np.ndarray, w: int) -> dict[str, float]:
    """Spread of the rolling mean and level of the rolling standard deviation over windows of ``w``."""
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])
    means = (c1[w:] - c1[:-w]) / w
    var = np.maximum((c2[w:] - c2[:-w]) / w - means**2, 0.0)
    stds = np.sqrt(var)
    return {
        "rolling_mean_std": float(means.std()),
        "rolling_mean_range": float(means.max() - means.min()),
        "rolling_std_mean": float(stds.mean()),
        "rolling_std_max": float(stds.max()),
    }


def fft_bands(x: np.ndarray, bands: int) -> tuple[np.ndarray, float | None]:
    """Shares of the power in ``bands`` equal frequency bands (DC left out), and the period of the peak."""
    power = np.abs(np.fft.rfft(x - x.mean())) ** 2
    freqs = np.fft.rfftfreq(len(x))  # cycles per step, 0..0.5
    power, freqs = power[1:], freqs[1:]
    total = float(power.sum())
    if total <= 0 or len(power) == 0:
        return np.zeros(bands), None
    edges = np.linspace(0.0, 0.5, bands + 1)
    which = np.minimum(np.searchsorted(edges, freqs, side="left") - 1, bands - 1)
    shares = np.bincount(np.maximum(which, 0), weights=power, minlength=bands)[:bands] / total
    return shares, float(1.0 / freqs[int(np.argmax(power))])


def change_points(x: np.ndarray, min_segment: int, max_points: int, penalty: float | None) -> list[int]:
    """Change points of the mean of ``x`` by binary segmentation with an L2 cost (sorted)."""
    n = len(x)
    if n < 2 * min_segment:
        return []
    if penalty is None:
        diffs = np.diff(x)
        mad = float(np.median(np.abs(diffs - np.median(diffs))))
        sigma2 = (1.4826 * mad) ** 2 / 2  # a difference of two noisy values has twice the variance
        sigma2 = max(sigma2, 1e-6 * float(np.var(x)), 1e-12)
        penalty = 4.0 * math.log(n) * sigma2
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])

    def cost(a: int, b: int) -> float:  # sum of squared deviations from the mean of x[a:b]
        s = c1[b] - c1[a]
        return float(c2[b] - c2[a] - s * s / (b - a))

    def best_split(a: int, b: int) -> tuple[float, int]:
        if b - a < 2 * min_segment:
            return 0.0, -1
        ks = np.arange(a + min_segment, b - min_segment + 1)
        left = (c2[ks] - c2[a]) - (c1[ks] - c1[a]) ** 2 / (ks - a)
        right = (c2[b] - c2[ks]) - (c1[b] - c1[ks]) ** 2 / (b - ks)
        gains = cost(a, b) - (left + right)
        i = int(np.argmax(gains))
        return float(gains[i]), int(ks[i])

    segments = [(0, n)]
    points: list[int] = []
    while len(points) < max_points:
        candidates = [(*best_split(a, b), a, b) for a, b in segments]
        gain, k, a, b = max(candidates, key=lambda c: c[0])
        if k < 0 or gain <= penalty:
            break
        points.append(k)
        segments.remove((a, b))
        segments += [(a, k), (k, b)]
    return sorted(points)

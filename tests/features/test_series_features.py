"""Series window features: hand-checkable trends, seasons and steps, the real series of
../shared/data/timeseries, and the features stage on shards equal to one batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from tests.conftest import SHARED_DATA

from genloom.core.errors import ConfigError, StepError
from genloom.core.steps import StepContext
from genloom.features.series_features import SeriesFeaturesFeature, change_points
from genloom.pipeline import Pipeline
from genloom.sources.sensor_files import SensorFilesSource

SERIES = SHARED_DATA / "timeseries"
P = "series_features_"


def windows(*series: np.ndarray | list[float], channels: int = 1) -> pa.Table:
    """Windows as the sources write them: values list<list<float64>> (time x channel)."""
    vals = [[[float(v)] * channels for v in s] for s in series]
    return pa.table({"id": [f"w{i}" for i in range(len(series))], "values": vals})


def features(table: pa.Table, **cfg: object) -> list[dict[str, object]]:
    return SeriesFeaturesFeature(**cfg).run(table, StepContext()).to_pylist()  # type: ignore[arg-type]


def test_trend_of_a_line_season_of_a_sine_and_a_step_change() -> None:
    t = np.arange(120.0)
    line, wave, step = features(windows(2 * t + 1, np.sin(2 * np.pi * t / 12), np.where(t >= 50, 5.0, 0.0)))
    assert line[P + "trend_slope"] == pytest.approx(2.0)
    assert line[P + "trend_intercept"] == pytest.approx(1.0)
    assert line[P + "trend_r2"] == pytest.approx(1.0)
    assert line[P + "season_period"] == 0 and line[P + "season_strength"] == 0
    assert wave[P + "season_period"] == 12
    assert wave[P + "season_strength"] == pytest.approx(1.0, abs=1e-3)
    assert wave[P + "fft_peak_period"] == pytest.approx(12.0)
    assert wave[P + "fft_energy"][0] == pytest.approx(1.0)  # 1/12 cycles per step: the lowest of 4 bands
    assert wave[P + "acf_12"] == pytest.approx(0.9, abs=0.01)  # biased estimate: (120 - 12) / 120
    assert step[P + "change_points"] == [50] and step[P + "change_points_count"] == 1
    assert (step[P + "lag_1"], step[P + "lag_12"]) == (5.0, 5.0)
    assert step[P + "mean"] == pytest.approx(70 * 5 / 120) and step[P + "max"] == 5.0


def test_sine_of_period_12_on_a_line_gives_period_12_and_the_slope() -> None:
    t = np.arange(144.0)
    (row,) = features(windows(3 * np.sin(2 * np.pi * t / 12) + 0.5 * t + 10), groups=["trend", "seasonality"])
    assert row[P + "season_period"] == 12  # found after the line is removed
    assert row[P + "trend_slope"] == pytest.approx(0.5, abs=0.02)  # the sine biases the fit a little
    assert row[P + "season_strength"] > 0.99
    assert row[P + "season_acf"] > 0.85


def test_change_points_in_noise() -> None:
    """One step of 3 sigma among N(0, 1) noise is found within 2 steps; pure noise gives none
    (the penalty 4 log(T) sigma^2 let through 1 of 300 noise windows when measured)."""
    rng = np.random.default_rng(7)
    t = np.arange(200)
    noisy_step = rng.normal(0, 1, 200) + np.where(t >= 120, 3.0, 0.0)
    (found,) = change_points(noisy_step, 5, 10, None)
    assert abs(found - 120) <= 2
    assert change_points(rng.normal(0, 1, 200), 5, 10, None) == []
    two = np.concatenate([np.zeros(40), np.full(40, 4.0), np.full(40, -2.0)]) + rng.normal(0, 0.3, 120)
    assert change_points(two, 5, 10, None) == [40, 80]


def test_masks_gaps_channels_and_univariate_lists() -> None:
    t = np.arange(60.0)
    two_channels = [[float(v), float(-3 * v)] for v in t]
    mask = [[True, i % 5 != 3] for i in range(60)]  # every fifth value of channel 1 missing
    for row, m in zip(two_channels, mask, strict=True):
        if not m[1]:
            row[1] = 999.0  # what a gap filled with garbage holds: the mask says ignore it
    table = pa.table(
        {
            "id": ["a", "short", "flat"],
            "values": [two_channels, [[1.0, 1.0]] * 2, [[2.0, 2.0]] * 20],
            "mask": [mask, None, None],
        }
    )
    a, short, flat = features(table, channel=1, groups=["trend", "stats", "lags"])
    assert a[P + "trend_slope"] == pytest.approx(-3.0)
    assert a[P + "max"] == 0.0  # gaps interpolated, not read as 999
    assert short[P + "trend_slope"] is None  # under 3 observed values: nulls
    assert flat[P + "std"] == 0 and flat[P + "acf_1"] is None  # constant: no autocorrelation
    uni = pa.table({"id": ["u"], "values": [list(2 * t + 1)]})
    assert features(uni, groups=["trend"])[0][P + "trend_slope"] == pytest.approx(2.0)
    out = SeriesFeaturesFeature(groups=["fft"], fft_bands=3, output="s").run(uni, StepContext())
    assert out.schema.field("s_fft_energy").type == pa.list_(pa.float32(), 3)
    with pytest.raises(StepError, match="channel 2 does not exist"):
        features(table, channel=2)
    with pytest.raises(ConfigError, match="lags"):
        SeriesFeaturesFeature(lags=[0, 1]).check("features.0")


def _read(path: Path, size: int) -> pa.Table:
    src = SensorFilesSource(paths=[str(path)], window={"size": size})
    ctx = StepContext()
    return pa.concat_tables([t for p in src.partitions() for t in src.run_partition(p, ctx)])


def test_real_series_airline_passengers_and_daily_temperatures() -> None:
    """Box and Jenkins' airline passengers (monthly, 1949-1960): a rising trend and a 12-month
    season; Melbourne's daily minimum temperatures (1981-1990) in 3-year windows: a year."""
    if not SERIES.is_dir():
        pytest.skip("../shared/data/timeseries is absent")
    (air,) = features(_read(SERIES / "airline-passengers.csv", 143))
    assert air[P + "season_period"] == 12
    assert air[P + "season_strength"] > 0.6  # 0.78 when written
    assert 2.0 < air[P + "trend_slope"] < 3.5  # 2.67 more passengers (thousands) a month
    temps = features(
        _read(SERIES / "daily-min-temperatures.csv", 3 * 365), max_period=600, groups=["seasonality", "fft"]
    )
    assert len(temps) == 3
    for w in temps:
        assert w[P + "fft_peak_period"] == pytest.approx(365, abs=3)
        assert 340 <= w[P + "season_period"] <= 390  # 351, 372 and 367 when written
        assert w[P + "season_strength"] > 0.6


def test_series_features_through_the_pipeline_on_two_shards_equal_one_batch(tmp_path: Path) -> None:
    """Two real series files (two shards) through sensor_files and the features stage give
    the rows the step gives on all the windows in one batch in this process, bit for bit."""
    if not SERIES.is_dir():
        pytest.skip("../shared/data/timeseries is absent")
    files = [str(SERIES / f) for f in ("airline-passengers.csv", "monthly-sunspots.csv")]
    source = {"type": "sensor_files", "paths": files, "window": {"size": 64}}
    step = {"type": "series_features", "max_period": 24}
    raw = {"name": "s", "sources": [source], "features": [step], "data": {"partitions_per_shard": 1}}
    pipeline = Pipeline.from_dict(raw, base_dir=tmp_path)
    (stage,) = [s for s in pipeline.run().stages if s.stage == "features"]
    sharded = pa.concat_tables(list(pipeline.store.iter_artifact("features", stage.key)))
    assert len(pipeline.store.read_manifest("features", stage.key)["shards"]) == 2
    src = SensorFilesSource(**{k: v for k, v in source.items() if k != "type"})  # type: ignore[arg-type]
    ctx = StepContext()
    whole = pa.concat_tables([t for p in src.partitions() for t in src.run_partition(p, ctx)])
    direct = SeriesFeaturesFeature(max_period=24).run(whole, StepContext())
    cols = [c for c in direct.column_names if c.startswith(P)]
    assert (
        len(cols) == 28 and sharded.num_rows == direct.num_rows == 2 + 44
    )  # 143 and 2820 steps in windows of 64
    assert sharded.select(["id", *cols]).sort_by("id").equals(direct.select(["id", *cols]).sort_by("id"))
    assert {r["series"] for r in sharded.select(["series"]).to_pylist()} == set(files)


def _run_in_worker(job: tuple[SeriesFeaturesFeature, pa.Table]) -> pa.Table:
    step, table = job
    return step.run(table, StepContext())


def test_four_shards_in_a_process_pool_equal_one_process() -> None:
    """The step pickled to two worker processes, on four shards of 25 windows, gives the
    columns one process gives on them all, bit for bit."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    rng = np.random.default_rng(3)
    t = np.arange(96)
    series = [
        np.sin(2 * np.pi * t / rng.integers(4, 24)) * rng.uniform(1, 5) + rng.normal(0, 1, 96) + 0.1 * t
        for _ in range(100)
    ]
    table = windows(*series)
    step = SeriesFeaturesFeature(max_period=32)
    shards = [table.slice(i * 25, 25) for i in range(4)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        pooled = pa.concat_tables(pool.map(_run_in_worker, [(step, s) for s in shards]))
    alone = step.run(table, StepContext())
    assert pooled.equals(alone)
    assert len({r[P + "season_period"] for r in alone.to_pylist()}) > 5  # varied windows


def test_stl_strengths_of_a_sine_on_a_line_hand_checked() -> None:
    """STL (statsmodels) at the autocorrelation peak's period: a sine of period 12 on a line
    decomposes exactly (remainder 0), so both strengths are 1; a sine alone has no trend
    (strength near 0) and a line alone no season (0). With N(0, 0.5^2) noise on a sine of
    amplitude 3, var(S) = 4.5 and var(R) = 0.25 give 1 - 0.25 / 4.75 = 0.947; STL's smoothers keep
    some of the noise out of its remainder, so its strength is a little higher (0.975 when
    written), never lower."""
    pytest.importorskip("statsmodels", reason="statsmodels (genloom[features]) is not installed")
    t = np.arange(144.0)
    wave = np.sin(2 * np.pi * t / 12)
    noise = np.random.default_rng(0).normal(0, 0.5, 144)
    both, sine, line, noisy = features(
        windows(wave + 0.5 * t, wave, 0.5 * t, 3 * wave + 0.5 * t + noise),
        groups=["seasonality"],
        seasonality="stl",
        period=12,
    )
    assert both[P + "season_period"] == 12
    assert both[P + "season_strength"] == pytest.approx(1.0, abs=1e-9)
    assert both[P + "stl_trend_strength"] == pytest.approx(1.0, abs=1e-9)
    assert sine[P + "season_strength"] == pytest.approx(1.0, abs=1e-9)
    assert sine[P + "stl_trend_strength"] < 0.1  # 0.05: STL's trend keeps a trace of the wave
    assert line[P + "season_strength"] == 0.0 and line[P + "stl_trend_strength"] == pytest.approx(1.0)
    assert 0.947 < noisy[P + "season_strength"] < 0.99
    assert noisy[P + "stl_trend_strength"] > 0.999  # var(T) = 0.25 var(t) = 432 against 0.25
    (found,) = features(windows(wave + 0.5 * t), groups=["seasonality"], seasonality="stl")
    assert found[P + "season_period"] == 12 and found[P + "season_strength"] == pytest.approx(1.0)
    (acf,) = features(windows(wave + 0.5 * t), groups=["seasonality"])
    assert P + "stl_trend_strength" not in acf  # the classical decomposition has no trend strength
    (short,) = features(windows(wave[:20]), groups=["seasonality"], seasonality="stl", period=12)
    assert short[P + "season_period"] == 0 and short[P + "stl_trend_strength"] is None
    if SERIES.is_dir():  # the airline passengers: a 12-month season STL finds strong
        (air,) = features(_read(SERIES / "airline-passengers.csv", 143), seasonality="stl")
        assert air[P + "season_period"] == 12
        assert air[P + "season_strength"] > 0.8 and air[P + "stl_trend_strength"] > 0.9

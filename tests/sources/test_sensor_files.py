"""sensor_files: CSV, JSON Lines and GPX sensor logs, timestamps to UTC, sorted, windowed; the
window machinery (resampling, gaps, sliding windows) on series made here; the real files of
../shared/data/timeseries when present."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from genloom.core.errors import ConfigError
from genloom.pipeline import Pipeline
from genloom.sources._series import WindowConfig, iso, resample, series_windows, to_utc_ns, window_starts
from genloom.sources.sensor_files import SensorFilesSource

from .sources_fixtures import read_all

H = 3_600_000_000_000  # one hour in ns


def _ns(text: str) -> int:
    return to_utc_ns(text)


# -- timestamps


@pytest.mark.parametrize(
    ("value", "kw", "expected"),
    [
        ("2024-03-01T10:00:00Z", {}, "2024-03-01T10:00:00Z"),
        ("2024-03-01T12:00:00+02:00", {}, "2024-03-01T10:00:00Z"),
        ("2024-03-01 11:00", {"tz": "Europe/Ljubljana"}, "2024-03-01T10:00:00Z"),  # CET, UTC+1
        ("2024-07-01 12:00", {"tz": "Europe/Ljubljana"}, "2024-07-01T10:00:00Z"),  # CEST, UTC+2
        ("1949-01", {}, "1949-01-01T00:00:00Z"),
        (1709287200, {}, "2024-03-01T10:00:00Z"),
        (1709287200500, {"unit": "ms"}, "2024-03-01T10:00:00.500000Z"),
        ("01/03/2024 10:00", {"fmt": "%d/%m/%Y %H:%M"}, "2024-03-01T10:00:00Z"),
    ],
)
def test_timestamps_become_utc(value: Any, kw: dict[str, Any], expected: str) -> None:
    assert iso(to_utc_ns(value, **kw)) == expected


@pytest.mark.parametrize("value", ["soon", None, True, "2024-13-01"])
def test_a_value_that_is_not_a_time_raises(value: Any) -> None:
    with pytest.raises(ValueError):
        to_utc_ns(value)


# -- windows


def test_resample_aggregates_per_step_and_marks_gaps() -> None:
    times = np.array([0, H // 2, H + 1, 3 * H], dtype=np.int64)
    values = np.array([[1.0], [3.0], [5.0], [7.0]])
    grid, mean = resample(times, values, H, "mean")
    assert grid.tolist() == [0, H, 2 * H, 3 * H]
    assert mean[:, 0].tolist()[:2] == [2.0, 5.0] and math.isnan(mean[2, 0]) and mean[3, 0] == 7.0
    _, last = resample(times, values, H, "last")
    assert last[0, 0] == 3.0
    _, first = resample(times, values, H, "first")
    assert first[0, 0] == 1.0
    _, top = resample(times, values, H, "max")
    assert top[0, 0] == 3.0


def test_fixed_sliding_and_partial_window_spans() -> None:
    assert window_starts(10, WindowConfig(size=4)) == [(0, 4), (4, 8)]
    assert window_starts(10, WindowConfig(size=4, partial=True)) == [(0, 4), (4, 8), (8, 10)]
    assert window_starts(6, WindowConfig(size=4, stride=1)) == [(0, 4), (1, 5), (2, 6)]
    assert window_starts(3, WindowConfig(size=4)) == []


def _windows(times: list[int], values: list[list[float]], cfg: WindowConfig) -> tuple[pa.Table, list[Any]]:
    out = list(
        series_windows(
            "t", "s", np.array(times, dtype=np.int64), np.array(values, dtype=np.float64), ["a", "b"], cfg
        )
    )
    tables = [o for o in out if isinstance(o, pa.Table)]
    rejected = [o for o in out if not isinstance(o, pa.Table)]
    return (pa.concat_tables(tables) if tables else pa.table({})), rejected


def test_windows_mark_gaps_in_the_mask_and_fill_them_as_asked() -> None:
    # hours 0, 1, 3 observed (2 is a gap); channel b missing at hour 1; given out of order
    times = [3 * H, 0, H]
    values = [[4.0, 40.0], [1.0, 10.0], [2.0, math.nan]]
    table, _ = _windows(times, values, WindowConfig(size=4, step="1h"))
    (row,) = table.to_pylist()
    assert row["values"] == [[1.0, 10.0], [2.0, None], [None, None], [4.0, 40.0]]
    assert row["mask"] == [[True, True], [True, False], [False, False], [True, True]]
    assert [t.isoformat() for t in row["timestamps"]][:2] == [
        "1970-01-01T00:00:00+00:00",
        "1970-01-01T01:00:00+00:00",
    ]
    assert json.loads(row["meta"])["missing"] == 3
    assert row["id"] == "t:s#1970-01-01T00:00:00Z"
    linear, _ = _windows(times, values, WindowConfig(size=4, step="1h", fill="linear"))
    lin = linear.to_pylist()[0]
    assert lin["values"][2] == [3.0, 30.0] and lin["values"][1][1] == 20.0
    assert lin["mask"] == row["mask"]  # filled steps stay marked as gaps
    ffill, _ = _windows(times, values, WindowConfig(size=4, step="1h", fill="ffill"))
    assert ffill.to_pylist()[0]["values"][2] == [2.0, 10.0]


def test_sparse_windows_are_quarantined_with_the_reason() -> None:
    times = [0, 1 * H, 9 * H]
    table, rejected = _windows(
        times, [[1, 1], [2, 2], [3, 3]], WindowConfig(size=5, step="1h", min_observed=0.3)
    )
    assert table.num_rows == 1  # hours 0-4: 2 of 5 observed; hours 5-9: 1 of 5
    assert [r.reason for r in rejected] == ["sparse_window"]
    assert "1 of 5 steps observed" in rejected[0].detail


def test_window_config_rejects_a_step_that_is_not_a_duration() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        WindowConfig(size=4, step="fortnightly")


# -- files


def test_csv_times_to_utc_sorted_typed_and_a_bad_time_quarantined(tmp_path: Path) -> None:
    f = tmp_path / "probe.csv"
    f.write_text(
        "time,sensor,temp,count,state\n"
        "2024-03-01 12:00,a,20.5,3,ok\n"
        "2024-03-01 11:00,a,19.0,2,ok\n"
        "yesterday,a,1.0,1,ok\n"
        "2024-03-01T10:30:00Z,a,NA,1,warn\n"
    )
    src = SensorFilesSource(paths=[str(f)], timezone="Europe/Ljubljana")
    src.check("sources.0")
    rows, rejected = read_all(src)
    assert [r["ts"] for r in rows] == [
        datetime(2024, 3, 1, 10, 0, tzinfo=UTC),
        datetime(2024, 3, 1, 10, 30, tzinfo=UTC),
        datetime(2024, 3, 1, 11, 0, tzinfo=UTC),
    ]
    assert [r["temp"] for r in rows] == [19.0, None, 20.5]
    assert [r["count"] for r in rows] == [2, 1, 3] and [r["state"] for r in rows][1] == "warn"
    assert rows[0]["id"] == f"sensor_files:{f}@2024-03-01T10:00:00Z"
    assert [(r["reason"], r["location"]) for r in rejected] == [("bad_timestamp", f"{f}:4")]


def test_jsonl_nested_fields_epoch_millis_series_field_and_a_broken_line(tmp_path: Path) -> None:
    f = tmp_path / "log.jsonl"
    lines = [
        {"ts": 1709287260000, "id": "s1", "env": {"temp": 21.0, "hum": 40}},
        {"ts": 1709287200000, "id": "s1", "env": {"temp": 20.0, "hum": 41}},
        {"ts": 1709287200000, "id": "s2", "env": {"temp": 5.0, "hum": 90}},
    ]
    f.write_text("\n".join(json.dumps(x) for x in lines[:2]) + "\n{not json\n" + json.dumps(lines[2]) + "\n")
    src = SensorFilesSource(paths=[str(f)], time_field="ts", time_unit="ms", series_field="id")
    rows, rejected = read_all(src)
    assert [r["reason"] for r in rejected] == ["malformed_json"] and rejected[0]["location"].endswith(":3")
    assert [(r["series"].rsplit("#", 1)[1], r["env.temp"]) for r in rows] == [
        ("id=s1", 20.0),
        ("id=s1", 21.0),
        ("id=s2", 5.0),
    ]
    assert "col_id" in rows[0]  # a field named like a fixed column is renamed, not lost


def _gpx(path: Path) -> Path:
    pytest.importorskip("gpxpy", reason="pip install 'genloom[gpx]'")
    import gpxpy.gpx

    gpx = gpxpy.gpx.GPX()
    track = gpxpy.gpx.GPXTrack(name="walk")
    seg = gpxpy.gpx.GPXTrackSegment()
    t0 = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)
    for i, sec in enumerate([0, 10, 20, 50, 60]):  # 30 s and 40 s are gaps at a 10 s step
        t = datetime.fromtimestamp(t0.timestamp() + sec, UTC)
        seg.points.append(gpxpy.gpx.GPXTrackPoint(46.0 + i / 1000, 14.5, elevation=300 + i, time=t))
    seg.points.append(gpxpy.gpx.GPXTrackPoint(46.1, 14.6, elevation=400))  # no time
    track.segments.append(seg)
    gpx.tracks.append(track)
    path.write_text(gpx.to_xml())
    return path


def test_gpx_track_points_become_windows_with_gaps(tmp_path: Path) -> None:
    f = _gpx(tmp_path / "walk.gpx")
    src = SensorFilesSource(paths=[str(f)], window={"size": 7, "step": "10s"})
    rows, rejected = read_all(src)
    assert [r["reason"] for r in rejected] == ["no_timestamp"]
    (w,) = rows
    assert w["meta"]["channels"] == ["lat", "lon", "ele"]
    assert [m[0] for m in w["mask"]] == [True, True, True, False, False, True, True]
    assert [v[2] for v in w["values"]] == [300.0, 301.0, 302.0, None, None, 303.0, 304.0]
    assert w["start"] == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert w["series"] == f"{f}#track=0/segment=0"


def test_a_file_that_is_not_gpx_is_quarantined_and_config_errors_name_the_path(tmp_path: Path) -> None:
    pytest.importorskip("gpxpy", reason="pip install 'genloom[gpx]'")
    (tmp_path / "broken.gpx").write_text("<gpx><trk><trkseg><trkpt lat='x'")
    rows, rejected = read_all(SensorFilesSource(paths=[str(tmp_path / "broken.gpx")]))
    assert rows == [] and rejected[0]["reason"].startswith("read_error:")
    with pytest.raises(ConfigError) as e:
        SensorFilesSource(paths=[str(tmp_path / "broken.gpx")], timezone="Mars/Olympus").check("sources.1")
    assert e.value.path == "sources.1.timezone"


def test_windows_through_a_pipeline_land_in_parquet_shards(tmp_path: Path) -> None:
    data = tmp_path / "proj" / "data"
    data.mkdir(parents=True)
    start = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    lines = ["time,temp,hum"] + [
        f"{datetime.fromtimestamp(start + 60 * i, UTC).isoformat()},{20 + i % 5},{50 - i % 3}"
        for i in range(120)
        if i % 17 != 5  # a few missing minutes
    ]
    (data / "room.csv").write_text("\n".join(lines) + "\n")
    cfg = {
        "name": "sensors",
        "sources": [
            {
                "type": "sensor_files",
                "paths": ["data/*.csv"],
                "window": {"size": 30, "step": "1min", "stride": 15},
            }
        ],
    }
    path = tmp_path / "proj" / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    p = Pipeline.from_file(path)
    result = p.run()
    assert result.stages[0].rows == 7  # 120 minutes, windows of 30 every 15
    plan = next(x for x in p.plan() if x.stage == "ingest")
    (shard,) = p.store.read_manifest("ingest", plan.key)["shards"]
    table = pq.read_table(Path(p.store.shard_dir("ingest", shard)) / "data.parquet")
    assert table.schema.field("values").type == pa.list_(pa.list_(pa.float64()))
    missing = sum(json.loads(m)["missing"] for m in table.column("meta").to_pylist())
    assert missing > 0  # the missing minutes are marked
    assert Pipeline.from_file(path).run().stages[0].status == "cached"


# -- the shared real-world files


def test_shared_airline_csv_is_read_in_order(shared_data: Path) -> None:
    rows, rejected = read_all(
        SensorFilesSource(paths=[str(shared_data / "timeseries/airline-passengers.csv")])
    )
    assert rejected == [] and len(rows) == 144
    assert rows[0]["ts"] == datetime(1949, 1, 1, tzinfo=UTC) and rows[0]["Passengers"] == 112
    assert rows[-1]["ts"] == datetime(1960, 12, 1, tzinfo=UTC)


def test_shared_beijing_pm25_with_a_time_in_four_columns(shared_data: Path) -> None:
    src = SensorFilesSource(
        paths=[str(shared_data / "timeseries/beijing-pm25-pollution.csv")],
        time_field=["year", "month", "day", "hour"],
        window={"size": 24, "step": "1h", "channels": ["pm2.5", "TEMP", "PRES"]},
    )
    rows, rejected = read_all(src)
    assert rejected == [] and len(rows) == 43824 // 24
    first = rows[0]
    assert first["start"] == datetime(2010, 1, 1, tzinfo=UTC)
    # pm2.5 is NA for the whole first day: a gap in the mask, the other channels observed
    assert all(not m[0] and m[1] and m[2] for m in first["mask"])
    total_missing = sum(r["meta"]["missing"] for r in rows)
    assert total_missing == 2067  # the file's NA cells of pm2.5


def test_shared_gpx_tracks_quarantine_points_without_a_time(shared_data: Path) -> None:
    pytest.importorskip("gpxpy", reason="pip install 'genloom[gpx]'")
    rows, rejected = read_all(SensorFilesSource(paths=[str(shared_data / "timeseries/korita-zbevnica.gpx")]))
    assert len(rows) == 513 and len(rejected) == 871 - 513
    assert {r["reason"] for r in rejected} == {"no_timestamp"}
    ts = [r["ts"] for r in rows]
    assert ts == sorted(ts) and ts[0].tzinfo is not None


def test_the_files_source_hands_gpx_tracks_to_sensor_files(tmp_path: Path) -> None:
    from genloom.sources.files import FilesSource

    _gpx(tmp_path / "walk.gpx")
    (tmp_path / "notes.txt").write_text("plain notes")
    rows, rejected = read_all(FilesSource(paths=[str(tmp_path)]))
    assert [r["reason"] for r in rejected] == ["no_timestamp"]
    assert sorted({r["source"] for r in rows}) == ["sensor_files", "text"]
    assert [r["ele"] for r in rows if r["source"] == "sensor_files"] == [300.0, 301.0, 302.0, 303.0, 304.0]

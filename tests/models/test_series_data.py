"""Series windows for the series families: shapes and masks (gaps, partial windows), conditions
per window, splits by time without overlap, the scaler fitted on training windows only, window
records and readings giving the same windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from genloom.core.errors import ConfigError
from genloom.models.base import PrepareInput
from genloom.models.series_data import (
    SeriesLayout,
    SeriesVAEConfig,
    collect_windows,
    model_inputs,
    split_by_time,
)
from genloom.sources._series import WindowConfig, series_windows

HOUR = 3_600_000_000_000
T0 = 1_704_067_200 * 1_000_000_000  # 2024-01-01T00:00Z
SENSORS = {  # name: (device, site, level, amplitude)
    "t-north": ("thermostat", "north", 20.0, 2.0),
    "t-south": ("thermostat", "south", 22.0, 2.5),
    "m-north": ("meter", "north", 200.0, 40.0),
    "m-south": ("meter", "south", 180.0, 30.0),
}


def readings(hours: int = 24 * 12, gaps: tuple[int, ...] = (5, 30, 31), seed: int = 0) -> pa.Table:
    """Hourly readings of four sensors (two thermostats near 20, two meters near 200) with a daily
    cycle; the readings at hours ``gaps`` are missing from every sensor."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("ts", "series", "device", "site", "value", "humidity")}
    for name, (device, site, level, amp) in SENSORS.items():
        for h in range(hours):
            if h in gaps:
                continue
            cols["ts"].append((T0 + h * HOUR) // 1000)
            cols["series"].append(name)
            cols["device"].append(device)
            cols["site"].append(site)
            cols["value"].append(level + amp * np.sin(2 * np.pi * h / 24) + rng.normal(0, 0.1 * amp))
            cols["humidity"].append(50 + 10 * np.cos(2 * np.pi * h / 24) + rng.normal(0, 1))
    table = pa.table(cols)
    return table.set_column(0, "ts", table.column("ts").cast(pa.timestamp("us", tz="UTC")))


def prepare_input(table: pa.Table, test: bool = False) -> PrepareInput:
    """What the prepare stage hands a family (one batch; the hash split is not used by series)."""
    return PrepareInput(
        batches=lambda cols: iter([table]),
        columns=table.column_names,
        split=lambda b: ["train"] * b.num_rows,
        resolve=str,
        test=test,
    )


def config(**kw: object) -> SeriesVAEConfig:
    kw.setdefault("window", WindowConfig(size=24, step="1h", fill="linear"))
    kw.setdefault("conditions", ["device", "site"])
    return SeriesVAEConfig(**kw)  # type: ignore[arg-type]


def test_readings_become_windows_with_gaps_masked() -> None:
    w = collect_windows(iter([readings()]), readings().column_names, config())
    assert w.channels == ["value", "humidity"]
    assert w.values.shape == (4 * 12, 24, 2) and w.mask.shape == w.values.shape
    assert (w.lengths == 24).all()
    first = [i for i, s in enumerate(w.series) if s == "t-north"]
    first.sort(key=lambda i: w.start[i])
    day0, day1 = first[0], first[1]
    # hour 5 is a gap of day 0, hours 30 and 31 of day 1 (steps 6 and 7): masked, linearly filled
    assert not w.mask[day0, 5].any() and w.mask[day0, [4, 6]].all()
    assert not w.mask[day1, [6, 7]].any() and w.mask[day1, :6].all()
    assert w.mask.sum() == w.mask.size - 4 * 3 * 2
    assert np.isfinite(w.values[day0, 5]).all()  # fill: linear
    assert w.values[day0, 5, 0] == pytest.approx((w.values[day0, 4, 0] + w.values[day0, 6, 0]) / 2)
    assert w.start[day1] - w.start[day0] == 24 * HOUR and w.step_ns == HOUR


def test_conditions_are_each_window_s_static_attributes() -> None:
    w = collect_windows(iter([readings()]), readings().column_names, config())
    for i, s in enumerate(w.series):
        assert (w.conditions["device"][i], w.conditions["site"][i]) == SENSORS[s][:2]


def test_partial_windows_are_padded_and_masked() -> None:
    cfg = config(window=WindowConfig(size=24, step="1h", partial=True))
    table = readings(hours=24 * 3 + 10, gaps=())
    w = collect_windows(iter([table]), table.column_names, cfg)
    assert sorted(set(w.lengths.tolist())) == [10, 24]
    short = int(np.argmin(w.lengths))
    assert not w.mask[short, 10:].any() and w.mask[short, :10].all()
    layout = SeriesLayout.fit(w, 10)
    arrays = model_inputs(w, layout)
    assert arrays["values"].shape == (len(w), 24, 2) and (arrays["values"][short, 10:] == 0).all()
    assert arrays["values"].min() >= 0 and arrays["values"].max() <= 1
    assert layout.lengths == [10, 24] and layout.length_counts == [4, 12]


@pytest.mark.parametrize("test_fraction", [None, 0.1])
def test_splits_follow_time_and_never_overlap(test_fraction: float | None) -> None:
    cfg = config(window=WindowConfig(size=24, stride=6, step="1h"))  # sliding: neighbours overlap
    table = readings(hours=24 * 20)
    w = collect_windows(iter([table]), table.column_names, cfg)
    parts, dropped = split_by_time(w, 0.2, test_fraction)
    names = ["train", "val", *(["test"] if test_fraction else [])]
    assert set(parts) == set(names) and all(len(parts[n]) for n in names)
    assert dropped["overlaps_val"] == 4 * 3  # the 3 sliding windows per sensor that straddle the cut
    for series in SENSORS:
        for earlier, later in zip(names, names[1:], strict=False):
            a = [i for i in parts[earlier] if w.series[i] == series]
            b = [i for i in parts[later] if w.series[i] == series]
            assert max(w.end[i] for i in a) < min(w.start[i] for i in b), (series, earlier, later)
    every = np.concatenate([parts[n] for n in names])
    assert len(set(every.tolist())) == len(every)  # disjoint
    n_val = sum(1 for i in parts["val"] if w.series[i] == "t-north")
    n_all = sum(1 for s in w.series if s == "t-north")
    assert (
        n_val == round(0.2 * n_all) - dropped.get("overlaps_test", 0) // 4
    )  # less those straddling the test cut


def test_the_scaler_is_fitted_on_training_windows_only(tmp_path: Path) -> None:
    from genloom.models.series_vae import SeriesVAEFamily

    table = readings(hours=24 * 10)
    values = table.column("value").to_numpy().copy()
    late = np.asarray(table.column("ts").cast(pa.int64()).to_numpy()) >= (T0 + 24 * 9 * HOUR) // 1000
    values[late] = 10_000.0  # the last day (validation) is far out of the training range
    table = table.set_column(table.column_names.index("value"), "value", pa.array(values))

    class Train:
        model = config()

    prepared = SeriesVAEFamily().prepare(prepare_input(table), Train(), tmp_path)
    layout = json.loads((tmp_path / "series.json").read_text())
    assert layout["high"][0] < 300 and layout["low"][0] > 10  # the meters' and thermostats' range
    val = np.load(tmp_path / "val_values.npy")
    assert val[..., 0].max() == 1.0  # clipped to the training range
    assert prepared.stats["train_windows"] == 4 * 8 and prepared.stats["val_windows"] == 4 * 2
    assert layout["conditions"] == {"device": ["meter", "thermostat"], "site": ["north", "south"]}
    for split in ("train", "val"):
        assert (
            np.load(tmp_path / f"{split}_mask.npy").shape == np.load(tmp_path / f"{split}_values.npy").shape
        )


def test_window_records_give_the_same_windows_as_readings() -> None:
    """Windows a source already cut (sensor_files / mqtt with ``window``) are taken as they are."""
    cfg = config(conditions=[])
    table = readings()
    from_readings = collect_windows(iter([table]), table.column_names, cfg)
    records = []
    for name in SENSORS:
        rows = table.filter(pa.compute.equal(table.column("series"), name))
        t = rows.column("ts").cast(pa.int64()).to_numpy() * 1000
        v = np.stack([rows.column(c).to_numpy() for c in ("value", "humidity")], axis=1)
        records += [x for x in series_windows("sensor_files", name, t, v, ["value", "humidity"], cfg.window)]
    win_table = pa.concat_tables(records)
    from_records = collect_windows(iter([win_table]), win_table.column_names, cfg)
    order_a = np.lexsort((from_readings.start, from_readings.series))
    order_b = np.lexsort((from_records.start, from_records.series))
    assert from_records.channels == ["value", "humidity"] and from_records.step_ns == HOUR
    np.testing.assert_allclose(from_records.values[order_b], from_readings.values[order_a])
    assert (from_records.mask[order_b] == from_readings.mask[order_a]).all()
    assert (from_records.start[order_b] == from_readings.start[order_a]).all()


def test_calendar_conditions_come_from_each_window_s_start() -> None:
    """2024-02-28T06:00Z (a Wednesday; 2024 is a leap year), windows of 24 hours every 12: they
    start Wed 28 Feb 06:00, 18:00, Thu 29 Feb 06:00, 18:00, Fri 1 Mar 06:00, ..."""
    start = 1_709_100_000 * 1_000_000_000  # 2024-02-28T06:00:00Z
    hours = 24 * 4
    table = pa.table(
        {
            "ts": pa.array([(start + h * HOUR) // 1000 for h in range(hours)], pa.timestamp("us", tz="UTC")),
            "series": ["s"] * hours,
            "site": ["north"] * hours,
            "value": [float(h) for h in range(hours)],
        }
    )
    cfg = config(
        window=WindowConfig(size=24, stride=12, step="1h"),
        conditions=["site"],
        calendar=["month", "weekday", "hour"],
    )
    w = collect_windows(iter([table]), table.column_names, cfg)
    order = np.argsort(w.start)
    got = [tuple(w.conditions[c][i] for c in ("site", "month", "weekday", "hour")) for i in order]
    assert got == [
        ("north", "2", "wed", "6"),
        ("north", "2", "wed", "18"),
        ("north", "2", "thu", "6"),
        ("north", "2", "thu", "18"),
        ("north", "3", "fri", "6"),
        ("north", "3", "fri", "18"),
        ("north", "3", "sat", "6"),
    ]
    layout = SeriesLayout.fit(w, 50)
    assert list(layout.conditions) == ["site", "month", "weekday", "hour"]
    assert layout.conditions["month"] == ["2", "3"] and layout.conditions["hour"] == [
        "6",
        "18",
    ]  # by frequency: 4 and 3
    with pytest.raises(ConfigError, match="both a condition and a calendar"):
        collect_windows(iter([table]), table.column_names, config(conditions=["month"], calendar=["month"]))
    with pytest.raises(ValidationError):
        config(calendar=["fortnight"])

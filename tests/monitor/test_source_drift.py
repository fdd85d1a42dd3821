"""Drift of new source records of a table model: only the rows whose id the champion's data does
not hold are counted; numeric columns by PSI on the profile's bins, categories by JS distance."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa

from genloom.core.store import content_key
from genloom.monitor.signals import Thresholds
from genloom.monitor.source_drift import _table, new_record_batches
from genloom.stages.profile import TrainingData, model_profile, training_data
from tests.monitor.trained import trained_model


def _rows(n: int, lo: float, hi: float, levels: list[str], seed: int, start: int) -> dict[str, list]:
    rng = random.Random(seed)
    return {
        "id": [f"t:{start + i}" for i in range(n)],
        "x": [rng.uniform(lo, hi) for _ in range(n)],
        "c": [rng.choice(levels) for _ in range(n)],
    }


def _current(p, old: TrainingData, added: dict[str, list]) -> TrainingData:
    """A data artifact holding the champion's rows and ``added``."""
    table = pa.table(
        {
            "id": added["id"],
            "source": ["t"] * len(added["id"]),
            "meta": ["{}"] * len(added["id"]),
            "x": added["x"],
            "c": added["c"],
        }
    )
    key = content_key("shard", "added", added["id"][0])
    p.store.write_shard("features", key, table, [], [], {})
    return TrainingData("", "", content_key("data", key), "features", [*old.shards, key], {}, {})


def test_only_new_rows_are_counted_and_a_shift_breaches(tmp_path: Path) -> None:
    base = _rows(400, 0.0, 1.0, ["a", "b"], 0, 0)
    _, p, version = trained_model(tmp_path / "p", {"x": base["x"], "c": base["c"]}, model_type="tabular_gan")
    try:
        profile, _ = model_profile(p.store, p.catalog, p.cfg.name, version)
        old = training_data(p.store, p.catalog, str(version["artifact_key"]))
        th = Thresholds(min_requests=50)

        same = _current(p, old, _rows(200, 0.0, 1.0, ["a", "b"], 1, 1000))
        assert sum(b.num_rows for b in new_record_batches(p.store, old, same, ["x"])) == 200
        ok = {c.signal: c for c in _table(p.store, old, same, profile, th)}
        assert not ok["x"].breached and not ok["c"].breached and ok["x"].evidence["new_records"] == 200

        moved = _current(p, old, _rows(200, 5.0, 6.0, ["z"], 2, 2000))
        bad = {c.signal: c for c in _table(p.store, old, moved, profile, th)}
        assert bad["x"].breached and bad["x"].method == "psi" and bad["x"].evidence["counts"][-1] == 200
        assert bad["c"].breached and bad["c"].method == "js" and bad["c"].score > 0.9

        thin = _current(p, old, _rows(10, 5.0, 6.0, ["z"], 3, 3000))
        skipped = _table(p.store, old, thin, profile, th)
        assert all(c.skipped and "10 new records" in c.skipped for c in skipped)
    finally:
        p.close()

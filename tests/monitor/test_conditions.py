"""Drift of the conditions table models are asked for: requests that ask for the training mix of
a column pass, requests that mostly ask for a level rare in training (or never seen) breach, a
numeric condition is binned on the profile's quantile bins, thin columns are skipped."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert

from genloom.monitor.conditions import condition_checks, condition_counts
from genloom.monitor.signals import Thresholds
from genloom.serve.traffic import RequestLog, requests

PROFILE = {
    "kind": "table",
    "columns": {
        "region": {
            "kind": "categorical",
            "levels": {"US": 600, "EU": 300, "APAC": 100},
            "other": 0,
            "distinct": 3,
            "n": 1000,
        },
        "age": {
            "kind": "numeric",
            "edges": [30.0, 40.0, 50.0],
            "bin_counts": [250, 250, 250, 250],
            "n": 1000,
        },
    },
}
NOW = datetime.now(UTC)


def _log(path: Path, conditions: list[dict], n: int = 10, **extra: object) -> object:
    engine = create_engine(f"sqlite:///{path}")
    RequestLog(engine)
    rows = [
        {
            "request_id": f"r{i}",
            "created_at": NOW - timedelta(minutes=5),
            "endpoint": "/v1/samples",
            "model": "t",
            "version": 1,
            "latency_s": 0.1,
            "status": 200,
            "prompt": json.dumps({"n": n, "conditions": c}),
            **extra,
        }
        for i, c in enumerate(conditions)
    ]
    with engine.begin() as c:
        c.execute(insert(requests), rows)
    return engine


def _checks(engine: object) -> dict:
    counts = condition_counts(engine, "t", NOW - timedelta(hours=1), NOW)
    return {c.signal: c for c in condition_checks(PROFILE, counts, Thresholds(min_requests=50))}


def test_the_training_mix_passes_and_a_rare_level_breaches(tmp_path: Path) -> None:
    rng = random.Random(0)
    same = [{"region": rng.choices(["US", "EU", "APAC"], [6, 3, 1])[0]} for _ in range(200)]
    ok = _checks(_log(tmp_path / "a.db", same))["condition:region"]
    assert not ok.breached and ok.score is not None and ok.score < 0.1 and ok.evidence["requests"] == 200

    moved = [{"region": "APAC" if i % 10 else "Mars"} for i in range(200)]
    bad = _checks(_log(tmp_path / "b.db", moved))["condition:region"]
    assert bad.breached and bad.method == "js" and bad.score is not None and bad.score > 0.4
    assert bad.evidence["unseen_in_training"] == ["Mars"] and bad.evidence["rows"] == 2000


def test_a_numeric_condition_is_binned_and_a_thin_column_skipped(tmp_path: Path) -> None:
    conds = [{"age": 70, "region": "US"} if i < 10 else {"age": 70} for i in range(100)]
    checks = _checks(_log(tmp_path / "c.db", conds))
    age = checks["condition:age"]
    assert age.method == "psi" and age.breached and age.evidence["counts"] == [0, 0, 0, 1000]
    region = checks["condition:region"]
    assert region.skipped and "10 requests condition on region" in region.skipped and not region.breached


def test_redacted_and_failed_requests_are_not_counted(tmp_path: Path) -> None:
    engine = _log(tmp_path / "d.db", [{"region": "EU"}] * 60, status=400)
    assert _checks(engine) == {}
    RequestLog(engine)
    with engine.begin() as c:
        c.execute(
            insert(requests),
            [
                {
                    "request_id": "x",
                    "created_at": NOW - timedelta(minutes=1),
                    "endpoint": "/v1/samples",
                    "model": "t",
                    "version": 1,
                    "latency_s": 0.1,
                    "status": 200,
                    "prompt": None,
                }
            ],
        )
    counts = condition_counts(engine, "t", NOW - timedelta(hours=1), NOW)
    assert counts.samples_requests == 1 and counts.unreadable == 1 and not counts.rows

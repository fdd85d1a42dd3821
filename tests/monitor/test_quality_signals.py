"""The repetition and truncation quality checks: tiny windows written to a real SQLite catalog,
read by ``run_checks``; truncation from a log that stores ``finish_reason`` or ``max_tokens``
(copies of the requests table with one of them) and skipped on an older log, which has neither."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert

import genloom.monitor.signals as signals
from genloom.monitor.signals import Thresholds, repetitive_outputs, run_checks
from genloom.serve.traffic import RequestLog, requests
from genloom.stages.profile import split_words

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
VARIED = [
    "the model answered the question about tables with a short clear reply today",
    "a server logged every request and its latency for the nightly report",
    "users asked for summaries of long files and got three useful sentences back",
    "one query returned rows from two columns joined on the user key",
]
LOOPING = [
    "the cat sat on the mat the cat sat on the mat the cat sat on the mat",
    "yes yes yes yes yes yes yes yes yes yes",
]


def _rows(outputs: list[str], **extra: list) -> list[dict]:
    return [
        {
            "request_id": f"r{i}",
            "created_at": NOW - timedelta(minutes=1),
            "endpoint": "/v1/completions",
            "model": "m",
            "version": 1,
            "latency_s": 0.1,
            "status": 200,
            "prompt": "write something",
            "output": o,
            **{k: v[i] for k, v in extra.items()},
        }
        for i, o in enumerate(outputs)
    ]


def _checks(engine, rows: list[dict], table: Table = requests) -> dict[str, signals.Check]:
    RequestLog(engine)  # creates the tables that do not exist yet
    with engine.begin() as c:
        c.execute(insert(table), rows)
    report = run_checks(
        engine, "m", 1, {"kind": "table"}, "ref", False, NOW - timedelta(hours=1), NOW, record=False
    )
    return {c.signal: c for c in report.checks}


def test_distinct_4gram_ratio_per_output():
    texts = pa.array(
        ["a b c d a b c d a b c d", "a b c d e f g h", "short one", "x " * 10], pa.large_string()
    )
    words, counts = split_words(texts)
    # 9 4-grams with 4 distinct (0.44), 5 of 5, too short, 7 of one kind
    assert repetitive_outputs(words, counts) == (3, 2)
    assert repetitive_outputs(words, np.zeros(0, dtype=np.int64)) == (0, 0)


def test_repetitive_window_breaches_and_a_varied_one_does_not(tmp_path):
    looping = _checks(create_engine(f"sqlite:///{tmp_path / 'a.db'}"), _rows(VARIED * 2 + LOOPING * 2))
    rep = looping["repetition_rate"]
    assert rep.kind == "quality" and rep.method == "rate" and rep.breached
    assert (rep.evidence["count"], rep.evidence["of"]) == (4, 12)
    assert rep.threshold == Thresholds().repetition_rate
    varied = _checks(create_engine(f"sqlite:///{tmp_path / 'b.db'}"), _rows(VARIED * 3 + ["ok", ""]))
    rep = varied["repetition_rate"]
    assert not rep.breached and (rep.score, rep.evidence["count"], rep.evidence["of"]) == (0.0, 0, 12)
    short = _checks(create_engine(f"sqlite:///{tmp_path / 'c.db'}"), _rows(["ok", "fine then"]))
    assert short["repetition_rate"].skipped and not short["repetition_rate"].breached


def test_truncation_is_skipped_on_a_log_without_finish_reason_or_max_tokens(tmp_path, monkeypatch):
    table = _stop_table()
    monkeypatch.setattr(signals, "requests", table)
    checks = _checks(create_engine(f"sqlite:///{tmp_path / 'a.db'}"), _rows(VARIED), table)
    trunc = checks["truncation_rate"]
    assert not trunc.breached and trunc.score is None
    assert trunc.skipped is not None and "no finish_reason and no max_tokens" in trunc.skipped


def test_truncation_of_an_empty_window_says_so(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    report = run_checks(
        engine, "m", 1, {"kind": "table"}, "ref", False, NOW - timedelta(hours=1), NOW, record=False
    )
    (trunc,) = [c for c in report.checks if c.signal == "truncation_rate"]
    assert trunc.skipped == "no requests in the window"


def _stop_table(*extra: Column) -> Table:
    """The requests table as it was before it stored how each response stopped (no
    ``finish_reason``, no ``max_tokens``), with the ``extra`` columns of those."""
    kept = [c for c in requests.columns if c.name not in ("finish_reason", "max_tokens")]
    base = (Column(c.name, c.type, primary_key=c.primary_key) for c in kept)
    return Table("requests", MetaData(), *base, *extra)


@pytest.mark.parametrize("sqlalchemy_rows", [False, True])
def test_truncation_from_finish_reason(tmp_path, monkeypatch, sqlalchemy_rows):
    table = _stop_table(Column("finish_reason", String(20)))
    monkeypatch.setattr(signals, "requests", table)
    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    if sqlalchemy_rows:  # the backend-neutral path, not the sqlite3 cursor
        monkeypatch.setattr(engine.dialect, "driver", "not-pysqlite")
    table.metadata.create_all(engine)
    many = _checks(engine, _rows(VARIED, finish_reason=["length", "length", "length", "stop"]), table)
    t = many["truncation_rate"]
    assert t.breached and (t.score, t.evidence["count"], t.evidence["of"]) == (0.75, 3, 4)
    engine2 = create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    if sqlalchemy_rows:
        monkeypatch.setattr(engine2.dialect, "driver", "not-pysqlite")
    table.metadata.create_all(engine2)
    few = _checks(engine2, _rows(VARIED, finish_reason=["length", "stop", "stop", None]), table)
    t = few["truncation_rate"]
    assert not t.breached and (t.evidence["count"], t.evidence["of"]) == (1, 3)


def test_truncation_from_completion_and_max_tokens(tmp_path, monkeypatch):
    table = _stop_table(Column("max_tokens", Integer))
    monkeypatch.setattr(signals, "requests", table)
    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    table.metadata.create_all(engine)
    rows = _rows(VARIED, completion_tokens=[16, 16, 5, 16], max_tokens=[16, 16, 16, 32])
    t = _checks(engine, rows, table)["truncation_rate"]
    assert not t.breached and (t.score, t.evidence["count"], t.evidence["of"]) == (0.5, 2, 4)

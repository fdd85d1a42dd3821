"""`genloom monitor`: in-distribution traffic exits 0, shifted traffic exits 1 naming the drifting
signals, no champion exits 2; every check lands in the monitoring log (catalog on SQLite)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from genloom.cli import app
from genloom.monitor.cli import parse_window
from genloom.monitor.store import MonitorLog
from genloom.serve.traffic import RequestLog, feedback, requests
from tests.monitor.trained import trained_model

WORDS = [
    "the",
    "data",
    "model",
    "train",
    "record",
    "value",
    "table",
    "column",
    "query",
    "server",
    "user",
    "report",
    "time",
    "file",
]
OTHER = ["zebra", "quantum", "violin", "glacier", "saffron", "tundra", "oboe", "nebula", "mango", "fjord"]


def _texts(rng: np.random.Generator, n: int, words: list[str], low: int, high: int) -> list[str]:
    return [" ".join(rng.choice(words, size=int(rng.integers(low, high)))) for _ in range(n)]


def _log(engine, rows: list[dict]) -> None:
    RequestLog(engine)  # creates the tables
    with engine.begin() as c:
        c.execute(insert(requests), rows)


def _rows(
    model: str, prompts: list[str], outputs: list[str], at: datetime, tag: str, status: int = 200
) -> list[dict]:
    return [
        {
            "request_id": f"{tag}{i}",
            "created_at": at,
            "endpoint": "/v1/completions",
            "model": model,
            "version": 1,
            "latency_s": 0.05 + 0.001 * (i % 10),
            "status": status,
            "prompt": p,
            "output": o,
        }
        for i, (p, o) in enumerate(zip(prompts, outputs, strict=True))
    ]


@pytest.fixture
def project(tmp_path):
    rng = np.random.default_rng(0)
    path, p, _ = trained_model(tmp_path / "p", {"text": _texts(rng, 1000, WORDS, 5, 15)})
    yield path, p, rng
    p.close()


def test_monitor_in_distribution_then_shifted(project):
    path, p, rng = project
    name, now = p.model_name, datetime.now(UTC)
    same = _texts(rng, 400, WORDS, 5, 15)
    rows = _rows(name, same, _texts(rng, 400, WORDS, 5, 15), now - timedelta(hours=1), "a")
    # long prompts in other words three days ago: outside the default 24 h window
    rows += _rows(name, _texts(rng, 300, OTHER, 40, 60), same[:300], now - timedelta(days=3), "old")
    _log(p.catalog.engine, rows)
    runner = CliRunner()

    r = runner.invoke(app, ["monitor", str(path), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["requests"] == 400 and report["breached"] == [] and report["exit_code"] == 0
    by = {(c["signal"], c["method"]): c for c in report["checks"]}
    assert by[("prompt_words", "psi")]["score"] < 0.2 and by[("prompt_words", "ks")]["p_value"] > 0.01
    assert by[("prompt_oov_rate", "js")]["score"] == pytest.approx(0.0)  # every word is in the vocabulary
    assert by[("error_rate", "rate")]["score"] == 0.0 and by[("latency_p95", "quantile")]["score"] < 0.07
    assert by[("negative_feedback_rate", "rate")]["skipped"]  # no ratings yet
    assert report["profile"]["computed_now"] is True
    log = MonitorLog(p.catalog.engine)
    first = log.checks(model=name)
    assert len(first) == len(report["checks"]) and not any(c["breached"] for c in first)

    # the window that holds the shifted rows: much longer prompts in other words
    since = (now - timedelta(days=4)).isoformat()
    r = runner.invoke(app, ["monitor", str(path), "--since", since])
    assert r.exit_code == 1, r.output
    assert "breach" in r.output and "prompt_words (psi)" in r.output and "prompt_oov_rate (js)" in r.output
    r = runner.invoke(app, ["monitor", str(path), "--since", since, "--json"])
    report = json.loads(r.output)
    assert report["requests"] == 700 and report["profile"]["computed_now"] is False
    assert set(report["breached"]) >= {
        "prompt_words:psi",
        "prompt_words:ks",
        "prompt_oov_rate:js",
        "prompt_oov_rate:chi2",
    }
    assert not any(b.startswith("output_words") for b in report["breached"])  # outputs stayed in distribution
    by = {(c["signal"], c["method"]): c for c in report["checks"]}
    oov = sum(len(r["prompt"].split()) for r in rows[400:])  # every word of the old prompts is new
    total = oov + sum(len(r["prompt"].split()) for r in rows[:400])
    assert by[("prompt_oov_rate", "js")]["evidence"]["oov_rate"] == pytest.approx(oov / total)
    assert (
        by[("prompt_words", "psi")]["evidence"]["mean"]
        > by[("prompt_words", "psi")]["evidence"]["reference_mean"]
    )
    stored = log.checks(model=name)
    assert {(c["signal"], c["method"]) for c in stored if c["breached"]} >= {
        ("prompt_words", "psi"),
        ("prompt_oov_rate", "js"),
    }
    assert all(c["version"] == 1 and c["window_start"] is not None for c in stored)


PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (the project's SQLite file), or a fresh schema of the machine's PostgreSQL."""
    if request.param == "sqlite":
        yield None
        return
    try:
        import psycopg

        psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", connect_timeout=3).close()
    except Exception:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432 (.ci/run starts it)")
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as c:
        c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def test_monitor_errors_and_feedback_breach(tmp_path, catalog_url):
    rng = np.random.default_rng(1)
    path, p, _ = trained_model(
        tmp_path / "p", {"text": _texts(rng, 300, WORDS, 5, 15)}, catalog_url=catalog_url
    )
    name, at = p.model_name, datetime.now(UTC) - timedelta(minutes=5)
    same = _texts(rng, 100, WORDS, 5, 15)
    rows = _rows(name, same, same, at, "ok") + _rows(name, same[:10], [None] * 10, at, "err", status=500)
    # two hours ago, outside --window 1h: errors and long prompts in other words that must not count
    rows += _rows(name, _texts(rng, 50, OTHER, 40, 60), same[:50], at - timedelta(hours=2), "old", status=500)
    rows += _rows("another-model", same[:20], [None] * 20, at, "x", status=500)
    _log(p.catalog.engine, rows)
    with p.catalog.engine.begin() as c:
        c.execute(
            insert(feedback),
            [{"request_id": f"ok{i}", "created_at": at, "rating": -1 if i < 8 else 1} for i in range(12)],
        )
    r = CliRunner().invoke(app, ["monitor", str(path), "--window", "1h", "--json"])
    assert r.exit_code == 1, r.output
    report = json.loads(r.output)
    assert report["requests"] == 110 and report["text_requests"] == 100
    assert set(report["breached"]) == {"error_rate:rate", "negative_feedback_rate:rate"}
    by = {c["signal"]: c for c in report["checks"] if c["method"] == "rate"}
    assert by["error_rate"]["score"] == pytest.approx(10 / 110)
    assert by["negative_feedback_rate"]["score"] == pytest.approx(8 / 12)
    stored = MonitorLog(p.catalog.engine).checks(model=name)
    assert {c["signal"] for c in stored if c["breached"]} == {"error_rate", "negative_feedback_rate"}
    p.close()


def test_monitor_without_champion_exits_2(tmp_path):
    path, p, _ = trained_model(tmp_path / "p", {"text": ["a b c"] * 4}, promote=False)
    p.close()
    r = CliRunner().invoke(app, ["monitor", str(path)])
    assert r.exit_code == 2 and "has no champion to monitor" in r.output
    r = CliRunner().invoke(app, ["monitor", str(path), "--model", "other", "--json"])
    assert r.exit_code == 2 and json.loads(r.output)["exit_code"] == 2
    r = CliRunner().invoke(app, ["monitor", str(path), "--window", "soon"])
    assert r.exit_code == 2 and "not a duration" in r.output


def test_parse_window():
    now = datetime(2026, 1, 2, 12, tzinfo=UTC)
    assert parse_window(None, None, now) == (now - timedelta(hours=24), now)
    assert parse_window(None, "1h30m", now)[0] == now - timedelta(minutes=90)
    assert parse_window("2026-01-01T06:00", None, now)[0] == datetime(2026, 1, 1, 6, tzinfo=UTC)
    assert parse_window("2026-01-01T06:00+02:00", None, now)[0] == datetime(2026, 1, 1, 4, tzinfo=UTC)


def test_monitor_table_model_checks_quality_only(tmp_path):
    path, p, _ = trained_model(tmp_path / "p", {"x": [1.0, 2.0, 3.0, 4.0]}, model_type="tabular_gan")
    at = datetime.now(UTC) - timedelta(minutes=1)
    rows = _rows(p.model_name, ['{"n": 5, "conditions": null}'] * 3, [None] * 3, at, "s")
    _log(p.catalog.engine, [{**r, "endpoint": "/v1/samples"} for r in rows])
    p.close()
    r = CliRunner().invoke(app, ["monitor", str(path), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["requests"] == 3 and report["text_requests"] == 0
    assert {c["kind"] for c in report["checks"]} == {"quality", "feedback"}


FRENCH = [
    "Le chat dort sur la table de la cuisine depuis ce matin.",
    "Nous avons mangé une pomme et bu un café avant de partir.",
    "Où se trouve la gare la plus proche, s'il vous plaît ?",
    "Je voudrais réserver une chambre pour deux nuits la semaine prochaine.",
    "Les enfants jouent dans le jardin pendant que leurs parents discutent.",
    "Il faut envoyer le rapport au directeur avant la fin de la journée.",
]


def _english() -> list[str]:
    import pydoc_data.topics as topics  # the reference text every interpreter carries
    import re

    text = " ".join(topics.topics[k] for k in sorted(topics.topics)[:20])
    sentences = (s.strip() for s in re.split(r"(?<=[.!?])\s+", text))
    return [s for s in sentences if 40 < len(s) < 200 and not s.startswith((">>>", "..."))]


def test_monitor_language_mix(tmp_path):
    english = _english()
    train, held_out = english[::2], english[1::2]
    path, p, _ = trained_model(tmp_path / "p", {"text": train, "lang": ["en"] * len(train)})
    name, at = p.model_name, datetime.now(UTC)
    french = [FRENCH[i % len(FRENCH)] for i in range(60)]
    _log(p.catalog.engine, _rows(name, french, held_out[:60], at - timedelta(hours=3), "fr"))
    _log(p.catalog.engine, _rows(name, held_out[:60], held_out[:60], at - timedelta(minutes=30), "en"))
    p.close()

    def language(window: str) -> dict:
        r = CliRunner().invoke(app, ["monitor", str(path), "--window", window, "--json"])
        return {c["method"]: c for c in json.loads(r.output)["checks"] if c["signal"] == "prompt_language"}

    english_only = language("1h")
    assert not english_only["js"]["breached"] and not english_only["chi2"]["breached"]
    assert (
        english_only["js"]["evidence"]["counts"]["en"] >= 57
        and english_only["js"]["evidence"]["sample"] == 60
    )
    mixed = language("24h")  # 60 French prompts and the 60 English ones
    assert mixed["js"]["breached"] and mixed["js"]["evidence"]["counts"].get("fr", 0) >= 45
    assert mixed["chi2"]["breached"] and mixed["chi2"]["p_value"] < 0.01


def test_window_reads_chat_and_several_prompts():
    from genloom.monitor.signals import WindowAccumulator

    chat = json.dumps(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the data model"}]
    )
    acc = WindowAccumulator(["the", "data", "model", "brief"], languages=False)
    acc.add(
        ["/v1/chat/completions", "/v1/completions", "/v1/completions", "/v1/samples"],
        np.array([200, 200, 500, 200]),
        np.array([0.1, 0.2, 0.3, 0.4]),
        [chat, json.dumps(["the table", "zebra"]), "the", '{"n": 1}'],
        ["a reply", json.dumps(["one", "two", ""]), None, None],
    )
    assert (acc.requests, acc.text_requests, acc.errors) == (4, 2, 1)
    # prompts: "be brief\nthe data model" (5 words), "the table" (2), "zebra" (1)
    assert acc.prompt_len.sparse()[0].tolist() == [1, 2, 5] and acc.words == 8
    assert acc.oov == 3  # be, table, zebra
    assert (acc.outputs, acc.empty_outputs) == (4, 1)


def test_redacted_log_skips_text_signals(project):
    path, p, _ = project
    rows = _rows(p.model_name, [None] * 60, [None] * 60, datetime.now(UTC) - timedelta(minutes=1), "r")
    _log(p.catalog.engine, rows)
    r = CliRunner().invoke(app, ["monitor", str(path), "--json", "--window", "1h"])
    assert r.exit_code == 0, r.output
    checks = {(c["signal"], c["method"]): c for c in json.loads(r.output)["checks"]}
    assert "redact: true" in checks[("prompt_words", "psi")]["skipped"]
    assert "redact: true" in checks[("prompt_oov_rate", "js")]["skipped"]
    assert checks[("error_rate", "rate")]["score"] == 0.0

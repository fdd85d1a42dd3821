"""The ``feedback`` source: corrections on logged requests become records with their provenance,
from the pipeline's own catalog (SQLite), and a new correction changes the ingest key."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from genloom.core.steps import StepContext
from genloom.pipeline import Pipeline
from genloom.serve.traffic import RequestLog, RequestRecord
from genloom.stages.base import plan_for

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour"}]


def _pipeline(folder: Path, **source: object) -> Pipeline:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"name": "fb", "sources": [{"type": "feedback", **source}]}
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    return Pipeline.from_file(folder / "pipeline.yaml")


def _log(p: Pipeline) -> RequestLog:
    log = RequestLog(p.catalog.engine)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def add(rid: str, endpoint: str, prompt: str | None, model: str = "fb") -> None:
        log.add(RequestRecord(rid, at, endpoint, 200, 0.1, model, 3, prompt=prompt, output="out"))

    add("c1", "/v1/completions", "The cat")
    add("c2", "/v1/chat/completions", json.dumps(CHAT))
    add("c3", "/v1/completions", None)  # served with redact: true
    add("c4", "/v1/samples", json.dumps({"n": 2}))
    add("c5", "/v1/completions", json.dumps(["one", "two"]))
    add("c6", "/v1/completions", "Other model's", model="other")
    later = datetime(2026, 1, 2, 4, 0, tzinfo=UTC)
    log.add_feedback("c1", 0, "sat on the mat.", later)  # feedback 1
    log.add_feedback("c1", 1, None, later)  # a rating without a correction: not a record
    log.add_feedback("c2", 1, "Blue.", later)  # 3
    log.add_feedback("c3", 0, "fixed", later)  # 4: no prompt
    log.add_feedback("c4", 0, "fixed", later)  # 5: not text
    log.add_feedback("c5", 0, "fixed", later)  # 6: two prompts
    log.add_feedback("c6", 1, " elsewhere", later)  # 7
    return log


def _read(p: Pipeline) -> tuple[list[dict], list]:
    src = p.cfg.sources[0]
    rows, rejected = [], []
    for part in src.partitions():
        for item in src.read(part):
            (rows if isinstance(item, dict) else rejected).append(item)
    return rows, rejected


def test_records_carry_the_correction_and_its_provenance(tmp_path: Path) -> None:
    p = _pipeline(tmp_path / "p")
    try:
        assert p.cfg.sources[0].local_only()
        _log(p)
        rows, rejected = _read(p)
    finally:
        p.close()
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == ["feedback:1", "feedback:3", "feedback:7"]
    first = by_id["feedback:1"]
    assert first["text"] == "The cat sat on the mat."
    assert first["source"] == "feedback"
    assert first["meta"] == {
        "feedback": True,
        "feedback_id": 1,
        "request_id": "c1",
        "rating": 0,
        "endpoint": "/v1/completions",
        "model": "fb",
        "version": 3,
        "request_at": "2026-01-02T03:04:05Z",
        "feedback_at": "2026-01-02T04:00:00Z",
    }
    assert by_id["feedback:3"]["text"] == "Be brief.\nName a colour Blue."
    assert by_id["feedback:7"]["text"] == "Other model's elsewhere"  # no doubled space
    assert {r.id: r.reason for r in rejected} == {
        "feedback:4": "no_prompt",
        "feedback:5": "not_a_text_request",
        "feedback:6": "several_prompts",
    }


def test_chat_format_model_and_rating_filters(tmp_path: Path) -> None:
    p = _pipeline(tmp_path / "p", format="chat", model="fb", min_rating=1)
    try:
        _log(p)
        rows, rejected = _read(p)
    finally:
        p.close()
    assert [r["id"] for r in rows] == ["feedback:3"] and rejected == []
    assert json.loads(rows[0]["text"]) == [*CHAT, {"role": "assistant", "content": "Blue."}]


def test_no_request_log_yet_reads_nothing(tmp_path: Path) -> None:
    p = _pipeline(tmp_path / "p")
    try:
        assert _read(p) == ([], [])
        assert p.cfg.sources[0].fingerprint().endswith(":no-log")
    finally:
        p.close()


def test_a_new_correction_changes_the_ingest_key_and_is_ingested(tmp_path: Path) -> None:
    p = _pipeline(tmp_path / "p")
    try:
        log = _log(p)
        before = plan_for(p.plan(), "ingest").key
        assert plan_for(p.plan(), "ingest").key == before  # nothing new: same key
        p.run(until="ingest")
        log.add_feedback("c1", -1, "ran off.", datetime.now(UTC))
        after = plan_for(p.plan(), "ingest").key
        assert after != before
        summary = p.run(until="ingest")
        assert summary.stages[0].status == "ran"
        ids = [i for t in p.iter_dataset("ingest", columns=["id"]) for i in t.column("id").to_pylist()]
        rejected = p.rejected("ingest").column("reason").to_pylist()
    finally:
        p.close()
    assert sorted(ids) == ["feedback:1", "feedback:3", "feedback:7", "feedback:8"]
    assert sorted(rejected) == ["no_prompt", "not_a_text_request", "several_prompts"]


def test_reading_runs_through_the_source_base(tmp_path: Path) -> None:
    """run_partition quarantines the Rejected markers and counts the rows."""
    p = _pipeline(tmp_path / "p")
    try:
        _log(p)
        src = p.cfg.sources[0]
        ctx = StepContext()
        tables = list(src.run_partition(None, ctx))
    finally:
        p.close()
    assert sum(t.num_rows for t in tables) == 3
    assert ctx.stats_for(src.name).rows_out == 3


@pytest.mark.parametrize("bad", ["postgresql+nosuchdriver://u:hunter2@h/db"])
def test_a_bad_catalog_url_never_shows_the_password(tmp_path: Path, bad: str) -> None:
    from genloom.core.errors import SourceError

    p = _pipeline(tmp_path / "p", catalog=bad)
    try:
        with pytest.raises(SourceError) as e:
            p.cfg.sources[0].fingerprint()
    finally:
        p.close()
    assert "hunter2" not in str(e.value)

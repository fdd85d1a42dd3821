"""The ``monitor:`` policy end to end on a real pipeline (a manual source, a tiny GPT trained for 3
steps, SQLite catalog): a breach with ``on_breach: retrain`` runs the pipeline and records
``retrain`` then ``promote`` (a challenger that passes) or ``keep`` (one that fails a gate), with
their evidence; the schedule is due or not; feedback corrections become training records; a
retrain that fails is recorded and exits 2."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import insert
from typer.testing import CliRunner

from genloom.cli import app
from genloom.monitor.policy import monitor_round
from genloom.monitor.store import MonitorLog
from genloom.pipeline import Pipeline
from genloom.serve.traffic import RequestLog, requests
from tests.monitor.test_alerts import Hook, hook  # noqa: F401 (the webhook fixture)
from tests.monitor.test_monitor_cli import WORDS  # the same vocabulary

BASE: dict[str, Any] = {
    "name": "m",
    "sources": [{"type": "manual", "path": "notes.jsonl"}],
    "split": {"val_fraction": 0.2},
    "train": {
        "tokenizer": {"kind": "bpe", "vocab_size": 300},
        "model": {"type": "gpt", "preset": "tiny", "block_size": 32},
        "max_steps": 3,
        "batch_size": 4,
        "eval_interval": 3,
        "eval_tokens": 512,
        "threads": 1,
        "precision": "fp32",
    },
    "evaluate": {"samples": 0, "embeddings": False},
}


def _notes(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("a") as f:
        for _ in range(n):
            f.write(
                json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(40)), "author": "a"}) + "\n"
            )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose pipeline ran once: v1 is the champion."""
    folder = tmp_path_factory.mktemp("retrain") / "p"
    folder.mkdir()
    _notes(folder / "notes.jsonl", 80, 0)
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(BASE))
    p = Pipeline.from_file(folder / "pipeline.yaml")
    try:
        summary = p.run()
    finally:
        p.close()
    assert summary.model is not None and summary.model["stage"] == "champion"
    return folder


@pytest.fixture
def project(trained: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the trained project (its store and catalog), to change and monitor."""
    folder = tmp_path / "p"
    shutil.copytree(trained, folder)
    yield folder


def _configure(folder: Path, **sections: Any) -> Path:
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({**BASE, **sections}))
    return path


def _server_errors(folder: Path, n: int = 5) -> None:
    """``n`` requests of the champion that failed with 500 in the last minute: error_rate breaches."""
    p = Pipeline.from_file(folder / "pipeline.yaml")
    try:
        RequestLog(p.catalog.engine)
        at = datetime.now(UTC) - timedelta(minutes=1)
        rows = [
            {
                "request_id": f"e{i}",
                "created_at": at,
                "endpoint": "/v1/completions",
                "model": "m",
                "version": 1,
                "latency_s": 0.05,
                "status": 500,
                "prompt": "the data",
                "output": None,
            }
            for i in range(n)
        ]
        with p.catalog.engine.begin() as c:
            c.execute(insert(requests), rows)
    finally:
        p.close()


def _state(folder: Path) -> tuple[list[dict], list[dict], dict | None]:
    """(decisions oldest first, checks, champion) of the project's catalog."""
    p = Pipeline.from_file(folder / "pipeline.yaml")
    try:
        log = MonitorLog(p.catalog.engine)
        return log.decisions()[::-1], log.checks(), p.catalog.champion("m")
    finally:
        p.close()


def test_breach_retrains_and_promotes_then_cools_down(project: Path) -> None:
    path = _configure(project, register={"promote": "always"}, monitor={"on_breach": "retrain"})
    _notes(project / "notes.jsonl", 20, 1)  # new source data
    _server_errors(project)
    r = CliRunner().invoke(
        app, ["monitor", str(path), "--watch", "--rounds", "2", "--interval", "1s", "--json"]
    )
    assert r.exit_code == 1, r.output  # the breach is still reported
    first, second = (json.loads(line) for line in r.output.splitlines() if line.startswith("{"))
    assert [d["action"] for d in first["decisions"]] == ["retrain", "promote"]
    assert [d["action"] for d in second["decisions"]] == ["none"]
    assert "cooldown of 1h" in second["decisions"][0]["reason"]
    assert first["exit_code"] == 1 and first["retrain_error"] is None

    decisions, checks, champion = _state(project)
    retrain, promote, held = decisions
    assert champion is not None and champion["version"] == 2
    assert retrain["reason"] == "breach: error_rate (rate)" and retrain["champion_version"] == 1
    (evidence,) = retrain["evidence"]["checks"]
    assert (evidence["signal"], evidence["score"], evidence["threshold"]) == ("error_rate", 1.0, 0.01)
    stored = {c["id"]: c for c in checks}[evidence["check_id"]]
    assert stored["breached"] and stored["signal"] == "error_rate" and stored["version"] == 1
    assert retrain["evidence"]["trigger"] == "breach"
    assert (promote["champion_version"], promote["challenger_version"]) == (2, 2)
    assert promote["reason"] == "promoted (register.promote=always)"
    ev = promote["evidence"]
    assert ev["retrain_decision"] == retrain["id"] and ev["previous_champion"] == 1
    assert ev["stages"]["ingest"] == "ran" and ev["stages"]["train"] == "ran"
    assert "val_bpc" in ev["metrics"] and ev["failed_gates"] == []
    p = Pipeline.from_file(path)
    try:
        run = next(x for x in p.catalog.runs("m") if x["id"] == ev["run_id"])
    finally:
        p.close()
    assert run["status"] == "succeeded"
    assert held["action"] == "none" and held["evidence"]["last_retrain_decision"] == retrain["id"]


def test_a_challenger_failing_a_gate_is_kept_with_the_gate_named(project: Path) -> None:
    path = _configure(
        project,
        evaluate={**BASE["evaluate"], "gates": {"val_bpc": {"max": 0.001}}},
        monitor={"on_breach": "retrain"},
    )
    _notes(project / "notes.jsonl", 20, 2)
    _server_errors(project)
    r = CliRunner().invoke(app, ["monitor", str(path)])
    assert r.exit_code == 1, r.output
    assert "keep" in r.output and "failed gates val_bpc" in r.output
    decisions, _, champion = _state(project)
    assert [d["action"] for d in decisions] == ["retrain", "keep"]
    keep = decisions[1]
    assert champion is not None and champion["version"] == 1
    assert (keep["champion_version"], keep["challenger_version"]) == (1, 2)
    assert keep["reason"].startswith("kept as candidate: failed gates val_bpc")
    assert keep["evidence"]["failed_gates"] == ["val_bpc"]
    gate = next(g for g in keep["evidence"]["gates"] if g["metric"] == "val_bpc")
    assert gate["passed"] is False and gate["bound"] == 0.001


def test_schedule_due_and_not_due(project: Path) -> None:
    """No breach (no traffic): the schedule alone decides; nothing changed, so the retrain keeps."""
    path = _configure(project, monitor={"schedule": "1h"})
    now = datetime.now(UTC)
    p = Pipeline.from_file(path)
    try:
        early = monitor_round(p, now - timedelta(hours=1), now, now=now)
        later = now + timedelta(hours=2)
        due = monitor_round(p, later - timedelta(hours=1), later, now=later)
        soon = now + timedelta(minutes=30)
        again = monitor_round(p, soon - timedelta(hours=1), soon, now=soon)
    finally:
        p.close()
    sched = [c for c in early.report.checks if c.kind == "schedule"][0]
    assert not sched.breached and sched.threshold == 3600 and sched.evidence["champion_registered"] == 1
    assert early.decisions == [] and early.exit_code == 0
    assert [d["action"] for d in due.decisions] == ["retrain", "keep"] and due.exit_code == 0
    retrain, keep = due.decisions
    assert retrain["reason"].startswith("schedule: 1h since ")
    assert retrain["evidence"]["trigger"] == "schedule" and retrain["evidence"]["checks"] == []
    assert keep["reason"] == "no new model: already registered as v1 (champion)"
    assert keep["evidence"]["stages"]["train"] == "cached"
    sched = [c for c in again.report.checks if c.kind == "schedule"][0]
    assert not sched.breached and sched.evidence["last_retrain_decision"] == retrain["id"]
    assert again.decisions == []


def test_new_source_data_retrains_once(project: Path) -> None:
    """retrain_on: [new_data]: a planned model that no version was trained as retrains (no breach)."""
    path = _configure(
        project, register={"promote": "always"}, monitor={"on_breach": "retrain", "retrain_on": ["new_data"]}
    )
    now = datetime.now(UTC)
    p = Pipeline.from_file(path)
    try:
        unchanged = monitor_round(p, now - timedelta(hours=1), now)
        _notes(project / "notes.jsonl", 20, 3)
        fresh = monitor_round(p, now - timedelta(hours=1), datetime.now(UTC))
        after = monitor_round(p, now - timedelta(hours=1), datetime.now(UTC))
    finally:
        p.close()

    def check(r: Any) -> Any:
        return next(c for c in r.report.checks if c.kind == "new_data")

    assert not check(unchanged).breached and check(unchanged).evidence["registered_as"] == 1
    assert unchanged.decisions == [] and unchanged.exit_code == 0
    assert check(fresh).breached and check(fresh).evidence["ingest_cached"] is False
    assert [d["action"] for d in fresh.decisions] == ["retrain", "promote"]
    assert fresh.exit_code == 0  # new data is no breach
    retrain = fresh.decisions[0]
    assert retrain["reason"].startswith("new data: ") and retrain["evidence"]["trigger"] == "new_data"
    assert retrain["evidence"]["checks"][0]["check_id"] == check(fresh).id
    assert not check(after).breached and check(after).evidence["registered_as"] == 2
    assert after.decisions == []


def test_feedback_corrections_are_trained_on(project: Path) -> None:
    """Negative feedback breaches; the retrain reads the corrections through the feedback source."""
    path = _configure(
        project,
        sources=[*BASE["sources"], {"type": "feedback"}],
        register={"promote": "always"},
        monitor={
            "on_breach": "retrain",
            "retrain_on": ["feedback"],
            "thresholds": {"min_feedback": 3},
        },
    )
    p = Pipeline.from_file(path)
    try:
        log = RequestLog(p.catalog.engine)
        at = datetime.now(UTC) - timedelta(minutes=5)
        with p.catalog.engine.begin() as c:
            c.execute(
                insert(requests),
                [
                    {
                        "request_id": f"q{i}",
                        "created_at": at,
                        "endpoint": "/v1/completions",
                        "model": "m",
                        "version": 1,
                        "latency_s": 0.05,
                        "status": 200,
                        "prompt": "the data model",
                        "output": "zebra zebra",
                    }
                    for i in range(4)
                ],
            )
        for i in range(4):
            log.add_feedback(f"q{i}", 0, " ".join(WORDS[i : i + 30]), at)
        result = monitor_round(p, at - timedelta(hours=1), datetime.now(UTC))
        ids = [i for t in p.iter_dataset("ingest", columns=["id"]) for i in t.column("id").to_pylist()]
    finally:
        p.close()
    assert result.exit_code == 1
    assert [c.signal for c in result.report.breached] == ["negative_feedback_rate"]
    assert [d["action"] for d in result.decisions] == ["retrain", "promote"]
    assert result.decisions[1]["champion_version"] == 2
    assert {f"feedback:{i}" for i in range(1, 5)} <= set(ids)


def test_a_failed_retrain_is_recorded_and_exits_2(project: Path, hook: str) -> None:  # noqa: F811
    path = _configure(project, monitor={"on_breach": "retrain", "webhook": hook + "/alerts"})
    _server_errors(project)
    (project / "notes.jsonl").unlink()  # the source cannot be read any more
    r = CliRunner().invoke(app, ["monitor", str(path), "--json"])
    assert r.exit_code == 2, r.output
    body = json.loads(r.output)
    assert body["exit_code"] == 2 and "cannot read notes.jsonl" in body["retrain_error"]
    (sent,) = Hook.bodies  # the breach and the decisions taken on it
    assert [b["signal"] for b in sent["breaches"]] == ["error_rate"]
    assert [d["action"] for d in sent["decisions"]] == ["retrain", "failed"]
    decisions, _, champion = _state(project)
    assert [d["action"] for d in decisions] == ["retrain", "failed"]
    failed = decisions[1]
    assert failed["reason"].startswith("retrain failed: ") and "notes.jsonl" in failed["evidence"]["error"]
    assert failed["evidence"]["retrain_decision"] == decisions[0]["id"]
    assert champion is not None and champion["version"] == 1


def test_retraining_needs_a_train_section(project: Path) -> None:
    cfg = {k: v for k, v in BASE.items() if k not in ("train", "evaluate")}
    path = project / "pipeline.yaml"
    path.write_text(yaml.safe_dump({**cfg, "monitor": {"on_breach": "retrain"}}))
    r = CliRunner().invoke(app, ["monitor", str(path), "--json"])
    assert r.exit_code == 2
    assert "needs a train: section" in json.loads(r.output)["error"]


def test_no_retrain_while_another_run_holds_the_pipeline(project: Path) -> None:
    from genloom.core.lease import Lease, leases, run_lease_name

    path = _configure(project, register={"promote": "always"}, monitor={"on_breach": "retrain"})
    _server_errors(project)
    p = Pipeline.from_file(path)
    try:
        Lease(p.catalog.engine, "x")  # the table
        now = datetime.now(UTC)
        with p.catalog.engine.begin() as c:  # a live run on another machine
            c.execute(
                insert(leases).values(
                    name=run_lease_name("m"),
                    holder="other",
                    host="trainer-2",
                    pid=4242,
                    acquired_at=now,
                    expires_at=now + timedelta(minutes=2),
                )
            )
        end = datetime.now(UTC)
        result = monitor_round(p, end - timedelta(hours=1), end)
    finally:
        p.close()
    (held,) = result.decisions
    assert (
        held["action"] == "none"
        and "a run of the pipeline is in progress (pid 4242 on trainer-2" in held["reason"]
    )
    assert held["evidence"]["run_in_progress"]["host"] == "trainer-2"
    assert result.exit_code == 1 and result.error is None
    decisions, _, champion = _state(project)
    assert [d["action"] for d in decisions] == ["none"] and champion is not None and champion["version"] == 1


def _foreign_notes(path: Path, n: int, seed: int) -> None:
    """Records in another vocabulary (none of WORDS)."""
    rng = random.Random(seed)
    other = [f"zq{i}x" for i in range(300)]
    with path.open("a") as f:
        for _ in range(n):
            f.write(
                json.dumps({"text": " ".join(rng.choice(other) for _ in range(12)), "author": "b"}) + "\n"
            )


def test_new_source_records_are_checked_against_the_profile(project: Path) -> None:
    """source_drift: the records added since the champion's training, and only those, are checked:
    more of the same vocabulary passes, another vocabulary breaches the OOV share and the lengths."""
    path = _configure(project, monitor={"source_drift": True})
    now = datetime.now(UTC)
    p = Pipeline.from_file(path)
    try:
        unchanged = monitor_round(p, now - timedelta(hours=1), now)
        _notes(project / "notes.jsonl", 100, 5)
        same = monitor_round(p, now - timedelta(hours=1), datetime.now(UTC))
        _foreign_notes(project / "notes.jsonl", 100, 6)
        moved = monitor_round(p, now - timedelta(hours=1), datetime.now(UTC))
    finally:
        p.close()

    def source(r: Any) -> dict[str, Any]:
        return {f"{c.signal}:{c.method}": c for c in r.report.checks if c.signal.startswith("source:")}

    assert source(unchanged) == {}  # nothing new: the new_data check did not breach
    ok = source(same)
    assert not any(c.breached for c in ok.values()), {k: c.score for k, c in ok.items()}
    oov = ok["source:prompt_oov_rate:js"]
    assert oov.evidence["new_records"] > 50 and oov.evidence["new_records"] < 100  # the train split of 100
    assert oov.evidence["champion_data"] != oov.evidence["current_data"]
    bad = source(moved)
    assert (
        bad["source:prompt_oov_rate:js"].breached and bad["source:prompt_words:ks"].breached
    )  # PSI: one bin (every training record has 40 words)
    assert (
        bad["source:prompt_oov_rate:js"].evidence["new_records"]
        > ok["source:prompt_oov_rate:js"].evidence["new_records"]
    )
    assert moved.exit_code == 1 and moved.decisions == []  # on_breach: none
    _, checks, _ = _state(project)
    assert any(c["signal"] == "source:prompt_oov_rate" and c["breached"] for c in checks)


def test_source_drift_waits_for_a_run_in_progress(project: Path) -> None:
    from genloom.core.lease import Lease, leases, run_lease_name

    path = _configure(project, monitor={"source_drift": True})
    _foreign_notes(project / "notes.jsonl", 100, 7)
    p = Pipeline.from_file(path)
    try:
        Lease(p.catalog.engine, "x")
        now = datetime.now(UTC)
        with p.catalog.engine.begin() as c:
            c.execute(
                insert(leases).values(
                    name=run_lease_name("m"),
                    holder="other",
                    host="trainer-2",
                    pid=4242,
                    acquired_at=now,
                    expires_at=now + timedelta(minutes=2),
                )
            )
        result = monitor_round(p, now - timedelta(hours=1), datetime.now(UTC))
    finally:
        p.close()
    (c,) = [c for c in result.report.checks if c.signal.startswith("source:")]
    assert c.signal == "source:records" and c.skipped and "pid 4242 on trainer-2" in c.skipped
    assert result.exit_code == 0 and result.decisions == []

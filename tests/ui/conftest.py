"""A project trained once for the dashboard's tests: a tiny GPT on a manual source (notes.jsonl, 64
rows, of which the length filter drops 4), with monitoring checks, a decision, served requests and
feedback in its catalog."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from genloom.monitor.store import MonitorLog
from genloom.pipeline import Pipeline
from genloom.serve.traffic import RequestLog, RequestRecord
from tests.monitor.test_retrain import BASE, _notes


def _history(p: Pipeline) -> None:
    """Drift checks over six hours (the last two breached), a decision, two requests with feedback."""
    log = MonitorLog(p.catalog.engine)
    now = datetime.now(UTC)
    for i in range(6):
        at = now - timedelta(hours=6 - i)
        log.add_check(
            kind="drift", signal="prompt.length", method="psi", score=0.04 * i, threshold=0.15,
            breached=0.04 * i > 0.15, model="m", version=1, at=at,
        )  # fmt: skip
        log.add_check(
            kind="quality", signal="output.repetition", method="rate", score=0.01 * i, threshold=0.2,
            breached=False, model="m", version=1, at=at,
        )  # fmt: skip
    log.add_decision(model="m", action="keep", reason="drift breached; challenger v2 failed gate val_loss",
                     champion_version=1, challenger_version=None, at=now)  # fmt: skip
    traffic = RequestLog(p.catalog.engine)
    for i, (prompt, output) in enumerate([("the file", " record data"), ("a query", " table user")]):
        rid = f"seed-{i}"
        traffic.add(
            RequestRecord(rid, now - timedelta(minutes=5 - i), "/v1/completions", 200, 0.01, "m", 1,
                          None, 2, 2, prompt, output)
        )  # fmt: skip
        traffic.add_feedback(rid, 1 if i else -1, None if i else "a better answer", now)


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose pipeline ran once (v1 champion) with a monitoring history."""
    folder = tmp_path_factory.mktemp("ui") / "p"
    folder.mkdir()
    _notes(folder / "notes.jsonl", 60, 0)
    with (folder / "notes.jsonl").open("a") as f:  # too short for the length filter: dropped
        f.writelines(json.dumps({"text": f"short {i}", "author": "b"}) + "\n" for i in range(4))
    cfg = {**BASE, "clean": [{"type": "length", "min_chars": 40}]}
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    p = Pipeline.from_file(folder / "pipeline.yaml")
    try:
        assert p.run().model is not None
        _history(p)
    finally:
        p.close()
    return folder


@pytest.fixture
def project(trained_project: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the trained project, to write into."""
    folder = tmp_path / "p"
    shutil.copytree(trained_project, folder)
    yield folder

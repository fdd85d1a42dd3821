"""The loop end to end: a tiny GPT trained on one topic is served (live uvicorn, following the
champion), traffic from another topic drifts, users send corrections; ``genloom monitor`` reports
the drift with its evidence, retrains with the corrections (feedback source) and promotes; the
server follows; ``genloom rollback`` restores v1 and the server follows back."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import httpx
import yaml
from typer.testing import CliRunner

from genloom.cli import app
from genloom.monitor.store import MonitorLog
from genloom.pipeline import Pipeline
from genloom.serve.app import create_app, registered_model
from genloom.serve.schemas import ServeSettings
from tests.monitor.test_retrain import BASE, _notes
from tests.serve.conftest import live_server

TOPIC_B = ["zebra", "quantum", "violin", "glacier", "saffron", "tundra", "oboe", "nebula", "mango", "fjord"]


def _served_version(base: str) -> int:
    return int(httpx.get(f"{base}/v1/models").json()["data"][0]["version"])


def _wait_for_version(base: str, version: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _served_version(base) == version:
            return True
        time.sleep(0.05)
    return False


def test_drift_retrains_on_feedback_promotes_and_rolls_back(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    _notes(folder / "notes.jsonl", 80, 0)  # topic A
    cfg = {
        **BASE,
        "sources": [*BASE["sources"], {"type": "feedback"}],
        "register": {"promote": "always"},
        "monitor": {
            "window": "1h",
            "on_breach": "retrain",
            "retrain_on": ["drift"],
            "thresholds": {"min_requests": 30},
        },
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    p = Pipeline.from_file(path)
    try:
        assert p.run().model["version"] == 1  # type: ignore[index]
        loader = registered_model(p)
        server_app = create_app(
            loader, p.catalog, settings=ServeSettings(follow_interval_s=0.1), follow=loader
        )
        rng = random.Random(5)
        with live_server(server_app) as base, httpx.Client(base_url=base, timeout=60) as http:
            assert _served_version(base) == 1
            for i in range(36):  # topic B prompts
                prompt = " ".join(rng.choice(TOPIC_B) for _ in range(8))
                r = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 4, "seed": i})
                assert r.status_code == 200, r.text
                if i < 12:
                    better = " ".join(rng.choice(TOPIC_B) for _ in range(30))
                    rid = r.headers["X-Request-ID"]
                    fb = http.post(
                        "/v1/feedback", json={"request_id": rid, "rating": -1, "correction": better}
                    )
                    assert fb.status_code == 200, fb.text

            r = CliRunner().invoke(app, ["monitor", str(path), "--json"])
            assert r.exit_code == 1, r.output
            report = json.loads(r.output)
            drifted = {b.split(":")[0] for b in report["breached"]}
            assert "prompt_oov_rate" in drifted, report["breached"]
            assert [d["action"] for d in report["decisions"]] == ["retrain", "promote"]
            assert _wait_for_version(base, 2), "the server did not follow the promoted champion"

            r = CliRunner().invoke(app, ["rollback", str(path)])
            assert r.exit_code == 0, r.output
            assert _wait_for_version(base, 1), "the server did not follow the rollback"

        decisions = MonitorLog(p.catalog.engine).decisions()[::-1]
        ids = [i for t in p.iter_dataset("ingest", columns=["id"]) for i in t.column("id").to_pylist()]
    finally:
        p.close()
    assert [d["action"] for d in decisions] == ["retrain", "promote", "rollback"]
    retrain = decisions[0]
    evidence = {c["signal"] for c in retrain["evidence"]["checks"]}
    assert "prompt_oov_rate" in evidence and retrain["champion_version"] == 1
    assert decisions[1]["evidence"]["stages"]["ingest"] == "ran"
    assert decisions[2]["champion_version"] == 1 and decisions[2]["challenger_version"] == 2
    assert sum(i.startswith("feedback:") for i in ids) == 12  # the corrections were trained on

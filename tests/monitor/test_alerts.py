"""Alerts of `genloom monitor`: the webhook (retries with backoff against a local HTTP server that
fails first, credentials never logged, exit 2 when it never succeeds), the Prometheus textfile,
and `--watch` rounds."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
from typer.testing import CliRunner

from genloom.cli import app
from genloom.monitor import alerts
from genloom.monitor.alerts import post_webhook, safe_url
from genloom.monitor.store import MonitorLog
from tests.conftest import loopback_server
from tests.monitor.test_monitor_cli import OTHER, WORDS, _log, _rows, _texts
from tests.monitor.trained import trained_model


class Hook(BaseHTTPRequestHandler):
    """Answers each POST with the next status of ``plan`` (then 200), and keeps the bodies."""

    plan: list[int] = []
    bodies: list[dict] = []
    paths: list[str] = []
    auth: list[str | None] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Hook.bodies.append(json.loads(body))
        Hook.paths.append(self.path)
        Hook.auth.append(self.headers.get("Authorization"))
        status = Hook.plan.pop(0) if Hook.plan else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    Hook.plan, Hook.bodies, Hook.paths, Hook.auth = [], [], [], []
    with loopback_server(Hook) as base:
        yield base


SECRET_URL = "http://alice:s3cret-pass@{host}/hooks/T0K3N-path?token=q-s3cret"


def _secret_url(base: str) -> str:
    return SECRET_URL.format(host=base.removeprefix("http://"))


def test_webhook_fails_then_succeeds(hook, caplog):
    Hook.plan = [503, 500]
    waits: list[float] = []
    url = _secret_url(hook)
    with caplog.at_level(logging.WARNING, logger="genloom.monitor.alerts"):
        res = post_webhook(url, {"breaches": [{"signal": "x"}]}, retries=3, backoff_s=0.5, sleep=waits.append)
    assert res.ok and res.attempts == 3 and res.status == 200 and res.errors == ["HTTP 503", "HTTP 500"]
    assert waits == [0.5, 1.0]  # exponential backoff
    assert Hook.bodies == [{"breaches": [{"signal": "x"}]}] * 3
    assert Hook.paths[0] == "/hooks/T0K3N-path?token=q-s3cret"  # the whole URL was used
    assert Hook.auth[0] == "Basic " + base64.b64encode(b"alice:s3cret-pass").decode()  # user:password@
    assert len(caplog.records) == 2
    for text in [caplog.text, res.url]:
        assert "s3cret" not in text and "alice" not in text and "T0K3N" not in text
    assert res.url == safe_url(url) == hook


def test_webhook_never_succeeds(hook, caplog):
    Hook.plan = [500] * 10
    with caplog.at_level(logging.WARNING, logger="genloom.monitor.alerts"):
        res = post_webhook(_secret_url(hook), {}, retries=2, backoff_s=0.0)
    assert not res.ok and res.attempts == 3 and res.status == 500
    assert "failed after 3 attempts" in caplog.text and "s3cret" not in caplog.text
    Hook.plan = [404]
    res = post_webhook(hook + "/x", {}, retries=2, backoff_s=0.0)
    assert not res.ok and res.attempts == 1  # a 4xx other than 429 is not retried
    # nothing listens on the port any more: connection errors are retried, then reported
    closed = hook.rsplit(":", 1)
    with caplog.at_level(logging.WARNING, logger="genloom.monitor.alerts"):
        res = post_webhook("http://127.0.0.1:1/h?token=s3cret", {}, retries=1, backoff_s=0.0, timeout_s=2)
    assert not res.ok and res.attempts == 2 and res.status is None and res.errors
    assert "s3cret" not in caplog.text and closed


@pytest.fixture
def shifted(tmp_path):
    """A champion, and a log window of prompts much longer and in other words than its records."""
    rng = np.random.default_rng(0)
    path, p, _ = trained_model(tmp_path / "p", {"text": _texts(rng, 400, WORDS, 5, 15)})
    now = datetime.now(UTC) - timedelta(minutes=5)
    rows = _rows(p.model_name, _texts(rng, 100, OTHER, 40, 60), _texts(rng, 100, WORDS, 5, 15), now, "s")
    _log(p.catalog.engine, rows)
    yield path, p
    p.close()


def test_monitor_webhook_and_prometheus(shifted, hook, tmp_path, monkeypatch):
    from prometheus_client.parser import text_string_to_metric_families

    path, p = shifted
    monkeypatch.setattr(alerts, "WEBHOOK_BACKOFF_S", 0.01)
    prom = tmp_path / "genloom.prom"
    Hook.plan = [503]  # the first attempt fails, the retry is taken
    r = CliRunner().invoke(
        app,
        ["monitor", str(path), "--json", "--webhook", _secret_url(hook), "--prometheus-textfile", str(prom)],
    )
    assert r.exit_code == 1, r.output  # breached, and the webhook got it
    report = json.loads(r.output)
    assert report["alerts"]["webhook"] == {
        "url": hook,
        "ok": True,
        "attempts": 2,
        "status": 200,
        "errors": ["HTTP 503"],
    }
    assert "s3cret" not in r.output
    body = Hook.bodies[-1]
    assert body["model"] == p.model_name and body["requests"] == 100
    assert {f"{b['signal']}:{b['method']}" for b in body["breaches"]} == set(report["breached"])
    assert "prompt_words:psi" in report["breached"]
    metrics = {
        (s.name, s.labels.get("signal"), s.labels.get("method")): s.value
        for fam in text_string_to_metric_families(prom.read_text())
        for s in fam.samples
    }
    assert metrics[("genloom_monitor_check_breached", "prompt_words", "psi")] == 1.0
    assert metrics[("genloom_monitor_check_breached", "output_words", "psi")] == 0.0
    psi = next(c for c in report["checks"] if c["signal"] == "prompt_words" and c["method"] == "psi")
    assert metrics[("genloom_monitor_check_score", "prompt_words", "psi")] == pytest.approx(psi["score"])
    assert metrics[("genloom_monitor_requests", None, None)] == 100.0
    assert metrics[("genloom_monitor_breached_checks", None, None)] == len(report["breached"])
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith("genloom.prom.")] == []  # no temp left

    # an endpoint that never succeeds: exit 2, said on stderr with the safe URL only
    Hook.plan = [500] * 10
    r = CliRunner().invoke(app, ["monitor", str(path), "--webhook", _secret_url(hook)])
    assert r.exit_code == 2, r.output
    assert "webhook" in r.output and "failed" in r.output and "s3cret" not in r.output
    assert len(Hook.bodies) == 2 + 1 + alerts.WEBHOOK_RETRIES
    # a bad URL is a config error before any work
    r = CliRunner().invoke(app, ["monitor", str(path), "--webhook", "ftp://x/y"])
    assert r.exit_code == 2 and "http://" in r.output


def test_monitor_watch_rounds(shifted, monkeypatch):
    path, p = shifted
    r = CliRunner().invoke(
        app, ["monitor", str(path), "--json", "--watch", "--interval", "0.01s", "--rounds", "2"]
    )
    assert r.exit_code == 1, r.output  # the last round's code
    lines = [json.loads(x) for x in r.output.strip().splitlines()]
    assert len(lines) == 2 and all(x["requests"] == 100 and x["exit_code"] == 1 for x in lines)
    stored = MonitorLog(p.catalog.engine).checks(model=p.model_name)
    assert len(stored) == 2 * len(lines[0]["checks"])  # each round recorded
    assert len({c["window_end"] for c in stored}) == 2

    # Ctrl-C during the pause between rounds exits 0
    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("time.sleep", interrupt)
    r = CliRunner().invoke(app, ["monitor", str(path), "--watch", "--interval", "1h"])
    assert r.exit_code == 0, r.output
    assert "stopped after 1 round" in r.output
    assert len(MonitorLog(p.catalog.engine).checks(model=p.model_name)) == 3 * len(lines[0]["checks"])
    r = CliRunner().invoke(app, ["monitor", str(path), "--rounds", "2"])
    assert r.exit_code == 2 and "--watch" in r.output


def test_the_monitor_section_sets_the_alerts_and_the_options_override_it(
    shifted, hook, tmp_path, monkeypatch
):
    import yaml

    path, p = shifted
    raw = yaml.safe_load(path.read_text())
    raw["monitor"] = {
        "window": "1h",
        "webhook": hook + "/hooks/${env:HOOK_TOKEN}",
        "prometheus_textfile": "section.prom",
        "thresholds": {"min_requests": 1000},  # too few requests for the drift checks: no breach
    }
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("HOOK_TOKEN", "T0K3N")
    r = CliRunner().invoke(app, ["monitor", str(path), "--json"])
    assert r.exit_code == 0, r.output  # the section's thresholds: no breach, so no POST
    report = json.loads(r.output)
    assert report["breached"] == [] and "webhook" not in report["alerts"]
    assert report["alerts"]["prometheus"] == str(path.parent / "section.prom")
    assert (path.parent / "section.prom").is_file()
    start, end = (datetime.fromisoformat(report["window"][k]) for k in ("start", "end"))
    assert end - start == timedelta(hours=1)

    raw["monitor"]["thresholds"] = {}  # the defaults again: shifted traffic breaches
    path.write_text(yaml.safe_dump(raw))
    other = tmp_path / "option.prom"
    r = CliRunner().invoke(app, ["monitor", str(path), "--json", "--prometheus-textfile", str(other)])
    assert r.exit_code == 1, r.output
    report = json.loads(r.output)
    assert report["alerts"]["prometheus"] == str(other) and report["alerts"]["webhook"]["ok"]
    assert Hook.paths[-1] == "/hooks/T0K3N" and "T0K3N" not in r.output
    assert "decisions" not in Hook.bodies[-1]  # no retrain policy: nothing decided

    raw["monitor"]["webhook"] = "ftp://x/y"
    path.write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["monitor", str(path)])
    assert r.exit_code == 2 and "monitor.webhook" in r.output

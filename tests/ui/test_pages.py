"""Every dashboard page over a trained project, through the app (no browser): what each shows, and
the write-key rule."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from genloom.pipeline import Pipeline
from genloom.serve.app import ServedModel
from genloom.serve.keys import KeyStore
from genloom.serve.schemas import ServeSettings
from genloom.serve.traffic import RequestLog
from genloom.ui.app import KEY_COOKIE, create_dashboard
from tests.serve.conftest import ready_client


@pytest.fixture
def opened(project: Path) -> Iterator[tuple[Pipeline, TestClient]]:
    p = Pipeline.from_file(project / "pipeline.yaml")
    try:
        with TestClient(create_dashboard(p)) as client:
            deadline = time.monotonic() + 30
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "the model did not load"
                time.sleep(0.05)
            yield p, client
    finally:
        p.close()


def test_every_page_shows_the_project(opened: tuple[Pipeline, TestClient]) -> None:
    p, client = opened
    run_id = p.catalog.runs()[0]["id"]
    train = p.catalog.latest_artifact("m", "train")
    assert train is not None
    expect = {
        "/ui/": ["v1", "keep"],
        "/ui/runs": [run_id[:12]],
        f"/ui/runs/{run_id}": ["ingest", "manual", "64", "clean", "length", "too_short: 4", "train", "ran"],
        f"/ui/artifacts/{train['key']}": [
            "Inputs",
            "prepare",
            "<td>m v1</td><td>champion</td>",
            "requests served",
        ],
        "/ui/lineage?id=manual:notes.jsonl%23line=3": ["manual", "ingest"],
        "/ui/models": ["v1", "champion", "val_loss", "registered as champion", "keep: drift breached"],
        "/ui/reports": ["report.html"],
        "/ui/drift": ["prompt.length", "output.repetition", "threshold 0.15", "breached", "<svg"],
        "/ui/requests": ["a better answer", "the file"],
        "/ui/playground": ["/v1/completions", "Generate"],
        "/ui/records": ["notes.jsonl", "Read-only"],
        "/ui/key": ["--write"],
    }
    for path, words in expect.items():
        r = client.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        for word in words:
            assert word in r.text, (path, word)
    assert client.get("/", follow_redirects=False).headers["location"] == "/ui/"
    report = client.get(f"/ui/reports/{p.catalog.latest_artifact('m', 'evaluate')['key']}/report.html")
    assert report.status_code == 200 and "<html" in report.text.lower()
    assert client.get("/ui/runs/nope").status_code == 404
    assert client.get("/ui/artifacts/nope").status_code == 404


def test_requests_link_to_their_model_version_and_back(opened: tuple[Pipeline, TestClient]) -> None:
    """source -> record -> model -> request: a request's version links to the model's artifact,
    whose page counts the requests it served and links to them."""
    p, client = opened
    train = p.catalog.latest_artifact("m", "train")
    assert train is not None
    served = RequestLog(p.catalog.engine).served("m", 1)
    assert served > 0
    page = client.get("/ui/requests").text
    assert f'href="/ui/artifacts/{train["key"]}"' in page
    artifact = client.get(f"/ui/artifacts/{train['key']}").text
    assert f'href="/ui/requests?model=m&amp;version=1">{served}</a>' in artifact
    only = client.get("/ui/requests?model=m&version=1").text
    assert "Requests of m v1" in only and only.count("<tr>") == served + 1
    none = client.get("/ui/requests?model=m&version=9").text
    assert "No requests yet." in none


def test_playground_generates_through_v1_and_is_logged(opened: tuple[Pipeline, TestClient]) -> None:
    p, client = opened
    r = client.post("/ui/api/generate", json={"prompt": "the", "max_tokens": 4, "seed": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["completion_tokens"] <= 4 and body["request_id"]
    logged = RequestLog(p.catalog.engine).get(body["request_id"])  # through /v1, like any client
    assert logged is not None and logged["endpoint"] == "/v1/completions" and logged["prompt"] == "the"
    bad = client.post("/ui/api/generate", json={"prompt": "the", "max_tokens": -1})
    assert bad.status_code == 400 and "max_tokens" in bad.json()["error"]["message"]


def test_writes_need_a_write_key(opened: tuple[Pipeline, TestClient], project: Path) -> None:
    p, client = opened
    keys = KeyStore(p.catalog.engine)
    _, read_key = keys.create("reader")
    _, write_key = keys.create("editor", write=True)
    before = (project / "notes.jsonl").read_text()
    form = {"text": "typed by hand", "author": "ann", "label": "positive"}
    assert client.post("/ui/records", data=form).status_code == 403
    assert client.post("/ui/key", data={"key": "gl-wrong"}).status_code == 401
    client.post("/ui/key", data={"key": read_key})
    assert client.cookies.get(KEY_COOKIE) == read_key
    denied = client.post("/ui/records", data=form)
    assert denied.status_code == 403 and "--write" in denied.text
    assert (project / "notes.jsonl").read_text() == before
    client.post("/ui/key", data={"key": write_key})
    added = client.post("/ui/records", data=form, follow_redirects=False)
    assert added.status_code == 303, added.text
    assert client.post("/ui/records/label", data={"line": "2", "label": "negative"}).status_code == 200
    lines = (project / "notes.jsonl").read_text().splitlines()
    assert '"typed by hand"' in lines[-1] and '"positive"' in lines[-1]
    assert '"label": "negative"' in lines[1]
    client.cookies.clear()
    header = {"Authorization": f"Bearer {write_key}"}
    assert (
        client.post("/ui/records/label", data={"line": "1", "label": "x"}, headers=header).status_code == 200
    )
    assert client.post("/ui/records", data={"text": "", "author": "a"}, headers=header).status_code == 400


def test_api_key_required_guards_every_page(project: Path) -> None:
    p = Pipeline.from_file(project / "pipeline.yaml")
    try:
        _, key = KeyStore(p.catalog.engine).create("viewer")
        with TestClient(create_dashboard(p, settings=ServeSettings(require_key=True))) as client:
            assert client.get("/ui/models").status_code == 401
            assert client.get("/ui/key").status_code == 200  # where the key is given
            assert client.post("/ui/api/generate", json={"prompt": "a"}).status_code == 401
            client.post("/ui/key", data={"key": key})
            assert client.get("/ui/models").status_code == 200
    finally:
        p.close()


def test_playground_samples_rows_from_a_table_model(project: Path, tmp_path: Path) -> None:
    from tests.serve.conftest import StubTableFamily

    family = StubTableFamily()
    p = Pipeline.from_file(project / "pipeline.yaml")
    try:
        app = create_dashboard(p, loader=lambda: ServedModel("rows", 1, tmp_path, family))
        with ready_client(app) as client:
            assert "/v1/samples" in client.get("/ui/playground").text
            r = client.post("/ui/api/generate", json={"n": 2, "conditions": {"sex": "Female"}, "seed": 4})
            assert r.status_code == 200, r.text
            assert len(r.json()["rows"]) == 2 and family.calls == [(2, {"sex": "Female"}, 4)]
    finally:
        p.close()


def test_genloom_ui_serves_the_pages(project: Path) -> None:
    import subprocess
    import sys

    import httpx

    from tests.serve.conftest import free_port

    port = free_port()
    cmd = [sys.executable, "-c", "from genloom.cli import main; main()", "ui", str(project / "pipeline.yaml")]
    proc = subprocess.Popen([*cmd, "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/ui/models")
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "genloom ui did not start"
                time.sleep(0.1)
        assert r.status_code == 200 and "champion" in r.text
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert f"http://127.0.0.1:{port}/ui/" in (proc.stderr.read() if proc.stderr else "")

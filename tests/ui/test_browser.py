"""The dashboard in headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright; no
browser is downloaded): every page opens, the playground generates, and a labelled record typed on
the records page is ingested by the next ``genloom run``.

With ``GENLOOM_UI_SCREENSHOTS=<folder>`` each page's screenshot is saved there (docs/img/ui-*.png
are made this way)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genloom.pipeline import Pipeline
from genloom.serve.keys import KeyStore
from genloom.ui.app import create_dashboard
from tests.serve.conftest import live_server

CHROMIUM = Path("/usr/bin/chromium")
PAGES = {
    "overview": "/ui/",
    "runs": "/ui/runs",
    "models": "/ui/models",
    "reports": "/ui/reports",
    "drift": "/ui/drift",
    "requests": "/ui/requests",
    "playground": "/ui/playground",
    "records": "/ui/records",
    "key": "/ui/key",
    "lineage": "/ui/lineage?id=manual:notes.jsonl%23line=3",
}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def site(trained_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The dashboard of a copy of the trained project on a loopback port, a write key, a browser."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (genloom[dev])")
    folder = tmp_path_factory.mktemp("browser") / "p"
    shutil.copytree(trained_project, folder)
    p = Pipeline.from_file(folder / "pipeline.yaml")
    _, key = KeyStore(p.catalog.engine).create("editor", write=True)
    try:
        with live_server(create_dashboard(p)) as base, sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1100, "height": 720})
            try:
                yield {"base": base, "page": page, "pipeline": p, "folder": folder, "key": key}
            finally:
                browser.close()
    finally:
        p.close()


def _shot(page: Any, name: str) -> None:
    folder = os.environ.get("GENLOOM_UI_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"ui-{name}.png"))


def test_every_page_opens(site: dict[str, Any]) -> None:
    page, base, p = site["page"], site["base"], site["pipeline"]
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    run_id = p.catalog.runs()[0]["id"]
    train = p.catalog.latest_artifact("m", "train")
    pages = {**PAGES, "run": f"/ui/runs/{run_id}", "artifact": f"/ui/artifacts/{train['key']}"}
    for name, path in pages.items():
        response = page.goto(base + path)
        assert response is not None and response.status == 200, path
        assert page.locator("h1").inner_text(), path
        assert page.locator(".error").count() == 0, (path, page.content()[:500])
        _shot(page, name)
    page.goto(base + "/ui/drift")
    assert page.locator("svg.chart").count() == 2
    assert page.locator("svg.chart circle[fill='#dc2626']").count() == 2  # the breached checks
    page.goto(base + "/ui/models")
    assert "champion" in page.locator("#versions").inner_text()
    assert errors == []


def test_playground_generates(site: dict[str, Any]) -> None:
    page, base = site["page"], site["base"]
    page.goto(base + "/ui/playground")
    page.fill("#prompt", "the record")
    page.fill("input[name=max_tokens]", "6")
    page.fill("input[name=seed]", "7")
    page.click("#generate")
    completion = page.locator("#completion")
    completion.wait_for(timeout=20_000)
    assert completion.inner_text().startswith("the record")
    assert "request " in page.locator("#result").inner_text()
    _shot(page, "playground-result")


def test_a_labelled_record_is_ingested_by_the_next_run(site: dict[str, Any]) -> None:
    page, base, p, folder = site["page"], site["base"], site["pipeline"], site["folder"]
    page.goto(base + "/ui/records")
    assert page.locator("#add-record").is_disabled()  # read-only without a key
    page.goto(base + "/ui/key")
    page.fill("input[name=key]", site["key"])
    page.click("#use-key")
    page.goto(base + "/ui/records")
    page.fill("#new-record textarea[name=text]", "a support ticket typed in the dashboard")
    page.fill("#new-record input[name=author]", "ann")
    page.fill("#new-record input[name=label]", "urgent")
    page.click("#add-record")
    assert "added line 65" in page.locator("#done").inner_text()
    first = page.locator("form.label-form").last  # rows are listed newest first: line 1 is last
    first.locator("input[name=label]").fill("routine")
    first.locator("button").click()
    assert "labelled line 1" in page.locator("#done").inner_text()
    assert "urgent" in (folder / "notes.jsonl").read_text()
    _shot(page, "records")

    summary = p.run()
    assert summary.model is not None
    ingest = next(s for s in p.catalog.stage_runs(p.catalog.runs()[0]["id"]) if s["stage"] == "ingest")
    assert ingest["status"] == "ran"  # the file changed, so the manual source read it again
    rows = []
    for shard in p.store.read_manifest("ingest", ingest["key"])["shards"]:
        rows += p.store.read_shard("ingest", shard, "data").to_pylist()
    by_id = {r["id"]: r for r in rows}
    typed = by_id["manual:notes.jsonl#line=65"]
    assert typed["text"] == "a support ticket typed in the dashboard" and typed["label"] == "urgent"
    assert json.loads(typed["meta"])["author"] == "ann"
    assert by_id["manual:notes.jsonl#line=1"]["label"] == "routine"
    assert len(rows) == 65

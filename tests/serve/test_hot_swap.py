"""Hot swap (``--follow-champion``): a live server under streaming load while the registry
promotes a new champion, and a new champion whose weights are corrupt."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from genloom.pipeline import Pipeline
from genloom.serve.app import create_app, registered_model
from genloom.serve.schemas import ServeSettings
from genloom.serve.traffic import RequestLog
from tests.conftest import write_pipeline
from tests.serve.conftest import live_server

SETTINGS = ServeSettings(follow_interval_s=0.1, max_batch=8)


@pytest.fixture
def pipeline(tmp_path: Path, tiny_gpt: Path, chat_gpt: Path) -> Iterator[Pipeline]:
    """A pipeline whose catalog has the tiny GPT as v1 (champion) and the chat GPT as v2."""
    p = Pipeline.from_file(write_pipeline(tmp_path / "proj"))
    p.catalog.register_model(p.model_name, "a" * 64, str(tiny_gpt), {}, "run1")
    p.catalog.register_model(p.model_name, "b" * 64, str(chat_gpt), {}, "run2")
    p.catalog.promote(p.model_name, 1)
    yield p
    p.close()


def _wait(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def _served_version(base: str) -> int:
    return int(httpx.get(f"{base}/v1/models").json()["data"][0]["version"])


def test_a_new_champion_is_swapped_in_under_load_without_a_failed_request(pipeline: Pipeline) -> None:
    loader = registered_model(pipeline)
    app = create_app(loader, pipeline.catalog, settings=SETTINGS, follow=loader)
    results: list[tuple[int, str, bool, float]] = []  # (status, X-Model-Version, ended with [DONE], end)
    stop = threading.Event()
    with live_server(app) as base:
        first_engine = app.state.genloom.engine

        def client(i: int) -> None:
            body = {"prompt": "alpha beta", "max_tokens": 12, "stream": True, "seed": i, "ignore_eos": True}
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    with http.stream("POST", f"{base}/v1/completions", json=body) as r:
                        lines = [x for x in r.iter_lines() if x]
                    done = bool(lines) and lines[-1] == "data: [DONE]"
                    results.append(
                        (r.status_code, r.headers.get("x-model-version", ""), done, time.monotonic())
                    )

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        assert _wait(lambda: len(results) >= 8, 30)
        pipeline.catalog.promote(pipeline.model_name, 2)
        promoted = time.monotonic()
        assert _wait(lambda: _served_version(base) == 2, 30)
        swapped = time.monotonic()
        count = len(results)
        assert _wait(lambda: len(results) >= count + 8, 30)  # more requests after the swap
        stop.set()
        for t in threads:
            t.join(timeout=30)
        # the old engine finished its rows and stopped; the new one runs
        assert _wait(lambda: first_engine._thread is None, 10)
        assert app.state.genloom.engine is not first_engine and app.state.genloom.engine._thread is not None
        assert httpx.get(f"{base}/readyz").json()["version"] == 2
        metrics = httpx.get(f"{base}/metrics").text
    assert all(status == 200 and done for status, _, done, _ in results), [
        r for r in results if r[0] != 200 or not r[2]
    ]
    versions = [v for _, v, _, _ in results]
    assert "1" in versions and "2" in versions
    assert all(v == "2" for _, v, _, end in results if end > swapped + 1.0)  # later: all the new one
    assert all(v == "1" for _, v, _, end in results if end < promoted)
    assert 'genloom_model_swaps_total{result="ok"} 1.0' in metrics
    assert 'genloom_model_info{model="t",version="2"} 1.0' in metrics
    assert 'version="1"' not in metrics.split("genloom_model_info")[-1].split("\n# ")[0]
    logged = {row["version"] for row in RequestLog(pipeline.catalog.engine).recent(1000)}
    assert logged == {1, 2}


def test_a_new_champion_that_fails_to_load_leaves_the_old_one_serving(
    pipeline: Pipeline, tiny_gpt: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_gpt, broken, ignore=shutil.ignore_patterns("checkpoints"))
    (broken / "model.safetensors").write_bytes(b"\x00not safetensors at all" * 10)
    pipeline.catalog.register_model(pipeline.model_name, "c" * 64, str(broken), {}, "run3")
    loader = registered_model(pipeline)
    app = create_app(loader, pipeline.catalog, settings=SETTINGS, follow=loader)
    with live_server(app) as base:
        pipeline.catalog.promote(pipeline.model_name, 3)
        assert _wait(
            lambda: 'genloom_model_swaps_total{result="failed"} 1.0' in httpx.get(f"{base}/metrics").text, 30
        )
        time.sleep(0.3)  # more polls: the failed version is not retried in a loop
        metrics = httpx.get(f"{base}/metrics").text
        ready = httpx.get(f"{base}/readyz")
        reply = httpx.post(f"{base}/v1/completions", json={"prompt": "alpha", "max_tokens": 3}, timeout=30)
        assert _served_version(base) == 1
    assert 'genloom_model_swaps_total{result="failed"} 1.0' in metrics
    assert ready.status_code == 200 and ready.json()["version"] == 1
    assert reply.status_code == 200 and reply.headers["X-Model-Version"] == "1"
    assert any(
        "hot swap to v3 failed" in r.getMessage() and "still serving v1" in r.getMessage()
        for r in caplog.records
    )

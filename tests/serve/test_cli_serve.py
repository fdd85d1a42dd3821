"""``genloom keys`` and ``genloom serve`` on a pipeline whose catalog holds the tiny GPT as champion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from genloom.cli import app
from genloom.pipeline import Pipeline
from genloom.serve.app import registered_model
from tests.conftest import write_pipeline
from tests.serve.conftest import free_port


@pytest.fixture
def project(tmp_path: Path, tiny_gpt: Path) -> Path:
    """A pipeline file whose catalog has the tiny GPT registered as version 1, the champion."""
    path = write_pipeline(tmp_path / "proj")
    p = Pipeline.from_file(path)
    try:
        p.catalog.register_model(p.model_name, "k" * 64, str(tiny_gpt), {}, "run1")
        p.catalog.promote(p.model_name, 1)
    finally:
        p.close()
    return path


def test_registered_model_loads_the_champion(project: Path, tiny_gpt: Path) -> None:
    p = Pipeline.from_file(project)
    try:
        model = registered_model(p)()
    finally:
        p.close()
    assert (model.name, model.version, model.model_dir) == ("t", 1, tiny_gpt)
    assert model.family.generates_text and not model.chat and model.created > 0


def test_keys_create_list_revoke(project: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "alice", "--pipeline", str(project)])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("gl-")
    listed = runner.invoke(app, ["keys", "list", "-p", str(project)])
    assert listed.exit_code == 0 and "alice" in listed.stdout and key not in listed.stdout
    p = Pipeline.from_file(project)
    try:
        from genloom.serve.keys import KeyStore

        store = KeyStore(p.catalog.engine)
        key_id = store.verify(key)
        assert key_id is not None
        revoked = runner.invoke(app, ["keys", "revoke", key_id, "-p", str(project)])
        assert revoked.exit_code == 0, revoked.output
        assert store.verify(key) is None
    finally:
        p.close()
    again = runner.invoke(app, ["keys", "revoke", key_id, "-p", str(project)])
    assert again.exit_code == 1 and "no active API key" in again.output


def _slow_body(body: bytes, sent: threading.Event, go_on: threading.Event) -> Iterator[bytes]:
    """``body`` in two parts; the second waits for ``go_on`` (the request is in flight meanwhile)."""
    yield body[:10]
    sent.set()
    go_on.wait(30)
    yield body[10:]


@pytest.mark.slow  # fresh interpreters import torch and load the model (~25-40 s on 2 cores)
def test_genloom_serve_with_two_workers_answers_and_shuts_down_gracefully(project: Path) -> None:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "genloom.cli", "serve", str(project), "--port", str(port)),
            *("--require-key", "--max-batch", "4", "--max-queue", "8", "--workers", "2"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 120
        while len(pids) < 2:  # both workers ready (the OS hands each new connection to one of them)
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    pids.add(httpx.get(f"{base}/healthz").json()["pid"])
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, f"genloom serve --workers 2: ready workers {pids}"
            time.sleep(0.1)
        assert proc.pid not in pids  # the workers are processes of their own
        assert httpx.get(f"{base}/v1/models").status_code == 401  # --require-key on loopback
        metrics = httpx.get(f"{base}/metrics").text
        assert 'genloom_model_info{model="t",version="1"} 1.0' in metrics
        assert "genloom_active_slots 0.0" in metrics  # the GPT engine runs
        # a request in flight when SIGTERM comes (its body still arriving) is finished, not dropped
        key = _create_key(project)
        body = json.dumps({"prompt": "alpha", "max_tokens": 4}).encode()
        sent, go_on = threading.Event(), threading.Event()
        result: dict[str, httpx.Response] = {}

        def call() -> None:
            result["r"] = httpx.post(
                f"{base}/v1/completions",
                content=_slow_body(body, sent, go_on),
                headers={
                    "Authorization": f"Bearer {key}",
                    "Content-Type": "application/json",
                    "Content-Length": str(len(body)),
                },
                timeout=60,
            )

        caller = threading.Thread(target=call)
        caller.start()
        assert sent.wait(30)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        go_on.set()
        caller.join(timeout=60)
        assert result["r"].status_code == 200, result["r"].text
        assert result["r"].json()["choices"][0]["text"] is not None
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate(timeout=20)[0].decode()
    assert "serving t on http://127.0.0.1" in output and "2 workers" in output
    assert '"path": "/v1/models", "status": 401' in output  # the JSON access log line, from a worker


def _create_key(project: Path) -> str:
    from genloom.serve.keys import KeyStore

    p = Pipeline.from_file(project)
    try:
        return KeyStore(p.catalog.engine).create("workers")[1]
    finally:
        p.close()

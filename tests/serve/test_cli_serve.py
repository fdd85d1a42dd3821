"""``genloom keys`` and ``genloom serve`` on a pipeline whose catalog holds the tiny GPT as champion."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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


@pytest.mark.slow  # a fresh interpreter imports torch and loads the model (~25 s on 2 cores)
def test_genloom_serve_answers_over_http(project: Path) -> None:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "genloom.cli", "serve", str(project), "--port", str(port)),
            *("--require-key", "--max-batch", "4", "--max-queue", "8", "--threads", "1"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "genloom serve did not become ready"
            time.sleep(0.2)
        assert httpx.get(f"{base}/v1/models").status_code == 401  # --require-key on loopback
        metrics = httpx.get(f"{base}/metrics").text
        assert 'genloom_model_info{model="t",version="1"} 1.0' in metrics
        assert "genloom_active_slots 0.0" in metrics  # the GPT engine runs
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
    assert "serving t on http://127.0.0.1" in output
    assert '"path": "/v1/models", "status": 401' in output  # the JSON access log line

"""Fixtures of the server tests: a tiny GPT and a tiny chat GPT trained once per session (5 steps),
a stub table family, a real SQLite catalog, and app / live-server helpers."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from genloom.core.catalog import Catalog
from genloom.models.base import ModelFamily, family_of
from genloom.models.text import read_model_config
from genloom.serve.app import ServedModel

WORDS = ["alpha", "beta", "gamma", "delta"]


def _train_gpt(out: Path, docs: list[str], **train_kw: Any) -> Path:
    from genloom.models.tokenizer import TokenizerConfig, train_tokenizer
    from genloom.models.tokens import pack_tokens
    from genloom.train.config import TrainConfig
    from genloom.train.loop import train

    tok = train_tokenizer(iter(docs), TokenizerConfig(vocab_size=300))
    out.mkdir(parents=True)
    tok.save(str(out / "tokenizer.json"))
    pack_tokens(tok, docs[:90], out.parent / f"{out.name}-train.bin")
    pack_tokens(tok, docs[90:], out.parent / f"{out.name}-val.bin")
    cfg = TrainConfig(
        model={"type": "gpt", "preset": "tiny", "block_size": 32},
        max_steps=5,
        batch_size=4,
        precision="fp32",
        threads=1,
        **train_kw,
    )
    train(cfg, out.parent / f"{out.name}-train.bin", out.parent / f"{out.name}-val.bin", out)
    return out


@pytest.fixture(scope="session")
def tiny_gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPT trained for 5 steps on words of a 4-word vocabulary (plain text, no chat)."""
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(100)]
    return _train_gpt(tmp_path_factory.mktemp("models") / "gpt", docs)


@pytest.fixture(scope="session")
def chat_gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPT trained for 5 steps on conversations in genloom's chat template (``train.chat`` set)."""
    from genloom.models.tokenizer import format_chat

    rng = random.Random(1)
    docs = [
        format_chat(
            [
                {"role": "user", "content": f"say {w}"},
                {"role": "assistant", "content": " ".join([w] * rng.randint(1, 4))},
            ]
        )
        for w in (rng.choice(WORDS) for _ in range(100))
    ]
    return _train_gpt(tmp_path_factory.mktemp("models") / "chat", docs, chat={"messages_field": "text"})


def served(model_dir: Path, name: str = "tiny", version: int = 1) -> ServedModel:
    """The ServedModel of a trained folder, without a catalog."""
    return ServedModel(
        name, version, model_dir, family_of(model_dir), read_model_config(model_dir), 1700000000
    )


ROWS = pa.table({"age": pa.array([39, 50, 38], pa.int64()), "sex": ["Female", "Male", "Female"]})


class StubTableFamily(ModelFamily):
    """A table family whose ``sample`` returns the first ``n`` rows of ``ROWS`` (records its calls)."""

    name = "stub_table"

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, Any] | None, int | None]] = []

    def sample(
        self,
        model_dir: Path,
        n: int,
        conditions: dict[str, Any] | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> pa.Table:
        self.calls.append((n, conditions, seed))
        return ROWS.slice(0, n)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    """A real SQLite catalog in the test's folder."""
    c = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield c
    c.close()


@contextmanager
def ready_client(app: FastAPI, **kw: Any) -> Iterator[TestClient]:
    """A TestClient whose app has finished loading its model."""
    with TestClient(app, **kw) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.05)
        yield client


def free_port() -> int:
    """A TCP port free on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields its base URL once ready."""
    import httpx
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.05)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)

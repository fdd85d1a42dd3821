"""A live uvicorn server on a loopback port, driven by the official ``openai`` client."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from genloom.core.catalog import Catalog
from genloom.serve.app import create_app
from genloom.serve.keys import KeyStore
from genloom.serve.schemas import ServeSettings
from tests.serve.conftest import live_server, served

openai = pytest.importorskip("openai")


def test_openai_client_completions_streaming_models_and_auth(tiny_gpt: Path, catalog: Catalog) -> None:
    keys = KeyStore(catalog.engine)
    key_id, key = keys.create("live")
    app = create_app(lambda: served(tiny_gpt), catalog, keys=keys, settings=ServeSettings(require_key=True))
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
        (card,) = client.models.list().data
        assert card.id == "tiny"

        done = client.completions.create(
            model="tiny", prompt="alpha beta", max_tokens=6, temperature=0, extra_body={"top_k": 5}
        )
        assert done.object == "text_completion"
        assert done.usage is not None and done.usage.completion_tokens > 0
        text = done.choices[0].text

        stream = client.completions.create(
            model="tiny",
            prompt="alpha beta",
            max_tokens=6,
            temperature=0,
            stream=True,
            extra_body={"top_k": 5},
        )
        pieces = list(stream)
        assert "".join(c.choices[0].text for c in pieces) == text
        assert pieces[-1].choices[0].finish_reason in ("stop", "length")

        with pytest.raises(openai.BadRequestError, match="controls"):  # extra_body reaches the server
            client.completions.create(model="tiny", prompt="a", extra_body={"controls": {"mood": "sad"}})
        with pytest.raises(openai.BadRequestError, match="not trained for chat"):
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="gpt-4", prompt="a")

        anonymous = openai.OpenAI(base_url=f"{base}/v1", api_key="gl-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            anonymous.models.list()
        keys.revoke(key_id)
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
        assert httpx.get(f"{base}/metrics").status_code == 200


def test_openai_client_chat_and_chat_streaming(chat_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(chat_gpt, "chatty"), catalog)  # loopback: no key needed
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        messages = [{"role": "user", "content": "say gamma"}]
        reply = client.chat.completions.create(model="chatty", messages=messages, max_tokens=5, temperature=0)
        assert reply.object == "chat.completion"
        assert reply.choices[0].message.role == "assistant"
        content = reply.choices[0].message.content
        assert content is not None
        stream = client.chat.completions.create(
            model="chatty", messages=messages, max_tokens=5, temperature=0, stream=True
        )
        chunks = list(stream)
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == content
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_concurrent_requests_are_all_answered_and_logged(tiny_gpt: Path, catalog: Catalog) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from genloom.serve.traffic import RequestLog

    app = create_app(lambda: served(tiny_gpt), catalog)
    with live_server(app) as base:

        def call(i: int) -> httpx.Response:
            body = {"prompt": "alpha", "max_tokens": 4, "seed": i}
            return httpx.post(f"{base}/v1/completions", json=body, timeout=60)

        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(call, range(8)))
    assert [r.status_code for r in replies] == [200] * 8
    ids = {r.headers["X-Request-ID"] for r in replies}
    assert len(ids) == 8
    log = RequestLog(catalog.engine)
    assert all(log.get(i) is not None for i in ids)

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
        assert len([c for c in pieces if c.choices[0].text]) > 1  # real token chunks

        scored = client.completions.create(
            model="tiny", prompt="alpha beta", max_tokens=3, temperature=0, logprobs=2
        )
        lp = scored.choices[0].logprobs
        assert lp is not None and lp.tokens is not None and len(lp.tokens) == 3
        assert lp.top_logprobs is not None and all(len(t) == 2 for t in lp.top_logprobs)

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
        scored = client.chat.completions.create(
            model="chatty", messages=messages, max_tokens=3, temperature=0, logprobs=True, top_logprobs=1
        )
        assert scored.choices[0].logprobs is not None and scored.choices[0].logprobs.content
        with_usage = client.chat.completions.create(
            model="chatty",
            messages=messages,
            max_tokens=3,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        last = list(with_usage)[-1]
        assert last.usage is not None and last.usage.prompt_tokens > 0


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


def _slow_engine(app: object, seconds: float) -> None:
    """Makes each turn of the app's engine take ``seconds`` longer, so a request is still running
    when the test acts on it (the tiny model generates its whole block in milliseconds)."""
    import time

    engine = app.state.genloom.engine  # type: ignore[attr-defined]
    turn = engine._turn

    def slow() -> None:
        time.sleep(seconds)
        turn()

    engine._turn = slow


def _wait(condition: object, timeout: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_a_client_that_disconnects_frees_its_slot(tiny_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(tiny_gpt), catalog)
    with live_server(app) as base:
        engine = app.state.genloom.engine
        _slow_engine(app, 0.05)  # 30 tokens: 1.5 s if nobody stops it
        body = {"prompt": "alpha", "max_tokens": 30, "temperature": 0, "stream": True, "n": 2}
        with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=30) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            assert _wait(lambda: engine.active == 2, timeout=1)
        # closed after the first chunk: the slots are freed at the engine's next step
        assert _wait(lambda: engine.active == 0, timeout=0.6), engine.active
        assert "genloom_active_slots 0.0" in httpx.get(f"{base}/metrics").text
        ok = httpx.post(f"{base}/v1/completions", json={"prompt": "alpha", "max_tokens": 2}, timeout=30)
        assert ok.status_code == 200


def test_graceful_shutdown_finishes_a_stream_in_flight(tiny_gpt: Path, catalog: Catalog) -> None:
    import threading

    import uvicorn

    from tests.serve.conftest import free_port

    app = create_app(lambda: served(tiny_gpt), catalog)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    assert _wait(lambda: _ready(base), timeout=30)
    _slow_engine(app, 0.02)
    body = {"prompt": "alpha", "max_tokens": 20, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()
        first = next(lines)
        server.should_exit = True  # SIGTERM's path: stop accepting, finish what is in flight
        rest = [x for x in lines if x]
    assert first.startswith("data: ") and rest[-1] == "data: [DONE]"
    assert '"finish_reason": "length"' in rest[-2]
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert app.state.genloom.engine._thread is None  # the engine was stopped after draining


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz").status_code == 200
    except httpx.TransportError:
        return False


def test_a_non_streaming_client_that_leaves_frees_its_slot(tiny_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(tiny_gpt), catalog)
    with live_server(app) as base:
        engine = app.state.genloom.engine
        _slow_engine(app, 0.05)  # 30 tokens: 1.5 s if nobody stops it
        body = {"prompt": "alpha", "max_tokens": 30, "temperature": 0}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/completions", json=body, timeout=0.3)  # gives up, closes the socket
        assert engine.active == 1
        # the endpoint looks at its connection every half second and cancels the job
        assert _wait(lambda: engine.active == 0, timeout=0.9), engine.active

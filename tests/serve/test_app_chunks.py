"""The server's streamed chunks written from templates (serve/app.py ``_ChunkWriter``) are the
same bytes as ``json.dumps`` of OpenAI's chunk dicts, and the plain ASGI middleware keeps a
chunked upload's body for the app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genloom.core.catalog import Catalog
from genloom.serve.app import _ChunkWriter, create_app
from genloom.serve.engine import TokenLogprob
from tests.serve.conftest import ready_client, served

HEAD = {"id": "cmpl-abc", "object": "text_completion", "created": 1_800_000_000, "model": 'tiny "m"'}
TEXTS = ["", "a", " the", 'quote " and \\ back', "new\nline\ttab", "é ü 日本 😀", "\x00\x1f", "\ufffd"]


def reference(chat: bool, usage: bool, index: int, text: str, finish: str | None) -> str:
    """The chunk as the server wrote it before the templates: a dict through ``json.dumps``."""
    if chat:
        choice = {"index": index, "delta": {"content": text} if text else {}, "logprobs": None}
    else:
        choice = {"index": index, "text": text, "logprobs": None}
    choice["finish_reason"] = finish
    extra = {"usage": None} if usage else {}
    return f"data: {json.dumps({**HEAD, 'choices': [choice], **extra})}\n\n"


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("usage", [False, True])
def test_text_chunks_are_the_bytes_of_json_dumps(chat: bool, usage: bool) -> None:
    head = {**HEAD, "object": "chat.completion.chunk"} if chat else HEAD
    write = _ChunkWriter(head, chat, usage, 0)
    for index in (0, 3, 17):
        for text in TEXTS:
            if text:
                want = reference(chat, usage, index, text, None).replace(HEAD["object"], head["object"], 1)
                assert write.text(index, text) == want
                assert json.loads(write.text(index, text)[6:])["choices"][0]["index"] == index
            for finish in (None, "stop", "length"):
                want = reference(chat, usage, index, text, finish).replace(HEAD["object"], head["object"], 1)
                assert write(index, finish, text) == want


def test_logprob_chunks_keep_their_fields() -> None:
    lps = (TokenLogprob("a", -0.5, (("a", -0.5), ("b", -1.0))), TokenLogprob(" b", -0.25, ()))
    done = json.loads(_ChunkWriter(HEAD, False, False, 2)(1, None, "a b", lps, 4)[6:])
    assert done["choices"][0]["logprobs"] == {
        "tokens": ["a", " b"],
        "token_logprobs": [-0.5, -0.25],
        "top_logprobs": [{"a": -0.5, "b": -1.0}, {}],
        "text_offset": [4, 5],
    }
    chat = json.loads(_ChunkWriter(HEAD, True, True, 1)(0, "stop", "a", lps[:1])[6:])
    assert chat["usage"] is None and chat["choices"][0]["finish_reason"] == "stop"
    (entry,) = chat["choices"][0]["logprobs"]["content"]
    assert entry["top_logprobs"] == [{"token": "a", "logprob": -0.5, "bytes": [97]}]


def test_a_chunked_upload_reaches_the_app_after_the_guard_counted_it(
    tiny_gpt: Path, catalog: Catalog
) -> None:
    app = create_app(lambda: served(tiny_gpt), catalog)
    body = json.dumps({"prompt": "alpha", "max_tokens": 2}).encode()

    def parts():  # no content-length: the guard reads the body to count it
        yield body[:7]
        yield body[7:]

    with ready_client(app) as client:
        r = client.post("/v1/completions", content=parts(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] > 0 and r.headers["X-Request-ID"]


def test_a_stream_keeps_its_headers_log_row_and_metrics(tiny_gpt: Path, catalog: Catalog) -> None:
    from genloom.serve.traffic import RequestLog

    app = create_app(lambda: served(tiny_gpt), catalog)
    body = {"prompt": "alpha", "max_tokens": 6, "temperature": 0, "stream": True, "n": 2}
    body["stream_options"] = {"include_usage": True}
    with ready_client(app) as client:
        with client.stream("POST", "/v1/completions", json=body, headers={"X-Request-ID": "s-1"}) as r:
            assert r.headers["X-Request-ID"] == "s-1" and r.headers["X-Model-Version"] == "1"
            raw = r.read().decode()
        metrics = client.get("/metrics").text
    events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    texts = ["", ""]
    for c in chunks[:-1]:
        (choice,) = c["choices"]
        texts[choice["index"]] += choice["text"]
        assert c["usage"] is None
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert sorted(
        c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"][0]["finish_reason"]
    ) == [
        "length",
        "length",
    ]
    row = RequestLog(catalog.engine).get("s-1")
    assert row is not None and row["status"] == 200 and row["endpoint"] == "/v1/completions"
    assert json.loads(row["output"]) == texts and row["completion_tokens"] == 12
    assert 'genloom_requests_total{endpoint="/v1/completions",status="200"} 1.0' in metrics

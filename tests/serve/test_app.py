"""The server app through FastAPI's TestClient: text and chat completions, streaming, errors,
limits, auth with real keys, metrics, the request log and feedback, table samples."""

from __future__ import annotations

import io
import json
import logging
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from genloom.core.catalog import Catalog
from genloom.serve.app import ServedModel, create_app, is_loopback
from genloom.serve.keys import KeyStore
from genloom.serve.schemas import ServeSettings
from genloom.serve.traffic import RequestLog
from tests.serve.conftest import ROWS, StubTableFamily, ready_client, served


class TickClock:
    """A clock that advances 0.25 s per reading, so latencies and timestamps are known."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        self.t += 0.25
        return self.t


def test_completion_counts_tokens_and_is_logged(tiny_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(tiny_gpt), catalog, clock=TickClock())
    with ready_client(app) as client:
        r = client.post(
            "/v1/completions",
            json={"model": "tiny", "prompt": "alpha beta", "max_tokens": 8, "temperature": 0, "seed": 0},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "text_completion" and body["model"] == "tiny"
        (choice,) = body["choices"]
        usage = body["usage"]
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        rid = r.headers["X-Request-ID"]
        again = client.post(
            "/v1/completions",
            json={"prompt": "alpha beta", "max_tokens": 8, "temperature": 0, "seed": 0},
        )
        assert again.json()["choices"][0]["text"] == choice["text"]  # greedy: the same text
    row = RequestLog(catalog.engine).get(rid)
    assert row is not None
    assert row["endpoint"] == "/v1/completions" and row["status"] == 200
    assert (row["model"], row["version"]) == ("tiny", 1)
    assert row["prompt"] == "alpha beta" and row["output"] == choice["text"]
    assert row["prompt_tokens"] == usage["prompt_tokens"]
    assert row["completion_tokens"] == usage["completion_tokens"]
    assert row["latency_s"] == pytest.approx(0.5)  # the clock is read at the start, for `created`, at the end
    assert row["finish_reason"] == choice["finish_reason"] and row["max_tokens"] == 8


def test_a_requests_table_from_before_the_stop_columns_gets_them(tmp_path: Path) -> None:
    """An older ``requests`` table (no finish_reason, no max_tokens) gains both; its rows keep NULL."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as c:
        c.execute(
            sa.text(
                "CREATE TABLE requests (id INTEGER PRIMARY KEY, request_id VARCHAR(64) NOT NULL UNIQUE,"
                " created_at DATETIME NOT NULL, endpoint VARCHAR(100) NOT NULL, model VARCHAR(200),"
                " version INTEGER, key_id VARCHAR(32), latency_s FLOAT NOT NULL, prompt_tokens INTEGER,"
                " completion_tokens INTEGER, status INTEGER NOT NULL, prompt TEXT, output TEXT)"
            )
        )
        c.execute(
            sa.text(
                "INSERT INTO requests (request_id, created_at, endpoint, latency_s, status)"
                " VALUES ('old', '2026-01-01 00:00:00', '/v1/completions', 0.1, 200)"
            )
        )
    log = RequestLog(engine)
    RequestLog(engine)  # a second opening finds the columns there
    old = log.get("old")
    assert old is not None and old["finish_reason"] is None and old["max_tokens"] is None


def test_prompt_list_and_n_give_one_choice_each(tiny_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(tiny_gpt), catalog)
    with ready_client(app) as client:
        r = client.post(
            "/v1/completions", json={"prompt": ["alpha", "beta gamma"], "n": 2, "max_tokens": 3, "seed": 1}
        )
        assert r.status_code == 200, r.text
        assert [c["index"] for c in r.json()["choices"]] == [0, 1, 2, 3]


def test_redact_stores_no_text(tiny_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(tiny_gpt), catalog, settings=ServeSettings(redact=True))
    with ready_client(app) as client:
        r = client.post("/v1/completions", json={"prompt": "alpha", "max_tokens": 3})
        assert r.status_code == 200
    row = RequestLog(catalog.engine).get(r.headers["X-Request-ID"])
    assert row is not None and row["prompt"] is None and row["output"] is None
    assert row["prompt_tokens"] and row["completion_tokens"] is not None


def test_streaming_sends_openai_chunks_then_done(tiny_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(tiny_gpt), catalog)
    with ready_client(app) as client:
        full = client.post(
            "/v1/completions", json={"prompt": "alpha", "max_tokens": 6, "temperature": 0}
        ).json()
        with client.stream(
            "POST",
            "/v1/completions",
            json={"prompt": "alpha", "max_tokens": 6, "temperature": 0, "stream": True},
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == full["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert len([c for c in chunks if c["choices"][0]["text"]]) > 1  # token by token, not one block
    row = RequestLog(catalog.engine).get(r.headers["X-Request-ID"])
    assert row is not None and row["max_tokens"] == 6
    assert row["finish_reason"] == chunks[-1]["choices"][0]["finish_reason"]


def test_chat_on_a_chat_model(chat_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(chat_gpt, "chatty"), catalog)
    with ready_client(app) as client:
        r = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "say beta"}], "max_tokens": 5, "temperature": 0},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["usage"]["prompt_tokens"] > 0
    row = RequestLog(catalog.engine).get(r.headers["X-Request-ID"])
    assert row is not None and json.loads(row["prompt"]) == [{"role": "user", "content": "say beta"}]


def test_chat_on_a_plain_model_is_a_400(tiny_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(tiny_gpt), catalog)
    with ready_client(app) as client:
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "model_not_chat"
    assert "not trained for chat" in r.json()["error"]["message"]


def test_bad_requests_get_openai_style_errors(tiny_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(tiny_gpt), catalog)
    with ready_client(app) as client:
        missing = client.post("/v1/completions", json={"max_tokens": 3})
        assert missing.status_code == 400 and "prompt" in missing.json()["error"]["message"]
        hot = client.post("/v1/completions", json={"prompt": "a", "temperature": 9})
        assert hot.status_code == 400 and hot.json()["error"]["type"] == "invalid_request_error"
        other = client.post("/v1/completions", json={"model": "gpt-4", "prompt": "a"})
        assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"
        controls = client.post("/v1/completions", json={"prompt": "a", "controls": {"mood": "sad"}})
        assert controls.status_code == 400 and "controls" in controls.json()["error"]["message"]
        unknown = client.get("/v1/nothing")
        assert unknown.status_code == 404 and "error" in unknown.json()
        samples_of_text = client.post(
            "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert samples_of_text.status_code == 400


def test_limits(tiny_gpt: Path, catalog: Catalog) -> None:
    settings = ServeSettings(max_body_bytes=400, max_prompt_tokens=10, max_tokens_cap=4, max_n=2)
    app = create_app(lambda: served(tiny_gpt), catalog, settings=settings)
    with ready_client(app) as client:
        big = client.post("/v1/completions", json={"prompt": "alpha " * 100})
        assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
        long = client.post("/v1/completions", json={"prompt": "alpha beta " * 20})
        assert long.status_code == 400 and long.json()["error"]["code"] == "prompt_too_long"
        many = client.post("/v1/completions", json={"prompt": "alpha", "n": 3})
        assert many.status_code == 400 and many.json()["error"]["code"] == "n_too_large"
        capped = client.post("/v1/completions", json={"prompt": "alpha", "max_tokens": 50, "temperature": 0})
        assert capped.status_code == 200
        assert capped.json()["usage"]["completion_tokens"] <= 4
        chunked = client.post(
            "/v1/completions",
            content=iter([b'{"prompt": "', b"a" * 500, b'"}']),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 413
        small = client.post(
            "/v1/completions",
            content=iter([b'{"prompt": ', b'"alpha", "max_tokens": 2}']),
            headers={"content-type": "application/json"},
        )
        assert small.status_code == 200, small.text  # the body read by the size check reaches the endpoint


def test_auth_with_created_and_revoked_keys(tiny_gpt: Path, catalog: Catalog) -> None:
    keys = KeyStore(catalog.engine)
    key_id, key = keys.create("ci")
    assert key.startswith("gl-") and len(key) > 40
    listed = keys.list()
    assert [(k["id"], k["name"]) for k in listed] == [(key_id, "ci")]
    assert key not in json.dumps(listed, default=str)
    app = create_app(lambda: served(tiny_gpt), catalog, keys=keys, settings=ServeSettings(require_key=True))
    body = {"prompt": "alpha", "max_tokens": 2}
    with ready_client(app) as client:
        none = client.post("/v1/completions", json=body)
        assert none.status_code == 401 and none.json()["error"]["type"] == "authentication_error"
        wrong = client.post("/v1/completions", json=body, headers={"Authorization": "Bearer gl-nope"})
        assert wrong.status_code == 401
        ok = client.post("/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        assert client.get("/healthz").status_code == 200  # probes need no key
        keys.revoke(key_id)
        after = client.post("/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        assert after.status_code == 401
    log = RequestLog(catalog.engine)
    ok_row, none_row = log.get(ok.headers["X-Request-ID"]), log.get(none.headers["X-Request-ID"])
    assert ok_row is not None and ok_row["key_id"] == key_id
    assert none_row is not None and none_row["status"] == 401 and none_row["key_id"] is None
    assert none_row["endpoint"] == "/v1/completions"  # refused before routing, still named


def test_metrics_count_requests_tokens_errors_and_version(tiny_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(tiny_gpt, version=3), catalog)
    with ready_client(app) as client:
        ok = client.post("/v1/completions", json={"prompt": "alpha", "max_tokens": 4, "temperature": 0})
        client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        text = client.get("/metrics").text
    generated = ok.json()["usage"]["completion_tokens"]
    assert 'genloom_requests_total{endpoint="/v1/completions",status="200"} 1.0' in text
    assert 'genloom_requests_total{endpoint="/v1/chat/completions",status="400"} 1.0' in text
    assert f"genloom_tokens_generated_total {float(generated)}" in text
    assert 'genloom_errors_total{type="invalid_request_error"} 1.0' in text
    assert 'genloom_model_info{model="tiny",version="3"} 1.0' in text
    assert 'genloom_request_seconds_bucket{endpoint="/v1/completions"' in text


def test_access_log_is_one_json_line_per_request(
    tiny_gpt: Path, catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(lambda: served(tiny_gpt), catalog)
    with ready_client(app) as client, caplog.at_level(logging.INFO, logger="genloom.serve.access"):
        r = client.get("/v1/models", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123" and r.headers["X-Model-Version"] == "1"
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "genloom.serve.access"]
    assert lines == [
        {
            "method": "GET",
            "path": "/v1/models",
            "status": 200,
            "latency_s": lines[0]["latency_s"],
            "request_id": "abc-123",
            "key_id": None,
            "version": 1,
        }
    ]


def test_a_crash_is_a_generic_500_with_the_request_id(
    tiny_gpt: Path, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genloom.serve.engine import GPTEngine

    def boom(self: GPTEngine, *args: object, **kw: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(GPTEngine, "submit", boom)
    app = create_app(lambda: served(tiny_gpt), catalog)
    with ready_client(app) as client:
        r = client.post("/v1/completions", json={"prompt": "alpha"})
    assert r.status_code == 500
    rid = r.headers["X-Request-ID"]
    assert r.json()["error"] == {
        "message": f"internal server error (request id {rid})",
        "type": "internal_error",
        "param": None,
        "code": None,
    }
    assert "secret" not in r.text and "Traceback" not in r.text


def test_feedback_is_stored_against_a_request(tiny_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(tiny_gpt), catalog)
    with ready_client(app) as client:
        rid = client.post("/v1/completions", json={"prompt": "alpha", "max_tokens": 2}).headers[
            "X-Request-ID"
        ]
        ok = client.post("/v1/feedback", json={"request_id": rid, "rating": 1, "correction": "alpha beta"})
        assert ok.status_code == 200 and ok.json()["request_id"] == rid
        unknown = client.post("/v1/feedback", json={"request_id": "nope", "rating": 1})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "request_not_found"
    (fb,) = RequestLog(catalog.engine).feedback(rid)
    assert (fb["rating"], fb["correction"]) == (1, "alpha beta")


def _table_app(catalog: Catalog, family: StubTableFamily, tmp: Path):  # type: ignore[no-untyped-def]
    model = ServedModel("adult", 2, tmp, family, {"model_type": "stub_table"})
    return create_app(lambda: model, catalog)


def test_samples_from_a_table_model(catalog: Catalog, tmp_path: Path) -> None:
    family = StubTableFamily()
    with ready_client(_table_app(catalog, family, tmp_path)) as client:
        r = client.post("/v1/samples", json={"n": 2, "conditions": {"sex": "Female"}, "seed": 0})
        assert r.status_code == 200, r.text
        assert r.json() == {"model": "adult", "version": 2, "rows": ROWS.slice(0, 2).to_pylist()}
        csv = client.post("/v1/samples", json={"n": 3, "format": "csv"})
        assert csv.headers["content-type"].startswith("text/csv")
        assert csv.text.splitlines()[0] == '"age","sex"' and len(csv.text.splitlines()) == 4
        parquet = client.post("/v1/samples", json={"n": 3, "format": "parquet"})
        assert pq.read_table(io.BytesIO(parquet.content)).equals(ROWS)
        text = client.post("/v1/completions", json={"prompt": "a"})
        assert text.status_code == 400 and text.json()["error"]["code"] == "model_not_text"
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}]})
        assert chat.status_code == 400
        assert client.get("/v1/models").json()["data"][0]["generates_text"] is False
    assert family.calls[0] == (2, {"sex": "Female"}, 0)
    row = RequestLog(catalog.engine).get(r.headers["X-Request-ID"])
    assert row is not None and row["endpoint"] == "/v1/samples" and row["version"] == 2


def test_readyz_waits_for_the_model_and_reports_a_failed_load(catalog: Catalog) -> None:
    import threading

    from fastapi.testclient import TestClient

    release = threading.Event()

    def slow_then_fail() -> ServedModel:
        release.wait(10)
        raise FileNotFoundError("no weights")

    with TestClient(create_app(slow_then_fail, catalog)) as client:
        assert client.get("/healthz").status_code == 200
        loading = client.get("/readyz")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        assert client.post("/v1/samples", json={"n": 1}).status_code == 503
        release.set()
        app_state = client.app.state.genloom  # type: ignore[attr-defined]
        app_state.ready.wait(10)
        failed = client.get("/readyz").json()
    assert failed == {"status": "failed", "error": "FileNotFoundError: no weights"}


def test_loopback_hosts() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_greedy_completion_equals_models_text_generate(tiny_gpt: Path, catalog: Catalog) -> None:
    from genloom.models.text import generate

    prompts = ["alpha", "beta gamma delta", "delta alpha beta gamma alpha"]
    expected = [generate(tiny_gpt, [p], max_new_tokens=10, temperature=0)[0] for p in prompts]
    app = create_app(lambda: served(tiny_gpt), catalog)
    with ready_client(app) as client:
        r = client.post("/v1/completions", json={"prompt": prompts, "max_tokens": 10, "temperature": 0})
    assert [c["text"] for c in r.json()["choices"]] == expected


def test_logprobs_and_stream_usage(tiny_gpt: Path, chat_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(tiny_gpt), catalog)
    with ready_client(app) as client:
        body = {"prompt": "alpha", "max_tokens": 4, "temperature": 0, "logprobs": 2}
        lp = client.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 4
        assert all(v <= 0 for v in lp["token_logprobs"]) and all(len(t) == 2 for t in lp["top_logprobs"])
        assert lp["text_offset"][0] == 0 and lp["text_offset"][1] == len(lp["tokens"][0])
        with client.stream(
            "POST",
            "/v1/completions",
            json={**body, "stream": True, "stream_options": {"include_usage": True}},
        ) as r:
            events = [
                json.loads(x.removeprefix("data: ")) for x in r.iter_lines() if x and x != "data: [DONE]"
            ]
        streamed = [
            t
            for e in events
            if e["choices"] and e["choices"][0]["logprobs"]
            for t in e["choices"][0]["logprobs"]["tokens"]
        ]
        assert streamed == lp["tokens"]
        assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 4
        assert all(e["usage"] is None for e in events[:-1])
    chat = create_app(lambda: served(chat_gpt, "chatty"), catalog)
    with ready_client(chat) as client:
        messages = [{"role": "user", "content": "say beta"}]
        r = client.post(
            "/v1/chat/completions",
            json={
                "messages": messages,
                "max_tokens": 3,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": 2,
            },
        )
        content = r.json()["choices"][0]["logprobs"]["content"]
        assert content and {"token", "logprob", "bytes", "top_logprobs"} <= set(content[0])
        assert len(content[0]["top_logprobs"]) == 2
        bad = client.post("/v1/chat/completions", json={"messages": messages, "top_logprobs": 2})
        assert bad.status_code == 400


def _gate(app: object) -> threading.Event:
    """Holds the app's engine thread before its next turn until the returned event is set."""
    engine = app.state.genloom.engine  # type: ignore[attr-defined]
    gate = threading.Event()
    turn = engine._turn

    def held() -> None:
        gate.wait(10)
        turn()

    engine._turn = held
    return gate


def test_a_full_queue_is_a_503_with_retry_after(tiny_gpt: Path, catalog: Catalog) -> None:
    from genloom.serve.engine import SamplingParams, encode_prompt

    app = create_app(lambda: served(tiny_gpt), catalog, settings=ServeSettings(max_batch=1, max_queue=1))
    with ready_client(app) as client:
        engine = app.state.genloom.engine
        gate = _gate(app)
        waiting = engine.submit(
            [encode_prompt(engine.tok, "alpha", None)], [SamplingParams(max_new_tokens=2)]
        )
        r = client.post("/v1/completions", json={"prompt": "alpha", "max_tokens": 2})
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "server_busy"
        assert "genloom_queue_depth 1.0" in client.get("/metrics").text
        gate.set()
        assert waiting.results(10)[0].error is None
        assert client.post("/v1/completions", json={"prompt": "alpha", "max_tokens": 2}).status_code == 200


def test_a_request_past_its_timeout_is_a_504_or_a_stream_error(tiny_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(tiny_gpt), catalog, settings=ServeSettings(request_timeout_s=0.05))
    with ready_client(app) as client:
        gate = _gate(app)
        threading.Timer(0.3, gate.set).start()
        r = client.post("/v1/completions", json={"prompt": "alpha", "max_tokens": 5})
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error"
        gate = _gate(app)
        threading.Timer(0.3, gate.set).start()
        with client.stream(
            "POST", "/v1/completions", json={"prompt": "alpha", "max_tokens": 5, "stream": True}
        ) as s:
            lines = [x for x in s.iter_lines() if x]
        assert json.loads(lines[-1].removeprefix("data: "))["error"]["code"] == "request_timeout"
        assert "data: [DONE]" not in lines  # a failed stream ends with its error event
        assert 'genloom_errors_total{type="timeout_error"} 2.0' in client.get("/metrics").text


def test_engine_metrics(tiny_gpt: Path, catalog: Catalog) -> None:
    app = create_app(lambda: served(tiny_gpt), catalog)
    with ready_client(app) as client:
        client.post("/v1/completions", json={"prompt": ["alpha", "beta"], "max_tokens": 4, "temperature": 0})
        text = client.get("/metrics").text
    assert "genloom_time_to_first_token_seconds_count 1.0" in text
    assert "genloom_batch_size_count" in text and "genloom_decode_step_seconds_bucket" in text
    assert "genloom_queue_depth 0.0" in text and "genloom_active_slots 0.0" in text
    assert "genloom_engine_tokens_total 8.0" in text


def test_regex_output_through_the_engine_and_failing_closed(tiny_gpt: Path, catalog: Catalog) -> None:
    pytest.importorskip("llguidance")
    import re

    app = create_app(lambda: served(tiny_gpt), catalog)
    pattern = "(alpha|beta)( (gamma|delta)){2}"
    with ready_client(app) as client:
        ok = client.post(
            "/v1/completions",
            json={
                "prompt": "alpha",
                "max_tokens": 20,
                "temperature": 1.0,
                "seed": 3,
                "regex": pattern,
                "n": 2,
            },
        )
        assert ok.status_code == 200, ok.text
        assert all(re.fullmatch(pattern, c["text"]) for c in ok.json()["choices"])
        short = client.post("/v1/completions", json={"prompt": "alpha", "max_tokens": 1, "regex": pattern})
        assert short.status_code == 400 and short.json()["error"]["code"] == "structured_output_incomplete"
        bad = client.post("/v1/completions", json={"prompt": "alpha", "regex": "(unclosed"})
        assert bad.status_code == 400


def test_models_without_the_engine_keep_the_locked_generate_path(
    tiny_gpt: Path, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an hf_causal_lm gets (no engine: models.text.generate under the lock), shown on the
    tiny GPT with the engine turned off."""
    from genloom.models.text import generate

    monkeypatch.setattr("genloom.serve.app._engine_for", lambda *a: None)
    app = create_app(lambda: served(tiny_gpt), catalog)
    with ready_client(app) as client:
        assert app.state.genloom.engine is None
        body = {"prompt": ["alpha", "beta gamma"], "max_tokens": 6, "temperature": 0}
        r = client.post("/v1/completions", json=body)
        assert [c["text"] for c in r.json()["choices"]] == [
            generate(tiny_gpt, [p], max_new_tokens=6, temperature=0)[0] for p in body["prompt"]
        ]
        with client.stream("POST", "/v1/completions", json={**body, "prompt": "alpha", "stream": True}) as s:
            lines = [x for x in s.iter_lines() if x]
        assert lines[-1] == "data: [DONE]"
        structured = client.post("/v1/completions", json={"prompt": "alpha", "regex": "a+"})
        assert structured.status_code == 400
        assert structured.json()["error"]["code"] == "structured_output_unsupported"
        eos = client.post("/v1/completions", json={"prompt": "alpha", "ignore_eos": True})
        assert eos.status_code == 400 and eos.json()["error"]["param"] == "ignore_eos"

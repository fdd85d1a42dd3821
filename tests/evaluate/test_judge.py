"""The LLM judge against a live OpenAI-compatible server on loopback (a FastAPI app of the test
implementing /v1/chat/completions, driven by the official ``openai`` client): the JSON schema is
sent and the reply read, the first-integer fallback, the per-sample cache in the store (a second
run sends no request), the key never in the cache nor in the error of an unreachable endpoint.
The judge through the pipeline (metrics, report, cache across runs) is tested in
tests/test_evaluate_e2e.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from pydantic import SecretStr

from genloom.core.config import EvaluateConfig, JudgeConfig
from genloom.core.errors import StageError
from genloom.evaluate.judge import Judge, JudgeCache, cache_key, parse_reply, public_url

pytest.importorskip("openai", reason="pip install 'genloom[llm]'")
fastapi = pytest.importorskip("fastapi", reason="pip install 'genloom[serve]'")

from tests.serve.conftest import chat_gpt, free_port, live_server  # noqa: E402, F401

KEY = "sk-judge-secret-0123456789"


def expected_score(text: str) -> int:
    """What the test server answers for a text: 1 + its length in words, at most 10."""
    return min(10, 1 + len(text.split()))


def judge_app(log: list[dict[str, Any]]) -> Any:
    """A minimal OpenAI-compatible chat endpoint: with a json_schema response_format it answers
    the JSON object, without one a sentence holding the score; every request body goes to ``log``."""
    app = fastapi.FastAPI()
    lock = threading.Lock()

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: fastapi.Request) -> dict[str, Any]:
        body = await request.json()
        with lock:
            log.append({**body, "authorization": request.headers.get("authorization")})
        text = body["messages"][-1]["content"]
        score = expected_score(text)
        if (body.get("response_format") or {}).get("type") == "json_schema":
            content = json.dumps({"score": score, "reason": f"{len(text.split())} words"})
        else:
            content = f"I would give it {score} out of 10."
        return {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    log: list[dict[str, Any]] = []
    with live_server(judge_app(log)) as url:
        yield f"{url}/v1", log


def config(url: str, **kw: Any) -> JudgeConfig:
    fields: dict[str, Any] = {
        "model": "judge-1",
        "api_key": SecretStr(KEY),
        "rubric": "Rate the fluency.",
        **kw,
    }
    return JudgeConfig(base_url=url, **fields)


def test_replies_are_read_as_json_or_by_their_first_integer_in_the_scale() -> None:
    cfg = config("http://x/v1")
    assert parse_reply('{"score": 7, "reason": "fine"}', cfg) == (7, "fine")
    assert parse_reply("Score: 0 is too low, I say 8/10", cfg) == (8, "Score: 0 is too low, I say 8/10")
    assert parse_reply('{"score": 42, "reason": "off the scale"}', cfg)[0] is None  # no integer in 1-10
    score, reason = parse_reply("no number here", cfg)
    assert score is None and "no score" in reason
    # the cache key: endpoint (without user information), model, rubric, scale, text; never the key
    other_key = cfg.model_copy(update={"api_key": SecretStr("sk-another")})
    assert cache_key(cfg, "a") == cache_key(other_key, "a") != cache_key(cfg, "b")
    assert public_url("https://user:pw@host:8000/v1/?q=1") == "https://host:8000/v1"
    with pytest.raises(ValueError):
        config("http://x/v1", min_score=5, max_score=5)


def test_the_judge_scores_through_the_endpoint_and_a_second_run_asks_nothing(
    server: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    url, log = server
    log.clear()
    texts = ["one", "one two three", "a b c d e f g h i j k l"]
    cache = JudgeCache(fsspec.filesystem("file"), str(tmp_path / "store"))
    first = Judge(config(url), cache).score(texts)
    assert first.requests == 3 and len(log) == 3
    assert [j.score for j in first.judgements] == [2, 4, 10]
    assert first.score == pytest.approx(16 / 3) and first.metrics()["judge_scored"] == 3.0
    assert [j.reason for j in first.judgements] == ["1 words", "3 words", "12 words"]
    body = log[0]
    assert body["temperature"] == 0.0 and body["authorization"] == f"Bearer {KEY}"
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["score"] == {"type": "integer", "minimum": 1, "maximum": 10}
    assert "Rate the fluency." in body["messages"][0]["content"]
    # the cache: nothing asked again, the same verdicts; the key is nowhere in the store
    again = Judge(config(url), cache).score(texts)
    assert again.requests == 0 and len(log) == 3
    assert [(j.score, j.reason, j.cached) for j in again.judgements] == [
        (j.score, j.reason, True) for j in first.judgements
    ]
    stored = "".join(p.read_text() for p in (tmp_path / "store").rglob("*.json"))
    assert KEY not in stored and KEY[:8] not in stored and '"score": 10' in stored
    # without the schema the first integer of the sentence is the score
    log.clear()
    plain = Judge(config(url, send_schema=False, rubric="Other rubric."), cache).score(["x y"])
    assert plain.judgements[0].score == 3 and "response_format" not in log[0]


def test_an_unreachable_endpoint_fails_naming_the_url_and_never_the_key(tmp_path: Path) -> None:
    url = f"http://judge:{KEY}@127.0.0.1:{free_port()}/v1"
    cache = JudgeCache(fsspec.filesystem("file"), str(tmp_path))
    with pytest.raises(StageError) as e:
        Judge(config(url, retries=0, timeout_s=5), cache).score(["a text"])
    message = str(e.value)
    assert "127.0.0.1" in message and "cannot be reached" in message
    assert KEY not in message and KEY[:8] not in message


def test_the_judge_in_the_config_masks_its_key_in_the_evaluation_key() -> None:
    cfg = EvaluateConfig(judge=config("http://127.0.0.1:1/v1"))
    dumped = json.dumps(cfg.key_dict())
    assert KEY not in dumped and "judge-1" in dumped
    assert "judge" not in EvaluateConfig().key_dict() and "references" not in EvaluateConfig().key_dict()


def test_genloom_serve_is_a_judge_its_replies_constrained_to_the_schema(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from tests.serve.conftest import served

    from genloom.core.catalog import Catalog
    from genloom.serve.app import create_app

    model_dir = request.getfixturevalue("chat_gpt")  # a tiny GPT trained on genloom's chat template
    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    app = create_app(lambda: served(model_dir, "chatty"), cat)
    try:
        with live_server(app) as url:
            cfg = JudgeConfig(
                base_url=f"{url}/v1", model="chatty", rubric="Rate it.", max_score=5, max_tokens=64
            )
            result = Judge(cfg, JudgeCache(fsspec.filesystem("file"), str(tmp_path))).score(
                ["say alpha", "beta"]
            )
    finally:
        cat.close()
    # genloom serve accepts the request: llguidance compiles the reply's schema (an unsupported
    # one would be HTTP 400, a failed evaluation). Its tiny model has a 32-token context, smaller
    # than the rubric, so it cannot finish the object: the server says so and the samples stay
    # unscored with that reason, never guessed
    assert result.requests == 2 and result.score is None
    for j in result.judgements:
        assert j.score is None and "did not fit in max_tokens=64" in j.reason

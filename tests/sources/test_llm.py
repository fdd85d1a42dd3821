"""The llm source against ``genloom serve`` of a tiny GPT on a live loopback server, driven
through the official ``openai`` client: structured output validated, plain text, duplicates
dropped, the token budget, refused keys and unreachable endpoints, the cache."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa
import pytest
import yaml

from genloom.core.errors import ConfigError, SourceError
from genloom.core.records import load_meta
from genloom.core.steps import StepContext
from genloom.pipeline import Pipeline

pytest.importorskip("openai", reason="pip install 'genloom[llm]'")
pytest.importorskip("fastapi", reason="pip install 'genloom[serve]'")

from genloom.serve.app import create_app  # noqa: E402
from genloom.serve.keys import KeyStore  # noqa: E402
from genloom.serve.schemas import ServeSettings  # noqa: E402
from genloom.sources.llm import LlmSource, _Deduplicator, _seed_key  # noqa: E402
from tests.serve.conftest import catalog, chat_gpt, free_port, live_server, served, tiny_gpt  # noqa: E402, F401

WORD = {
    "type": "object",
    "properties": {"w": {"enum": ["alpha", "beta", "gamma"]}, "n": {"type": "integer", "maximum": 9}},
    "required": ["w"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    """One live server for the plain GPT (completions) and one for the chat GPT; the first needs a key."""
    from genloom.core.catalog import Catalog

    tiny = request.getfixturevalue("tiny_gpt")
    chat = request.getfixturevalue("chat_gpt")
    folder = tmp_path_factory.mktemp("llm-servers")
    cat = Catalog(f"sqlite:///{folder / 'catalog.db'}")
    keys = KeyStore(cat.engine)
    _, key = keys.create("llm-source")
    plain = create_app(lambda: served(tiny, "tiny"), cat, keys=keys, settings=ServeSettings(require_key=True))
    chatty = create_app(lambda: served(chat, "chatty"), cat)
    with live_server(plain) as plain_url, live_server(chatty) as chat_url:
        yield {"plain": f"{plain_url}/v1", "chat": f"{chat_url}/v1", "key": key}
    cat.close()


def read(src: LlmSource) -> tuple[list[dict[str, Any]], StepContext]:
    src.check("sources.0")
    ctx = StepContext()
    tables = [t for p in src.partitions() for t in src.run_partition(p, ctx)]
    return (pa.concat_tables(tables).to_pylist() if tables else []), ctx


def test_structured_output_is_sent_validated_and_marked_synthetic(servers: dict[str, Any]) -> None:
    src = LlmSource(
        base_url=servers["chat"],
        model="chatty",
        prompt="say {word}",
        seeds=[{"word": "alpha"}, {"word": "gamma"}],
        n=3,
        temperature=1.0,
        max_tokens=32,
        json_schema=WORD,
        schema_name="word",
        dedup_threshold=1.0,
        concurrency=3,
    )
    rows, ctx = read(src)
    assert rows, ctx.rejected
    assert {r["reason"] for r in ctx.rejected} <= {"invalid_output"}
    for row in rows:
        value = json.loads(row["text"])
        jsonschema.validate(value, WORD)
        meta = load_meta(row["meta"])
        assert meta["synthetic"] is True and meta["generator"] == "llm" and meta["model"] == "chatty"
        assert meta["prompt"] == f"say {meta['seed_values']['word']}" and meta["schema"] == "word"
        assert meta["fields"] == value and meta["usage"]["completion_tokens"] > 0
        assert meta["params"]["temperature"] == 1.0 and isinstance(meta["params"]["seed"], int)
        assert row["source"] == "llm" and row["id"].startswith("llm:chatty#seed=")
    ids = [r["id"] for r in rows]
    expected = {
        f"llm:chatty#seed={_seed_key({'word': w})}&n={i}" for w in ("alpha", "gamma") for i in range(3)
    }
    assert len(set(ids)) == len(ids) and set(ids) <= expected
    again, _ = read(src)  # ids depend on (seed values, index) only
    assert {r["id"] for r in again} <= expected


def test_plain_text_from_a_seeds_file_with_a_key_and_duplicates_dropped(
    servers: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "seeds.csv").write_text("topic\nalpha\nbeta\n")
    src = LlmSource(
        base_url=servers["plain"],
        api_key=servers["key"],
        api="completions",
        model="tiny",
        prompt="{topic} gamma",
        seeds_path="seeds.csv",
        n=4,
        temperature=0.0,  # greedy: the 4 generations of a seed are the same text
        max_tokens=8,
        extra_body={"top_k": 5},
    )
    src.bind(tmp_path)
    rows, ctx = read(src)
    assert len(rows) in (1, 2)  # one per seed, unless both seeds' texts collapse into one
    assert ctx.stats["llm"].dropped["duplicate"] == 8 - len(rows)
    assert not ctx.rejected
    assert all(r["text"] and "json" not in load_meta(r["meta"]) for r in rows)
    assert load_meta(rows[0]["meta"])["seed_values"] == {"topic": "alpha"}
    assert load_meta(rows[0]["meta"])["prompt"] == "alpha gamma"


def test_replies_that_never_match_the_schema_are_quarantined_with_the_reasons(
    servers: dict[str, Any],
) -> None:
    src = LlmSource(
        base_url=servers["plain"],
        api_key=servers["key"],
        api="completions",
        model="tiny",
        prompt="alpha",
        n=2,
        max_tokens=6,
        json_schema=WORD,
        send_schema=False,  # the tiny GPT writes words, never JSON
        validation_retries=1,
    )
    rows, ctx = read(src)
    assert rows == []
    assert [r["reason"] for r in ctx.rejected] == ["invalid_output", "invalid_output"]
    for r in ctx.rejected:  # each attempt's reason: the words are no JSON, or were cut at max_tokens
        assert r["detail"].startswith("2 attempts: attempt 1: ") and "; attempt 2: " in r["detail"]
        assert "not JSON" in r["detail"] or "cut at max_tokens=6" in r["detail"]


def test_the_token_budget_stops_the_read_and_says_so(servers: dict[str, Any]) -> None:
    common: dict[str, Any] = {
        "base_url": servers["chat"],
        "model": "chatty",
        "prompt": "say beta",
        "n": 12,
        "max_tokens": 6,
        "concurrency": 1,
        "dedup_threshold": 1.0,
        "max_total_tokens": 30,
    }
    rows, ctx = read(LlmSource(**common))
    assert 1 <= len(rows) < 12
    (marker,) = [r for r in ctx.rejected if r["reason"] == "token_budget_exhausted"]
    assert "max_total_tokens=30 spent" in marker["detail"] and "were not made" in marker["detail"]
    made = len(rows) + ctx.stats["llm"].dropped.get("duplicate", 0)
    assert f"{12 - made} of 12 generations" in marker["detail"]
    with pytest.raises(SourceError, match="max_total_tokens=30 spent"):
        read(LlmSource(**common, on_budget="fail"))


def test_a_refused_key_fails_with_a_source_error_that_does_not_show_it(
    servers: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the openai client and httpx log requests at DEBUG
    secret = "gl-0123456789abcdef-not-a-real-key"
    src = LlmSource(base_url=servers["plain"], api_key=secret, api="completions", model="tiny", prompt="a")
    with pytest.raises(SourceError, match="401: the endpoint refused the api_key") as info:
        read(src)
    assert secret not in str(info.value) and secret[:8] not in str(info.value)
    assert secret not in repr(src) and secret not in json.dumps(src.config_dict())
    assert caplog.records and secret[:8] not in caplog.text
    # the redaction also covers an endpoint that echoes the start of the key
    assert (
        src._redact(f"Incorrect API key provided: {secret[:12]}****") == "Incorrect API key provided: *******"
    )


def test_an_unknown_model_and_an_unreachable_endpoint_are_source_errors(servers: dict[str, Any]) -> None:
    with pytest.raises(SourceError, match="404"):
        read(LlmSource(base_url=servers["chat"], model="gpt-9", prompt="a", retries=0))
    down = LlmSource(
        base_url=f"http://127.0.0.1:{free_port()}/v1", model="x", prompt="a", retries=1, timeout_s=2
    )
    with pytest.raises(SourceError, match="APIConnectionError.*after 1 retries"):
        read(down)


def test_a_pipeline_caches_the_generation_and_reruns_it_when_a_parameter_changes(
    servers: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GL_TEST_LLM_KEY", servers["key"])
    source = {
        "type": "llm",
        "base_url": servers["plain"],
        "api_key": "${env:GL_TEST_LLM_KEY}",
        "api": "completions",
        "model": "tiny",
        "prompt": "{seed} beta",
        "seeds": ["alpha", "gamma"],
        "n": 2,
        "max_tokens": 6,
        "temperature": 1.0,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "gen", "sources": [source]}))
    first = Pipeline.from_file(path).run(until="ingest").stages[0]
    assert first.status == "ran" and first.rows
    assert Pipeline.from_file(path).run(until="ingest").stages[0].status == "cached"
    source["temperature"] = 0.5
    path.write_text(yaml.safe_dump({"name": "gen", "sources": [source]}))
    assert Pipeline.from_file(path).run(until="ingest").stages[0].status == "ran"
    leaked = [
        p
        for p in (tmp_path / ".genloom").rglob("*")
        if p.is_file() and servers["key"].encode() in p.read_bytes()
    ]
    assert leaked == []


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="lacks"):
        LlmSource(base_url="http://h/v1", model="m", prompt="{topic}", seeds=[{"other": 1}]).check(
            "sources.0"
        )
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        LlmSource(base_url="http://h/v1", model="m", prompt="a", json_schema={"type": "nonsense"}).check("s")
    with pytest.raises(ConfigError, match="http"):
        LlmSource(base_url="ftp://h", model="m", prompt="a").check("s")


def test_near_duplicates_by_shingle_jaccard() -> None:
    base = "the printer on the third floor prints every page twice and then jams on the last sheet of paper"
    dedup = _Deduplicator(0.7, 3)
    assert dedup.add(base) is None
    assert dedup.add(base.upper() + "!!") == "duplicate"  # the same after normalisation
    assert dedup.add(base.replace("last", "final")) == "near_duplicate"  # 16 of 20 shingles shared
    assert dedup.add("my password reset link expired before I could open the e-mail this morning") is None
    strict = _Deduplicator(1.0, 3)
    assert strict.add(base) is None and strict.add(base.replace("last", "final")) is None

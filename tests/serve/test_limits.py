"""Per-key rate limits and token budgets: the token buckets alone, and the app's 429s, with an
injected clock (a minute passes when the test says so)."""

from __future__ import annotations

from pathlib import Path

from genloom.core.catalog import Catalog
from genloom.serve.app import create_app
from genloom.serve.keys import KeyStore
from genloom.serve.limits import RateLimiter
from genloom.serve.schemas import ServeSettings
from tests.serve.conftest import ready_client, served


class ManualClock:
    """A clock that only moves when told."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_request_bucket_refills_at_the_limit_per_minute() -> None:
    clock = ManualClock()
    limiter = RateLimiter(requests_per_minute=3, tokens_per_minute=None, clock=clock)
    assert [limiter.admit("k") for _ in range(3)] == [None] * 3  # a minute's worth at once
    over = limiter.admit("k")
    assert over is not None and over.kind == "requests" and over.limit == 3
    assert over.retry_after_s == 20.0 and over.retry_after == 20  # 3 per minute: one every 20 s
    assert limiter.admit("other") is None  # buckets are per key
    clock.t += 19.0
    assert limiter.admit("k") is not None
    clock.t += 1.0
    assert limiter.admit("k") is None
    clock.t += 3600
    assert limiter.remaining("k") == (3.0, None)  # never more than the limit


def test_token_budget_is_charged_after_and_waits_out_its_debt() -> None:
    clock = ManualClock()
    limiter = RateLimiter(requests_per_minute=None, tokens_per_minute=600, clock=clock)
    assert limiter.admit(None) is None
    limiter.charge(None, 900)  # the reply was larger than what was left: 300 in debt
    over = limiter.admit(None)
    assert over is not None and over.kind == "tokens"
    assert abs(over.retry_after_s - 30.1) < 1e-9  # 301 tokens at 10 per second
    assert "callers without an API key" in over.message("anonymous")
    clock.t += 30.0
    assert limiter.admit(None) is not None
    clock.t += 0.2
    assert limiter.admit(None) is None


def test_the_app_answers_429_per_key_with_retry_after(tiny_gpt: Path, catalog: Catalog) -> None:
    clock = ManualClock()
    keys = KeyStore(catalog.engine)
    _, alice = keys.create("alice")
    _, bob = keys.create("bob")
    settings = ServeSettings(require_key=True, requests_per_minute=2, tokens_per_minute=60)
    app = create_app(lambda: served(tiny_gpt), catalog, keys=keys, settings=settings, clock=clock)
    with ready_client(app) as client:
        as_alice = {"Authorization": f"Bearer {alice}"}
        body = {"prompt": "alpha", "max_tokens": 2}
        assert client.post("/v1/completions", json=body, headers=as_alice).status_code == 200
        assert client.get("/v1/models", headers=as_alice).status_code == 200  # every /v1 call counts
        refused = client.post("/v1/completions", json=body, headers=as_alice)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "30"
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
        assert "requests per min" in error["message"]
        assert client.get("/healthz").status_code == 200  # probes are never limited
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {bob}"}).status_code == 200
        clock.t += 30
        # a reply's tokens come out of the key's budget (60 a minute): this one leaves it in debt
        big = client.post(
            "/v1/completions", json={"prompt": "alpha beta " * 60, "max_tokens": 2}, headers=as_alice
        )
        assert big.status_code == 200
        used = big.json()["usage"]["total_tokens"]
        assert used > 100
        clock.t += 30  # one request is back; 30 tokens are, less than the debt
        spent = client.post("/v1/completions", json=body, headers=as_alice)
        assert spent.status_code == 429 and spent.json()["error"]["type"] == "tokens"
        debt = used - 60 - 30 + 5  # about: what the first request left, less the refill
        assert int(spent.headers["Retry-After"]) > 0 and abs(int(spent.headers["Retry-After"]) - debt) < 10
        clock.t += int(spent.headers["Retry-After"])
        assert client.post("/v1/completions", json=body, headers=as_alice).status_code == 200
        metrics = client.get("/metrics").text
    assert 'genloom_errors_total{type="requests"} 1.0' in metrics
    assert 'genloom_errors_total{type="tokens"} 1.0' in metrics
    assert 'genloom_requests_total{endpoint="/v1/completions",status="429"} 2.0' in metrics

"""rest_api against a real FastAPI app served by uvicorn on 127.0.0.1 (a thread of the test).

The app enforces each auth mode, pages in each style, and injects faults from a queue: a 500, a
429 with Retry-After, a body that is not JSON. Rows read are compared with the rows it served.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pyarrow as pa
import pytest
import yaml

from genloom.core.config import load_config
from genloom.core.errors import ConfigError, SourceError
from genloom.core.records import load_meta
from genloom.core.steps import StepContext
from genloom.pipeline import Pipeline
from genloom.sources.rest_api import RestApiSource

fastapi = pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("httpx", reason="pip install 'genloom[web]'")
pytest.importorskip("jsonpath", reason="pip install 'genloom[web]'")
# module level: the app's annotations are strings (postponed), resolved in this module's globals
Request = fastapi.Request
Response = fastapi.Response

TOKEN = "tok-Secret-4242"
API_KEY = "key-Secret-7331"
PASSWORD = "pw-Secret-9001"
CLIENT_SECRET = "cs-Secret-5150"
SECRETS = (TOKEN, API_KEY, PASSWORD, CLIENT_SECRET)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class ApiState:
    """What the app serves and what it saw."""

    def __init__(self) -> None:
        base = time.time() - 10_000
        self.items = [self.item(i, _iso(base + i)) for i in range(1, 96)]
        self.faults: list[str] = []  # one entry consumed per data request: ok, 500, 429, 429-slow, badjson
        self.always: str | None = None  # a fault on every data request
        self.served: list[int] = []
        self.requests = 0
        self.token_requests = 0
        self.tokens: dict[str, int] = {}  # OAuth2 token -> uses left
        self.token_uses = 1000

    @staticmethod
    def item(i: int, updated_at: str) -> dict[str, Any]:
        return {
            "id": i,
            "title": f"title {i}",
            "body": f"body of item {i}",
            "score": i / 2,
            "updated_at": updated_at,
        }


def _app(state: ApiState) -> Any:
    from fastapi.responses import JSONResponse

    app = fastapi.FastAPI()

    def authorised(request: Request, mode: str) -> bool:
        h = request.headers
        if mode == "none":
            return True
        if mode == "bearer":
            return h.get("authorization") == f"Bearer {TOKEN}"
        if mode == "apikey_header":
            return h.get("x-api-key") == API_KEY
        if mode == "apikey_query":
            return request.query_params.get("api_key") == API_KEY
        if mode == "basic":
            return h.get("authorization") == "Basic " + base64.b64encode(f"ann:{PASSWORD}".encode()).decode()
        if mode == "oauth":
            token = (h.get("authorization") or "").removeprefix("Bearer ")
            if state.tokens.get(token, 0) <= 0:
                return False
            state.tokens[token] -= 1
            return True
        return False

    @app.post("/token")
    async def token(request: Request) -> Response:
        state.token_requests += 1
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        good = "Basic " + base64.b64encode(f"client-1:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != good or form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        new = f"access-{state.token_requests}-{time.monotonic_ns()}"
        state.tokens[new] = state.token_uses
        return JSONResponse({"access_token": new, "token_type": "bearer", "expires_in": 3600})

    @app.get("/v1/{mode}/{paging}")
    def items(mode: str, paging: str, request: Request) -> Response:
        state.requests += 1
        fault = state.always or (state.faults.pop(0) if state.faults else "ok")
        if fault == "500":
            return JSONResponse({"error": "boom"}, status_code=500)
        if fault.startswith("429"):
            wait = "1" if fault == "429-slow" else "0"
            return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": wait})
        if not authorised(request, mode):
            return JSONResponse({"error": "unauthorised"}, status_code=401)
        q = request.query_params
        rows = state.items
        if "since" in q:
            rows = [r for r in rows if r["updated_at"] > q["since"]]
        size = int(q.get("per_page", q.get("limit", 10)))
        headers: dict[str, str] = {}
        meta: dict[str, Any] = {}
        if paging == "offset":
            start = int(q.get("offset", 0))
        elif paging == "cursor":
            start = int(base64.b64decode(q["cursor"]).decode()) if "cursor" in q else 0
            nxt = start + size
            meta["next"] = base64.b64encode(str(nxt).encode()).decode() if nxt < len(rows) else None
        else:  # page and link
            start = (int(q.get("page", 1)) - 1) * size
            if paging == "link" and start + size < len(rows):
                query = dict(q)  # like GitHub: the next link echoes the query, api_key included
                query["page"] = str(int(q.get("page", 1)) + 1)
                link = str(request.url.replace_query_params(**query))
                headers["Link"] = f'<{link}>; rel="next", <{link}>; rel="last"'
        page = rows[start : start + size]
        if fault == "badjson":
            return Response(
                '{"data": [{"id": 1, "title": "cut', media_type="application/json", headers=headers
            )
        state.served.extend(r.get("id") for r in page if isinstance(r, dict))
        return JSONResponse({"data": page, "meta": meta}, headers=headers)

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, dict[str, ApiState]]]:
    holder = {"state": ApiState()}

    class Proxy:  # the app reads the current test's state
        def __getattr__(self, name: str) -> Any:
            return getattr(holder["state"], name)

        def __setattr__(self, name: str, value: Any) -> None:
            setattr(holder["state"], name, value)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(_app(Proxy()), log_level="warning", lifespan="off")  # type: ignore[arg-type]
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", holder
    srv.should_exit = True
    thread.join(5)
    sock.close()


@pytest.fixture
def api(server: tuple[str, dict[str, ApiState]]) -> tuple[str, ApiState]:
    base, holder = server
    holder["state"] = ApiState()
    return base, holder["state"]


AUTH = {
    "none": None,
    "bearer": {"type": "bearer", "token": TOKEN},
    "apikey_header": {"type": "api_key", "key": API_KEY, "header": "X-API-Key"},
    "apikey_query": {"type": "api_key", "key": API_KEY, "query": "api_key"},
    "basic": {"type": "basic", "username": "ann", "password": PASSWORD},
}


def _oauth(base: str, secret: str = CLIENT_SECRET) -> dict[str, Any]:
    return {"type": "oauth2", "token_url": f"{base}/token", "client_id": "client-1", "client_secret": secret}


PAGING = {
    "page": {"type": "page", "size_param": "per_page", "size": 10},
    "offset": {"type": "offset", "limit": 10},
    "cursor": {"type": "cursor", "cursor_path": "$.meta.next"},
    "link": {"type": "link_header"},
}


def _source(base: str, mode: str = "bearer", paging: str = "page", **kw: Any) -> RestApiSource:
    auth = _oauth(base) if mode == "oauth" else AUTH[mode]
    fields: dict[str, Any] = {
        "url": f"{base}/v1/{mode}/{paging}",
        "auth": auth,
        "pagination": PAGING[paging],
        "records_path": "$.data",
        "id_field": "id",
        "text_template": "{title}: {body}",
        "retry_backoff_s": 0.01,
        **kw,
    }
    return RestApiSource.model_validate(fields)


def _read(src: RestApiSource, partition: Any = None) -> tuple[pa.Table, StepContext]:
    ctx = StepContext()
    tables = list(src.run_partition(partition, ctx))
    return (pa.concat_tables(tables) if tables else pa.table({"id": pa.array([], pa.string())})), ctx


def _native_ids(table: pa.Table) -> list[int]:
    return [int(i.rsplit("=", 1)[1]) for i in table.column("id").to_pylist()]


@pytest.mark.parametrize("paging", list(PAGING))
def test_each_paging_mode_reads_every_served_row_once_through_faults(
    api: tuple[str, ApiState], paging: str
) -> None:
    base, state = api
    # a 500, a 429 (Retry-After: 0) and a truncated JSON body, each retried
    state.faults = ["ok", "500", "ok", "429", "ok", "badjson"]
    table, ctx = _read(_source(base, "bearer", paging))
    ids = _native_ids(table)
    assert ids == list(range(1, 96))
    assert sorted(state.served) == ids  # rows read == rows served, none twice
    assert not ctx.rejected
    # ten pages, three retries, and for page and offset the empty page that ends the paging
    assert state.requests == 10 + 3 + (paging in ("page", "offset"))
    rec = table.slice(7, 1).to_pylist()[0]
    assert rec["text"] == "title 8: body of item 8"
    assert rec["source"] == "rest_api"
    meta = load_meta(rec["meta"])
    assert meta["fields"] == {"id": 8, "title": "title 8", "body": "body of item 8", "score": 4.0,
                              "updated_at": state.items[7]["updated_at"]}  # fmt: skip
    assert meta["page"] == 0 and meta["url"].startswith(f"{base}/v1/bearer/{paging}")


@pytest.mark.parametrize("mode", ["none", "bearer", "apikey_header", "apikey_query", "basic", "oauth"])
def test_each_auth_mode_is_accepted_and_no_secret_reaches_records(
    api: tuple[str, ApiState], mode: str
) -> None:
    base, state = api
    table, _ = _read(_source(base, mode, "link"))  # the link echoes the query, api_key included
    assert _native_ids(table) == list(range(1, 96))
    dumped = json.dumps(table.to_pylist())
    for secret in SECRETS:
        assert secret not in dumped
    if mode == "apikey_query":
        assert "api_key=***" in load_meta(table.column("meta")[0].as_py())["url"]
    if mode == "oauth":
        assert state.token_requests == 1  # cached for all ten pages


@pytest.mark.parametrize("mode", ["bearer", "apikey_header", "apikey_query", "basic", "oauth"])
def test_bad_credentials_fail_with_a_source_error_that_hides_them(
    api: tuple[str, ApiState], mode: str
) -> None:
    base, _ = api
    wrong = "WRONG-" + "Zq8-credential"
    auth: dict[str, Any] | None
    if mode == "oauth":
        auth = _oauth(base, wrong)
    else:
        auth = dict(AUTH[mode] or {})
        for k in ("token", "key", "password"):
            if k in auth:
                auth[k] = wrong
    src = _source(base, mode, "page", auth=auth)
    with pytest.raises(SourceError) as err:
        _read(src)
    message = str(err.value)
    assert "401" in message and "refused" in message
    assert wrong not in message and "Zq8" not in message


def test_a_server_that_caps_the_page_size_loses_nothing(api: tuple[str, ApiState]) -> None:
    base, state = api
    # the app caps nothing, so ask for more than it will send: 10 per page arrive for 25 asked
    src = _source(base, "bearer", "page", pagination={"type": "page", "size": 25})
    assert _native_ids(_read(src)[0]) == list(range(1, 96))
    trusting = _source(
        base, "bearer", "page", pagination={"type": "page", "size": 25, "stop_on_short_page": True}
    )
    assert _native_ids(_read(trusting)[0]) == list(range(1, 11))  # what the option warns about


def test_oauth2_token_is_refreshed_when_the_api_answers_401(api: tuple[str, ApiState]) -> None:
    base, state = api
    state.token_uses = 3  # the server revokes each token after three requests
    table, _ = _read(_source(base, "oauth", "offset"))
    assert _native_ids(table) == list(range(1, 96))
    assert state.token_requests == 4  # 11 requests (10 pages and the empty one) at 3 per token


def test_retry_after_is_honoured_and_a_long_one_fails_loudly(api: tuple[str, ApiState]) -> None:
    base, state = api
    state.faults = ["429-slow"]
    start = time.monotonic()
    table, _ = _read(_source(base, "bearer", "offset"))
    assert time.monotonic() - start >= 1.0  # Retry-After: 1, not the 0.01 s backoff
    assert table.num_rows == 95
    state.faults = ["429-slow"]
    with pytest.raises(SourceError, match="retry after 1s, more than max_retry_after_s=0.5"):
        _read(_source(base, "bearer", "offset", max_retry_after_s=0.5))


@pytest.mark.parametrize(("fault", "cause"), [("500", "HTTP 500"), ("badjson", "not valid JSON")])
def test_a_fault_that_persists_fails_after_the_retries(
    api: tuple[str, ApiState], fault: str, cause: str
) -> None:
    base, state = api
    state.always = fault
    with pytest.raises(SourceError) as err:
        _read(_source(base, "apikey_query", "page", retries=2))
    assert cause in str(err.value) and "after 2 retries" in str(err.value)
    assert API_KEY not in str(err.value)
    assert state.requests == 3


def test_unreachable_server_fails_loudly() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    src = _source(f"http://127.0.0.1:{port}", "bearer", "page", retries=1)
    with pytest.raises(SourceError, match="ConnectError.*after 1 retries"):
        _read(src)


def test_request_budget_fails_or_stops_visibly(api: tuple[str, ApiState]) -> None:
    base, _ = api
    with pytest.raises(SourceError, match="max_requests=3 reached after 3 requests"):
        _read(_source(base, "bearer", "page", max_requests=3))
    table, ctx = _read(_source(base, "bearer", "page", max_requests=3, on_budget="stop"))
    assert _native_ids(table) == list(range(1, 31))
    assert [r["reason"] for r in ctx.rejected] == ["request_budget_exhausted"]


def test_items_that_are_not_records_are_quarantined(api: tuple[str, ApiState]) -> None:
    base, state = api
    state.items = [ApiState.item(1, _iso(1)), [1, 2], {"title": "no id"}, ApiState.item(1, _iso(1))]
    table, ctx = _read(_source(base, "none", "page"))
    assert _native_ids(table) == [1]
    assert sorted(r["reason"] for r in ctx.rejected) == ["duplicate_id", "missing_field", "not_an_object"]


def test_cache_ttl_changes_the_fingerprint_once_the_period_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    src = RestApiSource(url="http://x/items", cache_ttl_s=60)
    monkeypatch.setattr(time, "time", lambda: 6000.0)
    first = src.partition_fingerprint(None)
    monkeypatch.setattr(time, "time", lambda: 6059.0)
    assert src.partition_fingerprint(None) == first  # within the period: a cache hit
    monkeypatch.setattr(time, "time", lambda: 6061.0)
    assert src.partition_fingerprint(None) != first  # a later run fetches again
    assert RestApiSource(url="http://x/items").partition_fingerprint(None) == "|null"


def test_config_errors_point_at_the_field() -> None:
    with pytest.raises(ConfigError, match="exactly one of 'header' or 'query'"):
        RestApiSource.model_validate({"url": "http://x", "auth": {"type": "api_key", "key": "k"}}).check(
            "sources.0"
        )
    with pytest.raises(ConfigError, match="'api_key' looks like a credential") as err:
        RestApiSource(url="http://x/items?api_key=abc123").check("sources.0")
    assert "abc123" not in str(err.value) and err.value.path == "sources.0.url"
    with pytest.raises(ConfigError, match="'access_token' looks like a credential"):
        RestApiSource(url="http://x/items", params={"access_token": "abc123"}).check("sources.0")
    with pytest.raises(ConfigError, match="not a JSONPath") as err:
        RestApiSource(url="http://x", records_path="$.[").check("sources.0")
    assert err.value.path == "sources.0.records_path"


def test_incremental_by_id_reads_only_new_records_between_runs(api: tuple[str, ApiState]) -> None:
    base, state = api
    kw = {"incremental": {"field": "id", "kind": "id"}}
    src = _source(base, "bearer", "offset", **kw)
    src.restore_state(None)
    parts = src.partitions()
    assert parts == [{"after": None, "upto": 95}]
    saved = src.state()
    assert _native_ids(_read(src, parts[0])[0]) == list(range(1, 96))
    state.items += [ApiState.item(i, _iso(time.time())) for i in range(96, 121)]
    src = _source(base, "bearer", "offset", **kw)
    src.restore_state(saved)
    parts = src.partitions()
    assert parts[-1] == {"after": 95, "upto": 120}
    assert _native_ids(_read(src, parts[-1])[0]) == list(range(96, 121))


def test_incremental_by_sequence_moves_an_updated_record_out_of_its_old_segment(
    api: tuple[str, ApiState],
) -> None:
    base, state = api
    for i, item in enumerate(state.items):
        item["seq"] = i + 1  # a change sequence number: each update takes the next one
    kw = {"incremental": {"field": "seq", "kind": "id"}}  # id_field: id, another field
    src = _source(base, "bearer", "offset", **kw)
    src.restore_state(None)
    (first,) = src.partitions()
    fp = src.partition_fingerprint(first)
    saved = src.state()
    state.items[9] = {**state.items[9], "body": "new body", "seq": 96}
    src = _source(base, "bearer", "offset", **kw)
    src.restore_state(saved)
    old, new = src.partitions()
    assert old == first and src.partition_fingerprint(old) != fp  # it lost item 10: read again
    assert 10 not in _native_ids(_read(src, old)[0])
    table = _read(src, new)[0]
    assert _native_ids(table) == [10] and table.column("text").to_pylist() == ["title 10: new body"]


def _pipeline(folder: Path, source: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "apitest", "sources": [source]}, sort_keys=False))
    return path


def _ingest_shards(p: Pipeline, key: str | None) -> list[tuple[str, pa.Table]]:
    """The ingest shards of the run whose ingest artifact is ``key`` (a new plan would start a
    new timestamp segment, so the key comes from the run)."""
    import pyarrow.parquet as pq

    assert key is not None
    manifest = p.store.read_manifest("ingest", key)
    return [
        (k, pq.read_table(Path(p.store.shard_dir("ingest", k)) / "data.parquet")) for k in manifest["shards"]
    ]


def test_pipeline_ingests_incrementally_by_timestamp_with_secrets_from_env(
    api: tuple[str, ApiState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, state = api
    monkeypatch.setenv("GL_TEST_API_SECRET", CLIENT_SECRET)
    source = {
        "type": "rest_api",
        "url": f"{base}/v1/oauth/cursor",
        "auth": {
            "type": "oauth2",
            "token_url": f"{base}/token",
            "client_id": "client-1",
            "client_secret": "${env:GL_TEST_API_SECRET}",
        },
        "pagination": {"type": "cursor", "cursor_path": "$.meta.next"},
        "records_path": "$.data[*]",
        "id_field": "id",
        "text_field": "body",
        "incremental": {"field": "updated_at", "param": "since"},
        "retry_backoff_s": 0.01,
    }
    path = _pipeline(tmp_path / "proj", source)
    cfg = load_config(path)
    assert CLIENT_SECRET not in repr(cfg.sources[0])
    p = Pipeline.from_file(path)
    first = p.run()
    assert first.stages[0].rows == 95
    ((k1, t1),) = _ingest_shards(p, first.stages[0].key)
    assert sorted(_native_ids(t1)) == list(range(1, 96))
    # new records: the next run asks the server only for what is newer than the watermark
    state.served.clear()
    time.sleep(0.01)
    state.items += [ApiState.item(i, _iso(time.time())) for i in range(96, 111)]
    time.sleep(0.01)
    p = Pipeline.from_file(path)
    second = p.run()
    assert set(state.served) == set(range(96, 111))  # the plan's look and the read: new rows only
    shards = _ingest_shards(p, second.stages[0].key)
    assert shards[0][0] == k1  # the first segment is a cache hit
    second_keys = [k for k, _ in shards]
    assert sorted(_native_ids(shards[1][1])) == list(range(96, 111))
    assert second.stages[0].rows == 110
    ids = [i for _, t in shards for i in t.column("id").to_pylist()]
    assert len(ids) == len(set(ids)) == 110
    # an update moves a record to the newest segment; the segment that held it is read again
    time.sleep(0.01)
    state.items[4] = {**state.items[4], "body": "updated body", "updated_at": _iso(time.time())}
    time.sleep(0.01)
    p = Pipeline.from_file(path)
    third = p.run()
    shards = _ingest_shards(p, third.stages[0].key)
    assert shards[0][0] != k1  # item 5 left the first segment
    assert shards[1][0] == second_keys[1]  # the second segment did not change: a cache hit
    assert _native_ids(shards[-1][1]) == [5] and shards[-1][1].column("text").to_pylist() == ["updated body"]
    ids = [i for _, t in shards for i in _native_ids(t)]
    assert sorted(ids) == list(range(1, 111))  # no id twice, none lost
    # nothing new: no new segment, the stage is a cache hit
    assert Pipeline.from_file(path).run().stages[0].status == "cached"
    # the secret (and the access tokens) are nowhere in the store, the catalog or the manifests
    tokens = list(state.tokens)
    for f in (tmp_path / "proj").rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert CLIENT_SECRET.encode() not in data, f
            assert not any(t.encode() in data for t in tokens), f


def test_pipeline_fails_naming_the_source_on_refused_credentials(
    api: tuple[str, ApiState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = api
    monkeypatch.setenv("GL_TEST_API_TOKEN", "not-the-token-Q77")
    source = {
        "type": "rest_api",
        "url": f"{base}/v1/bearer/page",
        "auth": {"type": "bearer", "token": "${env:GL_TEST_API_TOKEN}"},
        "records_path": "$.data",
    }
    p = Pipeline.from_file(_pipeline(tmp_path / "proj", source))
    with pytest.raises(SourceError) as err:
        p.run()
    assert "sources.0 (rest_api)" in str(err.value) and "HTTP 401" in str(err.value)
    assert "not-the-token-Q77" not in str(err.value)
    for f in (tmp_path / "proj").rglob("*"):
        if f.is_file():
            assert b"not-the-token-Q77" not in f.read_bytes(), f


def test_a_run_that_fails_mid_read_is_completed_by_the_next_without_loss_or_repeats(
    api: tuple[str, ApiState], tmp_path: Path
) -> None:
    base, state = api
    source = {
        "type": "rest_api",
        "url": f"{base}/v1/none/offset",
        "pagination": {"type": "offset", "limit": 10},
        "records_path": "$.data",
        "id_field": "id",
        "incremental": {"field": "updated_at", "param": "since"},
        "retries": 1,
        "retry_backoff_s": 0.01,
    }
    path = _pipeline(tmp_path / "proj", source)
    state.faults = ["ok", "ok", "500", "500"]  # page 3 fails twice: more than the one retry
    with pytest.raises(SourceError, match="HTTP 500 after 1 retries"):
        Pipeline.from_file(path).run()
    state.items += [ApiState.item(i, _iso(time.time())) for i in range(96, 101)]  # arrive meanwhile
    time.sleep(0.01)
    p = Pipeline.from_file(path)
    result = p.run()
    ids = [i for _, t in _ingest_shards(p, result.stages[0].key) for i in _native_ids(t)]
    assert sorted(ids) == list(range(1, 101))  # what an uninterrupted run would read, once each

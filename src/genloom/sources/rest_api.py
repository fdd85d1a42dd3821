"""JSON REST APIs: authenticated, paginated, retried, within a request budget, incremental."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import parse_qsl, urljoin, urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from genloom.core.errors import ConfigError, SourceError
from genloom.core.records import Rejected
from genloom.core.registry import SOURCES
from genloom.core.secrets import is_secret_name
from genloom.core.steps import Source
from genloom.sources._http import (
    RETRY_STATUSES,
    backoff_seconds,
    redact,
    retry_after_seconds,
    ssl_context,
    user_agent,
)
from genloom.sources.csv import template_fields
from genloom.sources.json import DEFAULT_TEXT_FIELDS, get_path

log = logging.getLogger("genloom.sources.rest_api")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- auth


class BearerAuth(_Model):
    """``Authorization: Bearer <token>``."""

    type: Literal["bearer"] = "bearer"
    token: SecretStr = Field(description="the token; write it as ${env:NAME}")


class ApiKeyAuth(_Model):
    """An API key sent in a header or a query parameter."""

    type: Literal["api_key"] = "api_key"
    key: SecretStr = Field(description="the key; write it as ${env:NAME}")
    header: str | None = Field(default=None, description="send the key in this header (X-API-Key)")
    query: str | None = Field(default=None, description="send the key in this query parameter (api_key)")


class BasicAuth(_Model):
    """HTTP basic authentication."""

    type: Literal["basic"] = "basic"
    username: str = Field(description="the user name")
    password: SecretStr = Field(description="the password; write it as ${env:NAME}")


class OAuth2Auth(_Model):
    """OAuth2 client credentials: a token fetched from ``token_url``, cached, refreshed when it
    expires or when the API answers 401."""

    type: Literal["oauth2"] = "oauth2"
    token_url: str = Field(description="the token endpoint")
    client_id: str = Field(description="the client id")
    client_secret: SecretStr = Field(description="the client secret; write it as ${env:NAME}")
    scope: str | None = Field(default=None, description="scopes to ask for, space-separated")
    audience: str | None = Field(default=None, description="an audience parameter, for servers that want one")
    client_auth: Literal["basic", "body"] = Field(
        default="basic",
        description="how the client authenticates to the token endpoint: basic (RFC 6749's "
        "recommendation) or client_id/client_secret in the form body",
    )


Auth = Annotated[BearerAuth | ApiKeyAuth | BasicAuth | OAuth2Auth, Field(discriminator="type")]


# -- pagination


class NoPaging(_Model):
    """One request; the whole result is one page."""

    type: Literal["none"] = "none"


class PagePaging(_Model):
    """Page numbers: ``?page=1``, ``?page=2``... until a page comes back empty."""

    type: Literal["page"] = "page"
    param: str = Field(default="page", description="the page-number parameter")
    start: int = Field(default=1, ge=0, description="the first page's number")
    size_param: str | None = Field(default=None, description="the page-size parameter (per_page)")
    size: int | None = Field(default=None, gt=0, description="records per page, sent as size_param")
    stop_on_short_page: bool = Field(
        default=False,
        description="end at a page shorter than size, saving the request for the empty page; "
        "only for servers known not to cap page sizes (a capped page would end the read early)",
    )


class OffsetPaging(_Model):
    """Offset and limit: ``?offset=0&limit=100``... until a page comes back empty; the next
    offset advances by the records received, so a server that caps ``limit`` loses nothing."""

    type: Literal["offset"] = "offset"
    offset_param: str = Field(default="offset", description="the offset parameter")
    limit_param: str = Field(default="limit", description="the limit parameter")
    limit: int = Field(default=100, gt=0, description="records per request")
    stop_on_short_page: bool = Field(
        default=False,
        description="end at a page shorter than limit, saving the request for the empty page; "
        "only for servers known not to cap the limit",
    )


class CursorPaging(_Model):
    """A cursor in each response, sent back as a parameter, until it is absent or empty."""

    type: Literal["cursor"] = "cursor"
    cursor_path: str = Field(description="JSONPath of the next cursor in a response ($.meta.next)")
    param: str = Field(default="cursor", description="the parameter that carries the cursor")


class LinkHeaderPaging(_Model):
    """RFC 8288 ``Link: <...>; rel="next"`` headers (GitHub style), until there is no next link."""

    type: Literal["link_header"] = "link_header"


Pagination = Annotated[
    NoPaging | PagePaging | OffsetPaging | CursorPaging | LinkHeaderPaging, Field(discriminator="type")
]


class RestIncremental(_Model):
    """Read only records newer than the last run's watermark (kept in the catalog)."""

    field: str = Field(description="dotted path of the record field that only grows (updated_at, id)")
    kind: Literal["timestamp", "id"] = Field(
        default="timestamp",
        description="timestamp: ISO 8601 strings or epoch seconds; each run reads the records up to "
        "the time it planned (minus lag_s). id: numbers or sortable strings; the plan reads the new "
        "records once to find their largest value, so new records are fetched twice",
    )
    param: str | None = Field(
        default=None,
        description="query parameter that sends the last watermark (since, updated_after), so the "
        "server returns only newer records; without it every run fetches everything and keeps "
        "the new records",
    )
    until_param: str | None = Field(
        default=None, description="query parameter that sends the upper bound of a segment (until)"
    )
    format: Literal["iso", "epoch"] = Field(
        default="iso", description="how a timestamp watermark is sent: ISO 8601 (UTC, Z) or epoch seconds"
    )
    lag_s: float = Field(
        default=0.0,
        ge=0,
        description="timestamp kind: stop this long before the plan time, for records that appear "
        "late with an earlier timestamp",
    )


class _BudgetExhausted(Exception):
    pass


@SOURCES.register("rest_api")
class RestApiSource(Source):
    """Records from a JSON REST API: one record per item that ``records_path`` selects.

    Requests carry ``params``, ``headers`` and the ``auth`` (bearer, API key in a header or the
    query, basic, OAuth2 client credentials with the token cached and refreshed on expiry or on a
    401). Secrets are ``SecretStr`` (write them as ``${env:NAME}``); logs, errors, manifests and
    the catalog never show them (cache keys hold an HMAC). Pages are followed by page number,
    offset, a cursor found by JSONPath, or ``Link: rel="next"``. A 429 or 5xx, a timeout, a lost
    connection or a page that is not valid JSON is retried ``retries`` times with exponential
    backoff, waiting at least what ``Retry-After`` asks; then the stage fails with
    ``SourceError``: a page that cannot be parsed holds an unknown number of records, so it is
    never quarantined as if it were one. A 401/403 fails at once (after one token refresh for
    OAuth2). One item that is not an object, lacks its id or text field, or repeats an id is
    quarantined with a reason. ``max_requests`` bounds the requests of a read; reaching it fails
    the stage, or with ``on_budget: stop`` quarantines a ``request_budget_exhausted`` marker and
    keeps what was read. Text comes from ``text_template``, ``text_field`` or the first of
    text/content/body/message/description; the other scalar fields go to ``meta.fields``; ids are
    ``rest_api:<label>#id=<id_field>`` (else a hash of the item).
    """

    type: Literal["rest_api"] = "rest_api"
    url: str = Field(description="the endpoint (https://api.example.com/v1/items)")
    method: Literal["GET", "POST"] = Field(default="GET", description="GET, or POST with a JSON body")
    params: dict[str, Any] = Field(default_factory=dict, description="query parameters of every request")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="extra headers; their values are treated as secrets"
    )
    body: dict[str, Any] | None = Field(default=None, description="JSON body of a POST")
    auth: Auth | None = Field(default=None, description="how to authenticate")
    pagination: Pagination = Field(default_factory=NoPaging, description="how to follow pages")
    records_path: str | None = Field(
        default=None,
        description="JSONPath of the records in a response ($.data[*], or $.data for a list); "
        "default: the items of a list response, or the object itself",
    )
    text_field: str | None = Field(default=None, description="dotted path of the text in a record")
    text_template: str | None = Field(
        default=None, description='builds the text from fields, e.g. "{title}: {body}" (dotted names)'
    )
    id_field: str | None = Field(default=None, description="dotted path of a record's unique id")
    label: str | None = Field(default=None, description="the name in record ids (default: host/path)")
    incremental: RestIncremental | None = Field(
        default=None, description="read only what is new since the last run"
    )
    cache_ttl_s: float | None = Field(
        default=None,
        gt=0,
        description="without incremental: fetch again in each new period of this many seconds (clock time "
        "divided by it), so a result is at most this old; "
        "None: the result is cached until the config changes",
    )
    max_requests: int = Field(
        default=1000, gt=0, description="requests one read may send (retries and token requests count)"
    )
    on_budget: Literal["fail", "stop"] = Field(
        default="fail",
        description="when max_requests is reached: fail the stage, or stop and quarantine a "
        "request_budget_exhausted marker (what was read is kept)",
    )
    retries: int = Field(default=4, ge=0, description="attempts after a failed request")
    retry_backoff_s: float = Field(default=0.5, ge=0, description="first wait; doubled each retry")
    max_backoff_s: float = Field(default=30.0, ge=0, description="the longest wait between retries")
    max_retry_after_s: float = Field(
        default=300.0, ge=0, description="a Retry-After longer than this fails the stage instead"
    )
    timeout_s: float = Field(default=30.0, gt=0, description="seconds per request (connect and read)")
    contact: str | None = Field(
        default=None, description="a URL or e-mail in the User-Agent (default: the project URL)"
    )

    version: ClassVar[str] = "1"
    partitions_per_shard: ClassVar[int | None] = 1
    requires: ClassVar[tuple[str, ...]] = ("httpx", "jsonpath")
    extra: ClassVar[str] = "web"

    _bounds: list[Any] | None = PrivateAttr(default=None)
    _restored: list[Any] = PrivateAttr(default_factory=list)
    _restored_ids: list[list[str]] | None = PrivateAttr(default=None)
    _segment_ids: list[list[str]] | None = PrivateAttr(default=None)
    _token: str | None = PrivateAttr(default=None)
    _token_expires: float = PrivateAttr(default=0.0)
    _requests: int = PrivateAttr(default=0)

    # -- config

    def check(self, path: str) -> None:
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ConfigError("url must be http:// or https://", path=f"{path}.url")
        if self.text_template is not None and self.text_field is not None:
            raise ConfigError("give 'text_template' or 'text_field', not both", path=path)
        # a credential in plain config would reach manifests, logs and errors: auth holds them
        query_names = [k for k, _ in parse_qsl(urlsplit(self.url).query, keep_blank_values=True)]
        for where, names in (("url", query_names), ("params", list(self.params))):
            bad = [n for n in names if is_secret_name(n)]
            if bad:
                raise ConfigError(
                    f"{bad[0]!r} looks like a credential, and {where} is not secret",
                    path=f"{path}.{where}",
                    hint=f"use auth: {{type: api_key, query: {bad[0]}, key: ${{env:NAME}}}}",
                )
        if isinstance(self.auth, ApiKeyAuth) and (self.auth.header is None) == (self.auth.query is None):
            raise ConfigError("give exactly one of 'header' or 'query'", path=f"{path}.auth")
        if self.incremental is not None and self.on_budget == "stop":
            raise ConfigError(
                "on_budget: stop cannot be combined with 'incremental'",
                path=f"{path}.on_budget",
                hint="a segment cut short would be skipped for good by the next run",
            )
        if self.incremental is not None and self.cache_ttl_s is not None:
            raise ConfigError("'cache_ttl_s' applies without 'incremental'", path=f"{path}.cache_ttl_s")
        try:
            import jsonpath
        except ImportError:
            return  # check_requirements names the extra when the stage runs
        paths = {"records_path": self.records_path}
        if isinstance(self.pagination, CursorPaging):
            paths["pagination.cursor_path"] = self.pagination.cursor_path
        for name, expr in paths.items():
            if expr is None:
                continue
            try:
                jsonpath.compile(expr)
            except jsonpath.JSONPathError as e:
                raise ConfigError(
                    f"not a JSONPath ({expr!r}): {e.args[0] if e.args else e}", path=f"{path}.{name}"
                ) from e

    @property
    def dataset(self) -> str:
        """The name in record ids."""
        if self.label:
            return self.label
        parts = urlsplit(self.url)
        return f"{parts.netloc}{parts.path}".rstrip("/")

    def _secrets(self) -> list[str]:
        out = [v.get_secret_value() for v in self.headers.values()]
        auth = self.auth
        if isinstance(auth, BearerAuth):
            out.append(auth.token.get_secret_value())
        elif isinstance(auth, ApiKeyAuth):
            out.append(auth.key.get_secret_value())
        elif isinstance(auth, BasicAuth):
            out.append(auth.password.get_secret_value())
        elif isinstance(auth, OAuth2Auth):
            out.append(auth.client_secret.get_secret_value())
        if self._token:
            out.append(self._token)
        return out

    def redact(self, text: str) -> str:
        """``text`` with every credential (and the OAuth2 access token) replaced by ``***``."""
        return redact(text, self._secrets())

    # -- planning: segments, fingerprints, state

    def restore_state(self, state: dict[str, Any] | None) -> None:
        """The watermarks (and, tracking updates, each segment's ids) of the last run."""
        inc = self.incremental
        if inc is not None and state and state.get("field") == inc.field and state.get("kind") == inc.kind:
            self._restored = list(state.get("bounds", []))
            ids = state.get("ids")
            self._restored_ids = (
                [list(x) for x in ids] if isinstance(ids, list) and len(ids) == len(self._restored) else None
            )
        else:
            self._restored, self._restored_ids = [], None

    def state(self) -> dict[str, Any] | None:
        """The watermarks to keep for the next run (incremental mode only)."""
        if self.incremental is None or self._bounds is None:
            return None
        out: dict[str, Any] = {
            "field": self.incremental.field,
            "kind": self.incremental.kind,
            "bounds": self._bounds,
        }
        if self._segment_ids is not None:
            out["ids"] = self._segment_ids
        return out

    def _tracks_updates(self) -> bool:
        """With an id field other than the watermark, an updated record moves to the newest
        segment, and the segment that held it is read again (each segment's ids are kept)."""
        inc = self.incremental
        return inc is not None and bool(self.id_field) and self.id_field != inc.field

    def partitions(self) -> list[Any]:
        """Incremental: one segment per run that found something new; else one partition."""
        inc = self.incremental
        if inc is None:
            return [None]
        bounds = list(self._restored)
        last = bounds[-1] if bounds else None
        top: Any = None
        new_ids: list[str] = []
        if inc.kind == "timestamp":
            top = _format_time(time.time() - inc.lag_s, inc.format)
            if self._tracks_updates():
                self.ensure_setup()
                newest, new_ids = self._probe(last, top)
                if newest is None and bounds:
                    top = None  # nothing new: no segment, the whole stage stays a cache hit
        else:
            self.ensure_setup()
            top, new_ids = self._probe(last, None)
        grows = top is not None and (last is None or _order_key(top, inc.kind) > _order_key(last, inc.kind))
        if grows:
            bounds.append(top)
        self._segment_ids = None
        if self._tracks_updates():
            segment_ids = self._restored_ids or [[] for _ in self._restored]
            if grows:
                moved = set(new_ids)
                segment_ids = [[i for i in ids if i not in moved] for ids in segment_ids]
                segment_ids.append(sorted(moved))
            self._segment_ids = segment_ids
        self._bounds = bounds
        if not bounds:
            return [{"after": None, "upto": None}]
        return [{"after": bounds[i - 1] if i else None, "upto": b} for i, b in enumerate(bounds)]

    def fingerprint(self) -> str:
        """Without incremental, the current ``cache_ttl_s`` period (so a later run fetches again)."""
        if self.incremental is None and self.cache_ttl_s is not None:
            return f"ttl-period={int(time.time() // self.cache_ttl_s)}"
        return ""

    def partition_fingerprint(self, partition: Any) -> str:
        """Tracking updates, a segment's fingerprint hashes the ids it should hold: when one of
        them is updated (it moved to the newest segment), the segment is read again without it."""
        base = super().partition_fingerprint(partition)
        if self._segment_ids is None or not isinstance(partition, dict) or self._bounds is None:
            return base
        if partition.get("upto") not in self._bounds:
            return base
        ids = self._segment_ids[self._bounds.index(partition["upto"])]
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        return f"{base}|ids={len(ids)}:{digest}"

    def location(self, partition: Any) -> str:
        return self.url if partition is None else f"{self.url} {json.dumps(partition, default=str)}"

    def _probe(self, after: Any, upto: Any) -> tuple[Any, list[str]]:
        """The largest watermark, and the ids, of the records in ``(after, upto]`` (the plan's
        look at what is new: the id kind, and timestamp segments that track updates)."""
        inc = self.incremental
        assert inc is not None
        top = None
        ids: list[str] = []
        for _, _, items in self._pages(after, upto):
            for item in items:
                v = get_path(item, inc.field) if isinstance(item, dict) else None
                if v is None or (after is not None and not _after(v, after, inc.kind)):
                    continue
                if upto is not None and _after(v, upto, inc.kind):
                    continue
                if top is None or _order_key(v, inc.kind) > _order_key(top, inc.kind):
                    top = v
                native = get_path(item, self.id_field) if self.id_field else None
                if native is not None:
                    ids.append(_as_text(native))
        return top, ids

    # -- reading

    def read(self, partition: Any) -> Iterator[dict[str, Any] | Rejected]:
        """Every page's records (of the segment, in incremental mode)."""
        after = partition.get("after") if isinstance(partition, dict) else None
        upto = partition.get("upto") if isinstance(partition, dict) else None
        if isinstance(partition, dict) and upto is None:
            return  # an incremental source whose first probe found nothing
        inc = self.incremental
        seen: set[str] = set()
        try:
            for page, page_url, items in self._pages(after, upto):
                for pos, item in enumerate(items):
                    if inc is not None and isinstance(item, dict):
                        v = get_path(item, inc.field)
                        if v is None:
                            yield Rejected(
                                self._hash_id(item),
                                "missing_field",
                                page_url,
                                f"no {inc.field!r} (the incremental field) in item {pos} of page {page}",
                            )
                            continue
                        try:
                            key = _order_key(v, inc.kind)
                        except (ValueError, TypeError):
                            yield Rejected(
                                self._hash_id(item),
                                "bad_watermark",
                                page_url,
                                f"{inc.field}={str(v)[:80]!r} is not a {inc.kind} (item {pos} of page {page})",
                            )
                            continue
                        if (after is not None and key <= _order_key(after, inc.kind)) or key > _order_key(
                            upto, inc.kind
                        ):
                            continue
                    yield self._record(item, page, pos, page_url, seen)
        except _BudgetExhausted:
            message = (
                f"max_requests={self.max_requests} reached after {self._requests} requests; more pages remain"
            )
            if self.on_budget == "fail":
                raise SourceError(
                    f"{self.url}: {message} (raise max_requests, or set on_budget: stop to keep "
                    "what was read)"
                ) from None
            log.warning("rest_api source %s: %s; stopping (on_budget: stop)", self.url, message)
            yield Rejected(f"rest_api:{self.dataset}#budget", "request_budget_exhausted", self.url, message)

    def _pages(self, after: Any, upto: Any) -> Iterator[tuple[int, str, list[Any]]]:
        """(page number, page URL without credentials, items) for every page."""
        import httpx

        params = dict(self.params)
        inc = self.incremental
        if inc is not None and inc.param and after is not None:
            params[inc.param] = after
        if inc is not None and inc.until_param and upto is not None:
            params[inc.until_param] = upto
        paging = self.pagination
        if isinstance(paging, PagePaging):
            params[paging.param] = paging.start
            if paging.size_param and paging.size:
                params[paging.size_param] = paging.size
        elif isinstance(paging, OffsetPaging):
            params[paging.offset_param] = 0
            params[paging.limit_param] = paging.limit
        url = self.url
        self._requests = 0
        last_cursor: Any = None
        headers = {"User-Agent": user_agent(self.contact), "Accept": "application/json"}
        headers.update({k: v.get_secret_value() for k, v in self.headers.items()})
        with httpx.Client(
            headers=headers,
            timeout=self.timeout_s,
            follow_redirects=True,
            max_redirects=5,
            verify=ssl_context(),
            trust_env=False,  # settings come from the config, never from the environment
        ) as client:
            page = 0
            while True:
                response, doc = self._fetch(client, url, params)
                page_url = self.redact(str(response.url))
                items = self._items(doc)
                yield page, page_url, items
                page += 1
                if isinstance(paging, PagePaging):
                    short = paging.size is not None and len(items) < paging.size
                    if not items or (short and paging.stop_on_short_page):
                        return
                    params[paging.param] += 1
                elif isinstance(paging, OffsetPaging):
                    if not items or (len(items) < paging.limit and paging.stop_on_short_page):
                        return
                    params[paging.offset_param] += len(items)
                elif isinstance(paging, CursorPaging):
                    import jsonpath

                    found = jsonpath.findall(paging.cursor_path, doc)
                    cursor = found[0] if found else None
                    if cursor in (None, "", False) or cursor == last_cursor:
                        return
                    last_cursor = cursor
                    params[paging.param] = cursor
                elif isinstance(paging, LinkHeaderPaging):
                    nxt = response.links.get("next", {}).get("url")
                    if not nxt:
                        return
                    # the next link carries the whole query; params passed to httpx replace a
                    # URL's query, so it is split into the two (the auth is added again per request)
                    target = httpx.URL(urljoin(str(response.url), nxt))
                    if target == response.url:
                        return  # a next link pointing at itself would never end
                    url, params = str(target.copy_with(query=None)), dict(target.params.multi_items())
                else:
                    return

    def _items(self, doc: Any) -> list[Any]:
        if self.records_path is None:
            return doc if isinstance(doc, list) else [doc]
        import jsonpath

        found = jsonpath.findall(self.records_path, doc)
        if len(found) == 1 and isinstance(found[0], list):
            return list(found[0])
        return list(found)

    def _fetch(self, client: Any, url: str, params: dict[str, Any]) -> tuple[Any, Any]:
        """One page as (response, parsed JSON), with auth, retries and the request budget."""
        import httpx

        attempt = 0
        refreshed = False
        where = f"{self.method} {self.redact(url)}"
        while True:
            query = dict(params)
            headers: dict[str, str] = {}
            auth: Any = None
            if isinstance(self.auth, BearerAuth):
                headers["Authorization"] = f"Bearer {self.auth.token.get_secret_value()}"
            elif isinstance(self.auth, ApiKeyAuth):
                if self.auth.header:
                    headers[self.auth.header] = self.auth.key.get_secret_value()
                else:
                    query[str(self.auth.query)] = self.auth.key.get_secret_value()
            elif isinstance(self.auth, BasicAuth):
                auth = (self.auth.username, self.auth.password.get_secret_value())
            elif isinstance(self.auth, OAuth2Auth):
                headers["Authorization"] = f"Bearer {self._access_token(client)}"
            self._spend()
            retry_after: float | None = None
            try:
                response = client.request(
                    self.method,
                    url,
                    params=query or None,
                    headers=headers,
                    auth=auth,
                    json=self.body if self.method == "POST" else None,
                )
            except httpx.TransportError as e:  # connect errors, timeouts, a dropped connection
                problem = f"{type(e).__name__}: {e}"
            except httpx.HTTPError as e:  # too many redirects, a body that does not decode
                raise SourceError(f"{where}: {type(e).__name__}: {self.redact(str(e))}") from None
            else:
                status = response.status_code
                if status == 401 and isinstance(self.auth, OAuth2Auth) and not refreshed:
                    self._token, refreshed = None, True  # expired or revoked early: one new token
                    continue
                if status in (401, 403):
                    kind = self.auth.type if self.auth else "no auth"
                    raise SourceError(
                        f"{where}: HTTP {status}: the server refused the credentials ({kind}): "
                        f"{self.redact(response.text[:200])}"
                    )
                if status in RETRY_STATUSES:
                    problem = f"HTTP {status}"
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                elif status >= 400:
                    raise SourceError(f"{where}: HTTP {status}: {self.redact(response.text[:300])}")
                else:
                    try:
                        return response, json.loads(response.content)
                    except ValueError as e:  # a truncated body may be transient: retried too
                        problem = f"the response is not valid JSON ({e})"
            problem = self.redact(problem)
            if attempt >= self.retries:
                tries = f" after {attempt} retries" if attempt else ""
                raise SourceError(f"{where}: {problem}{tries}")
            if retry_after is not None and retry_after > self.max_retry_after_s:
                raise SourceError(
                    f"{where}: {problem} asks to retry after {retry_after:.0f}s, more than "
                    f"max_retry_after_s={self.max_retry_after_s:g}"
                )
            delay = backoff_seconds(attempt, self.retry_backoff_s, self.max_backoff_s, retry_after)
            log.warning(
                "rest_api source %s: %s; retry %d/%d in %.2fs",
                where,
                problem,
                attempt + 1,
                self.retries,
                delay,
            )
            time.sleep(delay)
            attempt += 1

    def _spend(self) -> None:
        if self._requests >= self.max_requests:
            raise _BudgetExhausted
        self._requests += 1

    def _access_token(self, client: Any) -> str:
        """The cached OAuth2 token, fetched again shortly before it expires."""
        import httpx

        auth = self.auth
        assert isinstance(auth, OAuth2Auth)
        if self._token and time.monotonic() < self._token_expires:
            return self._token
        data = {"grant_type": "client_credentials"}
        if auth.scope:
            data["scope"] = auth.scope
        if auth.audience:
            data["audience"] = auth.audience
        basic: Any = None
        if auth.client_auth == "basic":
            basic = (auth.client_id, auth.client_secret.get_secret_value())
        else:
            data.update(client_id=auth.client_id, client_secret=auth.client_secret.get_secret_value())
        attempt = 0
        while True:
            self._spend()
            try:
                response = client.post(auth.token_url, data=data, auth=basic)
            except httpx.TransportError as e:
                problem = f"{type(e).__name__}: {e}"
            else:
                if response.status_code in RETRY_STATUSES:
                    problem = f"HTTP {response.status_code}"
                elif response.status_code >= 400:
                    raise SourceError(
                        f"OAuth2 token endpoint {auth.token_url}: HTTP {response.status_code}: the client "
                        f"credentials were refused: {self.redact(response.text[:200])}"
                    )
                else:
                    try:
                        payload = response.json()
                        token = str(payload["access_token"])
                    except (ValueError, KeyError, TypeError) as e:
                        raise SourceError(
                            f"OAuth2 token endpoint {auth.token_url}: no access_token in the response "
                            f"({type(e).__name__})"
                        ) from None
                    lifetime = float(payload.get("expires_in") or 3600)
                    self._token = token
                    # renew a little early, so a token does not expire between check and use
                    self._token_expires = time.monotonic() + lifetime - min(30.0, lifetime / 10)
                    return token
            problem = self.redact(problem)
            if attempt >= self.retries:
                raise SourceError(
                    f"OAuth2 token endpoint {auth.token_url}: {problem} after {attempt} retries"
                )
            time.sleep(backoff_seconds(attempt, self.retry_backoff_s, self.max_backoff_s))
            attempt += 1

    # -- records

    def _hash_id(self, item: Any) -> str:
        digest = hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return f"rest_api:{self.dataset}#hash={digest}"

    def _record(
        self, item: Any, page: int, pos: int, page_url: str, seen: set[str]
    ) -> dict[str, Any] | Rejected:
        where = f"{page_url} (page {page}, item {pos})"
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            return Rejected(self._hash_id(item), "not_an_object", where, f"a {type(item).__name__}")
        if self.id_field:
            native = get_path(item, self.id_field)
            if native is None or native == "":
                return Rejected(self._hash_id(item), "missing_field", where, f"no {self.id_field!r}")
            rid = f"rest_api:{self.dataset}#id={_as_text(native)}"
        else:
            rid = self._hash_id(item)
        if rid in seen:
            return Rejected(rid, "duplicate_id", where, "the id was already read (a page repeated an item)")
        seen.add(rid)
        if self.text_template:
            values = {name: _as_text(get_path(item, name)) for name in template_fields(self.text_template)}
            text = self.text_template
            for name, value in values.items():
                text = text.replace("{" + name + "}", value)
        elif self.text_field:
            value = get_path(item, self.text_field)
            if value is None:
                return Rejected(rid, "missing_field", where, f"no {self.text_field!r}")
            text = _as_text(value)
        else:
            field = next((f for f in DEFAULT_TEXT_FIELDS if isinstance(item.get(f), str)), None)
            text = item[field] if field else json.dumps(item, ensure_ascii=False, sort_keys=True)
        fields = {k: v for k, v in item.items() if v is None or isinstance(v, str | int | float | bool)}
        if self.text_field:
            fields.pop(self.text_field, None)
        elif not self.text_template:
            for f in DEFAULT_TEXT_FIELDS:
                if fields.get(f) == text:
                    fields.pop(f)
        meta: dict[str, Any] = {"url": page_url, "page": page, "item": pos}
        if fields:
            meta["fields"] = fields
        return {"id": rid, "text": text, "source": "rest_api", "meta": meta}


def _as_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def _parse_time(v: Any) -> float:
    """Epoch seconds of a timestamp: a number (epoch seconds) or an ISO 8601 string (UTC when naive)."""
    if isinstance(v, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(v, int | float):
        return float(v)
    text = str(v).strip().replace("Z", "+00:00").replace("z", "+00:00")
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _format_time(t: float, fmt: str) -> Any:
    if fmt == "epoch":
        return round(t, 3)
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _order_key(v: Any, kind: str) -> Any:
    """A comparable key for a watermark: epoch seconds for timestamps; numbers before strings for ids."""
    if kind == "timestamp":
        return _parse_time(v)
    if isinstance(v, int | float) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, str(v))


def _after(v: Any, bound: Any, kind: str) -> bool:
    """Whether watermark value ``v`` lies past ``bound``; an unreadable value counts as past."""
    try:
        return bool(_order_key(v, kind) > _order_key(bound, kind))
    except (ValueError, TypeError):
        return True


__all__ = [
    "ApiKeyAuth",
    "BasicAuth",
    "BearerAuth",
    "CursorPaging",
    "LinkHeaderPaging",
    "NoPaging",
    "OAuth2Auth",
    "OffsetPaging",
    "PagePaging",
    "RestApiSource",
    "RestIncremental",
]

"""A polite web crawler: robots.txt, per-host rate limits, sitemaps, conditional re-fetch."""

from __future__ import annotations

import codecs
import contextlib
import gzip
import hashlib
import ipaddress
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

from pydantic import Field, PrivateAttr

from genloom.core.errors import ConfigError, SourceError
from genloom.core.records import Rejected
from genloom.core.registry import SOURCES
from genloom.core.steps import Source
from genloom.sources._http import (
    AddressRefused,
    HostGate,
    backoff_seconds,
    check_host,
    checked_transport,
    retry_after_seconds,
    user_agent,
    utc_now_iso,
)

log = logging.getLogger("genloom.sources.web")

HTML_TYPES = ("text/html", "application/xhtml+xml")
REDIRECTS = (301, 302, 303, 307, 308)
# pages fetched at plan time wait here for the read; named by content, removed once read
SPOOL_MAX_AGE_S = 24 * 3600


@dataclass
class _Page:
    """One URL's outcome at plan time."""

    url: str
    depth: int
    final_url: str = ""
    status: int = 0
    rejected: str = ""
    detail: str = ""
    sha: str = ""
    etag: str = ""
    last_modified: str = ""
    content_type: str = ""
    charset: str = ""
    fetched_at: str = ""
    not_modified: bool = False
    redirects: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # followable (no rel=nofollow, no meta nofollow)
    license: str = ""
    terms: str = ""
    robots: str = ""


@SOURCES.register("web")
class WebSource(Source):
    """Pages of web sites, crawled politely from ``seeds``: one record per HTML page.

    robots.txt is honoured through protego (allow/disallow, ``Crawl-delay``, ``Request-rate``;
    a robots.txt that answers 4xx allows everything, one that answers 5xx or cannot be fetched
    forbids the host, as RFC 9309 says), as are ``<meta name="robots">`` and ``X-Robots-Tag``
    (noindex: no record; nofollow: no links followed) and ``rel="nofollow"``. The User-Agent
    names genloom and ``contact``. Each host gets at most ``per_host_concurrency`` requests at a
    time and one request per ``delay_s`` (or the longer Crawl-delay); ``concurrency`` threads
    crawl several hosts at once. Links are followed breadth-first to ``max_depth``, within the
    seeds' hosts (``same_domain``) and the ``include``/``exclude`` patterns, up to ``max_pages``
    page requests; sitemaps (robots.txt ``Sitemap:`` lines and ``/sitemap.xml``) add their URLs.
    Redirects are followed up to ``max_redirects``; loops are detected. Every host, and every
    redirect target, is resolved before connecting and refused when it is private, loopback or
    link-local (unless ``allow_private`` or ``allowed_networks``). A page that answers 4xx/5xx,
    is not HTML, exceeds ``max_bytes``, times out, loops or is refused is quarantined with its
    reason; a seed whose host cannot be reached fails the stage. The crawl runs when the run
    plans: each page is a partition whose fingerprint is its content hash, and on a re-run pages
    are asked for with ``If-None-Match``/``If-Modified-Since``, so a 304 keeps the page's shard
    a cache hit (the previous record, unchanged). Records: the main text by trafilatura, and in
    ``meta`` the title, links, fetch time, HTTP status, robots decision, depth, redirects,
    ETag/Last-Modified, and the licence or terms link a page declares (``rel="license"``,
    ``rel="terms-of-service"``).
    """

    type: Literal["web"] = "web"
    seeds: list[str] = Field(min_length=1, description="start URLs (http:// or https://)")
    max_depth: int = Field(default=2, ge=0, description="links followed from a seed (0: the seeds only)")
    max_pages: int = Field(default=100, gt=0, description="page requests of a crawl (whatever their outcome)")
    same_domain: bool = Field(
        default=True, description="follow links only to the seeds' hosts (and their subdomains)"
    )
    include: list[str] = Field(
        default_factory=list, description="regular expressions; a followed URL must match one (seeds exempt)"
    )
    exclude: list[str] = Field(
        default_factory=list, description="regular expressions; matching URLs are skipped"
    )
    sitemaps: bool = Field(default=True, description="also crawl the URLs of the seeds' hosts' sitemaps")
    delay_s: float = Field(
        default=1.0,
        ge=0,
        description="least time between two requests to one host (Crawl-delay wins if longer)",
    )
    concurrency: int = Field(default=4, ge=1, description="pages fetched at once, over all hosts")
    per_host_concurrency: int = Field(default=1, ge=1, description="requests at once to one host")
    timeout_s: float = Field(default=10.0, gt=0, description="seconds for one response, body included")
    max_bytes: int = Field(default=5_000_000, gt=0, description="larger pages are quarantined as too_large")
    max_redirects: int = Field(default=5, ge=0, description="redirects followed per page")
    retries: int = Field(
        default=2,
        ge=0,
        description="attempts after a refused connection, a 429 or a 503 (Retry-After honoured)",
    )
    retry_backoff_s: float = Field(default=0.5, ge=0, description="first wait; doubled each retry")
    max_retry_after_s: float = Field(
        default=120.0, ge=0, description="a longer Retry-After quarantines the page"
    )
    allow_private: bool = Field(
        default=False, description="allow private, loopback and link-local addresses (an intranet, tests)"
    )
    allowed_networks: list[str] = Field(
        default_factory=list, description="CIDR networks allowed although not public (127.0.0.0/8)"
    )
    contact: str | None = Field(
        default=None,
        description="a URL or e-mail for site owners, in the User-Agent (default: the project URL)",
    )
    main_content: bool = Field(default=True, description="main text only (trafilatura); false: all page text")

    version: ClassVar[str] = "1"
    # one page per shard: a changed page re-reads only itself, a 304 leaves its shard a cache hit
    partitions_per_shard: ClassVar[int | None] = 1
    requires: ClassVar[tuple[str, ...]] = ("httpx", "protego", "trafilatura", "lxml")
    extra: ClassVar[str] = "web"

    _previous: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)
    _pages: list[_Page] | None = PrivateAttr(default=None)
    _by_final: dict[str, _Page] = PrivateAttr(default_factory=dict)
    _spool: str = PrivateAttr(default="")

    # -- config

    def check(self, path: str) -> None:
        for i, seed in enumerate(self.seeds):
            parts = urlsplit(seed)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"not an http(s) URL: {seed!r}", path=f"{path}.seeds.{i}")
        for name in ("include", "exclude"):
            for i, pattern in enumerate(getattr(self, name)):
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ConfigError(f"not a regular expression: {e}", path=f"{path}.{name}.{i}") from e
        for i, net in enumerate(self.allowed_networks):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as e:
                raise ConfigError(f"not a CIDR network: {e}", path=f"{path}.allowed_networks.{i}") from e

    @property
    def user_agent(self) -> str:
        """The User-Agent of every request (and the name robots.txt rules are matched against)."""
        return user_agent(self.contact)

    # -- planning: the crawl

    def restore_state(self, state: dict[str, Any] | None) -> None:
        """The validators, content hashes and links of the pages of the last crawl."""
        self._previous = dict((state or {}).get("pages", {}))

    def state(self) -> dict[str, Any] | None:
        """Per page: ETag, Last-Modified, content hash, final URL and links, for the next crawl."""
        if self._pages is None:
            return None
        pages = {}
        for p in self._pages:
            if p.sha and not p.rejected:
                pages[p.url] = {
                    "final_url": p.final_url,
                    "sha": p.sha,
                    "etag": p.etag,
                    "last_modified": p.last_modified,
                    "links": p.links,
                }
        return {"pages": pages}

    def partitions(self) -> list[Any]:
        """Crawl (conditionally, against the last crawl's validators): one partition per page."""
        self.ensure_setup()
        self._spool = _spool_dir()
        _prune_spool(self._spool)
        crawl = _Crawl(self)
        try:
            self._pages = crawl.run()
        finally:
            crawl.close()
        self._by_final = {p.final_url: p for p in self._pages if not p.rejected}
        out: list[Any] = []
        for p in self._pages:
            if p.rejected:
                out.append({"url": p.url, "rejected": p.rejected, "detail": p.detail})
            else:
                out.append({"url": p.final_url})
        return out

    def partition_fingerprint(self, partition: Any) -> str:
        """A page's content hash (the last crawl's, on a 304): unchanged pages are cache hits."""
        if "rejected" in partition:
            return f"rejected:{partition['rejected']}"
        page = self._page(partition["url"])
        return f"sha256:{page.sha}" if page else ""

    def _page(self, final_url: str) -> _Page | None:
        return self._by_final.get(final_url)

    def location(self, partition: Any) -> str:
        return str(partition.get("url", "")) if isinstance(partition, dict) else ""

    # -- reading: the records

    def read(self, partition: Any) -> Iterator[dict[str, Any] | Rejected]:
        """The page's record, from the body the plan fetched (fetched again when it is gone)."""
        url = partition["url"]
        if "rejected" in partition:
            yield Rejected(f"web:{url}", partition["rejected"], url, partition.get("detail", ""))
            return
        loaded = _spool_load(self._spool, url) if self._spool else None
        planned = self._page(url)
        if loaded is None or (planned is not None and planned.sha != loaded[0].sha):
            # another machine, a stale body, or a plan that found the page unchanged (304)
            # while its shard was missing from the store: fetch it again
            crawl = _Crawl(self, conditional=False)
            try:
                loaded = crawl.fetch_one(url)
            finally:
                crawl.close()
            if loaded[0].rejected:
                yield Rejected(f"web:{url}", loaded[0].rejected, url, loaded[0].detail)
                return
        page, body = loaded
        yield self._record(page, body)

    def _record(self, page: _Page, body: bytes) -> dict[str, Any]:
        from genloom.sources._files.encoding import decode_as, sniff_encoding
        from genloom.sources.html import html_charset, html_to_text

        encoding = _known_codec(page.charset) or html_charset(body) or sniff_encoding(body[: 1 << 20])
        decoded = decode_as(body, encoding)
        text, found = html_to_text(decoded.text, self.main_content, url=page.final_url)
        meta: dict[str, Any] = {
            "url": page.final_url,
            "requested_url": page.url,
            "status": page.status,
            "fetched_at": page.fetched_at,
            "robots": page.robots,
            "depth": page.depth,
            "content_type": page.content_type,
            "encoding": encoding,
        }
        for key in ("title", "description", "lang"):
            if key in found:
                meta[key] = found[key]
        links = [urljoin(page.final_url, a["href"]) for a in found.get("links", [])]
        meta["links"] = [_normalise(u) for u in links if urlsplit(u).scheme in ("http", "https")][:500]
        for key in ("redirects", "etag", "last_modified", "license", "terms"):
            value = getattr(page, key)
            if value:
                meta[key] = value
        if decoded.invalid:
            meta["invalid_bytes"] = decoded.invalid
        return {"id": f"web:{page.final_url}", "text": text, "source": "web", "meta": meta}


class _Refused(Exception):
    """A page is not fetched or not kept: quarantined with ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


class _Unreachable(Exception):
    """A host cannot be connected to (after the retries)."""


@dataclass
class _Robots:
    url: str
    status: int
    parser: Any  # protego.Protego, or None: allow all (4xx) / see ``forbid``
    forbid: bool = False

    def decision(self, url: str, agent: str) -> tuple[bool, str]:
        if self.forbid:
            return False, f"robots.txt unavailable (HTTP {self.status or 'error'}): host forbidden"
        if self.parser is None:
            return True, f"allowed: no robots.txt (HTTP {self.status})"
        if self.parser.can_fetch(url, agent):
            return True, "allowed by robots.txt"
        return False, "disallowed by robots.txt"


class _Crawl:
    """One crawl: a client, per-host gates and robots rules, a breadth-first frontier."""

    def __init__(self, src: WebSource, conditional: bool = True) -> None:
        import httpx

        self.src = src
        self.conditional = conditional
        self.networks = [ipaddress.ip_network(n, strict=False) for n in src.allowed_networks]
        self.client = httpx.Client(
            headers={
                "User-Agent": src.user_agent,
                "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
            },
            timeout=src.timeout_s,
            follow_redirects=False,
            transport=checked_transport(src.allow_private, self.networks),
        )
        self.lock = threading.Lock()
        self.gates: dict[str, HostGate] = {}
        self.robots: dict[str, _Robots] = {}
        self.robots_locks: dict[str, threading.Lock] = {}
        self.seed_urls = {_normalise(s) for s in src.seeds}
        self.seed_hosts = {(urlsplit(s).hostname or "").lower() for s in src.seeds}
        self.include = [re.compile(p) for p in src.include]
        self.exclude = [re.compile(p) for p in src.exclude]

    def close(self) -> None:
        self.client.close()

    # -- scope

    def in_scope(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return False
        host = (parts.hostname or "").lower()
        with self.lock:  # a seed's redirect may add a host from another thread
            hosts = tuple(self.seed_hosts)
        if self.src.same_domain and not any(host == h or host.endswith("." + h) for h in hosts):
            return False
        if any(p.search(url) for p in self.exclude):
            return False
        return not self.include or any(p.search(url) for p in self.include)

    # -- the crawl

    def run(self) -> list[_Page]:
        src = self.src
        seeds = list(dict.fromkeys(_normalise(s) for s in src.seeds))
        for seed in seeds:  # a seed that is refused or unreachable stops the crawl at once
            try:
                check_host(seed, src.allow_private, self.networks)
                self.robots_for(seed, seed=True)
            except AddressRefused as e:
                raise SourceError(
                    f"seed {seed}: {e}; refused (set allow_private: true, or allowed_networks, to crawl it)"
                ) from None
            except (OSError, _Unreachable) as e:
                raise SourceError(f"seed {seed}: the host cannot be reached: {e}") from None
        level = [(s, 0) for s in seeds]
        seen = set(seeds)
        if src.sitemaps:
            for url in self.sitemap_urls(seeds):
                if url not in seen and self.in_scope(url):
                    seen.add(url)
                    level.append((url, 0))
        pages: list[_Page] = []
        finals: set[str] = set()
        budget = src.max_pages
        with ThreadPoolExecutor(max_workers=src.concurrency, thread_name_prefix="genloom-web") as pool:
            while level and budget > 0:
                batch, level = level[:budget], []
                budget -= len(batch)
                for page in pool.map(lambda item: self.fetch_page(*item), batch):
                    if not page.rejected:
                        if page.final_url in finals:
                            continue  # another URL redirected to a page already read
                        finals.add(page.final_url)
                    pages.append(page)
                    if page.depth >= src.max_depth:
                        continue
                    for link in page.links:
                        if link not in seen and self.in_scope(link):
                            seen.add(link)
                            level.append((link, page.depth + 1))
        unreachable = [p for p in pages if p.url in seeds and p.rejected == "unreachable"]
        if unreachable:
            raise SourceError(
                f"seed {unreachable[0].url}: the host cannot be reached: {unreachable[0].detail}"
            )
        return pages

    def fetch_one(self, url: str) -> tuple[_Page, bytes]:
        """One page, unconditionally (the read's fallback when the plan's body is gone)."""
        holder: dict[str, bytes] = {}
        page = self.fetch_page(url, 0, keep=holder)
        return page, holder.get("body", b"")

    def fetch_page(self, url: str, depth: int, keep: dict[str, bytes] | None = None) -> _Page:
        page = _Page(url=url, depth=depth)
        try:
            self._fetch_into(page, keep)
        except _Refused as e:
            page.rejected, page.detail = e.reason, e.detail
        except _Unreachable as e:
            page.rejected, page.detail = "unreachable", str(e)
        return page

    def _fetch_into(self, page: _Page, keep: dict[str, bytes] | None) -> None:
        src = self.src
        previous = src._previous.get(page.url) if self.conditional else None
        current = page.url
        chain: list[str] = []
        while True:
            try:
                check_host(current, src.allow_private, self.networks)
            except AddressRefused as e:
                raise _Refused("private_address", f"{current}: {e}") from None
            except OSError as e:
                raise _Unreachable(f"{current}: {e}") from None
            allowed, why = self.robots_for(current).decision(current, src.user_agent)
            if not allowed:
                raise _Refused("robots_disallowed", f"{current}: {why}")
            page.robots = why
            headers: dict[str, str] = {}
            if previous and current in (page.url, previous.get("final_url")):  # after its redirects too
                if previous.get("etag"):
                    headers["If-None-Match"] = previous["etag"]
                if previous.get("last_modified"):
                    headers["If-Modified-Since"] = previous["last_modified"]
            status, resp_headers, body = self.get(current, headers, html=True)
            if status in REDIRECTS and resp_headers.get("location"):
                target = _normalise(urljoin(current, resp_headers["location"]))
                chain.append(current)
                if target in chain:
                    raise _Refused("redirect_loop", " -> ".join([*chain, target]))
                if len(chain) > src.max_redirects:
                    raise _Refused(
                        "too_many_redirects", f"more than {src.max_redirects}: {' -> '.join(chain)}"
                    )
                if page.url in self.seed_urls:
                    # a seed moved (http -> https, www -> the apex): its new host is a seed host
                    with self.lock:
                        self.seed_hosts.add((urlsplit(target).hostname or "").lower())
                if not self.in_scope(target):
                    raise _Refused("redirect_out_of_scope", f"{current} -> {target}")
                current = target
                continue
            break
        page.final_url, page.status, page.redirects = current, status, chain
        page.fetched_at = utc_now_iso()
        if status == 304 and previous and previous.get("sha"):
            page.not_modified = True
            page.sha = previous["sha"]
            page.final_url = previous.get("final_url") or current
            page.etag, page.last_modified = previous.get("etag", ""), previous.get("last_modified", "")
            page.links = list(previous.get("links", []))
            return
        if not 200 <= status < 300:  # an error, a 304 without a kept page, a redirect without Location
            raise _Refused(f"http_{status}", f"{current}: HTTP {status}")
        robots_tag = resp_headers.get("x-robots-tag", "").lower()
        page.content_type = resp_headers.get("content-type", "")
        page.charset = _charset(page.content_type)
        page.etag = resp_headers.get("etag", "")
        page.last_modified = resp_headers.get("last-modified", "")
        page.sha = hashlib.sha256(body).hexdigest()
        info = _page_info(body, current, page.charset)
        directives = robots_tag + "," + info["meta_robots"]
        if "noindex" in directives or "none" in directives.split(","):
            raise _Refused("robots_noindex", f"{current}: the page asks not to be indexed")
        follow = "nofollow" not in directives
        page.links = info["links"] if follow else []
        page.license, page.terms = info["license"], info["terms"]
        if keep is not None:
            keep["body"] = body
        elif src._spool:
            _spool_save(src._spool, page, body)

    def get(self, url: str, headers: dict[str, str], html: bool) -> tuple[int, dict[str, str], bytes]:
        """One GET through the host's gate, with retries; the body only for 2xx answers (an
        HTML page: refused when it is not HTML or exceeds max_bytes)."""
        import httpx

        src = self.src
        attempt = 0
        host = urlsplit(url).netloc.lower()
        while True:
            retry_after: float | None = None
            status = 0
            try:
                with self.gate(host), self.client.stream("GET", url, headers=headers) as resp:
                    status = resp.status_code
                    out_headers = {k.lower(): v for k, v in resp.headers.items()}
                    if status in (429, 503):
                        retry_after = retry_after_seconds(resp.headers.get("retry-after"))
                        problem = f"HTTP {status}"
                    elif not 200 <= status < 300:
                        return status, out_headers, b""
                    else:
                        return status, out_headers, self._body(url, resp, out_headers, html)
            except httpx.TimeoutException:
                raise _Refused("timeout", f"{url}: no complete answer within {src.timeout_s:g}s") from None
            except AddressRefused as e:  # the connection's own resolution (DNS changed since the check)
                raise _Refused("private_address", f"{url}: {e}") from None
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as e:
                problem = f"{type(e).__name__}: {e}"
                if attempt >= src.retries:
                    raise _Unreachable(f"{url}: {problem}") from None
            except httpx.HTTPError as e:  # a body that does not decode, a protocol the client refuses
                raise _Refused("http_error", f"{url}: {type(e).__name__}: {e}") from None
            if attempt >= src.retries:
                raise _Refused(f"http_{status}", f"{url}: HTTP {status} after {attempt} retries")
            if retry_after is not None and retry_after > src.max_retry_after_s:
                raise _Refused("retry_after_too_long", f"{url}: asks to wait {retry_after:.0f}s")
            time.sleep(backoff_seconds(attempt, src.retry_backoff_s, 60.0, retry_after))
            log.info("web source: %s: %s; retry %d/%d", url, problem, attempt + 1, src.retries)
            attempt += 1

    def _body(self, url: str, resp: Any, headers: dict[str, str], html: bool) -> bytes:
        src = self.src
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if html and ctype and ctype not in HTML_TYPES:
            raise _Refused("not_html", f"{url}: Content-Type {ctype}")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > src.max_bytes:
            raise _Refused("too_large", f"{url}: Content-Length {length} > max_bytes={src.max_bytes}")
        deadline = time.monotonic() + src.timeout_s
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > src.max_bytes:
                raise _Refused("too_large", f"{url}: more than max_bytes={src.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise _Refused("timeout", f"{url}: the body took longer than {src.timeout_s:g}s")
            chunks.append(chunk)
        body = b"".join(chunks)
        if html and not ctype and not _looks_like_html(body):
            raise _Refused("not_html", f"{url}: no Content-Type and not HTML")
        return body

    def gate(self, host: str) -> HostGate:
        with self.lock:
            gate = self.gates.get(host)
            if gate is None:
                gate = self.gates[host] = HostGate(self.src.delay_s, self.src.per_host_concurrency)
            return gate

    # -- robots.txt and sitemaps

    def robots_for(self, url: str, seed: bool = False) -> _Robots:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc.lower()}"
        with self.lock:
            lock = self.robots_locks.setdefault(origin, threading.Lock())
        with lock:
            if origin in self.robots:
                return self.robots[origin]
            robots = self._fetch_robots(origin, seed)
            self.robots[origin] = robots
            return robots

    def _fetch_robots(self, origin: str, seed: bool) -> _Robots:
        from protego import Protego

        url = f"{origin}/robots.txt"
        current = url
        try:
            for _ in range(5):  # RFC 9309: follow at least five redirects
                check_host(current, self.src.allow_private, self.networks)
                status, headers, body = self.get(current, {}, html=False)
                if status in REDIRECTS and headers.get("location"):
                    current = urljoin(current, headers["location"])
                    continue
                break
        except AddressRefused:
            if seed:
                raise
            return _Robots(url, 0, None, forbid=True)
        except _Unreachable as e:
            if seed:
                raise
            log.warning("web source: %s: %s; the host is skipped", url, e)
            return _Robots(url, 0, None, forbid=True)
        except _Refused as e:  # a timeout, a huge robots.txt: treated as unreachable
            log.warning("web source: %s: %s; the host is skipped", url, e.detail)
            return _Robots(url, 0, None, forbid=True)
        if 200 <= status < 300:
            parser = Protego.parse(body[:500_000].decode("utf-8", "replace"))
            delays = [self.src.delay_s, parser.crawl_delay(self.src.user_agent) or 0.0]
            rate = parser.request_rate(self.src.user_agent)
            if rate is not None and rate.requests:
                delays.append(rate.seconds / rate.requests)
            self.gate(urlsplit(origin).netloc.lower()).set_delay(max(float(d) for d in delays))
            return _Robots(url, status, parser)
        if 400 <= status < 500:
            return _Robots(url, status, None)
        return _Robots(url, status, None, forbid=True)

    def sitemap_urls(self, seeds: list[str]) -> list[str]:
        """Page URLs listed by the seeds' hosts' sitemaps (robots.txt ``Sitemap:``, /sitemap.xml)."""
        maps: list[str] = []
        for seed in seeds:
            parts = urlsplit(seed)
            origin = f"{parts.scheme}://{parts.netloc.lower()}"
            robots = self.robots_for(seed)
            listed = list(robots.parser.sitemaps) if robots.parser is not None else []
            for m in [*listed, f"{origin}/sitemap.xml"]:
                if m not in maps:
                    maps.append(m)
        out: list[str] = []
        done: set[str] = set()
        while maps and len(done) < 50:
            m = maps.pop(0)
            if m in done:
                continue
            done.add(m)
            try:
                check_host(m, self.src.allow_private, self.networks)
                if not self.robots_for(m).decision(m, self.src.user_agent)[0]:
                    continue
                status, _, body = self.get(m, {}, html=False)
            except (AddressRefused, OSError, _Refused, _Unreachable) as e:
                log.info("web source: sitemap %s skipped: %s", m, e)
                continue
            if status != 200:
                continue
            pages, nested = _parse_sitemap(body)
            out.extend(_normalise(u) for u in pages)
            maps.extend(u for u in nested if u not in done)
        return list(dict.fromkeys(out))


# -- helpers


def _normalise(url: str) -> str:
    """A URL without its fragment, with a lower-case scheme and host, no default port, a path."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def _charset(content_type: str) -> str:
    m = re.search(r"charset\s*=\s*\"?([A-Za-z0-9_.:-]+)", content_type, re.I)
    return m.group(1).lower() if m else ""


def _known_codec(name: str) -> str | None:
    if not name:
        return None
    try:
        codecs.lookup(name)
    except LookupError:
        return None
    return "cp1252" if name in ("iso-8859-1", "latin-1", "latin1", "us-ascii", "ascii") else name


def _looks_like_html(body: bytes) -> bool:
    head = body[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<meta", b"<title")) or b"<html" in head


def _page_info(body: bytes, base: str, charset: str) -> dict[str, Any]:
    """Followable links (absolute, normalised), licence and terms links, and meta robots."""
    import lxml.html

    from genloom.sources.html import html_charset

    encoding = _known_codec(charset) or html_charset(body) or "utf-8"
    info: dict[str, Any] = {"links": [], "license": "", "terms": "", "meta_robots": ""}
    try:
        tree = lxml.html.fromstring(body.decode(encoding, "replace"))
    except (ValueError, lxml.etree.ParserError):  # type: ignore[attr-defined]
        return info
    base_href = tree.xpath("string(//base/@href)")
    if base_href:
        base = urljoin(base, str(base_href))
    robots = tree.xpath("//meta[translate(@name, 'ROBTS', 'robts')='robots']/@content")
    info["meta_robots"] = ",".join(str(r).lower().replace(" ", "") for r in robots)
    links: list[str] = []
    for el in tree.xpath("//a[@href] | //link[@href] | //area[@href]"):
        rel = {t.lower() for t in (el.get("rel") or "").split()}
        href = urljoin(base, el.get("href", "").strip())
        if not info["license"] and ("license" in rel or "copyright" in rel):
            info["license"] = href
        if not info["terms"] and rel & {"terms-of-service", "terms"}:
            info["terms"] = href
        if el.tag == "link" or "nofollow" in rel:
            continue
        if urlsplit(href).scheme in ("http", "https"):
            links.append(_normalise(href))
    info["links"] = list(dict.fromkeys(links))[:2000]
    return info


def _parse_sitemap(body: bytes) -> tuple[list[str], list[str]]:
    """(page URLs, nested sitemap URLs) of a sitemap or sitemap index (gzip allowed)."""
    from lxml import etree

    if body[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=__import__("io").BytesIO(body)) as f:
                body = f.read(50_000_000)
        except (OSError, EOFError):
            return [], []
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
        root = etree.fromstring(body, parser=parser)
    except etree.XMLSyntaxError:
        return [], []
    kind = etree.QName(root).localname
    locs = [str(t).strip() for t in root.xpath("//*[local-name()='loc']/text()")]
    return ([], locs) if kind == "sitemapindex" else (locs, [])


def _spool_dir() -> str:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = os.path.join(tempfile.gettempdir(), f"genloom-web-spool-{uid}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _prune_spool(path: str) -> None:
    cutoff = time.time() - SPOOL_MAX_AGE_S
    with contextlib.suppress(OSError):
        for name in os.listdir(path):
            full = os.path.join(path, name)
            with contextlib.suppress(OSError):
                if os.path.getmtime(full) < cutoff:
                    os.unlink(full)


def _spool_name(spool: str, final_url: str) -> str:
    return os.path.join(spool, hashlib.sha256(final_url.encode()).hexdigest()[:32])


def _spool_save(spool: str, page: _Page, body: bytes) -> None:
    base = _spool_name(spool, page.final_url)
    tmp = f"{base}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "wb") as f:
        head = json.dumps(asdict(page)).encode()
        f.write(len(head).to_bytes(8, "big") + head + body)
    os.replace(tmp, base)


def _spool_load(spool: str, final_url: str) -> tuple[_Page, bytes] | None:
    base = _spool_name(spool, final_url)
    try:
        with open(base, "rb") as f:
            data = f.read()
    except OSError:
        return None
    n = int.from_bytes(data[:8], "big")
    page = _Page(**json.loads(data[8 : 8 + n]))
    body = data[8 + n :]
    if hashlib.sha256(body).hexdigest() != page.sha:
        return None
    with contextlib.suppress(OSError):
        os.unlink(base)
    return page, body


__all__ = ["WebSource"]

"""web against real HTTP servers on 127.0.0.1 (threads of the test): the shared Dive Into
Python 3 site through the standard library's http.server, and pages this test writes (robots
rules, redirect chains and loops, 404/500, a slow page, huge pages, a PDF, private targets)."""

from __future__ import annotations

import gzip
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from genloom.core.errors import SourceError
from genloom.core.records import load_meta
from genloom.core.steps import StepContext
from genloom.pipeline import Pipeline
from genloom.sources.web import WebSource

pytest.importorskip("httpx", reason="pip install 'genloom[web]'")
pytest.importorskip("protego", reason="pip install 'genloom[web]'")
pytest.importorskip("trafilatura", reason="pip install 'genloom[docs]'")


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the crawler hangs up on huge and slow pages on purpose


def _serve(handler: Any) -> tuple[ThreadingHTTPServer, str]:
    server = _QuietServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _crawl(src: WebSource, state: dict[str, Any] | None = None) -> tuple[pa.Table, StepContext, list[Any]]:
    src.restore_state(state)
    parts = src.partitions()
    ctx = StepContext()
    tables = [t for p in parts for t in src.run_partition(p, ctx)]
    table = pa.concat_tables(tables) if tables else pa.table({"id": pa.array([], pa.string())})
    return table, ctx, parts


# -- the shared site, served by http.server


class SiteHandler(SimpleHTTPRequestHandler):
    log: list[tuple[str, int, str]]  # (path, status, User-Agent), set per server

    def send_response(self, code: int, message: str | None = None) -> None:
        self.log.append((self.path, code, self.headers.get("User-Agent", "")))
        super().send_response(code, message)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site(shared_data: Path) -> Iterator[tuple[str, list[tuple[str, int, str]]]]:
    root = shared_data / "web" / "diveintopython3"
    if not (root / "index.html").is_file():
        pytest.skip(f"{root} is absent: the shared web site test is skipped")
    log: list[tuple[str, int, str]] = []
    handler = type("Handler", (SiteHandler,), {"log": log})
    server, base = _serve(partial(handler, directory=str(root)))
    yield base, log
    server.shutdown()
    server.server_close()


def test_crawls_the_shared_site_politely_and_re_fetches_conditionally(
    site: tuple[str, list[tuple[str, int, str]]], shared_data: Path
) -> None:
    base, log = site
    src = WebSource(
        seeds=[f"{base}/index.html"], delay_s=0.0, allow_private=True, max_pages=200, concurrency=4
    )
    table, ctx, parts = _crawl(src)
    html_pages = sorted(p.name for p in (shared_data / "web" / "diveintopython3").glob("*.html"))
    urls = sorted(table.column("id").to_pylist())
    # every page once, but the colophon: it says <meta name=robots content=noindex>
    assert urls == sorted(f"web:{base}/{name}" for name in html_pages if name != "colophon.html")
    noindex = [r["location"] for r in ctx.rejected if r["reason"] == "robots_noindex"]
    assert noindex == [f"{base}/colophon.html"]
    # the 404s of the site's missing chapters are quarantined; external links are not followed
    reasons = {r["reason"] for r in ctx.rejected}
    assert reasons == {"http_404", "robots_noindex"}
    assert all(r["location"].startswith(base) for r in ctx.rejected)
    assert f"{base}/files.html" in {r["location"] for r in ctx.rejected}
    # robots.txt was read first, every request named genloom
    assert log[0][0] == "/robots.txt"
    assert all(ua.startswith("genloom/") and "(+" in ua for _, _, ua in log)
    index = next(r for r in table.to_pylist() if r["id"] == f"web:{base}/index.html")
    meta = load_meta(index["meta"])
    assert meta["title"] == "Dive Into Python 3"
    assert meta["license"] == "http://creativecommons.org/licenses/by-sa/3.0/"
    assert meta["robots"] == "allowed by robots.txt" and meta["status"] == 200
    assert meta["fetched_at"].endswith("Z") and meta["last_modified"]
    assert f"{base}/about.html" in meta["links"]
    assert "covers Python 3 and its differences from Python 2" in index["text"]
    # a re-crawl asks If-Modified-Since: every page answers 304, fingerprints are unchanged
    state = src.state()
    fingerprints = [src.partition_fingerprint(p) for p in parts]
    log.clear()
    again = WebSource(
        seeds=[f"{base}/index.html"], delay_s=0.0, allow_private=True, max_pages=200, concurrency=4
    )
    again.restore_state(state)
    parts2 = again.partitions()
    assert parts2 == parts
    assert [again.partition_fingerprint(p) for p in parts2] == fingerprints
    page_codes = {path: code for path, code, _ in log if path.endswith(".html")}
    assert {page_codes[f"/{n}"] for n in html_pages if n != "colophon.html"} == {304}


def test_pipeline_keeps_unchanged_pages_as_cache_hits(site: tuple[str, list[Any]], tmp_path: Path) -> None:
    base, log = site
    source = {
        "type": "web",
        "seeds": [f"{base}/index.html"],
        "max_depth": 1,
        "delay_s": 0,
        "allow_private": True,
    }
    folder = tmp_path / "proj"
    folder.mkdir()
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "webtest", "sources": [source]}, sort_keys=False))
    first = Pipeline.from_file(path).run()
    assert first.stages[0].status == "ran" and first.stages[0].rows == 15  # 16 pages, one noindex
    log.clear()
    second = Pipeline.from_file(path).run()
    assert second.stages[0].status == "cached"
    assert {code for p, code, _ in log if p.endswith(".html") and p != "/files.html"} <= {304, 404}


# -- pages written by the test


class Pages(BaseHTTPRequestHandler):
    """A small site of troubles; ``state`` is shared with the test."""

    state: dict[str, Any]
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(
        self, code: int, body: bytes = b"", ctype: str = "text/html; charset=utf-8", **headers: str
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: C901 - one branch per page of the test site
        s = self.state
        s["log"].append((self.path, time.monotonic()))
        path = self.path
        if path == "/robots.txt" and s.get("robots_status", 200) != 200:
            self._send(s["robots_status"], b"robots.txt trouble", "text/plain")
        elif path == "/robots.txt":
            rules = f"User-agent: *\nDisallow: /private/\nCrawl-delay: {s['crawl_delay']}\nSitemap: {s['base']}/map.xml\n"
            self._send(200, rules.encode(), "text/plain")
        elif path == "/map.xml":
            xml = f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{s["base"]}/from-sitemap</loc></url></urlset>'
            self._send(200, xml.encode(), "application/xml")
        elif path == "/sitemap.xml":  # a gzip sitemap index, pointing at another sitemap
            index = f'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><sitemap><loc>{s["base"]}/map2.xml</loc></sitemap></sitemapindex>'
            self._send(200, gzip.compress(index.encode()), "application/octet-stream")
        elif path == "/map2.xml":
            xml = f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{s["base"]}/from-index</loc></url></urlset>'
            self._send(200, xml.encode(), "application/xml")
        elif path == "/start":
            links = "".join(f'<a href="{h}">{h}</a> ' for h in s["links"])
            body = (
                "<!doctype html><html><head><title>Start page</title>"
                '<link rel="license" href="/licence.html"></head><body><article><h1>Start</h1>'
                "<p>" + "The crawler begins here and follows the links below. " * 8 + "</p>"
                f'<a rel="terms-of-service nofollow" href="/terms">terms</a> {links}'
                "</article></body></html>"
            )
            self._send(200, body.encode())
        elif path in ("/a", "/a2", "/from-sitemap", "/from-index", "/deep1", "/deep2"):
            nxt = {
                "/a": '<a href="/deep1">deeper</a> <a href="/start">home</a>',
                "/deep1": '<a href="/deep2">x</a>',
            }
            body = f"<html><head><title>{path}</title></head><body><p>Page {path} has some words. {nxt.get(path, '')}</p></body></html>"
            self._send(200, body.encode())
        elif path == "/etag":
            tag = f'"v{s["version"]}"'
            if self.headers.get("If-None-Match") == tag:
                self._send(304, b"", ETag=tag)
            else:
                self._send(
                    200, f"<html><title>etag</title><p>version {s['version']}</p></html>".encode(), ETag=tag
                )
        elif path == "/noindex":
            self._send(200, b'<html><head><meta name="robots" content="noindex"></head><p>hidden</p></html>')
        elif path.startswith("/r"):  # /r1 -> /r2 -> /a2
            self._send(302, b"", Location={"/r1": "/r2", "/r2": "/a2"}[path])
        elif path.startswith("/loop"):
            self._send(301, b"", Location="/loop2" if path == "/loop1" else "/loop1")
        elif path == "/evil":
            self._send(302, b"", Location="http://169.254.169.254/latest/meta-data/")
        elif path == "/ten":
            self._send(302, b"", Location="http://10.1.2.3/admin")
        elif path == "/moved":
            self._send(301, b"", Location=f"{s['base']}/start")
        elif path == "/offsite":
            self._send(302, b"", Location="http://elsewhere.invalid/")
        elif path == "/boom":
            self._send(500, b"<html>error</html>")
        elif path == "/slow":
            time.sleep(1.0)
            self._send(200, b"<html><p>late</p></html>")
        elif path == "/huge":
            self._send(200, b"<html><p>" + b"x" * 2_000_000 + b"</p></html>")
        elif path == "/huge-nolength":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"<p>" + b"y" * 50_000 + b"</p>")
        elif path == "/badgzip":
            self._send(200, b"\x1f\x8b not really gzip", Content_Encoding="gzip")
        elif path == "/doc.pdf":
            self._send(200, b"%PDF-1.4\n%binary\x00\xff", "application/pdf")
        else:
            self._send(404, b"<html>not found</html>")


LINKS = [
    "/private/secret", "/a", "/r1", "/loop1", "/missing", "/boom", "/slow", "/huge", "/huge-nolength",
    "/doc.pdf", "/evil", "/ten", "/offsite", "/noindex", "/etag", "/badgzip", "http://example.com/outside",
]  # fmt: skip


@pytest.fixture
def pages() -> Iterator[tuple[str, dict[str, Any]]]:
    state: dict[str, Any] = {"log": [], "version": 1, "links": LINKS, "crawl_delay": "0.1"}
    server, base = _serve(type("Handler", (Pages,), {"state": state}))
    state["base"] = base
    yield base, state
    server.shutdown()
    server.server_close()


def _pages_source(base: str, **kw: Any) -> WebSource:
    fields = {
        "seeds": [f"{base}/start"],
        "delay_s": 0.0,
        "timeout_s": 0.4,
        "max_bytes": 1_000_000,
        "retries": 0,
        "allowed_networks": ["127.0.0.0/8"],  # loopback only: 10.x and 169.254.x stay refused
        **kw,
    }
    return WebSource.model_validate(fields)


def test_robots_redirects_errors_and_private_targets(pages: tuple[str, dict[str, Any]]) -> None:
    base, state = pages
    table, ctx, _ = _crawl(_pages_source(base))
    ids = table.column("id").to_pylist()
    pages_read = ("/start", "/from-sitemap", "/from-index", "/a", "/a2", "/etag", "/deep1")
    assert ids == [f"web:{base}{p}" for p in pages_read]  # robots.txt's sitemap, /sitemap.xml's index
    reasons = {r["location"].removeprefix(base): r["reason"] for r in ctx.rejected}
    assert reasons == {
        "/private/secret": "robots_disallowed",
        "/loop1": "redirect_loop",
        "/missing": "http_404",
        "/boom": "http_500",
        "/slow": "timeout",
        "/huge": "too_large",
        "/huge-nolength": "too_large",
        "/doc.pdf": "not_html",
        "/evil": "redirect_out_of_scope",  # another host: never contacted (see the test below)
        "/ten": "redirect_out_of_scope",
        "/offsite": "redirect_out_of_scope",
        "/noindex": "robots_noindex",
        "/badgzip": "http_error",
    }
    requested = [p for p, _ in state["log"]]
    assert "/private/secret" not in requested and "/deep2" not in requested  # robots; max_depth 2
    assert "/terms" not in requested  # rel=nofollow
    start = load_meta(table.column("meta")[0].as_py())
    assert start["license"] == f"{base}/licence.html" and start["terms"] == f"{base}/terms"
    assert start["title"] == "Start page" and start["depth"] == 0
    a2 = load_meta(table.column("meta")[4].as_py())
    assert a2["redirects"] == [f"{base}/r1", f"{base}/r2"] and a2["requested_url"] == f"{base}/r1"
    # Crawl-delay: 0.1 spaces the requests to the host, although delay_s is 0
    # (measured where the server sees them, so allow for scheduling jitter on a busy machine)
    times = [t for _, t in state["log"]]
    assert times[-1] - times[0] >= 0.1 * (len(times) - 1) * 0.95
    gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
    # no burst: the server-side clock of one request can lag (seen: a gap of 0.038 s at load 11),
    # so the median gap holds the delay and no gap is near zero
    assert gaps[len(gaps) // 2] >= 0.09 and gaps[0] >= 0.02, gaps


def test_include_and_exclude_patterns_pick_the_links_followed(pages: tuple[str, dict[str, Any]]) -> None:
    base, state = pages
    state["links"], state["crawl_delay"] = ["/a", "/missing", "/etag"], "0"
    src = _pages_source(base, sitemaps=False, include=[r"/(a|deep\d)$"], exclude=[r"/deep2$"], max_depth=3)
    table, ctx, _ = _crawl(src)
    assert table.column("id").to_pylist() == [f"web:{base}{p}" for p in ("/start", "/a", "/deep1")]
    requested = {p for p, _ in state["log"]}
    assert not requested & {"/missing", "/etag", "/deep2"}  # not included, excluded
    assert not ctx.rejected


def test_etag_304_keeps_the_page_and_a_change_is_fetched(pages: tuple[str, dict[str, Any]]) -> None:
    base, state = pages
    state["links"], state["crawl_delay"] = ["/etag"], "0"
    src = _pages_source(base, sitemaps=False)
    _, _, parts = _crawl(src)
    saved = src.state()
    assert saved is not None and saved["pages"][f"{base}/etag"]["etag"] == '"v1"'
    fp = src.partition_fingerprint({"url": f"{base}/etag"})
    again = _pages_source(base, sitemaps=False)
    again.restore_state(saved)
    assert again.partitions() == parts
    assert again.partition_fingerprint({"url": f"{base}/etag"}) == fp
    assert again._page(f"{base}/etag").not_modified  # type: ignore[union-attr]
    state["version"] = 2
    changed = _pages_source(base, sitemaps=False)
    table, _, _ = _crawl(changed, saved)
    assert changed.partition_fingerprint({"url": f"{base}/etag"}) != fp
    assert (
        "version 2"
        in table.filter(pa.compute.equal(table.column("id"), f"web:{base}/etag")).column("text")[0].as_py()
    )


def test_a_seed_that_moves_to_another_host_is_followed_there(pages: tuple[str, dict[str, Any]]) -> None:
    base, state = pages
    state["links"], state["crawl_delay"] = ["/a", "/missing"], "0"
    port = base.rsplit(":", 1)[1]
    # localhost/moved -> 127.0.0.1/start: the seed's host changes, as http -> https or www would
    src = _pages_source(
        base,
        seeds=[f"http://localhost:{port}/moved"],
        sitemaps=False,
        allowed_networks=["127.0.0.0/8", "::1/128"],
    )
    table, ctx, _ = _crawl(src)
    assert table.column("id").to_pylist()[0] == f"web:{base}/start"
    assert table.column("id").to_pylist()[1:] == [
        f"web:{base}/a",
        f"web:{base}/deep1",
    ]  # links followed there
    assert not [
        r for r in ctx.rejected if r["reason"] == "redirect_out_of_scope" and "/moved" in r["location"]
    ]


def test_redirects_to_private_addresses_are_refused_on_every_hop(pages: tuple[str, dict[str, Any]]) -> None:
    base, _ = pages
    src = _pages_source(base, seeds=[f"{base}/evil", f"{base}/ten"], same_domain=False, sitemaps=False)
    table, ctx, _ = _crawl(src)
    assert table.num_rows == 0
    details = {r["location"].removeprefix(base): (r["reason"], r["detail"]) for r in ctx.rejected}
    assert details["/evil"][0] == details["/ten"][0] == "private_address"
    assert "169.254.169.254, a link-local address" in details["/evil"][1]
    assert "10.1.2.3, a private address" in details["/ten"][1]


@pytest.mark.parametrize(
    ("status", "outcome"), [(404, "allowed: no robots.txt (HTTP 404)"), (503, "robots_disallowed")]
)
def test_a_missing_robots_txt_allows_and_a_failing_one_forbids(
    pages: tuple[str, dict[str, Any]], status: int, outcome: str
) -> None:
    base, state = pages
    state["links"], state["robots_status"] = ["/a"], status
    table, ctx, _ = _crawl(_pages_source(base, sitemaps=False, max_depth=0))
    if status == 404:  # RFC 9309: a 4xx robots.txt means no rules
        assert load_meta(table.column("meta")[0].as_py())["robots"] == outcome
    else:  # a 5xx means the host is off limits: not one page fetched
        assert table.num_rows == 0 and [r["reason"] for r in ctx.rejected] == [outcome]
        assert [p for p, _ in state["log"]] == ["/robots.txt"]


@pytest.mark.parametrize(
    "seed", ["http://127.0.0.1:9/", "http://localhost:9/", "http://10.0.0.1/", "http://169.254.169.254/"]
)
def test_private_seeds_are_refused_without_allow_private(seed: str) -> None:
    with pytest.raises(SourceError, match="address; refused"):
        WebSource(seeds=[seed]).partitions()


def test_every_connection_is_checked_where_it_is_made(
    pages: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crawler's transport resolves, checks and connects in one step: an answer that
    changes after the crawler's own check (DNS rebinding) is checked again, not trusted."""
    import httpx

    from genloom.sources._http import AddressRefused, checked_transport

    base, _ = pages
    port = base.rsplit(":", 1)[1]
    real = socket.getaddrinfo
    answers = {"pinned.test": "127.0.0.1", "rebound.test": "10.9.9.9"}
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **kw: real(answers.get(host, host), *a, **kw))
    loopback = [ipaddress.ip_network("127.0.0.0/8")]
    with httpx.Client(transport=checked_transport(False, loopback), timeout=2) as client:
        response = client.get(f"http://pinned.test:{port}/a")
        assert response.status_code == 200 and "Page /a" in response.text
        with pytest.raises(AddressRefused, match=r"10\.9\.9\.9, a private address"):
            client.get(f"http://rebound.test:{port}/a")


def test_unreachable_seed_fails_loudly() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(SourceError, match="cannot be reached"):
        WebSource(seeds=[f"http://127.0.0.1:{port}/"], allow_private=True, retries=0).partitions()

"""Crawling: genloom's ``web`` source vs Scrapy on the shared Dive Into Python 3 site, served locally.

The site (16 pages and robots.txt, ../shared/data/web/diveintopython3) is served by
``python -m http.server`` in its own process on 127.0.0.1, ``--copies`` times under ``/c0/``,
``/c1/``... behind a hub page ``/`` that links to each copy's index, so the crawl has a few
hundred pages (and the site's real broken links, which answer 404). Two settings, each run by
both crawlers with the same limits (depth 3 from the hub, robots.txt obeyed, same User-Agent,
redirects 5, timeout 10 s):

- ``fast``: the site's own robots.txt (no Crawl-delay), 8 requests at a time to the host;
- ``polite``: robots.txt adds ``Crawl-delay: <--delay>``, one request at a time to the host.
  genloom reads the Crawl-delay from robots.txt; Scrapy does not honour Crawl-delay, so it gets
  ``DOWNLOAD_DELAY`` set to the same value (``RANDOMIZE_DOWNLOAD_DELAY`` off) - the equivalent.

genloom's crawl is its plan (``partitions()``: fetch, robots, links); its extraction
(``read``: trafilatura's main text, title, links, licence) is timed apart, as pages/s of one
thread. Scrapy's spider follows ``a[href]`` and keeps the body length (no extraction). The shared
data holds no reference text for the pages, so trafilatura's text is not scored against one; the
run reports its size against the pages' whole visible text instead.

    python benchmarks/crawl.py            # 20 copies, Crawl-delay 0.05 s
    python benchmarks/crawl.py --quick    # 4 copies, Crawl-delay 0.02 s (< 2 min)

Scrapy runs in ``--reference-python`` (default ``.venv-bench/bin/python``; install there
``pip install scrapy``). Timings never decide a test. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SITE = (
    Path(os.environ.get("GENLOOM_SHARED_DATA", REPO.parent / "shared" / "data")) / "web" / "diveintopython3"
)
DEPTH = 3

SCRAPY_SPIDER = r"""
import json, sys, time
import scrapy
from scrapy.crawler import CrawlerProcess

start, settings = sys.argv[1], json.loads(sys.argv[2])

class SiteSpider(scrapy.Spider):
    name = "site"
    allowed_domains = ["127.0.0.1"]
    start_urls = [start]
    pages = 0
    statuses = {}

    def parse(self, response):
        SiteSpider.statuses[response.status] = SiteSpider.statuses.get(response.status, 0) + 1
        if response.status != 200 or b"html" not in response.headers.get("Content-Type", b""):
            return
        SiteSpider.pages += 1
        yield {"url": response.url, "bytes": len(response.body)}
        for href in response.css("a::attr(href)").getall():
            url = response.urljoin(href)
            if url.startswith(("http://", "https://")):  # mailto: would raise and end the page
                yield scrapy.Request(url, callback=self.parse)

base = {
    "ROBOTSTXT_OBEY": True, "LOG_LEVEL": "ERROR", "TELNETCONSOLE_ENABLED": False,
    "HTTPERROR_ALLOW_ALL": True, "REDIRECT_MAX_TIMES": 5, "DOWNLOAD_TIMEOUT": 10,
    "DEPTH_LIMIT": settings.pop("depth"), "COOKIES_ENABLED": False, "RANDOMIZE_DOWNLOAD_DELAY": False,
    "ITEM_PIPELINES": {}, "FEEDS": {},
    # breadth-first, as genloom crawls: Scrapy's default LIFO order reaches some pages first by a
    # longer path, and DEPTH_LIMIT then drops them
    "DEPTH_PRIORITY": 1, "SCHEDULER_DISK_QUEUE": "scrapy.squeues.PickleFifoDiskQueue",
    "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
}
base.update(settings)
process = CrawlerProcess(base)
crawler = process.create_crawler(SiteSpider)
t0 = time.perf_counter()
process.crawl(crawler)
process.start()
seconds = time.perf_counter() - t0
stats = crawler.stats.get_stats()
print(json.dumps({
    "seconds": seconds, "pages": SiteSpider.pages,
    "requests": stats.get("downloader/request_count", 0),
    "statuses": {str(k): v for k, v in sorted(SiteSpider.statuses.items())},
    "robots_forbidden": stats.get("robotstxt/forbidden", 0),
}))
"""


def _cpu() -> dict:
    flags = subprocess.run(
        ["grep", "-o", "-m1", "avx512_bf16", "/proc/cpuinfo"], capture_output=True, text=True
    ).stdout.strip()
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"model": model, "avx512_bf16": bool(flags), "cores": os.cpu_count(), "load": os.getloadavg()}


def _tree(copies: int, crawl_delay: float | None) -> Path:
    """A folder to serve: robots.txt, a hub page, and ``copies`` links to the site."""
    root = Path(tempfile.mkdtemp(prefix="genloom-crawl-"))
    robots = (SITE / "robots.txt").read_text()
    if crawl_delay is not None:
        robots = robots.rstrip("\n") + f"\nCrawl-delay: {crawl_delay}\n"
    (root / "robots.txt").write_text(robots)
    links = "".join(f'<li><a href="/c{i}/index.html">copy {i}</a>' for i in range(copies))
    (root / "index.html").write_text(f"<!doctype html><title>hub</title><ul>{links}</ul>")
    for i in range(copies):
        os.symlink(SITE, root / f"c{i}")
    return root


def _server(root: Path) -> tuple[subprocess.Popen, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(root), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{base}/robots.txt", timeout=1).read()
            return proc, base
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("http.server did not start")


def run_genloom(base: str, per_host: int) -> dict:
    from genloom.core.steps import StepContext
    from genloom.sources.web import WebSource

    src = WebSource(
        seeds=[f"{base}/"],
        max_depth=DEPTH,
        max_pages=100_000,
        delay_s=0.0,  # robots.txt's Crawl-delay, when there is one, sets the pace
        concurrency=8,
        per_host_concurrency=per_host,
        allow_private=True,
        sitemaps=False,  # Scrapy's plain spider reads none
    )
    t0 = time.perf_counter()
    parts = src.partitions()
    crawl_s = time.perf_counter() - t0
    pages = [p for p in src._pages or [] if p.rejected in ("", "robots_noindex")]
    reasons: dict[str, int] = {}
    for p in src._pages or []:
        if p.rejected:
            reasons[p.rejected] = reasons.get(p.rejected, 0) + 1
    ctx = StepContext()
    text_chars = whole_chars = 0
    t0 = time.perf_counter()
    rows = 0
    for part in parts:
        for table in src.run_partition(part, ctx):
            rows += table.num_rows
            text_chars += sum(len(t or "") for t in table.column("text").to_pylist())
    extract_s = time.perf_counter() - t0
    import lxml.html

    for page in SITE.glob("*.html"):
        whole_chars += len(" ".join(lxml.html.fromstring(page.read_bytes()).text_content().split()))
    return {
        "crawl_seconds": round(crawl_s, 3),
        "pages": len(pages),
        "requests": len(src._pages or []) + 1,  # pages and robots.txt
        "pages_per_s": round(len(pages) / crawl_s, 1),
        "requests_per_s": round((len(src._pages or []) + 1) / crawl_s, 1),
        "rejected": reasons,
        "records": rows,
        "extract_seconds": round(extract_s, 3),
        "extract_pages_per_s": round(rows / extract_s, 1) if extract_s else None,
        "text_chars_per_page": round(text_chars / max(rows, 1)),
        "site_visible_chars_per_page": round(whole_chars / 16),
    }


def run_scrapy(python: str, base: str, settings: dict) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(SCRAPY_SPIDER)
    try:
        out = subprocess.run(
            [python, f.name, f"{base}/", json.dumps(settings)], capture_output=True, text=True, timeout=600
        )
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        return {
            "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"rc={out.returncode}"
        }
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["pages_per_s"] = round(res["pages"] / res["seconds"], 1)
    res["requests_per_s"] = round(res["requests"] / res["seconds"], 1)
    res["seconds"] = round(res["seconds"], 3)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 copies, Crawl-delay 0.02 s")
    ap.add_argument("--copies", type=int, default=None, help="copies of the site behind the hub")
    ap.add_argument("--delay", type=float, default=None, help="Crawl-delay of the polite setting (s)")
    ap.add_argument("--reference-python", default=str(REPO / ".venv-bench" / "bin" / "python"))
    args = ap.parse_args()
    if not (SITE / "index.html").is_file():
        print(json.dumps({"skipped": f"{SITE} is absent"}))
        return
    copies = args.copies or (4 if args.quick else 20)
    delay = args.delay if args.delay is not None else (0.02 if args.quick else 0.05)
    from genloom.sources._http import user_agent

    ua = user_agent(None)
    cpu = _cpu()
    print(
        f"CPU: {cpu['model']} ({cpu['cores']} cores, avx512_bf16: {cpu['avx512_bf16']}, load {cpu['load']})"
    )
    results: dict = {"copies": copies, "crawl_delay_s": delay, "depth": DEPTH, "cpu": cpu}
    scrapy_ok = Path(args.reference_python).exists()
    for name, crawl_delay, per_host in (("fast", None, 8), ("polite", delay, 1)):
        root = _tree(copies, crawl_delay)
        proc, base = _server(root)
        try:
            g = run_genloom(base, per_host)
            print(f"{name}: genloom {g['pages']} pages in {g['crawl_seconds']}s = {g['pages_per_s']} pages/s; "
                  f"extraction {g['extract_pages_per_s']} pages/s")  # fmt: skip
            entry: dict = {"genloom": g}
            if scrapy_ok:
                settings = {
                    "depth": DEPTH,
                    "USER_AGENT": ua,
                    "CONCURRENT_REQUESTS": 8,
                    "CONCURRENT_REQUESTS_PER_DOMAIN": per_host,
                    "DOWNLOAD_DELAY": crawl_delay or 0.0,
                }
                s = run_scrapy(args.reference_python, base, settings)
                entry["scrapy"] = s
                print(
                    f"{name}: scrapy {s.get('pages')} pages in {s.get('seconds')}s = {s.get('pages_per_s')} pages/s"
                )
            if crawl_delay:  # one host, one request per Crawl-delay: requests/s cannot pass this
                entry["bound_requests_per_s"] = round(1 / crawl_delay, 1)
            results[name] = entry
        finally:
            proc.kill()
            proc.wait()
    if not scrapy_ok:
        results["scrapy"] = f"not run: {args.reference_python} is absent (pip install scrapy there)"
    print(json.dumps(results))


if __name__ == "__main__":
    main()

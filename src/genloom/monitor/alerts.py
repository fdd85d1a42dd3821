"""Alerts of a monitoring pass: a webhook POST of the breaches, and Prometheus metrics in a
node-exporter textfile.

- ``post_webhook``: one JSON POST (``breach_payload``), retried on connection errors, timeouts,
  429 and 5xx with exponential backoff; any other 4xx is final. ``user:password@`` in the URL is
  sent as HTTP Basic authorization. A URL is only ever shown as
  ``scheme://host[:port]`` (``safe_url``): user, password, path and query (where webhook
  services put their tokens) are never logged or returned.
- ``write_prometheus``: the checks as gauges (prometheus-client's ``write_to_textfile``, which
  writes a temporary file beside the target and renames it over the target: a scraper never
  reads half a file).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from genloom.core.errors import ConfigError, MissingDependencyError
from genloom.monitor.signals import MonitorReport, _jsonable

log = logging.getLogger("genloom.monitor.alerts")

WEBHOOK_RETRIES = 3
WEBHOOK_BACKOFF_S = 1.0
WEBHOOK_TIMEOUT_S = 10.0


def safe_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: nothing that may hold a credential."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def check_webhook_url(url: str) -> None:
    """An http(s) URL with a host, or a ConfigError (that names only its safe part)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--webhook must be an http:// or https:// URL with a host (got {safe_url(url)})")


def breach_payload(report: MonitorReport) -> dict[str, Any]:
    """The JSON body of the webhook: the window, and each breached check with its figures."""
    return {
        "source": "genloom monitor",
        "model": report.model,
        "version": report.version,
        "window": {"start": report.window_start.isoformat(), "end": report.window_end.isoformat()},
        "requests": report.requests,
        "text_requests": report.text_requests,
        "profile": report.profile_key,
        "breaches": [_jsonable(c.figures()) for c in report.breached],
    }


def _with_basic_auth(url: str) -> tuple[str, dict[str, str]]:
    """(the URL without ``user:password@``, the request headers: those credentials as HTTP Basic
    authorization)."""
    import base64
    from urllib.parse import unquote, urlunsplit

    headers = {"Content-Type": "application/json", "User-Agent": "genloom-monitor"}
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, headers
    netloc = parts.netloc.rsplit("@", 1)[1]
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return urlunsplit(parts._replace(netloc=netloc)), headers


@dataclass
class WebhookResult:
    """How the POST went: ``ok``, the attempts, the last HTTP status and the errors (safe text)."""

    url: str
    ok: bool
    attempts: int
    status: int | None = None
    errors: list[str] = field(default_factory=list)


def post_webhook(
    url: str,
    body: dict[str, Any],
    retries: int | None = None,
    backoff_s: float | None = None,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> WebhookResult:
    """POST ``body`` as JSON to ``url``: up to ``1 + retries`` attempts, ``backoff_s * 2**i``
    seconds apart, each with ``timeout_s`` (defaults: ``WEBHOOK_RETRIES``, ``WEBHOOK_BACKOFF_S``,
    ``WEBHOOK_TIMEOUT_S``). Failures are logged (with the safe URL only)."""
    retries = WEBHOOK_RETRIES if retries is None else retries
    backoff_s = WEBHOOK_BACKOFF_S if backoff_s is None else backoff_s
    timeout_s = WEBHOOK_TIMEOUT_S if timeout_s is None else timeout_s
    check_webhook_url(url)
    shown = safe_url(url)
    target, headers = _with_basic_auth(url)
    data = json.dumps(body).encode()
    res = WebhookResult(shown, False, 0)
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff_s * 2 ** (attempt - 1))
        res.attempts += 1
        req = urllib.request.Request(target, data=data, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                res.status = int(resp.status)
            res.ok = True
            return res
        except urllib.error.HTTPError as e:
            res.status = int(e.code)
            why = f"HTTP {e.code}"
            final = e.code < 500 and e.code != 429
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            why = f"{type(reason).__name__}" + (": timed out" if isinstance(reason, TimeoutError) else "")
            final = False
        res.errors.append(why)
        log.warning("webhook %s attempt %d of %d failed: %s", shown, attempt + 1, retries + 1, why)
        if final:
            break
    log.error("webhook %s failed after %d attempts: %s", shown, res.attempts, "; ".join(res.errors))
    return res


def write_prometheus(report: MonitorReport, path: Path | str, now: float | None = None) -> Path:
    """Write the report's checks as Prometheus gauges to ``path`` (node-exporter textfile
    format, replaced atomically). Labels: model, version, kind, signal, method."""
    try:
        from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
    except ImportError as e:
        raise MissingDependencyError("prometheus-client", "pip install 'genloom[serve]'") from e
    path = Path(path)
    if path.suffix != ".prom":
        raise ConfigError(f"--prometheus-textfile {path} must end in .prom (node-exporter reads only those)")
    if not path.parent.is_dir():
        raise ConfigError(f"--prometheus-textfile: the folder {path.parent} does not exist")
    reg = CollectorRegistry()
    labels = ["model", "version", "kind", "signal", "method"]
    score = Gauge("genloom_monitor_check_score", "Score of a monitoring check", labels, registry=reg)
    threshold = Gauge(
        "genloom_monitor_check_threshold", "Threshold of a monitoring check", labels, registry=reg
    )
    p_value = Gauge("genloom_monitor_check_p_value", "p-value of a monitoring check", labels, registry=reg)
    breached = Gauge(
        "genloom_monitor_check_breached", "1 when the check crossed its threshold", labels, registry=reg
    )
    skipped = Gauge(
        "genloom_monitor_check_skipped", "1 when the check was not computed", labels, registry=reg
    )
    base = ["model", "version"]
    requests = Gauge("genloom_monitor_requests", "Requests in the monitored window", base, registry=reg)
    text_requests = Gauge(
        "genloom_monitor_text_requests", "Text requests (200, completions) in the window", base, registry=reg
    )
    n_breached = Gauge(
        "genloom_monitor_breached_checks", "Checks that crossed their threshold", base, registry=reg
    )
    last = Gauge(
        "genloom_monitor_last_run_timestamp_seconds", "When the monitoring pass ended", base, registry=reg
    )
    v = str(report.version)
    for c in report.checks:
        lv = (report.model, v, c.kind, c.signal, c.method)
        if c.score is not None:
            score.labels(*lv).set(c.score)
        if c.threshold is not None:
            threshold.labels(*lv).set(c.threshold)
        if c.p_value is not None:
            p_value.labels(*lv).set(c.p_value)
        breached.labels(*lv).set(1 if c.breached else 0)
        skipped.labels(*lv).set(1 if c.skipped else 0)
    requests.labels(report.model, v).set(report.requests)
    text_requests.labels(report.model, v).set(report.text_requests)
    n_breached.labels(report.model, v).set(len(report.breached))
    last.labels(report.model, v).set(time.time() if now is None else now)
    write_to_textfile(str(path), reg)
    return path

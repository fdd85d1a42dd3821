"""HTTP machinery shared by the ``rest_api`` and ``web`` sources: backoff, Retry-After, address
checks and redaction. httpx is imported by the callers, inside their methods."""

from __future__ import annotations

import functools
import ipaddress
import socket
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from genloom import __version__

PROJECT_URL = "https://github.com/genloom/genloom"
USER_AGENT_TOKEN = "genloom"
# statuses worth another attempt: rate limited, or the server (or a proxy in front) failing
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def user_agent(contact: str | None) -> str:
    """``genloom/<version> (+<contact or the project URL>)``: names the crawler and whom to ask."""
    return f"{USER_AGENT_TOKEN}/{__version__} (+{contact or PROJECT_URL})"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: delta-seconds (fractions accepted) or an
    HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


def backoff_seconds(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """The wait before retry ``attempt + 1``: ``base * 2**attempt`` up to ``cap``, or what the
    server asked for in ``Retry-After`` when that is longer."""
    delay = min(cap, base * (2**attempt))
    return max(delay, retry_after) if retry_after is not None else delay


class AddressRefused(Exception):
    """A URL's host resolves to an address the config does not allow (private, loopback...)."""

    def __init__(self, host: str, address: str, kind: str) -> None:
        self.host, self.address, self.kind = host, address, kind
        super().__init__(f"{host} resolves to {address}, a {kind} address")


def address_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is not public (loopback, private, link-local...), or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, flag in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("private", ip.is_private),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return kind
    return None if ip.is_global else "non-global"


def check_host(
    url: str,
    allow_private: bool,
    allowed_networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
) -> list[str]:
    """Resolve ``url``'s host and raise AddressRefused when any of its addresses is not public
    (unless ``allow_private``, or the address lies in one of ``allowed_networks``); return the
    addresses. Every address must pass: a name resolving to one public and one private address
    is refused, since the connection may pick either."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return resolve_checked(parts.hostname or "", port, allow_private, allowed_networks)


def resolve_checked(
    host: str,
    port: int,
    allow_private: bool,
    allowed_networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
) -> list[str]:
    """The addresses of ``host``, each checked as :func:`check_host` says (OSError when it does
    not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise OSError(f"cannot resolve {host}: {e.strerror or e}") from e
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if allow_private:
        return addresses
    networks = list(allowed_networks)
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        kind = address_kind(ip)
        if kind is not None and not any(ip in net for net in networks if ip.version == net.version):
            raise AddressRefused(host, address, kind)
    return addresses


@functools.cache
def ssl_context() -> Any:
    """One TLS context (certifi's roots) per process, shared by every client: building one
    costs about 0.1 s, which a source that opens a client per partition would pay each time."""
    import httpx

    return httpx.create_ssl_context()


def checked_transport(
    allow_private: bool, allowed_networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
) -> Any:
    """An httpx transport whose every connection resolves its host once, checks the addresses
    (:func:`resolve_checked`) and connects to a checked one: a DNS answer that changes between a
    check and the connection (rebinding) cannot slip a private address in. TLS still verifies
    the host name. Environment proxies are ignored (``trust_env=False``): settings come from the
    config, and a proxy would hide the address actually reached."""
    import httpcore
    import httpx

    networks = list(allowed_networks)

    class CheckedBackend(httpcore.SyncBackend):  # type: ignore[misc]
        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> Any:
            try:
                addresses = resolve_checked(host, port, allow_private, networks)
            except AddressRefused:
                raise
            except OSError as e:
                raise httpcore.ConnectError(str(e)) from e
            error: Exception | None = None
            for address in addresses:
                try:
                    return super().connect_tcp(address, port, timeout, local_address, socket_options)
                except httpcore.ConnectError as e:  # try the next address, as create_connection does
                    error = e
            raise error or httpcore.ConnectError(f"{host} has no address")

    transport = httpx.HTTPTransport(verify=ssl_context(), trust_env=False)
    pool = getattr(transport, "_pool", None)
    if not (isinstance(pool, httpcore.ConnectionPool) and hasattr(pool, "_network_backend")):
        raise RuntimeError(f"httpx {httpx.__version__}: no connection pool to pin addresses in")
    pool._network_backend = CheckedBackend()
    return transport


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``***`` (longest first, so a secret that
    contains another is hidden whole)."""
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class HostGate:
    """Politeness for one host: at most ``concurrency`` requests at a time, and at least
    ``delay_s`` between the starts of two requests."""

    def __init__(self, delay_s: float, concurrency: int) -> None:
        import threading

        self.delay_s = delay_s
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency)
        self._next = 0.0
        self._last = 0.0

    def set_delay(self, delay_s: float) -> None:
        """Change the delay (robots.txt's Crawl-delay, once read); it applies from the last start."""
        with self._lock:
            self.delay_s = delay_s
            self._next = max(self._next, self._last + delay_s)

    def __enter__(self) -> HostGate:
        self._slots.acquire()
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._last = start
            self._next = start + self.delay_s
        if start > now:
            time.sleep(start - now)
        return self

    def __exit__(self, *exc: object) -> None:
        self._slots.release()


def utc_now_iso() -> str:
    """The current time in UTC, ISO 8601 with seconds."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")

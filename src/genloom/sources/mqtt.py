"""MQTT subscriptions (paho-mqtt), bounded by time or message count, as records or series windows."""

from __future__ import annotations

import csv as pycsv
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pyarrow as pa
from pydantic import Field, PrivateAttr, SecretStr

from genloom.core.errors import ConfigError, MissingDependencyError, SourceError
from genloom.core.records import Rejected, record_id
from genloom.core.registry import SOURCES
from genloom.core.steps import Source
from genloom.sources._series import (
    Sample,
    WindowConfig,
    check_timezone,
    flatten,
    iso,
    sample_records,
    sample_windows,
    to_utc_ns,
)

log = logging.getLogger("genloom.sources.mqtt")


@dataclass
class _Session:
    """What the paho callbacks report to the read loop."""

    messages: list[tuple[str, int, bytes, int, bool]] = field(default_factory=list)
    connected: bool = False
    ever_connected: bool = False
    refused: str | None = None
    subscribed: bool = False
    sub_refused: str | None = None
    session_present: bool = False
    reconnects: int = 0
    last_message: float = 0.0


@SOURCES.register("mqtt")
class MqttSource(Source):
    """Messages of an MQTT broker: a subscription (topic wildcards ``+`` and ``#``, a QoS) that
    ends after ``max_messages`` messages or ``duration_s`` seconds (or ``idle_s`` without a
    message), whichever comes first; at least one bound is required, so a run always ends.

    Payloads are JSON (an object's fields, nested ones as dotted names; any other value as
    ``value``) or CSV lines (named by ``csv_columns``); ``payload: auto`` tries JSON first. The
    time of a reading is ``time_field`` (ISO 8601 text, or epoch numbers in ``time_unit``; a
    time without an offset is in ``timezone``), else the arrival time; both end up in UTC.
    Messages keep their arrival order per topic; ids are ``mqtt:<topic>@<time>`` (``~2``... for
    equal times). Without ``window`` each message is a record (``ts``, ``series`` = topic, the
    fields as typed columns, ``meta.topic``/``qos``/``retain``/``arrival``); with ``window``
    the readings of each topic (or of each ``series_field`` value within it) become series
    windows, resampled to ``window.step`` with gaps marked (docs/sources-streams.md).

    A payload that does not parse is quarantined as ``malformed_payload``, a bad time as
    ``bad_timestamp``. A broker that cannot be reached is retried ``retries`` times, then the
    stage fails with ``SourceError``; a refused login or subscription fails at once. A
    connection lost mid-subscription is re-established (and the topics subscribed again) up to
    ``retries`` times; with ``clean_session: false``, a fixed ``client_id`` and QoS 1 or 2 the
    broker keeps the messages published meanwhile (and between runs), otherwise messages sent
    while disconnected are lost, which ``meta.reconnects`` records. Every run is a new capture:
    its partition fingerprint is new each time, so ingest never serves an old capture from cache.
    With ``keep_captures: N`` the dataset holds the last N runs' captures (kept in the catalog;
    the earlier ones are cache hits); a kept capture whose shard is gone (a killed run's) is
    captured again in its place.
    """

    type: Literal["mqtt"] = "mqtt"
    url: SecretStr = Field(
        default=SecretStr("mqtt://127.0.0.1:1883"),
        description="mqtt://[user:password@]host:port (mqtts:// for TLS); write the password as ${env:NAME}",
    )
    topics: list[str] = Field(
        min_length=1, description="topic filters, wildcards allowed (sensors/+/temp, site/#)"
    )
    qos: Literal[0, 1, 2] = Field(default=1, description="the subscription's quality of service")
    max_messages: int | None = Field(default=None, gt=0, description="stop after this many messages")
    duration_s: float | None = Field(
        default=None, gt=0, description="stop this many seconds after subscribing"
    )
    idle_s: float | None = Field(
        default=None,
        gt=0,
        description="stop when no message came for this many seconds (counted from the subscription, then from the last message)",
    )
    payload: Literal["auto", "json", "csv"] = Field(
        default="auto", description="the payload format; auto: JSON, else CSV when csv_columns is set"
    )
    csv_columns: list[str] | None = Field(
        default=None, description="the names of the values of a CSV payload line, in order"
    )
    time_field: str | None = Field(
        default=None, description="the field (dotted path) holding the reading's time; default: arrival time"
    )
    time_unit: Literal["s", "ms", "us", "ns"] = Field(default="s", description="the unit of numeric times")
    time_format: str | None = Field(
        default=None, description="strptime format of time text (default ISO 8601)"
    )
    timezone: str = Field(default="UTC", description="the IANA time zone of times without an offset")
    series_field: str | None = Field(
        default=None, description="a field naming the series within a topic (a device id)"
    )
    window: WindowConfig | None = Field(
        default=None, description="emit series windows instead of one record per message"
    )
    client_id: str | None = Field(
        default=None, description="the MQTT client id (default: genloom-<random>, new each run)"
    )
    clean_session: bool = Field(
        default=True,
        description="false (with a fixed client_id and qos >= 1): the broker keeps the subscription "
        "and queues messages while the source is away, so the next run reads them",
    )
    retained: bool = Field(
        default=False,
        description="keep the retained messages the broker sends on subscribing (each topic's last "
        "value, published before the capture and perhaps read by an earlier run); default: skip them",
    )
    keep_captures: int = Field(
        default=1,
        ge=1,
        description="how many captures (runs) the dataset holds: 1 (this run's messages only), or the "
        "last N runs' (the earlier ones are cache hits, so each run adds only its new messages)",
    )
    keepalive_s: int = Field(default=30, ge=5, description="MQTT keep-alive interval")
    retries: int = Field(default=3, ge=0, description="connection attempts after a failed or lost one")
    retry_backoff_s: float = Field(default=0.5, ge=0, description="first wait; doubled each retry")
    connect_timeout_s: float = Field(
        default=10.0, gt=0, description="seconds to wait for the broker's CONNACK"
    )

    requires: ClassVar[tuple[str, ...]] = ("paho.mqtt.client",)
    extra: ClassVar[str] = "mqtt"
    # one shard per capture: a new capture leaves the kept ones' shards (cache hits) alone
    partitions_per_shard: ClassVar[int | None] = 1

    _restored: list[str] = PrivateAttr(default_factory=list)
    _captures: list[str] | None = PrivateAttr(default=None)

    # -- config and secrets

    def check(self, path: str) -> None:
        if self.max_messages is None and self.duration_s is None and self.idle_s is None:
            raise ConfigError(
                "a subscription must end: set max_messages, duration_s or idle_s",
                path=path,
                hint="duration_s: 60",
            )
        parts = urlsplit(self.url.get_secret_value())
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
            raise ConfigError("url is not an MQTT URL (mqtt://host:1883, mqtts://)", path=f"{path}.url")
        if self.payload == "csv" and not self.csv_columns:
            raise ConfigError(
                "payload: csv needs csv_columns (the names of the values)", path=f"{path}.csv_columns"
            )
        if not self.clean_session and self.client_id is None:
            raise ConfigError(
                "clean_session: false keeps a session by client id: set client_id", path=f"{path}.client_id"
            )
        try:
            check_timezone(self.timezone)
        except ValueError as e:
            raise ConfigError(str(e), path=f"{path}.timezone") from e

    def redacted_url(self) -> str:
        """The URL with its password replaced by ``***``."""
        parts = urlsplit(self.url.get_secret_value())
        if parts.password is None:
            return self.url.get_secret_value()
        port = f":{parts.port}" if parts.port else ""
        netloc = f"{parts.username or ''}:***@{parts.hostname}{port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))

    def redact(self, text: str) -> str:
        """``text`` with the URL and its password replaced by their redacted forms."""
        raw = self.url.get_secret_value()
        text = text.replace(raw, self.redacted_url())
        password = urlsplit(raw).password
        if password:
            for form in {password, quote(password, safe=""), unquote(password)}:
                text = text.replace(form, "***")
        return text

    # -- planning

    def restore_state(self, state: dict[str, Any] | None) -> None:
        """The captures of the last runs (from the catalog)."""
        captures = (state or {}).get("captures")
        self._restored = [str(c) for c in captures] if isinstance(captures, list) else []

    def state(self) -> dict[str, Any] | None:
        """The captures the dataset holds, for the next run (with ``keep_captures`` > 1)."""
        if self._captures is None or self.keep_captures == 1:
            return None
        return {"captures": self._captures}

    def partitions(self) -> list[Any]:
        """A new capture for this run, after the kept captures of earlier runs (cache hits: a
        live subscription cannot be split or replayed)."""
        captures = [*self._restored, uuid.uuid4().hex][-self.keep_captures :]
        self._captures = captures
        return [{"capture": c, "topics": list(self.topics)} for c in captures]

    def partition_fingerprint(self, partition: Any) -> str:
        """New for every capture: a subscription's messages are never a cache hit."""
        return str(partition["capture"])

    def location(self, partition: Any) -> str:
        return f"{self.redacted_url()} {','.join(self.topics)}"

    # -- the subscription

    def read(self, partition: Any) -> Iterator[pa.Table | Rejected]:
        """Subscribe, collect messages until a bound is reached, then emit them."""
        session = self._capture()
        samples: list[Sample] = []
        rejected: list[Rejected] = []
        seq: dict[str, int] = {}
        seen: dict[tuple[str, int], int] = {}
        for topic, arrival, payload, qos, retain in session.messages:
            n = seq.get(topic, 0)
            seq[topic] = n + 1
            where = f"{topic} #{n}"
            mid = record_id("mqtt", f"{topic}#{n}@{iso(arrival)}")
            try:
                readings = self._parse(payload)
            except ValueError as e:
                rejected.append(Rejected(mid, "malformed_payload", where, f"{e}: {payload[:200]!r}"))
                continue
            for fields in readings:
                try:
                    t = self._time(fields, arrival)
                except (ValueError, TypeError, OverflowError) as e:
                    rejected.append(Rejected(mid, "bad_timestamp", where, str(e)))
                    continue
                series = (
                    topic
                    if self.series_field is None
                    else f"{topic}#{self.series_field}={fields.get(self.series_field)}"
                )
                k = seen.get((series, t), 0) + 1
                seen[(series, t)] = k
                rid = record_id("mqtt", f"{series}@{iso(t)}" + (f"~{k}" if k > 1 else ""))
                meta = {"topic": topic, "qos": qos, "retain": retain, "arrival": iso(arrival), "seq": n}
                samples.append(Sample(series, t, fields, rid, meta))
        yield from rejected
        meta = {"broker": self.redacted_url(), "reconnects": session.reconnects}
        if self.window is not None:
            yield from sample_windows("mqtt", samples, self.window, meta)
        elif samples:
            # arrival order within each topic; topics one after the other
            samples.sort(key=lambda s: s.series)
            yield sample_records("mqtt", samples, meta)

    def _parse(self, payload: bytes) -> list[dict[str, Any]]:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"not UTF-8 (byte {e.start})") from e
        if self.payload in ("auto", "json"):
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as e:
                if self.payload == "json" or not self.csv_columns:
                    raise ValueError(f"not JSON ({e.msg} at {e.pos})") from e
            else:
                if isinstance(doc, dict):
                    return [flatten(doc)]
                if isinstance(doc, list) and doc and all(isinstance(d, dict) for d in doc):
                    return [flatten(d) for d in doc]
                if self.payload == "json" or not self.csv_columns:
                    return [{"value": doc}]
                # auto with csv_columns: a bare number ("20.5") is a one-value CSV line
        return self._csv(text)

    def _csv(self, text: str) -> list[dict[str, Any]]:
        assert self.csv_columns is not None  # check() requires them for CSV payloads
        out = []
        for row in pycsv.reader(line for line in text.splitlines() if line.strip()):
            if len(row) != len(self.csv_columns):
                raise ValueError(f"{len(row)} CSV values, csv_columns names {len(self.csv_columns)}")
            out.append({name: _scalar(v) for name, v in zip(self.csv_columns, row, strict=True)})
        if not out:
            raise ValueError("empty CSV payload")
        return out

    def _time(self, fields: dict[str, Any], arrival: int) -> int:
        if self.time_field is None:
            return arrival
        if self.time_field not in fields:
            raise ValueError(f"no field {self.time_field!r}")
        return to_utc_ns(fields.pop(self.time_field), self.time_unit, self.time_format, self.timezone)

    def _capture(self) -> _Session:
        try:
            import paho.mqtt.client as mqtt
        except ImportError as e:
            raise MissingDependencyError("paho-mqtt (needed by 'mqtt')", "pip install 'genloom[mqtt]'") from e
        parts = urlsplit(self.url.get_secret_value())
        s = _Session()
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id or f"genloom-{uuid.uuid4().hex[:12]}",
            clean_session=self.clean_session,
            protocol=mqtt.MQTTv311,
        )
        if parts.username is not None:
            client.username_pw_set(unquote(parts.username), unquote(parts.password or "") or None)
        if parts.scheme in ("mqtts", "ssl"):
            client.tls_set()

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                s.refused = str(reason)
                return
            s.connected = True
            if s.ever_connected:
                s.reconnects += 1
                if not flags.session_present:
                    log.warning(
                        "mqtt source %s: reconnected without a session: messages sent while "
                        "disconnected are lost",
                        self.redacted_url(),
                    )
                else:
                    log.info("mqtt source %s: reconnected, session kept", self.redacted_url())
            s.ever_connected = True
            s.session_present = bool(flags.session_present)
            s.subscribed = False
            c.subscribe([(t, self.qos) for t in self.topics])

        def on_subscribe(c: Any, userdata: Any, mid: Any, reasons: Any, props: Any) -> None:
            failed = [str(r) for r in reasons if r.is_failure]
            if failed:
                s.sub_refused = ", ".join(failed)
                return
            s.subscribed = True
            log.info("mqtt source %s: subscribed to %s", self.redacted_url(), ", ".join(self.topics))

        def on_message(c: Any, userdata: Any, msg: Any) -> None:
            if msg.retain and not self.retained:
                return
            s.messages.append((msg.topic, time.time_ns(), bytes(msg.payload), int(msg.qos), bool(msg.retain)))
            s.last_message = time.monotonic()

        def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            s.connected = False

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.on_disconnect = on_disconnect
        host, port = (
            parts.hostname or "127.0.0.1",
            parts.port or (8883 if parts.scheme in ("mqtts", "ssl") else 1883),
        )
        try:
            self._connect(
                client, s, lambda: client.connect(host, port, keepalive=self.keepalive_s), "connect"
            )
            self._collect(client, s)
        finally:
            client.disconnect()
            client.loop(timeout=0.01)
        return s

    def _connect(self, client: Any, s: _Session, attempt_fn: Any, what: str) -> None:
        """Connect (or reconnect) and wait for the CONNACK, with retries; a refusal is final."""
        attempt = 0
        while True:
            error = ""
            try:
                attempt_fn()
                deadline = time.monotonic() + self.connect_timeout_s
                while not s.connected and s.refused is None and time.monotonic() < deadline:
                    client.loop(timeout=0.05)
                if s.refused is not None:
                    raise SourceError(
                        f"{self.redacted_url()}: the broker refused the connection: {s.refused}"
                    )
                if s.connected:
                    return
                error = f"no CONNACK within {self.connect_timeout_s:g}s"
            except SourceError:
                raise
            except (OSError, ValueError) as e:
                error = self.redact(f"{type(e).__name__}: {e}")
            if attempt >= self.retries:
                tries = f" after {attempt} retries" if attempt else ""
                got = f" ({len(s.messages)} messages received)" if s.ever_connected else ""
                raise SourceError(f"{self.redacted_url()}{tries} ({what}){got}: {error}")
            delay = self.retry_backoff_s * (2**attempt)
            log.warning(
                "mqtt source %s: %s (%s); retry %d/%d in %.1fs",
                self.redacted_url(),
                error,
                what,
                attempt + 1,
                self.retries,
                delay,
            )
            time.sleep(delay)
            attempt += 1

    def _collect(self, client: Any, s: _Session) -> None:
        """Run the client until a bound is reached; re-establish a lost connection."""
        started: float | None = None
        while True:
            client.loop(timeout=0.05)
            if s.sub_refused is not None:
                raise SourceError(
                    f"{self.redacted_url()}: the broker refused the subscription: {s.sub_refused}"
                )
            if not s.connected:
                self._connect(client, s, client.reconnect, "reconnect")
                continue
            if not s.subscribed:
                continue
            now = time.monotonic()
            if started is None:
                started = now
            if self.max_messages is not None and len(s.messages) >= self.max_messages:
                del s.messages[self.max_messages :]
                return
            if self.duration_s is not None and now - started >= self.duration_s:
                return
            if self.idle_s is not None and now - max(s.last_message, started) >= self.idle_s:
                return


def _scalar(text: str) -> Any:
    """A CSV value: an int, a float, empty as None, else the text."""
    t = text.strip()
    if t == "":
        return None
    for kind in (int, float):
        try:
            return kind(t)
        except ValueError:
            continue
    return t


__all__ = ["MqttSource"]

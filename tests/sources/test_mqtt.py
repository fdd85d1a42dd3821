"""The mqtt source against the machine's Mosquitto (127.0.0.1:1883) with a publisher thread in the
test; each test uses its own topic prefix. Skipped with the reason when the broker is down."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from genloom.core.errors import ConfigError, SourceError
from genloom.core.steps import StepContext
from genloom.sources.mqtt import MqttSource

URL = "mqtt://127.0.0.1:1883"


@pytest.fixture
def broker() -> None:
    pytest.importorskip("paho.mqtt.client", reason="pip install 'genloom[mqtt]'")
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=2).close()
    except OSError as e:
        pytest.skip(f"Mosquitto is not reachable on 127.0.0.1:1883 ({e})")


@pytest.fixture
def prefix(broker: None) -> str:
    return f"gltest/{uuid.uuid4().hex[:10]}"


class _Subscribed(logging.Handler):
    """Sets an event when the source logs that it subscribed (or reconnected)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.subscribed = threading.Event()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "subscribed to" in record.getMessage():
            self.count += 1
            self.subscribed.set()


def _publisher(port: int = 1883) -> Any:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"glpub-{uuid.uuid4().hex[:8]}"
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _run_with_publisher(
    src: MqttSource, publish: Callable[[Any, _Subscribed], None], port: int = 1883
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Read ``src`` while a thread runs ``publish(client, hook)`` once the source has subscribed
    (``client``: a publisher connected to the broker on ``port``)."""
    hook = _Subscribed()
    logger = logging.getLogger("genloom.sources.mqtt")
    logger.addHandler(hook)
    logger.setLevel(logging.INFO)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            if not hook.subscribed.wait(10):
                raise TimeoutError("the source never subscribed")
            client = _publisher(port)
            try:
                publish(client, hook)
            finally:
                client.loop_stop()
                client.disconnect()
        except BaseException as e:  # reported by the test thread
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        ctx = StepContext()
        tables = [t for p in src.partitions() for t in src.run_partition(p, ctx)]
    finally:
        thread.join()
        logger.removeHandler(hook)
    if errors:
        raise errors[0]
    rows = pa.concat_tables(tables).to_pylist() if tables else []
    return rows, ctx.rejected


def test_json_messages_on_wildcard_topics_in_order_with_utc_times(prefix: str) -> None:
    base = datetime(2024, 3, 1, 10, 0, tzinfo=UTC).timestamp()

    def publish(client: Any, _: _Subscribed) -> None:
        for i in range(60):
            for dev in ("a", "b"):
                ts = datetime.fromtimestamp(base + i, UTC).astimezone().isoformat()  # local offset
                body = {"ts": ts, "n": i, "env": {"temp": 20 + i / 10}, "dev": dev}
                client.publish(f"{prefix}/sensors/{dev}/env", json.dumps(body), qos=1).wait_for_publish(5)

    src = MqttSource(
        url=URL, topics=[f"{prefix}/sensors/+/env"], qos=1, max_messages=120, duration_s=20, time_field="ts"
    )
    src.check("sources.0")
    rows, rejected = _run_with_publisher(src, publish)
    assert rejected == [] and len(rows) == 120
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_topic.setdefault(r["series"], []).append(r)
    assert sorted(by_topic) == [f"{prefix}/sensors/a/env", f"{prefix}/sensors/b/env"]
    for got in by_topic.values():
        assert [r["n"] for r in got] == list(range(60))  # arrival order kept per topic
        assert [json.loads(r["meta"])["seq"] for r in got] == list(range(60))
    first = by_topic[f"{prefix}/sensors/a/env"][0]
    assert first["ts"] == datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    assert first["id"] == f"mqtt:{prefix}/sensors/a/env@2024-03-01T10:00:00Z"
    assert (
        first["env.temp"] == 20.0 and first["text"] == "n: 0; env.temp: 20.0; dev: a"
    )  # the time field became ts
    assert len({r["id"] for r in rows}) == 120


def test_csv_payloads_become_windows_with_the_gap_marked(prefix: str) -> None:
    start = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())

    def publish(client: Any, _: _Subscribed) -> None:
        for i in range(20):
            if i in (7, 8):
                continue  # two missing seconds
            client.publish(f"{prefix}/line", f"{start + i},{i}.5,{100 - i}", qos=1).wait_for_publish(5)
        client.publish(f"{prefix}/line", b"1,2", qos=1).wait_for_publish(5)  # too few values
        client.publish(f"{prefix}/line", b"\xff\xfe", qos=1).wait_for_publish(5)  # not text

    src = MqttSource(
        url=URL,
        topics=[f"{prefix}/#"],
        payload="csv",
        csv_columns=["t", "a", "b"],
        time_field="t",
        max_messages=20,
        duration_s=20,
        window={"size": 10, "step": "1s"},
    )
    rows, rejected = _run_with_publisher(src, publish)
    assert sorted(r["reason"] for r in rejected) == ["malformed_payload", "malformed_payload"]
    assert [len(r["values"]) for r in rows] == [10, 10]
    assert [m[0] for m in rows[0]["mask"]] == [True] * 7 + [False, False, True]
    assert rows[0]["values"][7] == [None, None] and rows[0]["values"][9] == [9.5, 91.0]
    assert json.loads(rows[0]["meta"])["channels"] == ["a", "b"]


def test_retained_messages_are_skipped_unless_asked_for(prefix: str) -> None:
    client = _publisher()
    client.publish(f"{prefix}/r", json.dumps({"v": -1}), qos=1, retain=True).wait_for_publish(5)
    try:

        def publish(c: Any, _: _Subscribed) -> None:
            c.publish(f"{prefix}/r", json.dumps({"v": 1}), qos=1).wait_for_publish(5)

        rows, _ = _run_with_publisher(
            MqttSource(url=URL, topics=[f"{prefix}/r"], max_messages=1, duration_s=10), publish
        )
        assert [r["v"] for r in rows] == [1]
        src = MqttSource(url=URL, topics=[f"{prefix}/r"], max_messages=2, duration_s=10, retained=True)
        rows, _ = _run_with_publisher(src, publish)
        assert sorted(r["v"] for r in rows) == [-1, 1]
        assert [json.loads(r["meta"])["retain"] for r in rows if r["v"] == -1] == [True]
    finally:  # an empty retained payload removes it from the broker
        client.publish(f"{prefix}/r", b"", qos=1, retain=True).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()


def test_a_subscription_ends_after_its_duration(prefix: str) -> None:
    src = MqttSource(url=URL, topics=[f"{prefix}/quiet"], duration_s=0.3)
    start = time.monotonic()
    ctx = StepContext()
    assert [t for p in src.partitions() for t in src.run_partition(p, ctx)] == []
    assert 0.3 <= time.monotonic() - start < 5


def test_unreachable_broker_is_a_source_error_without_the_password() -> None:
    pytest.importorskip("paho.mqtt.client", reason="pip install 'genloom[mqtt]'")
    src = MqttSource(
        url="mqtt://gl:Quiet-pw-5@127.0.0.1:1899", topics=["x"], duration_s=1, retries=1, retry_backoff_s=0.01
    )
    with pytest.raises(SourceError, match="after 1 retries") as err:
        list(src.read(src.partitions()[0]))
    assert "Quiet-pw-5" not in str(err.value) and "gl:***@127.0.0.1:1899" in str(err.value)


def test_a_dropped_connection_is_reestablished_and_the_session_keeps_the_messages(prefix: str) -> None:
    """A second connection with the same client id makes the broker drop the source's connection
    (session takeover); the source reconnects, subscribes again and gets what was queued."""
    import paho.mqtt.client as mqtt

    cid = f"gl-src-{uuid.uuid4().hex[:8]}"

    def publish(client: Any, hook: _Subscribed) -> None:
        for i in range(10):
            client.publish(f"{prefix}/t", json.dumps({"i": i}), qos=1).wait_for_publish(5)
        time.sleep(0.3)
        intruder = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False
        )
        intruder.connect("127.0.0.1", 1883)
        intruder.loop(timeout=0.2)  # CONNACK: the broker has now dropped the source
        for i in range(10, 20):  # queued in the persistent session while the source is away
            client.publish(f"{prefix}/t", json.dumps({"i": i}), qos=1).wait_for_publish(5)
        intruder.disconnect()
        deadline = time.monotonic() + 10
        while hook.count < 2 and time.monotonic() < deadline:
            time.sleep(0.02)

    src = MqttSource(
        url=URL,
        topics=[f"{prefix}/t"],
        qos=1,
        client_id=cid,
        clean_session=False,
        max_messages=20,
        duration_s=20,
        retry_backoff_s=0.2,
    )
    try:
        rows, rejected = _run_with_publisher(src, publish)
    finally:  # remove the persistent session from the broker
        cleanup = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True
        )
        cleanup.connect("127.0.0.1", 1883)
        cleanup.loop(timeout=0.2)
        cleanup.disconnect()
    assert rejected == []
    assert sorted(r["i"] for r in rows) == list(range(20))
    assert json.loads(rows[-1]["meta"])["reconnects"] >= 1


def test_config_needs_a_bound_and_csv_columns() -> None:
    with pytest.raises(ConfigError, match="must end"):
        MqttSource(topics=["a/#"]).check("sources.0")
    with pytest.raises(ConfigError) as e:
        MqttSource(topics=["a/#"], duration_s=1, payload="csv").check("sources.3")
    assert e.value.path == "sources.3.csv_columns"
    with pytest.raises(ConfigError) as e:
        MqttSource(topics=["a/#"], duration_s=1, clean_session=False).check("sources.3")
    assert e.value.path == "sources.3.client_id"


def test_pipeline_runs_are_new_captures_and_keep_captures_holds_the_last_runs(
    prefix: str, tmp_path: Path
) -> None:
    from genloom.pipeline import Pipeline

    folder = tmp_path / "proj"
    folder.mkdir()
    source = {
        "type": "mqtt",
        "topics": [f"{prefix}/p"],
        "max_messages": 4,
        "duration_s": 20,
        "keep_captures": 2,
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "mqtttest", "sources": [source]}, sort_keys=False))

    def run_with(values: list[int]) -> Any:
        hook = _Subscribed()
        logger = logging.getLogger("genloom.sources.mqtt")
        logger.addHandler(hook)
        logger.setLevel(logging.INFO)

        def publish() -> None:
            if hook.subscribed.wait(10):
                client = _publisher()
                for v in values:
                    client.publish(f"{prefix}/p", json.dumps({"v": v}), qos=1).wait_for_publish(5)
                client.loop_stop()
                client.disconnect()

        thread = threading.Thread(target=publish)
        thread.start()
        try:
            p = Pipeline.from_file(path)
            result = p.run()
        finally:
            thread.join()
            logger.removeHandler(hook)
        ingest = result.stages[0]
        manifest = p.store.read_manifest("ingest", ingest.key)
        values_read = sorted(
            v
            for k in manifest["shards"]
            for v in pq.read_table(Path(p.store.shard_dir("ingest", k)) / "data.parquet")
            .column("v")
            .to_pylist()
        )
        return ingest, manifest["shards"], values_read

    first, shards1, got = run_with([1, 2, 3, 4])
    assert first.status == "ran" and got == [1, 2, 3, 4]
    second, shards2, got = run_with([5, 6, 7, 8])
    assert second.status == "ran" and got == [1, 2, 3, 4, 5, 6, 7, 8]  # a new capture, the old one kept
    assert shards2[0] == shards1[0]  # the first capture's shard is a cache hit
    _, shards3, got = run_with([9, 10, 11, 12])
    assert got == [5, 6, 7, 8, 9, 10, 11, 12] and shards3[0] == shards2[1]  # the last two captures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_broker(conf: Path, port: int) -> Any:
    """A Mosquitto of the test's own (not the machine's shared one), ready on ``port``."""
    import subprocess

    proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the test's broker did not start")


def test_a_broker_restarted_mid_subscription_loses_no_message(tmp_path: Path) -> None:
    """The broker itself stops (SIGTERM: Mosquitto saves its sessions) and starts again on the
    same port mid-subscription: the source reconnects with its persistent session and reads every
    message, those sent before the restart and after it, each once."""
    import shutil
    import signal

    if shutil.which("mosquitto") is None:
        pytest.skip("no mosquitto binary (apt-get install mosquitto)")
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {tmp_path}/\n"
    )
    broker = _start_broker(conf, port)
    restarted: list[Any] = []

    def publish(client: Any, hook: _Subscribed) -> None:
        for i in range(10):
            client.publish("plant/t", json.dumps({"i": i}), qos=1).wait_for_publish(5)
        time.sleep(0.3)
        broker.send_signal(signal.SIGTERM)  # the broker goes down mid-subscription
        broker.wait(10)
        time.sleep(0.5)
        restarted.append(_start_broker(conf, port))
        deadline = time.monotonic() + 15
        while hook.count < 2 and time.monotonic() < deadline:  # the source is back
            time.sleep(0.05)
        again = _publisher(port)  # the first publisher's connection died with the broker
        try:
            for i in range(10, 20):
                again.publish("plant/t", json.dumps({"i": i}), qos=1).wait_for_publish(5)
        finally:
            again.loop_stop()
            again.disconnect()

    src = MqttSource(
        url=f"mqtt://127.0.0.1:{port}",
        topics=["plant/t"],
        qos=1,
        client_id="gl-src-restart",
        clean_session=False,
        max_messages=20,
        duration_s=30,
        retry_backoff_s=0.2,
    )
    try:
        rows, rejected = _run_with_publisher(src, publish, port)
    finally:
        for proc in [broker, *restarted]:
            if proc.poll() is None:
                proc.kill()
    assert rejected == []
    assert sorted(r["i"] for r in rows) == list(range(20))  # none lost, none twice
    assert json.loads(rows[-1]["meta"])["reconnects"] >= 1

"""A real Ray cluster of two nodes on object storage: a head (`ray start --head`) and a second
node (`ray start --address`) with its own temporary folder, started in a mount namespace where the
project folder is an empty tmpfs, so the second node sees none of the driver's files. The data
stages on s3:// (moto's server) give the local executor's Parquet bytes, the second node runs
shards, and the shards that read the project's files run on the driver's node."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genloom.pipeline import Pipeline
from tests.conftest import write_pipeline

pytest.importorskip("ray", reason="ray is not installed: pip install 'genloom[ray]'")
s3mod = pytest.importorskip("tests.core.test_store_s3", reason="needs s3fs and moto's server")
S3, BUCKET = s3mod.S3, s3mod.BUCKET

DATA_STAGES = ("ingest", "clean", "preprocess")


def _pipeline(folder: Path, **extra: Any) -> Path:
    docs = folder / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for i in range(8):  # eight files, one ingest shard each; their paragraphs differ per file
        paras = [
            f"File {i}, paragraph {j}: " + " ".join(f"word{(i * 7 + j * 3 + k) % 97}" for k in range(60))
            for j in range(6)
        ]
        (docs / f"doc{i}.txt").write_text("\n\n".join(paras) + "\n")
    return write_pipeline(
        folder,
        sources=[{"type": "text", "paths": ["docs/*.txt"]}],
        data={"partitions_per_shard": 1},
        **extra,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_bin() -> str:
    import sys

    return str(Path(sys.executable).with_name("ray"))


@contextlib.contextmanager
def _node(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `ray start --block` process; SIGTERM at the end stops the processes it started (and only
    those: `ray stop` would stop every Ray runtime of the machine)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_started(log: Path, timeout: float = 180) -> None:
    """Wait until a `ray start --block` says its node is up (the head's GCS answers then)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise AssertionError(f"ray start did not come up in {timeout} s: {log.read_text()[-2000:]}")


def _wait_nodes(address: str, n: int, timeout: float = 120) -> dict[str, str]:
    """Connect this process to the cluster; {role: node id} once ``n`` nodes are alive."""
    import ray

    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [x for x in ray.nodes() if x["Alive"]]
        if len(alive) >= n:
            return {("worker" if "second_node" in x["Resources"] else "head"): x["NodeID"] for x in alive}
        time.sleep(0.5)
    raise AssertionError(f"the cluster at {address} did not reach {n} nodes in {timeout} s")


@pytest.mark.slow
@pytest.mark.ray
def test_two_node_cluster_on_s3_gives_the_local_bytes_and_uses_both_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fsspec.config
    import ray

    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("the second node's mount namespace needs unshare and root (as in CI)")
    s3 = S3()
    try:
        monkeypatch.setitem(fsspec.config.conf, "s3", s3.options())
        # token authentication off for the cluster's three processes alike: Ray turns it on when
        # ~/.ray/auth_token exists (a local ray.init() writes one), which another test may have left
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        env = {
            **s3.env(),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # no 30 s drain per node on SIGTERM
        }
        project = tmp_path / "cluster"
        path = _pipeline(project)
        # the reference: the same project with the local executor, into another prefix
        reference = Pipeline.from_file(path, overrides=[f"store.path=s3://{BUCKET}/local"])
        assert reference.run(until="preprocess").status == "succeeded"
        port = _free_port()
        address = f"127.0.0.1:{port}"
        # Ray's socket paths must stay short: temporary folders directly under /tmp
        head_tmp, worker_tmp = tempfile.mkdtemp(prefix="glrh"), tempfile.mkdtemp(prefix="glrw")
        head = [
            _ray_bin(),
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={head_tmp}",
            "--block",
        ]
        worker = [
            "unshare",
            "-m",
            "sh",
            "-c",
            f"mount -t tmpfs none {project} && exec {_ray_bin()} start --address={address} --num-cpus=1"
            f" --resources='{{\"second_node\": 1}}' --temp-dir={worker_tmp} --disable-usage-stats --block",
        ]
        with contextlib.ExitStack() as nodes_up:
            nodes_up.enter_context(_node(head, env, tmp_path / "head.log"))
            _wait_started(tmp_path / "head.log")
            nodes_up.enter_context(_node(worker, env, tmp_path / "worker.log"))
            _wait_started(tmp_path / "worker.log")
            nodes = _wait_nodes(address, 2)
            try:
                messages: list[dict[str, Any]] = []

                class Capture:  # the run's Ray placements arrive as reporter messages
                    def __getattr__(self, name: str) -> Any:
                        return lambda *a, **k: (
                            messages.append({"text": a[0], **k}) if name == "message" else None
                        )

                overrides = [
                    f"store.path=s3://{BUCKET}/cluster",
                    "executor.type=ray",
                    f"executor.address={address}",
                ]
                pipe = Pipeline.from_file(path, overrides=overrides, reporter=Capture())  # type: ignore[arg-type]
                summary = pipe.run(until="preprocess")
                assert summary.status == "succeeded"
            finally:
                ray.shutdown()
        placed = {m["text"].split(":")[0]: m["nodes"] for m in messages if "nodes" in m}
        # the text source reads the project's files: every ingest shard ran on the driver's node
        assert placed["ingest"] == {nodes["head"]: 8}, placed
        # the stages that read the store ran on both nodes
        assert any(stage_nodes.get(nodes["worker"]) for s, stage_nodes in placed.items() if s != "ingest"), (
            placed
        )

        def shards(prefix: str) -> dict[str, list[tuple[str, bytes]]]:
            p = Pipeline.from_file(path, overrides=[f"store.path=s3://{BUCKET}/{prefix}"])
            out = {}
            for plan in p.plan():
                if plan.stage in DATA_STAGES:
                    keys = p.store.read_manifest(plan.stage, plan.key)["shards"]
                    out[plan.stage] = [
                        (k, s3.read(f"{prefix}/shards/{plan.stage}/{k}/data.parquet")) for k in keys
                    ]
            return out

        assert shards("cluster") == shards("local")  # byte-identical Parquet, shard by shard
    finally:
        s3.server.stop()

"""Artifacts on S3-compatible object storage, against moto's S3 server on loopback.

The pipelines here reach the server through fsspec's own configuration (``fsspec.config.conf``
in this process, ``FSSPEC_S3_*`` variables in a ``genloom`` subprocess), which every
``ArtifactStore`` of the run (the driver's and the shard workers') picks up; the store's own
``options`` are tested directly.
"""

from __future__ import annotations

import logging
import os
import pickle
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from genloom.core.errors import GenloomError, MissingDependencyError
from genloom.core.store import ArtifactStore
from genloom.pipeline import Pipeline
from tests.conftest import SMALL_SOURCES, TINY_TRAIN, write_pipeline

pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'genloom[s3]')")
moto_server = pytest.importorskip(
    "moto.server", reason="moto's server is not installed (pip install 'moto[server]')"
)
boto3 = pytest.importorskip("boto3", reason="boto3 (a dependency of moto) is not installed")

BUCKET = "genloom-test"
KEY_ID = "genloom-test-key-id"
DATA_STAGES = ("ingest", "clean", "preprocess")
# two source partitions per shard: 16 ingest shards, so that a kill lands mid-stage
DATA = {"sources": SMALL_SOURCES, "data": {"partitions_per_shard": 2}}
SHARDS = 16
TRAIN = {**TINY_TRAIN, "max_steps": 6, "eval_interval": 3, "checkpoint_interval": 3}
EVALUATE = {"samples": 0, "embeddings": False}


class S3:
    """A moto S3 server on a free loopback port, with one bucket and a random secret."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.secret = "s3-secret-" + secrets.token_hex(16)
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
        )
        self.client.create_bucket(Bucket=BUCKET)

    def options(self) -> dict[str, Any]:
        """The fsspec storage options of an S3 filesystem on this server."""
        return {"endpoint_url": self.endpoint, "key": KEY_ID, "secret": self.secret}

    def env(self) -> dict[str, str]:
        """The environment of a subprocess whose fsspec S3 filesystems use this server."""
        return {
            **os.environ,
            "FSSPEC_S3_ENDPOINT_URL": self.endpoint,
            "FSSPEC_S3_KEY": KEY_ID,
            "FSSPEC_S3_SECRET": self.secret,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def objects(self, prefix: str) -> dict[str, Any]:
        """{key: LastModified} of every object under ``prefix``."""
        out = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            out.update({o["Key"]: o["LastModified"] for o in page.get("Contents", [])})
        return out

    def read(self, key: str) -> bytes:
        """The bytes of one object."""
        body: bytes = self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return body


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """The moto server, for the whole module."""
    server = S3()
    yield server
    server.server.stop()


@pytest.fixture
def s3_conf(s3: S3, monkeypatch: pytest.MonkeyPatch) -> S3:
    """fsspec's S3 filesystems of this process use the moto server."""
    import fsspec.config

    monkeypatch.setitem(fsspec.config.conf, "s3", s3.options())
    return s3


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the data stages on local disk (the model stages do not change their bytes)."""
    folder = write_pipeline(tmp_path_factory.mktemp("local") / "proj", **DATA).parent
    summary = Pipeline.from_file(folder / "pipeline.yaml").run()
    assert summary.status == "succeeded"
    return folder


def data_bytes(folder: Path) -> dict[str, list[tuple[str, bytes]]]:
    """Each data stage's shard keys and Parquet bytes, read through the pipeline's store."""
    p = Pipeline.from_file(folder / "pipeline.yaml")
    out = {}
    for plan in p.plan():
        if plan.stage in DATA_STAGES:
            shards = p.store.read_manifest(plan.stage, plan.key)["shards"]
            out[plan.stage] = [
                (k, p.store.fs.cat_file(f"{p.store.shard_dir(plan.stage, k)}/data.parquet")) for k in shards
            ]
    p.close()
    return out


def assert_no_secret(s3: S3, prefix: str, *files: Path) -> None:
    """The secret is in no object under ``prefix`` and in none of ``files``."""
    keys = s3.objects(prefix)
    assert keys
    leaked = [k for k in keys if s3.secret.encode() in s3.read(k)]
    leaked += [str(f) for f in files if s3.secret.encode() in f.read_bytes()]
    assert not leaked, f"the secret is in {leaked}"


def test_kill9_mid_data_stage_on_s3_resumes_with_the_local_bytes_and_trains(
    s3_conf: S3, local_run: Path, tmp_path: Path
) -> None:
    """Data and model stages on s3://: `genloom run` killed mid-ingest, then resumed, gives the
    local run's shard keys and Parquet bytes and trains; the model is uploaded whole, manifest
    last, and comes back into an empty cache."""
    # killed at the first finished shard; an attempt whose kill landed after the whole ingest
    # (the listing ran late behind the child's writes: the moto server shares this process) is
    # made again under another prefix, at most three times
    for attempt in range(3):
        root = f"a{attempt}"
        folder = write_pipeline(
            tmp_path / f"s3-{attempt}",
            **DATA,
            train=TRAIN,
            evaluate=EVALUATE,
            store={"path": f"s3://{BUCKET}/{root}"},
        ).parent
        proc = subprocess.Popen(
            [sys.executable, "-m", "genloom.cli", "run", "pipeline.yaml"],
            cwd=folder,
            env=s3_conf.env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 60
        done: dict[str, Any] = {}
        while time.time() < deadline and not done and proc.poll() is None:
            done = {
                k: t for k, t in s3_conf.objects(f"{root}/shards/ingest/").items() if k.endswith("/done.json")
            }
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        done = {
            k: t for k, t in s3_conf.objects(f"{root}/shards/ingest/").items() if k.endswith("/done.json")
        }
        if not s3_conf.objects(f"{root}/artifacts/ingest/"):
            break
    assert 1 <= len(done) < SHARDS, f"the kill came too late to test resume ({len(done)} shards done): {err}"
    assert not s3_conf.objects(f"{root}/artifacts/ingest/"), "ingest finished before the kill, three times"
    assert s3_conf.secret not in out + err

    summary = Pipeline.from_file(folder / "pipeline.yaml").run()  # the resumed run
    status = {r.stage: r.status for r in summary.stages}
    assert all(status[s] == "ran" for s in (*DATA_STAGES, "prepare", "train", "evaluate", "register"))
    after = s3_conf.objects(f"{root}/shards/ingest/")
    assert all(after[k] == t for k, t in done.items()), "shards finished before the kill were written again"
    assert not [k for k in s3_conf.objects(f"{root}/") if k.endswith(".tmp")]
    assert data_bytes(folder) == data_bytes(local_run)

    ours = Pipeline.from_file(folder / "pipeline.yaml")
    train_key = next(p.key for p in ours.plan() if p.stage == "train")
    manifest = ours.store.read_manifest("train", train_key)
    assert "model.safetensors" in manifest["files"]
    prefix = f"{root}/artifacts/train/{train_key}/"
    objects = s3_conf.objects(prefix)
    assert {prefix + f for f in [*manifest["files"], "manifest.json"]} == set(objects)
    assert objects[prefix + "manifest.json"] == max(objects.values())  # the last write
    (version,) = ours.catalog.models()
    assert version["metrics"]["steps"] == TRAIN["max_steps"] and version["artifact_key"] == train_key

    # another machine: an empty cache gets the model whole, verified against the manifest
    shutil.rmtree(folder / ".genloom" / "cache")
    model_dir = ours.context().local_artifact("train", train_key)
    assert (model_dir / "model.safetensors").read_bytes() == s3_conf.read(prefix + "model.safetensors")
    assert {r.status for r in ours.run().stages} <= {"cached", "skipped"}
    assert_no_secret(s3_conf, f"{root}/", folder / ".genloom" / "catalog.db")
    ours.close()


def test_checkpoints_are_uploaded_as_saved_and_resume_from_an_empty_cache(s3: S3, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed")
    from genloom.train import checkpoint as ckpt_io

    options = {"endpoint_url": s3.endpoint, "key": SecretStr(KEY_ID), "secret": SecretStr(s3.secret)}
    store = ArtifactStore(f"s3://{BUCKET}/c", options, cache=tmp_path / "cache")
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters())
    out = store.staged_artifact("train", "k")
    for step in (3, 6, 9):
        ckpt_io.save_checkpoint(out, model, opt, step, {"plan": {}})
    deadline = time.time() + 10  # the mirror uploads within a second; keeps what the loop keeps (2)
    remote: set[str] = set()
    while time.time() < deadline and remote != {"step_00000006", "step_00000009"}:
        time.sleep(0.1)
        remote = {
            k.split("/")[-2] for k in s3.objects("c/artifacts/train/k/checkpoints/") if "state.json" in k
        }
    assert remote == {"step_00000006", "step_00000009"}
    pickle.loads(pickle.dumps(store))  # a store with a running mirror still pickles (to workers)
    store.stop_mirrors()

    fresh = ArtifactStore(f"s3://{BUCKET}/c", options, cache=tmp_path / "fresh")  # another machine
    latest = ckpt_io.latest_checkpoint(fresh.staged_artifact("train", "k"))
    assert latest is not None and latest.name == "step_00000009"
    for name in ("model.safetensors", "optimizer.safetensors", "state.json"):
        assert (latest / name).read_bytes() == (out / "checkpoints" / "step_00000009" / name).read_bytes()
    fresh.stop_mirrors()

    # the store's options hold the credentials for the filesystem only
    assert s3.secret not in repr(store) and s3.secret not in repr(options)
    assert_no_secret(s3, "c/")


def test_a_changed_object_fails_verification(s3: S3, tmp_path: Path) -> None:
    options = {"endpoint_url": s3.endpoint, "key": SecretStr(KEY_ID), "secret": SecretStr(s3.secret)}
    store = ArtifactStore(f"s3://{BUCKET}/d", options, cache=tmp_path / "cache")
    out = store.staged_artifact("prepare", "k")
    out.mkdir(parents=True)
    (out / "tokens.bin").write_bytes(b"\x01" * 64)
    store.write_manifest("prepare", "k", {"rows": 1})
    s3.client.put_object(Bucket=BUCKET, Key="d/artifacts/prepare/k/tokens.bin", Body=b"\x02" * 64)
    other = ArtifactStore(f"s3://{BUCKET}/d", options, cache=tmp_path / "other")
    with pytest.raises(GenloomError, match="does not match its manifest"):
        other.staged_artifact("prepare", "k")
    assert not (tmp_path / "other" / "prepare" / "k" / "tokens.bin").exists()


def test_store_options_in_the_pipeline_file_keep_the_secret_out_of_every_object(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``store.options`` with ``${env:...}`` credentials: the run reaches the server through them
    alone, and the secret is in no object, catalog row or dump of the config."""
    from genloom.core.config import StoreConfig

    assert "options" in StoreConfig.model_fields
    monkeypatch.setenv("GENLOOM_TEST_S3_KEY", KEY_ID)
    monkeypatch.setenv("GENLOOM_TEST_S3_SECRET", s3.secret)
    store = {
        "path": f"s3://{BUCKET}/o",
        "options": {
            "endpoint_url": s3.endpoint,
            "key": "${env:GENLOOM_TEST_S3_KEY}",
            "secret": "${env:GENLOOM_TEST_S3_SECRET}",
        },
    }
    folder = write_pipeline(tmp_path / "o", sources=SMALL_SOURCES, store=store).parent
    p = Pipeline.from_file(folder / "pipeline.yaml")
    assert s3.secret not in repr(p.cfg) + p.cfg.model_dump_json() + repr(p.store)
    assert p.run().status == "succeeded"
    assert s3.objects("o/artifacts/preprocess/")
    assert_no_secret(s3, "o/", folder / ".genloom" / "catalog.db")
    p.close()


def test_a_store_whose_filesystem_is_not_installed_says_what_to_install() -> None:
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("gcsfs is installed: gs:// has its filesystem")
    with pytest.raises(MissingDependencyError, match="gs:// is not installed: .*gcsfs"):
        ArtifactStore("gs://bucket/prefix")

"""Reference profiles made at training time: a real pipeline run (a manual source, a tiny GPT
trained for 3 steps; a CSV and a tabular VAE for one epoch) stores the version's profile, with its
family's own part, in the store and the catalog (lineage from the model, the prepared data and the
records) before anyone monitors; the monitor reads it back; a family profile that is not strict
JSON fails the run with nothing registered."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.test_tabular_e2e import write_pipeline as write_table_pipeline
from tests.test_tabular_e2e import write_table

from genloom.core.errors import GenloomError
from genloom.monitor.signals import monitor_pipeline
from genloom.pipeline import Pipeline
from genloom.serve.traffic import RequestLog
from genloom.stages.profile import PROFILE_VERSION, model_profile, profile_key, read_profile

WORDS = ["the", "data", "model", "train", "record", "value", "table", "column", "query", "report"]

CONFIG: dict[str, Any] = {
    "name": "m",
    "sources": [{"type": "manual", "path": "notes.jsonl"}],
    "split": {"val_fraction": 0.2},
    "train": {
        "tokenizer": {"kind": "bpe", "vocab_size": 300},
        "model": {"type": "gpt", "preset": "tiny", "block_size": 32},
        "max_steps": 3,
        "batch_size": 4,
        "eval_interval": 3,
        "eval_tokens": 512,
        "threads": 1,
        "precision": "fp32",
    },
    "evaluate": {"samples": 0, "embeddings": False},
}


def _project(folder: Path, **train: Any) -> Path:
    """A project of 80 notes of 20-40 words; ``train`` overrides entries of the train section."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    with (folder / "notes.jsonl").open("w") as f:
        for _ in range(80):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 40)))
            f.write(json.dumps({"text": words, "author": "a"}) + "\n")
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "train": {**CONFIG["train"], **train}}))
    return path


def _register(summary: Any) -> Any:
    return next(r for r in summary.stages if r.stage == "register")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, Any]]:
    """(the pipeline, the summary of its first run: v1 is the champion)."""
    p = Pipeline.from_file(_project(tmp_path_factory.mktemp("profile") / "p"))
    summary = p.run()
    yield p, summary
    p.close()


def test_run_stores_the_profile_with_its_family_part_and_lineage(text_run):
    p, summary = text_run
    train_key = next(r.key for r in summary.stages if r.stage == "train")
    key = profile_key(train_key)
    assert summary.model["profile"] == key and summary.model["version"] == 1
    reg = _register(summary)
    assert reg.stats["profile"] == key and reg.stats["profile_computed"] is True
    assert p.store.has_artifact("profile", key)
    profile = read_profile(p.store, key)
    assert profile["profile_version"] == PROFILE_VERSION and profile["kind"] == "text"
    assert profile["model"] == {"name": "m", "version": 1, "artifact_key": train_key}
    src = profile["sources"]
    assert src["model"] == train_key and src["prepare"] == next(
        r.key for r in summary.stages if r.stage == "prepare"
    )
    # the family's part: the same training records, in the model's own tokens
    family = profile["family"]
    assert profile["family_missing"] is None and family["kind"] == "text"
    assert family["documents"] == profile["records"] > 0
    assert family["tokens"] == family["sampled_tokens"] > family["documents"]
    top = family["top_tokens"]
    assert 0 < len(top) <= 100 and all(isinstance(t["token"], str) for t in top)
    assert [t["count"] for t in top] == sorted((t["count"] for t in top), reverse=True)
    assert sum(t["count"] for t in top) <= family["tokens"]
    q = family["document_tokens"]["quantiles"]
    assert q["p0"] <= q["p50"] <= q["p100"]
    # in the catalog, made by this run, from the model, its prepared data and its records
    row = p.catalog.artifact(key)
    assert row["stage"] == "profile" and row["kind"] == "profile" and row["run_id"] == summary.run_id
    for parent in (train_key, src["prepare"], src["data"]):
        assert key in p.catalog.children(parent)
    # genloom status: the register stage's stats name it
    stages = p.status()["runs"][0]["stages"]
    assert next(s for s in stages if s["stage"] == "register")["stats"]["profile"] == key


def test_monitor_reads_the_stored_profile(text_run):
    p, summary = text_run
    RequestLog(p.catalog.engine)  # the request tables (no traffic yet)
    now = datetime.now(UTC)
    report = monitor_pipeline(p, now - timedelta(hours=1), now)
    assert report.profile_key == summary.model["profile"] and report.profile_computed is False


def test_second_run_keeps_the_profile(text_run):
    p, summary = text_run
    key = summary.model["profile"]
    stored = read_profile(p.store, key)
    again = p.run()
    reg = _register(again)
    assert reg.status == "cached" and reg.stats["profile"] == key and reg.stats["profile_computed"] is False
    assert read_profile(p.store, key) == stored


def test_versions_without_a_profile_get_one(text_run):
    p, summary = text_run
    key = summary.model["profile"]
    version = p.catalog.model_version("m", 1)
    made_at_train = read_profile(p.store, key)
    folder = p.store.local_path(p.store.artifact_dir("profile", key))
    # a version trained before profiles came with training: the monitor computes it, the
    # family's part read from the prepared artifact in the store
    shutil.rmtree(folder)
    profile, computed = model_profile(p.store, p.catalog, p.cfg.name, version)
    assert computed and profile == made_at_train
    # or the next run's register stage does, for the version it already registered
    shutil.rmtree(folder)
    reg = _register(p.run())
    assert reg.status == "cached" and reg.stats["profile_computed"] is True
    assert read_profile(p.store, key) == made_at_train


def test_a_family_profile_that_is_not_json_fails_the_run(tmp_path, monkeypatch):
    from genloom.models.text_family import TextFamily

    monkeypatch.setattr(TextFamily, "profile", lambda self, prepared_dir: {"mean": float("nan")})
    p = Pipeline.from_file(_project(tmp_path / "p"))
    try:
        with pytest.raises(GenloomError, match="not strict JSON"):
            p.run()
        assert p.catalog.models("m") == []  # nothing registered: the next run tries again
        assert p.catalog.runs("m")[0]["status"] == "failed"
    finally:
        p.close()


def test_table_run_stores_per_column_profiles(tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    write_table(folder / "customers.csv", rows=300)
    p = Pipeline.from_file(write_table_pipeline(folder, "tabular_vae", epochs=1))
    try:
        summary = p.run()
        key = summary.model["profile"]
        assert _register(summary).stats["profile_computed"] is True
        version = p.catalog.model_version(summary.model["name"], summary.model["version"])
        profile, computed = model_profile(p.store, p.catalog, p.cfg.name, version)
        assert not computed and profile == read_profile(p.store, key)
        assert profile["kind"] == "table" and profile["family_missing"] is None
        assert set(profile["columns"]) >= {"age", "balance", "color", "member"}
        family = profile["family"]
        assert family["rows"] == profile["records"]
        age, color = family["columns"]["age"], family["columns"]["color"]
        assert age["quantiles"]["p0"] >= 18 and age["quantiles"]["p100"] < 80
        assert {lv["value"] for lv in color["levels"]} == {"red", "green", "blue"}
        assert sum(lv["count"] for lv in color["levels"]) == profile["records"]
        assert key in p.catalog.children(version["artifact_key"])
    finally:
        p.close()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's S3 server on loopback (tests/core/test_store_s3.py), used by this process's fsspec."""
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'genloom[s3]')")
    pytest.importorskip("moto.server", reason="moto's server is not installed (pip install 'moto[server]')")
    import fsspec.config
    from tests.core.test_store_s3 import S3

    server = S3()
    monkeypatch.setitem(fsspec.config.conf, "s3", server.options())
    yield server
    server.server.stop()


def test_profile_on_an_object_store(tmp_path, s3):
    from tests.core.test_store_s3 import BUCKET

    path = _project(tmp_path / "p")
    cfg = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**cfg, "store": {"path": f"s3://{BUCKET}/a"}}))
    p = Pipeline.from_file(path)
    try:
        summary = p.run()
        key = summary.model["profile"]
        assert f"a/artifacts/profile/{key}/profile.json" in s3.objects(f"a/artifacts/profile/{key}/")
        made_at_train = read_profile(p.store, key)
        assert made_at_train["family"]["kind"] == "text"
        version = p.catalog.model_version("m", 1)
        assert model_profile(p.store, p.catalog, p.cfg.name, version) == (made_at_train, False)
        # computed by the monitor: the family's part from the prepared artifact's cached copy only
        p.store.fs.rm(p.store.artifact_dir("profile", key), recursive=True)
        profile, computed = model_profile(p.store, p.catalog, p.cfg.name, version)
        assert computed and profile["family"] == made_at_train["family"]
        p.store.fs.rm(p.store.artifact_dir("profile", key), recursive=True)
        prepare_key = made_at_train["sources"]["prepare"]
        shutil.rmtree(p.store.local_path(p.store.artifact_dir("prepare", prepare_key)))
        profile, computed = model_profile(p.store, p.catalog, p.cfg.name, version)
        assert (
            computed
            and profile["family"] is None
            and "not in this machine's cache" in profile["family_missing"]
        )
        assert profile["vocabulary"] == made_at_train["vocabulary"]
    finally:
        p.close()


def test_the_embedding_reference_at_training_time(tmp_path: Path) -> None:
    """monitor.embedding_reference: train: the register stage stores the MiniLM reference (sample,
    centroid, bandwidth) with its lineage; the first monitor round reads it instead of computing it."""
    from genloom.stages.embedding_reference import STAGE, reference_key

    path = _project(tmp_path / "p")
    cfg = yaml.safe_load(path.read_text())
    cfg["monitor"] = {"embedding_reference": "train", "skip": ["output_loss"]}
    path.write_text(yaml.safe_dump(cfg))
    p = Pipeline.from_file(path)
    try:
        summary = p.run()
        assert summary.model is not None
        key = reference_key(str(p.catalog.champion("m")["artifact_key"]))
        register = next(r for r in summary.stages if r.stage == "register")
        assert register.stats["embedding_reference"] == key and p.store.has_artifact(STAGE, key)
        meta = json.loads(Path(p.store.artifact_dir(STAGE, key), "reference.json").read_text())
        assert (
            meta["sample"] == meta["records"] and 50 < meta["sample"] < 80
        )  # the training split of 80 notes
        assert len(meta["centroid"]) == 384
        artifact = p.catalog.artifact(key)
        assert artifact is not None and artifact["stage"] == STAGE
        RequestLog(p.catalog.engine)
        end = datetime.now(UTC)
        with p.catalog.engine.begin() as c:
            from sqlalchemy import insert

            from genloom.serve.traffic import requests

            c.execute(
                insert(requests),
                [
                    {
                        "request_id": f"r{i}",
                        "created_at": end - timedelta(minutes=1),
                        "endpoint": "/v1/completions",
                        "model": "m",
                        "version": 1,
                        "latency_s": 0.1,
                        "status": 200,
                        "prompt": f"the data model {i}",
                        "output": "the table column value",
                    }
                    for i in range(60)
                ],
            )
        report = monitor_pipeline(p, end - timedelta(hours=1), end, skip=["output_loss"])
        emb = next(c for c in report.checks if c.signal == "prompt_embedding")
        assert emb.skipped is None and emb.evidence["reference_computed_now"] is False
    finally:
        p.close()

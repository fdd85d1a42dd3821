"""The step families own the loop: stats, drop reasons, quarantine and lineage events."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

import pyarrow as pa

from genloom.core.errors import RecordError
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
            raise ValueError("corrupt")
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
    assert reasons == {"read_error:ValueError", "empty_file"}

"""Exact deduplication on a normalised hash of the text, across the shards of one run (no memory across runs)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import pyarrow as pa

from genloom.core.registry import CLEANERS
from genloom.core.steps import Fitted

_WS = re.compile(r"\s+")


def text_hash(text: str | None, normalize: bool) -> bytes:
    """A 12-byte BLAKE2 digest of the text, after NFKC + casefold + whitespace collapse if asked."""
    t = text or ""
    if normalize:
        t = _WS.sub(" ", unicodedata.normalize("NFKC", t).casefold()).strip()
    return hashlib.blake2b(t.encode("utf-8"), digest_size=12).digest()


@CLEANERS.register("dedup_exact")
class ExactDedup(Fitted):
    """Drop exact duplicates of the text (after Unicode/case/whitespace normalisation by default).

    The first occurrence in input order (shard order, then row order) is kept, so the result is
    deterministic; dropped ids are recorded as ``dropped.duplicate`` in lineage. Memory is 12 bytes
    per distinct text during the fit.
    """

    type: Literal["dedup_exact"] = "dedup_exact"
    column: str = "text"
    normalize: bool = True
    drop_reason: ClassVar[str] = "duplicate"

    def fit(self, tables: Iterable[pa.Table]) -> Any:
        seen: set[bytes] = set()
        drop: list[str] = []
        for table in tables:
            ids = table.column("id").to_pylist()
            for rid, text in zip(ids, table.column(self.column).to_pylist(), strict=True):
                h = text_hash(text, self.normalize)
                if h in seen:
                    drop.append(rid)
                else:
                    seen.add(h)
        return {"drop_ids": sorted(drop)}

    def transform(self, table: pa.Table, state: Any) -> pa.Table:
        drop = state.get("_drop_set")
        if drop is None:
            drop = state["_drop_set"] = set(state["drop_ids"])
        keep = [rid not in drop for rid in table.column("id").to_pylist()]
        return table.filter(pa.array(keep, pa.bool_()))

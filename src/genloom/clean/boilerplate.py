"""Boilerplate removal: lines repeated across many documents (navigation, footers, legal notices)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from genloom.core.registry import CLEANERS
from genloom.core.steps import Fitted

_WS = re.compile(r"\s+")


def line_key(line: str) -> str | None:
    """The hash under which a line is counted (case and whitespace ignored); None for blank lines."""
    norm = _WS.sub(" ", line).strip().casefold()
    if not norm:
        return None
    return hashlib.blake2b(norm.encode("utf-8"), digest_size=8).hexdigest()


@CLEANERS.register("boilerplate")
class BoilerplateClean(Fitted):
    """Remove lines that recur in many documents (menus, footers, "All rights reserved", share buttons).

    The fit counts, for every line of at most ``max_line_chars`` characters, how many documents
    contain it (case and spacing ignored; a line counts once per document). A line found in at
    least ``min_docs`` documents and in at least ``min_fraction`` of all documents is boilerplate,
    and the transform deletes it wherever it occurs. A document left with no text is dropped as
    ``boilerplate_only``. Run it after exact and near-duplicate removal, or copies of one document
    make its lines look like boilerplate. The state lists the boilerplate line hashes and the
    texts of the 50 most frequent ones (the report). Memory: one counter entry per distinct short line.
    """

    type: Literal["boilerplate"] = "boilerplate"
    column: str = "text"
    min_docs: int = Field(default=5, ge=2)
    min_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    max_line_chars: int = 200
    drop_reason: ClassVar[str] = "boilerplate_only"

    def fit(self, tables: Iterable[pa.Table]) -> Any:
        counts: Counter[str] = Counter()
        example: dict[str, str] = {}
        n_docs = 0
        for table in tables:
            for text in table.column(self.column).to_pylist():
                n_docs += 1
                if not text:
                    continue
                keys = set()
                for line in text.splitlines():
                    if len(line) <= self.max_line_chars:
                        k = line_key(line)
                        if k is not None:
                            keys.add(k)
                            example.setdefault(k, line.strip())
                counts.update(keys)
        need = max(self.min_docs, self.min_fraction * n_docs)
        lines = sorted(k for k, c in counts.items() if c >= need)
        top = [{"line": example[k], "documents": c} for k, c in counts.most_common(50) if c >= need]
        return {"lines": lines, "documents": n_docs, "report": top}

    def transform(self, table: pa.Table, state: Any) -> pa.Table:
        bad = set(state["lines"])
        if not bad:
            return table
        col = table.column(self.column).to_pylist()
        out: list[str | None] = []
        keep: list[bool] = []
        for text in col:
            if not text:
                out.append(text)
                keep.append(True)
                continue
            lines = text.splitlines()
            kept = [ln for ln in lines if len(ln) > self.max_line_chars or line_key(ln) not in bad]
            new = "\n".join(kept).strip() if len(kept) < len(lines) else text
            out.append(new)
            keep.append(bool(new))
        i = table.column_names.index(self.column)
        table = table.set_column(i, self.column, pa.array(out, pa.string()))
        return table.filter(pa.array(keep, pa.bool_()))

"""The per-shard fit reads only the step's input column, and the whole shard where it lacks it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pyarrow as pa

from genloom.core.runner import _fit_batches

SHARD = pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"], "meta": ["{}", "{}", "{}"]})


class Store:
    """A store whose one shard is SHARD in batches of two rows; notes the columns asked for."""

    def __init__(self) -> None:
        self.asked: list[list[str] | None] = []

    def iter_batches(self, stage: str, shard: str, columns: list[str] | None = None) -> Any:
        self.asked.append(columns)
        table = SHARD.select([c for c in columns if c in SHARD.column_names]) if columns else SHARD
        for batch in table.to_batches(max_chunksize=2):
            yield pa.Table.from_batches([batch])


def fit_batches(column: Any) -> tuple[list[pa.Table], list[list[str] | None]]:
    store = Store()
    task = SimpleNamespace(stage="clean", shard="s0", step=SimpleNamespace(column=column))
    return list(_fit_batches(store, task)), store.asked  # type: ignore[arg-type]


def test_only_the_steps_column_in_the_same_batches() -> None:
    batches, asked = fit_batches("text")
    assert asked == [["text"]]
    assert [b.column_names for b in batches] == [["text"], ["text"]]
    assert pa.concat_tables(batches).column("text").to_pylist() == ["x", "y", "z"]


def test_every_column_where_the_shard_lacks_it_or_the_step_names_none() -> None:
    batches, asked = fit_batches("body")
    assert asked == [["body"], None]  # the step's own check then names the columns there are
    assert pa.concat_tables(batches).equals(SHARD)
    batches, asked = fit_batches(None)
    assert asked == [None] and pa.concat_tables(batches).equals(SHARD)

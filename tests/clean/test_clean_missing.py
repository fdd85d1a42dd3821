"""missing: drop, global imputation, series fills, empty text, and the fill report."""

from __future__ import annotations

import pyarrow as pa
import pytest

from genloom.clean.missing import MissingValues
from genloom.core.errors import ConfigError
from genloom.core.steps import StepContext


def _table() -> pa.Table:
    return pa.table(
        {
            "id": list("abcdef"),
            "text": ["x", " ", "y", None, "z", "w"],
            "age": [1, None, 3, 4, None, 10],
            "city": ["P", "?", "P", "L", None, "L"],
            "v": [1.0, None, None, 4.0, float("nan"), 6.0],
            "k": [1, 2, None, 4, 5, 6],
        }
    )


def test_missing_impute_drop_and_report() -> None:
    step = MissingValues(columns={"age": "median", "city": "mode", "v": "interpolate", "k": "drop"})
    table = _table()
    state = step.fit([table.slice(0, 3), table.slice(3)])
    assert state["fill"] == {"age": 3.5, "city": "L"}
    assert state["report"]["v"]["missing"] == 3 and state["report"]["text"]["missing"] == 2
    ctx = StepContext()
    out = step.run_fitted(table, state, ctx).to_pydict()
    assert out["id"] == ["a", "e", "f"]  # b and d: empty text, c: k missing
    assert out["age"] == [1.0, 3.5, 10.0]
    assert out["city"] == ["P", "L", "L"]
    assert out["v"] == [1.0, 5.0, 6.0]
    assert ctx.stats["missing"].dropped == {"missing": 3}


def test_missing_series_fills_and_constant() -> None:
    table = _table()
    step = MissingValues(
        columns={"v": "ffill", "age": "bfill", "city": "constant"},
        fill_values={"city": "?"},
        empty_text="fill",
        text_fill="(empty)",
        na_values=[],
    )
    out = step.run_fitted(table, step.fit([table]), StepContext()).to_pydict()
    assert out["v"] == [1.0, 1.0, 1.0, 4.0, 4.0, 6.0]
    assert out["age"] == [1, 3, 3, 4, 10, 10]
    assert out["city"] == ["P", "?", "P", "L", "?", "L"]
    assert out["text"] == ["x", "(empty)", "y", "(empty)", "z", "w"]


def test_missing_constant_needs_value() -> None:
    with pytest.raises(ConfigError):
        MissingValues(columns={"city": "constant"}).check("clean.0")


def test_series_fills_cross_shard_boundaries() -> None:
    """ffill, bfill and interpolate give the same values whether the series is one table or shards."""
    v = [1.0, None, None, None, None, 6.0, None, None, 9.0, None]
    whole = pa.table({"id": [f"r{i}" for i in range(len(v))], "text": ["t"] * len(v), "v": v, "w": v, "z": v})
    step = MissingValues(columns={"v": "ffill", "w": "bfill", "z": "interpolate"})
    expected = step.run_fitted(whole, step.fit([whole]), StepContext()).to_pydict()
    assert expected["z"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 9.0]
    shards = [whole.slice(0, 2), whole.slice(2, 2), whole.slice(4, 3), whole.slice(7, 3)]
    state = step.fit(shards)
    got = [step.run_fitted(t, state, StepContext()).to_pydict() for t in shards]
    for col in ("v", "w", "z"):
        assert [x for g in got for x in g[col]] == expected[col], col

"""combine: mixing shares, schema alignment, cross-dataset dedup and determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genloom.augment.combine import CombineDatasets
from genloom.core.errors import ConfigError
from genloom.core.steps import StepContext


def _main(n: int = 40) -> pa.Table:
    return pa.table(
        {
            "id": [f"m{i}" for i in range(n)],
            "text": [f"main text {i}" for i in range(n)],
            "source": ["main"] * n,
            "meta": ["{}"] * n,
            "label": list(range(n)),
        }
    )


@pytest.fixture()
def files(tmp_path: Path) -> tuple[str, str]:
    jsonl = tmp_path / "reviews.jsonl"
    with open(jsonl, "w") as f:
        for i in range(60):
            f.write(json.dumps({"body": "MAIN  text 3" if i == 0 else f"review {i}", "stars": i % 5}) + "\n")
    parquet = tmp_path / "wiki.parquet"
    pq.write_table(pa.table({"text": [f"wiki {i}" for i in range(10)], "label": [7] * 10}), parquet)
    return str(jsonl), str(parquet)


def test_combine_shares_alignment_dedup(files: tuple[str, str]) -> None:
    jsonl, parquet = files
    step = CombineDatasets(
        weight=2.0,
        datasets=[
            {"path": jsonl, "weight": 1.0, "columns": {"body": "text"}},
            {"path": parquet, "weight": 1.0},
        ],
        seed=5,
    )
    main = _main()
    state = step.fit([main.slice(0, 20), main.slice(20)])
    rep = state["report"]
    assert rep["reviews"] == {"rows": 60, "duplicates": 1, "wanted": 20, "added": 20}
    assert rep["wiki"]["added"] == 10 and rep["wiki"]["wanted"] == 20  # too small, no upsampling
    ctx = StepContext()
    out = pa.concat_tables(
        [step.run_fitted(main.slice(0, 20), state, ctx), step.run_fitted(main.slice(20), state, ctx)]
    )
    assert out.num_rows == 70 and out.schema == main.schema
    rows = out.to_pylist()
    extra = [r for r in rows if r["source"] != "main"]
    assert {r["source"] for r in extra} == {"reviews", "wiki"}
    review = next(r for r in extra if r["source"] == "reviews")
    meta = json.loads(review["meta"])
    assert meta["combined_from"] == "reviews" and "stars" in meta["extra"] and review["label"] is None
    assert all("MAIN" not in r["text"] for r in extra)  # the duplicate of an input record is gone
    assert len({r["id"] for r in rows}) == 70
    assert step.fit([main]) == state


def test_combine_upsamples_with_distinct_ids(files: tuple[str, str]) -> None:
    step = CombineDatasets(datasets=[{"path": files[1], "weight": 1.0}], upsample=True)
    out = step.run_fitted(_main(), step.fit([_main()]), StepContext())
    assert out.num_rows == 80 and len(set(out.column("id").to_pylist())) == 80


def test_combine_checks_paths() -> None:
    with pytest.raises(ConfigError):
        CombineDatasets(datasets=[{"path": "/nonexistent/*.parquet", "weight": 1}]).check("augment.0")

"""Dataset mixing: add rows of other datasets to the pipeline's input in set proportions."""

from __future__ import annotations

import glob
import hashlib
import random
import re
import unicodedata
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from genloom.core.errors import ConfigError
from genloom.core.records import dump_meta, load_meta
from genloom.core.registry import AUGMENTERS
from genloom.core.steps import Fitted

_WS = re.compile(r"\s+")


class MixDataset(BaseModel):
    """One extra dataset: where it is, its weight, and how its columns map to the input's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="a Parquet, JSON Lines or CSV file, or a glob of them")
    weight: float = Field(gt=0.0)
    name: str | None = Field(default=None, description="label in `source` and ids; default the file stem")
    columns: dict[str, str] = Field(default_factory=dict, description="rename: their column -> ours")


def _read(path: str) -> pa.Table:
    files = sorted(glob.glob(path)) or [path]
    tables = []
    for f in files:
        if f.endswith(".parquet"):
            import pyarrow.parquet as pq

            tables.append(pq.read_table(f))
        elif f.endswith((".jsonl", ".json", ".ndjson")):
            import pyarrow.json as pj

            tables.append(pj.read_json(f))
        elif f.endswith((".csv", ".tsv")):
            import pyarrow.csv as pcsv

            opts = pcsv.ParseOptions(delimiter="\t" if f.endswith(".tsv") else ",")
            tables.append(pcsv.read_csv(f, parse_options=opts))
        else:
            raise ConfigError(f"cannot read {f!r}: use .parquet, .jsonl or .csv")
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def _text_key(text: Any) -> bytes:
    t = _WS.sub(" ", unicodedata.normalize("NFKC", str(text or "")).casefold()).strip()
    return hashlib.blake2b(t.encode("utf-8"), digest_size=12).digest()


@AUGMENTERS.register("combine")
class CombineDatasets(Fitted):
    """Mix other datasets into the input with weights: schema alignment, cross-dataset dedup, sampling.

    The pipeline's own records have ``weight`` and are all kept; each of ``datasets`` contributes
    rows so that its share of the output is its weight over the sum of weights (0.7 / 0.3 ->
    30% extra rows). Extra rows are first aligned to the input's columns (``columns`` renames, a
    missing column is null, other columns go into ``meta.extra``, values are cast), then exact
    duplicates (case/space/Unicode-normalised text) of the input or of an earlier dataset are
    removed, then rows are sampled without replacement, or with replacement when a dataset is too
    small and ``upsample`` is on (otherwise its share stays below target; the state's report says
    what was reached). Extra rows get ids ``<name>:<row>``, ``source: <name>`` and
    ``meta.combined_from``; they are not augmentations, so they may go to any split. They are
    spread evenly among the input's records, so each shard carries its part. Deterministic for a ``seed``.
    """

    type: Literal["combine"] = "combine"
    datasets: list[MixDataset]
    weight: float = Field(default=1.0, gt=0.0, description="the weight of the pipeline's own input")
    column: str = "text"
    dedup: bool = True
    upsample: bool = False
    seed: int = 0

    drop_reason: ClassVar[str] = "combine"
    _tables: dict[int, pa.Table] = PrivateAttr(default_factory=dict)

    def check(self, path: str) -> None:
        for i, d in enumerate(self.datasets):
            if not glob.glob(self.resolve_path(d.path)):
                raise ConfigError(f"no file matches {d.path!r}", path=f"{path}.datasets.{i}.path")

    def files_read(self) -> list[str]:
        return [d.path for d in self.datasets]

    def _name(self, i: int) -> str:
        d = self.datasets[i]
        return d.name or re.sub(r"\.[^.]+$", "", d.path.rsplit("/", 1)[-1]).replace("*", "all")

    def _aligned(self, i: int, schema: pa.Schema) -> pa.Table:
        """Dataset ``i`` with the input's columns and types."""
        hit = self._tables.get(i)
        if hit is not None:
            return hit
        raw = _read(self.resolve_path(self.datasets[i].path))
        raw = raw.rename_columns([self.datasets[i].columns.get(c, c) for c in raw.column_names])
        name = self._name(i)
        n = raw.num_rows
        cols: dict[str, pa.Array] = {}
        extra = [c for c in raw.column_names if c not in schema.names]
        extras = raw.select(extra).to_pylist() if extra else [{}] * n
        for f in schema:
            if f.name == "id":
                cols["id"] = pa.array([f"{name}:{k}" for k in range(n)], pa.string())
            elif f.name == "source":
                cols["source"] = pa.array([name] * n, pa.string())
            elif f.name == "meta":
                old = raw.column("meta").to_pylist() if "meta" in raw.column_names else [None] * n
                cols["meta"] = pa.array(
                    [
                        dump_meta(
                            {
                                **(load_meta(m) if isinstance(m, str) else (m or {})),
                                "combined_from": name,
                                **({"extra": e} if e else {}),
                            }
                        )
                        for m, e in zip(old, extras, strict=True)
                    ],
                    pa.string(),
                )
            elif f.name in raw.column_names:
                col = raw.column(f.name)
                cols[f.name] = col if col.type == f.type else pc.cast(col, f.type, safe=False)
            else:
                cols[f.name] = pa.nulls(n, f.type)
        table = pa.table(cols, schema=schema)
        self._tables[i] = table
        return table

    def fit(self, tables: Iterable[pa.Table]) -> Any:
        main_ids: list[str] = []
        seen: set[bytes] = set()
        schema: pa.Schema | None = None
        for t in tables:
            schema = schema or t.schema
            main_ids += t.column("id").to_pylist()
            if self.dedup and self.column in t.column_names:
                seen.update(_text_key(x) for x in t.column(self.column).to_pylist())
        if schema is None or not main_ids:
            return {"attach": {}, "report": {"input": 0}}
        total_w = self.weight + sum(d.weight for d in self.datasets)
        target_total = len(main_ids) * total_w / self.weight
        rng = random.Random(self.seed)
        picks: list[tuple[int, int, int]] = []  # (dataset, row, copy number)
        report: dict[str, Any] = {"input": len(main_ids)}
        for i, d in enumerate(self.datasets):
            table = self._aligned(i, schema)
            rows = list(range(table.num_rows))
            dups = 0
            if self.dedup and self.column in table.column_names:
                keep = []
                for r, x in zip(rows, table.column(self.column).to_pylist(), strict=True):
                    k = _text_key(x)
                    if k in seen:
                        dups += 1
                    else:
                        seen.add(k)
                        keep.append(r)
                rows = keep
            want = round(target_total * d.weight / total_w)
            if want <= len(rows):
                chosen = sorted(rng.sample(rows, want))
            elif self.upsample and rows:
                chosen = sorted(rows + [rng.choice(rows) for _ in range(want - len(rows))])
            else:
                chosen = rows
            copies: dict[int, int] = {}
            for r in chosen:
                copies[r] = copies.get(r, 0) + 1
                picks.append((i, r, copies[r] - 1))
            report[self._name(i)] = {
                "rows": table.num_rows,
                "duplicates": dups,
                "wanted": want,
                "added": len(chosen),
            }
        out_total = len(main_ids) + len(picks)
        report["shares"] = {"input": round(len(main_ids) / out_total, 4)} | {
            self._name(i): round(report[self._name(i)]["added"] / out_total, 4)
            for i in range(len(self.datasets))
        }
        # spread the extra rows evenly after the input's records
        rng.shuffle(picks)
        attach: dict[str, list[list[int]]] = {}
        for k, (i, r, c) in enumerate(picks):
            anchor = main_ids[k * len(main_ids) // len(picks)]
            attach.setdefault(anchor, []).append([i, r, c])
        return {"attach": attach, "report": report}

    def transform(self, table: pa.Table, state: Any) -> pa.Table:
        attach = state["attach"]
        if not attach:
            return table
        parts = [table]
        wanted = [attach[rid] for rid in table.column("id").to_pylist() if rid in attach]
        by_ds: dict[int, list[tuple[int, int]]] = {}
        for pairs in wanted:
            for i, r, c in pairs:
                by_ds.setdefault(i, []).append((r, c))
        for i, rows in sorted(by_ds.items()):
            extra = self._aligned(i, table.schema).take(pa.array([r for r, _ in rows], pa.int64()))
            # copies of one row (upsampling) get distinct ids
            ids = [
                x if c == 0 else f"{x}#{c}"
                for x, (_, c) in zip(extra.column("id").to_pylist(), rows, strict=True)
            ]
            extra = extra.set_column(extra.column_names.index("id"), "id", pa.array(ids, pa.string()))
            parts.append(extra)
        return pa.concat_tables(parts)

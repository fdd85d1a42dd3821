"""prepare: the data stage's records turned into what the model family trains on.

The stage owns the key (the data, the split and what the family says its preparation depends
on), the artifact folder and the manifest; the family (``ModelFamily.prepare``) owns the content:
a tokenizer and token memmaps for text, a fitted data transformer and encoded arrays for tables.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence

import pyarrow as pa

from genloom.core.store import content_key
from genloom.models.base import PrepareInput, family
from genloom.stages.base import (
    RunContext,
    Stage,
    StagePlan,
    StageResult,
    plan_for,
    resolve_data_stage,
    shards_of,
    split_of,
)


class PrepareStage(Stage):
    """Records -> the model family's training data (tokenizer + token memmaps for text)."""

    name = "prepare"
    needs_train = True

    def plan(self, ctx: RunContext, plans: list[StagePlan]) -> StagePlan:
        data_key = plans[-1].key or ""
        fam = family(ctx.cfg.train.model.type)
        ingredients = {
            "stage": "prepare",
            **fam.prepare_key(ctx.cfg.train, ctx.file_digests),
            "split": ctx.cfg.split.key_dict(),
            "input": data_key,
            "version": 1,
        }
        return StagePlan("prepare", content_key(ingredients), [data_key], ingredients)

    def run(self, ctx: RunContext, plan: StagePlan, plans: list[StagePlan], reason: str) -> StageResult:
        assert plan.key is not None
        fam = family(ctx.cfg.train.model.type)
        in_stage, in_shards = shards_of(ctx.store, plan_for(plans, resolve_data_stage(plans, "features")))
        out = ctx.local_artifact("prepare", plan.key)
        if out.exists():
            shutil.rmtree(out)  # a partial, killed prepare: it is one unit, redo it
        out.mkdir(parents=True)
        ctx.reporter.stage_start("prepare", fam.prepare_steps, unit="steps")
        split = ctx.cfg.split

        def batches(columns: Sequence[str] | None) -> Iterator[pa.Table]:
            for s in in_shards:
                present = ctx.store.shard_columns(in_stage, s)
                cols = present if columns is None else [c for c in columns if c in present]
                yield from ctx.store.iter_batches(in_stage, s, columns=cols)

        columns = ctx.store.shard_columns(in_stage, in_shards[0]) if in_shards else []
        inp = PrepareInput(
            batches=batches,
            columns=list(columns),
            split=lambda batch: split_of(batch, split.val_fraction, split.seed, split.test_fraction),
            resolve=ctx.resolve,
            advance=lambda: ctx.reporter.stage_advance("prepare"),
            test=split.test_fraction > 0,
        )
        prepared = fam.prepare(inp, ctx.cfg.train, out)
        ctx.store.write_manifest(
            "prepare",
            plan.key,
            {
                "stage": "prepare",
                "key": plan.key,
                **prepared.manifest,
                "ingredients": plan.ingredients,
                "rows": prepared.rows,
            },
        )
        return StageResult("prepare", "ran", plan.key, reason, 0.0, prepared.rows, prepared.stats)

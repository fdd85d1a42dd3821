"""ingest: every source's partitions read into record shards, one shard per few partitions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from genloom.core.errors import SourceError
from genloom.core.runner import ShardTask, run_shard
from genloom.core.stats import merge_stats
from genloom.core.steps import Source
from genloom.core.store import content_key
from genloom.stages.base import RunContext, Stage, StagePlan, StageResult
from genloom.stages.steps import finish_data_stage, map_shards


@contextlib.contextmanager
def _blame_source(src: Source, index: int) -> Iterator[None]:
    """A SourceError raised while planning (a server down) names the source's config path."""
    try:
        yield
    except SourceError as e:
        if e.path:
            raise
        raise SourceError(str(e), path=f"sources.{index}", component=src.type) from e


class IngestStage(Stage):
    """Sources -> shards. A shard's key hashes its source's config and its partitions' paths and
    fingerprints, so an unchanged file is a cache hit and a renamed one is read again."""

    name = "ingest"

    def plan(self, ctx: RunContext, plans: list[StagePlan]) -> StagePlan:
        shards: list[ShardTask] = []
        fingerprints: dict[str, Any] = {}
        per_shard = ctx.cfg.data.partitions_per_shard
        source_ingredients = ctx.step_ingredients(list(ctx.cfg.sources))
        for i, src in enumerate(ctx.cfg.sources):
            # a source's state (watermarks) belongs to its config: a changed query starts afresh
            state_key = content_key("source-state", source_ingredients[i])
            with _blame_source(src, i):
                src.restore_state(ctx.catalog.source_state(ctx.cfg.name, state_key))
                parts = src.partitions()
                fps = [src.partition_fingerprint(p) for p in parts]
            state = src.state()
            if state is not None and ctx.run_id:  # a run, not explain/status
                ctx.catalog.save_source_state(ctx.cfg.name, state_key, state)
            fingerprints[f"sources.{i}"] = {
                "partitions": {str(p): fp for p, fp in zip(parts, fps, strict=True)}
            }
            step = src.partitions_per_shard or per_shard
            for j in range(0, max(len(parts), 1), step):
                chunk = parts[j : j + step]
                # the partitions themselves (file paths) are part of the key: two files with
                # equal content and mtime are two shards, and a renamed file is read again
                named = [[str(p), fp] for p, fp in zip(chunk, fps[j : j + step], strict=True)]
                shards.append(
                    ShardTask(
                        store_root=ctx.store.root,
                        store_options=ctx.store.options,
                        stage="ingest",
                        shard_key=content_key("ingest", 2, source_ingredients[i], named),
                        source=src,
                        partitions=tuple(chunk),
                        label={"source": f"sources.{i}", "first": str(chunk[0]) if chunk else ""},
                        step_paths=(f"sources.{i}",),
                        on_driver=src.local_only(),
                    )
                )
        ingredients = {"stage": "ingest", "sources": source_ingredients, "fingerprints": fingerprints}
        key = content_key("ingest", [t.shard_key for t in shards])
        return StagePlan("ingest", key, [], ingredients, shards=shards)

    def run(self, ctx: RunContext, plan: StagePlan, plans: list[StagePlan], reason: str) -> StageResult:
        assert plan.key is not None
        force = plan.stage in ctx.forced
        outputs = map_shards(ctx, plan.stage, [replace(t, force=force) for t in plan.shards], run_shard)
        return finish_data_stage(ctx, plan, outputs, merge_stats([o["stats"] for o in outputs]), None, reason)

"""augment, clean, preprocess, features: a stage's step list run over the previous stage's shards.

A ``Fitted`` step splits the list into segments: the steps before it run per shard, its ``fit``
streams over their output (the state is its own artifact under ``states/``), then its
``transform`` and the following steps run per shard. A fitted step whose state adds up over
shards (it has ``fit_shard`` and ``merge_fits``, as the text vectorizers do) is fitted by the
executor instead, one task per input shard, and the partial counts are merged in shard order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from genloom.core.errors import StageError
from genloom.core.runner import FitShardTask, ShardTask, check_unique_ids, run_fit_shard, run_shard
from genloom.core.stats import merge_stats
from genloom.core.steps import Fitted, Step
from genloom.core.store import content_key
from genloom.stages.base import (
    STEP_LISTS,
    RunContext,
    Stage,
    StagePlan,
    StageResult,
    plan_for,
    previous_data_stage,
    shards_of,
)


class StepsStage(Stage):
    """A data stage made of the config's step list of the same name (``clean:`` for clean...)."""

    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]

    def plan(self, ctx: RunContext, plans: list[StagePlan]) -> StagePlan:
        prev = plans[-1]
        steps: list[Step] = list(getattr(ctx.cfg, STEP_LISTS[self.name]))
        if not steps:
            return StagePlan(self.name, prev.key, [prev.key] if prev.key else [], {}, passthrough=True)
        step_ingredients = ctx.step_ingredients(steps)
        for i, step in enumerate(steps):
            if isinstance(step, Fitted):
                digest = step.shared_state_digest(fit_tag(self.name, i, step_ingredients, prev.key))
                if digest:
                    step_ingredients[i]["shared_state"] = digest
        ingredients = {"stage": self.name, "steps": step_ingredients, "input": prev.key}
        return StagePlan(self.name, content_key(ingredients), [prev.key or ""], ingredients)

    def run(self, ctx: RunContext, plan: StagePlan, plans: list[StagePlan], reason: str) -> StageResult:
        assert plan.key is not None
        force = plan.stage in ctx.forced
        in_stage, in_shards = shards_of(ctx.store, plan_for(plans, previous_data_stage(plans, plan.stage)))
        rows_in = sum(ctx.store.shard_done(in_stage, s)["rows"] for s in in_shards)  # type: ignore[index]
        steps: list[Step] = list(getattr(ctx.cfg, STEP_LISTS[plan.stage]))
        step_ingredients = plan.ingredients["steps"]
        list_name = STEP_LISTS[plan.stage]
        stats: dict[str, Any] = {}
        outputs: list[dict[str, Any]] = []
        cur_stage, cur_shards = in_stage, in_shards
        for seg_index, (fitted_at, per_record) in enumerate(segments(steps)):
            fitted = steps[fitted_at] if fitted_at is not None else None
            indices = ([fitted_at] if fitted_at is not None else []) + per_record
            seg_cfg = [step_ingredients[i] for i in indices]
            state_key, state_dir = "", None
            if fitted_at is not None:
                assert isinstance(fitted, Fitted)
                state_key = content_key(plan.stage, seg_index, seg_cfg[0], cur_shards)
                tag = fit_tag(plan.stage, fitted_at, step_ingredients, plan.ingredients["input"])
                state_dir = fit_state(ctx, plan.stage, state_key, fitted, cur_stage, cur_shards, force, tag)
            tasks = [
                ShardTask(
                    store_root=ctx.store.root,
                    store_options=ctx.store.options,
                    stage=plan.stage,
                    shard_key=content_key(plan.stage, seg_index, seg_cfg, state_key, s),
                    steps=tuple(steps[i] for i in per_record),
                    input_stage=cur_stage,
                    input_shard=s,
                    fitted=fitted if isinstance(fitted, Fitted) else None,
                    state_dir=state_dir,
                    force=force,
                    step_paths=tuple(f"{list_name}.{i}" for i in indices),
                )
                for s in cur_shards
            ]
            outputs = map_shards(ctx, plan.stage, tasks, run_shard)
            stats.update(merge_stats([o["stats"] for o in outputs]))
            cur_stage, cur_shards = plan.stage, [t.shard_key for t in tasks]
        return finish_data_stage(ctx, plan, outputs, stats, rows_in, reason)


def finish_data_stage(
    ctx: RunContext,
    plan: StagePlan,
    outputs: list[dict[str, Any]],
    stats: dict[str, Any],
    rows_in: int | None,
    reason: str,
) -> StageResult:
    """Check the stage's output (unique ids, drops), then write its manifest: the stage is done."""
    assert plan.key is not None
    rows = sum(o["rows"] for o in outputs)
    check_unique_ids(ctx.store, plan.stage, [o["shard_key"] for o in outputs])
    check_drops(ctx, plan.stage, rows_in, rows)
    rejected = sum(o["rejected"] for o in outputs)
    manifest = {
        "stage": plan.stage,
        "key": plan.key,
        "shards": [o["shard_key"] for o in outputs],
        "rows": rows,
        "rejected": rejected,
        "stats": stats,
        "ingredients": plan.ingredients,
    }
    ctx.store.write_manifest(plan.stage, plan.key, manifest)
    stats_out = {"steps": stats, "rejected": rejected, "rows_in": rows_in}
    return StageResult(plan.stage, "ran", plan.key, reason, 0.0, rows, stats_out)


def map_shards(
    ctx: RunContext, stage: str, tasks: list[ShardTask], fn: Callable[[ShardTask], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Run ``fn`` over the shard tasks with the executor, reporting progress."""
    ctx.reporter.stage_start(stage, len(tasks))

    def on_result(_i: int, out: dict[str, Any]) -> None:
        ctx.reporter.stage_advance(stage, 1, out["rows"])

    outputs = ctx.executor.map(fn, tasks, on_result)
    placements = getattr(ctx.executor, "placements", None)
    if placements:  # a Ray executor: where the shards ran
        ctx.reporter.message(
            f"{stage}: {sum(placements.values())} shards on {len(placements)} Ray node(s)",
            nodes=dict(placements),
        )
    return outputs


def fit_state(
    ctx: RunContext,
    stage: str,
    key: str,
    step: Fitted,
    in_stage: str,
    in_shards: list[str],
    force: bool,
    tag: str,
) -> str:
    """Fit ``step`` on the input shards unless its state is done; publish it; return its folder."""
    store = ctx.store
    state_dir = f"{store.base}/states/{stage}/{key}"
    marker = f"{state_dir}/done"
    if force or not store.fs.exists(marker):
        ctx.reporter.message(f"{stage}: fitting {step.name} on {len(in_shards)} shards")
        store.fs.makedirs(state_dir, exist_ok=True)
        if callable(getattr(step, "fit_shard", None)) and callable(getattr(step, "merge_fits", None)):
            # a fit whose counts add up: each shard counted by the executor, merged in shard order
            jobs = [FitShardTask(store.root, in_stage, s, step, state_dir, store.options) for s in in_shards]
            state = step.merge_fits(ctx.executor.map(run_fit_shard, jobs))  # type: ignore[attr-defined]
        else:
            step.ensure_setup()
            state = step.fit(b for s in in_shards for b in store.iter_batches(in_stage, s))
        step.save_state(state, state_dir, store.fs)
        with store.fs.open(marker, "w") as f:
            f.write("ok")
    step.commit_state(state_dir, store.fs, tag)  # idempotent: also after a kill right here
    return state_dir


def check_drops(ctx: RunContext, stage: str, rows_in: int | None, rows_out: int) -> None:
    """Fail a stage that produced nothing or dropped more than ``data.max_drop_fraction``."""
    if not rows_in:
        if stage == "ingest" and rows_out == 0:
            raise StageError(
                "ingest produced no records: check the sources' paths and the rejected table "
                "(genloom rejected)"
            )
        return
    if rows_out == 0:
        raise StageError(f"{stage} dropped every record ({rows_in} in, 0 out): check its steps' thresholds")
    dropped = 1 - rows_out / rows_in
    if dropped > ctx.cfg.data.max_drop_fraction:
        raise StageError(
            f"{stage} dropped {dropped:.1%} of its records, more than "
            f"data.max_drop_fraction={ctx.cfg.data.max_drop_fraction}"
        )


def fit_tag(stage: str, index: int, step_ingredients: list[dict[str, Any]], input_key: str | None) -> str:
    """The identity of a fit: its stage, place, the configs up to it and its input, without
    what fits keep across runs (so it is the same before and after it commits)."""
    upto = [{k: v for k, v in s.items() if k != "shared_state"} for s in step_ingredients[: index + 1]]
    return content_key(stage, index, upto, input_key)


def segments(steps: list[Step]) -> list[tuple[int | None, list[int]]]:
    """Split a step list at Fitted steps, as indices: [(fitted or None, per-record steps after it)]."""
    segs: list[tuple[int | None, list[int]]] = [(None, [])]
    for i, s in enumerate(steps):
        if isinstance(s, Fitted):
            segs.append((i, []))
        else:
            segs[-1][1].append(i)
    return [seg for i, seg in enumerate(segs) if i > 0 or seg[1]]

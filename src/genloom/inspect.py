"""The queries over a pipeline's plan, store and catalog: explain, status, lineage, rejected.

Each returns a typed result (TypedDicts, so they are plain JSON-able data) that the CLI prints and a
dashboard can serve. They read; they never run a stage.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

import pyarrow as pa
import pyarrow.compute as pc

from genloom.core.errors import NotFoundError
from genloom.stages.base import (
    DATA_STAGES,
    MODEL_STAGES,
    RunContext,
    StagePlan,
    plan_for,
    shards_of,
    split_of,
)


class ExplainRow(TypedDict):
    """One stage in ``explain``: what it will do and why."""

    stage: str
    status: str  # cached | run | skipped
    key: str | None
    reason: str


class StatusReport(TypedDict):
    """Recent runs with their stages, and the registered model versions."""

    runs: list[dict[str, Any]]
    models: list[dict[str, Any]]


class LineageStage(TypedDict):
    """What one data stage did to a record."""

    stage: str
    artifact: str
    events: list[str]
    present: bool


class Lineage(TypedDict, total=False):
    """Where a record came from, what touched it, and what it reached."""

    id: str
    source: dict[str, Any]
    stages: list[LineageStage]
    split: str
    artifacts: list[dict[str, str]]
    models: list[dict[str, Any]]


def explain(ctx: RunContext, plans: list[StagePlan], cached: dict[str, bool]) -> list[ExplainRow]:
    """For each stage: cached or will run, and which input or config change causes it."""
    out: list[ExplainRow] = []
    for plan in plans:
        if plan.key is None or plan.passthrough:
            status, why = "skipped", "no steps" if plan.passthrough else "not configured"
        elif plan.stage == "register":
            status, why = "run", "always (registers the model version, promotes if better)"
        elif cached[plan.stage]:
            status, why = "cached", "artifact exists"
        else:
            status, why = "run", ctx.why(plan)
        out.append({"stage": plan.stage, "status": status, "key": plan.key, "reason": why})
    return out


def status(ctx: RunContext, limit: int = 5) -> StatusReport:
    """Recent runs with their stages, and the registered model versions."""
    runs = ctx.catalog.runs(ctx.cfg.name, limit=limit)
    for r in runs:
        r["stages"] = ctx.catalog.stage_runs(r["id"])
    return {"runs": runs, "models": ctx.catalog.models(ctx.model_name)}


def rejected(ctx: RunContext, plans: list[StagePlan], stage: str = "ingest") -> pa.Table:
    """The quarantine table of a finished data stage of the current plan."""
    in_stage, shards = shards_of(ctx.store, plan_for(plans, stage))
    tables = [ctx.store.read_shard(in_stage, s, "rejected") for s in shards]
    return pa.concat_tables(tables) if tables else pa.table({})


def lineage(ctx: RunContext, plans: list[StagePlan], record_id: str) -> Lineage:
    """Where a record came from, the steps that touched it, and the artifacts and models it reached."""
    store = ctx.store
    found: Lineage = {"id": record_id, "stages": [], "artifacts": [], "models": []}
    alive = False
    for plan in plans:
        if plan.stage not in DATA_STAGES or plan.passthrough or plan.key is None:
            continue
        if not store.has_artifact(plan.stage, plan.key):
            break
        entry: LineageStage = {"stage": plan.stage, "artifact": plan.key, "events": [], "present": False}
        for s in store.read_manifest(plan.stage, plan.key)["shards"]:
            events = store.read_shard(plan.stage, s, "events")
            hits = events.filter(pc.equal(events.column("id"), record_id))
            entry["events"] += [f"{e['step']}: {e['event']}" for e in hits.to_pylist()]
            data = store.read_shard(plan.stage, s, "data", columns=["id", "source", "meta"])
            rows = data.filter(pc.equal(data.column("id"), record_id)).to_pylist()
            if rows:
                entry["present"] = True
                if plan.stage == "ingest":
                    found["source"] = {
                        "source": rows[0]["source"],
                        "meta": json.loads(rows[0]["meta"] or "{}"),
                    }
            rej = store.read_shard(plan.stage, s, "rejected")
            for r in rej.filter(pc.equal(rej.column("id"), record_id)).to_pylist():
                entry["events"].append(f"{r['step']}: rejected:{r['reason']} {r['detail']}".strip())
        found["stages"].append(entry)
        alive = entry["present"]
        found["artifacts"].append({"stage": plan.stage, "key": plan.key})
    if not found["stages"] or not any(e["present"] or e["events"] for e in found["stages"]):
        raise NotFoundError(f"record {record_id!r} is in no artifact of the current plan")
    if alive:
        split = ctx.cfg.split
        found["split"] = split_of(
            pa.table({"id": [record_id], "meta": ["{}"]}), split.val_fraction, split.seed
        )[0]
        for plan in plans:
            done = plan.key is not None and store.has_artifact(plan.stage, plan.key)
            if plan.stage in MODEL_STAGES and plan.stage != "register" and done:
                found["artifacts"].append({"stage": plan.stage, "key": plan.key or ""})
        train_key = plan_for(plans, "train").key
        if train_key:
            found["models"] = [
                {"name": m["name"], "version": m["version"], "stage": m["stage"]}
                for m in ctx.catalog.models(ctx.model_name)
                if m["artifact_key"] == train_key
            ]
    return found

"""evaluate: the trained model on the held-out split, its gates, and the HTML report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genloom.core.store import content_key
from genloom.evaluate.gates import check_gates
from genloom.models.base import family
from genloom.stages.base import (
    DATA_STAGES,
    RunContext,
    Stage,
    StagePlan,
    StageResult,
    plan_for,
    round_metrics,
)


class EvaluateStage(Stage):
    """Model + prepared validation data -> the family's metrics (each with its direction) and gate results."""

    name = "evaluate"
    needs_train = True

    def plan(self, ctx: RunContext, plans: list[StagePlan]) -> StagePlan:
        model, data = plan_for(plans, "train").key or "", plan_for(plans, "prepare").key or ""
        ingredients = {
            "stage": "evaluate",
            "evaluate": ctx.cfg.evaluate.model_dump(mode="json"),
            "model": model,
            "data": data,
            "version": 1,
        }
        return StagePlan("evaluate", content_key(ingredients), [model, data], ingredients)

    def run(self, ctx: RunContext, plan: StagePlan, plans: list[StagePlan], reason: str) -> StageResult:
        assert plan.key is not None
        model_dir = ctx.local_artifact("train", plan_for(plans, "train").key)
        prepared = ctx.local_artifact("prepare", plan_for(plans, "prepare").key)
        ctx.reporter.stage_start("evaluate", 1, unit="steps")
        scored = family(ctx.cfg.train.model.type).evaluate(model_dir, prepared, ctx.cfg.evaluate)
        ctx.reporter.stage_advance("evaluate")
        metrics = {k: m.value for k, m in scored.items()}
        directions = {k: m.direction for k, m in scored.items() if m.direction is not None}
        gates = check_gates(metrics, ctx.cfg.evaluate.gates)
        out = ctx.local_artifact("evaluate", plan.key)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(
            json.dumps({"metrics": metrics, "directions": directions, "gates": gates}, indent=1)
        )
        write_report(ctx, out, plans, metrics, gates, model_dir)
        ctx.store.write_manifest(
            "evaluate",
            plan.key,
            {
                "stage": "evaluate",
                "key": plan.key,
                "metrics": metrics,
                "directions": directions,
                "gates": gates,
                "ingredients": plan.ingredients,
            },
        )
        return StageResult(
            "evaluate", "ran", plan.key, reason, 0.0, None, {**round_metrics(metrics), "gates": gates}
        )


def write_report(
    ctx: RunContext,
    out: Path,
    plans: list[StagePlan],
    metrics: dict[str, Any],
    gates: dict[str, Any],
    model_dir: Path,
) -> None:
    """The self-contained HTML report: metrics, gates, the loss curve, the data stages."""
    from genloom.evaluate.report import write_report as write_html

    stages = []
    for p in plans:
        if p.stage in DATA_STAGES and not p.passthrough and p.key and ctx.store.has_artifact(p.stage, p.key):
            m = ctx.store.read_manifest(p.stage, p.key)
            dropped = sum(sum(s.get("dropped", {}).values()) for s in m.get("stats", {}).values())
            stages.append(
                {
                    "stage": p.stage,
                    "rows": m["rows"],
                    "dropped": dropped,
                    "rejected": m.get("rejected", 0),
                    "steps": ", ".join(m.get("stats", {})),
                    "key": p.key[:12],
                }
            )
    states = sorted((model_dir / "checkpoints").glob("step_*/state.json"))
    history = json.loads(states[-1].read_text()).get("history", []) if states else []
    write_html(out / "report.html", f"{ctx.cfg.name}: evaluation", metrics, gates, history, stages)

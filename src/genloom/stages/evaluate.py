"""evaluate: the trained model on the held-out split, the champion on the same data, the gates,
and the HTML report.

The held-out split is test when the prepared data has one (``split.test_fraction`` > 0), else
validation; ``metrics.json`` says which. The champion is scored by its own family on the same
split, so relative gates (``max_vs_champion``...) and the report compare like with like; the key
holds the champion's artifact key, so a new champion means a new evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genloom.core.store import content_key
from genloom.evaluate.gates import check_gates
from genloom.evaluate.heldout import evaluation_split, evaluation_view
from genloom.models.base import ModelFamily, family, family_of
from genloom.stages.base import (
    DATA_STAGES,
    RunContext,
    Stage,
    StagePlan,
    StageResult,
    plan_for,
    round_metrics,
)

#: generated records the report shows (texts; rows of a table)
SAMPLE_TEXTS = 12
SAMPLE_ROWS = 500
#: held-out texts the report reads (the length histogram, the random real samples)
REAL_TEXTS = 2_000
SAMPLE_SEED = 0


class EvaluateStage(Stage):
    """Model + prepared held-out data -> the family's metrics (each with its direction), the
    champion's on the same data, the gate results, and ``report.html``."""

    name = "evaluate"
    needs_train = True

    def plan(self, ctx: RunContext, plans: list[StagePlan]) -> StagePlan:
        model, data = plan_for(plans, "train").key or "", plan_for(plans, "prepare").key or ""
        ingredients: dict[str, Any] = {
            "stage": "evaluate",
            "evaluate": ctx.cfg.evaluate.key_dict(),
            "model": model,
            "data": data,
            "version": 2,
        }
        champion = champion_key(ctx, ingredients)
        if champion:
            ingredients["champion"] = champion
        return StagePlan("evaluate", content_key(ingredients), [model, data], ingredients)

    def run(self, ctx: RunContext, plan: StagePlan, plans: list[StagePlan], reason: str) -> StageResult:
        assert plan.key is not None
        model_dir = ctx.local_artifact("train", plan_for(plans, "train").key)
        prepared = ctx.local_artifact("prepare", plan_for(plans, "prepare").key)
        fam = family(ctx.cfg.train.model.type)
        champion = champion_version(ctx, plan.ingredients.get("champion"))
        ctx.reporter.stage_start("evaluate", 3 if champion else 2, unit="steps")
        split = evaluation_split(prepared)
        with evaluation_view(prepared) as view:
            scored = fam.evaluate(model_dir, view, ctx.cfg.evaluate)
            ctx.reporter.stage_advance("evaluate")
            theirs: dict[str, Any] | None = None
            if champion is not None:
                uri = Path(champion["uri"])
                their_scores = family_of(uri).evaluate_champion(uri, view, ctx.cfg.evaluate)
                theirs = {k: m.value for k, m in their_scores.items()}
                ctx.reporter.stage_advance("evaluate")
            metrics = {k: m.value for k, m in scored.items()}
            directions = {k: m.direction for k, m in scored.items() if m.direction is not None}
            gates = check_gates(metrics, ctx.cfg.evaluate.gates, theirs)
            out = ctx.local_artifact("evaluate", plan.key)
            out.mkdir(parents=True, exist_ok=True)
            champion_entry = (
                {"version": champion["version"], "key": champion["artifact_key"], "metrics": theirs}
                if champion is not None
                else None
            )
            result = {
                "split": split,
                "metrics": metrics,
                "directions": directions,
                "gates": gates,
                "champion": champion_entry,
            }
            (out / "metrics.json").write_text(json.dumps(result, indent=1, default=str))
            write_report(ctx, out, plans, result, fam, model_dir, view)
            ctx.reporter.stage_advance("evaluate")
        ctx.store.write_manifest(
            "evaluate",
            plan.key,
            {"stage": "evaluate", "key": plan.key, **result, "ingredients": plan.ingredients},
        )
        stats = {**round_metrics(metrics), "split": split, "gates": gates}
        return StageResult("evaluate", "ran", plan.key, reason, 0.0, None, stats)


def champion_key(ctx: RunContext, ingredients: dict[str, Any]) -> str | None:
    """The artifact key of the champion this model is evaluated against (None: no champion, or
    the model is the champion). Once a model has been promoted it is its own champion: its
    evaluation stays the one made against the champion it replaced (the latest evaluation of the
    same model, data and settings), so a rerun is a cache hit."""
    champ = ctx.catalog.champion(ctx.model_name)
    if champ is None:
        return None
    if champ["artifact_key"] != ingredients["model"]:
        return str(champ["artifact_key"])
    previous = ctx.catalog.latest_artifact(ctx.cfg.name, "evaluate")
    before = (previous or {}).get("ingredients") or {}
    same = all(before.get(k) == ingredients[k] for k in ("evaluate", "model", "data", "version"))
    return str(before["champion"]) if same and before.get("champion") else None


def champion_version(ctx: RunContext, key: str | None) -> dict[str, Any] | None:
    """The registered version whose model artifact is ``key``."""
    if not key:
        return None
    return next((m for m in ctx.catalog.models(ctx.model_name) if m["artifact_key"] == key), None)


def data_funnel(ctx: RunContext, plans: list[StagePlan]) -> list[dict[str, Any]]:
    """Per data stage and step: rows in and out, dropped and quarantined by reason (the manifests' stats)."""
    rows: list[dict[str, Any]] = []
    for p in plans:
        if (
            p.stage not in DATA_STAGES
            or p.passthrough
            or not p.key
            or not ctx.store.has_artifact(p.stage, p.key)
        ):
            continue
        m = ctx.store.read_manifest(p.stage, p.key)
        steps = m.get("stats", {}) or {}
        rows.append(
            {
                "stage": p.stage,
                "step": "",
                "rows_in": None,
                "rows_out": m.get("rows"),
                "dropped": sum(sum((s.get("dropped") or {}).values()) for s in steps.values()),
                "quarantined": m.get("rejected", 0),
                "reasons": {},
            }
        )
        for name, s in steps.items():
            rows.append(
                {
                    "stage": p.stage,
                    "step": name,
                    "rows_in": s.get("rows_in"),
                    "rows_out": s.get("rows_out"),
                    "dropped": sum((s.get("dropped") or {}).values()),
                    "quarantined": s.get("rejected", 0),
                    "reasons": dict(s.get("dropped") or {}),
                }
            )
    return rows


def write_report(
    ctx: RunContext,
    out: Path,
    plans: list[StagePlan],
    result: dict[str, Any],
    fam: ModelFamily,
    model_dir: Path,
    view: Path,
) -> None:
    """The self-contained HTML report of this evaluation (``report.html`` beside ``metrics.json``)."""
    from genloom.evaluate.report import ReportData
    from genloom.evaluate.report import write_report as write_html

    states = sorted((model_dir / "checkpoints").glob("step_*/state.json"))
    history = json.loads(states[-1].read_text()).get("history", []) if states else []
    prepare = plan_for(plans, "prepare")
    prepared_manifest = ctx.store.read_manifest("prepare", prepare.key or "") if prepare.key else {}
    data = ReportData(
        title=f"{ctx.cfg.name}: evaluation",
        config=ctx.cfg.model_dump(mode="json", by_alias=True),
        split=result["split"],
        metrics=result["metrics"],
        directions=result["directions"],
        gates=result["gates"],
        champion=result["champion"],
        history=history,
        funnel=data_funnel(ctx, plans),
        prepared=prepared_manifest,
        model_type=ctx.cfg.train.model.type,
    )
    if fam.generates_text:
        import pyarrow.parquet as pq

        data.real_texts = []  # the first REAL_TEXTS held-out texts: a sample, never the whole split
        for batch in pq.ParquetFile(view / "val_texts.parquet").iter_batches(
            batch_size=1024, columns=["text"]
        ):
            data.real_texts += batch.column(0).to_pylist()[: REAL_TEXTS - len(data.real_texts)]
            if len(data.real_texts) >= REAL_TEXTS:
                break
        generated = fam.sample(model_dir, SAMPLE_TEXTS, seed=SAMPLE_SEED, max_new_tokens=120)
        data.generated_texts = generated.column("text").to_pylist()
    elif (view / "val.parquet").exists():
        import pyarrow as pa
        import pyarrow.parquet as pq

        first = next(pq.ParquetFile(view / "val.parquet").iter_batches(batch_size=SAMPLE_ROWS), None)
        if first is not None and first.num_rows:
            data.real_rows = pa.Table.from_batches([first])
            data.generated_rows = fam.sample(model_dir, first.num_rows, seed=SAMPLE_SEED)
    write_html(out / "report.html", data)

"""train: the one training loop over the prepared data, for any family; resumes from its last checkpoint."""

from __future__ import annotations

import shutil
from typing import Any

from genloom.core.store import content_key
from genloom.models.base import family
from genloom.stages.base import RunContext, Stage, StagePlan, StageResult, plan_for, round_metrics


class TrainStage(Stage):
    """Prepared data -> a model folder (weights, resolved config, the family's files such as the
    tokenizer or the data transformer, checkpoints)."""

    name = "train"
    needs_train = True

    def plan(self, ctx: RunContext, plans: list[StagePlan]) -> StagePlan:
        prepared = plan_for(plans, "prepare").key or ""
        ingredients: dict[str, Any] = {
            "stage": "train",
            "train": ctx.cfg.train.model_dump(mode="json"),
            "input": prepared,
        }
        path = getattr(ctx.cfg.train.model, "path", None)
        if isinstance(path, str):  # a pretrained base model: its weights are part of the key
            ingredients["base_model_files"] = ctx.file_digests([path])
        return StagePlan("train", content_key(ingredients), [prepared], ingredients)

    def run(self, ctx: RunContext, plan: StagePlan, plans: list[StagePlan], reason: str) -> StageResult:
        from genloom.train.loop import train_prepared

        assert plan.key is not None
        prepared = ctx.local_artifact("prepare", plan_for(plans, "prepare").key)
        out = ctx.local_artifact("train", plan.key)
        if "train" in ctx.forced and out.exists():  # forced: from nothing, not the last checkpoint
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        for name in family(ctx.cfg.train.model.type).model_files:  # what the model folder needs of the data
            shutil.copy(prepared / name, out / name)
        ctx.reporter.stage_start("train", None, unit="steps")

        def progress(step: int, total: int | None, info: dict[str, Any]) -> None:
            ctx.reporter.stage_advance("train", 0, 0, {"step": step, "total": total, **info})

        cfg = ctx.cfg.train
        path = getattr(cfg.model, "path", None)
        if isinstance(path, str):  # a base model's folder is relative to the pipeline file, not the cwd
            cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"path": ctx.resolve(path)})})
        metrics = train_prepared(cfg, prepared, out, progress)
        ctx.store.write_manifest(
            "train",
            plan.key,
            {"stage": "train", "key": plan.key, "metrics": metrics, "ingredients": plan.ingredients},
        )
        return StageResult("train", "ran", plan.key, reason, 0.0, None, round_metrics(metrics))

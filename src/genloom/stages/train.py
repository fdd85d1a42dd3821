"""train: the one training loop over the prepared data, for any family; resumes from its last checkpoint."""

from __future__ import annotations

import shutil
from typing import Any

from genloom.core.errors import ConfigError
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
        # where the nodes meet is not part of the model: a resumed run may use another node 0
        where = {"distributed": {"rdzv_endpoint", "shared_filesystem"}}
        ingredients: dict[str, Any] = {
            "stage": "train",
            "train": ctx.cfg.train.model_dump(mode="json", exclude=where),
            "input": prepared,
        }
        dist = ctx.cfg.train.distributed
        if dist is not None and dist.nnodes > 1:
            _check_nodes_share_the_store(ctx, dist.nnodes, dist.shared_filesystem)
        if dist is not None and dist.world_size > 1 and family(ctx.cfg.train.model.type).custom_step:
            raise ConfigError(
                f"train.distributed does not support {ctx.cfg.train.model.type} yet: its family does its"
                " own updates (a GAN's or a VAE's custom step) and has no DDP path",
                path="train.distributed",
                hint="train it in one process (remove train.distributed)",
            )
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
        if cfg.distributed is not None and cfg.distributed.world_size > 1:
            from genloom.train.launch import launch

            metrics = launch(cfg, prepared, out, progress)
        else:
            metrics = train_prepared(cfg, prepared, out, progress)
        ctx.store.write_manifest(
            "train",
            plan.key,
            {"stage": "train", "key": plan.key, "metrics": metrics, "ingredients": plan.ingredients},
        )
        return StageResult("train", "ran", plan.key, reason, 0.0, None, round_metrics(metrics))


def _check_nodes_share_the_store(ctx: RunContext, nnodes: int, shared_filesystem: bool) -> None:
    """Several machines: the ranks of every node read the prepared data and the checkpoints in the
    folders of node 0, so the store must be a folder that every node mounts at the same path (an
    object store's model artifacts live in node 0's local cache until they are finished)."""
    if not ctx.store.local:
        raise ConfigError(
            f"train.distributed.nnodes: {nnodes} cannot train from the object store {ctx.store.root!r}:"
            " the train stage works in node 0's local cache (store.cache), which the other nodes cannot read",
            path="store.path",
            hint="put the store on a filesystem every node mounts at the same path (NFS...) and set"
            " train.distributed.shared_filesystem: true",
        )
    if not (shared_filesystem or getattr(ctx.cfg.executor, "shared_filesystem", False)):
        raise ConfigError(
            f"train.distributed.nnodes: {nnodes} needs the store folder {ctx.store.root} at the same path"
            " on every node: the ranks of every node read the prepared data and the checkpoints there",
            path="train.distributed.shared_filesystem",
            hint="mount it on every node (NFS...) and set train.distributed.shared_filesystem: true",
        )

"""register: the model version in the catalog, promoted to champion only if it is better.

Better means: it passes every gate (absolute, and relative to the champion) and beats the
champion on ``register.metric`` in that metric's declared direction, the champion being scored on
this run's evaluation data (by the evaluate stage; again here if the champion changed since). A
model that fails a gate is registered as a candidate and never promoted; a promoted model's
predecessor is archived (kept, with its files and metrics). The gate table goes into the run
summary and the catalog (the version's ``gates``).

A new version's reference profile (``stages/profile.py``: its training split and its family's
profile of the prepared data, what ``genloom monitor`` compares traffic with) is computed before the
version is registered and stored with it; its key is in the stage's stats and the run's model entry.
It is not part of the stage's key: the stage always runs, and makes the profile only when missing.
"""

from __future__ import annotations

from typing import Any

from genloom.core.store import content_key
from genloom.evaluate.gates import describe_failures, failed_gates, gate_rows, is_better
from genloom.evaluate.heldout import evaluation_view
from genloom.models.base import family, family_of
from genloom.stages.base import RunContext, Stage, StagePlan, StageResult, plan_for, round_metrics
from genloom.stages.profile import build_profile, save_profile
from genloom.stages.profile import profile_key as reference_profile_key

#: training figures carried into the registered version's metrics
TRAIN_FIGURES = ("steps", "tokens", "train_loss", "params", "wall_s")


class RegisterStage(Stage):
    """Evaluation -> a model version (candidate or champion), every run."""

    name = "register"
    needs_train = True

    def plan(self, ctx: RunContext, plans: list[StagePlan]) -> StagePlan:
        evaluation = plan_for(plans, "evaluate").key or ""
        ingredients = {
            "stage": "register",
            "register": ctx.cfg.registry.model_dump(mode="json"),
            "model": plan_for(plans, "train").key,
            "evaluation": evaluation,
        }
        return StagePlan("register", content_key(ingredients), [evaluation], ingredients)

    def is_cached(self, ctx: RunContext, plan: StagePlan) -> bool:
        return False  # always runs: registering an existing version is a no-op it reports

    def run(self, ctx: RunContext, plan: StagePlan, plans: list[StagePlan], reason: str) -> StageResult:
        train_key = plan_for(plans, "train").key or ""
        evaluation = ctx.store.read_manifest("evaluate", plan_for(plans, "evaluate").key or "")
        trained = ctx.store.read_manifest("train", train_key)["metrics"]
        metrics = {**{k: trained[k] for k in TRAIN_FIGURES if k in trained}, **evaluation["metrics"]}
        name = ctx.model_name
        known = [m for m in ctx.catalog.models(name) if m["artifact_key"] == train_key]
        profile_key = reference_profile_key(train_key)
        # the reference profile is computed before the version is registered: a failure (a bug)
        # fails the run with nothing registered, and the next run tries again
        profile = None if ctx.store.has_artifact("profile", profile_key) else build_reference(ctx, plans)
        if known:
            version, status = known[0], "cached"
            decision = f"already registered as v{version['version']} ({version['stage']})"
        else:
            uri = ctx.store.artifact_dir("train", train_key)
            version = ctx.catalog.register_model(name, train_key, uri, metrics, ctx.run_id)
            status = "ran"
        if profile is not None:  # a new version, or one registered before profiles came with training
            save_profile(ctx.store, ctx.catalog, ctx.cfg.name, version, profile, run_id=ctx.run_id)
        embeddings = None
        if ctx.cfg.monitor.embedding_reference == "train" and family(ctx.cfg.train.model.type).generates_text:
            from genloom.stages.embedding_reference import STAGE, embedding_reference, reference_key

            # MiniLM over a sample of the training split, once per model (MissingDependencyError
            # without the features extra: asked for, so not skipped)
            embeddings = reference_key(train_key)
            if not ctx.store.has_artifact(STAGE, embeddings):
                embedding_reference(ctx.store, ctx.catalog, ctx.cfg.name, version)
        if status == "ran":
            decision = promotion(ctx, version, metrics, evaluation, plans)
            if decision.startswith("promoted"):
                ctx.catalog.promote(name, version["version"])
                version = ctx.catalog.model_version(name, version["version"])
        model = {
            "name": name,
            "version": version["version"],
            "stage": version["stage"],
            "uri": version["uri"],
            "metrics": round_metrics(metrics),
            "decision": decision,
            "gates": gate_rows(evaluation.get("gates") or {}),
            "evaluated_on": evaluation.get("split", "val"),
            "profile": profile_key,
        }
        stats = {
            "model": name,
            "version": version["version"],
            "stage": version["stage"],
            "profile": profile_key,
            "profile_computed": profile is not None,
            **({"embedding_reference": embeddings} if embeddings else {}),
        }
        return StageResult("register", status, plan.key, decision, 0.0, None, stats, model=model)


def build_reference(ctx: RunContext, plans: list[StagePlan]) -> dict[str, Any]:
    """The reference profile of this run's model (``stages/profile.py``): its training split's
    lengths, vocabulary and language mix, or per-column distributions, and its family's profile
    of the prepared artifact; errors are raised, never swallowed."""
    prepared = ctx.local_artifact("prepare", plan_for(plans, "prepare").key)
    return build_profile(ctx.store, ctx.catalog, plan_for(plans, "train").key or "", prepared_dir=prepared)


def promotion(
    ctx: RunContext,
    version: dict[str, Any],
    metrics: dict[str, Any],
    evaluation: dict[str, Any],
    plans: list[StagePlan],
) -> str:
    """The decision for a new version: promoted, or kept as candidate, and why."""
    rule = ctx.cfg.registry
    champion = ctx.catalog.champion(ctx.model_name)
    if champion is not None and champion["version"] == version["version"]:
        return "already champion"
    failed = failed_gates(evaluation["gates"])
    if failed:
        return (
            f"kept as candidate: failed gates {', '.join(failed)} ({describe_failures(evaluation['gates'])})"
        )
    if rule.promote == "never":
        return "kept as candidate (register.promote=never)"
    if champion is None or rule.promote == "always":
        return "promoted: first champion" if champion is None else "promoted (register.promote=always)"
    direction = evaluation.get("directions", {}).get(rule.metric)
    if direction is None:
        return f"kept as candidate: metric {rule.metric!r} has no direction (not a metric this model reports)"
    ours = metrics.get(rule.metric)
    theirs = champion_metrics(ctx, champion, evaluation, plans).get(rule.metric)
    if ours is None or theirs is None:
        return f"kept as candidate: metric {rule.metric!r} unavailable"
    sign = "<" if direction == "min" else ">"
    if is_better(ours, theirs, direction):
        return f"promoted: {rule.metric} {ours:.4f} {sign} champion v{champion['version']} {theirs:.4f}"
    worse = ">=" if direction == "min" else "<="
    return f"kept as candidate: {rule.metric} {ours:.4f} {worse} champion v{champion['version']} {theirs:.4f}"


def champion_metrics(
    ctx: RunContext, champion: dict[str, Any], evaluation: dict[str, Any], plans: list[StagePlan]
) -> dict[str, Any]:
    """The champion's metrics on this run's evaluation data: the evaluate stage's, or (when the
    champion changed since that evaluation) scored now, by its own family, on the same split."""
    recorded = evaluation.get("champion") or {}
    if recorded.get("key") == champion["artifact_key"] and recorded.get("metrics") is not None:
        return dict(recorded["metrics"])
    prepared = ctx.local_artifact("prepare", plan_for(plans, "prepare").key)
    uri = ctx.store.registered_model(champion)  # downloaded when on an object store
    with evaluation_view(prepared) as view:
        scored = family_of(uri).evaluate_champion(uri, view, ctx.cfg.evaluate)
    return {k: m.value for k, m in scored.items()}

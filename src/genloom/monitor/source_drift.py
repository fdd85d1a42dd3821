"""Drift of newly arrived source data against the champion's reference profile.

When the pipeline planned now would train a model no version was trained as (the ``new_data``
check), the records that arrived since are compared with the champion's training records, with
the same statistics the request log is checked with, before any retrain:

1. the data stages run for the current sources (``Pipeline.run(until=<data stage>)``: cached
   where nothing changed, and the retrain that may follow reuses them);
2. the **new records** are those of the current data artifact whose ``id`` is not in the
   champion's (record ids are unique and stable, DESIGN section 3), in the training split the
   pipeline's split settings give them;
3. text models: the new records' texts are folded into a window accumulator as the prompts (and,
   for chat models, the assistant turns as the outputs) of served requests would be, and the
   request log's drift checks run on them (word-length PSI and KS, the out-of-vocabulary share,
   the language mix where the records have a ``lang`` column, counted exactly). Table models: per
   column, PSI of the numeric values on the profile's quantile bins and Jensen-Shannon distance
   of the categorical levels.

Each check's signal is ``source:<signal>`` (kind ``drift``, so ``retrain_on: [drift]`` retrains on
it), its evidence names the champion's data artifact, the current one and the new records
counted. Memory holds the champion's record ids (an Arrow array) and one batch.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genloom.monitor.drift import js, psi_from_counts
from genloom.monitor.signals import (
    CHAT_ENDPOINT,
    Check,
    Thresholds,
    WindowAccumulator,
    category_checks,
    text_checks,
)
from genloom.stages.profile import LANG_COLUMN, TrainingData, _chat_sides, _train_batches, training_data

SIGNAL_PREFIX = "source:"


def _ids(store: Any, stage: str, shards: list[str]) -> pa.Array:
    parts = [
        b.column("id").combine_chunks()
        for s in shards
        for b in store.iter_batches(stage, s, columns=["id"])
        if b.num_rows
    ]
    return pa.concat_arrays(parts).cast(pa.large_string()) if parts else pa.array([], pa.large_string())


def new_record_batches(store: Any, old: TrainingData, new: TrainingData, columns: list[str]) -> Any:
    """The training-split rows of ``new``'s data artifact whose id is not in ``old``'s."""
    known = _ids(store, old.data_stage, old.shards)
    for batch in _train_batches(store, new, columns):  # the split as the profile draws it
        ids = batch.column("id").combine_chunks().cast(pa.large_string())
        batch = batch.filter(pc.invert(pc.is_in(ids, value_set=known)))
        if batch.num_rows:
            yield batch


def planned_data(pipeline: Any) -> TrainingData | None:
    """Where the current config's training records are (running the data stages when their
    artifact is not there yet); None without a train section."""
    from genloom.stages.base import plan_for, resolve_data_stage

    if pipeline.cfg.train is None:
        return None
    plans = pipeline.plan()
    stage = resolve_data_stage(plans, "features")
    plan = plan_for(plans, stage)
    if plan.key is None:
        return None
    if not pipeline.store.has_artifact(stage, plan.key):
        pipeline.run(until=stage)
    shards = list(pipeline.store.read_manifest(stage, plan.key).get("shards") or [])
    prepare = plan_for(plans, "prepare")
    split = dict((prepare.ingredients or {}).get("split") or {})
    return TrainingData("", "", plan.key, stage, shards, split, pipeline.cfg.train.model_dump(mode="json"))


def source_drift_checks(
    pipeline: Any, champion: dict[str, Any], profile: dict[str, Any], th: Thresholds
) -> list[Check]:
    """The ``source:`` drift checks of the records that arrived since the champion's training."""
    store = pipeline.store
    old = training_data(store, pipeline.catalog, str(champion["artifact_key"]))
    new = planned_data(pipeline)
    evidence = {"champion_data": old.data_key, "current_data": new.data_key if new else None}
    if new is None or new.data_key == old.data_key:
        why = "no new records: the current data artifact is the one the champion was trained on"
        return [_skip("records", "count", why, evidence)]
    if profile.get("kind") == "text":
        checks = _text(store, old, new, profile, th)
    else:
        checks = _table(store, old, new, profile, th)
    for c in checks:
        c.signal = SIGNAL_PREFIX + c.signal
        c.evidence.update(evidence)
    return checks


def _skip(signal: str, method: str, why: str, evidence: dict[str, Any]) -> Check:
    return Check(
        "drift", SIGNAL_PREFIX + signal, method, None, None, False, None, evidence | {"skipped": why}, why
    )


def _text(
    store: Any, old: TrainingData, new: TrainingData, profile: dict[str, Any], th: Thresholds
) -> list[Check]:
    chat = bool(profile.get("chat"))
    field = str(profile.get("text_field") or "text")
    vocabulary = list((profile.get("vocabulary") or {}).get("words") or {})
    out_vocab = list((profile.get("output_vocabulary") or {}).get("words") or {}) or None
    acc = WindowAccumulator(vocabulary, False, output_vocabulary=out_vocab, repetition=False)
    langs: dict[str, int] = {}
    for batch in new_record_batches(store, old, new, [field, "text", LANG_COLUMN]):
        prompts: list[str | None]
        outputs: list[str | None]
        if chat:
            user, assistant = _chat_sides(batch, field)
            prompts = [json.dumps([{"role": "user", "content": u}]) for u in user]
            outputs = list(assistant)
            endpoint = CHAT_ENDPOINT
        else:
            prompts = batch.column("text").to_pylist()
            outputs = [None] * len(prompts)
            endpoint = "/v1/completions"
        n = batch.num_rows
        acc.add([endpoint] * n, np.full(n, 200), np.zeros(n), prompts, outputs)
        if LANG_COLUMN in batch.column_names:
            vc = pc.value_counts(pc.fill_null(batch.column(LANG_COLUMN).combine_chunks(), "und"))
            for k, c in zip(vc.field(0).to_pylist(), vc.field(1).to_pylist(), strict=True):
                langs[str(k)] = langs.get(str(k), 0) + int(c)
    checks = [
        c
        for c in text_checks({**profile, "languages": None}, acc, th)
        if chat or not c.signal.startswith("output_")
    ]
    if profile.get("languages"):
        few = None if langs else "the new records have no language column (the language preprocess step)"
        checks += category_checks("prompt_language", dict(profile["languages"]), langs, th, few)
    for c in checks:
        c.evidence["new_records"] = acc.text_requests
    return checks


def _table(
    store: Any, old: TrainingData, new: TrainingData, profile: dict[str, Any], th: Thresholds
) -> list[Check]:
    columns: dict[str, Any] = profile.get("columns") or {}
    numeric = {
        n: np.asarray(c.get("edges") or [], dtype=float) for n, c in columns.items() if c["kind"] == "numeric"
    }
    counts = {n: np.zeros(len(e) + 1) for n, e in numeric.items()}
    levels: dict[str, dict[str, float]] = {n: {} for n, c in columns.items() if c["kind"] != "numeric"}
    rows = 0
    for batch in new_record_batches(store, old, new, list(columns)):
        rows += batch.num_rows
        for name, edges in numeric.items():
            if name in batch.column_names:
                x = pc.cast(batch.column(name), pa.float64(), safe=False).to_numpy(zero_copy_only=False)
                x = x[np.isfinite(x)]
                counts[name] += np.bincount(np.searchsorted(edges, x, side="left"), minlength=len(edges) + 1)
        for name, table in levels.items():
            if name in batch.column_names:
                vc = pc.value_counts(pc.cast(batch.column(name).combine_chunks().drop_null(), pa.string()))
                for v, c in zip(vc.field(0).to_pylist(), vc.field(1).to_pylist(), strict=True):
                    table[v] = table.get(v, 0) + int(c)
    checks: list[Check] = []
    for name in sorted(columns):
        ref = columns[name]
        if rows < th.min_requests:
            why = f"{rows} new records (at least {th.min_requests} needed)"
            method = "psi" if name in numeric else "js"
            checks.append(Check("drift", name, method, None, None, False, None, {"skipped": why}, why))
            continue
        if name in numeric:
            expected = np.asarray(ref.get("bin_counts") or [], dtype=float)
            if not expected.size or counts[name].sum() == 0:
                why = "no numeric values" if expected.size else "the profile has no bins for this column"
                checks.append(Check("drift", name, "psi", None, th.psi, False, None, {"skipped": why}, why))
                continue
            score = psi_from_counts(expected, counts[name])
            ev = {
                "edges": numeric[name].tolist(),
                "reference_counts": expected.tolist(),
                "counts": counts[name].tolist(),
            }
            checks.append(Check("drift", name, "psi", score, th.psi, score > th.psi, None, ev))
        else:
            top = dict(ref.get("levels") or {})
            reference = {**{k: float(v) for k, v in top.items()}, "other": float(ref.get("other") or 0)}
            current: dict[str, float] = {}
            for v, c in levels[name].items():
                key = v if v in top else "other"
                current[key] = current.get(key, 0) + c
            if not current:
                why = "no values of this column in the new records"
                checks.append(Check("drift", name, "js", None, th.js, False, None, {"skipped": why}, why))
                continue
            res = js(reference, current)
            checks.append(Check("drift", name, "js", res.score, th.js, res.score > th.js, None, res.evidence))
    for c in checks:
        c.evidence["new_records"] = rows
    return checks


__all__ = ["new_record_batches", "planned_data", "source_drift_checks"]

"""Drift of what table models are asked for: the conditions of ``POST /v1/samples`` requests
against the training distribution of the conditioned columns.

A table model served with ``/v1/samples`` generates rows under the caller's conditions
(``{"region": "EU"}``: column -> value). When the values asked for move away from the training
rows' (most requests now ask for a level that was rare in training, or for a value never seen),
the generator works in a region it learned from few rows, and its fidelity there is what the
evaluation measured least. Per conditioned column, the window's requested values, weighted by the
rows each request asked for (``n``: what the service generated under that condition), against the
reference profile's column (``stages.profile.table_profile``):

- categorical columns: Jensen-Shannon distance of the requested levels and the training levels
  (the profile's 100 most frequent levels plus ``other``; a value outside them counts as
  ``other``, and values never seen in training are listed in the evidence), a breach above
  ``Thresholds.js``;
- numeric columns: PSI of the requested values on the profile's quantile bins, a breach above
  ``Thresholds.psi``.

A column needs ``Thresholds.min_requests`` requests that condition on it, else its check is
skipped with the count. The request log stores a samples call's ``{"n", "conditions"}`` as its
prompt (serve/app.py), read here with one streaming query (counts only: memory does not grow
with the window).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select

from genloom.monitor.drift import js, psi_from_counts
from genloom.monitor.signals import Check, Thresholds

SAMPLES_ENDPOINT = "/v1/samples"
#: requested values listed in the evidence, at most (the most requested first)
EVIDENCE_VALUES = 20


class ConditionCounts:
    """Per conditioned column: requested rows by value, and requests."""

    def __init__(self) -> None:
        self.rows: dict[str, Counter[Any]] = {}
        self.requests: Counter[str] = Counter()
        self.samples_requests = 0
        self.unreadable = 0

    def add(self, prompt: str | None) -> None:
        self.samples_requests += 1
        try:
            body = json.loads(prompt) if prompt else None
        except json.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            self.unreadable += 1  # a redacted log (NULL prompt) or an older row
            return
        n = body.get("n") or 1
        for column, value in (body.get("conditions") or {}).items():
            if isinstance(value, list | dict):
                continue  # not an equality condition
            self.rows.setdefault(column, Counter())[value] += int(n)
            self.requests[column] += 1


def condition_counts(engine: Any, model: str, start: datetime, end: datetime) -> ConditionCounts:
    """The conditions of the window's successful ``/v1/samples`` requests of ``model``."""
    from genloom.serve.traffic import requests

    q = (
        select(requests.c.prompt)
        .where(
            requests.c.model == model,
            requests.c.endpoint == SAMPLES_ENDPOINT,
            requests.c.status == 200,
            requests.c.created_at >= start,
            requests.c.created_at < end,
        )
        .execution_options(yield_per=20_000)
    )
    acc = ConditionCounts()
    with engine.connect() as c:
        for (prompt,) in c.execute(q):
            acc.add(prompt)
    return acc


def _level(value: Any) -> str:
    """A requested value as the profile spells the column's levels (Arrow's cast to string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def condition_checks(profile: dict[str, Any], counts: ConditionCounts, th: Thresholds) -> list[Check]:
    """One drift check per conditioned column (signal ``condition:<column>``)."""
    columns = profile.get("columns") or {}
    checks: list[Check] = []
    for column in sorted(counts.rows):
        asked = counts.rows[column]
        n_requests = counts.requests[column]
        evidence: dict[str, Any] = {
            "requests": n_requests,
            "rows": int(sum(asked.values())),
            "requested": dict(
                sorted(((_level(v), c) for v, c in asked.items()), key=lambda kv: -kv[1])[:EVIDENCE_VALUES]
            ),
        }
        ref = columns.get(column)
        signal = f"condition:{column}"
        if ref is None:
            why = f"the training profile has no column {column!r}"
            checks.append(
                Check("drift", signal, "js", None, th.js, False, None, evidence | {"skipped": why}, why)
            )
            continue
        numeric = ref.get("kind") == "numeric"
        method, threshold = ("psi", th.psi) if numeric else ("js", th.js)
        if n_requests < th.min_requests:
            why = f"{n_requests} requests condition on {column} (at least {th.min_requests} needed)"
            checks.append(
                Check("drift", signal, method, None, threshold, False, None, evidence | {"skipped": why}, why)
            )
            continue
        if numeric:
            checks.append(_numeric(signal, ref, asked, evidence, th))
        else:
            checks.append(_categorical(signal, ref, asked, evidence, th))
    return checks


def _categorical(
    signal: str, ref: dict[str, Any], asked: Counter[Any], evidence: dict[str, Any], th: Thresholds
) -> Check:
    levels: dict[str, int] = dict(ref.get("levels") or {})
    reference: dict[str, float] = {**levels, "other": float(ref.get("other") or 0)}
    current: dict[str, float] = {}
    unseen = []
    for value, rows in asked.items():
        level = _level(value)
        key = level if level in levels else "other"
        if key == "other" and int(ref.get("distinct") or 0) <= len(levels):
            unseen.append(level)  # every training level is listed: this value never occurred
        current[key] = current.get(key, 0) + rows
    res = js(reference, current)
    ev = evidence | res.evidence | {"unseen_in_training": sorted(unseen)[:EVIDENCE_VALUES]}
    return Check("drift", signal, "js", res.score, th.js, res.score > th.js, None, ev)


def _numeric(
    signal: str, ref: dict[str, Any], asked: Counter[Any], evidence: dict[str, Any], th: Thresholds
) -> Check:
    edges = np.asarray(ref.get("edges") or [], dtype=float)
    expected = np.asarray(ref.get("bin_counts") or [], dtype=float)
    values, weights = [], []
    for value, rows in asked.items():
        try:
            values.append(float(value))
            weights.append(rows)
        except (TypeError, ValueError):
            continue
    if not len(expected) or not values:
        why = "no numeric values requested" if expected.size else "the profile has no bins for this column"
        return Check("drift", signal, "psi", None, th.psi, False, None, evidence | {"skipped": why}, why)
    actual = np.bincount(
        np.searchsorted(edges, np.asarray(values), side="left"),
        weights=np.asarray(weights, dtype=float),
        minlength=len(edges) + 1,
    )
    score = psi_from_counts(expected, actual)
    ev = evidence | {
        "edges": edges.tolist(),
        "reference_counts": expected.tolist(),
        "counts": actual.tolist(),
    }
    return Check("drift", signal, "psi", score, th.psi, score > th.psi, None, ev)


__all__ = ["ConditionCounts", "condition_checks", "condition_counts"]

"""The ``monitor:`` policy: one monitoring round, and the retrain it may decide.

A round checks the champion's request-log window (``signals.monitor_pipeline``) with the
section's thresholds, adds the retrain schedule's check when ``schedule`` is set and the
``new_data`` check when ``retrain_on`` lists it, and, when ``on_breach: retrain`` and a check of
``retrain_on`` breached (outside the ``cooldown`` after the last retrain) or the schedule is due,
retrains:

1. a ``retrain`` decision, with the breached checks (their ids in the monitoring log, figures and
   window) or the schedule's check as evidence;
2. ``Pipeline.run()`` in this process (not started, a ``none`` decision with the holder as
   evidence, while another run of the pipeline holds its lease: core/lease.py): the stages whose inputs did not change are cache hits, new
   source files (or new feedback) rerun ingest and what follows; the register stage evaluates the
   challenger against the champion on the same evaluation data and promotes it only when the gates
   pass and it is better;
3. ``promote`` (the new champion version) or ``keep`` (the register stage's reason: the failed
   gates, "not better", or no new model at all when nothing changed), with the challenger
   version, the run id, its metrics and gate rows; a run that raised is a ``failed`` decision
   with the error, and the round's exit code is 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from genloom.core.errors import ConfigError, GenloomError
from genloom.core.lease import RunInProgress
from genloom.monitor.signals import Check, MonitorReport, Thresholds, monitor_pipeline, skipped, store_check
from genloom.monitor.store import MonitorLog, monitor_decisions

#: exit codes of a round, for cron (as ``genloom monitor``)
EXIT_FINE, EXIT_BREACH, EXIT_ERROR = 0, 1, 2


@dataclass
class RoundResult:
    """What one monitoring round found and decided."""

    report: MonitorReport
    decisions: list[dict[str, Any]] = field(default_factory=list)
    #: the error of a retrain that failed (the round's exit code is then 2)
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """2 when a retrain failed, 1 when a check breached, else 0."""
        if self.error is not None:
            return EXIT_ERROR
        return EXIT_BREACH if self.report.breached else EXIT_FINE

    def to_json(self) -> dict[str, Any]:
        """The report, the decisions and the retrain error, as JSON-ready data."""
        from genloom.monitor.signals import _jsonable

        return {
            **self.report.to_json(),
            "decisions": _jsonable(self.decisions),
            "retrain_error": self.error,
        }


def thresholds_of(cfg: Any) -> Thresholds:
    """The signals' Thresholds from a ``monitor:`` section (``MonitorConfig``)."""
    return Thresholds(**cfg.thresholds.model_dump())


def seconds(duration: str, where: str) -> float:
    """Seconds of a ``monitor:`` duration."""
    from genloom.monitor.cli import parse_duration

    return parse_duration(duration, where)


def _utc(value: datetime) -> datetime:
    """SQLite gives naive datetimes: they are UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def last_retrain(log: MonitorLog, model: str) -> dict[str, Any] | None:
    """The newest ``retrain`` decision of ``model``, or None."""
    from sqlalchemy import select

    d = monitor_decisions.c
    q = (
        select(d.id, d.created_at)
        .where(d.model == model, d.action == "retrain")
        .order_by(d.id.desc())
        .limit(1)
    )
    with log.engine.connect() as c:
        row = c.execute(q).first()
    return {"id": int(row.id), "created_at": _utc(row.created_at)} if row else None


def schedule_check(log: MonitorLog, model: str, champion: dict[str, Any], every: str, now: datetime) -> Check:
    """``schedule``/``retrain_schedule``/``age``: seconds since the last retrain decision (else
    the champion's registration) against ``every``; breached (due) at or past it."""
    period = seconds(every, "monitor.schedule")
    last = last_retrain(log, model)
    if last is not None:
        since, basis = last["created_at"], {"last_retrain_decision": last["id"]}
    else:
        since, basis = _utc(champion["created_at"]), {"champion_registered": int(champion["version"])}
    age = (now - since).total_seconds()
    evidence = {"since": since.isoformat(), "every": every, **basis}
    return Check("schedule", "retrain_schedule", "age", age, period, age >= period, None, evidence)


def new_data_check(pipeline: Any, name: str) -> Check:
    """``new_data``/``training_inputs``/``key``: the pipeline planned now (source fingerprints, file
    hashes, config) would train a model that no registered version of ``name`` was trained as;
    breached (score 1) when so. A plan reads no data, but fingerprints every source."""
    from genloom.stages.base import plan_for

    plans = pipeline.plan()
    train, ingest = plan_for(plans, "train"), plan_for(plans, "ingest")
    known = {m["artifact_key"]: m for m in pipeline.catalog.models(name)}
    hit = known.get(train.key or "")
    evidence = {
        "planned_train_key": train.key,
        "planned_ingest_key": ingest.key,
        "ingest_cached": ingest.cached,
        "registered_as": int(hit["version"]) if hit else None,
    }
    return Check("new_data", "training_inputs", "key", 0.0 if hit else 1.0, None, hit is None, None, evidence)


def source_checks(pipeline: Any, name: str, th: Thresholds) -> list[Check]:
    """The ``source:`` drift checks of the records the champion was not trained on (``source_drift``)."""
    from genloom.monitor.source_drift import source_drift_checks
    from genloom.stages.profile import model_profile

    champion = pipeline.catalog.champion(name)
    if champion is None:
        return []
    profile, _ = model_profile(pipeline.store, pipeline.catalog, pipeline.cfg.name, champion)
    return source_drift_checks(pipeline, champion, profile, th)


def _check_evidence(c: Check) -> dict[str, Any]:
    return {"check_id": c.id, **c.figures()}


def monitor_round(
    pipeline: Any,
    start: datetime,
    end: datetime,
    model: str | None = None,
    now: datetime | None = None,
    reference: tuple[datetime, datetime] | None = None,
) -> RoundResult:
    """One round of the pipeline's ``monitor:`` policy over the window [start, end): the checks
    (stored), then the retrain the policy calls for, if any (decisions stored). ``reference``: an
    earlier request-log window to compare with instead of the training profile."""
    mcfg = pipeline.cfg.monitor
    name = model or pipeline.model_name
    retrains = mcfg.on_breach == "retrain" or mcfg.schedule is not None
    if retrains and pipeline.cfg.train is None:
        raise ConfigError(
            "monitor: retraining (on_breach: retrain or schedule) needs a train: section",
            path="monitor.on_breach" if mcfg.on_breach == "retrain" else "monitor.schedule",
        )
    if retrains and name != pipeline.model_name:
        raise ConfigError(
            f"the pipeline retrains model {pipeline.model_name!r}, not {name!r}",
            path="--model",
            hint="leave --model out, or monitor it with a pipeline file that registers it",
        )
    cooldown = seconds(mcfg.cooldown, "monitor.cooldown")
    now = now or end
    report = monitor_pipeline(
        pipeline, start, end, name, thresholds_of(mcfg), skip=mcfg.skip, reference=reference
    )
    log = MonitorLog(pipeline.catalog.engine)
    result = RoundResult(report)
    due: Check | None = None
    if mcfg.schedule is not None:
        champion = pipeline.catalog.champion(name)
        due = schedule_check(log, name, champion, mcfg.schedule, now)
        store_check(log, due, name, report.version, start, end)
        report.checks.append(due)
    fresh: Check | None = None
    if ("new_data" in mcfg.retrain_on or mcfg.source_drift) and pipeline.cfg.train is not None:
        fresh = new_data_check(pipeline, name)
        store_check(log, fresh, name, report.version, start, end)
        report.checks.append(fresh)
    if mcfg.source_drift and fresh is not None and fresh.breached:
        try:
            found = source_checks(pipeline, name, thresholds_of(mcfg))
        except RunInProgress as e:  # the data stages could not run now: said, and tried next round
            why = f"the data stages of the new records could not run: {e}"
            found = [
                Check("drift", "source:records", "count", None, None, False, None, {"skipped": why}, why)
            ]
        for c in found:
            if skipped(c.signal, mcfg.skip):
                continue
            c.evidence["profile"] = report.profile_key
            store_check(log, c, name, report.version, start, end)
            report.checks.append(c)
    triggers = (
        [c for c in report.checks if c.breached and c.kind in mcfg.retrain_on]
        if mcfg.on_breach == "retrain"
        else []
    )
    window = {"start": start.isoformat(), "end": end.isoformat()}
    evidence: dict[str, Any] = {"window": window, "checks": [_check_evidence(c) for c in triggers]}
    if due is not None and due.breached:
        evidence["schedule"] = _check_evidence(due) | {"since": due.evidence["since"]}
        also = _trigger_reason(triggers)
        reason = f"schedule: {mcfg.schedule} since {due.evidence['since']}" + (f"; {also}" if also else "")
    elif triggers:
        last = last_retrain(log, name)
        if last is not None and (now - last["created_at"]).total_seconds() < cooldown:
            held = log.add_decision(
                model=name,
                action="none",
                reason=f"{_trigger_reason(triggers)}; no retrain: the last one (decision {last['id']}, "
                f"{last['created_at']:%Y-%m-%d %H:%M} UTC) is within the cooldown of {mcfg.cooldown}",
                champion_version=report.version,
                evidence=evidence | {"last_retrain_decision": last["id"]},
            )
            result.decisions.append(_decision(log, held))
            return result
        reason = _trigger_reason(triggers)
    else:
        return result
    if due is not None and due.breached:
        evidence["trigger"] = "schedule"
    else:
        evidence["trigger"] = "breach" if any(c.kind != "new_data" for c in triggers) else "new_data"
    busy = pipeline.run_in_progress()
    if busy is not None:  # a `genloom run` or another monitor's retrain holds the pipeline's lease
        held = log.add_decision(
            model=name,
            action="none",
            reason=f"{reason}; no retrain: a run of the pipeline is in progress (pid {busy['pid']} on "
            f"{busy['host']} since {busy['acquired_at']:%Y-%m-%d %H:%M:%S} UTC)",
            champion_version=report.version,
            evidence=evidence | {"run_in_progress": _holder(busy)},
        )
        result.decisions.append(_decision(log, held))
        return result
    result.decisions += retrain(pipeline, name, report.version, reason, evidence)
    failed = [d for d in result.decisions if d["action"] == "failed"]
    if failed:
        result.error = failed[0]["reason"]
    return result


def _trigger_reason(triggers: list[Check]) -> str:
    """``breach: error_rate (rate), ...`` and/or ``new data: ...`` for the checks that call for a retrain."""
    parts = []
    breaches = [f"{c.signal} ({c.method})" for c in triggers if c.kind != "new_data"]
    if breaches:
        parts.append("breach: " + ", ".join(dict.fromkeys(breaches)))
    if any(c.kind == "new_data" for c in triggers):
        parts.append("new data: the pipeline would train a model no version was trained as")
    return "; ".join(parts)


def _holder(row: dict[str, Any]) -> dict[str, Any]:
    """A lease holder as JSON evidence."""
    return {
        "pid": row["pid"],
        "host": row["host"],
        "acquired_at": row["acquired_at"].isoformat(),
        "expires_at": row["expires_at"].isoformat(),
    }


def _decision(log: MonitorLog, decision_id: int) -> dict[str, Any]:
    found = log.decision(decision_id)
    if found is None:
        raise GenloomError(f"decision {decision_id} is not in the monitoring log")
    return found


def retrain(
    pipeline: Any, name: str, champion_version: int, reason: str, evidence: dict[str, Any]
) -> list[dict[str, Any]]:
    """Record a ``retrain`` decision, run the pipeline, record ``promote``, ``keep`` or
    ``failed``; the decisions stored, oldest first."""
    log = MonitorLog(pipeline.catalog.engine)
    rid = log.add_decision(
        model=name, action="retrain", reason=reason, champion_version=champion_version, evidence=evidence
    )
    before = {r["id"] for r in pipeline.catalog.runs(pipeline.cfg.name, limit=50)}
    base = {"retrain_decision": rid, "previous_champion": champion_version}
    try:
        summary = pipeline.run()
        if summary.model is None:
            raise GenloomError("the run registered no model")
    except RunInProgress as e:  # another run took the pipeline's lease first: nothing to report as failed
        nid = log.add_decision(
            model=name,
            action="none",
            reason=f"retrain not started: {e}",
            champion_version=champion_version,
            evidence=base | {"run_in_progress": _holder(e.holder)},
        )
        return [_decision(log, rid), _decision(log, nid)]
    except Exception as e:  # any failure of the run is recorded, then reported (exit 2)
        new = [r for r in pipeline.catalog.runs(pipeline.cfg.name, limit=50) if r["id"] not in before]
        error = f"{type(e).__name__}: {e}" if not isinstance(e, GenloomError) else str(e)
        fid = log.add_decision(
            model=name,
            action="failed",
            reason=f"retrain failed: {error}",
            champion_version=champion_version,
            evidence=base | {"error": error, "run_id": new[0]["id"] if new else None},
        )
        return [_decision(log, rid), _decision(log, fid)]
    m = summary.model
    champion = pipeline.catalog.champion(name)
    now_champion = int(champion["version"]) if champion else None
    outcome = base | {
        "run_id": summary.run_id,
        "challenger": m["version"],
        "register_decision": m["decision"],
        "metrics": m.get("metrics"),
        "gates": m.get("gates"),
        "failed_gates": sorted({g["metric"] for g in m.get("gates") or [] if not g.get("passed")}),
        "evaluated_on": m.get("evaluated_on"),
        "stages": {r.stage: r.status for r in summary.stages},
    }
    promoted = str(m["decision"]).startswith("promoted") and now_champion == m["version"]
    if promoted:
        did = log.add_decision(
            model=name,
            action="promote",
            reason=str(m["decision"]),
            champion_version=m["version"],
            challenger_version=m["version"],
            evidence=outcome,
        )
    else:
        why = str(m["decision"])
        if why.startswith("already"):  # nothing changed: the same model as before
            why = f"no new model: {why}"
        did = log.add_decision(
            model=name,
            action="keep",
            reason=why,
            champion_version=now_champion,
            challenger_version=m["version"],
            evidence=outcome,
        )
    return [_decision(log, rid), _decision(log, did)]


def round_window(
    cfg: Any, since: str | None, window: str | None, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """(start, end) of a round: ``--since`` or ``--window``, else the section's ``window``."""
    from genloom.monitor.cli import parse_window

    if since is None and window is None:
        window = cfg.monitor.window
    return parse_window(since, window, now)


__all__ = ["RoundResult", "monitor_round", "retrain", "round_window", "schedule_check", "thresholds_of"]

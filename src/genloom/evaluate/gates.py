"""Quality gates and metric directions: what a model must meet, and which way is better.

A gate is a metric's bounds (``core.config.Gate``): absolute (``min``, ``max``) or relative to
the champion scored on the same evaluation data (``min_vs_champion``, ``max_vs_champion``: an
offset added to the champion's value). ``check_gates`` gives, for each metric, its value, the
champion's, each bound as a check (the bound's value, passed, and by how much it missed) and
whether all its checks passed; ``gate_rows`` flattens that into the table the run summary and
the report show.
"""

from __future__ import annotations

from typing import Any

from genloom.models.base import Direction  # each family's metrics declare theirs (``Metric``)

BOUNDS = ("min", "max", "min_vs_champion", "max_vs_champion")


def check_gates(
    metrics: dict[str, Any], gates: dict[str, Any], champion: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Each gated metric: its value, the champion's, every bound checked, and whether all passed.

    ``champion`` is the champion's metrics on the same evaluation data (None: there is no
    champion, and relative bounds pass: there is nothing to compare with). A metric the model does
    not report fails every bound; one the champion does not report fails its relative bounds.
    """
    out: dict[str, Any] = {}
    for name, gate in gates.items():
        value = _number(metrics.get(name))
        theirs = _number(champion.get(name)) if champion is not None else None
        checks = []
        for kind in BOUNDS:
            offset = getattr(gate, kind)
            if offset is None:
                continue
            relative = kind.endswith("_vs_champion")
            if relative and champion is None:
                checks.append(_check(kind, None, True, None, "no champion to compare with"))
                continue
            bound = (theirs + offset if theirs is not None else None) if relative else offset
            if value is None or bound is None:
                missing = (
                    "the model does not report it" if value is None else "the champion does not report it"
                )
                checks.append(_check(kind, bound, False, None, missing))
                continue
            missed = bound - value if kind.startswith("min") else value - bound
            checks.append(_check(kind, bound, missed <= 0, max(missed, 0.0), ""))
        out[name] = {
            "value": value,
            "champion": theirs,
            **{kind: getattr(gate, kind) for kind in BOUNDS},
            "checks": checks,
            "passed": all(c["passed"] for c in checks),
        }
    return out


def _check(kind: str, bound: float | None, passed: bool, missed: float | None, note: str) -> dict[str, Any]:
    return {"gate": kind, "bound": bound, "passed": passed, "missed_by": missed, "note": note}


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def failed_gates(gates: dict[str, Any]) -> list[str]:
    """The gated metrics that failed, in config order."""
    return [name for name, g in gates.items() if not g["passed"]]


def gate_rows(gates: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per bound: gate, metric, value, champion value, bound, passed, missed by."""
    rows = []
    for name, g in gates.items():
        for c in g.get("checks") or _legacy_checks(g):
            rows.append(
                {
                    "gate": c["gate"],
                    "metric": name,
                    "value": g.get("value"),
                    "champion": g.get("champion"),
                    "bound": c["bound"],
                    "passed": c["passed"],
                    "missed_by": c["missed_by"],
                    "note": c.get("note", ""),
                }
            )
    return rows


def _legacy_checks(g: dict[str, Any]) -> list[dict[str, Any]]:
    """The checks of a gate result written before they were recorded (min/max and passed only)."""
    return [
        _check(kind, g[kind], bool(g.get("passed")), None, "")
        for kind in ("min", "max")
        if g.get(kind) is not None
    ]


def describe_failures(gates: dict[str, Any]) -> str:
    """``val_bpc 2.31 > max 1.9 (by 0.41); distinct_2 ...``: why the gates failed, in one line."""
    parts = []
    for row in gate_rows(gates):
        if row["passed"]:
            continue
        what = row["gate"].replace("_vs_champion", " vs champion")
        sign = ">" if row["gate"].startswith("max") else "<"
        if row["missed_by"] is None:
            parts.append(f"{row['metric']} {what}: {row['note']}")
        else:
            parts.append(
                f"{row['metric']} {row['value']:.4g} {sign} {what} {row['bound']:.4g} (by {row['missed_by']:.4g})"
            )
    return "; ".join(parts)


def is_better(ours: float, theirs: float, direction: Direction) -> bool:
    """True when ``ours`` beats ``theirs`` strictly in ``direction``."""
    return ours < theirs if direction == "min" else ours > theirs

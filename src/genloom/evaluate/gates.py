"""Quality gates and metric directions: what a model must meet, and which way is better."""

from __future__ import annotations

from typing import Any

from genloom.models.base import Direction  # each family's metrics declare theirs (``Metric``)


def check_gates(metrics: dict[str, Any], gates: dict[str, Any]) -> dict[str, Any]:
    """Each gate's bounds, value and whether it passed."""
    out = {}
    for name, gate in gates.items():
        value = metrics.get(name)
        passed = (
            value is not None
            and (gate.min is None or value >= gate.min)
            and (gate.max is None or value <= gate.max)
        )
        out[name] = {"value": value, "min": gate.min, "max": gate.max, "passed": passed}
    return out


def is_better(ours: float, theirs: float, direction: Direction) -> bool:
    """True when ``ours`` beats ``theirs`` strictly in ``direction``."""
    return ours < theirs if direction == "min" else ours > theirs

"""Re-promote an earlier model version and record it as a ``rollback`` decision."""

from __future__ import annotations

from typing import Any

from genloom.core.catalog import Catalog
from genloom.core.errors import NotFoundError
from genloom.monitor.store import MonitorLog


def rollback(
    catalog: Catalog, name: str, to: int | None = None, reason: str = "manual rollback"
) -> dict[str, Any]:
    """Make ``to`` (default: the newest archived version older than the champion) the champion.

    The current champion is archived by the catalog's ``promote``; the decision (restored and
    demoted versions) is stored in the MonitorLog in the same transaction (both or neither).
    Returns the decision's fields.
    """
    champ = catalog.champion(name)
    current = champ["version"] if champ else None
    if to is None:
        older = [
            m["version"]
            for m in catalog.models(name)
            if m["stage"] == "archived" and (current is None or m["version"] < current)
        ]
        if not older:
            raise NotFoundError(f"model {name!r} has no earlier archived version to roll back to")
        to = max(older)
    catalog.model_version(name, to)  # NotFoundError for an unknown version
    if to == current:
        raise NotFoundError(f"version {to} of {name!r} is already the champion")
    log = MonitorLog(catalog.engine)  # creates its tables first, outside the promotion's transaction
    catalog.promote(
        name,
        to,
        also=lambda c: log.add_decision(
            model=name,
            action="rollback",
            reason=reason,
            champion_version=to,
            challenger_version=current,
            evidence={"restored": to, "demoted": current},
            conn=c,
        ),
    )
    return {"model": name, "champion_version": to, "previous_champion": current}

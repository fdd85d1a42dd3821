"""MonitorLog: checks and decisions round-trip with stable keys, newest first, filtered by model."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from genloom.core.errors import ConfigError
from genloom.monitor.store import CHECK_KEYS, DECISION_KEYS, MonitorLog


def test_checks_and_decisions_round_trip(tmp_path):
    log = MonitorLog(create_engine(f"sqlite:///{tmp_path / 'c.db'}"))
    a = log.add_check(
        kind="drift",
        signal="prompt_words",
        method="psi",
        score=0.3,
        threshold=0.2,
        breached=True,
        model="m",
        version=1,
        evidence={"bins": [1, 2]},
    )
    b = log.add_check(
        kind="quality",
        signal="error_rate",
        method="rate",
        score=0.0,
        threshold=0.05,
        breached=False,
        model="other",
        p_value=float("nan"),
    )
    rows = log.checks()
    assert [r["id"] for r in rows] == [b, a]
    assert tuple(rows[0]) == CHECK_KEYS
    assert rows[0]["p_value"] is None and rows[0]["breached"] is False
    only = log.checks(model="m")
    assert len(only) == 1 and only[0]["breached"] is True and only[0]["evidence"] == {"bins": [1, 2]}
    d = log.add_decision(
        model="m", action="rollback", reason="manual", champion_version=1, challenger_version=2
    )
    dec = log.decisions(model="m")
    assert [x["id"] for x in dec] == [d] and tuple(dec[0]) == DECISION_KEYS
    assert dec[0]["evidence"] == {} and log.decisions(model="other") == []
    with pytest.raises(ConfigError):
        log.add_check(kind="nope", signal="x", method="psi", score=1, threshold=1, breached=False)
    with pytest.raises(ConfigError):
        log.add_decision(model="m", action="explode", reason="")

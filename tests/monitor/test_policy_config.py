"""The pipeline file's ``monitor:`` section: defaults equal to the signals' Thresholds, every key
parsed, unknown keys and bad durations refused at their path."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from genloom.core.config import MonitorConfig, validate_config
from genloom.core.errors import ConfigError
from genloom.monitor.policy import thresholds_of
from genloom.monitor.signals import Thresholds

BASE = {"name": "m", "sources": [{"type": "manual", "path": "notes.jsonl"}]}


def test_defaults_are_the_signals_thresholds() -> None:
    cfg = validate_config(dict(BASE))
    assert cfg.monitor == MonitorConfig()
    assert thresholds_of(cfg.monitor) == Thresholds()
    assert asdict(Thresholds()) == cfg.monitor.thresholds.model_dump()
    assert (cfg.monitor.window, cfg.monitor.on_breach, cfg.monitor.schedule) == ("24h", "none", None)
    assert cfg.monitor.retrain_on == ["drift", "quality", "feedback"]


def test_every_key_parses_and_the_section_is_frozen() -> None:
    raw = {
        **BASE,
        "monitor": {
            "window": "1h30m",
            "thresholds": {"psi": 0.3, "error_rate": 0.05, "min_requests": 20},
            "on_breach": "retrain",
            "retrain_on": ["drift"],
            "schedule": "7d",
            "cooldown": "30m",
            "webhook": "https://hooks.example/${env:HOOK_TOKEN}",
            "prometheus_textfile": "metrics/genloom.prom",
        },
    }
    cfg = validate_config(raw, env={"HOOK_TOKEN": "s3cret"})
    m = cfg.monitor
    th = thresholds_of(m)
    assert (th.psi, th.error_rate, th.min_requests, th.js) == (0.3, 0.05, 20, 0.1)
    assert (m.on_breach, m.retrain_on, m.schedule, m.cooldown) == ("retrain", ["drift"], "7d", "30m")
    assert m.webhook is not None and m.webhook.get_secret_value() == "https://hooks.example/s3cret"
    assert "s3cret" not in str(m) and "s3cret" not in str(cfg.model_dump(mode="json"))
    assert m.prometheus_textfile == "metrics/genloom.prom"
    with pytest.raises(Exception, match="frozen"):
        m.window = "2h"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("monitor", "path", "text"),
    [
        ({"on_breach": "retrian"}, "monitor.on_breach", "retrain"),
        ({"windw": "1h"}, "monitor.windw", "did you mean 'window'"),
        ({"thresholds": {"psii": 0.1}}, "monitor.thresholds.psii", "did you mean 'psi'"),
        ({"window": "soon"}, "monitor.window", "not a duration"),
        ({"schedule": "7 weeks"}, "monitor.schedule", "not a duration"),
        ({"retrain_on": ["latency"]}, "monitor.retrain_on.0", "drift"),
        ({"thresholds": {"ks_alpha": 2}}, "monitor.thresholds.ks_alpha", "less than 1"),
    ],
)
def test_mistakes_are_refused_at_their_path(monitor: dict, path: str, text: str) -> None:
    with pytest.raises(ConfigError) as e:
        validate_config({**BASE, "monitor": monitor})
    assert path in str(e.value) and text in str(e.value)

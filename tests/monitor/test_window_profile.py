"""A request-log window as the reference: `window_profile` then `run_checks` finds the shifted
latency, completion tokens and output words, and leaves the unshifted prompt side alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import create_engine

from genloom.monitor.signals import run_checks, window_profile
from tests.monitor.test_monitor_cli import OTHER, WORDS, _log, _texts


def test_window_profile_checks(tmp_path):
    rng = np.random.default_rng(0)
    engine = create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    day1 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for day, (words, slow, tokens) in enumerate([(WORDS, 1.0, 10), (OTHER, 2.0, 30)]):
        for i in range(300):
            rows.append(
                {
                    "request_id": f"d{day}-{i}",
                    "created_at": day1 + timedelta(days=day, seconds=i),
                    "endpoint": "/v1/completions",
                    "model": "m",
                    "version": 1,
                    "latency_s": float(rng.lognormal(np.log(0.5 * slow), 0.2)),
                    "prompt_tokens": int(rng.integers(5, 15)),
                    "completion_tokens": int(rng.integers(tokens, tokens + 10)),
                    "status": 200,
                    "prompt": _texts(rng, 1, WORDS, 5, 15)[0],
                    "output": _texts(rng, 1, words, 5, 15)[0],
                }
            )
    _log(engine, rows)
    day2, day3 = day1 + timedelta(days=1), day1 + timedelta(days=2)
    profile = window_profile(engine, "m", day1, day2)
    assert profile["source"] == "requests" and profile["window"]["requests"] == 300
    assert profile["output_vocabulary"]["oov_tokens"] == 0 and profile["completion_tokens"]["n"] == 300
    assert sum(profile["latency"]["counts"]) == 300

    same = run_checks(engine, "m", 1, profile, "ref", False, day1, day2, record=False)
    drift = [c for c in same.checks if c.kind == "drift"]
    assert {c.signal for c in drift} >= {"output_oov_rate", "prompt_tokens", "completion_tokens", "latency_s"}
    assert not any(c.breached or c.skipped for c in drift)  # the reference against itself

    report = run_checks(engine, "m", 1, profile, "ref", False, day2, day3, record=False)
    breached = {(c.signal, c.method) for c in report.breached}
    assert breached >= {
        ("latency_s", "psi"),
        ("latency_s", "ks"),
        ("completion_tokens", "psi"),
        ("completion_tokens", "ks"),
        ("output_oov_rate", "js"),
        ("output_oov_rate", "chi2"),
    }
    assert not {s for s, _ in breached} & {"prompt_words", "prompt_tokens", "prompt_oov_rate"}
    oov = next(c for c in report.checks if c.signal == "output_oov_rate" and c.method == "js")
    assert oov.evidence["oov_rate"] == 1.0  # every output word of day 2 is new

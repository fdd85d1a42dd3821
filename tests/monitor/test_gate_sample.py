"""The evaluation gates on a window's served outputs: diverse outputs pass, a model stuck in a
loop fails repetition_4 and distinct_2 (absolute and relative to its own evaluation), gates that
need held-out data are skipped with the reason, and a thin window is skipped."""

from __future__ import annotations

import random

from genloom.core.config import Gate
from genloom.monitor.gate_sample import gate_sample_checks, output_figures


def _diverse(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(5000)}" for _ in range(30)) for _ in range(n)]


def _looping(n: int) -> list[str]:
    return [" ".join(["the model said"] * 10) for _ in range(n)]


GATES = {
    "repetition_4": Gate(max=0.3),
    "distinct_2": Gate(min_vs_champion=-0.1),
    "val_bpc": Gate(max=4.0),
}


def test_figures_of_outputs() -> None:
    figs, skipped = output_figures(_looping(5))
    assert figs["repetition_4"] is not None and figs["repetition_4"] > 0.8
    assert figs["distinct_2"] is not None and figs["distinct_2"] < 0.1
    diverse, _ = output_figures(_diverse(40))
    assert diverse["repetition_4"] is not None and diverse["repetition_4"] < 0.1


def test_diverse_outputs_pass_and_a_loop_fails_with_the_bound() -> None:
    champion = {"distinct_2": 0.75, "repetition_4": 0.01}
    ok = {c.signal: c for c in gate_sample_checks(_diverse(40), GATES, champion, sampled_from=400)}
    assert not ok["gate:repetition_4"].breached and not ok["gate:distinct_2"].breached
    assert "gate:val_bpc" not in ok  # a figure of held-out data, not of outputs
    assert (
        ok["gate:distinct_2"].evidence["sample"] == 40
        and ok["gate:distinct_2"].evidence["sampled_from"] == 400
    )

    bad = {c.signal: c for c in gate_sample_checks(_looping(40), GATES, champion, sampled_from=40)}
    rep, dis = bad["gate:repetition_4"], bad["gate:distinct_2"]
    assert rep.breached and rep.threshold == 0.3 and rep.score is not None and rep.score > 0.8
    assert dis.breached and abs((dis.threshold or 0) - 0.65) < 1e-9  # the champion's 0.75 - 0.1
    assert dis.evidence["champion_at_evaluation"] == 0.75


def test_a_thin_window_and_no_gates() -> None:
    thin = gate_sample_checks(_looping(5) + ["", "  "], GATES, None, sampled_from=7)
    assert {c.signal for c in thin} == {"gate:repetition_4", "gate:distinct_2"}
    assert all(not c.breached and c.skipped for c in thin)
    assert "5 non-empty outputs" in next(c for c in thin if c.signal == "gate:repetition_4").skipped
    assert gate_sample_checks(_looping(40), {}, None, sampled_from=40) == []

"""Gates and metric directions decide promotion."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import TINY_TRAIN, write_pipeline

from genloom.core.config import Gate
from genloom.evaluate.gates import check_gates, describe_failures, failed_gates, gate_rows, is_better
from genloom.models.text_family import TEXT_DIRECTIONS
from genloom.pipeline import Pipeline


def test_better_follows_the_direction() -> None:
    assert is_better(1.0, 2.0, "min") and not is_better(2.0, 1.0, "min")
    assert is_better(2.0, 1.0, "max") and not is_better(1.0, 2.0, "max")
    assert not is_better(1.0, 1.0, "min") and not is_better(1.0, 1.0, "max")  # a tie never promotes
    assert TEXT_DIRECTIONS["val_bpc"] == "min"


def test_gates_check_both_bounds_and_a_missing_metric() -> None:
    out = check_gates(
        {"a": 1.0, "b": 5.0}, {"a": Gate(min=0.5, max=2.0), "b": Gate(max=4.0), "c": Gate(min=0)}
    )
    assert [out[k]["passed"] for k in "abc"] == [True, False, False]


def test_relative_gates_offset_the_champions_value_and_say_by_how_much_they_missed() -> None:
    gates = {
        "val_bpb": Gate(max=1.9, max_vs_champion=0.0),
        "distinct_2": Gate(min_vs_champion=-0.02),
    }
    champion = {"val_bpb": 1.5, "distinct_2": 0.60}
    out = check_gates({"val_bpb": 1.6, "distinct_2": 0.59}, gates, champion)
    bpb = {c["gate"]: c for c in out["val_bpb"]["checks"]}
    assert bpb["max"]["passed"] and bpb["max"]["missed_by"] == 0.0
    assert not bpb["max_vs_champion"]["passed"]
    assert bpb["max_vs_champion"]["bound"] == 1.5
    assert abs(bpb["max_vs_champion"]["missed_by"] - 0.1) < 1e-12
    assert not out["val_bpb"]["passed"] and out["val_bpb"]["champion"] == 1.5
    # 0.59 >= 0.60 - 0.02: within the allowed drop
    assert out["distinct_2"]["passed"] and abs(out["distinct_2"]["checks"][0]["bound"] - 0.58) < 1e-12
    assert failed_gates(out) == ["val_bpb"]
    assert describe_failures(out) == "val_bpb 1.6 > max vs champion 1.5 (by 0.1)"

    worse = check_gates({"val_bpb": 1.0, "distinct_2": 0.50}, gates, champion)
    assert worse["val_bpb"]["passed"] and not worse["distinct_2"]["passed"]
    assert abs(worse["distinct_2"]["checks"][0]["missed_by"] - 0.08) < 1e-12


def test_relative_gates_pass_without_a_champion_and_fail_when_it_lacks_the_metric() -> None:
    gates = {"distinct_2": Gate(min_vs_champion=-0.02)}
    first = check_gates({"distinct_2": 0.1}, gates, None)
    assert first["distinct_2"]["passed"] and first["distinct_2"]["checks"][0]["note"]
    lacking = check_gates({"distinct_2": 0.1}, gates, {"val_bpc": 2.0})
    assert not lacking["distinct_2"]["passed"]
    assert "champion does not report" in lacking["distinct_2"]["checks"][0]["note"]


def test_gate_rows_flatten_one_row_per_bound() -> None:
    out = check_gates({"a": 3.0}, {"a": Gate(min=1.0, max=2.0)}, None)
    rows = gate_rows(out)
    assert [(r["gate"], r["bound"], r["passed"], r["missed_by"]) for r in rows] == [
        ("min", 1.0, True, 0.0),
        ("max", 2.0, False, 1.0),
    ]
    assert set(rows[0]) == {"gate", "metric", "value", "champion", "bound", "passed", "missed_by", "note"}


def test_a_gate_config_keeps_its_cache_key_without_relative_bounds() -> None:
    from genloom.core.config import EvaluateConfig, SplitConfig

    cfg = EvaluateConfig(gates={"val_bpc": Gate(max=4.0)})
    assert cfg.key_dict() == {"gates": {"val_bpc": {"min": None, "max": 4.0}}, "max_tokens": None}
    assert not cfg.relative() and EvaluateConfig(gates={"x": Gate(max_vs_champion=0)}).relative()
    assert SplitConfig().key_dict() == {"val_fraction": 0.05, "seed": 0}
    assert SplitConfig(test_fraction=0.1).key_dict()["test_fraction"] == 0.1
    with pytest.raises(ValueError, match="below 1"):
        SplitConfig(val_fraction=0.5, test_fraction=0.5)


def test_a_metric_without_a_direction_never_promotes(tmp_path: Path) -> None:
    train = {**TINY_TRAIN, "max_steps": 4, "eval_interval": 4}
    path = write_pipeline(tmp_path / "p", train=train, register={"metric": "val_tokens"})
    p = Pipeline.from_file(path)
    assert p.run().model["decision"] == "promoted: first champion"
    p.close()
    path = write_pipeline(tmp_path / "p", train={**train, "max_steps": 6}, register={"metric": "val_tokens"})
    p = Pipeline.from_file(path)
    decision = p.run().model["decision"]
    p.close()
    assert decision.startswith("kept as candidate: metric 'val_tokens' has no direction"), decision


def test_the_run_summary_prints_the_gate_table_with_by_how_much_a_gate_missed() -> None:
    from rich.console import Console

    from genloom.cli import gate_table

    gates = {"val_bpb": Gate(max=1.9, max_vs_champion=0.0), "judge_score": Gate(min=5)}
    rows = gate_rows(check_gates({"val_bpb": 1.6}, gates, {"val_bpb": 1.5}))
    console = Console(record=True, width=140)
    console.print(gate_table(rows))
    lines = console.export_text().splitlines()
    relative = next(line for line in lines if "max_vs_champion" in line)
    assert "1.6" in relative and "1.5" in relative and "no" in relative and "0.1" in relative
    absolute = next(line for line in lines if " max " in f" {line} " and "val_bpb" in line)
    assert "yes" in absolute
    missing = next(line for line in lines if "judge_score" in line)
    assert "no" in missing and "the model does not report it" in missing

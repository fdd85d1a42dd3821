"""Gates and metric directions decide promotion."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TINY_TRAIN, write_pipeline

from genloom.core.config import Gate
from genloom.evaluate.gates import check_gates, is_better
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

"""The champion's loss on its own outputs: a tiny GPT trained for 150 steps on notes of a few words
(val_bpc about 1.8) finds its own generations as likely as its validation text and random
character strings far less likely; only the output's tokens are scored, a pair longer than the
context keeps the output's first block_size - 1 tokens, and the check is skipped (never passed)
when it cannot be computed."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine

from genloom.monitor.output_loss import OutputLossCheck, loss_pairs, score_outputs
from genloom.monitor.signals import Check, Thresholds, run_checks
from genloom.pipeline import Pipeline
from tests.monitor.test_monitor_cli import WORDS, _log, _rows
from tests.monitor.test_retrain import BASE, _notes
from tests.monitor.trained import trained_model

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(the champion's folder, its catalog metrics) of a tiny GPT trained for 150 steps."""
    folder = tmp_path_factory.mktemp("loss") / "p"
    folder.mkdir()
    _notes(folder / "notes.jsonl", 200, 0)
    train = {**BASE["train"], "max_steps": 150, "eval_interval": 150}
    cfg = {**BASE, "train": train, "register": {"promote": "always"}}
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    p = Pipeline.from_file(folder / "pipeline.yaml")
    try:
        p.run()
        champion = p.catalog.champion(p.model_name)
        assert champion is not None
        return p.champion_dir(), dict(champion["metrics"])
    finally:
        p.close()


def _prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(5)) for _ in range(n)]


def _output_loss(
    tmp_path: Path, champion: tuple[Path, dict], prompts: list[str], outputs: list[str]
) -> Check:
    tmp_path.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    _log(engine, _rows("m", prompts, outputs, NOW - timedelta(minutes=5), "r"))
    model_dir, metrics = champion
    report = run_checks(
        engine,
        "m",
        1,
        {"kind": "table"},  # no drift checks: the sample check alone
        "ref",
        False,
        NOW - timedelta(hours=1),
        NOW,
        record=False,
        sample_checks=[OutputLossCheck(lambda: model_dir, metrics)],
    )
    (check,) = [c for c in report.checks if c.signal == "output_loss"]
    return check


def test_own_outputs_pass_and_random_strings_breach(tmp_path, champion):
    from genloom.models.text import generate

    model_dir, metrics = champion
    prompts = _prompts(80, 1)
    own = generate(model_dir, prompts, max_new_tokens=24, seed=0)
    check = _output_loss(tmp_path / "own", champion, prompts, own)
    assert (
        check.kind == "quality"
        and check.method == "bpc_ratio"
        and check.threshold == Thresholds().output_bpc_ratio
    )
    assert not check.breached and check.score is not None and 0.6 < check.score < 1.3
    ev = check.evidence
    assert ev["val_bpc"] == metrics["val_bpc"] and ev["outputs"] == 80 and ev["pairs_sampled"] == 80
    assert ev["bpc"] == pytest.approx(check.score * metrics["val_bpc"])
    assert 0 < ev["bpc_standard_error"] < 0.2 * ev["bpc"]

    rng = random.Random(2)
    noise = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz ,.") for _ in range(80)) for _ in prompts]
    check = _output_loss(tmp_path / "noise", champion, prompts, noise)
    assert check.breached and check.score is not None and check.score > 2 * Thresholds().output_bpc_ratio
    assert check.evidence["outputs_over_threshold"] >= 75


def test_only_the_output_tokens_are_scored(champion):
    from genloom.models.text import load_model

    model_dir, _ = champion
    _, tok = load_model(model_dir)
    output = "table record value user"
    n_tokens = len(tok.encode(output, add_special_tokens=False).ids)
    short = score_outputs(model_dir, [("the", output)])
    long = score_outputs(model_dir, [(" ".join(["model"] * 200), output)])  # longer than the context
    assert short.tokens.tolist() == long.tokens.tolist() == [n_tokens]
    assert short.chars.tolist() == long.chars.tolist() == [len(output)]
    assert short.bits[0] != pytest.approx(long.bits[0])  # the prompt is context: it moves the loss
    # scored in one batch with other pairs, a pair's loss is the same (right padding is never seen)
    both = score_outputs(model_dir, [("the", output), ("the data", "file " * 20)])
    assert both.bits[0] == pytest.approx(short.bits[0], rel=1e-4)
    # an output longer than the context: its first block_size - 1 tokens
    too_long = score_outputs(model_dir, [("the", " ".join(["server"] * 100))])
    assert too_long.tokens.tolist() == [31] and 0 < too_long.chars[0] < 700
    assert score_outputs(model_dir, [("the", "")]).left_out == 1


def test_pairs_of_chat_and_listed_requests():
    chat = json.dumps([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    sample = [
        ("/v1/chat/completions", chat, "hello there"),
        ("/v1/completions", json.dumps(["one", "two"]), json.dumps(["uno", "dos"])),
        ("/v1/completions", "a prompt", json.dumps(["first", "second"])),
        ("/v1/completions", "no output", None),
        ("/v1/completions", None, "no prompt"),
        ("/v1/completions", "empty", ""),
    ]
    pairs = loss_pairs(sample)
    assert pairs[0] == (
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "hello there",
    )
    assert pairs[1:] == [("one", "uno"), ("two", "dos"), ("a prompt", "first"), ("a prompt", "second")]


def test_skipped_with_the_reason(tmp_path, champion):
    model_dir, metrics = champion
    few = _output_loss(tmp_path / "few", champion, _prompts(10, 3), _prompts(10, 4))
    assert few.skipped and "10 text requests" in few.skipped and not few.breached
    no_bpc = _output_loss(tmp_path / "no_bpc", (model_dir, {}), _prompts(60, 3), _prompts(60, 4))
    assert no_bpc.skipped and "no val_bpc" in no_bpc.skipped and no_bpc.score is None
    empty = _output_loss(tmp_path / "empty", champion, _prompts(60, 3), [""] * 60)
    assert empty.skipped and "no prompt and output pairs" in empty.skipped
    # a registered version without a model folder (only its manifests)
    _, p, _ = trained_model(tmp_path / "fake", {"text": _prompts(20, 5)})
    missing = _output_loss(
        tmp_path / "missing", (p.champion_dir(), metrics), _prompts(60, 3), _prompts(60, 4)
    )
    p.close()
    assert missing.skipped and "could not score" in missing.skipped and "config.json" in missing.skipped
    assert Thresholds().min_requests == 50

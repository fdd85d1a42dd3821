"""The command line as a user types it."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from genloom.cli import app
from tests.conftest import TINY_TRAIN, write_pipeline

runner = CliRunner()


def test_init_writes_a_valid_commented_pipeline(tmp_path: Path) -> None:
    res = runner.invoke(app, ["init", str(tmp_path / "my proj")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "my proj" / "pipeline.yaml").read_text()
    assert text.count("#") > 10 and "name: my-proj" in text
    assert (tmp_path / "my proj" / "data").is_dir()
    assert runner.invoke(app, ["validate", str(tmp_path / "my proj" / "pipeline.yaml")]).exit_code == 0
    assert runner.invoke(app, ["init", str(tmp_path / "my proj")]).exit_code == 1  # never overwrites


def test_run_status_explain_lineage_rejected_generate(tmp_path: Path) -> None:
    path = str(write_pipeline(tmp_path, train=TINY_TRAIN))
    res = runner.invoke(app, ["run", path])
    assert res.exit_code == 0, res.output
    assert "champion" in res.output and "genloom generate" in res.output

    res = runner.invoke(app, ["run", path, "--log-format", "json"])
    events = [json.loads(line) for line in res.output.splitlines()]
    ends = [e for e in events if e["event"] == "stage_end"]
    assert ends and all(e["status"] in ("cached", "skipped") for e in ends)
    assert events[-1]["text"] == "summary" and events[-1]["status"] == "succeeded"

    assert "cached" in runner.invoke(app, ["explain", path]).output
    assert "champion" in runner.invoke(app, ["status", path]).output
    res = runner.invoke(app, ["lineage", "python_docs:module/json/__init__.py", "-f", path])
    assert res.exit_code == 0 and "ingest" in res.output and "model t v1" in res.output
    assert runner.invoke(app, ["lineage", "python_docs:nope", "-f", path]).exit_code == 1
    assert runner.invoke(app, ["rejected", path]).exit_code == 0

    res = runner.invoke(
        app, ["generate", path, "--prompt", "The json", "--max-new-tokens", "8", "--seed", "1"]
    )
    assert res.exit_code == 0 and res.output.startswith("The json")

    res = runner.invoke(app, ["run", path, "--until", "nope"])
    assert res.exit_code == 1 and "unknown stage" in res.output


def test_generate_without_a_model_says_what_to_do(project: Path) -> None:
    res = runner.invoke(app, ["generate", str(project), "--prompt", "x"])
    assert res.exit_code == 1 and "genloom run" in res.output


def test_the_generate_hint_uses_words_of_this_corpus(tmp_path: Path) -> None:
    data = tmp_path / "zoo" / "data"
    data.mkdir(parents=True)
    animals = ["zebras", "otters", "herons", "lynxes", "bison", "newts"]
    for i in range(40):
        a, b = animals[i % 6], animals[(i * 5 + 1) % 6]
        body = f"Striped {a} graze near the river while {b} watch from the reeds, day {i}. " * 6
        (data / f"note_{i:02d}.txt").write_text(body)
    path = write_pipeline(
        tmp_path / "zoo",
        sources=[{"type": "text", "paths": ["data"]}],
        split={"val_fraction": 0.2, "seed": 0},
        train=TINY_TRAIN,
    )
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    hint = next(line for line in res.output.splitlines() if line.startswith("generate text:"))
    assert hint.endswith("--prompt 'Striped zebras graze'"), hint


def test_plain_progress_lines_appear_periodically_and_at_stage_end() -> None:
    import io
    import re
    import time

    from genloom.console import PlainReporter

    stream = io.StringIO()
    rep = PlainReporter(stream, interval=0.05)
    rep.stage_start("ingest", 4)
    rep.stage_advance("ingest", 1, 500)
    rep.stage_start("train", None, unit="steps")
    rep.stage_advance("train", 0, 0, {"step": 10, "total": 100, "loss": 5.5, "eta_s": 90.0})
    time.sleep(0.5)  # about ten ticks with no event: the lines keep coming
    rep.stage_advance("train", 0, 0, {"step": 40, "total": 100, "loss": 4.25, "eta_s": 60.0})
    time.sleep(0.5)
    rep.stage_end("train", "ran", "first run", 65.0, {})
    rep.stage_end("evaluate", "cached", "artifact exists", 0.0, {})
    rep.close()
    lines = stream.getvalue().splitlines()
    ingest = [
        ln
        for ln in lines
        if re.match(r"ingest\s+1/4 shards\s+500 rows\s+[\d,.]+ rows/s\s+elapsed \S+\s+eta \S+s$", ln)
    ]
    assert len(ingest) >= 2, lines
    train = [
        ln
        for ln in lines
        if re.match(r"train\s+step \d+/100\s+(rate \?|\S+ steps/s)\s+elapsed \S+\s+eta ", ln)
    ]
    assert len(train) >= 2, lines
    assert re.search(r"eta 1m(2\ds|30s)\s+loss=5.5$", train[0]), train  # the loop's eta_s, aged
    step40 = r"step 40/100\s+[\d.]+ steps/s\s+elapsed \S+\s+eta (5\ds|1m00s)\s+loss=4.25$"
    assert any(re.search(step40, ln) for ln in train), train
    assert re.match(
        r"train\s+ran in 1m05s\s+step 40/100\s+[\d,.]+ steps/s\s+loss=4.25\s+\(first run\)$", lines[-2]
    )
    assert re.match(r"evaluate\s+cached\s+\(artifact exists\)$", lines[-1])
    n = len(lines)
    time.sleep(0.15)
    assert len(stream.getvalue().splitlines()) == n  # closed: the timer thread stopped

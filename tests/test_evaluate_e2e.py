"""Evaluation end to end with tiny models: a challenger that fails a relative gate stays a
candidate and the report says why; one that passes becomes champion and the old champion is
archived and kept; an LLM judge (a live loopback endpoint) and reference scores through the
pipeline, the judge's replies cached across runs; a test split apart from validation, on which
the final metrics are computed; ``genloom report``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from genloom.cli import app
from genloom.pipeline import Pipeline, split_of
from tests.conftest import TINY_TRAIN, write_pipeline
from tests.evaluate.test_judge import expected_score, judge_app
from tests.evaluate.test_report import browser_check
from tests.serve.conftest import live_server

runner = CliRunner()
RELATIVE = {"gates": {"val_bpc": {"max": 20, "max_vs_champion": 0.0}}}


def run(path: Path, *overrides: str) -> Any:
    p = Pipeline.from_file(path, overrides=list(overrides))
    try:
        return p.run()
    finally:
        p.close()


def evaluation(summary: Any) -> dict[str, Any]:
    """The run's ``metrics.json`` (beside its report)."""
    return dict(json.loads((Path(summary.report).parent / "metrics.json").read_text()))


def prepared_dir(path: Path, summary: Any) -> Path:
    """The local folder of the run's prepared artifact."""
    p = Pipeline.from_file(path)
    try:
        key = next(r.key for r in summary.stages if r.stage == "prepare")
        return Path(p.store.local_path(p.store.artifact_dir("prepare", key)))
    finally:
        p.close()


REFERENCES = [
    {"prompt": "It is a truth", "reference": "universally acknowledged, that a single man"},
    {"prompt": "The", "reference": "end of the story"},
]


@pytest.fixture
def judge() -> Any:
    """A live OpenAI-compatible judge on loopback: (its /v1 URL, the request bodies it received)."""
    pytest.importorskip("openai", reason="pip install 'genloom[llm]'")
    pytest.importorskip("fastapi", reason="pip install 'genloom[serve]'")
    log: list[dict[str, Any]] = []
    with live_server(judge_app(log)) as url:
        yield f"{url}/v1", log


def test_a_relative_gate_blocks_a_worse_challenger_and_a_better_one_takes_over(
    tmp_path: Path, judge: tuple[str, list[dict[str, Any]]]
) -> None:
    url, requests = judge
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in REFERENCES))
    evaluate = {
        **RELATIVE,
        "samples": 8,
        "embeddings": False,
        "references": "refs.jsonl",  # relative to the pipeline file, not the working directory
        "judge": {
            "base_url": url,
            "model": "judge-1",
            "rubric": "Rate the fluency.",
            "samples": 3,
            "sample_tokens": 12,
        },
    }
    path = write_pipeline(folder, train=TINY_TRAIN, evaluate=evaluate)
    first = run(path)
    assert first.model["stage"] == "champion" and first.model["decision"] == "promoted: first champion"
    assert evaluation(first)["champion"] is None  # nothing to compare with: the gate passes
    champion_dir = Path(first.model["uri"])
    # the judge: 3 samples asked for, scored, in the metrics and the report; the references scored
    result = evaluation(first)
    assert len(requests) == 3 and requests[0]["response_format"]["type"] == "json_schema"
    judged = result["judge"]
    assert [r["score"] for r in judged] == [expected_score(r["text"]) for r in judged]
    assert result["metrics"]["judge_score"] == pytest.approx(sum(r["score"] for r in judged) / 3)
    assert result["directions"]["judge_score"] == "max"
    assert all(isinstance(result["metrics"][m], float) for m in ("ref_bleu", "ref_chrf", "ref_rouge_l"))
    doc = Path(first.report).read_text()
    assert '<section id="judge">' in doc and judged[0]["reason"] in doc
    assert "universally acknowledged, that a single man" in doc  # the reference pairs

    # 2 steps: near its random start, worse than the champion on the same data -> the gate fails
    weak = run(path, "train.max_steps=2")
    assert weak.model["version"] == 2 and weak.model["stage"] == "candidate"
    assert weak.model["decision"].startswith("kept as candidate: failed gates val_bpc")
    assert "max vs champion" in weak.model["decision"]
    result = evaluation(weak)
    assert result["champion"]["version"] == 1 and result["split"] == "val"
    # the challenger's 3 samples asked for; the champion's, the same as in the first run, cached
    assert (
        len(requests) == 6
        and result["champion"]["metrics"]["judge_score"] == evaluation(first)["metrics"]["judge_score"]
    )
    gate = result["gates"]["val_bpc"]
    ours, theirs = result["metrics"]["val_bpc"], result["champion"]["metrics"]["val_bpc"]
    assert gate["champion"] == theirs and ours > theirs and not gate["passed"]
    relative = next(c for c in gate["checks"] if c["gate"] == "max_vs_champion")
    assert relative["bound"] == theirs and abs(relative["missed_by"] - (ours - theirs)) < 1e-9
    # the run summary in the catalog holds the gate table
    p = Pipeline.from_file(path)
    try:
        recorded = p.catalog.runs("t", limit=1)[0]["summary"]["model"]["gates"]
        assert {(r["gate"], r["passed"]) for r in recorded} == {("max", True), ("max_vs_champion", False)}
        assert p.catalog.champion("t")["version"] == 1
    finally:
        p.close()
    # the report says which gate failed, against which champion value, and by how much
    doc = Path(weak.report).read_text()
    assert "Gates failed" in doc
    row = re.search(r'<tr class="fail"><td>max_vs_champion</td><td>val_bpc</td>(.*?)</tr>', doc)
    assert row is not None and f"{ours - theirs:.4g}" in row.group(1)
    headings = browser_check(Path(weak.report))
    assert headings["gates"] == "Quality gates"

    # 120 steps: better than the champion -> promoted; the old champion archived and kept
    better = run(path, "train.max_steps=120")
    assert better.model["version"] == 3 and better.model["stage"] == "champion"
    assert better.model["decision"].startswith("promoted: val_bpc")
    p = Pipeline.from_file(path)
    try:
        versions = {m["version"]: m["stage"] for m in p.catalog.models("t")}
        assert versions == {1: "archived", 2: "candidate", 3: "champion"}
        archived = p.catalog.model_version("t", 1)
        assert Path(archived["uri"]) == champion_dir and (champion_dir / "config.json").exists()
        assert p.model_dir(1) == champion_dir  # still usable by version
    finally:
        p.close()
    assert "Every gate passed" in Path(better.report).read_text()

    # a rerun after the promotion: the evaluation (made against v1) is a cache hit
    again = run(path, "train.max_steps=120")
    assert {r.stage: r.status for r in again.stages}["evaluate"] == "cached"
    assert len(requests) == 9  # v3's samples only: v1's were cached
    # the reference file's content is in the evaluation's key
    p = Pipeline.from_file(path, overrides=["train.max_steps=120"])
    try:
        before = {pl.stage: pl.key for pl in p.plan()}["evaluate"]
        (folder / "refs.jsonl").write_text(json.dumps(REFERENCES[0]) + "\n")
        assert {pl.stage: pl.key for pl in p.plan()}["evaluate"] != before
    finally:
        p.close()

    # genloom report: the latest run's report, or a given run's
    res = runner.invoke(app, ["report", str(path)])
    assert res.exit_code == 0, res.output
    assert Path(res.output.strip()) == Path(again.report)
    res = runner.invoke(app, ["report", str(path), "--run", weak.run_id[:6]])
    assert res.exit_code == 0 and Path(res.output.strip()) == Path(weak.report)
    res = runner.invoke(app, ["report", str(path), "--run", "nosuchrun"])
    assert res.exit_code == 1 and "no run" in res.output


def test_a_test_split_is_disjoint_from_validation_and_training_and_scores_the_model(tmp_path: Path) -> None:
    split = {"val_fraction": 0.1, "test_fraction": 0.2, "seed": 0}
    preprocess = [{"type": "normalize"}, {"type": "language"}]  # the report's language mix reads its column
    path = write_pipeline(
        tmp_path / "p", train={**TINY_TRAIN, "max_steps": 6}, split=split, preprocess=preprocess
    )
    summary = run(path)
    p = Pipeline.from_file(path)
    try:
        texts = {"train": set(), "val": set(), "test": set()}
        for batch in p.iter_dataset("features", columns=["id", "text"]):
            for text, part in zip(
                batch.column("text").to_pylist(), split_of(batch, 0.1, 0, 0.2), strict=True
            ):
                texts[part].add(text)
    finally:
        p.close()
    prepared = prepared_dir(path, summary)
    assert texts["test"] and texts["val"] and texts["train"]
    assert not (texts["test"] & texts["val"]) and not (texts["test"] & texts["train"])
    written = set(pq.read_table(prepared / "test_texts.parquet").column("text").to_pylist())
    assert written == texts["test"]
    assert set(pq.read_table(prepared / "val_texts.parquet").column("text").to_pylist()) == texts["val"]
    # the final metrics are the test split's: the loss of the model on test.bin, not on val.bin
    from genloom.models.text_family import evaluate_text_model

    result = evaluation(summary)
    model_dir = Path(summary.model["uri"])
    on_test = evaluate_text_model(model_dir, prepared / "test.bin")
    on_val = evaluate_text_model(model_dir, prepared / "val.bin")
    assert result["split"] == "test" and summary.model["evaluated_on"] == "test"
    assert result["metrics"]["val_loss"] == pytest.approx(on_test["val_loss"], rel=1e-6)
    assert on_val["val_loss"] != pytest.approx(on_test["val_loss"], rel=1e-6)
    doc = Path(summary.report).read_text()
    assert "<b>test</b> split" in doc
    assert "Language mix" in doc and "the &#x27;lang&#x27; column (preprocess: language)" in doc
    assert re.search(r"<td>en</td><td>\d+ \(\d+\.\d%\)</td>", doc)


def test_without_a_test_split_the_split_and_its_key_are_unchanged() -> None:
    batch = pa.table({"id": [f"r{i}" for i in range(2000)]})
    old = split_of(batch, 0.1, 3)
    assert old == split_of(batch, 0.1, 3, 0.0) and "test" not in old
    new = split_of(batch, 0.1, 3, 0.2)
    # a test split takes rows from train only: validation keeps exactly its rows
    assert [i for i, s in enumerate(new) if s == "val"] == [i for i, s in enumerate(old) if s == "val"]
    assert 250 < new.count("test") < 550


def test_a_table_model_is_scored_on_its_test_rows(tmp_path: Path) -> None:
    pytest.importorskip("genloom.models.tabular_data")
    from tests.test_tabular_e2e import write_pipeline as write_table_pipeline
    from tests.test_tabular_e2e import write_table

    write_table(tmp_path / "customers.csv", rows=600)
    path = write_table_pipeline(tmp_path, "tabular_vae", epochs=1)
    summary = run(path, "split.test_fraction=0.25")
    prepared = prepared_dir(path, summary)
    ids = {
        name: set(pq.read_table(prepared / f"{name}.parquet").column("customer_id").to_pylist())
        for name in ("train", "val", "test")
    }
    assert ids["test"] and not (ids["test"] & ids["train"]) and not (ids["test"] & ids["val"])
    assert len(ids["train"]) + len(ids["val"]) + len(ids["test"]) == 600
    assert (prepared / "test.npy").exists()
    result = evaluation(summary)
    assert result["split"] == "test" and "quality" in result["metrics"]
    doc = Path(summary.report).read_text()
    assert "color: real vs synthetic" in doc and "Synthetic rows" in doc
    assert "Worst by DCR (the synthetic rows closest to a training row)" in doc
    browser_check(Path(summary.report))

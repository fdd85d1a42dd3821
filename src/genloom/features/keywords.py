"""Keyword phrases per document with RAKE (Rose, Engel, Cramer & Cowley 2010, "Automatic keyword extraction")."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from genloom.core.registry import FEATURES
from genloom.core.steps import Map, StepContext
from genloom.core.text_columns import write_column
from genloom.features._text import WORD_RE

#: phrase delimiters: every character that is not a letter, digit, space, apostrophe or hyphen
_DELIMITER = re.compile(r"[^\w\s'’\-]|_")


def rake(text: str, stop: frozenset[str], max_words: int, min_chars: int) -> list[tuple[str, float]]:
    """Candidate phrases of ``text`` with their RAKE scores, best first (ties: first occurrence first).

    Candidates are the runs of words between stop words and punctuation, at most ``max_words``
    long; a word's score is its degree (the summed length of the candidates it is in) over its
    frequency; a phrase's score is the sum of its words' scores."""
    phrases: list[list[str]] = []
    for fragment in _DELIMITER.split(text.lower()):
        run: list[str] = []
        for w in [*WORD_RE.findall(fragment), None]:
            if w is None or w in stop or w.isdigit() or len(w) < min_chars:
                if run and len(run) <= max_words:
                    phrases.append(run)
                run = []
            else:
                run.append(w)
    freq: dict[str, int] = {}
    degree: dict[str, int] = {}
    for p in phrases:
        for w in p:
            freq[w] = freq.get(w, 0) + 1
            degree[w] = degree.get(w, 0) + len(p)
    scored: dict[str, tuple[float, int]] = {}
    for i, p in enumerate(phrases):
        key = " ".join(p)
        if key not in scored:
            scored[key] = (sum(degree[w] / freq[w] for w in p), i)
    return [(k, s) for k, (s, _) in sorted(scored.items(), key=lambda kv: (-kv[1][0], kv[1][1]))]


@FEATURES.register("keywords")
class KeywordsFeature(Map):
    """Keyword phrases of each record with RAKE: the ``top_k`` best in ``<output>`` (a list of strings).

    RAKE (Rapid Automatic Keyword Extraction) needs no corpus statistics: candidates are the
    runs of up to ``max_words`` words between stop words (scikit-learn's English list by
    default) and punctuation; each word scores its degree (how many words it co-occurs with in
    candidates, itself included) over its frequency, a phrase the sum of its words. It was chosen
    over TF-IDF-within-document because it finds multi-word phrases ("support ticket queue"),
    works on a single short record, and is stateless, so shards run independently with no fit
    pass (the ``tfidf`` feature already gives corpus-weighted single terms). Phrases are
    lower-cased; numbers and words shorter than ``min_chars`` break phrases. With ``scores`` the
    phrases' scores go to ``<output>_scores`` (float32, same order). Null text gets an empty list.
    """

    type: Literal["keywords"] = "keywords"
    column: str = Field("text", description="The text column")
    output: str = Field("keywords", description="Column of the keyword phrases")
    top_k: int = Field(5, ge=1, description="Phrases kept per record")
    max_words: int = Field(3, ge=1, description="Longer candidate phrases are left out")
    min_chars: int = Field(2, ge=1, description="Shorter words break phrases")
    stop_words: Literal["english"] | list[str] = Field(
        "english", description="english (scikit-learn's list) or a list of words"
    )
    scores: bool = Field(False, description="Also write the phrases' RAKE scores to <output>_scores")

    extra: ClassVar[str] = "features"
    requires: ClassVar[tuple[str, ...]] = ("sklearn",)

    def _stop(self) -> frozenset[str]:
        if self.stop_words == "english":
            from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

            return frozenset(ENGLISH_STOP_WORDS)
        return frozenset(w.lower() for w in self.stop_words)

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        stop = self._stop()
        found = [
            rake(t, stop, self.max_words, self.min_chars)[: self.top_k] if t else []
            for t in table.column(self.column).to_pylist()
        ]
        table = write_column(
            table, self.output, pa.array([[k for k, _ in f] for f in found], pa.list_(pa.string()))
        )
        if self.scores:
            table = write_column(
                table,
                f"{self.output}_scores",
                pa.array([[s for _, s in f] for f in found], pa.list_(pa.float32())),
            )
        return table

"""Sentiment with VADER (Hutto & Gilbert 2014), per document and per sentence."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, PrivateAttr, model_validator

from genloom.core.registry import FEATURES
from genloom.core.steps import Map, StepContext
from genloom.core.text_columns import write_column
from genloom.features._text import split_sentences

#: the classes of ``<output>_label``
LABELS = ("negative", "neutral", "positive")


@FEATURES.register("sentiment")
class SentimentFeature(Map):
    """Score sentiment with VADER: ``<output>_compound`` in [-1, 1], ``_pos``/``_neg``/``_neu``, a ``_label``.

    VADER (vaderSentiment, its lexicon inside the package) is a rule-based model tuned on social
    media text: a valence lexicon plus rules for negation, intensifiers, "but", capitals and
    exclamation marks. The document scores are VADER's on the whole text; the label is
    ``positive`` when the compound score is at least ``positive_threshold``, ``negative`` when it
    is at most ``negative_threshold``, else ``neutral`` (VADER's authors' +-0.05). The label is a
    string column, so it can condition a text model (``train.controls: [sentiment_label]``) and
    balance a corpus (``balance`` on ``sentiment_label``). With ``per_sentence`` the compound
    score of each sentence (split after . ! ? and at blank lines) goes to ``<output>_sentences``.
    Empty or null text gets null scores and a null label (no control token). Stateless: the same
    text gets the same scores in every shard and process.
    """

    type: Literal["sentiment"] = "sentiment"
    column: str = Field("text", description="The text column to score")
    output: str = Field("sentiment", description="Prefix of the output columns (<output>_compound...)")
    positive_threshold: float = Field(
        0.05, ge=-1, le=1, description="Compound score from which the label is positive"
    )
    negative_threshold: float = Field(
        -0.05, ge=-1, le=1, description="Compound score up to which the label is negative"
    )
    per_sentence: bool = Field(
        True, description="Also write each sentence's compound score to <output>_sentences"
    )

    extra: ClassVar[str] = "features"
    requires: ClassVar[tuple[str, ...]] = ("vaderSentiment",)
    _analyzer: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> SentimentFeature:
        if self.negative_threshold >= self.positive_threshold:
            raise ValueError("negative_threshold must be below positive_threshold")
        return self

    def setup(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def label(self, compound: float) -> str:
        """The class of a compound score."""
        if compound >= self.positive_threshold:
            return "positive"
        if compound <= self.negative_threshold:
            return "negative"
        return "neutral"

    def scores(self, text: str) -> dict[str, float]:
        """VADER's {neg, neu, pos, compound} of one text."""
        return self._analyzer.polarity_scores(text)

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        texts = table.column(self.column).to_pylist()
        polarity = self._analyzer.polarity_scores  # looked up once: a private attribute goes through pydantic
        found = [polarity(t) if t and t.strip() else None for t in texts]
        for k in ("compound", "pos", "neg", "neu"):
            values = [s[k] if s is not None else None for s in found]
            table = write_column(table, f"{self.output}_{k}", pa.array(values, pa.float32()))
        hi, lo = self.positive_threshold, self.negative_threshold
        labels = [
            None
            if s is None
            else "positive"
            if s["compound"] >= hi
            else "negative"
            if s["compound"] <= lo
            else "neutral"
            for s in found
        ]
        table = write_column(table, f"{self.output}_label", pa.array(labels, pa.string()))
        if self.per_sentence:
            sentences = [
                None if s is None else [polarity(x)["compound"] for x in split_sentences(t)]
                for t, s in zip(texts, found, strict=True)
            ]
            table = write_column(
                table, f"{self.output}_sentences", pa.array(sentences, pa.list_(pa.float32()))
            )
        return table

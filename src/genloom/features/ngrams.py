"""Word or character n-grams per record, over a vocabulary fitted in one streaming pass."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genloom.core.registry import FEATURES
from genloom.features._vectorize import VectorizerStep, Weighting


@FEATURES.register("ngrams")
class NgramsFeature(VectorizerStep):
    """Add an n-gram vector per record (column ``ngrams``: sparse ``struct<indices, values>``).

    ``analyzer: word`` (default) counts word n-grams of ``ngram_range`` (default 1 to 2: words and
    word pairs); ``char`` counts character n-grams across the text (spaces included), ``char_wb``
    character n-grams padded inside word boundaries (robust to misspellings and morphology; a
    common choice is ``ngram_range: [2, 4]``). ``weighting``: ``count``, ``binary`` or ``tfidf``
    (scikit-learn's smoothed IDF, L2-normalised rows). The vocabulary is fitted shard by shard in
    one pass and pruned by ``min_df`` / ``max_df`` / ``max_features`` as scikit-learn prunes it; it
    is the state artifact. ``hashing: true`` hashes n-grams into ``n_features`` columns instead.
    Drops nothing.
    """

    type: Literal["ngrams"] = "ngrams"
    ngram_range: tuple[int, int] = Field((1, 2), description="Smallest and largest n of the n-grams")
    weighting: Weighting = Field("count", description="count, binary or tfidf")

    def current_weighting(self) -> Weighting:
        return self.weighting

"""Bag of words: term counts per record over a vocabulary fitted in one streaming pass."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genloom.core.registry import FEATURES
from genloom.features._vectorize import VectorizerStep, Weighting


@FEATURES.register("bag_of_words")
class BagOfWordsFeature(VectorizerStep):
    """Add a bag-of-words vector per record (column ``bag_of_words``: sparse ``struct<indices, values>``).

    scikit-learn's ``CountVectorizer``: how many times each vocabulary term occurs in the record
    (``binary: true``: 1 if it occurs). The vocabulary is counted shard by shard in one pass and
    pruned by ``min_df`` / ``max_df`` / ``max_features`` exactly as scikit-learn prunes it, terms in
    sorted order; it is the state artifact (``state.json``). Reads a text column (words of 2+
    characters by default) or a ``list<string>`` token column such as preprocess's ``tokens``.
    ``hashing: true``: a ``HashingVectorizer`` with ``n_features`` columns and no vocabulary.
    Drops nothing; null input gives an empty vector.
    """

    type: Literal["bag_of_words"] = "bag_of_words"
    binary: bool = Field(False, description="1 for a term present, instead of its count")

    def current_weighting(self) -> Weighting:
        return "binary" if self.binary else "count"

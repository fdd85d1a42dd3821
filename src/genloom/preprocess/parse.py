"""Dependency parsing with spaCy."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyarrow as pa

from genloom.core.registry import PREPROCESSORS
from genloom.preprocess._spacy_step import SpacyAnnotator

PARSE_TYPE = pa.list_(
    pa.struct([("text", pa.string()), ("dep", pa.string()), ("head", pa.int32()), ("pos", pa.string())])
)


@PREPROCESSORS.register("parse")
class ParseMap(SpacyAnnotator):
    """Parse dependencies with a spaCy model: a list of ``{text, dep, head, pos}`` per record.

    ``head`` is the index of the token's head in the same list (the root points to itself),
    ``dep`` the relation (nsubj, dobj, ...). ``en_core_web_sm`` 3.8.0 reports UAS 0.918 and LAS
    0.899 on OntoNotes. Batched ``nlp.pipe``; NER is skipped. The text is left as it is.
    """

    type: Literal["parse"] = "parse"
    output_column: str = "parse"
    exclude: ClassVar[tuple[str, ...]] = ("ner", "lemmatizer")
    value_type: ClassVar[pa.DataType] = PARSE_TYPE

    def output_name(self) -> str:
        return self.output_column

    def annotate(self, doc: Any) -> Any:
        toks = [t for t in doc if not t.is_space]
        index = {t.i: k for k, t in enumerate(toks)}
        return [
            {"text": t.text, "dep": t.dep_, "head": index.get(t.head.i, k), "pos": t.pos_}
            for k, t in enumerate(toks)
        ]

"""Named entity recognition with spaCy."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from genloom.core.registry import PREPROCESSORS
from genloom.preprocess._spacy_step import SpacyAnnotator

ENT_TYPE = pa.list_(
    pa.struct([("text", pa.string()), ("label", pa.string()), ("start", pa.int32()), ("end", pa.int32())])
)


@PREPROCESSORS.register("ner")
class NerMap(SpacyAnnotator):
    """Find named entities with a spaCy model: a list of ``{text, label, start, end}`` per record.

    Labels are OntoNotes' 18 (PERSON, ORG, GPE, DATE, MONEY...); ``start``/``end`` are character
    offsets in the text. ``labels`` keeps only some. ``en_core_web_sm`` 3.8.0 reports entity F1
    0.843. Batched ``nlp.pipe``; tagger, parser and lemmatizer are skipped. The text is left as
    it is (``pii`` masks PERSON entities).
    """

    type: Literal["ner"] = "ner"
    output_column: str = "entities"
    labels: list[str] | None = Field(default=None)
    exclude: ClassVar[tuple[str, ...]] = ("parser", "lemmatizer", "tagger", "attribute_ruler", "senter")
    value_type: ClassVar[pa.DataType] = ENT_TYPE

    def output_name(self) -> str:
        return self.output_column

    def annotate(self, doc: Any) -> Any:
        keep = set(self.labels) if self.labels else None
        return [
            {"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char}
            for e in doc.ents
            if keep is None or e.label_ in keep
        ]

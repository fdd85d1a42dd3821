"""Sentence and word tokenization (regex, spaCy rules or pysbd), for many languages."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import PrivateAttr

from genloom.core.errors import MissingDependencyError
from genloom.core.registry import PREPROCESSORS
from genloom.core.steps import Map, StepContext
from genloom.core.text_columns import write_column

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# one token per CJK character (scripts without spaces), words with inner apostrophes/hyphens, single marks
WORD_TOKEN_RE = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+(?:['’\-][^\W_{_CJK}]+)*|[^\w\s]|_")
SENTENCE_END_RE = re.compile(r"(?<=[.!?;।။።。！？])[\"'”’»)\]]*\s+|(?<=[。！？])")


@PREPROCESSORS.register("tokenize")
class TokenizeMap(Map):
    """Split the text into word or sentence tokens, written as a list column (``tokens`` by default).

    ``level: word``: ``backend: regex`` (default; every script: words with inner apostrophes and
    hyphens, each punctuation mark alone, one token per Chinese/Japanese character) or ``spacy``
    (the rule-based tokenizer of ``spacy.blank(language)``: 70+ languages, exceptions such as
    ``don't`` -> ``do n't``, ``U.S.``). ``level: sentence``: ``pysbd`` (Golden Rules segmenter,
    23 languages, handles abbreviations), ``spacy`` (the punctuation-based ``sentencizer``), or
    ``regex`` (terminal marks of Latin, CJK, Devanagari, Ethiopic and Myanmar scripts followed by
    a space). Drops nothing; null text gives a null list.
    """

    type: Literal["tokenize"] = "tokenize"
    column: str = "text"
    output_column: str = "tokens"
    level: Literal["word", "sentence"] = "word"
    backend: Literal["regex", "spacy", "pysbd"] = "regex"
    language: str = "en"
    lowercase: bool = False

    extra: ClassVar[str] = "nlp"
    _impl: Any = PrivateAttr(default=None)

    def setup(self) -> None:
        if self.backend == "spacy":
            try:
                import spacy
            except ImportError as e:
                raise MissingDependencyError("spacy", "pip install 'genloom[nlp]'") from e
            nlp = spacy.blank(self.language)
            if self.level == "sentence":
                nlp.add_pipe("sentencizer")
            self._impl = nlp
        elif self.backend == "pysbd":
            if self.level == "word":
                raise MissingDependencyError(
                    "pysbd word tokenizer", "pysbd splits sentences only; use backend regex or spacy"
                )
            try:
                import pysbd
            except ImportError as e:
                raise MissingDependencyError("pysbd", "pip install 'genloom[nlp]'") from e
            self._impl = pysbd.Segmenter(language=self.language, clean=False)

    def split(self, text: str) -> list[str]:
        """The tokens of one text."""
        if self.lowercase:
            text = text.lower()
        if self.level == "word":
            if self.backend == "spacy":
                self._impl.max_length = max(len(text) + 1, 1_000_000)
                return [t.text for t in self._impl.tokenizer(text) if not t.is_space]
            return WORD_TOKEN_RE.findall(text)
        if self.backend == "spacy":
            self._impl.max_length = max(len(text) + 1, 1_000_000)
            return [s.text.strip() for s in self._impl(text).sents if s.text.strip()]
        if self.backend == "pysbd":
            return [s.strip() for s in self._impl.segment(text) if s.strip()]
        return [s.strip() for s in SENTENCE_END_RE.split(text) if s and s.strip()]

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        values = [None if t is None else self.split(t) for t in table.column(self.column).to_pylist()]
        return write_column(table, self.output_column, pa.array(values, pa.list_(pa.string())))

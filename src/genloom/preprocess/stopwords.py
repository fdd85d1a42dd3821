"""Stop word removal (spaCy lists, stopwords-iso, or your own)."""

from __future__ import annotations

import importlib
from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field, PrivateAttr

from genloom.core.errors import MissingDependencyError
from genloom.core.registry import PREPROCESSORS
from genloom.core.steps import Map, StepContext
from genloom.core.text_columns import write_column
from genloom.preprocess._common import map_text_or_tokens


def stop_word_list(source: str, language: str) -> set[str]:
    """The stop words of ``language`` (ISO 639-1) from ``spacy`` or ``iso`` (stopwords-iso)."""
    if source == "spacy":
        try:
            module = importlib.import_module(f"spacy.lang.{language}.stop_words")
        except ImportError as e:
            raise MissingDependencyError(
                f"spaCy stop words for {language!r}", "pip install 'genloom[nlp]'"
            ) from e
        return set(module.STOP_WORDS)
    if source == "iso":
        try:
            import stopwordsiso
        except ImportError as e:
            raise MissingDependencyError("stopwordsiso", "pip install 'genloom[nlp]'") from e
        if not stopwordsiso.has_lang(language):
            raise MissingDependencyError(
                f"stopwords-iso list for {language!r}", "use source: spacy or words: [...]"
            )
        return set(stopwordsiso.stopwords(language))
    return set()


@PREPROCESSORS.register("stopwords")
class StopwordsMap(Map):
    """Remove stop words (case-insensitive) from the text or from a list-of-tokens column.

    Lists: ``source: spacy`` (spaCy's per-language lists, 70+ languages; English has 326 words),
    ``iso`` (stopwords-iso, 58 languages; English has 1,298, very aggressive) or ``none``; ``words``
    adds your own and ``keep`` protects some (``not``, ``no`` for sentiment). In text, a removed word
    takes one neighbouring space with it; punctuation stays. Drops no records.
    """

    type: Literal["stopwords"] = "stopwords"
    column: str = "text"
    output_column: str | None = None
    language: str = "en"
    source: Literal["spacy", "iso", "none"] = "spacy"
    words: list[str] = Field(default_factory=list)
    keep: list[str] = Field(default_factory=list)

    extra: ClassVar[str] = "nlp"
    _stop: frozenset[str] = PrivateAttr(default=frozenset())

    def setup(self) -> None:
        stop = {w.lower() for w in stop_word_list(self.source, self.language)} | {
            w.lower() for w in self.words
        }
        self._stop = frozenset(stop - {w.lower() for w in self.keep})

    def _word(self, w: str) -> str | None:
        return None if w.lower() in self._stop or w.replace("’", "'").lower() in self._stop else w

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        values = map_text_or_tokens(table.column(self.column), self._word)
        return write_column(table, self.output_column or self.column, values)

"""Snowball stemming through PyStemmer."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import PrivateAttr

from genloom.core.errors import ConfigError
from genloom.core.registry import PREPROCESSORS
from genloom.core.steps import Map, StepContext
from genloom.core.text_columns import write_column
from genloom.preprocess._common import map_text_or_tokens

ISO_TO_SNOWBALL = {
    "ar": "arabic",
    "hy": "armenian",
    "eu": "basque",
    "ca": "catalan",
    "da": "danish",
    "nl": "dutch",
    "en": "english",
    "eo": "esperanto",
    "et": "estonian",
    "fi": "finnish",
    "fr": "french",
    "de": "german",
    "el": "greek",
    "hi": "hindi",
    "hu": "hungarian",
    "id": "indonesian",
    "ga": "irish",
    "it": "italian",
    "lt": "lithuanian",
    "ne": "nepali",
    "no": "norwegian",
    "nb": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "es": "spanish",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
    "pl": "polish",
}


@PREPROCESSORS.register("stem")
class StemMap(Map):
    """Reduce words to their Snowball stem (Porter 2001) with PyStemmer's C implementation.

    ``language`` is an ISO 639-1 code or a Snowball algorithm name (``english``, ``porter``,
    ``french``... 30 languages). Words are lowercased, then stemmed (``running`` -> ``run``,
    ``connections`` -> ``connect``); the text keeps its punctuation and spacing, or a list-of-tokens
    column is stemmed token by token. Stems are cached per process. Drops no records.
    """

    type: Literal["stem"] = "stem"
    column: str = "text"
    output_column: str | None = None
    language: str = "en"

    requires: ClassVar[tuple[str, ...]] = ("Stemmer",)
    extra: ClassVar[str] = "nlp"
    _stemmer: Any = PrivateAttr(default=None)
    _cache: dict[str, str] = PrivateAttr(default_factory=dict)

    def check(self, path: str) -> None:
        name = ISO_TO_SNOWBALL.get(self.language, self.language)
        if name not in set(ISO_TO_SNOWBALL.values()) | {"porter"}:
            raise ConfigError(
                f"no Snowball stemmer for {self.language!r}",
                path=f"{path}.language",
                hint=f"choose one of {', '.join(sorted(ISO_TO_SNOWBALL))}",
            )

    def setup(self) -> None:
        import Stemmer

        self._stemmer = Stemmer.Stemmer(ISO_TO_SNOWBALL.get(self.language, self.language))

    def _word(self, w: str) -> str:
        s = self._cache.get(w)
        if s is None:
            s = self._stemmer.stemWord(w.lower())
            if len(self._cache) < 1_000_000:
                self._cache[w] = s
        return s

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        values = map_text_or_tokens(table.column(self.column), self._word)
        return write_column(table, self.output_column or self.column, values)

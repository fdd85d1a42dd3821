"""Spelling correction with SymSpell (Garbe 2012: symmetric delete edit-distance lookup)."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, PrivateAttr

from genloom.core.registry import CLEANERS
from genloom.core.steps import Map, StepContext

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


@CLEANERS.register("spelling")
class SpellingClean(Map):
    """Correct misspelt words with SymSpell and its bundled English frequency dictionary (82,765 words).

    A word is corrected when it is not in the dictionary, has at least ``min_word_length`` letters,
    and a dictionary word lies within ``max_edit_distance`` (Damerau-Levenshtein) edits; the
    candidate with the smallest distance, then the highest corpus frequency, wins. Capitalised
    words are left alone unless ``fix_capitalized`` (they are mostly names), and the case of the
    first letter is kept (``recieve`` -> ``receive``, ``RECIEVE`` -> ``RECEIVE``). Words with digits are never touched. Other languages:
    ``dictionary_path`` to a ``word count`` file. Corrections are cached per process. Drops nothing.
    """

    type: Literal["spelling"] = "spelling"
    column: str = "text"
    output_column: str | None = None
    max_edit_distance: int = Field(default=1, ge=1, le=3)
    min_word_length: int = 4
    fix_capitalized: bool = False
    #: a "word count" per line file; default: symspellpy's English frequency dictionary
    dictionary_path: str | None = None

    requires: ClassVar[tuple[str, ...]] = ("symspellpy",)
    extra: ClassVar[str] = "nlp"

    _sym: Any = PrivateAttr(default=None)
    _cache: dict[str, str] = PrivateAttr(default_factory=dict)

    def files_read(self) -> list[str]:
        return [self.dictionary_path] if self.dictionary_path else []

    def resource_versions(self) -> dict[str, str]:
        return {} if self.dictionary_path else {"symspellpy": _version("symspellpy")}

    def setup(self) -> None:
        from symspellpy import SymSpell

        sym = SymSpell(max_dictionary_edit_distance=self.max_edit_distance, prefix_length=7)
        path = (
            self.resolve_path(self.dictionary_path)
            if self.dictionary_path
            else str(resources.files("symspellpy").joinpath("frequency_dictionary_en_82_765.txt"))
        )
        sym.load_dictionary(path, term_index=0, count_index=1, encoding="utf-8")
        self._sym = sym

    def correct_word(self, word: str) -> str:
        """The correction of one word (itself when it is known or nothing is close)."""
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        out = word
        if len(word) >= self.min_word_length and (
            self.fix_capitalized or not word[0].isupper() or word.isupper()
        ):
            lower = word.lower()
            if lower not in self._sym.words:
                from symspellpy import Verbosity

                sugg = self._sym.lookup(lower, Verbosity.TOP, max_edit_distance=self.max_edit_distance)
                if sugg:
                    best = sugg[0].term
                    out = (
                        best.upper()
                        if word.isupper()
                        else (best[:1].upper() + best[1:] if word[0].isupper() else best)
                    )
        self._cache[word] = out
        return out

    def correct(self, text: str) -> str:
        """``text`` with every word corrected."""
        return _WORD.sub(lambda m: self.correct_word(m.group(0)), text)

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        col = pa.array(
            [t if not t else self.correct(t) for t in table.column(self.column).to_pylist()], pa.string()
        )
        target = self.output_column or self.column
        if target in table.column_names:
            return table.set_column(table.column_names.index(target), target, col)
        return table.append_column(target, col)


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"

"""Gopher quality and repetition filters (Rae et al. 2021, "Scaling Language Models", table A1)."""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, PrivateAttr

from genloom.core.registry import CLEANERS
from genloom.core.steps import Filter


@functools.cache
def word_re() -> re.Pattern[str]:
    """Words like spaCy's English tokenizer splits them (clitics, a few abbreviations, "..." and
    "--" kept whole, every other punctuation mark alone), at about 15x its speed. A word's letters
    may carry combining marks (Devanagari vowel signs, decomposed accents): Python's ``\\w`` has
    no marks, so their ranges come from the Unicode database (built once, about 0.15 s)."""
    ranges, start = [], None
    for cp in range(sys.maxunicode + 1):
        is_mark = unicodedata.category(chr(cp))[0] == "M"
        if is_mark and start is None:
            start = cp
        elif not is_mark and start is not None:
            ranges.append(f"\\U{start:08x}-\\U{cp - 1:08x}")
            start = None
    letter = rf"(?:[^\W_][{''.join(ranges)}]*)"
    return re.compile(
        r"(?:Mrs?|Ms|Dr|St|Jr|Sr|Prof|vs|etc|[A-Z](?:\.[A-Z])+)\."
        rf"|{letter}+(?=(?:n['’]t|['’](?:s|re|ve|ll|d|m))\b)|n['’]t\b|['’](?:s|re|ve|ll|d|m)\b"
        rf"|{letter}+(?:['’]{letter}+)*|\.{{2,}}|-{{2,}}|\S"
    )


# the punctuation set datatrove and the Gopher paper treat as "symbol" words
PUNCTUATION = frozenset(
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(map(chr, (x for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b))))
)
GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]
_PARA = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")
_P = np.uint64(0x9E3779B97F4A7C15)


def split_words(text: str) -> list[str]:
    """Word tokens of ``text`` (regex approximation of spaCy's rule-based English tokenizer)."""
    return word_re().findall(text)


def _dup_count(items: list[str]) -> tuple[int, int]:
    seen: set[str] = set()
    n = chars = 0
    for x in items:
        if x in seen:
            n += 1
            chars += len(x)
        else:
            seen.add(x)
    return n, chars


def _ngram_hashes(h: np.ndarray, n: int) -> np.ndarray:
    """Rolling 64-bit hashes of the word n-grams, from the word hashes ``h``: (len(h) - n + 1,)."""
    out = h[: len(h) - n + 1].copy()
    for k in range(1, n):
        out = out * _P + h[k : len(h) - n + 1 + k]
    return out


@CLEANERS.register("quality")
class GopherQualityFilter(Filter):
    """Drop low-quality documents with the Gopher rules: length, symbols, bullets, stop words, repetition.

    Quality rules (reason in brackets): fewer than ``min_doc_words`` or more than ``max_doc_words``
    non-symbol words (``gopher_short_doc``/``gopher_long_doc``); mean word length outside
    [``min_avg_word_length``, ``max_avg_word_length``]; ``#`` or ellipses per word above
    ``max_symbol_word_ratio``; more than ``max_bullet_lines_ratio`` of lines starting with a bullet,
    or ``max_ellipsis_lines_ratio`` ending with an ellipsis; fewer than ``max_non_alpha_words_ratio``
    of words with a letter (``gopher_below_alpha_threshold``); fewer than ``min_stop_words`` distinct
    ``stop_words`` (``gopher_enough_stop_words``).
    Repetition rules (``repetition: true``): the fraction of duplicated paragraphs and lines, and of
    characters in them; the share of characters in the most frequent 2/3/4-gram (``top_n_grams``);
    the share of characters in repeated 5..10-grams (``dup_n_grams``). Thresholds default to the
    paper's table A1 and to datatrove's ``GopherQualityFilter``/``GopherRepetitionFilter``, whose
    semantics are reproduced; any threshold set to null is skipped. Words come from a regex tokenizer
    close to spaCy's (``tokenizer: spacy`` uses spaCy's, for exact parity, 15x slower). N-grams are
    hashed with NumPy. Empty text is dropped as ``empty``.
    """

    type: Literal["quality"] = "quality"
    column: str = "text"
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: list[str] = Field(default_factory=lambda: list(GOPHER_STOP_WORDS))
    repetition: bool = True
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: list[tuple[int, float]] = Field(default_factory=lambda: [(2, 0.2), (3, 0.18), (4, 0.16)])
    dup_n_grams: list[tuple[int, float]] = Field(
        default_factory=lambda: [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]
    )
    tokenizer: Literal["regex", "spacy"] = "regex"
    #: spaCy language code for ``tokenizer: spacy``
    language: str = "en"

    _stop: frozenset[str] = PrivateAttr(default=frozenset())
    _spacy: Any = PrivateAttr(default=None)

    def setup(self) -> None:
        self._stop = frozenset(self.stop_words)
        if self.tokenizer == "spacy":
            import spacy

            self._spacy = spacy.blank(self.language)

    def _words(self, text: str) -> list[str]:
        if self._spacy is None:
            return word_re().findall(text)
        self._spacy.max_length = len(text) + 10
        return [t.text.strip() for t in self._spacy.tokenizer(text) if t.text.strip()]

    def reject_batch(self, table: pa.Table) -> list[str | None]:
        return [self.check_text(t) for t in table.column(self.column).to_pylist()]

    def check_text(self, text: str | None) -> str | None:
        """The reason to drop ``text``, or None to keep it."""
        if not text:
            return "empty"
        if self.repetition:
            reason = self._repetition_paragraphs_lines(text)
            if reason:
                return reason
        words = self._words(text)
        if self.repetition:
            reason = self._repetition_ngrams(text, words)
            if reason:
                return reason
        return self._quality(text, words)

    def _repetition_paragraphs_lines(self, text: str) -> str | None:
        paragraphs = _PARA.split(text.strip())
        n, chars = _dup_count(paragraphs)
        if self.dup_para_frac and n / len(paragraphs) > self.dup_para_frac:
            return "dup_para_frac"
        if self.dup_para_char_frac and chars / len(text) > self.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = _LINES.split(text)
        n, chars = _dup_count(lines)
        if self.dup_line_frac and n / len(lines) > self.dup_line_frac:
            return "dup_line_frac"
        if self.dup_line_char_frac and chars / len(text) > self.dup_line_char_frac:
            return "dup_line_char_frac"
        return None

    def _repetition_ngrams(self, text: str, words: list[str]) -> str | None:
        n_words = len(words)
        if n_words < 2:
            return None
        size = len(text)
        # Python's str hash is stable within a process, which is all a per-document count needs
        h = np.fromiter(map(hash, words), dtype=np.int64, count=n_words).view(np.uint64)
        lens = np.fromiter(map(len, words), dtype=np.int64, count=n_words)
        cum = np.concatenate(([0], np.cumsum(lens)))
        for n, frac in self.top_n_grams:
            if n_words < n:
                continue
            grams = _ngram_hashes(h, n)
            _, first, counts = np.unique(grams, return_index=True, return_counts=True)
            top = counts.max()
            # Counter.most_common: among equally frequent n-grams, the first seen wins
            i = int(first[counts == top].min())
            chars = int(cum[i + n] - cum[i]) + n - 1  # joined with spaces
            if chars * int(top) / size > frac:
                return f"top_{n}_gram"
        for n, frac in self.dup_n_grams:
            if n_words < n:
                continue
            grams = _ngram_hashes(h, n)
            if len(np.unique(grams)) == len(grams):
                continue
            seen: set[int] = set()
            repeated = 0
            idx = 0
            last = n_words - n + 1
            g = grams.tolist()
            while idx < last:
                x = g[idx]
                if x in seen:
                    repeated += int(cum[idx + n] - cum[idx])  # joined without spaces
                    idx += n
                else:
                    seen.add(x)
                    idx += 1
            if repeated / size > frac:
                return f"duplicated_{n}_n_grams"
        return None

    def _quality(self, text: str, words: list[str]) -> str | None:
        n_words = len(words)
        if n_words == 0:
            return "gopher_short_doc" if self.min_doc_words else None
        punct = PUNCTUATION
        non_symbol = [w for w in words if w[0] not in punct or not all(c in punct for c in w)]
        n_ns = len(non_symbol)
        if self.min_doc_words and n_ns < self.min_doc_words:
            return "gopher_short_doc"
        if self.max_doc_words and n_ns > self.max_doc_words:
            return "gopher_long_doc"
        if n_ns:
            avg = sum(map(len, non_symbol)) / n_ns
            if self.min_avg_word_length and avg < self.min_avg_word_length:
                return "gopher_below_avg_threshold"
            if self.max_avg_word_length and avg > self.max_avg_word_length:
                return "gopher_above_avg_threshold"
        if self.max_symbol_word_ratio:
            if text.count("#") / n_words > self.max_symbol_word_ratio:
                return "gopher_too_many_hashes"
            if (text.count("...") + text.count("…")) / n_words > self.max_symbol_word_ratio:
                return "gopher_too_many_ellipsis"
        lines = text.splitlines()
        if lines:
            if self.max_bullet_lines_ratio:
                bullets = sum(s.lstrip().startswith(("•", "-")) for s in lines)
                if bullets / len(lines) > self.max_bullet_lines_ratio:
                    return "gopher_too_many_bullets"
            if self.max_ellipsis_lines_ratio:
                ell = sum(s.rstrip().endswith(("...", "…")) for s in lines)
                if ell / len(lines) > self.max_ellipsis_lines_ratio:
                    return "gopher_too_many_end_ellipsis"
        if self.max_non_alpha_words_ratio:
            alpha = sum(1 for w in words if w.isalpha() or _LETTER.search(w))
            if alpha / n_words < self.max_non_alpha_words_ratio:
                return "gopher_below_alpha_threshold"
        if self.min_stop_words and len(self._stop.intersection(words)) < self.min_stop_words:
            return "gopher_enough_stop_words"
        return None


_LETTER = re.compile(r"[^\W\d_]")

"""What the text feature steps share: sentence splitting and word matching (column output and
the per-process spaCy cache are genloom.core.text_columns, shared with preprocess)."""

from __future__ import annotations

import re

#: a sentence ends at ., ! or ? (with closing quotes/brackets) followed by white space, or at a blank line
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+|\n\s*\n")
#: words: letters or digits with inner apostrophes and hyphens
WORD_RE = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``: cut after ., ! or ? followed by white space, and at blank lines.

    A rule, not a model: an abbreviation followed by a capital ("Dr. Smith") is cut too. It is
    the same in every process and needs no package."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]

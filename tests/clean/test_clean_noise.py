"""noise, boilerplate and spelling: what each removes or fixes, and what it leaves alone."""

from __future__ import annotations

import pyarrow as pa

from genloom.clean.boilerplate import BoilerplateClean
from genloom.clean.noise import NoiseClean
from genloom.clean.spelling import SpellingClean
from genloom.core.steps import StepContext


def test_noise_clean() -> None:
    table = pa.table(
        {
            "id": ["a", "b", "c"],
            "text": [
                "Hi\ufeff there<br>see <a href='x'>https://example.com/a?b=1</a>. Mail me@x.org!!!!!! soooo 1000000",
                "<script>var x = 1;</script><p>Caf&eacute; \x07ok &amp; done</p><!-- c -->",
                None,
            ],
        }
    )
    out = NoiseClean(urls="mask", emails="remove").run(table, StepContext()).column("text").to_pylist()
    assert out[0].startswith("Hi there\nsee <URL>. Mail")
    assert out[0].endswith(" !!! sooo 1000000") and "@" not in out[0]
    assert out[1] == "Café ok & done\n"
    assert out[2] is None
    kept = NoiseClean(max_repeat=None, html=False).run(table, StepContext()).column("text").to_pylist()
    assert "soooo" in kept[0] and "<br>" in kept[0]


def test_boilerplate_removes_lines_repeated_across_documents(paragraphs: list[str]) -> None:
    footer = "Copyright 2024 Example Corp. All rights reserved."
    docs = [f"{p}\n{footer}\nShare on Facebook" for p in paragraphs[:30]] + [f"{footer}\nShare on Facebook"]
    table = pa.table({"id": [str(i) for i in range(len(docs))], "text": docs})
    step = BoilerplateClean(min_docs=5)
    state = step.fit([table.slice(0, 10), table.slice(10)])
    assert {r["line"] for r in state["report"]} == {footer, "Share on Facebook"}
    ctx = StepContext()
    out = step.run_fitted(table, state, ctx)
    assert out.num_rows == 30  # the last document was only boilerplate
    assert out.column("text").to_pylist()[0] == paragraphs[0]
    assert ctx.stats["boilerplate"].dropped == {"boilerplate_only": 1}


def test_spelling_corrects_with_bundled_dictionary() -> None:
    table = pa.table({"id": ["a"], "text": ["The quikc brown fox, recieve 2 mesage from Londn. RECIEVE it."]})
    out = SpellingClean().run(table, StepContext()).column("text").to_pylist()[0]
    assert out == "The quick brown fox, receive 2 message from Londn. RECEIVE it."
    fixed = SpellingClean(fix_capitalized=True).run(table, StepContext()).column("text").to_pylist()[0]
    assert "London" in fixed


def test_cleaners_on_every_udhr_language(udhr: dict[str, str]) -> None:
    """493 languages and scripts through noise, pii and quality: text kept as it is, every record
    decided without a quarantine, and the quality decisions the Gopher rules give a 30-word article."""
    from genloom.clean.pii import PiiMask
    from genloom.clean.quality import GopherQualityFilter

    names = sorted(udhr)
    table = pa.table({"id": names, "text": [udhr[n] for n in names]})
    ctx = StepContext()
    out = NoiseClean(urls="mask").run(table, ctx)
    assert out.column("text").to_pylist() == table.column("text").to_pylist()  # clean text stays as it is
    out = PiiMask().run(out, ctx)
    assert out.column("text").to_pylist() == table.column("text").to_pylist()  # no article holds PII

    def dropped(step: GopherQualityFilter) -> dict[str, str]:
        """Each dropped article's reason, after checking that every article was kept or dropped."""
        ctx = StepContext()
        kept = step.run(out, ctx).num_rows
        assert kept + sum(ctx.stats["quality"].dropped.values()) == len(names) and not ctx.rejected
        return {e["id"]: e["event"].removeprefix("dropped:") for e in ctx.events if e["step"] == "quality"}

    # the paper's settings: an article is shorter than a document (50 words)
    assert dropped(GopherQualityFilter())["English"] == "gopher_short_doc"
    # long enough at 20 words: English passes, and the English stop words drop other languages
    reasons = dropped(GopherQualityFilter(min_doc_words=20, repetition=False))
    assert "English" not in reasons
    others = ["French", "Spanish", "Russian", "Greek (monotonic)", "Turkish", "Korean"]
    assert {reasons.get(n) for n in others} == {"gopher_enough_stop_words"}
    # without the stop-word rule they pass too, and so do most languages
    reasons = dropped(GopherQualityFilter(min_doc_words=20, min_stop_words=None, repetition=False))
    assert not reasons.keys() & {"English", *others}
    assert len(reasons) < len(names) / 3

"""Cheap text preprocessing steps on real text and many scripts: lowercase, punctuation, tokenize,
stop words, stemming, lemmatization, language identification."""

from __future__ import annotations

import pyarrow as pa
import pytest

from genloom.core.steps import StepContext
from genloom.preprocess.language import LanguageMap
from genloom.preprocess.lemmatize import LemmatizeMap
from genloom.preprocess.lowercase import LowercaseMap
from genloom.preprocess.punctuation import PunctuationMap
from genloom.preprocess.stem import StemMap
from genloom.preprocess.stopwords import StopwordsMap
from genloom.preprocess.tokenize import TokenizeMap

SENT = 'Dr. Smith arrived at 5 p.m. on Jan. 3rd. He said: "It\'s fine!" The mice were running.'


def _t(*texts: str | None) -> pa.Table:
    return pa.table({"id": [str(i) for i in range(len(texts))], "text": list(texts)})


def test_lowercase_text_tokens_and_casefold() -> None:
    table = pa.table({"id": ["a", "b"], "text": ["Straße ÉTÉ", None], "tok": [["Hi", "YOU"], None]})
    assert LowercaseMap().run(table, StepContext()).column("text").to_pylist() == ["straße été", None]
    assert (
        LowercaseMap(casefold=True).run(table, StepContext()).column("text").to_pylist()[0] == "strasse été"
    )
    out = LowercaseMap(column="tok", output_column="low").run(table.slice(0, 2), StepContext())
    assert out.column("low").to_pylist() == [["hi", "you"], None] and out.column("tok").to_pylist()[0] == [
        "Hi",
        "YOU",
    ]


def test_punctuation_every_script() -> None:
    text = "Hello, world! Don't e-mail me... 3.5% «ça» — 《你好》。 «Привет»!"
    out = PunctuationMap().run(_t(text), StepContext()).column("text").to_pylist()[0]
    assert out == "Hello world Don't e-mail me 3.5 ça 你好 Привет"
    strict = (
        PunctuationMap(keep_inner=False, keep="%").run(_t(text), StepContext()).column("text").to_pylist()[0]
    )
    assert strict.startswith("Hello world Don t e mail me 3 5%")


def test_tokenize_words_and_sentences(udhr: dict[str, str]) -> None:
    table = _t(SENT, udhr["Chinese, Mandarin (Simplified)"], udhr["Russian"], None)
    words = TokenizeMap().run(table, StepContext()).column("tokens").to_pylist()
    assert words[0][:4] == ["Dr", ".", "Smith", "arrived"] and words[3] is None
    assert words[1][0] == "人" or len(words[1][0]) == 1  # one token per Han character
    assert "свободными" in words[2]
    spacy_words = TokenizeMap(backend="spacy").run(table, StepContext()).column("tokens").to_pylist()
    assert spacy_words[0][:3] == ["Dr.", "Smith", "arrived"] and "'s" in spacy_words[0]
    sents = (
        TokenizeMap(level="sentence", backend="pysbd").run(table, StepContext()).column("tokens").to_pylist()
    )
    assert sents[0] == [
        "Dr. Smith arrived at 5 p.m. on Jan. 3rd.",
        'He said: "It\'s fine!"',
        "The mice were running.",
    ]
    regex_sents = (
        TokenizeMap(level="sentence", output_column="s").run(table, StepContext()).column("s").to_pylist()
    )
    assert len(regex_sents[1]) == 2  # split after the ideographic full stop
    german = (
        TokenizeMap(level="sentence", backend="pysbd", language="de")
        .run(_t("Das ist z.B. ein Test. Er kam um 3 Uhr an."), StepContext())
        .column("tokens")
        .to_pylist()[0]
    )
    assert german == ["Das ist z.B. ein Test.", "Er kam um 3 Uhr an."]


def test_stopwords_spacy_iso_custom() -> None:
    out = StopwordsMap().run(_t(SENT), StepContext()).column("text").to_pylist()[0]
    assert out == 'Dr. Smith arrived 5 p.m. Jan. 3rd. said: "It\'s fine!" mice running.'
    kept = (
        StopwordsMap(keep=["he"], words=["smith"]).run(_t(SENT), StepContext()).column("text").to_pylist()[0]
    )
    assert "He said" in kept and "Smith" not in kept
    fr = StopwordsMap(source="iso", language="fr").run(_t("Le chat est sur la table"), StepContext())
    assert fr.column("text").to_pylist()[0] == "chat table"
    toks = pa.table({"id": ["a"], "tokens": [["the", "cat", "and", "dog"]]})
    assert StopwordsMap(column="tokens").run(toks, StepContext()).column("tokens").to_pylist() == [
        ["cat", "dog"]
    ]


def test_stem_languages() -> None:
    out = StemMap().run(_t("Connections running quickly"), StepContext()).column("text").to_pylist()[0]
    assert out == "connect run quick"
    fr = (
        StemMap(language="fr")
        .run(_t("les chanteuses chantaient"), StepContext())
        .column("text")
        .to_pylist()[0]
    )
    assert fr == "le chanteux chant"


def test_lemmatize_simplemma_and_spacy(english_model: str) -> None:
    out = LemmatizeMap(backend="simplemma").run(_t("The mice were running"), StepContext())
    assert out.column("text").to_pylist()[0] == "the mouse be run"
    de = LemmatizeMap(backend="simplemma", language="de").run(_t("Die Häuser waren groß"), StepContext())
    assert "Haus" in de.column("text").to_pylist()[0]
    sp = LemmatizeMap(spacy_model=english_model, output_column="lemmas").run(_t(SENT, None), StepContext())
    assert sp.column("lemmas").to_pylist() == [
        'Dr. Smith arrive at 5 p.m. on Jan. 3rd. he say: "it\'s fine!" the mouse be run.',
        None,
    ]
    assert sp.column("text").to_pylist()[0] == SENT


LANGS = {
    "English": "en",
    "French": "fr",
    "German, Standard (1996)": "de",
    "Spanish": "es",
    "Russian": "ru",
    "Japanese": "ja",
    "Arabic, Standard": "ar",
    "Chinese, Mandarin (Simplified)": "zh",
    "Hindi": "hi",
    "Italian": "it",
    "Portuguese (Portugal)": "pt",
    "Dutch": "nl",
    "Greek (monotonic)": "el",
    "Turkish": "tr",
    "Korean": "ko",
    "Polish": "pl",
    "Swedish": "sv",
    "Finnish": "fi",
    "Vietnamese": "vi",
    "Hebrew": "he",
}


def test_language_id_on_udhr(udhr: dict[str, str]) -> None:
    names = list(LANGS)
    table = pa.table({"id": names, "text": [udhr[n] for n in names]})
    out = LanguageMap().run(table, StepContext())
    got = dict(zip(names, out.column("lang").to_pylist(), strict=True))
    correct = sum(got[n] == LANGS[n] for n in names)
    assert correct >= 19, {n: got[n] for n in names if got[n] != LANGS[n]}
    assert all(0.0 <= s <= 1.0 for s in out.column("lang_score").to_pylist())
    ctx = StepContext()
    kept = LanguageMap(keep=["en", "fr"]).run(table, ctx)
    assert set(kept.column("id").to_pylist()) == {"English", "French"}
    assert ctx.stats["language"].dropped["language"] == len(names) - 2


def test_language_empty_text_is_und() -> None:
    out = LanguageMap(min_score=0.99).run(_t("", None, "ok"), StepContext())
    assert out.column("lang").to_pylist()[:2] == ["und", "und"]


@pytest.mark.parametrize("step", [LowercaseMap(), PunctuationMap(), StopwordsMap(), StemMap()])
def test_output_column_keeps_text(step: object) -> None:
    out = step.model_copy(update={"output_column": "out"}).run(_t(SENT), StepContext())  # type: ignore[attr-defined]
    assert out.column("text").to_pylist() == [SENT] and out.column("out").to_pylist()[0] != SENT


def test_normalize_repairs_encoding() -> None:
    pytest.importorskip("ftfy")
    from genloom.preprocess.normalize import NormalizeMap

    out = NormalizeMap(repair_encoding=True).run(_t("doesnâ€™t  cafÃ©", None), StepContext())
    assert out.column("text").to_pylist() == ["doesn’t café", None]


def test_every_udhr_language_goes_through(udhr: dict[str, str]) -> None:
    """493 languages and scripts through the cheap steps: nothing quarantined, nothing lost."""
    from genloom.preprocess.normalize import NormalizeMap

    names = sorted(udhr)
    table = pa.table({"id": names, "text": [udhr[n] for n in names]})
    ctx = StepContext()
    steps = [
        NormalizeMap(),
        LowercaseMap(output_column="low"),
        PunctuationMap(column="low"),
        TokenizeMap(column="low"),
        StopwordsMap(column="tokens"),
        LanguageMap(),
    ]
    for step in steps:
        table = step.run(table, ctx)
    assert table.num_rows == len(names) and not ctx.rejected
    assert all(toks for toks in table.column("tokens").to_pylist())
    assert len(set(table.column("lang").to_pylist())) > 60

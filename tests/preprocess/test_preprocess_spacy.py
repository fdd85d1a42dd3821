"""spaCy steps: the packaged model is the official en_core_web_sm 3.8.0; POS, parse and NER columns."""

from __future__ import annotations

import pyarrow as pa

from genloom.core.steps import StepContext
from genloom.core.text_columns import load_spacy
from genloom.preprocess.ner import NerMap
from genloom.preprocess.parse import ParseMap
from genloom.preprocess.pos import PosMap

TEXT = "Angela Merkel met Tim Cook in Berlin on Monday. Apple paid $1 billion."


def test_model_meta_is_official_en_core_web_sm_380(english_model: str) -> None:
    meta = load_spacy(english_model, exclude=("parser", "ner", "lemmatizer", "senter")).meta
    assert meta["version"] == "3.8.0" and meta["lang"] == "en"
    assert meta["spacy_git_version"] == "5010fcbd3"
    perf = meta["performance"]
    assert round(perf["tag_acc"], 4) == 0.9729 and round(perf["dep_uas"], 4) == 0.9177
    assert round(perf["dep_las"], 4) == 0.8992 and round(perf["ents_f"], 4) == 0.8433
    assert meta["author"] == "Explosion" and meta["license"] == "MIT"


def test_pos_parse_ner(english_model: str) -> None:
    table = pa.table({"id": ["a", "b"], "text": [TEXT, None]})
    ctx = StepContext()
    out = NerMap(spacy_model=english_model).run(
        ParseMap(spacy_model=english_model).run(PosMap(spacy_model=english_model).run(table, ctx), ctx), ctx
    )
    pos = out.column("pos").to_pylist()
    assert pos[1] is None
    assert [(p["text"], p["pos"], p["tag"]) for p in pos[0][:3]] == [
        ("Angela", "PROPN", "NNP"),
        ("Merkel", "PROPN", "NNP"),
        ("met", "VERB", "VBD"),
    ]
    parse = out.column("parse").to_pylist()[0]
    root = next(k for k, t in enumerate(parse) if t["dep"] == "ROOT")
    assert parse[root]["text"] == "met" and parse[root]["head"] == root
    assert parse[1]["dep"] == "nsubj" and parse[1]["head"] == root
    ents = {(e["text"], e["label"]) for e in out.column("entities").to_pylist()[0]}
    assert {("Angela Merkel", "PERSON"), ("Tim Cook", "PERSON"), ("Berlin", "GPE"), ("Apple", "ORG")} <= ents
    e0 = out.column("entities").to_pylist()[0][0]
    assert TEXT[e0["start"] : e0["end"]] == e0["text"]
    only = NerMap(spacy_model=english_model, labels=["GPE"]).run(table, StepContext()).column("entities")
    assert [e["text"] for e in only.to_pylist()[0]] == ["Berlin"]
    assert out.column("text").to_pylist() == [TEXT, None]

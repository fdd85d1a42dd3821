"""Reference profiles of a tiny records artifact, checked by hand."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from tests.monitor.trained import trained_model

from genloom.core.errors import NotFoundError
from genloom.stages.base import split_of
from genloom.stages.profile import histogram_quantiles, model_profile, profile_key, split_words

TEXTS = ["the cat sat", "The dog", "the cat, the dog!", "a bird"]


def test_split_words_counts_letters_and_digits_runs():
    words, counts = split_words(pa.array(["Hello, World! été 3x", None, "", "a_b"]))
    assert words.to_pylist() == ["hello", "world", "été", "3x", "a", "b"]
    assert counts.tolist() == [4, 0, 0, 2]


def test_histogram_quantiles_match_numpy():
    sample = np.array([5, 1, 1, 3, 9, 9, 9, 2])
    values, counts = np.unique(sample, return_counts=True)
    qs = np.linspace(0, 1, 11)
    assert histogram_quantiles(values, counts, qs) == pytest.approx(np.quantile(sample, qs))


def test_text_profile_by_hand(tmp_path):
    # an empty and a missing text: left out, as the text family leaves them out of training
    cols = {"text": [*TEXTS, "", None], "lang": ["en", "en", "en", "fr", "de", "de"]}
    _, p, version = trained_model(tmp_path / "p", cols)
    profile, computed = model_profile(p.store, p.catalog, p.cfg.name, version, generates_text=True, top_k=3)
    assert computed and profile["kind"] == "text" and profile["records"] == 4
    lengths = profile["prompt_words"]  # 3, 2, 4, 2 words
    assert lengths["values"] == [2, 3, 4] and lengths["counts"] == [2, 1, 1] and lengths["mean"] == 2.75
    # quantiles of [2, 2, 3, 4] at 0.1 .. 0.9 (linear): positions 0.3 .. 2.7 of the sorted sample
    assert lengths["edges"] == pytest.approx([2, 2.2, 2.5, 2.8, 3.1, 3.4, 3.7])
    assert lengths["bin_counts"] == [2, 0, 0, 0, 1, 0, 0, 1]
    assert profile["output_words"]["counts"] == [2, 1, 1]  # plain text: the record is both sides
    vocab = profile["vocabulary"]  # the:4 cat:2 dog:2 sat:1 a:1 bird:1; top 3 cover 8 of 11
    assert vocab["words"] == {"the": 4, "cat": 2, "dog": 2}
    assert vocab["tokens"] == 11 and vocab["oov_tokens"] == 3 and vocab["oov_rate"] == pytest.approx(3 / 11)
    assert vocab["exact"] and vocab["distinct"] == 6
    assert profile["languages"] == {"en": 3, "fr": 1}
    src = profile["sources"]
    assert src["model"] == version["artifact_key"] and src["data_stage"] == "features" and src["shards"] == 2
    assert profile["model"] == {"name": p.model_name, "version": 1, "artifact_key": version["artifact_key"]}
    # trained before profiles came with training, and its prepared artifact holds no token files
    assert profile["family"] is None and "lacks the family's files" in profile["family_missing"]
    # stored next to the model version and read back, registered with its lineage
    key = profile_key(version["artifact_key"], 3)
    stored = json.loads(
        (p.store.local_path(p.store.artifact_dir("profile", key)) / "profile.json").read_text()
    )
    assert stored == profile
    again, computed = model_profile(p.store, p.catalog, p.cfg.name, version, generates_text=True, top_k=3)
    assert not computed and again == profile
    assert p.catalog.artifact(key)["stage"] == "profile"
    assert key in p.catalog.children(version["artifact_key"]) and key in p.catalog.children(src["data"])
    p.close()


def test_chat_profile_splits_user_and_assistant_sides(tmp_path):
    convo = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is a cat"},
        {"role": "assistant", "content": "a small animal"},
    ]
    msgs = [json.dumps(convo), json.dumps(convo[1:]), "not json", None]
    _, p, version = trained_model(tmp_path / "p", {"messages": msgs}, chat={"messages_field": "messages"})
    profile, _ = model_profile(p.store, p.catalog, p.cfg.name, version, generates_text=True)
    assert profile["chat"] and profile["text_field"] == "messages" and profile["records"] == 2
    # prompt side: "be brief\nwhat is a cat" (6 words), "what is a cat" (4); outputs: 3 words each
    assert profile["prompt_words"]["values"] == [4, 6] and profile["output_words"]["values"] == [3]
    assert profile["vocabulary"]["tokens"] == 10  # the prompt side's words
    p.close()


def test_profile_reads_the_training_split_only(tmp_path):
    texts = [f"record number {i} " + "word " * (i % 7) for i in range(60)]
    split = {"val_fraction": 0.3, "seed": 5}
    _, p, version = trained_model(tmp_path / "p", {"text": texts}, split=split)
    profile, _ = model_profile(p.store, p.catalog, p.cfg.name, version, generates_text=True)
    ids = pa.table({"id": [f"t:{i}" for i in range(60)]})
    train = [i for i, s in enumerate(split_of(ids, 0.3, 5)) if s == "train"]
    assert 0 < len(train) < 60 and profile["records"] == len(train)
    assert profile["prompt_words"]["mean"] == pytest.approx(np.mean([3 + i % 7 for i in train]))
    p.close()


def test_table_profile_by_hand(tmp_path):
    cols = {
        "x": [float(v) for v in range(1, 11)],
        "color": ["red", "red", "blue", None, "red", "green", "blue", "red", "red", "blue"],
        "blob": [b"\x00"] * 10,
    }
    _, p, version = trained_model(tmp_path / "p", cols, model_type="tabular_gan", shards=3)
    profile, _ = model_profile(p.store, p.catalog, p.cfg.name, version, generates_text=False)
    assert profile["kind"] == "table" and profile["records"] == 10
    x = profile["columns"]["x"]
    want = np.unique(np.quantile(np.arange(1, 11.0), np.linspace(0, 1, 11)[1:-1]))  # 1.9, 2.8, ..., 9.1
    assert x["edges"] == pytest.approx(want.tolist()) and x["bin_counts"] == [1] * 10
    assert (x["min"], x["max"], x["mean"], x["missing"]) == (1.0, 10.0, 5.5, 0)
    color = profile["columns"]["color"]
    assert (
        color["levels"] == {"red": 5, "blue": 3, "green": 1} and color["missing"] == 1 and color["other"] == 0
    )
    assert profile["left_out"] == {"blob": "unsupported type binary"}
    p.close()


def test_missing_training_artifact_is_a_clear_error(tmp_path):
    _, p, version = trained_model(tmp_path / "p", {"text": TEXTS})
    lost = {**version, "artifact_key": "0" * 32}
    with pytest.raises(NotFoundError, match="not in the store"):
        model_profile(p.store, p.catalog, p.cfg.name, lost, generates_text=True)
    p.close()


# ----------------------------------------------------------------------------------------------
# the families' own parts (ModelFamily.profile of a prepared artifact), by hand


def test_text_family_profile_counts_its_own_tokens(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    from genloom.models.base import family

    vocab = {"<eod>": 0, "cat": 5, "sat": 6, "dog": 7}
    Tokenizer(WordLevel(vocab, unk_token="<eod>")).save(str(tmp_path / "tokenizer.json"))
    np.array([5, 5, 6, 0, 5, 7, 0], dtype=np.uint16).tofile(tmp_path / "train.bin")  # two documents
    np.save(tmp_path / "train.docs.npy", np.array([0, 4], dtype=np.uint64))
    meta = {"dtype": "uint16", "n_tokens": 7, "n_chars": 30, "n_docs": 2, "doc_index": "train.docs.npy"}
    (tmp_path / "train.json").write_text(json.dumps(meta))
    part = family("gpt").profile(tmp_path)
    assert part["documents"] == 2 and part["tokens"] == 7 and part["chars_per_document"] == 15
    assert part["top_tokens"] == [  # ties in id order
        {"id": 5, "token": "cat", "count": 3},
        {"id": 0, "token": "<eod>", "count": 2},
        {"id": 6, "token": "sat", "count": 1},
        {"id": 7, "token": "dog", "count": 1},
    ]
    lengths = part["document_tokens"]  # 4 and 3 tokens (end-of-document included)
    assert lengths["mean"] == 3.5 and lengths["quantiles"]["p0"] == 3 and lengths["quantiles"]["p100"] == 4
    assert json.loads(json.dumps(part)) == part


def test_series_profile_windows_statistics():
    from genloom.models.series_data import OTHER_LEVEL, Windows, bounded_levels, profile_windows

    values = np.array([[1.0, 2, 3, 4], [10, np.nan, 12, 15]])[:, :, None]  # (N=2, T=4, C=1)
    w = Windows(
        values=values,
        mask=np.isfinite(values),
        lengths=np.array([4, 4]),
        start=np.array([0, 0]),
        end=np.array([3, 3]),
        series=["a", "b"],
        ids=["w0", "w1"],
        conditions={"site": ["x", "y"]},
        channels=["temp"],
    )
    out = profile_windows(w)
    assert out["windows"] == 2 and out["series"] == 2 and out["size"] == 4
    temp = out["channels"]["temp"]
    assert (temp["min"], temp["max"], temp["observed"]) == (1.0, 15.0, 7 / 8)
    assert temp["quantiles"]["p50"] == 4.0 and temp["mean"] == pytest.approx(47 / 7)
    # each window minus its mean: [-1.5, -0.5, 0.5, 1.5] and [-7/3, gap, -1/3, 8/3]; the gap
    # breaks two of the second window's three neighbour pairs
    num = (0.75 - 0.25 + 0.75) + (-1 / 3) * (8 / 3)
    den = 5 + (49 + 1 + 64) / 9
    assert temp["lag1_autocorrelation"] == pytest.approx(num / den)
    assert temp["step_std"] == pytest.approx(np.std([1, 1, 1, 3]))
    assert out["conditions"] == {"site": {"x": 1, "y": 1}}
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert bounded_levels(["b", "a", "b", "c", "d"], limit=2) == {"b": 2, "a": 1, OTHER_LEVEL: 2}


def test_series_and_image_family_profiles_cap_their_levels(tmp_path):
    from genloom.models.base import family

    levels = {f"l{i:03d}": i + 1 for i in range(150)}  # l149 is the most frequent
    series = {"windows": 3, "channels": {}, "conditions": {"site": levels}}
    (tmp_path / "profile.json").write_text(json.dumps(series))
    site = family("series_vae").profile(tmp_path)["conditions"]["site"]
    assert len(site) == 101 and "l149" in site and "l049" not in site
    assert site["<other>"] == sum(range(1, 51))  # the 50 rarest levels
    (tmp_path / "profile.json").write_text(json.dumps({"images": 3, "labels": levels}))
    image = family("image_vae").profile(tmp_path)
    assert len(image["labels"]) == 100 and image["distinct_labels"] == 150
    assert image["other_labels"] == sum(range(1, 51))


def test_family_profile_is_strict_bounded_json(tmp_path, monkeypatch):
    from genloom.core.errors import GenloomError
    from genloom.stages import profile as profiles

    # tables: a NaN that the prepare stage wrote (json.dumps allows it) is read back as null
    (tmp_path / "profile.json").write_text('{"rows": 2, "columns": {"x": {"mean": NaN, "std": 1.5}}}')
    part = profiles.family_profile("tabular_gan", tmp_path)
    assert part == {"rows": 2, "columns": {"x": {"mean": None, "std": 1.5}}}
    monkeypatch.setattr(profiles, "MAX_FAMILY_BYTES", 20)
    with pytest.raises(GenloomError, match="must stay bounded"):
        profiles.family_profile("tabular_gan", tmp_path)

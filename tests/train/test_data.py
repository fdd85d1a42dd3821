"""Token packing into memmaps, and the batches read back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genloom.core.errors import GenloomError
from genloom.models import tokens as tokens_mod
from genloom.models.tokenizer import TokenizerConfig, train_tokenizer
from genloom.models.tokens import eval_windows, load_tokens, pack_tokens
from genloom.train.data import TokenBatches


def test_pack_tokens_writes_docs_separated_by_eod(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tokens_mod, "CHUNK_CHARS", 10)  # several chunks: the streaming path
    docs = ["hello world", "", "second doc", "third"]
    tok = train_tokenizer(iter(docs), TokenizerConfig(kind="char"))
    meta = pack_tokens(tok, iter(docs), tmp_path / "train.bin")
    ids = load_tokens(tmp_path / "train.bin")
    eod = meta["eod_id"]
    assert meta["dtype"] == "uint16" and meta["n_tokens"] == len(ids) == sum(len(d) + 1 for d in docs)
    assert meta["n_chars"] == sum(len(d) for d in docs) and meta["n_docs"] == 4
    assert json.loads((tmp_path / "train.json").read_text()) == meta
    offsets = np.load(tmp_path / meta["doc_index"])
    assert offsets.tolist() == [0, 12, 13, 24]
    for start, doc in zip(offsets, docs, strict=True):
        got = ids[start : start + len(doc) + 1]
        assert tok.decode(got[:-1].tolist()) == doc and got[-1] == eod


def test_large_vocab_packs_as_uint32(tmp_path) -> None:
    class Big:  # a tokenizer-shaped stub with a 70k vocabulary
        def get_vocab_size(self) -> int:
            return 70000

        def token_to_id(self, t: str) -> int:
            return 69999

        def encode_batch(self, texts, add_special_tokens=False):
            return [type("E", (), {"ids": [66000, 1]})() for _ in texts]

        def to_str(self) -> str:
            return "{}"

    meta = pack_tokens(Big(), ["x", "y"], tmp_path / "a.bin")
    assert meta["dtype"] == "uint32"
    assert load_tokens(tmp_path / "a.bin").tolist() == [66000, 1, 69999, 66000, 1, 69999]


def test_batches_depend_only_on_seed_and_step() -> None:
    data = np.arange(1000, dtype=np.uint16)
    a, b = TokenBatches(data, 4, 16, seed=1), TokenBatches(data, 4, 16, seed=1)
    x1, y1 = a.batch(7)
    a.batch(8)
    x2, y2 = b.batch(7)
    assert (x1 == x2).all() and (y1 == y2).all() and (y1[:, :-1] == x1[:, 1:]).all()
    assert not (TokenBatches(data, 4, 16, seed=2).batch(7)[0] == x1).all()
    with pytest.raises(GenloomError):
        TokenBatches(data[:10], 4, 16, seed=1)


def test_eval_windows_predict_every_token_once() -> None:
    data = np.arange(100)
    wins = list(eval_windows(data, 16))
    assert sum(len(w) - 1 for w in wins) == 99
    assert sum(len(w) - 1 for w in eval_windows(data, 16, max_tokens=40)) == 40


def test_each_pass_trains_on_every_window_once_and_ranks_split_it() -> None:
    data = np.arange(16 * 40 + 1, dtype=np.uint16)  # 40 windows of 16 tokens (39 after an offset)
    b = TokenBatches(data, batch_size=3, block_size=16, seed=5)
    per_pass = b.n_windows // 3
    firsts = [int(x[0]) for s in range(per_pass) for x in b.batch(s)[0]]
    assert len(set(firsts)) == len(firsts) == per_pass * 3  # no window twice in a pass
    assert len({f % 16 for f in firsts}) == 1  # one cut (offset) per pass
    second = {int(x[0]) for s in range(per_pass, 2 * per_pass) for x in b.batch(s)[0]}
    assert second != set(firsts)  # the next pass is shuffled (and most likely cut) anew
    r0 = TokenBatches(data, 3, 16, seed=5, rank=0, world=2)
    r1 = TokenBatches(data, 3, 16, seed=5, rank=1, world=2)
    seen0 = {int(x[0]) for s in range(per_pass // 2) for x in r0.batch(s)[0]}
    seen1 = {int(x[0]) for s in range(per_pass // 2) for x in r1.batch(s)[0]}
    assert not seen0 & seen1  # two processes never train on the same window in a pass

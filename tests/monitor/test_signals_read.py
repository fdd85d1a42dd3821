"""The window read from SQLite's cursor into Arrow arrays folds in the same counts as the read
through SQLAlchemy's rows: mixed endpoints, chat prompts, JSON lists of texts, nulls, errors,
the window's edges and several batches."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from sqlalchemy import create_engine

from genloom.monitor.signals import WindowAccumulator, read_window
from genloom.stages.profile import split_words
from tests.monitor.test_monitor_cli import _log

START = datetime(2026, 1, 1, tzinfo=UTC)
END = START + timedelta(hours=1)


def _rows() -> list[dict]:
    chat = json.dumps([{"role": "system", "content": "Be brief"}, {"role": "user", "content": "été 3x, ok?"}])
    prompts = ["Hello, World!", chat, json.dumps(["the table", "zebra"]), None, "", "a_b c-d", "Don't"]
    outputs = ["A reply.", "", json.dumps(["one", "two", ""]), None, "x", None, "Fine; thanks"]
    endpoints = ["/v1/completions", "/v1/chat/completions", "/v1/completions", "/v1/completions"]
    endpoints += ["/v1/samples", "/v1/completions", "/v1/completions"]
    rows = []
    for i in range(60):
        k = i % len(prompts)
        rows.append(
            {
                "request_id": f"r{i}",
                # one row at each edge: the start is in the window, the end is not
                "created_at": START + timedelta(seconds=60 * i) if i < 59 else END,
                "endpoint": endpoints[k],
                "model": "m" if i != 5 else "other",
                "version": 1,
                "latency_s": 0.1 + 0.01 * i,
                "prompt_tokens": None if i % 11 == 0 else i,
                "completion_tokens": 2 * i,
                "status": 500 if i % 13 == 0 else (404 if i % 17 == 0 else 200),
                "prompt": prompts[k],
                "output": outputs[k],
            }
        )
    return rows


def _state(acc: WindowAccumulator) -> dict:
    counts = acc.prompt_counter.to_json(100) if acc.prompt_counter else None
    return {
        "n": (acc.requests, acc.text_requests, acc.errors, acc.client_errors),
        "words": (acc.words, acc.oov, acc.out_words, acc.out_oov, acc.outputs, acc.empty_outputs),
        "lengths": [h.counts.tolist() for h in (acc.prompt_len, acc.output_len)],
        "tokens": [h.counts.tolist() for h in (acc.prompt_tokens, acc.completion_tokens)],
        "latency": (acc.latency.tolist(), round(acc.latency_sum, 9), acc.latency_max),
        "vocabulary": counts,
        "languages": acc.lang_sample,
    }


def _read(engine, batch_rows: int = 7) -> dict:
    acc = WindowAccumulator(["the", "hello", "be"], True, output_vocabulary=["one", "fine"], count_words=True)
    read_window(engine, "m", START, END, acc, batch_rows=batch_rows)
    return _state(acc)


def test_sqlite_cursor_read_equals_sqlalchemy_rows(tmp_path, monkeypatch):
    engine = create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    _log(engine, _rows())
    assert engine.dialect.driver == "pysqlite"  # the cursor path
    fast = _read(engine)
    assert fast["n"][0] == 58  # 60 rows, one of another model, one at the window's end
    assert fast["n"][1] > 0 and fast["words"][0] > 0 and fast["languages"]
    monkeypatch.setattr(engine.dialect, "driver", "not-pysqlite")  # the SQLAlchemy path
    assert _read(engine) == fast
    assert _read(engine, batch_rows=1000) == fast
    # pysqlite with named parameters: not the cursor path, same counts
    named = create_engine(f"sqlite:///{tmp_path / 'log.db'}", paramstyle="named")
    assert not named.dialect.positional and _read(named) == fast


def test_plain_texts_are_taken_without_the_row_loop():
    acc = WindowAccumulator(["hello"], False, output_vocabulary=["fine"])
    prompts = ["Hello, World!", None, "", "Hello again"]
    acc.add(
        ["/v1/completions"] * 4,
        np.array([200, 200, 200, 503]),
        np.array([0.1, 0.2, np.nan, 0.4]),
        pa.array(prompts, pa.large_string()),
        pa.array(["fine", "fine fine", None, "x"], pa.large_string()),
        pa.array([3, None, 1, 2], pa.int64()),
        None,
    )
    _, counts = split_words(pa.array(["Hello, World!", ""], pa.large_string()))
    assert acc.prompt_len.counts.tolist() == np.bincount(counts).tolist()
    assert (acc.text_requests, acc.words, acc.oov) == (3, 2, 1)
    assert (acc.outputs, acc.empty_outputs, acc.out_words, acc.out_oov) == (2, 0, 3, 0)
    assert acc.prompt_tokens.counts.tolist() == [0, 1, 0, 1] and acc.completion_tokens.n == 0
    assert acc.latency.sum() == 3


def test_word_split_equals_the_regex_split():
    import pyarrow.compute as pc

    from genloom.stages.profile import WORD_SPLIT

    texts = ["Hello, World! été 3x", None, "", "a_b", "ÀÉÎ ŒUVRE 12½ x²", "日本語 テキスト", "Don't"]
    texts += ["tab\tnew\nline", "İstanbul ǅ", "\x00a\x7fb", "MIXED case, ascii-only; 42"] * 3
    arr = pa.array(texts, pa.large_string())
    for part in (arr, arr.slice(3), arr.slice(4, 9), arr.slice(9, 3)):
        pieces = pc.split_pattern_regex(pc.utf8_lower(pc.fill_null(part, "")), WORD_SPLIT)
        flat, parents = pc.list_flatten(pieces), pc.list_parent_indices(pieces)
        keep = pc.greater(pc.utf8_length(flat), 0)
        words, counts = split_words(part)
        assert words.equals(pc.filter(flat, keep))
        expected = np.bincount(np.asarray(pc.filter(parents, keep)), minlength=len(part))
        assert counts.tolist() == expected.tolist()


def _sample_of(n_rows: int, size: int, batch: int, seed: int = 0) -> WindowAccumulator:
    acc = WindowAccumulator([], False, seed=seed, samples=size)
    for start in range(0, n_rows, batch):
        rows = range(start, min(start + batch, n_rows))
        acc.add(
            ["/v1/completions" if i % 10 else "/v1/samples" for i in rows],  # a tenth are not text
            np.array([200] * len(rows)),
            np.full(len(rows), 0.1),
            [f"prompt {i}" if i % 7 else None for i in rows],  # some prompts not stored
            [f"output {i}" for i in rows],
        )
    return acc


def test_request_sample_is_bounded_and_uniform_over_the_window():
    small = _sample_of(30, 100, 7)  # the whole window fits: every text request, in order
    assert small.sample_seen == 27 and [o for _, _, o in small.sample] == [
        f"output {i}" for i in range(30) if i % 10
    ]
    assert ("/v1/completions", None, "output 7") in small.sample  # a prompt not stored, its output kept
    counts = np.zeros(3000)
    for seed in range(40):
        acc = _sample_of(3000, 100, 500, seed)
        assert len(acc.sample) == 100 and acc.sample_seen == 2700
        assert all(e == "/v1/completions" for e, _, _ in acc.sample)
        counts[[int(o.split()[1]) for _, _, o in acc.sample]] += 1
    # each text request has a 100/2700 chance: 4,000 picks spread evenly over the window's thirds
    thirds = [counts[i * 1000 : (i + 1) * 1000].sum() for i in range(3)]
    assert sum(thirds) == 4000 and all(1200 < t < 1470 for t in thirds), thirds
    assert WindowAccumulator([], False).sample == []  # no sample unless asked

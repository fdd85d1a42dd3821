"""One monitoring pass: the request log of a time window against the champion's reference profile.

The window's rows are read in batches from the catalog's ``requests`` table (one streaming SQL
query filtered on the model and the window) and folded into counts as they arrive: length
histograms, in- and out-of-vocabulary word counts, a log-spaced latency histogram, error and
empty-output counts, and a sample of prompts for language identification. No list of rows is
kept, so memory does not grow with the window. Feedback ratings are counted by the database.

Signals (``kind``, ``signal``, ``method``), each a ``Check`` with its threshold:

- drift, ``prompt_words`` / ``output_words``: PSI on the profile's quantile bins (breach above
  ``psi``) and KS on the exact length histograms (breach when p < ``ks_alpha`` and the statistic
  is at least ``ks_min_statistic``: with thousands of requests a negligible shift is significant,
  so the size of the gap decides as well);
- drift, ``prompt_oov_rate``: the share of prompt words outside the profile's top-K vocabulary,
  as the two categories (in vocabulary, out of it): Jensen-Shannon distance (breach above ``js``)
  and chi-square (breach when p < ``chi2_alpha`` and the distance is at least ``js``);
- drift, ``prompt_language`` (when the profile has a language mix and langid is installed):
  langid on a uniform sample of at most ``LANGUAGE_SAMPLE`` prompts of ``LANGUAGE_MIN_CHARS``
  characters or more, JS and chi-square as above;
- quality, ``error_rate`` (share of status >= 500), ``latency_p95`` (seconds, from a histogram of
  ``LATENCY_BINS_PER_DECADE`` log bins per decade: the upper edge of the quantile's bin, at
  most 4.7% above the exact value),
  ``empty_output_rate`` (text responses with no word), ``repetition_rate`` (text outputs of
  ``REPETITION_MIN_WORDS`` words or more whose distinct word 4-grams are under
  ``REPETITION_MIN_DISTINCT`` of their 4-grams), ``truncation_rate`` (responses that stopped at
  their token limit: ``finish_reason == "length"``, else ``completion_tokens >= max_tokens``,
  when the request log has those columns; skipped when it has neither);
- feedback, ``negative_feedback_rate``: ratings <= 0 (thumbs down, or a 0 score) among the
  feedback on the window's requests;
- sample checks, on a uniform sample of at most ``SAMPLE_REQUESTS`` of the window's text requests
  (reservoir sampling, so memory stays flat in the window's size), for a champion's text model
  (``monitor_pipeline``): drift, ``prompt_embedding`` / ``output_embedding``: MMD of MiniLM
  embeddings against the training split's (``embedding_drift``); quality, ``output_loss``: the
  champion's own bits per character on its outputs against its ``val_bpc`` (``output_loss``).

A drift check needs ``min_requests`` text requests in the window and the feedback check
``min_feedback`` ratings; with fewer, the check is reported as skipped (never a breach).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import and_, func, select

from genloom.core.errors import GenloomError
from genloom.monitor.drift import DriftResult, chi2, js, ks_from_counts, psi_from_counts
from genloom.monitor.store import MonitorLog
from genloom.serve.traffic import RequestLog, feedback, requests
from genloom.stages.profile import TOP_WORDS, LengthHistogram, WordCounter, binned, split_words

TEXT_ENDPOINTS = ("/v1/completions", "/v1/chat/completions")
CHAT_ENDPOINT = "/v1/chat/completions"
BATCH_ROWS = 20_000
LANGUAGE_SAMPLE = 500
#: text requests kept (uniformly, by reservoir sampling) for the sample checks
SAMPLE_REQUESTS = 1000
#: shorter prompts are left out of language identification (too few characters to tell)
LANGUAGE_MIN_CHARS = 20
LATENCY_BINS_PER_DECADE = 50
#: an output is repetitive when its distinct word 4-grams are fewer than this share of its 4-grams
REPETITION_MIN_DISTINCT = 0.5
#: shorter outputs are left out of the repetition rate (too few 4-grams to tell)
REPETITION_MIN_WORDS = 8
#: latency histogram range: 10 microseconds to 10,000 seconds
LATENCY_EDGES = 10.0 ** (
    np.arange(-5 * LATENCY_BINS_PER_DECADE, 4 * LATENCY_BINS_PER_DECADE + 1) / LATENCY_BINS_PER_DECADE
)


@dataclass(frozen=True)
class Thresholds:
    """When a signal is a breach (the documented defaults)."""

    psi: float = 0.2
    ks_alpha: float = 0.01
    ks_min_statistic: float = 0.1
    js: float = 0.1
    chi2_alpha: float = 0.01
    error_rate: float = 0.01
    latency_p95_s: float = 5.0
    empty_output_rate: float = 0.05
    repetition_rate: float = 0.2
    truncation_rate: float = 0.5
    negative_feedback_rate: float = 0.3
    embedding_alpha: float = 0.01
    embedding_min_mmd2: float = 0.005
    output_bpc_ratio: float = 1.5
    min_requests: int = 50
    min_feedback: int = 10


@dataclass
class Check:
    """One signal's figure against its threshold (``skipped``: why it was not computed)."""

    kind: str
    signal: str
    method: str
    score: float | None
    threshold: float | None
    breached: bool
    p_value: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    #: its row in the monitoring log, once stored
    id: int | None = None

    def figures(self) -> dict[str, Any]:
        """What was measured: kind, signal, method, score, threshold, p-value."""
        return {
            "kind": self.kind,
            "signal": self.signal,
            "method": self.method,
            "score": self.score,
            "threshold": self.threshold,
            "p_value": self.p_value,
        }


@dataclass
class MonitorReport:
    """What one ``genloom monitor`` pass found."""

    model: str
    version: int
    window_start: datetime
    window_end: datetime
    requests: int
    text_requests: int
    checks: list[Check]
    profile_key: str
    profile_computed: bool

    @property
    def breached(self) -> list[Check]:
        """The checks that crossed their threshold (a due retrain schedule, or new data, is not a
        breach: it only triggers a retrain)."""
        return [c for c in self.checks if c.breached and c.kind not in ("schedule", "new_data")]

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "model": self.model,
            "version": self.version,
            "window": {"start": self.window_start.isoformat(), "end": self.window_end.isoformat()},
            "requests": self.requests,
            "text_requests": self.text_requests,
            "profile": {"key": self.profile_key, "computed_now": self.profile_computed},
            "checks": [_jsonable(asdict(c)) for c in self.checks],
            "breached": [f"{c.signal}:{c.method}" for c in self.breached],
        }


def _jsonable(value: Any) -> Any:
    """JSON-ready data: non-finite floats become None, other objects their string."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


# ----------------------------------------------------------------------------------------------
# reading a window


def _texts(value: str | None, endpoint: str, side: str) -> list[str]:
    """The texts of one logged prompt or output: chat prompts are the JSON messages (their
    non-assistant contents), several prompts or choices are a JSON list of strings."""
    if value is None:
        return []
    if side == "prompt" and endpoint == CHAT_ENDPOINT:
        try:
            messages = json.loads(value)
        except ValueError:
            return [value]
        if isinstance(messages, list):
            return [
                "\n".join(
                    str(m.get("content") or "")
                    for m in messages
                    if isinstance(m, dict) and m.get("role") != "assistant"
                )
            ]
        return [value]
    if value.startswith('["'):
        try:
            items = json.loads(value)
        except ValueError:
            return [value]
        if isinstance(items, list) and all(isinstance(x, str) for x in items):
            return items
    return [value]


def _text_sides(
    endpoints: pa.Array,
    text: np.ndarray,
    prompts: list[str | None] | pa.Array,
    outputs: list[str | None] | pa.Array,
) -> tuple[pa.Array, pa.Array]:
    """The prompt texts and the output texts of a batch's text requests (``text``), in row order.
    Plain strings are taken as they are, vectorised; a batch that holds a chat prompt or a JSON
    list of texts goes through ``_texts`` row by row, so the order is the same either way."""
    mask = pa.array(text)
    p = pc.filter(pa.array(prompts, pa.large_string()), mask)
    o = pc.filter(pa.array(outputs, pa.large_string()), mask)
    ep = pc.filter(endpoints, mask)
    listed = pc.or_(pc.starts_with(p, '["'), pc.starts_with(o, '["'))
    special = pc.or_(pc.fill_null(listed, False), pc.equal(ep, CHAT_ENDPOINT))
    if not pc.any(special).as_py():
        return p.drop_null(), o.drop_null()
    p_texts: list[str] = []
    o_texts: list[str] = []
    for e, pv, ov in zip(ep.to_pylist(), p.to_pylist(), o.to_pylist(), strict=True):
        p_texts += _texts(pv, e, "prompt")
        o_texts += _texts(ov, e, "output")
    return pa.array(p_texts, pa.large_string()), pa.array(o_texts, pa.large_string())


def window_texts(sample: list[tuple[str, str | None, str | None]]) -> tuple[list[str], list[str]]:
    """(the prompt texts, the output texts) of sampled requests: chat prompts as their
    non-assistant contents, JSON lists of texts as their texts (as the window's counts read them)."""
    prompts: list[str] = []
    outputs: list[str] = []
    for endpoint, prompt, output in sample:
        prompts += _texts(prompt, endpoint, "prompt")
        outputs += _texts(output, endpoint, "output")
    return prompts, outputs


def repetitive_outputs(words: pa.Array, counts: np.ndarray) -> tuple[int, int]:
    """(outputs of ``REPETITION_MIN_WORDS`` words or more, those whose distinct word 4-grams are
    under ``REPETITION_MIN_DISTINCT`` of their 4-grams), from ``split_words``' flat words and the
    number of words of each output. A 4-gram is a hash of its four word codes, put below the
    output's index in one 64-bit key, so one sort of the keys counts the distinct 4-grams of every
    output (two different 4-grams of an output share a key
    at odds of 1 in 2**(64 - the bits of the batch's output count), about 2**49 at 20,000 rows)."""
    long = counts >= REPETITION_MIN_WORDS
    n = int(long.sum())
    if n == 0:
        return 0, 0
    c = np.asarray(pc.dictionary_encode(words).indices, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        # the hash of the 4-gram that starts at every word (those crossing two outputs unused)
        h = ((c[:-3] * prime + c[1:-2]) * prime + c[2:-1]) * prime + c[3:]
        h *= np.uint64(0x9E3779B97F4A7C15)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[long]
    grams = counts[long] - 3
    owner = np.repeat(np.arange(n, dtype=np.uint64), grams)
    at = np.repeat(starts - np.concatenate(([0], np.cumsum(grams)[:-1])), grams) + np.arange(len(owner))
    bits = np.uint64(max(1, n.bit_length()))
    key = (owner << (np.uint64(64) - bits)) | (h[at] >> bits)
    key.sort()
    new = np.ones(len(key), dtype=bool)
    new[1:] = key[1:] != key[:-1]
    distinct = np.bincount((key[new] >> (np.uint64(64) - bits)).astype(np.int64), minlength=n)
    return n, int((distinct < REPETITION_MIN_DISTINCT * grams).sum())


def truncated_responses(
    statuses: np.ndarray,
    finish_reasons: list[str | None] | pa.Array | None,
    completion_tokens: list[int | None] | pa.Array | None,
    max_tokens: list[int | None] | pa.Array | None,
) -> tuple[int, int]:
    """(200-status responses whose stop is known, those that stopped at their token limit): a
    logged ``finish_reason`` decides ("length"); without one, ``completion_tokens >= max_tokens``
    when both are logged."""
    ok = statuses == 200
    n = len(statuses)
    known = np.zeros(n, dtype=bool)
    hit = np.zeros(n, dtype=bool)
    if finish_reasons is not None:
        fr = pa.array(finish_reasons, pa.large_string())
        known = np.asarray(pc.is_valid(fr), dtype=bool)
        hit = np.asarray(pc.fill_null(pc.equal(fr, "length"), False), dtype=bool)
    if completion_tokens is not None and max_tokens is not None:
        c = np.asarray(pc.fill_null(pa.array(completion_tokens, pa.int64()), -1), dtype=np.int64)
        m = np.asarray(pc.fill_null(pa.array(max_tokens, pa.int64()), -1), dtype=np.int64)
        both = ~known & (c >= 0) & (m > 0)
        hit |= both & (c >= m)
        known |= both
    return int((known & ok).sum()), int((hit & known & ok).sum())


class WindowAccumulator:
    """The window's counts, folded in batch by batch."""

    def __init__(
        self,
        vocabulary: list[str],
        languages: bool,
        seed: int = 0,
        output_vocabulary: list[str] | None = None,
        count_words: bool = False,
        repetition: bool = True,
        samples: int = 0,
    ) -> None:
        self.requests = 0
        #: a uniform sample of at most ``samples`` text requests that logged a prompt or an
        #: output, as (endpoint, prompt, output) the way the log stores them; ``sample_seen`` of them
        self.sample_size = samples
        self.sample: list[tuple[str, str | None, str | None]] = []
        self.sample_seen = 0
        self.sample_rng = np.random.default_rng([seed, 1])
        #: whether outputs are checked for repetition (a reference profile does not need it)
        self.repetition = repetition
        self.errors = 0
        self.client_errors = 0
        self.text_requests = 0
        self.latency = np.zeros(len(LATENCY_EDGES) + 1, dtype=np.int64)
        self.latency_sum = 0.0
        self.latency_max = 0.0
        self.prompt_len = LengthHistogram()
        self.output_len = LengthHistogram()
        self.outputs = 0
        self.empty_outputs = 0
        #: outputs long enough for the repetition rate, and the repetitive ones among them
        self.repetition_outputs = 0
        self.repetitive = 0
        #: responses whose stop is known (None: the log has no finish_reason nor max_tokens), truncated
        self.stops_known: int | None = None
        self.truncated = 0
        self.words = 0
        self.oov = 0
        self.vocab = pa.array(vocabulary, pa.large_string())
        self.out_vocab = (
            pa.array(output_vocabulary, pa.large_string()) if output_vocabulary is not None else None
        )
        self.out_words = 0
        self.out_oov = 0
        self.prompt_tokens = LengthHistogram()
        self.completion_tokens = LengthHistogram()
        #: word frequencies of both sides, kept only when the window becomes a reference profile
        self.prompt_counter = WordCounter() if count_words else None
        self.output_counter = WordCounter() if count_words else None
        self.languages = languages
        self.rng = np.random.default_rng(seed)
        self.lang_sample: list[str] = []
        self.lang_seen = 0

    def add(
        self,
        endpoints: list[str],
        statuses: np.ndarray,
        latency: np.ndarray,
        prompts: list[str | None] | pa.Array,
        outputs: list[str | None] | pa.Array,
        prompt_tokens: list[int | None] | pa.Array | None = None,
        completion_tokens: list[int | None] | pa.Array | None = None,
        finish_reasons: list[str | None] | pa.Array | None = None,
        max_tokens: list[int | None] | pa.Array | None = None,
    ) -> None:
        """Fold one batch of rows (columns of equal length) in; ``finish_reasons`` and
        ``max_tokens`` only where the request log stores them."""
        self.requests += len(statuses)
        ok = statuses == 200
        if finish_reasons is not None or (completion_tokens is not None and max_tokens is not None):
            known, hit = truncated_responses(statuses, finish_reasons, completion_tokens, max_tokens)
            self.stops_known = (self.stops_known or 0) + known
            self.truncated += hit
        for hist, tokens in (
            (self.prompt_tokens, prompt_tokens),
            (self.completion_tokens, completion_tokens),
        ):
            if tokens is not None:
                t = np.asarray(pc.fill_null(pa.array(tokens, pa.int64()), -1), dtype=np.int64)
                hist.add(t[(t >= 0) & ok])
        self.errors += int((statuses >= 500).sum())
        self.client_errors += int(((statuses >= 400) & (statuses < 500)).sum())
        lat = latency[np.isfinite(latency)]
        self.latency += np.bincount(
            np.searchsorted(LATENCY_EDGES, lat, side="left"), minlength=len(self.latency)
        )
        if len(lat):
            self.latency_sum += float(lat.sum())
            self.latency_max = max(self.latency_max, float(lat.max()))
        ep = pa.array(endpoints, pa.string())
        text = ok & np.asarray(pc.is_in(ep, value_set=pa.array(TEXT_ENDPOINTS, pa.string())), dtype=bool)
        self.text_requests += int(text.sum())
        if self.sample_size:
            self._sample_requests(ep, text, prompts, outputs)
        p_texts, o_texts = _text_sides(ep, text, prompts, outputs)
        if len(p_texts):
            words, counts = split_words(p_texts)
            self.prompt_len.add(counts)
            self.words += len(words)
            if len(words):
                self.oov += len(words) - int(pc.sum(pc.is_in(words, value_set=self.vocab)).as_py() or 0)
            if self.prompt_counter is not None:
                self.prompt_counter.add(words)
            if self.languages:
                self._sample_languages(p_texts.to_pylist())
        if len(o_texts):
            o_words, counts = split_words(o_texts)
            self.output_len.add(counts)
            if self.out_vocab is not None and len(o_words):
                self.out_words += len(o_words)
                self.out_oov += len(o_words) - int(
                    pc.sum(pc.is_in(o_words, value_set=self.out_vocab)).as_py() or 0
                )
            if self.output_counter is not None:
                self.output_counter.add(o_words)
            self.outputs += len(counts)
            self.empty_outputs += int((counts == 0).sum())
            if self.repetition:
                long, repetitive = repetitive_outputs(o_words, counts)
                self.repetition_outputs += long
                self.repetitive += repetitive

    def _sample_requests(
        self,
        endpoints: pa.Array,
        text: np.ndarray,
        prompts: list[str | None] | pa.Array,
        outputs: list[str | None] | pa.Array,
    ) -> None:
        """Reservoir sampling (Vitter's algorithm R, its draws vectorised per batch) of the batch's
        text requests that logged a prompt or an output."""
        p = pa.array(prompts, pa.large_string())
        o = pa.array(outputs, pa.large_string())
        logged = text & (np.asarray(pc.is_valid(p), dtype=bool) | np.asarray(pc.is_valid(o), dtype=bool))
        rows = np.flatnonzero(logged)
        if len(rows) == 0:
            return
        k = self.sample_size
        seen = self.sample_seen + np.arange(len(rows))  # each row's place in the window's stream
        slot = np.where(seen < k, seen, self.sample_rng.integers(0, seen + 1))
        self.sample_seen += len(rows)
        take = slot < k
        idx = pa.array(rows[take])
        picked = zip(
            slot[take].tolist(),
            pc.take(endpoints, idx).to_pylist(),
            pc.take(p, idx).to_pylist(),
            pc.take(o, idx).to_pylist(),
            strict=True,
        )
        for j, e, pv, ov in picked:
            if j == len(self.sample):
                self.sample.append((e, pv, ov))
            else:
                self.sample[j] = (e, pv, ov)

    def _sample_languages(self, texts: list[str]) -> None:
        """Reservoir sampling (Vitter's algorithm R) of prompts of at least LANGUAGE_MIN_CHARS characters."""
        for t in texts:
            if len(t.strip()) < LANGUAGE_MIN_CHARS:
                continue
            self.lang_seen += 1
            if len(self.lang_sample) < LANGUAGE_SAMPLE:
                self.lang_sample.append(t)
            else:
                j = int(self.rng.integers(0, self.lang_seen))
                if j < LANGUAGE_SAMPLE:
                    self.lang_sample[j] = t

    def latency_quantile(self, q: float) -> float | None:
        """The q-quantile of latency: the upper edge of the histogram bin that holds it."""
        n = int(self.latency.sum())
        if n == 0:
            return None
        i = int(np.searchsorted(np.cumsum(self.latency), math.ceil(q * n), side="left"))
        return float(LATENCY_EDGES[min(i, len(LATENCY_EDGES) - 1)])


_WINDOW_COLUMNS = (
    "endpoint",
    "status",
    "latency_s",
    "prompt",
    "output",
    "prompt_tokens",
    "completion_tokens",
)
#: read as well where the request log has them (today's ``requests`` table has neither)
_STOP_COLUMNS = ("finish_reason", "max_tokens")


def _window_columns() -> list[str]:
    """``_WINDOW_COLUMNS`` and those of ``_STOP_COLUMNS`` that the ``requests`` table has."""
    return [*_WINDOW_COLUMNS, *(c for c in _STOP_COLUMNS if c in requests.c)]


def read_window(
    engine: Any,
    model: str,
    start: datetime,
    end: datetime,
    acc: WindowAccumulator,
    batch_rows: int = BATCH_ROWS,
) -> None:
    """Stream the window's requests of ``model`` into ``acc`` (one query, ``batch_rows`` at a time).
    On SQLite (the pysqlite driver) the rows come from the DBAPI cursor's ``fetchmany`` straight
    into Arrow arrays, without SQLAlchemy's row objects; other backends go through SQLAlchemy."""
    r = requests.c
    names = _window_columns()
    q = (
        select(*(r[c] for c in names))
        .where(r.model == model, r.created_at >= start, r.created_at < end)
        .order_by(r.id)
    )
    with engine.connect() as c:
        if (
            engine.dialect.name == "sqlite"
            and engine.dialect.driver == "pysqlite"
            and engine.dialect.positional
        ):
            _read_sqlite(c, q, acc, batch_rows, names)
            return
        result = c.execution_options(yield_per=batch_rows).execute(q)
        for part in result.partitions(batch_rows):
            _add_columns(acc, list(zip(*part, strict=True)), names)


def _read_sqlite(conn: Any, query: Any, acc: WindowAccumulator, batch_rows: int, names: list[str]) -> None:
    """``query`` on the connection's sqlite3 cursor: SQLAlchemy compiles it and converts its
    parameters (the datetimes as its SQLite DateTime type stores them), then fetchmany."""
    dialect = conn.dialect
    compiled = query.compile(dialect=dialect)
    params = compiled.construct_params()
    values = []
    for name in compiled.positiontup or []:
        process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        values.append(process(params[name]) if process else params[name])
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(str(compiled), values)
        while rows := cursor.fetchmany(batch_rows):
            _add_columns(acc, list(zip(*rows, strict=True)), names)
    finally:
        cursor.close()


def _add_columns(acc: WindowAccumulator, cols: list[tuple[Any, ...]], names: list[str]) -> None:
    """Fold one batch, given as the columns ``names`` (``_window_columns()``), into ``acc``."""
    endpoints, statuses, latency, prompts, outputs, p_tok, c_tok = cols[: len(_WINDOW_COLUMNS)]
    stops = dict(zip(names[len(_WINDOW_COLUMNS) :], cols[len(_WINDOW_COLUMNS) :], strict=True))
    acc.add(
        list(endpoints),
        np.asarray(statuses, dtype=np.int64),
        np.asarray(latency, dtype=float),
        pa.array(prompts, pa.large_string()),
        pa.array(outputs, pa.large_string()),
        pa.array(p_tok, pa.int64()),
        pa.array(c_tok, pa.int64()),
        pa.array(stops["finish_reason"], pa.large_string()) if "finish_reason" in stops else None,
        pa.array(stops["max_tokens"], pa.int64()) if "max_tokens" in stops else None,
    )


def window_profile(
    engine: Any, model: str, start: datetime, end: datetime, top_k: int = TOP_WORDS
) -> dict[str, Any]:
    """A reference profile made of a window of the request log itself (``source: requests``):
    the lengths in words of prompts and outputs, the ``top_k`` words of each side, the token
    counts the server logged and the latency histogram (the log bins of the latency check).
    ``run_checks`` against it adds the drift checks of ``output_oov_rate``, ``prompt_tokens``,
    ``completion_tokens`` and ``latency_s`` to those of a training profile."""
    acc = WindowAccumulator([], False, count_words=True, repetition=False)
    RequestLog(engine)
    read_window(engine, model, start, end, acc)
    assert acc.prompt_counter is not None and acc.output_counter is not None
    return {
        "kind": "text",
        "source": "requests",
        "window": {"start": start.isoformat(), "end": end.isoformat(), "requests": acc.requests},
        "records": acc.text_requests,
        "prompt_words": acc.prompt_len.to_json(),
        "output_words": acc.output_len.to_json(),
        "vocabulary": acc.prompt_counter.to_json(top_k),
        "output_vocabulary": acc.output_counter.to_json(top_k),
        "prompt_tokens": acc.prompt_tokens.to_json(),
        "completion_tokens": acc.completion_tokens.to_json(),
        "latency": {"bins_per_decade": LATENCY_BINS_PER_DECADE, "counts": acc.latency.tolist()},
        "languages": None,
    }


def feedback_counts(engine: Any, model: str, start: datetime, end: datetime) -> dict[int, int]:
    """{rating: count} of the feedback on the window's requests of ``model``."""
    r, f = requests.c, feedback.c
    q = (
        select(f.rating, func.count())
        .select_from(feedback.join(requests, f.request_id == r.request_id))
        .where(and_(r.model == model, r.created_at >= start, r.created_at < end))
        .group_by(f.rating)
    )
    with engine.connect() as c:
        return {int(k): int(v) for k, v in c.execute(q)}


# ----------------------------------------------------------------------------------------------
# the checks


def _skip(kind: str, signal: str, method: str, threshold: float, why: str) -> Check:
    return Check(kind, signal, method, None, threshold, False, None, {"skipped": why}, why)


def _skip_histogram(signal: str, th: Thresholds, why: str) -> list[Check]:
    """The PSI and KS checks of a histogram, both skipped for the same reason."""
    return [_skip("drift", signal, "psi", th.psi, why), _skip("drift", signal, "ks", th.ks_alpha, why)]


def _psi_check(signal: str, score: float, th: Thresholds, evidence: dict[str, Any]) -> Check:
    """PSI of binned counts: a breach above ``psi``."""
    return Check("drift", signal, "psi", score, th.psi, score > th.psi, None, evidence)


def _ks_check(signal: str, res: DriftResult, th: Thresholds, **evidence: Any) -> Check:
    """KS of two histograms: a breach when p < ``ks_alpha`` and the statistic is at least
    ``ks_min_statistic`` (a large window makes a tiny shift significant)."""
    breached = res.p_value is not None and res.p_value < th.ks_alpha and res.score >= th.ks_min_statistic
    return Check(
        "drift",
        signal,
        "ks",
        res.score,
        th.ks_alpha,
        breached,
        res.p_value,
        {**res.evidence, "min_statistic": th.ks_min_statistic, **evidence},
    )


def length_checks(
    signal: str, ref: dict[str, Any], cur: LengthHistogram, th: Thresholds, n_text: int
) -> list[Check]:
    """PSI and KS of a window's length histogram against the profile's."""
    if not ref.get("n"):
        return _skip_histogram(signal, th, "the profile has no lengths")
    if n_text < th.min_requests or cur.n == 0:
        why = f"{n_text} text requests in the window (at least {th.min_requests} needed)"
        if n_text >= th.min_requests:
            why = f"no {signal.split('_')[0]} texts were logged (a server with redact: true stores none)"
            if signal.endswith("_tokens"):
                why = f"no {signal.replace('_', ' ')} were logged"
        return _skip_histogram(signal, th, why)
    values, counts = cur.sparse()
    edges = np.asarray(ref["edges"], dtype=float)
    window_bins = binned(values, counts, edges)
    score = psi_from_counts(ref["bin_counts"], window_bins.tolist())
    mean = float(np.dot(values, counts) / counts.sum())
    psi_check = _psi_check(
        signal,
        score,
        th,
        {
            "edges": edges.tolist(),
            "reference_counts": ref["bin_counts"],
            "counts": window_bins.tolist(),
            "reference_mean": ref.get("mean"),
            "mean": mean,
        },
    )
    res = ks_from_counts(ref["values"], ref["counts"], values, counts)
    return [psi_check, _ks_check(signal, res, th, reference_mean=ref.get("mean"), mean=mean)]


def category_checks(
    signal: str,
    ref: Mapping[str, float],
    cur: Mapping[str, float],
    th: Thresholds,
    skipped: str | None = None,
) -> list[Check]:
    """JS distance and chi-square of a window's category counts against the profile's."""
    if skipped is None and (sum(ref.values()) <= 0 or sum(cur.values()) <= 0):
        skipped = "no counts to compare"
    if skipped is not None:
        return [
            _skip("drift", signal, "js", th.js, skipped),
            _skip("drift", signal, "chi2", th.chi2_alpha, skipped),
        ]
    d = js(dict(ref), dict(cur))
    c = chi2(dict(ref), dict(cur))
    ev = {"reference": dict(ref), "counts": dict(cur)}
    return [
        Check("drift", signal, "js", d.score, th.js, d.score > th.js, None, {**ev, **d.evidence}),
        Check(
            "drift",
            signal,
            "chi2",
            c.score,
            th.chi2_alpha,
            c.p_value is not None and c.p_value < th.chi2_alpha and d.score >= th.js,
            c.p_value,
            {**ev, "dof": c.evidence["dof"], "js": d.score},
        ),
    ]


def latency_drift_checks(ref_counts: Any, acc: WindowAccumulator, th: Thresholds) -> list[Check]:
    """PSI and KS of the window's latency histogram against a reference one (same log bins).
    PSI's bins are runs of log bins that hold about a tenth of the reference each; KS compares
    the two CDFs at the log-bin edges, so its statistic is at most the exact one (bins are 4.7%
    wide)."""
    ref = np.asarray(ref_counts, dtype=np.int64)
    cur = acc.latency
    if ref.sum() == 0 or len(ref) != len(cur):
        return _skip_histogram("latency_s", th, "the profile has no latency histogram of these bins")
    if cur.sum() < th.min_requests:
        why = f"{int(cur.sum())} requests in the window (at least {th.min_requests} needed)"
        return _skip_histogram("latency_s", th, why)
    cum = np.cumsum(ref)
    cuts = np.unique(np.searchsorted(cum, np.linspace(0, 1, 11)[1:-1] * cum[-1], side="left"))
    group = np.searchsorted(cuts, np.arange(len(ref)), side="left")
    ref_g = np.bincount(group, weights=ref, minlength=len(cuts) + 1)
    cur_g = np.bincount(group, weights=cur, minlength=len(cuts) + 1)
    score = psi_from_counts(ref_g, cur_g)
    upper = [float(LATENCY_EDGES[min(int(i), len(LATENCY_EDGES) - 1)]) for i in cuts]
    psi_check = _psi_check(
        "latency_s",
        score,
        th,
        {
            "edges": upper,
            "reference_counts": ref_g.astype(int).tolist(),
            "counts": cur_g.astype(int).tolist(),
        },
    )
    nz_r, nz_c = np.flatnonzero(ref), np.flatnonzero(cur)
    res = ks_from_counts(nz_r, ref[nz_r], nz_c, cur[nz_c])
    return [psi_check, _ks_check("latency_s", res, th, binned=True)]


def _rate(kind: str, signal: str, k: int, n: int, threshold: float, why_empty: str, **ev: Any) -> Check:
    if n == 0:
        return _skip(kind, signal, "rate", threshold, why_empty)
    rate = k / n
    return Check(kind, signal, "rate", rate, threshold, rate > threshold, None, {"count": k, "of": n, **ev})


def _languages(texts: list[str]) -> dict[str, int] | str:
    """Language counts of ``texts`` (langid), or why they cannot be detected."""
    try:
        from genloom.preprocess.language import LanguageMap

        step = LanguageMap()
        step.setup()
    except GenloomError as e:
        return f"language identification unavailable: {e}"
    out: dict[str, int] = {}
    for t in texts:
        lang = step.detect(t)[0]
        out[lang] = out.get(lang, 0) + 1
    return out


def text_checks(profile: dict[str, Any], acc: WindowAccumulator, th: Thresholds) -> list[Check]:
    """The drift checks of a text model's window."""
    n = acc.text_requests
    checks = length_checks("prompt_words", profile["prompt_words"], acc.prompt_len, th, n)
    checks += length_checks("output_words", profile["output_words"], acc.output_len, th, n)
    vocab = profile["vocabulary"]
    ref = {"in_vocabulary": vocab["tokens"] - vocab["oov_tokens"], "oov": vocab["oov_tokens"]}
    cur = {"in_vocabulary": acc.words - acc.oov, "oov": acc.oov}
    few = (
        f"{n} text requests in the window (at least {th.min_requests} needed)"
        if n < th.min_requests
        else None
    )
    if few is None and acc.words == 0:
        few = "the window's prompts have no words (empty, or not stored: a server with redact: true)"
    oov = category_checks("prompt_oov_rate", ref, cur, th, few)
    for c in oov:
        c.evidence.update(
            reference_oov_rate=vocab["oov_rate"],
            oov_rate=acc.oov / acc.words if acc.words else None,
            top_k=vocab["top_k"],
        )
        if c.score is not None and c.method == "js":
            c.evidence["note"] = "JS distance of (in vocabulary, out of it) word shares"
    checks += oov
    out_vocab = profile.get("output_vocabulary")
    if out_vocab:
        ref = {"in_vocabulary": out_vocab["tokens"] - out_vocab["oov_tokens"], "oov": out_vocab["oov_tokens"]}
        cur = {"in_vocabulary": acc.out_words - acc.out_oov, "oov": acc.out_oov}
        why = few
        if why is None and acc.out_words == 0:
            why = "the window's outputs have no words (empty, or not stored: a server with redact: true)"
        out_checks = category_checks("output_oov_rate", ref, cur, th, why)
        for c in out_checks:
            c.evidence.update(
                reference_oov_rate=out_vocab["oov_rate"],
                oov_rate=acc.out_oov / acc.out_words if acc.out_words else None,
                top_k=out_vocab["top_k"],
            )
        checks += out_checks
    for name, hist in (("prompt_tokens", acc.prompt_tokens), ("completion_tokens", acc.completion_tokens)):
        if name in profile:
            checks += length_checks(name, profile[name], hist, th, n)
    if profile.get("latency"):
        checks += latency_drift_checks(profile["latency"]["counts"], acc, th)
    if profile.get("languages"):
        found = few or (_languages(acc.lang_sample) if acc.lang_sample else "no prompts to identify")
        if isinstance(found, str):
            checks += category_checks("prompt_language", {}, {}, th, found)
        else:
            lang = category_checks("prompt_language", dict(profile["languages"]), dict(found), th)
            for c in lang:
                c.evidence["sample"] = len(acc.lang_sample)
            checks += lang
    return checks


def quality_checks(acc: WindowAccumulator, th: Thresholds) -> list[Check]:
    """Error rate, p95 latency, empty, repetitive and truncated outputs of the window."""
    none = "no requests in the window"
    checks = [
        _rate(
            "quality",
            "error_rate",
            acc.errors,
            acc.requests,
            th.error_rate,
            none,
            client_errors=acc.client_errors,
        )
    ]
    p95 = acc.latency_quantile(0.95)
    if p95 is None:
        checks.append(_skip("quality", "latency_p95", "quantile", th.latency_p95_s, none))
    else:
        ev = {
            "p50": acc.latency_quantile(0.5),
            "p99": acc.latency_quantile(0.99),
            "mean": acc.latency_sum / acc.requests if acc.requests else None,
            "max": acc.latency_max,
            "bins_per_decade": LATENCY_BINS_PER_DECADE,
        }
        checks.append(
            Check(
                "quality", "latency_p95", "quantile", p95, th.latency_p95_s, p95 > th.latency_p95_s, None, ev
            )
        )
    checks.append(
        _rate(
            "quality",
            "empty_output_rate",
            acc.empty_outputs,
            acc.outputs,
            th.empty_output_rate,
            "no text outputs in the window",
        )
    )
    checks.append(
        _rate(
            "quality",
            "repetition_rate",
            acc.repetitive,
            acc.repetition_outputs,
            th.repetition_rate,
            f"no text outputs of {REPETITION_MIN_WORDS} words or more in the window",
            min_words=REPETITION_MIN_WORDS,
            min_distinct_4grams=REPETITION_MIN_DISTINCT,
        )
    )
    if acc.stops_known is None and acc.requests == 0:
        checks.append(_skip("quality", "truncation_rate", "rate", th.truncation_rate, none))
    elif acc.stops_known is None:
        why = (
            "the request log stores no finish_reason and no max_tokens, so a stop at the token "
            "limit cannot be told"
        )
        checks.append(_skip("quality", "truncation_rate", "rate", th.truncation_rate, why))
    else:
        checks.append(
            _rate(
                "quality",
                "truncation_rate",
                acc.truncated,
                acc.stops_known,
                th.truncation_rate,
                "no responses with a known stop (finish_reason, or completion and max tokens) in the window",
            )
        )
    return checks


def feedback_checks(counts: dict[int, int], th: Thresholds) -> list[Check]:
    """The share of negative ratings (<= 0) in the window's feedback."""
    n = sum(counts.values())
    neg = sum(v for k, v in counts.items() if k <= 0)
    ev: dict[str, Any] = {"ratings": {str(k): v for k, v in sorted(counts.items())}}
    if n:
        ev["mean_rating"] = sum(k * v for k, v in counts.items()) / n
    if n < th.min_feedback:
        why = f"{n} ratings in the window (at least {th.min_feedback} needed)"
        chk = _skip("feedback", "negative_feedback_rate", "rate", th.negative_feedback_rate, why)
        chk.evidence.update(ev)
        return [chk]
    return [_rate("feedback", "negative_feedback_rate", neg, n, th.negative_feedback_rate, "", **ev)]


#: a check on the window's sample of requests (``WindowAccumulator.sample``), run after the counts
SampleCheck = Callable[["WindowAccumulator", Thresholds], list[Check]]


def skipped(signal: str, skip: Sequence[str]) -> bool:
    """Whether ``monitor.skip`` names ``signal``: itself, or its ``family:`` prefix (a prefix
    itself, ``gate:``, is skipped by ``gate:`` only)."""
    return any(signal == s or (s.endswith(":") and signal.startswith(s)) for s in skip)


def run_checks(
    engine: Any,
    model: str,
    version: int,
    profile: dict[str, Any],
    profile_key: str,
    profile_computed: bool,
    start: datetime,
    end: datetime,
    thresholds: Thresholds | None = None,
    record: bool = True,
    sample_checks: Sequence[SampleCheck] = (),
    skip: Sequence[str] = (),
) -> MonitorReport:
    """Check the window's requests of ``model`` against its profile; each check is stored in the
    MonitorLog (``record``) with the window and the model version. With ``sample_checks``, the
    window keeps a sample of ``SAMPLE_REQUESTS`` text requests and each of them adds its checks.
    A table model's window also checks the conditions its ``/v1/samples`` requests asked for.
    ``skip``: signals (or ``prefix:`` families) left out (``monitor.skip``)."""
    th = thresholds or Thresholds()
    text = profile.get("kind") == "text"
    vocabulary = list((profile.get("vocabulary") or {}).get("words") or {}) if text else []
    out_vocab = list((profile.get("output_vocabulary") or {}).get("words") or {}) if text else []
    acc = WindowAccumulator(
        vocabulary,
        text and bool(profile.get("languages")),
        output_vocabulary=out_vocab if text and profile.get("output_vocabulary") else None,
        samples=SAMPLE_REQUESTS if sample_checks else 0,
    )
    RequestLog(engine)  # the request tables exist even when no server has written to this catalog
    read_window(engine, model, start, end, acc)
    checks = text_checks(profile, acc, th) if text else []
    checks += quality_checks(acc, th)
    for sample_check in sample_checks:
        checks += sample_check(acc, th)
    if profile.get("kind") == "table" and not skipped("condition:", skip):
        from genloom.monitor.conditions import condition_checks, condition_counts

        checks += condition_checks(profile, condition_counts(engine, model, start, end), th)
    checks += feedback_checks(feedback_counts(engine, model, start, end), th)
    checks = [c for c in checks if not skipped(c.signal, skip)]
    for c in checks:
        c.evidence["profile"] = profile_key
    report = MonitorReport(
        model, version, start, end, acc.requests, acc.text_requests, checks, profile_key, profile_computed
    )
    if record:
        log = MonitorLog(engine)
        for c in checks:
            store_check(log, c, model, version, start, end)
    return report


def store_check(log: MonitorLog, c: Check, model: str, version: int, start: datetime, end: datetime) -> None:
    """Store ``c`` as a check of ``model`` version ``version`` over [start, end); sets ``c.id``."""
    c.id = log.add_check(
        kind=c.kind,
        signal=c.signal,
        method=c.method,
        score=c.score,
        threshold=c.threshold,
        breached=c.breached,
        model=model,
        version=version,
        window_start=start,
        window_end=end,
        p_value=c.p_value,
        evidence=c.evidence,
    )


def monitor_pipeline(
    pipeline: Any,
    start: datetime,
    end: datetime,
    model: str | None = None,
    thresholds: Thresholds | None = None,
    samples: bool = True,
    skip: Sequence[str] = (),
    reference: tuple[datetime, datetime] | None = None,
) -> MonitorReport:
    """Check the champion of ``model`` (default: the pipeline's) over the window [start, end): its
    profile is read, or computed from its training data on first use. ``samples``: a text
    champion also gets the sample checks (embedding drift, its loss on its outputs, the gates).
    ``reference``: a window [start, end) of the request log to compare with instead of the
    training profile (``window_profile``; the sample checks still compare with the training data)."""
    from genloom.core.errors import NotFoundError
    from genloom.stages.profile import model_profile, profile_key

    name = model or pipeline.model_name
    champion = pipeline.catalog.champion(name)
    if champion is None:
        known = sorted({m["name"] for m in pipeline.catalog.models()})
        hint = (
            f" (models in the catalog: {', '.join(known)})"
            if known
            else " (the catalog has no models: genloom run first)"
        )
        raise NotFoundError(f"model {name!r} has no champion to monitor{hint}")
    if reference is not None:  # an earlier window of the request log instead of the training data
        profile = window_profile(pipeline.catalog.engine, name, *reference)
        if profile["records"] == 0:
            raise NotFoundError(
                f"the reference window {reference[0]:%Y-%m-%d %H:%M} - {reference[1]:%Y-%m-%d %H:%M} UTC has "
                f"no text requests of {name!r} to compare with"
            )
        key, computed = f"requests:{reference[0].isoformat()}/{reference[1].isoformat()}", True
    else:
        profile, computed = model_profile(pipeline.store, pipeline.catalog, pipeline.cfg.name, champion)
        key = profile_key(str(champion["artifact_key"]))
    sample_checks: list[SampleCheck] = []
    if samples and profile.get("kind") == "text":
        from genloom.monitor.embedding_drift import SIGNALS, EmbeddingDriftCheck
        from genloom.monitor.gate_sample import GateSampleCheck
        from genloom.monitor.output_loss import SIGNAL, OutputLossCheck

        store = pipeline.store
        metrics = dict(champion.get("metrics") or {})
        if not all(skipped(s, skip) for s in SIGNALS.values()):
            sample_checks.append(EmbeddingDriftCheck(store, pipeline.catalog, pipeline.cfg.name, champion))
        if not skipped(SIGNAL, skip):
            sample_checks.append(OutputLossCheck(lambda: store.registered_model(champion), metrics))
        gates = dict(pipeline.cfg.evaluate.gates)
        if gates and not skipped("gate:", skip):
            sample_checks.append(GateSampleCheck(gates, metrics))
    return run_checks(
        pipeline.catalog.engine,
        name,
        int(champion["version"]),
        profile,
        key,
        computed,
        start,
        end,
        thresholds,
        sample_checks=sample_checks,
        skip=skip,
    )

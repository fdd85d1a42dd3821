"""Reference profiles: what a model's training records looked like, for drift checks on live traffic.

A profile is computed from the data-stage artifact a model version was trained on, found through
the version's training artifact (``train`` manifest -> its ``prepare`` input -> that artifact's data
input and split), on the *training split only* (the rows the model saw), streaming the shards in
Arrow batches: memory holds one batch, the histograms and the word counts, never the corpus.

- **text** models: the length in words of the prompt side and of the output side of each record
  (both the record's ``text`` for plain text; the user/system and the assistant messages with
  ``train.chat``) as an exact histogram, plus its quantile edges and bin counts (PSI bins); the
  ``top_k`` most frequent words with their counts and the out-of-vocabulary rate (share of word
  tokens outside them); the language mix when the records have a ``lang`` column (the
  ``language`` preprocess step). Words are runs of letters and digits, lower-cased.
- **table** models: per column, numeric quantile edges (from a uniform sample of at most
  ``QUANTILE_SAMPLE`` values: exact below that) with exact bin counts over every row, or the
  categorical frequencies of the ``CATEGORY_LEVELS`` most frequent levels (the rest counted as
  other), and missing counts.

- ``family``: the model family's own profile of the prepared artifact it trained on
  (``ModelFamily.profile``: the text family's tokens per document and most frequent tokens; a table
  family's per-column quantiles and levels; a series family's per-channel statistics; an image
  family's labels and pixel statistics), checked to be strict JSON of bounded size;
  ``family_missing`` says why it is None.

The profile is a JSON artifact ``artifacts/profile/<key>/profile.json`` (manifest last), keyed by
the model's artifact key and the profile settings, and registered in the catalog with lineage
edges from the training, prepared and data artifacts. The register stage makes it when it
registers a version (``build_profile`` before registering, ``save_profile`` after), so it exists
before anyone monitors; ``model_profile`` reads it back, or computes it for a version trained
before profiles came with training (its family part then from the prepared artifact, when that is
on this machine).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genloom.core.catalog import Catalog
from genloom.core.errors import GenloomError, NotFoundError
from genloom.core.store import ArtifactStore, content_key
from genloom.stages.base import DATA_STAGES, split_of

#: bumped when the profile's content changes, so older cached profiles are recomputed
PROFILE_VERSION = 2
#: the most JSON a family's own profile may take (a family's ``profile()`` must stay bounded)
MAX_FAMILY_BYTES = 8_000_000
LENGTH_BINS = 10
TOP_WORDS = 5000
#: distinct words counted exactly; beyond this the rarest half is dropped (``vocabulary.exact`` false)
MAX_DISTINCT_WORDS = 500_000
CATEGORY_LEVELS = 100
QUANTILE_SAMPLE = 100_000
LANG_COLUMN = "lang"
#: RE2 pattern between words: a word is a run of letters and digits (any script)
WORD_SPLIT = r"[^\p{L}\p{N}]+"
#: the record's own fields, never profiled as table columns
RECORD_FIELDS = ("id", "text", "source", "meta")


# ----------------------------------------------------------------------------------------------
# words and lengths, vectorised (the monitor reads requests with the same functions)


def split_words(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(every word of ``texts``, lower-cased, as one flat array; the number of words of each text)."""
    arr = pc.fill_null(pa.array(texts, pa.large_string()), "")
    if len(arr) == 0:
        return pa.array([], pa.large_string()), np.zeros(0, dtype=np.int64)
    # every non-word character becomes a space, then a literal split (RE2's split is slower):
    # ASCII texts through a byte table, the others through the regex
    ascii_rows = pc.string_is_ascii(arr)
    spaced = _ascii_spaced(arr)
    if not pc.all(ascii_rows).as_py():
        other = pc.invert(ascii_rows)
        spaced = pc.replace_with_mask(
            spaced,
            other,
            pc.replace_substring_regex(pc.utf8_lower(pc.filter(arr, other)), WORD_SPLIT, " "),
        )
    pieces = pc.split_pattern(spaced, " ")
    flat = pc.list_flatten(pieces)
    parents = pc.list_parent_indices(pieces)
    keep = pc.not_equal(flat, "")
    words = pc.filter(flat, keep)
    counts = np.bincount(np.asarray(pc.filter(parents, keep), dtype=np.int64), minlength=len(arr)).astype(
        np.int64
    )
    return words, counts


#: ASCII bytes to what a word split sees: letters lower-cased, digits kept, everything else a space
_ASCII_WORD_BYTES = np.full(256, ord(" "), dtype=np.uint8)
for _c in b"abcdefghijklmnopqrstuvwxyz0123456789":
    _ASCII_WORD_BYTES[_c] = _c
for _c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ":
    _ASCII_WORD_BYTES[_c] = _c + 32
_ASCII_WORD_BYTES[128:] = np.arange(128, 256, dtype=np.uint8)  # left as they are (not ASCII rows)


def _ascii_spaced(arr: pa.Array) -> pa.Array:
    """``arr`` (large strings) with its bytes through ``_ASCII_WORD_BYTES``: for an ASCII text,
    the same as lower-casing it and turning each character outside ``[a-z0-9]`` into a space."""
    validity, offsets, data = arr.buffers()
    if data is None:
        return arr
    mapped = _ASCII_WORD_BYTES[np.frombuffer(data, dtype=np.uint8)]
    return pa.LargeStringArray.from_buffers(
        len(arr), offsets, pa.py_buffer(mapped), validity, arr.null_count, arr.offset
    )


class LengthHistogram:
    """Exact counts of non-negative integer lengths, grown as longer ones arrive."""

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, lengths: np.ndarray) -> None:
        """Count ``lengths`` (integers >= 0)."""
        if len(lengths) == 0:
            return
        new = np.bincount(np.asarray(lengths, dtype=np.int64))
        if len(new) > len(self.counts):
            new[: len(self.counts)] += self.counts
            self.counts = new
        else:
            self.counts[: len(new)] += new

    @property
    def n(self) -> int:
        """How many lengths were counted."""
        return int(self.counts.sum())

    def sparse(self) -> tuple[np.ndarray, np.ndarray]:
        """(the lengths seen, their counts)."""
        values = np.flatnonzero(self.counts)
        return values, self.counts[values]

    def to_json(self, bins: int = LENGTH_BINS) -> dict[str, Any]:
        """Histogram, quantile edges (the PSI bins: (-inf, e0], (e0, e1], ...) and their counts."""
        values, counts = self.sparse()
        if len(values) == 0:
            return {"n": 0, "values": [], "counts": [], "edges": [], "bin_counts": [], "mean": None}
        edges = histogram_edges(values, counts, bins)
        return {
            "n": int(counts.sum()),
            "values": values.tolist(),
            "counts": counts.tolist(),
            "edges": edges.tolist(),
            "bin_counts": binned(values, counts, edges).tolist(),
            "mean": float(np.dot(values, counts) / counts.sum()),
            "quantiles": dict(
                zip(
                    ("p50", "p90", "p99"),
                    histogram_quantiles(values, counts, [0.5, 0.9, 0.99]).tolist(),
                    strict=True,
                )
            ),
        }


def histogram_quantiles(values: np.ndarray, counts: np.ndarray, qs: Any) -> np.ndarray:
    """``np.quantile`` (linear interpolation) of the sample that repeats each value its count times."""
    values = np.asarray(values, dtype=float)
    cum = np.cumsum(counts)
    n = int(cum[-1])
    pos = np.asarray(qs, dtype=float) * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    v_lo = values[np.searchsorted(cum, lo, side="right")]
    v_hi = values[np.searchsorted(cum, hi, side="right")]
    return v_lo + (pos - lo) * (v_hi - v_lo)


def histogram_edges(values: np.ndarray, counts: np.ndarray, bins: int = LENGTH_BINS) -> np.ndarray:
    """Inner PSI bin edges: the quantiles of the histogram's sample, duplicates dropped (as
    ``drift.quantile_edges`` does on a sample)."""
    return np.unique(histogram_quantiles(values, counts, np.linspace(0, 1, bins + 1)[1:-1]))


def binned(values: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of the histogram in the bins (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    idx = np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values, dtype=float), side="left")
    return np.bincount(idx, weights=counts, minlength=len(edges) + 1).astype(np.int64)


class WordCounter:
    """Word frequencies, exact until ``MAX_DISTINCT_WORDS`` distinct words (then the rarest half
    is dropped each time the table fills: a lossy count, and ``exact`` becomes False)."""

    def __init__(self, max_distinct: int = MAX_DISTINCT_WORDS) -> None:
        self.counts: dict[str, int] = {}
        self.total = 0
        self.exact = True
        self.max_distinct = max_distinct

    def add(self, words: pa.Array) -> None:
        """Count a flat array of words."""
        if len(words) == 0:
            return
        self.total += len(words)
        vc = pc.value_counts(words)
        get = self.counts.get
        for w, c in zip(vc.field(0).to_pylist(), vc.field(1).to_pylist(), strict=True):
            self.counts[w] = get(w, 0) + c
        if len(self.counts) > self.max_distinct:
            keep = sorted(self.counts.items(), key=lambda kv: -kv[1])[: self.max_distinct // 2]
            self.counts = dict(keep)
            self.exact = False

    def to_json(self, top_k: int = TOP_WORDS) -> dict[str, Any]:
        """The ``top_k`` words (most frequent first; ties by word), and the out-of-vocabulary rate."""
        top = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        covered = sum(c for _, c in top)
        return {
            "top_k": top_k,
            "words": dict(top),
            "tokens": self.total,
            "oov_tokens": self.total - covered,
            "oov_rate": (self.total - covered) / self.total if self.total else 0.0,
            "distinct": len(self.counts),
            "exact": self.exact,
        }


# ----------------------------------------------------------------------------------------------
# where a model's training data is


@dataclass
class TrainingData:
    """The data-stage artifact a model version was trained on, and how its split was drawn."""

    model_key: str
    prepare_key: str
    data_key: str
    data_stage: str
    shards: list[str]
    split: dict[str, Any]
    train: dict[str, Any]  # the train section as the training artifact recorded it


def training_data(store: ArtifactStore, catalog: Catalog, model_key: str) -> TrainingData:
    """Follow a model's artifact key back to its records: train manifest -> prepare -> data stage."""
    if not store.has_artifact("train", model_key):
        raise NotFoundError(
            f"the training artifact {model_key} is not in the store {store.root}: the model's data "
            "cannot be profiled (was the store moved or cleaned?)"
        )
    ingredients = store.read_manifest("train", model_key).get("ingredients") or {}
    prepare_key = str(ingredients.get("input") or "")
    if not prepare_key or not store.has_artifact("prepare", prepare_key):
        raise NotFoundError(
            f"the prepared data {prepare_key or '?'} of model artifact {model_key} is missing"
        )
    prep = store.read_manifest("prepare", prepare_key).get("ingredients") or {}
    data_key = str(prep.get("input") or "")
    known = catalog.artifact(data_key) if data_key else None
    stages = [known["stage"]] if known and known["stage"] in DATA_STAGES else list(reversed(DATA_STAGES))
    for stage in stages:
        if data_key and store.has_artifact(stage, data_key):
            shards = list(store.read_manifest(stage, data_key).get("shards") or [])
            return TrainingData(
                model_key,
                prepare_key,
                data_key,
                stage,
                shards,
                dict(prep.get("split") or {}),
                dict(ingredients.get("train") or {}),
            )
    raise NotFoundError(
        f"the records {data_key or '?'} that model artifact {model_key} was trained on are missing"
    )


def _train_batches(store: ArtifactStore, src: TrainingData, columns: list[str]) -> Iterator[pa.Table]:
    """The training split's rows of the data artifact, batch by batch (``columns`` that exist)."""
    val = float(src.split.get("val_fraction", 0.0))
    test = float(src.split.get("test_fraction", 0.0))
    seed = int(src.split.get("seed", 0))
    for shard in src.shards:
        present = store.shard_columns(src.data_stage, shard)
        cols = [c for c in dict.fromkeys(["id", "meta", *columns]) if c in present]
        for batch in store.iter_batches(src.data_stage, shard, columns=cols):
            if val or test:
                mask = np.asarray(split_of(batch, val, seed, test)) == "train"
                batch = batch.filter(pa.array(mask))
            if batch.num_rows:
                yield batch


# ----------------------------------------------------------------------------------------------
# the profiles


def _chat_sides(batch: pa.Table, field: str) -> tuple[list[str], list[str]]:
    """Each conversation's user/system contents and its assistant contents, newline-joined."""
    from genloom.models.text_family import chat_messages

    prompts, outputs = [], []
    for messages in chat_messages(batch, field):
        if not isinstance(messages, list):
            messages = []
        ms = [m for m in messages if isinstance(m, dict)]
        prompts.append("\n".join(str(m.get("content") or "") for m in ms if m.get("role") != "assistant"))
        outputs.append("\n".join(str(m.get("content") or "") for m in ms if m.get("role") == "assistant"))
    return prompts, outputs


def text_profile(store: ArtifactStore, src: TrainingData, top_k: int = TOP_WORDS) -> dict[str, Any]:
    """Lengths, vocabulary and language mix of a text model's training records."""
    chat = src.train.get("chat")
    field = str((chat or {}).get("messages_field") or "text")
    prompt_len, output_len, words = LengthHistogram(), LengthHistogram(), WordCounter()
    langs: dict[str, int] = {}
    records = 0
    for batch in _train_batches(store, src, [field, "text", LANG_COLUMN]):
        # the records the model trained on: the text family leaves out empty texts and rows
        # that hold no conversation
        if chat:
            prompts, outputs = _chat_sides(batch, field)
            keep = np.array([bool(a or b) for a, b in zip(prompts, outputs, strict=True)], dtype=bool)
            prompts = [t for t, k in zip(prompts, keep, strict=True) if k]
            outputs = [t for t, k in zip(outputs, keep, strict=True) if k]
            batch = batch.filter(pa.array(keep))
            p_words, p_counts = split_words(pa.array(prompts, pa.large_string()))
            _, o_counts = split_words(pa.array(outputs, pa.large_string()))
        else:
            text = batch.column("text").combine_chunks()
            batch = batch.filter(pc.fill_null(pc.greater(pc.utf8_length(text), 0), False))
            p_words, p_counts = split_words(batch.column("text").combine_chunks())
            o_counts = p_counts
        records += batch.num_rows
        words.add(p_words)
        prompt_len.add(p_counts)
        output_len.add(o_counts)
        if LANG_COLUMN in batch.column_names:
            vc = pc.value_counts(pc.fill_null(batch.column(LANG_COLUMN).combine_chunks(), "und"))
            for k, c in zip(vc.field(0).to_pylist(), vc.field(1).to_pylist(), strict=True):
                langs[str(k)] = langs.get(str(k), 0) + int(c)
    if records == 0:
        raise GenloomError(f"the training split of {src.data_stage} artifact {src.data_key} has no records")
    return {
        "kind": "text",
        "records": records,
        "text_field": field,
        "chat": bool(chat),
        "prompt_words": prompt_len.to_json(),
        "output_words": output_len.to_json(),
        "vocabulary": words.to_json(top_k),
        "languages": langs or None,
    }


def _numeric_values(col: pa.Array) -> np.ndarray | None:
    """A column as float64 (timestamps and dates in seconds since the epoch, nulls NaN), or None."""
    t = col.type
    if pa.types.is_timestamp(t):
        per_s = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[t.unit]
        col = pc.divide(pc.cast(pc.cast(col, pa.timestamp(t.unit)), pa.int64()).cast(pa.float64()), per_s)
    elif pa.types.is_date(t):
        col = pc.multiply(pc.cast(pc.cast(col, pa.date32()), pa.int32()).cast(pa.float64()), 86400.0)
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        col = pc.cast(col, pa.float64())
    else:
        return None
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=float)


def _column_kind(t: pa.DataType) -> str | None:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if any(
        f(t)
        for f in (
            pa.types.is_integer,
            pa.types.is_floating,
            pa.types.is_decimal,
            pa.types.is_timestamp,
            pa.types.is_date,
        )
    ):
        return "numeric"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t):
        return "categorical"
    return None


def table_profile(
    store: ArtifactStore, src: TrainingData, seed: int = 0, bins: int = LENGTH_BINS
) -> dict[str, Any]:
    """Per-column distributions of a table model's training rows (two streaming passes: the numeric
    quantile sample and the level counts, then exact bin counts on the sample's edges)."""
    if not src.shards:
        raise GenloomError(f"the {src.data_stage} artifact {src.data_key} has no shards")
    found = [c for s in src.shards for c in store.shard_columns(src.data_stage, s)]
    names = [n for n in dict.fromkeys(found) if n not in RECORD_FIELDS]
    rng = np.random.default_rng(seed)
    kinds: dict[str, str] = {}
    left_out: dict[str, str] = {}
    sample: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # bottom-k by random key: uniform sample
    levels: dict[str, dict[str, int]] = {}
    missing: dict[str, int] = {}
    rows = 0
    for batch in _train_batches(store, src, names):
        rows += batch.num_rows
        for name in names:
            if name not in batch.column_names or name in left_out:
                continue
            col = batch.column(name).combine_chunks()
            kind = kinds.get(name) or _column_kind(col.type)
            if kind is None:
                left_out[name] = f"unsupported type {col.type}"
                continue
            kinds[name] = kind
            missing[name] = missing.get(name, 0) + col.null_count
            if kind == "numeric":
                x = _numeric_values(col)
                x = x[np.isfinite(x)] if x is not None else np.zeros(0)
                keys = rng.random(len(x))
                old_x, old_k = sample.get(name, (np.zeros(0), np.zeros(0)))
                x, keys = np.concatenate([old_x, x]), np.concatenate([old_k, keys])
                if len(x) > QUANTILE_SAMPLE:
                    keep = np.argpartition(keys, QUANTILE_SAMPLE)[:QUANTILE_SAMPLE]
                    x, keys = x[keep], keys[keep]
                sample[name] = (x, keys)
            else:
                vc = pc.value_counts(pc.cast(col.drop_null(), pa.string()))
                table = levels.setdefault(name, {})
                for v, c in zip(vc.field(0).to_pylist(), vc.field(1).to_pylist(), strict=True):
                    table[v] = table.get(v, 0) + int(c)
    if rows == 0:
        raise GenloomError(f"the training split of {src.data_stage} artifact {src.data_key} has no rows")
    edges = {
        n: np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
        for n, (x, _) in sample.items()
        if len(x)
    }
    counts = {n: np.zeros(len(e) + 1, dtype=np.int64) for n, e in edges.items()}
    stats: dict[str, list[float]] = {n: [np.inf, -np.inf, 0.0, 0.0] for n in edges}  # min max sum n
    if edges:  # second pass: exact bin counts over every row
        for batch in _train_batches(store, src, list(edges)):
            for name, e in edges.items():
                x = _numeric_values(batch.column(name).combine_chunks())
                x = x[np.isfinite(x)] if x is not None else np.zeros(0)
                if len(x):
                    counts[name] += np.bincount(np.searchsorted(e, x, side="left"), minlength=len(e) + 1)
                    s = stats[name]
                    s[0], s[1] = min(s[0], float(x.min())), max(s[1], float(x.max()))
                    s[2], s[3] = s[2] + float(x.sum()), s[3] + len(x)
    columns: dict[str, Any] = {}
    for name, kind in kinds.items():
        entry: dict[str, Any] = {"kind": kind, "missing": missing.get(name, 0)}
        if kind == "numeric":
            x = sample.get(name, (np.zeros(0),))[0]
            if name in edges:
                s = stats[name]
                entry.update(
                    edges=edges[name].tolist(),
                    bin_counts=counts[name].tolist(),
                    n=int(s[3]),
                    min=s[0],
                    max=s[1],
                    mean=s[2] / s[3] if s[3] else None,
                    edges_from=int(len(x)),
                )
            else:
                entry.update(edges=[], bin_counts=[], n=0)
        else:
            table = levels.get(name, {})
            top = sorted(table.items(), key=lambda kv: (-kv[1], kv[0]))[:CATEGORY_LEVELS]
            entry.update(
                levels=dict(top),
                other=sum(table.values()) - sum(c for _, c in top),
                distinct=len(table),
                n=sum(table.values()),
            )
        columns[name] = entry
    return {"kind": "table", "records": rows, "columns": columns, "left_out": left_out}


# ----------------------------------------------------------------------------------------------
# the artifact


def profile_key(model_key: str, top_k: int = TOP_WORDS) -> str:
    """The profile artifact's key: the model's artifact key and the profile's settings."""
    settings = {"bins": LENGTH_BINS, "top_k": top_k, "levels": CATEGORY_LEVELS, "sample": QUANTILE_SAMPLE}
    return content_key(
        {"stage": "profile", "model": model_key, "version": PROFILE_VERSION, "settings": settings}
    )


def compute_profile(
    store: ArtifactStore,
    src: TrainingData,
    generates_text: bool,
    top_k: int = TOP_WORDS,
    family_part: dict[str, Any] | None = None,
    family_missing: str | None = None,
) -> dict[str, Any]:
    """The profile of a model's training split (not stored), with the family's own part."""
    body = text_profile(store, src, top_k) if generates_text else table_profile(store, src)
    return {
        **body,
        "profile_version": PROFILE_VERSION,
        "split": "train",
        "family": family_part,
        "family_missing": family_missing,
        "sources": {
            "model": src.model_key,
            "prepare": src.prepare_key,
            "data": src.data_key,
            "data_stage": src.data_stage,
            "shards": len(src.shards),
        },
    }


def family_profile(kind: str, prepared_dir: Path) -> dict[str, Any]:
    """The family's own profile of its prepared artifact (``ModelFamily.profile``), checked: strict
    JSON (no NaN, no objects JSON does not know) of at most ``MAX_FAMILY_BYTES``; anything else is a
    bug in the family, raised."""
    from genloom.models.base import family

    part = family(kind).profile(Path(prepared_dir))
    try:
        text = json.dumps(part, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise GenloomError(
            f"the {kind} family's profile of {prepared_dir} is not strict JSON ({e}): a bug in"
            f" {type(family(kind)).__qualname__}.profile"
        ) from e
    if len(text) > MAX_FAMILY_BYTES:
        raise GenloomError(
            f"the {kind} family's profile of {prepared_dir} is {len(text):,} bytes of JSON, above"
            f" {MAX_FAMILY_BYTES:,}: a family's profile must stay bounded (a bug in its profile())"
        )
    return dict(json.loads(text))  # what reading the artifact back gives (int keys as strings...)


def build_profile(
    store: ArtifactStore,
    catalog: Catalog,
    model_key: str,
    generates_text: bool | None = None,
    top_k: int = TOP_WORDS,
    prepared_dir: Path | None = None,
) -> dict[str, Any]:
    """The profile of the model artifact ``model_key`` (not stored): its training split, and the
    family's profile of ``prepared_dir`` (the training run's prepared artifact; any error raised).
    Without ``prepared_dir`` (a version trained before profiles were made at training time), the
    family's part is read from the prepared artifact when its files are on this machine, else left
    None with the reason in ``family_missing``."""
    src = training_data(store, catalog, model_key)
    kind = str((src.train.get("model") or {}).get("type") or "")
    if generates_text is None:
        if not kind:
            raise NotFoundError(f"the training artifact {src.model_key} does not record its model type")
        from genloom.models.base import family

        generates_text = bool(family(kind).generates_text)
    part: dict[str, Any] | None = None
    missing: str | None = None
    if prepared_dir is not None:
        if not kind:
            raise NotFoundError(f"the training artifact {src.model_key} does not record its model type")
        part = family_profile(kind, prepared_dir)
    elif not kind:
        missing = "the training artifact does not record its model type"
    else:
        folder, missing = _prepared_folder(store, src.prepare_key)
        if folder is not None:
            try:
                part = family_profile(kind, folder)
            except (FileNotFoundError, NotFoundError) as e:  # prepared before the family wrote it
                missing = f"the prepared artifact {src.prepare_key} lacks the family's files: {e}"
    return compute_profile(store, src, generates_text, top_k, part, missing)


def _prepared_folder(store: ArtifactStore, prepare_key: str) -> tuple[Path | None, str | None]:
    """(the prepared artifact's local folder, None), or (None, why there is none): on an object
    store only a copy already in the local cache is used (prepared data can be gigabytes)."""
    if store.local:
        return Path(store.artifact_dir("prepare", prepare_key)), None
    if store.cache is not None and store.local_path(store.artifact_dir("prepare", prepare_key)).is_dir():
        return store.fetch_artifact("prepare", prepare_key), None  # verified, changed files fetched
    return None, (
        f"the prepared artifact {prepare_key} is not in this machine's cache of the object store"
        f" {store.root} (a profile made at training time has the family's part)"
    )


def save_profile(
    store: ArtifactStore,
    catalog: Catalog,
    pipeline: str,
    version: dict[str, Any],
    profile: dict[str, Any],
    top_k: int = TOP_WORDS,
    run_id: str = "",
) -> str:
    """Write a version's profile (``profile.json``, then the manifest that marks it done; the
    version's name, number and artifact key are set as ``profile["model"]``) and register it in the
    catalog with lineage edges from the model, its prepared data and its records; returns its key."""
    model_key = str(version["artifact_key"])
    key = profile_key(model_key, top_k)
    folder = store.artifact_dir("profile", key)
    profile["model"] = {"name": version["name"], "version": version["version"], "artifact_key": model_key}
    store.fs.makedirs(folder, exist_ok=True)
    with store.fs.open(f"{folder}/profile.json", "w") as f:  # the manifest, written after it, marks it done
        json.dump(profile, f, sort_keys=True)
    src = profile["sources"]
    ingredients = {"stage": "profile", "model": model_key, "version": PROFILE_VERSION, "top_k": top_k}
    store.write_manifest(
        "profile",
        key,
        {"stage": "profile", "key": key, "ingredients": ingredients, "rows": profile["records"]},
    )
    catalog.add_artifact(
        key,
        "profile",
        pipeline,
        "profile",
        folder,
        run_id,
        profile["records"],
        ingredients,
        [model_key, src["prepare"], src["data"]],
    )
    return key


def read_profile(store: ArtifactStore, key: str) -> dict[str, Any]:
    """A stored profile, by its key."""
    with store.fs.open(f"{store.artifact_dir('profile', key)}/profile.json", "r") as f:
        return dict(json.load(f))


def model_profile(
    store: ArtifactStore,
    catalog: Catalog,
    pipeline: str,
    version: dict[str, Any],
    generates_text: bool | None = None,
    top_k: int = TOP_WORDS,
    prepared_dir: Path | None = None,
    run_id: str = "",
) -> tuple[dict[str, Any], bool]:
    """(the profile of a model version, whether it was computed now): read from its artifact (the
    register stage writes it when it registers the version), else computed from the version's
    training data (``build_profile``), written (manifest last) and registered in the catalog.
    ``generates_text`` None: asked of the model's family (imports it)."""
    key = profile_key(str(version["artifact_key"]), top_k)
    if store.has_artifact("profile", key):
        return read_profile(store, key), False
    profile = build_profile(store, catalog, str(version["artifact_key"]), generates_text, top_k, prepared_dir)
    save_profile(store, catalog, pipeline, version, profile, top_k, run_id)
    return profile, True

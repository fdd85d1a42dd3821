"""A self-contained HTML report of a pipeline's features stage: one file, no server, nothing fetched.

It lives in ``stages`` (not ``features``) because it finds each fitted state by the features
stage's own keys and draws with the evaluation report's helpers, both layers above ``features``.

Sections (each an ``<section id=...>``, present only when its feature ran): ``summary`` (the
feature steps, their output columns and the record count), ``tfidf`` (top terms by IDF-weighted
frequency: the sum of each term's TF-IDF weight over every record, next to its IDF from the fitted
state), ``topics`` (each topic's top words from the topics state, and records per likeliest
topic), ``sentiment`` (histogram of ``<output>_compound``, counts per ``<output>_label``),
``embeddings`` (2-D PCA projection of a bounded sample of the ``embedding`` column, coloured by
``label``, ``source`` or the sentiment label), ``audio`` (MFCC and mel spectrogram images of the
first few audio records, inline PNG) and ``series`` (classical decompositions: trend and seasonal
component of the first few windows). The features output is streamed shard by shard; only
bounded samples (``MAX_*``) are kept. Plots reuse ``genloom.evaluate.plots`` and the evaluation
report's page style.
"""

from __future__ import annotations

import base64
import html
import math
import random
import struct
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from genloom.core.errors import NotFoundError
from genloom.evaluate.plots import histogram_compare_svg, line_chart_svg, pca_2d, scatter_svg
from genloom.evaluate.report import STYLE, esc, section, table

#: bounded samples: compound scores kept for the histogram, embedding rows projected, top terms,
#: audio records and series windows drawn, groups coloured in the projection
MAX_SCORES = 20_000
MAX_POINTS = 600
TOP_TERMS = 25
MAX_AUDIO = 3
MAX_WINDOWS = 3
MAX_GROUPS = 4
REPORT_NAME = "feature_report.html"


# ----------------------------------------------------------------------------------------------
# where things are: the features plan, its manifest and the fitted states


def _features_plan(pipeline: Any) -> tuple[Any, list[Any]]:
    from genloom.stages.base import plan_for

    plans = pipeline.plan()
    plan = plan_for(plans, "features")
    if plan.passthrough or not pipeline.cfg.features:
        raise NotFoundError("the pipeline has no feature steps: add a `features:` list to its YAML")
    if plan.key is None or not pipeline.store.has_artifact("features", plan.key):
        raise NotFoundError("the features stage has not run for the current config: genloom run first")
    return plan, plans


def fitted_states(pipeline: Any) -> dict[int, Any]:
    """The loaded state of each Fitted feature step, by its index in ``features:``.

    The folders are found as ``stages/steps.py`` names them: ``states/features/<key>`` with the
    key of the step's segment (its config and the shards it was fitted on)."""
    from genloom.core.steps import Fitted
    from genloom.core.store import content_key
    from genloom.stages.base import plan_for, previous_data_stage, shards_of
    from genloom.stages.steps import segments

    plan, plans = _features_plan(pipeline)
    store = pipeline.store
    steps = list(pipeline.cfg.features)
    step_ingredients = plan.ingredients["steps"]
    _, cur_shards = shards_of(store, plan_for(plans, previous_data_stage(plans, "features")))
    states: dict[int, Any] = {}
    for seg_index, (fitted_at, per_record) in enumerate(segments(steps)):
        indices = ([fitted_at] if fitted_at is not None else []) + per_record
        seg_cfg = [step_ingredients[i] for i in indices]
        state_key = ""
        if fitted_at is not None:
            step = steps[fitted_at]
            assert isinstance(step, Fitted)
            state_key = content_key("features", seg_index, seg_cfg[0], cur_shards)
            state_dir = f"{store.base}/states/features/{state_key}"
            if store.fs.exists(f"{state_dir}/done"):
                states[fitted_at] = step.load_state(state_dir, store.fs)
        cur_shards = [content_key("features", seg_index, seg_cfg, state_key, s) for s in cur_shards]
    return states


# ----------------------------------------------------------------------------------------------
# small drawing helpers


def png_data_uri(matrix: np.ndarray) -> str:
    """A (rows, cols) matrix as a greyscale-to-colour heat map PNG (row 0 at the bottom), as a data URI."""
    m = np.asarray(matrix, np.float64)[::-1]
    lo, hi = float(np.nanmin(m)), float(np.nanmax(m))
    t = np.zeros_like(m) if hi <= lo else (m - lo) / (hi - lo)
    t = np.nan_to_num(t)
    # a blue -> yellow ramp (viridis-like endpoints), 3 channels
    rgb = np.stack([68 + t * (253 - 68), 1 + t * (231 - 1), 84 + t * (37 - 84)], axis=-1).astype(np.uint8)
    rgb = np.repeat(np.repeat(rgb, max(1, 256 // max(1, rgb.shape[0])), 0), 2, 1)
    h, w = rgb.shape[:2]
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


def decompose(x: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """Classical additive decomposition (the one ``series_features`` scores ``season_strength``
    with): the trend by a centred moving average of ``period`` steps (NaN at the ends) and the
    seasonal component, the mean per phase of the detrended series."""
    n = len(x)
    if period < 2:
        return x.copy(), np.zeros(n)
    kernel = (
        np.full(period, 1.0 / period)
        if period % 2
        else np.concatenate([[0.5], np.ones(period - 1), [0.5]]) / period
    )
    half = len(kernel) // 2
    trend = np.full(n, math.nan)
    if n >= len(kernel):
        trend[half : n - half] = np.convolve(x, kernel, mode="valid")
    detrended = x - trend
    phase = np.arange(n) % period
    by_phase = np.array(
        [
            np.nanmean(detrended[phase == p]) if (~np.isnan(detrended[phase == p])).any() else 0.0
            for p in range(period)
        ]
    )
    return trend, (by_phase - by_phase.mean())[phase]


def _series_points(y: np.ndarray) -> list[tuple[float, float]]:
    return [(float(i), float(v)) for i, v in enumerate(y) if math.isfinite(float(v))]


class _Reservoir:
    """A uniform sample of at most ``k`` items of a stream (Vitter's algorithm R, seeded)."""

    def __init__(self, k: int, seed: int = 0) -> None:
        self.k, self.seen = k, 0
        self.items: list[Any] = []
        self.rng = random.Random(seed)

    def add(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.k:
            self.items.append(item)
        else:
            j = self.rng.randrange(self.seen)
            if j < self.k:
                self.items[j] = item


# ----------------------------------------------------------------------------------------------
# the streaming pass


def collect(pipeline: Any) -> dict[str, Any]:
    """Everything the report shows, from one streaming pass over the features output and the states."""
    plan, _ = _features_plan(pipeline)
    store = pipeline.store
    manifest = store.read_manifest("features", plan.key)
    steps = list(pipeline.cfg.features)
    states = fitted_states(pipeline)
    by_type: dict[str, list[tuple[int, Any]]] = {}
    for i, s in enumerate(steps):
        by_type.setdefault(s.type, []).append((i, s))

    tfidf = [(i, s) for i, s in by_type.get("tfidf", []) if not s.hashing and i in states]
    weights = {i: np.zeros(len(states[i]["vocabulary"]), np.float64) for i, _ in tfidf}
    docfreq = {i: np.zeros(len(states[i]["vocabulary"]), np.int64) for i, _ in tfidf}
    sentiments = by_type.get("sentiment", [])
    scores = {i: _Reservoir(MAX_SCORES, i) for i, _ in sentiments}
    labels: dict[int, Counter[str]] = {i: Counter() for i, _ in sentiments}
    topics = by_type.get("topics", [])
    topic_counts: dict[int, Counter[str]] = {i: Counter() for i, _ in topics}
    embeds = by_type.get("embeddings", [])
    points = {i: _Reservoir(MAX_POINTS, i) for i, _ in embeds}
    group_column: str | None = None
    audio_steps = by_type.get("mfcc", []) + by_type.get("mel_spectrogram", [])
    audio: list[tuple[str, bytes]] = []
    series_steps = by_type.get("series_features", [])
    windows: list[dict[str, Any]] = []
    rows = 0

    for batch in pipeline.iter_dataset("features"):
        names = set(batch.column_names)
        rows += batch.num_rows
        ids = (
            batch.column("id").to_pylist()
            if "id" in names
            else [str(rows + k) for k in range(batch.num_rows)]
        )
        for i, s in tfidf:
            col = s.output_column
            if col not in names:
                continue
            arr = batch.column(col).combine_chunks()
            idx = np.asarray(arr.field("indices").flatten().to_numpy(zero_copy_only=False), np.int64)
            val = np.asarray(arr.field("values").flatten().to_numpy(zero_copy_only=False), np.float64)
            weights[i] += np.bincount(idx, weights=val, minlength=len(weights[i]))[: len(weights[i])]
            docfreq[i] += np.bincount(idx, minlength=len(docfreq[i]))[: len(docfreq[i])]
        for i, s in sentiments:
            if f"{s.output}_compound" in names:
                for v in batch.column(f"{s.output}_compound").to_pylist():
                    if v is not None:
                        scores[i].add(float(v))
            if f"{s.output}_label" in names:
                labels[i].update(
                    "(null)" if v is None else v for v in batch.column(f"{s.output}_label").to_pylist()
                )
        for i, s in topics:
            if s.label_column in names:
                topic_counts[i].update(
                    "(none)" if v is None else v for v in batch.column(s.label_column).to_pylist()
                )
        if embeds and group_column is None:
            sent = f"{sentiments[0][1].output}_label" if sentiments else None
            group_column = next((c for c in ("label", "source", sent) if c and c in names), "")
        for i, s in embeds:
            if s.output not in names:
                continue
            groups = batch.column(group_column).to_pylist() if group_column else [""] * batch.num_rows
            for vec, g in zip(batch.column(s.output).to_pylist(), groups, strict=True):
                if vec is not None:
                    points[i].add((str(g), vec))
        for _i, s in audio_steps[:1]:
            if len(audio) < MAX_AUDIO and s.column in names:
                for rid, data in zip(ids, batch.column(s.column).to_pylist(), strict=True):
                    if data and len(audio) < MAX_AUDIO:
                        audio.append((str(rid), data))
        for _i, s in series_steps[:1]:
            if len(windows) < MAX_WINDOWS and s.column in names:
                period_col = f"{s.out}_season_period"
                periods = (
                    batch.column(period_col).to_pylist() if period_col in names else [0] * batch.num_rows
                )
                masks = (
                    batch.column(s.mask_column).to_pylist()
                    if s.mask_column and s.mask_column in names
                    else [None] * batch.num_rows
                )
                for rid, v, m, p in zip(ids, batch.column(s.column).to_pylist(), masks, periods, strict=True):
                    x = s.series(v, m) if len(windows) < MAX_WINDOWS else None
                    if x is not None:
                        windows.append({"id": str(rid), "x": x, "period": int(p or 0)})
    return {
        "title": f"Features of {pipeline.cfg.name}",
        "manifest": manifest,
        "rows": rows,
        "steps": steps,
        "states": states,
        "tfidf": [(i, s, weights[i], docfreq[i]) for i, s in tfidf],
        "tfidf_hashed": [s for _, s in by_type.get("tfidf", []) if s.hashing],
        "sentiment": [(s, scores[i].items, labels[i], scores[i].seen) for i, s in sentiments],
        "topics": [(i, s, topic_counts[i]) for i, s in topics],
        "embeddings": [(s, points[i].items, points[i].seen) for i, s in embeds],
        "group_column": group_column,
        "audio_steps": [s for _, s in audio_steps],
        "audio": audio,
        "series_steps": [s for _, s in series_steps],
        "windows": windows,
    }


# ----------------------------------------------------------------------------------------------
# the sections


def summary_section(d: dict[str, Any]) -> str:
    stats = d["manifest"].get("stats", {})
    rows = []
    for i, s in enumerate(d["steps"]):
        st = stats.get(s.name, {}) if hasattr(s, "name") else {}
        rows.append(
            {
                "#": i,
                "step": s.type,
                "output": getattr(s, "output_column", None)
                or getattr(s, "out", None)
                or getattr(s, "output", ""),
                "fitted state": "yes" if i in d["states"] else "",
                "rows in": st.get("rows_in"),
                "seconds": st.get("seconds"),
            }
        )
    return (
        f'<p class="verdict">{d["rows"]} records; {len(d["steps"])} feature steps ran '
        f"({esc(', '.join(s.type for s in d['steps']))}); {d['manifest'].get('rejected', 0)} quarantined.</p>"
        + table(rows)
    )


def tfidf_section(d: dict[str, Any]) -> str:
    parts = []
    for i, s, w, df in d["tfidf"]:
        vocab = d["states"][i]["vocabulary"]
        idf = d["states"][i].get("idf")
        order = np.argsort(-w, kind="stable")[:TOP_TERMS]
        rows = [
            {
                "term": vocab[j],
                "tfidf weight (sum)": float(w[j]),
                "idf": float(idf[j]) if idf is not None else None,
                "records": int(df[j]),
            }
            for j in order
            if w[j] > 0
        ]
        parts.append(
            f"<h3>{esc(s.output_column)}</h3><p>{len(vocab)} terms in the vocabulary, fitted on "
            f"{esc(d['states'][i].get('n_docs'))} records. Top {len(rows)} by the sum of their TF-IDF weight "
            "over every record:</p>" + table(rows, cls="terms")
        )
    for s in d["tfidf_hashed"]:
        parts.append(f"<p>{esc(s.output_column)}: hashed terms (no vocabulary), so no terms to list.</p>")
    return "".join(parts)


def topics_section(d: dict[str, Any]) -> str:
    parts = []
    for i, s, counts in d["topics"]:
        state = d["states"].get(i)
        if state is None:
            parts.append(f"<p>{esc(s.output)}: the topics state was not found.</p>")
            continue
        rows = [
            {"topic": t["topic"], "records": counts.get(t["topic"], 0), "top words": " ".join(t["words"])}
            for t in state["topics"]
        ]
        parts.append(
            f"<h3>{esc(s.output)}</h3><p>{len(state['topics'])} LDA topics over "
            f"{len(state['vocabulary'])} words; records per likeliest topic ({esc(s.label_column)}).</p>"
            + table(rows, cls="topics")
        )
    return "".join(parts)


def sentiment_section(d: dict[str, Any]) -> str:
    parts = []
    for s, scores, labels, seen in d["sentiment"]:
        rows = [{"label": k, "records": v} for k, v in sorted(labels.items())]
        sample = f" (a uniform sample of {len(scores)})" if seen > len(scores) else ""
        mean = f"{float(np.mean(scores)):.3f}" if scores else "n/a"
        parts.append(
            f"<h3>{esc(s.output)}</h3><p>{seen} scored records{sample}; mean compound score {mean}.</p>"
            + table(rows, cls="labels")
            + f'<figure class="plot">{histogram_compare_svg({"compound": scores}, f"{s.output}_compound score")}</figure>'
        )
    return "".join(parts)


def embeddings_section(d: dict[str, Any]) -> str:
    parts = []
    for s, items, seen in d["embeddings"]:
        counts = Counter(g for g, _ in items)
        keep = {g for g, _ in counts.most_common(MAX_GROUPS - 1 if len(counts) > MAX_GROUPS else MAX_GROUPS)}
        groups: dict[str, list[Any]] = {}
        for g, vec in items:
            groups.setdefault(g if g in keep else "other", []).append(vec)
        groups = {(k or "all"): v for k, v in sorted(groups.items())}
        proj, (e1, e2) = pca_2d(groups)
        by = d["group_column"] or "nothing (no label, source or sentiment column)"
        parts.append(
            f"<h3>{esc(s.output)}</h3><p>PCA of {len(items)} of {seen} vectors, coloured by {esc(by)}; "
            f"the two components explain {e1:.1%} and {e2:.1%} of the variance.</p>"
            + f'<figure class="plot">{scatter_svg(proj, f"{s.output}: PCA", "PC1", "PC2")}</figure>'
        )
    return "".join(parts)


def audio_section(d: dict[str, Any]) -> str:
    import librosa

    from genloom.features._audio import decode_audio

    parts = []
    for s in d["audio_steps"]:
        cells = []
        for rid, data in d["audio"]:
            try:
                y, sr = decode_audio(data, s.sample_rate, s.max_seconds)
            except Exception as e:  # noqa: BLE001  (a record the step quarantined: say so, draw the rest)
                cells.append(f"<p>{esc(rid)}: {esc(e)}</p>")
                continue
            if len(y) < s.n_fft:
                y = np.pad(y, (0, s.n_fft - len(y)))
            if s.type == "mfcc":
                m = librosa.feature.mfcc(
                    y=y, sr=sr, n_mfcc=s.n_mfcc, n_mels=s.n_mels, n_fft=s.n_fft, hop_length=s.hop_length
                )
                what = f"MFCC ({m.shape[0]} coefficients x {m.shape[1]} frames)"
            else:
                p = librosa.feature.melspectrogram(
                    y=y,
                    sr=sr,
                    n_fft=s.n_fft,
                    hop_length=s.hop_length,
                    n_mels=s.n_mels,
                    fmin=s.fmin,
                    fmax=s.fmax,
                )
                m = librosa.power_to_db(p, ref=1.0, top_db=s.top_db)
                what = f"mel spectrogram, dB ({m.shape[0]} bands x {m.shape[1]} frames)"
            cells.append(
                f'<figure class="plot"><img alt="{esc(s.type)} of {esc(rid)}" src="{png_data_uri(m)}" '
                f'style="width:420px;height:200px;image-rendering:pixelated">'
                f"<figcaption>{esc(rid)}: {esc(what)}, {len(y) / sr:.2f} s at {sr} Hz</figcaption></figure>"
            )
        parts.append(f"<h3>{esc(s.out)}</h3>" + "".join(cells))
    return "".join(parts)


def series_section(d: dict[str, Any]) -> str:
    cells = []
    for w in d["windows"]:
        trend, seasonal = decompose(w["x"], w["period"])
        lines = {"series": _series_points(w["x"]), "trend": _series_points(trend)}
        trend_svg = line_chart_svg(lines, f"{w['id']}: trend", "step", "value")
        cells.append(f'<figure class="plot">{trend_svg}</figure>')
        if w["period"] >= 2:
            title = f"{w['id']}: seasonal (period {w['period']})"
            season_svg = line_chart_svg({"seasonal": _series_points(seasonal)}, title, "step", "value")
            cells.append(f'<figure class="plot">{season_svg}</figure>')
    return (
        "<p>Classical decompositions of the first windows: the trend is a centred moving average over the "
        "detected season period (season_period; the raw series when none), the seasonal part the mean per phase.</p>"
        + "".join(cells)
    )


SECTIONS = (
    ("summary", "Feature steps", summary_section, lambda d: True),
    ("tfidf", "Top TF-IDF terms", tfidf_section, lambda d: d["tfidf"] or d["tfidf_hashed"]),
    ("topics", "Topics", topics_section, lambda d: d["topics"]),
    ("sentiment", "Sentiment", sentiment_section, lambda d: d["sentiment"]),
    ("embeddings", "Embedding projection", embeddings_section, lambda d: d["embeddings"]),
    ("audio", "Audio: MFCC and mel spectrogram", audio_section, lambda d: d["audio_steps"] and d["audio"]),
    ("series", "Series decompositions", series_section, lambda d: d["series_steps"] and d["windows"]),
)


def render(d: dict[str, Any]) -> str:
    """The report's HTML: only the sections whose feature ran."""
    shown = [(sid, t, fn) for sid, t, fn, when in SECTIONS if when(d)]
    nav = "".join(f'<a href="#{sid}">{html.escape(t)}</a>' for sid, t, _ in shown)
    body = "".join(section(sid, t, fn(d)) for sid, t, fn in shown)
    title = html.escape(d["title"])
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body><h1>{title}</h1><nav>{nav}</nav>{body}"
        "</body></html>"
    )


def report_path(pipeline: Any) -> Path:
    """Where the feature report of the current config goes: the features artifact's folder."""
    plan, _ = _features_plan(pipeline)
    return Path(pipeline.store.fetch_artifact("features", plan.key) / REPORT_NAME)


def write_feature_report(pipeline: Any, path: str | Path | None = None) -> Path:
    """Write the feature report of ``pipeline``'s features output (default: beside it, in the
    features artifact's folder, ``feature_report.html``); return its path."""
    out = Path(path) if path is not None else report_path(pipeline)
    out.write_text(render(collect(pipeline)), encoding="utf-8")
    return out

"""A self-contained HTML report of an evaluation: one file, no server, nothing fetched.

Sections (each an ``<section id=...>``): the summary and the gate table (``gates``: which gate
failed and by how much), the metrics beside the champion's on the same data (``metrics``), the
training curves (``training``), the data funnel (``funnel``: rows per stage and step, dropped
and quarantined by reason, the language mix), samples (``samples``: generated texts with the
worst by repetition and by memorisation, reference pairs; or real and synthetic rows with the
synthetic rows closest to a training row), the LLM judge's scores and reasons (``judge``), plots
(``plots``: length histograms and the embedding projection real vs generated for text,
per-column distributions real vs synthetic for tables) and the resolved config with its secrets
masked (``config``). Two sections appear only for their families, after the samples: an image
model's grids (``images``: a row per label, samples generated under it beside real held-out
images, inline PNG) and a series model's overlays (``series``: per channel a few real and
synthetic windows on shared axes, and the per-channel mean and std of both). Plots are
inline SVG written here (``evaluate/plots.py``), so the report needs no plotting library; a
generous report stays well under 2 MB (samples, rows, images and windows are capped).
"""

from __future__ import annotations

import html
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genloom.core.secrets import is_secret_name
from genloom.evaluate.gates import gate_rows
from genloom.evaluate.plots import (
    bar_compare_svg,
    histogram_compare_svg,
    line_chart_svg,
    overlay_svg,
    png_data_uri,
    scatter_svg,
)

if TYPE_CHECKING:
    import pyarrow as pa

#: samples shown: generated texts, real texts beside them, table rows
MAX_TEXTS = 12
MAX_TEXT_CHARS = 600
MAX_ROWS = 15
MAX_COLUMNS = 12
MASK = "**********"
#: rows of the "worst by" tables; languages in the mix
MAX_WORST = 5
MAX_LANGUAGES = 12
#: image grids: labels (rows) and images per row; tiles are scaled up to at least this many pixels
MAX_IMAGE_LABELS = 10
MAX_IMAGES_PER_LABEL = 8
IMAGE_TILE = 48
#: series overlays: channels plotted, windows of each group per plot
MAX_SERIES_CHANNELS = 8
MAX_OVERLAY_WINDOWS = 5


@dataclass
class ReportData:
    """What the report shows; the evaluate stage fills it from the run's artifacts."""

    title: str
    config: dict[str, Any] = field(default_factory=dict)
    split: str = "val"
    metrics: dict[str, Any] = field(default_factory=dict)
    directions: dict[str, str] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    #: the champion scored on the same data: {version, key, metrics}, or None
    champion: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    funnel: list[dict[str, Any]] = field(default_factory=list)
    prepared: dict[str, Any] = field(default_factory=dict)
    model_type: str = ""
    real_texts: list[str] | None = None
    generated_texts: list[str] | None = None
    real_rows: pa.Table | None = None
    generated_rows: pa.Table | None = None
    #: the embedding projection: points per group ("real", "generated") and the variance shares
    projection: dict[str, list[tuple[float, float]]] | None = None
    projection_explained: tuple[float, float] = (0.0, 0.0)
    #: generations holding the longest verbatim copies of training text: {text, copied, chars, words}
    memorised: list[dict[str, Any]] | None = None
    #: reference pairs: {reference, continuation}
    references: list[dict[str, Any]] | None = None
    #: the LLM judge's rows: {sample, score, reason, text, cached}
    judge: list[dict[str, Any]] | None = None
    #: language mix: {"source": where it was counted, "counts": {group: {language: count}}}
    languages: dict[str, Any] | None = None
    #: synthetic rows closest to a training row: {distance, synthetic: row, training: row}
    closest_rows: list[dict[str, Any]] | None = None
    #: an image model's grids, a row per label: {label, synthetic, real}, each (N, C, S, S) uint8
    image_rows: list[dict[str, Any]] | None = None
    #: a series model's windows in raw units: {channels, real, synthetic}, each (N, T, C) float
    #: with NaN where a step is a gap or past the window's length
    series: dict[str, Any] | None = None


def redact(node: Any) -> Any:
    """The config with every value under a credential-like key masked (a ``SecretStr`` is already
    masked by the JSON dump)."""
    if isinstance(node, dict):
        return {k: MASK if is_secret_name(k) and v not in (None, "") else redact(v) for k, v in node.items()}
    if isinstance(node, list):
        return [redact(v) for v in node]
    return node


def esc(v: Any) -> str:
    """A value as escaped text: floats to 4 significant digits, JSON for containers."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return html.escape(f"{v:.4g}")
    if isinstance(v, dict | list):
        return html.escape(json.dumps(v, default=str))
    return "" if v is None else html.escape(str(v))


def table(rows: list[dict[str, Any]], cls: str = "", row_class: Any = None) -> str:
    """Rows (dicts with the same keys) as an HTML table."""
    if not rows:
        return '<p class="none">None.</p>'
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for r in rows:
        rc = row_class(r) if row_class else ""
        cells = "".join(f"<td>{esc(r.get(c))}</td>" for c in cols)
        body.append(f'<tr class="{rc}">{cells}</tr>' if rc else f"<tr>{cells}</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def section(sid: str, title: str, body: str) -> str:
    """One report section with its anchor."""
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body}</section>'


# ----------------------------------------------------------------------------------------------
# the sections


def summary_section(d: ReportData) -> str:
    """The verdict: which split, which champion, whether every gate passed."""
    rows = gate_rows(d.gates)
    failed = [r for r in rows if not r["passed"]]
    champ = f"v{d.champion['version']}" if d.champion else "none (this is the first model)"
    verdict = (
        '<p class="verdict fail">Gates failed: the model is registered as a candidate and never promoted.</p>'
        if failed
        else '<p class="verdict pass">Every gate passed.</p>'
        if rows
        else '<p class="verdict">No gates configured.</p>'
    )
    facts = [
        {"model": d.model_type, "evaluated on": f"{d.split} split", "champion compared": champ},
    ]
    return verdict + table(facts)


def gates_section(d: ReportData) -> str:
    """The gate table: gate, metric, value, champion value, bound, passed, missed by."""
    rows = gate_rows(d.gates)
    if not rows:
        return "<p>No gates configured (<code>evaluate.gates</code>).</p>"
    return table(rows, "gates", lambda r: "pass" if r["passed"] else "fail")


def metrics_section(d: ReportData) -> str:
    """Every metric beside the champion's on the same data, with the direction that is better."""
    theirs = (d.champion or {}).get("metrics") or {}
    rows = []
    for name, value in d.metrics.items():
        row: dict[str, Any] = {"metric": name, "value": value}
        if d.champion:
            other = theirs.get(name)
            row["champion"] = other
            delta = value - other if _num(value) and _num(other) else None
            row["difference"] = delta
        row["better"] = {"min": "lower", "max": "higher"}.get(d.directions.get(name, ""), "")
        rows.append(row)

    def better(r: dict[str, Any]) -> str:
        direction, delta = d.directions.get(r["metric"]), r.get("difference")
        if not direction or delta is None or delta == 0:
            return ""
        return "pass" if (delta < 0) == (direction == "min") else "fail"

    note = f"<p>Computed on the <b>{html.escape(d.split)}</b> split.</p>"
    return note + table(rows, "metrics", better if d.champion else None)


def training_section(d: ReportData) -> str:
    """Training and validation loss (and any other recorded curve) against step."""
    curves = {}
    for key in ("loss", "val_loss"):
        pts = [(h["step"], h[key]) for h in d.history if _num(h.get(key)) and _num(h.get("step"))]
        if pts:
            curves["train" if key == "loss" else "val"] = pts
    if not curves:
        return "<p>No training history recorded.</p>"
    return line_chart_svg(curves, "loss against step", "step", "loss")


def funnel_section(d: ReportData) -> str:
    """Rows per data stage and step; what was dropped and quarantined, by reason."""
    if not d.funnel:
        return "<p>No data stage statistics.</p>"
    rows = [
        {
            "stage": r["stage"],
            "step": r["step"] or "(stage total)",
            "rows in": r["rows_in"],
            "rows out": r["rows_out"],
            "dropped": r["dropped"],
            "quarantined": r["quarantined"],
            "drop reasons": ", ".join(f"{k}: {v}" for k, v in sorted(r["reasons"].items())),
        }
        for r in d.funnel
    ]
    split = {k: v for k, v in d.prepared.items() if k in ("train", "val", "test") and isinstance(v, dict)}
    extra = ""
    if split:  # text: documents and tokens per split
        extra = table(
            [
                {"split": k, **{f: v.get(f) for f in ("n_docs", "n_tokens", "n_chars")}}
                for k, v in split.items()
            ]
        )
    return (
        table(rows, "funnel", lambda r: "total" if r["step"] == "(stage total)" else "")
        + extra
        + _languages(d)
    )


def _languages(d: ReportData) -> str:
    """The language mix: share of each language per group (the data, the held-out sample, generations)."""
    if not d.languages or not d.languages.get("counts"):
        return ""
    counts: dict[str, dict[str, int]] = d.languages["counts"]
    langs = sorted(
        {lang for c in counts.values() for lang in c},
        key=lambda lang: -sum(c.get(lang, 0) for c in counts.values()),
    )
    rows = []
    for lang in langs[:MAX_LANGUAGES]:
        row: dict[str, Any] = {"language": lang}
        for group, c in counts.items():
            total = sum(c.values()) or 1
            row[group] = f"{c.get(lang, 0)} ({c.get(lang, 0) / total:.1%})"
        rows.append(row)
    return f"<h3>Language mix</h3><p>{html.escape(str(d.languages.get('source', '')))}</p>" + table(
        rows, "languages"
    )


def samples_section(d: ReportData) -> str:
    """Generated texts (and real held-out ones beside them), or real and synthetic rows."""
    parts = []
    if d.generated_texts is not None:
        parts.append("<h3>Generated (seeded, from an empty prompt)</h3>")
        parts.append(_texts(d.generated_texts))
        worst = most_repetitive(d.generated_texts)
        if worst:
            parts.append("<h3>Worst by repetition (share of 4-grams that repeat an earlier one)</h3>")
            parts.append(table([{"repetition_4": rate, "text": _short(t)} for rate, t in worst]))
        if d.real_texts:
            shown = random.Random(0).sample(d.real_texts, min(len(d.real_texts), MAX_TEXTS // 2))
            parts.append("<h3>Real (held-out, random)</h3>")
            parts.append(_texts(shown))
    if d.memorised is not None:
        parts.append("<h3>Worst by memorisation (the longest verbatim copies of training text)</h3>")
        if d.memorised:
            rows = [
                {
                    "chars": m["chars"],
                    "words": m["words"],
                    "copied span": _short(m["copied"]),
                    "generation": _short(m["text"]),
                }
                for m in d.memorised[:MAX_WORST]
            ]
            parts.append(table(rows, "memorised"))
        else:
            parts.append('<p class="none">No generation holds a verbatim copy of the training text.</p>')
    if d.references:
        parts.append("<h3>References (prompt continued by the model, against its reference)</h3>")
        parts.append(
            table(
                [
                    {"reference": _short(r["reference"]), "continuation": _short(r["continuation"])}
                    for r in d.references[:MAX_TEXTS]
                ]
            )
        )
    if d.generated_rows is not None:
        parts.append("<h3>Synthetic rows</h3>")
        parts.append(_rows(d.generated_rows))
        if d.real_rows is not None:
            parts.append("<h3>Real held-out rows</h3>")
            parts.append(_rows(d.real_rows))
    if d.closest_rows:
        parts.append("<h3>Worst by DCR (the synthetic rows closest to a training row)</h3>")
        rows = []
        for c in d.closest_rows[:MAX_WORST]:
            rows.append({"row": "synthetic", "distance": c["distance"], **_clip_row(c["synthetic"])})
            rows.append({"row": "closest training", "distance": None, **_clip_row(c["training"])})
        parts.append(table(rows, "closest"))
    return "".join(parts) or "<p>No samples.</p>"


def judge_section(d: ReportData) -> str:
    """The LLM judge's score and reason for each sample."""
    from genloom.evaluate.judge import public_url

    if d.judge is None:
        return "<p>No judge configured (<code>evaluate.judge</code>).</p>"
    cfg = (d.config.get("evaluate") or {}).get("judge") or {}
    scored = [r["score"] for r in d.judge if r.get("score") is not None]
    mean = f"{sum(scored) / len(scored):.4g}" if scored else "none"
    head = (
        f"<p>Judge <b>{esc(cfg.get('model'))}</b> at {esc(public_url(str(cfg.get('base_url') or '')))}, scale "
        f"{esc(cfg.get('min_score'))}-{esc(cfg.get('max_score'))}: mean score <b>{mean}</b> over "
        f"{len(scored)} of {len(d.judge)} samples.</p>"
    )
    rows = [
        {
            "sample": r["sample"],
            "score": r["score"],
            "reason": r["reason"],
            "text": _short(r["text"]),
            "cached": r["cached"],
        }
        for r in d.judge
    ]
    return head + table(rows, "judge")


def plots_section(d: ReportData) -> str:
    """Length histograms real vs generated (text); per-column distributions real vs synthetic (tables)."""
    parts = []
    if d.generated_texts is not None and d.real_texts:
        parts.append(
            histogram_compare_svg(
                {"real": [len(t) for t in d.real_texts], "generated": [len(t) for t in d.generated_texts]},
                "length in characters, real vs generated",
            )
        )
    if d.projection:
        ex = d.projection_explained
        parts.append(
            scatter_svg(
                d.projection,
                "MiniLM embeddings, real vs generated (PCA)",
                f"PC1 ({ex[0]:.0%} of variance)",
                f"PC2 ({ex[1]:.0%})",
            )
        )
    if d.generated_rows is not None and d.real_rows is not None:
        kinds = d.prepared.get("kinds") or {}
        modelled = [c for c in d.real_rows.column_names if kinds.get(c) != "id"]  # ids are unique by design
        for name in modelled[:MAX_COLUMNS]:
            if name not in d.generated_rows.column_names:
                continue
            real = d.real_rows.column(name).to_pylist()
            fake = d.generated_rows.column(name).to_pylist()
            numeric = [v for v in real if v is not None]
            if numeric and all(_num(v) for v in numeric) and len(set(numeric)) > 12:
                parts.append(
                    histogram_compare_svg(
                        {"real": [v for v in real if _num(v)], "synthetic": [v for v in fake if _num(v)]},
                        f"{name}: real vs synthetic",
                    )
                )
            else:
                parts.append(bar_compare_svg({"real": real, "synthetic": fake}, f"{name}: real vs synthetic"))
    return "".join(f'<figure class="plot">{p}</figure>' for p in parts) or "<p>No plots for this model.</p>"


def images_section(d: ReportData) -> str:
    """An image model: a row of samples per label (generated under that label) beside a row of
    real held-out images of the same label."""
    rows = (d.image_rows or [])[:MAX_IMAGE_LABELS]
    if not rows:
        return '<p class="none">No images.</p>'
    body = []
    for r in rows:
        cells = [f"<th>{esc(r.get('label'))}</th>"]
        for group in ("synthetic", "real"):
            pixels = r.get(group)
            if pixels is None or len(pixels) == 0:
                cells.append('<td class="none">none</td>')
                continue
            pixels = pixels[:MAX_IMAGES_PER_LABEL]
            side = int(pixels.shape[-1])
            scale = max(1, -(-IMAGE_TILE // side))
            alt = f"{len(pixels)} {group} images, label {r.get('label')}"
            cells.append(
                f'<td><img class="grid" src="{png_data_uri(pixels, scale)}" alt="{html.escape(alt, quote=True)}"></td>'
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    n_labels = len(d.image_rows or [])
    more = f" (the first {len(rows)} of {n_labels} labels)" if n_labels > len(rows) else ""
    note = (
        f"<p>A row per label{more}: samples generated under the label (seeded) beside real "
        f"images of the {html.escape(d.split)} split with that label.</p>"
    )
    head = "<thead><tr><th>label</th><th>synthetic</th><th>real</th></tr></thead>"
    return f'{note}<table class="images">{head}<tbody>{"".join(body)}</tbody></table>'


def series_section(d: ReportData) -> str:
    """A series model: per channel, a few real and synthetic windows overlaid; the per-channel
    mean and std of all the windows given, real beside synthetic."""
    import numpy as np

    s = d.series or {}
    channels = list(s.get("channels") or [])
    real = np.asarray(s.get("real") if s.get("real") is not None else np.zeros((0, 0, 0)), np.float64)
    synth = np.asarray(
        s.get("synthetic") if s.get("synthetic") is not None else np.zeros((0, 0, 0)), np.float64
    )
    if not channels or (real.size == 0 and synth.size == 0):
        return '<p class="none">No windows.</p>'
    rows = []
    for c, name in enumerate(channels):
        row: dict[str, Any] = {"channel": name}
        for label, x in (("real", real), ("synthetic", synth)):
            v = x[..., c][np.isfinite(x[..., c])] if x.ndim == 3 and x.shape[-1] > c else np.zeros(0)
            row[f"{label} mean"] = float(v.mean()) if v.size else None
            row[f"{label} std"] = float(v.std()) if v.size else None
        rows.append(row)
    ordered = [
        {k: r[k] for k in ("channel", "real mean", "synthetic mean", "real std", "synthetic std")}
        for r in rows
    ]
    plots = []
    for c, name in enumerate(channels[:MAX_SERIES_CHANNELS]):
        groups = {
            label: [list(w[:, c]) for w in x[:MAX_OVERLAY_WINDOWS]]
            for label, x in (("real", real), ("synthetic", synth))
            if x.ndim == 3 and len(x) and x.shape[-1] > c
        }
        plots.append(
            f'<figure class="plot">{overlay_svg(groups, f"{name}: real vs synthetic windows")}</figure>'
        )
    shown = min(len(channels), MAX_SERIES_CHANNELS)
    note = (
        f"<p>{len(real)} real windows of the {html.escape(d.split)} split and {len(synth)} synthetic "
        f"(seeded), in the data's units; the overlays show the first {MAX_OVERLAY_WINDOWS} of each "
        f"for the first {shown} of {len(channels)} channels (gaps are left out).</p>"
    )
    return note + table(ordered, "series-stats") + "".join(plots)


def config_section(d: ReportData) -> str:
    """The resolved pipeline config (secrets masked)."""
    import yaml

    text = yaml.safe_dump(redact(d.config), sort_keys=False, allow_unicode=True)
    return f"<pre>{html.escape(text)}</pre>"


def most_repetitive(texts: list[str], k: int = 3) -> list[tuple[float, str]]:
    """The ``k`` texts that repeat themselves most (their 4-gram repetition rate), worst first;
    only texts that repeat at all."""
    from genloom.models.text_metrics import repetition_rate

    rated = [(repetition_rate([t], 4), t) for t in texts]
    worst = sorted(((r, t) for r, t in rated if r), key=lambda rt: -rt[0])
    return worst[:k]


def _short(t: str) -> str:
    return t if len(t) <= MAX_TEXT_CHARS else t[:MAX_TEXT_CHARS] + " [...]"


def _texts(texts: list[str]) -> str:
    items = [f"<li><pre>{html.escape(_short(t))}</pre></li>" for t in texts[:MAX_TEXTS]]
    return f'<ol class="texts">{"".join(items)}</ol>'


def _clip_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in list(row)[:MAX_COLUMNS]}


def _rows(rows: pa.Table) -> str:
    shown = rows.slice(0, MAX_ROWS).select(rows.column_names[:MAX_COLUMNS])
    return table(shown.to_pylist())


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v


STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1.5em;max-width:72em;color:#222}
nav a{margin-right:1em}table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr.fail td{background:#fde8e8}tr.pass td{background:#e8f6ea}
tr.total td{font-weight:600;background:#f7f7f7}.verdict{font-size:1.15em;font-weight:600}
.verdict.fail{color:#b00020}.verdict.pass{color:#1b7f3b}pre{white-space:pre-wrap;margin:0}
ol.texts li{margin:.4em 0;padding:.3em;background:#fafafa;border-left:3px solid #ddd}
figure.plot{display:inline-block;margin:.5em}section{margin-top:2em}
img.grid{image-rendering:pixelated;display:block}
"""

SECTIONS = (
    ("summary", "Summary"),
    ("gates", "Quality gates"),
    ("metrics", "Metrics"),
    ("training", "Training"),
    ("funnel", "Data stages (funnel)"),
    ("samples", "Samples"),
    ("judge", "LLM judge"),
    ("plots", "Plots"),
    ("config", "Config"),
)
#: sections only some families have, each placed after a section of ``SECTIONS``: (id, title,
#: after, whether the data has it)
OPTIONAL_SECTIONS = (
    ("images", "Image grids", "samples", lambda d: d.image_rows is not None),
    ("series", "Series overlays", "samples", lambda d: d.series is not None),
)


def sections_of(d: ReportData) -> list[tuple[str, str]]:
    """The (id, title) of each section the report of ``d`` has, in order."""
    out = []
    for sid, title in SECTIONS:
        out.append((sid, title))
        out += [(o, t) for o, t, after, has in OPTIONAL_SECTIONS if after == sid and has(d)]
    return out


def render(d: ReportData) -> str:
    """The report's HTML."""
    builders = {
        "summary": summary_section,
        "gates": gates_section,
        "metrics": metrics_section,
        "training": training_section,
        "funnel": funnel_section,
        "samples": samples_section,
        "judge": judge_section,
        "plots": plots_section,
        "config": config_section,
        "images": images_section,
        "series": series_section,
    }
    shown = sections_of(d)
    nav = "".join(f'<a href="#{sid}">{html.escape(t)}</a>' for sid, t in shown)
    body = "".join(section(sid, t, builders[sid](d)) for sid, t in shown)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(d.title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(d.title)}</h1><nav>{nav}</nav>{body}</body></html>"
    )


def write_report(path: Path, data: ReportData) -> Path:
    """Write the report to ``path`` (``report.html``)."""
    path.write_text(render(data), encoding="utf-8")
    return path


def find_report(catalog: Any, store: Any, pipeline: str, run_id: str | None = None) -> Path:
    """The report of a run (default: the latest run of ``pipeline`` that evaluated a model); a
    run id may be given by its first characters."""
    from genloom.core.errors import NotFoundError

    runs = catalog.runs(pipeline, limit=1000)
    if run_id:
        runs = [r for r in runs if str(r["id"]).startswith(run_id)]
        if not runs:
            raise NotFoundError(f"pipeline {pipeline!r} has no run {run_id!r}: genloom status lists them")
    for run in runs:
        for s in catalog.stage_runs(run["id"]):
            if s["stage"] == "evaluate" and s["key"]:
                path = store.fetch_artifact("evaluate", s["key"]) / "report.html"
                if path.exists():
                    return Path(path)
    which = f"run {run_id!r}" if run_id else f"pipeline {pipeline!r}"
    raise NotFoundError(f"{which} has no evaluation report: genloom run evaluates a trained model")

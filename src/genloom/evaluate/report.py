"""A self-contained HTML report of an evaluation: metrics, gates, the loss curves, the data stages."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any


def loss_curve_svg(history: list[dict[str, Any]], width: int = 640, height: int = 260) -> str:
    """Train and validation loss against step as an inline SVG (no JavaScript, no external files)."""
    series = {
        "train": [(h["step"], h["loss"]) for h in history if "loss" in h],
        "val": [(h["step"], h["val_loss"]) for h in history if "val_loss" in h],
    }
    points = [p for s in series.values() for p in s]
    if not points:
        return "<p>No loss history recorded.</p>"
    x0, x1 = 0, max(p[0] for p in points) or 1
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    y0, y1 = (y0 - 0.05 * (y1 - y0 or 1), y1 + 0.05 * (y1 - y0 or 1))
    pad = 40

    def xy(step: float, loss: float) -> str:
        x = pad + (step - x0) / (x1 - x0) * (width - 2 * pad)
        y = height - pad - (loss - y0) / (y1 - y0) * (height - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    colors = {"train": "#1f77b4", "val": "#d62728"}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
        f'<rect width="{width}" height="{height}" fill="white" stroke="#ccc"/>',
    ]
    for name, pts in series.items():
        if pts:
            parts.append(
                f'<polyline fill="none" stroke="{colors[name]}" stroke-width="1.5" '
                f'points="{" ".join(xy(s, v) for s, v in pts)}"/>'
            )
    parts.append(
        f'<text x="{pad}" y="{pad - 10}" font-size="12">loss (nats/token); '
        f'<tspan fill="{colors["train"]}">train</tspan> <tspan fill="{colors["val"]}">val</tspan></text>'
    )
    parts.append(f'<text x="{pad}" y="{height - 10}" font-size="11">step 0</text>')
    parts.append(f'<text x="{width - pad - 60}" y="{height - 10}" font-size="11">step {x1}</text>')
    parts.append(f'<text x="4" y="{pad + 4}" font-size="11">{y1:.2f}</text>')
    parts.append(f'<text x="4" y="{height - pad}" font-size="11">{y0:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>None.</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict | list):
        return json.dumps(v)
    return "" if v is None else str(v)


def write_report(
    path: Path,
    title: str,
    metrics: dict[str, Any],
    gates: dict[str, Any],
    history: list[dict[str, Any]],
    stages: list[dict[str, Any]],
) -> Path:
    """Write ``report.html``: metrics, gates, loss curves and per-stage data statistics."""
    gate_rows = [{"metric": k, **v, "passed": "yes" if v["passed"] else "NO"} for k, v in gates.items()]
    metric_rows = [{"metric": k, "value": v} for k, v in metrics.items()]
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}th{{background:#f3f3f3}}</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Metrics</h2>{_table(metric_rows)}
<h2>Quality gates</h2>{_table(gate_rows)}
<h2>Training</h2>{loss_curve_svg(history)}
<h2>Data stages</h2>{_table(stages)}
</body></html>"""
    path.write_text(doc, encoding="utf-8")
    return path

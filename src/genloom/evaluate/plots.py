"""Small inline SVG plots for the report: curves, overlaid histograms, grouped bars, scatters,
overlaid series windows (and ``pca_2d``, the projection the embedding scatter shows); and
``png_data_uri``, a row of image tiles as an inline PNG (the image grids).

Hand-written SVG: no plotting library, no JavaScript, nothing fetched; each plot is a few KB.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from typing import Any

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
WIDTH, HEIGHT, PAD = 420, 240, 44


def _open(title: str, width: int = WIDTH, height: int = HEIGHT) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        f'<rect width="{width}" height="{height}" fill="white" stroke="#ccc"/>',
        f'<text x="{PAD}" y="16" font-size="12" font-weight="600">{html.escape(title)}</text>',
    ]


def _legend(names: list[str], width: int = WIDTH) -> str:
    parts = []
    for i, name in enumerate(names):
        x = width - PAD - 90 * (len(names) - i) + 10
        parts.append(f'<rect x="{x}" y="24" width="10" height="10" fill="{COLORS[i % len(COLORS)]}"/>')
        parts.append(f'<text x="{x + 14}" y="33" font-size="11">{html.escape(name)}</text>')
    return "".join(parts)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def line_chart_svg(
    series: dict[str, list[tuple[float, float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    x_from_zero: bool = True,
) -> str:
    """Named (x, y) series as lines on shared axes (the x axis from 0 unless ``x_from_zero`` is False)."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        return "<p>No data.</p>"
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    x0 = min(x0, 0) if x_from_zero else x0
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1 = x1 if x1 > x0 else x0 + 1
    span = (y1 - y0) or 1.0
    y0, y1 = y0 - 0.05 * span, y1 + 0.05 * span

    def xy(x: float, y: float) -> str:
        px = PAD + (x - x0) / (x1 - x0) * (WIDTH - 2 * PAD)
        py = HEIGHT - PAD - (y - y0) / (y1 - y0) * (HEIGHT - 2 * PAD)
        return f"{px:.1f},{py:.1f}"

    parts = _open(title)
    for i, pts in enumerate(series.values()):
        color = COLORS[i % len(COLORS)]
        if len(pts) == 1:
            cx, cy = xy(*pts[0]).split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>')
        else:
            coords = " ".join(xy(x, y) for x, y in pts)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>')
    parts.append(_axes(_fmt(x0), _fmt(x1), _fmt(y0), _fmt(y1), xlabel, ylabel))
    parts.append(_legend(list(series)))
    parts.append("</svg>")
    return "".join(parts)


def _axes(x0: str, x1: str, y0: str, y1: str, xlabel: str, ylabel: str) -> str:
    bottom = HEIGHT - PAD
    return (
        f'<line x1="{PAD}" y1="{bottom}" x2="{WIDTH - PAD}" y2="{bottom}" stroke="#888"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{bottom}" stroke="#888"/>'
        f'<text x="{PAD}" y="{bottom + 14}" font-size="10">{html.escape(x0)}</text>'
        f'<text x="{WIDTH - PAD}" y="{bottom + 14}" font-size="10" text-anchor="end">{html.escape(x1)}</text>'
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>'
        f'<text x="{PAD - 4}" y="{bottom}" font-size="10" text-anchor="end">{html.escape(y0)}</text>'
        f'<text x="{PAD - 4}" y="{PAD + 8}" font-size="10" text-anchor="end">{html.escape(y1)}</text>'
        f'<text x="10" y="{HEIGHT / 2}" font-size="11" transform="rotate(-90 10 {HEIGHT / 2})" '
        f'text-anchor="middle">{html.escape(ylabel)}</text>'
    )


def histogram_compare_svg(groups: dict[str, list[float]], title: str, bins: int = 20) -> str:
    """Overlaid histograms of several samples on shared bins, each normalised to a share of its count."""
    values = [float(v) for vs in groups.values() for v in vs if math.isfinite(float(v))]
    if not values:
        return "<p>No data.</p>"
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1
    width = (hi - lo) / bins
    shares: dict[str, list[float]] = {}
    for name, vs in groups.items():
        counts = [0] * bins
        finite = [float(v) for v in vs if math.isfinite(float(v))]
        for v in finite:
            counts[min(bins - 1, int((v - lo) / width))] += 1
        shares[name] = [c / max(1, len(finite)) for c in counts]
    top = max(max(s) for s in shares.values()) or 1.0
    bw = (WIDTH - 2 * PAD) / bins
    parts = _open(title)
    for i, (_name, s) in enumerate(shares.items()):
        color = COLORS[i % len(COLORS)]
        for b, share in enumerate(s):
            if share:
                h = share / top * (HEIGHT - 2 * PAD)
                parts.append(
                    f'<rect x="{PAD + b * bw:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{bw:.1f}" '
                    f'height="{h:.1f}" fill="{color}" fill-opacity="0.45"/>'
                )
    parts.append(_axes(_fmt(lo), _fmt(hi), "0", f"{top:.0%}", "value", "share"))
    parts.append(_legend(list(groups)))
    parts.append("</svg>")
    return "".join(parts)


def bar_compare_svg(groups: dict[str, list[Any]], title: str, top_n: int = 10) -> str:
    """Grouped bars of the shares of the most frequent levels in several samples."""
    counts = {name: Counter("(null)" if v is None else str(v) for v in vs) for name, vs in groups.items()}
    first = next(iter(counts.values()), Counter())
    total: Counter[str] = Counter()
    for c in counts.values():
        total.update(c)
    levels = [lvl for lvl, _ in (first or total).most_common(top_n)]
    if not levels:
        return "<p>No data.</p>"
    shares = {n: [c[lvl] / max(1, sum(c.values())) for lvl in levels] for n, c in counts.items()}
    top = max(max(s) for s in shares.values()) or 1.0
    slot = (WIDTH - 2 * PAD) / len(levels)
    bw = slot * 0.8 / max(1, len(shares))
    parts = _open(title)
    for i, (_name, s) in enumerate(shares.items()):
        for j, share in enumerate(s):
            h = share / top * (HEIGHT - 2 * PAD)
            x = PAD + j * slot + slot * 0.1 + i * bw
            parts.append(
                f'<rect x="{x:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                f'fill="{COLORS[i % len(COLORS)]}"/>'
            )
    for j, lvl in enumerate(levels):
        label = lvl if len(lvl) <= 10 else lvl[:9] + "."
        x = PAD + j * slot + slot / 2
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - PAD + 14}" font-size="10" text-anchor="middle">{html.escape(label)}</text>'
        )
    parts.append(f'<text x="{PAD - 4}" y="{PAD + 8}" font-size="10" text-anchor="end">{top:.0%}</text>')
    parts.append(
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>'
    )
    parts.append(_legend(list(groups)))
    parts.append("</svg>")
    return "".join(parts)


def scatter_svg(groups: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str) -> str:
    """Named point sets on shared axes (hollow circles, so overlapping sets stay visible)."""
    points = [p for pts in groups.values() for p in pts]
    if not points:
        return "<p>No data.</p>"
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    parts = _open(title)
    for i, pts in enumerate(groups.values()):
        color = COLORS[i % len(COLORS)]
        for x, y in pts:
            px = PAD + (x - x0) / (x1 - x0) * (WIDTH - 2 * PAD)
            py = HEIGHT - PAD - (y - y0) / (y1 - y0) * (HEIGHT - 2 * PAD)
            parts.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="none" stroke="{color}" stroke-opacity="0.8"/>'
            )
    parts.append(_axes(_fmt(x0), _fmt(x1), _fmt(y0), _fmt(y1), xlabel, ylabel))
    parts.append(_legend(list(groups)))
    parts.append("</svg>")
    return "".join(parts)


def pca_2d(groups: dict[str, Any]) -> tuple[dict[str, list[tuple[float, float]]], tuple[float, float]]:
    """The rows of several matrices (same width) projected on the first two principal components
    of all of them together: (points per group, share of the variance each component explains)."""
    import numpy as np

    names = [n for n, m in groups.items() if len(m)]
    if not names:
        return {}, (0.0, 0.0)
    x = np.concatenate([np.asarray(groups[n], dtype=np.float64) for n in names])
    x = x - x.mean(0)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    proj = x @ vt[:2].T  # (N, 2) (or (N, 1) with a single column)
    if proj.shape[1] < 2:
        proj = np.hstack([proj, np.zeros((len(proj), 2 - proj.shape[1]))])
    var = sv**2
    total = float(var.sum()) or 1.0
    explained = (float(var[0]) / total if len(var) else 0.0, float(var[1]) / total if len(var) > 1 else 0.0)
    out, start = {}, 0
    for n in names:
        k = len(groups[n])
        out[n] = [(float(a), float(b)) for a, b in proj[start : start + k]]
        start += k
    return out, explained


def overlay_svg(
    groups: dict[str, list[list[float]]], title: str, xlabel: str = "step", ylabel: str = "value"
) -> str:
    """Several curves per named group on shared axes, one colour per group (a few real and a few
    synthetic windows of one channel); a NaN (a gap) breaks its curve."""
    finite = [v for curves in groups.values() for c in curves for v in c if _finite(v)]
    if not finite:
        return "<p>No data.</p>"
    steps = max((len(c) for curves in groups.values() for c in curves), default=1)
    x1 = max(1, steps - 1)
    y0, y1 = min(finite), max(finite)
    span = (y1 - y0) or 1.0
    y0, y1 = y0 - 0.05 * span, y1 + 0.05 * span

    def xy(x: int, y: float) -> str:
        px = PAD + x / x1 * (WIDTH - 2 * PAD)
        py = HEIGHT - PAD - (y - y0) / (y1 - y0) * (HEIGHT - 2 * PAD)
        return f"{px:.1f},{py:.1f}"

    parts = _open(title)
    for i, curves in enumerate(groups.values()):
        color = COLORS[i % len(COLORS)]
        for curve in curves:
            run: list[str] = []
            for x, y in [*enumerate(curve), (len(curve), math.nan)]:  # a NaN at the end flushes
                if _finite(y):
                    run.append(xy(x, float(y)))
                    continue
                if len(run) == 1:
                    cx, cy = run[0].split(",")
                    parts.append(f'<circle cx="{cx}" cy="{cy}" r="1.5" fill="{color}"/>')
                elif run:
                    parts.append(
                        f'<polyline fill="none" stroke="{color}" stroke-width="1.2" '
                        f'stroke-opacity="0.75" points="{" ".join(run)}"/>'
                    )
                run = []
    parts.append(_axes("0", str(x1), _fmt(y0), _fmt(y1), xlabel, ylabel))
    parts.append(_legend(list(groups)))
    parts.append("</svg>")
    return "".join(parts)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def png_data_uri(pixels: Any, scale: int = 1) -> str:
    """(N, C, S, S) uint8 images as one row of tiles (white between them, each pixel repeated
    ``scale`` times), a PNG ``data:`` URI for an inline ``<img>``."""
    import base64

    import numpy as np

    from genloom.models.image_data import encode_png, image_grid

    pixels = np.asarray(pixels, np.uint8)
    grid = image_grid(pixels, max(1, len(pixels)), pad=1, scale=max(1, scale))
    return "data:image/png;base64," + base64.b64encode(encode_png(grid)).decode("ascii")

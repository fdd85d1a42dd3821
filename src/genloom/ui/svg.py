"""Plots drawn on the server as inline SVG: no JavaScript library, nothing downloaded."""

from __future__ import annotations

from datetime import datetime
from html import escape

from markupsafe import Markup


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def line_chart(
    points: list[tuple[datetime, float, bool]],
    threshold: float | None = None,
    width: int = 640,
    height: int = 180,
    label: str = "",
) -> Markup:
    """Scores over time as a line (breached points red), with the threshold as a dashed line."""
    pad_l, pad_r, pad_t, pad_b = 48, 12, 10, 26
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    values = [v for _, v, _ in points] + ([threshold] if threshold is not None else [])
    if not points:
        return Markup(
            f'<svg width="{width}" height="{height}" role="img"><text x="10" y="20">no checks</text></svg>'
        )
    lo, hi = min(0.0, *values), max(values)
    hi = hi if hi > lo else lo + 1.0
    times = [t.timestamp() for t, _, _ in points]
    t0, t1 = min(times), max(times)
    span = t1 - t0 or 1.0

    def x(t: float) -> float:
        return pad_l + (w * (t - t0) / span if len(points) > 1 else w / 2)

    def y(v: float) -> float:
        return pad_t + h - h * (v - lo) / (hi - lo)

    parts = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}">',
        f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#888"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" stroke="#888"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end" font-size="10">{_fmt(hi)}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + h}" text-anchor="end" font-size="10">{_fmt(lo)}</text>',
        f'<text x="{pad_l}" y="{height - 6}" font-size="10">{points[0][0]:%Y-%m-%d %H:%M}</text>',
        f'<text x="{pad_l + w}" y="{height - 6}" text-anchor="end" font-size="10">'
        f"{points[-1][0]:%Y-%m-%d %H:%M}</text>",
    ]
    if threshold is not None:
        ty = y(threshold)
        parts.append(
            f'<line class="threshold" x1="{pad_l}" y1="{ty:.1f}" x2="{pad_l + w}" y2="{ty:.1f}" '
            f'stroke="#c60" stroke-dasharray="5,4"/>'
            f'<text x="{pad_l + w}" y="{ty - 3:.1f}" text-anchor="end" font-size="10" fill="#c60">'
            f"threshold {_fmt(threshold)}</text>"
        )
    path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, (_, v, _) in zip(times, points, strict=True))
    parts.append(f'<polyline fill="none" stroke="#2563eb" stroke-width="1.5" points="{path}"/>')
    for t, (when, v, breached) in zip(times, points, strict=True):
        colour = "#dc2626" if breached else "#2563eb"
        parts.append(
            f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}">'
            f"<title>{when:%Y-%m-%d %H:%M:%S}: {_fmt(v)}{' (breached)' if breached else ''}</title></circle>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))

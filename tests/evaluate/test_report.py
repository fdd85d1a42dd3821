"""The evaluation report: its sections and tables from known data, secrets masked, nothing
fetched, small; and it renders in headless Chromium without console errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from genloom.core.config import Gate
from genloom.evaluate.gates import check_gates
from genloom.evaluate.plots import bar_compare_svg, histogram_compare_svg, line_chart_svg
from genloom.evaluate.report import SECTIONS, ReportData, most_repetitive, redact, render, write_report

CHROMIUM = "/usr/bin/chromium"
SECTION_IDS = [sid for sid, _ in SECTIONS]


def text_report() -> ReportData:
    """A text model's report data: a champion, one relative gate failed, a funnel, samples."""
    metrics = {"val_bpc": 2.5, "val_loss": 1.9, "distinct_2": 0.7}
    champion = {"val_bpc": 2.2, "val_loss": 1.7, "distinct_2": 0.72}
    gates = check_gates(
        metrics,
        {"val_bpc": Gate(max=4.0, max_vs_champion=0.1), "distinct_2": Gate(min_vs_champion=-0.05)},
        champion,
    )
    return ReportData(
        title="demo: evaluation",
        config={
            "name": "demo",
            "sources": [{"type": "rest_api", "url": "https://example.org/api", "api_key": "sk-very-secret"}],
            "train": {"model": {"type": "gpt"}},
        },
        split="test",
        metrics=metrics,
        directions={"val_bpc": "min", "val_loss": "min", "distinct_2": "max"},
        gates=gates,
        champion={"version": 1, "key": "abc", "metrics": champion},
        history=[
            {"step": s, "loss": 5 - s / 10, **({"val_loss": 5.2 - s / 10} if s % 10 == 0 else {})}
            for s in range(31)
        ],
        funnel=[
            {
                "stage": "ingest",
                "step": "",
                "rows_in": None,
                "rows_out": 100,
                "dropped": 0,
                "quarantined": 2,
                "reasons": {},
            },
            {
                "stage": "clean",
                "step": "length",
                "rows_in": 100,
                "rows_out": 90,
                "dropped": 10,
                "quarantined": 0,
                "reasons": {"too_short": 7, "too_long": 3},
            },
        ],
        prepared={"train": {"n_docs": 80, "n_tokens": 9000}, "val": {"n_docs": 5, "n_tokens": 500}},
        model_type="gpt",
        real_texts=["a real <b>held-out</b> text " * 3, "another one", "third"],
        generated_texts=[
            "generated one",
            "generated two, a little longer",
            "the cat sat on the mat the cat sat on the mat the cat sat on the mat",
        ],
    )


def table_report() -> ReportData:
    """A table model's report data: rows real and synthetic, no champion yet."""
    real = pa.table(
        {"cid": list(range(60)), "age": list(range(18, 78)), "color": ["red", "blue", "green"] * 20}
    )
    fake = pa.table(
        {"cid": list(range(60)), "age": [20 + (i * 7) % 50 for i in range(60)], "color": ["red", "blue"] * 30}
    )
    return ReportData(
        title="customers: evaluation",
        metrics={"quality": 0.8},
        directions={"quality": "max"},
        gates=check_gates({"quality": 0.8}, {"quality": Gate(min=0.5)}, None),
        model_type="tabular_vae",
        prepared={"kinds": {"cid": "id", "age": "integer", "color": "categorical"}},
        real_rows=real,
        generated_rows=fake,
    )


def test_the_report_has_its_sections_and_says_which_gate_failed_and_by_how_much() -> None:
    doc = render(text_report())
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in doc, sid
    assert "Gates failed" in doc
    # val_bpc 2.5 against the champion's 2.2 + 0.1: missed by 0.2; distinct_2 0.7 >= 0.72 - 0.05 passes
    row = re.search(r'<tr class="fail"><td>max_vs_champion</td><td>val_bpc</td>(.*?)</tr>', doc)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert cells[:5] == ["2.5", "2.2", "2.3", "no", "0.2"]
    assert '<tr class="pass"><td>min_vs_champion</td><td>distinct_2</td>' in doc
    assert "<b>test</b> split" in doc and "champion compared</th>" in doc
    assert "too_long: 3, too_short: 7" in doc
    assert "&lt;b&gt;held-out&lt;/b&gt;" in doc  # samples are escaped, never markup
    assert doc.count("<svg") == 2  # the loss curve, the length histogram
    # worst by repetition: only the looping text; 18 words, 15 4-grams, 6 distinct -> 9/15 repeat
    worst = most_repetitive(text_report().generated_texts or [])
    assert [round(r, 6) for r, _ in worst] == [0.6] and worst[0][1].startswith("the cat")
    assert "Worst by repetition" in doc


def test_secrets_are_masked_and_nothing_is_fetched() -> None:
    doc = render(text_report())
    assert "sk-very-secret" not in doc and "api_key: &#x27;**********&#x27;" in doc
    assert redact({"password": "x", "inner": [{"token": "y", "n": 1}], "key": None}) == {
        "password": "**********",
        "inner": [{"token": "**********", "n": 1}],
        "key": None,
    }
    for pattern in (r"\ssrc=", r'href="(?!#)', r"url\(", r"@import", r"<script"):
        assert re.search(pattern, doc) is None, pattern


def test_a_table_report_plots_each_column_real_vs_synthetic(tmp_path: Path) -> None:
    path = write_report(tmp_path / "report.html", table_report())
    doc = path.read_text()
    assert "age: real vs synthetic" in doc and "color: real vs synthetic" in doc
    assert "cid: real vs synthetic" not in doc  # an id column is unique by design: no plot
    assert "Synthetic rows" in doc and "Real held-out rows" in doc
    assert "Every gate passed" in doc and "none (this is the first model)" in doc
    assert path.stat().st_size < 2_000_000


def test_plots_are_svg_with_one_mark_per_bin_or_level() -> None:
    hist = histogram_compare_svg({"a": [0, 0, 1, 1], "b": [1, 1, 1, 1]}, "t", bins=2)
    assert hist.count("<rect x=") == 3 + 2  # a: 2 non-empty bins, b: 1; two legend swatches
    bars = bar_compare_svg({"real": ["x", "y", "y"], "fake": ["y"]}, "levels")
    assert ">x<" in bars and ">y<" in bars
    assert "polyline" in line_chart_svg({"train": [(0, 1.0), (1, 0.5)]}, "l", "step", "loss")


def browser_check(path: Path, screenshot: Path | None = None) -> dict[str, str]:
    """Open ``path`` in headless Chromium: the console errors (none expected) and each section's
    heading; a full-page screenshot to ``screenshot``. Skips without Chromium or Playwright."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Chromium is not installed (scripts/system-deps.sh installs Debian's chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (never `playwright install`)"
    )
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url) if not r.url.startswith("file:") else None)
            page.goto(path.resolve().as_uri())
            headings = {sid: page.inner_text(f"section#{sid} > h2") for sid in SECTION_IDS}
            assert page.locator("svg").count() >= 1
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert errors == [], errors
    assert requests == [], requests  # nothing fetched
    return headings


def test_the_report_renders_in_headless_chromium_without_console_errors(tmp_path: Path) -> None:
    path = write_report(tmp_path / "report.html", text_report())
    headings = browser_check(path, tmp_path / "shot.png")
    assert headings["gates"] == "Quality gates" and headings["funnel"].startswith("Data stages")
    assert (tmp_path / "shot.png").stat().st_size > 10_000

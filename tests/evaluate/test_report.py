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


def browser_check(
    path: Path,
    screenshot: Path | None = None,
    sections: tuple[str, ...] = SECTION_IDS,
    drawn: str = "svg",
) -> dict[str, str]:
    """Open ``path`` in headless Chromium: the console errors and requests (none expected), the
    heading of each of ``sections``, at least one element matching ``drawn``; a full-page
    screenshot to ``screenshot``. Skips without Chromium or Playwright."""
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
            headings = {sid: page.inner_text(f"section#{sid} > h2") for sid in sections}
            assert page.locator(drawn).count() >= 1
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


def test_the_embedding_projection_is_the_pca_of_both_sets_and_is_plotted() -> None:
    import numpy as np

    from genloom.evaluate.plots import pca_2d, scatter_svg

    # points on the line y = 2x: the first component explains all the variance
    real = np.array([[0.0, 0.0], [1.0, 2.0]])
    gen = np.array([[2.0, 4.0], [3.0, 6.0]])
    points, explained = pca_2d({"real": real, "generated": gen})
    assert explained[0] == pytest.approx(1.0) and explained[1] == pytest.approx(0.0, abs=1e-12)
    xs = [x for x, _ in points["real"] + points["generated"]]
    assert abs(xs[1] - xs[0]) == pytest.approx(5**0.5)  # distances along the line are kept
    assert [abs(y) < 1e-9 for _, y in points["real"]] == [True, True]
    svg = scatter_svg(points, "proj", "PC1", "PC2")
    assert svg.count("<circle") == 4


def test_the_report_shows_the_projection_the_copies_the_judge_and_the_language_mix() -> None:
    d = text_report()
    d.projection, d.projection_explained = {"real": [(0.0, 1.0)], "generated": [(1.0, 0.0)]}, (0.6, 0.3)
    d.memorised = [
        {
            "chars": 60,
            "words": 12,
            "copied": "a copied paragraph of training text",
            "text": "so a copied paragraph of training text",
        }
    ]
    d.judge = [
        {"sample": 0, "score": 7, "reason": "fluent &amp; short", "text": "generated one", "cached": False}
    ]
    d.config["evaluate"] = {
        "judge": {"model": "judge-1", "base_url": "http://h/v1", "min_score": 1, "max_score": 10}
    }
    d.languages = {"source": "langid", "counts": {"held-out": {"en": 3, "fr": 1}, "generated": {"en": 2}}}
    doc = render(d)
    assert "MiniLM embeddings, real vs generated (PCA)" in doc and "PC1 (60% of variance)" in doc
    assert "Worst by memorisation" in doc and "a copied paragraph of training text" in doc
    assert "mean score <b>7</b> over 1 of 1 samples" in doc and "fluent &amp;amp; short" in doc
    assert "<td>en</td><td>3 (75.0%)</td><td>2 (100.0%)</td>" in doc
    assert "No judge configured" in render(text_report())


def test_the_closest_synthetic_row_to_a_training_row_is_a_copied_one_at_distance_0(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from genloom.stages.evaluate import closest_rows

    train = pa.table({"cid": [1, 2, 3, 4], "age": [20, 40, 60, 80], "color": ["red", "blue", "red", "green"]})
    pq.write_table(train, tmp_path / "train.parquet")
    synthetic = pa.table({"cid": [9, 8, 7], "age": [30, 60, 75], "color": ["blue", "red", "red"]})
    kinds = {"cid": "id", "age": "integer", "color": "categorical"}
    found = closest_rows(synthetic, tmp_path / "train.parquet", kinds, k=2)
    assert found[0]["distance"] == pytest.approx(0.0, abs=1e-6)  # (60, red) is training row 3
    assert found[0]["synthetic"]["age"] == 60 and found[0]["training"] == {
        "cid": 3,
        "age": 60,
        "color": "red",
    }
    assert found[1]["distance"] > 0.0
    d = table_report()
    d.closest_rows = found
    assert "Worst by DCR" in render(d)


def test_recording_keeps_what_the_text_figures_were_computed_from() -> None:
    import numpy as np

    from genloom.models.text_metrics import NgramIndex, frechet_distance, memorisation, recording

    a, b = np.eye(3), np.eye(3)[::-1]
    index = NgramIndex(n=3).add_all(["the cat sat on the mat today"])
    with recording() as inputs:
        assert frechet_distance(a, b) == pytest.approx(0.0, abs=1e-9)
        memorisation(["we saw the cat sat on the mat today again"], index, min_copy_chars=10)
    assert inputs.embeddings[0][0] is a and inputs.embeddings[0][1] is b
    texts, report = inputs.memorised[0]
    assert texts == ["we saw the cat sat on the mat today again"]
    assert report.copies[0]["text"] == "the cat sat on the mat today"
    frechet_distance(a, b)  # outside: nothing recorded
    assert len(inputs.embeddings) == 1


def test_without_a_language_column_langid_counts_the_held_out_sample() -> None:
    from types import SimpleNamespace

    pytest.importorskip("langid", reason="pip install 'genloom[nlp]'")
    from genloom.stages.evaluate import language_mix

    ctx = SimpleNamespace(cfg=SimpleNamespace(preprocess=[], evaluate=SimpleNamespace(language_sample=3)))
    real = [
        "The cat is sitting on the table and the dog is sleeping in the garden.",
        "Le chat est assis sur la table et le chien dort dans le jardin.",
        "It is a truth universally acknowledged that a single man must be in want of a wife.",
        "never counted: past language_sample",
    ]
    mix = language_mix(ctx, [], real, ["Der Hund schläft im Garten und die Katze sitzt auf dem Tisch."])
    assert mix is not None and mix["counts"] == {"held-out": {"en": 2, "fr": 1}, "generated": {"de": 1}}
    off = SimpleNamespace(cfg=SimpleNamespace(preprocess=[], evaluate=SimpleNamespace(language_sample=0)))
    assert language_mix(off, [], real, None) is None

"""The feature report: a pipeline with tfidf, sentiment, topics and a tiny embedding column runs
through `genloom run`, then `genloom report --features` writes a self-contained page whose
sections hold the real content (the corpus' top TF-IDF term as scikit-learn computes it, the
topic words of the fitted state, the sentiment label counts), and it renders in headless
Chromium without console errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from tests.conftest import write_pipeline
from tests.evaluate.test_report import browser_check
from tests.features.test_embeddings import save_tiny_encoder
from typer.testing import CliRunner

from genloom.cli import app
from genloom.pipeline import Pipeline

pytest.importorskip("sklearn")
pytest.importorskip("vaderSentiment")

#: (sentence, how many times, VADER's label); 'rocket' is in the most records
CORPUS = [
    ("I love this wonderful soup, the soup is great", 12, "positive"),
    ("What a happy kitchen with delicious bread and soup", 8, "positive"),
    ("I hate this terrible rocket launch, the rocket failed", 10, "negative"),
    ("The rocket stands on the launch pad near the tower", 14, "neutral"),
    ("The rocket engine and the orbit of the rocket", 6, "neutral"),
]
FEATURES = [
    {"type": "tfidf", "min_df": 2, "max_df": 0.8},
    {"type": "sentiment"},
    {"type": "topics", "n_topics": 2, "passes": 2, "top_words": 5, "min_df": 2, "max_df": 0.9},
    {"type": "embeddings", "model": "encoder", "batch_size": 16},
]


def _project(folder: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    rows = [f"{text}, entry {k}.\t{label}" for text, n, label in CORPUS for k in range(n)]
    half = len(rows) // 2
    for f, part in enumerate((rows[:half], rows[half:])):
        (folder / "data" / f"part{f}.tsv").write_text(
            "text\tlabel\n" + "\n".join(part) + "\n", encoding="utf-8"
        )
    save_tiny_encoder(folder / "encoder")
    return write_pipeline(
        folder,
        sources=[{"type": "csv", "paths": ["data"], "delimiter": "\t", "text_column": "text"}],
        clean=[],
        preprocess=[],
        features=FEATURES,
        data={"partitions_per_shard": 1},
    )


def _table_rows(page: str, cls: str) -> list[list[str]]:
    body = re.search(rf'<table class="{cls}">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert body, cls
    return [re.findall(r"<td>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", body.group(1))]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    path = _project(tmp_path_factory.mktemp("fr"))
    runner = CliRunner()
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["report", str(path), "--features"])
    assert res.exit_code == 0, res.output
    out = Path(res.output.strip().splitlines()[-1])
    assert out.name == "feature_report.html" and out.exists()
    return path, out


def test_the_report_shows_top_terms_topics_sentiment_and_the_projection(report: tuple[Path, Path]) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    path, out = report
    page = out.read_text(encoding="utf-8")
    pipe = Pipeline.from_file(path)
    try:
        data = pa.concat_tables(pipe.iter_dataset("features", columns=["text", "topic"]))
        from genloom.stages.feature_report import fitted_states

        states = fitted_states(pipe)
    finally:
        pipe.close()
    n = sum(c for _, c, _ in CORPUS)
    assert data.num_rows == n
    for sid in ("summary", "tfidf", "topics", "sentiment", "embeddings"):
        assert f'<section id="{sid}">' in page, sid
    assert '<section id="audio">' not in page and '<section id="series">' not in page  # did not run
    assert f"{n} records; 4 feature steps ran" in page

    # top terms: the column sums of scikit-learn's TF-IDF of the same texts
    vec = TfidfVectorizer(min_df=2, max_df=0.8)
    sums = np.asarray(vec.fit_transform(data.column("text").to_pylist()).sum(axis=0)).ravel()
    expected = [vec.get_feature_names_out()[j] for j in np.argsort(-sums, kind="stable")[:3]]
    terms = _table_rows(page, "terms")
    assert [r[0] for r in terms[:3]] == expected
    assert terms[0][0] == "rocket"  # in 30 of the 50 records, twice in 16 of them
    assert float(terms[0][1]) == pytest.approx(float(sums.max()), rel=1e-3)

    # topics: the fitted state's words, and the records per topic add up
    topic_state = states[2]["topics"]
    rows = _table_rows(page, "topics")
    assert [r[2] for r in rows] == [" ".join(t["words"]) for t in topic_state]
    counts = {r[0]: int(r[1]) for r in rows}
    assert sum(counts.values()) == n
    assert counts == {k: data.column("topic").to_pylist().count(k) for k in counts}

    # sentiment: VADER's labels of the corpus
    labels = {r[0]: int(r[1]) for r in _table_rows(page, "labels")}
    want: dict[str, int] = {}
    for _, c, label in CORPUS:
        want[label] = want.get(label, 0) + c
    assert labels == want
    assert "compound score" in page

    # embeddings: a PCA scatter of every record, coloured by the label column
    section = page.split('<section id="embeddings">')[1].split("</section>")[0]
    assert f"PCA of {n} of {n} vectors, coloured by label" in section
    assert section.count("<circle") == n


def test_the_feature_report_renders_in_headless_chromium(report: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = report
    headings = browser_check(
        out, tmp_path / "shot.png", sections=("tfidf", "topics"), drawn="section#embeddings svg circle"
    )
    assert headings == {"tfidf": "Top TF-IDF terms", "topics": "Topics"}
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_the_series_decomposition_recovers_a_line_and_its_season() -> None:
    from genloom.stages.feature_report import decompose, png_data_uri, series_section

    t = np.arange(96, dtype=np.float64)
    season = np.sin(2 * np.pi * t / 12)
    trend, seasonal = decompose(0.5 * t + 1 + season, 12)
    inner = ~np.isnan(trend)
    assert inner.sum() == 96 - 12  # the centred 2x12 average leaves 6 steps at each end
    assert np.allclose(trend[inner], 0.5 * t[inner] + 1, atol=1e-9)
    assert np.allclose(seasonal, season, atol=1e-9)
    page = series_section({"windows": [{"id": "w1", "x": 0.5 * t + 1 + season, "period": 12}]})
    assert page.count("<svg") == 2 and "seasonal (period 12)" in page
    assert png_data_uri(np.outer(np.arange(4), np.arange(8))).startswith("data:image/png;base64,iVBOR")

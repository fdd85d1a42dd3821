"""The report's image grids and series overlays: the plots from known data (a gap breaks a
curve, the PNG holds the images tile by tile, the mean and std leave gaps out), the sections only
for their families, and from tiny trained models (digits, four sensors) through the evaluate
stage's helpers to a report that renders in headless Chromium."""

from __future__ import annotations

import base64
import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from genloom.evaluate.plots import COLORS, overlay_svg, png_data_uri
from genloom.evaluate.report import ReportData, render, write_report

Image = pytest.importorskip("PIL.Image")


def decode_uri(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_a_gap_breaks_a_curve_and_each_group_has_its_colour() -> None:
    nan = math.nan
    svg = overlay_svg(
        {"real": [[1.0, 2.0, nan, 4.0, 5.0]], "synthetic": [[1.0, 1.0, 1.0], [nan, 3.0, nan]]}, "x"
    )
    real = re.findall(rf'<polyline fill="none" stroke="{COLORS[0]}"[^>]*points="([^"]*)"', svg)
    synth = re.findall(rf'<polyline fill="none" stroke="{COLORS[1]}"[^>]*points="([^"]*)"', svg)
    assert [len(p.split()) for p in real] == [2, 2]  # steps 0-1, then 3-4
    assert [len(p.split()) for p in synth] == [3]
    assert svg.count('<circle cx="') == 1 and f'fill="{COLORS[1]}"/>' in svg  # the lone value
    assert overlay_svg({"real": [[nan]]}, "x") == "<p>No data.</p>"


def test_the_grid_png_holds_the_images_tile_by_tile() -> None:
    pixels = np.array([[[[0, 10], [20, 30]]], [[[40, 50], [60, 70]]]], np.uint8)  # (2, 1, 2, 2)
    grid = decode_uri(png_data_uri(pixels))
    assert grid.shape == (4, 7)  # one row: 1 + 2 + 1 high, 1 + 2 + 1 + 2 + 1 wide
    assert (grid[1:3, 1:3] == pixels[0, 0]).all() and (grid[1:3, 4:6] == pixels[1, 0]).all()
    assert (grid[0] == 255).all() and (grid[:, 3] == 255).all()
    scaled = decode_uri(png_data_uri(pixels, scale=3))
    assert scaled.shape == (1 + 6 + 1, 1 + 6 + 1 + 6 + 1) and (scaled[1:4, 1:4] == 0).all()


def series_data() -> ReportData:
    nan = math.nan
    # channel a: real 1..6 with step 3 of window 1 a gap; synthetic always 10
    # channel b: real always 0; synthetic 0, 2, 0 / 2, 0, 2
    real = np.array([[[1, 0], [2, 0], [3, 0]], [[nan, 0], [5, 0], [6, 0]]], np.float64)
    synth = np.array([[[10, 0], [10, 2], [10, 0]], [[10, 2], [10, 0], [10, 2]]], np.float64)
    return ReportData(
        title="s", model_type="series_vae", series={"channels": ["a", "b"], "real": real, "synthetic": synth}
    )


def test_the_series_section_has_the_mean_and_std_of_both_without_the_gaps() -> None:
    doc = render(series_data())
    section = doc.split('<section id="series">', 1)[1].split("</section>", 1)[0]
    real_a = np.array([1, 2, 3, 5, 6], float)
    cells = [re.findall(r"<td>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", section)]
    by_channel = {c[0]: c[1:] for c in cells if c}
    # real mean, synthetic mean, real std, synthetic std
    assert by_channel["a"] == [f"{real_a.mean():.4g}", "10", f"{real_a.std():.4g}", "0"]
    assert by_channel["b"] == ["0", "1", "0", "1"]
    assert section.count("<svg") == 2 and "a: real vs synthetic windows" in section
    assert '<a href="#series">' in doc


def test_the_media_sections_appear_only_for_their_families() -> None:
    from tests.evaluate.test_report import table_report, text_report

    for d in (text_report(), table_report()):
        doc = render(d)
        assert 'id="images"' not in doc and 'id="series"' not in doc and 'href="#images"' not in doc
    d = ReportData(title="i", model_type="image_vae", split="test")
    d.image_rows = [
        {
            "label": "7",
            "synthetic": np.zeros((3, 1, 8, 8), np.uint8),
            "real": np.full((2, 1, 8, 8), 255, np.uint8),
        },
        {
            "label": "8",
            "synthetic": np.zeros((3, 1, 8, 8), np.uint8),
            "real": np.zeros((0, 1, 8, 8), np.uint8),
        },
    ]
    doc = render(d)
    section = doc.split('<section id="images">', 1)[1].split("</section>", 1)[0]
    uris = re.findall(r'<img class="grid" src="([^"]+)"', section)
    assert len(uris) == 3 and "none" in section  # label 8 has no real image
    # 8-pixel tiles scaled 6 times (to 48): three tiles of the first row's samples
    assert decode_uri(uris[0]).shape == (1 + 48 + 1, 3 * 49 + 1)
    assert (decode_uri(uris[1])[1:49, 1:49] == 255).all()
    assert 'id="series"' not in doc and doc.index('id="samples"') < doc.index('id="images"') < doc.index(
        'id="plots"'
    )


# ----------------------------------------------------------------------------------------------
# from trained models, through the evaluate stage's helpers


def history(model_dir: Path) -> list[dict]:
    """The training curve the evaluate stage reads (the last checkpoint's history)."""
    import json

    states = sorted((model_dir / "checkpoints").glob("step_*/state.json"))
    return json.loads(states[-1].read_text()).get("history", []) if states else []


def bar_records(per_class: int = 32) -> Any:
    """8 x 8 grey PNG records of two classes, a horizontal bar (``h``) and a vertical one
    (``v``) at a random place, ids ``bars:<i>`` (the fixtures' split reads the index)."""
    import pyarrow as pa

    from genloom.models.image_data import encode_png

    rng = np.random.default_rng(0)
    ids, images, labels = [], [], []
    for i in range(2 * per_class):
        label = "hv"[(i // 8) % 2]  # both labels in training and in validation (every 8th)
        x = rng.integers(0, 40, (1, 8, 8)).astype(np.uint8)
        k = int(rng.integers(1, 7))
        if label == "h":
            x[0, k] = 255
        else:
            x[0, :, k] = 255
        ids.append(f"bars:{i}")
        images.append(encode_png(x))
        labels.append(label)
    return pa.table({"id": ids, "image": pa.array(images, pa.binary()), "label": labels})


def test_an_image_model_s_report_has_a_grid_per_label_beside_real_images(tmp_path: Path) -> None:
    from tests.evaluate.test_report import browser_check
    from tests.models.image_fixtures import image_configs_registered, prepare, train, train_config

    if not image_configs_registered():
        pytest.skip("models/config.py's ModelConfig union does not list the image families")
    from genloom.models.image_data import ImageLayout
    from genloom.models.image_vae import ImageVAEFamily
    from genloom.stages.evaluate import GRID_IMAGES, add_family_media

    fam = ImageVAEFamily()
    cfg = train_config(
        {"type": "image_vae", "size": 8, "width": 4, "latent_dim": 2, "batch_size": 16}, max_steps=2
    )
    prepared = prepare(fam, cfg, bar_records(), tmp_path / "prep")
    assert train(fam, cfg, prepared, tmp_path / "model") is not None
    d = ReportData(title="digits: evaluation", model_type="image_vae", history=history(tmp_path / "model"))
    add_family_media(d, fam, tmp_path / "model", prepared)
    assert d.series is None and d.image_rows is not None
    assert [r["label"] for r in d.image_rows] == ["h", "v"]
    val, labels = np.load(prepared / "val.npy"), np.load(prepared / "val_labels.npy")
    layout = ImageLayout.load(prepared / "images.json")
    for r in d.image_rows:
        assert r["synthetic"].shape == (GRID_IMAGES, 1, 8, 8) and r["synthetic"].dtype == np.uint8
        expected = val[labels == layout.labels.index(r["label"])][:GRID_IMAGES]
        assert len(expected) and np.array_equal(r["real"], expected)  # the held-out images of that label
    path = write_report(tmp_path / "report.html", d)
    assert render(d).count('<img class="grid"') == 4
    browser_check(path)


def test_a_series_model_s_report_overlays_real_and_synthetic_windows(tmp_path: Path) -> None:
    from tests.evaluate.test_report import browser_check
    from tests.models.test_series_data import prepare_input, readings

    from genloom.models.base import family
    from genloom.models.series_data import SeriesLayout
    from genloom.stages.evaluate import add_family_media
    from genloom.train.config import TrainConfig
    from genloom.train.loop import train_prepared

    model = {
        "type": "series_vae",
        "window": {"size": 24, "step": "1h", "fill": "linear"},
        "conditions": ["device"],
        "hidden_dim": 16,
        "num_layers": 1,
        "latent_dim": 2,
        "batch_size": 8,
    }
    try:
        cfg = TrainConfig(model=model, threads=1, precision="fp32", max_steps=2)  # type: ignore[arg-type]
    except ValueError:
        pytest.skip("models/config.py's ModelConfig union lacks SeriesVAEConfig")
    fam = family("series_vae")
    prepared, model_dir = tmp_path / "prep", tmp_path / "model"
    prepared.mkdir()
    fam.prepare(
        prepare_input(readings(hours=24 * 6, gaps=(24 * 5 + 3,))), cfg, prepared
    )  # a gap on the last day
    model_dir.mkdir()
    for name in fam.model_files:
        (model_dir / name).write_bytes((prepared / name).read_bytes())
    assert train_prepared(cfg, prepared, model_dir, lambda *a: None) is not None

    d = ReportData(title="sensors: evaluation", model_type="series_vae", history=history(model_dir))
    add_family_media(d, fam, model_dir, prepared)
    assert d.image_rows is None and d.series is not None
    layout = SeriesLayout.from_json(__import__("json").loads((prepared / "series.json").read_text()))
    real, synth = d.series["real"], d.series["synthetic"]
    values, mask = np.load(prepared / "val_values.npy"), np.load(prepared / "val_mask.npy").astype(bool)
    assert d.series["channels"] == layout.channels and real.shape == synth.shape == values.shape
    assert (~mask).any() and np.isnan(real[~mask]).all()  # the gap is left out, not its filled value
    np.testing.assert_allclose(real[mask], layout.unscale(values.astype(np.float64))[mask])
    assert np.isfinite(synth).all()
    doc = render(d)
    assert doc.split('<section id="series">')[1].split("</section>")[0].count("<svg") == len(layout.channels)
    browser_check(write_report(tmp_path / "report.html", d))

"""Image features (edges, corners, texture, HOG, colour histograms, CNN features) on drawn
shapes with known answers, on scikit-learn's bundled digits, and through the pipeline."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from genloom.core.errors import ConfigError, StepError
from genloom.core.steps import StepContext
from genloom.features.cnn_features import CnnFeaturesFeature
from genloom.features.color_histogram import ColorHistogramFeature
from genloom.features.corners import CornersFeature
from genloom.features.edges import EdgesFeature
from genloom.features.hog import HogFeature
from genloom.features.texture import TextureFeature
from genloom.pipeline import Pipeline

pytest.importorskip("skimage", reason="the image extra is not installed")


def png(pixels: np.ndarray) -> bytes:
    """An array (H, W) or (H, W, 3) of uint8 as PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def square(size: int = 64, lo: int = 16, hi: int = 48) -> np.ndarray:
    """A white square (rows and columns lo..hi-1) drawn on black."""
    img = np.zeros((size, size), np.uint8)
    img[lo:hi, lo:hi] = 255
    return img


def images(*payloads: bytes | None) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(len(payloads))], "image": pa.array(payloads, pa.binary())})


def run(step, table: pa.Table) -> tuple[pa.Table, StepContext]:  # type: ignore[no-untyped-def]
    ctx = StepContext()
    return step.run(table, ctx), ctx


def digits_png(n: int) -> tuple[list[bytes], list[str]]:
    """The first ``n`` of scikit-learn's bundled 8 x 8 digits (0..16 grey levels) as PNG bytes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    pixels = (d.images[:n] * (255 / 16)).round().astype(np.uint8)
    return [png(p) for p in pixels], [str(t) for t in d.target[:n]]


def test_harris_finds_the_four_corners_of_a_drawn_square() -> None:
    out, _ = run(CornersFeature(), images(png(square())))
    row = out.to_pylist()[0]
    assert row["corners_count"] == 4
    assert sorted(map(tuple, row["corners_positions"])) == [(16, 16), (16, 47), (47, 16), (47, 47)]
    assert row["corners_mean_y"] == pytest.approx(0.5, abs=0.01)
    assert row["corners_mean_x"] == pytest.approx(0.5, abs=0.01)


def test_canny_on_a_blank_image_finds_no_edges_and_a_square_its_outline() -> None:
    out, _ = run(EdgesFeature(map_size=4), images(png(np.zeros((32, 32), np.uint8)), png(square())))
    blank, sq = out.to_pylist()
    assert blank["edges_density"] == 0 and blank["edges_sobel_max"] == 0
    # the outline of a 32-pixel square: about 4 x 32 edge pixels of 64 x 64
    assert 0.02 < sq["edges_density"] < 0.06
    grid = np.array(sq["edges_map"]).reshape(4, 4)
    assert grid[0, 0] == 0 and grid.max() > 0  # the corner block is outside the square
    assert grid[1:3, 1:3].min() > 0  # the four centre blocks hold the square's corners


def test_null_image_gives_nulls_and_undecodable_bytes_are_quarantined() -> None:
    table = images(png(square()), None, b"not an image")
    for step in (EdgesFeature(), CornersFeature(), TextureFeature(), HogFeature(), ColorHistogramFeature()):
        out, ctx = run(step, table)
        assert out.column("id").to_pylist() == ["r0", "r1"], step.type
        assert [r["reason"] for r in ctx.rejected] == ["bad_image"]
        assert [r["id"] for r in ctx.rejected] == ["r2"]
        first = [c for c in out.column_names if c.startswith(step.type)][0]
        assert out.column(first)[1].as_py() is None
    with pytest.raises(StepError, match="no column 'pixels'"):
        EdgesFeature(column="pixels").run(table, StepContext())


def test_hog_has_one_length_for_every_input_size() -> None:
    step = HogFeature()
    out, _ = run(step, images(png(square(64)), png(square(128, 32, 96)), png(np.zeros((30, 50), np.uint8))))
    assert (
        out.schema.field("hog").type
        == pa.list_(pa.float32(), 1764)
        == pa.list_(pa.float32(), step.dimension())
    )
    vecs = np.array(out.column("hog").to_pylist())
    assert np.corrcoef(vecs[0], vecs[1])[0, 1] > 0.9  # the same square at twice the scale
    assert not vecs[2].any()  # no gradient, no histogram
    with pytest.raises(ConfigError, match="holds no"):
        HogFeature(size=(8, 8), pixels_per_cell=8, cells_per_block=2).check("features.0")


def test_color_histogram_of_a_red_image() -> None:
    red = np.zeros((10, 10, 3), np.uint8)
    red[..., 0] = 255
    out, _ = run(ColorHistogramFeature(bins=4), images(png(red), png(square(10, 0, 5))))
    hist = np.array(out.column("color_histogram").to_pylist())
    assert hist[0].tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0]  # R all high, G and B all low
    assert out.column("color_histogram_mean")[0].as_py() == [1.0, 0.0, 0.0]
    assert hist[1].reshape(3, 4)[:, 3].tolist() == [0.25, 0.25, 0.25]  # grey: a quarter is white
    hsv, _ = run(ColorHistogramFeature(bins=4, space="hsv"), images(png(red)))
    assert np.array(hsv.column("color_histogram_mean")[0].as_py()) == pytest.approx([0.0, 1.0, 1.0])


def test_texture_tells_stripes_from_flat() -> None:
    stripes = np.zeros((64, 64), np.uint8)
    stripes[:, ::4] = 255
    stripes[:, 1::4] = 255
    out, _ = run(
        TextureFeature(frequencies=[0.25], orientations=2),
        images(png(stripes), png(np.full((64, 64), 128, np.uint8))),
    )
    lbp = np.array(out.column("texture_lbp").to_pylist())
    energies = np.array(out.column("texture_gabor").to_pylist())
    assert lbp.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert lbp[1, 8] == 1.0  # flat: every pixel is the uniform pattern "all neighbours >= centre"
    from skimage.filters import gabor

    for k, theta in enumerate((0.0, np.pi / 2)):  # what scikit-image's own gabor filter gives
        real, imag = gabor(stripes / 255.0, frequency=0.25, theta=theta)
        assert energies[0, k] == pytest.approx(np.hypot(real, imag).mean(), rel=1e-5)
    # vertical stripes of period 4 (0.25 cycles per pixel) answer the 0-angle kernel, not the 90 one
    assert energies[0, 0] > 5 * energies[0, 1]
    assert energies[0, 0] > 5 * energies[1, 0]


def test_hog_of_real_digits_separates_the_classes() -> None:
    """scikit-learn's digits: the nearest class mean of the HOG vectors of 400 digits labels the next 200."""
    pngs, labels = digits_png(600)
    out, ctx = run(HogFeature(size=(32, 32)), images(*pngs))
    assert not ctx.rejected and out.num_rows == 600
    x = np.array(out.column("hog").to_pylist())
    y = np.array(labels)
    classes = sorted(set(labels))
    centroids = np.array([x[:400][y[:400] == c].mean(axis=0) for c in classes])  # (10, 324)
    nearest = ((x[400:, None] - centroids[None]) ** 2).sum(axis=-1).argmin(axis=1)
    assert (np.array(classes)[nearest] == y[400:]).mean() > 0.8  # 0.87 when written; chance is 0.1


def tiny_cnn(path: Path) -> object:
    """A 2-layer TorchScript CNN (grey 16 x 16 in, 3 logits out) saved at ``path``."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
    torch.jit.save(torch.jit.script(model), str(path))
    return model


def test_cnn_features_from_a_torchscript_file(tmp_path: Path) -> None:
    import torch

    model = tiny_cnn(tmp_path / "cnn.pt")
    pngs, _ = digits_png(5)
    table = images(*pngs, None)
    common = dict(model=str(tmp_path / "cnn.pt"), size=(16, 16), channels=1, mean=[0.5], std=[0.25])
    step = CnnFeaturesFeature(**common, batch_size=2)  # type: ignore[arg-type]
    step.check("features.0")
    out, _ = run(step, table)
    assert out.schema.field("cnn_features").type == pa.list_(pa.float32(), 3)
    got = np.array(out.column("cnn_features").to_pylist()[:5])
    assert out.column("cnn_features")[5].as_py() is None
    x = torch.from_numpy(np.stack([step.pixels(b)["x"] for b in pngs]))
    with torch.no_grad():
        want = model(x).numpy()
        want_penultimate = model[:-1](x).numpy()
    assert got == pytest.approx(want, abs=1e-5)
    pen, _ = run(CnnFeaturesFeature(**common, layer="penultimate", output="emb"), table)  # type: ignore[arg-type]
    assert np.array(pen.column("emb").to_pylist()[:5]) == pytest.approx(want_penultimate, abs=1e-5)
    # the decoded and normalised input: the digit's grey levels resized to 16 x 16
    assert x.shape == (5, 1, 16, 16) and float(x.min()) == pytest.approx(-2.0)
    with pytest.raises(ConfigError, match="no model file"):
        CnnFeaturesFeature(model=str(tmp_path / "missing.pt")).check("features.0")
    not_sequential = CnnFeaturesFeature(**{**common, "model": str(tmp_path / "head.pt")}, layer="penultimate")  # type: ignore[arg-type]
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "head.pt"))
    with pytest.raises(StepError, match="nn.Sequential"):
        not_sequential.run(table, StepContext())


def test_cnn_features_from_an_onnx_file(tmp_path: Path) -> None:
    """An ONNX graph written with onnx.helper (conv, relu, global pooling, gemm) run by onnxruntime
    gives what the same weights give in NumPy; the pooled features are a second graph output."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (needed to write the test's model)")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 1, 1, 1)).astype(np.float32)  # 1x1 convolution: a per-pixel scale
    b = rng.normal(size=4).astype(np.float32)
    fc = rng.normal(size=(3, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["pooled"]),
            helper.make_node("Gemm", ["pooled", "fc"], ["logits"], transB=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 1, 16, 16])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 3]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["B", 4]),
        ],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(fc, "fc")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "tiny.onnx"))
    pngs, _ = digits_png(4)
    common = dict(model=str(tmp_path / "tiny.onnx"), size=(16, 16), channels=1, mean=[0.0], std=[1.0])
    step = CnnFeaturesFeature(**common)  # type: ignore[arg-type]
    out, _ = run(step, images(*pngs))
    x = np.stack([step.pixels(p)["x"] for p in pngs])  # (B, 1, 16, 16)
    pooled = np.maximum(x * w[:, 0, 0, 0][None, :, None, None] + b[None, :, None, None], 0).mean(axis=(2, 3))
    assert np.array(out.column("cnn_features").to_pylist()) == pytest.approx(pooled @ fc.T, abs=1e-4)
    pen, _ = run(CnnFeaturesFeature(**common, layer="pooled"), images(*pngs))  # type: ignore[arg-type]
    assert np.array(pen.column("cnn_features").to_pylist()) == pytest.approx(pooled, abs=1e-5)
    with pytest.raises(ConfigError, match="penultimate is for TorchScript"):
        CnnFeaturesFeature(**common, layer="penultimate").check("features.0")  # type: ignore[arg-type]


def _digits_folders(folder: Path, n: int) -> None:
    """The first ``n`` digits as PNG files in one folder per label (data/<label>/d<i>.png)."""
    pngs, labels = digits_png(n)
    for i, (data, label) in enumerate(zip(pngs, labels, strict=True)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"d{i:03d}.png").write_bytes(data)


def test_image_features_through_the_pipeline_on_four_shards_equal_one_batch(tmp_path: Path) -> None:
    """Digits as PNG files in label folders (the image_folder source), the features stage on
    four shards: the rows the steps give on all the images in one batch here, bit for bit."""
    from genloom.core.registry import SOURCES

    if "image_folder" not in SOURCES.names():
        pytest.skip("no image_folder source registered")
    _digits_folders(tmp_path / "data", n=40)
    features = [
        {"type": "edges", "map_size": 2},
        {"type": "corners"},
        {"type": "hog", "size": [16, 16]},
        {"type": "color_histogram", "bins": 4},
    ]
    raw = {
        "name": "digits",
        "sources": [{"type": "image_folder", "paths": ["data"]}],
        "features": features,
        "data": {"partitions_per_shard": 10},
    }
    pipeline = Pipeline.from_dict(raw, base_dir=tmp_path)
    (stage,) = [s for s in pipeline.run().stages if s.stage == "features"]
    assert len(pipeline.store.read_manifest("features", stage.key)["shards"]) == 4
    sharded = pa.concat_tables(list(pipeline.store.iter_artifact("features", stage.key))).sort_by("id")
    assert sharded.num_rows == 40
    assert set(sharded.column("label").to_pylist()) == {str(i) for i in range(10)}
    direct = sharded.select(["id", "image"])
    for cfg in features:
        step = {
            "edges": EdgesFeature,
            "corners": CornersFeature,
            "hog": HogFeature,
            "color_histogram": ColorHistogramFeature,
        }[cfg["type"]]
        direct = step(**{k: v for k, v in cfg.items() if k != "type"}).run(direct, StepContext())  # type: ignore[arg-type]
    cols = [c for c in direct.column_names if c not in ("id", "image")]
    assert len(cols) == 4 + 1 + 5 + 1 + 2
    assert sharded.select(cols).equals(direct.select(cols))
    assert all(len(v) == 36 for v in sharded.column("hog").to_pylist())  # one block of 2 x 2 cells x 9 bins
    assert (
        sum(d > 0 for d in sharded.column("edges_density").to_pylist()) > 30
    )  # a few 8 x 8 digits have no Canny edge


def _run_in_worker(job: tuple[list[object], pa.Table]) -> pa.Table:
    steps, table = job
    for step in steps:
        table = step.run(table, StepContext())  # type: ignore[attr-defined]
    return table


def test_four_shards_in_a_process_pool_equal_one_process() -> None:
    """The image steps pickled to two worker processes, on four shards of 20 digits, give the
    columns one process gives on them all, bit for bit."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pngs, _ = digits_png(80)
    table = images(*pngs)
    steps = [
        EdgesFeature(map_size=2),
        CornersFeature(),
        TextureFeature(size=(16, 16), frequencies=[0.25, 0.4], orientations=2),
        HogFeature(size=(16, 16)),
        ColorHistogramFeature(),
    ]
    shards = [table.slice(i * 20, 20) for i in range(4)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        pooled = pa.concat_tables(pool.map(_run_in_worker, [(steps, s) for s in shards]))
    assert pooled.equals(_run_in_worker((steps, table)))

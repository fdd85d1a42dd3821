"""What the two image families (``image_gan``, ``image_vae``) share: their configs, preparing
labelled images (decode, square crop, resize, scale), the training batches, sampling under a
label condition, PNG output (files and a grid) and the evaluation.

Images reach ``prepare`` as a column of the records (``image``: PNG/JPEG bytes, as the
``image_folder`` and ``digits`` sources write them, or a table's binary column; a string column
is read as file paths). Each is decoded with Pillow, converted to grayscale or RGB, centre-cropped
to a square and resized to ``size`` x ``size`` (8 to 64, a power of two: the networks halve or
double the side per layer, DCGAN's layout), then stored as uint8 (N, C, S, S) arrays per split;
batches scale them to [-1, 1] (the generator's tanh range). The label column's values, sorted,
are the condition vocabulary: label k is a one-hot / an embedding row k in the networks; images
without a label column train an unconditional model.

This module is torch-free at import (the configs are read when a pipeline file is validated);
the family base class imports torch inside its methods.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genloom.models.base import Metric, ModelFamily, Prepared, PrepareInput, TrainPlan

if TYPE_CHECKING:
    import pyarrow as pa
    import torch
    import torch.nn as nn

EVAL_SEED = 20_240_101  # evaluation samples with a fixed seed: the same model scores the same
EVAL_IMAGES = 2_000  # held-out images an evaluation compares with, at most
PROFILE_LABELS = 100  # labels the profile counts, the most frequent
FEATURE_SIDE = 8  # the fixed feature map of the Fréchet distance: images average-pooled to 8 x 8


# ----------------------------------------------------------------------------------------------
# configs (train.model)


class ImageConfig(BaseModel):
    """What the two image families share: which columns hold the images and labels, the size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trains_tokenizer: ClassVar[bool] = False
    muon: ClassVar[bool] = False
    chat: ClassVar[bool] = False
    image_column: str = Field(
        "image", description="Column with the images: PNG/JPEG bytes, or file paths (text)."
    )
    label_column: str | None = Field(
        "label",
        description="Column whose values condition the model (class-conditional); null, or a column"
        " that is absent: unconditional.",
    )
    size: Literal[8, 16, 32, 64] = Field(
        32, description="Side in pixels: images are centre-cropped to a square and resized to size x size."
    )
    channels: Literal[1, 3] | None = Field(
        None, description="1: grayscale, 3: RGB; None: 1 when every training image is grayscale, else 3."
    )
    epochs: int = Field(50, ge=1, description="Passes over the training images (train.max_steps overrides).")
    batch_size: int = Field(64, ge=2, description="Images per step (train.batch_size overrides).")


class ImageGANConfig(ImageConfig):
    """DCGAN (Radford et al. 2016), class-conditional by a projection discriminator (Miyato &
    Koyama 2018) or by concatenated one-hot label maps (Mirza & Osindero 2014)."""

    type: Literal["image_gan"] = "image_gan"
    latent_dim: int = Field(100, ge=1, description="Noise dimension (DCGAN: 100).")
    width: int = Field(
        64, ge=4, description="Feature maps at the full-resolution layer; doubled at each halving."
    )
    conditioning: Literal["projection", "concat"] = Field(
        "projection",
        description="projection: the critic's score adds <embed(label), features> (Miyato & Koyama);"
        " concat: one-hot label maps join the critic's input channels. The generator takes z and"
        " a label embedding in both.",
    )
    lr: float = Field(2e-4, gt=0, description="Adam learning rate of both networks (DCGAN: 2e-4).")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 (DCGAN: 0.5).")


class ImageVAEConfig(ImageConfig):
    """A convolutional conditional VAE (Kingma & Welling 2014; Sohn et al. 2015) with a
    calibrated Gaussian decoder (a learned variance per channel, Rybkin et al. 2021)."""

    type: Literal["image_vae"] = "image_vae"
    latent_dim: int = Field(16, ge=1, description="Latent dimension.")
    width: int = Field(
        32, ge=4, description="Feature maps at the full-resolution layer; doubled at each halving."
    )
    kl_weight: float = Field(
        1.0, gt=0, description="Weight of the KL term (1: the ELBO; beta-VAE otherwise)."
    )
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")


# ----------------------------------------------------------------------------------------------
# decoding and encoding


def open_image(data: bytes) -> Any:
    """A Pillow image of encoded bytes (PNG, JPEG, ... whatever Pillow reads), fully loaded."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def is_grayscale(img: Any) -> bool:
    """Whether a Pillow image holds no colour (its mode, or a palette / RGB whose channels agree)."""
    if img.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return True
    rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def to_array(img: Any, size: int, channels: int) -> np.ndarray:
    """(C, S, S) uint8: converted to L or RGB (transparency over white), centre-cropped to a
    square and resized (Lanczos; box-filtered when shrinking a lot)."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "P", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode in ("I", "I;16", "F"):  # 16-bit and float grayscale: to 0..255
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        img = Image.fromarray(np.uint8(np.round(255 * (a - lo) / (hi - lo if hi > lo else 1.0))))
    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != size:
        if side >= 4 * size:  # a box pre-filter first: Lanczos alone aliases at large factors
            img = img.reduce(side // (2 * size))
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    a = np.asarray(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1).copy()


def decode_image(data: bytes, size: int, channels: int) -> np.ndarray:
    """Encoded bytes -> (C, S, S) uint8 (see ``to_array``)."""
    return to_array(open_image(data), size, channels)


def encode_png(pixels: np.ndarray) -> bytes:
    """(C, H, W) uint8 -> PNG bytes (grayscale for C = 1, RGB for C = 3)."""
    from PIL import Image

    a = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1]."""
    return x.astype(np.float32) / 127.5 - 1.0


def to_pixels(x: np.ndarray) -> np.ndarray:
    """Floats in [-1, 1] -> uint8 pixels (clipped)."""
    return np.clip(np.round((np.asarray(x, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def sort_labels(values: Sequence[str]) -> list[str]:
    """Label values in a stable, natural order: numerically when every one is an integer."""
    distinct = sorted(set(values))
    if distinct and all(v.lstrip("-").isdigit() for v in distinct):
        return sorted(distinct, key=int)
    return distinct


# ----------------------------------------------------------------------------------------------
# PNG files and the grid


def image_grid(pixels: np.ndarray, columns: int, pad: int = 1, scale: int = 1) -> np.ndarray:
    """(N, C, S, S) uint8 -> one (C, H, W) uint8 mosaic, ``columns`` per row, ``pad`` pixels of
    white between tiles, every pixel repeated ``scale`` times (small images stay visible)."""
    n, c, s, _ = pixels.shape
    rows = max(1, math.ceil(n / columns))
    tile = s * scale
    out = np.full((c, rows * (tile + pad) + pad, columns * (tile + pad) + pad), 255, np.uint8)
    for i in range(n):
        r, k = divmod(i, columns)
        img = pixels[i].repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else pixels[i]
        y, x = pad + r * (tile + pad), pad + k * (tile + pad)
        out[:, y : y + tile, x : x + tile] = img
    return out


def write_images(table: pa.Table, out_dir: Path, image_column: str = "image") -> list[Path]:
    """Writes each generated image of ``table`` as ``<label>_<i>.png`` (``<i>.png`` without
    labels) into ``out_dir``, and ``grid.png``: the images in one mosaic, a row per label when
    the table has labels (so a grid of samples per class), scaled up to tiles of 64 pixels at
    least. Returns the image files written (the grid last)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = table.column(image_column).to_pylist()
    labels = table.column("label").to_pylist() if "label" in table.column_names else [None] * len(images)
    paths: list[Path] = []
    width = len(str(max(0, len(images) - 1)))
    for i, (data, label) in enumerate(zip(images, labels, strict=True)):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(label)) if label else ""
        path = out_dir / (f"{safe}_{i:0{width}d}.png" if safe else f"{i:0{width}d}.png")
        path.write_bytes(data)
        paths.append(path)
    if images:
        arrays = [np.asarray(open_image(d)) for d in images]
        pixels = np.stack([a[None] if a.ndim == 2 else a.transpose(2, 0, 1) for a in arrays])
        if labels[0] is not None:  # a row per label, in the order the labels first appear
            order = list(dict.fromkeys(labels))
            by_label = [[i for i, lab in enumerate(labels) if lab == o] for o in order]
            columns = max(len(b) for b in by_label)
            tiles = np.full((len(order) * columns, *pixels.shape[1:]), 255, np.uint8)
            for r, idx in enumerate(by_label):
                tiles[r * columns : r * columns + len(idx)] = pixels[idx]
        else:
            columns = max(1, math.ceil(math.sqrt(len(images))))
            tiles = pixels
        columns = min(columns, 32)
        grid = image_grid(tiles, columns, scale=max(1, 64 // pixels.shape[-1]))
        (out_dir / "grid.png").write_bytes(encode_png(grid))
        paths.append(out_dir / "grid.png")
    return paths


# ----------------------------------------------------------------------------------------------
# figures of a set of images


def pooled_features(x: np.ndarray, side: int = FEATURE_SIDE) -> np.ndarray:
    """(N, C, S, S) images in [-1, 1] -> (N, C * side * side) average-pooled pixels: the fixed
    feature map of the evaluation's Fréchet distance and classifier."""
    n, c, s, _ = x.shape
    side = min(side, s)
    f = s // side
    return x.reshape(n, c, side, f, side, f).mean(axis=(3, 5)).reshape(n, -1).astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (N, d) and (M, d):
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al. 2017's FID, in these
    features). tr((S_a S_b)^(1/2)) is the sum of the square roots of the eigenvalues of S_a S_b
    (real and >= 0 for two covariance matrices), which stays exact where a matrix square root
    of a singular product (dead features) does not."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    eig = np.linalg.eigvals(sa @ sb)
    tr_sqrt = float(np.sqrt(np.clip(eig.real, 0.0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * tr_sqrt)


# ----------------------------------------------------------------------------------------------
# the prepared images


class ImageLayout:
    """The shape and the condition vocabulary of a prepared image set (``images.json``)."""

    def __init__(self, size: int, channels: int, labels: list[str], counts: list[int]) -> None:
        self.size, self.channels, self.labels, self.counts = size, channels, labels, counts

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "channels": self.channels, "labels": self.labels, "counts": self.counts}

    @classmethod
    def load(cls, path: Path) -> ImageLayout:
        d = json.loads(Path(path).read_text())
        return cls(int(d["size"]), int(d["channels"]), list(d["labels"]), list(d["counts"]))


class _SplitWriter:
    """Appends uint8 images of one split to a raw file, then writes ``<name>.npy`` and
    ``<name>_labels.npy`` (the memory of a large set stays one batch's)."""

    def __init__(self, out_dir: Path, name: str, shape: tuple[int, int, int]) -> None:
        self.out_dir, self.name, self.shape = out_dir, name, shape
        self.raw = out_dir / f"{name}.raw"
        self.file = self.raw.open("wb")
        self.labels: list[str | None] = []
        self.n = 0

    def add(self, pixels: np.ndarray, label: str | None) -> None:
        self.file.write(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
        self.labels.append(label)
        self.n += 1

    def finish(self, vocab: dict[str, int]) -> int:
        """Writes the arrays; returns the images with a label unknown to ``vocab`` (index -1)."""
        self.file.close()
        if self.n == 0:  # an empty split (a memory map cannot be empty)
            np.save(self.out_dir / f"{self.name}.npy", np.zeros((0, *self.shape), np.uint8))
        else:
            src = np.memmap(self.raw, np.uint8, "r", shape=(self.n, *self.shape))
            path = self.out_dir / f"{self.name}.npy"
            dst = np.lib.format.open_memmap(path, "w+", np.uint8, (self.n, *self.shape))
            for start in range(0, self.n, 4096):
                dst[start : start + 4096] = src[start : start + 4096]
            dst.flush()
            del dst, src
        self.raw.unlink()
        idx = np.array([vocab.get(lab, -1) if lab is not None else -1 for lab in self.labels], np.int64)
        if not vocab:
            idx = np.zeros(self.n, np.int64)
        np.save(self.out_dir / f"{self.name}_labels.npy", idx)
        return int((idx < 0).sum())


def _image_bytes(value: Any, resolve: Callable[[str], str]) -> bytes:
    """A cell of the image column as encoded bytes: bytes as they are, text as a file path."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return Path(resolve(value)).read_bytes()
    raise ValueError(f"not an image: a {type(value).__name__} (expected PNG/JPEG bytes or a file path)")


class ImageBatches:
    """Fixed-size batches of (images in [-1, 1], label indices), a fresh shuffle per epoch; the
    batch of a step depends only on (seed, step, micro, rank), so a resumed run sees the same
    images without any sampler state (``tabular.RowBatches``' order)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        grad_accum: int = 1,
    ) -> None:
        from genloom.models.tabular import RowBatches

        self.images, self.labels, self.seed, self.rank = images, labels, seed, rank
        self.order = RowBatches(np.empty((len(images), 0)), batch_size, seed, rank, world, grad_accum)
        self.batch_size = self.order.batch_size

    def batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, ...]:
        """(x (B, C, S, S) float32 in [-1, 1], y (B,) int64)."""
        import torch

        idx = np.sort(self.order.indices(step, micro))  # sorted: memory-mapped reads in file order
        perm = np.random.default_rng([self.seed, step, micro, self.rank]).permutation(len(idx))
        idx = idx[perm]
        x = torch.from_numpy(to_unit(np.asarray(self.images[idx])))
        return x, torch.from_numpy(np.asarray(self.labels[idx], dtype=np.int64))


class ImageData:
    """Prepared images as the training loop sees them (memory-mapped uint8 arrays)."""

    unit = "rows"  # a step's figures count images as the table families count rows
    vocab_size = 0

    def __init__(self, prepared_dir: Path, family: ImageFamily) -> None:
        d = Path(prepared_dir)
        self.layout = ImageLayout.load(d / "images.json")
        self.train = np.load(d / "train.npy", mmap_mode="r")
        self.train_labels = np.load(d / "train_labels.npy")
        self.val = np.load(d / "val.npy", mmap_mode="r")
        self.val_labels = np.load(d / "val_labels.npy")
        known = self.val_labels >= 0
        self.val, self.val_labels = np.asarray(self.val[known]), self.val_labels[known]
        self.n_train, self.n_val = len(self.train), len(self.val)
        self.family = family

    def batches(self, plan: TrainPlan, seed: int, rank: int, world: int, grad_accum: int) -> ImageBatches:
        return ImageBatches(self.train, self.train_labels, plan.batch_size, seed, rank, world, grad_accum)

    def val_loss(self, model: nn.Module, plan: TrainPlan, max_units: int, device: torch.device) -> float:
        """The family's validation figure on the first ``max_units`` validation images (fixed seed)."""
        import torch

        n = min(self.n_val, max(1, max_units))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return self.family.validation_loss(model, to_unit(self.val[:n]), self.val_labels[:n], device)
        finally:
            model.train(was_training)

    def final_metrics(self, val_loss: float) -> dict[str, Any]:
        return {}


# ----------------------------------------------------------------------------------------------
# the family


def sample_report(table: pa.Table) -> dict[str, Any]:
    """The report ``ImageFamily.sample`` stored in the table's schema metadata."""
    meta = table.schema.metadata or {}
    return dict(json.loads(meta[b"genloom"])) if b"genloom" in meta else {}


class ImageFamily(ModelFamily):
    """The part of an image family that does not depend on its network: prepare, data, sampling
    under a label, PNG output and the evaluation. A subclass writes ``plan_entries``, ``build``,
    the step (``train_step`` with ``custom_step``, else the module's forward), ``generate`` and
    ``validation_loss``."""

    model_files = ("images.json",)
    prepare_steps = 3

    # -- prepare --------------------------------------------------------------------------------

    def prepare_key(
        self, train_cfg: Any, file_digests: Callable[[list[str]], dict[str, str]]
    ) -> dict[str, Any]:
        """The columns, size and channels the images are prepared with."""
        m = train_cfg.model
        return {
            "image_column": m.image_column,
            "label_column": m.label_column,
            "size": m.size,
            "channels": m.channels,
        }

    def _rows(self, inp: PrepareInput, cfg: Any) -> Iterator[tuple[str, Any, str | None, str]]:
        """(id, image cell, label or None, split) of every record."""
        if cfg.image_column not in inp.columns:
            from genloom.core.errors import ConfigError

            raise ConfigError(
                f"no column {cfg.image_column!r} in the records (columns: {', '.join(inp.columns)})",
                path="train.model.image_column",
                hint="read images with the image_folder or digits source, or name the column that holds them",
            )
        label = cfg.label_column if cfg.label_column in inp.columns else None
        wanted = ["id", cfg.image_column, *([label] if label else [])]
        for batch in inp.batches(wanted):
            split = inp.split(batch)
            ids = batch.column("id").to_pylist() if "id" in batch.column_names else [""] * batch.num_rows
            cells = batch.column(cfg.image_column).to_pylist()
            labels = batch.column(label).to_pylist() if label else [None] * batch.num_rows
            for i in range(batch.num_rows):
                lab = labels[i]
                yield ids[i], cells[i], (None if lab is None else str(lab)) if label else None, split[i]

    def prepare(self, inp: PrepareInput, train_cfg: Any, out_dir: Path) -> Prepared:
        """Decodes, crops, resizes and stores the images of each split (uint8), the label
        vocabulary of the training split, and the profile. An image that does not decode, or an
        image without a label in a labelled set, is left out and counted in the stats by reason."""
        from genloom.core.errors import StageError

        cfg, out_dir = train_cfg.model, Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        skipped: dict[str, int] = {}

        def skip(reason: str) -> None:
            skipped[reason] = skipped.get(reason, 0) + 1

        channels = cfg.channels
        if channels is None:  # one cheap pass over the headers and pixels: any colour image -> RGB
            channels = 1
            for _, cell, _, split in self._rows(inp, cfg):
                if split == "train":
                    try:
                        if not is_grayscale(open_image(_image_bytes(cell, inp.resolve))):
                            channels = 3
                            break
                    except Exception:  # counted in the decoding pass below
                        continue
        inp.advance()

        shape = (channels, cfg.size, cfg.size)
        names = ["train", "val", *(["test"] if inp.test else [])]
        writers = {name: _SplitWriter(out_dir, name, shape) for name in names}
        labelled = False
        for _, cell, label, split in self._rows(inp, cfg):
            if split not in writers:
                continue
            try:
                pixels = to_array(open_image(_image_bytes(cell, inp.resolve)), cfg.size, channels)
            except Exception as e:  # a cell that is not a readable image
                skip(f"undecodable:{type(e).__name__}")
                continue
            labelled = labelled or label is not None
            writers[split].add(pixels, label)
        if writers["train"].n == 0 or writers["val"].n == 0:
            for w in writers.values():
                w.file.close()
                w.raw.unlink(missing_ok=True)
            raise StageError(
                "the train or validation split has no readable image: add images or change split.val_fraction"
            )
        inp.advance()

        train_labels = [lab for lab in writers["train"].labels if lab is not None]
        if labelled:
            missing = len(writers["train"].labels) - len(train_labels)
            if missing:
                skipped["no_label"] = missing
        vocab_list = sort_labels(train_labels) if labelled else []
        vocab = {lab: i for i, lab in enumerate(vocab_list)}
        unknown = {name: w.finish(vocab) for name, w in writers.items()}
        if labelled:  # training images without a label cannot be conditioned on: left out
            idx = np.load(out_dir / "train_labels.npy")
            if (idx < 0).any():
                keep = idx >= 0
                np.save(out_dir / "train.npy", np.load(out_dir / "train.npy")[keep])
                np.save(out_dir / "train_labels.npy", idx[keep])
        counts = np.bincount(np.load(out_dir / "train_labels.npy"), minlength=max(1, len(vocab_list)))
        layout = ImageLayout(cfg.size, channels, vocab_list, [int(c) for c in counts[: len(vocab_list)]])
        (out_dir / "images.json").write_text(json.dumps(layout.to_json(), indent=2))
        train = np.load(out_dir / "train.npy", mmap_mode="r")
        profile = {
            "images": len(train),
            "size": cfg.size,
            "channels": channels,
            "labels": dict(zip(vocab_list, layout.counts, strict=True)),
            "pixel_mean": [float(train[:, c].mean()) / 255 for c in range(channels)] if len(train) else [],
            "pixel_std": [float(train[:, c].std()) / 255 for c in range(channels)] if len(train) else [],
        }
        (out_dir / "profile.json").write_text(json.dumps(profile, indent=2))
        inp.advance()
        stats: dict[str, Any] = {
            "rows": len(train),
            "val_rows": writers["val"].n - unknown["val"],
            "size": cfg.size,
            "channels": channels,
            "labels": len(vocab_list),
        }
        if inp.test:
            stats["test_rows"] = writers["test"].n - unknown["test"]
        if skipped:
            stats["skipped"] = skipped
        held_out_unknown = sum(v for k, v in unknown.items() if k != "train")
        if held_out_unknown:
            stats["held_out_unknown_label"] = held_out_unknown
        return Prepared(
            rows=len(train),
            manifest={"size": cfg.size, "channels": channels, "labels": vocab_list},
            stats=stats,
        )

    def profile(self, prepared_dir: Path) -> dict[str, Any]:
        """Images, size, channels, images per label (the ``PROFILE_LABELS`` most frequent; the rest
        summed as ``other_labels``, their number in ``distinct_labels``) and the per-channel pixel
        mean and std (in [0, 1]) of the training split (``profile.json``)."""
        out = dict(json.loads((Path(prepared_dir) / "profile.json").read_text()))
        labels = dict(out.get("labels") or {})
        ranked = sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))
        out["labels"] = dict(ranked[:PROFILE_LABELS])
        out["distinct_labels"] = len(labels)
        out["other_labels"] = sum(c for _, c in ranked[PROFILE_LABELS:])
        return out

    # -- train ----------------------------------------------------------------------------------

    def open_data(self, prepared_dir: Path, model_dir: Path) -> ImageData:
        return ImageData(prepared_dir, self)

    def plan(
        self, cfg: Any, data: ImageData, budget_s: float | None, device: torch.device
    ) -> tuple[dict[str, Any], int]:
        """Images per step, learning rate and passes (``epochs``; with ``train.time_budget`` and no
        epochs given, the loop sizes the steps to the budget), the shape and the family's entries."""
        by_budget = budget_s is not None and "epochs" not in cfg.model_fields_set
        entries: dict[str, Any] = {
            "block_size": 1,
            "batch_size": min(cfg.batch_size, data.n_train),
            "lr": cfg.lr,
            "warmup_steps": 0,
            "schedule": "constant",
            "size": data.layout.size,
            "channels": data.layout.channels,
            "n_labels": data.layout.n_labels,
            "n_train": data.n_train,
        }
        if not by_budget:
            entries["epochs"] = cfg.epochs
        entries.update(self.plan_entries(cfg, data))
        return entries, 0

    def plan_entries(self, cfg: Any, data: ImageData) -> dict[str, Any]:
        """The family's own plan entries (widths, latent size ...)."""
        return {}

    def default_lr(self, cfg: Any, width: int) -> float:
        return float(cfg.lr)

    def checkpoint_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The module's buffers (BatchNorm running statistics): checkpoints keep only trainable
        parameters, and sampling after a resume needs these too."""
        return {name: buf for name, buf in model.named_buffers() if buf is not None}

    def save(self, model: nn.Module, plan: TrainPlan, out_dir: Path) -> dict[str, Any]:
        """Weights and buffers in ``model.safetensors``; config.json gets the plan."""
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(Path(out_dir) / "model.safetensors"))
        return {"image": dict(plan.to_dict())}

    def load(self, model_dir: Path, config: dict[str, Any]) -> tuple[nn.Module, ImageLayout]:
        """The saved model (CPU, float32, eval mode) and its layout (size, labels)."""
        import torch
        from pydantic import TypeAdapter
        from safetensors.torch import load_file

        from genloom.models.config import ModelConfig

        model_dir = Path(model_dir)
        plan = TrainPlan.from_dict(config["image"])
        cfg = TypeAdapter(ModelConfig).validate_python(config["train"]["model"])
        model = self.build(plan, cfg, torch.device("cpu"), torch.float32)
        model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
        return model.eval(), ImageLayout.load(model_dir / "images.json")

    # -- the network's hooks --------------------------------------------------------------------

    def generate(self, model: nn.Module, labels: np.ndarray, seed: int) -> np.ndarray:
        """(n, C, S, S) float32 images in [-1, 1] for label indices (n,) (0 for an unconditional model)."""
        raise NotImplementedError

    def validation_loss(
        self, model: nn.Module, x: np.ndarray, labels: np.ndarray, device: torch.device
    ) -> float:
        """The figure the loop tracks on validation images (lower is better), deterministic."""
        raise NotImplementedError

    # -- use ------------------------------------------------------------------------------------

    def labels_for(
        self, layout: ImageLayout, n: int, conditions: dict[str, Any] | None, seed: int
    ) -> np.ndarray:
        """(n,) label indices: the asked label (``conditions["label"]``), else drawn with the
        training frequencies (an unconditional model: all 0)."""
        from genloom.core.errors import ConfigError

        conditions = dict(conditions or {})
        asked = conditions.pop("label", None)
        if conditions:
            raise ConfigError(
                f"an image model is conditioned on its label only, not {', '.join(conditions)}",
                path="--where",
            )
        if layout.n_labels == 0:
            if asked is not None:
                raise ConfigError("this image model was trained without labels", path="--where")
            return np.zeros(n, np.int64)
        if asked is not None:
            op = getattr(asked, "op", "==")
            text = (
                str(asked.value.text)
                if hasattr(asked, "value") and hasattr(asked.value, "text")
                else str(asked)
            )
            if op != "==" or text not in layout.labels:
                raise ConfigError(
                    f"no label {text!r} in this model" if op == "==" else "an image label takes label=VALUE",
                    path="--where",
                    hint=f"labels: {', '.join(layout.labels)}",
                )
            return np.full(n, layout.labels.index(text), np.int64)
        p = np.asarray(layout.counts, np.float64)
        p = p / p.sum() if p.sum() > 0 else np.full(layout.n_labels, 1 / layout.n_labels)
        return np.random.default_rng([seed, 1]).choice(layout.n_labels, size=n, p=p).astype(np.int64)

    def sample(
        self,
        model_dir: Path,
        n: int,
        conditions: dict[str, Any] | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> pa.Table:
        """``n`` generated images as a table: ``id``, ``image`` (PNG bytes), ``label`` (when the
        model has labels), ``width``, ``height``; under ``conditions`` ``{"label": "7"}``.
        ``write_images`` writes them as PNG files and a grid. The schema metadata carries a report
        (``sample_report``): images, labels drawn, seed."""
        import pyarrow as pa

        from genloom.models.text import read_model_config

        model_dir = Path(model_dir)
        config = read_model_config(model_dir)
        model, layout = self.load(model_dir, config)
        seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)
        labels = self.labels_for(layout, n, conditions, seed)
        pixels = to_pixels(self.generate(model, labels, seed))
        cols: dict[str, Any] = {
            "id": pa.array([f"{self.name}:{seed}:{i}" for i in range(n)], pa.string()),
            "image": pa.array([encode_png(p) for p in pixels], pa.binary()),
        }
        if layout.n_labels:
            cols["label"] = pa.array([layout.labels[k] for k in labels], pa.string())
        cols["width"] = pa.array(np.full(n, layout.size, np.int32))
        cols["height"] = pa.array(np.full(n, layout.size, np.int32))
        table = pa.table(cols)
        report = {
            "requested": n,
            "kept": n,
            "seed": seed,
            "size": layout.size,
            "channels": layout.channels,
            "labels": {
                lab: int((labels == k).sum()) for k, lab in enumerate(layout.labels) if (labels == k).any()
            },
        }
        meta = dict(table.schema.metadata or {})
        meta[b"genloom"] = json.dumps(report).encode()
        return table.replace_schema_metadata(meta)

    def evaluate(self, model_dir: Path, prepared_dir: Path, eval_cfg: Any) -> dict[str, Metric]:
        """The model against held-out images (at most 2,000), with as many samples of the same
        labels (fixed seed): the Fréchet distance between the two in the fixed feature map (8 x 8
        average-pooled pixels), next to the training images' own distance to the held-out ones;
        with labels, the accuracy of a classifier trained on real training images (an RBF SVM on
        the same features) on the samples (does a sample look like its label?) next to its
        accuracy on the held-out images; and the validation loss."""
        import torch

        from genloom.models.text import read_model_config

        model_dir, prepared_dir = Path(model_dir), Path(prepared_dir)
        config = read_model_config(model_dir)
        model, layout = self.load(model_dir, config)
        data = ImageData(prepared_dir, self)
        n = min(data.n_val, EVAL_IMAGES)
        real, real_labels = to_unit(data.val[:n]), data.val_labels[:n]
        asked = real_labels  # label indices in the model's own vocabulary
        if layout.n_labels == 0:
            asked = np.zeros_like(real_labels)
        elif layout.labels != data.layout.labels:  # a champion trained on other labels: ask by name
            to_model = np.array(
                [layout.labels.index(v) if v in layout.labels else -1 for v in data.layout.labels]
            )
            asked = to_model[real_labels] if len(to_model) else np.zeros_like(real_labels)
            known = asked >= 0
            real, real_labels, asked = real[known], real_labels[known], asked[known]
        fake = self.generate(model, asked, EVAL_SEED)
        rng = np.random.default_rng(EVAL_SEED)
        train_idx = np.sort(rng.choice(data.n_train, size=min(data.n_train, 5 * EVAL_IMAGES), replace=False))
        train = to_unit(np.asarray(data.train[train_idx]))
        f_real, f_fake, f_train = pooled_features(real), pooled_features(fake), pooled_features(train)
        out: dict[str, Metric] = {
            "frechet_distance": Metric(frechet_distance(f_fake, f_real), "min"),
            "real_frechet_distance": Metric(frechet_distance(f_train[: max(2, n)], f_real)),
        }
        if layout.n_labels > 1 and data.layout.n_labels > 1:
            from sklearn.svm import SVC

            clf = SVC(gamma="scale").fit(f_train, data.train_labels[train_idx])
            out["sample_accuracy"] = Metric(float((clf.predict(f_fake) == real_labels).mean()), "max")
            out["real_accuracy"] = Metric(float((clf.predict(f_real) == real_labels).mean()))
        out["val_loss"] = Metric(
            data.val_loss(model, TrainPlan.from_dict(config["image"]), EVAL_IMAGES, torch.device("cpu")),
            "min",
        )
        return out


def core(model: nn.Module) -> nn.Module:
    """The module inside a DDP or compiled wrapper."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded from (seed, step) (``tabular.step_generator``)."""
    from genloom.models.tabular import step_generator as tabular_step_generator

    return tabular_step_generator(seed, step, device)
